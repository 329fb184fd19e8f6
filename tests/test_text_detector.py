"""Veil text detector at run time: post-processing, the shipped bundle, profile wiring."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from dataclasses import replace
from importlib import resources

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageFont

from pipeline.pixel.dbnet import VeilTextDetector, kernel_boxes, prepare
from pipeline.pixel.ensemble import (
    LINE_SCALE,
    MAX_CLAIMED,
    MIN_GLYPHS,
    MIN_SCORE,
    TENTATIVE_SCORE,
    UnionDetector,
    claimed_share,
    glyph_count,
    join_rows,
)
from pipeline.pixel.ppocr import PPOCRDetector
from pipeline.pixel.stage import engines_for
from pipeline.pixel.types import TextBox
from pipeline.profile import load_profile
from pipeline.registry import engine_refs
from training.detector.data import targets

SHRINK = 0.25


@pytest.fixture(scope="module")
def detector() -> VeilTextDetector:
    return VeilTextDetector(intra_op_num_threads=1)


def line_image(text: str, size: int, bright: bool, shape: tuple[int, int] = (240, 480),
               at: tuple[int, int] = (40, 90)) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A grey image with one text line; returns it and the line's ink box."""
    back, ink = (20, 230) if bright else (230, 20)
    layer = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(layer).text(at, text, fill=255, font=ImageFont.load_default(size=size))
    alpha = np.asarray(layer, dtype=np.float64) / 255
    ys, xs = np.nonzero(alpha)
    image = np.rint(back * (1 - alpha) + ink * alpha).astype(np.uint8)
    return image, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


@pytest.mark.parametrize(
    ("boxes", "inside", "outside"),
    [
        ([(10, 10, 90, 30)], [(20, 20)], [(5, 5), (50, 60)]),
        ([(10, 10, 90, 30), (10, 40, 90, 60)], [(20, 20), (50, 50)], [(50, 35)]),
        ([(100, 50, 140, 70)], [(110, 60)], [(99, 60)]),
    ],
)
def test_kernel_boxes_recover_the_boxes_the_targets_were_made_from(
    boxes: list[tuple[int, int, int, int]], inside: list[tuple[int, int]],
    outside: list[tuple[int, int]],
) -> None:
    target, _ = targets(np.array(boxes, dtype=np.float32), (80, 160), SHRINK)
    for x, y in inside:
        assert target[y, x] == 1
    for x, y in outside:
        assert target[y, x] == 0
    found = kernel_boxes(target, thresh=0.5, box_thresh=0.5, shrink=SHRINK, pad=0, min_size=1)
    assert len(found) == len(boxes)
    for box in boxes:
        best = min(found, key=lambda f: sum(abs(a - b) for a, b in zip(f[:4], box, strict=False)))
        assert all(abs(a - b) <= 1.0 for a, b in zip(best[:4], box, strict=False))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(1, 60), st.integers(0, 2**31 - 1),
       st.floats(0.1, 0.9), st.floats(0, 4))
def test_kernel_boxes_stay_inside_the_map_and_meet_box_thresh(
    rows: int, cols: int, seed: int, thresh: float, pad: float
) -> None:
    prob = np.random.default_rng(seed).random((rows, cols), dtype=np.float32)
    for x0, y0, x1, y1, score in kernel_boxes(prob, thresh=thresh, box_thresh=thresh,
                                              shrink=SHRINK, pad=pad, min_size=1):
        assert 0 <= x0 < x1 <= cols and 0 <= y0 < y1 <= rows
        assert score >= thresh


@pytest.mark.parametrize("shape", [(1, 1), (17, 33), (64, 64)])
def test_prepare_pads_to_the_multiple_and_keeps_values(shape: tuple[int, int]) -> None:
    grey = np.full(shape, 255, dtype=np.float32)
    out = prepare(grey, 16)
    assert out.shape[2] % 16 == 0 and out.shape[3] % 16 == 0
    assert np.allclose(out, 1.0)


def test_shipped_bundle_is_small_and_its_digest_matches() -> None:
    root = resources.files("models").joinpath("text-detector")
    metadata = json.loads(root.joinpath("metadata.json").read_text(encoding="utf-8"))
    model = root.joinpath("model.onnx").read_bytes()
    assert len(model) <= 10 * 2**20
    assert hashlib.sha256(model).hexdigest() == metadata["source"]["sha256"]
    assert root.joinpath("README.md").read_text(encoding="utf-8").startswith("# Veil text")


