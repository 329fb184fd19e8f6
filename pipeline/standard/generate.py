"""Generate Veil's DICOM PS3.15 tables from the standard's DocBook XML.

The tables in ``pipeline/standard/data`` are never typed by hand: this script reads
``part15.xml`` (and the CID 7050 code table of the README beside it), checks the file's
sha256 against the README, and writes one JSON file per table with its provenance.

Usage::

    python -m pipeline.standard.generate [--source DIR] [--check]

``--check`` regenerates in memory and exits 1 if the committed files differ.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import StandardTableError

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parents[1]
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "dicom-standard"
DATA_DIR = PACKAGE_DIR / "data"
OPTIONS_FILE = PACKAGE_DIR / "options.yaml"

XML_FILE = "part15.xml"
README_FILE = "README.md"
GENERATOR = "pipeline/standard/generate.py"
DOCUMENT = "PS3.15"

CONFIDENTIALITY_ID = "table_E.1-1"
ACTION_CODES_ID = "table_E.1-1a"
SAFE_PRIVATE_ID = "table_E.3.10-1"

OUTPUT_FILES = {
    CONFIDENTIALITY_ID: "table_E.1-1.json",
    ACTION_CODES_ID: "table_E.1-1a.json",
    SAFE_PRIVATE_ID: "table_E.3.10-1.json",
    "cid7050": "cid7050.json",
}

_DB = "{http://docbook.org/ns/docbook}"
_XML_ID = "{http://www.w3.org/XML/1998/namespace}id"

# Characters that carry no meaning in a cell but break string matching.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_NOTE_RE = re.compile(r"\(\s*(see\s+Note\s+\d+)\s*\)", re.IGNORECASE)
_EDITION_RE = re.compile(r"\bPS3\.15\s+(\d{4}[a-z])\b")
_SHA256_RE = re.compile(r"\b[0-9a-f]{64}\b")
_TAG_RE = re.compile(r"\(([0-9A-Fa-fx]{4}),([0-9A-Fa-fx]{4})\)")
_PRIVATE_TAG_TEXT = "(gggg,eeee) where gggg is odd"
_SAFE_TAG_RE = re.compile(r"\(([0-9A-Fa-f]{4}),xx([0-9A-Fa-f]{2})\)")
_ACTION_CODE_RE = re.compile(r"[A-Z](?:/[A-Z])*\*?")

# Leading columns of Table E.1-1 before the option columns (header text prefixes).
_FIXED_HEADERS = ("Attribute Name", "Tag", "Retd.", "In Std. Comp. IOD")


@dataclass(frozen=True)
class Cell:
    """Text of one table cell.

    Attributes
    ----------
    text : str
        Normalised text (no layout whitespace, invisible characters or note marks).
    raw : str
        The cell's text content with only the XML layout whitespace collapsed.
    notes : tuple of str
        Note references such as ``"see Note 11"`` found in the cell.
    """

    text: str
    raw: str
    notes: tuple[str, ...] = ()


def _collapse(text: str) -> str:
    """Collapse runs of whitespace to one space and strip the ends."""
    return " ".join(text.split())


def _render(elem: ET.Element) -> str:
    """Render an element's text, spacing out inline superscripts (``1<sup>st</sup>value``)."""
    parts = [elem.text or ""]
    for child in elem:
        parts.append(_render(child))
        tail = child.tail or ""
        if child.tag == f"{_DB}superscript" and tail[:1].isalnum():
            parts.append(" ")
        parts.append(tail)
    return "".join(parts)


def _cell(td: ET.Element, where: str) -> Cell:
    """Read one ``td``/``th`` cell into a :class:`Cell`."""
    if td.get("colspan", "1") != "1" or td.get("rowspan", "1") != "1":
        raise StandardTableError(f"{where}: spanning cells are not supported")
    raw = _collapse("".join(td.itertext()))
    paras = td.findall(f"{_DB}para") or [td]
    kept: list[str] = []
    notes: list[str] = []
    for para in paras:
        text = _collapse(_render(para).translate(_INVISIBLE).replace("\u00a0", " "))
        for match in _NOTE_RE.finditer(text):
            notes.append(_collapse(match.group(1)))
        text = _collapse(_NOTE_RE.sub("", text))
        if text:
            kept.append(text)
    return Cell(text=" ".join(kept), raw=raw, notes=tuple(notes))


