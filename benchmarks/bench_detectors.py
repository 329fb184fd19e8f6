"""Text detectors side by side: PP-OCRv4 and Veil's own, in the full pixel chain.

Method: the held-out synthetic corpus of :mod:`benchmarks.bench_pixel` (``--count 60
--seed 7 --split test`` by default; the Veil detector is trained on another seed's train
split) and, unless ``--no-real``, the hand-transcribed real samples of
:mod:`benchmarks.bench_real` are de-identified in memory by Veil with ``dicom-basic`` +
``clean-pixel-data`` twice: once with the PP-OCRv4 detector, once with the Veil text
detector (``pipeline.pixel.dbnet``). Everything else is shared: the PP-OCRv4 recogniser,
the PHI decision, the views, the redaction; every engine on ONNX Runtime with one
intra-op thread, the process pinned to one CPU. One untimed warm-up file per detector.
Scoring is :mod:`benchmarks.pixel_metrics`: PHI box recall (>= 95% of a line's pixels
inside the redacted boxes grown by the profile margin) overall and by entity,
over-redaction (redacted pixels outside every ground-truth text box / image area) and
non-PHI lines falsely redacted (>= 50%). Detection time is ``time.perf_counter`` around
each ``detect`` call, reported per view, and the ratio to PP-OCRv4 in the same run.

Run ``python -m benchmarks.bench_detectors [--count 60] [--seed 7] [--split test]
[--no-real]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from benchmarks import pixel_metrics as pm
from benchmarks.bench_metadata import start_pixel_run
from benchmarks.bench_pixel import _fmt, veil_pixel_profile
from training.pixel_corpus import PHI_ENTITIES, load_or_generate

__all__ = ["DETECTORS", "main"]

DETECTORS = ("ppocr-v4", "veil-text-detector")


@dataclass
class Score:
    """Accumulated figures of one detector on one corpus."""

    hits: dict[str, list[int]] = field(default_factory=dict)
    outside: int = 0
    area: int = 0
    nonphi_hit: int = 0
    nonphi_n: int = 0
    detect_s: float = 0.0
    views: int = 0
    boxes: int = 0

    def add(self, lines: list[dict[str, Any]], mask: np.ndarray) -> None:
        """Score one image's redaction mask against its ground-truth lines."""
        for line in lines:
            box = tuple(line["box"])
            if line["phi"]:
                cell = self.hits.setdefault(line["entity"], [0, 0])
                cell[0] += pm.covered(box, mask)
                cell[1] += 1
            else:
                self.nonphi_n += 1
                self.nonphi_hit += pm.coverage(box, mask) >= pm.OVERLAY_THRESHOLD
        out, size = pm.over_redaction(mask, [tuple(line["box"]) for line in lines])
        self.outside += out
        self.area += size

    def recall(self) -> tuple[int, int]:
        """(covered, total) PHI lines."""
        return sum(h for h, _ in self.hits.values()), sum(n for _, n in self.hits.values())


