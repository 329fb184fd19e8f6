"""Reading inputs: every kind of bad input is refused with a reason, never a value."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pydicom
import pytest
from factories import PHI, make_ct
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import BasicTextSRStorage, JPEGBaseline8Bit

from pipeline.errors import InputError
from pipeline.io import iter_sources, read_instance


def ct_bytes(**overrides: object) -> bytes:
    """A CT instance as file bytes."""
    buffer = io.BytesIO()
    make_ct(**overrides).save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def refused(path: Path) -> InputError:
    """The InputError that reading ``path`` raises."""
    with pytest.raises(InputError) as info:
        read_instance(path)
    assert_no_phi(str(info.value))
    return info.value


def assert_no_phi(text: str) -> None:
    """No value of factories.PHI (nor a name part) appears in ``text``."""
    lowered = text.lower()
    for value in PHI.values():
        for part in [value, *value.split("^")]:
            if len(part) >= 3:
                assert part.lower() not in lowered, part


def test_reads_a_valid_instance(tmp_path):
    path = tmp_path / "ct.dcm"
    path.write_bytes(ct_bytes())
    ds = read_instance(path)
    assert ds.PatientID == PHI["PatientID"]
    assert len(ds.PixelData) == 16 * 16 * 2


def test_instance_without_pixel_data_is_valid(tmp_path):
    ds = make_ct()
    del ds.PixelData
    ds.SOPClassUID = BasicTextSRStorage
    ds.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    path = tmp_path / "sr.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert read_instance(path).SOPClassUID == BasicTextSRStorage


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"Patient: Doe^Johnathan^Q\nMRN8675309\n", "not a DICOM file"),
        (b"", "empty file"),
        (os.urandom(64), "not a DICOM file"),
        (bytes(range(256)) * 8, "not a DICOM file"),
    ],
    ids=["text", "empty", "short-binary", "binary"],
)
def test_non_dicom_is_skipped(tmp_path, content, reason):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    error = refused(path)
    assert error.status == "skipped"
    assert reason in str(error)


def test_dicomdir_is_skipped():
    error = refused(Path(get_testdata_file("DICOMDIR")))
    assert error.status == "skipped"
    assert str(error) == "DICOMDIR is an index, not an instance"


def test_preamble_less_raw_dataset_with_sop_uids_is_read(tmp_path):
    ds = make_ct()
    del ds.file_meta
    ds.preamble = None
    path = tmp_path / "raw"
    pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[128:132] != b"DICM"
    assert read_instance(path).SOPInstanceUID == ds.SOPInstanceUID


def test_preamble_less_dataset_without_sop_uids_is_skipped(tmp_path):
    ds = Dataset()
    ds.PatientName = PHI["PatientName"]
    path = tmp_path / "raw"
    pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True)
    assert refused(path).status == "skipped"


def _cut_points(data: bytes) -> dict[str, int]:
    """Offsets that cut a CT file inside various structures."""
    name = data.index(PHI["PatientName"].encode())
    seq = data.index(b"\x08\x00\x40\x11")  # (0008,1140) ReferencedImageSequence
    pixels = data.index(b"\xe0\x7f\x10\x00")
    return {
        "file-meta": 150,
        "element-header": name - 3,
        "patient-name-value": name + 4,
        "inside-sequence-item": seq + 30,
        "pixel-data-header": pixels + 6,
        "pixel-data-value": len(data) - 100,
        "last-byte": len(data) - 1,
    }


@pytest.mark.parametrize(
    "where",
    [
        "file-meta",
        "element-header",
        "patient-name-value",
        "inside-sequence-item",
        "pixel-data-header",
        "pixel-data-value",
        "last-byte",
    ],
)
def test_truncated_file_fails(tmp_path, where):
    data = ct_bytes(ReferencedImageSequence=_referenced())
    cut = _cut_points(data)[where]
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[:cut])
    error = refused(path)
    assert error.status == "failed"
    assert "truncated" in str(error) or "parse" in str(error) or "invalid" in str(error)


def _referenced() -> pydicom.Sequence:
    """A two-item sequence, long enough to cut inside."""
    items = []
    for uid in ("1.2.3.4", "1.2.3.5"):
        item = Dataset()
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        item.ReferencedSOPInstanceUID = uid
        items.append(item)
    return pydicom.Sequence(items)


def test_short_native_pixel_data_fails(tmp_path):
    ds = make_ct()
    ds.PixelData = ds.PixelData[:-64]
    path = tmp_path / "short.dcm"
    ds.save_as(path, enforce_file_format=True)
    error = refused(path)
    assert error.status == "failed"
    assert "truncated pixel data" in str(error)


def test_multiframe_pixel_data_length_is_checked(tmp_path):
    ds = make_ct()
    ds.NumberOfFrames = 2
    path = tmp_path / "frames.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert "truncated pixel data" in str(refused(path))


def _jpeg(tmp_path: Path, pixel_data: bytes) -> Path:
    ds = make_ct()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = pixel_data
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    path = tmp_path / "jpeg.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_encapsulated_pixel_data_that_parses_is_read(tmp_path):
    path = _jpeg(tmp_path, encapsulate([b"\xff\xd8" + b"\x00" * 98 + b"\xff\xd9"]))
    assert read_instance(path).SOPInstanceUID


@pytest.mark.parametrize("damage", ["item-tag", "item-length"])
def test_broken_encapsulated_pixel_data_fails(tmp_path, damage):
    frame = encapsulate([b"\xff\xd8" + b"\x00" * 98 + b"\xff\xd9"])
    assert frame[12:16] == b"\xfe\xff\x00\xe0"  # the frame's item, after the offset table
    if damage == "item-tag":
        broken = frame[:12] + b"\x12\x34\x56\x78" + frame[16:]
    else:
        broken = frame[:16] + (5000).to_bytes(4, "little") + frame[20:]
    error = refused(_jpeg(tmp_path, broken))
    assert error.status == "failed"
    assert "encapsulated pixel data" in str(error) or "corrupt" in str(error)


def test_broken_value_fails_with_its_tag(tmp_path):
    data = ct_bytes()
    rows = b"\x28\x00\x10\x00US\x02\x00\x10\x00"
    assert data.count(rows) == 1
    path = tmp_path / "broken.dcm"
    path.write_bytes(data.replace(rows, b"\x28\x00\x10\x00US\x03\x00\x10\x00\x00"))
    error = refused(path)
    assert error.status == "failed"
    assert "(0028,0010)" in str(error)


def test_broken_file_meta_element_fails_with_its_tag(tmp_path):
    data = ct_bytes()
    sop_uid = b"\x02\x00\x03\x00UI"  # Media Storage SOP Instance UID
    assert data.count(sop_uid) == 1
    path = tmp_path / "broken-meta.dcm"
    path.write_bytes(data.replace(sop_uid, b"\x02\x00\x03\x00TI"))  # no such VR
    error = refused(path)
    assert error.status == "failed"
    assert "(0002,0003)" in str(error)


@pytest.mark.parametrize("keyword", ["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"])
def test_missing_instance_uids_fail(tmp_path, keyword):
    ds = make_ct()
    delattr(ds, keyword)
    path = tmp_path / "nouid.dcm"
    ds.save_as(path, enforce_file_format=False)
    error = refused(path)
    assert error.status == "failed"
    assert keyword in str(error)


def test_folder_and_fifo_are_not_read(tmp_path):
    assert refused(tmp_path).status == "failed"
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        assert refused(fifo).status == "skipped"


def test_pydicom_warnings_and_logs_do_not_escape(tmp_path, recwarn, caplog):
    data = ct_bytes()
    path = tmp_path / "bad-da.dcm"
    path.write_bytes(data.replace(PHI["PatientBirthDate"].encode(), b"1945X316"))
    with caplog.at_level(logging.DEBUG):
        ds = read_instance(path)
        ds.PatientBirthDate = "1945Y316"  # pydicom validates on assignment too
    assert not [w for w in recwarn if "1945X316" in str(w.message)]
    assert "1945X316" not in caplog.text
    assert "1945Y316" not in caplog.text


# --- walking sources ---------------------------------------------------------------


def test_sources_are_walked_recursively_in_order_with_hidden_files(tmp_path):
    for rel in ("b/2.dcm", "b/1.dcm", "a/.hidden", "a/z/deep.dcm", "top.dcm"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    single = tmp_path / "top.dcm"
    found = [p.relative_to(tmp_path).as_posix() for p in iter_sources([tmp_path, single])]
    assert found == ["a/.hidden", "a/z/deep.dcm", "b/1.dcm", "b/2.dcm", "top.dcm", "top.dcm"]


def test_symlink_loops_are_not_followed_forever(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.dcm").write_bytes(b"x")
    (tmp_path / "d" / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "alias").symlink_to(tmp_path / "d", target_is_directory=True)
    found = [p.name for p in iter_sources([tmp_path])]
    assert found == ["f.dcm"]


def test_excluded_folder_is_not_walked(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.dcm").write_bytes(b"x")
    (tmp_path / "in.dcm").write_bytes(b"x")
    assert [p.name for p in iter_sources([tmp_path], exclude=[tmp_path / "out"])] == ["in.dcm"]


def test_missing_source_raises(tmp_path):
    with pytest.raises(InputError):
        list(iter_sources([tmp_path / "nope"]))
