"""Metadata-only de-identification throughput on one core, side by side.

Contenders, each timed over the whole corpus (read from disk, de-identify,
write to a fresh output directory on the same disk):

1. ``pydicom round trip``: ``dcmread`` + ``save_as``; the floor.
2. ``dicognito``: ``dcmread`` + ``dicognito.anonymizer.Anonymizer().anonymize`` + ``save_as``.
3. ``veil``: Veil as a job runs it: the file's bytes through the byte-level fast path
   (:func:`pipeline.fastpath.deidentify_bytes`; ``dcmread`` +
   :func:`pipeline.engine.deidentify` for a file it steps aside from), the bytes
   :func:`pipeline.io.sinks.encode` gives written out; with the ``dicom-basic`` profile;
   also ``hipaa-safe-harbor`` and ``dicom-basic`` + ``clean-descriptors``; on request
   (``--contenders``) ``gdpr``, ``veil-dataset`` (``dcmread`` + the Dataset engine +
   ``save_as``: the path before the byte-level one) and ``veil-ref``: the Dataset
   engine with the reference element walker (:mod:`pipeline.engine_reference`), so that
   one run measures before and after.

Method: the process is pinned to one CPU; every contender gets one untimed
warm-up pass (page cache, imports, lazy tables), then ``--repeat`` timed passes,
interleaved round-robin across contenders; the median pass is reported.
Profiles, keyrings and anonymizers are built outside the timed loop. Every
write uses ``save_as(path, enforce_file_format=True)``. Outputs go to the page
cache (no fsync), as for every contender alike. After timing, the header bytes
(everything before Pixel Data) of every output of the last pass are scanned,
case-insensitively, for the PHI strings the corpus generator wrote.

Run ``python -m benchmarks.bench_metadata [--count 200] [--repeat 3] [--corpus DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import hashlib
import importlib
import io
import os
import platform
import pstats
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from benchmarks.corpus import Corpus, load_or_generate

__all__ = ["Contender", "PassResult", "main", "run_pass", "scan_for_phi"]



class FileStep:
    """A contender that reads and writes files itself (Veil's production path).

    ``step(path, out_path)`` reads ``path``, de-identifies it and writes ``out_path``;
    it returns the seconds spent de-identifying (parsing included for the fast path).
    """

    def __init__(self, run: Callable[[Path, Path], float]) -> None:
        self.run = run
        self.fast = 0
        self.general = 0

    def __call__(self, path: Path, out_path: Path) -> float:
        """Process one file."""
        return self.run(path, out_path)


#: A de-identification step applied in place to a dataset read from disk;
#: it may return a dataset to write instead of the input; or a :class:`FileStep`.
DeidFn = Callable[[Dataset], Dataset | None] | FileStep

_PIXEL_TAGS = (b"\xe0\x7f\x10\x00OW", b"\xe0\x7f\x10\x00OB")


@dataclass
class Contender:
    """One tool under test.

    Attributes
    ----------
    key : str
        Short identifier used by ``--contenders``.
    label : str
        Name printed in the table.
    make : callable
        Builds the per-dataset step (``None`` for the plain round trip); called
        outside the timed loop, once per pass.
    deidentifies : bool
        Whether outputs must be free of corpus PHI.
    """

    key: str
    label: str
    make: Callable[[], DeidFn | None]
    deidentifies: bool = True
    runs: list[PassResult] = field(default_factory=list)
    #: For a :class:`FileStep`: files of the last pass on the fast and the general path.
    paths: tuple[int, int] | None = None

    @property
    def median_s(self) -> float:
        """Median wall time of the timed passes, in seconds."""
        return statistics.median(r.total_s for r in self.runs)

    @property
    def best_s(self) -> float:
        """Shortest wall time of the timed passes (least disturbed by other jobs), in seconds."""
        return min(r.total_s for r in self.runs)

    @property
    def median_deid_s(self) -> float:
        """Median time spent inside the de-identification step, in seconds."""
        return statistics.median(r.deid_s for r in self.runs)


@dataclass
class PassResult:
    """Timing of one pass over the corpus."""

    total_s: float
    deid_s: float
    out_dir: Path


def run_pass(files: SequenceABC[Path], out_dir: Path, step: DeidFn | None) -> PassResult:
    """Read, de-identify and write every file; return the timings.

    Parameters
    ----------
    files : sequence of Path
        Input files.
    out_dir : Path
        Fresh output directory (created here).
    step : callable or None
        De-identification applied to each dataset; ``None`` for a plain round trip.
    """
    out_dir.mkdir(parents=True)
    clock = time.perf_counter
    deid = 0.0
    start = clock()
    for path in files:
        if isinstance(step, FileStep):
            deid += step(path, out_dir / path.name)
            continue
        ds: Dataset = pydicom.dcmread(path)
        if step is not None:
            t0 = clock()
            result = step(ds)
            deid += clock() - t0
            if result is not None:
                ds = result
        ds.save_as(out_dir / path.name, enforce_file_format=True)
    return PassResult(clock() - start, deid, out_dir)


def _header_bytes(data: bytes) -> bytes:
    """Return the bytes before the top-level Pixel Data element (all of it if absent)."""
    cut = max(data.rfind(tag) for tag in _PIXEL_TAGS)
    return data if cut < 0 else data[:cut]


def scan_for_phi(out_dir: Path, phi: SequenceABC[str]) -> dict[str, list[str]]:
    """Scan the header bytes of every output file for the given PHI strings.

    Returns
    -------
    dict
        File name → PHI strings found in it (case-insensitive); empty when clean.
    """
    needles = [(p, p.lower().encode("latin-1")) for p in phi if len(p) >= 3]
    leaks: dict[str, list[str]] = {}
    for path in sorted(out_dir.glob("*.dcm")):
        header = _header_bytes(path.read_bytes()).lower()
        found = [p for p, needle in needles if needle in header]
        if found:
            leaks[path.name] = found
    return leaks


def locate_phi(path: Path, phi: SequenceABC[str]) -> list[str]:
    """Return ``"element: string"`` for every PHI string found in a file's elements."""
    needles = [p for p in phi if len(p) >= 3]
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    found: list[str] = []
    for elem in [*ds.file_meta.iterall(), *ds.iterall()]:
        if elem.VR == "SQ":
            continue
        text = str(elem.value).lower()
        name = elem.keyword or f"{elem.tag} {elem.name}"
        found.extend(f"{name}: {p}" for p in needles if p.lower() in text)
    return sorted(set(found))


def _check_outputs(out_dir: Path, corpus: Corpus) -> tuple[int, int]:
    """Return (readable outputs, outputs whose SOP Instance UID changed)."""
    originals = {}
    for path in corpus.files:
        originals[path.name] = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    readable = changed = 0
    for path in sorted(out_dir.glob("*.dcm")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # counted as unreadable
            continue
        readable += 1
        if ds.get("SOPInstanceUID") != originals.get(path.name):
            changed += 1
    return readable, changed


def _dicognito_factory() -> DeidFn:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer()  # library defaults; one instance per pass, as its docs advise

    def step(ds: Dataset) -> None:
        anonymizer.anonymize(ds)

    return step


def _veil_file_factory(profile: str, options: SequenceABC[str] = ()) -> Callable[[], DeidFn]:
    """Veil as a job runs it: the byte-level fast path, the general path where it steps aside.

    Read the file's bytes, :func:`pipeline.fastpath.deidentify_bytes` (or, on
    ``Unsupported``, ``dcmread`` + :func:`pipeline.engine.deidentify`), write the bytes
    :func:`pipeline.io.sinks.encode` gives (as the job's sink does, without its fsync).
    """
    from pipeline import fastpath
    from pipeline.engine import deidentify
    from pipeline.io.sinks import encode
    from pipeline.keys import Keyring
    from pipeline.profile import compile_profile, load_profile

    compiled = compile_profile(load_profile(profile, options=list(options)))
    keyring = Keyring.generate()

    def make() -> DeidFn:
        def run(path: Path, out_path: Path) -> float:
            data = path.read_bytes()
            t0 = time.perf_counter()
            try:
                result = fastpath.deidentify_bytes(data, compiled, keyring)
                step.fast += 1
            except fastpath.Unsupported:
                result = deidentify(pydicom.dcmread(io.BytesIO(data)), compiled, keyring,
                                    in_place=True)
                step.general += 1
            encoded = encode(result)
            spent = time.perf_counter() - t0
            out_path.write_bytes(encoded)
            return spent

        step = FileStep(run)
        return step

    return make


def _veil_factory(
    profile: str, options: SequenceABC[str] = (), *, reference: bool = False
) -> Callable[[], DeidFn]:
    from pipeline.keys import Keyring
    from pipeline.profile import compile_profile, load_profile

    # Imported by name so that the module stays importable while the engine is absent.
    if reference:  # the element walker before the fast path: the "before" of a comparison
        deidentify = importlib.import_module("pipeline.engine_reference").deidentify_reference
    else:
        deidentify = importlib.import_module("pipeline.engine").deidentify

    compiled = compile_profile(load_profile(profile, options=list(options)))
    keyring = Keyring.generate()

    def make() -> DeidFn:
        def step(ds: Dataset) -> Dataset | None:
            result = deidentify(ds, compiled, keyring, in_place=True)
            out = getattr(result, "dataset", result)  # DeidResult.dataset
            return out if isinstance(out, Dataset) else None

        return step

    return make


#: Contenders run only when named in ``--contenders``.
_OPT_IN = frozenset({"veil-gdpr", "veil-ref", "veil-dataset"})


def build_contenders(selected: SequenceABC[str] | None) -> tuple[list[Contender], str | None]:
    """Return the contenders to run and, if Veil could not be set up, why."""
    contenders = [
        Contender("roundtrip", "pydicom round trip", lambda: None, deidentifies=False),
        Contender("dicognito", "dicognito", _dicognito_factory),
    ]
    veil_error: str | None = None
    veil_specs = [
        ("veil", "veil (dicom-basic)", "dicom-basic", ()),
        ("veil-hipaa", "veil (hipaa-safe-harbor)", "hipaa-safe-harbor", ()),
        (
            "veil-clean",
            "veil (dicom-basic + clean-descriptors)",
            "dicom-basic",
            ("clean-descriptors",),
        ),
        ("veil-gdpr", "veil (gdpr)", "gdpr", ()),
        ("veil-dataset", "veil (dicom-basic, Dataset engine)", "dicom-basic", ()),
        ("veil-ref", "veil (dicom-basic, reference walker)", "dicom-basic", ()),
    ]
    for key, label, profile, options in veil_specs:
        if (selected and key not in selected) or (not selected and key in _OPT_IN):
            continue
        try:
            if key in ("veil-dataset", "veil-ref"):
                factory = _veil_factory(profile, options, reference=key == "veil-ref")
            else:
                factory = _veil_file_factory(profile, options)
            contenders.append(Contender(key, label, factory))
        except Exception as exc:  # engine missing or not ready yet
            veil_error = veil_error or f"{type(exc).__name__}: {exc}"
    if selected:
        contenders = [c for c in contenders if c.key in selected]
    return contenders, veil_error


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(module: str) -> str:
    try:
        mod = __import__(module)
    except ImportError:
        return "not installed"
    return str(getattr(mod, "__version__", "?"))


def _source_digest(package: str = "pipeline") -> str:
    """Return a short SHA-256 over the package's ``.py`` files (identifies the engine state)."""
    try:
        root = Path(importlib.import_module(package).__file__ or "").parent
    except ImportError:
        return "n/a"
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def machine_facts() -> dict[str, str]:
    """Return the facts a result must be recorded with."""
    return {
        "date": dt.date.today().isoformat(),
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "pydicom": pydicom.__version__,
        "dicognito": _version("dicognito"),
        "numpy": _version("numpy"),
        "veil": f"{_version('pipeline')} (pipeline/**/*.py sha256 {_source_digest()})",
        "load average (1/5/15 min) at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _pin_one_cpu(cpu: int | None) -> int:
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[-1] if cpu is None else cpu
    os.sched_setaffinity(0, {chosen})
    return chosen


def start_pixel_run() -> int:
    """Pin to one CPU and print the machine facts of a pixel benchmark; return the CPU."""
    cpu = _pin_one_cpu(None)
    facts = machine_facts()
    facts.pop("dicognito", None)
    for key, value in facts.items():
        print(f"{key}: {value}")
    return cpu


@contextlib.contextmanager
def _workdir(parent: Path | None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="veil-bench-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _fmt_ratio(value: float) -> str:
    return f"{value:.2f}×"


def render_table(contenders: SequenceABC[Contender], n_files: int) -> str:
    """Return the result table as Markdown."""
    base = next((c for c in contenders if c.key == "roundtrip"), None)
    dcg = next((c for c in contenders if c.key == "dicognito"), None)
    lines = [
        "| contender | files/s | ms/file | de-id ms/file | runs (s) "
        "| time vs round trip | best vs best round trip | dicognito time / this |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for c in contenders:
        t = c.median_s
        vs_rt = _fmt_ratio(t / base.median_s) if base else "n/a"
        best = _fmt_ratio(c.best_s / base.best_s) if base else "n/a"
        vs_dcg = _fmt_ratio(dcg.median_s / t) if dcg else "n/a"
        runs = ", ".join(f"{r.total_s:.2f}" for r in c.runs)
        deid = f"{1000 * c.median_deid_s / n_files:.2f}" if c.key != "roundtrip" else "–"
        lines.append(
            f"| {c.label} | {n_files / t:.1f} | {1000 * t / n_files:.2f} | {deid} | {runs} "
            f"| {vs_rt} | {best} | {vs_dcg} |"
        )
    return "\n".join(lines)


def _profile_pass(contender: Contender, files: SequenceABC[Path], out_dir: Path, top: int) -> str:
    profiler = cProfile.Profile()
    step = contender.make()
    profiler.enable()
    run_pass(files, out_dir, step)
    profiler.disable()
    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf).strip_dirs()
    buf.write(f"--- top {top} by cumulative time ---\n")
    stats.sort_stats("cumulative").print_stats(top)
    buf.write(f"--- top {top} by own (total) time ---\n")
    stats.sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def main(argv: SequenceABC[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_metadata",
        description="Metadata-only de-identification throughput on one core.",
    )
    parser.add_argument("--count", type=int, default=200, help="corpus size (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    parser.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="corpus directory to reuse or create (default: a temporary one)",
    )
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: last)")
    parser.add_argument(
        "--contenders",
        default=None,
        help="comma list among roundtrip,dicognito,veil,veil-hipaa,veil-clean, and the opt-in "
        "veil-gdpr,veil-ref (dicom-basic with the reference walker) (default: all but opt-in)",
    )
    parser.add_argument(
        "--profile-top",
        type=int,
        default=0,
        metavar="N",
        help="also cProfile one pass of veil (dicom-basic); print the top N by cumulative time",
    )
    args = parser.parse_args(argv)
    if args.count < 1 or args.repeat < 1:
        parser.error("--count and --repeat must be positive")
    selected = args.contenders.split(",") if args.contenders else None

    cpu = _pin_one_cpu(args.cpu)
    facts = machine_facts()
    print("# Metadata-only throughput")
    print(
        "command: python -m benchmarks.bench_metadata "
        + " ".join(sys.argv[1:] if argv is None else argv)
    )
    for key, value in facts.items():
        print(f"{key}: {value}")
    print(f"pinned to CPU {cpu} (sched_setaffinity); affinity {sorted(os.sched_getaffinity(0))}")

    contenders, veil_error = build_contenders(selected)
    if veil_error:
        print(f"NOTE: Veil contender unavailable ({veil_error}); running the others.")

    with _workdir(args.corpus.parent if args.corpus else None) as work:
        corpus_dir = args.corpus if args.corpus else work / "corpus"
        t0 = time.perf_counter()
        corpus, reused = load_or_generate(corpus_dir, args.count, args.seed)
        action = "reused" if reused else f"generated in {time.perf_counter() - t0:.1f} s"
        print(
            f"corpus: {len(corpus.files)} CT files 512x512x16 bit, explicit VR LE, "
            f"{corpus.bytes_total / 2**20:.1f} MiB, {corpus.elements_per_file:.0f} "
            f"elements/file (nested included), seed {corpus.seed}; {action}; at {corpus_dir}"
        )
        print(
            f"method: 1 untimed warm-up pass per contender, then {args.repeat} timed passes "
            "round-robin; median reported; time.perf_counter around the whole "
            "read+de-id+write loop; fresh output directory per pass under "
            f"{work / 'out'} (same disk, page cache, no fsync)"
        )
        out_root = work / "out"
        files = corpus.files
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a tool's warnings must not cost terminal I/O
            for c in list(contenders):
                try:
                    run_pass(files, out_root / f"{c.key}-warm", c.make())
                except Exception as exc:  # a contender that fails is reported, not timed
                    print(
                        f"DROPPED {c.label}: failed in the warm-up pass: "
                        f"{type(exc).__name__}: {exc}"
                    )
                    contenders.remove(c)
                shutil.rmtree(out_root / f"{c.key}-warm")
            if not contenders:
                return 1
            for r in range(args.repeat):
                for c in contenders:
                    step = c.make()
                    if c.runs:  # keep only the latest pass's outputs on disk
                        shutil.rmtree(c.runs[-1].out_dir)
                    c.runs.append(run_pass(files, out_root / f"{c.key}-{r}", step))
                    if isinstance(step, FileStep):
                        c.paths = (step.fast, step.general)
                    print(
                        f"  pass {r + 1}/{args.repeat} {c.label}: {c.runs[-1].total_s:.3f} s",
                        flush=True,
                    )

        print()
        print(render_table(contenders, len(files)))
        print()
        for c in contenders:
            if c.paths is not None:
                print(f"{c.label}: {c.paths[0]} files on the byte-level fast path, "
                      f"{c.paths[1]} on the general path (last pass)")
        print()
        base = next((c for c in contenders if c.key == "roundtrip"), None)
        dcg = next((c for c in contenders if c.key == "dicognito"), None)
        print(
            "PHI check (header bytes of every output of the last pass, "
            f"{len(corpus.phi)} corpus PHI strings, case-insensitive):"
        )
        for c in contenders:
            out_dir = c.runs[-1].out_dir
            leaks = scan_for_phi(out_dir, corpus.phi)
            readable, changed = _check_outputs(out_dir, corpus)
            verdict = (
                "expected (no de-identification)"
                if not c.deidentifies
                else ("CLEAN" if not leaks else "LEAKS")
            )
            print(
                f"  {c.label}: {len(leaks)}/{len(files)} files contain corpus PHI — {verdict}; "
                f"{readable} readable, {changed} with a new SOP Instance UID"
            )
            if c.deidentifies and leaks:
                first = sorted(leaks)[0]
                where = locate_phi(out_dir / first, corpus.phi)
                more = " …" if len(where) > 16 else ""
                print(f"    in {first}: " + "; ".join(where[:16]) + more)
        veil = next((c for c in contenders if c.key == "veil"), None)
        if veil and base:
            rt_ratio = veil.median_s / base.median_s
            versus = "dicognito not run"
            if dcg:
                dcg_ratio = dcg.median_s / veil.median_s
                versus = f"{'MET' if dcg_ratio > 1 else 'NOT MET'} ({dcg_ratio:.2f}×)"
            print()
            print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            print(
                f"targets: faster than dicognito: {versus}; within 1.5× of the round trip: "
                f"{'MET' if rt_ratio <= 1.5 else 'NOT MET'} ({rt_ratio:.2f}× median, "
                f"{veil.best_s / base.best_s:.2f}× best of {args.repeat})"
            )
        if args.profile_top:
            if veil is None:
                print("--profile-top: the veil contender is not available")
            else:
                print()
                print(
                    f"cProfile of one veil (dicom-basic) pass, top {args.profile_top} "
                    "by cumulative time:"
                )
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    print(_profile_pass(veil, files, out_root / "profile", args.profile_top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
