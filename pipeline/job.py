"""A de-identification job: walk sources, process each file, report.

:func:`process_file` is the unit of work (read, de-identify, write) and never
raises for a bad input; :func:`run_job` maps it over the inputs in order.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from pipeline import __version__, fastpath
from pipeline.engine import AttributeAction, DeidResult, Pseudonym, deidentify
from pipeline.errors import InputError, VeilError
from pipeline.io.reader import read_instance
from pipeline.io.report import (
    STATUSES,
    ActionEntry,
    FileEntry,
    JobInfo,
    JobReport,
    KeyInfo,
    ModelInfo,
    ProfileInfo,
    UsageError,
    ensure_outside,
    write_map,
    write_report,
)
from pipeline.io.sinks import DuplicateOutputError, FolderSink
from pipeline.io.sources import iter_sources
from pipeline.keys import Keyring
from pipeline.profile import CompiledProfile

if TYPE_CHECKING:
    from pipeline.pixel.stage import PixelEngines
    from pipeline.pixel.types import PixelFinding

__all__ = ["FileOutcome", "process_file", "run_job"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one input (picklable; no values except in ``pseudonyms``)."""

    source: str
    status: str
    output: str | None = None
    reason: str | None = None
    warnings: tuple[str, ...] = ()
    actions: tuple[AttributeAction, ...] = ()
    pseudonyms: tuple[Pseudonym, ...] = ()
    pixel_findings: tuple[PixelFinding, ...] = ()
    requires_review: bool = False

    def entry(self) -> FileEntry:
        """The report entry (pseudonyms stay out of the report)."""
        return FileEntry(
            source=self.source,
            output=self.output,
            status=self.status,  # type: ignore[arg-type]
            reason=self.reason,
            requires_review=self.requires_review,
            warnings=list(self.warnings),
            actions=[ActionEntry.of(a) for a in self.actions],
            pixel_findings=list(self.pixel_findings),
        )


def process_file(
    path: str | os.PathLike[str],
    sink: FolderSink,
    compiled: CompiledProfile,
    keyring: Keyring,
    *,
    pixel_engines: PixelEngines | None = None,
) -> FileOutcome:
    """Read, de-identify (in place) and write one file; never raise for a bad input.

    Parameters
    ----------
    path
        Input file.
    sink
        Where the de-identified instance goes.
    compiled
        Compiled profile.
    keyring
        Secret key of the run.
    pixel_engines
        Text detector and recognizer for clean-pixel-data (default: built in-process).

    Returns
    -------
    FileOutcome
        ``ok`` with the output path relative to the sink's folder, or
        ``failed`` / ``skipped`` / ``duplicate`` with a reason free of values.
    """
    source = str(path)
    with warnings.catch_warnings():
        # pydicom's warnings quote values; they must not reach the console.
        warnings.simplefilter("ignore")
        try:
            result, data = _fast(path, compiled, keyring)
        except Exception as exc:
            return _unexpected(source, "de-identification", exc)
        if result is None:
            try:
                ds = read_instance(path, data)
            except InputError as exc:
                return FileOutcome(source, exc.status, reason=str(exc))
            except Exception as exc:
                return _unexpected(source, "reading", exc)
            try:
                result = deidentify(ds, compiled, keyring, in_place=True,
                                    pixel_engines=pixel_engines)
            except VeilError as exc:
                return FileOutcome(source, "failed", reason=f"de-identification failed: {exc}")
            except Exception as exc:
                return _unexpected(source, "de-identification", exc)
        try:
            written = sink.write(result)
        except DuplicateOutputError as exc:
            return _with_result(source, "duplicate", None, str(exc), result)
        except VeilError as exc:
            return FileOutcome(source, "failed", reason=f"write failed: {exc}")
        except OSError as exc:
            return FileOutcome(source, "failed", reason=f"write failed ({type(exc).__name__})")
        except Exception as exc:
            return _unexpected(source, "writing", exc)
    output = written.relative_to(sink.root).as_posix()
    return _with_result(source, "ok", output, None, result)


