"""Two text detectors as one: PP-OCRv4 with our own detector as a second opinion.

PP-OCRv4's detector is precise on real images but misses some small, faint lines (an
8 px name at contrast 0.45 over ultrasound speckle: a surname left readable). Our
detector (``models/text-detector``) finds those, but on real images it also fires on
speckle, image edges and traces (see ``benchmarks/RESULTS.md``, "what over-redacts").
:class:`UnionDetector` keeps every box of the primary detector and adds a box of the
secondary only where the primary found no line there and the secondary is sure of a
text line: a mean probability of at least ``min_score`` and at least ``min_aspect``
times as wide as tall, and it holds at least ``min_glyphs`` separate marks
(:func:`glyph_count`). The false boxes diagnosed on the real samples are weak (median
mean probability 0.85 against 0.98 for text) and square-ish; a line of text is neither.
The one confident line-shaped false box left on the real samples is a stretch of ECG
trace: one or two connected strokes, where a line of text is a row of glyphs.

"The primary found no line there" (:func:`claimed_share`): under ``max_claimed`` of the
secondary box lies inside primary boxes of its own line scale (at most ``LINE_SCALE``
times its height). Two things the primary does are not a line found: a box many lines
tall over ultrasound texture that swallows a line with the speckle around it (read as
one crop, the line is lost in it), and a neighbouring line's box that grazes the
secondary's padded edge.

Faint text on anatomy (a 7 px date at contrast 0.45 over CT noise) is where PP-OCRv4
finds nothing and our detector is less sure: its line comes out in fragments of mean
probability 0.85 to 0.95, each too short to pass the aspect rule. Those fragments are
chained into rows (:func:`join_rows`), and a row that passes the other rules joins as a
*tentative* box (``TextBox.tentative``): the stage reads it and keeps it only when the
text is PHI, so a weak box on speckle that reads as anything else changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from pipeline.pixel.types import TextBox, TextDetector, on_one_row, overlap

__all__ = ["LINE_SCALE", "MAX_CLAIMED", "MIN_ASPECT", "MIN_GLYPHS", "MIN_SCORE", "ROW_GAP",
           "TENTATIVE_SCORE", "UnionDetector", "claimed_share", "glyph_count", "join_rows"]

#: Least mean text probability of a secondary box that joins (see the module notes).
MIN_SCORE = 0.95
#: Least width / height of a secondary box that joins.
MIN_ASPECT = 2.5
#: Least number of separate marks in a secondary box that joins.
MIN_GLYPHS = 3
#: Most height of a primary box, in heights of a secondary box, that can claim it.
LINE_SCALE = 2.0
#: A secondary box joins only when less than this share of it is claimed.
MAX_CLAIMED = 0.25
#: Least mean text probability of the secondary's fragments chained into a tentative row.
TENTATIVE_SCORE = 0.85
#: Widest gap between two fragments of one row, in heights of the taller one.
ROW_GAP = 1.5


def claimed_share(box: TextBox, primary: list[TextBox], line_scale: float = LINE_SCALE
                  ) -> float:
    """Share of ``box``'s area inside the ``primary`` boxes at most ``line_scale`` times
    as tall as it (each pixel counted once)."""
    claimed = np.zeros((max(box.height, 0), max(box.width, 0)), dtype=bool)
    for other in primary:
        if other.height > line_scale * box.height or overlap(box, other) <= 0:
            continue
        claimed[max(other.y0 - box.y0, 0):max(other.y1 - box.y0, 0),
                max(other.x0 - box.x0, 0):max(other.x1 - box.x0, 0)] = True
    return float(claimed.mean()) if claimed.size else 1.0


def join_rows(boxes: list[TextBox], gap: float = ROW_GAP) -> list[TextBox]:
    """``boxes`` chained into text rows: two boxes of one frame are on one row when the
    taller is at most ``LINE_SCALE`` times the lower, they overlap vertically by half
    the lower, and the gap between them is at most ``gap`` heights of the taller. A row's
    box spans its members; its score is their area-weighted mean."""
    group = list(range(len(boxes)))

    def root(k: int) -> int:
        while group[k] != k:
            group[k] = group[group[k]]
            k = group[k]
        return k

    for i, a in enumerate(boxes):
        for j in range(i + 1, len(boxes)):
            b = boxes[j]
            if min(a.height, b.height) > 0 and on_one_row(a, b, LINE_SCALE, gap):
                group[root(i)] = root(j)
    rows: dict[int, list[TextBox]] = {}
    for k, box in enumerate(boxes):
        rows.setdefault(root(k), []).append(box)
    out = []
    for members in rows.values():
        area = sum(max(m.area, 1) for m in members)
        out.append(TextBox(min(m.x0 for m in members), min(m.y0 for m in members),
                           max(m.x1 for m in members), max(m.y1 for m in members),
                           sum(m.score * max(m.area, 1) for m in members) / area,
                           members[0].frame))
    return out


def glyph_count(image: np.ndarray, box: TextBox) -> int:
    """Separate marks in ``box``: 8-connected components of at least 2 pixels of the
    minority class once the box is split in two by Otsu's threshold (ink is the
    minority in a text box, whatever its polarity)."""
    import cv2

    crop = image[box.y0:box.y1, box.x0:box.x1]
    if crop.size == 0:
        return 0
    grey = crop if crop.ndim == 2 else crop.mean(axis=2).astype(np.uint8)
    _, split = cv2.threshold(np.ascontiguousarray(grey), 0, 255,
                             cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    ink = split if (split > 0).mean() < 0.5 else 255 - split
    _, _, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    return int((stats[1:, cv2.CC_STAT_AREA] >= 2).sum())


@dataclass
class UnionDetector:
    """A :class:`~pipeline.pixel.types.TextDetector`: ``primary``'s boxes, then the
    confident line-shaped boxes of ``secondary`` that they do not claim, then the
    tentative rows of its weaker fragments (see the module notes).

    ``members`` names both for provenance (:func:`pipeline.registry.engine_refs`).
    """

    primary: TextDetector
    secondary: TextDetector
    min_score: float = MIN_SCORE
    min_aspect: float = MIN_ASPECT
    min_glyphs: int = MIN_GLYPHS
    max_claimed: float = MAX_CLAIMED
    tentative_score: float = TENTATIVE_SCORE

    @property
    def members(self) -> tuple[TextDetector, TextDetector]:
        """The two detectors, primary first."""
        return (self.primary, self.secondary)

    def detect(self, image: np.ndarray) -> list[TextBox]:
        """Boxes of ``image`` (see the class notes), the primary's first."""
        return self.combine(self.primary.detect(image), self.secondary.detect(image), image)

    def combine(self, primary: list[TextBox], secondary: list[TextBox],
                image: np.ndarray) -> list[TextBox]:
        """The union rule on two detectors' boxes of one image."""
        extra = [box for box in secondary
                 if box.score >= self.min_score and self._joins(box, primary, image)]
        weak = [box for box in secondary if self.tentative_score <= box.score < self.min_score]
        found = [*primary, *extra]
        tentative = [replace(row, tentative=True) for row in join_rows(weak)
                     if self._joins(row, found, image)]
        return [*found, *tentative]

    def _joins(self, box: TextBox, taken: list[TextBox], image: np.ndarray) -> bool:
        """Line-shaped, not claimed by ``taken``, a row of marks."""
        return (box.width >= self.min_aspect * box.height
                and claimed_share(box, taken) < self.max_claimed
                and glyph_count(image, box) >= self.min_glyphs)
