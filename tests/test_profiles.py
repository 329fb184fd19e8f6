"""Behaviour of profile loading: validation with file:line, inheritance, options, hashes."""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

from pipeline.errors import ProfileError
from pipeline.profile import (
    compile_profile,
    list_profiles,
    load_profile,
    read_document,
    validate_profile_file,
)
from pipeline.profile.loader import DEFAULT_SHIFT_DAYS
from profiles import PROFILE_DIR

BUILTINS = [
    "clinical-trial",
    "dicom-basic",
    "gdpr",
    "hipaa-safe-harbor",
    "hipaa-safe-harbor-pixels",
    "institution-example",
]
PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020

#: Type 1 trial settings a mapping needs.
SPONSOR = {"trial.sponsor_name": "ACME", "trial.protocol_id": "ACME-001"}


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def mapping_csv(directory: Path, name: str = "mapping.csv", rows: str | None = None) -> Path:
    path = directory / name
    path.write_text(
        rows
        if rows is not None
        else "patient_id,subject_id,site_id,site_name\nMRN1,S-001,SITE1,Site One\n"
        "MRN2,S-002,SITE2,Site Two\n",
        encoding="utf-8",
    )
    return path


def error_lines(message: str, path: Path) -> list[int]:
    """Every line number the message gives for ``path``."""
    return [int(n) for n in re.findall(re.escape(str(path)) + r":(\d+):", message)]


# --- built-in profiles ------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_profile_loads(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert profile.enabled
    assert profile.lineage[0] == "dicom-basic"
    assert profile.lineage[-1] == name
    assert Path(profile.source) == PROFILE_DIR / f"{name}.yaml"
    assert profile.description


@pytest.mark.parametrize("name", [n for n in BUILTINS if n != "clinical-trial"])
def test_every_builtin_profile_except_clinical_trial_compiles(name: str) -> None:
    compiled = compile_profile(load_profile(name))
    assert compiled.name == name
    assert compiled.trial is None


def test_list_profiles_returns_the_six_builtins() -> None:
    profiles = list_profiles()
    assert sorted(p.name for p in profiles) == BUILTINS
    assert len(profiles) == 6


def test_hipaa_pixels_profile_adds_pixel_cleaning_to_hipaa() -> None:
    profile = load_profile("hipaa-safe-harbor-pixels")
    assert profile.lineage == ["dicom-basic", "hipaa-safe-harbor", "hipaa-safe-harbor-pixels"]
    assert "clean-pixel-data" in profile.options and "clean-descriptors" in profile.options


def test_unknown_builtin_name_lists_the_builtins() -> None:
    with pytest.raises(ProfileError) as info:
        load_profile("dicom-basik")
    message = str(info.value)
    assert "'dicom-basik'" in message
    for name in BUILTINS:
        assert name in message


def test_builtins_inherit_from_their_parents() -> None:
    gdpr = load_profile("gdpr")
    institution = load_profile("institution-example")
    assert institution.lineage == ["dicom-basic", "gdpr", "institution-example"]
    assert institution.unlisted == "remove"
    assert institution.unlisted_keep == gdpr.unlisted_keep
    assert set(gdpr.options) < set(institution.options)
    assert set(gdpr.compliance) < set(institution.compliance)
    assert (institution.dates.shift_min_days, institution.dates.shift_max_days) == (-730, -30)
    assert (gdpr.dates.shift_min_days, gdpr.dates.shift_max_days) == DEFAULT_SHIFT_DAYS


# --- clinical trial ---------------------------------------------------------------------


def test_clinical_trial_without_mapping_refuses_to_compile() -> None:
    profile = load_profile("clinical-trial")
    with pytest.raises(ProfileError, match=r"trial\.mapping_csv"):
        compile_profile(profile)


