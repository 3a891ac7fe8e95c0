"""The command line: clear messages and exit codes, never tracebacks."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import select
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from cryptography import x509

from gateway.seal.keys import read_private, read_public
from tests.dicom_builders import implicit_in_explicit, part10, synthetic
from tests.support import (
    REPO,
    GatewayProcess,
    base_config,
    cli,
    clis,
    make_keys,
    read_spool,
    receiver_config,
    shared_dir,
    write_config,
)

EXAMPLE = REPO / "config" / "gateway.example.toml"


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """The shipped example config, copied so its relative paths land in tmp_path."""
    config = tmp_path / "config" / "gateway.toml"
    config.parent.mkdir()
    shutil.copy(EXAMPLE, config)
    return config


def test_example_config_checks_out_once_keys_exist(example: Path) -> None:
    missing = cli("check-config", str(example))
    assert missing.returncode == 2
    assert f"{example}: spool.master_key.file: no such file" in missing.stderr
    created = cli("keys", "--config", str(example))
    assert created.returncode == 0, created.stderr
    key = example.parent.parent / "var" / "keys" / "spool-master.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ok = cli("check-config", str(example))
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout


def test_keys_makes_the_forwarding_pki_and_the_receiver_hpke_pair(example: Path) -> None:
    created = cli("keys", "--config", str(example))
    assert created.returncode == 0, created.stderr
    var = example.parent.parent / "var"
    ca = x509.load_pem_x509_certificate((var / "pki" / "dev-ca.crt").read_bytes())
    for leaf, usage in (("receiver", "serverAuth"), ("gateway-client", "clientAuth")):
        cert = x509.load_pem_x509_certificate((var / "pki" / f"{leaf}.crt").read_bytes())
        cert.verify_directly_issued_by(ca)  # raises if another CA signed it
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert [u._name for u in usages] == [usage]
        assert stat.S_IMODE((var / "pki" / f"{leaf}.key").stat().st_mode) == 0o600
    sans = x509.load_pem_x509_certificate((var / "pki" / "receiver.crt").read_bytes())
    names = sans.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    private = read_private(var / "keys" / "receiver-hpke.key")
    assert read_public(var / "keys" / "receiver-hpke.pub").key_id == private.public.key_id
    assert f"key id {private.public.key_id}" in created.stdout
    again = cli("keys", "--config", str(example))
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stdout
    assert read_private(var / "keys" / "receiver-hpke.key").public.key_id == private.public.key_id


def test_one_ca_for_pacs_clients_and_the_forwarder_is_warned_about(example: Path) -> None:
    """The example's development PKI has one CA for everything: with inbound TLS on, ingest
    would admit the forwarder's client certificate as a PACS. check-config says so (and still
    passes: a warning), run logs it at start; a separate CA for PACS clients silences it."""
    text = example.read_text()
    tls_off = 'enabled = false                            # default false\ncertificate = "../var'
    assert tls_off in text
    example.write_text(text.replace(tls_off, tls_off.replace("false ", "true  ", 1)))
    make_keys(example)

    # 1. check-config: both warnings, exit 0
    checked = cli("check-config", str(example))
    assert checked.returncode == 0, checked.stderr
    assert (
        f"warning: {example}: forward.client_certificate is issued by a CA in "
        "ingest.tls.client_ca" in checked.stderr
    )
    assert (
        f"warning: {example}: ingest.tls.client_ca and forward.ca_bundle are the same CA"
        in checked.stderr
    )

    # 2. run: logged before anything starts (here the spool cannot be made, so it stops at once)
    blocked = example.parent / "blocked.toml"
    blocked.write_text(
        example.read_text().replace('directory = "../var/spool"', 'directory = "/dev/null/spool"')
    )
    ran = cli("run", "--config", str(blocked))
    assert ran.returncode == 1, ran.stderr
    events = [json.loads(line) for line in ran.stderr.splitlines() if line.startswith("{")]
    shared = [e["reason"] for e in events if e["event"] == "config.ca_shared"]
    assert shared == [
        "forward-client-certificate-trusted-by-ingest",
        "ingest-client-ca-is-forward-ca",
    ]

    # 3. PACS clients from a CA of their own: no warning
    separate = example.read_text().replace(
        'client_ca = "../var/pki/dev-ca.crt"', 'client_ca = "../var/pki/pacs-ca.crt"', 1
    )
    example.write_text(separate)
    make_keys(example)
    again = cli("check-config", str(example))
    assert again.returncode == 0, again.stderr
    assert "warning" not in again.stderr


def test_keys_never_overwrites_a_key(example: Path) -> None:
    assert cli("keys", "--config", str(example)).returncode == 0
    key = example.parent.parent / "var" / "keys" / "spool-master.key"
    before = key.read_bytes()
    again = cli("keys", "--config", str(example))
    assert again.returncode == 0
    assert "kept" in again.stdout
    assert key.read_bytes() == before


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("ingest", "ae_titel", "X", "ingest.ae_titel: unknown key"),
        ("ingest", "ae_title", "WAY_TOO_LONG_AE_TITLE", "ingest.ae_title: must be at most 16"),
        ("ingest", "ae_title", "BACK\\SLASH", "ingest.ae_title: may hold only"),
        ("ingest", "port", "eleven", "ingest.port: must be an integer, not a string"),
        ("ingest", "port", 70000, "ingest.port: must be a TCP port"),
        ("ingest", "network_timeout", float("inf"), "ingest.network_timeout: must be a finite"),
        ("metrics", "enabled", 1, "metrics.enabled: must be true or false"),
        ("logging", "level", "loud", "logging.level: must be one of"),
        ("spool", "master_key", "deadbeef", "spool.master_key: secrets are never inline"),
    ],
)
def test_bad_config_is_refused_naming_key_and_file(
    tmp_path: Path, section: str, key: str, value: object, expected: str
) -> None:
    config = base_config(tmp_path)
    config[section][key] = value
    path = write_config(tmp_path, config)
    result = cli("run", "--config", str(path))
    assert result.returncode == 2
    assert f"{path}: {expected}" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "two.toml"
    path.write_text(
        "[ingest]\nae_title = ''\nbogus = 1\n[spool]\ndirectory = 'spool'\n"
        "master_key = { file = 'k' }\n[[ingest.peers]]\nname = 'p'\nae_title = 'P'\n"
    )
    result = cli("check-config", str(path))
    assert result.returncode == 2
    assert f"{path}: ingest.ae_title: must not be empty" in result.stderr
    assert f"{path}: ingest.bogus: unknown key" in result.stderr


def test_missing_key_file_stops_the_gateway_naming_key_and_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, base_config(tmp_path))
    result = cli("run", "--config", str(path))
    assert result.returncode == 2
    key = tmp_path / "keys" / "master.key"
    assert f"{path}: spool.master_key.file: no such file {key}" in result.stderr


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, base_config(tmp_path))
    make_keys(path)
    key = tmp_path / "keys" / "master.key"
    key.chmod(0o644)
    result = cli("run", "--config", str(path))
    assert result.returncode == 2
    assert f"{path}: spool.master_key: {key}: key file must be mode 0600" in result.stderr


def test_missing_or_broken_config_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[ingest\n")
    missing, result = clis(
        ["check-config", str(tmp_path / "nope.toml")], ["check-config", str(broken)]
    )
    assert missing.returncode == 2
    assert "nope.toml: configuration file not found" in missing.stderr
    assert result.returncode == 2
    assert "broken.toml: not valid TOML" in result.stderr


def test_echo_and_send_commands(gateway: GatewayProcess, testdata: Path) -> None:
    port = str(gateway.port)
    peer = ["--host", "127.0.0.1", "--port", port, "--aec", "GATEWAY_UT", "--aet", "PACS"]
    echo = cli("echo", *peer)
    assert echo.returncode == 0, echo.stderr
    assert "status 0x0000" in echo.stdout
    folder = testdata / "multiframe_enhanced"
    sent = cli("send", str(folder), *peer)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    count = len(list(folder.glob("*.dcm")))
    assert f"{count} stored, 0 failed" in sent.stdout
    assert len(read_spool(gateway.config)) == count


def test_send_reports_refusal_with_exit_code_1(gateway: GatewayProcess, testdata: Path) -> None:
    path = testdata / "transfer_syntaxes" / "pydicom_wheel__CT_small.dcm"
    peer = ["--host", "127.0.0.1", "--port", str(gateway.port), "--aec", "GATEWAY_UT"]
    result = cli("send", str(path), *peer, "--aet", "UNKNOWN")
    assert result.returncode == 1
    assert "rejected" in result.stdout
    assert "0 stored, 1 failed" in result.stdout


def test_echo_to_nobody_is_a_clear_error() -> None:
    result = cli("echo", "--host", "127.0.0.1", "--port", "1", "--aec", "X", "--aet", "Y")
    assert result.returncode == 1
    assert "unreachable" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("command", "section"),
    [("run", "ingest"), ("run", "metrics"), ("receiver", "receiver"), ("console run", "console")],
)
def test_a_port_in_use_is_named_with_its_address_and_setting(
    tmp_path: Path, command: str, section: str
) -> None:
    """Each listener's bind failing names the address, the port and the key to change
    (issue 23): a real socket holds the port."""
    config = receiver_config(tmp_path)
    # `run` without workers (only its two listeners); `keys` makes the receiver's files
    config["forward"]["enabled"] = command == "receiver"
    pki = tmp_path / "pki"
    config["console"] = {
        "certificate": str(pki / "console.crt"),
        "private_key": str(pki / "console.key"),
        "officers": str(tmp_path / "keys" / "officers.json"),
    }
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        config[section]["port"] = port
        path = write_config(tmp_path, config)
        make_keys(path)
        result = cli(*command.split(), "--config", str(path))
    assert result.returncode == 1, result.stderr
    expected = f"cannot listen on 127.0.0.1:{port} ({section}.port): address already in use"
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_officer_accounts_are_listed_as_a_table_or_as_json(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    config["console"] = {  # the certificate is named, not read, to manage accounts
        "officers": str(tmp_path / "officers.json"),
        **{key: str(tmp_path / f"console.{key}") for key in ("certificate", "private_key")},
    }
    path = str(write_config(tmp_path, config))
    for name in ("b.smit", "a.jansen"):
        added = cli(
            "console",
            "officer",
            "add",
            name,
            "--password-stdin",
            "--config",
            path,
            input="a long enough passphrase\n",
        )
        assert added.returncode == 0, added.stderr
    table, listed = clis(
        ["console", "officer", "list", "--config", path],
        ["console", "officer", "list", "--json", "--config", path],
    )
    assert table.stdout == "a.jansen\nb.smit\n"
    assert json.loads(listed.stdout) == [{"name": "a.jansen"}, {"name": "b.smit"}]


def test_the_shell_completes_commands_and_start_up_does_not_import_argcomplete(
    tmp_path: Path,
) -> None:
    """What bash's completion hook (`register-python-argcomplete dicom-gateway`) asks: the
    words that complete the line; argcomplete is imported only then."""
    line, answer = "dicom-gateway spool q", tmp_path / "completions"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(answer),
    }
    asked = subprocess.run(
        [sys.executable, "-m", "gateway"],
        env=env,
        cwd=REPO,
        timeout=60,
        capture_output=True,
        check=False,
    )
    assert asked.returncode == 0, asked.stderr
    assert answer.read_text().split() == ["quarantine"]
    probe = "import sys; from gateway.cli import main; main(['--version'])"
    loaded = "import atexit, sys; atexit.register(lambda: print('argcomplete' in sys.modules)); "
    started = subprocess.run(
        [sys.executable, "-c", loaded + probe],
        cwd=REPO,
        timeout=60,
        capture_output=True,
        text=True,
        check=False,
    )
    assert started.stdout.split()[-1] == "False", started.stdout + started.stderr


def test_unloadable_tls_files_are_named(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    pki = tmp_path / "pki"
    config["ingest"]["tls"] = {
        "enabled": True,
        "certificate": str(pki / "server.crt"),
        "private_key": str(pki / "server.key"),
        "client_ca": str(pki / "ca.crt"),
    }
    path = write_config(tmp_path, config)
    make_keys(path)
    (pki / "server.key").write_text("not a key\n")
    result = cli("check-config", str(path))
    assert result.returncode == 2
    assert f"{path}: ingest.tls.certificate / ingest.tls.private_key: cannot load" in result.stderr


def test_a_spool_directory_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config["spool"]["directory"] = str(blocker / "spool")
    path = write_config(tmp_path, config)
    make_keys(path)
    result = cli("run", "--config", str(path))
    assert result.returncode == 1
    assert f"spool.directory {blocker / 'spool'}: cannot prepare (ENOTDIR)" in result.stderr
    assert "Traceback" not in result.stderr


def test_describe_profile_lists_every_attribute_under_the_configured_options(
    tmp_path: Path,
) -> None:
    config = base_config(tmp_path)
    config["deidentify"] = {"retain_uids": True, "retain_patient_characteristics": False}
    default, custom = clis(
        ["describe-profile", "--format", "json"],
        ["describe-profile", "--config", str(write_config(tmp_path, config))],
    )
    assert default.returncode == 0, default.stderr
    listed = json.loads(default.stdout)
    rows = {row["tag"]: row for row in listed if row["source"] == "table"}
    assert len(rows) == 621
    gateway = {row["tag"]: row for row in listed if row["source"] == "gateway"}
    assert gateway["(0088,0200)"]["action"] == "X"  # icon images, whatever the table says
    assert rows["(0070,0001)"]["action"] == "X"  # graphic annotations: the gateway rule wins
    assert rows["(0070,0001)"]["reason"].startswith("Gateway:")
    age = rows["(0010,1010)"]  # Patient's Age, patient characteristics kept: over 89 as 090Y
    assert (age["action"], age["does"]) == ("C", "keep, ages over 89 as 090Y")
    assert rows["(0020,000D)"]["action"] == "U"
    # the table says D; no dummy item can stand for what identified someone: the engine
    # removes these sequences, and describe-profile says so
    for tag in (
        "(0008,0082)",  # Institution Code Sequence
        "(0008,1072)",  # Operator Identification Sequence
        "(0040,1101)",  # Person Identification Code Sequence
        "(0040,A073)",  # Verifying Observer Sequence
        "(0034,0001)",  # Flow Identifier Sequence
        "(0008,1111)",  # Referenced Performed Procedure Step Sequence
    ):
        action, does = rows[tag]["action"], rows[tag]["does"]
        assert (action, does.split("; ")[0]) == ("X", "remove"), tag  # unless the IOD needs it
        assert rows[tag]["reason"] == "Basic Profile"
    assert custom.returncode == 0, custom.stderr
    assert "Retain UIDs Option" in custom.stdout.splitlines()[1]
    study_uid = next(line for line in custom.stdout.splitlines() if "Study Instance UID" in line)
    assert "-> K" in study_uid
    age = next(line for line in custom.stdout.splitlines() if "Patient's Age" in line)
    assert "-> X" in age


def test_describe_profile_refuses_a_bad_option(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    config["deidentify"] = {"longitudinal_dates": "sometimes"}
    result = cli("describe-profile", "--config", str(write_config(tmp_path, config)))
    assert result.returncode == 2
    assert "deidentify.longitudinal_dates: must be one of" in result.stderr


def test_describe_profile_agrees_with_the_standard_table(tmp_path: Path) -> None:
    """Every row of the shared Table E.1-1 JSON: with no option on, an attribute whose basic
    code is a single code gets exactly that code, unless a gateway rule says why not, or the
    engine does something else with the attribute's VR (describe-profile prints what the
    engine does; tests/unit/test_explain.py checks each row against it)."""
    reference = (
        shared_dir()
        / "reference"
        / "ps3.15_tableE1-1_confidentiality_profile_attributes.innolitics_rev2024b.json"
    )
    if not reference.is_file():
        pytest.skip(f"shared reference table not found at {reference}")
    config = base_config(tmp_path)
    config["deidentify"] = {
        "retain_patient_characteristics": False,
        "longitudinal_dates": "off",
        "clean_descriptors": False,
    }
    shown = cli(
        "describe-profile", "--config", str(write_config(tmp_path, config)), "--format", "json"
    )
    assert shown.returncode == 0, shown.stderr
    rows = {r["tag"]: r for r in json.loads(shown.stdout) if r["source"] == "table"}
    checked, departed = 0, {}
    for row in json.loads(reference.read_text()):
        got = rows[row["tag"]]
        assert (got["name"], got["basic"]) == (row["name"], row["basicProfile"])
        if "/" not in row["basicProfile"] and not got["reason"].startswith("Gateway:"):
            if got["action"] != row["basicProfile"].rstrip("*"):
                departed[row["tag"]] = got["action"]
            checked += 1
    assert checked >= 300
    assert departed == {
        # D on a sequence: removed; on a UID: a new UID
        **dict.fromkeys(("(0034,0001)", "(0040,1101)", "(0040,A073)"), "X"),
        "(006A,0003)": "U",
        # D on a value no dummy can stand for (binary, UN, UR, AS): emptied
        **dict.fromkeys(
            (
                "(0400,0115)",
                "(0042,0011)",
                "(0034,0002)",
                "(0034,0007)",
                "(0072,005F)",
                "(0072,0065)",
                "(0072,006D)",
                "(0072,0071)",
                "(0034,0005)",
            ),
            "Z",
        ),
        "(0000,1001)": "X",  # Requested SOP Instance UID: the command group is not stored
        # Z on a sequence: no item can stay, so it goes (kept with no items where the IOD
        # requires it; an optional sequence without items is an IOD error)
        **dict.fromkeys(
            ("(0040,0513)", "(0040,0562)", "(0040,0610)", "(0040,A088)", "(3010,0081)"), "X"
        ),
    }


def test_deidentify_reports_every_input_and_refuses_bad_usage(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.txt").write_text("not DICOM")
    (folder / "empty.dcm").write_bytes(b"")
    report = tmp_path / "report.json"
    config = base_config(tmp_path)
    config["deidentify"] = {"site_code": "lower"}
    done, missing, bad = clis(
        ["deidentify", str(folder), "--out", str(tmp_path / "out"), "--report", str(report)],
        ["deidentify", str(tmp_path / "nowhere"), "--out", "o", "--report", "r.json"],
        _deidentify_argv(write_config(tmp_path, config), folder, Path("o"), Path("r.json")),
    )
    assert done.returncode == 0, done.stderr
    files = {Path(f["input"]).name: f for f in json.loads(report.read_text())["files"]}
    assert {name: (f["status"], f["reason"]) for name, f in files.items()} == {
        "empty.dcm": ("quarantined", "not-dicom"),
        "notes.txt": ("quarantined", "not-dicom"),
    }
    assert missing.returncode == 2
    assert "no such file or folder" in missing.stderr
    assert bad.returncode == 2
    assert "deidentify.site_code: must be 1-8 capital letters or digits" in bad.stderr
    assert "Traceback" not in bad.stderr + missing.stderr


@pytest.fixture(scope="module")
def odd_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two files of one instance, one encoded Implicit VR under an Explicit VR header, one in
    a character set pydicom does not know."""
    folder = tmp_path_factory.mktemp("odd")
    one = part10(synthetic())
    (folder / "a-first.dcm").write_bytes(one)
    (folder / "b-copy.dcm").write_bytes(one)
    (folder / "c-implicit.dcm").write_bytes(implicit_in_explicit(synthetic()))
    charset = part10(synthetic(SpecificCharacterSet="ISO_IR 100"))
    (folder / "d-charset.dcm").write_bytes(charset.replace(b"ISO_IR 100", b"ISO_IR 999"))
    return folder


