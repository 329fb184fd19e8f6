"""Running a job: every input reported, outputs named by UIDs, no PHI where it must not be."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import shutil
import stat
from pathlib import Path

import pydicom
import pytest
from conftest import compiled
from factories import PHI, make_ct
from pydicom.data import get_testdata_file
from pydicom.uid import BasicTextSRStorage, generate_uid

from pipeline import fastpath, job
from pipeline.io import sinks
from pipeline.io.report import UsageError
from pipeline.io.sinks import TMP_PREFIX, FolderSink
from pipeline.job import process_file, run_job

UID_PATH = re.compile(r"^[0-9.]+/[0-9.]+/[0-9.]+\.dcm$")

#: Expected (status, words in the reason) of every input of :func:`build_tree`.
EXPECTED = {
    "ct/1.dcm": ("ok", ""),
    "ct/2.dcm": ("ok", ""),
    "ct/sub/3.dcm": ("ok", ""),
    "ct/.hidden.dcm": ("ok", ""),
    "sr-no-pixels.dcm": ("ok", ""),
    "notes.txt": ("skipped", "not a DICOM file"),
    "empty.dcm": ("skipped", "empty file"),
    "DICOMDIR": ("skipped", "DICOMDIR"),
    "truncated.dcm": ("failed", "truncated"),
    "broken-value.dcm": ("failed", "(0028,0010)"),
    "no-series-uid.dcm": ("failed", "SeriesInstanceUID"),
}


def ct_bytes(**kwargs: object) -> bytes:
    """A CT instance as file bytes."""
    buffer = io.BytesIO()
    make_ct(**kwargs).save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def build_tree(root: Path) -> Path:
    """A source folder with good inputs and every kind of bad one (see EXPECTED)."""
    src = root / "src"
    study = generate_uid()
    files: dict[str, bytes] = {
        "ct/1.dcm": ct_bytes(study_uid=study, seed=1),
        "ct/2.dcm": ct_bytes(study_uid=study, seed=2),
        "ct/sub/3.dcm": ct_bytes(seed=3),
        "ct/.hidden.dcm": ct_bytes(seed=4),
        "notes.txt": f"patient {PHI['PatientName']} {PHI['PatientID']}\n".encode(),
        "empty.dcm": b"",
        "DICOMDIR": Path(get_testdata_file("DICOMDIR")).read_bytes(),
    }
    full = ct_bytes()
    files["truncated.dcm"] = full[: len(full) // 2]
    rows = b"\x28\x00\x10\x00US\x02\x00\x10\x00"
    files["broken-value.dcm"] = ct_bytes().replace(rows, rows[:6] + b"\x03\x00\x10\x00\x00")
    sr = make_ct()
    del sr.PixelData
    sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    files["sr-no-pixels.dcm"] = buffer.getvalue()
    no_series = make_ct()
    del no_series.SeriesInstanceUID
    buffer = io.BytesIO()
    no_series.save_as(buffer, enforce_file_format=True)
    files["no-series-uid.dcm"] = buffer.getvalue()
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (src / "ct" / "loop").symlink_to(src, target_is_directory=True)
    return src


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def phi_strings() -> list[str]:
    """Every PHI value of the factory, and each name part of at least 3 characters."""
    found = set()
    for value in PHI.values():
        found.add(value)
        found.update(part for part in re.split(r"[\^, ]+", value) if len(part) >= 3)
    found.discard("Way")
    return sorted(found)


def assert_no_phi(text: str, where: str) -> None:
    """No PHI value in ``text`` (case-insensitive)."""
    lowered = text.lower()
    for value in phi_strings():
        assert value.lower() not in lowered, f"{value!r} found in {where}"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The source tree of :func:`build_tree`."""
    return build_tree(tmp_path)


def test_every_input_is_reported_and_the_run_goes_on(tmp_path, tree, keyring):
    before = tree_hashes(tree)
    out = tmp_path / "out"
    report = run_job([tree], out, compiled(), keyring, report_path=tmp_path / "r.json")
    by_source = {Path(e.source).relative_to(tree).as_posix(): e for e in report.files}
    assert set(by_source) == set(EXPECTED)
    for rel, (status, words) in EXPECTED.items():
        entry = by_source[rel]
        assert entry.status == status, (rel, entry.reason)
        assert words in (entry.reason or ""), (rel, entry.reason)
        assert (entry.output is not None) == (status == "ok")
    assert report.job.counts == {"ok": 5, "failed": 3, "skipped": 3, "duplicate": 0}
    assert tree_hashes(tree) == before, "an original was modified"


def test_outputs_are_named_by_uids_only_and_read_back(tmp_path, tree, keyring):
    out = tmp_path / "out"
    report = run_job([tree], out, compiled(), keyring, progress=False)
    outputs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert outputs == sorted(e.output for e in report.files if e.output)
    for rel in outputs:
        assert UID_PATH.match(rel), rel
        assert_no_phi(rel, "an output path")
        ds = pydicom.dcmread(out / rel)
        assert rel == f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
        assert_no_phi((out / rel).read_bytes().decode("latin-1"), rel)
    assert not [p for p in out.rglob(f"{TMP_PREFIX}*")]


