"""Seeded generator of a realistic synthetic CT corpus for the benchmarks.

Every file is a 512×512, 16-bit (12 bits stored) CT Image Storage instance,
uncompressed explicit VR little endian, written with
``save_as(..., enforce_file_format=True)``. Files are grouped into patients,
studies and series (by default 4 × 2 × 2 = 16 series) and carry a header of
roughly 150 elements, nested ones included: patient module with Faker names,
IDs, birth dates, addresses and phones; study, series and equipment modules;
the CT image module; dates and times; nested referenced image/study sequences;
a Request Attributes Sequence; an Other Patient IDs Sequence; free-text
comments; and GE-, Siemens- and RIS-like private blocks (one of which copies
the patient's name and MRN, as some gateways do).

All values are synthetic. The same ``(count, seed)`` gives the same corpus,
byte for byte, with the same installed Faker and pydicom versions.

Run ``python -m benchmarks.corpus OUT_DIR --count N --seed S``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence as SequenceABC
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from faker import Faker
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

__all__ = ["Corpus", "generate_corpus", "load_or_generate", "main"]

MANIFEST = "manifest.json"
ROWS = COLUMNS = 512
#: Version of the generator; a manifest with another version is regenerated.
GENERATOR_VERSION = 1

_DETACHED_STUDY_MGMT = "1.2.840.10008.3.1.2.3.1"
_MPPS = "1.2.840.10008.3.1.2.3.3"
_SERIES_KINDS = (
    # description, kernel, slice thickness (mm), GE-ish filter
    ("AXIAL 1.25MM STND", "STANDARD", 1.25, "BODY FILTER"),
    ("AXIAL 2.5MM BONE", "BONE", 2.5, "BODY FILTER"),
    ("AXIAL 5MM SOFT", "SOFT", 5.0, "BODY FILTER"),
    ("CORONAL 3MM STND", "STANDARD", 3.0, "BODY FILTER"),
)
_STUDY_KINDS = (
    ("CT CHEST W CONTRAST", "CHEST", "71260", "CT chest with contrast"),
    ("CT ABD PELVIS W/O CONTRAST", "ABDOMEN", "74176", "CT abdomen pelvis without contrast"),
    ("CT HEAD W/O CONTRAST", "HEAD", "70450", "CT head without contrast"),
    ("CT CHEST LOW DOSE SCREENING", "CHEST", "71271", "CT chest low dose screening"),
)


@dataclass
class Corpus:
    """A generated corpus on disk.

    Attributes
    ----------
    root : Path
        Directory holding the files and ``manifest.json``.
    count, seed : int
        Generation parameters.
    files : list of Path
        The DICOM files, in generation order.
    phi : list of str
        Identifying strings that were written into the headers (patient names
        and name parts, IDs, birth dates, addresses, phones, accession numbers).
        A de-identified output must contain none of them.
    elements_per_file : float
        Mean number of data elements per file, nested ones included.
    """

    root: Path
    count: int
    seed: int
    files: list[Path] = field(default_factory=list)
    phi: list[str] = field(default_factory=list)
    elements_per_file: float = 0.0
    bytes_total: int = 0

    def to_manifest(self) -> dict[str, object]:
        """Return the JSON-serialisable manifest (paths relative to ``root``)."""
        data = asdict(self)
        data["root"] = "."
        data["files"] = [p.name for p in self.files]
        data["generator_version"] = GENERATOR_VERSION
        data["pydicom"] = pydicom.__version__
        return data


def _uid(*parts: object) -> UID:
    """Return a deterministic UID derived from ``parts``."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _da(d: dt.date) -> str:
    return d.strftime("%Y%m%d")


def _tm(t: dt.datetime) -> str:
    return t.strftime("%H%M%S.%f")


def _pn(family: str, given: str, middle: str = "") -> str:
    return f"{family}^{given}^{middle}" if middle else f"{family}^{given}"


