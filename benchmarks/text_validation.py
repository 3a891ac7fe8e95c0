"""Burned-in text validation set: synthetic text drawn on real images, and what the gateway masks.

Figures, not a test (tests/integration/test_text_validation.py asserts on the `--sample` part).

The set. Base images are every decodable frame of the shared test material
(`$DICOM_GATEWAY_SHARED/testdata/dicom`, default `../shared` beside the repository) except
those that carry text already (`EXCLUDED`: the ground-truth folder, ultrasound banners, test
patterns with labels, radiographs with lead markers) and non-images; identical frames (one
image in several transfer syntaxes) count once. Each case is a variant of a base frame - crop,
flip, rescale, window, gamma, noise - stored as 8-bit, 12-bit, 16-bit unsigned or signed
MONOCHROME2, MONOCHROME1 or RGB. Text images get 1 to 6 text items: invented names
(QXZORBLATT^JAN), IDs, dates in many spellings, digits, single characters (never one of the
site's orientation markers, which the stage keeps on purpose), long lines; drawn with Pillow
(TrueType/OpenType fonts of the Debian packages named in `FONTS`, see .ci/debian-packages) or
OpenCV's Hershey fonts; cap height 7-40 px; at 0, 90, 270 (and a few 180) degrees; inside
anatomy, anywhere, at an edge or in a corner; contrast in display grey levels of the frame's
value range (min..max, MONOCHROME1 inverted as shown): white, black, mid-grey, or faint: 12, 16
or 24 levels from the local background (the median under the text; per channel for RGB).
Only legible text is drawn: white, black and mid-grey where most of the background differs
by more than 32 levels, faint text where the middle half of the background spans at most its
step (`_legible`). The shared material has no mammogram outside the ground-truth folder: MG
is absent; US has one small image (the others carry banners). Ground truth is the
axis-aligned box of each item's ink, in image pixels. Items are kept apart so that one item's
mask (the stage widens boxes along the line) does not cover another.
Text-free images are the same variants with nothing drawn. Every case is made from
(seed, class, index) alone: `--limit N` measures a prefix of the same set.

The measurement. Each case becomes an in-memory data set (pydicom: the modality's SOP class,
the variant's encoding, invented patient) written as Part 10 bytes and processed by a real
`Worker` (header engine, `PixelStage` with the gateway's own detector, re-encoding, release
check), as the daemon does. (a) whole path: the masks the worker reports. (b) detector alone:
the boxes `finder.find` returned on the renderer's views during that same call, widened as the
stage widens them (margin, and 3 heights along the line), before the recogniser may keep some;
its time is the time spent in `find`. Its "(fitted)" column counts only the detector boxes
that lie mostly on the text (`FIT`), not a box around a whole organ that covers the text by
chance. A ground-truth box counts as found when >= 90 % of it is
masked (tests/pixel_truth.py, COVERED). Printed: recall overall and by orientation, contrast,
size, modality, font family, encoding, placement and kind of text; on text-free images the
masked share of the image (median, p95, images with more than 0.5 % masked); on text images
the masked share of the area outside the ground-truth boxes; seconds per image, wall and CPU
(the machine may be shared).

One process, the detector single-threaded as in a worker: the full set (1,700 images: 660 with
2,138 text boxes, 1,040 text-free) took 805 CPU seconds, 16 minutes on a shared 2-core machine
(median 0.38 s per image); `--limit N` takes the first N of each class.

    /work/main/.venv/bin/python benchmarks/text_validation.py build [--sample] [--preview 20]
    /work/main/.venv/bin/python benchmarks/text_validation.py measure [--sample] [--limit 200]
        [--seed 18] [--cache DIR] [--json PATH]

Pillow (a dependency of highdicom, in the dev extra) draws the TrueType text.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from gateway.deidentify.pixels.ctp import Region  # noqa: E402
from gateway.deidentify.pixels.ocr import OnnxText  # noqa: E402
from gateway.deidentify.pixels.reading import WindowReader  # noqa: E402
from gateway.deidentify.pixels.regions import widen  # noqa: E402
from gateway.deidentify.pixels.stage import PixelStage  # noqa: E402
from gateway.settings import PixelSettings  # noqa: E402
from gateway.vault.sqlite import SqliteVault  # noqa: E402
from tests.dicom_builders import part10, synthetic, text_finder, worker  # noqa: E402
from tests.pixel_truth import COVERED, TextBox, covered_share, mask_image  # noqa: E402
from tests.support import shared_dir  # noqa: E402

VERSION = 2  # of the generator: part of the cache folder's name
BASES_VERSION = 1  # of the decoded base frames kept in the cache
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "dicom-gateway-text-validation"
TEXT_IMAGES, CLEAN_IMAGES = 660, 1040
SAMPLE_TEXT_IMAGES, SAMPLE_CLEAN_IMAGES = 60, 60
FP_SHARE = 0.005  # a text-free image with more than this share masked counts as a false alarm
#: Detector alone, fitted: a returned box counts for a text item only if this share of it lies
#: on the item's box (DB's unclip makes a line's box about 3 heights tall, a character's 2x2).
FIT = 0.15
PLAIN = 32  # display levels: white, black and mid-grey text differ from its background so

#: Files of the shared material that carry text already (or are no picture), with why.
EXCLUDED = {
    "deid_data__GREYSCALE_CINE.dcm": "burned-in test patient (manifest)",
    "deid_data__GREYSCALE_IMAGE.dcm": "burned-in test patient (manifest)",
    "deid_data__RGB_IMAGE.dcm": "burned-in test patient (manifest)",
    "pydicom_data__US1_J2KI.dcm": "institution banner (manifest)",
    "pydicom_data__US1_J2KR.dcm": "institution banner (manifest)",
    "pydicom_data__US1_UNCR.dcm": "institution banner (manifest)",
    "pydicom_data__OBXXXX1A_2frame.dcm": "ultrasound banner and labels",
    "pydicom_data__OBXXXX1A_rle_2frame.dcm": "ultrasound banner and labels",
    "pydicom_data__gdcm-US-ALOKA-16.dcm": "ultrasound labels",
    "pydicom_data__gdcm-US-ALOKA-16_big.dcm": "ultrasound labels",
    "pydicom_data__JPGLosslessP14SV1_1s_1f_8b.dcm": "echo measurement text",
    "pydicom_data__color3d_jpeg_baseline.dcm": "vendor annotation text",
    "pydicom_wheel__examples_ybr_color.dcm": "vendor annotation text",
    "pylibjpeg_data__JPEGLosslessP14SV1_3s_2f_u_08_08.dcm": "scale and ECG text",
    "orthanc_tests__1.2.840.10008.1.2.2.dcm": "ultrasound labels (GE)",
    "orthanc_tests__jp2k91YBR-ICT.dcm": "ultrasound labels",
    "pydicom_data__mlut_18.dcm": "test pattern with printed labels",
    "pydicom_wheel__GDCMJ2K_TextGBR.dcm": "the words red, green, blue",
    "pylibjpeg_data__966_fixed.dcm": "lead markers PA and R",
    "pydicom_data__RG3_J2KI.dcm": "lead marker R",
    "pydicom_data__liver.dcm": "segmentation (binary masks)",
    "pydicom_data__parametric_map_float.dcm": "float parametric map",
    "pydicom_wheel__rtdose.dcm": "dose grid",
}
EXCLUDED_FOLDERS = {"burned_in_text_gt": "ground truth: burned-in text"}
MIN_SIDE = 64

#: (family, Debian package, font files). Hershey fonts are OpenCV's own (family "hershey").
FONTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "dejavu",
        "fonts-dejavu-core",
        (
            "dejavu/DejaVuSans.ttf",
            "dejavu/DejaVuSans-Bold.ttf",
            "dejavu/DejaVuSansMono.ttf",
            "dejavu/DejaVuSerif.ttf",
            "dejavu/DejaVuSansCondensed.ttf",
        ),
    ),
    (
        "liberation",
        "fonts-liberation",
        (
            "liberation/LiberationSans-Regular.ttf",
            "liberation/LiberationSans-Bold.ttf",
            "liberation/LiberationMono-Regular.ttf",
            "liberation/LiberationSerif-Regular.ttf",
            "liberation/LiberationSansNarrow-Regular.ttf",
        ),
    ),
    (
        "freefont",
        "fonts-freefont-ttf",
        (
            "freefont/FreeSans.ttf",
            "freefont/FreeSansBold.ttf",
            "freefont/FreeMono.ttf",
            "freefont/FreeSerif.ttf",
        ),
    ),
    ("noto-mono", "fonts-noto-mono", ("noto/NotoMono-Regular.ttf",)),
    (
        "urw-base35",
        "fonts-urw-base35",
        (
            "../opentype/urw-base35/NimbusSans-Regular.otf",
            "../opentype/urw-base35/NimbusMonoPS-Regular.otf",
            "../opentype/urw-base35/NimbusRoman-Regular.otf",
            "../opentype/urw-base35/URWGothic-Book.otf",
        ),
    ),
)
TRUETYPE = Path("/usr/share/fonts/truetype")
HERSHEY = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_PLAIN,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_COMPLEX_SMALL,
)
ORIENTATIONS = ((0, 0.4), (90, 0.25), (270, 0.25), (180, 0.1))  # degrees counter-clockwise
CONTRASTS = ("white", "black", "mid-grey", "faint-12", "faint-16", "faint-24")
SIZES = ((7, 9), (10, 13), (14, 19), (20, 29), (30, 40))  # cap height, pixels
PLACES = (("anatomy", 0.4), ("anywhere", 0.2), ("edge", 0.25), ("corner", 0.15))
ENCODINGS = ("uint8", "uint12", "uint16", "int16", "mono1-uint12", "mono1-uint16", "rgb")
#: Single characters drawn alone: none of the site's markers (L R A P H F S I), no O/0 pair.
SINGLES = "BCDEGJKMNQTUVWXYZ2345679"
SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
    "NM": "1.2.840.10008.5.1.4.1.1.20",
    "RF": "1.2.840.10008.5.1.4.1.1.12.2",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


# -- base images ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    """One decoded frame of the shared material: greyscale (stored values) or RGB uint8."""

    name: str
    frame: int
    modality: str
    monochrome1: bool
    pixels: np.ndarray


def testdata() -> Path:
    return shared_dir() / "testdata" / "dicom"


def bases(cache_dir: Path) -> list[Base]:
    """Every usable frame, decoded once and kept in the cache (a 2k J2K takes seconds)."""
    path = cache_dir.parent / f"bases-v{BASES_VERSION}.npz"
    index = cache_dir.parent / f"bases-v{BASES_VERSION}.json"
    if path.is_file() and index.is_file():
        meta = json.loads(index.read_text(encoding="utf-8"))
        with np.load(path) as stored:
            return [Base(**m, pixels=stored[f"b{i}"]) for i, m in enumerate(meta)]
    found = list(_decode_all(testdata()))
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta = [{k: v for k, v in asdict(b).items() if k != "pixels"} for b in found]
    arrays: dict[str, Any] = {f"b{i}": b.pixels for i, b in enumerate(found)}
    np.savez(path, **arrays)
    index.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return found


def _decode_all(folder: Path) -> Iterator[Base]:
    seen: set[bytes] = set()
    for path in sorted(folder.rglob("*.dcm")):
        if path.parent.name in EXCLUDED_FOLDERS or path.name in EXCLUDED:
            continue
        for base in _decode(path):
            key = _fingerprint(base.pixels)
            if key not in seen:
                seen.add(key)
                yield base


def _decode(path: Path) -> list[Base]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            pixels = ds.pixel_array
    except Exception:  # noqa: BLE001 - the shared material holds broken files on purpose
        return []
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric == "PALETTE COLOR" or pixels.dtype.kind == "f":
        return []
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    stack = pixels if frames > 1 else pixels[None]
    colour = samples == 3
    if colour and stack.dtype != np.uint8:
        return []
    if stack.ndim != (4 if colour else 3) or min(stack.shape[1:3]) < MIN_SIDE:
        return []
    modality = str(ds.get("Modality", "") or "OT").strip().upper() or "OT"
    mono1 = photometric == "MONOCHROME1"
    return [
        Base(path.name, i, modality, mono1, np.ascontiguousarray(f)) for i, f in enumerate(stack)
    ]


def _fingerprint(pixels: np.ndarray) -> bytes:
    """Equal for one image in lossless and lossy syntaxes: a coarse normalised thumbnail."""
    grey = pixels.astype(np.float32)
    if grey.ndim == 3:
        grey = grey.mean(axis=2)
    thumb = cv2.resize(grey, (12, 12), interpolation=cv2.INTER_AREA)
    low, high = float(thumb.min()), float(thumb.max())
    scaled = np.round((thumb - low) / max(high - low, 1e-6) * 8).astype(np.uint8)
    return repr(pixels.shape[:2]).encode() + scaled.tobytes()


# -- cases -------------------------------------------------------------------------------------


@dataclass
class Item:
    """One drawn text item and its ground truth box (x0, y0, x1, y1: ink, image pixels)."""

    text: str
    kind: str
    family: str
    font: str
    cap: int
    orientation: int
    contrast: str
    place: str
    box: tuple[int, int, int, int]

    @property
    def size(self) -> str:
        low, high = next(s for s in SIZES if s[0] <= self.cap <= s[1])
        return f"{low}-{high}px"


@dataclass
class Case:
    """One image of the set: where it came from, how it is stored, what is drawn on it."""

    id: str
    base: str
    frame: int
    modality: str
    encoding: str
    variant: str
    rows: int = 0
    columns: int = 0
    items: list[Item] = field(default_factory=list)


@dataclass
class Encoded:
    """A variant's stored values: what goes into Pixel Data, with its display range."""

    pixels: np.ndarray  # float64 stored values, rows x columns [x 3]
    low: float
    high: float
    encoding: str

    @property
    def monochrome1(self) -> bool:
        return self.encoding.startswith("mono1")

    def display(self) -> np.ndarray:
        """As a full-range viewer shows it: 0..255, MONOCHROME1 inverted."""
        grey = (self.pixels - self.low) * (255.0 / max(self.high - self.low, 1e-9))
        return 255.0 - grey if self.monochrome1 else grey

    def stored(self, display: float | np.ndarray) -> float | np.ndarray:
        value = 255.0 - display if self.monochrome1 else display
        return self.low + value * (self.high - self.low) / 255.0


