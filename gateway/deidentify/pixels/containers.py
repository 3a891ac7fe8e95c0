"""One encoded frame, cleaned at the container level: only what a decoder needs goes on.

Compressed frames carry more than pixels. A JPEG may hold COM segments and APPn segments (Exif
with names and dates, JFIF and Exif thumbnails - pixels of their own -, Photoshop IPTC, ICC
profiles); a JPEG 2000 codestream may hold COM segments, and a JP2 file wraps it in boxes (XML,
UUID) that may hold anything; an RLE frame's segment table may leave gaps, or stop before the
end, where bytes hide. None of it is pixel data and all of it would pass a pixel stage that
only looks at decoded pixels. `clean_frame` rewrites one frame so that only known structures
remain (an allow-list, never a list of known leaks), without re-encoding JPEG or JPEG 2000:

- JPEG family (ISO/IEC 10918-1 Annex B, ISO/IEC 14495-1 Annex C): SOI, SOFn (incl. JPEG-LS
  SOF55), DHT, DAC, DQT, DRI, DNL, DHP, EXP, JPEG-LS LSE, SOS with its entropy-coded data copied
  bit-exact, EOI. Each kept segment's length must match its content (no slack to hide bytes in),
  and of the table segments only the tables a scan reads are kept (`_install`, `_read_by_scan`).
  Everything else goes: COM, every APPn, reserved markers, fill bytes, bytes after EOI. Colour
  may depend on markers in IJG-family decoders (libjpeg-turbo, OpenCV, dcmtk) and CharLS: a
  canonical APP14 "Adobe" (JPEG-LS: APP8 "mrfx") carrying only the colour transform is written
  where that is so.
- JPEG 2000 and HTJ2K (ISO/IEC 15444-1 Annex A, -2 Annex A, -15): the codestream's marker
  segments in the main header and every tile-part header, each as long as its values
  (`_Coding`); COM goes, and so do the optional pointer segments TLM, PLM and PLT (their
  lengths would no longer be right) and the descriptive PRF, CPF and CRG; packed packet
  headers and Part 2 segments outside the Part 2 syntaxes are unprocessable; each tile-part's
  Psot is fixed; packet data is copied bit-exact; bytes after EOC go. Of a JP2 file only the
  codestream (the first `jp2c` box) remains.
- RLE Lossless (PS3.5 Annex G): decoded and encoded again, so the segment table and the data
  are made together and nothing outside the runs survives.

Anything else (video, JPEG XL, deflated frames, unknown syntaxes) is `Unprocessable`: what it
may carry cannot be proven absent. So is a frame that does not parse as its syntax says.

Not removed (it would take decoding the entropy-coded or packet data): bytes hidden *inside*
the entropy-coded segment of a JPEG after its last MCU, or inside a tile-part after its last
packet. Decoders skip them; only re-encoding removes them.

(Over 400 lines on purpose: every container family's allow-list of marker segments side by
side - JPEG, JPEG-LS, JPEG 2000, JP2, RLE - so a reader sees one rule applied alike.)
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import RLELossless

from gateway.deidentify.failures import guard
from gateway.errors import Unprocessable

JPEG_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
        "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless, First-Order Prediction (Process 14 SV1)
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    }
)
J2K_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2 Multi-component Lossless
        "1.2.840.10008.1.2.4.93",  # JPEG 2000 Part 2 Multi-component
        "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
        "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
        "1.2.840.10008.1.2.4.203",  # HTJ2K
    }
)
J2K_PART2_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"})
RLE_SYNTAX = "1.2.840.10008.1.2.5"


@dataclass(frozen=True)
class Cleaned:
    """The cleaned frame, and how many pieces of the input did not reach it: marker segments,
    boxes, runs of fill bytes, trailing data (for RLE: 1 when the frame was rebuilt into other
    bytes than it had)."""

    data: bytes
    removed: int


@dataclass(frozen=True)
class Geometry:
    """What RLE needs to decode a frame (PS3.5 G.2): the image's Rows, Columns, Samples per
    Pixel and Bits Allocated."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int


def supported_syntaxes() -> frozenset[str]:
    """The transfer syntaxes whose frames `clean_frame` can clean."""
    return JPEG_SYNTAXES | J2K_SYNTAXES | {RLE_SYNTAX}


def clean_frame(frame: bytes, transfer_syntax: str, geometry: Geometry | None = None) -> Cleaned:
    """`frame` with only what a decoder needs; raises Unprocessable when that cannot be shown.
    `geometry` is needed for RLE Lossless only."""
    if transfer_syntax in JPEG_SYNTAXES:
        return clean_jpeg(frame)
    if transfer_syntax in J2K_SYNTAXES:
        return clean_j2k(frame, part2=transfer_syntax in J2K_PART2_SYNTAXES)
    if transfer_syntax == RLE_SYNTAX:
        if geometry is None:
            raise ValueError("RLE Lossless frames are cleaned with their geometry")
        return clean_rle(frame, geometry)
    raise Unprocessable("container-syntax-unsupported")


