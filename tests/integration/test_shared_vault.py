"""N gateways, one PostgreSQL vault (tests/postgres.py), with real processes on 127.0.0.1:
storescu -> two gateway daemons with their own spools -> one reference receiver. A study split
across both arrives as one study; a study naming two patients is held by both; a vault outage
makes instances wait, never quarantines them, and loses or repeats nothing."""

from __future__ import annotations

import copy
import json
import time
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from tests.dicom_builders import greyscale, item, part10
from tests.pipeline_site import Site, wait_for
from tests.postgres import PostgresServer
from tests.support import GatewayProcess, secret_file, storescu, write_config

pytestmark = pytest.mark.timeout(300)


def share(site: Site, server: PostgresServer, dbname: str) -> Path:
    """Point the site's gateway at the PostgreSQL vault; the config of a second gateway (its
    own spool and ports, the same keys, vault and receiver)."""
    vault = server.vault_config(dbname, site.root / "keys" / "vault-db.password")
    vault["key"] = secret_file(site.root / "keys" / "vault.key")
    site.edit(lambda config: config.update(vault=vault))
    second: dict[str, Any] = copy.deepcopy(site.config)
    second["spool"]["directory"] = str(site.root / "second" / "spool")
    return write_config(site.root / "second", second)


def start_second(site: Site, config: Path) -> GatewayProcess:
    process = GatewayProcess(config, site.root / "gateway-second.log").start()
    site.processes.append(process)
    return process


def instance(folder: Path, number: int, **values: Any) -> Path:
    ds = greyscale(16, 16, bytes((number * 7 + i) % 251 for i in range(256)), **values)
    ds.InstanceNumber = number
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{number:03}.dcm"
    path.write_bytes(part10(ds))
    return path


def received(site: Site) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in site.stored()]


def latest_manifests(site: Site) -> dict[str, dict[str, Any]]:
    """The newest manifest of each study the receiver holds."""
    newest: dict[str, tuple[int, dict[str, Any]]] = {}
    for path in site.manifests():
        document = json.loads(path.read_bytes())
        version = int(path.stem.removeprefix("manifest-"))
        if version > newest.get(document["study"], (0, {}))[0]:
            newest[document["study"]] = (version, document)
    return {study: document for study, (_, document) in newest.items()}


def test_a_study_split_across_two_gateways_arrives_as_one_study(
    site: Site, postgres_server: PostgresServer, postgres_db: str
) -> None:
    second_config = share(site, postgres_server, postgres_db)
    receiver = site.receiver()
    gateways = [site.gateway(), start_second(site, second_config)]
    study, frame = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    series = [pydicom.uid.generate_uid(), pydicom.uid.generate_uid()]
    patient = {
        "PatientName": "Nowak^Zofia",
        "PatientID": "PID-7731",
        "PatientBirthDate": "19570304",
    }
    first_uid = pydicom.uid.generate_uid()
    files = []
    for number in range(1, 9):
        values: dict[str, Any] = {
            **patient,
            "StudyInstanceUID": study,
            "SeriesInstanceUID": series[number % 2],
            "FrameOfReferenceUID": frame,
            "StudyDate": "20240611",
            "ContentDate": f"202406{10 + number:02}",
        }
        if number == 1:
            values["SOPInstanceUID"] = first_uid
        else:  # each later image refers to the first, which went through the other gateway
            values["ReferencedImageSequence"] = [item(ReferencedSOPInstanceUID=first_uid,
                ReferencedSOPClassUID=pydicom.uid.SecondaryCaptureImageStorage)]  # fmt: skip
        files.append(instance(site.root / "split", number, **values))
    for number, path in enumerate(files):  # alternately: 1, 3, 5, 7 to one; 2, 4, 6, 8 to the other
        sent = storescu(gateways[number % 2].port, [path])
        assert sent.returncode == 0, sent.stderr
    later = instance(site.root / "later", 9, **patient, StudyInstanceUID=pydicom.uid.generate_uid(),
                     StudyDate="20250102")  # fmt: skip
    assert storescu(gateways[1].port, [later]).returncode == 0
    wait_for(lambda: len(site.stored()) == 9, 90, "every instance at the receiver")
    datasets = received(site)
    split = [ds for ds in datasets if ds.InstanceNumber != 9]
    again = next(ds for ds in datasets if ds.InstanceNumber == 9)
    assert {ds.PatientID for ds in datasets} == {split[0].PatientID}  # one pseudonym, both studies
    assert {str(ds.PatientName) for ds in datasets} == {str(split[0].PatientName)}
    assert split[0].PatientID != "PID-7731"
    assert len({ds.StudyInstanceUID for ds in split}) == 1
    assert again.StudyInstanceUID != split[0].StudyInstanceUID
    assert len({ds.FrameOfReferenceUID for ds in split}) == 1
    by_number = {int(ds.InstanceNumber): ds for ds in split}
    new_first = by_number[1].SOPInstanceUID
    assert new_first != first_uid
    for number in range(2, 9):
        assert by_number[number].ReferencedImageSequence[0].ReferencedSOPInstanceUID == new_first
        expected_series = by_number[2 if number % 2 == 0 else 3].SeriesInstanceUID
        assert by_number[number].SeriesInstanceUID == expected_series
    assert by_number[2].SeriesInstanceUID != by_number[3].SeriesInstanceUID
    # one date shift: every date moved by the same number of days as the study date
    shifts = set()
    for number, ds in by_number.items():
        # sent: ContentDate 2024-06-(10 + n), StudyDate 2024-06-11
        assert _days(ds.ContentDate) - _days(ds.StudyDate) == number - 1
        shifts.add(_days(ds.StudyDate) - _days("20240611"))
    assert len(shifts) == 1
    assert shifts != {0}
    # the newest manifest of the split study lists all eight, whichever gateway sent it
    wait_for(
        lambda: (
            len(latest_manifests(site).get(split[0].StudyInstanceUID, {}).get("instances", [])) == 8
        ),
        60,
        "a manifest listing the whole split study",
    )
    # no two gateways sent the same version of a manifest (the receiver would answer 409)
    answers = {e["status"] for e in receiver.events("receiver.answered")}
    assert answers <= {200, 201}
    for gateway in gateways:
        assert gateway.stop() == 0


