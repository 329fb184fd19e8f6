"""Faint text on flat panels: a stretched view for a second detection pass.

Overlay text is often drawn on a flat background: the air around a CT, the black band of
an ultrasound, a filled box behind a corner block. Drawn at a grey level close to that
background (a value near the top of a 12-bit range on a light panel, a dim label on
black), it spans a handful of grey levels of the full-range view the detector sees, and
the detector finds nothing there, though a window setting shows it plainly.

:func:`panel_view` finds the flat blocks of a view (``PANEL_BLOCK`` pixels square, at least
``PANEL_SHARE`` of them at the block's median), takes each pixel's difference from its
block's level (a block that is not flat borrows the level of a flat neighbour, so text
crossing a panel's edge stays whole) and draws it ``PANEL_GAIN`` times stronger, dark on
white: what PP-OCR was trained on. Everything else is white. It returns None when the
view holds no faint ink (differences of ``FAINT_MIN`` to ``FAINT_MAX`` levels, away from
strong ink, in at least ``PANEL_MIN_INK`` pixels): most images then cost one cheap scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.pixel.types import TextBox

#: Side of a flat block (view pixels), and the least share of its pixels at its median.
PANEL_BLOCK, PANEL_SHARE = 16, 0.5
#: A faint pixel differs from its panel's level by this many grey levels (inclusive); a
#: larger difference is strong ink, which the first pass already sees.
FAINT_MIN, FAINT_MAX = 3, 48
#: How much stronger differences are drawn in the panel view.
PANEL_GAIN = 10
#: Faint pixels this close (view pixels) to strong ink are its anti-aliased edge.
PANEL_NEAR = 4
#: Least number of faint pixels (away from strong ink, in flat blocks) for a second pass.
PANEL_MIN_INK = 100
#: Least share of a box's pixels in flat blocks of their own for it to count as text on a
#: panel (a box over the edge of an image beside a black band does not).
PANEL_OWN = 0.5


@dataclass(frozen=True)
class PanelView:
    """The stretched rendering of a view's panels (uint8, dark ink on white, the view's
    size) and the mask of its pixels in flat blocks of their own."""

    image: np.ndarray
    own: np.ndarray

    def holds(self, box: TextBox) -> bool:
        """Whether ``box`` (view pixels) lies mostly on flat blocks (``PANEL_OWN``),
        counting half a block above and below it: the blocks a line taller than a block
        covers are full of ink, not flat, while the rows above and below it are the
        panel."""
        reach = PANEL_BLOCK // 2
        part = self.own[max(box.y0 - reach, 0):box.y1 + reach, box.x0:box.x1]
        return part.size > 0 and float(part.mean()) >= PANEL_OWN


def panel_view(image: np.ndarray) -> PanelView | None:
    """The panel view of a uint8 view image (HxW, or HxWx3: its channel mean), or None
    when it holds no faint ink on a panel (see the module notes)."""
    grey = image if image.ndim == 2 else image.mean(axis=2).astype(np.uint8)
    rows, cols = grey.shape
    b = PANEL_BLOCK
    brows, bcols = rows // b, cols // b
    if brows == 0 or bcols == 0:
        return None
    blocks = grey[:brows * b, :bcols * b].reshape(brows, b, bcols, b).swapaxes(1, 2)
    blocks = blocks.reshape(brows, bcols, b * b)
    level = np.partition(blocks, b * b // 2, axis=2)[:, :, b * b // 2]
    flat = (blocks == level[:, :, None]).sum(axis=2) >= PANEL_SHARE * b * b
    if not flat.any():
        return None
    levels = np.where(flat, level.astype(np.int16), -1)
    source, known = levels.copy(), flat.copy()
    for dy in (-1, 0, 1):  # blocks at a panel's edge take a flat neighbour's level
        for dx in (-1, 0, 1):
            near = _shift(source, dy, dx)
            take = ~known & (near >= 0)
            levels[take] = near[take]
            known |= take
    diff = np.full((rows, cols), -1, np.int16)
    full = np.kron(levels, np.ones((b, b), np.int16))
    inside = full >= 0
    part = diff[:brows * b, :bcols * b]
    part[inside] = np.abs(grey[:brows * b, :bcols * b].astype(np.int16) - full)[inside]
    own = np.zeros((rows, cols), bool)
    own[:brows * b, :bcols * b] = np.kron(flat, np.ones((b, b), bool))
    strong = diff > FAINT_MAX
    faint = (diff >= FAINT_MIN) & ~strong & own & ~_dilate(strong, PANEL_NEAR)
    if int(faint.sum()) < PANEL_MIN_INK:
        return None
    # own flat blocks show every difference; borrowed ones only faint ink (their strong
    # differences are the image beside the panel, not text)
    shown = (diff >= FAINT_MIN) & (own | ~strong)
    out = np.full((rows, cols), 255, np.uint8)
    out[shown] = 255 - np.minimum(diff[shown].astype(np.int32) * PANEL_GAIN, 255)
    return PanelView(out, own)


def _shift(a: np.ndarray, dy: int, dx: int, fill: object = -1) -> np.ndarray:
    """``a`` moved by (dy, dx), ``fill`` where nothing moved in (no wrap-around)."""
    out = np.full_like(a, fill)
    rows, cols = a.shape
    out[max(dy, 0):rows + min(dy, 0), max(dx, 0):cols + min(dx, 0)] = \
        a[max(-dy, 0):rows + min(-dy, 0), max(-dx, 0):cols + min(-dx, 0)]
    return out


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by ``radius`` pixels (a square neighbourhood: rows, then columns)."""
    steps = range(-radius, radius + 1)
    down = np.logical_or.reduce([_shift(mask, step, 0, False) for step in steps])
    return np.logical_or.reduce([_shift(down, 0, step, False) for step in steps])
