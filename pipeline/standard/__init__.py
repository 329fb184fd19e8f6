"""The DICOM PS3.15 tables Veil works from, loaded from the generated JSON files.

The files in ``data/`` are written by ``python -m pipeline.standard.generate`` from the
standard's DocBook XML; never edit them by hand. Every loader is cached and raises
:class:`pipeline.errors.StandardTableError` if a file is missing or malformed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pipeline.errors import StandardTableError

__all__ = [
    "ConfidentialityRow",
    "ConfidentialityTable",
    "OptionInfo",
    "Provenance",
    "SafePrivateEntry",
    "SafePrivateTable",
    "action_codes",
    "confidentiality_table",
    "options",
    "safe_private_table",
]

_DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Provenance:
    """Where a generated table comes from."""

    document: str
    edition: str
    xml_id: str
    source_file: str
    source_sha256: str
    generator: str


@dataclass(frozen=True)
class ConfidentialityRow:
    """One attribute of Table E.1-1; ``actions`` maps option name to action code."""

    name: str
    tag: str
    pattern: str
    retired: bool
    in_std_comp_iod: str
    actions: Mapping[str, str]


@dataclass(frozen=True)
class ConfidentialityTable:
    """Table E.1-1; ``options`` are the option names with a column, in table order."""

    provenance: Provenance
    options: tuple[str, ...]
    rows: tuple[ConfidentialityRow, ...]


@dataclass(frozen=True)
class SafePrivateEntry:
    """One Safe Private Attribute of Table E.3.10-1 (``element`` is the low byte)."""

    tag: str
    group: int
    element: int
    creator: str
    vr: str
    vm: str
    meaning: str


@dataclass(frozen=True)
class SafePrivateTable:
    """Table E.3.10-1."""

    provenance: Provenance
    entries: tuple[SafePrivateEntry, ...]


@dataclass(frozen=True)
class OptionInfo:
    """A Veil option: its Table E.1-1 column (if any) and CID 7050 code and meaning."""

    name: str
    column: str | None
    code: str
    meaning: str


def _load(name: str) -> dict[str, Any]:
    """Read one generated JSON file as a mapping."""
    path = _DATA_DIR / name
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise StandardTableError(
            f"{name} is missing from {_DATA_DIR}; run python -m pipeline.standard.generate"
        ) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StandardTableError(f"{name}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise StandardTableError(f"{name}: expected a JSON object")
    return data


def _get(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """Return ``obj[key]`` checked against ``kind``."""
    if not isinstance(obj, dict) or key not in obj:
        raise StandardTableError(f"{where}: missing {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise StandardTableError(f"{where}: {key!r} has the wrong type")
    return value


def _list(obj: Any, key: str, where: str) -> list[Any]:
    """Return a non-empty list field."""
    value = _get(obj, key, list, where)
    if not value:
        raise StandardTableError(f"{where}: {key!r} is empty")
    return value


def _hex(obj: Any, key: str, digits: int, where: str) -> int:
    """Return a hex string field of ``digits`` digits as an int."""
    value = _get(obj, key, str, where)
    if len(value) != digits or any(c not in "0123456789ABCDEF" for c in value):
        raise StandardTableError(f"{where}: {key!r} is not {digits} upper-case hex digits")
    return int(value, 16)


def _provenance(data: dict[str, Any], where: str) -> Provenance:
    prov = _get(data, "provenance", dict, where)
    fields = ("document", "edition", "xml_id", "source_file", "source_sha256", "generator")
    return Provenance(**{f: _get(prov, f, str, f"{where} provenance") for f in fields})


@cache
def _action_codes() -> tuple[tuple[str, str], ...]:
    """Return Table E.1-1a as ``(code, meaning)`` pairs in table order."""
    name = "table_E.1-1a.json"
    data = _load(name)
    _provenance(data, name)
    pairs = tuple(
        (_get(c, "code", str, name), _get(c, "meaning", str, name))
        for c in _list(data, "codes", name)
    )
    if len({code for code, _ in pairs}) != len(pairs):
        raise StandardTableError(f"{name}: duplicate action code")
    return pairs


def action_codes() -> dict[str, str]:
    """Return Table E.1-1a: action code to meaning, in table order."""
    return dict(_action_codes())


@cache
def confidentiality_table() -> ConfidentialityTable:
    """Return Table E.1-1 with its action columns keyed by option name."""
    name = "table_E.1-1.json"
    data = _load(name)
    provenance = _provenance(data, name)
    columns = tuple(_get(c, "option", str, name) for c in _list(data, "columns", name))
    if len(set(columns)) != len(columns):
        raise StandardTableError(f"{name}: duplicate option column")
    codes = set(action_codes())
    rows = []
    for index, row in enumerate(_list(data, "rows", name)):
        where = f"{name} row {index}"
        actions = _get(row, "actions", dict, where)
        for option, code in actions.items():
            if option not in columns or code not in codes:
                raise StandardTableError(f"{where}: bad action {option!r}: {code!r}")
        rows.append(
            ConfidentialityRow(
                name=_get(row, "name", str, where),
                tag=_get(row, "tag", str, where),
                pattern=_get(row, "pattern", str, where),
                retired=_get(row, "retired", bool, where),
                in_std_comp_iod=_get(row, "in_std_comp_iod", str, where),
                actions=MappingProxyType(dict(actions)),
            )
        )
    return ConfidentialityTable(provenance=provenance, options=columns, rows=tuple(rows))


@cache
def safe_private_table() -> SafePrivateTable:
    """Return Table E.3.10-1, the Safe Private Attributes."""
    name = "table_E.3.10-1.json"
    data = _load(name)
    provenance = _provenance(data, name)
    entries = []
    for index, entry in enumerate(_list(data, "entries", name)):
        where = f"{name} entry {index}"
        entries.append(
            SafePrivateEntry(
                tag=_get(entry, "tag", str, where),
                group=_hex(entry, "group", 4, where),
                element=_hex(entry, "element", 2, where),
                creator=_get(entry, "creator", str, where),
                vr=_get(entry, "vr", str, where),
                vm=_get(entry, "vm", str, where),
                meaning=_get(entry, "meaning", str, where),
            )
        )
    return SafePrivateTable(provenance=provenance, entries=tuple(entries))


@cache
def _options() -> tuple[OptionInfo, ...]:
    name = "cid7050.json"
    data = _load(name)
    _provenance(data, name)
    infos = tuple(
        OptionInfo(
            name=_get(o, "name", str, name),
            column=_get(o, "column", (str, type(None)), name),
            code=_get(o, "code", str, name),
            meaning=_get(o, "meaning", str, name),
        )
        for o in _list(data, "options", name)
    )
    if len({o.name for o in infos}) != len(infos):
        raise StandardTableError(f"{name}: duplicate option name")
    return infos


def options() -> dict[str, OptionInfo]:
    """Return Veil's options in ``options.yaml`` order, with CID 7050 code meanings."""
    return {o.name: o for o in _options()}


def _clear_caches() -> None:
    """Forget the loaded tables (for tests that swap the data folder)."""
    for loader in (_action_codes, confidentiality_table, safe_private_table, _options):
        loader.cache_clear()
