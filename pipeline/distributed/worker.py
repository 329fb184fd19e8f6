"""The Ray actor that de-identifies batches of instances.

Each actor holds the compiled profile, the keyring and the pixel engines (ONNX
sessions) once, for its whole life; all of them reach it as constructor
arguments, never through process-global settings.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.distributed.sink import IdempotentFolderSink
from pipeline.engine import Pseudonym
from pipeline.io.report import ModelInfo
from pipeline.job import FileOutcome, models_used, process_file
from pipeline.keys import Keyring
from pipeline.profile import CompiledProfile

if TYPE_CHECKING:
    from pipeline.pixel.stage import PixelEngines

__all__ = ["EnginesFactory", "InstanceWorker", "WorkItem", "default_engines_factory"]

log = logging.getLogger(__name__)

#: Builds the pixel engines of a worker from the compiled profile (must be picklable).
EnginesFactory = Callable[[CompiledProfile], "PixelEngines"]


@dataclass(frozen=True)
class WorkItem:
    """One finished input as the driver needs it; the report entry is already JSON."""

    source: str
    status: str
    output: str | None
    requires_review: bool
    pseudonyms: tuple[Pseudonym, ...]
    entry_json: str
    #: Worker seconds the instance took (sizes the next batches; 0.0 when not measured).
    seconds: float = 0.0

    @classmethod
    def of(cls, outcome: FileOutcome, seconds: float = 0.0) -> WorkItem:
        """Convert an outcome (the entry is serialized here, in the worker)."""
        return cls(outcome.source, outcome.status, outcome.output, outcome.requires_review,
                   outcome.pseudonyms, outcome.entry().model_dump_json(), seconds)


def default_engines_factory(compiled: CompiledProfile) -> PixelEngines:
    """The Veil Serve deployments when their app runs on this cluster, else in-process ONNX.

    The choice is logged by :func:`serving.client.resolve_engines`; an app that runs but
    is unhealthy is an error, not a fallback.
    """
    from serving.client import resolve_engines

    return resolve_engines(compiled.profile.pixel)


class InstanceWorker:
    """De-identify batches of files into one output folder.

    Parameters
    ----------
    compiled, keyring
        Profile and key of the job.
    out_dir
        Output folder (shared by all workers).
    engines_factory
        Builds the pixel engines once, when the profile cleans pixels.
    """

    def __init__(
        self,
        compiled: CompiledProfile,
        keyring: Keyring,
        out_dir: str,
        engines_factory: EnginesFactory | None = None,
    ) -> None:
        self._compiled = compiled
        self._keyring = keyring
        self._sink = IdempotentFolderSink(Path(out_dir))
        self._engines: PixelEngines | None = None
        if "clean-pixel-data" in compiled.options:
            self._engines = (engines_factory or default_engines_factory)(compiled)

    def process(self, paths: Sequence[str]) -> list[WorkItem]:
        """De-identify ``paths`` in order; one item each (never raises for bad input),
        with the seconds each took."""
        items = []
        for path in paths:
            start = time.perf_counter()
            outcome = process_file(path, self._sink, self._compiled, self._keyring,
                                   pixel_engines=self._engines)
            items.append(WorkItem.of(outcome, time.perf_counter() - start))
        return items

    def models(self) -> list[ModelInfo]:
        """The models this worker's engines run (provenance for the job report)."""
        return models_used(self._compiled, pixel_engines=self._engines)

    def pid(self) -> int:
        """Process id of the worker (for tests and diagnostics)."""
        return os.getpid()
