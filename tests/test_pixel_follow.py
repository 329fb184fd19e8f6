"""Following a PHI line past its detector box (pipeline.pixel.stage.follow_lines)."""

from __future__ import annotations

import numpy as np
import pytest
from factories import make_ct
from PIL import Image, ImageDraw, ImageFont
from test_pixel_cache import Counting
from test_pixel_ppocr import burn

from pipeline.pixel.frames import View, tighten
from pipeline.pixel.ppocr import PPOCRRecognizer
from pipeline.pixel.stage import (
    FOLLOW_GAP,
    PixelEngines,
    clean_pixels,
    follow_lines,
)
from pipeline.pixel.types import Recognition, TextBox
from pipeline.profile import load_profile
from pipeline.text import HeaderContext


@pytest.fixture(scope="module")
def recognizer() -> PPOCRRecognizer:
    return PPOCRRecognizer(intra_op_num_threads=2)


def _view(image: np.ndarray) -> View:
    return View(frame=0, name="inverted", image=image, scale=1.0)


def _line(text: str, size: int = 20, width: int = 400) -> tuple[np.ndarray, tuple[int, ...]]:
    """Dark text on a light field (what the detection view shows); its ink box."""
    img, (truth,) = burn(np.full((60, width), 235, np.uint8), [size], lines=[text], fill=20,
                         origin=(20, 18))
    return img, truth


def _cut(truth: tuple[int, ...], image: np.ndarray, share: float, side: str) -> TextBox:
    """A detector-like box holding only the right (or left) ``share`` of the line."""
    x0, y0, x1, y1 = truth
    keep = round((x1 - x0) * share)
    left, right = (x1 - keep, x1) if side == "right" else (x0, x0 + keep)
    box = TextBox(max(0, left - 3), max(0, y0 - 4), min(image.shape[1], right + 3), y1 + 4, 0.9)
    return box


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_box_cut_short_is_followed_to_the_end_of_its_line(recognizer, side):
    image, truth = _line("Dr. LAMBERT^PETER 1974")
    box = _cut(truth, image, 0.55, side)
    wider = follow_lines(_view(image), [box], recognizer)
    lo, hi = wider[id(box)]
    ink = tighten(image, box)
    if side == "right":  # the start of the line was missing: reached, the end unchanged
        assert lo <= truth[0] + 1 and hi == ink.x1
    else:
        assert hi >= truth[2] - 1 and lo == ink.x0


def test_a_box_holding_its_whole_line_is_left_as_it_is(recognizer):
    image, truth = _line("MRN 12345678")
    box = TextBox(truth[0] - 6, truth[1] - 4, truth[2] + 6, truth[3] + 4, 0.9)
    assert follow_lines(_view(image), [box], recognizer) == {}


def test_text_beyond_a_wide_gap_is_another_line(recognizer):
    font = ImageFont.load_default(size=20)
    pil = Image.new("L", (520, 60), 235)
    draw = ImageDraw.Draw(pil)
    draw.text((20, 18), "W 400", fill=20, font=font)
    name_at = 20 + int(draw.textlength("W 400", font=font)) + 70  # a gap of ~4 heights
    draw.text((name_at, 18), "DOE^JOHN", fill=20, font=font)
    image = np.asarray(pil)
    x0, y0, x1, y1 = draw.textbbox((name_at, 18), "DOE^JOHN", font=font)
    assert (name_at - 20 - int(draw.textlength("W 400", font=font))) > FOLLOW_GAP * (y1 - y0)
    box = TextBox(int(x0) - 3, int(y0) - 4, int(x1) + 3, int(y1) + 4, 0.9)
    assert follow_lines(_view(image), [box], recognizer) == {}


class _NoPositions:
    def recognize(self, image: np.ndarray, boxes: list[TextBox]) -> list[Recognition]:
        return [Recognition("DOE JOHN", 0.99) for _ in boxes]


def test_a_recognizer_that_gives_no_positions_changes_nothing():
    image, truth = _line("Dr. LAMBERT^PETER")
    box = _cut(truth, image, 0.5, "right")
    assert follow_lines(_view(image), [box], _NoPositions()) == {}


class _CutDetector:
    """Finds only the right part of every line: what PP-OCR does where the start of a line
    fades into a brighter background."""

    def __init__(self, boxes: list[TextBox]) -> None:
        self.boxes = boxes

    def detect(self, image: np.ndarray) -> list[TextBox]:
        return list(self.boxes)


def _name_ct() -> tuple[object, tuple[int, ...], TextBox]:
    """An 8-bit 128x400 frame with "Dr. LAMBERT^PETER" (the header's name), its ink box,
    and a detector box over the right 55% of it in the upscaled view (5x: 640 / 128)."""
    ds = make_ct(rows=128, columns=400)
    ds.PatientName = "LAMBERT^PETER"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    for tag in ("WindowCenter", "WindowWidth", "RescaleIntercept", "RescaleSlope"):
        if tag in ds:
            delattr(ds, tag)
    stored, (truth,) = burn(np.full((128, 400), 20, np.uint8), [20],
                            lines=["Dr. LAMBERT^PETER"], fill=235, origin=(20, 18))
    ds.PixelData = stored.tobytes()
    view_truth = tuple(round(v * 640 / 128) for v in truth)
    return ds, truth, _cut(view_truth, np.zeros((640, 2000)), 0.55, "right")


def test_the_stage_redacts_the_whole_line_when_the_detector_box_stops_short(recognizer):
    ds, truth, box = _name_ct()
    settings = load_profile("dicom-basic", ["clean-pixel-data"]).pixel
    outcome = clean_pixels(ds, settings, HeaderContext.from_dataset(ds),
                           PixelEngines(_CutDetector([box]), recognizer))
    (finding,) = [f for f in outcome.findings if f.status != "rejected"]
    assert finding.entity == "NAME"
    x0, _, x1, _ = finding.box
    assert x0 <= truth[0] + 1 and x1 >= truth[2] - 1  # "Dr. " is redacted with the name
    after = ds.pixel_array
    assert after[truth[1]:truth[3], truth[0]:truth[2]].max() < 235


def test_nothing_is_read_beside_a_line_on_a_flat_field(recognizer):
    image, truth = _line("MRN 12345678")
    box = TextBox(truth[0] - 6, truth[1] - 4, truth[2] + 6, truth[3] + 4, 0.9)
    counting = Counting(recognizer)
    assert follow_lines(_view(image), [box], counting) == {}
    assert counting.crops == 0
    noisy = image.copy()
    noisy[:, :truth[0] - 8] = np.random.default_rng(0).integers(200, 255, (60, truth[0] - 8))
    follow_lines(_view(noisy), [box], counting)
    assert counting.crops == 1  # the left stretch holds something: it is read


def test_the_profile_can_turn_line_following_off(recognizer):
    settings = load_profile("dicom-basic", ["clean-pixel-data"],
                            overrides={"pixel.follow_lines": "false"}).pixel
    assert settings.value("follow_lines") is False
    assert load_profile("dicom-basic", ["clean-pixel-data"]).pixel.value("follow_lines")
    ds, truth, box = _name_ct()
    outcome = clean_pixels(ds, settings, HeaderContext.from_dataset(ds),
                           PixelEngines(_CutDetector([box]), recognizer))
    (finding,) = [f for f in outcome.findings if f.status != "rejected"]
    assert finding.box[0] > truth[0] + 10  # "Dr. " stays outside the redaction
