"""What the pixel benchmarks share: Veil's profile and engines, one file's run, the flags.

``bench_pixel``, ``bench_presidio``, ``bench_real`` and ``bench_detectors`` run Veil's
pixel chain the same way: ``dicom-basic`` + ``clean-pixel-data``, ONNX Runtime engines
with one intra-op thread each (the text detector named, by default the profile's
``pixel.detector``, with the profile's thresholds; the PP-OCRv4 recognizer), one random
key per run. A file is read (``dcmread``), de-identified in place and written
(``save_as``), each step timed with ``time.perf_counter``; the redacted area of a frame
is rebuilt from the findings with :func:`benchmarks.pixel_metrics.redaction_mask`, grown
by the profile's margin. :class:`StageClock` times the engines and the pixel stage's
steps (decode of the views, PHI decision, redaction) by wrapping them.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom

from benchmarks import pixel_metrics as pm
from benchmarks.bench_gpu import Clock
from pipeline.errors import VeilError
from pipeline.pixel.cache import caches_of
from pipeline.profile.schema import TEXT_DETECTORS
from training.pixel_corpus import load_or_generate

if TYPE_CHECKING:
    from pipeline.engine import DeidResult
    from pipeline.keys import Keyring
    from pipeline.pixel.stage import PixelEngines
    from pipeline.pixel.types import TextDetector, TextRecognizer
    from pipeline.profile import CompiledProfile
    from pipeline.profile.schema import PixelSettings

__all__ = [
    "DETECTORS",
    "BenchmarkError",
    "FileRun",
    "Runner",
    "StageClock",
    "Tally",
    "VeilRun",
    "add_corpus_arguments",
    "add_output_arguments",
    "attempt",
    "load_split",
    "make_detector",
    "make_engines",
    "make_recognizer",
    "print_load_average",
    "print_table",
    "reocr_rows",
]

PROFILE = "dicom-basic"
OPTIONS = ("clean-pixel-data",)
DETECTORS = TEXT_DETECTORS
#: ONNX Runtime intra-op threads per engine: the benchmarks measure one core.
THREADS = 1
#: The pixel stage's steps :class:`StageClock` times (name in the stage, stage label).
STAGE_STEPS = (("views", "decode"), ("decide", "tag"), ("redact", "redact"))

#: Reads, redacts and writes one file (source, target); returns frame 0's redacted mask.
Runner = Callable[[Path, Path], np.ndarray]


class BenchmarkError(VeilError):
    """A benchmark was asked to run something that does not exist."""


def add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--count``, ``--seed``, ``--split`` and ``--corpus`` (the synthetic corpus)."""
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--split", default="test", help="train, validation, test or all")
    parser.add_argument("--corpus", type=Path, default=None,
                        help="corpus directory (default $TMPDIR/veil-pixel-<count>-<seed>)")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--out`` (output directory), ``--no-tesseract`` (skip the re-OCR check) and
    ``--set`` (profile settings, as ``veil deid --set``)."""
    parser.add_argument("--out", type=Path, default=None, help="output directory")
    parser.add_argument("--no-tesseract", action="store_true")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="a profile setting for Veil's run, e.g. text.ner=true (repeatable)")


def settings_of(args: argparse.Namespace) -> dict[str, str]:
    """The ``--set`` pairs as profile overrides."""
    out = {}
    for pair in args.settings:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BenchmarkError(f"--set {pair!r}: expected SECTION.KEY=VALUE")
        out[key.strip()] = value
    return out


def load_split(args: argparse.Namespace) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    """The corpus folder, its manifest (generated when missing) and the split's files."""
    root = args.corpus or Path(tempfile.gettempdir()) / f"veil-pixel-{args.count}-{args.seed}"
    manifest = load_or_generate(root, args.count, args.seed)
    files = [f for f in manifest["files"] if args.split in ("all", f["split"])]
    return root, manifest, files


def make_detector(name: str, settings: PixelSettings, **options: Any) -> TextDetector:
    """The text detector ``name`` (one of ``DETECTORS``) with the profile's thresholds
    (``options``: further PP-OCRv4 settings, e.g. ``fold=False`` for the exported graph)."""
    from pipeline.pixel.stage import make_detector as build

    if name not in DETECTORS:
        raise BenchmarkError(f"unknown text detector {name!r}; choose from {DETECTORS}")
    return build(name, settings.det_threshold, settings.box_threshold, THREADS, **options)