def test_clinical_trial_compiles_with_a_mapping_override(tmp_path: Path) -> None:
    csv = mapping_csv(tmp_path)
    profile = load_profile("clinical-trial", overrides={"trial.mapping_csv": str(csv), **SPONSOR})
    compiled = compile_profile(profile)
    assert compiled.trial is not None
    assert compiled.trial["MRN1"].subject_id == "S-001"
    assert compiled.trial["MRN2"].site_id == "SITE2"
    assert compiled.trial["MRN2"].site_name == "Site Two"
    assert compiled.decide(PATIENT_ID, "LO", None).action == "replace"
    assert profile.trial_mapping_sha256 is not None


def test_mapping_csv_in_a_profile_is_relative_to_the_profile_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = tmp_path / "study"
    study.mkdir()
    mapping_csv(study, "subjects.csv")
    path = write(
        study,
        "trial-x.yaml",
        """
        schema_version: 1
        name: trial-x
        extends: clinical-trial
        trial:
          mapping_csv: subjects.csv
          sponsor_name: ACME
          protocol_id: ACME-001
        """,
    )
    monkeypatch.chdir(tmp_path)
    profile = load_profile(path)
    assert Path(profile.trial.mapping_csv) == (study / "subjects.csv").resolve()
    assert profile.trial.sponsor_name == "ACME"
    assert profile.trial.subject_id_column == "subject_id"  # inherited from clinical-trial
    assert compile_profile(profile).trial is not None


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        ("patient,subject_id,site_id\nMRN1,S1,X\n", "lacks column"),
        ("patient_id,subject_id,site_id\nMRN1,S1,X\nMRN1,S2,X\n", ":3: patient listed twice"),
        ("patient_id,subject_id,site_id\nMRN1,,X\n", ":2: empty patient or subject ID"),
    ],
)
def test_bad_mapping_csv_is_refused_without_echoing_patient_ids(
    tmp_path: Path, rows: str, fragment: str
) -> None:
    csv = mapping_csv(tmp_path, rows=rows)
    profile = load_profile("clinical-trial", overrides={"trial.mapping_csv": str(csv), **SPONSOR})
    with pytest.raises(ProfileError) as info:
        compile_profile(profile)
    assert fragment in str(info.value)
    assert "MRN1" not in str(info.value)


def test_missing_mapping_csv_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"trial\.mapping_csv"):
        load_profile(
            "clinical-trial", overrides={"trial.mapping_csv": str(tmp_path / "no.csv"), **SPONSOR}
        )


# --- validation errors carry file:line --------------------------------------------------

HEADER = ["schema_version: 1", "name: bad"]
RULE = ["rules:", "  - select: PatientName", "    action: drop"]

LINE_CASES = {
    "unknown top-level key": [*HEADER, "colour: blue  # <-", *RULE],
    "unknown rule key": [
        *HEADER,
        "rules:",
        "  - select: PatientName",
        "    action: drop",
        "    colour: blue  # <-",
    ],
    "unknown action": [*HEADER, "rules:", "  - select: PatientName", "    action: shred  # <-"],
    "unknown keyword selector": [
        *HEADER,
        "rules:",
        "  - select: PatientAge",
        "    action: drop",
        "  - select: PatientNmae  # <-",
        "    action: drop",
    ],
    "bad mask in a rule": [
        *HEADER,
        "rules:",
        "  - select: (00zz,xxxx)  # <-",
        "    action: drop",
    ],
    "even group in a private selector": [
        *HEADER,
        "rules:",
        "  - select: (0010,xx10)@ACME  # <-",
        "    action: drop",
    ],
    "bad VR": [*HEADER, "rules:", "  - select: VR:QQ  # <-", "    action: drop"],
    "bad schema_version": ["schema_version: 2  # <-", "name: bad"],
    "duplicate YAML key": [*HEADER, "description: one", "description: two  # <-"],
    "duplicate key in a rule": [
        *HEADER,
        "rules:",
        "  - select: PatientName",
        "    action: drop",
        "    action: keep  # <-",
    ],
    "invalid YAML": [
        *HEADER,
        "rules:",
        "  - select: PatientName",
        "    action: drop",
        "   bad: indentation  # <-",
    ],
    "length on drop": [
        *HEADER,
        "rules:",
        "  - select: PatientAge",
        "    action: drop",
        "  - select: PatientName  # <~",
        "    action: drop",
        "    length: 8  # <-",
    ],
    "replace without value": [
        *HEADER,
        "rules:",
        "  - select: PatientName  # <~",
        "    action: replace  # <-",
    ],
    "unknown template field": [
        *HEADER,
        "rules:",
        "  - select: PatientName  # <~",
        "    action: replace",
        '    value: "{patient_name}"  # <-',
    ],
    "length out of range": [
        *HEADER,
        "rules:",
        "  - select: PatientID",
        "    action: hash",
        "    length: 65  # <-",
    ],
    "bad unlisted value": [*HEADER, "unlisted: drop  # <-"],
    "bad profile name": ["schema_version: 1", "name: Bad Name  # <-"],
    "unknown dates key": [*HEADER, "dates:", "  shift_days: 3  # <-"],
    "unknown option": [*HEADER, "options:", "  - retain-uids", "  - retain-everything  # <-"],
    "bad mask in unlisted_keep": [
        *HEADER,
        "unlisted: remove",
        "unlisted_keep:",
        "  - (0010,xxxx)",
        "  - (00zz,xxxx)  # <-",
    ],
}