# --- JPEG: ISO/IEC 10918-1 Annex B, ISO/IEC 14495-1 (JPEG-LS) Annex C ---------------------------

_SOI, _EOI, _SOS, _TEM = 0xD8, 0xD9, 0xDA, 0x01
_APP0, _APP8, _APP14 = 0xE0, 0xE8, 0xEE
_SOF_LS = 0xF7
_SOF = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)})
_RST = frozenset(range(0xD0, 0xD8))
_FILL = re.compile(rb"\xff+")


def _tables(payload: bytes, entry: Callable[[bytes, int], int]) -> bool:
    """A DQT or DHT payload is one or more tables with nothing after the last."""
    pos = 0
    while pos < len(payload):
        pos += entry(payload, pos)
    return pos == len(payload) > 0


def _dqt_entry(p: bytes, pos: int) -> int:
    precision = p[pos] >> 4  # Pq: 0 = 8-bit, 1 = 16-bit values (B.2.4.1)
    return 1 + 64 * (precision + 1) if precision <= 1 else len(p) + 1


def _dht_entry(p: bytes, pos: int) -> int:
    counts = p[pos + 1 : pos + 17]  # L1..L16 (B.2.4.2)
    return 17 + sum(counts) if len(counts) == 16 else len(p) + 1


def _frame_ok(p: bytes) -> bool:
    return len(p) >= 6 and p[5] > 0 and len(p) == 6 + 3 * p[5]  # P Y X Nf + Nf x (C H/V Tq)


def _lse_ok(p: bytes) -> bool:
    """JPEG-LS preset parameters (14495-1 C.2.4.1): 1 coding parameters, 4 oversize dimensions
    (Wxy 2 to 4 bytes each); not 2/3, mapping tables."""
    if not p or p[0] not in (1, 2, 3, 4):
        return False
    if p[0] == 1:
        return len(p) == 11
    if p[0] == 4:
        return len(p) >= 2 and 2 <= p[1] <= 4 and len(p) == 2 + 2 * p[1]
    return False  # mapping tables: CharLS cannot decode them, and they are room for any bytes


_DHT, _DQT, _DRI, _DNL, _LSE = 0xC4, 0xDB, 0xDD, 0xDC, 0xF8
_LOSSLESS, _PROGRESSIVE = 0xC3, 0xC2
#: The processes of DICOM's JPEG syntaxes (PS3.5 A.4.1: baseline, extended, lossless;
#: progressive as some writers label it baseline), and JPEG-LS. Hierarchical (SOF5-7, DHP,
#: EXP) and arithmetic coding (SOF9-15, DAC) belong to none of them; frames in them are not
#: read (their segments are more places for bytes no decoder here reads).
_PROCESSES = frozenset({0xC0, 0xC1, _PROGRESSIVE, _LOSSLESS, _SOF_LS})
_NOT_READ = (_SOF - _PROCESSES) | {0xCC, 0xDE, 0xDF}
#: Frame header precision (B.2.2, 14495-1 C.2.2): baseline 8 bits, extended and progressive
#: 8 or 12, lossless and JPEG-LS 2 to 16.
_PRECISION = {0xC0: {8}, 0xC1: {8, 12}, _PROGRESSIVE: {8, 12}}

_JPEG_KEEP: dict[int, Callable[[bytes], bool]] = {
    **{marker: _frame_ok for marker in _PROCESSES},  # SOF0-3, SOF55
    _DHT: lambda p: _tables(p, _dht_entry),
    _DQT: lambda p: _tables(p, _dqt_entry),
    _DRI: lambda p: len(p) in (2, 3, 4),  # Ri is 2 bytes, in JPEG-LS up to 4
    _LSE: _lse_ok,
    _SOS: lambda p: len(p) >= 1 and len(p) == 4 + 2 * p[0],  # Ns, Ns x (Cs Td/Ta), Ss Se Ah/Al
}


@dataclass(eq=False)
class _Table:
    """One table of a DQT or DHT segment (or a DRI's or LSE's value): its bytes, and
    whether a scan reads it."""

    data: bytes
    used: bool = False


@dataclass(eq=False)
class _TableSegment:
    """A DQT, DHT, DRI or LSE segment, written at the end with the tables a scan read, or
    not at all: a table no scan reads (never used, redefined before use, after the last scan,
    a quantisation table in a lossless frame) is bytes a decoder skips, and may hold
    anything."""

    marker: int
    tables: list[_Table]

    def written(self) -> bytes:
        payload = b"".join(t.data for t in self.tables if t.used)
        return (
            bytes([0xFF, self.marker]) + struct.pack(">H", len(payload) + 2) + payload
            if payload
            else b""
        )

    def complete(self) -> bool:
        return all(t.used for t in self.tables)


