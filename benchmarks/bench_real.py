"""Burned-in text on real public sample files (pydicom-data, deid-data), same metrics.

Method: ``benchmarks/real_samples/ground_truth.json`` lists public sample DICOM files
shipped by two PyPI packages (``pydicom-data``, imported as ``data_store``; ``deid-data``,
imported as ``deid_data``) with every line of burned-in text of frame 0 transcribed by
hand (box in stored pixels, text, PHI or not, entity; see ``real_samples/README.md``).
Each file is found in its installed package (never downloaded at run time), its sha256
checked, then de-identified by Veil with ``dicom-basic`` + ``clean-pixel-data`` (PP-OCRv4
engines on ONNX Runtime, one intra-op thread), the process pinned to one CPU with
``os.sched_setaffinity`` and ``OMP_THREAD_LIMIT=1``. One untimed warm-up file first.
Seconds per file are read (``dcmread``) + de-identify + write (``save_as``), all frames;
the table gives the mean, the median and seconds per frame (two files are cines).

Scoring uses :mod:`benchmarks.pixel_metrics` on frame 0 (the frame transcribed): PHI
box recall (>= 95% of a line's pixels inside Veil's redacted boxes grown by the profile
margin) overall and by entity; the lenient reading (>= 50%); over-redaction (redacted
pixels outside every transcribed text box, as a share of the frame); non-PHI lines
falsely redacted (>= 50% of their pixels); and the re-OCR leak rate: Tesseract
(``--psm 11``, one thread) reads an 8-bit RGB/greyscale rendering of frame 0 of the
original (positive control) and of the output, and a PHI value counts as readable as in
``bench_pixel`` (names: any word of 3+ characters; other values: the whole value,
letters and digits only). PHI values shorter than 3 letters/digits ("OB", "AC") are
left out of the re-OCR figures (they match unrelated text).

With ``--presidio`` (needs ``pip install presidio-image-redactor``), Presidio's
``DicomImageRedactorEngine`` runs side by side exactly as in ``bench_presidio`` (blank
spaCy pipeline, ``use_metadata=True``) and is scored the same way.

Run ``python -m benchmarks.bench_real [--presidio]``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
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
    add_output_arguments,
    attempt,
    print_load_average,
    print_table,
    reocr_rows,
    settings_of,
)

__all__ = ["GROUND_TRUTH", "load_ground_truth", "locate", "main", "render_frame0"]

GROUND_TRUTH = Path(__file__).parent / "real_samples" / "ground_truth.json"
PACKAGES = {"pydicom-data": "data_store", "deid-data": "deid_data"}
ENTITIES = ("NAME", "ID", "DATE", "INSTITUTION", "LOCATION")


class SampleError(RuntimeError):
    """A sample package is missing or a file does not match its recorded checksum."""


def load_ground_truth(path: Path = GROUND_TRUTH) -> dict[str, Any]:
    """The ground-truth document (``note``, ``files``)."""
    with path.open(encoding="utf-8") as handle:
        doc: dict[str, Any] = json.load(handle)
    return doc


def locate(entry: dict[str, Any]) -> Path:
    """Path of ``entry``'s file in its installed package; checks the sha256."""
    package = entry["package"]
    module_name = PACKAGES[package]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise SampleError(f"package {package!r} (module {module_name}) is not installed: "
                          f"run `.venv/bin/pip install {package}`") from None
    if module.__file__ is None:
        raise SampleError(f"package {package!r} has no file location")
    path = Path(module.__file__).parent / entry["path"]
    if not path.is_file():
        raise SampleError(f"{entry['path']} not found in {package} at {path}; "
                          f"a different {package} version? (`pip install -U {package}`)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != entry["sha256"]:
        raise SampleError(f"{package}:{entry['path']} sha256 {digest} differs from the "
                          f"ground truth's {entry['sha256']}")
    return path


def render_frame0(ds: pydicom.Dataset) -> np.ndarray:
    """uint8 rendering of frame 0: RGB (palette applied, YBR converted) or greyscale."""
    arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.PhotometricInterpretation)
    if frames > 1:
        arr = arr[0]
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut
        arr = apply_color_lut(arr, ds)
        if arr.dtype != np.uint8:
            arr = (arr.astype(np.uint32) >> 8).astype(np.uint8)
    if arr.ndim == 2 or arr.dtype != np.uint8:
        values = arr.astype(np.float64)
        low, high = float(values.min()), float(values.max())
        arr = np.rint((values - low) / max(high - low, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _value(line: dict[str, Any]) -> str:
    return str(line.get("value", line["text"]))


@dataclass
class Tally(pixelrun.Tally):
    """Per-contender accumulators."""

    frames: list[int] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    false_hits: list[str] = field(default_factory=list)


def _score(tally: Tally, entry: dict[str, Any], mask: np.ndarray) -> None:
    name = Path(entry["path"]).name
    for line, share in zip(entry["lines"], tally.add(entry["lines"], mask), strict=True):
        if line["phi"] and share < pm.COVER_THRESHOLD:
            tally.missed.append(f"{name}: {line['text']!r} ({line['entity']}, "
                                f"{share:.0%} covered)")
        elif not line["phi"] and share >= pm.OVERLAY_THRESHOLD:
            tally.false_hits.append(f"{name}: {line['text']!r} ({line['entity']})")


def _ocr_lines(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [line for line in entry["lines"]
            if line["phi"] and len(pm.squash(_value(line))) >= 3]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ground-truth", type=Path, default=GROUND_TRUTH)
    add_output_arguments(parser)
    parser.add_argument("--presidio", action="store_true",
                        help="also run Presidio's DicomImageRedactorEngine (bench only)")
    args = parser.parse_args(argv)

    os.environ["OMP_THREAD_LIMIT"] = "1"
    doc = load_ground_truth(args.ground_truth)
    try:
        sources = [(entry, locate(entry)) for entry in doc["files"]]
    except SampleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    contenders = ["Veil", "Presidio"] if args.presidio else ["Veil"]
    out_base = args.out or Path(tempfile.gettempdir()) / "veil-real-samples-out"
    out_dirs = {name: out_base / name.lower() for name in contenders}
    for folder in out_dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
    cpu = start_pixel_run()
    tess = not args.no_tesseract and pm.tesseract_available()
    n_phi = sum(line["phi"] for entry, _ in sources for line in entry["lines"])
    n_lines = sum(len(entry["lines"]) for entry, _ in sources)
    print(f"pinned to CPU {cpu}, OMP_THREAD_LIMIT=1; {len(sources)} files, {n_lines} "
          f"transcribed lines ({n_phi} PHI) from {args.ground_truth}")

    runners: dict[str, Runner] = {"Veil": VeilRun(overrides=settings_of(args))}
    if args.settings:
        print("profile settings for Veil: " + ", ".join(args.settings))
    if args.presidio:
        from benchmarks.bench_presidio import PresidioRunner
        runners["Presidio"] = PresidioRunner()

    with tempfile.TemporaryDirectory() as tmp:
        warm = min(sources, key=lambda s: s[0]["frames"])[1]
        for name in contenders:
            try:
                runners[name](warm, Path(tmp) / f"{name}.dcm")
            except Exception as exc:  # a warm-up crash is reported with the file below
                print(f"warm-up {name}: {type(exc).__name__}: {exc}")

    tallies = {name: Tally() for name in contenders}
    ocr_before = ocr_n = 0
    for entry, source in sources:
        shape = (entry["rows"], entry["columns"])
        before_text = (pm.tesseract_text(pm.ocr_image(render_frame0(pydicom.dcmread(source))))
                       if tess else None)
        if before_text is not None:
            ocr_n += len(_ocr_lines(entry))
            ocr_before += pm.readable_count(_ocr_lines(entry), before_text)
        notes = []
        for name in contenders:
            tally = tallies[name]
            target = out_dirs[name] / Path(entry["path"]).name
            mask, elapsed, failed = attempt(runners[name], source, target, shape, tally)
            if failed is None:
                after_text = (pm.tesseract_text(pm.ocr_image(render_frame0(
                    pydicom.dcmread(target)))) if tess else None)
            else:
                notes.append(f"{name} {failed}")
                after_text = before_text
            tally.frames.append(int(entry["frames"]))
            _score(tally, entry, mask)
            if after_text is not None:
                tally.ocr_after += pm.readable_count(_ocr_lines(entry), after_text)
            notes.append(f"{name} {elapsed:.2f} s")
            cached = getattr(runners[name], "read_cache_cell", lambda: None)()
            if cached:
                notes.append(cached)
        print(f"  {entry['package']}:{entry['path']} ({entry['frames']} frame(s)): "
              + ", ".join(notes), flush=True)

    print("\n## Real burned-in samples\n")
    ts = [tallies[name] for name in contenders]
    rows = [(f"PHI box recall (>= {pm.COVER_THRESHOLD:.0%} of a line's pixels redacted)",
             [pm.fmt(*t.recall()) for t in ts])]
    rows += [(f"recall {entity}", [t.entity_cell(entity) for t in ts])
             for entity in ENTITIES if any(entity in t.hits for t in ts)]
    rows.append((f"PHI lines >= {pm.LENIENT_THRESHOLD:.0%} redacted (lenient)",
                 [pm.fmt(t.lenient, t.recall()[1]) for t in ts]))
    rows.append(("mean share of a PHI line's pixels redacted", [t.mean_coverage() for t in ts]))
    rows.append(("over-redaction (outside every text box / frame-0 area)",
                 [t.over_redaction_cell() for t in ts]))
    rows.append((f"non-PHI lines falsely redacted (>= {pm.OVERLAY_THRESHOLD:.0%} of pixels)",
                 [pm.fmt(t.nonphi_hit, t.nonphi_n) for t in ts]))
    if tess:
        rows += reocr_rows(ocr_before, [t.ocr_after for t in ts], ocr_n, "values")
    else:
        rows.append(("Tesseract re-OCR leak rate", ["not measured" for _ in ts]))
    rows.append(("seconds per file (mean, one core, read + de-identify + write)",
                 [f"{statistics.mean(t.seconds):.2f}" if t.seconds else "n/a" for t in ts]))
    rows.append(("seconds per file (median)",
                 [f"{statistics.median(t.seconds):.2f}" if t.seconds else "n/a" for t in ts]))
    rows.append(("seconds per frame (all seconds / all frames)",
                 [f"{sum(t.seconds) / max(sum(t.frames), 1):.2f}" for t in ts]))
    rows.append(("failures (files)",
                 [t.failures_cell() for t in ts]))
    print_table(contenders, rows)
    for name, tally in tallies.items():
        for item in tally.missed:
            print(f"{name} missed PHI: {item}")
        for item in tally.false_hits:
            print(f"{name} redacted non-PHI: {item}")
    print_load_average()
    return 0


if __name__ == "__main__":
    sys.exit(main())
