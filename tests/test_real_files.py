"""Every DICOM file shipped with pydicom and pydicom-data, through dicom-basic.

Each file must be de-identified, unless it is genuinely not a usable instance
(listed in ``NOT_OK`` with the status it must get), and none of its header PHI
may survive anywhere in the output bytes.
"""

from __future__ import annotations

import importlib.util
import re
import warnings
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from conftest import compiled
from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset

from pipeline.io.sinks import FolderSink
from pipeline.job import process_file
from pipeline.keys import Keyring

pytestmark = pytest.mark.slow

PYDICOM_DATA = Path(pydicom.data.__file__).parent
_SPEC = importlib.util.find_spec("data_store")  # the pydicom-data package
PYDICOM_DATA_STORE = (
    Path(_SPEC.origin).parent / "data" if _SPEC is not None and _SPEC.origin else None
)

_NOT_DICOM = "skipped"
_DICOMDIR = "skipped"
_NO_UIDS = "failed"  # lacks Study/Series (and sometimes SOP) Instance UID
_TRUNCATED = "failed"

#: Files that are not usable instances, keyed by "<package>/<path>", with the status they get.
NOT_OK: dict[str, str] = {
    # Documentation, JSON, dumps, an ICC profile, a gzip: not DICOM at all.
    "pydicom/charset_files/FileInfo.txt": _NOT_DICOM,
    "pydicom/palettes/README.md": _NOT_DICOM,
    "pydicom/test_files/README.txt": _NOT_DICOM,
    "pydicom/test_files/crayons.icc": _NOT_DICOM,
    "pydicom/test_files/test1.json": _NOT_DICOM,
    "pydicom/test_files/test_PN.json": _NOT_DICOM,
    "pydicom/test_files/rtplan.dump": _NOT_DICOM,
    "pydicom/test_files/rtstruct.dump": _NOT_DICOM,
    "pydicom/test_files/zipMR.gz": _NOT_DICOM,
    "pydicom/test_files/dicomdirtests/README.txt": _NOT_DICOM,
    "pydicom/test_files/dicomdirtests/TINY_ALPHA/README": _NOT_DICOM,
    # A preamble-less fragment holding a single private element: no SOP UIDs.
    "pydicom/test_files/no_meta.dcm": _NOT_DICOM,
    # Media Storage Directories: indexes, not instances.
    "pydicom/test_files/dicomdirtests/DICOMDIR": _DICOMDIR,
    "pydicom/test_files/dicomdirtests/DICOMDIR-bigEnd": _DICOMDIR,
    "pydicom/test_files/dicomdirtests/DICOMDIR-empty.dcm": _DICOMDIR,
    "pydicom/test_files/dicomdirtests/DICOMDIR-implicit": _DICOMDIR,
    "pydicom/test_files/dicomdirtests/DICOMDIR-nooffset": _DICOMDIR,
    "pydicom/test_files/dicomdirtests/DICOMDIR-nopatient": _DICOMDIR,
    "pydicom/test_files/dicomdirtests/DICOMDIR-reordered": _DICOMDIR,
    "pydicom/test_files/dicomdirtests/TINY_ALPHA/DICOMDIR": _DICOMDIR,
    # Element-level test fragments with no SOP/Study/Series Instance UIDs.
    "pydicom/charset_files/chrSQEncoding.dcm": _NO_UIDS,
    "pydicom/charset_files/chrSQEncoding1.dcm": _NO_UIDS,
    "pydicom/test_files/UN_sequence.dcm": _NO_UIDS,
    "pydicom/test_files/empty_charset_LEI.dcm": _NO_UIDS,
    "pydicom/test_files/meta_missing_tsyntax.dcm": _NO_UIDS,
    "pydicom/test_files/nested_priv_SQ.dcm": _NO_UIDS,
    "pydicom/test_files/no_meta_group_length.dcm": _NO_UIDS,
    "pydicom/test_files/priv_SQ.dcm": _NO_UIDS,
    # Color Palette IODs (no patient, study or series): not patient instances.
    "pydicom/palettes/fall.dcm": _NO_UIDS,
    "pydicom/palettes/hotiron.dcm": _NO_UIDS,
    "pydicom/palettes/hotmetalblue.dcm": _NO_UIDS,
    "pydicom/palettes/pet.dcm": _NO_UIDS,
    "pydicom/palettes/pet20step.dcm": _NO_UIDS,
    "pydicom/palettes/spring.dcm": _NO_UIDS,
    "pydicom/palettes/summer.dcm": _NO_UIDS,
    "pydicom/palettes/winter.dcm": _NO_UIDS,
    # Codec test images stripped down to pixel data: no Study/Series Instance UID.
    "pydicom/test_files/JPEGLSNearLossless_08.dcm": _NO_UIDS,
    "pydicom/test_files/JPEGLSNearLossless_16.dcm": _NO_UIDS,
    "pydicom/test_files/SC_rgb_jls_lossy_line.dcm": _NO_UIDS,
    "pydicom/test_files/SC_rgb_jls_lossy_sample.dcm": _NO_UIDS,
    # Deliberately cut short.
    "pydicom/test_files/MR_truncated.dcm": _TRUNCATED,
    "pydicom/test_files/rtplan_truncated.dcm": _TRUNCATED,
    "pydicom-data/emri_small_jpeg_2k_lossless_too_short.dcm": _TRUNCATED,
}

