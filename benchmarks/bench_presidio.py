"""Burned-in text: Veil beside Presidio's DicomImageRedactorEngine, same corpus, same metrics.

Method: the synthetic corpus of :mod:`training.pixel_corpus` is generated (or reused
from the folder :mod:`benchmarks.bench_pixel` uses) and the files of one split are
redacted, file by file and in turn, by two contenders, the process pinned to one CPU
with ``os.sched_setaffinity`` (child processes such as Tesseract inherit the pinning)
and ``OMP_THREAD_LIMIT=1``:

* **Veil**: ``dicom-basic`` + ``clean-pixel-data`` (PP-OCRv4 engines on ONNX Runtime
  with one intra-op thread), exactly as ``bench_pixel`` runs it. Its redacted area is
  the union of its ``cleared`` / ``pending-review`` finding boxes grown by the profile
  margin (:func:`benchmarks.pixel_metrics.redaction_mask`).
* **Presidio**: ``DicomImageRedactorEngine().redact_and_return_bbox(ds,
  use_metadata=True, fill=..., padding_width=...)``. Presidio's analyzer runs on a
  *blank* English spaCy pipeline (no spaCy model can be downloaded here), so it has its
  pattern recognizers (dates, phone numbers, IDs...) and, with ``use_metadata=True``,
  a deny-list recognizer built from the DICOM header (names and other element values),
  but no statistical NER. Presidio converts the frame before OCR: VOI LUT windowing
  when Window Width is present (greyscale), then an *inverted* min-max rescale to 8 bits
  (greyscale) or a plain cast to uint8 (RGB), at the stored size, padded on every side by
  ``padding_width``; Tesseract (via pytesseract) reads it. The boxes it returns have the
  padding removed, so they are in stored pixel coordinates, and Presidio fills
  ``pixel_array[top:top + height, left:left + width]``; its redacted area here is those
  same slices (checked against the pixels it actually changed).

One untimed warm-up file per contender. Time per file is read (``dcmread``) + redact +
write (``save_as``). Both outputs are scored with the same functions of
:mod:`benchmarks.pixel_metrics`: PHI box recall (>= 95% of a box's pixels redacted),
by entity, and as a secondary reading the lines at least half redacted and the mean
redacted share of a PHI line (the truth box is the whole line, label included, while
Presidio fills only the words it flags), over-redaction, overlay false redaction,
header leaks, and the re-OCR leak rate (Tesseract ``--psm 11`` on the saved output
frame). A file on which Presidio raises
counts as a failure (exception class reported): nothing redacted, its lines missed.

Run ``python -m benchmarks.bench_presidio [--count 60] [--seed 7] [--split test]``.
Needs ``pip install presidio-image-redactor`` (benchmark only) and Debian
``tesseract-ocr``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from benchmarks import pixel_metrics as pm
from benchmarks.bench_metadata import start_pixel_run
from benchmarks.bench_pixel import _fmt, _ocr_view, veil_pixel_profile
from training.pixel_corpus import PHI_ENTITIES, load_or_generate

__all__ = ["main", "presidio_engine", "presidio_mask"]

CONTENDERS = ("Veil", "Presidio")
#: Secondary, lenient reading: a PHI line with at least half its pixels redacted. The
#: truth box is the whole rendered line, label included ("MRN: S8070937"); a redactor
#: that fills only the PHI words (Presidio) cannot reach the 95% rule on labelled lines.
LENIENT_THRESHOLD = 0.5


@dataclass
class Tally:
    """Per-contender accumulators."""

    seconds: list[float] = field(default_factory=list)
    hits: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    outside: int = 0
    area: int = 0
    overlay_hit: int = 0
    overlay_n: int = 0
    leak_files: set[str] = field(default_factory=set)
    ocr_after: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    boxes: int = 0
    changed_outside: int = 0
    lenient: int = 0
    coverage_sum: float = 0.0

    def recall(self) -> tuple[int, int]:
        return sum(h for h, _ in self.hits.values()), sum(n for _, n in self.hits.values())


def presidio_engine() -> Any:
    """Presidio's DICOM redactor on a blank English spaCy pipeline (no NER model)."""
    import spacy
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_image_redactor import DicomImageRedactorEngine, ImageAnalyzerEngine

    model_dir = Path(tempfile.mkdtemp(prefix="veil-spacy-blank-")) / "en_blank"
    spacy.blank("en").to_disk(model_dir)
    config = {"nlp_engine_name": "spacy",
              "models": [{"lang_code": "en", "model_name": str(model_dir)}]}
    nlp_engine = NlpEngineProvider(nlp_configuration=config).create_engine()
    analyzer = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=["en"])
    return DicomImageRedactorEngine(
        image_analyzer_engine=ImageAnalyzerEngine(analyzer_engine=analyzer))


