"""The fast element walker changes nothing: same bytes, actions, warnings and pseudonyms.

Every case runs :func:`pipeline.engine.deidentify` (the fast walker) and
:func:`pipeline.engine_reference.deidentify_reference` (the walker as it was before
the fast path, kept frozen) on two separate reads of the same input and compares
the written files byte for byte, and everything the result reports. Inputs: every
file of the real-file corpus (pydicom test files and pydicom-data), a small benchmark
corpus, and Hypothesis-generated datasets; read both raw (``dcmread``: values still
bytes, as in the benchmark) and fully converted (:func:`read_instance`, as in a job).
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from factories import make_ct
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import DicomDictionary
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from test_real_files import FILES

from benchmarks.corpus import load_or_generate
from pipeline.engine import DeidResult, deidentify
from pipeline.engine_reference import deidentify_reference
from pipeline.errors import DeidError, InputError
from pipeline.io.reader import read_instance, withhold_pydicom_log_values
from pipeline.io.sinks import _ensure_transfer_syntax
from pipeline.keys import Keyring
from pipeline.profile import CompiledProfile, compile_profile, load_profile

withhold_pydicom_log_values()  # pydicom's warnings quote values
KEY = Keyring(bytes(range(32)))
Deid = Callable[..., DeidResult]
#: (profile, options) pairs the two walkers are compared under.
CONFIGS = [
    ("dicom-basic", ()),
    ("hipaa-safe-harbor", ()),
    ("gdpr", ()),
    ("clinical-trial", ()),
    ("dicom-basic", ("clean-descriptors",)),
    ("dicom-basic", ("retain-uids",)),
    ("dicom-basic", ("retain-longitudinal-modified-dates",)),
    ("dicom-basic", ("retain-safe-private",)),
]
_IDS = [name + "".join(f"+{o}" for o in options) for name, options in CONFIGS]
_ALL_OPTIONS = ("clean-descriptors", "retain-uids", "retain-longitudinal-modified-dates",
                "retain-safe-private")
#: The real-file corpus is large: every file, under fewer configurations (raw reads).
REAL_RAW = [CONFIGS[0], CONFIGS[1], ("dicom-basic", _ALL_OPTIONS)]
#: ... and fully converted reads (as a job reads them).
REAL_CONVERTED = [CONFIGS[2], CONFIGS[3]]
#: Patient IDs of the generated datasets (all in the clinical-trial mapping).
_PATIENTS = ("AB123456", "CD7654321", "EF000001")


def _compile(name: str, options: tuple[str, ...], folder: Path, patients: set[str]) -> (
        CompiledProfile):
    overrides: dict[str, object] = {}
    if name == "clinical-trial":
        mapping = folder / "trial.csv"
        ids = sorted(p for p in patients if p and "," not in p and '"' not in p)
        rows = [f"{pid},S-{i:03d},SITE-1,Site One" for i, pid in enumerate(ids)]
        mapping.write_text("patient_id,subject_id,site_id,site_name\n" + "\n".join(rows) + "\n",
                           "utf-8")
        overrides = {"trial.mapping_csv": str(mapping), "trial.sponsor_name": "Sponsor",
                     "trial.protocol_id": "P-1"}
    return compile_profile(load_profile(name, options=list(options), overrides=overrides))


def _outcome(deid: Deid, ds: Dataset, compiled: CompiledProfile) -> tuple[object, ...]:
    """Everything observable of one de-identification: written bytes and the result."""
    try:
        result = deid(ds, compiled, KEY, in_place=True)
    except DeidError as exc:
        return ("refused", str(exc))
    _ensure_transfer_syntax(result.dataset)  # as FolderSink does before writing
    buffer = io.BytesIO()
    try:
        dcmwrite(buffer, result.dataset, enforce_file_format=True)
    except Exception as exc:  # the same failure must happen on both paths
        return ("unwritable", type(exc).__name__, result.actions, result.warnings)
    return (buffer.getvalue(), result.actions, result.warnings, result.pseudonyms,
            result.requires_review, result.study_uid, result.series_uid, result.sop_uid)


def _same(read: Callable[[], Dataset], compiled: CompiledProfile) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _outcome(deidentify, read(), compiled) == _outcome(
            deidentify_reference, read(), compiled)


def _raw_reader(path: Path) -> Callable[[], Dataset] | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pydicom.dcmread(path)
        except Exception:
            return None
    return lambda: pydicom.dcmread(path)


def _converted_reader(path: Path) -> Callable[[], Dataset] | None:
    try:
        read_instance(path)
    except InputError:
        return None
    return lambda: read_instance(path)


def _patients(paths: list[Path]) -> set[str]:
    found = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in paths:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
                found.add(str(ds.get("PatientID", "") or "").strip())
            except Exception:
                continue
    return found


def test_the_comparison_sees_a_different_key(tmp_path):
    ds = make_ct()
    compiled = _compile("dicom-basic", (), tmp_path, set())
    other = Keyring(bytes(32))
    first = _outcome(deidentify, copy.deepcopy(ds), compiled)
    second = _outcome(lambda d, c, _k, **kw: deidentify(d, c, other, **kw), copy.deepcopy(ds),
                      compiled)
    assert first != second


@pytest.mark.slow
@pytest.mark.parametrize(("reader", "configs"), [
    (_raw_reader, REAL_RAW),
    (_converted_reader, REAL_CONVERTED),
], ids=["raw", "converted"])
def test_real_files_give_identical_outputs(tmp_path, reader, configs):
    readers = {name: r for name, path in FILES.items() if (r := reader(path)) is not None}
    assert len(readers) > 150
    patients = _patients(list(FILES.values()))
    for name, options in configs:
        compiled = _compile(name, options, tmp_path, patients)
        differ = [key for key, read in readers.items() if not _same(read, compiled)]
        assert not differ, f"{name}{options}: outputs differ for {differ}"


@pytest.fixture(scope="module")
def bench_files(tmp_path_factory) -> list[Path]:
    corpus, _ = load_or_generate(tmp_path_factory.mktemp("bench-corpus"), 6, 0)
    return list(corpus.files)


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=_IDS)
def test_benchmark_corpus_gives_identical_outputs(tmp_path, bench_files, name, options):
    compiled = _compile(name, options, tmp_path, _patients(bench_files))
    for path in bench_files:
        assert _same(lambda p=path: pydicom.dcmread(p), compiled), path.name
    assert _same(lambda: read_instance(bench_files[0]), compiled)


_TEXT_TAGS = sorted(
    tag for tag, entry in DicomDictionary.items()
    if entry[0] in ("LO", "SH", "LT", "ST", "UT", "PN", "UC", "DA", "DT", "UI", "CS", "AS")
    and tag >> 16 not in (0x0000, 0x0002, 0xFFFE) and tag != 0x00080005 and entry[1] == "1"
)
_SEQUENCE_TAGS = sorted(
    tag for tag, entry in DicomDictionary.items()
    if entry[0] == "SQ" and tag >> 16 not in (0x0000, 0x0002, 0xFFFE)
)
_WORD = st.text(alphabet="BCDFGHJKLMNPQRSTVWXZ ", min_size=1, max_size=12)


def _value(tag: int, word: str) -> str:
    vr = DicomDictionary[tag][0]
    samples = {"DA": "20010203", "DT": "20010203040506", "UI": "1.2.3.4." + str(len(word)),
               "AS": "042Y", "CS": word.strip()[:16].replace(" ", "_")}
    value = samples.get(vr, word)
    return value[:16] if vr == "SH" else value[:64] if vr in ("LO", "PN", "UC") else value


@st.composite
def datasets(draw: st.DrawFn) -> Dataset:
    """A CT with planted top-level, nested and private elements (explicit VR LE)."""
    patient = draw(st.sampled_from(_PATIENTS))
    ds = make_ct(PatientID=patient, PatientName=draw(_WORD) + "^" + draw(_WORD))
    for tag in draw(st.lists(st.sampled_from(_TEXT_TAGS), max_size=8, unique=True)):
        ds.add_new(tag, DicomDictionary[tag][0], _value(tag, draw(_WORD)))
    for seq, inner in draw(st.lists(st.tuples(st.sampled_from(_SEQUENCE_TAGS),
                                              st.sampled_from(_TEXT_TAGS)), max_size=3)):
        item = Dataset()
        item.add_new(inner, DicomDictionary[inner][0], _value(inner, draw(_WORD)))
        if draw(st.booleans()):
            deeper = Dataset()
            deeper.add_new(inner, DicomDictionary[inner][0], _value(inner, draw(_WORD)))
            item.add_new(0x00081140, "SQ", Sequence([deeper]))
        ds.add_new(seq, "SQ", Sequence([item]))
    for group in draw(st.lists(st.sampled_from([0x0009, 0x0011, 0x0019, 0x0029]), max_size=2,
                               unique=True)):
        creator = draw(st.sampled_from(["SIEMENS CSA HEADER", "GEMS_IDEN_01", "ACME 1.1"]))
        block = ds.private_block(group, creator, create=True)
        for offset in draw(st.lists(st.integers(0x00, 0xFF), max_size=3, unique=True)):
            vr = draw(st.sampled_from(["LO", "SH", "DS", "UN"]))
            text = {"UN": b"12", "DS": "12"}.get(vr, draw(_WORD)[:16])
            block.add_new(offset, vr, text)
    if draw(st.booleans()):
        ds.add_new(0x00330010, "LO", "orphan element")  # private, no creator
    if draw(st.booleans()):
        ds.add_new(0x00100000, "UL", 4)  # a group length
    return ds


_COMPILED: dict[tuple[str, tuple[str, ...]], CompiledProfile] = {}


def _compiled_once(name: str, options: tuple[str, ...], folder: Path) -> CompiledProfile:
    key = (name, options)
    if key not in _COMPILED:
        _COMPILED[key] = _compile(name, options, folder, set(_PATIENTS))
    return _COMPILED[key]


def _raw(ds: Dataset) -> Callable[[], Dataset]:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    return lambda: pydicom.dcmread(io.BytesIO(data))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=_IDS)
@settings(max_examples=15, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ds=datasets())
def test_generated_datasets_give_identical_outputs(tmp_path, name, options, ds):
    compiled = _compiled_once(name, options, tmp_path)
    assert _same(_raw(ds), compiled), "raw read"
    assert _same(lambda: copy.deepcopy(ds), compiled), "in-memory dataset"
