"""Property: canaries placed anywhere leave only as known words, only where kept on purpose.

Hypothesis builds data sets with canaries in random public text attributes (any the DICOM
dictionary knows, retired ones too), in private attributes and inside items of random
sequences. Each value holds a known word with a number glued to it (LUNG3: vocabulary and a
small counter), an unknown word (ZQ...) and the patient's family name. After de-identification
the unknown word and the family name are never found; the known word is found exactly when the
element is one the engine keeps by design (allow-listed, scrubbed or cleaned) as text: a coded
value (CS, AE, the code of a coded entry) holding an unknown word is emptied whole.
"""

from __future__ import annotations

import os
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom._dicom_dict import DicomDictionary
from pydicom.dataset import Dataset

from gateway.deidentify.actions import CleanText, Keep, Recurse
from gateway.deidentify.decide import REWRITTEN
from gateway.deidentify.engine import Engine
from gateway.deidentify.words import CODE_ATTRIBUTES
from gateway.settings import DeidentifySettings
from gateway.vault.sqlite import SqliteVault
from tests.dicom_builders import part10, synthetic

FAMILY = "QXF"  # short: known word, canary and family name fit in 16 characters (SH)
KEPT = (Keep, CleanText)  # kept as read, scrubbed, or cleaned as a descriptor
_TEXT_VRS = {"LO", "SH", "LT", "ST", "UT", "UC", "PN"}
TEXT_TAGS = sorted(
    tag
    for tag, entry in DicomDictionary.items()
    if entry[0] in _TEXT_VRS and (tag >> 16) not in (0x0000, 0x0002, 0xFFFE)
)
SEQUENCE_TAGS = sorted(
    tag for tag, entry in DicomDictionary.items() if entry[0] == "SQ" and (tag >> 16) != 0x0002
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    vault = SqliteVault(Path(tmp_path_factory.mktemp("vault")) / "v.sqlite3", b"c" * 32)
    yield Engine(DeidentifySettings(), vault, ae_title="GATEWAY_UT")
    vault.close()


canaries = st.text(alphabet=string.ascii_uppercase, min_size=4, max_size=4).map(lambda s: "ZQ" + s)
public = st.tuples(st.just("public"), st.sampled_from(TEXT_TAGS), st.just(0))
private = st.tuples(
    st.just("private"),
    st.integers(0x0009, 0x7FFF).map(lambda g: g | 1),
    st.integers(0x00, 0xFF),
)
nested = st.tuples(st.just("nested"), st.sampled_from(SEQUENCE_TAGS), st.sampled_from(TEXT_TAGS))
placements = st.lists(
    st.tuples(st.one_of(public, private, nested), canaries),
    min_size=1,
    max_size=8,
    unique_by=(lambda p: p[0], lambda p: p[1]),
)


def known(index: int) -> str:
    return f"LUNG{index}"


def build(placed: list[tuple[tuple[str, int, int], str]]) -> Dataset:
    ds = synthetic(PatientName=f"{FAMILY}^QXGIVEN", PatientID="P123456")
    for index, ((kind, a, b), canary) in enumerate(placed):
        value = f"{known(index)} {canary} {FAMILY}"
        if kind == "public":
            ds.add_new(a, DicomDictionary[a][0], value)
        elif kind == "private":
            ds.add_new((a << 16) | 0x0010, "LO", "CANARY VENDOR")
            ds.add_new((a << 16) | 0x1000 | b, "LO", value)
        else:
            if a not in ds:
                ds.add_new(a, "SQ", [Dataset()])
            ds[a].value[0].add_new(b, DicomDictionary[b][0], value)
    return ds


def kept_by_design(engine: Engine, kind: str, a: int, b: int) -> bool:
    if kind == "private":
        return False
    if kind == "public":
        return a not in REWRITTEN and kept_as_text(engine, a)
    return a not in REWRITTEN and isinstance(engine.action(a), Recurse) and kept_as_text(engine, b)


def kept_as_text(engine: Engine, tag: int) -> bool:
    coded = DicomDictionary[tag][0] in ("CS", "AE") or tag in CODE_ATTRIBUTES
    return isinstance(engine.action(tag), KEPT) and not coded


@settings(max_examples=int(os.environ.get("CANARY_EXAMPLES", "200")), deadline=None)
@given(placed=placements)
def test_canaries_survive_only_where_the_profile_keeps_them(
    engine: Engine, placed: list[tuple[tuple[str, int, int], str]]
) -> None:
    data = part10(build(placed))
    assert FAMILY.encode() in data
    out = engine.run(data).data
    assert FAMILY.encode() not in out
    for index, ((kind, a, b), canary) in enumerate(placed):
        assert canary.encode() not in out, (kind, hex(a), hex(b))
        survived = known(index).encode() in out
        assert survived == kept_by_design(engine, kind, a, b), (kind, hex(a), hex(b))
