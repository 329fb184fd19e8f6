"""Two text detectors as one: PP-OCRv4 with our own detector as a second opinion.

PP-OCRv4's detector is precise on real images but misses some small, faint lines (an
8 px name at contrast 0.45 over ultrasound speckle: a surname left readable). Our
detector (``models/text-detector``) finds those, but on real images it also fires on
speckle, image edges and traces (see ``benchmarks/RESULTS.md``, "what over-redacts").
:class:`UnionDetector` keeps every box of the primary detector and adds a box of the
secondary only where the primary found nothing (no overlap at all) and the secondary is
sure of a text line: a mean probability of at least ``min_score`` and at least
``min_aspect`` times as wide as tall. The false boxes diagnosed on the real samples are
weak (median mean probability 0.85 against 0.98 for text) and square-ish; a line of
text is neither.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.pixel.types import TextBox, TextDetector

__all__ = ["MIN_ASPECT", "MIN_SCORE", "UnionDetector"]

#: Least mean text probability of a secondary box that joins (see the module notes).
MIN_SCORE = 0.95
#: Least width / height of a secondary box that joins.
MIN_ASPECT = 3.0


def _touch(a: TextBox, b: TextBox) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@dataclass
class UnionDetector:
    """A :class:`~pipeline.pixel.types.TextDetector`: ``primary``'s boxes, then the
    confident line-shaped boxes of ``secondary`` that overlap none of them.

    ``members`` names both for provenance (:func:`pipeline.registry.engine_refs`).
    """

    primary: TextDetector
    secondary: TextDetector
    min_score: float = MIN_SCORE
    min_aspect: float = MIN_ASPECT

    @property
    def members(self) -> tuple[TextDetector, TextDetector]:
        """The two detectors, primary first."""
        return (self.primary, self.secondary)

    def detect(self, image: np.ndarray) -> list[TextBox]:
        """Boxes of ``image`` (see the class notes), the primary's first."""
        return self.combine(self.primary.detect(image), self.secondary.detect(image))

    def combine(self, primary: list[TextBox], secondary: list[TextBox]) -> list[TextBox]:
        """The union rule on two detectors' boxes of one image."""
        extra = [box for box in secondary
                 if box.score >= self.min_score and box.width >= self.min_aspect * box.height
                 and not any(_touch(box, other) for other in primary)]
        return [*primary, *extra]
