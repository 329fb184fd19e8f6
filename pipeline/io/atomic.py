"""Atomic file writes: a temporary file in the target's folder, fsync, rename."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_PREFIX = ".veil-tmp-"


def atomic_write(path: Path, write: Callable[[BinaryIO], object], *, mode: int = 0o644) -> None:
    """Call ``write`` on a temporary file, then rename it over ``path``.

    Nothing is left behind when ``write`` (or anything after it) fails.
    """
    tmp = path.with_name(f"{TMP_PREFIX}{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