MESSAGES = {
    "unknown top-level key": "unknown key 'colour'",
    "unknown rule key": "unknown key 'colour'",
    "unknown action": "unknown action 'shred'",
    "unknown keyword selector": "unknown DICOM keyword 'PatientNmae'",
    "bad mask in a rule": "cannot read selector '(00zz,xxxx)'",
    "even group in a private selector": "even (public) group",
    "bad VR": "unknown VR 'QQ'",
    "bad schema_version": "unsupported schema_version 2",
    "duplicate YAML key": "duplicate key 'description'",
    "duplicate key in a rule": "duplicate key 'action'",
    "invalid YAML": "invalid YAML",
    "length on drop": "parameter 'length' does not apply to action 'drop'",
    "replace without value": "action 'replace' needs a 'value'",
    "unknown template field": "unknown template field {patient_name}",
    "length out of range": "length",
    "bad unlisted value": "unlisted",
    "bad profile name": "name",
    "unknown dates key": "unknown key 'shift_days'",
    "unknown option": "unknown option 'retain-everything'",
    "bad mask in unlisted_keep": "cannot read selector '(00zz,xxxx)'",
}


def _marked(lines: list[str], marker: str) -> set[int]:
    return {n for n, line in enumerate(lines, start=1) if line.endswith(marker)}


@pytest.mark.parametrize("case", list(LINE_CASES.values()), ids=list(LINE_CASES))
def test_validation_errors_point_at_the_offending_line(
    tmp_path: Path, request: pytest.FixtureRequest, case: list[str]
) -> None:
    name = request.node.callspec.id
    path = write(tmp_path, "bad.yaml", "\n".join(case) + "\n")
    expected = _marked(case, "# <-")
    acceptable = expected | _marked(case, "# <~")
    for load in (load_profile, read_document, validate_profile_file):
        with pytest.raises(ProfileError) as info:
            load(path)
        message = str(info.value)
        lines = error_lines(message, path)
        assert lines, message
        assert set(lines) <= acceptable, (message, expected)
        assert MESSAGES[name] in message


