"""Write the job report from a stream of entries, in the layout of ``write_report``."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.io.atomic import atomic_write
from pipeline.io.report import FileEntry, JobInfo

__all__ = ["write_report_streaming"]


def write_report_streaming(
    path: str | os.PathLike[str],
    info: JobInfo,
    entries: Iterable[FileEntry | dict[str, Any]],
    keep: list[FileEntry] | None = None,
) -> None:
    """Write ``{"job": ..., "files": [...]}`` atomically (mode 0600), one entry at a time.

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
            text = json.dumps(data, indent=2, ensure_ascii=False)
            handle.write((("," if count else "") + "\n" + textwrap.indent(text, "    "))
                         .encode("utf-8"))
            count += 1
            if keep is not None:
                keep.append(FileEntry.model_validate(entry))
        handle.write(("\n  ]\n}\n" if count else "]\n}\n").encode("utf-8"))

    atomic_write(target, write, mode=0o600)