@pytest.mark.parametrize(("text", "size", "bright"), [
    ("PATIENT DOE^JANE 1234567", 16, True),
    ("DOB 1961-04-07", 12, False),
    ("St. Example Hospital", 20, True),
])
def test_shipped_model_finds_a_clear_text_line(
    detector: VeilTextDetector, text: str, size: int, bright: bool
) -> None:
    image, (x0, y0, x1, y1) = line_image(text, size, bright)
    boxes = detector.detect(image)
    mask = np.zeros(image.shape, dtype=bool)
    for box in boxes:
        mask[box.y0:box.y1, box.x0:box.x1] = True
    assert mask[y0:y1, x0:x1].mean() >= 0.95
    assert mask.mean() < 0.25  # the line, not the whole image


@pytest.mark.parametrize("value", [0, 128, 255])
def test_shipped_model_finds_nothing_on_a_blank_image(
    detector: VeilTextDetector, value: int
) -> None:
    assert detector.detect(np.full((200, 300), value, dtype=np.uint8)) == []


@settings(max_examples=15, deadline=None)
@given(st.integers(8, 120), st.integers(8, 120), st.integers(0, 2**31 - 1), st.booleans())
def test_boxes_stay_inside_the_image(
    detector: VeilTextDetector, rows: int, cols: int, seed: int, colour: bool
) -> None:
    shape = (rows, cols, 3) if colour else (rows, cols)
    image = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    for box in detector.detect(image):
        assert 0 <= box.x0 <= box.x1 <= cols and 0 <= box.y0 <= box.y1 <= rows
        assert 0 <= box.score <= 1


def test_detect_many_matches_detect_and_survives_pickling(detector: VeilTextDetector) -> None:
    a, _ = line_image("ACC 99812345", 14, True)
    b, _ = line_image("John Smith", 18, False, shape=(200, 300), at=(30, 60))
    again = pickle.loads(pickle.dumps(detector))
    assert again.detect_many([a, b, a]) == [detector.detect(a), detector.detect(b),
                                            detector.detect(a)]


@pytest.mark.parametrize(("name", "kind"), [
    ("veil-text-detector", VeilTextDetector),
    ("ppocr-v4", PPOCRDetector),
    ("ppocr-v4+veil-text-detector", UnionDetector),
])
def test_profile_detector_setting_reaches_engines_for(name: str, kind: type) -> None:
    profile = load_profile("dicom-basic", ["clean-pixel-data"], {"pixel.detector": name})
    assert isinstance(engines_for(profile.pixel).detector, kind)


def test_the_default_detector_is_ppocr_joined_by_ours() -> None:
    detector = engines_for(load_profile("dicom-basic", ["clean-pixel-data"]).pixel).detector
    assert isinstance(detector, UnionDetector)
    assert isinstance(detector.primary, PPOCRDetector)
    assert isinstance(detector.secondary, VeilTextDetector)
    assert [r.name for r in engine_refs(detector)] == ["ppocr-v4-det", "veil-text-detector"]


class Fixed:
    """A detector that returns given boxes."""

    def __init__(self, boxes: list[TextBox]) -> None:
        self.boxes = boxes

    def detect(self, image: np.ndarray) -> list[TextBox]:
        return list(self.boxes)


PRIMARY = TextBox(100, 100, 200, 112, 0.8)


def dotted(shape: tuple[int, int] = (300, 300)) -> np.ndarray:
    """Dark 2x2 marks every 6 pixels on white: any box a few marks wide holds several."""
    image = np.full(shape, 255, np.uint8)
    for y in range(2, shape[0], 6):
        for x in range(2, shape[1], 6):
            image[y:y + 2, x:x + 2] = 0
    return image


