"""Detector-ready uint8 views of every frame of a DICOM dataset.

Burned-in text can be invisible in one rendering and obvious in another (a narrow CT
window clips it to the background, MONOCHROME1 flips its polarity), so each frame is
rendered several ways. Each :class:`View` carries the scale used to enlarge small
images, so a box found in the view maps back to stored pixel coordinates with
:meth:`View.to_stored`.

Pure functions on numpy arrays; pydicom does the decoding and the LUT arithmetic.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi_lut,
    convert_color_space,
)
from pydicom.pixels.decoders.base import get_decoder

from pipeline.errors import DeidError
from pipeline.pixel.codecs import decoding_plugin
from pipeline.pixel.types import TextBox

logger = logging.getLogger(__name__)

MIN_SIDE = 640
"""Images whose smaller side is below this are upscaled to it (bilinear)."""

MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
YBR = ("YBR_FULL", "YBR_FULL_422")


@dataclass(frozen=True)
class View:
    """One uint8 rendering of one frame.

    Attributes
    ----------
    frame : int
        Zero-based frame index.
    name : str
        ``"window"``, ``"full"`` or ``"inverted"`` (monochrome); ``"color"`` or
        ``"inverted"`` (RGB, YBR, PALETTE COLOR).
    image : np.ndarray
        uint8, HxW (monochrome) or HxWx3 (RGB).
    scale : float
        View pixels per stored pixel (1.0 when not upscaled).
    """

    frame: int
    name: str
    image: np.ndarray
    scale: float

    def to_stored(self, box: TextBox) -> TextBox:
        """Map a box in view coordinates to stored coordinates of this frame.

        Rounds outwards (a box never shrinks) and clips to the stored frame.
        """
        rows = round(self.image.shape[0] / self.scale)
        cols = round(self.image.shape[1] / self.scale)
        return TextBox(
            x0=min(max(math.floor(box.x0 / self.scale), 0), cols),
            y0=min(max(math.floor(box.y0 / self.scale), 0), rows),
            x1=min(max(math.ceil(box.x1 / self.scale), 0), cols),
            y1=min(max(math.ceil(box.y1 / self.scale), 0), rows),
            score=box.score,
            frame=self.frame,
        )


def views(
    ds: Dataset, *, min_side: int = MIN_SIDE, names: Collection[str] | None = None
) -> Iterator[View]:
    """Yield the views of every frame of ``ds``.

    Parameters
    ----------
    ds : Dataset
        A dataset with Pixel Data; a dataset without it yields nothing.
    min_side : int
        Frames whose smaller side is under this are upscaled so that it equals it.
    names : collection of str, optional
        Yield only the views with these names (all when None); a frame with none of
        them yields its first view, so no frame is ever skipped.

    Raises
    ------
    DeidError
        When the pixel data cannot be decoded (unsupported transfer syntax, missing codec,
        corrupt data) or rendered (unsupported photometric interpretation, missing or
        malformed LUT). The message names the cause, never a value.
    """
    if "PixelData" not in ds:
        return
    for index, (frame, photometric) in enumerate(_decoded_frames(ds)):
        try:
            rendered = _render(frame, photometric, ds)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
            # e.g. a missing or malformed LUT; report the type only, never values
            raise DeidError(
                f"pixel data cannot be rendered ({photometric}): {type(exc).__name__}"
            ) from None
        if names is not None:
            rendered = [r for r in rendered if r[0] in names] or rendered[:1]
        for name, image in rendered:
            scale = _upscale_factor(image.shape[0], image.shape[1], min_side)
            if scale != 1.0:
                image = resize_bilinear(image, scale)
            yield View(frame=index, name=name, image=image, scale=scale)


def _decoded_frames(ds: Dataset) -> Iterator[tuple[np.ndarray, str]]:
    """Decode frame by frame, without colour conversion; yield (array, photometric)."""
    meta = getattr(ds, "file_meta", None)
    tsyntax = getattr(meta, "TransferSyntaxUID", None)
    if tsyntax is None:
        raise DeidError("pixel data cannot be decoded: no Transfer Syntax UID in file meta")
    try:
        decoder = get_decoder(tsyntax)
        frames = decoder.iter_array(ds, as_rgb=False, decoding_plugin=decoding_plugin(tsyntax))
        for arr, info in frames:
            yield arr, str(info.get("photometric_interpretation", ds.PhotometricInterpretation))
    except DeidError:
        raise
    except Exception as exc:  # pydicom raises several types; report only the type
        logger.warning("pixel decode failed: transfer syntax %s, %s", tsyntax,
                       type(exc).__name__)
        raise DeidError(
            f"pixel data cannot be decoded (transfer syntax {tsyntax}): {type(exc).__name__}"
        ) from None


def _render(frame: np.ndarray, photometric: str, ds: Dataset) -> list[tuple[str, np.ndarray]]:
    """Return the named uint8 renderings of one decoded frame."""
    if photometric in MONOCHROME:
        return _monochrome(frame, photometric, ds)
    if photometric == "RGB":
        rgb = _to_uint8_color(frame, int(ds.BitsStored))
    elif photometric in YBR:
        converted = convert_color_space(frame, photometric, "RGB")
        rgb = _to_uint8_color(converted, int(ds.BitsStored))
    elif photometric == "PALETTE COLOR":
        rgb = _palette(frame, ds)
    else:
        raise DeidError(f"unsupported Photometric Interpretation {photometric!r}")
    return [("color", rgb), ("inverted", 255 - rgb)]


def _monochrome(frame: np.ndarray, photometric: str, ds: Dataset) -> list[tuple[str, np.ndarray]]:
    """Window (if the dataset has one), full range and inverted views."""
    modality = np.asarray(apply_modality_lut(frame, ds))
    values = modality.astype(np.float64)
    out: list[tuple[str, np.ndarray]] = []
    windowed = _stored_window(modality, ds)
    full = _stretch(values, float(values.min()), float(values.max()))
    if photometric == "MONOCHROME1":
        full = 255 - full
        windowed = None if windowed is None else 255 - windowed
    if windowed is not None:
        out.append(("window", windowed))
    out.append(("full", full))
    out.append(("inverted", 255 - full))
    return out


def _stored_window(modality: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """Apply the first VOI LUT, else the first Window Center/Width; None if neither."""
    lut_items = ds.get("VOILUTSequence")
    if lut_items:
        bits = int(lut_items[0].LUTDescriptor[2])
        if modality.dtype.kind == "f" and np.array_equal(modality, np.rint(modality)):
            modality = modality.astype(np.int64)  # a LUT is indexed by integers
        out = apply_voi_lut(modality, ds, index=0, prefer_lut=True)
        return _stretch(np.asarray(out, dtype=np.float64), 0.0, float(2**bits - 1))
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    center = _first(ds.WindowCenter)
    width = _first(ds.WindowWidth)
    if center is None or width is None:
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    return window(modality.astype(np.float64), center, width, function)


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM VOI windowing (PS3.3 C.11.2.1.2) of modality values to uint8.

    ``function`` is ``LINEAR``, ``LINEAR_EXACT`` or ``SIGMOID``; an unknown function or a
    width too small falls back to LINEAR_EXACT with width 1.
    """
    if function == "SIGMOID" and width > 0:
        scaled = 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    else:
        if function == "LINEAR" and width >= 1:
            center, width = center - 0.5, width - 1
        width = max(width, 1e-6)
        scaled = np.clip((values - center) / width + 0.5, 0.0, 1.0)
    return np.asarray(np.rint(scaled * 255.0), dtype=np.uint8)


