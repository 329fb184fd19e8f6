"""The synthetic burned-in-text corpus and the pixel-PHI metrics of the benchmarks."""

from __future__ import annotations

import datetime as dt
import hashlib
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

pytest.importorskip("faker")
pytest.importorskip("PIL")
# benchmarks/ is not part of the installed package: import it from the checkout
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import pixel_metrics as pm
from training import pixel_corpus as pc

COUNT, SEED = 5, 3


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("pixel-corpus")
    pc.generate(root, COUNT, SEED)
    return root, pc.load_manifest(root)


def test_same_seed_same_bytes_other_seed_other_files(corpus, tmp_path):
    root, manifest = corpus
    pc.generate(tmp_path / "again", COUNT, SEED)
    for entry in manifest["files"]:
        a = (root / entry["name"]).read_bytes()
        b = (tmp_path / "again" / entry["name"]).read_bytes()
        assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest()
    again = (tmp_path / "again" / "manifest.json").read_bytes()
    assert (root / "manifest.json").read_bytes() == again
    other, _, _ = pc.make_sample(0, SEED + 1)
    assert other.header != manifest["files"][0]["header"]


def test_manifest_entities_splits_and_modalities_are_valid(corpus):
    _, manifest = corpus
    assert len(manifest["files"]) == COUNT
    for entry in manifest["files"]:
        assert entry["split"] in {"train", "validation", "test"}
        assert entry["modality"] in {"CT", "MR", "US", "SC"}
        assert entry["lines"], entry["name"]
        for line in entry["lines"]:
            assert line["entity"] in pc.ENTITIES
            assert line["phi"] == (line["entity"] != "OVERLAY")
            assert 7 <= line["size"] <= 24
            if line["phi"]:
                assert line["value"] and line["value"] in line["text"]


def test_boxes_lie_inside_the_image_and_hold_ink(corpus):
    root, manifest = corpus
    for entry in manifest["files"]:
        _, _, background = pc.make_sample(entry["index"], SEED)
        pixels = pydicom.dcmread(root / entry["name"]).pixel_array
        assert pixels.shape[:2] == (entry["rows"], entry["columns"])
        changed = pixels != background
        if changed.ndim == 3:
            changed = changed.any(axis=-1)
        for line in entry["lines"]:
            x0, y0, x1, y1 = line["box"]
            assert 0 <= x0 < x1 <= entry["columns"] and 0 <= y0 < y1 <= entry["rows"]
            inside = changed[y0:y1, x0:x1]
            assert inside.sum() >= 5, (entry["name"], line["text"])
            # tight box: ink on every edge row/column band
            assert inside[0].any() or inside[1].any()
            assert inside[:, 0].any() or inside[:, 1].any()
        truth = pm.text_mask(changed.shape, [tuple(line["box"]) for line in entry["lines"]])
        assert not (changed & ~truth).any(), "ink outside every ground-truth box"


def test_value_boxes_hold_the_value_ink_and_leave_the_label_out(corpus):
    _, manifest = corpus
    labelled = 0
    for entry in manifest["files"]:
        for line in entry["lines"]:
            if not line["phi"]:
                assert line["value_box"] == []
                continue
            x0, y0, x1, y1 = line["box"]
            v0, w0, v1, w1 = line["value_box"]
            assert x0 <= v0 < v1 <= x1 and y0 <= w0 < w1 <= y1
            if line["value"] == line["text"]:
                assert line["value_box"] == line["box"]
                continue
            font = pc._font(line["font"], line["size"])
            width = font.getlength(line["value"])
            assert abs((v1 - v0) - width) <= 0.25 * width + 2, (line["text"], line["value"])
            if line["text"].startswith(line["value"]):
                assert v0 == x0 and v1 < x1
            else:
                labelled += 1
                assert v0 > x0 + 0.5 * font.getlength(line["text"][:line["text"].find(
                    line["value"])].strip())
    assert labelled >= 3


def test_a_missed_label_is_a_line_miss_but_not_a_value_miss():
    line = {"phi": True, "entity": "DATE", "box": [0, 0, 40, 10], "value_box": [16, 0, 40, 10]}
    mask = np.zeros((10, 40), bool)
    mask[:, 12:] = True  # the label's first letters left
    score = pm.LineScore()
    score.add([line], mask)
    assert score.recall() == (0, 1)
    assert score.value_recall() == (1, 1)
    mask[:, :20] = False  # the value's start left too
    again = pm.LineScore()
    again.add([line], mask)
    assert again.value_recall() == (0, 1)


def _date(text: str, fmt: str) -> dt.date:
    for number, month in enumerate(pc._MONTHS, 1):
        text = text.replace(month, f"{number:02d}")
    return dt.datetime.strptime(text, fmt.replace("%b", "%m")).date()


