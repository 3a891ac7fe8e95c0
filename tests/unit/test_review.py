"""`gateway.review`: the header diff and the pictures an officer looks at, on synthetic data."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000Lossless

from gateway.fate import Fate
from gateway.review import (
    SHOWN,
    Change,
    Masked,
    Undecodable,
    diff,
    read,
    review,
    spaced,
    strip,
    thumbnail,
)
from gateway.review.pictures import GAP
from gateway.vault import Vault
from tests.dicom_builders import encapsulated, item, j2k_lossless, part10, synthetic, worker

RED = (0, 0, 255)  # BGR, as cv2 decodes


def _decode(png: bytes) -> np.ndarray:
    picture = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None
    return picture


def _image(pixels: np.ndarray, **values: object) -> Dataset:
    """`pixels` (frames x rows x columns [x 3], 8 or 16 bits) as a data set read back from
    Part 10, as `review` reads one."""
    frames, rows, columns = pixels.shape[:3]
    colour = pixels.ndim == 4
    bits = pixels.dtype.itemsize * 8
    header = {
        "SamplesPerPixel": 3 if colour else 1,
        "PhotometricInterpretation": "RGB" if colour else "MONOCHROME2",
        "BitsAllocated": bits,
        "BitsStored": bits,
        "HighBit": bits - 1,
        "NumberOfFrames": frames,
        **({"PlanarConfiguration": 0} if colour else {}),
        **values,
    }
    ds = synthetic(
        Rows=rows, Columns=columns, PixelRepresentation=0, PixelData=pixels.tobytes(), **header
    )
    ds["PixelData"].VR = "OW" if bits == 16 else "OB"
    found = read(part10(ds))
    assert found is not None
    return found


# -- the header diff -----------------------------------------------------------------------


def test_removed_replaced_and_added_elements_by_tag_path_in_tag_order() -> None:
    before = synthetic(PatientName="Doe^Jane", PatientID="P-1", StudyDescription="CHEST")
    after = synthetic(PatientID="UT-X1", StudyDescription="CHEST", PatientIdentityRemoved="YES")
    after.SOPInstanceUID, after.StudyInstanceUID = before.SOPInstanceUID, before.StudyInstanceUID
    after.SeriesInstanceUID = before.SeriesInstanceUID
    del after.PatientName
    assert diff(before, after) == (
        Change("(0010,0010)", "PatientName", "removed", "Doe^Jane", None),
        Change("(0010,0020)", "PatientID", "replaced", "P-1", "UT-X1"),
        Change("(0012,0062)", "PatientIdentityRemoved", "added", None, "YES"),
    )
    assert diff(before, None) == ()
    assert diff(before, before) == ()


def test_a_change_inside_a_nested_sequence_names_every_item_on_its_way() -> None:
    def report(text: str, *extra: Dataset) -> Dataset:
        inner = item(ValueType="TEXT", TextValue=text)
        container = item(ValueType="CONTAINER", ContentSequence=Sequence([inner]))
        return item(ContentSequence=Sequence([container, *extra]))

    before = report("seen by Dr Smith", item(ValueType="TEXT", TextValue="second"))
    after = report("seen")
    assert diff(before, after) == (
        Change("(0040,A730)", "ContentSequence", "replaced", "2 items", "1 item"),
        Change(
            "(0040,A730)[0].(0040,A730)[0].(0040,A160)",
            "TextValue",
            "replaced",
            "seen by Dr Smith",
            "seen",
        ),
        Change("(0040,A730)[1].(0040,A040)", "ValueType", "removed", "TEXT", None),
        Change("(0040,A730)[1].(0040,A160)", "TextValue", "removed", "second", None),
    )


def test_a_sequence_on_one_side_only_is_listed_with_what_is_in_it() -> None:
    before = item(ReferencedStudySequence=Sequence([item(ReferencedSOPInstanceUID="1.2.3")]))
    assert diff(before, Dataset()) == (
        Change("(0008,1110)", "ReferencedStudySequence", "removed", "1 item", None),
        Change("(0008,1110)[0].(0008,1155)", "ReferencedSOPInstanceUID", "removed", "1.2.3", None),
    )


def test_private_binary_and_long_values_are_shown_readably() -> None:
    before = item(PixelData=b"\0" * 16, ImageComments="x" * 500)
    block = before.private_block(0x0009, "ACME 1.0", create=True)
    block.add_new(0x01, "LO", "Jane Doe's MRN 4471")
    before["PixelData"].VR = "OB"
    after = item(PixelData=b"\1" * 16, ImageComments="x" * 500)
    after["PixelData"].VR = "OB"
    changes = {c.path: c for c in diff(before, after)}
    assert changes["(0009,0010)"].before == "ACME 1.0"
    private = changes["(0009,1001)"]
    assert (private.kind, private.before, private.after) == ("removed", "Jane Doe's MRN 4471", None)
    assert private.keyword  # pydicom's name for it, never empty
    assert changes["(7FE0,0010)"] == Change(
        "(7FE0,0010)", "PixelData", "replaced", "16 bytes", "16 bytes"
    )
    assert "(0020,4000)" not in changes  # equal, however long
    longer = diff(item(ImageComments="y" * 500), Dataset())[0]
    assert longer.before == "y" * SHOWN + "…"


# -- pictures ------------------------------------------------------------------------------


def test_a_thumbnail_is_scaled_to_its_longer_side_with_the_masks_of_its_frame_outlined() -> None:
    pixels = np.full((1, 100, 200), 100, np.uint8)
    pixels[0, :, 100:] = 200
    ds = _image(pixels)
    box = Masked("detected", 20, 40, 40, 20, 0, 0)
    picture = _decode(thumbnail(ds, boxes=[box], max_side=400))
    assert picture.shape == (200, 400, 3)
    assert tuple(picture[80, 60]) == RED  # the box's top edge, scaled 2x
    assert tuple(picture[100, 60]) == (0, 0, 0)  # inside it: the darkest value, min-max
    assert tuple(picture[100, 300]) == (255, 255, 255)
    later = Masked("detected", 20, 40, 40, 20, 1, 3)  # not on frame 0
    assert tuple(_decode(thumbnail(ds, boxes=[later], max_side=400))[80, 60]) == (0, 0, 0)


def test_monochrome1_is_inverted_and_a_window_is_applied() -> None:
    ramp = np.tile(np.arange(0, 256, dtype=np.uint16) * 16, (8, 1))[None]  # 0..4080
    plain = _decode(thumbnail(_image(ramp), max_side=256))[..., 0]
    inverted = _decode(
        thumbnail(_image(ramp, PhotometricInterpretation="MONOCHROME1"), max_side=256)
    )
    assert plain[0, 0] == 0
    assert plain[0, 255] == 255
    assert inverted[0, 0, 0] == 255
    assert inverted[0, 255, 0] == 0
    windowed = _image(ramp, WindowCenter=2048, WindowWidth=1024)
    shown = _decode(thumbnail(windowed, max_side=256))[0, :, 0]
    assert shown[: 1536 // 16].max() == 0  # below the window: black
    assert shown[2560 // 16 :].min() == 255  # above it: white
    assert 100 < shown[2048 // 16] < 155  # its centre: mid grey
    broken = _image(ramp, WindowCenter=2048, WindowWidth=0)  # pydicom refuses: min-max
    assert np.array_equal(_decode(thumbnail(broken, max_side=256))[..., 0], plain)


def test_colour_stays_colour_and_compressed_pixels_are_decoded() -> None:
    rgb = np.zeros((1, 32, 32, 3), np.uint8)
    rgb[0, :, :16] = (255, 0, 0)
    picture = _decode(thumbnail(_image(rgb), max_side=32))
    assert tuple(picture[5, 5]) == (0, 0, 255)  # red, in BGR
    assert tuple(picture[5, 20]) == (0, 0, 0)
    grey = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 251).astype(np.uint8)
    compressed = synthetic(
        Rows=64,
        Columns=64,
        SamplesPerPixel=1,
        PhotometricInterpretation="MONOCHROME2",
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
        PixelRepresentation=0,
    )
    ds = read(encapsulated(compressed, [j2k_lossless(grey)], JPEG2000Lossless))
    assert ds is not None
    assert np.array_equal(
        _decode(thumbnail(ds, max_side=64)), _decode(thumbnail(_image(grey[None]), max_side=64))
    )


def test_a_strip_shows_evenly_spaced_frames_with_their_own_masks() -> None:
    frames = np.stack([np.full((10, 20), 20 * i + 10, np.uint8) for i in range(10)])
    frames[:, 0, 0] = 0  # a darkest and a lightest pixel: min-max shows values as they are
    frames[:, 0, 1] = 255
    box = Masked("detected", 5, 2, 10, 6, 3, 3)
    picture = _decode(strip(_image(frames), boxes=[box], frames=4, max_side=20))
    assert spaced(10, 4) == (0, 3, 6, 9)
    assert picture.shape == (10, 4 * 20 + 3 * GAP, 3)
    lefts = [n * (20 + GAP) for n in range(4)]
    assert [int(picture[8, left + 18, 0]) for left in lefts] == [10, 70, 130, 190]
    outlined = [tuple(picture[2, left + 8]) == RED for left in lefts]
    assert outlined == [False, True, False, False]  # frame 3 only
    assert spaced(1, 8) == (0,)
    assert spaced(3, 8) == (0, 1, 2)
    assert spaced(0, 8) == ()


def test_no_pixel_data_and_a_missing_frame_are_clear_errors() -> None:
    with pytest.raises(Undecodable) as raised:
        thumbnail(synthetic())
    assert raised.value.reason == "no-pixel-data"
    with pytest.raises(IndexError):
        thumbnail(_image(np.zeros((2, 4, 4), np.uint8)), frame=2)


# -- the whole worker path -----------------------------------------------------------------


def test_a_review_holds_the_outcome_both_data_sets_the_masks_and_the_diff(vault: Vault) -> None:
    screen = np.zeros((1, 240, 480), np.uint8)
    cv2.putText(screen[0], "SMITH JOHN 4471902", (20, 40), cv2.FONT_HERSHEY_SIMPLEX, 1, 255, 2)
    data = part10(_image(screen, PatientName="Smith^John"))
    done = review(worker(vault), data)
    assert (done.fate, done.reason, done.where) == (Fate.WRITTEN, None, ())
    assert done.original is not None
    assert done.output is not None
    assert done.masked
    assert all(m.source == "detected" for m in done.masked)
    name = next(c for c in done.changes if c.keyword == "PatientName")
    assert (name.kind, name.before) == ("replaced", "Smith^John")
    assert name.after is not None
    assert "Smith" not in name.after
    box = done.masked[0]
    y, x = box.y + box.height // 2, box.x + box.width // 2
    before = _decode(thumbnail(done.original, max_side=480))
    after = _decode(thumbnail(done.output, max_side=480))
    assert before[y - 5 : y + 5, x - 20 : x + 20].max() == 255  # the text
    assert after[y - 5 : y + 5, x - 20 : x + 20].max() == 0  # masked
    assert np.array_equal(before[200:], after[200:])  # far from it: as it was

    garbage = review(worker(vault), b"not DICOM at all")
    assert (garbage.fate, garbage.reason) == (Fate.QUARANTINED, "not-dicom")
    assert (garbage.original, garbage.output, garbage.masked, garbage.changes) == (
        None,
        None,
        (),
        (),
    )
