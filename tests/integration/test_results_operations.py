"""The way back as operations see it (issue 21, fourth part): its metrics, the `spool results`
commands (with and without a running gateway), and DICOM TLS to PACS. Real parts: the reference
receiver offering results, a real spool and vault, dcmtk `storescp` as PACS (with `+tls`), the
daemon and the CLI as processes."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pydicom
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydicom.uid import generate_uid

from gateway import devpki, scu
from gateway.audit import AuditLog
from gateway.forward.client import Forwarder
from gateway.forward.results import ResultsClient
from gateway.ingest.pynetdicom_seam import reachable
from gateway.keyfiles import generate_key_file
from gateway.metrics import Metrics
from gateway.pipeline.results import ResultsDeliverer, ResultsPoller, ReturnPath
from gateway.receiver.results import Results
from gateway.reidentify.restore import Reidentifier
from gateway.seal import keys as seal_keys
from gateway.settings import SecretSource, SpoolSettings, load
from gateway.spool import Spool
from gateway.vault import SqliteVault
from tests.integration.test_reidentify import JANE, ct_slices, encode, sr
from tests.integration.test_reidentify import send as send_study
from tests.integration.test_results_channel import result, storescp
from tests.pipeline_site import Site, free_port, wait_for
from tests.results_way import SITE
from tests.support import GatewayProcess, cli, clis, dcmtk, make_keys

pytestmark = pytest.mark.timeout(180)
HOUR = 3600.0


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


@contextmanager
def spool_at(root: Path) -> Iterator[Spool]:
    generate_key_file(root / "master.key")
    spool = Spool.open(SpoolSettings(root / "spool", SecretSource(file=root / "master.key")))
    try:
        yield spool
    finally:
        spool.close()


def test_metrics_count_the_way_back_and_name_no_uid(
    channel: tuple[Site, str, Forwarder], vault: SqliteVault, tmp_path: Path
) -> None:
    """fetched, held (kind, reason), waiting with its oldest age, stored; the gauges read the
    spool at each scrape; no result, study or patient value in any label."""
    site, key_id, forwarder = channel
    sent = send_study(vault, ct_slices(2, **JANE))
    offered = Results(site.root / "received")
    stranger = offered.offer(SITE, encode(sr(sent.outputs, StudyInstanceUID=generate_uid())))
    good = offered.offer(SITE, encode(sr(sent.outputs)))
    client = ResultsClient(forwarder.http, str(site.config["forward"]["url"]), SITE, key_id)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    port = free_port()
    node = scu.Node("127.0.0.1", port, "DICOM_GATEWAY", "PACS", timeout=5.0)
    with spool_at(tmp_path) as spool, AuditLog(tmp_path / "audit.log", sync=False) as audit:
        metrics.watch_results(spool.returns.waiting_since, spool.returns.held_by_kind)
        assert sample(registry, "dicom_gateway_results_waiting") == 0
        assert sample(registry, "dicom_gateway_results_held_items", kind="dead") == 0
        deliverer = ResultsDeliverer(
            spool.returns, client, Reidentifier(vault, "UT"),
            seal_keys.read_private(site.root / "keys" / "results.key"),
            lambda ds: scu.store(node, ds), audit, retry_hours=1.0, metrics=metrics,
        )  # fmt: skip
        ResultsPoller(client, spool.returns, metrics).poll_once()
        assert not deliverer.deliver_once()  # PACS down: the good one waits
        [waiting] = spool.returns.waiting()
        os.utime(waiting.path, (time.time() - 2 * HOUR, time.time() - 2 * HOUR))
        assert sample(registry, "dicom_gateway_results_fetched_total") == 2
        assert sample(registry, "dicom_gateway_results_waiting") == 1
        age = sample(registry, "dicom_gateway_results_oldest_waiting_age_seconds")
        assert age is not None
        assert 2 * HOUR <= age < 2 * HOUR + 60
        held = {"kind": "quarantine", "reason": "result-unknown-study"}
        assert sample(registry, "dicom_gateway_results_held_total", **held) == 1
        assert sample(registry, "dicom_gateway_results_held_items", kind="quarantine") == 1
        assert sample(registry, "dicom_gateway_results_stored_total") == 0
        with storescp(tmp_path / "pacs", port):
            assert deliverer.deliver_once()
        assert sample(registry, "dicom_gateway_results_stored_total") == 1
        assert sample(registry, "dicom_gateway_results_waiting") == 0
        assert sample(registry, "dicom_gateway_results_oldest_waiting_age_seconds") == 0
    text = generate_latest(registry).decode()
    for value in (stranger.result, good.result, sent.original("StudyInstanceUID"),
                  str(sent.outputs[0].StudyInstanceUID), JANE["PatientID"]):  # fmt: skip
        assert value not in text


def test_poll_failures_are_counted_by_reason_and_a_good_poll_stamped(
    channel: tuple[Site, str, Forwarder], vault: SqliteVault, tmp_path: Path
) -> None:
    site, key_id, forwarder = channel
    url = str(site.config["forward"]["url"])
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    key = seal_keys.read_private(site.root / "keys" / "results.key")
    node = scu.Node("127.0.0.1", free_port(), "DICOM_GATEWAY", "PACS", timeout=2.0)
    with spool_at(tmp_path) as spool, AuditLog(tmp_path / "audit.log", sync=False) as audit:
        metrics.watch_results(spool.returns.waiting_since, spool.returns.held_by_kind)
        assert (
            sample(registry, "dicom_gateway_results_poll_failures_total", reason="unreachable") == 0
        )

        def run(client: ResultsClient, until: str, **labels: str) -> None:
            deliverer = ResultsDeliverer(spool.returns, client, Reidentifier(vault, "UT"), key,
                                         lambda ds: scu.store(node, ds), audit, 1.0)  # fmt: skip
            path = ReturnPath(ResultsPoller(client, spool.returns, metrics), deliverer, 0.05,
                              0.1, metrics)  # fmt: skip
            path.start()
            try:
                wait_for(lambda: (sample(registry, until, **labels) or 0) >= 1, 20, until)
            finally:
                path.stop(10)

        down = f"https://127.0.0.1:{free_port()}"
        run(ResultsClient(forwarder.http, down, SITE, key_id),
            "dicom_gateway_results_poll_failures_total", reason="unreachable")  # fmt: skip
        wrong_key = "server-seals-to-another-key"
        run(ResultsClient(forwarder.http, url, SITE, "0" * 16),
            "dicom_gateway_results_poll_failures_total", reason=wrong_key)  # fmt: skip
        before = time.time()
        metrics.results_last_poll.set(0)
        run(ResultsClient(forwarder.http, url, SITE, key_id),
            "dicom_gateway_results_last_poll_success_timestamp_seconds")  # fmt: skip
        stamp = sample(registry, "dicom_gateway_results_last_poll_success_timestamp_seconds")
        assert stamp is not None
        assert stamp >= before


# ---------------------------------------------------------------------------------------------
# spool results ...


def held_results(site: Site) -> tuple[str, str, str, str]:
    """In the site's spool: one result waiting, one quarantined, one dead (a study id)."""
    study = generate_uid()
    ids = [generate_uid() for _ in range(3)]
    spool = Spool.open(load(site.path).spool)
    try:
        returns = spool.returns
        for cursor, rid in enumerate(ids, 1):
            returns.put(rid, study, cursor, b"sealed bytes that are never opened here")
        items = {r.result: r for r in returns.waiting()}
        returns.hold(items[ids[1]], "quarantine", "result-unknown-study")
        returns.hold(items[ids[2]], "dead", "pacs-status-a900")
    finally:
        spool.close()
    return study, ids[0], ids[1], ids[2]