@dataclass
class _JpegParts:
    """What a JPEG walk keeps, and what it notes on the way for the colour decision."""

    pieces: list[bytes | _TableSegment]
    removed: int = 0
    jfif: bool = False
    adobe: bytes | None = None  # the input's APP14 "Adobe" segment, as it was
    components: bytes | None = None  # component identifiers of the first frame header
    ls: bool = False  # JPEG-LS (SOF55)
    mrfx: bytes | None = None  # the input's APP8 "mrfx" segment (JPEG-LS colour transform)
    scans: int = 0
    #: the frame header (SOFn marker, component identifier -> Tq): which tables a scan reads
    #: depends on its process
    process: int = 0
    quantisers: dict[int, int] = field(default_factory=dict)
    latched: set[int] = field(default_factory=set)  # components whose quantiser is read
    #: the table each destination holds at this point: (DQT/DHT, class, destination), or
    #: (DRI/LSE, type, 0) -> that table's entry, to be kept if a scan reads it (`_Table`)
    installed: dict[tuple[int, int, int], _Table] = field(default_factory=dict)


def clean_jpeg(frame: bytes) -> Cleaned:
    """Marker-level rewrite of one JPEG or JPEG-LS frame, no re-encoding."""
    if frame[:2] != b"\xff\xd8":
        raise Unprocessable("jpeg-no-soi")
    parts = _JpegParts([b"\xff\xd8"])
    pos = 2
    while True:
        pos = _next_marker(frame, pos, parts)
        marker = frame[pos + 1]
        if marker == _EOI:
            break
        pos = _jpeg_segment(frame, pos, marker, parts)
    if not parts.scans:
        raise Unprocessable("jpeg-no-scan")
    parts.removed += len(frame) > pos + 2  # anything after EOI
    colour = [_adobe_for(parts), _mrfx_for(parts)]
    parts.removed -= sum(1 for c in colour if c and c in (parts.adobe, parts.mrfx))  # as it was
    pieces = []
    for piece in parts.pieces[1:]:
        if isinstance(piece, _TableSegment):
            parts.removed += not piece.complete()
            piece = piece.written()
        pieces.append(piece)
    return Cleaned(b"".join([b"\xff\xd8", *colour, *pieces, b"\xff\xd9"]), parts.removed)


def _next_marker(frame: bytes, pos: int, parts: _JpegParts) -> int:
    """The position of the next marker's 0xFF, after any fill bytes (B.1.1.2), which go."""
    if frame[pos : pos + 1] != b"\xff":
        raise Unprocessable("jpeg-truncated" if pos >= len(frame) else "jpeg-stray-bytes")
    end = _FILL.match(frame, pos)
    assert end is not None  # frame[pos] is 0xFF
    last = end.end() - 1
    if last + 1 >= len(frame):
        raise Unprocessable("jpeg-truncated")
    parts.removed += last > pos
    return last


def _jpeg_segment(frame: bytes, pos: int, marker: int, parts: _JpegParts) -> int:
    """Keep, note or drop the marker segment at `pos`; the position after it (and after its
    scan, for SOS)."""
    if marker == _TEM:  # standalone, for private use in arithmetic coding: nothing to keep
        parts.removed += 1
        return pos + 2
    if marker in _RST or marker in (_SOI, 0x00):
        raise Unprocessable("jpeg-marker-out-of-place")
    if pos + 4 > len(frame):
        raise Unprocessable("jpeg-truncated")
    end = pos + 2 + int.from_bytes(frame[pos + 2 : pos + 4], "big")
    if end > len(frame) or end < pos + 4:
        raise Unprocessable("jpeg-truncated")
    payload = frame[pos + 4 : end]
    if marker in _NOT_READ:
        raise Unprocessable("jpeg-process-unsupported")
    check = _JPEG_KEEP.get(marker)
    if check is None:  # COM, APPn, DNL (the height is in the frame header: below), reserved
        _note(marker, frame[pos:end], parts)
        parts.removed += 1
        return end
    if not check(payload):
        raise Unprocessable("jpeg-segment-malformed")
    if marker in _PROCESSES:
        _frame_header(marker, payload, parts)
    if marker in (_DQT, _DHT, _DRI, _LSE):
        parts.pieces.append(_install(marker, payload, parts))
        return end
    parts.pieces.append(frame[pos:end])
    if marker != _SOS:
        return end
    if parts.components is None:
        raise Unprocessable("jpeg-scan-before-frame")
    _read_by_scan(payload, parts)
    scan_end = _scan_end(frame, end, parts.ls)
    if (_DRI, 0, 0) in parts.installed and _restarts(frame[end:scan_end], parts.ls):
        parts.installed[(_DRI, 0, 0)].used = True  # a scan without restarts reads no interval
    parts.pieces.append(frame[end:scan_end])
    parts.scans += 1
    return scan_end


def _frame_header(marker: int, payload: bytes, parts: _JpegParts) -> None:
    """Note a frame header (B.2.2) whose every field holds what a decoder of its process
    reads: a precision of the process, a height (a height of 0, to come in a DNL after the
    first scan, is not read by libjpeg), distinct components sampled 1 to 4 times each way,
    quantisation tables 0 to 3 (none in JPEG-LS)."""
    precision, height, width = payload[0], *struct.unpack(">HH", payload[1:5])
    ids = payload[6::3]
    sampling = [payload[i] for i in range(7, len(payload), 3)]
    tables = [payload[i] for i in range(8, len(payload), 3)]
    if (
        parts.components is not None  # one frame per image
        or precision not in _PRECISION.get(marker, range(2, 17))
        or not height
        or not width
        or len(set(ids)) < len(ids)
        or any(not (1 <= h <= 4 and 1 <= v <= 4) for h, v in ((b >> 4, b & 15) for b in sampling))
        or any(t > (0 if marker in (_SOF_LS, _LOSSLESS) else 3) for t in tables)
    ):
        raise Unprocessable("jpeg-segment-malformed")
    parts.components = ids
    parts.ls = marker == _SOF_LS
    parts.process = marker
    parts.quantisers = dict(zip(ids, tables, strict=True))


