"""``veil verify``: an independent second pass over de-identified output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from factories import PHI, make_ct
from pydicom.dataset import Dataset

from pipeline import verify
from pipeline.cli import main
from pipeline.pixel.stage import PixelEngines
from pipeline.pixel.types import Recognition, TextBox, overlap

NAME_TEXT = "seen by John Smith"


def _smooth_ct(**overrides: Any) -> Dataset:
    """A 64x64 CT with a smooth gradient (nothing an OCR could read as text)."""
    ds = make_ct(rows=64, columns=64, **overrides)
    ramp = np.add.outer(np.arange(64), np.arange(64)).astype(np.uint16) * 8
    ds.PixelData = ramp.tobytes()
    return ds


def _deid(tmp_path: Path, datasets: list[Dataset], *options: str, name: str = "out") -> Path:
    """De-identify ``datasets`` with ``veil deid``; return the output folder."""
    src = tmp_path / f"src-{name}"
    src.mkdir()
    for index, ds in enumerate(datasets):
        ds.save_as(src / f"in{index}.dcm", enforce_file_format=True)
    out = tmp_path / name
    argv = ["deid", str(src), "--out", str(out), "--profile", "dicom-basic", "--quiet"]
    for option in options:
        argv += ["--option", option]
    assert main(argv) == 0
    return out


def _only(out: Path) -> Path:
    """The single DICOM file of an output folder."""
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == 1
    return files[0]


def _edit(path: Path, **values: object) -> None:
    """Set attributes of a written file (planting PHI back into de-identified output)."""
    ds = pydicom.dcmread(path)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)


def _verify(out: Path, tmp_path: Path, *extra: str) -> tuple[int, dict, str]:
    """Run ``veil verify``; return the status, the report and its text."""
    report = tmp_path / "verify.json"
    status = main(["verify", str(out), "--report", str(report), *extra])
    text = report.read_text()
    return status, json.loads(text), text


class _FakeDetector:
    """Finds the same regions (fractions of the view) on every view."""

    def __init__(self, regions: list[tuple[float, float, float, float]]) -> None:
        self.regions = regions
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[TextBox]:
        self.calls += 1
        rows, cols = image.shape[:2]
        return [TextBox(int(x0 * cols), int(y0 * rows), int(x1 * cols), int(y1 * rows), 0.9)
                for x0, y0, x1, y1 in self.regions]


class _FakeRecognizer:
    """Reads the given (text, score) pairs, one per box."""

    def __init__(self, reads: list[tuple[str, float]]) -> None:
        self.reads = reads

    def recognize(self, image: np.ndarray, boxes: list[TextBox]) -> list[Recognition]:
        return [Recognition(t, s) for t, s in self.reads[: len(boxes)]]


def _fake_engines() -> tuple[PixelEngines, _FakeDetector]:
    """A name, an overlay label and a poorly read name, on every view."""
    regions = [(0.1, 0.1, 0.5, 0.2), (0.6, 0.8, 0.9, 0.9), (0.1, 0.5, 0.3, 0.6)]
    reads = [("DOE^JOHN", 0.9), ("W 400 L 40", 0.8), ("DOE^JOHN", 0.3)]
    detector = _FakeDetector(regions)
    return PixelEngines(detector, _FakeRecognizer(reads)), detector


# --- header ------------------------------------------------------------------------------


def test_clean_output_exits_0_every_file_clean_and_non_dicom_skipped(tmp_path, capsys):
    out = _deid(tmp_path, [_smooth_ct(seed=1), _smooth_ct(seed=2)])
    (out / "README.txt").write_text("not a DICOM file")
    status, report, _ = _verify(out, tmp_path)
    assert status == 0
    by_path = {f["path"]: f for f in report["files"]}
    assert by_path["README.txt"]["status"] == "skipped"
    dicoms = [f for f in report["files"] if f["path"].endswith(".dcm")]
    assert len(dicoms) == 2
    assert all(f["status"] == "clean" and not f["suspects"] for f in dicoms)
    assert not Path(dicoms[0]["path"]).is_absolute()
    assert report["totals"]["counts"] == {"clean": 2, "suspect": 0, "skipped": 1, "failed": 0}
    assert report["pixels_checked"] is True
    assert "veil verify" in capsys.readouterr().out


def test_a_name_planted_back_is_a_suspect_with_its_path_and_never_its_text(tmp_path, capsys):
    out = _deid(tmp_path, [_smooth_ct()])
    _edit(_only(out), ImageComments=NAME_TEXT)
    status, report, text = _verify(out, tmp_path, "--no-pixels")
    assert status == 1
    entry = report["files"][0]
    assert entry["status"] == "suspect"
    assert {"where": "(0020,4000)", "kind": "header", "entity": "NAME"}.items() <= \
        entry["suspects"][0].items()
    assert report["totals"]["header_suspects"] == 1
    printed = capsys.readouterr().out
    for part in ("John", "Smith", "JOHN", "SMITH"):
        assert part not in text
        assert part not in printed


def test_person_names_in_sequences_and_missing_identity_removed_are_suspects(tmp_path):
    out = _deid(tmp_path, [_smooth_ct()])
    path = _only(out)
    ds = pydicom.dcmread(path)
    ds.ReferencedImageSequence[0].OperatorsName = PHI["ReferringPhysicianName"]
    ds.PatientIdentityRemoved = "NO"
    ds.save_as(path, enforce_file_format=True)
    status, report, text = _verify(out, tmp_path, "--no-pixels")
    assert status == 1
    where = {(s["where"], s["entity"]) for s in report["files"][0]["suspects"]}
    assert ("(0008,1140)[0].(0008,1070)", "NAME") in where
    assert ("(0012,0062)", "OTHER") in where
    assert "Kildare" not in text and "Leonard" not in text


def test_real_family_given_shapes_are_names_and_pseudonyms_are_not():
    assert verify._looks_like_real_name("Smith^John")
    assert verify._looks_like_real_name("GARCIA^MARIA^Q=")
    for value in ("XT7UDVYEEV4R2DTU", "ANONYMIZED", "SITE^0042", "Smith"):
        assert not verify._looks_like_real_name(value)


def test_an_original_file_is_full_of_suspects():
    suspects, _ = verify.check_header(make_ct())
    found = {(s.where, s.entity) for s in suspects}
    assert ("(0012,0062)", "OTHER") in found
    assert ("(0010,0010)", "NAME") in found  # PatientName
    assert ("(0008,0020)", "DATE") in found  # StudyDate: nothing says it was changed
    for suspect in suspects:
        assert suspect.where.startswith("(")


def test_placeholders_and_values_veil_writes_are_not_suspects(tmp_path):
    out = _deid(tmp_path, [_smooth_ct(ImageComments=NAME_TEXT)], "clean-descriptors")
    ds = pydicom.dcmread(_only(out))
    assert "[NAME]" in str(ds.ImageComments)  # the first pass did clean it
    assert ds.DeidentificationMethodCodeSequence
    status, report, _ = _verify(out, tmp_path, "--no-pixels")
    assert status == 0, report["files"][0]["suspects"]


def test_retained_dates_are_suspects_shifted_dates_are_info(tmp_path):
    kept = _deid(tmp_path, [_smooth_ct()], "retain-longitudinal-full-dates", name="kept")
    status, report, _ = _verify(kept, tmp_path, "--no-pixels")
    assert status == 1
    dates = {s["where"] for s in report["files"][0]["suspects"] if s["entity"] == "DATE"}
    assert "(0008,0020)" in dates  # StudyDate
    shifted = _deid(tmp_path, [_smooth_ct()], "retain-longitudinal-modified-dates",
                    name="shifted")
    status, report, _ = _verify(shifted, tmp_path, "--no-pixels")
    assert status == 0, report["files"][0]["suspects"]
    info = {i["where"] for i in report["files"][0]["info"] if i["entity"] == "DATE"}
    assert "(0008,0020)" in info


def test_private_elements_are_listed_as_info_with_their_creator(tmp_path):
    out = _deid(tmp_path, [_smooth_ct()])
    path = _only(out)
    ds = pydicom.dcmread(path)
    block = ds.private_block(0x0029, "ACME 1.0", create=True)
    block.add_new(0x10, "US", 7)
    block.add_new(0x11, "LO", NAME_TEXT)
    ds.save_as(path, enforce_file_format=True)
    status, report, text = _verify(out, tmp_path, "--no-pixels")
    entry = report["files"][0]
    info = {i["where"]: i for i in entry["info"]}
    assert info["(0029,1010)"]["creator"] == "ACME 1.0"
    assert info["(0029,1011)"]["what"] == "private element remains"
    assert [s["where"] for s in entry["suspects"]] == ["(0029,1011)"]  # its text is read too
    assert status == 1
    assert "Smith" not in text


def test_burned_in_annotation_yes_is_a_suspect_even_without_ocr(tmp_path):
    out = _deid(tmp_path, [_smooth_ct()])
    _edit(_only(out), BurnedInAnnotation="YES")
    status, report, _ = _verify(out, tmp_path, "--no-pixels")
    assert status == 1
    assert report["files"][0]["suspects"] == [{
        "where": "(0028,0301)", "kind": "pixel", "entity": "OTHER", "score": 1.0,
        "reason": "Burned In Annotation is YES"}]


def test_broken_files_fail(tmp_path):
    out = _deid(tmp_path, [_smooth_ct()])
    data = _only(out).read_bytes()
    (out / "cut.dcm").write_bytes(data[: len(data) // 2])
    status, report, _ = _verify(out, tmp_path, "--no-pixels")
    assert status == 1
    by_path = {f["path"]: f for f in report["files"]}
    assert by_path["cut.dcm"]["status"] == "failed"
    assert by_path["cut.dcm"]["reason"]


# --- usage -------------------------------------------------------------------------------


def test_report_inside_the_folder_is_refused(tmp_path):
    out = _deid(tmp_path, [_smooth_ct()])
    for report in (out / "verify.json", out / "sub" / "verify.json", out):
        assert main(["verify", str(out), "--report", str(report), "--no-pixels"]) == 2
    assert not list(out.rglob("verify.json"))
    assert main(["verify", str(tmp_path / "missing"), "--no-pixels"]) == 2
    assert main(["verify", str(_only(out)), "--no-pixels"]) == 2


# --- pixels (fake engines) ---------------------------------------------------------------


def test_text_read_in_the_pixels_is_reported_by_region_with_its_entity():
    engines, detector = _fake_engines()
    suspects, _ = verify.verify_dataset(_smooth_ct(), engines=engines)
    assert detector.calls == 3  # window, full and inverted views of one frame
    pixel = [s for s in suspects if s.kind == "pixel"]
    assert sorted(s.entity for s in pixel) == ["NAME", "OTHER"]  # the 0.3 read is not
    name = next(s for s in pixel if s.entity == "NAME")
    assert name.where.startswith("frame 0 box [")
    x0, y0, x1, y1 = json.loads(name.where.split("box ")[1])
    assert (x0, y0, x1, y1) == (6, 6, 32, 13)  # the 640-px view box mapped to 64 px
    assert name.score == 0.9


def test_no_pixels_skips_the_ocr(tmp_path, monkeypatch):
    out = _deid(tmp_path, [_smooth_ct()])
    engines, detector = _fake_engines()
    monkeypatch.setattr(verify, "_default_engines", lambda: engines)
    status, report, _ = _verify(out, tmp_path, "--no-pixels")
    assert status == 0 and detector.calls == 0
    assert report["pixels_checked"] is False
    status, report, _ = _verify(out, tmp_path)
    assert status == 1 and detector.calls == 3
    assert report["totals"]["pixel_suspects"] == 2


# --- pixels (the real OCR chain) ---------------------------------------------------------


def _boxes(suspects: list[dict]) -> list[TextBox]:
    """The stored-pixel boxes of pixel suspects."""
    boxes = []
    for suspect in suspects:
        if suspect["kind"] == "pixel":
            x0, y0, x1, y1 = json.loads(suspect["where"].split("box ")[1])
            boxes.append(TextBox(x0, y0, x1, y1, suspect["score"]))
    return boxes


@pytest.mark.slow
def test_burned_in_text_is_found_unless_clean_pixel_data_removed_it(tmp_path):
    pytest.importorskip("onnxruntime")
    from test_pixel_ppocr import covers
    from test_pixel_stage import _burned_ct

    ds, truth = _burned_ct()
    kept = _deid(tmp_path, [ds], name="kept")
    status, report, text = _verify(kept, tmp_path)
    assert status == 1
    suspects = report["files"][0]["suspects"]
    for line in truth:  # every burned-in line is reported for a human look
        assert any(covers(box, line, tol=2) for box in _boxes(suspects)), line
    entities = {s["entity"] for s in suspects if s["kind"] == "pixel"}
    assert {"ID", "DATE"} <= entities, entities
    for value in (PHI["PatientID"], "JOHNATHAN", "Johnathan", "19450316"):
        assert value not in text

    ds, truth = _burned_ct()
    cleaned = _deid(tmp_path, [ds], "clean-pixel-data", name="cleaned")
    _, report, _ = _verify(cleaned, tmp_path)
    pixel = [s for s in report["files"][0]["suspects"] if s["kind"] == "pixel"]
    assert not [s for s in pixel if s["entity"] in ("NAME", "ID", "DATE")], pixel
    for line in truth[:3]:  # name, ID and birth date lines were redacted: nothing left
        region = TextBox(*line, score=1.0)
        assert not [b for b in _boxes(pixel) if overlap(b, region) > 0.5], line
    assert any(covers(box, truth[3], tol=2) for box in _boxes(pixel))  # "W 400 L 40" stays
