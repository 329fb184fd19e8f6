"""clean-pixel-data end to end: findings, statuses, regions, redaction, report."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pydicom
import pytest
from conftest import compiled
from factories import PHI, make_ct
from pydicom.dataset import Dataset
from test_pixel_ppocr import burn, covers, ct_like

from pipeline.engine import deidentify
from pipeline.keys import Keyring
from pipeline.pixel import stage
from pipeline.pixel.frames import views
from pipeline.pixel.stage import PixelEngines, clean_pixels, engines_for
from pipeline.pixel.types import Recognition, TextBox
from pipeline.profile import compile_profile, load_profile
from pipeline.text import HeaderContext

KEY = Keyring(b"p" * 32)
NAME_BOX = (0.1, 0.1, 0.5, 0.2)  # fractions of the view: where the fake detector "sees" text
CLINICAL_BOX = (0.6, 0.8, 0.9, 0.9)


class FakeDetector:
    """Finds the same two regions on every view, in that view's coordinates."""

    def __init__(self, regions: list[tuple[float, float, float, float]]) -> None:
        self.regions = regions

    def detect(self, image: np.ndarray) -> list[TextBox]:
        rows, cols = image.shape[:2]
        return [TextBox(int(x0 * cols), int(y0 * rows), int(x1 * cols), int(y1 * rows), 0.9, 0)
                for x0, y0, x1, y1 in self.regions]


class FakeRecognizer:
    """Reads the name in the upper half of the image and the label in the lower half."""

    def __init__(self, texts: list[str], score: float) -> None:
        self.texts, self.score = texts, score
        self.reads = 0

    def recognize(self, image: np.ndarray, boxes: list[TextBox]) -> list[Recognition]:
        self.reads += len(boxes)
        rows = image.shape[0]
        return [Recognition(self.texts[0] if b.y0 < rows / 2 else self.texts[1], self.score)
                for b in boxes]


def _engines(score: float = 0.95, regions=(NAME_BOX, CLINICAL_BOX)) -> PixelEngines:
    texts = [PHI["PatientName"].replace("^", " "), "W 400 L 40"]
    return PixelEngines(FakeDetector(list(regions)), FakeRecognizer(texts, score))


def _stored_box(frac: tuple[float, float, float, float], size: int) -> tuple[int, ...]:
    return tuple(int(f * size) for f in frac)


