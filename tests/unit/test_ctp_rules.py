"""CTP DicomPixelAnonymizer scripts read as region rules (issue 5, region rules as data)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from gateway.deidentify.pixels.ctp import Region, parse_script, regions_for
from gateway.errors import RuleError
from tests.support import shared_dir

CTP = shared_dir() / "reference" / "pixel-rules" / "ctp"


def header(**values: object) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def test_conditions_with_and_or_not_and_parentheses() -> None:
    rules = parse_script(
        """Heading, ignored (it has no braces)
        { Manufacturer.containsIgnoreCase("acme") * ( Rows.equals("512") + Rows.equals("1024") )
          * ![0008,103E].startsWith("SAFE") }
        (0,0,512,25) (0, 480 , 200,32)
        Next heading 512 x 512
        { ManufacturerModelName.matches("EPIQ [0-9]+") }
        (1,2,3,4)
        """
    )
    assert [r.regions for r in rules] == [
        (Region(0, 0, 512, 25), Region(0, 480, 200, 32)),
        (Region(1, 2, 3, 4),),
    ]
    hit = header(Manufacturer="ACME Medical", Rows=1024, SeriesDescription="screen")
    assert regions_for(rules, hit) == [Region(0, 0, 512, 25), Region(0, 480, 200, 32)]
    assert regions_for(rules, header(Manufacturer="ACME", Rows=256)) == []
    assert regions_for(rules, header(Manufacturer="ACME", Rows=512, SeriesDescription="SAFE")) == []
    assert regions_for(rules, header(ManufacturerModelName="EPIQ 7")) == [Region(1, 2, 3, 4)]


def test_headings_comments_and_layouts_real_scripts_use_still_read() -> None:
    """What CTP's own library and sites' scripts hold: headings (with prose in parentheses),
    tabs, CRLF or CR line ends, a byte-order mark, `//` comments and `true` inside a
    condition, a space before `(`, rectangles on following lines or with no space between,
    two rules on one line."""
    script = (
        "\ufeffBurned-in Annotation Library\r\n"
        "GE (new software, v2)\r\n"
        '\t{\tManufacturer.containsIgnoreCase ("GE") * // the vendor\r\n'
        '\t  ( true + [0028,0010].equalsIgnoreCase("512") ) }\r\n'
        "\t(0,\t0, 512 ,25)(0,480,200,32)\t\r\n"
        "   (10,10,5,5)\r\n"
        "Heading 512 x 512 (screen captures), 2019-03-12 10:15, v1.2.3.4\r"
        '{ Rows.equals("1") } (1,1,1,1) { !false } (2,2,2,2)\r'
    )
    rules = parse_script(script)
    assert [r.regions for r in rules] == [
        (Region(0, 0, 512, 25), Region(0, 480, 200, 32), Region(10, 10, 5, 5)),
        (Region(1, 1, 1, 1),),
        (Region(2, 2, 2, 2),),
    ]
    assert [r.line for r in rules] == [3, 8, 8]
    assert regions_for(rules[:1], header(Manufacturer="GE", Rows=1)) == list(rules[0].regions)


def test_a_script_without_rules_reads_as_nothing() -> None:
    """Free text alone - a heading, a filter expression with no braces - is a comment."""
    assert parse_script("") == ()
    assert parse_script('Notes only\n![0008,0008].contains("SAVE") *\n') == ()


#: Each malformed class: the script, where the error points (line, column), what it says.
MALFORMED = {
    "comma between rectangles": (
        '{ Rows.equals("512") }\n(0,0,512,25), (0,480,200,32)\n',
        (2, 13),
        "a comma after a rectangle",
    ),
    "letter O for a zero": (
        '{ Rows.equals("512") }\n(0,O,512,25)\n',
        (2, 4),
        "expected the y, a whole number, found 'O' (a letter O for a zero?)",
    ),
    "letter l for a one": (
        '{ Rows.equals("512") }\n(0,0,5l2,25)\n',
        (2, 7),
        "expected ',' after the width, found 'l' (a letter l for a one?)",
    ),
    "rule not closed before the end": (
        'GE\n{ Rows.equals("512")\n(0,0,512,25)\n',
        (2, 1),
        "rule not closed: no '}' before the end of the file",
    ),
    "rule not closed before the next": (
        '{ Rows.equals("512")\n\n{ Rows.equals("1") }\n(0,0,1,1)\n',
        (1, 1),
        "rule not closed: no '}' before the next '{' at 3:1",
    ),
    "nested braces": (
        '{ Rows.equals("1") * { Columns.equals("2") } }\n(0,0,1,1)\n',
        (1, 1),
        "rule not closed: no '}' before the next '{' at 1:22",
    ),
    "parenthesis of a condition not closed": (
        '{ ( Rows.equals("512") +\n  Rows.equals("1") }\n(0,0,512,25)\n',
        (2, 20),
        "expected ')' to close the '(' at 1:3, found the rule's '}'",
    ),
    "parenthesis of a rectangle not closed": (
        '{ Rows.equals("512") }\n(0,0,512,25\n',
        (2, 12),
        "expected ')' after the height, found the end of the line",
    ),
    "string not closed": (
        '{ Rows.equals("512) }\n(0,0,512,25)\n',
        (1, 15),
        "string not closed on its line",
    ),
    "brace inside a string": (
        '{ Manufacturer.equals("a}b") }\n(0,0,1,1)\n',
        (1, 25),
        "a brace inside a string",
    ),
    "brace inside a comment": (
        '{ Rows.equals("1") // {old}\n }\n(0,0,1,1)\n',
        (1, 23),
        "a brace inside a comment",
    ),
    "junk between rectangles": (
        '{ Rows.equals("512") }\n(0,0,512,25) and (0,480,200,32)\n',
        (2, 14),
        "unexpected 'a' after a rectangle",
    ),
    "rectangle after a heading": (
        '{ Rows.equals("512") }\n(0,0,512,25)\nGE heading\n(0,480,200,32)\n',
        (4, 1),
        "a rectangle among notes: CTP would add it to the rule of line 1",
    ),
    "rectangle before the first rule": (
        'Top banner (0,0,512,25)\n{ Rows.equals("1") }\n(0,0,1,1)\n',
        (1, 12),
        "a rectangle before the first rule",
    ),
    "malformed rectangle among notes": (
        '{ Rows.equals("1") }\n(0,0,1,1)\nnote (0,0,512\n',
        (3, 6),
        "a rectangle among notes",
    ),
    "numbers in parentheses among notes": (
        '{ Rows.equals("1") }\n(0,0,1,1)\n512 x 512 (512, 1024)\n',
        (3, 11),
        "a rectangle among notes",
    ),
    "four parts in parentheses among notes": (
        '{ Rows.equals("1") }\n(0,0,1,1)\nbanner (x 0, y 0, w 512, h 25)\n',
        (3, 8),
        "a rectangle among notes",
    ),
    "a rectangle in square brackets among notes": (
        '{ Modality.equals("US") }\n(0,0,640,40)\n[0,440,640,40]\n',
        (3, 2),
        "four numbers that read as a rectangle: a rectangle among notes",
    ),
    "a rectangle in angle brackets after a rule's rectangles": (
        '{ Rows.equals("1") }\n(0,0,1,1)\n\n{ Rows.equals("2") }\n(0,0,9,9)\n<0,492,512,20>\n',
        (6, 2),
        "CTP would add it to the rule of line 4",
    ),
    "a rectangle with semicolons after a comment": (
        '{ Rows.equals("1") }\n(0,0,1,1)\n// the bottom banner\n(0;440;640;40)\n',
        (4, 2),
        "four numbers that read as a rectangle",
    ),
    "a rectangle with spaces after a note": (
        '{ Rows.equals("1") }\n(0,0,1,1)\nbottom banner:\n(0 440 640 40)\n',
        (4, 2),
        "four numbers that read as a rectangle",
    ),
    "a rectangle with an x among notes": (
        '{ Rows.equals("1") }\n(0,0,1,1)\nbottom banner:\n(0,440,640x40)\n',
        (4, 2),
        "four numbers that read as a rectangle",
    ),
    "a rectangle in full-width parentheses": (
        '{ Rows.equals("1") }\n(0,0,1,1)\nbottom:\n\uff080,440,640,40\uff09\n',
        (4, 2),
        "four numbers that read as a rectangle",
    ),
    "a rectangle with full-width commas": (
        '{ Rows.equals("1") }\n(0,0,1,1)\nbottom:\n(0\uff0c440\uff0c640\uff0c40)\n',
        (4, 2),
        "four numbers that read as a rectangle",
    ),
    "a rectangle without brackets after a label": (
        '{ Rows.equals("1") }\n(0,0,1,1)\nBottom: 0,440,640,40\n',
        (3, 9),
        "four numbers that read as a rectangle",
    ),
    "four numbers before the first rule": (
        'ctpcoordinates 0,0,512,121\n{ Rows.equals("1") }\n(0,0,1,1)\n',
        (1, 16),
        "a rectangle before the first rule",
    ),
    "closing brace without its rule": (
        'Rows.equals("512") }\n(0,0,1,1)\n',
        (1, 20),
        "a '}' outside a rule",
    ),
    "negative rectangle": (
        '{ Rows.equals("512") }\n(0,-5,512,25)\n',
        (2, 4),
        "found '-' (rectangles lie inside the image: no negative numbers)",
    ),
    "absurd rectangle": (
        '{ Rows.equals("512") }\n(0,0,99999,25)\n',
        (2, 6),
        "the width is past 65535 pixels",
    ),
    "rectangle reaching past any image": (
        '{ Rows.equals("512") }\n(65000,0,1000,25)\n',
        (2, 1),
        "the rectangle reaches past 65535 pixels",
    ),
    "a thousand digits": (
        '{ Rows.equals("512") }\n(0,' + "9" * 5000 + ",1,1)\n",
        (2, 4),
        "the y is past 65535 pixels",
    ),
    "empty rectangle": (
        '{ Rows.equals("512") }\n(0,0,512,0)\n',
        (2, 10),
        "the height is 0: the rectangle masks nothing",
    ),
    "condition without rectangles": (
        '{ Rows.equals("512") }\nHeading\n{ Rows.equals("1") }\n(0,0,1,1)\n',
        (2, 1),
        "expected a rectangle (x,y,width,height), found 'H'",
    ),
    "condition without rectangles at the end": (
        '{ Rows.equals("512") }\n',
        (2, 1),
        "expected a rectangle (x,y,width,height), found the end of the file",
    ),
    "full-width digit": (
        '{ Rows.equals("1") }\n(0,\uff10,1,1)\n',
        (2, 4),
        "found '\uff10' (U+FF10, a digit, but not an ASCII one)",
    ),
    "Arabic-Indic digit": (
        '{ Rows.equals("1") }\n(0,0,\u0661\u0662,1)\n',
        (2, 6),
        "(U+0661, a digit, but not an ASCII one)",
    ),
    "no-break space": (
        '{ Rows.equals("1") }\n(0,\u00a00,1,1)\n',
        (2, 4),
        "(U+00A0)",
    ),
    "Cyrillic o in a keyword": (
        '{ R\u043ews.equals("1") }\n(0,0,1,1)\n',
        (1, 4),
        "unexpected '\u043e' (U+043E) in a condition",
    ),
    "unquoted value": (
        "{ Rows.equals(512) }\n(0,0,1,1)\n",
        (1, 15),
        "unexpected '5' in a condition (values are quoted: \"512\")",
    ),
    "unknown method": (
        '{ Manufacturer.sounds("GE") }\n(0,0,1,1)\n',
        (1, 16),
        "unknown method 'sounds'",
    ),
    "unknown keyword": (
        '\n{ Manufactrer.equals("GE") }\n(0,0,1,1)\n',
        (2, 3),
        "unknown DICOM keyword 'Manufactrer'",
    ),
    "operator without operand": (
        '{ Manufacturer.equals("GE") *  }\n(0,0,1,1)\n',
        (1, 32),
        "expected a keyword, [gggg,eeee], '(' or '!', found the rule's '}'",
    ),
    "stray parenthesis in a condition": (
        '{ Rows.equals("1") ) }\n(0,0,1,1)\n',
        (1, 20),
        "expected '*', '+' or the rule's '}', found ')'",
    ),
    "bad regular expression": (
        '{ Rows.matches("[") }\n(0,0,1,1)\n',
        (1, 16),
        "not a regular expression",
    ),
    "CRLF does not shift lines or columns": (
        'Heading\r\n{ Rows.equals("1") }\r\n(0,0,1,1), (2,2,2,2)\r\n',
        (3, 10),
        "a comma after a rectangle",
    ),
    "a tab is one column": (
        '{ Rows.equals("1") }\n\t(0,\tO,1,1)\n',
        (2, 6),
        "found 'O'",
    ),
}


@pytest.mark.parametrize(("script", "where", "problem"), MALFORMED.values(), ids=MALFORMED)
def test_what_the_parser_does_not_consume_is_an_error_naming_file_line_and_column(
    script: str, where: tuple[int, int], problem: str
) -> None:
    with pytest.raises(RuleError) as raised:
        parse_script(script, "site/rules.script")
    assert (raised.value.line, raised.value.column) == where
    assert str(raised.value).startswith(f"site/rules.script:{where[0]}:{where[1]}: ")
    assert problem in raised.value.message


#: The pixel scripts of the shared rule libraries: (rules, rectangles), as the parser before
#: strict reading counted them. BurnedInPixelsFilter is a CTP filter expression with no
#: braces: to a pixel script it is all comment.
LIBRARIES = {
    "DicomPixelAnonymizer.script": (52, 62),
    "example-dicom-pixel-anonymizer.script": (44, 54),
    "BurnedInPixelsFilter.script": (0, 0),
}


@pytest.mark.parametrize(("name", "counts"), LIBRARIES.items(), ids=LIBRARIES)
def test_the_shared_rule_libraries_read_whole(name: str, counts: tuple[int, int]) -> None:
    script = CTP / name
    if not script.is_file():
        pytest.skip(f"shared rule library not found at {script}")
    rules = parse_script(script.read_text(encoding="utf-8"), str(script))
    assert (len(rules), sum(len(r.regions) for r in rules)) == counts


def test_ctps_own_library_reads_whole_and_fires_where_it_should(testdata: Path) -> None:
    script = CTP / "DicomPixelAnonymizer.script"
    if not script.is_file():
        pytest.skip(f"CTP library not found at {script}")
    rules = parse_script(script.read_text(encoding="utf-8"))
    reference = json.loads((CTP / "DicomPixelAnonymizer.rules.json").read_text())["rules"]
    assert [[(g.x, g.y, g.width, g.height) for g in r.regions] for r in rules] == [
        [tuple(xywh) for xywh in r["regions_xywh"]] for r in reference
    ]

    def regions(name: str) -> list[Region]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(testdata / name, stop_before_pixels=True)
        return regions_for(rules, ds)

    assert regions("ultrasound/deid_data__GREYSCALE_IMAGE.dcm") == [Region(0, 0, 1024, 49)]
    assert regions("ultrasound/deid_data__RGB_IMAGE.dcm") == [Region(0, 0, 1024, 60)]
    assert regions("ultrasound/pydicom_data__OBXXXX1A_2frame.dcm") == [Region(0, 0, 800, 59)]
    assert regions("transfer_syntaxes/pydicom_wheel__CT_small.dcm") == []
