"""Free-text leaks for de-identification tests: what is planted, where, and how it is found.

A `Plant` is an identifier no header element names (a relative, a clinician, a hospital, an
address, a date written some other way, ...), planted inside otherwise clinical text of a kept
text attribute (`Element`) at some sequence depth. `needles()` are the strings that must not be
found in the output afterwards, and `leaked()` finds them in any form: case, accents, width and
letters without an accent-free decomposition (Ø, Ł, ß, kana) folded, and words joined by " ",
"^" or nothing. All names, places and numbers here are invented.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from anyascii import anyascii

CHARSET = "ISO_IR 192"  # UTF-8: every plant can be written, whatever its script
PATIENT = "Kvalheim^Solveig"  # shares no word with any plant or carrier
KANJI_PATIENT = "山田^太郎=ヤマダ^タロウ"  # ideographic and phonetic groups (PS3.5 6.2.1)
SHORT = 16  # SH and CS values hold at most 16 characters (PS3.5 Table 6.2-1)
_WORDS = re.compile(r"[^\W_]+")
_NOT_CS = re.compile(r"[^A-Z0-9 _]")


@dataclass(frozen=True)
class Plant:
    """An identifier planted in free text. `parts` must not survive on their own either (the
    name words of 4 letters or more, an address's street, a number inside a phrase); `short`
    is the plant as it fits a 16-character SH or CS value ("": `text` fits)."""

    text: str
    parts: tuple[str, ...] = ()
    short: str = ""

    def written(self, vr: str) -> str:
        """The plant as an attribute of this VR can hold it: a CS value is upper-case ASCII
        letters, digits, spaces and underscores (PS3.5 Table 6.2-1)."""
        text = (self.short or self.text) if vr in ("SH", "CS") else self.text
        if vr == "CS":
            text = _NOT_CS.sub("_", anyascii(unicodedata.normalize("NFKC", text)).upper())
        return text


@dataclass(frozen=True)
class LeakClass:
    """A kind of identifier that a deny-list of the instance's own values cannot know."""

    name: str
    plants: tuple[Plant, ...]
    patient: str = PATIENT


LEAK_CLASSES = (
    LeakClass(
        "relative",
        (
            Plant("mother Ingrid Sørbøe", ("Ingrid", "Sørbøe"), "Ingrid Sørbøe"),
            Plant("husband Kjetil Vassbotn", ("Kjetil", "Vassbotn"), "Kjetil Vassbotn"),
        ),
    ),
    LeakClass(
        "clinician",
        (
            Plant("Dr Wojciech Łukaszewicz", ("Wojciech", "Łukaszewicz"), "Dr Łukaszewicz"),
            Plant("per Dr Aoife McDonagh", ("Aoife", "McDonagh"), "Aoife McDonagh"),
        ),
    ),
    LeakClass(
        "hospital",
        (
            Plant(
                "St Brendanus Hospital Tralee",
                ("Brendanus", "Tralee", "St Brendanus"),
                "Brendanus Tralee",
            ),
        ),
    ),
    LeakClass("nickname", (Plant('aka "Bubba"', ("Bubba",)),)),
    LeakClass(
        "address",
        (Plant("14 Larkspur Crescent", ("Larkspur", "Larkspur Crescent"), "14 Larkspur Cres"),),
    ),
    LeakClass(
        "email",
        (Plant("m.vasquez@example-clinic.org", ("vasquez", "example-clinic"), "vasquez@ex.org"),),
    ),
    LeakClass(
        "url",
        (
            Plant(
                "https://intra.example.org/p?id=7",
                ("intra.example", "example.org", "p?id=7"),
                "www.example.org",
            ),
        ),
    ),
    LeakClass(
        "no-decomposition",
        tuple(
            Plant(name, (name,))
            for name in ("ØSTERGÅRD", "ŁUCZAK", "ÆRENLUND", "ĐORĐEVIĆ", "ÞÓRSDÓTTIR", "GROßMANN")
        ),
    ),
    LeakClass(
        "glued-name",
        (
            Plant("VANDERHEIJDEN", ("VANDERHEIJDEN", "HEIJDEN")),
            Plant("McDonagh", ("McDonagh", "Donagh")),
            Plant("O'Brien", ("Brien",)),
            Plant("van der Heijden", ("Heijden",)),
        ),
    ),
    LeakClass(
        "date",
        (
            Plant("2019_03_14"),
            Plant("2019-03-14T10:22:05", ("2019-03-14", "10:22:05"), "2019-03-14T10:22"),
            Plant("14th of March"),
            Plant("Mar 14"),
            Plant("14 Mar"),
            Plant("14-MAR"),
            Plant("14.03.", ("14.03",)),
            Plant("3rd May 2019", ("3rd May", "May 2019")),
        ),
    ),
    LeakClass("mrn", (Plant("MRN 48213377", ("48213377",)),)),
    LeakClass("phone", (Plant("+47 912 34 567", ("912 34 567", "91234567")),)),
    LeakClass(
        "katakana-reading",
        (Plant("ヤマダ", ("ヤマダ",)), Plant("ﾔﾏﾀﾞ", ("ﾔﾏﾀﾞ", "ヤマダ"))),
        patient=KANJI_PATIENT,
    ),
    LeakClass(
        "rare-occupation",
        (
            Plant("falconer", ("falconer",)),
            Plant("retired taxidermist", ("taxidermist",), "taxidermist"),
        ),
    ),
    LeakClass(
        "name-is-a-word",
        (
            Plant("seen by Dr Rose Brown", ("Rose", "Brown"), "Dr Rose Brown"),
            Plant("Mrs Hope King", ("Hope", "King")),
        ),
    ),
    # found by two red teams against the allow-list itself
    LeakClass(
        "initials-and-degrees",
        (
            Plant("Dr J R Brown", ("Brown",)),
            Plant("BROWN MD", ("BROWN",)),
            Plant("per Dr Hellman", ("Hellman",)),
        ),
    ),
    LeakClass(
        "place-as-institution",
        (
            Plant("Leicester General Hospital", ("Leicester",), "Leicester Hosp"),
            Plant("MAINE MEDICAL CENTER", ("MAINE",), "MAINE MEDICAL"),
        ),
    ),
    LeakClass(
        "date-otherwise",
        (
            Plant("born 14 III 58", ("14 III 58",), "14 III 58"),
            Plant("prior 3/14 study", ("3/14",), "prior 3/14"),
            Plant("seen 03/2019", ("03/2019",)),
        ),
    ),
    LeakClass(
        "id-otherwise",
        (
            Plant("MRN 4821-3377", ("4821-3377",)),
            Plant("tel 555.867.5309", ("555.867.5309",), "555.867.5309"),
        ),
    ),
    LeakClass("old-age", (Plant("age 94", ("94",)), Plant("94M", ("94M",)))),
)


@dataclass(frozen=True)
class Element:
    """A text attribute the gateway may keep: `carrier` is clinical text around the plant
    ("{}"), `parent` a sequence that plausibly holds the attribute one level down, `clean` a
    value of vocabulary words only (default: the carrier alone). Narrative attributes are
    removed unless the site lists them in `keep_cleaned`."""

    keyword: str
    vr: str
    carrier: str
    parent: str
    narrative: bool = False
    clean: str = ""

    def value(self, plant: Plant | None) -> str:
        """The carrier with `plant` in it; without one, the vocabulary-only value."""
        if plant is None:
            return self.clean or self.carrier.format("").strip()
        return self.carrier.format(plant.written(self.vr)).strip()


_REQUEST = "RequestAttributesSequence"
_SERIES = "ReferencedSeriesSequence"
_ROI = "StructureSetROISequence"
_STATE = "ReferencedPresentationStateSequence"
ELEMENTS = (
    Element("PatientComments", "LT", "CHEST PAIN {}", _REQUEST, narrative=True),
    Element("AdditionalPatientHistory", "LT", "PRIOR CT CHEST {}", _REQUEST, narrative=True),
    Element(
        "ImageComments", "LT", "LEFT LUNG NODULE {}", "ReferencedImageSequence", narrative=True
    ),
    Element("Occupation", "SH", "{}", _REQUEST, narrative=True, clean="NURSE"),
    Element("ReasonForStudy", "LO", "CHEST PAIN {}", _REQUEST, narrative=True),
    Element(
        "ReasonForTheRequestedProcedure", "LO", "SHORTNESS OF BREATH {}", _REQUEST, narrative=True
    ),
    Element("RequestedProcedureComments", "LT", "CT CHEST W CONTRAST {}", _REQUEST, narrative=True),
    Element("VisitComments", "LT", "FOLLOW UP {}", "ReferencedVisitSequence", narrative=True),
    Element("StudyDescription", "LO", "CT CHEST W CONTRAST {}", _REQUEST),
    Element("SeriesDescription", "LO", "T1 MPRAGE SAG {}", _SERIES),
    Element("ProtocolName", "LO", "AX DWI B1000 {}", _SERIES),
    Element("RequestedProcedureDescription", "LO", "CT CHEST W CONTRAST {}", _REQUEST),
    Element("ScheduledProcedureStepDescription", "LO", "CT ABDOMEN PELVIS {}", _REQUEST),
    Element("PerformedProcedureStepDescription", "LO", "MR BRAIN WO CONTRAST {}", _SERIES),
    Element("UnformattedTextValue", "ST", "ECG LEAD V1 {}", "WaveformAnnotationSequence"),
    Element("ROIName", "LO", "WHITE MATTER {}", _ROI),
    Element("ROIDescription", "ST", "GROSS TUMOR VOLUME {}", _ROI),
    Element("ContentLabel", "CS", "{}", _STATE, clean="LUNG"),
    Element("ContentDescription", "LO", "LEFT LUNG NODULE {}", _STATE),
    Element("CodeMeaning", "LO", "Chest {}", "AnatomicRegionSequence"),
    Element("WindowCenterWidthExplanation", "LO", "LUNG WINDOW {}", "SoftcopyVOILUTSequence"),
)
#: Sequences from the top to the item that holds an element, by depth name: at the top level,
#: one level down in its `parent`, and three levels down (parent inside two reference levels).
DEPTHS = ("top", "nested", "deep")
_DEEP = ("ReferencedSeriesSequence", "ReferencedInstanceSequence")


def chain(element: Element, depth: str) -> tuple[str, ...]:
    """Sequence keywords, outermost first, down to the item that holds `element`."""
    return {"top": (), "nested": (element.parent,), "deep": (*_DEEP, element.parent)}[depth]


def plant_for(leak: LeakClass, element: Element, depth: str) -> Plant:
    """One plant of `leak` per placement, in turn: each plant of a class is placed at every
    depth, in different elements."""
    index = ELEMENTS.index(element) + DEPTHS.index(depth)
    return leak.plants[index % len(leak.plants)]


# -- finding a plant in an output ----------------------------------------------------------------


def fold(text: str) -> str:
    """Case, accents and width do not make another string."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def ascii_form(text: str) -> str:
    """The text transliterated to ASCII, folded: Ø -> o, Ł -> l, ß -> ss, ヤマダ -> yamada."""
    return anyascii(unicodedata.normalize("NFKC", text)).casefold()


def forms(text: str) -> set[str]:
    """A string, and its words joined by a space, a caret (a PN) and nothing."""
    words = _WORDS.findall(text)
    out = {text}
    if len(words) > 1:
        out |= {" ".join(words), "^".join(words), "".join(words)}
    return out


def needles(planted: str, plant: Plant) -> set[str]:
    """What must not be found after `planted` (a plant as written) went through: its forms,
    and those of each of the plant's parts that the written value holds."""
    out = forms(planted)
    for part in plant.parts:
        if ascii_form(part) in ascii_form(planted):
            out |= forms(part)
    return out


def _pattern(needle: str) -> re.Pattern[str] | None:
    """A search for a folded needle; digits at its edges must not continue (a UID's digits
    hold every short number somewhere)."""
    if not needle:
        return None
    head = r"(?<!\d)" if needle[0].isdigit() else ""
    tail = r"(?!\d)" if needle[-1].isdigit() else ""
    return re.compile(head + re.escape(needle) + tail)


def leaked(strings: Iterable[str], data: bytes) -> list[str]:
    """The `strings` found in `data`, read as UTF-8 and as Latin-1, folded and transliterated."""
    utf8 = data.decode("utf-8", errors="ignore")
    folded = (fold(utf8), fold(data.decode("latin-1")))
    ascii_text = ascii_form(utf8)
    found = []
    for needle in sorted(strings):
        searches = [(_pattern(fold(needle)), text) for text in folded]
        searches.append((_pattern(ascii_form(needle)), ascii_text))
        if any(p is not None and p.search(text) for p, text in searches):
            found.append(needle)
    return found