def test_every_error_of_a_file_is_reported_with_its_own_line(tmp_path: Path) -> None:
    case = [
        *HEADER,
        "colour: blue",
        "rules:",
        "  - select: PatientNmae",
        "    action: drop",
        "  - select: PatientID",
        "    action: shred",
    ]
    path = write(tmp_path, "bad.yaml", "\n".join(case) + "\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert sorted(error_lines(str(info.value), path)) == [3, 5, 8]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("", "empty profile"), ("- a\n- b\n", "a profile is a mapping"), ("42\n", "mapping")],
)
def test_documents_that_are_not_mappings_are_refused(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert f"{path}:1:" in str(info.value)
    assert fragment in str(info.value)


def test_missing_required_fields_are_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "description: nothing else\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert "schema_version" in str(info.value)
    assert "name" in str(info.value)


def test_error_in_a_parent_names_the_parent_file(tmp_path: Path) -> None:
    parent = write(tmp_path, "parent.yaml", "schema_version: 1\nname: parent\ncolour: red\n")
    child = write(tmp_path, "child.yaml", "schema_version: 1\nname: child\nextends: parent.yaml\n")
    with pytest.raises(ProfileError) as info:
        load_profile(child)
    assert error_lines(str(info.value), parent) == [3]


def test_profile_error_is_a_value_error(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "schema_version: 1\nname: bad\ncolour: blue\n")
    with pytest.raises(ValueError):
        load_profile(path)


# --- extends ----------------------------------------------------------------------------


@pytest.fixture
def family(tmp_path: Path) -> dict[str, Path]:
    parent = write(
        tmp_path / "base",
        "parent.yaml",
        """
        schema_version: 1
        name: parent
        extends: dicom-basic
        compliance: [Parent policy]
        options: [retain-uids]
        unlisted: remove
        dates:
          shift_min_days: -730
          shift_max_days: -30
        rules:
          - select: PatientName
            action: empty
          - select: PatientAge
            action: keep
        """,
    )
    child = write(
        tmp_path / "study",
        "child.yaml",
        """
        schema_version: 1
        name: child
        extends: ../base/parent.yaml
        compliance: [Child policy, Parent policy]
        options: [retain-device-identity]
        dates:
          shift_max_days: -60
        rules:
          - select: PatientName
            action: hash
            length: 10
        """,
    )
    return {"parent": parent, "child": child}


def test_extends_by_relative_path_builds_the_lineage(family: dict[str, Path]) -> None:
    profile = load_profile(family["child"])
    assert profile.lineage == ["dicom-basic", "parent", "child"]
    assert profile.name == "child"
    assert profile.source == str(family["child"].resolve())


def test_child_rule_overrides_parent_rule_of_equal_specificity(family: dict[str, Path]) -> None:
    parent = compile_profile(load_profile(family["parent"]))
    child = compile_profile(load_profile(family["child"]))
    assert parent.decide(PATIENT_NAME, "PN", None).action == "empty"
    assert child.decide(PATIENT_NAME, "PN", None).action == "hash"
    assert child.decide(0x00101010, "AS", None).action == "keep"  # parent rule still applies


def test_options_and_compliance_merge_without_duplicates(family: dict[str, Path]) -> None:
    profile = load_profile(family["child"])
    assert profile.options == ["retain-uids", "retain-device-identity"]
    assert profile.compliance == [
        "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile",
        "Parent policy",
        "Child policy",
    ]


def test_dates_deep_merge_and_scalars_inherit(family: dict[str, Path]) -> None:
    profile = load_profile(family["child"])
    assert profile.dates.shift_min_days == -730
    assert profile.dates.shift_max_days == -60
    assert profile.unlisted == "remove"
    assert profile.residual_sweep is True


def test_child_scalar_setting_replaces_the_parent_one(tmp_path: Path) -> None:
    write(tmp_path, "p.yaml", "schema_version: 1\nname: p\nunlisted: remove\n")
    child = write(
        tmp_path, "c.yaml", "schema_version: 1\nname: c\nextends: p.yaml\nunlisted: keep\n"
    )
    assert load_profile(child).unlisted == "keep"


def test_extends_cycle_is_detected(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "schema_version: 1\nname: a\nextends: b.yaml\n")
    write(tmp_path, "b.yaml", "schema_version: 1\nname: b\nextends: a.yaml\n")
    with pytest.raises(ProfileError, match="cycle"):
        load_profile(tmp_path / "a.yaml")


def test_self_extension_is_a_cycle(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", "schema_version: 1\nname: a\nextends: ./a.yaml\n")
    with pytest.raises(ProfileError, match="cycle"):
        load_profile(path)


def test_deep_chain_is_refused(tmp_path: Path) -> None:
    for n in range(30):
        write(tmp_path, f"p{n}.yaml", f"schema_version: 1\nname: p{n}\nextends: p{n + 1}.yaml\n")
    write(tmp_path, "p30.yaml", "schema_version: 1\nname: p30\n")
    with pytest.raises(ProfileError, match="deeper than"):
        load_profile(tmp_path / "p0.yaml")


@pytest.mark.parametrize(
    ("extends", "fragment"),
    [("missing-parent.yaml", "missing-parent.yaml"), ("no-such-builtin", "no-such-builtin")],
)
def test_missing_parent_is_reported(tmp_path: Path, extends: str, fragment: str) -> None:
    path = write(tmp_path, "c.yaml", f"schema_version: 1\nname: c\nextends: {extends}\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert fragment in str(info.value)


# --- semantic refusals ------------------------------------------------------------------


def test_recognizable_visual_features_option_is_refused_with_a_clear_message(
    tmp_path: Path,
) -> None:
    option = "clean-recognizable-visual-features"
    path = write(tmp_path, "p.yaml", f"schema_version: 1\nname: p\noptions: [{option}]\n")
    for load in (lambda: load_profile(path), lambda: load_profile("dicom-basic", [option])):
        with pytest.raises(ProfileError) as info:
            load()
        message = str(info.value)
        assert option in message
        assert "not implemented" in message


def test_clean_pixel_data_is_accepted_with_default_pixel_settings() -> None:
    profile = load_profile("dicom-basic", ["clean-pixel-data"])
    assert "clean-pixel-data" in profile.options
    assert profile.pixel.mode == "phi-only" and profile.pixel.fill == "min"
    compiled = compile_profile(profile)
    assert ("113101", "Clean Pixel Data Option") in compiled.codes


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["pixel:", "  mode: everything  # <-"], "mode"),
        (["pixel:", "  margin: 100  # <-"], "margin"),
        (["pixel:", "  entities: [NAME, FACE]  # <-"], "entities"),
        (["pixel:", "  regions:", "    - modality: US", "      boxes: [[10, 10, 5, 20]]  # <-"],
         "x0 < x1"),
    ],
)
def test_bad_pixel_settings_are_errors_with_their_line(
    tmp_path: Path, lines: list[str], message: str
) -> None:
    text = "\n".join(["schema_version: 1", "name: p", *lines]) + "\n"
    path = write(tmp_path, "p.yaml", text)
    expected_line = next(i for i, line in enumerate(text.splitlines(), 1) if "# <-" in line)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert message in str(info.value)
    assert f":{expected_line}:" in str(info.value) or f":{expected_line - 1}:" in str(info.value)