def _make_patient(fake: Faker, rng: np.random.Generator, index: int) -> dict[str, str]:
    sex = "F" if rng.random() < 0.5 else "M"
    given = fake.first_name_female() if sex == "F" else fake.first_name_male()
    family = fake.last_name()
    middle = fake.random_uppercase_letter()
    birth = fake.date_of_birth(minimum_age=25, maximum_age=89)
    address = f"{fake.street_address()}, {fake.city()}, {fake.state_abbr()} {fake.zipcode()}"
    return {
        "sex": sex,
        "given": given,
        "family": family,
        "name": _pn(family, given, middle),
        "birth_name": _pn(fake.last_name(), given),
        "mother": _pn(fake.last_name(), fake.first_name_female()),
        "id": f"MRN{rng.integers(10**7, 10**8)}",
        "alt_id": f"E{rng.integers(10**8, 10**9)}",
        "ssn": fake.ssn(),
        "birth_date": _da(birth),
        "birth_year": str(birth.year),
        "address": address[:64],
        "phone": fake.numerify("(###)###-####"),
        "occupation": fake.job()[:16],
        "index": str(index),
    }


def _phantom(rng: np.random.Generator, scale: float) -> np.ndarray:
    """Return a 512×512 stored-value image of an elliptical body (intercept -1024)."""
    yy, xx = np.mgrid[0:ROWS, 0:COLUMNS].astype(np.float32)
    cy, cx = ROWS / 2, COLUMNS / 2
    img = np.full((ROWS, COLUMNS), 24.0, dtype=np.float32)  # air ≈ -1000 HU
    body = ((xx - cx) / (200 * scale)) ** 2 + ((yy - cy) / (150 * scale)) ** 2 <= 1
    img[body] = 1064.0  # soft tissue ≈ 40 HU
    spine = (xx - cx) ** 2 + (yy - cy - 90 * scale) ** 2 <= (22 * scale) ** 2
    img[spine] = 1900.0  # bone
    for side in (-1, 1):
        lung = ((xx - cx - side * 85 * scale) / 60) ** 2 + ((yy - cy + 5) / 80) ** 2 <= 1
        img[lung & body] = 200.0  # lung ≈ -820 HU
    return img + rng.normal(0.0, 4.0, size=img.shape).astype(np.float32)


def _private_blocks(
    ds: Dataset, patient: dict[str, str], serial: str, rng: np.random.Generator
) -> None:
    ge = ds.private_block(0x0009, "GEMS_IDEN_01", create=True)
    ge.add_new(0x01, "LO", "CT_LIGHTSPEED")
    ge.add_new(0x02, "SH", f"CT{serial[-4:]}")
    ge.add_new(0x04, "SH", "LightSpeed VCT")
    ge.add_new(0x27, "SL", int(rng.integers(1_500_000_000, 1_700_000_000)))
    acq = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    acq.add_new(0x02, "SL", 912)
    acq.add_new(0x23, "DS", f"{rng.uniform(20, 60):.4f}")
    acq.add_new(0x24, "DS", f"{rng.uniform(-300, 0):.2f}")
    acq.add_new(0x4E, "DS", "0.984375")
    parm = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
    parm.add_new(0x10, "US", 0)
    parm.add_new(0x27, "SH", "/1.0:1")
    parm.add_new(0x39, "IS", ["200", "0", "0", "0"])
    csa = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    csa.add_new(0x08, "CS", "IMAGE NUM 4")
    csa.add_new(0x09, "LO", "20240118")
    csa.add_new(0x10, "OB", b"SV10\x04\x03\x02\x01" + rng.bytes(248))
    ris = ds.private_block(0x0011, "ACME RIS 1.0", create=True)
    ris.add_new(0x01, "LO", patient["name"].replace("^", " "))
    ris.add_new(0x02, "LO", patient["id"])
    ris.add_new(0x03, "LT", f"Order entered for {patient['given']} {patient['family']}")