@pytest.mark.parametrize(("extra", "joins"), [
    (TextBox(10, 10, 90, 20, 0.97), True),      # a confident line nobody found
    (TextBox(10, 10, 90, 20, 0.90), "tentative"),  # weak: speckle and traces are too
    (TextBox(10, 10, 90, 20, 0.84), False),
    (TextBox(10, 10, 30, 20, 0.99), False),     # 2:1, square-ish: not a line
    (TextBox(10, 10, 34, 20, 0.99), False),     # 2.4:1
    (TextBox(10, 10, 35, 20, 0.99), True),      # exactly 2.5:1
    (TextBox(150, 105, 260, 115, 0.99), False),  # a third inside a primary line: primary decides
    (TextBox(120, 102, 180, 110, 0.99), False),  # wholly inside a primary line
    (TextBox(200, 100, 260, 112, 0.99), True),  # touches its edge only
    (TextBox(180, 110, 290, 122, 0.99), True),  # grazes its corner (3% claimed)
])
def test_the_union_adds_only_confident_lines_the_primary_missed(extra: TextBox,
                                                                joins: bool) -> None:
    union = UnionDetector(Fixed([PRIMARY]), Fixed([extra]))
    found = union.detect(dotted())
    assert found[0] == PRIMARY
    if joins == "tentative":
        assert found[1:] == [replace(extra, tentative=True)]
    else:
        assert found[1:] == ([extra] if joins else [])


@pytest.mark.parametrize(("fragments", "rows"), [
    # a faint line in two weak pieces, each too short for the aspect rule: one row
    ([TextBox(10, 10, 34, 22, 0.90), TextBox(50, 12, 74, 20, 0.88)], [(10, 10, 74, 22)]),
    # farther apart than ROW_GAP heights of the taller: two pieces, neither a line
    ([TextBox(10, 10, 34, 22, 0.90), TextBox(53, 12, 77, 22, 0.88)], []),
    # not on one row (overlap under half the lower one)
    ([TextBox(10, 10, 34, 22, 0.90), TextBox(40, 17, 64, 29, 0.88)], []),
    # a confident piece joins alone; a weak piece beside it is not chained to it
    ([TextBox(10, 10, 60, 20, 0.97), TextBox(70, 10, 94, 20, 0.90)], []),
])
def test_weak_fragments_on_one_row_join_as_one_tentative_box(
        fragments: list[TextBox], rows: list[tuple[int, int, int, int]]) -> None:
    found = UnionDetector(Fixed([]), Fixed(fragments)).detect(dotted())
    confident = [f for f in fragments if f.score >= MIN_SCORE]
    assert [b for b in found if not b.tentative] == confident
    assert [(b.x0, b.y0, b.x1, b.y1) for b in found if b.tentative] == rows
    for row in (b for b in found if b.tentative):
        assert TENTATIVE_SCORE <= row.score < MIN_SCORE


def test_join_rows_scores_a_row_by_the_area_weighted_mean() -> None:
    (row,) = join_rows([TextBox(0, 0, 30, 10, 0.9), TextBox(40, 0, 50, 10, 0.86)])
    assert (row.x0, row.x1, row.score) == (0, 50, pytest.approx((300 * 0.9 + 100 * 0.86) / 400))


@given(boxes=st.lists(st.builds(lambda x, y, w, h, s: TextBox(x, y, x + w, y + h, s),
                                st.integers(0, 200), st.integers(0, 200), st.integers(1, 80),
                                st.integers(1, 30), st.floats(0, 1)), max_size=12),
       split=st.integers(0, 12))
def test_the_union_keeps_every_primary_box_and_adds_no_overlap(boxes: list[TextBox],
                                                              split: int) -> None:
    primary, secondary = boxes[:split], boxes[split:]
    image = dotted()
    found = UnionDetector(Fixed(primary), Fixed(secondary)).detect(image)
    assert found[:len(primary)] == primary
    for extra in found[len(primary):]:
        if extra.tentative:
            assert TENTATIVE_SCORE <= extra.score < MIN_SCORE
        else:
            assert extra in secondary and extra.score >= MIN_SCORE
        assert glyph_count(image, extra) >= MIN_GLYPHS
        assert claimed_share(extra, primary) < MAX_CLAIMED
        assert not any(p.height <= LINE_SCALE * extra.height and p.x0 <= extra.x0
                       and p.y0 <= extra.y0 and extra.x1 <= p.x1 and extra.y1 <= p.y1
                       for p in primary)


@pytest.mark.parametrize(("blob", "joins"), [
    (TextBox(0, 0, 300, 150, 0.55), True),   # 15 lines tall: texture swallowing the line
    (TextBox(0, 0, 300, 20, 0.55), False),   # exactly twice the line's height: claims it
    (TextBox(0, 0, 300, 21, 0.55), True),
])
def test_a_primary_box_many_lines_tall_does_not_hide_a_line(blob: TextBox, joins: bool) -> None:
    line = TextBox(10, 5, 90, 15, 0.97)
    found = UnionDetector(Fixed([blob]), Fixed([line])).detect(dotted())
    assert found == ([blob, line] if joins else [blob])