def test_phi_text_is_redacted_clinical_text_kept_and_findings_reported():
    ds = make_ct(rows=64, columns=64, seed=5)
    before = ds.pixel_array.copy()
    result = deidentify(ds, compiled("dicom-basic", "clean-pixel-data"), KEY,
                        pixel_engines=_engines())
    after = result.dataset.pixel_array
    statuses = {f.status for f in result.pixel_findings}
    assert statuses == {"cleared", "rejected"}
    cleared = next(f for f in result.pixel_findings if f.status == "cleared")
    assert cleared.entity == "NAME" and cleared.frame == 0
    x0, y0, x1, y1 = cleared.box
    assert (after[y0:y1, x0:x1] == 0).all()  # MONOCHROME2 unsigned: "min" fill is 0
    outside = np.ones_like(before, dtype=bool)
    outside[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = False  # default margin 1
    assert (after[outside] == before[outside]).all()
    assert result.dataset.BurnedInAnnotation == "NO"
    codes = [i.CodeValue for i in result.dataset.DeidentificationMethodCodeSequence]
    assert "113101" in codes
    assert not result.requires_review
    assert PHI["PatientName"].split("^")[0] not in repr(result.pixel_findings)


def test_text_is_detected_in_the_inverted_full_range_view_only_by_default():
    seen: list[np.ndarray] = []

    class Recording(FakeDetector):
        def detect(self, image: np.ndarray) -> list[TextBox]:
            seen.append(image)
            return super().detect(image)

    ds = make_ct(rows=64, columns=64)
    full = next(v for v in views(ds) if v.name == "full")
    engines = PixelEngines(Recording([NAME_BOX]), _engines().recognizer)
    outcome = clean_pixels(ds, compiled("dicom-basic", "clean-pixel-data").profile.pixel,
                           HeaderContext.from_dataset(ds), engines)
    assert outcome.views_scanned == 1 and len(seen) == 1
    # the same rendering, negated (upscaling rounds each side on its own: off by one at most)
    assert np.abs(seen[0].astype(int) - (255 - full.image.astype(int))).max() <= 1


def test_a_region_read_confidently_in_one_view_is_not_read_again_in_the_others(monkeypatch):
    monkeypatch.setattr(stage, "DETECT_VIEWS", None)  # every view: window, full, inverted
    monkeypatch.setattr(stage, "follow_lines", lambda *a: {})  # count the regions' reads only
    engines = _engines()
    result = deidentify(make_ct(rows=64, columns=64), compiled("dicom-basic", "clean-pixel-data"),
                        KEY, pixel_engines=engines)
    assert isinstance(engines.recognizer, FakeRecognizer)
    assert engines.recognizer.reads == 2  # two regions, three views: each read once
    low = _engines(score=0.5)
    deidentify(make_ct(rows=64, columns=64), compiled("dicom-basic", "clean-pixel-data"), KEY,
               pixel_engines=low)
    assert isinstance(low.recognizer, FakeRecognizer)
    # the name is redacted after one read; the weakly read label is read in every view
    assert low.recognizer.reads == 1 + 3
    assert len(result.pixel_findings) == 2


def test_low_confidence_phi_is_redacted_and_flags_the_instance_for_review():
    ds = make_ct(rows=64, columns=64, seed=6)
    result = deidentify(ds, compiled("dicom-basic", "clean-pixel-data"), KEY,
                        pixel_engines=_engines(score=0.5))
    pending = [f for f in result.pixel_findings if f.status == "pending-review"]
    assert pending and result.requires_review
    assert [f.status for f in result.pixel_findings].count("rejected") == 1  # the label
    x0, y0, x1, y1 = pending[0].box
    assert (result.dataset.pixel_array[y0:y1, x0:x1] == 0).all()
    assert any("requires review" in w for w in result.warnings)


def test_region_rules_blank_known_device_areas_without_any_detection(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "schema_version: 1\nname: p\nextends: dicom-basic\noptions: [clean-pixel-data]\n"
        "pixel:\n  mode: none\n  margin: 0\n  regions:\n"
        "    - modality: CT\n      rows: 64\n      boxes: [[0, 0, 64, 8]]\n"
        "    - modality: US\n      boxes: [[0, 8, 64, 16]]\n", "utf-8")
    profile = compile_profile(load_profile(path))
    ds = make_ct(rows=64, columns=64, seed=7)
    before = ds.pixel_array.copy()
    result = deidentify(ds, profile, KEY, pixel_engines=_engines(regions=()))
    after = result.dataset.pixel_array
    assert (after[0:8] == 0).all()
    assert (after[8:] == before[8:]).all()  # the US rule does not apply to a CT
    assert [f.source for f in result.pixel_findings] == ["region"]


def test_text_wholly_inside_a_region_rule_is_not_read_and_the_region_is_blanked(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "schema_version: 1\nname: p\nextends: dicom-basic\noptions: [clean-pixel-data]\n"
        "pixel:\n  margin: 0\n  regions:\n"
        "    - modality: CT\n      boxes: [[0, 0, 40, 16]]\n", "utf-8")
    profile = compile_profile(load_profile(path))
    engines = _engines()
    ds = make_ct(rows=64, columns=64, seed=7)
    before = ds.pixel_array.copy()
    result = deidentify(ds, profile, KEY, pixel_engines=engines)
    assert isinstance(engines.recognizer, FakeRecognizer)
    assert engines.recognizer.reads == 1  # the clinical label only; the name lies in the rule
    sources = sorted((f.source, f.status) for f in result.pixel_findings)
    assert sources == [("detector", "rejected"), ("region", "cleared"), ("region", "cleared")]
    after = result.dataset.pixel_array
    assert (after[0:16, 0:40] == 0).all()
    x0, y0, x1, y1 = _stored_box(CLINICAL_BOX, 64)
    assert (after[y0:y1, x0:x1] == before[y0:y1, x0:x1]).all()  # overlay text stays


def test_entity_filter_keeps_unlisted_entities_in_place():
    profile = compile_profile(load_profile("dicom-basic", ["clean-pixel-data"],
                                           overrides={"pixel.entities": "[DATE]"}))
    ds = make_ct(rows=64, columns=64, seed=8)
    before = ds.pixel_array.copy()
    result = deidentify(ds, profile, KEY, pixel_engines=_engines())
    assert all(f.status == "rejected" for f in result.pixel_findings)
    assert (result.dataset.pixel_array == before).all()


def _burned_ct() -> tuple[Dataset, list[tuple[int, int, int, int]]]:
    lines = [PHI["PatientName"].replace("^", " ").upper(), f"ID {PHI['PatientID']}",
             "19450316", "W 400 L 40"]
    img, truth = burn(ct_like(seed=11), [18, 18, 18, 18], lines=lines, fill=240)
    ds = make_ct(rows=512, columns=512)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelData = (img.astype(np.uint16) * 16).tobytes()
    ds.WindowCenter, ds.WindowWidth = "2048", "4096"
    ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
    return ds, truth


@pytest.mark.slow
def test_burned_in_header_values_are_found_and_removed_by_the_real_ocr_chain():
    ds, truth = _burned_ct()
    result = deidentify(ds, compiled("dicom-basic", "clean-pixel-data"), KEY)
    cleared = [f for f in result.pixel_findings if f.status in ("cleared", "pending-review")]
    for line in truth[:3]:  # name, ID, birth date: all PHI lines are covered by a redaction
        assert any(covers(TextBox(*f.box, 1.0, 0), line, tol=2) for f in cleared), line
    x0, y0, x1, y1 = truth[3]  # the window label is clinical text: still there
    assert result.dataset.pixel_array[y0:y1, x0:x1].max() >= 240 * 16 - 1
    buffer = io.BytesIO()
    result.dataset.save_as(buffer, enforce_file_format=True)
    back = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    # a second OCR pass over the output, matching against the ORIGINAL header, finds no PHI
    settings = load_profile("dicom-basic", ["clean-pixel-data"]).pixel
    original = HeaderContext.from_dataset(ds)
    assert original.names and original.ids
    again = clean_pixels(back, settings, original, engines_for(settings))
    assert again.views_scanned >= 1
    assert not [f for f in again.findings if f.status != "rejected"]


@pytest.mark.slow
def test_report_lists_pixel_findings_without_their_text(tmp_path):
    import json

    from pipeline.cli import main

    ds, _ = _burned_ct()
    src = tmp_path / "src"
    src.mkdir()
    ds.save_as(src / "burned.dcm", enforce_file_format=True)
    report = tmp_path / "report.json"
    status = main(["deid", str(src), "--out", str(tmp_path / "out"), "--profile", "dicom-basic",
                   "--option", "clean-pixel-data", "--report", str(report), "--quiet"])
    assert status == 0
    text = report.read_text()
    entry = json.loads(text)["files"][0]
    assert entry["pixel_findings"], "the burned-in lines are reported"
    assert {"frame", "box", "entity", "confidence", "status", "source"} <= set(
        entry["pixel_findings"][0])
    assert any(a["action"] == "clean-pixels" for a in entry["actions"])
    for value in (PHI["PatientID"], "Johnathan", "JOHNATHAN", "19450316"):
        assert value not in text


class LabelValueRecognizer:
    """Reads a label on the left and the patient's ID on the right of one line."""

    def recognize(self, image: np.ndarray, boxes: list[TextBox]) -> list[Recognition]:
        cols = image.shape[1]
        return [Recognition("Acc:" if b.x0 < cols / 4 else PHI["PatientID"], 0.95)
                for b in boxes]


def test_text_on_the_line_of_phi_is_redacted_with_it_and_other_lines_are_not():
    detector = FakeDetector([(0.05, 0.1, 0.2, 0.2), (0.25, 0.1, 0.6, 0.2),  # "Acc:" + ID
                             (0.05, 0.5, 0.2, 0.6)])  # "Acc:" alone on another line
    engines = PixelEngines(detector, LabelValueRecognizer())
    result = deidentify(make_ct(rows=64, columns=64), compiled("dicom-basic", "clean-pixel-data"),
                        KEY, pixel_engines=engines)
    by_row = sorted(result.pixel_findings, key=lambda f: (f.box[1], f.box[0]))
    assert [f.status for f in by_row] == ["cleared", "cleared", "rejected"]
    assert by_row[0].source == "line" and by_row[1].entity == "ID"


def test_a_tall_region_beside_a_phi_line_is_not_on_its_line():
    """Speckle or anatomy the detector boxes beside a name is not the name's label."""
    detector = FakeDetector([(0.25, 0.1, 0.6, 0.2),     # the ID line
                             (0.02, 0.05, 0.2, 0.6)])   # a tall region beside it, not text
    engines = PixelEngines(detector, LabelValueRecognizer())
    result = deidentify(make_ct(rows=64, columns=64), compiled("dicom-basic", "clean-pixel-data"),
                        KEY, pixel_engines=engines)
    by_x = sorted(result.pixel_findings, key=lambda f: f.box[0])
    assert [f.status for f in by_x] == ["rejected", "cleared"]


def test_a_one_bit_image_without_text_passes_untouched():
    """Binary segmentations cannot be redacted; with no text found nothing needs to be."""
    ds = make_ct(rows=64, columns=64)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    ds.PixelData = np.packbits(np.eye(64, dtype=np.uint8).ravel(), bitorder="little").tobytes()
    before = ds.PixelData
    result = deidentify(ds, compiled("dicom-basic", "clean-pixel-data"), KEY,
                        pixel_engines=_engines(regions=()))
    assert result.dataset.PixelData == before
    assert result.dataset.BurnedInAnnotation == "NO"
    assert result.pixel_findings == ()


@pytest.mark.parametrize(("text", "score", "status", "source"), [
    ("W 400 L 40", 0.95, "rejected", "detector"),  # read well, not PHI: left in place
    ("W 400 L 40", 0.3, "pending-review", "unreadable"),  # cannot be read: redacted
    ("", 0.0, "pending-review", "unreadable"),
])
def test_text_that_cannot_be_read_is_redacted_and_sent_for_review(text, score, status, source):
    ds = make_ct(rows=64, columns=64, seed=8)
    engines = PixelEngines(FakeDetector([CLINICAL_BOX]), FakeRecognizer([text, text], score))
    outcome = clean_pixels(ds, compiled("dicom-basic", "clean-pixel-data").profile.pixel,
                           HeaderContext.from_dataset(ds), engines)
    (finding,) = outcome.findings
    assert (finding.status, finding.source, finding.entity) == (status, source, "OTHER")
    assert outcome.requires_review == (status == "pending-review")
    assert (outcome.redaction is not None) == (status == "pending-review")


class TentativeDetector(FakeDetector):
    """Like FakeDetector, but not sure its boxes hold text (weak rows of the union)."""

    def detect(self, image: np.ndarray) -> list[TextBox]:
        return [replace(box, tentative=True) for box in super().detect(image)]


@pytest.mark.parametrize(("text", "score", "kept"), [
    (PHI["PatientName"].replace("^", " "), 0.95, True),  # read as PHI: redacted
    ("W 400 L 40", 0.95, False),  # read as text that is not PHI: nothing recorded
    ("", 0.0, False),  # unreadable: speckle, not a line the stage must send for review
])
def test_a_tentative_box_is_kept_only_when_read_as_phi(text, score, kept):
    ds = make_ct(rows=64, columns=64, seed=8)
    engines = PixelEngines(TentativeDetector([NAME_BOX]), FakeRecognizer([text, text], score))
    outcome = clean_pixels(ds, compiled("dicom-basic", "clean-pixel-data").profile.pixel,
                           HeaderContext.from_dataset(ds), engines)
    assert [f.entity for f in outcome.findings] == (["NAME"] if kept else [])
    assert (outcome.redaction is not None) == kept
    assert not outcome.requires_review


def test_an_unreadable_region_that_is_not_line_shaped_is_left_in_place():
    ds = make_ct(rows=64, columns=64, seed=9)  # a 40% x 60% blob (speckle, anatomy)
    engines = PixelEngines(FakeDetector([(0.2, 0.2, 0.6, 0.8)]), FakeRecognizer(["", ""], 0.0))
    outcome = clean_pixels(ds, compiled("dicom-basic", "clean-pixel-data").profile.pixel,
                           HeaderContext.from_dataset(ds), engines)
    assert [f.status for f in outcome.findings] == ["rejected"]
    assert outcome.redaction is None


@pytest.mark.parametrize(("margin", "refined"), [(1, True), (2, True), (0, False)])
def test_ink_boxes_are_refined_only_when_the_margin_covers_it(monkeypatch, margin, refined):
    """Refining may give up a pixel a side, which only a margin of at least 1 covers."""
    calls: list[TextBox] = []

    def spy(view, box):
        calls.append(box)
        return box

    monkeypatch.setattr(stage, "refine", spy)
    ds = make_ct(rows=64, columns=64, seed=5)  # upscaled for detection
    settings = compile_profile(load_profile(
        "dicom-basic", ["clean-pixel-data"], {"pixel.margin": str(margin)})).profile.pixel
    clean_pixels(ds, settings, HeaderContext.from_dataset(ds), _engines())
    assert bool(calls) is refined


LINE = TextBox(40, 100, 160, 112, 0.9)


@pytest.mark.parametrize(("other", "extent"), [
    # another view read the same line as not PHI, reaching further along it: kept
    (TextBox(30, 99, 180, 113, 0.9), (30, 99, 180, 113)),
    # a box many lines tall over texture that holds the line: not the line's extent
    (TextBox(0, 40, 300, 240, 0.5), (40, 100, 160, 112)),
    # exactly twice the line's height: still of its scale
    (TextBox(20, 94, 170, 118, 0.5), (20, 94, 170, 118)),
])
def test_a_redacted_region_spans_boxes_of_its_line_scale_only(other: TextBox,
                                                              extent: tuple[int, ...]) -> None:
    found = [(other, "OTHER", 0.3, stage.REJECTED, "detector"),
             (LINE, "ID", 0.99, stage.CLEARED, "header")]
    (finding,) = stage._merge(found)
    assert (finding.status, finding.entity, finding.box) == (stage.CLEARED, "ID", extent)


def test_a_region_read_as_not_phi_everywhere_keeps_its_whole_extent() -> None:
    found = [(TextBox(0, 40, 300, 240, 0.5), "OTHER", 0.3, stage.REJECTED, "detector"),
             (LINE, "OTHER", 0.95, stage.REJECTED, "detector")]
    (finding,) = stage._merge(found)
    assert (finding.status, finding.box) == (stage.REJECTED, (0, 40, 300, 240))