def _first(value: Any) -> float | None:
    """First value of a possibly multi-valued numeric element."""
    if isinstance(value, MultiValue | list | tuple):
        if len(value) == 0:
            return None
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linearly map [low, high] to [0, 255] uint8 (all zeros when flat)."""
    if not high > low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0)
    return np.asarray(np.rint(scaled * 255.0), dtype=np.uint8)


def _to_uint8_color(frame: np.ndarray, bits_stored: int) -> np.ndarray:
    """RGB of any bit depth to uint8 RGB."""
    if frame.dtype == np.uint8:
        return frame
    return _stretch(frame.astype(np.float64), 0.0, float(2**bits_stored - 1))


def _palette(frame: np.ndarray, ds: Dataset) -> np.ndarray:
    """Apply the palette colour LUT; 16-bit entries are reduced to 8 bits."""
    rgb = np.asarray(apply_color_lut(frame, ds))
    if rgb.dtype == np.uint8:
        return rgb
    high = 255.0 if int(rgb.max(initial=0)) <= 255 else 65535.0
    return _stretch(rgb.astype(np.float64), 0.0, high)


def _upscale_factor(rows: int, cols: int, min_side: int) -> float:
    """Factor that brings the smaller side up to ``min_side`` (1.0 if already there)."""
    smaller = min(rows, cols)
    if smaller <= 0 or smaller >= min_side:
        return 1.0
    return min_side / smaller


def resize_bilinear(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize a uint8 HxW or HxWx3 image by ``scale`` with bilinear interpolation.

    Output size is ``round(rows * scale) x round(cols * scale)``; pixel centres are aligned
    (half-pixel convention), as in OpenCV's ``INTER_LINEAR``.
    """
    rows, cols = image.shape[:2]
    out_rows, out_cols = max(round(rows * scale), 1), max(round(cols * scale), 1)
    y0, y1, wy = _axis_weights(rows, out_rows)
    x0, x1, wx = _axis_weights(cols, out_cols)
    src = image.astype(np.float32)
    extra = (1,) * (image.ndim - 2)  # broadcast over the colour axis
    wy = wy.reshape((-1, 1, *extra))
    wx = wx.reshape((1, -1, *extra))
    top = src[y0][:, x0] * (1 - wx) + src[y0][:, x1] * wx
    bottom = src[y1][:, x0] * (1 - wx) + src[y1][:, x1] * wx
    out = top * (1 - wy) + bottom * wy
    return np.asarray(np.clip(np.rint(out), 0, 255), dtype=np.uint8)


