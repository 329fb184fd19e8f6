"""``veil deid`` options of the Ray pipeline (``--workers``, ``--ray-address``, ``--resume``)."""

from __future__ import annotations

import argparse

from pipeline.distributed.cluster import ADDRESS_ENV
from pipeline.distributed.progress import rich_progress
from pipeline.distributed.runner import DistributedJob, RayOptions
from pipeline.io.report import JobReport, UsageError
from pipeline.keys import Keyring
from pipeline.profile import CompiledProfile

__all__ = ["add_distributed_args", "run_distributed"]


def add_distributed_args(parser: argparse.ArgumentParser) -> None:
    """Add the Ray options to ``veil deid``."""
    group = parser.add_argument_group("distributed (Ray)")
    group.add_argument(
        "--workers", type=int, metavar="N",
        help="run on N Ray worker actors (default: the single-process path)",
    )
    group.add_argument(
        "--ray-address", metavar="ADDR",
        help=f"attach to this Ray cluster (default: ${ADDRESS_ENV}, else an embedded local Ray)",
    )
    group.add_argument(
        "--state-dir", metavar="DIR",
        help="job journal folder, outside --out (default: REPORT.state, else OUT.veil-state)",
    )
    group.add_argument("--resume", action="store_true",
                       help="continue the job journaled in the state folder")
    group.add_argument("--batch-size", type=_batch_size, default=None, metavar="N",
                       help="instances per Ray task (default: sized as the job runs, "
                            "about half a second of work per task)")


def _batch_size(text: str) -> int:
    """``--batch-size``: a whole number of instances, at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("must be a whole number of instances, at least 1")
    return int(text)


def run_distributed(
    args: argparse.Namespace, compiled: CompiledProfile, keyring: Keyring
) -> JobReport | None:
    """Run ``veil deid`` on Ray when ``--workers`` is given; None for the serial path."""
    if args.workers is None:
        if args.resume or args.ray_address or args.state_dir:
            raise UsageError("--resume, --ray-address and --state-dir need --workers N")
        return None
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.resume and keyring.ephemeral:
        raise UsageError("--resume needs the job's key (--key-file or $VEIL_KEY_FILE)")
    job = DistributedJob(
        args.sources, args.out, compiled, keyring,
        report_path=args.report, map_path=args.map_file, state_dir=args.state_dir,
        resume=args.resume,
        options=RayOptions(workers=args.workers, address=args.ray_address,
                           batch_size=args.batch_size),
    )
    with rich_progress(show=not args.quiet) as update:
        return job.run(update)