def make_recognizer(read_cache: int = 0, **options: Any) -> TextRecognizer:
    """The PP-OCRv4 recognizer (``options``: its batching, e.g. ``batch_size``), behind a
    read cache of ``read_cache`` entries when > 0."""
    from pipeline.pixel.stage import make_recognizer as build

    return build(THREADS, read_cache, **options)


def make_engines(settings: PixelSettings, detector: str | None = None) -> PixelEngines:
    """Engines for ``settings``: ``detector`` (default the profile's) and the recognizer
    with the profile's read cache."""
    from pipeline.pixel.stage import PixelEngines

    return PixelEngines(make_detector(detector or settings.value("detector"), settings),
                        make_recognizer(int(settings.value("read_cache"))))


@dataclass(frozen=True)
class FileRun:
    """One file through Veil: the result and the seconds of each step."""

    result: DeidResult
    shape: tuple[int, int]
    read_s: float
    deid_s: float
    write_s: float

    @property
    def total_s(self) -> float:
        """Read to write."""
        return self.read_s + self.deid_s + self.write_s


class VeilRun:
    """Veil's pixel chain as the benchmarks run it (see the module notes).

    Parameters
    ----------
    detector : str, optional
        Text detector name (default: the profile's ``pixel.detector``).
    engines : PixelEngines, optional
        Engines to use instead of building them.
    profile, options, overrides
        The profile, its extra options and ``section.key`` settings (``text.ner``: the
        NER model joins the rules in reading the recognised text).
    """

    def __init__(self, detector: str | None = None, *, engines: PixelEngines | None = None,
                 profile: str = PROFILE, options: Sequence[str] = OPTIONS,
                 overrides: Mapping[str, str] | None = None) -> None:
        from pipeline.keys import Keyring
        from pipeline.profile import compile_profile, load_profile

        self.compiled: CompiledProfile = compile_profile(
            load_profile(profile, options=list(options), overrides=overrides))
        self.settings: PixelSettings = self.compiled.profile.pixel
        self.margin = int(self.settings.value("margin"))
        self.keyring: Keyring = Keyring.generate()
        self.engines = engines if engines is not None else make_engines(self.settings, detector)
        #: Each file is timed cold: the read cache (``pixel.read_cache``) is emptied
        #: before it, so a warm-up or a second run of the same file reads it again, and
        #: only the frames of one file share their reads. ``False`` keeps it (a series).
        self.fresh_cache = True
        self._caches = caches_of(self.engines.recognizer)

    def with_engines(self, engines: PixelEngines) -> VeilRun:
        """The same profile and key with other engines."""
        other = object.__new__(VeilRun)
        other.__dict__.update(self.__dict__, engines=engines)
        return other

    def read_cache_cell(self) -> str | None:
        """Crops answered from the read cache out of all crops asked for, since the last
        file began (None when the recognizer has no cache)."""
        if not self._caches:
            return None
        hits = sum(c.hits for c in self._caches)
        asked = hits + sum(c.misses for c in self._caches)
        return f"read cache {hits}/{asked} crops"

    def deidentify(self, ds: pydicom.Dataset) -> DeidResult:
        """De-identify ``ds`` in place."""
        from pipeline.engine import deidentify

        return deidentify(ds, self.compiled, self.keyring, in_place=True,
                          pixel_engines=self.engines)

    def run(self, path: Path, target: Path | None = None) -> FileRun:
        """Read, de-identify and (unless ``target`` is None) write one file, timed."""
        if self.fresh_cache:
            for cache in self._caches:
                cache.clear()
        t0 = time.perf_counter()
        ds = pydicom.dcmread(path)
        t1 = time.perf_counter()
        result = self.deidentify(ds)
        t2 = time.perf_counter()
        if target is not None:
            result.dataset.save_as(target, enforce_file_format=True)
        t3 = time.perf_counter()
        return FileRun(result, (int(ds.Rows), int(ds.Columns)), t1 - t0, t2 - t1, t3 - t2)

    def mask(self, done: FileRun, frame: int = 0) -> np.ndarray:
        """Pixels of ``frame`` the run redacted (finding boxes grown by the margin)."""
        boxes = pm.finding_boxes(done.result.pixel_findings)
        return pm.redaction_mask(done.shape, boxes, self.margin, frame=frame)

    def __call__(self, path: Path, target: Path) -> np.ndarray:
        """A :data:`Runner`: read, de-identify, write; frame 0's redacted mask."""
        return self.mask(self.run(path, target))