def _find_table(root: ET.Element, xml_id: str) -> ET.Element:
    """Return the ``table`` element with the given ``xml:id``."""
    found = [t for t in root.iter(f"{_DB}table") if t.get(_XML_ID) == xml_id]
    if len(found) != 1:
        raise StandardTableError(f"{xml_id}: expected one table, found {len(found)}")
    return found[0]


def _table(root: ET.Element, xml_id: str, ncols: int) -> tuple[list[Cell], list[list[Cell]]]:
    """Return the header cells and body rows of a table, checking the column count."""
    table = _find_table(root, xml_id)
    head_rows = table.findall(f"{_DB}thead/{_DB}tr")
    if len(head_rows) > 1:
        raise StandardTableError(f"{xml_id}: expected at most one header row")
    headers = [_cell(th, f"{xml_id} header") for tr in head_rows for th in tr.findall(f"{_DB}th")]
    if head_rows and len(headers) != ncols:
        raise StandardTableError(f"{xml_id}: expected {ncols} header cells, got {len(headers)}")
    rows: list[list[Cell]] = []
    for index, tr in enumerate(table.findall(f"{_DB}tbody/{_DB}tr"), start=1):
        where = f"{xml_id} row {index}"
        cells = [_cell(td, where) for td in tr]
        if len(cells) != ncols or any(td.tag != f"{_DB}td" for td in tr):
            raise StandardTableError(f"{where}: expected {ncols} td cells, got {len(cells)}")
        rows.append(cells)
    if not rows:
        raise StandardTableError(f"{xml_id}: table has no rows")
    return headers, rows


def _raw_fields(fields: dict[str, Cell]) -> dict[str, str]:
    """Raw text of the fields whose normalisation changed more than layout whitespace."""
    return {name: cell.raw for name, cell in fields.items() if cell.raw != cell.text}


def sha256_of(path: Path) -> str:
    """Return the hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def edition_of(root: ET.Element) -> str:
    """Return the edition (e.g. ``"2026c"``) named in the book's title or subtitle."""
    for tag in ("subtitle", "title"):
        elem = root.find(f"{_DB}{tag}")
        if elem is not None:
            match = _EDITION_RE.search("".join(elem.itertext()))
            if match:
                return match.group(1)
    raise StandardTableError(f"{XML_FILE}: no 'PS3.15 <edition>' in the book title or subtitle")


def readme_sha256(readme: str) -> str:
    """Return the single sha256 the README states for the XML file."""
    found = set(_SHA256_RE.findall(readme))
    if len(found) != 1:
        raise StandardTableError(f"{README_FILE}: expected one sha256, found {len(found)}")
    return found.pop()


def parse_cid7050(readme: str) -> list[dict[str, str]]:
    """Parse the ``| code | meaning |`` markdown table of the README."""
    lines = readme.splitlines()
    header = [i for i, line in enumerate(lines) if _md_cells(line) == ["code", "meaning"]]
    if len(header) != 1:
        raise StandardTableError(f"{README_FILE}: expected one '| code | meaning |' table")
    codes: list[dict[str, str]] = []
    for line in lines[header[0] + 2 :]:
        cells = _md_cells(line)
        if cells is None:
            break
        if len(cells) != 2 or not cells[0].isdigit() or not cells[1]:
            raise StandardTableError(f"{README_FILE}: bad CID 7050 row {line!r}")
        codes.append({"code": cells[0], "meaning": cells[1]})
    if not codes:
        raise StandardTableError(f"{README_FILE}: CID 7050 table is empty")
    _require_unique((c["code"] for c in codes), "CID 7050 code")
    return codes


def _md_cells(line: str) -> list[str] | None:
    """Split a markdown table line into stripped cells, or None if it is not one."""
    line = line.strip()
    if not (line.startswith("|") and line.endswith("|")):
        return None
    return [cell.strip() for cell in line[1:-1].split("|")]


