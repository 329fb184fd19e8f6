"""Walk SOURCE paths: every file, in a deterministic order, without symlink loops."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.errors import InputError

__all__ = ["iter_sources"]

log = logging.getLogger(__name__)


def iter_sources(
    sources: Iterable[str | os.PathLike[str]],
    *,
    exclude: Iterable[str | os.PathLike[str]] = (),
) -> Iterator[Path]:
    """Yield every file under ``sources``.

    Folders are walked recursively in sorted order; hidden files are yielded
    too (nothing is silently ignored). Symbolic links are followed, but a
    folder already visited (a link loop, or the same folder twice) is not
    walked again.

    Parameters
    ----------
    sources
        Files or folders, in the order given.
    exclude
        Folders whose contents must not be yielded (the output folder, when it
        lies inside a source folder).

    Raises
    ------
    InputError
        When a source does not exist.
    """
    excluded = {_identity(Path(p)) for p in exclude if Path(p).is_dir()}
    visited: set[tuple[int, int]] = set(excluded)
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise InputError("source does not exist", status="failed")
        if path.is_dir():
            yield from _walk(path, visited)
        else:
            yield path


def _identity(path: Path) -> tuple[int, int]:
    """(device, inode) of a folder, following links."""
    st = path.stat()
    return st.st_dev, st.st_ino


def _walk(folder: Path, visited: set[tuple[int, int]]) -> Iterator[Path]:
    """Depth-first walk of ``folder``; entries in sorted name order."""
    try:
        ident = _identity(folder)
    except OSError:
        yield folder  # reported by the reader as unreadable
        return
    if ident in visited:
        log.debug("folder already visited, not walked again")
        return
    visited.add(ident)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        yield folder
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError:
            is_dir = False
        if is_dir:
            yield from _walk(path, visited)
        else:
            yield path