def _install(marker: int, payload: bytes, parts: _JpegParts) -> _TableSegment:
    """The tables of a DQT or DHT segment (B.2.4.1, B.2.4.2), each installed in its
    destination until a later one replaces it, or the value of a DRI or JPEG-LS LSE segment
    (B.2.4.4, 14495-1 C.2.4.1: installed until the next of its kind); a table a decoder
    could not take (a destination or class out of range, a Huffman symbol twice or a DC size
    over 16, a zero quantiser) makes the frame unprocessable."""
    tables, pos = [], 0
    while pos < len(payload):
        if marker == _DQT:
            size, kind, where = _dqt_entry(payload, pos), 0, payload[pos] & 0x0F
            values = payload[pos + 1 : pos + size]
            wide = payload[pos] >> 4
            quantisers = struct.unpack(f">{len(values) // 2}H", values) if wide else values
            bad = where > 3 or 0 in quantisers
        elif marker == _DHT:
            size = _dht_entry(payload, pos)
            kind, where = payload[pos] >> 4, payload[pos] & 0x0F
            symbols = payload[pos + 17 : pos + size]
            bad = kind > 1 or where > 3 or len(set(symbols)) < len(symbols)
            # DC: a difference's size, at most 16 (lossless); AC: run and size, size <= 14
            bad = bad or (max(symbols, default=0) > 16 if kind == 0 else 15 in _low(symbols))
        else:  # DRI, LSE: one value (restart interval, coding parameters, dimensions)
            size, kind, where, bad = len(payload), payload[0] if marker == _LSE else 0, 0, False
        if bad:
            raise Unprocessable("jpeg-segment-malformed")
        table = _Table(payload[pos : pos + size])
        parts.installed[(marker, kind, where)] = table
        tables.append(table)
        pos += size
    return _TableSegment(marker, tables)


def _low(symbols: bytes) -> set[int]:
    return {symbol & 0x0F for symbol in symbols}


def _read_by_scan(payload: bytes, parts: _JpegParts) -> None:
    """Mark the tables the scan of `payload` (SOS, B.2.3) reads, as its frame's process reads
    them: quantisation tables for DCT frames; for Huffman coding the DC table of a sequential
    or lossless scan and of a first DC scan of a progressive one, the AC table of a
    sequential scan and of a progressive AC scan (libjpeg's jdhuff.c, jdphuff.c do the
    same); for arithmetic coding the conditioning of the same classes. JPEG-LS reads none of
    them. A table a scan reads that was never installed is left to the decoder (its
    defaults, or an error)."""
    _check_scan(payload, parts)
    for key in ((_LSE, 1, 0), (_LSE, 4, 0)):  # the values in force
        if key in parts.installed:
            parts.installed[key].used = True
    if parts.ls:
        return
    count, start, refine = payload[0], payload[1 + 2 * payload[0]], payload[3 + 2 * payload[0]]
    process = parts.process
    lossless = process == _LOSSLESS
    dc = lossless or (start == 0 and (process != _PROGRESSIVE or refine >> 4 == 0))
    ac = not lossless and (start > 0 or process != _PROGRESSIVE)
    for i in range(count):
        component, selectors = payload[1 + 2 * i], payload[2 + 2 * i]
        wanted = [(_DHT, 0, selectors >> 4)] if dc else []
        wanted += [(_DHT, 1, selectors & 0x0F)] if ac else []
        if not lossless and component in parts.quantisers and component not in parts.latched:
            wanted.append((_DQT, 0, parts.quantisers[component]))  # latched at its first scan
            parts.latched.add(component)
        for key in wanted:
            if key in parts.installed:
                parts.installed[key].used = True