#: Attributes whose values are collected as PHI (anywhere in the dataset).
PHI_KEYWORDS = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "AccessionNumber",
        "OtherPatientIDs",
        "OtherPatientNames",
        "InstitutionName",
        "InstitutionAddress",
        "ReferringPhysicianName",
        "PerformingPhysicianName",
        "OperatorsName",
        "PhysiciansOfRecord",
        "PatientAddress",
        "PatientMotherBirthName",
        "PatientTelephoneNumbers",
    }
)
#: Placeholder "names" some test files carry; not identifying, and kept elsewhere
#: (e.g. ``ProtocolName: ANONYMIZED`` in pydicom-data/color-pl.dcm).
PLACEHOLDERS = frozenset({"Anonymized", "ANONYMIZED", "Anonymous", "ANONYMOUS"})
_ESCAPES = re.compile(rb"\x1b[\x20-\x2f]*[\x30-\x7e]")


def _all_files() -> dict[str, Path]:
    """Every file shipped as test data, keyed by "<package>/<relative path>"."""
    found: dict[str, Path] = {}
    roots = [("pydicom", PYDICOM_DATA, ("test_files", "charset_files", "palettes"))]
    if PYDICOM_DATA_STORE is not None:
        roots.append(("pydicom-data", PYDICOM_DATA_STORE, (".",)))
    for package, root, subdirs in roots:
        for sub in subdirs:
            for path in sorted((root / sub).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    found[f"{package}/{path.relative_to(root).as_posix()}"] = path
    for name in pydicom.data.get_testdata_files():
        path = Path(name)
        if path.is_file() and path not in found.values():
            found[f"other/{path.name}"] = path
    return found


FILES = _all_files()


def test_the_data_packages_are_there():
    assert PYDICOM_DATA_STORE is not None, "pydicom-data is not installed"
    assert sum(k.startswith("pydicom-data/") for k in FILES) >= 50
    assert sum(k.startswith("pydicom/") for k in FILES) >= 150
    missing = sorted(set(NOT_OK) - set(FILES))
    assert not missing, f"expectations for files that do not exist: {missing}"


def collect_phi(path: Path) -> set[str]:
    """Header PHI strings (PN parts and other values of 3+ characters) of ``path``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
        values: set[str] = set()
        for elem in ds.iterall():
            if elem.keyword not in PHI_KEYWORDS or elem.value in (None, ""):
                continue
            items = elem.value if elem.VM > 1 else [elem.value]
            for item in items:
                text = str(item).strip()
                if elem.VR == "PN":
                    values.update(p.strip() for p in re.split(r"[=^]", text))
                else:
                    values.add(text)
    return {v for v in values if len(v) >= 3 and any(c.isalnum() for c in v)}


def encodings_of(path: Path) -> list[str]:
    """Python codecs of the file's Specific Character Set."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        return list(convert_encodings(ds.get("SpecificCharacterSet", "ISO_IR 6")))


def needles(value: str, encodings: list[str]) -> set[bytes]:
    """Lower-cased byte forms ``value`` could take in a file."""
    forms = {value.encode("utf-8")}
    for codec in ("latin-1", *encodings):
        try:
            forms.add(_ESCAPES.sub(b"", value.encode(codec)))
        except (LookupError, UnicodeError, ValueError):
            continue
    return {form.lower() for form in forms if len(form) >= 3}


def header_bytes(written: Path, ds: Dataset) -> bytes:
    """Lower-cased bytes of the output file, with its (unchanged) pixel data blanked.

    Pixel data is binary: a short ID such as ``RG1`` turns up in it by chance.
    Burned-in text is another test's business; everything else is searched.
    """
    raw = written.read_bytes()
    pixels = ds.get("PixelData")
    if pixels:
        raw = raw.replace(bytes(pixels), b"")
    return raw.lower()


def occurs(needle: bytes, haystack: bytes, ascii_value: bool) -> bool:
    """Whether ``needle`` is in ``haystack``; an ASCII value must stand as a whole token.

    A token boundary keeps ``134`` from matching inside a new UID's digits and
    ``pre`` inside ``PREDECESSOR``; a value copied anywhere (between ``^``,
    spaces, quotes...) still matches.
    """
    if not ascii_value:
        return needle in haystack
    pattern = rb"(?<![a-z0-9])" + re.escape(needle) + rb"(?![a-z0-9])"
    return re.search(pattern, haystack) is not None


@pytest.fixture(scope="module")
def keyring() -> Keyring:
    """One key for the whole module."""
    return Keyring(bytes(range(32)))


@pytest.fixture(scope="module")
def basic():
    """dicom-basic, compiled once."""
    return compiled("dicom-basic")


@pytest.mark.parametrize("name", sorted(FILES))
def test_real_file(name: str, tmp_path: Path, keyring: Keyring, basic) -> None:
    path = FILES[name]
    sink = FolderSink(tmp_path / "out")
    outcome = process_file(path, sink, basic, keyring)
    expected = NOT_OK.get(name, "ok")
    assert outcome.status == expected, f"{name}: {outcome.status} ({outcome.reason})"
    if expected != "ok":
        assert outcome.reason, f"{name}: no reason given"
        return
    assert outcome.output is not None
    written = sink.root / outcome.output
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = pydicom.dcmread(written)
    assert isinstance(back, Dataset)
    haystack = header_bytes(written, back)
    encodings = encodings_of(path)
    leaked = sorted(
        value
        for value in collect_phi(path) - PLACEHOLDERS
        if any(occurs(needle, haystack, value.isascii()) for needle in needles(value, encodings))
    )
    assert not leaked, f"{name}: PHI survives in the output: {leaked}"
