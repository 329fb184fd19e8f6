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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import pixel_metrics as pm
from benchmarks.bench_metadata import start_pixel_run
from benchmarks.pixelrun import (
    DETECTORS,
    VeilRun,
    add_corpus_arguments,
    load_split,
    make_detector,
    print_load_average,
    print_table,
)
from training.pixel_corpus import PHI_ENTITIES

__all__ = ["DETECTORS", "main"]


@dataclass
class Score(pm.LineScore):
    """Accumulated figures of one detector on one corpus."""

    detect_s: float = 0.0
    views: int = 0
    boxes: int = 0


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


def _run(files: list[tuple[Path, list[dict[str, Any]]]], veil: VeilRun,
         timed: TimedDetector) -> Score:
    """De-identify every file (in memory) and score frame 0 of each."""
    veil.run(files[0][0])  # warm-up, not counted
    timed.score = Score()
    for path, lines in files:
        timed.score.add(lines, veil.mask(veil.run(path), frame=0))
    return timed.score


def _table(title: str, scores: dict[str, Score]) -> None:
    names = list(scores)
    print(f"\n## {title}\n")
    rows = [(f"PHI box recall (>= {pm.COVER_THRESHOLD:.0%} of pixels redacted)",
             [pm.fmt(*s.recall()) for s in scores.values()])]
    rows += [(f"recall {entity}", [s.entity_cell(entity) for s in scores.values()])
             for entity in PHI_ENTITIES if any(entity in s.hits for s in scores.values())]
    rows.append(("over-redaction (outside every text box / image area)",
                 [s.over_redaction_cell() for s in scores.values()]))
    rows.append((f"non-PHI lines falsely redacted (>= {pm.OVERLAY_THRESHOLD:.0%})",
                 [pm.fmt(s.nonphi_hit, s.nonphi_n) for s in scores.values()]))
    base = scores[names[0]]
    base_ms = 1000 * base.detect_s / max(base.views, 1)
    rows.append(("detect ms per view (one thread)",
                 [f"{1000 * s.detect_s / max(s.views, 1):.1f} "
                  f"(x{1000 * s.detect_s / max(s.views, 1) / max(base_ms, 1e-9):.2f})"
                  for s in scores.values()]))
    rows.append(("boxes per view", [f"{s.boxes / max(s.views, 1):.1f}"
                                    for s in scores.values()]))
    print_table(names, rows)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_corpus_arguments(parser)
    parser.add_argument("--no-real", action="store_true", help="skip the real samples")
    parser.add_argument("--limit", type=int, default=None,
                        help="at most this many files per corpus (quick checks)")
    args = parser.parse_args(argv)

    os.environ["OMP_THREAD_LIMIT"] = "1"
    from pipeline.pixel.stage import PixelEngines

    root, _, files = load_split(args)
    synthetic = [(root / f["name"], f["lines"]) for f in files]
    real: list[tuple[Path, list[dict[str, Any]]]] = []
    if not args.no_real:
        from benchmarks.bench_real import SampleError, load_ground_truth, locate
        try:
            real = [(locate(e), e["lines"]) for e in load_ground_truth()["files"]]
        except SampleError as exc:
            print(f"real samples skipped: {exc}")
    synthetic, real = synthetic[:args.limit], real[:args.limit]
    cpu = start_pixel_run()
    print(f"command: python -m benchmarks.bench_detectors {' '.join(argv or sys.argv[1:])}")
    print(f"pinned to CPU {cpu}, one ONNX Runtime thread per engine; corpus {root} (seed "
          f"{args.seed}, {args.count} files), split {args.split}: {len(synthetic)} files; "
          f"{len(real)} real files")
    veil = VeilRun()
    results: dict[str, dict[str, Score]] = {"synthetic": {}, "real": {}}
    for name in DETECTORS:
        timed = TimedDetector(make_detector(name, veil.settings))
        run = veil.with_engines(PixelEngines(timed, veil.engines.recognizer))
        start = time.perf_counter()
        results["synthetic"][name] = _run(synthetic, run, timed)
        if real:
            results["real"][name] = _run(real, run, timed)
        print(f"  {name}: {time.perf_counter() - start:.0f} s", flush=True)
    _table(f"Synthetic held-out corpus (seed {args.seed}, split {args.split})",
           results["synthetic"])
    if real:
        _table("Real burned-in samples (frame 0)", results["real"])
    print_load_average()
    return 0


if __name__ == "__main__":
    sys.exit(main())
