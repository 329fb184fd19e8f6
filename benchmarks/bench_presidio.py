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
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from benchmarks import pixel_metrics as pm
from benchmarks import pixelrun
from benchmarks.bench_metadata import start_pixel_run
from benchmarks.pixelrun import (
    Runner,
    VeilRun,
    add_corpus_arguments,
    add_output_arguments,
    attempt,
    load_split,
    print_load_average,
    print_table,
    reocr_rows,
)
from training.pixel_corpus import PHI_ENTITIES

__all__ = ["PresidioRunner", "main", "presidio_engine", "presidio_mask"]

CONTENDERS = ("Veil", "Presidio")


@dataclass
class Tally(pixelrun.Tally):
    """Per-contender accumulators."""

    leak_files: set[str] = field(default_factory=set)
    changed_outside: int = 0


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


class PresidioRunner:
    """Presidio as a benchmark runner: read, redact, write; the mask of what it filled.

    ``boxes`` counts the boxes returned by the files written so far.
    """

    def __init__(self, *, fill: str = "contrast", padding_width: int = 25) -> None:
        self.engine = presidio_engine()
        self.fill, self.padding_width = fill, padding_width
        self.boxes = 0

    def __call__(self, path: Path, target: Path) -> np.ndarray:
        """Redact ``path`` into ``target``; return the filled pixels."""
        ds = pydicom.dcmread(path)
        redacted, boxes = self.engine.redact_and_return_bbox(
            ds, fill=self.fill, padding_width=self.padding_width, use_metadata=True)
        redacted.save_as(target, enforce_file_format=True)
        self.boxes += len(boxes)
        return presidio_mask((int(ds.Rows), int(ds.Columns)), boxes)


def _changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    diff = before != after
    return diff.any(axis=-1) if diff.ndim == 3 else diff


