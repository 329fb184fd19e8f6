"""Engine behaviour: actions, selectors, sequences, private tags, SR, round trips."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from conftest import compiled
from factories import PHI, make_ct
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pipeline.engine import deidentify
from pipeline.errors import DeidError
from pipeline.keys import Keyring
from pipeline.profile import compile_profile, load_profile


def _profile(tmp_path: Path, rules: str, extends: str = "dicom-basic", extra: str = ""):
    path = tmp_path / "p.yaml"
    path.write_text(
        f"schema_version: 1\nname: t\nextends: {extends}\n{extra}rules:\n{rules}", "utf-8"
    )
    return compile_profile(load_profile(path))


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_basic_profile_removes_every_header_identifier(keyring):
    ds = make_ct()
    result = deidentify(ds, compiled(), keyring)
    out = _bytes(result.dataset).upper()
    for value in PHI.values():
        for part in value.replace("^", " ").replace(",", " ").split():
            if len(part) > 2:
                assert part.upper().encode() not in out, part


def test_input_dataset_is_not_modified_unless_in_place(keyring):
    ds = make_ct()
    before = _bytes(ds)
    deidentify(ds, compiled(), keyring)
    assert _bytes(ds) == before
    deidentify(ds, compiled(), keyring, in_place=True)
    assert _bytes(ds) != before


def test_pixel_data_and_transfer_syntax_stay_bit_exact(keyring):
    ds = make_ct(rows=32, columns=32)
    result = deidentify(ds, compiled(), keyring)
    assert result.dataset.PixelData == ds.PixelData
    assert result.dataset.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert result.dataset.Rows == 32 and result.dataset.BitsStored == 12


def test_kept_attributes_stay_bit_exact(keyring):
    ds = make_ct()
    result = deidentify(ds, compiled(), keyring).dataset
    for keyword in ("Modality", "ImageType", "KVP", "SliceThickness", "PixelSpacing", "SOPClassUID",
                    "ImageOrientationPatient", "RescaleSlope", "WindowCenter"):
        assert result[keyword].value == ds[keyword].value, keyword


def test_write_then_read_back_is_valid_and_identical(keyring, tmp_path):
    result = deidentify(make_ct(), compiled("hipaa-safe-harbor"), keyring)
    path = tmp_path / "out.dcm"
    result.dataset.save_as(path, enforce_file_format=True)
    back = pydicom.dcmread(path)
    assert back.SOPInstanceUID == result.sop_uid
    assert back.file_meta.MediaStorageSOPInstanceUID == result.sop_uid
    assert back.PatientIdentityRemoved == "YES"
    assert back.PixelData == result.dataset.PixelData


def test_uids_are_keyed_deterministic_and_consistent(keyring):
    study = pydicom.uid.generate_uid()
    a = make_ct(study_uid=study)
    b = make_ct(study_uid=study)
    b.ReferencedImageSequence[0].ReferencedSOPInstanceUID = a.SOPInstanceUID
    profile = compiled()
    ra, rb = deidentify(a, profile, keyring), deidentify(b, profile, keyring)
    assert ra.study_uid == rb.study_uid != study
    assert ra.study_uid.startswith("2.25.") and len(ra.study_uid) <= 64
    assert rb.dataset.ReferencedImageSequence[0].ReferencedSOPInstanceUID == ra.sop_uid
    assert deidentify(a, profile, Keyring(b"\x01" * 32)).study_uid != ra.study_uid
    assert deidentify(a, profile, Keyring(bytes(keyring.digest("x", "")))).sop_uid != ra.sop_uid
    again = deidentify(a, profile, Keyring(bytes(range(32))))
    assert again.sop_uid == ra.sop_uid
    repeat = deidentify(a, profile, keyring).dataset
    assert ra.dataset.FrameOfReferenceUID == repeat.FrameOfReferenceUID


def test_standard_uids_are_never_remapped(keyring):
    result = deidentify(make_ct(), compiled(), keyring).dataset
    assert result.SOPClassUID == pydicom.uid.CTImageStorage
    assert result.ReferencedImageSequence[0].ReferencedSOPClassUID == pydicom.uid.CTImageStorage


def test_deidentification_attributes_are_added(keyring):
    result = deidentify(make_ct(), compiled("dicom-basic", "retain-uids", "clean-descriptors"),
                        keyring).dataset
    assert result.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in result.DeidentificationMethodCodeSequence]
    assert codes[0] == "113100" and set(codes[1:]) == {"113110", "113105"}
    assert all(i.CodingSchemeDesignator == "DCM" for i in result.DeidentificationMethodCodeSequence)
    assert "dicom-basic" in result.DeidentificationMethod[1]
    assert result.LongitudinalTemporalInformationModified == "REMOVED"


@pytest.mark.parametrize(
    ("rule", "keyword", "check"),
    [
        ("drop", "StationName", lambda ds, o: "StationName" not in ds),
        ("empty", "StationName", lambda ds, o: not ds.StationName and "StationName" in ds),
        ("dummy", "StationName", lambda ds, o: ds.StationName == "ANONYMIZED"),
        ("keep", "StationName", lambda ds, o: ds.StationName == o.StationName),
        ("hash", "StationName", lambda ds, o: len(ds.StationName) == 16
         and ds.StationName != o.StationName),
        ("uid-remap", "FrameOfReferenceUID",
         lambda ds, o: ds.FrameOfReferenceUID.startswith("2.25.")),
        ("date-shift", "StudyDate", lambda ds, o: ds.StudyDate != o.StudyDate
         and len(ds.StudyDate) == 8),
        ("clean", "StudyDescription", lambda ds, o: ds.StudyDescription == o.StudyDescription),
    ],
)
def test_each_action_does_what_it_says(tmp_path, keyring, rule, keyword, check):
    profile = _profile(tmp_path, f"  - select: {keyword}\n    action: {rule}\n")
    ds = make_ct()
    result = deidentify(ds, profile, keyring).dataset
    assert check(result, ds)
    assert any(a.keyword == keyword and a.action == rule for a in
               deidentify(ds, profile, keyring).actions) or rule == "keep"


def test_replace_with_template_and_generalize(tmp_path, keyring):
    rules = (
        "  - select: PatientID\n    action: replace\n    value: 'P-{pseudo_id}'\n"
        "  - select: PatientAge\n    action: generalize\n    band_years: 10\n"
        "  - select: PatientBirthDate\n    action: generalize\n    granularity: year\n"
    )
    profile = _profile(tmp_path, rules)
    result = deidentify(make_ct(), profile, keyring).dataset
    assert result.PatientID.startswith("P-") and len(result.PatientID) == 18
    assert result.PatientAge == "070Y"
    assert result.PatientBirthDate == "19450101"
    other = deidentify(make_ct(PatientID=PHI["PatientID"]), profile, keyring).dataset
    assert other.PatientID == result.PatientID


@pytest.mark.parametrize(
    ("selector", "hits", "misses"),
    [
        ("VR:PN", ["PatientName", "ReferringPhysicianName"], ["PatientID"]),
        ("(0010,00xx)", ["PatientName", "PatientID", "PatientSex"], ["StudyDate", "PatientAge"]),
        ("(0008,0090)", ["ReferringPhysicianName"], ["PatientName"]),
    ],
)
def test_selectors_reach_the_right_elements(tmp_path, keyring, selector, hits, misses):
    profile = _profile(tmp_path, f"  - select: '{selector}'\n    action: drop\n")
    ds = make_ct()
    actions = deidentify(ds, profile, keyring).actions
    hashed = {a.keyword for a in actions if a.action == "drop" and a.source.startswith("rule:")}
    assert set(hits) <= hashed
    assert not set(misses) & hashed


def _private_ds() -> Dataset:
    ds = make_ct()
    block = ds.private_block(0x0009, "SAINT EXAMPLE RESEARCH", create=True)
    block.add_new(0x01, "LO", "RESEARCH-ID-77321")
    block.add_new(0x02, "LO", PHI["PatientName"])
    ge = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
    ge.add_new(0x39, "IS", ["1000", "0", "0", "0"])  # a safe private attribute (B value)
    ge.add_new(0x3A, "LO", "secret text")
    return ds


def test_private_attributes_removed_with_their_creators(keyring):
    result = deidentify(_private_ds(), compiled(), keyring).dataset
    assert not [e for e in result if e.tag.is_private]


def test_retain_safe_private_keeps_only_safe_elements_and_their_creator(keyring):
    result = deidentify(_private_ds(), compiled("dicom-basic", "retain-safe-private"),
                        keyring).dataset
    private = {(e.tag.group, e.tag.element & 0xFF): e for e in result if e.tag.is_private}
    assert (0x0043, 0x39) in private
    assert (0x0043, 0x3A) not in private
    assert any(e.value == "GEMS_PARM_01" for e in private.values())
    assert not any(str(e.value) == "SAINT EXAMPLE RESEARCH" for e in private.values())


def test_private_creator_rule_selects_by_creator_not_block(tmp_path, keyring):
    profile = _profile(
        tmp_path, "  - select: (0009,xx01)@SAINT EXAMPLE RESEARCH\n    action: hash\n"
    )
    result = deidentify(_private_ds(), profile, keyring).dataset
    block = result.private_block(0x0009, "SAINT EXAMPLE RESEARCH")
    assert len(block[0x01].value) == 16 and block[0x01].value != "RESEARCH-ID-77321"
    assert 0x02 not in block


def test_nested_sequences_are_processed_recursively(keyring):
    ds = make_ct()
    inner = Dataset()
    inner.PatientName = PHI["PatientName"]
    inner.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    middle = Dataset()
    middle.ReferencedImageSequence = Sequence([inner])
    middle.ReferencedStudySequence = Sequence([])
    ds.SourceImageSequence = Sequence([middle])
    result = deidentify(ds, compiled("dicom-basic", "retain-uids"), keyring).dataset
    assert "SourceImageSequence" in result
    # Source Image Sequence is X/Z/U* in basic; with retain-uids it is kept (K) and cleaned
    item = result.SourceImageSequence[0].ReferencedImageSequence[0]
    assert not item.get("PatientName")
    assert item.ReferencedSOPInstanceUID == ds.SOPInstanceUID


def _sr() -> Dataset:
    ds = make_ct()
    del ds.PixelData
    ds.Modality = "SR"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    text = Dataset()
    text.RelationshipType = "CONTAINS"
    text.ValueType = "TEXT"
    text.TextValue = "Dr Leonard Kildare reviewed: no change since 01/05/2023. MRN8675309."
    person = Dataset()
    person.RelationshipType = "HAS OBS CONTEXT"
    person.ValueType = "PNAME"
    person.PersonName = "Kildare^Leonard"
    ds.ContentSequence = Sequence([text, person])
    return ds


def test_structured_content_is_removed_by_basic_and_cleaned_with_the_option(keyring):
    ds = _sr()
    basic = deidentify(ds, compiled(), keyring).dataset
    assert "Kildare" not in str(basic)
    cleaned = deidentify(ds, compiled("dicom-basic", "clean-structured-content"), keyring)
    text = cleaned.dataset.ContentSequence[0].TextValue
    assert "Kildare" not in text and "8675309" not in text and "01/05/2023" not in text
    assert "reviewed" in text and "no change" in text
    assert "PersonName" not in cleaned.dataset.ContentSequence[1] or \
        "Kildare" not in str(cleaned.dataset.ContentSequence[1].PersonName)


def test_clean_descriptors_keeps_clinical_words_and_removes_phi(keyring):
    ds = make_ct(StudyDescription="CT CHEST for Johnathan Doe", ImageComments="MRN8675309 f/u")
    result = deidentify(ds, compiled("dicom-basic", "clean-descriptors"), keyring).dataset
    assert result.StudyDescription.startswith("CT CHEST for ")
    assert "DOE" not in result.StudyDescription.upper()
    assert "8675309" not in result.ImageComments


def test_residual_sweep_removes_header_values_copied_into_kept_attributes(keyring):
    ds = make_ct(Manufacturer=f"ACME for {PHI['PatientID']}", BodyPartExamined="DOE")
    result = deidentify(ds, compiled(), keyring)
    assert PHI["PatientID"] not in str(result.dataset.Manufacturer)
    assert any(a.source == "sweep" for a in result.actions)


def test_unparseable_date_fails_the_dataset_without_echoing_the_value(keyring):
    ds = make_ct(StudyDate="2024X105")
    profile = compiled("dicom-basic", "retain-longitudinal-modified-dates")
    with pytest.raises(DeidError) as info:
        deidentify(ds, profile, keyring)
    assert "2024X105" not in str(info.value)


def test_modified_dates_shift_per_patient_and_keep_intervals(keyring):
    profile = compiled("dicom-basic", "retain-longitudinal-modified-dates")
    a = deidentify(make_ct(StudyDate="20240105", SeriesDate="20240110"), profile, keyring)
    b = deidentify(make_ct(StudyDate="20230101", SeriesDate="20230101"), profile, keyring)
    from pipeline.dates import parse_da

    def gap(ds: Dataset) -> int:
        return (parse_da(ds.SeriesDate) - parse_da(ds.StudyDate)).days

    assert gap(a.dataset) == 5 and gap(b.dataset) == 0
    shift = (parse_da(a.dataset.StudyDate) - parse_da("20240105")).days
    assert shift == (parse_da(b.dataset.StudyDate) - parse_da("20230101")).days
    assert -1095 <= shift <= -1
    assert a.dataset.LongitudinalTemporalInformationModified == "MODIFIED"


def test_hipaa_generalizes_ages_over_89_and_their_birth_dates(keyring):
    profile = compiled("hipaa-safe-harbor")
    old = deidentify(make_ct(PatientAge="093Y", PatientBirthDate="19300101"), profile, keyring)
    assert old.dataset.PatientAge == "090Y"
    assert not old.dataset.PatientBirthDate
    young = deidentify(make_ct(PatientAge="045Y", PatientBirthDate="19781211"), profile, keyring)
    assert young.dataset.PatientAge == "045Y"
    assert young.dataset.PatientBirthDate == "19780101"
    assert young.dataset.StudyDate == "20240101"


def test_implicit_vr_input_is_processed_and_keeps_its_transfer_syntax(keyring):
    ds = make_ct()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    raw = _bytes(ds)
    back = pydicom.dcmread(io.BytesIO(raw))
    result = deidentify(back, compiled(), keyring, in_place=True)
    assert result.dataset.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    reread = pydicom.dcmread(io.BytesIO(_bytes(result.dataset)))
    assert reread.PixelData == ds.PixelData
    assert str(reread.PatientName) == ""
    assert ExplicitVRLittleEndian != ImplicitVRLittleEndian


def test_missing_instance_uid_is_an_error(keyring):
    ds = make_ct()
    del ds.SOPInstanceUID
    with pytest.raises(DeidError, match="SOPInstanceUID"):
        deidentify(ds, compiled(), keyring)


def test_clinical_trial_fills_trial_attributes_from_mapping(tmp_path, keyring):
    mapping = tmp_path / "map.csv"
    mapping.write_text(f"patient_id,subject_id,site_id,site_name\n{PHI['PatientID']},S-001,"
                       "SITE-07,Site Seven\n", "utf-8")
    profile = compile_profile(load_profile("clinical-trial", overrides={
        "trial.mapping_csv": str(mapping), "trial.sponsor_name": "Acme Pharma",
        "trial.protocol_id": "ACME-42"}))
    result = deidentify(make_ct(), profile, keyring).dataset
    assert result.PatientID == "S-001" and str(result.PatientName) == "S-001"
    assert result.ClinicalTrialSubjectID == "S-001"
    assert result.ClinicalTrialSiteID == "SITE-07"
    assert result.ClinicalTrialSponsorName == "Acme Pharma"
    assert result.ClinicalTrialProtocolID == "ACME-42"
    with pytest.raises(DeidError, match="trial mapping"):
        deidentify(make_ct(PatientID="UNKNOWN1"), profile, keyring)


def test_gdpr_minimises_unlisted_attributes_but_keeps_what_images_need(keyring):
    ds = make_ct()
    ds.PatientSpeciesDescription = "Homo sapiens"
    result = deidentify(ds, compiled("gdpr"), keyring).dataset
    assert "PatientSpeciesDescription" not in result
    for keyword in ("Rows", "Columns", "PixelData", "SOPClassUID", "Modality", "KVP"):
        assert keyword in result, keyword
    assert result.PatientID == result.PatientName and len(result.PatientID) == 16


def test_public_attribute_encoded_as_un_is_resolved_and_swept(keyring):
    ds = make_ct()
    ds.add_new(0x00081030, "UN", f"CT for {PHI['PatientID']}".encode())  # Study Description
    ds.add_new(0x00180015, "UN", f"{PHI['PatientID']} ".encode())  # Body Part Examined (CS)
    raw = _bytes(ds)
    back = pydicom.dcmread(io.BytesIO(raw))
    result = deidentify(back, compiled(), keyring, in_place=True)
    assert PHI["PatientID"].encode() not in _bytes(result.dataset)