def test_full_and_modified_dates_together_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        """
        schema_version: 1
        name: p
        options: [retain-longitudinal-full-dates, retain-longitudinal-modified-dates]
        """,
    )
    with pytest.raises(ProfileError, match="exclude each other"):
        load_profile(path)
    with pytest.raises(ProfileError, match="exclude each other"):
        load_profile("gdpr", options=["retain-longitudinal-full-dates"])


def test_shift_range_must_not_be_inverted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        "schema_version: 1\nname: p\ndates:\n  shift_min_days: 10\n  shift_max_days: -10\n",
    )
    with pytest.raises(ProfileError, match="shift_min_days must be <="):
        load_profile(path)


def test_disabled_profile_is_refused_unless_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, "shelved.yaml", "schema_version: 1\nname: shelved\nenabled: false\n")
    with pytest.raises(ProfileError, match="disabled"):
        load_profile(path)
    assert load_profile(path, allow_disabled=True).enabled is False
    assert validate_profile_file(path).enabled is False


def test_child_can_enable_a_disabled_parent(tmp_path: Path) -> None:
    write(tmp_path, "shelved.yaml", "schema_version: 1\nname: shelved\nenabled: false\n")
    child = write(
        tmp_path,
        "revived.yaml",
        "schema_version: 1\nname: revived\nextends: shelved.yaml\nenabled: true\n",
    )
    assert load_profile(child).enabled is True