def _fast(
    path: str | os.PathLike[str], compiled: CompiledProfile, keyring: Keyring
) -> tuple[DeidResult | None, bytes | None]:
    """The byte-level fast path's result (None where the general path must run), and the
    file's bytes when they were read (so the general path does not read them again).

    The general path (read with pydicom, :func:`pipeline.engine.deidentify`) handles
    every file the fast path does not, and gives the canonical reason for bad ones.
    """
    if not fastpath.applies(compiled):
        return None, None
    try:
        file = Path(path)
        if not file.is_file():
            return None, None
        data = file.read_bytes()
    except OSError:
        return None, None
    try:
        return fastpath.deidentify_bytes(data, compiled, keyring), data
    except fastpath.Unsupported:
        return None, data


def _with_result(
    source: str, status: str, output: str | None, reason: str | None, result: DeidResult
) -> FileOutcome:
    """An outcome that carries what the engine did."""
    return FileOutcome(
        source,
        status,
        output=output,
        reason=reason,
        warnings=result.warnings,
        actions=result.actions,
        pseudonyms=result.pseudonyms,
        pixel_findings=result.pixel_findings,
        requires_review=result.requires_review,
    )


def _unexpected(source: str, stage: str, exc: BaseException) -> FileOutcome:
    """A failed outcome for an exception nobody expected: its class name only.

    The message may quote a value, so it is neither reported nor logged; the
    traceback's locations (file, line, function) are logged at debug level.
    """
    name = type(exc).__name__
    log.error("unexpected %s during %s of an input (see the report)", name, stage)
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in frames:
        log.debug("  at %s:%s in %s", frame.filename, frame.lineno, frame.name)
    return FileOutcome(source, "failed", reason=f"unexpected error during {stage} ({name})")


