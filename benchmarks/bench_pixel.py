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
before the issue-3 speed work (every view; recognition in padded batches; the models'
graphs as exported), interleaved in the same process.

Run ``python -m benchmarks.bench_pixel [--count 60] [--seed 7] [--split test]
[--baseline]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pydicom

from benchmarks import pixel_metrics as pm
from benchmarks.bench_metadata import start_pixel_run
from benchmarks.pixelrun import (
    StageClock,
    VeilRun,
    add_corpus_arguments,
    add_output_arguments,
    load_split,
    make_detector,
    make_recognizer,
    print_load_average,
    print_table,
    reocr_rows,
    settings_of,
)
from training.pixel_corpus import PHI_ENTITIES

__all__ = ["main"]

STAGES = ("read", "decode", "detect", "recognise", "tag", "redact", "metadata + rest",
          "write")


def _baseline_ratio(root: Path, files: list[dict[str, Any]], veil: VeilRun,
                    out_dir: Path) -> None:
    """Time the CT 512x512 files with the current stage and with the baseline, interleaved.

    Baseline: every view (window, full, inverted), the bundle's recognition batching
    (6 crops padded to at least 320 columns) and the models' graphs as exported (not
    folded), the configuration before issue 3's speed work. Same process, same engines'
    thread count, each file de-identified by both in
    turn (twice), so machine load hits both alike; prints the mean and the ratio.
    """
    from pipeline.pixel import stage

    ct = [f for f in files if f["modality"] == "CT" and f["rows"] == 512]
    if not ct:
        print("\nbaseline: no CT 512x512 file in this split")
        return
    configs = {
        "current": (stage.DETECT_VIEWS, veil.with_engines(stage.PixelEngines(
            make_detector("ppocr-v4", veil.settings), make_recognizer()))),
        "baseline": (None, veil.with_engines(stage.PixelEngines(
            make_detector("ppocr-v4", veil.settings, fold=False),
            make_recognizer(batch_size=6, min_width=320, fold=False)))),
    }
    current_views = stage.DETECT_VIEWS
    spent: dict[str, list[float]] = defaultdict(list)
    try:
        for _ in range(2):
            for entry in ct:
                for label, (names, run) in configs.items():
                    stage.DETECT_VIEWS = names
                    done = run.run(root / entry["name"], out_dir / f"baseline-{entry['name']}")
                    spent[label].append(done.total_s)
    finally:
        stage.DETECT_VIEWS = current_views
    now, then = statistics.mean(spent["current"]), statistics.mean(spent["baseline"])
    print(f"\n## Against the baseline (CT 512x512, {len(ct)} files x 2, interleaved)\n")
    print(f"current {1000 * now:.0f} ms ({1 / now:.2f} slices/s); baseline (3 views, "
          f"batched padded recognition, exported graphs) {1000 * then:.0f} ms "
          f"({1 / then:.2f} slices/s); "
          f"speed-up x{then / now:.2f}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_corpus_arguments(parser)
    add_output_arguments(parser)
    parser.add_argument("--baseline", action="store_true",
                        help="also time CT 512x512 against the pre-issue-3 configuration")
    args = parser.parse_args(argv)

    root, manifest, files = load_split(args)
    out_dir = args.out or root.with_name(root.name + "-out")
    out_dir.mkdir(parents=True, exist_ok=True)
    cpu = start_pixel_run()
    print(f"pinned to CPU {cpu}; corpus {root} (seed {args.seed}, {args.count} files); "
          f"split {args.split}: {len(files)} files")

    veil = VeilRun(overrides=settings_of(args))
    if args.settings:
        print("profile settings: " + ", ".join(args.settings))
    clock = StageClock()
    timed = veil.with_engines(clock.instrument(veil.engines))
    timed.run(root / manifest["files"][0]["name"])  # warm-up, not written

    use_tess = not args.no_tesseract and pm.tesseract_available()
    per_file: list[dict[str, float]] = []
    score = pm.LineScore()
    leaks_header: list[str] = []
    ocr_before = ocr_after = ocr_phi = 0
    for entry in files:
        clock.spent.clear()
        target = out_dir / entry["name"]
        done = timed.run(root / entry["name"], target)
        spent = dict(clock.spent)
        stage_sum = sum(spent.values())
        spent.update({"read": done.read_s, "write": done.write_s,
                      "metadata + rest": done.deid_s - stage_sum, "total": done.total_s})
        spent["ct512"] = float(entry["modality"] == "CT" and entry["rows"] == 512)
        per_file.append(spent)

        score.add(entry["lines"], timed.mask(done))
        found = pm.header_leaks(target, entry["phi_strings"])
        leaks_header += [f"{entry['name']}: {s}" for s in found]
        if use_tess:
            before, after = (pm.tesseract_text(pm.ocr_image(pydicom.dcmread(path).pixel_array))
                             for path in (root / entry["name"], target))
            ocr_phi += sum(line["phi"] for line in entry["lines"])
            ocr_before += pm.readable_count(entry["lines"], before)
            ocr_after += pm.readable_count(entry["lines"], after)
        print(f"  {entry['name']}: {1000 * spent['total']:.0f} ms, "
              f"{len(done.result.pixel_findings)} findings", flush=True)

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
    rows = [(f"PHI box recall (>= {pm.COVER_THRESHOLD:.0%} of pixels redacted)",
             [pm.fmt(*score.recall())])]
    rows += [(f"recall {entity}", [score.entity_cell(entity)]) for entity in PHI_ENTITIES]
    rows.append((f"PHI value recall (>= {pm.COVER_THRESHOLD:.0%} of the value's own box; "
                 "labels left out)", [pm.fmt(*score.value_recall())]))
    rows += [(f"value recall {entity}", [score.value_cell(entity)])
             for entity in PHI_ENTITIES]
    rows.append(("over-redaction (redacted area outside every text box / image area)",
                 [score.over_redaction_cell()]))
    rows.append((f"overlays falsely redacted (>= {pm.OVERLAY_THRESHOLD:.0%} of pixels)",
                 [pm.fmt(score.nonphi_hit, score.nonphi_n)]))
    rows.append(("files with header PHI leaks",
                 [f"{len({s.split(':')[0] for s in leaks_header})}/{len(files)}"]))
    if use_tess:
        rows += reocr_rows(ocr_before, [ocr_after], ocr_phi)
    else:
        rows.append(("Tesseract re-OCR leak rate", ["not measured (tesseract not installed)"]))
    print_table(["value"], rows)
    for leak in leaks_header[:20]:
        print(f"header leak: {leak}")
    if args.baseline:
        _baseline_ratio(root, files, veil, out_dir)
    print_load_average()
    return 0


if __name__ == "__main__":
    sys.exit(main())