def test_deidentify_explains_a_shared_instance_and_counts_pydicom_warnings(
    odd_inputs: Path, tmp_path: Path
) -> None:
    """The second file of one SOP Instance UID is not written over the first: the summary
    names both paths (never the UID); pydicom's warnings are counted by kind in the report,
    not printed; stderr is no terminal, so there is no progress line."""
    report = tmp_path / "report.json"
    done = cli(
        "deidentify", str(odd_inputs), "--out", str(tmp_path / "out"), "--report", str(report)
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(report.read_text())
    files = {Path(f["input"]).name: f for f in document["files"]}
    first, copy = str(odd_inputs / "a-first.dcm"), str(odd_inputs / "b-copy.dcm")
    assert (files["b-copy.dcm"]["status"], files["b-copy.dcm"]["reason"]) == (
        "dropped",
        "same-sop-instance",
    )
    assert files["b-copy.dcm"]["output"] is None
    assert document["summary"]["same_sop_instance"] == [{"input": copy, "same_as": first}]
    assert f"{copy}  (same instance as {first})" in done.stdout
    uid = pydicom.dcmread(odd_inputs / "a-first.dcm").SOPInstanceUID
    assert uid not in done.stdout + report.read_text()
    assert set(files["c-implicit.dcm"]["warnings"]) == {"implicit-vr-in-explicit-file"}
    assert set(files["d-charset.dcm"]["warnings"]) == {"unknown-character-set"}
    assert document["summary"]["pydicom_warnings"] == {
        "implicit-vr-in-explicit-file": 1,
        "unknown-character-set": 1,
    }
    assert "ISO_IR 999" not in report.read_text()
    assert "pydicom warnings, by kind (inputs): implicit-vr-in-explicit-file (1)" in done.stdout
    assert "library.log" not in done.stderr
    assert "files/s" not in done.stderr


def test_deidentify_shows_progress_on_a_terminal(odd_inputs: Path, tmp_path: Path) -> None:
    """On a terminal stderr gets one line, rewritten (carriage returns) after each input."""
    master, terminal = os.openpty()
    command = [
        sys.executable,
        "-m",
        "gateway",
        "deidentify",
        str(odd_inputs),
        "--out",
        str(tmp_path / "out"),
        "--report",
        str(tmp_path / "report.json"),
    ]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    shown = b""
    try:
        while select.select([master], [], [], 60)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the command closed its end
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
        assert proc.wait(timeout=60) == 0
    text = shown.decode()
    assert "\r[" in text
    assert "1/4 files" in text
    line = [shown for shown in text.split("\r") if "files/s" in shown][-1]
    assert re.search(r"\] 4/4 files, \d+\.\d files/s", line), line


def test_deidentify_lists_masked_regions_and_rejects_bad_pixel_rules(
    testdata: Path, tmp_path: Path
) -> None:
    source = testdata / "ultrasound" / "pydicom_data__US1_UNCR.dcm"
    script = tmp_path / "rules.script"
    script.write_text('{ Modality.equals("US") }\n(0,0,40,20)\n')
    config = base_config(tmp_path)
    config["pixels"] = {"ctp_scripts": [str(script)]}
    make_keys(write_config(tmp_path, config))
    report = tmp_path / "report.json"
    done = _deidentify(write_config(tmp_path, config), source, tmp_path / "out", report)
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads(report.read_text())["files"]
    assert entry["status"] == "written"
    pixels = entry["pixels"]
    assert pixels["checked_because"] == "ultrasound"
    sources = {m["source"] for m in pixels["masked"]}
    assert {"rule", "detected"} <= sources
    rule = next(m for m in pixels["masked"] if m["source"] == "rule")
    assert (rule["x"], rule["y"], rule["width"], rule["height"]) == (0, 0, 40, 20)
    assert entry["changes"]["frames_checked"] == 1

    script.write_text('{ Modality.equals("US") }\n(0,0,40,20)\n{ Rows.nonsense("1") }\n(0,0,1,1)\n')
    path = write_config(tmp_path, config)
    bad, checked = clis(
        _deidentify_argv(path, source, tmp_path / "out2", tmp_path / "r2.json"),
        ["check-config", str(path)],
    )
    assert bad.returncode == 2
    where = f"pixels.ctp_scripts[0]: {script}:3:8: unknown method 'nonsense'"
    assert where in bad.stderr
    assert "Traceback" not in bad.stderr
    assert checked.returncode == 2
    assert where in checked.stderr


def test_a_malformed_ctp_script_stops_check_config_and_run_at_file_line_and_column(
    tmp_path: Path,
) -> None:
    """A comma between two rectangles once passed check-config with `ok` and dropped the
    second rectangle (issue 17): check-config and run now refuse the script, naming the
    config, the key and the script's file:line:column, before anything starts."""
    script = tmp_path / "rules.script"
    script.write_text('GE\n{ Rows.equals("512") }\n(0,0,512,25), (0,480,200,32)\n')
    config = base_config(tmp_path)
    config["pixels"] = {"ctp_scripts": [str(script)]}
    path = write_config(tmp_path, config)
    make_keys(path)
    expected = f"{path}: pixels.ctp_scripts[0]: {script}:3:13: a comma after a rectangle"
    for result in clis(["check-config", str(path)], ["run", "--config", str(path)], timeout=30):
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr
        assert "ok" not in result.stdout
        assert "Traceback" not in result.stderr


def _deidentify(
    config: Path, source: Path, out: Path, report: Path
) -> subprocess.CompletedProcess[str]:
    return cli(*_deidentify_argv(config, source, out, report))


def _deidentify_argv(config: Path, source: Path, out: Path, report: Path) -> list[str]:
    return [
        "deidentify",
        str(source),
        "--config",
        str(config),
        "--out",
        str(out),
        "--report",
        str(report),
    ]


def test_site_words_are_kept_and_a_bad_word_file_names_its_line(tmp_path: Path) -> None:
    """The site's word file adds words to the allow-list of free text (a room name here); the
    report counts removed words per attribute; a malformed file and a keep_cleaned keyword that
    is no narrative attribute fail check-config with the file, key and line."""
    source = tmp_path / "in" / "one.dcm"
    source.parent.mkdir()
    ds = synthetic(SeriesDescription="CT CHEST ZYLOPHAX Qwertinsky", PatientComments="Mother Ana")
    source.write_bytes(part10(ds))
    words = tmp_path / "site-words.txt"
    words.write_text("# rooms\nZYLOPHAX\n")
    config = base_config(tmp_path)
    config["deidentify"] = {"vocabulary": str(words), "keep_cleaned": ["PatientComments"]}
    path = write_config(tmp_path, config)
    make_keys(path)
    report = tmp_path / "report.json"
    checked, done = clis(
        ["check-config", str(path)], _deidentify_argv(path, source.parent, tmp_path / "out", report)
    )
    assert checked.returncode == 0
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads(report.read_text())["files"]
    out = pydicom.dcmread(entry["output"])
    assert out.SeriesDescription == "CT CHEST ZYLOPHAX"
    assert out.PatientComments == "Mother"
    assert entry["changes"]["words_removed:SeriesDescription"] == 1
    assert entry["changes"]["words_removed:PatientComments"] == 1

    words.write_text("# rooms\nZYLOPHAX\nroom 12\n")
    config["deidentify"]["keep_cleaned"] = ["PatientComments", "SeriesDescription"]
    bad = cli("check-config", str(write_config(tmp_path, config)))
    assert bad.returncode == 2
    assert f"deidentify.vocabulary: {words}: line 3: one word per line" in bad.stderr
    assert "deidentify.keep_cleaned[1]: 'SeriesDescription' is not a free-narrative" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_describe_profile_shows_narrative_removed_or_kept_cleaned(tmp_path: Path) -> None:
    """Free narrative is a gateway rule: removed by default, kept cleaned when the site lists it
    in keep_cleaned; the engine does what the description says (tests/unit/test_explain.py)."""
    config = base_config(tmp_path)
    config["deidentify"] = {"keep_cleaned": ["AdditionalPatientHistory"]}
    path = write_config(tmp_path, config)
    default_shown, kept_shown = clis(
        ["describe-profile", "--format", "json"],
        ["describe-profile", "--config", str(path), "--format", "json"],
    )
    default = json.loads(default_shown.stdout)
    rules = {row["tag"]: row for row in default if row["source"] == "gateway"}
    history = rules["(0010,21B0)"]  # Additional Patient History
    assert history["action"] == "X"
    assert "free narrative" in history["reason"]
    assert rules["(0010,2180)"]["action"] == "X"  # Occupation
    kept = json.loads(kept_shown.stdout)
    history = next(r for r in kept if r["source"] == "gateway" and r["tag"] == "(0010,21B0)")
    assert history["action"] == "C"
    assert "keep_cleaned" in history["reason"]
    assert "known words" in history["does"]


def test_a_command_imports_only_what_it_runs() -> None:
    """Every `dicom-gateway` process (and the test suite's hundreds of them) paid ~0.6 s for
    modules its command never used: the gateway's pipeline, the console's and the receiver's
    web servers, highdicom. The parser imports none of them; `run` loads its own."""
    heavy = ("gateway.app", "gateway.console.server", "gateway.receiver.server", "highdicom",
             "gateway.batch", "gateway.admin", "gateway.scu")  # fmt: skip
    probe = (
        "import sys; from gateway.cli import parser; parser().parse_args(['keys', '--config', "
        f"'x.toml']); print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, timeout=60, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []
