"""A private network namespace for local Ray clusters (tests, benchmarks, ``veil serve``).

Ray's gRPC servers (GCS, raylet, workers, the dashboard agent) listen on every
interface whatever ``_node_ip_address`` says. On one machine nothing needs to reach them
from outside, so the calling thread moves into a new network namespace whose only
interface is loopback: Ray's processes and threads, started from that thread, inherit
it, and nothing listens on a reachable address. Root only (Linux ``CAP_SYS_ADMIN``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.errors import VeilError

logger = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000


class NetnsError(VeilError, RuntimeError):
    """A private network namespace could not be created or left."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def available() -> bool:
    """Whether this process may create a network namespace (Linux, root, ``ip`` found)."""
    return (
        os.name == "posix"
        and os.path.exists("/proc/self/ns/net")
        and os.geteuid() == 0
        and shutil.which("ip") is not None
    )


@contextmanager
def isolated_network() -> Iterator[str]:
    """Run the block in a new network namespace with only ``lo`` (up); restore on exit.

    Applies to the calling thread and to the threads and processes it starts inside the
    block. Sockets opened inside keep working after the exit but are unreachable from
    the host network. Yields a path naming the original namespace while the block runs
    (for ``nsenter --net=PATH``).

    Raises
    ------
    NetnsError
        When the namespace cannot be created (not root, no ``ip``) or left.
    """
    if not available():
        raise NetnsError("a network namespace needs Linux, root and the 'ip' command")
    libc = _libc()
    original = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"unshare(CLONE_NEWNET) failed: {os.strerror(err)}")
        try:
            subprocess.run([shutil.which("ip") or "ip", "link", "set", "lo", "up"],
                           check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            _restore(libc, original)
            raise NetnsError("could not bring loopback up in the new namespace") from exc
        logger.info("entered a private network namespace (loopback only)")
        try:
            yield f"/proc/{os.getpid()}/fd/{original}"
        finally:
            _restore(libc, original)
            logger.info("left the private network namespace")
    finally:
        os.close(original)


def _restore(libc: ctypes.CDLL, fd: int) -> None:
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"setns back to the original network namespace failed: "
                         f"{os.strerror(err)}")
