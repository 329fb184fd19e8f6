"""How many instances go into each Ray task.

A file costs a worker anything from about 3 ms (metadata only, byte fast path) to half
a second or more (pixel cleaning on a CPU). A fixed batch size suits one end only: 16
metadata files make a 50 ms task, so the driver's per-batch work (a Ray round trip, one
journal fsync) and Ray's own processes take a large share of a small machine; 16 pixel
files make an 8 s task, so progress is coarse, the last batches leave workers idle and a
lost worker costs 8 s of redone work. :class:`BatchSizer` aims every task at
``target_s`` seconds of worker time, from a running estimate of the per-file cost that
the workers measure and report for each file (``WorkItem.seconds``).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence

__all__ = ["BatchSizer"]


@dataclasses.dataclass
class BatchSizer:
    """Batch sizes aimed at ``target_s`` seconds of work each, learnt as the job runs.

    Parameters
    ----------
    fixed
        Always this size (the ``--batch-size N`` of a user who wants it); None: adaptive.
    target_s
        Worker seconds one batch should take.
    initial
        Size of the first batches, before any cost is known (small: the first results
        arrive early and the estimate is set from them).
    maximum
        Largest batch (bounds the work redone after a lost worker, and a batch's
        report entries in the driver's memory).
    smoothing
        Weight of the newest batch in the running per-file cost (exponential average).
    """

    fixed: int | None = None
    target_s: float = 0.5
    initial: int = 4
    maximum: int = 256
    smoothing: float = 0.3
    #: Running estimate of one file's worker seconds (None until a batch is observed).
    per_file_s: float | None = None

    def __post_init__(self) -> None:
        if self.fixed is not None and self.fixed < 1:
            raise ValueError("a fixed batch size must be at least 1")
        if not (self.target_s > 0 and 1 <= self.initial <= self.maximum
                and 0 < self.smoothing <= 1):
            raise ValueError("batch sizing needs target_s > 0, 1 <= initial <= maximum "
                             "and 0 < smoothing <= 1")

    def size(self) -> int:
        """The size of the next batch."""
        if self.fixed is not None:
            return self.fixed
        if self.per_file_s is None:
            return self.initial
        files = self.target_s / self.per_file_s if self.per_file_s > 0 else math.inf
        if not files < self.maximum:  # a cost of (nearly) nothing: infinity, or overflow
            return self.maximum
        return max(1, math.floor(files))

    def observe(self, seconds: Sequence[float]) -> None:
        """Learn from a finished batch: the worker seconds of each of its instances.

        The batch's median file counts, not its mean: a worker's first file also pays
        for its lazy imports and warm-up (measured: a batch of four cold files gave a
        cost 50x the steady one), and one slow file should not shrink every later batch.
        """
        usable = [s for s in seconds if s >= 0 and math.isfinite(s)]
        if not usable:
            return
        cost = statistics.median(usable)
        if self.per_file_s is None:
            self.per_file_s = cost
        else:
            self.per_file_s += self.smoothing * (cost - self.per_file_s)
