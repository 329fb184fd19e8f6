"""Writing outputs, the report and the map: atomic, named by UIDs, never in the wrong place."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pydicom
import pytest
from factories import make_ct
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from pipeline.engine import DeidResult, Pseudonym
from pipeline.errors import DeidError
from pipeline.io import sinks
from pipeline.io.report import UsageError, ensure_outside, write_json_atomic, write_map
from pipeline.io.sinks import TMP_PREFIX, DuplicateOutputError, FolderSink


def result_for(ds: pydicom.Dataset, **uids: str) -> DeidResult:
    """A DeidResult for ``ds`` as it is (the sink does not care who changed it)."""
    return DeidResult(
        parsed=ds,
        actions=(),
        warnings=(),
        pseudonyms=(),
        study_uid=uids.get("study", str(ds.StudyInstanceUID)),
        series_uid=uids.get("series", str(ds.SeriesInstanceUID)),
        sop_uid=uids.get("sop", str(ds.SOPInstanceUID)),
    )


def all_files(root: Path) -> list[Path]:
    """Every file (hidden ones too) under ``root``."""
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_writes_study_series_sop_layout_that_reads_back(tmp_path):
    ds = make_ct()
    sink = FolderSink(tmp_path / "out")
    path = sink.write(result_for(ds))
    expected = tmp_path / "out" / ds.StudyInstanceUID / ds.SeriesInstanceUID
    assert path == (expected / f"{ds.SOPInstanceUID}.dcm").resolve()
    back = pydicom.dcmread(path)
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert all_files(tmp_path / "out") == [path]


def test_keeps_the_transfer_syntax(tmp_path):
    ds = make_ct()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    path = FolderSink(tmp_path).write(result_for(ds))
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian


def test_dataset_without_file_meta_gets_its_original_encoding(tmp_path):
    ds = make_ct()
    del ds.file_meta
    raw = tmp_path / "raw"
    pydicom.dcmwrite(raw, ds, implicit_vr=True, little_endian=True)
    read = pydicom.dcmread(raw, force=True)
    path = FolderSink(tmp_path / "out").write(result_for(read))
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian


@pytest.mark.parametrize(
    "bad",
    [{"study": "../../etc"}, {"series": "1.2/../../x"}, {"sop": "1.2.3\\x"}, {"sop": "9" * 65}],
)
def test_refuses_names_that_are_not_uids(tmp_path, bad):
    sink = FolderSink(tmp_path / "out")
    with pytest.raises(DeidError):
        sink.write(result_for(make_ct(), **bad))
    assert all_files(tmp_path) == []


def test_refuses_a_symlink_that_leads_outside(tmp_path):
    ds = make_ct()
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (out / ds.StudyInstanceUID).symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(DeidError):
        FolderSink(out).write(result_for(ds))
    assert all_files(tmp_path / "elsewhere") == []


def test_second_write_of_the_same_sop_uid_is_a_duplicate(tmp_path):
    ds = make_ct()
    sink = FolderSink(tmp_path)
    first = sink.write(result_for(ds))
    before = first.read_bytes()
    other = make_ct(sop_uid=ds.SOPInstanceUID, PatientID="OTHER")
    with pytest.raises(DuplicateOutputError):
        sink.write(result_for(other))
    assert first.read_bytes() == before


def test_failed_rename_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(sinks.os, "replace", fail)
    sink = FolderSink(tmp_path / "out")
    with pytest.raises(OSError):
        sink.write(result_for(make_ct()))
    assert all_files(tmp_path) == []
    assert list((tmp_path / "out").iterdir()) == []


def test_failed_encoding_leaves_nothing_and_frees_the_uid(tmp_path, monkeypatch):
    ds = make_ct()
    sink = FolderSink(tmp_path)

    def broken(*args: object, **kwargs: object) -> None:
        handle = args[0]
        handle.write(b"half a file")  # type: ignore[attr-defined]
        raise ValueError("cannot encode")

    monkeypatch.setattr(sinks, "dcmwrite", broken)
    with pytest.raises(ValueError):
        sink.write(result_for(ds))
    assert all_files(tmp_path) == []
    monkeypatch.undo()
    assert sink.write(result_for(ds)).exists()  # not reported as a duplicate


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")
def test_unwritable_folder_raises_and_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o500)
    try:
        with pytest.raises(OSError):
            FolderSink(out).write(result_for(make_ct()))
        assert all_files(out) == []
    finally:
        out.chmod(0o700)


def test_no_temporary_file_survives_a_success(tmp_path):
    sink = FolderSink(tmp_path)
    for _ in range(3):
        sink.write(result_for(make_ct(study_uid="1.2.3", series_uid="1.2.3.4")))
    names = [p.name for p in all_files(tmp_path)]
    assert len(names) == 3
    assert not [n for n in names if n.startswith(TMP_PREFIX)]


# --- report and map paths -------------------------------------------------------


def test_report_inside_the_output_folder_is_refused(tmp_path):
    out = tmp_path / "out"
    for inside in (out / "report.json", out / "a" / "b.json", out):
        with pytest.raises(UsageError):
            ensure_outside(inside, out, "report")
    with pytest.raises(UsageError):
        ensure_outside(tmp_path / "x" / ".." / "out" / "r.json", out, "report")
    assert ensure_outside(tmp_path / "report.json", out, "report") == tmp_path / "report.json"


def test_report_inside_through_a_symlink_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "link").symlink_to(out, target_is_directory=True)
    with pytest.raises(UsageError):
        ensure_outside(tmp_path / "link" / "r.json", out, "report")


def test_json_is_written_atomically_and_privately(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600

    def fail(*args: object) -> None:
        raise OSError("no")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_json_atomic(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_map_lists_unique_pairs(tmp_path):
    uid = generate_uid()
    pairs = [Pseudonym("uid", uid, "2.25.1"), Pseudonym("uid", uid, "2.25.1")]
    pairs.append(Pseudonym("patient-id", "MRN1", "ABC"))
    write_map(pairs, tmp_path / "map.json", key_fingerprint="abcd", profile="dicom-basic")
    data = json.loads((tmp_path / "map.json").read_text())
    assert data["key_fingerprint"] == "abcd"
    assert len(data["entries"]) == 2
    assert stat.S_IMODE((tmp_path / "map.json").stat().st_mode) == 0o600