def presidio_mask(shape: tuple[int, int], boxes: list[dict[str, Any]]) -> np.ndarray:
    """Pixels Presidio fills: the same ``[top:top+height, left:left+width]`` slices."""
    mask = np.zeros(shape, dtype=bool)
    for box in boxes:
        top, left = int(box["top"]), int(box["left"])
        mask[top:top + int(box["height"]), left:left + int(box["width"])] = True
    return mask


def _changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    diff = before != after
    return diff.any(axis=-1) if diff.ndim == 3 else diff


def _score(tally: Tally, entry: dict[str, Any], mask: np.ndarray, target: Path,
           after_text: str | None) -> None:
    truth = [tuple(line["box"]) for line in entry["lines"]]
    for line in entry["lines"]:
        box = tuple(line["box"])
        if line["phi"]:
            share = pm.coverage(box, mask)
            tally.coverage_sum += share
            tally.lenient += share >= LENIENT_THRESHOLD
            tally.hits[line["entity"]][0] += pm.covered(box, mask)
            tally.hits[line["entity"]][1] += 1
        else:
            tally.overlay_n += 1
            tally.overlay_hit += pm.coverage(box, mask) >= pm.OVERLAY_THRESHOLD
    out, size = pm.over_redaction(mask, truth)
    tally.outside += out
    tally.area += size
    if target.is_file() and pm.header_leaks(target, entry["phi_strings"]):
        tally.leak_files.add(entry["name"])
    if after_text is not None:
        for line in entry["lines"]:
            if line["phi"]:
                tally.ocr_after += pm.readable(line["value"], after_text,
                                               any_word=line["entity"] == "NAME")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--split", default="test", help="train, validation, test or all")
    parser.add_argument("--corpus", type=Path, default=None,
                        help="corpus directory (default $TMPDIR/veil-pixel-<count>-<seed>)")
    parser.add_argument("--out", type=Path, default=None, help="output directory")
    parser.add_argument("--padding-width", type=int, default=25,
                        help="Presidio's OCR padding (its default, 25)")
    parser.add_argument("--fill", default="contrast",
                        help="Presidio's box fill: contrast (its default) or background")
    parser.add_argument("--no-tesseract", action="store_true")
    args = parser.parse_args(argv)

    os.environ["OMP_THREAD_LIMIT"] = "1"
    from pipeline.engine import deidentify
    from pipeline.keys import Keyring
    from pipeline.pixel.ppocr import PPOCRDetector, PPOCRRecognizer
    from pipeline.pixel.stage import PixelEngines

    root = args.corpus or Path(tempfile.gettempdir()) / f"veil-pixel-{args.count}-{args.seed}"
    manifest = load_or_generate(root, args.count, args.seed)
    files = [f for f in manifest["files"] if args.split in ("all", f["split"])]
    out_base = args.out or root.with_name(root.name + "-vs-presidio")
    out_dirs = {name: out_base / name.lower() for name in CONTENDERS}
    for folder in out_dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
    cpu = start_pixel_run()
    tess = pm.tesseract_available()
    versions = {name: _version(name) for name in (
        "presidio-image-redactor", "presidio-analyzer", "spacy", "pytesseract",
        "opencv-python")}
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"pinned to CPU {cpu}, OMP_THREAD_LIMIT=1; corpus {root} (seed {args.seed}, "
          f"{args.count} files); split {args.split}: {len(files)} files")
    print(f"Presidio: blank spaCy 'en' pipeline (no NER), use_metadata=True, "
          f"fill={args.fill!r}, padding_width={args.padding_width}")

    compiled, margin = veil_pixel_profile()
    keyring = Keyring.generate()
    engines = PixelEngines(PPOCRDetector(intra_op_num_threads=1),
                           PPOCRRecognizer(intra_op_num_threads=1))
    presidio = presidio_engine()

    def run_veil(path: Path, target: Path) -> np.ndarray:
        ds = pydicom.dcmread(path)
        result = deidentify(ds, compiled, keyring, in_place=True, pixel_engines=engines)
        result.dataset.save_as(target, enforce_file_format=True)
        boxes = [pm.FindingBox(tuple(f.box), f.status, f.frame)  # type: ignore[arg-type]
                 for f in result.pixel_findings]
        return pm.redaction_mask((int(ds.Rows), int(ds.Columns)), boxes, margin)

    def run_presidio(path: Path, target: Path) -> tuple[np.ndarray, list[dict[str, Any]]]:
        ds = pydicom.dcmread(path)
        redacted, boxes = presidio.redact_and_return_bbox(
            ds, fill=args.fill, padding_width=args.padding_width, use_metadata=True)
        redacted.save_as(target, enforce_file_format=True)
        return presidio_mask((int(ds.Rows), int(ds.Columns)), boxes), boxes

    warm = root / manifest["files"][0]["name"]
    with tempfile.TemporaryDirectory() as tmp:
        run_veil(warm, Path(tmp) / "veil.dcm")
        run_presidio(warm, Path(tmp) / "presidio.dcm")

    tallies = {name: Tally() for name in CONTENDERS}
    ocr_before = ocr_phi = 0
    for entry in files:
        source = root / entry["name"]
        shape = (entry["rows"], entry["columns"])
        original = pydicom.dcmread(source).pixel_array
        before_text = pm.tesseract_text(_ocr_view(original)) if tess else None
        if before_text is not None:
            for line in entry["lines"]:
                if line["phi"]:
                    ocr_phi += 1
                    ocr_before += pm.readable(line["value"], before_text,
                                              any_word=line["entity"] == "NAME")
        notes = []
        for name in CONTENDERS:
            tally = tallies[name]
            target = out_dirs[name] / entry["name"]
            target.unlink(missing_ok=True)
            start = time.perf_counter()
            try:
                if name == "Veil":
                    mask = run_veil(source, target)
                else:
                    mask, boxes = run_presidio(source, target)
                    tally.boxes += len(boxes)
            except Exception as exc:  # a crash is a result here: count it, go on
                elapsed = time.perf_counter() - start
                tally.failures[type(exc).__name__] += 1
                mask = np.zeros(shape, dtype=bool)
                notes.append(f"{name} FAILED {type(exc).__name__}: {exc}")
                after_text = before_text
            else:
                elapsed = time.perf_counter() - start
                redacted = pydicom.dcmread(target).pixel_array
                tally.changed_outside += int((_changed(original, redacted) & ~mask).sum())
                after_text = pm.tesseract_text(_ocr_view(redacted)) if tess else None
            tally.seconds.append(elapsed)
            _score(tally, entry, mask, target, after_text)
            notes.append(f"{name} {1000 * elapsed:.0f} ms")
        print(f"  {entry['name']}: " + ", ".join(notes), flush=True)

    veil, pres = tallies["Veil"], tallies["Presidio"]
    print("\n## Side by side\n")
    print("| metric | Veil | Presidio |\n|---|---|---|")
    rows: list[tuple[str, ...]] = []
    vr, pr = veil.recall(), pres.recall()
    rows.append((f"PHI box recall (>= {pm.COVER_THRESHOLD:.0%} of pixels redacted)",
                 _fmt(*vr), _fmt(*pr)))
    for entity in PHI_ENTITIES:
        rows.append((f"recall {entity}", _fmt(*veil.hits.get(entity, [0, 0])),
                     _fmt(*pres.hits.get(entity, [0, 0]))))
    rows.append((f"PHI lines >= {LENIENT_THRESHOLD:.0%} redacted (lenient, secondary)",
                 _fmt(veil.lenient, vr[1]), _fmt(pres.lenient, pr[1])))
    rows.append(("mean share of a PHI line's pixels redacted",
                 *(f"{t.coverage_sum / max(t.recall()[1], 1):.3f}" for t in (veil, pres))))
    rows.append(("over-redaction (outside every text box / image area)",
                 *(f"{100 * t.outside / max(t.area, 1):.3f}% ({t.outside}/{t.area} px)"
                   for t in (veil, pres))))
    rows.append((f"overlays falsely redacted (>= {pm.OVERLAY_THRESHOLD:.0%} of pixels)",
                 *(_fmt(t.overlay_hit, t.overlay_n) for t in (veil, pres))))
    if tess:
        rows.append(("PHI lines Tesseract reads in the original (positive control)",
                     _fmt(ocr_before, ocr_phi), _fmt(ocr_before, ocr_phi)))
        rows.append(("PHI lines Tesseract still reads after redaction (leak rate)",
                     *(_fmt(t.ocr_after, ocr_phi) for t in (veil, pres))))
    else:
        rows.append(("Tesseract re-OCR leak rate", "not measured", "not measured"))
    rows.append(("files with header PHI leaks",
                 f"{len(veil.leak_files)}/{len(files)}",
                 f"{len(pres.leak_files)}/{len(files)} (header not de-identified)"))
    rows.append(("seconds per file (mean, one core, read + redact + write)",
                 *(f"{statistics.mean(t.seconds):.3f}" if t.seconds else "n/a"
                   for t in (veil, pres))))
    rows.append(("failures (files)",
                 *(", ".join(f"{k} x{v}" for k, v in t.failures.items()) or "0"
                   for t in (veil, pres))))
    rows.append(("pixels changed outside the scored redacted area",
                 str(veil.changed_outside), str(pres.changed_outside)))
    for label, a, b in rows:  # every row has three cells
        print(f"| {label} | {a} | {b} |")
    print(f"\nPresidio boxes returned: {pres.boxes}")
    print("\n## Ratios\n")
    if vr[1] and pr[0]:
        print(f"recall Veil / Presidio: {(vr[0] / vr[1]) / (pr[0] / pr[1]):.2f}x")
    else:
        print("recall Veil / Presidio: n/a (Presidio recall 0)")
    if veil.seconds and pres.seconds:
        ratio = statistics.mean(pres.seconds) / statistics.mean(veil.seconds)
        print(f"time Presidio / Veil: {ratio:.2f}x")
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