def test_report_holds_no_phi_and_is_private(tmp_path, tree, keyring):
    path = tmp_path / "report.json"
    run_job([tree], tmp_path / "out", compiled(), keyring, report_path=path, progress=False)
    text = path.read_text("utf-8")
    assert_no_phi(text, "the report")
    data = json.loads(text)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert data["job"]["profile"]["name"] == "dicom-basic"
    assert len(data["job"]["profile"]["content_hash"]) == 64
    assert data["job"]["key"] == {"fingerprint": keyring.fingerprint, "ephemeral": False}
    assert data["job"]["counts"]["ok"] == 5
    ok = [f for f in data["files"] if f["status"] == "ok"]
    action = ok[0]["actions"][0]
    assert set(action) == {"path", "tag", "keyword", "vr", "action", "source", "note"}
    assert {a["keyword"] for a in ok[0]["actions"]} >= {"PatientName", "PatientID"}


def test_map_file_links_pseudonyms_and_stays_outside(tmp_path, tree, keyring):
    path = tmp_path / "private" / "map.json"
    run_job([tree], tmp_path / "out", compiled(), keyring, map_path=path, progress=False)
    data = json.loads(path.read_text("utf-8"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert data["entries"]
    assert PHI["PatientID"] in {e["original"] for e in data["entries"]}


@pytest.mark.parametrize("which", ["report_path", "map_path"])
def test_report_or_map_inside_the_output_is_a_usage_error(tmp_path, tree, keyring, which):
    out = tmp_path / "out"
    with pytest.raises(UsageError):
        run_job([tree], out, compiled(), keyring, **{which: out / "x.json"}, progress=False)
    assert not out.exists() or not any(out.iterdir())


def test_source_inside_the_output_is_a_usage_error(tmp_path, tree, keyring):
    with pytest.raises(UsageError):
        run_job([tree / "ct"], tree, compiled(), keyring, progress=False)


def test_output_inside_a_source_is_not_read_back(tmp_path, tree, keyring):
    out = tree / "deid"
    first = run_job([tree], out, compiled(), keyring, progress=False)
    second = run_job([tree], out, compiled(), keyring, progress=False)
    assert len(second.files) == len(first.files) == len(EXPECTED)


def test_same_output_uid_twice_is_a_duplicate(tmp_path, keyring):
    src = tmp_path / "src"
    src.mkdir()
    data = ct_bytes()
    (src / "a.dcm").write_bytes(data)
    (src / "b.dcm").write_bytes(data)
    report = run_job([src], tmp_path / "out", compiled(), keyring, progress=False)
    assert [e.status for e in report.files] == ["ok", "duplicate"]
    assert report.files[1].output is None
    assert len([p for p in (tmp_path / "out").rglob("*") if p.is_file()]) == 1


def test_failed_write_leaves_nothing_half_written(tmp_path, tree, keyring, monkeypatch):
    def fail(*args: object) -> None:
        raise OSError("simulated")

    monkeypatch.setattr(sinks.os, "replace", fail)
    out = tmp_path / "out"
    report = run_job([tree], out, compiled(), keyring, progress=False)
    ok_before = [rel for rel, (status, _) in EXPECTED.items() if status == "ok"]
    written = [e for e in report.files if e.status == "ok"]
    assert written == []
    assert report.job.counts["failed"] == 3 + len(ok_before)
    assert [p for p in out.rglob("*") if p.is_file()] == []
    reasons = {e.reason for e in report.files if "write" in (e.reason or "")}
    assert reasons == {"write failed (OSError)"}


@pytest.mark.parametrize("path_taken", ["fast", "general"])
def test_unexpected_exception_is_reported_by_class_name_only(
    tmp_path, keyring, caplog, monkeypatch, path_taken
):
    path = tmp_path / "ct.dcm"
    path.write_bytes(ct_bytes())

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"cannot handle {PHI['PatientName']}")

    def unsupported(*args: object, **kwargs: object) -> None:
        raise fastpath.Unsupported("take the general path")

    if path_taken == "fast":
        monkeypatch.setattr(fastpath, "deidentify_bytes", explode)
    else:
        monkeypatch.setattr(fastpath, "deidentify_bytes", unsupported)
        monkeypatch.setattr(job, "deidentify", explode)
    sink = FolderSink(tmp_path / "out")
    with caplog.at_level(logging.DEBUG):
        outcome = process_file(path, sink, compiled(), keyring)
    assert outcome.status == "failed"
    assert outcome.reason == "unexpected error during de-identification (RuntimeError)"
    assert_no_phi(caplog.text, "the log")
    assert "RuntimeError" in caplog.text


def test_process_file_ok_outcome(tmp_path, keyring):
    path = tmp_path / "ct.dcm"
    path.write_bytes(ct_bytes())
    sink = FolderSink(tmp_path / "out")
    outcome = process_file(path, sink, compiled(), keyring)
    assert outcome.status == "ok"
    assert outcome.output is not None and UID_PATH.match(outcome.output)
    assert outcome.actions and outcome.pseudonyms
    assert (sink.root / outcome.output).is_file()


def test_missing_source_raises_before_anything_is_written(tmp_path, keyring):
    from pipeline.errors import InputError

    with pytest.raises(InputError):
        run_job([tmp_path / "nope"], tmp_path / "out", compiled(), keyring, progress=False)


def test_copy_of_tree_gives_the_same_outputs_with_the_same_key(tmp_path, tree, keyring):
    a = run_job([tree], tmp_path / "a", compiled(), keyring, progress=False)
    shutil.rmtree(tree / "ct" / "sub")
    b = run_job([tree / "ct"], tmp_path / "b", compiled(), keyring, progress=False)
    outputs_a = {e.output for e in a.files if e.output}
    outputs_b = {e.output for e in b.files if e.output}
    assert outputs_b and outputs_b <= outputs_a
