"""The results channel of protocol v1 against the real reference receiver (a process on
127.0.0.1, mutual TLS with `dicom-gateway keys` certificates): results offered for a site are
listed after a cursor, fetched sealed to the gateway's own HPKE key and bound to their name,
and acknowledged idempotently."""

from __future__ import annotations

import io
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from gateway import scu
from gateway.errors import SealError
from gateway.forward.client import Forwarder
from gateway.forward.results import ResultsClient, ResultsError
from gateway.keyfiles import generate_key_file
from gateway.pipeline.results import Pacs, ResultsPoller, pacs_verdict
from gateway.receiver.results import Results
from gateway.reidentify.restore import Reidentifier
from gateway.seal import keys as seal_keys
from gateway.seal.envelope import Name, open_sealed
from gateway.settings import SecretSource, SpoolSettings, load
from gateway.spool import Spool
from gateway.vault import Entry, SqliteVault
from tests.dicom_builders import greyscale, part10, worker
from tests.integration.test_reidentify import JANE, OTHER, _referencing, ct_slices, encode, sr
from tests.integration.test_reidentify import send as send_study
from tests.pipeline_site import Site, free_port, wait_for
from tests.results_way import SITE, Way
from tests.support import cli, dcmtk, storescu

pytestmark = pytest.mark.timeout(120)
SITE_OF_DAEMON = "SITE"  # deidentify.site_code by default


def result(study: str) -> bytes:
    """A result of a pseudonymous study, as an analysis server would make it."""
    return part10(greyscale(8, 8, bytes(64), StudyInstanceUID=study, PatientID="GW-0000000000"))


def test_results_are_listed_after_a_cursor_fetched_sealed_and_acknowledged_once(
    channel: tuple[Site, str, Forwarder],
) -> None:
    site, key_id, forwarder = channel
    offered = Results(site.root / "received")
    study = generate_uid()
    first, second = result(study), result(study)
    a, b = offered.offer(SITE, first), offered.offer(SITE, second)
    url = str(site.config["forward"]["url"])
    client = ResultsClient(forwarder.http, url, SITE, key_id)
    listed, cursor = client.waiting(0)
    assert [(w.result, w.study) for w in listed] == [(a.result, study), (b.result, study)]
    assert cursor == b.cursor
    assert client.waiting(cursor) == ([], cursor)
    key = seal_keys.read_private(site.root / "keys" / "results.key")
    item = client.fetch(listed[0])
    assert open_sealed(item.body, item.name, key) == first
    with pytest.raises(SealError):  # bound to its study and id: not openable as another
        open_sealed(item.body, Name("result", SITE, generate_uid(), a.result), key)
    with pytest.raises(SealError):
        open_sealed(item.body, Name("result", SITE, study, b.result), key)
    client.acknowledge(a.result)
    client.acknowledge(a.result)  # idempotent
    assert [w.result for w in client.waiting(0)[0]] == [b.result]
    with pytest.raises(ResultsError) as gone:
        client.fetch(listed[0])
    assert gone.value.reason == "refused-404"
    client.acknowledge(generate_uid())  # no such result (forgotten): nothing left to tell
    with pytest.raises(ResultsError) as unknown:
        client.acknowledge("1.2.3.x")  # refused for another reason
    assert unknown.value.reason == "acknowledge-refused-404"
    assert ResultsClient(forwarder.http, url, "OTHER", key_id).waiting(0) == ([], 0)
    with pytest.raises(ResultsError) as wrong:
        ResultsClient(forwarder.http, url, SITE, "0" * 16).waiting(0)
    assert wrong.value.reason == "server-seals-to-another-key"


def test_a_receiver_without_the_gateway_key_offers_no_results(site: Site) -> None:
    site.receiver()
    forwarder = Forwarder.for_settings(load(site.path))
    try:
        client = ResultsClient(forwarder.http, str(site.config["forward"]["url"]), SITE, "0" * 16)
        with pytest.raises(ResultsError) as caught:
            client.waiting(0)
        assert caught.value.reason == "refused-404"
    finally:
        forwarder.close()


def test_the_poller_keeps_each_result_in_the_spool_once_and_moves_its_cursor(
    channel: tuple[Site, str, Forwarder], tmp_path: Path
) -> None:
    site, key_id, forwarder = channel
    offered = Results(site.root / "received")
    study = generate_uid()
    first = offered.offer(SITE, result(study))
    url = str(site.config["forward"]["url"])
    client = ResultsClient(forwarder.http, url, SITE, key_id)
    settings = SpoolSettings(tmp_path / "spool", SecretSource(file=tmp_path / "master.key"))
    generate_key_file(tmp_path / "master.key")
    spool = Spool.open(settings)
    try:
        poller = ResultsPoller(client, spool.returns)
        assert poller.poll_once() == 1
        assert poller.poll_once() == 0
        second = offered.offer(SITE, result(study))
        assert poller.poll_once() == 1
        kept = spool.returns.waiting()
        assert [(r.result, r.study) for r in kept] == [
            (first.result, study),
            (second.result, study),
        ]
        assert spool.returns.cursor() == second.cursor
        key = seal_keys.read_private(site.root / "keys" / "results.key")
        name = Name("result", SITE, study, first.result)
        original = offered.read(SITE, first.result)
        assert original is not None
        assert open_sealed(spool.returns.body(kept[0]), name, key) == original[1]
        spool.returns.set_cursor(0)  # as if the gateway died before moving its cursor
        assert poller.poll_once() == 2
        assert len(spool.returns.waiting()) == 2  # kept again: still one file each
        assert not list((tmp_path / "spool").rglob("*.part"))
    finally:
        spool.close()


