"""Pixel-PHI metrics: ground truth of :mod:`training.pixel_corpus` against Veil's findings.

* **PHI box recall**: a ground-truth PHI line counts as covered when at least 95% of its
  box's pixels lie inside the redacted area: the union of Veil's finding boxes with
  status ``cleared`` or ``pending-review``, each grown by the profile's margin and
  clipped to the image (what :func:`pipeline.pixel.redact.redact` fills).
* **PHI value recall**: the same on the box of the PHI value's own ink (a label such as
  ``DOB:`` before it left out; synthetic corpus only). A line whose label alone was
  missed counts here and not above; the line figure stays the stricter one.
* **Over-redaction**: redacted pixels outside every ground-truth text box (PHI and
  overlays alike), as a share of the image area.
* **Overlay false redaction**: share of non-PHI overlay lines (``W 400 L 40``, ``R``...)
  of which at least half the pixels were redacted.
* **Header leaks**: the header bytes (everything before Pixel Data) of an output file
  scanned case-insensitively for the PHI strings the generator wrote.
* **Re-OCR leaks**: Tesseract (``--psm 11``, one thread) reads the redacted frame; a PHI
  value counts as still readable when its letters and digits (case-insensitive,
  separators ignored) appear in what Tesseract read. Run on the original frame too, as
  the positive control: Tesseract cannot read every rendered line to begin with.

:class:`LineScore` accumulates the line figures of one contender over many images, the
same way in every pixel benchmark.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "COVER_THRESHOLD",
    "LENIENT_THRESHOLD",
    "OVERLAY_THRESHOLD",
    "Box",
    "FindingBox",
    "LineScore",
    "coverage",
    "covered",
    "finding_boxes",
    "fmt",
    "header_bytes",
    "header_leaks",
    "ocr_image",
    "over_redaction",
    "readable",
    "readable_count",
    "redaction_mask",
    "squash",
    "tesseract_available",
    "tesseract_text",
    "text_mask",
]

Box = tuple[int, int, int, int]
#: Share of a truth box's pixels that must be redacted for it to count as covered.
COVER_THRESHOLD = 0.95
#: Share of an overlay's pixels that, once redacted, make it a false redaction.
OVERLAY_THRESHOLD = 0.5
#: Secondary, lenient reading: a PHI line with at least half its pixels redacted. The
#: truth box is the whole rendered line, label included ("MRN: S8070937"); a redactor
#: that fills only the PHI words (Presidio) cannot reach the 95% rule on labelled lines.
LENIENT_THRESHOLD = 0.5
REDACTED_STATUSES = frozenset({"cleared", "pending-review"})
_PIXEL_TAGS = (b"\xe0\x7f\x10\x00OW", b"\xe0\x7f\x10\x00OB")
_NON_ALNUM = re.compile(r"[^0-9A-Z]")


@dataclass(frozen=True)
class FindingBox:
    """The part of a Veil pixel finding the metrics need."""

    box: Box
    status: str
    frame: int = 0


def finding_boxes(findings: Iterable[Any]) -> list[FindingBox]:
    """The part the metrics need of Veil's pixel findings (``PixelFinding``)."""
    return [FindingBox(tuple(f.box), f.status, f.frame) for f in findings]


def redaction_mask(shape: tuple[int, int], findings: Iterable[FindingBox],
                   margin: int, frame: int = 0) -> np.ndarray:
    """Boolean mask of the pixels Veil redacted in one frame.

    Parameters
    ----------
    shape : (rows, columns)
        Frame size in stored pixels.
    findings : iterable of FindingBox
        Findings; only ``cleared`` and ``pending-review`` ones of ``frame`` count.
    margin : int
        Pixels added on every side of each box (the profile's ``pixel.margin``).
    """
    rows, cols = shape
    mask = np.zeros((rows, cols), dtype=bool)
    for finding in findings:
        if finding.status not in REDACTED_STATUSES or finding.frame != frame:
            continue
        x0, y0, x1, y1 = finding.box
        mask[max(y0 - margin, 0):max(min(y1 + margin, rows), 0),
             max(x0 - margin, 0):max(min(x1 + margin, cols), 0)] = True
    return mask


def coverage(box: Box, mask: np.ndarray) -> float:
    """Share of the pixels of ``box`` that are set in ``mask`` (1.0 for an empty box)."""
    x0, y0, x1, y1 = box
    area = max(x1 - x0, 0) * max(y1 - y0, 0)
    if area == 0:
        return 1.0
    return float(mask[y0:y1, x0:x1].sum()) / area


def covered(box: Box, mask: np.ndarray, threshold: float = COVER_THRESHOLD) -> bool:
    """Whether at least ``threshold`` of ``box`` is redacted."""
    return coverage(box, mask) >= threshold


def text_mask(shape: tuple[int, int], boxes: Iterable[Box]) -> np.ndarray:
    """Boolean mask of the union of ground-truth text boxes."""
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


def over_redaction(redacted: np.ndarray, truth_boxes: Iterable[Box]) -> tuple[int, int]:
    """Redacted pixels outside every truth box, and the image area, in pixels."""
    outside = redacted & ~text_mask(redacted.shape, truth_boxes)
    return int(outside.sum()), int(redacted.size)


def header_bytes(data: bytes) -> bytes:
    """The bytes before the top-level Pixel Data element (all of them if absent)."""
    cut = max(data.rfind(tag) for tag in _PIXEL_TAGS)
    return data if cut < 0 else data[:cut]