LIST = ("spool", "results", "list", "--json")


def listing(
    site: Site, done: subprocess.CompletedProcess[str] | None = None
) -> dict[str, dict[str, object]]:
    """`spool results list --json` by result id (`done`: its output, run already)."""
    if done is None:
        done = cli(*LIST, "--config", str(site.path))
    assert done.returncode == 0, done.stderr
    return {row["result"]: row for row in json.loads(done.stdout)}


def audit_events(site: Site) -> list[dict[str, object]]:
    path = load(site.path).audit_path
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_spool_results_list_show_retry_and_purge_without_a_running_gateway(site: Site) -> None:
    study, waiting, quarantined, dead = held_results(site)
    config = ("--config", str(site.path))
    # read-only commands (no spool lock taken) run at the same time
    listed, shown = clis((*LIST, *config), ("spool", "results", "show", dead, *config))
    rows = listing(site, listed)
    assert {r: rows[r]["state"] for r in rows} == {
        waiting: "waiting",
        quarantined: "quarantine",
        dead: "dead",
    }
    assert rows[dead]["reason"] == "pacs-status-a900"
    assert rows[quarantined]["study"] == study
    assert rows[waiting]["age_hours"] == 0.0
    assert rows[waiting]["fetched_at"]
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert (detail["state"], detail["cursor"], detail["held_at"] is not None) == ("dead", 3, True)
    assert "never opened" not in shown.stdout  # metadata only

    assert cli("spool", "results", "retry", quarantined, "--config", str(site.path)).returncode == 0
    assert cli("spool", "results", "purge", dead, "--config", str(site.path)).returncode == 0
    assert {r: row["state"] for r, row in listing(site).items()} == {
        waiting: "waiting",
        quarantined: "waiting",
    }
    spool = site.root / "spool"
    assert sorted(p.name for p in (spool / "returns-held").iterdir()) == []
    for refused in (("retry", waiting), ("purge", waiting), ("retry", "../returns/cursor")):
        done = cli("spool", "results", *refused, "--config", str(site.path))
        assert done.returncode != 0
        assert "no held result" in done.stderr
    listed, verified = clis((*LIST, *config), ("audit", "verify", *config))
    assert len(listing(site, listed)) == 2
    records = [(e["event"], e.get("result"), e.get("kind")) for e in audit_events(site)]
    assert ("result.retried", quarantined, "quarantine") in records
    assert ("result.purged", dead, "dead") in records
    assert verified.returncode == 0