def _check_scan(payload: bytes, parts: _JpegParts) -> None:
    """A scan header (B.2.3, 14495-1 C.2.3) whose every field holds what a decoder of the
    frame's process reads: 1 to 4 distinct components of the frame, table selectors 0 to 3
    and 0 where no table is read (lossless and progressive DC scans: AC; progressive AC
    scans: DC; JPEG-LS: no mapping table), and Ss, Se, Ah, Al as the process defines them
    (sequential: 0, 63, 0, 0; lossless: a predictor 1 to 7, 0, 0, a point transform; progressive: a
    spectral band and successive approximation; JPEG-LS: NEAR, an interleave mode 0 to 2, 0,
    a point transform)."""
    count = payload[0]
    ids = payload[1 : 1 + 2 * count : 2]
    selectors = payload[2 : 2 + 2 * count : 2]
    start, end, approximation = payload[1 + 2 * count], payload[2 + 2 * count], payload[-1]
    high, low = approximation >> 4, approximation & 0x0F
    components = parts.components or b""
    process = parts.process
    unused = {_SOF_LS: 0xFF, _LOSSLESS: 0x0F}.get(process, 0)  # selectors no table is read by
    if process == _PROGRESSIVE:
        unused = 0x0F if start == 0 else 0xF0  # DC scans read no AC table, AC scans no DC one
    if process == _SOF_LS:
        fields = end <= 2 and high == 0
    elif process == _LOSSLESS:
        fields = 1 <= start <= 7 and end == 0 and high == 0
    elif process == _PROGRESSIVE:
        fields = start <= end <= 63 and (start > 0 or end == 0) and high <= 13 and low <= 13
    else:
        fields = start == 0 and end == 63 and approximation == 0
    if (
        not 1 <= count <= 4
        or len(set(ids)) < count
        or any(c not in components for c in ids)
        or any(s >> 4 > 3 or s & 0x0F > 3 or s & unused for s in selectors)
        or not fields
    ):
        raise Unprocessable("jpeg-segment-malformed")


def _restarts(scan: bytes, ls: bool) -> bool:
    """Whether entropy-coded data holds a restart marker (RSTn: 0xFF 0xD0-0xD7, which no data
    byte pair can be: 10918-1 B.1.1.5, 14495-1 A.1)."""
    return re.search(rb"\xff[\xd0-\xd7]", scan) is not None


def _note(marker: int, segment: bytes, parts: _JpegParts) -> None:
    """Note the markers IJG-family decoders take colour from; the segments still go."""
    if marker == _APP0 and segment[4:9] == b"JFIF\0":
        parts.jfif = True
    if marker == _APP14 and segment[4:9] == b"Adobe" and len(segment) >= 16:
        parts.adobe = parts.adobe or segment
    if marker == _APP8 and segment[4:8] == b"mrfx" and len(segment) >= 9:
        parts.mrfx = parts.mrfx or segment


def _scan_end(frame: bytes, pos: int, ls: bool) -> int:
    """Where the entropy-coded data from `pos` ends: at the first 0xFF that starts a marker
    other than RSTn. In JPEG a data 0xFF is followed by a stuffed 0x00 (B.1.1.5); in JPEG-LS by
    a byte below 0x80 (14495-1 A.1)."""
    while True:
        pos = frame.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(frame):
            raise Unprocessable("jpeg-truncated")
        following = frame[pos + 1]
        if following in _RST or (following < 0x80 if ls else following == 0):
            pos += 2
            continue
        return pos


def _adobe_for(parts: _JpegParts) -> bytes:
    """A canonical APP14 "Adobe" segment where IJG-family decoders would otherwise see other
    colours, else nothing.

    libjpeg (jdapimin.c, default_decompress_parms) takes a 3-component frame for YCbCr if it saw
    JFIF, else as the Adobe transform says (0: RGB), else RGB only for component identifiers
    'R' 'G' 'B'; a 4-component frame for YCCK if an Adobe transform is not 0, else CMYK. The
    output has no JFIF, so only an Adobe segment can keep what the input meant. (DICOM's
    decoders take colour from Photometric Interpretation and ignore both.)"""
    ids = parts.components or b""
    transform = None if parts.adobe is None else parts.adobe[15]
    if len(ids) == 3:
        by_ids = 0 if ids == b"RGB" else 1
        meant = 1 if parts.jfif else by_ids if transform is None else min(transform, 1)
        return b"" if meant == by_ids else _adobe(meant)
    if len(ids) == 4 and transform not in (None, 0):
        return _adobe(2)
    return b""


def _mrfx_for(parts: _JpegParts) -> bytes:
    """A canonical APP8 "mrfx" segment where a JPEG-LS frame uses one of HP's colour transforms
    (1-3), which CharLS applies when decoding, else nothing; any other value is not known."""
    if not parts.ls or parts.mrfx is None or parts.mrfx[8] == 0:
        return b""
    if parts.mrfx[8] > 3:
        raise Unprocessable("jpeg-ls-colour-transform-unknown")
    return b"\xff\xe8\x00\x07mrfx" + parts.mrfx[8:9]


def _adobe(transform: int) -> bytes:
    """APP14 as libjpeg writes it: "Adobe", version 100, no flags, then the transform."""
    return b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00" + bytes([transform])


# --- JPEG 2000 and HTJ2K: ISO/IEC 15444-1 Annex A and I, 15444-2 Annex A, 15444-15 ---------------

