"""Progress of a distributed job: counts for callbacks, and a rich display."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["JobProgress", "ProgressCallback", "rich_progress"]


@dataclass(frozen=True)
class JobProgress:
    """Where a job stands; ``done + failed + pending == total`` always.

    ``done`` counts inputs finished without failure (ok, skipped, duplicate),
    including those a resumed job found in its journal (``resumed``); a slice is
    one instance.
    """

    total: int
    done: int
    failed: int
    resumed: int
    processed: int
    elapsed_s: float

    @property
    def pending(self) -> int:
        """Inputs not finished yet."""
        return self.total - self.done - self.failed

    @property
    def slices_per_s(self) -> float:
        """Instances finished per second by this run (journaled ones excluded)."""
        return self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0


ProgressCallback = Callable[[JobProgress], None]


@contextmanager
def rich_progress(show: bool = True) -> Iterator[ProgressCallback]:
    """A progress bar on stderr: done / failed / pending and slices/s."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}", style="progress.data.speed"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), disable=not show) as bar:
        task = bar.add_task("de-identifying (ray)", total=None, detail="starting workers")

        def update(p: JobProgress) -> None:
            detail = (
                f"done {p.done} | failed {p.failed} | pending {p.pending} | "
                f"{p.slices_per_s:.1f} slices/s"
            )
            bar.update(task, total=p.total, completed=p.done + p.failed, detail=detail)

        yield update
