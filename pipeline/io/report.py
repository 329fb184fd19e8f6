"""The JSON job report and the private pseudonym map, both written atomically.

Neither may live inside the output folder: source paths and the map's
original values can be PHI, and the output folder is what gets shared.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, Field

from pipeline.engine import AttributeAction, Pseudonym
from pipeline.errors import VeilError
from pipeline.io.atomic import atomic_write
from pipeline.pixel.types import PixelFinding

__all__ = [
    "STATUSES",
    "ActionEntry",
    "FileEntry",
    "JobInfo",
    "JobReport",
    "ModelInfo",
    "UsageError",
    "ensure_outside",
    "write_json_atomic",
    "write_map",
    "write_report",
    "write_report_streaming",
]

Status = Literal["ok", "failed", "skipped", "duplicate"]
STATUSES: tuple[Status, ...] = ("ok", "failed", "skipped", "duplicate")


class UsageError(VeilError, ValueError):
    """The command line asks for something unsafe or impossible."""


class ActionEntry(BaseModel):
    """One action on one attribute (never its value)."""

    path: str
    tag: str
    keyword: str
    vr: str
    action: str
    source: str
    note: str = ""

    @classmethod
    def of(cls, action: AttributeAction) -> ActionEntry:
        """Convert an engine action record."""
        return cls(
            path=action.path,
            tag=action.tag,
            keyword=action.keyword,
            vr=action.vr,
            action=action.action,
            source=action.source,
            note=action.note,
        )


class FileEntry(BaseModel):
    """What happened to one input file."""

    source: str
    output: str | None = None
    status: Status
    reason: str | None = None
    requires_review: bool = False
    warnings: list[str] = Field(default_factory=list)
    actions: list[ActionEntry] = Field(default_factory=list)
    pixel_findings: list[PixelFinding] = Field(default_factory=list)


class ProfileInfo(BaseModel):
    """The profile a job ran with."""

    name: str
    content_hash: str
    options: list[str] = Field(default_factory=list)


class ModelInfo(BaseModel):
    """A model a job used: registered (or bundle) name, version, where from, sha256."""

    name: str
    version: str
    source: str
    sha256: str
    alias: str | None = None


class KeyInfo(BaseModel):
    """The key a job ran with (its fingerprint only)."""

    fingerprint: str
    ephemeral: bool


class JobInfo(BaseModel):
    """Job-level facts and counts."""

    veil_version: str
    profile: ProfileInfo
    key: KeyInfo
    output_dir: str
    started_at: str
    ended_at: str
    duration_s: float
    files_per_s: float
    counts: dict[str, int]
    requires_review: int = 0
    models: list[ModelInfo] = Field(default_factory=list)


class JobReport(BaseModel):
    """The whole report: job facts and one entry per input."""

    job: JobInfo
    files: list[FileEntry]

    @property
    def failed(self) -> int:
        """Number of failed inputs."""
        return self.job.counts.get("failed", 0)


def ensure_outside(
    path: str | os.PathLike[str], out_dir: str | os.PathLike[str], what: str
) -> Path:
    """Return ``path`` resolved; raise :class:`UsageError` if it is inside ``out_dir``."""
    resolved = Path(path).resolve()
    root = Path(out_dir).resolve()
    if resolved == root or resolved.is_relative_to(root):
        raise UsageError(f"the {what} must not be inside the output folder (it can contain PHI)")
    return resolved


def write_json_atomic(path: str | os.PathLike[str], data: object, *, mode: int = 0o600) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    atomic_write(target, lambda handle: handle.write(text.encode("utf-8")), mode=mode)


def write_report(report: JobReport, path: str | os.PathLike[str]) -> None:
    """Write the report (mode 0600: source paths can be PHI); see :func:`write_report_streaming`."""
    write_report_streaming(path, report.job, report.files)


def write_report_streaming(
    path: str | os.PathLike[str],
    info: JobInfo,
    entries: Iterable[FileEntry | dict[str, Any]],
    keep: list[FileEntry] | None = None,
) -> None:
    """Write ``{"job": ..., "files": [...]}`` atomically (mode 0600), one entry at a time.

    The job part is indented; each file entry is one compact line (a report of a
    million files stays a million lines, and encoding it stays cheap).

    Parameters
    ----------
    entries
        Entries, or their JSON objects (as ``model_dump(mode="json")`` gives them).
    keep
        When given, every entry written is appended to it (as a model) as well.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)

    def write(handle: BinaryIO) -> None:
        head = json.dumps({"job": info.model_dump(mode="json")}, indent=2, ensure_ascii=False)
        handle.write((head[:-2] + ',\n  "files": [').encode("utf-8"))
        count = 0
        for entry in entries:
            data = entry.model_dump(mode="json") if isinstance(entry, FileEntry) else entry
            text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
            handle.write((("," if count else "") + "\n    " + text).encode("utf-8"))
            count += 1
            if keep is not None:
                keep.append(FileEntry.model_validate(entry))
        handle.write(("\n  ]\n}\n" if count else "]\n}\n").encode("utf-8"))

    atomic_write(target, write, mode=0o600)


def write_map(
    pseudonyms: Iterable[Pseudonym],
    path: str | os.PathLike[str],
    *,
    key_fingerprint: str,
    profile: str,
) -> None:
    """Write the private original -> pseudonym map (mode 0600; it IS PHI)."""
    unique = sorted({(p.kind, p.original, p.pseudonym) for p in pseudonyms})
    write_json_atomic(
        path,
        {
            "warning": "This file links pseudonyms to original identifiers: keep it private.",
            "key_fingerprint": key_fingerprint,
            "profile": profile,
            "entries": [{"kind": k, "original": o, "pseudonym": n} for k, o, n in unique],
        },
    )