def _make_dataset(
    *,
    seed: int,
    patient: dict[str, str],
    study: dict[str, str],
    series: dict[str, str],
    site: dict[str, str],
    instance: int,
    z: float,
    prev_sop: str | None,
    pixels: np.ndarray,
) -> Dataset:
    sop_uid = _uid(seed, "sop", series["uid"], instance)
    study_dt = dt.datetime.strptime(study["date"] + study["time"], "%Y%m%d%H%M%S")
    series_dt = study_dt + dt.timedelta(minutes=int(series["number"]) * 3)
    acq_dt = series_dt + dt.timedelta(milliseconds=instance * 420)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian

    # SOP common
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceCreationDate = _da(acq_dt)
    ds.InstanceCreationTime = _tm(acq_dt)
    ds.InstanceCreatorUID = _uid(seed, "creator", site["serial"])
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.TimezoneOffsetFromUTC = "-0500"
    # Dates and times
    ds.StudyDate = study["date"]
    ds.SeriesDate = _da(series_dt)
    ds.AcquisitionDate = _da(acq_dt)
    ds.ContentDate = _da(acq_dt)
    ds.AcquisitionDateTime = acq_dt.strftime("%Y%m%d%H%M%S.%f")
    ds.StudyTime = study["time"]
    ds.SeriesTime = _tm(series_dt)
    ds.AcquisitionTime = _tm(acq_dt)
    ds.ContentTime = _tm(acq_dt)
    # General study / patient study / visit
    ds.AccessionNumber = study["accession"]
    ds.Modality = "CT"
    ds.Manufacturer = "GE MEDICAL SYSTEMS"
    ds.InstitutionName = site["institution"]
    ds.InstitutionAddress = site["institution_address"]
    ds.ReferringPhysicianName = study["referring"]
    ds.ReferringPhysicianAddress = study["referring_address"]
    ds.ReferringPhysicianTelephoneNumbers = study["referring_phone"]
    ds.StationName = site["station"]
    ds.StudyDescription = study["description"]
    ds.ProcedureCodeSequence = Sequence([_code(study["cpt"], "CPT4", study["cpt_meaning"])])
    ds.SeriesDescription = series["description"]
    ds.InstitutionalDepartmentName = "Radiology - CT"
    ds.PhysiciansOfRecord = study["referring"]
    ds.PerformingPhysicianName = study["performing"]
    ds.NameOfPhysiciansReadingStudy = study["reading"]
    ds.OperatorsName = site["operator"]
    ds.AdmittingDiagnosesDescription = study["diagnosis"]
    ds.ManufacturerModelName = "LightSpeed VCT"
    ref_study = Dataset()
    ref_study.ReferencedSOPClassUID = _DETACHED_STUDY_MGMT
    ref_study.ReferencedSOPInstanceUID = _uid(seed, "refstudy", study["uid"])
    ds.ReferencedStudySequence = Sequence([ref_study])
    ref_pps = Dataset()
    ref_pps.ReferencedSOPClassUID = _MPPS
    ref_pps.ReferencedSOPInstanceUID = _uid(seed, "pps", series["uid"])
    ds.ReferencedPerformedProcedureStepSequence = Sequence([ref_pps])
    ref_images = []
    for purpose, uid in (("121311", series["localizer"]), ("121326", prev_sop)):
        if uid is None:
            continue
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = uid
        meaning = "Localizer" if purpose == "121311" else "Alternate SOP Class instance"
        item.PurposeOfReferenceCodeSequence = Sequence([_code(purpose, "DCM", meaning)])
        ref_images.append(item)
    ds.ReferencedImageSequence = Sequence(ref_images)
    ds.DerivationDescription = "Reconstructed from raw data on scanner console"
    # Patient
    ds.PatientName = patient["name"]
    ds.PatientID = patient["id"]
    ds.IssuerOfPatientID = site["issuer"]
    ds.TypeOfPatientID = "TEXT"
    ds.PatientBirthDate = patient["birth_date"]
    ds.PatientBirthTime = "0815"
    ds.PatientSex = patient["sex"]
    other_ids = []
    for pid, issuer in ((patient["alt_id"], "EPIC"), (patient["ssn"], "SSA")):
        item = Dataset()
        item.PatientID = pid
        item.IssuerOfPatientID = issuer
        item.TypeOfPatientID = "TEXT"
        other_ids.append(item)
    ds.OtherPatientIDsSequence = Sequence(other_ids)
    ds.OtherPatientNames = patient["birth_name"]
    ds.PatientBirthName = patient["birth_name"]
    study_year = int(study["date"][:4])
    ds.PatientAge = f"{min(study_year - int(patient['birth_year']), 999):03d}Y"
    ds.PatientSize = f"{1.55 + 0.05 * int(patient['index']):.2f}"
    ds.PatientWeight = f"{62 + 7 * int(patient['index'])}"
    ds.PatientAddress = patient["address"]
    ds.PatientMotherBirthName = patient["mother"]
    ds.PatientTelephoneNumbers = patient["phone"]
    ds.EthnicGroup = "UNKNOWN"
    ds.Occupation = patient["occupation"]
    ds.AdditionalPatientHistory = (
        f"{patient['given']} reports chest pain for 3 days; prior CT at outside hospital."
    )
    ds.PatientComments = f"Contact {patient['phone']} before scheduling. MRN {patient['id']}."
    # Clinical trial-ish / admission
    ds.AdmissionID = study["admission"]
    ds.CurrentPatientLocation = "ED BAY 4"
    # Contrast
    if "W CONTRAST" in study["description"]:
        ds.ContrastBolusAgent = "OMNIPAQUE 350"
        ds.ContrastBolusRoute = "IV"
        ds.ContrastBolusVolume = "100"
        ds.ContrastBolusStartTime = _tm(series_dt - dt.timedelta(seconds=70))
    # CT acquisition
    ds.BodyPartExamined = study["body_part"]
    ds.ScanOptions = "HELICAL MODE"
    ds.SliceThickness = series["thickness"]
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500"
    ds.DeviceSerialNumber = site["serial"]
    ds.SoftwareVersions = ["07MW18.4", "LightSpeedverrel"]
    ds.ProtocolName = f"{study['body_part']} ROUTINE {patient['family'].upper()}"
    ds.ReconstructionDiameter = "360"
    ds.DistanceSourceToDetector = "949.075012"
    ds.DistanceSourceToPatient = "541"
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "158.5"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "500"
    ds.XRayTubeCurrent = str(200 + instance % 40)
    ds.Exposure = "100"
    ds.FilterType = series["filter"]
    ds.GeneratorPower = "24000"
    ds.FocalSpots = "0.7"
    ds.ConvolutionKernel = series["kernel"]
    ds.PatientPosition = "FFS"
    ds.RevolutionTime = 0.5
    ds.SingleCollimationWidth = 0.625
    ds.TotalCollimationWidth = 40.0
    ds.TableSpeed = 78.75
    ds.TableFeedPerRotation = 39.375
    ds.SpiralPitchFactor = 0.984375
    ds.DataCollectionCenterPatient = [0.0, -158.5, z]
    ds.ReconstructionTargetCenterPatient = [0.0, -158.5, z]
    ds.ExposureModulationType = "SMART MA"
    ds.CTDIvol = 8.42
    ds.DateOfLastCalibration = site["calibration_date"]
    ds.TimeOfLastCalibration = "070000"
    ds.PerformedProcedureStepStartDate = study["date"]
    ds.PerformedProcedureStepStartTime = study["time"]
    ds.PerformedProcedureStepID = study["pps_id"]
    ds.PerformedProcedureStepDescription = study["description"]
    ds.PerformedProtocolCodeSequence = Sequence(
        [_code(f"P{study['cpt']}", "99ACME", f"{study['body_part']} ROUTINE")]
    )
    region = "T-D3000" if study["body_part"] == "CHEST" else "T-D4000"
    ds.AnatomicRegionSequence = Sequence([_code(region, "SRT", study["body_part"])])
    # Relationship / image plane
    ds.StudyInstanceUID = study["uid"]
    ds.SeriesInstanceUID = series["uid"]
    ds.StudyID = study["study_id"]
    ds.SeriesNumber = int(series["number"])
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [-180.0, -180.0, z]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.FrameOfReferenceUID = study["frame_uid"]
    ds.PositionReferenceIndicator = "SN"
    ds.SliceLocation = z
    ds.ImageComments = (
        f"Scanned by {site['operator'].split('^')[-1]}; {patient['given']} {patient['family']} "
        "tolerated the exam well."
    )
    ds.IrradiationEventUID = _uid(seed, "irradiation", series["uid"])
    # Image pixel / CT image / VOI LUT
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ROWS
    ds.Columns = COLUMNS
    ds.PixelSpacing = [0.703125, 0.703125]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = ["40", "-600"]
    ds.WindowWidth = ["400", "1500"]
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenterWidthExplanation = ["SOFT TISSUE", "LUNG"]
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    # Request Attributes Sequence (nested codes)
    request = Dataset()
    request.AccessionNumber = study["accession"]
    request.RequestedProcedureID = study["requested_id"]
    request.RequestedProcedureDescription = study["description"]
    request.RequestedProcedureCodeSequence = Sequence(
        [_code(study["cpt"], "CPT4", study["cpt_meaning"])]
    )
    request.ScheduledProcedureStepID = study["sps_id"]
    request.ScheduledProcedureStepDescription = study["description"]
    request.ScheduledProtocolCodeSequence = Sequence(
        [_code(f"P{study['cpt']}", "99ACME", f"{study['body_part']} ROUTINE")]
    )
    request.ReasonForTheRequestedProcedure = study["diagnosis"]
    request.RequestingPhysician = study["referring"]
    ds.RequestAttributesSequence = Sequence([request])
    ds.RequestingPhysician = study["referring"]
    ds.RequestingService = "EMERGENCY MEDICINE"
    ds.RequestedProcedureComments = f"Pt {patient['family']} allergic to iodine? verify."
    _private_blocks(ds, patient, site["serial"], np.random.default_rng([seed, instance]))
    ds.PixelData = pixels.tobytes()
    return ds


