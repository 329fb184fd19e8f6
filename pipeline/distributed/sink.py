"""An idempotent folder sink: an output is written once, never overwritten.

Ray retries a batch whose worker died, and a resumed job re-processes the
instances its crashed driver had not yet journaled; both write the same bytes
to the same path again (pseudonyms and UIDs are keyed). The write links a
finished temporary file into place (``link`` fails if the target exists, so no
reader ever sees a partial file), and an existing target with the same bytes is
accepted as already written.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from pipeline.engine import DeidResult
from pipeline.io.atomic import TMP_PREFIX
from pipeline.io.sinks import (
    DuplicateOutputError,
    FolderSink,
    _fsync_dir,
    _make_dirs,
    _remove_empty,
    encode,
)

__all__ = ["IdempotentFolderSink", "remove_stale_temporaries"]


class IdempotentFolderSink(FolderSink):
    """Like :class:`FolderSink`, safe to share between processes and to retry.

    Duplicates across inputs are judged by the driver (which sees every output);
    this sink only refuses to replace an existing file with different bytes.
    """

    def write(self, result: DeidResult) -> Path:
        """Write ``result.dataset`` once and return its path.

        Raises
        ------
        DuplicateOutputError
            When the target exists with different bytes (another input had the
            same output SOP Instance UID).
        DeidError
            When the UIDs cannot name a file inside the output folder.
        OSError
            When writing fails; no temporary file is left behind.
        """
        path = self.target(result)
        data = encode(result)
        if _existing(path, data):
            return path
        created = _make_dirs(path.parent, self.root)
        try:
            _link_new(path, data)
        except FileExistsError:
            _remove_empty(created)
            if _existing(path, data):
                return path
            raise _duplicate() from None
        except BaseException:
            _remove_empty(created)
            raise
        _fsync_dir(path.parent)
        return path


def _existing(path: Path, data: bytes) -> bool:
    """True when ``path`` holds ``data``; False when absent.

    Raises
    ------
    DuplicateOutputError
        When ``path`` holds something else.
    """
    try:
        same = path.stat().st_size == len(data) and path.read_bytes() == data
    except FileNotFoundError:
        return False
    if not same:
        raise _duplicate()
    return True


def _duplicate() -> DuplicateOutputError:
    return DuplicateOutputError(
        "same output SOP Instance UID as another input (different content)"
    )


def _link_new(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file, fsync it, and link it to ``path`` (no overwrite)."""
    tmp = path.with_name(f"{TMP_PREFIX}{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def remove_stale_temporaries(root: Path) -> int:
    """Remove temporary files a killed worker left under ``root``; return how many."""
    removed = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if name.startswith(TMP_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))
                    removed += 1
    return removed
