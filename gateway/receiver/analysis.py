"""The reference receiver's demo analysis: from one complete study, a TID 1500 measurement
report (Comprehensive 3D SR) and a binary SEG, as an analysis server would return them.

Both are made by highdicom from the study's own (pseudonymous) instances: they inherit the
Patient and Study modules as received (PS3.3 C.7.1.1, C.7.2.1), reference only instances of
the study, and get their own Series and SOP Instance UIDs, derived from (site, study, manifest
version, kind), so analysing the same manifest again makes the same objects (a restart offers
no duplicate). The analysis itself is deliberately trivial:

- SEG (PS3.3 A.51, BINARY, one segment): on every frame of the series with the most frames, a
  centred disc (radius a quarter of the smaller side) cut to the pixels at or above the disc's
  mean. It needs the series' pixels decoded: a series that cannot be (no codec for it, broken
  data) or whose geometry highdicom refuses gets no SEG (`Unusable`, with a reason code).
- SR (TID 1500, one TID 1410 planar ROI group) on the middle image of that series: the disc as
  a CIRCLE with its source image reference, and its area (mm2 when the image gives its pixel
  spacing, else pixels). It needs no pixels, so every study with an image gets one.
"""

from __future__ import annotations

import io
import math
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

MANUFACTURER = "dicom-gateway reference receiver"
MODEL = "demo-analysis"
VERSION = "1"
SEG_SERIES_NUMBER, SR_SERIES_NUMBER = 9901, 9902

_TISSUE = hd.sr.CodedConcept("85756007", "SCT", "Tissue")
_AREA = hd.sr.CodedConcept("42798000", "SCT", "Area")
_MM2 = hd.sr.CodedConcept("mm2", "UCUM", "square millimeter")
_PIXELS = hd.sr.CodedConcept("{pixels}", "UCUM", "pixels")
_PROCEDURE = hd.sr.CodedConcept("363679005", "SCT", "Imaging procedure")
_AI = hd.sr.CodedConcept("123110", "DCM", "Artificial Intelligence")
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:dicom-gateway:receiver:demo-analysis")

#: what pydicom's decoders raise for data they cannot decode (pixels are foreign input)
_DECODE_ERRORS = (ValueError, TypeError, AttributeError, KeyError, IndexError, RuntimeError,
                  NotImplementedError, OSError)  # fmt: skip
#: what highdicom raises when the sources do not make a valid SEG (geometry, attributes)
_BUILD_ERRORS = (ValueError, TypeError, AttributeError, KeyError, IndexError)


class Unusable(Exception):
    """The study or series cannot be analysed; `reason` is a code for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Names:
    """What a result is named after: its site, study and manifest version."""

    site: str
    study: str
    version: str

    def uids(self, kind: str) -> tuple[str, str]:
        """(Series Instance UID, SOP Instance UID = result id) of the result of `kind`: the
        same for the same manifest version however often it is asked; never a source's.
        Name-based UUIDs (RFC 9562 v5) as 2.25 UIDs (PS3.5 B.2)."""
        names = [self.site, self.study, self.version, kind]
        series = uuid.uuid5(_NAMESPACE, "\0".join([*names, "series"]))
        instance = uuid.uuid5(_NAMESPACE, "\0".join([*names, "instance"]))
        return f"2.25.{series.int}", f"2.25.{instance.int}"


def frames(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def chosen_series(headers: Sequence[Dataset]) -> list[Dataset]:
    """The image series with the most frames (ties: the lowest Series Instance UID), its
    instances in order; [] when the study has no image."""
    by_series: dict[str, list[Dataset]] = {}
    for ds in headers:
        if "Rows" in ds and "Columns" in ds:
            by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    if not by_series:
        return []
    best = min(by_series, key=lambda s: (-sum(frames(d) for d in by_series[s]), s))
    return sorted(
        by_series[best], key=lambda d: (int(d.get("InstanceNumber") or 0), d.SOPInstanceUID)
    )


def segment_sources(series: Sequence[Dataset]) -> list[Dataset]:
    """What highdicom segments: the series' single-frame images, or its largest multi-frame
    image (a SEG's source is either, PS3.3 C.8.20.2)."""
    multi = [ds for ds in series if frames(ds) > 1]
    return [max(multi, key=frames)] if multi else list(series)


def disc(rows: int, columns: int) -> np.ndarray:
    """A centred disc, radius a quarter of the smaller side."""
    y, x = np.ogrid[:rows, :columns]
    cy, cx, r = (rows - 1) / 2, (columns - 1) / 2, min(rows, columns) / 4
    return np.asarray((y - cy) ** 2 + (x - cx) ** 2 <= r * r)


def mask(grey: np.ndarray) -> np.ndarray:
    """Per frame of (frames, rows, columns): the disc, cut to the pixels at or above the
    disc's mean there (never empty: the largest is at or above the mean)."""
    inside = disc(*grey.shape[1:])
    means = (grey * inside).sum(axis=(1, 2)) / inside.sum()
    return np.asarray(inside & (grey >= means[:, None, None]))


def grey_frames(sources: Sequence[Dataset]) -> np.ndarray:
    """The sources' frames as (frames, rows, columns), colour averaged; Unusable when they
    do not decode."""
    stacked = []
    for ds in sources:
        try:
            pixels = np.asarray(ds.pixel_array, dtype=np.float64)
        except _DECODE_ERRORS:
            raise Unusable("pixels-do-not-decode") from None
        if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
            pixels = pixels.mean(axis=-1)
        stacked.append(pixels.reshape((frames(ds), int(ds.Rows), int(ds.Columns))))
    return np.concatenate(stacked)


def seg(names: Names, sources: Sequence[Dataset]) -> bytes:
    """The binary SEG of `sources` (full datasets, pixels included)."""
    if not all("FrameOfReferenceUID" in ds for ds in sources):
        raise Unusable("no-frame-of-reference")  # the SEG must name the sources' frame
    series, instance = names.uids("seg")
    algorithm = hd.AlgorithmIdentificationSequence(name=MODEL, version=VERSION, family=_AI)
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label="demo disc", segmented_property_category=_TISSUE,
        segmented_property_type=_TISSUE, algorithm_identification=algorithm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
    )  # fmt: skip
    pixels = mask(grey_frames(sources))
    try:
        made = hd.seg.Segmentation(
            source_images=sources, pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description], series_instance_uid=series,
            series_number=SEG_SERIES_NUMBER, sop_instance_uid=instance, instance_number=1,
            manufacturer=MANUFACTURER, manufacturer_model_name=MODEL, software_versions=VERSION,
            device_serial_number="0", content_label="DEMO",
        )  # fmt: skip
    except _BUILD_ERRORS:
        raise Unusable("seg-refused") from None
    return _part10(made)