def header_leaks(path: Path, phi: Sequence[str]) -> list[str]:
    """PHI strings found, case-insensitively, in the header bytes of ``path``."""
    head = header_bytes(path.read_bytes()).upper()
    return [s for s in phi if s and s.upper().encode("latin-1", "replace") in head]


def squash(text: str) -> str:
    """Upper-case letters and digits only (separators and case ignored)."""
    return _NON_ALNUM.sub("", text.upper())


def readable(value: str, ocr_text: str, *, any_word: bool = False) -> bool:
    """Whether the PHI ``value`` can be read in ``ocr_text`` (case and separators ignored).

    With ``any_word`` (names), one word of 3 or more characters suffices (a family name
    alone identifies); otherwise the whole squashed value must appear.
    """
    seen = squash(ocr_text)
    if any_word:
        words = [squash(w) for w in re.split(r"[\s^,]+", value)]
        return any(w in seen for w in words if len(w) >= 3)
    key = squash(value)
    return bool(key) and key in seen


def tesseract_available() -> bool:
    """Whether the ``tesseract`` command is installed."""
    return shutil.which("tesseract") is not None


def tesseract_text(image: np.ndarray, timeout: float = 60.0) -> str:
    """Text Tesseract reads in a uint8 image (sparse text, ``--psm 11``, one thread)."""
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frame.png"
        Image.fromarray(image).save(path)
        done = subprocess.run(["tesseract", str(path), "stdout", "--psm", "11"],
                              capture_output=True, env=env, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"tesseract failed with exit status {done.returncode}")
    return done.stdout.decode("utf-8", "replace")


def readable_count(lines: Iterable[Mapping[str, Any]], ocr_text: str) -> int:
    """How many PHI ``lines`` can be read in ``ocr_text`` (names: any word, see readable).

    A line's value is its ``value`` (the rendered PHI), else its ``text``.
    """
    return sum(readable(str(line["value"] if "value" in line else line["text"]), ocr_text,
                        any_word=line["entity"] == "NAME")
               for line in lines if line["phi"])


def ocr_image(image: np.ndarray) -> np.ndarray:
    """uint8 rendering for Tesseract: greyscale to full range, enlarged x2 when small."""
    if image.ndim == 2:
        values = image.astype(np.float64)
        low, high = float(values.min()), float(values.max())
        image = np.rint((values - low) / max(high - low, 1.0) * 255.0).astype(np.uint8)
    pil = Image.fromarray(image.astype(np.uint8))
    if min(pil.size) < 600:
        pil = pil.resize((pil.width * 2, pil.height * 2), Image.Resampling.LANCZOS)
    return np.asarray(pil)


def fmt(num: int, den: int) -> str:
    """A share as a table cell: ``0.940 (47/50)``, or ``n/a (0)`` with nothing to count."""
    return f"{num / den:.3f} ({num}/{den})" if den else "n/a (0)"


@dataclass
class LineScore:
    """Line figures of one contender, accumulated over images (see the module notes)."""

    hits: dict[str, list[int]] = field(default_factory=dict)
    #: Per entity, [covered, total] PHI values (the value's own box, labels left out).
    values: dict[str, list[int]] = field(default_factory=dict)
    lenient: int = 0
    coverage_sum: float = 0.0
    nonphi_hit: int = 0
    nonphi_n: int = 0
    outside: int = 0
    area: int = 0

    def add(self, lines: Sequence[Mapping[str, Any]], mask: np.ndarray) -> list[float]:
        """Score one image's redacted ``mask`` against its truth lines; return each share."""
        shares = []
        for line in lines:
            share = coverage(tuple(line["box"]), mask)
            shares.append(share)
            if line["phi"]:
                self.coverage_sum += share
                self.lenient += share >= LENIENT_THRESHOLD
                cell = self.hits.setdefault(line["entity"], [0, 0])
                cell[0] += share >= COVER_THRESHOLD
                cell[1] += 1
                if line.get("value_box"):
                    cell = self.values.setdefault(line["entity"], [0, 0])
                    cell[0] += coverage(tuple(line["value_box"]), mask) >= COVER_THRESHOLD
                    cell[1] += 1
            else:
                self.nonphi_n += 1
                self.nonphi_hit += share >= OVERLAY_THRESHOLD
        out, size = over_redaction(mask, [tuple(line["box"]) for line in lines])
        self.outside += out
        self.area += size
        return shares

    def recall(self) -> tuple[int, int]:
        """(covered, total) PHI lines."""
        return sum(h for h, _ in self.hits.values()), sum(n for _, n in self.hits.values())

    def entity_cell(self, entity: str) -> str:
        """Recall of one entity as a table cell."""
        return fmt(*self.hits.get(entity, [0, 0]))

    def value_recall(self) -> tuple[int, int]:
        """(covered, total) PHI values of lines whose truth has a value box."""
        return sum(h for h, _ in self.values.values()), sum(n for _, n in self.values.values())

    def value_cell(self, entity: str) -> str:
        """Value recall of one entity as a table cell."""
        return fmt(*self.values.get(entity, [0, 0]))

    def mean_coverage(self) -> str:
        """Mean redacted share of a PHI line, as a table cell."""
        return f"{self.coverage_sum / max(self.recall()[1], 1):.3f}"

    def over_redaction_cell(self) -> str:
        """Redacted area outside every truth box, as a table cell."""
        return f"{100 * self.outside / max(self.area, 1):.3f}% ({self.outside}/{self.area} px)"
