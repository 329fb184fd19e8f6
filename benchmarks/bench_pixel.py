"""Burned-in text (pixel PHI): recall, over-redaction, leaks and speed on one core.

Method: the synthetic corpus of :mod:`training.pixel_corpus` is generated (or reused
when its manifest matches ``--count`` and ``--seed``); the files of one split are
de-identified by Veil with ``dicom-basic`` + ``clean-pixel-data`` (PP-OCRv4 engines on
ONNX Runtime with one intra-op thread), the process pinned to one CPU with
``os.sched_setaffinity``. One untimed warm-up file first (model loading). Per file,
``time.perf_counter`` times: read (``dcmread``), decode (the stage's frame views, timed
by wrapping the ``views`` generator), detect and recognise (wrapping the engines'
``detect`` / ``recognize``), tag (wrapping the PHI decision ``decide``), redact (wrapping
``redact``), write (``save_as``); "metadata + rest" is the rest of ``deidentify`` (the
header walk, merging findings). Then the output is checked against the ground truth with
:mod:`benchmarks.pixel_metrics`: PHI box recall (>= 95% of a box's pixels inside the
redacted boxes grown by the profile margin), recall by entity, over-redaction,
overlay false redaction, header leaks, and re-OCR by Tesseract of the original and the
redacted frame.

With ``--baseline``, the CT 512x512 files are also timed against the configuration
before the issue-3 speed work (every view; recognition in padded batches), interleaved
in the same process.

Run ``python -m benchmarks.bench_pixel [--count 60] [--seed 7] [--split test]
[--baseline]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image

from benchmarks import pixel_metrics as pm
from benchmarks.bench_metadata import start_pixel_run
from training.pixel_corpus import PHI_ENTITIES, load_or_generate

__all__ = ["main"]

STAGES = ("read", "decode", "detect", "recognise", "tag", "redact", "metadata + rest",
          "write")


class _Clock:
    """Accumulates seconds per stage for the current file."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[stage] += time.perf_counter() - start
        return timed

    def wrap_iter(self, stage: str, fn: Callable[..., Iterator[Any]]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            it = fn(*args, **kwargs)
            while True:
                start = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    self.spent[stage] += time.perf_counter() - start
                    return
                self.spent[stage] += time.perf_counter() - start
                yield item
        return timed


class _TimedEngine:
    def __init__(self, inner: Any, clock: _Clock, method: str, stage: str) -> None:
        setattr(self, method, clock.wrap(stage, getattr(inner, method)))


def _instrument(clock: _Clock) -> Any:
    """Engines wrapped for timing, and the stage's functions patched; return engines."""
    from pipeline.pixel import stage
    from pipeline.pixel.ppocr import PPOCRDetector, PPOCRRecognizer

    stage.views = clock.wrap_iter("decode", stage.views)
    stage.decide = clock.wrap("tag", stage.decide)
    stage.redact = clock.wrap("redact", stage.redact)
    detector = PPOCRDetector(intra_op_num_threads=1)
    recognizer = PPOCRRecognizer(intra_op_num_threads=1)
    return stage.PixelEngines(_TimedEngine(detector, clock, "detect", "detect"),  # type: ignore[arg-type]
                              _TimedEngine(recognizer, clock, "recognize", "recognise"))  # type: ignore[arg-type]


def _baseline_ratio(root: Path, files: list[dict[str, Any]], compiled: Any, keyring: Any,
                    out_dir: Path) -> None:
    """Time the CT 512x512 files with the current stage and with the baseline, interleaved.

    Baseline: every view (window, full, inverted) and the bundle's recognition batching
    (6 crops padded to at least 320 columns), the configuration before issue 3's speed
    work. Same process, same engines' thread count, each file de-identified by both in
    turn (twice), so machine load hits both alike; prints the mean and the ratio.
    """
    from pipeline.engine import deidentify
    from pipeline.pixel import stage
    from pipeline.pixel.ppocr import PPOCRDetector, PPOCRRecognizer

    ct = [f for f in files if f["modality"] == "CT" and f["rows"] == 512]
    if not ct:
        print("\nbaseline: no CT 512x512 file in this split")
        return
    detector = PPOCRDetector(intra_op_num_threads=1)
    configs = {
        "current": (stage.DETECT_VIEWS, stage.PixelEngines(
            detector, PPOCRRecognizer(intra_op_num_threads=1))),
        "baseline": (None, stage.PixelEngines(
            detector, PPOCRRecognizer(intra_op_num_threads=1, batch_size=6, min_width=320))),
    }
    current_views = stage.DETECT_VIEWS
    spent: dict[str, list[float]] = defaultdict(list)
    try:
        for _ in range(2):
            for entry in ct:
                for label, (names, engines) in configs.items():
                    stage.DETECT_VIEWS = names
                    start = time.perf_counter()
                    ds = pydicom.dcmread(root / entry["name"])
                    result = deidentify(ds, compiled, keyring, in_place=True,
                                        pixel_engines=engines)
                    result.dataset.save_as(out_dir / f"baseline-{entry['name']}",
                                           enforce_file_format=True)
                    spent[label].append(time.perf_counter() - start)
    finally:
        stage.DETECT_VIEWS = current_views
    now, then = statistics.mean(spent["current"]), statistics.mean(spent["baseline"])
    print(f"\n## Against the baseline (CT 512x512, {len(ct)} files x 2, interleaved)\n")
    print(f"current {1000 * now:.0f} ms ({1 / now:.2f} slices/s); baseline (3 views, "
          f"batched padded recognition) {1000 * then:.0f} ms ({1 / then:.2f} slices/s); "
          f"speed-up x{then / now:.2f}")


def _ocr_view(arr: np.ndarray) -> np.ndarray:
    """uint8 rendering for Tesseract: full range, enlarged x2 when small."""
    if arr.ndim == 2:
        values = arr.astype(np.float64)
        low, high = float(values.min()), float(values.max())
        arr = np.rint((values - low) / max(high - low, 1.0) * 255.0).astype(np.uint8)
    image = Image.fromarray(arr.astype(np.uint8))
    if min(image.size) < 600:
        image = image.resize((image.width * 2, image.height * 2), Image.Resampling.LANCZOS)
    return np.asarray(image)


def _fmt(num: int, den: int) -> str:
    return f"{num / den:.3f} ({num}/{den})" if den else "n/a (0)"


def veil_pixel_profile() -> tuple[Any, int]:
    """The compiled profile every pixel benchmark runs Veil with, and its redaction margin."""
    from pipeline.profile import compile_profile, load_profile

    compiled = compile_profile(load_profile("dicom-basic", options=["clean-pixel-data"]))
    margin = compiled.profile.pixel.margin
    return compiled, 2 if margin is None else margin


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--split", default="test", help="train, validation, test or all")
    parser.add_argument("--corpus", type=Path, default=None,
                        help="corpus directory (default $TMPDIR/veil-pixel-<count>-<seed>)")
    parser.add_argument("--out", type=Path, default=None, help="output directory")
    parser.add_argument("--no-tesseract", action="store_true")
    parser.add_argument("--baseline", action="store_true",
                        help="also time CT 512x512 against the pre-issue-3 configuration")
    args = parser.parse_args(argv)

    from pipeline.engine import deidentify
    from pipeline.keys import Keyring

    root = args.corpus or Path(tempfile.gettempdir()) / f"veil-pixel-{args.count}-{args.seed}"
    manifest = load_or_generate(root, args.count, args.seed)
    files = [f for f in manifest["files"] if args.split in ("all", f["split"])]
    out_dir = args.out or root.with_name(root.name + "-out")
    out_dir.mkdir(parents=True, exist_ok=True)
    cpu = start_pixel_run()
    print(f"pinned to CPU {cpu}; corpus {root} (seed {args.seed}, {args.count} files); "
          f"split {args.split}: {len(files)} files")

    compiled, margin = veil_pixel_profile()
    keyring = Keyring.generate()
    clock = _Clock()
    engines = _instrument(clock)
    warm = pydicom.dcmread(root / manifest["files"][0]["name"])
    deidentify(warm, compiled, keyring, in_place=True, pixel_engines=engines)

    use_tess = not args.no_tesseract and pm.tesseract_available()
    per_file: list[dict[str, float]] = []
    hits: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    outside = area = overlay_hit = overlay_n = 0
    leaks_header: list[str] = []
    ocr_before = ocr_after = ocr_phi = 0
    for entry in files:
        clock.spent.clear()
        t0 = time.perf_counter()
        ds = pydicom.dcmread(root / entry["name"])
        t1 = time.perf_counter()
        result = deidentify(ds, compiled, keyring, in_place=True, pixel_engines=engines)
        t2 = time.perf_counter()
        target = out_dir / entry["name"]
        result.dataset.save_as(target, enforce_file_format=True)
        t3 = time.perf_counter()
        spent = dict(clock.spent)
        stage_sum = sum(spent.values())
        spent.update({"read": t1 - t0, "write": t3 - t2,
                      "metadata + rest": (t2 - t1) - stage_sum, "total": t3 - t0})
        spent["ct512"] = float(entry["modality"] == "CT" and entry["rows"] == 512)
        per_file.append(spent)

        boxes = [pm.FindingBox(tuple(f.box), f.status, f.frame)  # type: ignore[arg-type]
                 for f in result.pixel_findings]
        mask = pm.redaction_mask((entry["rows"], entry["columns"]), boxes, margin)
        truth = [tuple(line["box"]) for line in entry["lines"]]
        for line in entry["lines"]:
            box = tuple(line["box"])
            if line["phi"]:
                hit = pm.covered(box, mask)
                hits[line["entity"]][0] += hit
                hits[line["entity"]][1] += 1
            else:
                overlay_n += 1
                overlay_hit += pm.coverage(box, mask) >= pm.OVERLAY_THRESHOLD
        out, size = pm.over_redaction(mask, truth)
        outside += out
        area += size
        found = pm.header_leaks(target, entry["phi_strings"])
        leaks_header += [f"{entry['name']}: {s}" for s in found]
        if use_tess:
            before = pm.tesseract_text(_ocr_view(pydicom.dcmread(root / entry["name"]).pixel_array))
            after = pm.tesseract_text(_ocr_view(pydicom.dcmread(target).pixel_array))
            for line in entry["lines"]:
                if line["phi"]:
                    names = line["entity"] == "NAME"
                    ocr_phi += 1
                    ocr_before += pm.readable(line["value"], before, any_word=names)
                    ocr_after += pm.readable(line["value"], after, any_word=names)
        print(f"  {entry['name']}: {1000 * spent['total']:.0f} ms, "
              f"{len(result.pixel_findings)} findings", flush=True)

    print("\n## Timing (ms per file, mean; one core)\n")
    print("| files | " + " | ".join(STAGES) + " | total |")
    print("|---|" + "---:|" * (len(STAGES) + 1))
    for label, group in (("all", per_file), ("CT 512x512", [p for p in per_file if p["ct512"]])):
        if group:
            cells = " | ".join(f"{1000 * statistics.mean(p.get(s, 0.0) for p in group):.0f}"
                               for s in (*STAGES, "total"))
            print(f"| {label} ({len(group)}) | {cells} |")
    ct = [p["total"] for p in per_file if p["ct512"]]
    if ct:
        print(f"\nCT 512x512 with text: {1 / statistics.mean(ct):.2f} slices/s per core "
              f"(mean {1000 * statistics.mean(ct):.0f} ms, read to write)")

    print("\n## Accuracy\n")
    print("| metric | value |\n|---|---|")
    total_hit = sum(h for h, _ in hits.values())
    total_n = sum(n for _, n in hits.values())
    print(f"| PHI box recall (>= {pm.COVER_THRESHOLD:.0%} of pixels redacted) | "
          f"{_fmt(total_hit, total_n)} |")
    for entity in PHI_ENTITIES:
        h, n = hits.get(entity, [0, 0])
        print(f"| recall {entity} | {_fmt(h, n)} |")
    print(f"| over-redaction (redacted area outside every text box / image area) | "
          f"{100 * outside / max(area, 1):.3f}% ({outside}/{area} px) |")
    print(f"| overlays falsely redacted (>= {pm.OVERLAY_THRESHOLD:.0%} of pixels) | "
          f"{_fmt(overlay_hit, overlay_n)} |")
    print(f"| files with header PHI leaks | {len({s.split(':')[0] for s in leaks_header})}"
          f"/{len(files)} |")
    if use_tess:
        print(f"| PHI lines Tesseract reads in the original (positive control) | "
              f"{_fmt(ocr_before, ocr_phi)} |")
        print(f"| PHI lines Tesseract still reads after redaction (leak rate) | "
              f"{_fmt(ocr_after, ocr_phi)} |")
    else:
        print("| Tesseract re-OCR leak rate | not measured (tesseract not installed) |")
    for leak in leaks_header[:20]:
        print(f"header leak: {leak}")
    if args.baseline:
        _baseline_ratio(root, files, compiled, keyring, out_dir)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