class StageClock(Clock):
    """Seconds per stage: wraps the engines and the pixel stage's steps (STAGE_STEPS)."""

    def wrap_iter(self, stage: str, fn: Callable[..., Iterator[Any]]) -> Callable[..., Any]:
        """``fn`` (a generator function) timed while it produces each item."""
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            it = fn(*args, **kwargs)
            while True:
                start = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    self.add(stage, time.perf_counter() - start)
                    return
                self.add(stage, time.perf_counter() - start)
                yield item
        return timed

    def instrument(self, engines: PixelEngines) -> PixelEngines:
        """Time the stage's steps (patched in ``pipeline.pixel.stage``) and ``engines``."""
        from pipeline.pixel import stage

        for name, label in STAGE_STEPS:
            if not callable(getattr(stage, name, None)):
                raise BenchmarkError(f"pipeline.pixel.stage has no {name}() to time")
            wrap = self.wrap_iter if name == "views" else self.wrap
            setattr(stage, name, wrap(label, getattr(stage, name)))
        return stage.PixelEngines(
            _Timed(engines.detector, self, "detect", "detect"),  # type: ignore[arg-type]
            _Timed(engines.recognizer, self, "recognize", "recognise"))  # type: ignore[arg-type]


class _Timed:
    """An engine whose ``method`` is timed into ``clock`` under ``stage``."""

    def __init__(self, inner: Any, clock: Clock, method: str, stage: str) -> None:
        setattr(self, method, clock.wrap(stage, getattr(inner, method)))


@dataclass
class Tally(pm.LineScore):
    """One contender's figures: line scores, seconds per file, crashes, re-OCR leaks."""

    seconds: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    ocr_after: int = 0

    def failures_cell(self) -> str:
        """Crashes by exception class, as a table cell."""
        return ", ".join(f"{k} x{v}" for k, v in self.failures.items()) or "0"


def attempt(runner: Runner, source: Path, target: Path, shape: tuple[int, int],
            tally: Tally) -> tuple[np.ndarray, float, str | None]:
    """Run ``runner`` on one file, timed into ``tally``; a crash is a result.

    Returns the mask (empty after a crash, which ``tally.failures`` counts), the seconds
    and, after a crash, a ``FAILED <class>: ...`` note.
    """
    target.unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        mask = runner(source, target)
    except Exception as exc:  # a crash is a result here: count it, go on
        tally.seconds.append(time.perf_counter() - start)
        tally.failures[type(exc).__name__] += 1
        return np.zeros(shape, dtype=bool), tally.seconds[-1], (
            f"FAILED {type(exc).__name__}: {exc}")
    tally.seconds.append(time.perf_counter() - start)
    return mask, tally.seconds[-1], None


def reocr_rows(before: int, afters: Sequence[int], total: int,
               what: str = "lines") -> list[tuple[str, list[str]]]:
    """Table rows of the re-OCR check: ``before`` (the originals, the positive control)
    and each contender's ``afters``, out of ``total`` PHI {what}."""
    return [(f"PHI {what} Tesseract reads in the original (positive control)",
             [pm.fmt(before, total)] * len(afters)),
            (f"PHI {what} Tesseract still reads after redaction (leak rate)",
             [pm.fmt(after, total) for after in afters])]


def print_table(columns: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> None:
    """A Markdown table with a ``metric`` column, then one column per contender."""
    print("| metric | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for label, cells in rows:
        print(f"| {label} | " + " | ".join(cells) + " |")


def print_load_average() -> None:
    """The closing line every pixel benchmark prints."""
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