def sr(names: Names, image: Dataset) -> bytes:
    """The TID 1500 report of one ROI on `image` (a header is enough)."""
    series, instance = names.uids("sr")
    rows, columns = int(image.Rows), int(image.Columns)
    r = min(rows, columns) / 4
    middle = [frames(image) // 2 + 1] if frames(image) > 1 else None
    source = hd.sr.SourceImageForRegion(image.SOPClassUID, image.SOPInstanceUID, middle)
    centre = (columns / 2, rows / 2)
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.CIRCLE,
        graphic_data=np.array([centre, (centre[0] + r, centre[1])]),
        source_image=source,
    )
    spacing = pixel_spacing(image)
    area = math.pi * r * r * (spacing[0] * spacing[1] if spacing else 1.0)
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=names.uids("roi")[1], identifier="disc"),
        referenced_region=region, finding_type=_TISSUE,
        algorithm_id=hd.sr.AlgorithmIdentification(MODEL, VERSION),
        measurements=[hd.sr.Measurement(_AREA, round(area, 3), _MM2 if spacing else _PIXELS)],
    )  # fmt: skip
    device = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=names.uids("device")[1], name=MODEL, manufacturer_name=MANUFACTURER
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=_PROCEDURE,
        imaging_measurements=[group],
    )
    try:
        made = hd.sr.Comprehensive3DSR(
            evidence=[image], content=report[0], series_instance_uid=series,
            series_number=SR_SERIES_NUMBER, sop_instance_uid=instance, instance_number=1,
            manufacturer=MANUFACTURER, is_complete=True,
        )  # fmt: skip
    except _BUILD_ERRORS:
        raise Unusable("sr-refused") from None
    return _part10(made)


def pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """Row and column spacing (mm) at the top or in the shared/first per-frame functional
    group (PS3.3 C.7.6.16.2.1); None when the image does not say."""
    places = [ds]
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(keyword) or []:
            places.extend(group.get("PixelMeasuresSequence") or [])
            break
    for place in places:
        spacing = place.get("PixelSpacing")
        if spacing is not None and len(spacing) == 2:
            return float(spacing[0]), float(spacing[1])
    return None


def analyse(
    names: Names, headers: Sequence[Dataset], full: Callable[[Dataset], Dataset]
) -> tuple[list[bytes], list[str]]:
    """The results of one complete study (the SEG, the SR) and the reason codes of what was
    left out. `headers` are its instances without pixels; `full` reads one with
    its pixels."""
    series = chosen_series(headers)
    if not series:
        raise Unusable("no-image")
    results, skipped = [], []
    with warnings.catch_warnings():
        # highdicom warns about values it accepts (a one-part patient pseudonym as name);
        # a warning's text may quote a value, and the receiver logs reason codes only
        warnings.simplefilter("ignore")
        try:
            results.append(seg(names, [full(ds) for ds in segment_sources(series)]))
        except Unusable as unusable:
            skipped.append(unusable.reason)
        try:
            results.append(sr(names, series[len(series) // 2]))
        except Unusable as unusable:
            skipped.append(unusable.reason)
    return results, skipped


def _part10(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