_SOC, _SOT, _SOD, _EOC = 0xFF4F, 0xFF90, 0xFF93, 0xFFD9
_SIZ = 0xFF51
_COD, _COC, _QCD, _QCC, _RGN, _POC = 0xFF52, 0xFF53, 0xFF5C, 0xFF5D, 0xFF5E, 0xFF5F
#: Part 2 (DCO VMS DFS ADS MCT MCC NLT MCO CBD ATK, QPD QPC)
_PART2 = frozenset({*range(0xFF70, 0xFF7A), 0xFF5A, 0xFF5B})
_CODING = frozenset({_COD, _COC, _QCD, _QCC, _RGN, _POC})
#: in the main header or a tile-part header: COD COC QCD QCC RGN POC, Part 2
_EITHER = _CODING | _PART2
_CAP = 0xFF50
#: main header only: SIZ, CAP (HTJ2K's capabilities)
_J2K_MAIN_KEEP = _EITHER | {_SIZ, _CAP}
_J2K_TILE_KEEP = _EITHER
#: COM; the optional pointer segments TLM, PLM, PLT (A.7) and what describes the codestream
#: for display or conformance only - PRF, CPF (profiles), CRG (component registration): a
#: decoder needs none of them, and each holds values any bytes could stand for
_J2K_DROP = frozenset({0xFF64, 0xFF55, 0xFF57, 0xFF58, 0xFF56, 0xFF59, 0xFF63})
#: PPM, PPT: packet headers moved out of the packets, where bytes after the last header
#: cannot be told from headers without decoding them
_PACKED = frozenset({0xFF60, 0xFF61})
#: POC (progression order changes) is refused as well: an entry that adds no packet to the
#: ones before it is six bytes no decoder needs, and telling which do would take the packets
_PART15 = 1 << 17  # Pcap: the bit of 15444-15 (HTJ2K), Part 15 (A.5.2 of 15444-1:2019)
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


def clean_j2k(frame: bytes, part2: bool = False) -> Cleaned:
    """Marker-level rewrite of one JPEG 2000 or HTJ2K codestream (or JP2 file), no
    re-encoding; `part2`: a JPEG 2000 Part 2 syntax, whose extension segments are kept (not
    checked: their contents are transforms and tables a decoder may read)."""
    stream, removed = _unwrap_jp2(frame)
    if stream[:2] != b"\xff\x4f":
        raise Unprocessable("j2k-no-soc")
    keep = _J2K_MAIN_KEEP if part2 else _J2K_MAIN_KEEP - _PART2
    pieces = [stream[:2]]
    pos, dropped = _header(stream, 2, keep, pieces, first=_SIZ)
    main = None if part2 else _Coding.of(pieces[1:])  # Part 2 has more coding styles
    removed += dropped
    while _marker_at(stream, pos) == _SOT:
        pos, dropped = _tile_part(stream, pos, pieces, keep & _J2K_TILE_KEEP, main)
        removed += dropped
    if _marker_at(stream, pos) != _EOC:
        raise Unprocessable("j2k-no-eoc")
    if main is not None and main.unread:
        raise Unprocessable("j2k-segment-unread")
    removed += len(stream) > pos + 2  # anything after EOC
    pieces.append(b"\xff\xd9")
    return Cleaned(b"".join(pieces), removed)


def _marker_at(stream: bytes, pos: int) -> int:
    if pos + 2 > len(stream):
        raise Unprocessable("j2k-truncated")
    marker = int.from_bytes(stream[pos : pos + 2], "big")
    if marker < 0xFF00:
        raise Unprocessable("j2k-stray-bytes")
    return marker


def _header(
    stream: bytes, pos: int, keep: frozenset[int], pieces: list[bytes], first: int = 0
) -> tuple[int, int]:
    """Walk a main or tile-part header's marker segments from `pos` to the SOT or SOD that
    ends it, keeping the known ones (A.4): (position of that marker, segments dropped)."""
    dropped = 0
    while (marker := _marker_at(stream, pos)) not in (_SOT, _SOD):
        if first and marker != first:
            raise Unprocessable("j2k-siz-not-first")
        first = 0
        end = _segment_end(stream, pos)
        if marker == _POC:
            raise Unprocessable("j2k-progression-changes")
        if marker in keep:
            if marker == _SIZ and not _siz_ok(stream[pos + 4 : end]):
                raise Unprocessable("j2k-segment-malformed")
            if marker == _CAP and not _cap_ok(stream[pos + 4 : end]):
                raise Unprocessable("j2k-segment-malformed")
            pieces.append(stream[pos:end])
        elif marker in _J2K_DROP:
            dropped += 1
        elif marker in _PACKED:
            raise Unprocessable("j2k-packed-packet-headers")

        elif marker in _PART2:
            raise Unprocessable("j2k-part2-marker")
        else:
            raise Unprocessable("j2k-marker-unknown")
        pos = end
    return pos, dropped


def _segment_end(stream: bytes, pos: int) -> int:
    if pos + 4 > len(stream):
        raise Unprocessable("j2k-truncated")
    length = int.from_bytes(stream[pos + 2 : pos + 4], "big")
    if length < 2 or pos + 2 + length > len(stream):
        raise Unprocessable("j2k-truncated")
    return pos + 2 + length


def _siz_ok(p: bytes) -> bool:
    """Rsiz, Xsiz ... YTOsiz, Csiz, then Ssiz XRsiz YRsiz per component (A.5.1)."""
    return len(p) >= 36 and len(p) == 36 + 3 * int.from_bytes(p[34:36], "big")