def _days(value: str) -> int:
    return date(int(value[:4]), int(value[4:6]), int(value[6:8])).toordinal()


def test_a_study_naming_two_patients_through_two_gateways_is_held_by_both(
    site: Site, postgres_server: PostgresServer, postgres_db: str
) -> None:
    """The second patient reaches the second gateway: it quarantines that instance and records
    the hold in the vault; the first gateway then sends no manifest for the study and
    quarantines its next instance of it."""
    site.edit(lambda config: config.update(studies={"stable_seconds": 4.0}))
    second_config = share(site, postgres_server, postgres_db)
    site.receiver()
    first, second = site.gateway(), start_second(site, second_config)
    study = pydicom.uid.generate_uid()
    folder = site.root / "mixed"
    jane = {"PatientName": "Doe^Jane", "PatientID": "PID-4417", "StudyInstanceUID": study}
    richard = {"PatientName": "Roe^Richard", "PatientID": "PID-5521", "StudyInstanceUID": study}
    assert storescu(first.port, [instance(folder, 1, **jane)]).returncode == 0
    wait_for(lambda: len(site.stored()) == 1, 60, "the first patient's instance")
    assert storescu(second.port, [instance(folder, 2, **richard)]).returncode == 0
    quarantined = site.root / "second" / "spool" / "quarantine"
    wait_for(lambda: len(list(quarantined.glob("*/*.dgs"))) == 1, 60, "the hold at the second")
    # past stable_seconds at both: the first learns of the hold when its manifest is due
    first.wait_for_event("study.mixed_patients", timeout=30)
    time.sleep(2)
    assert site.manifests() == []
    assert storescu(first.port, [instance(folder, 3, **jane)]).returncode == 0
    wait_for(lambda: len(site.spool("quarantine", "*.dgs")) == 1, 60, "the hold at the first")
    reasons = {
        json.loads(p.read_text())["reason"]
        for p in [*site.spool("quarantine", "*.json"), *quarantined.glob("*/*.json")]
    }
    assert reasons == {"study-mixed-patients"}
    time.sleep(6)  # past stable_seconds again: still no manifest
    assert site.manifests() == []
    assert len(site.stored()) == 1
    for gateway in (first, second):
        assert gateway.stop() == 0


def test_the_vault_stopped_mid_run_makes_instances_wait_and_all_arrive_once(
    site: Site, postgres_server: PostgresServer
) -> None:
    own = PostgresServer(postgres_server.bindir)  # this test stops its own server
    try:
        own.start()
        own.create_database("vault")
        vault = own.vault_config("vault", site.root / "keys" / "vault-db.password")
        vault["key"] = secret_file(site.root / "keys" / "vault.key")
        site.edit(lambda config: config.update(vault=vault))
        site.receiver()
        gateway = site.gateway()
        study = pydicom.uid.generate_uid()
        patient = {"PatientName": "Ørsted^Åse", "PatientID": "PID-0815", "StudyInstanceUID": study}
        files = [instance(site.root / "outage", n, **patient) for n in range(1, 31)]
        assert storescu(gateway.port, files[:10]).returncode == 0
        wait_for(lambda: len(site.stored()) == 10, 60, "the first ten delivered")
        own.stop()
        assert storescu(gateway.port, files[10:]).returncode == 0  # acknowledged all the same
        wait_for(
            lambda: (
                gateway.metric("dicom_gateway_vault_errors_total", reason="vault-unavailable") >= 1
            ),
            60,
            "a vault error counted",
        )
        ready = httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/readyz", timeout=30)
        assert ready.status_code == 503
        assert ready.json()["checks"]["vault"] == {"ok": False, "reason": "vault-unavailable"}
        time.sleep(3)
        assert len(site.spool("incoming", "*.dgs")) == 20  # waiting, none quarantined
        assert site.spool("quarantine", "*") == []
        own.start()
        wait_for(lambda: len(site.stored()) == 30, 120, "all thirty delivered")
        wait_for(lambda: len(site.manifests()) >= 1, 60, "the manifest")
        assert site.spool("quarantine", "*") == []
        assert site.spool("incoming", "*.dgs") == []
        datasets = received(site)
        assert len({ds.SOPInstanceUID for ds in datasets}) == 30
        assert {ds.PatientID for ds in datasets} == {datasets[0].PatientID}
        assert len(latest_manifests(site)[datasets[0].StudyInstanceUID]["instances"]) == 30
        ready = httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/readyz", timeout=30)
        assert ready.json()["checks"]["vault"] == {"ok": True, "reason": "ok"}
        assert gateway.stop() == 0
    finally:
        own.remove()
