"""Connect to Ray: an embedded local instance on demand, or a cluster by address."""

from __future__ import annotations

import logging
import os

from pipeline.io.report import UsageError

__all__ = ["ADDRESS_ENV", "RayUnavailableError", "connect", "disconnect"]

log = logging.getLogger(__name__)

ADDRESS_ENV = "RAY_ADDRESS"
#: Object store of an embedded instance: batches are small, results are report entries.
OBJECT_STORE_BYTES = 128 * 1024 * 1024


class RayUnavailableError(UsageError):
    """Ray is not installed or cannot start / reach the cluster."""


def connect(workers: int, address: str | None = None) -> bool:
    """Make sure this process is connected to Ray; return whether this call connected it.

    Parameters
    ----------
    workers
        CPUs of an embedded instance (one per worker).
    address
        Cluster address; default ``$RAY_ADDRESS``; neither: start a local instance
        (no dashboard, node address 127.0.0.1).
    """
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailableError("Ray is not installed (pip install 'ray[default]')") from exc
    if ray.is_initialized():
        return False
    target = address or os.environ.get(ADDRESS_ENV)
    try:
        if target:
            log.info("attaching to the Ray cluster given by address")
            ray.init(address=target, logging_level=logging.WARNING, log_to_driver=False)
        else:
            log.info("starting an embedded Ray instance with %d CPU(s)", workers)
            ray.init(
                address="local",
                num_cpus=workers,
                include_dashboard=False,
                object_store_memory=OBJECT_STORE_BYTES,
                _node_ip_address="127.0.0.1",
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnavailableError(f"cannot start or reach Ray ({type(exc).__name__})") from exc
    return True


def disconnect() -> None:
    """Disconnect (and stop an embedded instance)."""
    import ray

    ray.shutdown()
