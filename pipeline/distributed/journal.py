"""The job journal: an append-only, fsynced JSONL file that makes a job resumable.

One header line names the job (profile hash, key fingerprint, output folder, a
hash of the sources); then one line per finished input, holding its report entry
(statuses, actions, reasons: never a DICOM value); ``{"type": "done"}`` closes a
finished job. A line torn by a crash is cut off when the journal is reopened.
Pseudonyms (original values) go to a separate private file, only when a
pseudonym map was asked for. Both live in a state folder outside the output folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.engine import Pseudonym
from pipeline.io.report import FileEntry, UsageError, ensure_outside

__all__ = ["Journal", "JournalError", "default_state_dir", "sources_digest"]

log = logging.getLogger(__name__)

JOURNAL = "journal.jsonl"
PSEUDONYMS = "pseudonyms.jsonl"
FORMAT = 1


class JournalError(UsageError):
    """The journal cannot be read or does not belong to this job."""


def default_state_dir(
    out_dir: str | os.PathLike[str], report_path: str | os.PathLike[str] | None
) -> Path:
    """``<report>.state`` next to the report, else ``<out>.veil-state`` beside the output."""
    if report_path is not None:
        report = Path(report_path).resolve()
        return report.with_name(report.name + ".state")
    out = Path(out_dir).resolve()
    return out.with_name(out.name + ".veil-state")


def sources_digest(files: Sequence[str]) -> str:
    """sha256 over the list of input paths (a resumed job must walk the same inputs)."""
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode("utf-8", "surrogateescape") + b"\x00")
    return digest.hexdigest()


class Journal:
    """Open (or create) the journal of a job in ``state_dir``.

    Parameters
    ----------
    state_dir
        Folder of the journal; must lie outside ``out_dir``.
    out_dir
        Output folder of the job.
    header
        What identifies the job (compared with the stored header on resume).
    resume
        Continue an unfinished journal; without it an unfinished journal is an error
        and a finished one is replaced.
    keep_pseudonyms
        Also journal pseudonyms (for the private map).
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        header: dict[str, Any],
        *,
        resume: bool,
        keep_pseudonyms: bool,
    ) -> None:
        self.dir = ensure_outside(state_dir, out_dir, "job state folder")
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.dir / JOURNAL
        self.pseudonym_path = self.dir / PSEUDONYMS if keep_pseudonyms else None
        self.header = {"type": "job", "format": FORMAT, **header}
        #: source -> (status, output, requires_review) of every journaled input
        self.done: dict[str, tuple[str, str | None, bool]] = {}
        self.resumed = False
        records = list(_read(self.path))
        finished = bool(records) and records[-1].get("type") == "done"
        if records and not finished and not resume:
            raise UsageError(
                f"an unfinished job journal exists in {self.dir}; pass --resume to continue "
                "it, or remove that folder to start over"
            )
        if records and resume:
            self._check(records[0])
            self.resumed = True
            for record in records[1:]:
                if record.get("type") == "file":
                    entry = record["entry"]
                    self.done[entry["source"]] = (
                        entry["status"], entry.get("output"), bool(entry.get("requires_review"))
                    )
            if finished:
                self._drop_last_line()
        else:
            for stale in (self.path, self.dir / PSEUDONYMS):
                stale.unlink(missing_ok=True)
            self._append([self.header])
        if self.pseudonym_path is not None:
            _truncate_torn(self.pseudonym_path)

    def _check(self, stored: dict[str, Any]) -> None:
        """Refuse to resume a journal written for another job."""
        for key, value in self.header.items():
            if key in ("started_at",):
                continue
            if stored.get(key) != value:
                raise JournalError(
                    f"the journal in {self.dir} belongs to another job ({key} differs); "
                    "remove it to start over"
                )

    def record(self, entries: Iterable[FileEntry], pseudonyms: Iterable[Pseudonym]) -> None:
        """Append finished inputs (one fsync), pseudonyms first."""
        batch = list(entries)
        self.record_json(
            [(e.source, e.status, e.output, e.requires_review, e.model_dump_json())
             for e in batch],
            pseudonyms,
        )

    def record_json(
        self,
        items: Sequence[tuple[str, str, str | None, bool, str]],
        pseudonyms: Iterable[Pseudonym],
    ) -> None:
        """Append ``(source, status, output, requires_review, entry JSON)`` rows (one fsync)."""
        if self.pseudonym_path is not None:
            rows = sorted({(p.kind, p.original, p.pseudonym) for p in pseudonyms})
            if rows:
                _append_lines(self.pseudonym_path, [json.dumps(rows, ensure_ascii=False)])
        _append_lines(self.path, [f'{{"type": "file", "entry": {row[4]}}}' for row in items])
        for source, status, output, review, _entry in items:
            self.done[source] = (status, output, review)

    def iter_entries(self) -> Iterator[dict[str, Any]]:
        """Stream the journaled report entries as JSON objects, in journal order."""
        for record in _read(self.path):
            if record.get("type") == "file":
                yield record["entry"]

    def _drop_last_line(self) -> None:
        """Remove the ``done`` mark of a finished journal that is resumed."""
        with self.path.open("r+b") as handle:
            end = handle.seek(0, os.SEEK_END)
            handle.truncate(_last_newline(handle, end - 1) + 1)

    def finish(self) -> None:
        """Mark the job finished."""
        self._append([{"type": "done"}])

    def pseudonyms(self) -> set[Pseudonym]:
        """Every pseudonym journaled so far (empty when not kept)."""
        found: set[Pseudonym] = set()
        if self.pseudonym_path is None or not self.pseudonym_path.exists():
            return found
        for line in self.pseudonym_path.read_text(encoding="utf-8").splitlines():
            found.update(Pseudonym(*row) for row in json.loads(line))
        return found

    def _append(self, records: Iterable[dict[str, Any]]) -> None:
        _append_lines(self.path, [json.dumps(r, ensure_ascii=False) for r in records])


def _append_lines(path: Path, lines: list[str]) -> None:
    """Append whole lines and fsync (mode 0600: source paths can be PHI)."""
    if not lines:
        return
    data = ("\n".join(lines) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _truncate_torn(path: Path) -> None:
    """Cut a last line without its newline (a crash during an append)."""
    if not path.exists():
        return
    with path.open("r+b") as handle:
        end = handle.seek(0, os.SEEK_END)
        if end == 0:
            return
        handle.seek(end - 1)
        if handle.read(1) == b"\n":
            return
        log.warning("journal: dropping a torn last line")
        handle.truncate(_last_newline(handle, end - 1) + 1)


def _last_newline(handle: BinaryIO, before: int) -> int:
    """Offset of the last newline before offset ``before`` (-1 when none); reads the tail only."""
    position = before
    while position > 0:
        start = max(0, position - 65536)
        handle.seek(start)
        found = handle.read(position - start).rfind(b"\n")
        if found >= 0:
            return start + found
        position = start
    return -1


def _read(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a journal (a torn last line is cut off first)."""
    if not path.exists():
        return
    _truncate_torn(path)
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise JournalError(f"journal line {number} is not JSON") from exc
            if not isinstance(record, dict):
                raise JournalError(f"journal line {number} is not a record")
            yield record