def _require_unique(values: Iterable[str], what: str) -> None:
    """Fail if a value repeats."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise StandardTableError(f"duplicate {what}: {value!r}")
        seen.add(value)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that rejects duplicate mapping keys."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    keys = [loader.construct_object(key, deep=True) for key, _ in node.value]
    _require_unique((str(k) for k in keys), "key in options.yaml")
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


@dataclass(frozen=True)
class OptionSpec:
    """One entry of ``options.yaml``."""

    name: str
    column: str | None
    code: str


def load_options(path: Path) -> list[OptionSpec]:
    """Read ``options.yaml``: the options in file order."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except (OSError, yaml.YAMLError) as exc:
        raise StandardTableError(f"{path.name}: cannot read: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise StandardTableError(f"{path.name}: expected a non-empty mapping")
    options: list[OptionSpec] = []
    for name, spec in data.items():
        if not isinstance(name, str) or not isinstance(spec, dict):
            raise StandardTableError(f"{path.name}: bad entry {name!r}")
        if set(spec) != {"column", "code"}:
            raise StandardTableError(f"{path.name}: {name}: keys must be column and code")
        column, code = spec["column"], spec["code"]
        if column is not None and not isinstance(column, str):
            raise StandardTableError(f"{path.name}: {name}: column must be a string or null")
        if not isinstance(code, str) or not code.isdigit():
            raise StandardTableError(f"{path.name}: {name}: code must be a quoted digit string")
        options.append(OptionSpec(name=name, column=column, code=code))
    _require_unique((o.column for o in options if o.column is not None), "option column")
    _require_unique((o.code for o in options), "option code")
    return options


def tag_pattern(tag: str) -> str:
    """Normalise a printed tag to 8 chars (hex upper, ``x`` lower) or ``"private"``."""
    if tag == _PRIVATE_TAG_TEXT:
        return "private"
    match = _TAG_RE.fullmatch(tag)
    if not match:
        raise StandardTableError(f"{CONFIDENTIALITY_ID}: unrecognised tag {tag!r}")
    return "".join("x" if ch == "x" else ch.upper() for ch in match.group(1) + match.group(2))


def _provenance(edition: str, xml_id: str, source_file: str, sha256: str) -> dict[str, str]:
    return {
        "document": DOCUMENT,
        "edition": edition,
        "xml_id": xml_id,
        "source_file": source_file,
        "source_sha256": sha256,
        "generator": GENERATOR,
    }


def build_action_codes(root: ET.Element, provenance: dict[str, str]) -> dict[str, Any]:
    """Build Table E.1-1a: the de-identification action codes and their meanings."""
    _, rows = _table(root, ACTION_CODES_ID, 2)
    codes = []
    for code, meaning in rows:
        if not _ACTION_CODE_RE.fullmatch(code.text) or not meaning.text:
            raise StandardTableError(f"{ACTION_CODES_ID}: bad row {code.raw!r}")
        codes.append({"code": code.text, "meaning": meaning.text})
    _require_unique((c["code"] for c in codes), f"{ACTION_CODES_ID} code")
    return {"provenance": provenance, "codes": codes}


def build_confidentiality(
    root: ET.Element,
    provenance: dict[str, str],
    options: Sequence[OptionSpec],
    action_codes: Iterable[str],
) -> dict[str, Any]:
    """Build Table E.1-1 with its action columns keyed by Veil's option names."""
    by_column = {o.column: o.name for o in options if o.column is not None}
    ncols = len(_FIXED_HEADERS) + len(by_column)
    table = _find_table(root, CONFIDENTIALITY_ID)
    header_cells = table.findall(f"{_DB}thead/{_DB}tr/{_DB}th")
    if len(header_cells) != ncols:
        found = [_cell(th, CONFIDENTIALITY_ID).text for th in header_cells]
        raise StandardTableError(
            f"{CONFIDENTIALITY_ID}: {len(found)} columns {found} but options.yaml implies {ncols}"
        )
    headers, rows = _table(root, CONFIDENTIALITY_ID, ncols)
    for expected, cell in zip(_FIXED_HEADERS, headers, strict=False):
        if not cell.text.startswith(expected):
            raise StandardTableError(f"{CONFIDENTIALITY_ID}: header {cell.text!r} not {expected!r}")
    option_headers = [cell.text for cell in headers[len(_FIXED_HEADERS) :]]
    unknown = [h for h in option_headers if h not in by_column]
    missing = [c for c in by_column if c not in option_headers]
    if unknown or missing or len(set(option_headers)) != len(option_headers):
        raise StandardTableError(
            f"{CONFIDENTIALITY_ID}: headers and options.yaml columns differ: "
            f"not in options.yaml {unknown}, not in the table {missing}"
        )
    columns = [{"header": h, "option": by_column[h]} for h in option_headers]
    known_codes = set(action_codes)
    out_rows = []
    for index, cells in enumerate(rows, start=1):
        where = f"{CONFIDENTIALITY_ID} row {index}"
        name, tag, retired, in_iod = cells[: len(_FIXED_HEADERS)]
        if not name.text:
            raise StandardTableError(f"{where}: empty attribute name")
        if retired.text not in ("Y", "N"):
            raise StandardTableError(f"{where}: Retd. is {retired.raw!r}, not Y or N")
        if in_iod.text not in ("Y", "N", "C"):
            raise StandardTableError(f"{where}: In Std. Comp. IOD is {in_iod.raw!r}")
        actions: dict[str, str] = {}
        fields = {"name": name, "tag": tag, "retired": retired, "in_std_comp_iod": in_iod}
        for column, cell in zip(columns, cells[len(_FIXED_HEADERS) :], strict=True):
            if not cell.text:
                continue
            if cell.text not in known_codes:
                raise StandardTableError(
                    f"{where} ({name.text}): action {cell.raw!r} is not in {ACTION_CODES_ID}"
                )
            actions[column["option"]] = cell.text
            fields[column["option"]] = cell
        row: dict[str, Any] = {
            "name": name.text,
            "tag": tag.text,
            "pattern": tag_pattern(tag.text),
            "retired": retired.text == "Y",
            "in_std_comp_iod": in_iod.text,
            "actions": actions,
        }
        raw = _raw_fields(fields)
        if raw:
            row["raw"] = raw
        notes = [n for cell in fields.values() for n in cell.notes]
        if notes:
            row["notes"] = notes
        out_rows.append(row)
    _require_unique((r["pattern"] for r in out_rows), f"{CONFIDENTIALITY_ID} tag")
    return {"provenance": provenance, "columns": columns, "rows": out_rows}


def build_safe_private(root: ET.Element, provenance: dict[str, str]) -> dict[str, Any]:
    """Build Table E.3.10-1: the Safe Private Attributes."""
    _, rows = _table(root, SAFE_PRIVATE_ID, 5)
    entries = []
    for index, cells in enumerate(rows, start=1):
        where = f"{SAFE_PRIVATE_ID} row {index}"
        tag, creator, vr, vm, meaning = cells
        match = _SAFE_TAG_RE.fullmatch(tag.text)
        if not match:
            raise StandardTableError(f"{where}: unrecognised data element {tag.raw!r}")
        group = match.group(1).upper()
        if int(group, 16) % 2 == 0:
            raise StandardTableError(f"{where}: group {group} is not a private (odd) group")
        if not creator.text:
            raise StandardTableError(f"{where}: empty private creator")
        entry: dict[str, Any] = {
            "tag": tag.text,
            "group": group,
            "element": match.group(2).upper(),
            "creator": creator.text,
            "vr": vr.text,
            "vm": vm.text,
            "meaning": meaning.text,
        }
        raw = _raw_fields({"tag": tag, "creator": creator, "vr": vr, "vm": vm, "meaning": meaning})
        if raw:
            entry["raw"] = raw
        entries.append(entry)
    _require_unique(
        (f"{e['group']},{e['element']},{e['creator']}" for e in entries),
        f"{SAFE_PRIVATE_ID} (group, element, creator)",
    )
    return {"provenance": provenance, "entries": entries}


def build_cid7050(
    readme: str,
    edition: str,
    readme_sha: str,
    options: Sequence[OptionSpec],
) -> dict[str, Any]:
    """Build the CID 7050 codes and Veil's option list (names, columns, codes, meanings)."""
    codes = parse_cid7050(readme)
    meanings = {c["code"]: c["meaning"] for c in codes}
    option_codes = [o.code for o in options]
    unknown = [c for c in option_codes if c not in meanings]
    unused = [c for c in meanings if c not in option_codes]
    if unknown or unused:
        raise StandardTableError(
            f"options.yaml and CID 7050 differ: codes not in CID 7050 {unknown}, "
            f"CID 7050 codes without an option {unused}"
        )
    provenance = _provenance(edition, "CID 7050", README_FILE, readme_sha)
    provenance["document"] = "PS3.16"
    provenance["note"] = (
        "CID 7050 is defined in PS3.16, which is not in the source folder; the codes are "
        f"read from the table in {README_FILE}, edition is that of the folder's {XML_FILE}"
    )
    out_options = [
        {"name": o.name, "column": o.column, "code": o.code, "meaning": meanings[o.code]}
        for o in options
    ]
    return {
        "provenance": provenance,
        "coding_scheme_designator": "DCM",
        "codes": codes,
        "options": out_options,
    }


def build(source: Path, options_file: Path = OPTIONS_FILE) -> dict[str, str]:
    """Generate every table from ``source``.

    Parameters
    ----------
    source : Path
        Folder holding ``part15.xml`` and ``README.md``.
    options_file : Path
        Veil's option names (``options.yaml``).

    Returns
    -------
    dict of str to str
        Output file name to its serialised JSON text.

    Raises
    ------
    StandardTableError
        If a source file is missing, its sha256 differs from the README's, or a table
        does not have the expected shape.
    """
    xml_path, readme_path = source / XML_FILE, source / README_FILE
    for path in (xml_path, readme_path):
        if not path.is_file():
            raise StandardTableError(f"source file missing: {path}")
    readme = readme_path.read_text(encoding="utf-8")
    sha = sha256_of(xml_path)
    stated = readme_sha256(readme)
    if sha != stated:
        raise StandardTableError(
            f"{xml_path}: sha256 {sha} differs from the {stated} stated in {readme_path}"
        )
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise StandardTableError(f"{xml_path}: not well-formed XML: {exc}") from exc
    edition = edition_of(root)
    if not re.search(rf"\bPS3\.15\s+{re.escape(edition)}\b", readme):
        raise StandardTableError(f"{readme_path}: does not name edition PS3.15 {edition}")
    options = load_options(options_file)

    def prov(xml_id: str) -> dict[str, str]:
        return _provenance(edition, xml_id, XML_FILE, sha)

    action_codes = build_action_codes(root, prov(ACTION_CODES_ID))
    tables = {
        ACTION_CODES_ID: action_codes,
        CONFIDENTIALITY_ID: build_confidentiality(
            root,
            prov(CONFIDENTIALITY_ID),
            options,
            [c["code"] for c in action_codes["codes"]],
        ),
        SAFE_PRIVATE_ID: build_safe_private(root, prov(SAFE_PRIVATE_ID)),
        "cid7050": build_cid7050(readme, edition, sha256_of(readme_path), options),
    }
    return {OUTPUT_FILES[key]: dumps(value) for key, value in tables.items()}


def dumps(obj: Any) -> str:
    """Serialise deterministically: sorted keys, indent 1, ASCII escapes, trailing newline."""
    return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=True) + "\n"


def stale_files(outputs: dict[str, str], data_dir: Path = DATA_DIR) -> list[str]:
    """Return the names of committed files that are missing or differ from ``outputs``."""
    stale = []
    for name, text in sorted(outputs.items()):
        path = data_dir / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def write(outputs: dict[str, str], data_dir: Path = DATA_DIR) -> None:
    """Write the generated files (LF line endings, UTF-8)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, text in sorted(outputs.items()):
        (data_dir / name).write_text(text, encoding="utf-8", newline="\n")
        logger.info("wrote %s", data_dir / name)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.standard.generate", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=DEFAULT_SOURCE,
        help=f"folder with {XML_FILE} and {README_FILE} (default: ../shared/dicom-standard)",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed JSON is not current"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        outputs = build(args.source)
    except StandardTableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        stale = stale_files(outputs)
        if stale:
            print(
                f"error: {', '.join(stale)} in {DATA_DIR} not current with {args.source}; "
                "run: python -m pipeline.standard.generate",
                file=sys.stderr,
            )
            return 1
        print(f"{len(outputs)} generated files are current")
        return 0
    write(outputs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