def _axis_weights(size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (lower, upper) and upper weights for one axis."""
    pos = (np.arange(out_size, dtype=np.float64) + 0.5) * (size / out_size) - 0.5
    pos = np.clip(pos, 0, size - 1)
    lower = np.floor(pos).astype(np.intp)
    upper = np.minimum(lower + 1, size - 1)
    return lower, upper, (pos - lower).astype(np.float32)


#: Smallest grey-level difference from a box's background that counts as ink when a
#: detector box is tightened (``tighten``), and the pad kept around the ink (0: the
#: profile's redaction margin is the safety band around the glyphs).
INK_CONTRAST = 12
INK_PAD = 0


def tighten(image: np.ndarray, box: TextBox) -> TextBox:
    """Shrink a detector box to the ink it holds, plus ``INK_PAD`` pixels.

    The detector's boxes are grown ("unclip") well beyond the glyphs. The background of
    each column runs linearly from its two top to its two bottom pixels (so a gradient
    along or across the line is not ink); ink is any pixel that differs from its
    background by ``INK_CONTRAST`` or three times the border's noise (median step between
    neighbouring border pixels), whichever is larger, in either direction (so text that
    changes polarity along the line keeps its extent). Rows and
    columns without ink are trimmed from the edges only, never from inside. The box only
    ever shrinks; when no ink stands out (noisy background) it is returned unchanged.
    """
    if box.width < 3 or box.height < 5:
        return box
    crop = image[box.y0:box.y1, box.x0:box.x1]
    grey = crop.astype(np.float32) if crop.ndim == 2 else crop.astype(np.float32).mean(axis=2)
    top, bottom = grey[:2].mean(axis=0), grey[-2:].mean(axis=0)
    along = np.linspace(0.0, 1.0, grey.shape[0], dtype=np.float32)[:, None]
    background = top + (bottom - top) * along
    noise = float(np.median(np.abs(np.diff(np.concatenate([grey[:2], grey[-2:]]), axis=1))))
    ink = np.abs(grey - background) >= max(INK_CONTRAST, 3.0 * noise)
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return box
    return TextBox(
        x0=box.x0 + max(int(cols[0]) - INK_PAD, 0),
        y0=box.y0 + max(int(rows[0]) - INK_PAD, 0),
        x1=box.x0 + min(int(cols[-1]) + 1 + INK_PAD, box.width),
        y1=box.y0 + min(int(rows[-1]) + 1 + INK_PAD, box.height),
        score=box.score,
        frame=box.frame,
    )