def _score(tally: Tally, entry: dict[str, Any], mask: np.ndarray, target: Path,
           after_text: str | None) -> None:
    tally.add(entry["lines"], mask)
    if target.is_file() and pm.header_leaks(target, entry["phi_strings"]):
        tally.leak_files.add(entry["name"])
    if after_text is not None:
        tally.ocr_after += pm.readable_count(entry["lines"], after_text)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_corpus_arguments(parser)
    add_output_arguments(parser)
    parser.add_argument("--padding-width", type=int, default=25,
                        help="Presidio's OCR padding (its default, 25)")
    parser.add_argument("--fill", default="contrast",
                        help="Presidio's box fill: contrast (its default) or background")
    args = parser.parse_args(argv)

    os.environ["OMP_THREAD_LIMIT"] = "1"
    root, manifest, files = load_split(args)
    out_base = args.out or root.with_name(root.name + "-vs-presidio")
    out_dirs = {name: out_base / name.lower() for name in CONTENDERS}
    for folder in out_dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
    cpu = start_pixel_run()
    tess = not args.no_tesseract and pm.tesseract_available()
    versions = {name: _version(name) for name in (
        "presidio-image-redactor", "presidio-analyzer", "spacy", "pytesseract",
        "opencv-python")}
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"pinned to CPU {cpu}, OMP_THREAD_LIMIT=1; corpus {root} (seed {args.seed}, "
          f"{args.count} files); split {args.split}: {len(files)} files")
    print(f"Presidio: blank spaCy 'en' pipeline (no NER), use_metadata=True, "
          f"fill={args.fill!r}, padding_width={args.padding_width}")

    veil_run = VeilRun()
    presidio = PresidioRunner(fill=args.fill, padding_width=args.padding_width)
    runners: dict[str, Runner] = {"Veil": veil_run, "Presidio": presidio}
    warm = root / manifest["files"][0]["name"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, runner in runners.items():
            runner(warm, Path(tmp) / f"{name.lower()}.dcm")
    presidio.boxes = 0  # the warm-up's do not count

    tallies = {name: Tally() for name in CONTENDERS}
    ocr_before = ocr_phi = 0
    for entry in files:
        source = root / entry["name"]
        original = pydicom.dcmread(source).pixel_array
        before_text = pm.tesseract_text(pm.ocr_image(original)) if tess else None
        if before_text is not None:
            ocr_phi += sum(line["phi"] for line in entry["lines"])
            ocr_before += pm.readable_count(entry["lines"], before_text)
        notes = []
        for name in CONTENDERS:
            tally = tallies[name]
            target = out_dirs[name] / entry["name"]
            mask, elapsed, failed = attempt(runners[name], source, target,
                                            (entry["rows"], entry["columns"]), tally)
            if failed is None:
                redacted = pydicom.dcmread(target).pixel_array
                tally.changed_outside += int((_changed(original, redacted) & ~mask).sum())
                after_text = pm.tesseract_text(pm.ocr_image(redacted)) if tess else None
            else:
                notes.append(f"{name} {failed}")
                after_text = before_text
            _score(tally, entry, mask, target, after_text)
            notes.append(f"{name} {1000 * elapsed:.0f} ms")
        print(f"  {entry['name']}: " + ", ".join(notes), flush=True)

    veil, pres = tallies["Veil"], tallies["Presidio"]
    both = (veil, pres)
    print("\n## Side by side\n")
    vr, pr = veil.recall(), pres.recall()
    rows: list[tuple[str, list[str]]] = [
        (f"PHI box recall (>= {pm.COVER_THRESHOLD:.0%} of pixels redacted)",
         [pm.fmt(*vr), pm.fmt(*pr)])]
    rows += [(f"recall {entity}", [t.entity_cell(entity) for t in both])
             for entity in PHI_ENTITIES]
    rows.append((f"PHI lines >= {pm.LENIENT_THRESHOLD:.0%} redacted (lenient, secondary)",
                 [pm.fmt(veil.lenient, vr[1]), pm.fmt(pres.lenient, pr[1])]))
    rows.append(("mean share of a PHI line's pixels redacted",
                 [t.mean_coverage() for t in both]))
    rows.append(("over-redaction (outside every text box / image area)",
                 [t.over_redaction_cell() for t in both]))
    rows.append((f"overlays falsely redacted (>= {pm.OVERLAY_THRESHOLD:.0%} of pixels)",
                 [pm.fmt(t.nonphi_hit, t.nonphi_n) for t in both]))
    if tess:
        rows += reocr_rows(ocr_before, [t.ocr_after for t in both], ocr_phi)
    else:
        rows.append(("Tesseract re-OCR leak rate", ["not measured"] * 2))
    rows.append(("files with header PHI leaks",
                 [f"{len(veil.leak_files)}/{len(files)}",
                  f"{len(pres.leak_files)}/{len(files)} (header not de-identified)"]))
    rows.append(("seconds per file (mean, one core, read + redact + write)",
                 [f"{statistics.mean(t.seconds):.3f}" if t.seconds else "n/a" for t in both]))
    rows.append(("failures (files)",
                 [t.failures_cell() for t in both]))
    rows.append(("pixels changed outside the scored redacted area",
                 [str(veil.changed_outside), str(pres.changed_outside)]))
    print_table(CONTENDERS, rows)
    print(f"\nPresidio boxes returned: {presidio.boxes}")
    print("\n## Ratios\n")
    if vr[1] and pr[0]:
        print(f"recall Veil / Presidio: {(vr[0] / vr[1]) / (pr[0] / pr[1]):.2f}x")
    else:
        print("recall Veil / Presidio: n/a (Presidio recall 0)")
    if veil.seconds and pres.seconds:
        ratio = statistics.mean(pres.seconds) / statistics.mean(veil.seconds)
        print(f"time Presidio / Veil: {ratio:.2f}x")
    print_load_average()
    return 0


if __name__ == "__main__":
    sys.exit(main())
