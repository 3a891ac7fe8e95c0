"""Deployment material (deploy/): checked with the tools that will read it.

The systemd unit through `systemd-analyze verify` and `security`, the alert rules through
`promtool check rules` and their unit tests (deploy/prometheus/alerts_test.yml), the
dashboard's queries through promtool's PromQL parser, every metric and label they name against
what gateway/metrics.py declares, and the configurations against the gateway's own loader.
Starting the image and the compose demo needs a Docker engine:
tests/integration/test_container.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client import CollectorRegistry, Metric
from prometheus_client.metrics import MetricWrapperBase

from gateway.forward.classify import Kind
from gateway.metrics import Metrics, Refusal, StoreResult
from gateway.settings import IngestSettings, file_problems, load
from gateway.spool import STATES
from tests.support import REPO, cli

DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "systemd" / "dicom-gateway.service"
CONSOLE_UNIT = DEPLOY / "systemd" / "dicom-gateway-console.service"
UNITS = (UNIT, CONSOLE_UNIT)
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dicom-gateway.json"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
CONFIGS = [
    DEPLOY / "systemd" / "gateway.toml",
    DEPLOY / "container" / "gateway.toml",
    DEPLOY / "compose" / "gateway.toml",
]

METRIC = re.compile(r"\bdicom_gateway_[a-z_]+\b")
SELECTOR = re.compile(r"\b(dicom_gateway_[a-z_]+)\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|on|ignoring|without)\s*\(([^)]*)\)")
# labels every target has, or that histogram_quantile needs
ALWAYS = {"instance", "job", "le"}
# label values the code defines as enums (metrics.py: "label values are small fixed enums")
VALUES: dict[tuple[str, str], set[str]] = {
    ("dicom_gateway_store_requests_total", "result"): {r.value for r in StoreResult},
    ("dicom_gateway_associations_refused_total", "reason"): {r.value for r in Refusal},
    ("dicom_gateway_forward_results_total", "result"): {k.value for k in Kind},
    ("dicom_gateway_queue_depth", "state"): set(STATES),
    ("dicom_gateway_queue_oldest_age_seconds", "state"): set(STATES),
}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def _run(*args: str, cwd: Path = REPO, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd
    )


# ---------------------------------------------------------------------------------------------
# systemd


@pytest.fixture
def systemd_root(tmp_path: Path) -> Path:
    """A root for `systemd-analyze --root`: the distribution's units (for the targets the unit
    depends on), stand-ins for /opt/dicom-gateway/bin/dicom-gateway and /bin/kill (ExecReload),
    and /etc/systemd/system for the unit."""
    _tool("systemd-analyze")
    units = next(
        (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()),
        None,
    )
    if units is None:
        pytest.skip("no systemd unit directory on this machine")
    root = tmp_path / "root"
    shutil.copytree(units, root / "usr/lib/systemd/system", symlinks=True)
    for binary in (root / "opt/dicom-gateway/bin/dicom-gateway", root / "bin/kill"):
        binary.parent.mkdir(parents=True)
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    return root


def _verify(root: Path, unit_text: str, unit: Path = UNIT) -> str:
    (root / "etc/systemd/system" / unit.name).write_text(unit_text)
    done = _run("systemd-analyze", "verify", "--man=no", f"--root={root}", unit.name)
    said = (done.stdout + done.stderr).strip()
    return said if said or done.returncode == 0 else f"exit status {done.returncode}"


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_unit_verifies_without_a_complaint(systemd_root: Path, unit: Path) -> None:
    assert _verify(systemd_root, unit.read_text(), unit) == ""


def test_systemd_verify_reports_a_misspelt_directive(systemd_root: Path) -> None:
    """`verify` exits 0 on unknown keys: the test above relies on it printing them."""
    broken = UNIT.read_text().replace("ProtectClock=yes", "ProtectClok=yes")
    assert "ProtectClok" in _verify(systemd_root, broken)


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_unit_exposure_stays_low(systemd_root: Path, unit: Path) -> None:
    """systemd's own score of what the sandbox leaves open: 1.6 of 10 ("OK") when written;
    --threshold=20 fails above 2.0."""
    (systemd_root / "etc/systemd/system" / unit.name).write_text(unit.read_text())
    done = _run(
        "systemd-analyze", "security", "--offline=yes", f"--root={systemd_root}",
        "--threshold=20", "--no-pager", unit.name,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr


def _seconds(text: str, key: str) -> float:
    match = re.search(rf"^\s*{key}\s*[=:]\s*(\d+)s?\s*$", text, re.MULTILINE)
    assert match, f"{key} not found"
    return float(match.group(1))


def test_stop_timeouts_leave_room_for_the_drain() -> None:
    """systemd and compose kill after their timeout: it must exceed ingest.drain_seconds."""
    drain = IngestSettings().drain_seconds
    assert _seconds(UNIT.read_text(), "TimeoutStopSec") > drain
    assert _seconds(COMPOSE.read_text(), "stop_grace_period") > drain
    assert re.search(r"^KillMode=mixed$", UNIT.read_text(), re.MULTILINE)


# Sets the kernel's "memory-deny-write-execute" (prctl PR_SET_MDWE, Linux 6.3+; systemd's
# MemoryDenyWriteExecute= with seccomp where it is older) and execs the command; 77 when the
# kernel does not have it.
_MDWE = (
    "import ctypes, os, sys\n"
    "if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0: sys.exit(77)\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


def _without_wx(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return _run(sys.executable, "-c", _MDWE, *args, timeout=timeout)


def test_worker_path_runs_with_write_execute_memory_refused(testdata: Path, tmp_path: Path) -> None:
    """The unit sets MemoryDenyWriteExecute=yes: de-identification with the text detector
    (onnxruntime), OpenCV, numpy and the JPEG 2000 codec must not need W+X pages."""
    wx = "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"
    probe = _without_wx(sys.executable, "-c", wx)
    if probe.returncode == 77:
        pytest.skip("the kernel has no PR_SET_MDWE (Linux 6.3+)")
    assert "PermissionError" in probe.stderr  # refused: the setting is in force

    image = testdata / "ultrasound" / "deid_data__RGB_IMAGE.dcm"
    report = tmp_path / "report.json"
    done = _without_wx(
        sys.executable, "-m", "gateway", "deidentify", str(image),
        "--out", str(tmp_path / "out"), "--report", str(report),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    [entry] = json.loads(report.read_text())["files"]
    assert entry["status"] == "written"
    assert entry["pixels"]["checked"]
    assert entry["pixels"]["masked"]  # the detector found text and it was blacked out


# ---------------------------------------------------------------------------------------------
# Prometheus and Grafana


def test_alert_rules_pass_promtool_check() -> None:
    done = _run(_tool("promtool"), "check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rules_unit_tests_pass() -> None:
    """deploy/prometheus/alerts_test.yml: delivery stalled (also right after a restart), disk
    headroom, certificate expiry, quarantine, dead letters, workers, readiness, target down;
    each firing on synthetic series and quiet when healthy."""
    done = _run(_tool("promtool"), "test", "rules", "alerts_test.yml", cwd=ALERTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_config_passes_promtool_check() -> None:
    done = _run(_tool("promtool"), "check", "config", str(ALERTS.parent / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def _alert_blocks() -> list[str]:
    return ALERTS.read_text().split("- alert: ")[1:]


def test_every_alert_has_a_severity_summary_and_description() -> None:
    blocks = _alert_blocks()
    assert len(blocks) >= 10
    for block in blocks:
        name = block.split("\n", 1)[0]
        assert re.search(r"^\s+severity: (warning|critical)$", block, re.MULTILINE), name
        assert re.search(r"^\s+summary: \S", block, re.MULTILINE), name
        assert re.search(r"^\s+description: \S", block, re.MULTILINE), name


def _dashboard_exprs() -> list[str]:
    def walk(panels: list[dict[str, object]]) -> Iterator[str]:
        for panel in panels:
            targets = panel.get("targets", [])
            assert isinstance(targets, list)
            yield from (t["expr"] for t in targets)
            nested = panel.get("panels", [])
            assert isinstance(nested, list)
            yield from walk(nested)

    dashboard = json.loads(DASHBOARD.read_text())
    return list(walk(dashboard["panels"]))


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    """Grafana's variables replaced by what they stand for, each query as a recording rule."""
    promtool = _tool("promtool")
    exprs = _dashboard_exprs()
    assert len(exprs) >= 20
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(exprs):
        concrete = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
        rules += [f"      - record: dashboard_query_{i}", f"        expr: {json.dumps(concrete)}"]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text("\n".join(rules) + "\n")
    done = _run(promtool, "check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_uses_the_datasource_variable_everywhere() -> None:
    text = DASHBOARD.read_text()
    uids = set(re.findall(r'"uid": "([^"]*)"', text)) - {"dicom-gateway"}
    assert uids == {"${DS_PROMETHEUS}"}


def _exposed() -> dict[str, tuple[Metric, set[str]]]:
    """Every sample name the gateway exposes -> its family and declared label names. Families,
    not samples: a labelled metric has no sample until a label value is used."""
    metrics = Metrics(CollectorRegistry())
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "info": ("_info",),
        "gauge": ("",),
    }
    declared: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            # prometheus_client keeps the declared label names only in this attribute
            [family] = value.describe()
            declared[family.name] = set(value._labelnames)
    exposed: dict[str, tuple[Metric, set[str]]] = {}
    for family in metrics.registry.collect():
        labels = declared.get(family.name, {k for s in family.samples for k in s.labels})
        for suffix in suffixes[family.type]:
            exposed[family.name + suffix] = (family, labels)
    return exposed


