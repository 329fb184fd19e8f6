"""Tests of the generated DICOM PS3.15 tables and of their generator."""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import pipeline.standard as standard
from pipeline.errors import StandardTableError
from pipeline.standard import generate

SOURCE = generate.DEFAULT_SOURCE.resolve()
XML = SOURCE / generate.XML_FILE
README = SOURCE / generate.README_FILE
needs_source = pytest.mark.skipif(
    not (XML.is_file() and README.is_file()),
    reason=f"DICOM standard source not present at {SOURCE}",
)

EXPECTED_SHA256 = "77d60b856faf4223ab40a398c53130fc0ee9490d0d811ee3536e6d25c02ac717"


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    """The tables regenerated in memory from the XML."""
    if not (XML.is_file() and README.is_file()):
        pytest.skip(f"DICOM standard source not present at {SOURCE}")
    return generate.build(SOURCE)


def _row(name: str) -> standard.ConfidentialityRow:
    rows = [r for r in standard.confidentiality_table().rows if r.name == name]
    assert len(rows) == 1, f"{name!r} found {len(rows)} times"
    return rows[0]


# --- the committed files are current -----------------------------------------------------


def test_committed_json_is_current(generated: dict[str, str]) -> None:
    assert sorted(generated) == sorted(generate.OUTPUT_FILES.values())
    assert generate.stale_files(generated) == []


def test_check_detects_a_stale_file(generated: dict[str, str], tmp_path: Path) -> None:
    generate.write(generated, tmp_path)
    assert generate.stale_files(generated, tmp_path) == []
    path = tmp_path / "table_E.1-1a.json"
    path.write_text(path.read_text().replace('"X/Z"', '"X/Y"'))
    (tmp_path / "cid7050.json").unlink()
    assert generate.stale_files(generated, tmp_path) == ["cid7050.json", "table_E.1-1a.json"]


def test_generation_is_deterministic(generated: dict[str, str]) -> None:
    assert generate.build(SOURCE) == generated
    for text in generated.values():
        assert text.endswith("}\n")
        assert "timestamp" not in text and "generated_at" not in text


@needs_source
def test_cli_check_exits_0_when_current() -> None:
    assert generate.main(["--check", "--source", str(SOURCE)]) == 0


def test_cli_reports_a_missing_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert generate.main(["--check", "--source", str(tmp_path)]) == 2
    assert "source file missing" in capsys.readouterr().err


# --- the generator fails loudly ----------------------------------------------------------