def test_claimed_share_counts_each_pixel_once() -> None:
    box = TextBox(0, 0, 100, 10, 1.0)
    halves = [TextBox(0, 0, 50, 10, 1.0), TextBox(0, 0, 50, 10, 1.0), TextBox(40, 0, 60, 10, 1.0)]
    assert claimed_share(box, halves) == pytest.approx(0.6)
    assert claimed_share(box, [TextBox(0, 0, 100, 21, 1.0)]) == 0.0  # not its line scale
    assert claimed_share(box, [TextBox(0, 0, 100, 20, 1.0)]) == 1.0
    assert claimed_share(box, [TextBox(200, 0, 300, 10, 1.0)]) == 0.0


def test_a_text_line_has_glyphs_a_trace_has_not() -> None:
    text, ink = line_image("PE SAMPSON^KATELYN", 12, bright=False)
    box = TextBox(ink[0] - 2, ink[1] - 2, ink[2] + 2, ink[3] + 2, 1.0)
    assert glyph_count(text, box) >= 10
    trace = np.full((60, 200), 255, np.uint8)  # an ECG-like curve: one stroke
    xs = np.arange(10, 190)
    ys = (30 + 12 * np.sin(xs / 9.0)).astype(int)
    trace[ys, xs] = trace[ys + 1, xs] = 0
    assert glyph_count(trace, TextBox(5, 10, 195, 50, 1.0)) < MIN_GLYPHS
    assert glyph_count(np.full((40, 120), 90, np.uint8), TextBox(0, 0, 120, 40, 1.0)) == 0
    union = UnionDetector(Fixed([]), Fixed([TextBox(5, 10, 195, 50, 0.99)]))
    assert union.detect(trace) == []


def test_runtime_detector_never_imports_torch() -> None:
    code = ("import sys, numpy as np\n"
            "from pipeline.pixel.dbnet import VeilTextDetector\n"
            "VeilTextDetector(intra_op_num_threads=1).detect(np.zeros((64, 64), np.uint8))\n"
            "sys.exit(3 if 'torch' in sys.modules else 0)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]


def solid_and_ragged() -> np.ndarray:
    """A map with a solid confident kernel (a text line) and a ragged, half-believed
    component (texture): the first has a confident core, the second almost none."""
    prob = np.zeros((60, 140), dtype=np.float32)
    prob[10:18, 10:90] = 0.97
    ragged = np.where(np.indices((20, 40)).sum(axis=0) % 7 == 0, 0.95, 0.76)
    prob[32:52, 20:60] = ragged
    return prob


@pytest.mark.parametrize(("min_core", "expected"), [(0.0, 2), (0.25, 1), (0.75, 1), (1.0, 1)])
def test_min_core_drops_components_without_a_confident_core(
    min_core: float, expected: int
) -> None:
    found = kernel_boxes(solid_and_ragged(), thresh=0.6, box_thresh=0.7, shrink=SHRINK,
                         pad=0, min_size=2, min_core=min_core)
    assert len(found) == expected
    if expected == 1:
        assert found[0][1] < 18  # the solid bar is the one kept


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.0, 1.0), st.floats(0.3, 0.8))
def test_min_core_only_ever_removes_boxes(seed: int, min_core: float, thresh: float) -> None:
    rng = np.random.default_rng(seed)
    prob = np.clip(rng.random((40, 64), dtype=np.float32) * 1.3, 0, 1).astype(np.float32)
    strict = kernel_boxes(prob, thresh=thresh, box_thresh=thresh, shrink=SHRINK, pad=1.0,
                          min_size=1, min_core=min_core)
    lenient = kernel_boxes(prob, thresh=thresh, box_thresh=thresh, shrink=SHRINK, pad=1.0,
                           min_size=1)
    assert set(strict) <= set(lenient)


def test_bundle_without_min_core_keeps_every_component(detector: VeilTextDetector) -> None:
    post = detector.metadata["postprocessing"]
    assert detector.min_core == float(post.get("min_core", 0.0))
    if "min_core" not in post:  # bundles before the core filter: nothing more is dropped
        assert detector.min_core == 0.0