@contextmanager
def storescp(folder: Path, port: int, *options: str) -> Iterator[subprocess.Popen[bytes]]:
    """dcmtk storescp as PACS on 127.0.0.1: it keeps what it is sent in `folder`, each
    C-STORE in a file of its own (`+uf`: the same instance twice is two files)."""
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [dcmtk("storescp"), *options, "-aet", "PACS", "+uf", "-od", str(folder), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _accepts(port), 10, "storescp listening")
        yield process
    finally:
        process.terminate()  # by its PID
        process.wait(timeout=10)


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_results_go_to_pacs_re_identified_and_are_acknowledged_only_after_success(
    way: Way, vault: SqliteVault, tmp_path: Path
) -> None:
    sent = send_study(vault, ct_slices(2, **JANE))
    stranger = way.offered.offer(SITE, encode(sr(sent.outputs, StudyInstanceUID=generate_uid())))
    good = way.offered.offer(SITE, encode(sr(sent.outputs)))
    deliverer = way.deliverer(vault)
    way.poll()
    assert not deliverer.deliver_once()  # PACS down: the good result waits, unacknowledged
    assert [r.result for r in way.spool.returns.waiting()] == [good.result]
    held = [(h["result"], h["reason"]) for h in way.spool.returns.held()]
    assert held == [(stranger.result, "result-unknown-study")]
    assert [w.result for w in way.client.waiting(0)[0]] == [good.result]  # stranger: acked
    with storescp(tmp_path / "pacs", way.node.port):
        assert deliverer.deliver_once()
    stored = [pydicom.dcmread(p) for p in (tmp_path / "pacs").iterdir()]
    assert [str(ds.StudyInstanceUID) for ds in stored] == [sent.original("StudyInstanceUID")]
    assert str(stored[0].PatientName) == JANE["PatientName"]
    assert stored[0].SOPInstanceUID == good.result
    assert way.spool.returns.waiting() == []
    assert way.client.waiting(0)[0] == []  # acknowledged after PACS said Success
    assert way.audit_events() == ["result.quarantined", "result.stored"]


def test_a_result_pacs_stored_is_acknowledged_later_never_stored_twice(
    way: Way, vault: SqliteVault, tmp_path: Path
) -> None:
    """PACS said Success but the analysis server cannot be told: the result is marked stored
    in the spool, and a later pass (a restart too) only acknowledges it."""
    sent = send_study(vault, ct_slices(1, **JANE))
    good = way.offered.offer(SITE, encode(sr(sent.outputs)))
    pacs = tmp_path / "pacs"
    way.poll()
    with storescp(pacs, way.node.port):
        way.site.processes[-1].stop()  # the analysis server goes away
        assert not way.deliverer(vault).deliver_once()
        assert len(list(pacs.iterdir())) == 1
        [waiting] = way.spool.returns.waiting()
        assert waiting.stored
        way.reopen()  # as after a restart
        assert not way.deliverer(vault).deliver_once()  # still away
        way.site.receiver()
        assert way.deliverer(vault).deliver_once()
        assert len(list(pacs.iterdir())) == 1  # acknowledged, not stored again
    assert way.spool.returns.waiting() == []
    assert not list((tmp_path / "spool" / "returns").glob("*.stored"))
    assert way.client.waiting(0)[0] == []
    assert way.audit_events() == ["result.stored"]
    assert good.result in way.audit.path.read_text()