def make_case(all_bases: list[Base], seed: int, text: bool, index: int) -> tuple[Case, Encoded]:
    """The case (seed, class, index): a base chosen round-robin, a variant, and its text."""
    case, encoded, rng = bare_case(all_bases, seed, text, index)
    if text:
        case.items = _draw_items(encoded, rng)
    return case, encoded


def bare_case(
    all_bases: list[Base], seed: int, text: bool, index: int
) -> tuple[Case, Encoded, np.random.Generator]:
    """`make_case` before its text is drawn, with the generator that draws it
    (`_draw_items`); benchmarks/detector_tune.py keeps the picture without the text."""
    rng = np.random.default_rng([seed, int(text), index])
    base = all_bases[(index * 7 + int(text) * 3) % len(all_bases)]
    picture, variant = _variant(base.pixels, rng)
    encoded = _encode(picture, base, rng)
    case = Case(
        id=f"{'text' if text else 'clean'}-{index:05d}",
        base=base.name,
        frame=base.frame,
        modality=base.modality,
        encoding=encoded.encoding,
        variant=variant,
        rows=picture.shape[0],
        columns=picture.shape[1],
    )
    return case, encoded, rng


def _variant(pixels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Geometry, then values: crop, flip, rescale; window, gamma, noise (greyscale)."""
    out: np.ndarray = pixels.astype(np.float64)
    done: list[str] = []
    rows, columns = out.shape[:2]
    if rng.random() < 0.5 and min(rows, columns) >= 2 * MIN_SIDE:
        share = rng.uniform(0.5, 0.9)
        h, w = max(MIN_SIDE, round(rows * share)), max(MIN_SIDE, round(columns * share))
        y, x = int(rng.integers(0, rows - h + 1)), int(rng.integers(0, columns - w + 1))
        out = out[y : y + h, x : x + w]
        done.append("crop")
    flip = int(rng.integers(0, 4))  # none, left-right, up-down, both
    if flip & 1:
        out = out[:, ::-1]
    if flip & 2:
        out = out[::-1]
    done += [f"flip{flip}"] if flip else []
    longest, shortest = max(out.shape[:2]), min(out.shape[:2])
    scale = float(rng.choice([1.0, 1.0, rng.uniform(0.5, 1.6)]))
    scale = min(scale, 2048 / longest, max(1.0, 1024 / longest))
    scale = max(scale, MIN_SIDE / shortest)
    if abs(scale - 1.0) > 0.02:
        size = (max(1, round(out.shape[1] * scale)), max(1, round(out.shape[0] * scale)))
        out = cv2.resize(out, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        done.append(f"scale{scale:.2f}")
    if out.ndim == 2:
        out, values = _grey_values(out, rng)
        done += values
    elif rng.random() < 0.3:
        out = np.clip(out + rng.normal(0, rng.uniform(1, 4), out.shape), 0, 255)
        done.append("noise")
    return np.ascontiguousarray(out), "+".join(done) or "as-is"


def _grey_values(out: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    done: list[str] = []
    low, high = float(out.min()), float(out.max())
    if high <= low:
        return out, done
    v = (out - low) / (high - low)
    if rng.random() < 0.4:  # a window: the darkest and brightest percentiles clipped
        a, b = np.percentile(v, [rng.uniform(0, 5), rng.uniform(95, 100)])
        if b > a:
            v = np.clip((v - a) / (b - a), 0, 1)
            done.append("window")
    if rng.random() < 0.3:
        v = v ** rng.uniform(0.6, 1.6)
        done.append("gamma")
    if rng.random() < 0.3:
        v = np.clip(v + rng.normal(0, rng.uniform(0.003, 0.02), v.shape), 0, 1)
        done.append("noise")
    return v, done  # 0..1: the encoding picks the stored range


def _encode(picture: np.ndarray, base: Base, rng: np.random.Generator) -> Encoded:
    """Stored values in one of ENCODINGS, keeping the base's look (MONOCHROME1 as shown)."""
    if picture.ndim == 3:
        return Encoded(picture, 0.0, 255.0, "rgb")
    if rng.random() < 0.1:  # a greyscale screenshot in RGB
        grey = np.repeat((picture * 255.0)[..., None], 3, axis=2)
        return Encoded(grey, 0.0, 255.0, "rgb")
    choices = [e for e in ENCODINGS if e != "rgb"]
    encoding = str(rng.choice(choices))
    if base.monochrome1 and rng.random() < 0.7:
        encoding = str(rng.choice(["mono1-uint12", "mono1-uint16"]))
    # the stored range is a part of the encoding's range (images rarely reach its ends)
    ranges = {
        "uint8": (rng.uniform(0, 20), rng.uniform(200, 255)),
        "uint12": (rng.uniform(0, 300), rng.uniform(1500, 4095)),
        "uint16": (rng.uniform(0, 2000), rng.uniform(8000, 65535)),
        "int16": (rng.uniform(-3024, -1000), rng.uniform(1000, 3071)),
        "mono1-uint12": (rng.uniform(0, 300), rng.uniform(1500, 4095)),
        "mono1-uint16": (rng.uniform(0, 2000), rng.uniform(8000, 65535)),
    }
    low, high = (float(round(v)) for v in ranges[encoding])
    shown = 1.0 - picture if base.monochrome1 else picture  # 0..1 as displayed
    stored_share = 1.0 - shown if encoding.startswith("mono1") else shown
    return Encoded(low + stored_share * (high - low), low, high, encoding)


# -- text ------------------------------------------------------------------------------------

_SYLLABLES = (
    "QX",
    "ZOR",
    "BLATT",
    "VRU",
    "KEM",
    "DRAX",
    "OLF",
    "MIZ",
    "TUR",
    "PLEN",
    "GROS",
    "WYK",
    "ESS",
    "JOV",
    "NAK",
    "BRUL",
    "FETZ",
    "HOLM",
    "ZAB",
    "QUIN",
    "ROTH",
    "ULM",
)
_GIVEN = ("JAN", "MARA", "TEODOR", "LIV", "OSKAR", "INES", "BORIS", "ELKE", "KAI", "NORA")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_PLACES = ("ST. ELSEWHERE HOSP", "NORTHFIELD CLINIC", "WESTMARK MED CTR", "RAD DEPT 3")


def phrase(rng: np.random.Generator) -> tuple[str, str]:
    """(kind, text): invented, never a real patient."""
    kind = str(
        rng.choice(
            ["name", "id", "date", "digits", "single", "long", "other"],
            p=[0.2, 0.15, 0.2, 0.12, 0.08, 0.15, 0.1],
        )
    )
    return kind, _PHRASES[kind](rng)


def _surname(rng: np.random.Generator) -> str:
    return "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))


def _name(rng: np.random.Generator) -> str:
    s, g = _surname(rng), str(rng.choice(_GIVEN))
    forms = (f"{s}^{g}", f"{s}, {g}", f"{g} {s}", f"{s.title()}^{g.title()}", f"{s} {g[0]}.")
    return str(rng.choice(forms))


def _id(rng: np.random.Generator) -> str:
    n = int(rng.integers(10**5, 10**9))
    forms = (f"PID {n}", f"MRN: {n}", f"ID:{n:09d}", f"ACC# A{n % 10**7}", f"{n}-{n % 97:02d}")
    return str(rng.choice(forms))


def _date(rng: np.random.Generator) -> str:
    y, m, d = int(rng.integers(1930, 2026)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    mon = _MONTHS[m - 1]
    forms = (
        f"{y}-{m:02d}-{d:02d}",
        f"{d:02d}.{m:02d}.{y}",
        f"{m:02d}/{d:02d}/{y}",
        f"{d}-{mon}-{y}",
        f"{y}{m:02d}{d:02d}",
        f"{mon.title()} {d} {y}",
        f"DOB {d:02d}/{m:02d}/{y % 100:02d}",
        f"{d:02d}.{m:02d}.{y} {d % 24:02d}:{m * 4:02d}",
        f"{y}/{m}/{d}",
        f"{d} {mon} {y}",
    )
    return str(rng.choice(forms))


def _digits(rng: np.random.Generator) -> str:
    return str(int(rng.integers(0, 10 ** int(rng.integers(1, 9)))))


def _single(rng: np.random.Generator) -> str:
    return str(rng.choice(list(SINGLES)))


def _long(rng: np.random.Generator) -> str:
    sex = str(rng.choice(["M", "F", "O"]))
    return f"{_name(rng)}  {sex}  {_date(rng)}  {_id(rng)}  {rng.choice(_PLACES)}"


def _other(rng: np.random.Generator) -> str:
    return str(rng.choice(_PLACES)) if rng.random() < 0.5 else f"{_id(rng)} {_date(rng)}"


_PHRASES = {
    "name": _name,
    "id": _id,
    "date": _date,
    "digits": _digits,
    "single": _single,
    "long": _long,
    "other": _other,
}


@cache
def _truetype(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


@cache
def _cap_ratio(path: str) -> float:
    """Cap height of the font at size 100, in pixels."""
    top, bottom = _truetype(path, 100).getbbox("H")[1::2]
    return (bottom - top) / 100.0


def font_files() -> list[tuple[str, str]]:
    """(family, path) of every TrueType/OpenType font the set uses; missing ones are an error
    (the set would differ from one machine to the next)."""
    out: list[tuple[str, str]] = []
    missing: list[tuple[str, str]] = []
    for family, package, files in FONTS:
        for name in files:
            path = (TRUETYPE / name).resolve()
            if path.is_file():
                out.append((family, str(path)))
            else:
                missing.append((package, str(path)))
    if missing:
        raise SystemExit(f"fonts missing (install the Debian packages): {sorted(set(missing))}")
    return out


def _glyphs(text: str, family: str, font: str, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Coverage (0..1) of `text` drawn horizontally, cropped to its ink."""
    if family == "hershey":
        face, thickness = int(font), 1 if cap < 16 or rng.random() < 0.5 else 2
        (_, h1), _ = cv2.getTextSize("H", face, 1.0, thickness)
        scale = cap / max(h1, 1)
        (w, h), base = cv2.getTextSize(text, face, scale, thickness)
        canvas = np.zeros((h + base + 8, w + 8), np.uint8)
        cv2.putText(canvas, text, (4, h + 4), face, scale, 255, thickness, cv2.LINE_AA)
    else:
        truetype = _truetype(font, max(4, round(cap / _cap_ratio(font))))
        left, top, right, bottom = truetype.getbbox(text)
        image = Image.new("L", (int(right - left) + 8, int(bottom - top) + 8), 0)
        ImageDraw.Draw(image).text((4 - left, 4 - top), text, fill=255, font=truetype)
        canvas = np.asarray(image)
    alpha = canvas.astype(np.float64) / 255.0
    ys, xs = np.nonzero(alpha > 0.25)
    if ys.size == 0:
        return np.zeros((0, 0))
    return alpha[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _choose(rng: np.random.Generator, weighted: tuple[tuple[Any, float], ...]) -> Any:
    values = [v for v, _ in weighted]
    return values[int(rng.choice(len(values), p=[w for _, w in weighted]))]


def _draw_items(encoded: Encoded, rng: np.random.Generator) -> list[Item]:
    rows, columns = encoded.pixels.shape[:2]
    wanted = int(min(6, max(1, 1 + rows * columns // 90_000 + rng.integers(0, 3))))
    fonts = font_files()
    families = [*sorted({f for f, _ in fonts}), "hershey"]
    display = encoded.display()
    grey = display.mean(axis=2) if display.ndim == 3 else display
    threshold, _ = cv2.threshold(grey.astype(np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    foreground = grey > threshold
    items: list[Item] = []
    for attempt in range(wanted * 4 + 60):  # a text image has at least one item
        if len(items) == wanted or (items and attempt >= wanted * 4):
            break
        item = _one_item(encoded, display, foreground, items, fonts, families, rng)
        if item is not None:
            items.append(item)
    return items


def _one_item(
    encoded: Encoded,
    display: np.ndarray,
    foreground: np.ndarray,
    placed: list[Item],
    fonts: list[tuple[str, str]],
    families: list[str],
    rng: np.random.Generator,
) -> Item | None:
    rows, columns = display.shape[:2]
    kind, text = phrase(rng)
    family = str(rng.choice(families))
    font = (
        str(int(rng.choice(HERSHEY)))
        if family == "hershey"
        else str(rng.choice([p for f, p in fonts if f == family]))
    )
    low, high = SIZES[int(rng.integers(0, len(SIZES)))]
    cap = int(rng.integers(low, high + 1))
    orientation = int(_choose(rng, ORIENTATIONS))
    contrast = str(rng.choice(CONTRASTS))
    place = str(_choose(rng, PLACES))
    alpha = np.rot90(_glyphs(text, family, font, cap, rng), orientation // 90)
    h, w = alpha.shape
    if h == 0 or h > rows - 2 or w > columns - 2:
        return None
    spot = _spot(place, h, w, rows, columns, foreground, placed, rng)
    if spot is None or not _legible(display, h, w, *spot, contrast):
        return None
    y, x = spot
    _paint(encoded, display, alpha, y, x, contrast, rng)
    box = (x, y, x + w, y + h)
    return Item(
        text, kind, family, _font_name(family, font), cap, orientation, contrast, place, box
    )


def _legible(display: np.ndarray, h: int, w: int, y: int, x: int, contrast: str) -> bool:
    """Whether a reader could see the text there: white, black or mid-grey differs from
    most of the background by more than `PLAIN` levels; faint text lies on a background whose
    middle half spans at most its step (no 12-level text on noisy, textured anatomy)."""
    area = display[y : y + h, x : x + w].reshape(h * w, -1)
    if contrast.startswith("faint"):
        q1, q3 = np.percentile(area, [25, 75], axis=0)
        return bool((q3 - q1).max() <= float(contrast.split("-")[1]))
    colour = {"white": 255.0, "black": 0.0, "mid-grey": 127.5}[contrast]
    return bool((np.abs(area - colour).max(axis=1) > PLAIN).mean() >= 0.7)


def _font_name(family: str, font: str) -> str:
    if family == "hershey":
        names = ("simplex", "plain", "duplex", "complex", "triplex", "complex-small")
        return f"hershey-{names[int(font)]}"
    return Path(font).stem


def _spot(
    place: str,
    h: int,
    w: int,
    rows: int,
    columns: int,
    foreground: np.ndarray,
    placed: list[Item],
    rng: np.random.Generator,
) -> tuple[int, int] | None:
    """Top-left corner for an h x w item at `place`, clear of the items already placed."""
    for _ in range(40):
        edge = int(rng.integers(0, 7))
        if place == "corner":
            y = edge if rng.random() < 0.5 else rows - h - edge
            x = (
                int(rng.integers(0, 7))
                if rng.random() < 0.5
                else columns - w - int(rng.integers(0, 7))
            )
        elif place == "edge":
            side = int(rng.integers(0, 4))
            y = int(rng.integers(0, rows - h + 1))
            x = int(rng.integers(0, columns - w + 1))
            y, x = (edge, x) if side == 0 else (rows - h - edge, x) if side == 1 else (y, x)
            x = edge if side == 2 else columns - w - edge if side == 3 else x
        else:
            y, x = int(rng.integers(0, rows - h + 1)), int(rng.integers(0, columns - w + 1))
        y, x = min(max(y, 0), rows - h), min(max(x, 0), columns - w)
        if place == "anatomy" and foreground[y : y + h, x : x + w].mean() < 0.6:
            continue
        if not any(_near((x, y, x + w, y + h), item.box, columns) for item in placed):
            return y, x
    return None


def _near(a: tuple[int, int, int, int], b: tuple[int, int, int, int], columns: int) -> bool:
    """Whether either box, grown as the stage grows a found box (3.5 heights along the line,
    at most a quarter of the width), reaches the other."""

    def grown(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        along = min(round(3.5 * (box[3] - box[1])) + 8, columns // 4)
        return box[0] - along, box[1] - 8, box[2] + along, box[3] + 8

    def meet(p: tuple[int, int, int, int], q: tuple[int, int, int, int]) -> bool:
        return p[0] < q[2] and q[0] < p[2] and p[1] < q[3] and q[1] < p[3]

    return meet(grown(a), b) or meet(grown(b), a)


def _paint(
    encoded: Encoded,
    display: np.ndarray,
    alpha: np.ndarray,
    y: int,
    x: int,
    contrast: str,
    rng: np.random.Generator,
) -> None:
    """Blend the text's colour (display levels, per channel for RGB) into the picture."""
    h, w = alpha.shape
    area = display[y : y + h, x : x + w]
    background = np.median(area.reshape(h * w, -1), axis=0)  # per channel
    if contrast == "white":
        colour = np.full_like(background, 255.0)
    elif contrast == "black":
        colour = np.zeros_like(background)
    elif contrast == "mid-grey":
        colour = np.full_like(background, 127.5)
    else:
        step = float(contrast.split("-")[1])
        up = bool(rng.random() < 0.5)
        sign = (
            1.0 if (up and background.max() + step <= 255) or background.min() - step < 0 else -1.0
        )
        colour = np.clip(background + sign * step, 0, 255)
    target = np.asarray(encoded.stored(colour), dtype=np.float64)
    a = alpha if encoded.pixels.ndim == 2 else alpha[..., None]
    window = encoded.pixels[y : y + h, x : x + w]
    encoded.pixels[y : y + h, x : x + w] = window * (1.0 - a) + target * a
    display[y : y + h, x : x + w] = area * (1.0 - a) + colour * a


# -- data sets -------------------------------------------------------------------------------


def dataset(case: Case, encoded: Encoded) -> pydicom.Dataset:
    """The case as the gateway would receive it: its modality's SOP class (a secondary capture
    for RGB and unknown modalities), its encoding, an invented patient."""
    values = np.rint(encoded.pixels)
    if encoded.encoding == "rgb":
        pixel = dict(
            SamplesPerPixel=3,
            PlanarConfiguration=0,
            PhotometricInterpretation="RGB",
            BitsAllocated=8,
            BitsStored=8,
            HighBit=7,
            PixelRepresentation=0,
        )
        data = np.clip(values, 0, 255).astype(np.uint8)
    else:
        bits = {"uint8": 8, "uint12": 12, "uint16": 16, "int16": 16}[
            encoded.encoding.removeprefix("mono1-")
        ]
        signed = encoded.encoding == "int16"
        photometric = "MONOCHROME1" if encoded.monochrome1 else "MONOCHROME2"
        allocated = 8 if bits == 8 else 16
        pixel = dict(
            SamplesPerPixel=1,
            PhotometricInterpretation=photometric,
            BitsAllocated=allocated,
            BitsStored=bits,
            HighBit=bits - 1,
            PixelRepresentation=int(signed),
        )
        dtype = np.uint8 if bits == 8 else np.int16 if signed else np.uint16
        info = np.iinfo(dtype)
        top = info.max if signed else (1 << bits) - 1
        data = np.clip(values, info.min, top).astype(dtype)
    colour = encoded.encoding == "rgb"
    sop = SECONDARY_CAPTURE if colour else SOP_CLASS.get(case.modality, SECONDARY_CAPTURE)
    return synthetic(
        SOPClassUID=sop,
        Modality=case.modality,
        Rows=case.rows,
        Columns=case.columns,
        PixelData=np.ascontiguousarray(data).tobytes(),
        **pixel,
    )


# -- measurement -----------------------------------------------------------------------------


class Recording:
    """The gateway's finder, timed; `boxes` are what the stage's detection returned for each
    view (`RecordingStage`), in frame coordinates: crops of a view and its turned reading
    mapped back as the stage maps them (the detector alone)."""

    def __init__(self, finder: OnnxText) -> None:
        self.finder = finder
        self.boxes: list[Region] = []
        self.seconds = self.cpu = self.map_seconds = self.map_cpu = 0.0

    def reset(self) -> None:
        self.boxes, self.seconds, self.cpu = [], 0.0, 0.0
        self.map_seconds = self.map_cpu = 0.0

    def find(self, image: np.ndarray, whole: tuple[int, int] | None = None) -> list[Region]:
        start, cpu = time.perf_counter(), time.process_time()
        boxes = self.finder.find(image, whole)
        self.seconds += time.perf_counter() - start
        self.cpu += time.process_time() - cpu
        return boxes

    def read_many(self, image: np.ndarray, boxes: list[Region]) -> list[tuple[str, float]]:
        return self.finder.read_many(image, boxes)

    def candidates(self, frame: np.ndarray, photometric: str) -> list[tuple[Region, float]]:
        start, cpu = time.perf_counter(), time.process_time()
        found = self.finder.candidates(frame, photometric)
        self.map_seconds += time.perf_counter() - start
        self.map_cpu += time.process_time() - cpu
        return found

    def settle(self) -> None:
        self.finder.settle()


class RecordingReader(WindowReader):
    """The gateway's window reader, handing the detector's boxes of every view to
    `recording` (a case is one frame, read whole: the view's coordinates are the frame's)."""

    def __init__(self, recording: Recording, settings: PixelSettings) -> None:
        markers = {m.upper() for m in settings.keep_markers}
        super().__init__(recording, settings.margin, markers)
        self.recording = recording

    def _find(
        self, view: np.ndarray, whole: tuple[int, int], *, turned: bool = False
    ) -> list[Region]:
        boxes = super()._find(view, whole, turned=turned)
        self.recording.boxes += boxes
        return boxes


class RecordingStage(PixelStage):
    """The gateway's pixel stage, its window reader recording (`RecordingReader`)."""

    def __init__(self, recording: Recording) -> None:
        super().__init__(PixelSettings(), (), recording)
        self.reader = RecordingReader(recording, PixelSettings())
        self.recording = recording


def _fitted(
    truth: TextBox, widened: list[tuple[Region, Region]], rows: int, columns: int
) -> np.ndarray:
    """The widened detector boxes that are about this text: at least `FIT` of the box the
    detector returned lies on the text's box (a box around a whole organ covers text by
    chance, and the stage drops most of those after reading them)."""
    out = np.zeros((rows, columns), bool)
    for raw, r in widened:
        w = min(raw.x + raw.width, truth.x1) - max(raw.x, truth.x0)
        h = min(raw.y + raw.height, truth.y1) - max(raw.y, truth.y0)
        if w > 0 and h > 0 and w * h >= FIT * raw.width * raw.height:
            out[r.y : r.y + r.height, r.x : r.x + r.width] = True
    return out


@dataclass
class Result:
    """One image measured: per ground-truth box found or not, masked shares, seconds."""

    case: Case
    status: str
    found: dict[str, list[bool]]  # "whole" / "detector" / "fitted" -> per item
    masked: dict[str, float]  # share of the image masked
    outside: dict[str, float]  # share of the area outside the ground truth masked
    seconds: dict[str, float]


def measure_case(w: Any, recording: Recording, case: Case, encoded: Encoded) -> Result:
    data = part10(dataset(case, encoded))
    recording.reset()
    start, cpu = time.perf_counter(), time.process_time()
    outcome = w.process(data)
    seconds = {
        "whole": time.perf_counter() - start,
        "detector": recording.seconds,
        "whole_cpu": time.process_time() - cpu,
        "detector_cpu": recording.cpu,
    }
    rows, columns = case.rows, case.columns
    masks = {"whole": np.zeros((rows, columns), bool), "detector": np.zeros((rows, columns), bool)}
    if outcome.pixels is not None:
        masks["whole"] = mask_image(outcome.pixels.masked, rows, columns, frame=0)
    margin = PixelSettings().margin
    widened = [(b, widen(b, margin, rows, columns)) for b in recording.boxes]  # no line growth
    for _, r in widened:
        masks["detector"][r.y : r.y + r.height, r.x : r.x + r.width] = True
    truth = np.zeros((rows, columns), bool)
    boxes = [TextBox(i.text, *i.box) for i in case.items]
    for b in boxes:
        truth[b.y0 : b.y1, b.x0 : b.x1] = True
    found = {k: [covered_share(b, m) >= COVERED for b in boxes] for k, m in masks.items()}
    found["fitted"] = [
        covered_share(b, _fitted(b, widened, rows, columns)) >= COVERED for b in boxes
    ]
    masked = {k: float(m.mean()) for k, m in masks.items()}
    outside = {k: float(m[~truth].mean()) if (~truth).any() else 0.0 for k, m in masks.items()}
    return Result(case, outcome.status, found, masked, outside, seconds)


def run(
    cache_dir: Path,
    seed: int,
    text_images: int,
    clean_images: int,
    partial: Path | None = None,
    finder: OnnxText | None = None,
) -> list[Result]:
    """Build (from the cached bases) and measure every case, text and text-free interleaved;
    `finder`: another than the gateway's (benchmarks/detector_tune.py)."""
    all_bases = bases(cache_dir)
    order = [(True, i) for i in range(text_images)] + [(False, i) for i in range(clean_images)]
    order.sort(key=lambda t: (t[1] / (text_images if t[0] else clean_images), not t[0]))
    recording = Recording(finder or text_finder())
    stage = RecordingStage(recording)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        vault = SqliteVault(Path(folder) / "vault.sqlite3", os.urandom(32), durable=False)
        w = worker(vault, pixels=stage)
        for n, (text, index) in enumerate(order, 1):
            case, encoded = make_case(all_bases, seed, text, index)
            results.append(measure_case(w, recording, case, encoded))
            if n % 50 == 0:
                print(f"  {n}/{len(order)} images", file=sys.stderr, flush=True)
                if partial is not None:  # the figures so far (the order mixes both classes)
                    partial.write_text(json.dumps(summary(results), indent=1), encoding="utf-8")
        vault.close()
    return results


# -- figures ---------------------------------------------------------------------------------

BREAKDOWNS = (
    "orientation",
    "contrast",
    "size",
    "modality",
    "family",
    "encoding",
    "place",
    "kind",
    "orientation/contrast",  # vertical text is half the set: contrast and size per orientation
    "orientation/size",
)


def _key(result: Result, item: Item, by: str) -> str:
    if "/" in by:
        return "/".join(_key(result, item, part) for part in by.split("/"))
    if by in ("modality", "encoding"):
        return str(getattr(result.case, by))
    return str(getattr(item, by))


def summary(results: list[Result]) -> dict[str, Any]:
    """Every figure printed, as plain data (the CI test reads it with --json)."""
    text = [r for r in results if r.case.id.startswith("text")]
    clean = [r for r in results if r.case.id.startswith("clean")]
    out: dict[str, Any] = {
        "images": {"text": len(text), "clean": len(clean)},
        "boxes": sum(len(r.case.items) for r in text),
        "status": dict(sorted(_count(r.status for r in results).items())),
    }
    for path in ("whole", "detector", "fitted"):
        recall: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
        for r in text:
            for item, hit in zip(r.case.items, r.found[path], strict=True):
                for by in ("all", *BREAKDOWNS):
                    cell = recall[by]["all" if by == "all" else _key(r, item, by)]
                    cell[0] += hit
                    cell[1] += 1
        if path == "fitted":
            out[path] = {
                "recall": {
                    by: {k: v[0] / v[1] for k, v in sorted(cells.items())}
                    for by, cells in recall.items()
                }
            }
            continue
        fp = [r.masked[path] for r in clean]
        outside = [r.outside[path] for r in text]
        out[path] = {
            "recall": {
                by: {k: v[0] / v[1] for k, v in sorted(cells.items())}
                for by, cells in recall.items()
            },
            "boxes": {
                by: {k: v[1] for k, v in sorted(cells.items())} for by, cells in recall.items()
            },
            "clean_masked_median": _pct(fp, 50),
            "clean_masked_p95": _pct(fp, 95),
            "clean_images_over": sum(v > FP_SHARE for v in fp),
            "text_outside_median": _pct(outside, 50),
            "text_outside_p95": _pct(outside, 95),
            "seconds_median": _pct([r.seconds[path] for r in results], 50),
            "seconds_p95": _pct([r.seconds[path] for r in results], 95),
            "cpu_seconds_median": _pct([r.seconds[f"{path}_cpu"] for r in results], 50),
            "cpu_seconds_total": sum(r.seconds[f"{path}_cpu"] for r in results),
        }
    return out


def _count(values: Iterator[str]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for v in values:
        counts[v] += 1
    return counts


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def report(figures: dict[str, Any]) -> None:
    images, boxes = figures["images"], figures["boxes"]
    print(
        f"images: {images['text']} with text ({boxes} boxes), {images['clean']} text-free;"
        f" outcomes {figures['status']}"
    )
    whole, detector = figures["whole"], figures["detector"]
    fitted = figures["fitted"]
    print(f"\nrecall (box >= {COVERED:.0%} masked)   whole path  detector alone  (fitted)  boxes")
    for by in ("all", *BREAKDOWNS):
        if by in whole["recall"]:
            print(f"  by {by}")
        for key, value in whole["recall"].get(by, {}).items():
            n = whole["boxes"][by][key]
            d, f = detector["recall"][by][key], fitted["recall"][by][key]
            print(f"    {key:30} {value:9.3f} {d:14.3f} {f:9.3f} {n:6d}")
    print(f"\ntext-free images ({images['clean']}):       whole path   detector alone")
    rows = (
        ("masked share, median", "clean_masked_median", "{:13.4f}"),
        ("masked share, p95", "clean_masked_p95", "{:13.4f}"),
        (f"images > {FP_SHARE:.1%} masked", "clean_images_over", "{:13d}"),
        ("text images: masked outside truth, median", "text_outside_median", "{:13.4f}"),
        ("text images: masked outside truth, p95", "text_outside_p95", "{:13.4f}"),
        ("seconds per image, median", "seconds_median", "{:13.3f}"),
        ("seconds per image, p95", "seconds_p95", "{:13.3f}"),
        ("CPU seconds per image, median", "cpu_seconds_median", "{:13.3f}"),
        ("CPU seconds, all images", "cpu_seconds_total", "{:13.0f}"),
    )
    for label, key, form in rows:
        print(f"  {label:42}{form.format(whole[key])}{form.format(detector[key])}")


# -- command line ----------------------------------------------------------------------------


def preview(cache_dir: Path, seed: int, count: int, folder: Path) -> None:
    """PNG pictures of the first `count` text cases with their boxes (display scale)."""
    folder.mkdir(parents=True, exist_ok=True)
    all_bases = bases(cache_dir)
    for index in range(count):
        case, encoded = make_case(all_bases, seed, True, index)
        picture = np.clip(encoded.display(), 0, 255).astype(np.uint8)
        picture = cv2.cvtColor(picture, cv2.COLOR_GRAY2BGR) if picture.ndim == 2 else picture
        picture = np.ascontiguousarray(picture[..., ::-1])
        for item in case.items:
            x0, y0, x1, y1 = item.box
            cv2.rectangle(picture, (x0 - 1, y0 - 1), (x1, y1), (0, 200, 0), 1)
        cv2.imwrite(str(folder / f"{case.id}.png"), picture)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("build", "measure"), help="build: bases and a list")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--sample", action="store_true", help="the CI subset: 60 + 60 images")
    parser.add_argument("--limit", type=int, help="at most this many images of each class")
    parser.add_argument("--json", type=Path, help="write the figures here as well")
    parser.add_argument("--preview", type=int, default=0, help="build: PNGs of N text cases")
    args = parser.parse_args(argv)
    text, clean = (
        (SAMPLE_TEXT_IMAGES, SAMPLE_CLEAN_IMAGES) if args.sample else (TEXT_IMAGES, CLEAN_IMAGES)
    )
    if args.limit is not None:
        text, clean = min(text, args.limit), min(clean, args.limit)
    cache_dir = args.cache / f"v{VERSION}"
    if args.command == "build":
        return build(cache_dir, args.seed, text, clean, args.preview)
    started = time.perf_counter()
    results = run(cache_dir, args.seed, text, clean, args.json)
    figures = summary(results)
    figures["run_seconds"] = time.perf_counter() - started
    print(f"text validation set: seed {args.seed}, {time.ctime()}, one process")
    report(figures)
    print(f"\nrun time {figures['run_seconds']:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1), encoding="utf-8")
    return 0


def build(cache_dir: Path, seed: int, text: int, clean: int, previews: int) -> int:
    """Decode the bases into the cache, write the ground truth list, print the set's counts."""
    all_bases = bases(cache_dir)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    lines = []
    for is_text, total in ((True, text), (False, clean)):
        for index in range(total):
            case, _ = make_case(all_bases, seed, is_text, index)
            lines.append(json.dumps(asdict(case)))
            for item in case.items:
                for by in ("orientation", "contrast", "size", "family", "place", "kind"):
                    counts[by][str(getattr(item, by))] += 1
            counts["encoding " + ("text" if is_text else "clean")][case.encoding] += 1
            counts["modality " + ("text" if is_text else "clean")][case.modality] += 1
    cache_dir.mkdir(parents=True, exist_ok=True)
    truth = cache_dir / f"cases-seed{seed}-{text}-{clean}.jsonl"
    truth.write_text("\n".join(lines) + "\n", encoding="utf-8")
    frames = len(all_bases)
    files = len({b.name for b in all_bases})
    print(f"bases: {frames} distinct frames of {files} files; excluded {len(EXCLUDED)} files")
    print(f"images: {text} with text, {clean} text-free; boxes: {sum(counts['kind'].values())}")
    for by, cells in counts.items():
        print(f"  {by:15} " + ", ".join(f"{k} {v}" for k, v in sorted(cells.items())))
    print(f"ground truth: {truth}")
    if previews:
        preview(cache_dir, seed, previews, cache_dir / "preview")
        print(f"previews: {cache_dir / 'preview'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
