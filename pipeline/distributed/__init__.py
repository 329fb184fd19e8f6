"""Ray-distributed de-identification jobs: sharding, progress, fault tolerance, resume.

See docs/distributed.md for the design. Ray is imported only when a job runs.
"""

from pipeline.distributed.cluster import RayUnavailableError
from pipeline.distributed.journal import JournalError, default_state_dir
from pipeline.distributed.progress import JobProgress, ProgressCallback, rich_progress
from pipeline.distributed.runner import (
    DistributedJob,
    JobCancelled,
    RayOptions,
    run_distributed_job,
)
from pipeline.distributed.worker import EnginesFactory, InstanceWorker

__all__ = [
    "DistributedJob",
    "EnginesFactory",
    "InstanceWorker",
    "JobCancelled",
    "JobProgress",
    "JournalError",
    "ProgressCallback",
    "RayOptions",
    "RayUnavailableError",
    "default_state_dir",
    "rich_progress",
    "run_distributed_job",
]
