"""Typed interfaces of the pixel-PHI engines (injected, Presidio-style)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


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
    """

    x0: int
    y0: int
    x1: int
    y1: int
    score: float
    frame: int = 0

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
    """

    text: str
    score: float

    def __repr__(self) -> str:
        return f"Recognition(text=<{len(self.text)} chars>, score={self.score:.3f})"


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
