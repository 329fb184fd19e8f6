"""Hypothesis invariants: no planted PHI survives; UID maps are stable; shifts keep intervals."""

from __future__ import annotations

import io

import pytest
from conftest import compiled
from factories import make_ct
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import DicomDictionary
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pipeline.dates import parse_da
from pipeline.engine import deidentify
from pipeline.keys import Keyring

_TEXT_VRS = ("LO", "SH", "LT", "ST", "UT", "PN", "UC")
_NEVER = {0x00080005}  # Specific Character Set: a planted value would break decoding
#: Every public, non-repeating text attribute of the data dictionary.
TEXT_TAGS = sorted(
    tag for tag, entry in DicomDictionary.items()
    if entry[0] in _TEXT_VRS and tag >> 16 not in (0x0000, 0x0002, 0xFFFE) and tag not in _NEVER
)
SEQUENCE_TAGS = sorted(
    tag for tag, entry in DicomDictionary.items()
    if entry[0] == "SQ" and tag >> 16 not in (0x0000, 0x0002, 0xFFFE)
)

_WORD = st.text(alphabet="BCDFGHJKLMNPQRSTVWXZ", min_size=6, max_size=10)
_ID = st.from_regex(r"[A-Z]{2}[0-9]{6,9}", fullmatch=True)
_PROFILE = compiled()
_KEY = Keyring(b"k" * 32)


def _plant(ds: Dataset, tag: int, secret: str) -> None:
    vr = DicomDictionary[tag][0]
    value = secret if vr == "PN" else f"note {secret} end"
    limit = 16 if vr == "SH" else 64
    if len(value) > limit:
        value = secret[:limit]
    ds.add_new(tag, vr, value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    family=_WORD, given_name=_WORD, patient_id=_ID,
    top=st.lists(st.sampled_from(TEXT_TAGS), min_size=1, max_size=6, unique=True),
    nested=st.lists(st.tuples(st.sampled_from(SEQUENCE_TAGS), st.sampled_from(TEXT_TAGS)),
                    max_size=3),
    private=st.lists(st.integers(min_value=0x10, max_value=0xFF), max_size=3, unique=True),
)
def test_no_planted_value_survives_basic_profile(family, given_name, patient_id, top, nested,
                                                 private):
    ds = make_ct(PatientName=f"{family}^{given_name}", PatientID=patient_id)
    secrets = [family, given_name, patient_id]
    for index, tag in enumerate(top):
        if tag in ds:
            continue
        _plant(ds, tag, secrets[index % 3] if DicomDictionary[tag][0] != "PN"
               else f"{family}^{given_name}")
    for seq_tag, text_tag in nested:
        if seq_tag in ds:
            continue
        item = Dataset()
        _plant(item, text_tag, patient_id if DicomDictionary[text_tag][0] != "PN" else family)
        deeper = Dataset()
        _plant(deeper, text_tag, family if DicomDictionary[text_tag][0] != "SH" else patient_id)
        item.add_new(0x00081140, "SQ", Sequence([deeper]))
        ds.add_new(seq_tag, "SQ", Sequence([item]))
    if private:
        block = ds.private_block(0x0011, "ACME " + family, create=True)
        for element in private:
            block.add_new(element, "LO", f"{given_name} {patient_id}")
    result = deidentify(ds, _PROFILE, _KEY)
    buffer = io.BytesIO()
    result.dataset.save_as(buffer, enforce_file_format=True)
    out = buffer.getvalue().upper()
    for secret in secrets:
        assert secret.encode() not in out, "a planted value survived"


@settings(max_examples=40, deadline=None)
@given(uids=st.lists(st.from_regex(r"1\.2\.[1-9][0-9]{0,8}(\.[1-9][0-9]{0,5}){1,6}",
                                   fullmatch=True), min_size=2, max_size=6, unique=True))
def test_uid_maps_are_stable_and_injective(uids):
    profile = compiled()
    outputs = {}
    for uid in uids:
        ds = make_ct(study_uid=uid)
        first = deidentify(ds, profile, _KEY).study_uid
        assert deidentify(ds, profile, Keyring(b"k" * 32)).study_uid == first
        outputs[uid] = first
    assert len(set(outputs.values())) == len(uids)


@settings(max_examples=40, deadline=None)
@given(
    patient=_ID,
    days=st.lists(st.integers(min_value=0, max_value=20000), min_size=2, max_size=5),
)
def test_date_shift_keeps_every_interval_of_a_patient(patient, days):
    import datetime as dt

    profile = compiled("dicom-basic", "retain-longitudinal-modified-dates")
    base = dt.date(1970, 1, 1)
    originals = [base + dt.timedelta(days=d) for d in days]
    shifted = []
    for date in originals:
        ds = make_ct(PatientID=patient, StudyDate=date.strftime("%Y%m%d"))
        shifted.append(parse_da(deidentify(ds, profile, _KEY).dataset.StudyDate))
    for i in range(1, len(days)):
        assert (shifted[i] - shifted[0]) == (originals[i] - originals[0])


@pytest.mark.parametrize("option", ["retain-uids", "clean-descriptors", "retain-safe-private"])
def test_planted_patient_name_never_survives_any_option(option):
    ds = make_ct(PatientName="Zyxwvut^Qponml", StudyDescription="CT for Zyxwvut Qponml",
                 ImageComments="Qponml Zyxwvut")
    result = deidentify(ds, compiled("dicom-basic", option), _KEY)
    buffer = io.BytesIO()
    result.dataset.save_as(buffer, enforce_file_format=True)
    assert b"ZYXWVUT" not in buffer.getvalue().upper()