class TimedDetector:
    """A detector whose ``detect`` calls are timed into a :class:`Score`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.score = Score()

    def detect(self, image: np.ndarray) -> list[Any]:
        """Delegate, timing the call and counting views and boxes."""
        start = time.perf_counter()
        boxes: list[Any] = self.inner.detect(image)
        self.score.detect_s += time.perf_counter() - start
        self.score.views += 1
        self.score.boxes += len(boxes)
        return boxes


def _detector(name: str) -> Any:
    from pipeline.pixel.dbnet import VeilTextDetector
    from pipeline.pixel.ppocr import PPOCRDetector

    if name == "ppocr-v4":
        return PPOCRDetector(intra_op_num_threads=1)
    return VeilTextDetector(intra_op_num_threads=1)


def _run(files: list[tuple[Path, list[dict[str, Any]], tuple[int, int]]],
         deid: Callable[[pydicom.Dataset], Any], timed: TimedDetector, margin: int) -> Score:
    """De-identify every file (in memory) and score frame 0 of each."""
    deid(pydicom.dcmread(files[0][0]))  # warm-up, not counted
    timed.score = Score()
    for path, lines, shape in files:
        result = deid(pydicom.dcmread(path))
        boxes = [pm.FindingBox(tuple(f.box), f.status, f.frame)
                 for f in result.pixel_findings]
        timed.score.add(lines, pm.redaction_mask(shape, boxes, margin, frame=0))
    return timed.score


def _table(title: str, scores: dict[str, Score]) -> None:
    names = list(scores)
    print(f"\n## {title}\n")
    print("| metric | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    rows = [(f"PHI box recall (>= {pm.COVER_THRESHOLD:.0%} of pixels redacted)",
             [_fmt(*s.recall()) for s in scores.values()])]
    for entity in PHI_ENTITIES:
        if any(entity in s.hits for s in scores.values()):
            rows.append((f"recall {entity}",
                         [_fmt(*s.hits.get(entity, [0, 0])) for s in scores.values()]))
    rows.append(("over-redaction (outside every text box / image area)",
                 [f"{100 * s.outside / max(s.area, 1):.3f}% ({s.outside}/{s.area} px)"
                  for s in scores.values()]))
    rows.append((f"non-PHI lines falsely redacted (>= {pm.OVERLAY_THRESHOLD:.0%})",
                 [_fmt(s.nonphi_hit, s.nonphi_n) for s in scores.values()]))
    base = scores[names[0]]
    base_ms = 1000 * base.detect_s / max(base.views, 1)
    rows.append(("detect ms per view (one thread)",
                 [f"{1000 * s.detect_s / max(s.views, 1):.1f} "
                  f"(x{1000 * s.detect_s / max(s.views, 1) / max(base_ms, 1e-9):.2f})"
                  for s in scores.values()]))
    rows.append(("boxes per view", [f"{s.boxes / max(s.views, 1):.1f}"
                                    for s in scores.values()]))
    for label, cells in rows:
        print(f"| {label} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--split", default="test", help="train, validation, test or all")
    parser.add_argument("--corpus", type=Path, default=None,
                        help="corpus directory (default $TMPDIR/veil-pixel-<count>-<seed>)")
    parser.add_argument("--no-real", action="store_true", help="skip the real samples")
    parser.add_argument("--limit", type=int, default=None,
                        help="at most this many files per corpus (quick checks)")
    args = parser.parse_args(argv)

    os.environ["OMP_THREAD_LIMIT"] = "1"
    from pipeline.engine import deidentify
    from pipeline.keys import Keyring
    from pipeline.pixel.ppocr import PPOCRRecognizer
    from pipeline.pixel.stage import PixelEngines

    root = args.corpus or Path(tempfile.gettempdir()) / f"veil-pixel-{args.count}-{args.seed}"
    manifest = load_or_generate(root, args.count, args.seed)
    synthetic = [(root / f["name"], f["lines"], (f["rows"], f["columns"]))
                 for f in manifest["files"] if args.split in ("all", f["split"])]
    real: list[tuple[Path, list[dict[str, Any]], tuple[int, int]]] = []
    if not args.no_real:
        from benchmarks.bench_real import SampleError, load_ground_truth, locate
        try:
            real = [(locate(e), e["lines"], (e["rows"], e["columns"]))
                    for e in load_ground_truth()["files"]]
        except SampleError as exc:
            print(f"real samples skipped: {exc}")
    synthetic, real = synthetic[:args.limit], real[:args.limit]
    cpu = start_pixel_run()
    print(f"command: python -m benchmarks.bench_detectors {' '.join(argv or sys.argv[1:])}")
    print(f"pinned to CPU {cpu}, one ONNX Runtime thread per engine; corpus {root} (seed "
          f"{args.seed}, {args.count} files), split {args.split}: {len(synthetic)} files; "
          f"{len(real)} real files")
    compiled, margin = veil_pixel_profile()
    keyring = Keyring.generate()
    recognizer = PPOCRRecognizer(intra_op_num_threads=1)
    results: dict[str, dict[str, Score]] = {"synthetic": {}, "real": {}}
    for name in DETECTORS:
        timed = TimedDetector(_detector(name))
        engines = PixelEngines(timed, recognizer)

        def deid(ds: pydicom.Dataset, engines: Any = engines) -> Any:
            return deidentify(ds, compiled, keyring, in_place=True, pixel_engines=engines)

        start = time.perf_counter()
        results["synthetic"][name] = _run(synthetic, deid, timed, margin)
        if real:
            results["real"][name] = _run(real, deid, timed, margin)
        print(f"  {name}: {time.perf_counter() - start:.0f} s", flush=True)
    _table(f"Synthetic held-out corpus (seed {args.seed}, split {args.split})",
           results["synthetic"])
    if real:
        _table("Real burned-in samples (frame 0)", results["real"])
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
