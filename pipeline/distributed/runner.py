"""Run a de-identification job on Ray actors, resumable from its journal.

The driver walks the sources, skips what the journal says is finished, and
feeds batches to a pool of :class:`~pipeline.distributed.worker.InstanceWorker`
actors with at most ``max_inflight`` batches per worker (bounded memory). Each
finished batch is judged for duplicates, journaled (one fsync) and counted,
then the progress callback runs. At the end the report is streamed from the
journal. See docs/distributed.md.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.distributed.batching import BatchSizer
from pipeline.distributed.cluster import connect, disconnect
from pipeline.distributed.journal import Journal, default_state_dir, sources_digest
from pipeline.distributed.progress import JobProgress, ProgressCallback
from pipeline.distributed.sink import remove_stale_temporaries
from pipeline.distributed.worker import EnginesFactory, InstanceWorker, WorkItem
from pipeline.engine import Pseudonym
from pipeline.errors import VeilError
from pipeline.io.report import (
    STATUSES,
    FileEntry,
    JobReport,
    ModelInfo,
    UsageError,
    write_map,
    write_report_streaming,
)
from pipeline.io.sinks import FolderSink
from pipeline.io.sources import iter_sources
from pipeline.job import FileOutcome, _check_paths, _report, models_used
from pipeline.keys import Keyring
from pipeline.profile import CompiledProfile

__all__ = ["DistributedJob", "JobCancelled", "RayOptions", "run_distributed_job"]

log = logging.getLogger(__name__)

DUPLICATE_REASON = "same output SOP Instance UID as an earlier input"
LOST_REASON = "worker lost while processing this input (retries exhausted)"


class JobCancelled(VeilError):
    """The job was cancelled; its journal is consistent and ``resume`` continues it."""


@dataclasses.dataclass(frozen=True)
class RayOptions:
    """How the job uses Ray.

    Attributes
    ----------
    workers
        Number of worker actors (one CPU each).
    address
        Cluster address (default ``$RAY_ADDRESS``; neither: embedded local Ray).
    batch_size
        Instances per task; None (the default): sized as the job runs so that a task
        takes about ``target_batch_s`` seconds of worker time (:class:`BatchSizer`).
    target_batch_s, max_batch
        The adaptive sizing's aim and largest batch.
    max_inflight
        Batches queued or running per worker.
    max_restarts
        Restarts of a dead worker, and retries of its batch, done by Ray.
    max_attempts
        Submissions of one batch by the driver (a batch that still fails is split
        into single instances, which then fail alone).
    """

    workers: int = 2
    address: str | None = None
    batch_size: int | None = None
    target_batch_s: float = 0.5
    max_batch: int = 256
    max_inflight: int = 2
    max_restarts: int = 3
    max_attempts: int = 2

    def __post_init__(self) -> None:
        if (self.workers < 1 or self.max_inflight < 1 or self.max_batch < 1
                or (self.batch_size is not None and self.batch_size < 1)):
            raise UsageError("workers, batch sizes and in-flight batches must be at least 1")
        if not self.target_batch_s > 0:
            raise UsageError("the target batch time must be positive")

    def sizer(self) -> BatchSizer:
        """The batch sizer these options describe."""
        return BatchSizer(fixed=self.batch_size, target_s=self.target_batch_s,
                          initial=min(BatchSizer.initial, self.max_batch),
                          maximum=self.max_batch)


class DistributedJob:
    """A job over ``sources`` into ``out_dir``; :meth:`run` it, :meth:`cancel` from elsewhere.

    Parameters
    ----------
    sources, out_dir, compiled, keyring, report_path, map_path
        As for :func:`pipeline.job.run_job`.
    state_dir
        Journal folder (default: next to the report, else beside the output folder).
    resume
        Continue the unfinished journal in ``state_dir``.
    options
        Ray settings.
    engines_factory
        Picklable factory of the workers' pixel engines (default: in-process ONNX).
    keep_entries
        Return the report with every entry (else ``files`` is empty and memory stays
        flat; the written report is complete either way).
    """

    def __init__(
        self,
        sources: Sequence[str | os.PathLike[str]],
        out_dir: str | os.PathLike[str],
        compiled: CompiledProfile,
        keyring: Keyring,
        *,
        report_path: str | os.PathLike[str] | None = None,
        map_path: str | os.PathLike[str] | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        resume: bool = False,
        options: RayOptions | None = None,
        engines_factory: EnginesFactory | None = None,
        keep_entries: bool = True,
    ) -> None:
        _check_paths(sources, out_dir, report_path, map_path)
        self.sources = list(sources)
        self.out_dir = Path(out_dir)
        self.compiled, self.keyring = compiled, keyring
        self.report_path, self.map_path = report_path, map_path
        self.state_dir = Path(state_dir or default_state_dir(out_dir, report_path))
        self.resume = resume
        self.options = options or RayOptions()
        self.engines_factory = engines_factory
        self.keep_entries = keep_entries
        self._cancel = threading.Event()
        #: the worker actors of the running job (for diagnostics and tests)
        self.actors: list[Any] = []
        #: how many batches of each size were submitted (for diagnostics and tests)
        self.batch_sizes: Counter[int] = Counter()
        self._outputs: set[str] = set()
        self._counts: Counter[str] = Counter()
        self._review = 0
        self._processed = 0
        self._models: list[ModelInfo] | None = None  # as the workers report them

    def cancel(self) -> None:
        """Stop submitting; finish and journal the batches in flight; :meth:`run` raises."""
        self._cancel.set()

    def run(self, on_progress: ProgressCallback | None = None) -> JobReport:
        """Run (or resume) the job and return its report.

        Raises
        ------
        JobCancelled
            After :meth:`cancel` (KeyboardInterrupt after Ctrl-C), once the batches
            in flight are journaled.
        UsageError, InputError, JournalError
            For unsafe paths, missing sources, or a journal of another job.
        """
        out = self.out_dir
        self._models = None
        exclude = [out] if out.is_dir() else []
        files = [str(p) for p in iter_sources(self.sources, exclude=exclude)]
        try:
            sink = FolderSink(out)
        except OSError as exc:
            raise UsageError(f"cannot create the output folder ({type(exc).__name__})") from None
        journal = Journal(self.state_dir, out, self._header(sink, files), resume=self.resume,
                          keep_pseudonyms=self.map_path is not None)
        for status, output, review in journal.done.values():
            self._counts[status] += 1
            self._review += review
            if status == "ok" and output is not None:
                self._outputs.add(output)
        todo = [f for f in files if f not in journal.done]
        resumed = len(files) - len(todo)
        if journal.resumed:
            log.info("resuming: %d input(s) journaled, %d to go", resumed, len(todo))
        started = dt.datetime.now(dt.UTC)
        t0 = time.perf_counter()

        def report_progress() -> None:
            if on_progress is not None:
                failed = self._counts["failed"]
                on_progress(JobProgress(
                    total=len(files), done=sum(self._counts.values()) - failed, failed=failed,
                    resumed=resumed, processed=self._processed,
                    elapsed_s=time.perf_counter() - t0,
                ))

        report_progress()
        interrupted = False
        if todo:
            interrupted = self._dispatch(todo, journal, report_progress)
        if interrupted or self._cancel.is_set():
            if interrupted:
                raise KeyboardInterrupt
            raise JobCancelled("job cancelled; run it again with resume to finish it")
        remove_stale_temporaries(sink.root)
        journal.finish()
        duration = time.perf_counter() - t0
        models = self._models if self._models is not None else models_used(self.compiled)
        return self._finish(journal, sink, (started, dt.datetime.now(dt.UTC)), duration,
                            models)

    def _header(self, sink: FolderSink, files: list[str]) -> dict[str, Any]:
        return {
            "profile": self.compiled.name,
            "content_hash": self.compiled.content_hash,
            "key": self.keyring.fingerprint,
            "output_dir": str(sink.root),
            "sources": sources_digest(files),
            "pseudonyms": self.map_path is not None,
        }

    def _dispatch(self, todo: list[str], journal: Journal, progress: Any) -> bool:
        """Feed batches to the workers until done or cancelled; True after Ctrl-C."""
        import ray
        from ray.exceptions import RayError

        opts = self.options
        started_ray = connect(opts.workers, opts.address)
        remote = ray.remote(InstanceWorker).options(
            num_cpus=1, max_restarts=opts.max_restarts, max_task_retries=opts.max_restarts,
        )

        def spawn() -> Any:
            return remote.remote(self.compiled, self.keyring, str(self.out_dir.resolve()),
                                 self.engines_factory)

        actors = [spawn() for _ in range(opts.workers)]
        self.actors = actors
        self._models = _worker_models(actors)
        sizer = opts.sizer()
        queue: deque[tuple[list[str], int]] = deque()  # lost batches, resubmitted first
        fresh = 0  # todo[fresh:] is not submitted yet
        inflight: dict[Any, tuple[int, list[str], int]] = {}
        load = [0] * len(actors)
        interrupted = False
        try:
            while queue or fresh < len(todo) or inflight:
                while ((queue or fresh < len(todo)) and not self._cancel.is_set()
                       and min(load) < opts.max_inflight):
                    index = load.index(min(load))
                    if queue:
                        batch, attempt = queue.popleft()
                    else:
                        batch, attempt = todo[fresh:fresh + sizer.size()], 1
                        fresh += len(batch)
                    inflight[actors[index].process.remote(batch)] = (index, batch, attempt)
                    self.batch_sizes[len(batch)] += 1
                    load[index] += 1
                try:
                    ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
                except KeyboardInterrupt:
                    log.warning("interrupted: finishing the batches in flight")
                    interrupted = True
                    self._cancel.set()
                    continue
                for ref in ready:
                    index, batch, attempt = inflight.pop(ref)
                    load[index] -= 1
                    try:
                        outcomes: list[WorkItem] = ray.get(ref)
                    except RayError as exc:
                        log.warning("a worker was lost (%s); batch requeued", type(exc).__name__)
                        ray.kill(actors[index], no_restart=True)
                        if self._cancel.is_set():
                            continue  # not journaled: a resumed job redoes it
                        actors[index] = spawn()
                        outcomes = self._requeue(batch, attempt, queue)
                    if outcomes:
                        sizer.observe([o.seconds for o in outcomes])
                        self._accept(outcomes, journal)
                        progress()
                if self._cancel.is_set():
                    queue.clear()
                    fresh = len(todo)
        finally:
            for actor in actors:
                ray.kill(actor, no_restart=True)
            if started_ray:
                disconnect()
        return interrupted

    def _requeue(
        self, batch: list[str], attempt: int, queue: deque[tuple[list[str], int]]
    ) -> list[WorkItem]:
        """Resubmit a lost batch (split once it failed twice); fail a lone instance."""
        if attempt < self.options.max_attempts:
            queue.appendleft((batch, attempt + 1))
            return []
        if len(batch) > 1:
            queue.extendleft(([source], attempt) for source in reversed(batch))
            return []
        return [WorkItem.of(FileOutcome(batch[0], "failed", reason=LOST_REASON))]

    def _accept(self, items: list[WorkItem], journal: Journal) -> None:
        """Judge duplicates across workers, journal the batch, update the counts."""
        rows: list[tuple[str, str, str | None, bool, str]] = []
        pseudonyms: list[Pseudonym] = []
        for item in items:
            status, output, entry = item.status, item.output, item.entry_json
            if status == "ok" and output is not None:
                if output in self._outputs:
                    data = json.loads(entry)
                    data.update(status="duplicate", output=None, reason=DUPLICATE_REASON)
                    status, output, entry = "duplicate", None, json.dumps(data)
                else:
                    self._outputs.add(output)
            rows.append((item.source, status, output, item.requires_review, entry))
            pseudonyms.extend(item.pseudonyms)
            self._counts[status] += 1
            self._review += item.requires_review
        journal.record_json(rows, pseudonyms)
        self._processed += len(items)

    def _finish(
        self,
        journal: Journal,
        sink: FolderSink,
        times: tuple[dt.datetime, dt.datetime],
        duration: float,
        models: list[ModelInfo],
    ) -> JobReport:
        """Write the map and the report (streamed from the journal); return the report."""
        base = _report([], self.compiled, self.keyring, sink, times, duration)
        info = base.job.model_copy(update={
            "counts": {status: self._counts.get(status, 0) for status in STATUSES},
            "files_per_s": round(self._processed / duration, 2) if duration > 0 else 0.0,
            "requires_review": self._review,
            "models": models,
        })
        if self.map_path is not None:
            write_map(journal.pseudonyms(), self.map_path,
                      key_fingerprint=self.keyring.fingerprint, profile=self.compiled.name)
        kept: list[FileEntry] = []
        entries = journal.iter_entries()
        if self.report_path is not None:
            write_report_streaming(self.report_path, info, entries,
                                   kept if self.keep_entries else None)
        elif self.keep_entries:
            kept.extend(FileEntry.model_validate(e) for e in entries)
        return JobReport(job=info, files=kept)


def run_distributed_job(
    sources: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    compiled: CompiledProfile,
    keyring: Keyring,
    *,
    on_progress: ProgressCallback | None = None,
    **kwargs: Any,
) -> JobReport:
    """Run :class:`DistributedJob` (same keyword arguments) and return its report."""
    return DistributedJob(sources, out_dir, compiled, keyring, **kwargs).run(on_progress)


def _worker_models(actors: list[Any]) -> list[ModelInfo]:
    """The models the workers run, as they report them; they must all agree.

    Raises
    ------
    UsageError
        When a worker cannot load its models (before any file is sent), or the workers
        run different models.
    """
    import ray
    from ray.exceptions import RayError

    try:
        reported = ray.get([actor.models.remote() for actor in actors])
    except RayError as exc:
        cause = getattr(exc, "cause", None)
        cause = cause if isinstance(cause, VeilError) else None
        why = f": {cause}" if cause is not None else f" ({type(exc).__name__})"
        raise UsageError(f"a worker could not load the models the profile needs{why}") from exc
    if any(models != reported[0] for models in reported[1:]):
        raise UsageError("the workers run different models; check their model registry")
    return list(reported[0])