def test_a_result_made_before_the_study_ledger_lists_its_images_waits_for_them(
    way: Way, vault: SqliteVault, tmp_path: Path
) -> None:
    """The ledger is written when a study is stable, not per instance: a result referencing
    an image delivered but not yet listed waits `ledger_wait_seconds`, then goes to PACS once
    the ledger lists it; after the wait it is quarantined (result-reference-outside-study)."""
    first, second = ct_slices(2, **JANE)
    listed = send_study(vault, [first])
    late = worker(vault, pixels=None).process(part10(second))
    assert late.result is not None
    unlisted = pydicom.dcmread(io.BytesIO(late.result.data))
    assert unlisted.StudyInstanceUID == listed.outputs[0].StudyInstanceUID
    early = way.offered.offer(SITE, encode(sr([*listed.outputs, unlisted])))
    pacs = tmp_path / "pacs"
    way.poll()
    with storescp(pacs, way.node.port):
        assert way.deliverer(vault, ledger_wait_seconds=600.0).deliver_once()
        assert [r.result for r in way.spool.returns.waiting()] == [early.result]
        assert way.spool.returns.held() == []
        assert not any(pacs.iterdir())
        vault.record_delivered(
            str(unlisted.StudyInstanceUID),
            [Entry(str(unlisted.SOPInstanceUID), str(unlisted.SeriesInstanceUID),
                   str(unlisted.SOPClassUID), "0" * 64)],
        )  # fmt: skip
        assert way.deliverer(vault, ledger_wait_seconds=600.0).deliver_once()
    assert way.spool.returns.waiting() == []
    assert len(list(pacs.iterdir())) == 1
    elsewhere = send_study(vault, ct_slices(1, **OTHER)).output("SOPInstanceUID")
    never = way.offered.offer(SITE, encode(_referencing(sr(listed.outputs), elsewhere)))
    way.poll()
    # waited long enough: the ledger never lists it
    assert way.deliverer(vault, ledger_wait_seconds=0.001).deliver_once()
    held = [(h["result"], h["reason"]) for h in way.spool.returns.held()]
    assert held == [(never.result, "result-reference-outside-study")]


def test_the_daemon_brings_a_result_back_to_pacs_under_the_original_study(site: Site) -> None:
    """storescu -> gateway -> receiver; an SR made from what the receiver got is offered back;
    the gateway fetches it, re-identifies it and stores it in PACS (dcmtk storescp)."""
    port = free_port()
    keys = site.root / "keys"
    site.edit(lambda config: config.update(results={
        "enabled": True, "poll_seconds": 0.5, "private_key": str(keys / "results.key"),
        "public_key": str(keys / "results.pub"),
        "pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": port}}))  # fmt: skip
    site.edit(lambda config: config["receiver"].update(results_key=str(keys / "results.pub")))
    made = cli("keys", "--config", str(site.path))
    assert made.returncode == 0, made.stderr
    site.receiver()
    gateway = site.gateway()
    originals = [part10(ds) for ds in ct_slices(2, **JANE)]
    folder = site.root / "send"
    folder.mkdir()
    for i, data in enumerate(originals):
        (folder / f"{i}.dcm").write_bytes(data)
    assert storescu(gateway.port, sorted(folder.iterdir())).returncode == 0
    wait_for(lambda: len(site.stored()) == 2, 60, "both instances at the receiver")
    # an analysis server works on a study once its manifest says it is complete
    wait_for(lambda: len(site.manifests()) == 1, 60, "the study's manifest")
    received: list[Dataset] = [pydicom.dcmread(p) for p in site.stored()]
    result = Results(site.root / "received").offer(SITE_OF_DAEMON, encode(sr(received)))
    with storescp(site.root / "pacs", port):
        wait_for(lambda: any((site.root / "pacs").iterdir()), 60, "the result in PACS")
        wait_for(lambda: not _waiting(site, result.result), 30, "the result acknowledged")
    stored = [pydicom.dcmread(p) for p in (site.root / "pacs").iterdir()]
    assert len(stored) == 1
    study = pydicom.dcmread(io.BytesIO(originals[0])).StudyInstanceUID
    assert stored[0].StudyInstanceUID == study
    assert str(stored[0].PatientName) == JANE["PatientName"]
    gateway.wait_for_event("results.stored")
    assert gateway.stop() == 0


def _waiting(site: Site, result: str) -> bool:
    folder = site.root / "received" / SITE_OF_DAEMON / "results"
    return any(p.name.endswith(f"-{result}.dcm") for p in folder.iterdir())


def test_a_result_goes_in_a_syntax_pacs_accepts_and_a_class_it_lacks_is_refused_for_good(
    vault: SqliteVault, tmp_path: Path
) -> None:
    """An SR in Explicit VR Little Endian reaches a PACS that accepts Implicit VR Little
    Endian only (dcmtk storescp +xi); a PACS without the SR's SOP class (a pynetdicom SCP
    for CT only) answers as for "SOP Class not supported", which is final (dead letter)."""
    sent = send_study(vault, ct_slices(1, **JANE))
    restored = Reidentifier(vault, "UT").restore(encode(sr(sent.outputs)))
    ds = pydicom.dcmread(io.BytesIO(restored.data))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    port = free_port()
    node = scu.Node("127.0.0.1", port, "DICOM_GATEWAY", "PACS", timeout=5.0)
    with storescp(tmp_path / "pacs", port, "+xi"):
        assert scu.store(node, ds) == 0x0000
    [stored] = list((tmp_path / "pacs").iterdir())
    assert pydicom.dcmread(stored).SOPInstanceUID == restored.sop_instance_uid

    ct_only = AE(ae_title="PACS")
    ct_only.add_supported_context(CTImageStorage)
    server = ct_only.start_server(("127.0.0.1", port), block=False)
    assert server is not None
    try:
        status = scu.store(node, ds)
    finally:
        server.shutdown()
    assert status == scu.SOP_CLASS_NOT_SUPPORTED
    assert pacs_verdict(status) is Pacs.REFUSED