def run_job(
    sources: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    compiled: CompiledProfile,
    keyring: Keyring,
    *,
    report_path: str | os.PathLike[str] | None = None,
    map_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> JobReport:
    """De-identify every file under ``sources`` into ``out_dir``.

    Parameters
    ----------
    sources
        Files or folders (walked recursively).
    out_dir
        Output folder; must not contain a source, the report or the map.
    compiled, keyring
        Profile and key of the run.
    report_path
        Where to write the JSON report (outside ``out_dir``).
    map_path
        Where to write the private pseudonym map (outside ``out_dir``).
    progress
        Show a progress bar on stderr.

    Raises
    ------
    UsageError
        When the report, the map or a source lies inside the output folder.
    InputError
        When a source does not exist.
    """
    _check_paths(sources, out_dir, report_path, map_path)
    models = models_used(compiled)
    out = Path(out_dir)
    exclude = [out] if out.is_dir() else []
    files = list(iter_sources(sources, exclude=exclude))
    try:
        sink = FolderSink(out)
    except OSError as exc:
        raise UsageError(f"cannot create the output folder ({type(exc).__name__})") from None
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    entries: list[FileEntry] = []
    pseudonyms: set[Pseudonym] = set()
    for outcome in _run(files, sink, compiled, keyring, progress):
        entries.append(outcome.entry())
        if map_path is not None:
            pseudonyms.update(outcome.pseudonyms)
    duration = time.perf_counter() - t0
    ended = dt.datetime.now(dt.UTC)
    report = _report(entries, compiled, keyring, sink, (started, ended), duration)
    report.job.models = models
    if map_path is not None:
        write_map(pseudonyms, map_path, key_fingerprint=keyring.fingerprint, profile=compiled.name)
    if report_path is not None:
        write_report(report, report_path)
    return report


def _check_paths(
    sources: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    report_path: str | os.PathLike[str] | None,
    map_path: str | os.PathLike[str] | None,
) -> None:
    """Refuse reports, maps and sources inside the output folder."""
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise UsageError("the output path exists and is not a folder")
    if report_path is not None:
        ensure_outside(report_path, out_dir, "report")
    if map_path is not None:
        ensure_outside(map_path, out_dir, "pseudonym map")
    if (
        report_path is not None
        and map_path is not None
        and Path(report_path).resolve() == Path(map_path).resolve()
    ):
        raise UsageError("the report and the pseudonym map must be different files")
    root = Path(out_dir).resolve()
    for source in sources:
        resolved = Path(source).resolve()
        if resolved == root or resolved.is_relative_to(root):
            raise UsageError("a source must not be the output folder or lie inside it")


def _run(
    files: list[Path],
    sink: FolderSink,
    compiled: CompiledProfile,
    keyring: Keyring,
    show: bool,
) -> Iterable[FileOutcome]:
    """Process ``files`` in order, with a progress bar on stderr when ``show``."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    console = Console(stderr=True)
    with Progress(*columns, console=console, disable=not show) as bar:
        task = bar.add_task("de-identifying", total=len(files))
        for path in files:
            outcome = process_file(path, sink, compiled, keyring)
            log.debug("input processed: %s", outcome.status)
            bar.advance(task)
            yield outcome


class _RateColumn(ProgressColumn):
    """Files per second."""

    def render(self, task: Task) -> Text:
        """Render the current rate."""
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("- files/s", style="progress.data.speed")
        return Text(f"{speed:.1f} files/s", style="progress.data.speed")


def _report(
    entries: list[FileEntry],
    compiled: CompiledProfile,
    keyring: Keyring,
    sink: FolderSink,
    times: tuple[dt.datetime, dt.datetime],
    duration: float,
) -> JobReport:
    """Assemble the job report."""
    counts = Counter(e.status for e in entries)
    info = JobInfo(
        veil_version=__version__,
        profile=ProfileInfo(
            name=compiled.name,
            content_hash=compiled.content_hash,
            options=list(compiled.profile.options),
        ),
        key=KeyInfo(fingerprint=keyring.fingerprint, ephemeral=keyring.ephemeral),
        output_dir=str(sink.root),
        started_at=times[0].isoformat(),
        ended_at=times[1].isoformat(),
        duration_s=round(duration, 3),
        files_per_s=round(len(entries) / duration, 2) if duration > 0 else 0.0,
        counts={status: counts.get(status, 0) for status in STATUSES},
        requires_review=sum(e.requires_review for e in entries),
    )
    return JobReport(job=info, files=entries)


def models_used(
    compiled: CompiledProfile, *, pixel_engines: PixelEngines | None = None,
    tagger: object | None = None,
) -> list[ModelInfo]:
    """The models of the engines the job runs, as the engines say (provenance).

    ``pixel_engines`` and ``tagger`` are the engines in use; by default those the
    serial path uses (:func:`~pipeline.pixel.stage.engines_for` when the profile cleans
    pixels, :func:`~pipeline.text.tagger.tagger_for` when ``text.ner`` is on: built once
    per process, so the job's files run with these very engines).

    Raises
    ------
    UsageError
        When a model the profile needs is missing or fails its check, or an engine in
        use does not say which model it runs (before any file).
    """
    from pipeline.registry import engine_refs

    settings = compiled.profile.text
    try:
        used: list[tuple[str, object]] = []
        if "clean-pixel-data" in compiled.options:
            from pipeline.pixel.stage import engines_for

            pixel = pixel_engines or engines_for(compiled.profile.pixel)
            used += [("text detector", pixel.detector), ("text recognizer", pixel.recognizer)]
        if tagger is None and settings is not None and settings.ner:
            from pipeline.text.tagger import tagger_for

            tagger = tagger_for(settings)
        if tagger is not None:
            used.append(("PHI tagger", tagger))
    except VeilError as exc:
        raise UsageError(f"a model the profile needs is unavailable: {exc}") from exc
    refs = []
    for what, engine in used:
        found = engine_refs(engine)
        needs_model = what != "PHI tagger" or (settings is not None and settings.ner)
        if not found and needs_model:
            members = [type(m).__name__ for m in getattr(engine, "taggers", ())]
            label = type(engine).__name__ + (f": {', '.join(members)}" if members else "")
            raise UsageError(f"the {what} in use ({label}) does not say which model it "
                             "runs: its provenance cannot be recorded")
        refs += [r for r in found if r not in refs]
    return [ModelInfo(name=r.name, version=r.version, source=r.source, sha256=r.sha256,
                      alias=r.alias) for r in refs]