def _copy_source(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    shutil.copyfile(XML, source / generate.XML_FILE)
    shutil.copyfile(README, source / generate.README_FILE)
    return source


@needs_source
def test_generator_rejects_sha256_mismatch(tmp_path: Path) -> None:
    source = _copy_source(tmp_path)
    readme = source / generate.README_FILE
    readme.write_text(readme.read_text().replace(EXPECTED_SHA256, "0" * 64))
    with pytest.raises(StandardTableError, match="sha256"):
        generate.build(source)


@needs_source
def test_generator_rejects_a_modified_xml(tmp_path: Path) -> None:
    source = _copy_source(tmp_path)
    xml = source / generate.XML_FILE
    xml.write_bytes(xml.read_bytes().replace(b">Accession Number<", b">Accession Numbers<"))
    with pytest.raises(StandardTableError, match="sha256"):
        generate.build(source)


@needs_source
@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('column: "Clean Graph. Opt."', 'column: "Clean Graphics Opt."', "headers"),
        ('column: "Clean Graph. Opt."', "column: null", "columns"),
        ('column: null\n  code: "113101"', 'column: "Basic Prof."\n  code: "113101"', "column"),
        ('code: "113112"', 'code: "113199"', "CID 7050"),
    ],
)
def test_generator_rejects_options_that_do_not_match_the_table(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    text = generate.OPTIONS_FILE.read_text()
    assert old in text
    options_file = tmp_path / "options.yaml"
    options_file.write_text(text.replace(old, new, 1))
    with pytest.raises(StandardTableError, match=message):
        generate.build(SOURCE, options_file)


@pytest.mark.parametrize(
    ("printed", "pattern"),
    [
        ("(0008,0050)", "00080050"),
        ("(0020,000d)", "0020000D"),
        ("(50xx,xxxx)", "50xxxxxx"),
        ("(60xx,4000)", "60xx4000"),
        ("(gggg,eeee) where gggg is odd", "private"),
    ],
)
def test_tag_pattern(printed: str, pattern: str) -> None:
    assert generate.tag_pattern(printed) == pattern


@pytest.mark.parametrize("printed", ["0008,0050", "(0008,005)", "(gggg,eeee)", "(0008,005G)"])
def test_tag_pattern_rejects_unknown_forms(printed: str) -> None:
    with pytest.raises(StandardTableError):
        generate.tag_pattern(printed)


# --- contents ----------------------------------------------------------------------------


def test_row_counts() -> None:
    assert len(standard.confidentiality_table().rows) == 656
    # The brief and README say 10, but the XML's Table E.1-1a has 11 codes
    # (D, Z, X, K, C, U, Z/D, X/Z, X/D, X/Z/D, X/Z/U*).
    assert len(standard.action_codes()) == 11
    assert len(standard.safe_private_table().entries) == 479
    assert len(standard.options()) == 13


@pytest.mark.parametrize(
    ("name", "tag", "pattern", "retired", "in_iod", "actions"),
    [
        ("Accession Number", "(0008,0050)", "00080050", False, "Y", {"basic": "Z"}),
        ("Patient's Name", "(0010,0010)", "00100010", False, "Y", {"basic": "Z"}),
        (
            "Study Instance UID",
            "(0020,000D)",
            "0020000D",
            False,
            "Y",
            {"basic": "U", "retain-uids": "K"},
        ),
        (
            "Acquisition Comments",
            "(0018,4000)",
            "00184000",
            True,
            "N",
            {"basic": "X", "clean-descriptors": "C"},
        ),
        (
            "Acquisition Context Sequence",
            "(0040,0555)",
            "00400555",
            False,
            "Y",
            {"basic": "X/Z", "clean-structured-content": "C"},
        ),
        (
            "GPS Date Stamp",
            "(0016,008D)",
            "0016008D",
            False,
            "Y",
            {
                "basic": "X",
                "retain-longitudinal-full-dates": "K",
                "retain-longitudinal-modified-dates": "C",
            },
        ),
        ("Curve Data", "(50xx,xxxx)", "50xxxxxx", True, "N", {"basic": "X", "clean-graphics": "C"}),
        (
            "Overlay Data",
            "(60xx,3000)",
            "60xx3000",
            False,
            "Y",
            {"basic": "X", "clean-graphics": "C"},
        ),
        (
            "Private Attributes",
            "(gggg,eeee) where gggg is odd",
            "private",
            False,
            "N",
            {"basic": "X", "retain-safe-private": "C"},
        ),
        (
            "Referenced Image Sequence",
            "(0008,1140)",
            "00081140",
            False,
            "Y",
            {"basic": "X/Z/U*", "retain-uids": "K"},
        ),
        ("Icon Image Sequence", "(0088,0200)", "00880200", False, "Y", {"basic": "X"}),
    ],
)
def test_confidentiality_rows(
    name: str, tag: str, pattern: str, retired: bool, in_iod: str, actions: dict[str, str]
) -> None:
    row = _row(name)
    assert (row.tag, row.pattern, row.retired, row.in_std_comp_iod) == (
        tag,
        pattern,
        retired,
        in_iod,
    )
    assert dict(row.actions) == actions


def test_names_and_tags_are_normalised() -> None:
    for row in standard.confidentiality_table().rows:
        assert row.name == " ".join(row.name.split()), row.name
        assert row.name.isascii(), row.name  # no zero-width spaces (GPS rows in the XML)
        assert "see Note" not in row.name, row.name
        assert re.fullmatch(r"[0-9A-Fx]{8}|private", row.pattern), row.pattern
    assert _row("GPS Area Information").tag == "(0016,008C)"


def test_patterns_are_unique() -> None:
    patterns = [r.pattern for r in standard.confidentiality_table().rows]
    assert len(set(patterns)) == len(patterns)


def test_every_action_code_is_defined_in_table_e11a() -> None:
    codes = standard.action_codes()
    used = {code for row in standard.confidentiality_table().rows for code in row.actions.values()}
    assert used <= set(codes), used - set(codes)
    # The "*" is part of the code as printed in both tables, never a stripped footnote.
    assert "X/Z/U*" in used and "X/Z/U" not in codes
    assert codes["X/Z/U*"].startswith("X unless Z or replacement of contained instance UIDs")


def test_every_row_has_a_basic_profile_action() -> None:
    assert all(row.actions.get("basic") for row in standard.confidentiality_table().rows)


def test_option_columns_match_options_yaml() -> None:
    data = yaml.safe_load(generate.OPTIONS_FILE.read_text())
    with_column = [name for name, spec in data.items() if spec["column"] is not None]
    table = standard.confidentiality_table()
    assert list(table.options) == with_column
    assert {"clean-pixel-data", "clean-recognizable-visual-features"}.isdisjoint(table.options)
    infos = standard.options()
    assert list(infos) == list(data)
    for name, spec in data.items():
        assert (infos[name].column, infos[name].code) == (spec["column"], spec["code"])


def test_option_meanings_come_from_cid7050() -> None:
    infos = standard.options()
    assert infos["basic"].meaning == "Basic Application Confidentiality Profile"
    assert infos["retain-safe-private"].meaning == "Retain Safe Private Option"
    assert infos["clean-pixel-data"] == standard.OptionInfo(
        "clean-pixel-data", None, "113101", "Clean Pixel Data Option"
    )
    assert len({i.code for i in infos.values()}) == 13


@pytest.mark.parametrize(
    ("tag", "group", "element", "creator", "vr", "vm", "meaning"),
    [
        (
            "(7053,xx00)",
            0x7053,
            0x00,
            "Philips PET Private Group",
            "DS",
            "1",
            "SUV Factor - Multiplying Stored Pixel Values by Rescale Slope then this factor "
            "results in SUVbw in g/l",
        ),
        ("(00E1,xx21)", 0x00E1, 0x21, "ELSCINT1", "DS", "1", "DLP"),
        ("(2001,xx0a)", 0x2001, 0x0A, "Philips Imaging DD 001", "IS", "1", "Image Plane Number"),
        ("(0043,xx39)", 0x0043, 0x39, "GEMS_PARM_01", "IS", "4", "1st value is B Value"),
        ("(0129,xx03)", 0x0129, 0x03, "SIEMENS Ultrasound SC2000", "", "1", "Plane Origin Vector"),
    ],
)
def test_safe_private_entries(
    tag: str, group: int, element: int, creator: str, vr: str, vm: str, meaning: str
) -> None:
    entries = [
        e
        for e in standard.safe_private_table().entries
        if (e.group, e.element, e.creator) == (group, element, creator)
    ]
    assert entries == [standard.SafePrivateEntry(tag, group, element, creator, vr, vm, meaning)]


def test_safe_private_groups_are_odd() -> None:
    assert all(e.group % 2 == 1 for e in standard.safe_private_table().entries)


# --- provenance --------------------------------------------------------------------------


def test_provenance() -> None:
    for prov, xml_id in [
        (standard.confidentiality_table().provenance, "table_E.1-1"),
        (standard.safe_private_table().provenance, "table_E.3.10-1"),
    ]:
        assert prov == standard.Provenance(
            document="PS3.15",
            edition="2026c",
            xml_id=xml_id,
            source_file="part15.xml",
            source_sha256=EXPECTED_SHA256,
            generator="pipeline/standard/generate.py",
        )


@needs_source
def test_provenance_sha256_matches_file_and_readme() -> None:
    actual = hashlib.sha256(XML.read_bytes()).hexdigest()
    stated = re.findall(r"\b[0-9a-f]{64}\b", README.read_text())
    assert stated == [actual]
    assert standard.confidentiality_table().provenance.source_sha256 == actual


# --- the loader rejects missing or malformed files ---------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the data folder that the loader reads instead of the real one."""
    target = tmp_path / "data"
    shutil.copytree(generate.DATA_DIR, target)
    monkeypatch.setattr(standard, "_DATA_DIR", target)
    standard._clear_caches()
    yield target
    standard._clear_caches()


def test_loader_reads_the_copy(data_dir: Path) -> None:
    assert len(standard.confidentiality_table().rows) == 656


def test_loader_rejects_a_missing_file(data_dir: Path) -> None:
    (data_dir / "table_E.3.10-1.json").unlink()
    with pytest.raises(StandardTableError, match="missing"):
        standard.safe_private_table()


@pytest.mark.parametrize(
    ("name", "old", "new", "loader"),
    [
        ("table_E.1-1.json", '"basic": "Z"', '"basic": "Q"', standard.confidentiality_table),
        ("table_E.1-1.json", '"retired": false', '"retired": "N"', standard.confidentiality_table),
        ("table_E.1-1a.json", '"code": "D"', '"code": "Z"', standard.action_codes),
        ("table_E.3.10-1.json", '"group": "7053"', '"group": "7G53"', standard.safe_private_table),
        ("cid7050.json", '"name": "basic"', '"name": 7', standard.options),
        ("cid7050.json", "{", "[", standard.options),
    ],
)
def test_loader_rejects_malformed_files(
    data_dir: Path, name: str, old: str, new: str, loader: object
) -> None:
    path = data_dir / name
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    assert callable(loader)
    with pytest.raises(StandardTableError):
        loader()
