"""Builders of small, valid DICOM datasets for tests (all values synthetic)."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

PHI = {
    "PatientName": "Doe^Johnathan^Q",
    "PatientID": "MRN8675309",
    "PatientBirthDate": "19450316",
    "AccessionNumber": "ACC24681357",
    "InstitutionName": "Saint Elsewhere Hospital",
    "ReferringPhysicianName": "Kildare^Leonard",
    "PatientAddress": "42 Wallaby Way, Sydney",
}


def make_ct(
    *,
    rows: int = 16,
    columns: int = 16,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    seed: int = 0,
    **overrides: object,
) -> Dataset:
    """Return a CT Image dataset with file meta, synthetic PHI and random pixels."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.StudyDate = "20240105"
    ds.SeriesDate = "20240105"
    ds.AcquisitionDate = "20240105"
    ds.ContentDate = "20240105"
    ds.StudyTime = "101500"
    ds.AcquisitionDateTime = "20240105101500.000000"
    ds.StudyDescription = "CT CHEST WITH CONTRAST"
    ds.SeriesDescription = "AXIAL 1.25MM"
    ds.StudyID = "S12345"
    ds.Manufacturer = "ACME"
    ds.ManufacturerModelName = "Scanner 3000"
    ds.DeviceSerialNumber = "SN-99812"
    ds.StationName = "CTROOM1"
    ds.PatientSex = "M"
    ds.PatientAge = "078Y"
    ds.PatientWeight = "81.5"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "1.25"
    ds.KVP = "120"
    for key, value in PHI.items():
        setattr(ds, key, value)
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [0.0, 0.0, 0.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    rng = np.random.default_rng(seed)
    ds.PixelData = rng.integers(0, 4096, size=(rows, columns), dtype=np.uint16).tobytes()
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = generate_uid()
    ds.ReferencedImageSequence = Sequence([ref])
    for key, value in overrides.items():
        setattr(ds, key, value)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    return ds