def _queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every alert rule and dashboard query."""
    alerts = [(f"alert {b.split(chr(10), 1)[0]}", b) for b in _alert_blocks()]
    return alerts + [(f"dashboard: {e}", e) for e in _dashboard_exprs()]


def test_every_metric_named_in_alerts_and_dashboard_is_exposed() -> None:
    exposed = _exposed()
    used = {name for _, query in _queries() for name in METRIC.findall(query)}
    assert len(used) >= 20
    assert sorted(used - exposed.keys()) == []


def test_dashboard_shows_every_metric_family() -> None:
    exposed = _exposed()
    shown = {m for e in _dashboard_exprs() for m in METRIC.findall(e)} & exposed.keys()
    families = {family.name for family, _ in exposed.values()}
    assert sorted(families - {exposed[m][0].name for m in shown}) == []


def test_every_label_in_alerts_and_dashboard_is_declared() -> None:
    exposed = _exposed()
    problems = []
    for where, query in _queries():
        in_query: set[str] = set(ALWAYS)
        for metric in set(METRIC.findall(query)) & exposed.keys():
            in_query |= exposed[metric][1]
        for metric, matchers in SELECTOR.findall(query):
            if metric not in exposed:
                continue  # the test above names it
            for label, op, value in MATCHER.findall(matchers):
                if label not in exposed[metric][1] | ALWAYS:
                    problems.append(f"{where}: {metric} has no label {label!r}")
                known = VALUES.get((metric, label))
                if op == "=" and known is not None and value not in known:
                    problems.append(f"{where}: {metric}{{{label}={value!r}}} is never set")
        for group in GROUPING.findall(query):
            for label in filter(None, (g.strip() for g in group.split(","))):
                if label not in in_query:
                    problems.append(f"{where}: no metric in the query has label {label!r}")
    assert problems == []


# ---------------------------------------------------------------------------------------------
# Configurations, compose, image


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.parent.name)
def test_deployment_configs_load_and_miss_only_site_files(config: Path) -> None:
    """Valid as written; what check-config still wants are the key and certificate files that
    are made or delivered at installation, and the analysis server's URL in the production
    configs (a placeholder until the site sets its own; the demo's is its receiver)."""
    settings = load(config)
    site = [p for p in file_problems(settings) if ": no such file /" not in p]
    if config.parent.name != "compose":
        assert site == [f"{config}: {PLACEHOLDER} (line {_line(config, 'url =')})"]
    else:
        assert site == []


PLACEHOLDER = (
    "forward.url: analysis.example.org is a name reserved for examples, not an analysis "
    "server: set the URL its operator gave you"
)


def _line(config: Path, start: str) -> int:
    lines = config.read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if line.startswith(start))