# --- options and overrides --------------------------------------------------------------


def test_options_argument_adds_options_after_the_profile_ones() -> None:
    profile = load_profile("gdpr", options=["retain-uids", "retain-longitudinal-modified-dates"])
    assert profile.options == ["retain-longitudinal-modified-dates", "retain-uids"]
    assert "retain-uids" not in load_profile("gdpr").options


@pytest.mark.parametrize("option", ["retain-everything", "basic", "Retain-UIDs", ""])
def test_options_argument_rejects_unknown_options(option: str) -> None:
    with pytest.raises(ProfileError) as info:
        load_profile("dicom-basic", options=[option])
    message = str(info.value)
    assert message.startswith("--option: unknown option")
    assert "retain-uids" in message


def test_overrides_set_date_settings() -> None:
    profile = load_profile("dicom-basic", overrides={"dates.shift_min_days": "-30"})
    assert profile.dates.shift_min_days == -30
    assert profile.dates.shift_max_days == DEFAULT_SHIFT_DAYS[1]


def test_overrides_set_trial_settings() -> None:
    profile = load_profile("clinical-trial", overrides={"trial.sponsor_name": "ACME Pharma"})
    assert profile.trial.sponsor_name == "ACME Pharma"


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("foo.bar", "1", "only dates.*, trial.*, pixel.* and text.*"),
        ("dates", "1", "only dates.*, trial.*, pixel.* and text.*"),
        ("dates.", "1", "only dates.*, trial.*, pixel.* and text.*"),
        ("dates.shift_min_days.x", "1", "only dates.*, trial.*, pixel.* and text.*"),
        ("rules.select", "x", "only dates.*, trial.*, pixel.* and text.*"),
        ("dates.shift_days", "3", "shift_days"),
        ("dates.shift_min_days", "soon", "shift_min_days"),
        ("dates.shift_min_days", "10", "shift_min_days must be <="),
        ("dates.shift_max_days", "40000", "shift_max_days"),
        ("trial.protocol_id", "P" * 65, "protocol_id"),
    ],
)
def test_bad_overrides_are_refused(key: str, value: str, fragment: str) -> None:
    with pytest.raises(ProfileError) as info:
        load_profile("dicom-basic", overrides={key: value})
    assert fragment in str(info.value)


# --- content hash and YAML output -------------------------------------------------------

CUSTOM = """
schema_version: 1
name: custom
extends: dicom-basic
options: [retain-uids]
rules:
  - select: PatientName
    action: hash
    length: 12
"""


def test_content_hash_is_stable_across_loads() -> None:
    for name in BUILTINS:
        first = load_profile(name).content_hash
        assert first == load_profile(name).content_hash
        assert re.fullmatch(r"[0-9a-f]{64}", first)


def test_builtin_content_hashes_differ() -> None:
    hashes = {load_profile(name).content_hash for name in BUILTINS}
    assert len(hashes) == len(BUILTINS)


def test_content_hash_is_independent_of_the_file_location(tmp_path: Path) -> None:
    one = write(tmp_path / "one", "custom.yaml", CUSTOM)
    two = tmp_path / "elsewhere" / "deeper" / "custom.yaml"
    two.parent.mkdir(parents=True)
    shutil.copy(one, two)
    assert load_profile(one).source != load_profile(two).source
    assert load_profile(one).content_hash == load_profile(two).content_hash


