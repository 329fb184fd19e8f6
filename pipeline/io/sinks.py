"""Write de-identified datasets to a folder, atomically, named by their new UIDs."""

from __future__ import annotations

import io
import os
import re
import threading
from pathlib import Path

from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pipeline.engine import DeidResult
from pipeline.errors import DeidError, VeilError
from pipeline.io.atomic import TMP_PREFIX, atomic_write

__all__ = ["TMP_PREFIX", "DuplicateOutputError", "FolderSink"]

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class DuplicateOutputError(VeilError):
    """An earlier input of this run already produced the same output SOP Instance UID."""


class FolderSink:
    """Write ``<study_uid>/<series_uid>/<sop_uid>.dcm`` under ``out_dir``.

    Parameters
    ----------
    out_dir
        Output folder; created if missing.
    """

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.root = Path(out_dir).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._written: set[str] = set()
        self._lock = threading.Lock()

    def target(self, result: DeidResult) -> Path:
        """Absolute output path of ``result``; refuses anything outside ``root``."""
        parts = (result.study_uid, result.series_uid, result.sop_uid)
        for uid in parts:
            if len(uid) > 64 or not _UID.match(uid):
                raise DeidError("output UID is not a valid UID; refusing to use it as a name")
        path = self.root.joinpath(parts[0], parts[1], f"{parts[2]}.dcm")
        if not path.resolve().is_relative_to(self.root):
            raise DeidError("output path would fall outside the output folder")
        return path

    def write(self, result: DeidResult) -> Path:
        """Write ``result.dataset`` atomically and return its path.

        Raises
        ------
        DuplicateOutputError
            When this sink already wrote the same SOP Instance UID.
        DeidError
            When the UIDs cannot name a file inside the output folder.
        OSError
            When writing fails; no temporary file is left behind.
        """
        path = self.target(result)
        with self._lock:
            if result.sop_uid in self._written:
                raise DuplicateOutputError("same output SOP Instance UID as an earlier input")
            self._written.add(result.sop_uid)
        try:
            created = _make_dirs(path.parent, self.root)
            try:
                _atomic_write(path, result)
            except BaseException:
                _remove_empty(created)
                raise
        except BaseException:
            with self._lock:
                self._written.discard(result.sop_uid)
            raise
        return path


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Give a dataset read without file meta the transfer syntax it was read in."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = FileMetaDataset()
        ds.file_meta = meta
    if "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        implicit, little = True, True
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _make_dirs(folder: Path, root: Path) -> list[Path]:
    """Create ``folder`` (under ``root``); return the folders created, deepest first."""
    created: list[Path] = []
    current = folder
    while current != root and not current.exists():
        created.append(current)
        current = current.parent
    folder.mkdir(parents=True, exist_ok=True)
    return created


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders this write created, if they are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def encode(result: DeidResult) -> bytes:
    """The file bytes of ``result``: its encoding from the fast path, else written here."""
    if result.encoded is not None:
        return result.encoded
    _ensure_transfer_syntax(result.dataset)
    buffer = io.BytesIO()
    dcmwrite(buffer, result.dataset, enforce_file_format=True)
    return buffer.getvalue()


def _atomic_write(path: Path, result: DeidResult) -> None:
    """Write ``result`` atomically under ``path`` and persist the rename."""
    data = encode(result)
    atomic_write(path, lambda handle: handle.write(data))
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Persist the rename (best effort; not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
