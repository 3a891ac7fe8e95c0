"""Ways identifying data could slip through, closed one by one (found in review).

Every test builds a synthetic data set with an identifier in an unusual place, runs it through
the worker on a real vault, and searches the output bytes.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from gateway.vault.sqlite import SqliteVault
from gateway.worker import Outcome
from tests.dicom_builders import item, part10, synthetic, worker

SECRET = "Kowalski"


def run(vault: SqliteVault, ds: Dataset, **options: Any) -> tuple[Outcome, bytes]:
    outcome = worker(vault, **options).process(part10(ds))
    return outcome, outcome.result.data if outcome.result is not None else b""


def base(**values: Any) -> Dataset:
    return synthetic(**{"PatientName": f"{SECRET}^Jan", "PatientID": "MRN0042817", **values})


def code(value: str, meaning: str) -> Dataset:
    return item(CodeValue=value, CodingSchemeDesignator="L", CodeMeaning=meaning)


def test_identification_sequences_go_with_their_codes(vault: SqliteVault) -> None:
    ds = base(
        InstitutionCodeSequence=[code("STMARY01", "Saint Mary Hospital Boston")],
        OperatorIdentificationSequence=[
            item(PersonIdentificationCodeSequence=[code("E778899", "Ortega^Maria")])
        ],
        RequestingPhysicianIdentificationSequence=[code("DR4711", "Ortega")],
        IssuerOfPatientIDQualifiersSequence=[item(UniversalEntityID="urn:oid:1.2.3.stmary")],
    )
    outcome, out = run(vault, ds)
    assert outcome.status == "written"
    for secret in (b"STMARY01", b"Saint Mary", b"E778899", b"Ortega", b"DR4711", b"stmary"):
        assert secret not in out


def test_urls_and_encrypted_originals_go(vault: SqliteVault) -> None:
    ds = base(
        RetrieveURL="https://pacs.example/wado?PatientID=MRN0042817&study=1.2.3.4.5.6.8",
        EncryptedAttributesSequence=[
            item(EncryptedContentTransferSyntaxUID="1.2.840.10008.1.2", EncryptedContent=b"CMSENV")
        ],
    )
    _, out = run(vault, ds)
    assert b"MRN0042817" not in out
    assert b"pacs.example" not in out
    assert b"CMSENV" not in out


def test_free_text_is_cleaned_at_any_depth(vault: SqliteVault) -> None:
    ds = base(
        ScheduledProcedureStepSequence=[
            item(
                ScheduledPerformingPhysicianName="Ortega^Maria",
                CommentsOnTheScheduledProcedureStep="Dr Ortega, 2021-03-04, call 555 123 4567",
            )
        ],
    )
    _, out = run(vault, ds)
    assert b"Ortega" not in out
    assert b"2021-03-04" not in out
    assert b"555 123 4567" not in out


def test_structured_text_is_cleaned_when_sr_is_let_through(vault: SqliteVault) -> None:
    ds = base(
        SOPClassUID="1.2.840.10008.5.1.4.1.1.88.11",
        Modality="SR",
        ContentSequence=[
            item(
                RelationshipType="CONTAINS",
                ValueType="TEXT",
                TextValue=f"Seen by Dr {SECRET} on 2021-03-04, MRN 4455667, call 555 123 4567",
            )
        ],
    )
    outcome, out = run(vault, ds, clean_structured_content=True)
    assert outcome.status == "written"
    for secret in (SECRET.encode(), b"2021-03-04", b"4455667", b"555 123 4567"):
        assert secret not in out
    assert b"Seen by Dr" in out


def test_safe_private_keeps_numbers_only_in_the_listed_vr(vault: SqliteVault) -> None:
    ds = base()
    ds.add_new(0x00E10010, "LO", "ELSCINT1")
    ds.add_new(0x00E11021, "LT", f"{SECRET} MRN0042817")  # listed as DS: a name instead
    ds.add_new(0x00430010, "LO", "GEMS_PARM_01")
    ds.add_new(0x00431039, "IS", ["1000", "0", "0", "0"])  # b-value, as listed
    outcome, out = run(vault, ds, retain_safe_private=True)
    assert outcome.status == "written"
    assert SECRET.encode() not in out
    assert b"ELSCINT1" not in out  # its block lost its only element: the creator goes too
    kept = pydicom.dcmread(io.BytesIO(out))
    assert kept[0x00431039].value == [1000, 0, 0, 0]
    assert kept[0x00430010].value == "GEMS_PARM_01"
    _, plain = run(vault, ds)
    assert b"GEMS_PARM_01" not in plain  # without the option every private element goes


def test_safe_private_text_stays_only_when_every_word_is_known(vault: SqliteVault) -> None:
    """A listed private code or text is the vendor's: kept as it is when all its words are known,
    else the element goes (a relative's name in a listed CS is no technique value)."""
    ds = base()
    ds.add_new(0x20010010, "LO", "Philips Imaging DD 001")
    ds.add_new(0x20011004, "CS", "HELICAL")  # listed CS: a known word, stays
    ds.add_new(0x20011006, "CS", "ZORBLATT")  # listed CS: not a word, goes
    ds.add_new(0x00190010, "LO", "GEMS_ACQU_01")
    ds.add_new(0x0019109E, "LO", "FSE Dr Zorblatt")  # listed LO: a clinician's name, goes
    outcome, out = run(vault, ds, retain_safe_private=True)
    assert outcome.status == "written"
    assert b"ZORBLATT" not in out.upper()
    kept = pydicom.dcmread(io.BytesIO(out))
    assert kept[0x20011004].value == "HELICAL"
    assert 0x20011006 not in kept
    assert 0x0019109E not in kept


def test_text_where_a_number_belongs_goes(vault: SqliteVault) -> None:
    """Its value goes; the attribute too, unless the IOD requires it present (Type 2)."""
    ds = base()
    ds.add_new(0x00180050, "UT", f"{SECRET} MRN0042817")  # SliceThickness is DS: Type 2
    ds.add_new(0x00180060, "UT", f"{SECRET} MRN0042817")  # KVP is DS: not in this IOD
    ds.add_new(0x00181030, "LO", "HEAD")  # ProtocolName: descriptor, stays
    ds.add_new(0x00280030, "DS", ["0.5", "0.5"])  # PixelSpacing: a real number, stays
    _, out = run(vault, ds)
    assert SECRET.encode() not in out
    kept = pydicom.dcmread(io.BytesIO(out))
    assert kept["SliceThickness"].is_empty  # Image Plane module (SC: user option), Type 2
    assert "KVP" not in kept
    assert [float(v) for v in kept.PixelSpacing] == [0.5, 0.5]


def test_general_audio_is_dropped(vault: SqliteVault) -> None:
    outcome, _ = run(vault, base(SOPClassUID="1.2.840.10008.5.1.4.1.1.9.4.2", Modality="AU"))
    assert (outcome.status, outcome.reason) == ("dropped", "audio")


def cjk(study: str, series: str) -> Dataset:
    return base(
        SpecificCharacterSet="ISO_IR 192",
        PatientName="王^小明",
        StudyDescription=study,
        SeriesDescription=series,
        ReferringPhysicianName="山田^太郎",
    )


def test_cjk_names_are_found_without_spaces_and_in_one_character(
    vault: SqliteVault, tmp_path: Path
) -> None:
    """The packaged vocabulary has no CJK words: CJK text goes, names and all, and the
    vocabulary words beside it stay. A run of CJK characters is one token, so a name
    written into one (山田太郎頭部) takes the whole run with it, whatever the vocabulary."""
    _, out = run(vault, cjk("CT 王 小明 胸部 chest", "山田太郎頭部 axial"))
    for secret in ("王", "小明", "山田", "太郎"):
        assert secret.encode("utf-8") not in out
    kept = pydicom.dcmread(io.BytesIO(out))
    assert kept.StudyDescription == "CT chest"
    assert kept.SeriesDescription == "axial"
    # A site's word file that holds the one-character surname (王 is also a word, "king")
    # lets it past the allow-list: the identifier search still takes it out, and only it.
    words = tmp_path / "words.txt"
    words.write_text("王\n胸部\n頭部\n", encoding="utf-8")
    _, out = run(vault, cjk("王 小明 胸部", "山田太郎頭部"), vocabulary=words)
    for secret in ("王", "小明", "山田", "太郎"):
        assert secret.encode("utf-8") not in out
    kept = pydicom.dcmread(io.BytesIO(out))
    assert kept.StudyDescription == "胸部"
    assert kept.SeriesDescription == ""


def _raw_element(tag: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def test_a_value_pydicom_cannot_decode_is_quarantined_without_quoting_it(
    vault: SqliteVault,
) -> None:
    ds = base()
    del ds.Modality
    data = part10(ds)
    at = data.index(b"\x10\x00\x10\x00PN")  # Modality goes just before PatientName
    broken = data[:at] + _raw_element(0x00080060, b"US", b"Kow") + data[at:]  # text as US
    outcome = worker(vault).process(broken)
    assert (outcome.status, outcome.reason) == ("quarantined", "unreadable")


def test_an_instance_uid_that_is_not_a_uid_is_quarantined(vault: SqliteVault) -> None:
    ds = base()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom rightly warns: it is not a UID
        ds.SOPInstanceUID = "../../escaped"
        outcome, _ = run(vault, ds, retain_uids=True)
    assert (outcome.status, outcome.reason) == ("quarantined", "invalid-uid")


def test_names_anywhere_in_the_data_set_are_known_before_any_text_is_cleaned(
    vault: SqliteVault,
) -> None:
    ds = base(
        StudyDescription="MR KNEE DR ORTEGA",  # comes before the sequence that names her
        ContentCreatorName="Lindqvist^Bjorn",
        ContentLabel="LINDQVIST",
        ScheduledProcedureStepSequence=[item(ScheduledPerformingPhysicianName="Ortega^Maria")],
    )
    _, out = run(vault, ds)
    assert b"ORTEGA" not in out.upper()
    assert b"LINDQVIST" not in out.upper()


def test_items_where_no_sequence_belongs_go(vault: SqliteVault) -> None:
    ds = base()
    ds.add_new(0x00080427, "SQ", [item(PatientName=f"{SECRET}^Jan", PatientID="MRN0042817")])
    outcome, out = run(vault, ds)  # (0008,0427) is a UL in the dictionary
    assert outcome.status == "written"
    assert SECRET.encode() not in out
    assert b"MRN0042817" not in out


def test_alternative_calendar_dates_go(vault: SqliteVault) -> None:
    ds = base()
    ds.add_new(0x00100033, "LO", "1377-08-16")
    ds.add_new(0x00100035, "CS", "I")
    _, out = run(vault, ds)
    assert b"1377-08-16" not in out


def test_kept_uids_must_look_like_uids(vault: SqliteVault) -> None:
    ds = base()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom rightly warns: it is not a UID
        ds.SeriesInstanceUID = f"{SECRET}.MRN0042817"
        outcome, out = run(vault, ds, retain_uids=True)
    assert outcome.status == "written"
    assert SECRET.encode() not in out


def test_a_safe_private_code_that_spells_a_name_goes(vault: SqliteVault) -> None:
    ds = base()
    ds.add_new(0x20010010, "LO", "Philips Imaging DD 001")
    ds.add_new(0x20011020, "CS", SECRET.upper())  # Scanning Technique, a CS on the list
    _, out = run(vault, ds, retain_safe_private=True)
    assert SECRET.upper().encode() not in out


def test_an_order_keeps_its_accession_number_pseudonym(vault: SqliteVault) -> None:
    ds = base(
        AccessionNumber="ACC99812",
        RequestAttributesSequence=[item(AccessionNumber="ACC99812", RequestedProcedureID="RP1")],
    )
    _, out = run(vault, ds)
    kept = pydicom.dcmread(io.BytesIO(out))
    assert kept.AccessionNumber != "ACC99812"
    assert kept.RequestAttributesSequence[0].AccessionNumber == kept.AccessionNumber