def test_a_running_gateway_exports_its_return_queue_and_applies_result_requests(
    site: Site,
) -> None:
    """A result of a study this gateway never sent is quarantined; /metrics shows it (and no
    UID); `spool results retry` through the running gateway puts it back (it is quarantined
    again), `purge` erases it; each an audit record written by the gateway."""
    keys = site.root / "keys"
    site.edit(lambda config: config.update(results={
        "enabled": True, "poll_seconds": 0.3, "max_backoff_seconds": 1.0,
        "private_key": str(keys / "results.key"), "public_key": str(keys / "results.pub"),
        "pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": free_port()}}))  # fmt: skip
    site.edit(lambda config: config["receiver"].update(results_key=str(keys / "results.pub")))
    make_keys(site.path)  # the results pair, by `keys` (in this process)
    site.receiver()
    gateway = site.gateway()
    for name in ("dicom_gateway_results_waiting", "dicom_gateway_results_fetched_total"):
        assert gateway.metric(name) == 0  # exported from the start: alerts can fire
    assert gateway.metric("dicom_gateway_results_held_items", kind="dead") == 0
    assert gateway.metric("dicom_gateway_results_last_poll_success_timestamp_seconds") > 0
    study = generate_uid()
    offered = Results(site.root / "received").offer("SITE", result(study))
    wait_for(lambda: held_items(gateway) == 1, 30, "the stranger quarantined")
    reason = {"kind": "quarantine", "reason": "result-unknown-study"}
    assert gateway.metric("dicom_gateway_results_held_total", **reason) == 1
    assert gateway.metric("dicom_gateway_results_fetched_total") == 1
    assert listing(site)[offered.result]["state"] == "quarantine"

    retried = cli("spool", "results", "retry", offered.result, "--config", str(site.path))
    assert retried.returncode == 0, retried.stderr
    wait_for(
        lambda: gateway.metric("dicom_gateway_results_held_total", **reason) == 2,
        30, "quarantined again",
    )  # fmt: skip
    purged = cli("spool", "results", "purge", offered.result, "--config", str(site.path))
    assert purged.returncode == 0, purged.stderr
    assert held_items(gateway) == 0
    assert listing(site) == {}
    text = gateway_metrics(gateway)
    for value in (offered.result, study):
        assert value not in text
    assert gateway.stop() == 0
    events = [(str(e["event"]), e.get("result")) for e in audit_events(site)]
    results = [e for e in events if e[0].startswith("result.")]
    assert results == [
        ("result.quarantined", offered.result),
        ("result.retried", offered.result),
        ("result.quarantined", offered.result),
        ("result.purged", offered.result),
    ]


def held_items(gateway: GatewayProcess) -> float:
    return gateway.metric("dicom_gateway_results_held_items", kind="quarantine")


def gateway_metrics(gateway: GatewayProcess) -> str:
    return httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=10).text


