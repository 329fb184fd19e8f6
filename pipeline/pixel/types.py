"""Typed interfaces of the pixel-PHI engines (injected, Presidio-style)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class TextBox:
    """An axis-aligned text region.

    Coordinates are integer pixels, inclusive-exclusive (``x0 <= x < x1``), in the image
    that was given to the detector (use :meth:`pipeline.pixel.frames.View.to_stored` to map
    them back to the stored frame).

    Attributes
    ----------
    x0, y0, x1, y1 : int
        Left, top (inclusive) and right, bottom (exclusive) edges.
    score : float
        Detector confidence in [0, 1].
    frame : int
        Zero-based frame index in the dataset.
    tentative : bool
        The detector is not sure the box holds text: the stage keeps it only when its
        text is read as PHI (a read that is not PHI, or no read, leaves no finding).
    """

    x0: int
    y0: int
    x1: int
    y1: int
    score: float
    frame: int = 0
    tentative: bool = False

    def __post_init__(self) -> None:
        if self.x1 < self.x0 or self.y1 < self.y0:
            raise ValueError("TextBox edges are inverted")

    @property
    def width(self) -> int:
        """Width in pixels."""
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        """Height in pixels."""
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        """Area in pixels."""
        return self.width * self.height


@dataclass(frozen=True)
class Recognition:
    """Text read from one box. ``text`` is PHI: never log it.

    Attributes
    ----------
    text : str
        The recognised string (may be empty).
    score : float
        Mean per-character confidence in [0, 1] (0 for an empty string).
    chars : tuple of (float, float), optional
        Where each character of ``text`` lies across the box: its left and right edges
        as fractions of the box width (None when the recogniser does not say).
    """

    text: str
    score: float
    chars: tuple[tuple[float, float], ...] | None = None

    def __repr__(self) -> str:
        return f"Recognition(text=<{len(self.text)} chars>, score={self.score:.3f})"


def intersection(a: TextBox, b: TextBox) -> int:
    """Area the two boxes share (0 when they do not meet)."""
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width * height if width > 0 and height > 0 else 0


def overlap(a: TextBox, b: TextBox) -> float:
    """Intersection area over the smaller box's area (0 when they do not meet)."""
    return intersection(a, b) / max(min(a.area, b.area), 1)


def on_one_row(a: TextBox, b: TextBox, max_ratio: float, gap: float) -> bool:
    """Whether two boxes of one frame are neighbours on one text row: the taller at most
    ``max_ratio`` times the lower, overlapping vertically by half the lower, and at most
    ``gap`` heights of the taller apart."""
    if a.frame != b.frame:
        return False
    low, high = min(a.height, b.height), max(a.height, b.height)
    if high > max_ratio * low:
        return False
    vertical = min(a.y1, b.y1) - max(a.y0, b.y0)
    return vertical >= 0.5 * low and max(a.x0, b.x0) - min(a.x1, b.x1) <= gap * high


def same_region(a: TextBox, b: TextBox) -> bool:
    """Boxes of one frame that mostly overlap: one text region seen twice (e.g. two views)."""
    return a.frame == b.frame and overlap(a, b) > 0.5


def group_regions(items: Sequence[T], box: Callable[[T], TextBox]) -> list[list[T]]:
    """Group items whose boxes are the same region as the first box of a group."""
    groups: list[list[T]] = []
    for item in items:
        for group in groups:
            if same_region(box(group[0]), box(item)):
                group.append(item)
                break
        else:
            groups.append([item])
    return groups


@dataclass(frozen=True)
class PixelFinding:
    """One text region found in the pixels, as reported (never its text: it may be PHI).

    ``status`` is ``cleared`` (redacted), ``pending-review`` (redacted, confidence under
    the review threshold) or ``rejected`` (judged not PHI, left in place).
    """

    frame: int
    box: tuple[int, int, int, int]
    entity: str
    confidence: float
    status: str
    source: str


@runtime_checkable
class TextDetector(Protocol):
    """Finds text regions in one image."""

    def detect(self, image: np.ndarray) -> list[TextBox]:
        """Return text boxes in ``image`` (uint8, HxW or HxWx3 RGB)."""
        ...


@runtime_checkable
class TextRecognizer(Protocol):
    """Reads the text inside given boxes of one image."""

    def recognize(self, image: np.ndarray, boxes: list[TextBox]) -> list[Recognition]:
        """Return one :class:`Recognition` per box, in the same order."""
        ...