def test_header_values_equal_the_rendered_phi(corpus):
    root, manifest = corpus
    seen = set()
    for entry in manifest["files"]:
        ds = pydicom.dcmread(root / entry["name"])
        for keyword, value in entry["header"].items():
            assert str(ds[keyword].value) == value
        for line in entry["lines"]:
            if not line["phi"]:
                continue
            header = str(ds[line["keyword"]].value)
            seen.add(line["entity"])
            if line["entity"] == "DATE":
                shown = _date(line["value"], line["form"])
                want = dt.datetime.strptime(header, "%Y%m%d").date()
                if "%y" in line["form"]:
                    assert (shown.month, shown.day, shown.year % 100) == (
                        want.month, want.day, want.year % 100)
                else:
                    assert shown == want
            elif line["entity"] == "NAME":
                parts = header.upper().split("^")
                assert sorted(pm.squash(p) for p in parts) == sorted(
                    pm.squash(p) for p in line["value"].replace("^", " ").replace(",", " ")
                    .split())
            elif line["entity"] == "LOCATION":
                assert header.upper().startswith(line["value"].upper())
            else:
                assert header == line["value"]
    assert {"NAME", "ID", "DATE"} <= seen


def test_phi_strings_list_the_header_identifiers(corpus):
    _, manifest = corpus
    entry = manifest["files"][0]
    family = entry["header"]["PatientName"].split("^")[0]
    assert family in entry["phi_strings"]
    assert entry["header"]["PatientID"] in entry["phi_strings"]


# --- metrics ---------------------------------------------------------------------------


def test_a_fully_redacted_box_is_covered():
    mask = pm.redaction_mask((50, 100), [pm.FindingBox((12, 12, 48, 28), "cleared")], 2)
    assert pm.coverage((10, 10, 50, 30), mask) == 1.0
    assert pm.covered((10, 10, 50, 30), mask)


def test_a_90_percent_covered_box_does_not_count():
    mask = np.zeros((50, 100), dtype=bool)
    mask[10:30, 10:46] = True  # 36 of 40 columns
    assert pm.coverage((10, 10, 50, 30), mask) == pytest.approx(0.9)
    assert not pm.covered((10, 10, 50, 30), mask)


def test_rejected_findings_and_other_frames_redact_nothing():
    findings = [pm.FindingBox((0, 0, 10, 10), "rejected"),
                pm.FindingBox((0, 0, 10, 10), "cleared", frame=1),
                pm.FindingBox((20, 20, 30, 30), "pending-review")]
    mask = pm.redaction_mask((40, 40), findings, margin=0)
    assert mask.sum() == 100 and mask[25, 25] and not mask[5, 5]


def test_over_redaction_arithmetic():
    mask = pm.redaction_mask((100, 100), [pm.FindingBox((10, 10, 30, 20), "cleared")], 0)
    outside, area = pm.over_redaction(mask, [(10, 10, 20, 20)])  # half the box is text
    assert (outside, area) == (100, 10_000)
    outside, _ = pm.over_redaction(mask, [(10, 10, 30, 20)])
    assert outside == 0
    grown = pm.redaction_mask((100, 100), [pm.FindingBox((10, 10, 30, 20), "cleared")], 1)
    assert pm.over_redaction(grown, [(10, 10, 30, 20)])[0] == 22 * 12 - 200


def test_readable_ignores_case_and_separators():
    assert pm.readable("SMITH^JOHN", "pt: smith, john", any_word=True)
    assert pm.readable("SMITH^JOHN", "smith", any_word=True)
    assert not pm.readable("SMITH^JOHN", "smyth", any_word=True)
    assert pm.readable("2024-01-05", "Study 2024 01 05")
    assert not pm.readable("BALDWIN CLINIC", "CLINIC")


def test_header_leaks_look_before_pixel_data_only(tmp_path):
    path = tmp_path / "f.dcm"
    path.write_bytes(b"DICM SMITH 123" + b"\xe0\x7f\x10\x00OW" + b"DOE")
    assert pm.header_leaks(path, ["smith", "DOE", "999"]) == ["smith"]


@pytest.mark.parametrize(("index", "seed"), [(40, 7), (21, 7), (0, 3), (1, 3), (2, 3)])
def test_dark_corner_text_lies_wholly_on_its_light_plate(index, seed):
    # a line longer than its plate had an invisible part (dark ink on a dark field)
    sample, _, background = pc.make_sample(index, seed)
    for line in sample.lines:
        if line.layout == "corners" and line.polarity == "dark":
            x0, y0, x1, y1 = line.box
            under = background[y0:y1, x0:x1]
            assert under.min() == under.max(), (sample.name, line.entity)