def test_content_hash_ignores_where_the_mapping_csv_lives_but_not_its_content(
    tmp_path: Path,
) -> None:
    hashes = []
    for folder in ("a", "b"):
        directory = tmp_path / folder
        directory.mkdir()
        csv = mapping_csv(directory)
        hashes.append(
            load_profile("clinical-trial", overrides={"trial.mapping_csv": str(csv), **SPONSOR})
        )
    assert hashes[0].content_hash == hashes[1].content_hash
    changed = mapping_csv(tmp_path / "a", rows="patient_id,subject_id,site_id\nMRN9,S9,X\n")
    other = load_profile("clinical-trial", overrides={"trial.mapping_csv": str(changed), **SPONSOR})
    assert other.content_hash != hashes[0].content_hash


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("length: 12", "length: 13"),
        ("action: hash\n    length: 12", "action: drop"),
        ("select: PatientName", "select: PatientID"),
        ("[retain-uids]", "[retain-device-identity]"),
        ("[retain-uids]", "[retain-uids]\nunlisted: remove"),
    ],
)
def test_content_hash_changes_when_the_policy_changes(tmp_path: Path, old: str, new: str) -> None:
    base = write(tmp_path / "a", "custom.yaml", CUSTOM)
    text = CUSTOM.replace(old, new)
    assert text != CUSTOM
    changed = write(tmp_path / "b", "custom.yaml", text)
    assert load_profile(base).content_hash != load_profile(changed).content_hash


def test_content_hash_changes_with_options_and_overrides() -> None:
    base = load_profile("dicom-basic").content_hash
    assert load_profile("dicom-basic", options=["retain-uids"]).content_hash != base
    shifted = load_profile("dicom-basic", overrides={"dates.shift_min_days": "-30"})
    assert shifted.content_hash != base


@pytest.mark.parametrize("name", BUILTINS)
def test_to_yaml_round_trips_through_safe_load(name: str, tmp_path: Path) -> None:
    profile = load_profile(name)
    data = yaml.safe_load(profile.to_yaml())
    assert data["schema_version"] == 1
    assert data["name"] == name
    assert data["options"] == profile.options
    assert data["dates"] == profile.dates.model_dump(mode="json")
    assert "source" not in data
    assert "trial_mapping_sha256" not in data
    assert "lineage" not in data and "extends" not in data
    standalone = tmp_path / "resolved.yaml"
    standalone.write_text(profile.to_yaml(), encoding="utf-8")
    again = load_profile(standalone)
    assert again.rules == profile.rules
    assert again.options == profile.options
    assert again.dates == profile.dates


def test_to_yaml_keeps_unicode_and_special_characters(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "u.yaml",
        """
        schema_version: 1
        name: u
        description: "Hôpital: «test» # not a comment"
        rules:
          - select: InstitutionName
            action: replace
            value: "Zürich: {site_id}?"
        """,
    )
    data = yaml.safe_load(load_profile(path).to_yaml())
    assert data["description"] == "Hôpital: «test» # not a comment"
    assert data["rules"][0]["value"] == "Zürich: {site_id}?"


def test_trial_mapping_without_sponsor_or_protocol_is_refused(tmp_path: Path) -> None:
    csv = mapping_csv(tmp_path, "m.csv")
    with pytest.raises(ProfileError, match=r"trial\.sponsor_name, trial\.protocol_id"):
        compile_profile(load_profile("clinical-trial", overrides={"trial.mapping_csv": str(csv)}))


@pytest.mark.parametrize(("given", "name", "expected"), [
    ({}, "margin", 1),
    ({"margin": 0}, "margin", 0),
    ({}, "detector", "ppocr-v4+veil-text-detector"),
    ({"detector": "ppocr-v4"}, "detector", "ppocr-v4"),
    ({}, "review_threshold", 0.8),
    ({"mode": "all-text"}, "mode", "all-text"),
])
def test_pixel_settings_built_directly_read_the_loaded_profile_defaults(given, name, expected):
    from pipeline.profile.schema import PixelSettings

    assert PixelSettings(**given).value(name) == expected
    if not given:  # what a loaded profile gets when it says nothing
        loaded = load_profile("dicom-basic", options=["clean-pixel-data"]).pixel
        assert getattr(loaded, name) == expected


def test_an_unknown_pixel_setting_is_an_error():
    from pipeline.profile.schema import PixelSettings

    with pytest.raises(KeyError):
        PixelSettings().value("threshold")