# ---------------------------------------------------------------------------------------------
# DICOM TLS to PACS


@contextmanager
def tls_storescp(folder: Path, port: int, pki: Path) -> Iterator[subprocess.Popen[bytes]]:
    """dcmtk storescp with DICOM TLS: its certificate from the PACS CA, clients must present
    one from the same CA."""
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [dcmtk("storescp"), "+tls", str(pki / "pacs.key"), str(pki / "pacs.crt"),
         "+cf", str(pki / "ca.crt"), "-aet", "PACS", "-od", str(folder), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: reachable("127.0.0.1", port, 5.0), 10, "storescp")
        yield process
    finally:
        process.terminate()  # by its PID
        process.wait(timeout=10)


def make_pki(folder: Path) -> None:
    """The PACS CA, PACS's server certificate, the gateway's client certificate; and another CA
    that signed none of them."""
    folder.mkdir(parents=True)
    ca, other = devpki.make_ca("PACS CA"), devpki.make_ca("not the PACS CA")
    pacs = devpki.issue(ca, "pacs", server=True, hosts=("127.0.0.1", "localhost"))
    client = devpki.issue(ca, "dicom-gateway", server=False)
    for name, issued in (("ca", ca), ("other", other), ("pacs", pacs), ("gateway", client)):
        (folder / f"{name}.crt").write_bytes(devpki.certificate_pem(issued))
        (folder / f"{name}.key").write_bytes(devpki.key_pem(issued))


def test_results_are_stored_over_dicom_tls_and_wait_when_pacs_is_not_trusted(
    channel: tuple[Site, str, Forwarder], vault: SqliteVault, tmp_path: Path
) -> None:
    site, key_id, forwarder = channel
    pki = tmp_path / "pacs-pki"
    make_pki(pki)
    sent = send_study(vault, ct_slices(1, **JANE))
    good = Results(site.root / "received").offer(SITE, encode(sr(sent.outputs)))
    client = ResultsClient(forwarder.http, str(site.config["forward"]["url"]), SITE, key_id)
    port = free_port()
    key = seal_keys.read_private(site.root / "keys" / "results.key")
    with spool_at(tmp_path) as spool, AuditLog(tmp_path / "audit.log", sync=False) as audit:

        def deliverer(ca: str) -> ResultsDeliverer:
            tls = scu.client_tls(pki / f"{ca}.crt", pki / "gateway.crt", pki / "gateway.key")
            node = scu.Node("127.0.0.1", port, "DICOM_GATEWAY", "PACS", tls, timeout=5.0)
            return ResultsDeliverer(spool.returns, client, Reidentifier(vault, "UT"), key,
                                    lambda ds: scu.store(node, ds), audit, 1.0)  # fmt: skip

        ResultsPoller(client, spool.returns).poll_once()
        with tls_storescp(tmp_path / "pacs", port, pki):
            assert not deliverer("other").deliver_once()  # PACS not trusted: nothing sent
            assert [r.result for r in spool.returns.waiting()] == [good.result]
            assert spool.returns.held() == []
            assert not any((tmp_path / "pacs").iterdir())
            assert [w.result for w in client.waiting(0)[0]] == [good.result]  # not acknowledged
            assert deliverer("ca").deliver_once()
        [stored] = [pydicom.dcmread(p) for p in (tmp_path / "pacs").iterdir()]
        assert stored.StudyInstanceUID == sent.original("StudyInstanceUID")
        assert stored.SOPInstanceUID == good.result
        assert spool.returns.waiting() == []
        assert client.waiting(0)[0] == []


def test_a_retried_result_starts_its_retry_window_again(site: Site) -> None:
    """Held after PACS refused it for hours (`pacs-retries-exhausted`), a retried result
    would be dead-lettered again at once if it kept the time it was fetched."""
    spool = Spool.open(load(site.path).spool)
    try:
        returns = spool.returns
        rid = generate_uid()
        kept = returns.put(rid, generate_uid(), 1, b"sealed bytes")
        returns.hold(kept, "dead", "pacs-retries-exhausted")
        time.sleep(0.05)
        returns.retry(rid)
        [again] = returns.waiting()
        assert again.fetched >= kept.fetched + 0.05
        assert returns.body(again) == b"sealed bytes"
        assert (again.study, again.cursor) == (kept.study, kept.cursor)
        assert returns.held() == []
    finally:
        spool.close()