def _count_elements(ds: Dataset) -> int:
    return sum(1 for _ in ds.iterall())


def generate_corpus(
    out_dir: str | Path,
    count: int = 200,
    seed: int = 0,
    *,
    patients: int = 4,
    studies_per_patient: int = 2,
    series_per_study: int = 2,
) -> Corpus:
    """Write ``count`` CT files into ``out_dir`` and return the corpus description.

    Parameters
    ----------
    out_dir : str or Path
        Target directory (created if missing). Existing ``*.dcm`` files are removed.
    count : int
        Number of files, spread as evenly as possible over the series.
    seed : int
        Seed of Faker and numpy; same seed, same corpus.
    patients, studies_per_patient, series_per_study : int
        Shape of the patient/study/series tree.

    Returns
    -------
    Corpus
        Paths, the PHI strings written and summary figures; also saved as
        ``manifest.json`` in ``out_dir``.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("*.dcm"):
        old.unlink()
    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = np.random.default_rng(seed)
    corpus = Corpus(root=root, count=count, seed=seed)
    phi: set[str] = set()

    site = {
        "institution": f"{fake.last_name()} Memorial Hospital"[:64],
        "institution_address": f"{fake.street_address()}, {fake.city()}, {fake.state_abbr()}",
        "station": f"CT{fake.bothify('??##').upper()}",
        "serial": f"{rng.integers(10**7, 10**8)}CT",
        "issuer": f"{fake.last_name().upper()}-MRN"[:64],
        "operator": _pn(fake.last_name(), fake.first_name()),
        "calibration_date": _da(fake.date_between(dt.date(2023, 1, 1), dt.date(2023, 12, 31))),
    }
    groups: list[tuple[dict[str, str], dict[str, str], dict[str, str]]] = []
    for p in range(patients):
        patient = _make_patient(fake, rng, p)
        phi.update(
            patient[k] for k in ("name", "id", "alt_id", "ssn", "birth_date", "address", "phone")
        )
        phi.update((patient["given"], patient["family"]))
        for s in range(studies_per_patient):
            kind = _STUDY_KINDS[(p + s) % len(_STUDY_KINDS)]
            when = fake.date_time_between(dt.datetime(2023, 1, 1), dt.datetime(2025, 12, 31))
            study = {
                "uid": _uid(seed, "study", p, s),
                "frame_uid": _uid(seed, "frame", p, s),
                "date": _da(when),
                "time": when.strftime("%H%M%S"),
                "accession": f"A{rng.integers(10**9, 10**10)}",
                "study_id": f"{rng.integers(1000, 99999)}",
                "admission": f"ADM{rng.integers(10**6, 10**7)}",
                "requested_id": f"RP{rng.integers(10**6, 10**7)}",
                "sps_id": f"SPS{rng.integers(10**6, 10**7)}",
                "pps_id": f"PPS{rng.integers(10**6, 10**7)}",
                "description": kind[0],
                "body_part": kind[1],
                "cpt": kind[2],
                "cpt_meaning": kind[3],
                "referring": _pn(fake.last_name(), fake.first_name(), "MD"),
                "referring_address": f"{fake.street_address()}, {fake.city()}"[:64],
                "referring_phone": fake.numerify("(###)###-####"),
                "performing": _pn(fake.last_name(), fake.first_name()),
                "reading": _pn(fake.last_name(), fake.first_name(), "MD"),
                "diagnosis": f"R/O {fake.word()} lesion; hx of smoking"[:64],
            }
            phi.add(study["accession"])
            for r in range(series_per_study):
                skind = _SERIES_KINDS[(s * series_per_study + r) % len(_SERIES_KINDS)]
                series = {
                    "uid": _uid(seed, "series", p, s, r),
                    "localizer": _uid(seed, "localizer", p, s, r),
                    "number": str(r + 2),
                    "description": skind[0],
                    "kernel": skind[1],
                    "thickness": str(skind[2]),
                    "filter": skind[3],
                }
                groups.append((patient, study, series))

    q, rem = divmod(count, len(groups))
    per_group = [q + (1 if i < rem else 0) for i in range(len(groups))]
    elements = 0
    n = 0
    for (patient, study, series), k in zip(groups, per_group, strict=True):
        if k == 0:
            continue
        base = _phantom(rng, 0.85 + 0.1 * int(patient["index"]) / max(patients - 1, 1))
        prev: str | None = None
        for i in range(1, k + 1):
            noise = rng.integers(-12, 13, size=base.shape, dtype=np.int16)
            pixels = np.clip(base + noise, 0, 4095).astype(np.uint16)
            z = -100.0 + i * float(series["thickness"])
            ds = _make_dataset(
                seed=seed,
                patient=patient,
                study=study,
                series=series,
                site=site,
                instance=i,
                z=z,
                prev_sop=prev,
                pixels=pixels,
            )
            prev = ds.SOPInstanceUID
            path = root / f"ct_{n:05d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            elements += _count_elements(ds)
            corpus.files.append(path)
            corpus.bytes_total += path.stat().st_size
            n += 1
    corpus.phi = sorted(phi)
    corpus.elements_per_file = elements / n
    (root / MANIFEST).write_text(json.dumps(corpus.to_manifest(), indent=1), encoding="utf-8")
    return corpus


def load_or_generate(out_dir: str | Path, count: int, seed: int) -> tuple[Corpus, bool]:
    """Reuse the corpus in ``out_dir`` if its manifest matches, else generate it.

    Returns
    -------
    (Corpus, bool)
        The corpus and whether it was reused.
    """
    root = Path(out_dir)
    manifest = root / MANIFEST
    if manifest.is_file():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        files = [root / name for name in data.get("files", [])]
        if (
            data.get("count") == count
            and data.get("seed") == seed
            and data.get("generator_version") == GENERATOR_VERSION
            and all(f.is_file() for f in files)
        ):
            corpus = Corpus(
                root=root,
                count=count,
                seed=seed,
                files=files,
                phi=list(data["phi"]),
                elements_per_file=float(data["elements_per_file"]),
                bytes_total=int(data["bytes_total"]),
            )
            return corpus, True
    return generate_corpus(root, count, seed), False


def main(argv: SequenceABC[str] | None = None) -> int:
    """Command-line entry point: ``python -m benchmarks.corpus OUT_DIR --count N --seed S``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.corpus",
        description="Write a seeded synthetic corpus of 512x512 CT files.",
    )
    parser.add_argument("out_dir", type=Path, help="directory to write the corpus into")
    parser.add_argument("--count", type=int, default=200, help="number of files (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    corpus = generate_corpus(args.out_dir, args.count, args.seed)
    print(
        f"wrote {len(corpus.files)} files ({corpus.bytes_total / 2**20:.1f} MiB, "
        f"{corpus.elements_per_file:.0f} elements/file) to {corpus.root}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
