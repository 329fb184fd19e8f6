"""Fill text boxes in the stored pixel domain of a DICOM dataset.

Uncompressed native pixel data is changed in place through a numpy view of its bytes:
only the samples inside the boxes are written, so every other byte (bits above
*Bits Stored*, odd-length padding, trailing data) stays as it was.

Native YBR_FULL_422 (whose chroma is subsampled) is decoded, redacted and written as
Explicit VR Little Endian YBR_FULL. Encapsulated (compressed) pixel data is decoded
without colour conversion, redacted, and re-encoded losslessly: JPEG 2000 input to
JPEG 2000 Lossless, JPEG-LS input to JPEG-LS Lossless (when an encoder is installed),
anything else to RLE Lossless (pydicom's RLE profile excludes 32-bit samples). Every
encoding is decoded again and compared with the redacted array; when no encoder
reproduces it exactly the output is Explicit VR Little Endian. Lossy input is never
re-encoded lossily, and *Lossy Image Compression* is left as it was ("01" stays "01").
A JPEG YBR_FULL_422 frame decodes to full-resolution YBR, which is written as YBR_FULL;
YBR_RCT / YBR_ICT JPEG 2000 decodes to RGB, written as RGB.

The fill runs on an array module ``xp`` chosen at run time (NumPy, or CuPy on a GPU:
:func:`pipeline.accel.pixel_module`): each changed frame goes to the device once, its
fill values are found and its boxes filled there, and it comes back once, into the bytes
that are written (with NumPy, a view of those bytes: no copy). Same results bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_encoder
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from pipeline.accel import pixel_module, to_host
from pipeline.errors import DeidError
from pipeline.pixel.codecs import decoding_plugin, encoding_plugin
from pipeline.pixel.types import TextBox

Fill = Literal["min", "black", "zero"]
_COLOR = ("RGB", "YBR_FULL")
_DECODE_FIRST = ("YBR_FULL_422",)  # native but subsampled: redact the decoded array
_RAW: dict[str, Any] = {"as_rgb": False}  # decode without colour conversion
_OFFSET_TABLES = ("ExtendedOffsetTable", "ExtendedOffsetTableLengths")


@dataclass(frozen=True)
class RedactionResult:
    """What :func:`redact` did.

    Attributes
    ----------
    boxes_applied : int
        Boxes that covered at least one pixel after the margin and clipping.
    frames_changed : tuple of int
        Sorted zero-based indices of the frames that were written.
    transfer_syntax_in, transfer_syntax_out : str
        Transfer Syntax UIDs before and after.
    reencoded : str
        ``"none"`` (bytes changed in place, or nothing to do), ``"lossless"`` (re-encoded
        with a lossless encoder) or ``"uncompressed"`` (written as Explicit VR Little
        Endian).
    """

    boxes_applied: int
    frames_changed: tuple[int, ...]
    transfer_syntax_in: str
    transfer_syntax_out: str
    reencoded: str


@dataclass(frozen=True)
class _Region:
    frame: int
    y0: int
    y1: int
    x0: int
    x1: int


def redact(
    ds: Dataset, boxes: Sequence[TextBox], *, fill: Fill = "min", margin: int = 0,
    xp: ModuleType | None = None,
) -> RedactionResult:
    """Fill ``boxes`` in the stored pixel values of ``ds`` (in place).

    Parameters
    ----------
    ds : Dataset
        A dataset with *Pixel Data* and file meta.
    boxes : sequence of TextBox
        Stored-pixel boxes; ``frame == -1`` applies a box to every frame.
    fill : {"min", "black", "zero"}
        ``"min"``: the extreme of the stored range that displays darkest (the lowest
        for MONOCHROME2, the highest for MONOCHROME1; a negative rescale slope or a
        modality LUT can swap them); ``"black"``: the stored value present in the frame
        whose modality output is darkest (lowest, MONOCHROME1: highest); ``"zero"``:
        stored 0 in every sample. Colour images use colour black for ``"min"`` and
        ``"black"`` (RGB 0; YBR_FULL Y=0, Cb=Cr=2**(BitsStored-1)); PALETTE COLOR uses
        the index of the entry with the lowest luma.
    margin : int
        Pixels added on every side of each box before clipping to the image.
    xp : module, optional
        Array module of the fill (NumPy, CuPy); :func:`pipeline.accel.pixel_module`
        (``$VEIL_DEVICE``, else ``auto``) when None, chosen at the call.

    Returns
    -------
    RedactionResult
        What was applied and how the pixel data was (re-)encoded. *Burned In
        Annotation* is set to ``"NO"`` on every successful return.

    Raises
    ------
    DeidError
        Float pixel data, no pixel data, a box on a frame that does not exist, an
        unsupported pixel layout or photometric interpretation, or undecodable data.
    """
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        raise DeidError("float pixel data redaction is not supported")
    if fill not in ("min", "black", "zero"):
        raise DeidError("unknown fill mode")
    if margin < 0:
        raise DeidError("margin must not be negative")
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax is None:
        raise DeidError("pixel data cannot be redacted: no Transfer Syntax UID in file meta")
    tsyntax = UID(tsyntax)
    if "PixelData" not in ds:
        if boxes:
            raise DeidError("boxes given for a dataset without pixel data")
        return RedactionResult(0, (), str(tsyntax), str(tsyntax), "none")
    regions, applied = _regions(ds, boxes, margin)
    photometric = str(ds.PhotometricInterpretation)
    xp = pixel_module(xp) if regions else xp
    if tsyntax.is_encapsulated or photometric in _DECODE_FIRST:
        out, reencoded = _redact_decoded(ds, tsyntax, regions, fill, xp)
    else:
        _redact_native(ds, tsyntax, regions, fill, xp)
        out, reencoded = tsyntax, "none"
    ds.BurnedInAnnotation = "NO"
    frames = tuple(sorted({r.frame for r in regions}))
    return RedactionResult(applied, frames, str(tsyntax), str(out), reencoded)


def _regions(
    ds: Dataset, boxes: Sequence[TextBox], margin: int
) -> tuple[list[_Region], int]:
    """Grow, clip and expand (frame -1) the boxes; drop the empty ones; count the rest."""
    rows, cols, nframes = int(ds.Rows), int(ds.Columns), int(ds.get("NumberOfFrames") or 1)
    out: list[_Region] = []
    applied = 0
    for box in boxes:
        if box.frame < -1 or box.frame >= nframes:
            raise DeidError("box addresses a frame that the dataset does not have")
        y0, y1 = max(box.y0 - margin, 0), min(box.y1 + margin, rows)
        x0, x1 = max(box.x0 - margin, 0), min(box.x1 + margin, cols)
        if y1 <= y0 or x1 <= x0:
            continue
        applied += 1
        targets = range(nframes) if box.frame == -1 else (box.frame,)
        out.extend(_Region(f, y0, y1, x0, x1) for f in targets)
    return out, applied


def _layout(ds: Dataset) -> tuple[int, int, int, int, int]:
    """(frames, rows, cols, samples, bits allocated), validated."""
    bits = int(ds.BitsAllocated)
    if bits not in (8, 16, 32, 64):
        raise DeidError(f"pixel redaction does not support Bits Allocated {bits}")
    stored = int(ds.BitsStored)
    if not 0 < stored <= bits or int(ds.get("HighBit", stored - 1)) != stored - 1:
        raise DeidError("pixel redaction needs High Bit = Bits Stored - 1")
    nframes = int(ds.get("NumberOfFrames") or 1)
    return nframes, int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1)), bits


def _redact_native(
    ds: Dataset, tsyntax: UID, regions: list[_Region], fill: Fill, xp: ModuleType | None
) -> None:
    """Write the fill into the raw bytes of native pixel data."""
    nframes, rows, cols, samples, bits = _layout(ds)
    stored, signed = int(ds.BitsStored), int(ds.PixelRepresentation) == 1
    order = "<" if tsyntax.is_little_endian else ">"
    dtype = np.dtype(f"{order}u{bits // 8}")
    count = nframes * rows * cols * samples
    buf = bytearray(ds.PixelData)
    if len(buf) < count * dtype.itemsize:
        raise DeidError("pixel data is shorter than the image it describes")
    flat = np.frombuffer(buf, dtype=dtype, count=count)
    if samples > 1 and int(ds.get("PlanarConfiguration", 0)) == 1:
        raw = flat.reshape(nframes, samples, rows, cols).transpose(0, 2, 3, 1)
    else:
        raw = flat.reshape(nframes, rows, cols, samples)
    mask = (1 << stored) - 1

    def stored_values(data: Any, xp: ModuleType) -> Any:  # bits above Bits Stored masked
        values = data.astype(xp.int64) & mask
        if signed:
            values = xp.where(values >= 1 << (stored - 1), values - (1 << stored), values)
        return values

    for frame in sorted({r.frame for r in regions}):
        _fill_frame(ds, str(ds.PhotometricInterpretation), fill, raw[frame], frame,
                    [r for r in regions if r.frame == frame], stored_values, bits, xp)
    ds.PixelData = bytes(buf)


def _fill_frame(
    ds: Dataset, photometric: str, fill: Fill, frame_view: np.ndarray, frame: int,
    regions: list[_Region], stored_values: Any, bits: int | None, xp: Any,
) -> None:
    """Fill ``regions`` of one frame (``frame_view``: a writable host view, rows x cols x
    samples) on ``xp``; ``stored_values(data, xp)``: its stored values (for ``black``);
    ``bits``: fills are written modulo ``2**bits`` (raw samples), or as they are (None).
    """
    order = frame_view.dtype.newbyteorder("=")  # big-endian words: a native copy (CuPy)
    data = xp.asarray(frame_view if frame_view.dtype.isnative else frame_view.astype(order))
    fills = _fill_values(ds, photometric, fill, lambda: stored_values(data, xp), frame, xp)
    if bits is not None:
        fills = [int(v) & ((1 << bits) - 1) for v in fills]
    value = xp.asarray(fills, dtype=data.dtype)
    for r in regions:
        data[r.y0 : r.y1, r.x0 : r.x1, :] = value
    host = to_host(data)  # NumPy, native order: the view itself, filled in place
    if host is not frame_view:  # came back from the device: into the written bytes
        frame_view[...] = host


def _redact_decoded(
    ds: Dataset, tsyntax: UID, regions: list[_Region], fill: Fill, xp: ModuleType | None
) -> tuple[UID, str]:
    """Decode, redact and re-encode; return (transfer syntax out, ``reencoded``)."""
    if not regions:
        return tsyntax, "none"
    nframes, rows, cols, samples, bits = _layout(ds)
    try:
        plugin = decoding_plugin(tsyntax)
        arr, meta = get_decoder(tsyntax).as_array(ds, **_RAW, decoding_plugin=plugin)
    except Exception as exc:  # pydicom raises several types; report only the type
        raise DeidError(
            f"cannot decode transfer syntax {tsyntax} for redaction: {type(exc).__name__}"
        ) from None
    photometric = str(meta.get("photometric_interpretation", ds.PhotometricInterpretation))
    if photometric == "YBR_FULL_422":  # decoded at full resolution
        photometric = "YBR_FULL"
    arr = np.ascontiguousarray(arr)
    view = arr.reshape(nframes, rows, cols, samples)
    for frame in sorted({r.frame for r in regions}):
        _fill_frame(ds, photometric, fill, view[frame], frame,
                    [r for r in regions if r.frame == frame],
                    lambda data, xp: data.astype(xp.int64), None, xp)
    _set_native(ds, arr, photometric, bits)
    targets = _lossless_targets(tsyntax) if tsyntax.is_encapsulated else []
    for target in targets:
        if _try_encode(ds, arr, target):
            return target, "lossless"
        _set_native(ds, arr, photometric, bits)  # undo a failed attempt
    return ExplicitVRLittleEndian, "uncompressed"


def _set_native(ds: Dataset, arr: np.ndarray, photometric: str, bits: int) -> None:
    """Store ``arr`` as Explicit VR Little Endian native pixel data."""
    kind = "i" if arr.dtype.kind == "i" else "u"
    data = arr.astype(f"<{kind}{bits // 8}").tobytes()
    ds.PixelData = data + b"\0" * (len(data) % 2)
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"
    ds["PixelData"].is_undefined_length = False
    for keyword in _OFFSET_TABLES:
        if keyword in ds:
            del ds[keyword]
    ds.PhotometricInterpretation = photometric
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        ds.PlanarConfiguration = 0
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _lossless_targets(tsyntax: UID) -> list[UID]:
    """Lossless syntaxes to try, best match first, with an installed encoder."""
    wanted = []
    if tsyntax in (JPEG2000, JPEG2000Lossless):
        wanted.append(JPEG2000Lossless)
    elif tsyntax in (JPEGLSLossless, JPEGLSNearLossless):
        wanted.append(JPEGLSLossless)
    wanted.append(RLELossless)
    out = []
    for uid in wanted:
        try:
            if get_encoder(uid).is_available:
                out.append(uid)
        except NotImplementedError:
            continue
    return out


def _try_encode(ds: Dataset, arr: np.ndarray, target: UID) -> bool:
    """Encode ``arr`` as ``target`` if the result decodes back to ``arr`` exactly.

    ``ds`` must hold ``arr`` as native pixel data; on failure it may be left in any state.
    """
    try:
        ds.compress(
            target, arr, encoding_plugin=encoding_plugin(target), generate_instance_uid=False
        )
        back, _ = get_decoder(target).as_array(ds, **_RAW, decoding_plugin=decoding_plugin(target))
        if back.shape == arr.shape and np.array_equal(back, arr):
            return True
    except Exception:  # any encoder failure means "try the next one"
        return False
    return False


def _fill_values(
    ds: Dataset, photometric: str, fill: Fill, values: Any, frame: int, xp: Any
) -> list[int]:
    """Per-sample stored fill values for one frame.

    ``values()`` returns the frame's stored values on ``xp``; only ``black`` calls it.
    """
    samples = int(ds.get("SamplesPerPixel", 1))
    if fill == "zero":
        return [0] * samples
    stored = int(ds.BitsStored)
    if photometric in _COLOR:
        mid = 1 << (stored - 1)
        return [0, mid, mid] if photometric == "YBR_FULL" else [0, 0, 0]
    if photometric == "PALETTE COLOR":
        return [_darkest_palette_index(ds)]
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DeidError(f"pixel redaction does not support {photometric!r}")
    if fill == "min":  # two candidates, known without the frame: on the host
        xp = np
        if int(ds.PixelRepresentation) == 1:
            candidates = np.array([-(1 << (stored - 1)), (1 << (stored - 1)) - 1])
        else:
            candidates = np.array([0, (1 << stored) - 1])
    else:
        candidates = xp.unique(values())
    shown = _modality(ds, candidates, frame, xp)
    pick = xp.argmax(shown) if photometric == "MONOCHROME1" else xp.argmin(shown)
    return [int(candidates[int(pick)])]


def _modality(ds: Dataset, stored: Any, frame: int, xp: Any) -> Any:
    """Modality-LUT output of ``stored`` (per-frame rescale of enhanced objects too).

    A Modality LUT Sequence is a table lookup done by pydicom on the host (on the few
    distinct values of a frame); a rescale is computed on ``xp`` as pydicom does.
    """
    if "ModalityLUTSequence" in ds or "RescaleSlope" in ds:
        try:
            if ds.get("ModalityLUTSequence"):
                lut = apply_modality_lut(to_host(stored), ds)
                return xp.asarray(np.asarray(lut, dtype=np.float64))
            if "RescaleSlope" in ds and "RescaleIntercept" in ds:
                out = stored.astype(xp.float64) * float(ds.RescaleSlope)
                out += float(ds.RescaleIntercept)
                return out
            return stored.astype(xp.float64)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
            raise DeidError(f"modality LUT cannot be applied: {type(exc).__name__}") from None
    slope = _functional_slope(ds, frame)
    return stored.astype(xp.float64) * slope


def _functional_slope(ds: Dataset, frame: int) -> float:
    """Rescale Slope from the per-frame or shared functional groups (1.0 if none)."""
    groups: list[Any] = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and frame < len(per_frame):
        groups.append(per_frame[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    for group in groups:
        items = group.get("PixelValueTransformationSequence")
        if items and "RescaleSlope" in items[0]:
            return float(items[0].RescaleSlope)
    return 1.0


def _darkest_palette_index(ds: Dataset) -> int:
    """The palette index whose RGB colour has the lowest luma."""
    try:
        first = int(ds.RedPaletteColorLookupTableDescriptor[1])
        count = int(ds.RedPaletteColorLookupTableDescriptor[0]) or 65536
        indices = np.arange(first, first + count, dtype=np.int64)
        indices = indices[indices < (1 << int(ds.BitsStored))]
        rgb = np.asarray(apply_color_lut(indices.astype(np.uint16), ds), dtype=np.float64)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise DeidError(f"palette cannot be applied: {type(exc).__name__}") from None
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    return int(indices[int(np.argmin(luma))])