def _cap_ok(p: bytes) -> bool:
    """Pcap naming Part 15 at most, and one Ccap value per part named (A.5.2 of 15444-1:2019):
    no room for anything else."""
    if len(p) < 4:
        return False
    pcap = int.from_bytes(p[:4], "big")
    return pcap & ~_PART15 == 0 and len(p) == 4 + 2 * bin(pcap).count("1")


@dataclass
class _Coding:
    """What the main header's coding style segments say (A.6.1, A.6.2): the number of
    decomposition levels, for all components and per component, how many components and how
    many bytes name one (Csiz >= 257: two). The lengths of COD, COC, QCD, QCC, RGN and POC
    follow from them: a segment longer than its values is room for other bytes; so is a
    second one for the same components in a header (the last one would be read), and a main
    header's segment that every tile-part overrides (`tile`: none would read it)."""

    levels: int | None
    by_component: dict[int, int]
    components: int
    wide: bool
    quantised: set[int]  # components with a QCC in the main header
    unread: set[tuple[int, int]]  # main header segments no tile-part has read yet

    @classmethod
    def of(cls, segments: list[bytes]) -> _Coding:
        """The coding the main header's kept `segments` set; each checked against it."""
        components, wide = 0, False
        for segment in segments:
            if int.from_bytes(segment[:2], "big") == _SIZ:
                components = int.from_bytes(segment[38:40], "big")
                wide = components >= 257
        coding = cls(None, {}, components, wide, set(), set())
        own = coding._own(segments)
        if (_COD, -1) in own:
            coding.levels = _coding_style(own[(_COD, -1)], 0)
        coding.by_component = {
            c: _coding_style(p, 1 + wide) for (m, c), p in own.items() if m == _COC
        }
        coding.quantised = {c for m, c in own if m == _QCC}
        for (marker, component), p in own.items():
            coding.check(marker, p, coding._levels(marker, component, None, {}))
        coding.unread = {key for key in own if key[0] in _CODING}
        return coding

    def tile(self, segments: list[bytes]) -> None:
        """Check a tile-part header's coding style segments against the coding in force, and
        note which of the main header's this tile reads (precedence of A.6: a tile-part's COC
        over its COD over the main COC over the main COD; QCC and QCD likewise; a tile-part's
        RGN or POC over the main header's)."""
        own = self._own(segments)
        levels = _coding_style(own[(_COD, -1)], 0) if (_COD, -1) in own else None
        by_component = {
            c: _coding_style(p, 1 + self.wide) for (m, c), p in own.items() if m == _COC
        }
        for (marker, component), p in own.items():
            self.check(marker, p, self._levels(marker, component, levels, by_component))
        for single, each, in_main in (
            (_COD, _COC, set(self.by_component)),
            (_QCD, _QCC, self.quantised),
        ):
            if (single, -1) in own:
                continue  # the tile's own, for every component its COC/QCC do not name
            named = {c for m, c in own if m == each}
            self.unread -= {(each, c) for c in in_main - named}
            if len(named | in_main) < self.components:
                self.unread.discard((single, -1))
        self.unread -= {(m, c) for m, c in self.unread if m in (_RGN, _POC) and (m, c) not in own}

    def check(self, marker: int, p: bytes, levels: int | None) -> None:
        """A QCD or QCC (read with `levels` decomposition levels), RGN or POC exactly as long
        as its values."""
        c = 1 + self.wide
        if marker in (_QCD, _QCC):
            at = 0 if marker == _QCD else c
            if len(p) <= at or levels is None:
                raise Unprocessable("j2k-segment-malformed")
            style, bands = p[at] & 0x1F, 3 * levels + 1
            if len(p) - at - 1 != {0: bands, 1: 2, 2: 2 * bands}.get(style, -1):
                raise Unprocessable("j2k-segment-malformed")
        elif (marker == _RGN and len(p) != c + 2) or (
            marker == _POC and (not p or len(p) % (5 + 2 * c))
        ):
            raise Unprocessable("j2k-segment-malformed")

    def _own(self, segments: list[bytes]) -> dict[tuple[int, int], bytes]:
        """A header's segments by (marker, component or -1); a second one for the same
        components is unprocessable."""
        own: dict[tuple[int, int], bytes] = {}
        c = 1 + self.wide
        for segment in segments:
            marker, p = int.from_bytes(segment[:2], "big"), segment[4:]
            component = int.from_bytes(p[:c], "big") if marker in (_COC, _QCC, _RGN) else -1
            if (marker, component) in own:
                raise Unprocessable("j2k-segment-twice")
            own[(marker, component)] = p
        return own

    def _levels(
        self, marker: int, component: int, levels: int | None, by_component: dict[int, int]
    ) -> int | None:
        """The decomposition levels a QCD or QCC is read with: of the component's COC or the
        COD in force, the header's own before the main header's."""
        if marker == _QCC and component in by_component:
            return by_component[component]
        if levels is not None:
            return levels
        if marker == _QCC and component in self.by_component:
            return self.by_component[component]
        return self.levels