def test_compose_keys_service_makes_everything_the_gateway_needs(tmp_path: Path) -> None:
    """The demo's `keys` one-shot, run on the demo config moved under a temporary folder: then
    check-config passes, and the receiver's certificate names the compose service."""
    text = (DEPLOY / "compose" / "gateway.toml").read_text()
    config = tmp_path / "gateway.toml"
    config.write_text(
        text.replace('"/keys/', f'"{tmp_path}/keys/').replace(
            '"/var/lib/dicom-gateway/', f'"{tmp_path}/state/'
        )
    )
    made = cli("keys", "--config", str(config))
    assert made.returncode == 0, made.stderr
    checked = cli("check-config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    certificate = x509.load_pem_x509_certificate((tmp_path / "keys/pki/receiver.crt").read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "receiver" in names.get_values_for_type(x509.DNSName)


def test_image_config_without_the_forwarding_secrets_refuses_to_start(tmp_path: Path) -> None:
    """The image's own config, its paths moved under a temporary folder, with the spool and
    vault keys but none of the analysis server's files mounted: check-config and run both
    exit 2 naming the file, each missing forward key and its line, and the URL still at its
    placeholder, instead of a gateway that acknowledges studies which would never leave the
    spool."""
    text = (DEPLOY / "container" / "gateway.toml").read_text()
    config = tmp_path / "gateway.toml"
    secrets = tmp_path / "secrets"
    config.write_text(
        text.replace('"/run/secrets/', f'"{secrets}/').replace(
            '"/var/lib/dicom-gateway/', f'"{tmp_path}/state/'
        )
    )
    made = cli("keys", "--config", str(config))
    assert made.returncode == 0, made.stderr
    for path in secrets.iterdir():  # keys also makes a development CA and client certificate
        if path.name not in ("spool-master.key", "vault.key"):
            path.unlink()
    lines = config.read_text().splitlines()
    expected = [
        f"{config}: forward.{key}: no such file {secrets / name} "
        f"(line {next(n for n, line in enumerate(lines, 1) if line.startswith(f'{key} ='))})"
        for key, name in (
            ("ca_bundle", "analysis-ca.crt"),
            ("client_certificate", "gateway-client.crt"),
            ("client_key", "gateway-client.key"),
            ("receiver_key", "receiver-hpke.pub"),
        )
    ]
    expected.append(f"{config}: {PLACEHOLDER} (line {_line(config, 'url =')})")
    for command in (["check-config", str(config)], ["run", "--config", str(config)]):
        refused = cli(*command)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert [line for line in expected if line not in refused.stderr] == [], refused.stderr


def test_compose_wiring_matches_the_demo_config() -> None:
    """Orthanc's modality, Prometheus's target and the published ports name what
    deploy/compose/gateway.toml configures."""
    settings = load(DEPLOY / "compose" / "gateway.toml")
    orthanc = json.loads((DEPLOY / "compose" / "orthanc.json").read_text())
    gateway = orthanc["DicomModalities"]["gateway"]
    assert (gateway["AET"], gateway["Host"], gateway["Port"]) == (
        settings.ingest.ae_title,
        "gateway",
        settings.ingest.port,
    )
    assert orthanc["DicomAet"] in {p.ae_title for p in settings.ingest.peers}
    assert settings.metrics.host == "0.0.0.0"
    scrape = (ALERTS.parent / "prometheus.yml").read_text()
    assert f'"gateway:{settings.metrics.port}"' in scrape
    compose = COMPOSE.read_text()
    assert f"127.0.0.1:{settings.ingest.port}:{settings.ingest.port}" in compose
    assert f"127.0.0.1:{settings.metrics.port}:{settings.metrics.port}" in compose


def test_compose_file_references_exist() -> None:
    """Every host path compose mounts or builds from (relative to deploy/compose)."""
    text = COMPOSE.read_text()
    paths = re.findall(r"^\s*- (\.{1,2}/[^:\s]+):", text, re.MULTILINE)
    paths += re.findall(r"^\s*context: (\S+)$", text, re.MULTILINE)
    assert len(paths) >= 8
    for path in paths:
        assert (COMPOSE.parent / path).exists(), path
    assert (COMPOSE.parent / "../../Dockerfile").is_file()


def test_compose_file_is_valid_for_docker_compose() -> None:
    """`docker compose config` reads the file as compose will (no engine needed)."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) and _run(*command, "version").returncode == 0:
            done = _run(*command, "-f", str(COMPOSE), "config", "--quiet")
            assert done.returncode == 0, done.stderr
            return
    pytest.skip("neither `docker compose` nor `docker-compose` is installed")


def test_image_build_context_holds_what_the_dockerfile_copies() -> None:
    """.dockerignore excludes everything but what COPY names (keeps .venv and var/ out)."""
    dockerfile = (REPO / "Dockerfile").read_text()
    kept = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    sources = [
        source
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for source in line.split()[1:-1]
    ]
    assert sources
    assert sorted(set(sources) - kept) == []


def test_image_health_check_asks_the_configured_metrics_port() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/healthz", dockerfile)
    assert match
    assert int(match.group(1)) == load(DEPLOY / "container" / "gateway.toml").metrics.port
