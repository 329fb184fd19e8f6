"""Behaviour of profile compilation: which action every element gets, and why."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR

import pipeline.profile.compiler as compiler
from pipeline.errors import ProfileError
from pipeline.profile import CompiledProfile, compile_profile, load_profile
from pipeline.profile.compiler import _OPTION_PRECEDENCE, CODE_ACTIONS, table_action
from pipeline.standard import (
    ConfidentialityRow,
    ConfidentialityTable,
    confidentiality_table,
    safe_private_table,
)

TABLE = confidentiality_table()
OPTION_COLUMNS = [name for name in TABLE.options if name != "basic"]
EXACT_ROWS = [r for r in TABLE.rows if r.pattern != "private" and "x" not in r.pattern]

PATIENT_NAME = 0x00100010
OTHER_PATIENT_NAMES = 0x00101001
REFERRING_PHYSICIAN = 0x00080090
STUDY_DATE = 0x00080020
PRIVATE_ELEMENT = 0x00291010


def compiled_from(tmp_path: Path, body: str, name: str = "custom") -> CompiledProfile:
    text = f"schema_version: 1\nname: {name}\nextends: dicom-basic\n" + textwrap.dedent(body)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return compile_profile(load_profile(path))


def rules_yaml(rules: list[tuple[str, str]]) -> str:
    lines = ["rules:"]
    for select, action in rules:
        lines += [f'  - select: "{select}"', f"    action: {action}"]
    return "\n".join(lines) + "\n"


def vr_of(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


# --- table_action -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "action"),
    [
        ("X", "drop"),
        ("Z", "empty"),
        ("D", "dummy"),
        ("K", "keep"),
        ("C", "clean"),
        ("U", "uid-remap"),
        ("X/Z", "empty"),
        ("X/D", "dummy"),
        ("Z/D", "dummy"),
        ("X/Z/D", "dummy"),
        ("X/Z/U*", "uid-remap"),
    ],
)
def test_table_codes_map_to_actions_taking_the_rightmost_code(code: str, action: str) -> None:
    assert table_action(code) == action


@pytest.mark.parametrize("code", ["", "Q", "X/Q", "x", "K/"])
def test_unknown_table_codes_are_refused(code: str) -> None:
    with pytest.raises(ProfileError, match="not understood"):
        table_action(code)


def test_every_code_used_in_the_table_is_understood() -> None:
    used = {code for row in TABLE.rows for code in row.actions.values()}
    for code in used:
        assert table_action(code) in CODE_ACTIONS.values()


# --- every row of Table E.1-1, every option column --------------------------------------


def _expected_code(row: ConfidentialityRow, options: list[str]) -> tuple[str, str]:
    """The code the standard gives with ``options``: retain beats clean beats basic."""
    code, source = row.actions["basic"], "basic"
    for name in _OPTION_PRECEDENCE:
        if name in options and row.actions.get(name):
            code, source = row.actions[name], name
    return code, source


@pytest.mark.parametrize("option", [None, *OPTION_COLUMNS])
def test_every_table_row_gets_the_action_of_its_column(option: str | None) -> None:
    options = [option] if option else []
    compiled = compile_profile(load_profile("dicom-basic", options=options))
    wrong = []
    for row in EXACT_ROWS:
        tag = int(row.pattern, 16)
        code = row.actions.get(option or "basic") or row.actions["basic"]
        source = f"table:{option}" if option and row.actions.get(option) else "table:basic"
        decision = compiled.decide(tag, vr_of(tag), None)
        if (decision.action, decision.source) != (table_action(code), source):
            wrong.append((row.tag, row.name, code, decision))
    assert not wrong
    assert len(EXACT_ROWS) > 600


def test_each_option_column_changes_some_rows() -> None:
    basic = compile_profile(load_profile("dicom-basic"))
    for option in OPTION_COLUMNS:
        if option == "retain-safe-private":
            continue
        with_option = compile_profile(load_profile("dicom-basic", options=[option]))
        changed = [
            row
            for row in EXACT_ROWS
            if with_option.decide(int(row.pattern, 16), "UN", None)
            != basic.decide(int(row.pattern, 16), "UN", None)
        ]
        assert changed, option


OPTION_PAIRS = [
    pair
    for pair in itertools.combinations(OPTION_COLUMNS, 2)
    if set(pair) != {"retain-longitudinal-full-dates", "retain-longitudinal-modified-dates"}
]


@pytest.mark.parametrize("pair", OPTION_PAIRS, ids=["+".join(p) for p in OPTION_PAIRS])
def test_option_pairs_follow_the_precedence_clean_over_retain_over_basic(
    pair: tuple[str, str],
) -> None:
    compiled = compile_profile(load_profile("dicom-basic", options=list(pair)))
    wrong = []
    for row in EXACT_ROWS:
        tag = int(row.pattern, 16)
        code, source = _expected_code(row, list(pair))
        given_by = [name for name in pair if row.actions.get(name)]
        cleans = [name for name in given_by if name.startswith("clean")]
        if cleans:
            assert source.startswith("clean")
        elif given_by:
            assert source.startswith("retain")
        decision = compiled.decide(tag, vr_of(tag), None)
        if decision.action != table_action(code) or decision.source != f"table:{source}":
            wrong.append((row.tag, code, source, decision))
    assert not wrong


@pytest.mark.parametrize(
    ("keyword", "options", "action"),
    [
        ("Allergies", [], "drop"),
        ("Allergies", ["clean-descriptors"], "clean"),
        ("Allergies", ["retain-patient-characteristics", "clean-descriptors"], "clean"),
        ("PatientAge", [], "drop"),
        ("PatientAge", ["retain-patient-characteristics"], "keep"),
        ("PatientSex", [], "empty"),
        ("StudyDate", [], "empty"),
        ("StudyDate", ["retain-longitudinal-full-dates"], "keep"),
        ("StudyDate", ["retain-longitudinal-modified-dates"], "clean"),
        ("DateOfLastCalibration", ["retain-longitudinal-modified-dates"], "clean"),
        ("StudyInstanceUID", [], "uid-remap"),
        ("StudyInstanceUID", ["retain-uids"], "keep"),
        ("StudyDescription", [], "drop"),
        ("StudyDescription", ["clean-descriptors"], "clean"),
        ("InstitutionName", ["retain-institution-identity"], "keep"),
        ("DeviceSerialNumber", ["retain-device-identity"], "keep"),
        ("PatientName", [], "empty"),
        ("PatientID", [], "dummy"),  # Z/D: the rightmost code
        ("AccessionNumber", [], "empty"),
    ],
)
def test_well_known_attributes(keyword: str, options: list[str], action: str) -> None:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    assert tag is not None
    compiled = compile_profile(load_profile("dicom-basic", options=options))
    assert compiled.decide(tag, vr_of(tag), None).action == action


# --- private attributes -----------------------------------------------------------------

BASIC = compile_profile(load_profile("dicom-basic"))
SAFE_PRIVATE = compile_profile(load_profile("dicom-basic", options=["retain-safe-private"]))
SAFE = sorted({(e.group, e.element, e.creator.strip()) for e in safe_private_table().entries})


@given(
    group=st.integers(0, 0x7FFF).map(lambda g: 2 * g + 1).filter(lambda g: g > 0x0007),
    block=st.integers(0x10, 0xFF),
    offset=st.integers(0, 0xFF),
    creator=st.sampled_from(["ACME 1.0", "SIEMENS CSA HEADER", "GEMS_ACQU_01", ""]),
    vr=st.sampled_from(["LO", "OB", "UN", "DS", "SQ"]),
)
def test_basic_profile_drops_every_private_element(
    group: int, block: int, offset: int, creator: str, vr: str
) -> None:
    tag = group << 16 | block << 8 | offset
    decision = BASIC.decide(tag, vr, creator)
    assert decision.action == "drop"
    assert decision.source == "table:basic"


def test_safe_private_table_is_in_odd_groups() -> None:
    assert len(SAFE) > 400
    assert all(group & 1 for group, _, _ in SAFE)


@pytest.mark.parametrize("block", [0x10, 0x11, 0x4F, 0xFF])
def test_retain_safe_private_keeps_exactly_the_safe_elements(block: int) -> None:
    wrong = []
    for group, element, creator in SAFE:
        tag = group << 16 | block << 8 | element
        decision = SAFE_PRIVATE.decide(tag, "UN", creator)
        if decision != compiler.Decision("keep", "table:retain-safe-private"):
            wrong.append((hex(tag), creator, decision))
        if BASIC.decide(tag, "UN", creator).action != "drop":
            wrong.append((hex(tag), creator, "kept without the option"))
    assert not wrong


def test_retain_safe_private_keeps_when_the_creator_is_padded() -> None:
    group, element, creator = SAFE[0]
    tag = group << 16 | 0x1000 | element
    assert SAFE_PRIVATE.decide(tag, "UN", creator + " ").action == "keep"


@given(data=st.data())
def test_retain_safe_private_drops_everything_else(data: st.DataObject) -> None:
    group, element, creator = data.draw(st.sampled_from(SAFE))
    change = data.draw(st.sampled_from(["creator", "offset", "group", "no-creator", "case"]))
    if change == "creator":
        creator = creator + " X"
    elif change == "case":
        creator = creator.swapcase()
    elif change == "offset":
        element = data.draw(st.integers(0, 0xFF).filter(lambda e: (group, e, creator) not in SAFE))
    elif change == "group":
        group = data.draw(
            st.integers(0, 0x7FFF)
            .map(lambda g: 2 * g + 1)
            .filter(lambda g: (g, element, creator) not in SAFE)
        )
    tag = group << 16 | 0x1000 | element
    assume_creator = None if change == "no-creator" else creator
    if (group, element, (assume_creator or "").strip()) in SAFE:
        return  # swapcase of a case-less creator: still a safe element
    decision = SAFE_PRIVATE.decide(tag, "UN", assume_creator)
    assert decision.action == "drop"


# --- masks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "options", "action"),
    [
        (0x50000000, [], "drop"),
        (0x50003000, [], "drop"),
        (0x50FE0010, [], "drop"),
        (0x50003000, ["clean-graphics"], "clean"),
        (0x60003000, [], "drop"),
        (0x601E3000, [], "drop"),
        (0x60FE3000, ["clean-graphics"], "clean"),
        (0x60024000, [], "drop"),
        (0x60024000, ["clean-graphics"], "clean"),
        (0x60000010, [], "keep"),  # Overlay Rows: not in the table, unlisted keep
        (0x60003001, [], "keep"),
        (0x60013000, [], "drop"),  # odd group: private
        (0x60013000, ["clean-graphics"], "drop"),
    ],
)
def test_table_masks(tag: int, options: list[str], action: str) -> None:
    compiled = compile_profile(load_profile("dicom-basic", options=options))
    assert compiled.decide(tag, "OW", None).action == action


# --- rules: specificity and order -------------------------------------------------------

PN_RULES = [("VR:PN", "dummy"), ("(0010,xxxx)", "hash"), ("PatientName", "keep")]
PRIVATE_RULES = [
    ("private", "keep"),
    ("VR:OB", "empty"),
    ("(0029,xxxx)", "dummy"),
    ("(0029,xx10)@ACME", "hash"),
]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_tag_rule_beats_mask_beats_vr_whatever_the_order(
    tmp_path: Path, order: tuple[int, ...]
) -> None:
    compiled = compiled_from(tmp_path, rules_yaml([PN_RULES[i] for i in order]))
    assert compiled.decide(PATIENT_NAME, "PN", None).action == "keep"
    assert compiled.decide(OTHER_PATIENT_NAMES, "PN", None).action == "hash"
    assert compiled.decide(REFERRING_PHYSICIAN, "PN", None).action == "dummy"
    assert compiled.decide(STUDY_DATE, "DA", None).action == "empty"  # the table


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_private_element_beats_mask_beats_vr_beats_private(
    tmp_path: Path, order: tuple[int, ...]
) -> None:
    compiled = compiled_from(tmp_path, rules_yaml([PRIVATE_RULES[i] for i in order]))
    assert compiled.decide(PRIVATE_ELEMENT, "OB", "ACME").action == "hash"
    assert compiled.decide(0x00291110, "OB", "ACME").action == "hash"  # other block
    assert compiled.decide(PRIVATE_ELEMENT, "OB", "OTHER").action == "dummy"
    # VR rules select public elements only: private ones fall through to `private`
    assert compiled.decide(0x00091010, "OB", "ACME").action == "keep"
    assert compiled.decide(0x00081010, "OB", None).action == "empty"
    assert compiled.decide(0x00091010, "LO", "ACME").action == "keep"
    assert compiled.decide(0x00091010, "LO", None).action == "keep"


@pytest.mark.parametrize(
    ("rules", "tag", "vr", "creator", "action"),
    [
        ([("PatientName", "keep"), ("(0010,0010)", "hash")], PATIENT_NAME, "PN", None, "hash"),
        ([("(0010,0010)", "hash"), ("PatientName", "keep")], PATIENT_NAME, "PN", None, "keep"),
        ([("(0010,xxxx)", "keep"), ("(0010,00xx)", "hash")], PATIENT_NAME, "PN", None, "hash"),
        ([("(0010,00xx)", "hash"), ("(0010,xxxx)", "keep")], PATIENT_NAME, "PN", None, "keep"),
        ([("VR:PN", "keep"), ("VR:PN", "dummy")], REFERRING_PHYSICIAN, "PN", None, "dummy"),
        ([("private", "keep"), ("private", "empty")], PRIVATE_ELEMENT, "UN", "X", "empty"),
        (
            [("(0029,xx10)@ACME", "keep"), ("(0029,xx10)@ACME", "empty")],
            PRIVATE_ELEMENT,
            "UN",
            "ACME",
            "empty",
        ),
    ],
)
def test_equally_specific_rules_last_defined_wins(
    tmp_path: Path,
    rules: list[tuple[str, str]],
    tag: int,
    vr: str,
    creator: str | None,
    action: str,
) -> None:
    compiled = compiled_from(tmp_path, rules_yaml(rules))
    assert compiled.decide(tag, vr, creator).action == action


def test_tie_between_exact_private_tag_and_creator_rule_goes_to_the_last(tmp_path: Path) -> None:
    compiled = compiled_from(
        tmp_path, rules_yaml([("(0029,xx10)@ACME", "hash"), ("(0029,1010)", "empty")])
    )
    assert compiled.decide(PRIVATE_ELEMENT, "OB", "ACME").action == "empty"


def test_rules_beat_the_table(tmp_path: Path) -> None:
    compiled = compiled_from(
        tmp_path,
        rules_yaml([("PatientName", "keep"), ("VR:DA", "date-shift"), ("(0008,008x)", "keep")]),
    )
    assert compiled.decide(PATIENT_NAME, "PN", None).action == "keep"
    assert compiled.decide(STUDY_DATE, "DA", None).action == "date-shift"
    assert compiled.decide(0x00080080, "LO", None).action == "keep"  # InstitutionName: X/Z/D
    assert compiled.decide(0x00080050, "SH", None).action == "empty"  # AccessionNumber: table


def test_rule_decisions_record_profile_rule_number_and_selector(tmp_path: Path) -> None:
    compiled = compiled_from(tmp_path, rules_yaml([("VR:PN", "dummy"), ("PatientName", "keep")]))
    decision = compiled.decide(PATIENT_NAME, "PN", None)
    assert decision.source == "rule:custom#2:PatientName"
    assert decision.rule is not None and decision.rule.action == "keep"
    assert compiled.decide(STUDY_DATE, "DA", None).rule is None


def test_table_exact_row_beats_table_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    prov = TABLE.provenance
    rows = (
        ConfidentialityRow("Overlay", "(60xx,3000)", "60xx3000", False, "Y", {"basic": "X"}),
        ConfidentialityRow("One overlay", "(6000,3000)", "60003000", False, "Y", {"basic": "K"}),
        ConfidentialityRow("Private", "private", "private", False, "N", {"basic": "X"}),
    )
    fake = ConfidentialityTable(provenance=prov, options=("basic",), rows=rows)
    monkeypatch.setattr(compiler, "confidentiality_table", lambda: fake)
    compiled = compile_profile(load_profile("dicom-basic"))
    assert compiled.decide(0x60003000, "OW", None).action == "keep"
    assert compiled.decide(0x60023000, "OW", None).action == "drop"


def test_table_row_without_basic_action_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = (ConfidentialityRow("Odd", "(0010,0010)", "00100010", False, "Y", {}),)
    fake = ConfidentialityTable(provenance=TABLE.provenance, options=("basic",), rows=rows)
    monkeypatch.setattr(compiler, "confidentiality_table", lambda: fake)
    with pytest.raises(ProfileError, match="no basic profile action"):
        compile_profile(load_profile("dicom-basic"))


# --- unlisted attributes ----------------------------------------------------------------

UNLISTED_TAGS = {0x00280010: "US", 0x00180050: "DS", 0x00200013: "IS", 0x00080060: "CS"}


def test_probe_tags_are_not_in_the_table() -> None:
    exact = {int(row.pattern, 16) for row in EXACT_ROWS}
    assert not set(UNLISTED_TAGS) & exact


@pytest.mark.parametrize(("tag", "vr"), UNLISTED_TAGS.items())
def test_unlisted_keep_by_default(tag: int, vr: str) -> None:
    assert BASIC.decide(tag, vr, None) == compiler.Decision("keep", "unlisted")


def test_unlisted_remove_drops_except_unlisted_keep(tmp_path: Path) -> None:
    compiled = compiled_from(
        tmp_path, "unlisted: remove\nunlisted_keep:\n  - (0028,xxxx)\n  - VR:DS\n"
    )
    assert compiled.decide(0x00280010, "US", None) == compiler.Decision("keep", "unlisted-keep")
    assert compiled.decide(0x00180050, "DS", None).action == "keep"
    assert compiled.decide(0x00200013, "IS", None) == compiler.Decision("drop", "unlisted")
    assert compiled.decide(PATIENT_NAME, "PN", None).action == "empty"  # the table first
    assert compiled.decide(PRIVATE_ELEMENT, "DS", "X").action == "drop"  # private row first


def test_unlisted_keep_does_not_override_the_table(tmp_path: Path) -> None:
    compiled = compiled_from(tmp_path, "unlisted: remove\nunlisted_keep:\n  - (0010,xxxx)\n")
    assert compiled.decide(PATIENT_NAME, "PN", None).action == "empty"
    assert compiled.decide(0x00101010, "AS", None).action == "drop"


def test_gdpr_removes_unlisted_attributes_outside_its_groups() -> None:
    gdpr = compile_profile(load_profile("gdpr"))
    assert gdpr.decide(0x00280010, "US", None).action == "keep"
    assert gdpr.decide(0x00180050, "DS", None).action == "keep"
    assert gdpr.decide(0x00080060, "CS", None).action == "keep"
    assert gdpr.decide(0x00100022, "CS", None) == compiler.Decision("drop", "unlisted")
    assert gdpr.decide(0x00100020, "LO", None).action == "replace"


# --- DeidentificationMethod codes and temporal information ------------------------------

CODES = {
    "retain-safe-private": "113111",
    "retain-uids": "113110",
    "retain-device-identity": "113109",
    "retain-institution-identity": "113112",
    "retain-patient-characteristics": "113108",
    "retain-longitudinal-full-dates": "113106",
    "retain-longitudinal-modified-dates": "113107",
    "clean-descriptors": "113105",
    "clean-structured-content": "113104",
    "clean-graphics": "113103",
}


def test_basic_profile_code_alone() -> None:
    assert [code for code, _ in BASIC.codes] == ["113100"]
    assert "Basic" in BASIC.codes[0][1]


@pytest.mark.parametrize("option", OPTION_COLUMNS)
def test_codes_are_basic_plus_each_option(option: str) -> None:
    compiled = compile_profile(load_profile("dicom-basic", options=[option]))
    assert [code for code, _ in compiled.codes] == ["113100", CODES[option]]
    assert all(meaning for _, meaning in compiled.codes)


def test_codes_of_an_inherited_profile_list_every_option_once() -> None:
    compiled = compile_profile(load_profile("institution-example"))
    codes = [code for code, _ in compiled.codes]
    assert codes[0] == "113100"
    assert sorted(codes[1:]) == sorted(
        CODES[o]
        for o in (
            "retain-longitudinal-modified-dates",
            "retain-device-identity",
            "retain-safe-private",
            "clean-descriptors",
        )
    )
    assert len(set(codes)) == len(codes)


@pytest.mark.parametrize(
    ("name", "options", "temporal"),
    [
        ("dicom-basic", [], "REMOVED"),
        ("dicom-basic", ["retain-longitudinal-full-dates"], "UNMODIFIED"),
        ("dicom-basic", ["retain-longitudinal-modified-dates"], "MODIFIED"),
        ("dicom-basic", ["retain-uids", "clean-descriptors"], "REMOVED"),
        ("gdpr", [], "MODIFIED"),
        ("hipaa-safe-harbor", [], "MODIFIED"),
        ("institution-example", [], "MODIFIED"),
    ],
)
def test_temporal_information_flag(name: str, options: list[str], temporal: str) -> None:
    assert compile_profile(load_profile(name, options=options)).temporal == temporal


@pytest.mark.parametrize("action", ["date-shift", "generalize\n    granularity: year"])
def test_date_rules_mark_dates_modified(tmp_path: Path, action: str) -> None:
    compiled = compiled_from(tmp_path, f"rules:\n  - select: VR:DA\n    action: {action}\n")
    assert compiled.temporal == "MODIFIED"


def test_full_dates_with_date_rules_is_modified(tmp_path: Path) -> None:
    compiled = compiled_from(
        tmp_path,
        "options: [retain-longitudinal-full-dates]\n"
        "rules:\n  - select: VR:DA\n    action: date-shift\n",
    )
    assert compiled.temporal == "MODIFIED"


# --- compiled profile surface -----------------------------------------------------------


def test_compiled_profile_exposes_name_hash_and_options() -> None:
    profile = load_profile("gdpr", options=["retain-uids"])
    compiled = compile_profile(profile)
    assert compiled.name == "gdpr"
    assert compiled.content_hash == profile.content_hash
    assert compiled.options == ["retain-longitudinal-modified-dates", "retain-uids"]


def test_decide_is_consistent_between_calls_and_creators(tmp_path: Path) -> None:
    compiled = compiled_from(tmp_path, rules_yaml([("(0029,xx10)@ACME", "hash")]))
    first = [compiled.decide(PRIVATE_ELEMENT, "OB", c).action for c in ("ACME", "OTHER", "ACME")]
    assert first == ["hash", "drop", "hash"]


def test_trial_field_in_a_replace_rule_needs_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"trial\.mapping_csv"):
        compiled_from(
            tmp_path, 'rules:\n  - select: PatientID\n    action: replace\n    value: "{site_id}"\n'
        )
    compiled = compiled_from(
        tmp_path,
        'rules:\n  - select: PatientID\n    action: replace\n    value: "P-{pseudo_id}"\n',
        name="pseudo",
    )
    assert compiled.decide(0x00100020, "LO", None).action == "replace"
