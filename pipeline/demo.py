"""``veil demo``: de-identify sample files that ship inside the pydicom package."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom.data

#: Real DICOM instances from pydicom's own test files (CT, MR, JPEG 2000, RT, SR, ECG,
#: overlay, multi-frame) plus one non-DICOM file that the job must report as skipped.
SAMPLES = (
    "CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "liver_1frame.dcm",
    "examples_overlay.dcm", "rtplan.dcm", "rtstruct.dcm", "rtdose.dcm", "test-SR.dcm",
    "reportsi.dcm", "waveform_ecg.dcm", "SC_rgb_small_odd.dcm", "README.txt",
)


def sample_dir() -> Path:
    """Folder of pydicom's bundled test files."""
    return Path(pydicom.data.__file__).resolve().parent / "test_files"


def prepare(out: Path) -> tuple[Path, Path, Path, Path]:
    """Copy the samples to ``out/input``; return input, output, report and key paths."""
    source = sample_dir()
    inputs = out / "input"
    inputs.mkdir(parents=True, exist_ok=True)
    for name in SAMPLES:
        shutil.copyfile(source / name, inputs / name)
    return inputs, out / "deidentified", out / "report.json", out / "demo.key"