def _coding_style(p: bytes, at: int) -> int:
    """The decomposition levels of a COD (`at` 0) or COC (`at` the component's bytes)
    payload, whose length must be Scod/Scoc, [SGcod,] SPcod and the precinct sizes if any."""
    fixed = at + 1 + (4 if at == 0 else 0)  # Scod + SGcod (4 bytes) / Ccoc + Scoc
    if len(p) < fixed + 5:
        raise Unprocessable("j2k-segment-malformed")
    levels = p[fixed]
    precincts = levels + 1 if p[at] & 0x01 else 0
    if len(p) != fixed + 5 + precincts:
        raise Unprocessable("j2k-segment-malformed")
    return levels


def _tile_part(
    stream: bytes, pos: int, pieces: list[bytes], keep: frozenset[int], main: _Coding | None
) -> tuple[int, int]:
    """Copy the tile-part at `pos` (A.4.2) with a cleaned header and its Psot fixed: (position
    after it, segments dropped)."""
    if pos + 12 > len(stream) or stream[pos + 2 : pos + 4] != b"\x00\x0a":
        raise Unprocessable("j2k-truncated")
    isot, psot, tpsot, tnsot = struct.unpack(">HIBB", stream[pos + 4 : pos + 12])
    header: list[bytes] = []
    sod, dropped = _header(stream, pos + 12, keep, header)
    if tpsot and any(int.from_bytes(h[:2], "big") in _CODING for h in header):
        raise Unprocessable("j2k-segment-out-of-place")  # first tile-part only (A.4.2)
    if main is not None:
        main.tile(header)
    if _marker_at(stream, sod) != _SOD:
        raise Unprocessable("j2k-sod-missing")
    end = pos + psot if psot else stream.find(b"\xff\xd9", sod + 2)  # 0: up to EOC (A.4.2)
    if end < sod + 2 or end > len(stream):
        raise Unprocessable("j2k-truncated")
    kept = 12 + sum(map(len, header)) + (end - sod)
    new_psot = kept if psot else 0
    pieces.append(b"\xff\x90\x00\x0a" + struct.pack(">HIBB", isot, new_psot, tpsot, tnsot))
    pieces.extend(header)
    pieces.append(stream[sod:end])  # SOD and the packet data, bit-exact
    return end, dropped


def _unwrap_jp2(frame: bytes) -> tuple[bytes, int]:
    """The contents of the first `jp2c` box of a JP2 file (15444-1 Annex I), with the number
    of other boxes; a bare codestream as it is."""
    if not frame.startswith(_JP2_SIGNATURE):
        return frame, 0
    pos, others = len(_JP2_SIGNATURE), 1
    while pos + 8 <= len(frame):
        length, kind = struct.unpack(">I4s", frame[pos : pos + 8])
        start = pos + 8
        if length == 1:  # XLBox: 8-byte length
            if start + 8 > len(frame):
                break
            length, start = int.from_bytes(frame[start : start + 8], "big"), start + 8
        end = len(frame) if length == 0 else pos + length
        if end < start or end > len(frame):
            break
        if kind == b"jp2c":
            return frame[start:end], others + (end < len(frame))
        pos, others = end, others + 1
    raise Unprocessable("jp2-no-codestream")


# --- RLE Lossless: PS3.5 Annex G ----------------------------------------------------------------


def clean_rle(frame: bytes, geometry: Geometry) -> Cleaned:
    """Decode and encode again with pydicom's RLE encoder (pylibjpeg-rle): the new header and
    segments hold the decoded bytes and nothing else."""
    _check_rle_header(frame, geometry)
    options: dict[str, Any] = {
        "rows": geometry.rows,
        "columns": geometry.columns,
        "samples_per_pixel": geometry.samples_per_pixel,
        "bits_allocated": geometry.bits_allocated,
        "bits_stored": geometry.bits_allocated,  # every bit of every byte plane as it was
        "pixel_representation": 0,
        "photometric_interpretation": "RGB" if geometry.samples_per_pixel == 3 else "MONOCHROME2",
        "planar_configuration": 0,
        "number_of_frames": 1,
    }
    with guard("rle-rebuild-failed:"):
        decoded, _ = get_decoder(RLELossless).as_array(
            encapsulate([frame]), decoding_plugin="pylibjpeg", **{**options, "as_rgb": False}
        )
        data = get_encoder(RLELossless).encode(decoded, encoding_plugin="pylibjpeg", **options)
    return Cleaned(data, int(data != frame))


def _check_rle_header(frame: bytes, geometry: Geometry) -> None:
    """The header (G.5) names one segment per byte plane, the first right after it, and
    offsets that rise within the frame."""
    if len(frame) < 64:
        raise Unprocessable("rle-truncated")
    count, *offsets = struct.unpack("<16I", frame[:64])
    planes = geometry.samples_per_pixel * geometry.bits_allocated // 8
    if count != planes or not 1 <= count <= 15:
        raise Unprocessable("rle-segment-count")
    used = offsets[:count]
    if used[0] != 64 or any(a >= b for a, b in zip(used, [*used[1:], len(frame)], strict=True)):
        raise Unprocessable("rle-segment-offsets")
