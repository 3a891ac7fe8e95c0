"""CTP DicomPixelAnonymizer scripts read as region rules (issue 5, region rules as data)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from gateway.deidentify.pixels.ctp import Region, RuleError, parse_script, regions_for
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


@pytest.mark.parametrize(
    ("script", "problem"),
    [
        ('{ Manufacturer.sounds("GE") }\n(0,0,1,1)', "line 1: unknown method 'sounds'"),
        ('\n{ Manufactrer.equals("GE") }\n(0,0,1,1)', "line 2: unknown DICOM keyword"),
        ('{ Manufacturer.equals("GE") *  }\n(0,0,1,1)', "line 1: expected word"),
        ('{ Manufacturer.equals("GE") }\nno rectangles here', "line 1: a condition without"),
    ],
)
def test_a_rule_that_cannot_be_read_is_an_error_naming_its_line(script: str, problem: str) -> None:
    with pytest.raises(RuleError) as raised:
        parse_script(script)
    assert problem in str(raised.value)


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
