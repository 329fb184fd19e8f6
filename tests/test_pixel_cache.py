"""The read cache: each distinct crop read once, the same results as reading every crop."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import compiled
from factories import PHI, make_ct
from test_pixel_ppocr import burn, ct_like

from pipeline.errors import ProfileError
from pipeline.pixel.cache import CachedRecognizer, caches_of, crop_key
from pipeline.pixel.ppocr import PPOCRRecognizer
from pipeline.pixel.stage import PixelEngines, clean_pixels, engines_for, make_detector
from pipeline.pixel.types import Recognition, TextBox
from pipeline.profile import load_profile
from pipeline.text import HeaderContext

LINES = [PHI["PatientName"].replace("^", " ").upper(), f"ID {PHI['PatientID']}", "W 400 L 40"]


class Counting:
    """A recognizer in front of another that counts the crops it is asked to read."""

    def __init__(self, inner: PPOCRRecognizer) -> None:
        self.inner, self.crops, self.calls = inner, 0, 0

    def recognize(self, image: np.ndarray, boxes: list[TextBox]) -> list[Recognition]:
        self.crops += len(boxes)
        self.calls += 1
        return self.inner.recognize(image, boxes)


@pytest.fixture(scope="module")
def ppocr() -> PPOCRRecognizer:
    return PPOCRRecognizer(intra_op_num_threads=2)


@pytest.fixture(scope="module")
def page() -> tuple[np.ndarray, list[TextBox]]:
    img, truth = burn(ct_like(seed=3, size=256), [14, 14, 14], lines=LINES, fill=240)
    return img, [TextBox(x0 - 2, y0 - 2, x1 + 2, y1 + 2, 1.0, 0) for x0, y0, x1, y1 in truth]


def test_cached_results_equal_a_fresh_read_and_repeats_are_not_read_again(ppocr, page):
    image, boxes = page
    counting = Counting(ppocr)
    cached = CachedRecognizer(counting, 16)
    first = cached.recognize(image, boxes)
    assert first == ppocr.recognize(image, boxes)
    assert any(PHI["PatientID"] in r.text for r in first)  # the crops are really read
    other = image.copy()
    other[200:, 200:] = 255 - other[200:, 200:]  # the image changes away from the text
    again = cached.recognize(other, [*reversed(boxes), boxes[0]])
    assert again == [*reversed(first), first[0]]
    assert (counting.crops, counting.calls) == (len(boxes), 1)
    assert (cached.hits, cached.misses) == (len(boxes) + 1, len(boxes))


def test_a_crop_that_differs_by_one_pixel_is_read_again(ppocr, page):
    image, boxes = page
    counting = Counting(ppocr)
    cached = CachedRecognizer(counting, 16)
    cached.recognize(image, boxes[:1])
    changed = image.copy()
    box = boxes[0]
    changed[box.y0, box.x0] ^= 1
    assert crop_key(changed, box) != crop_key(image, box)
    cached.recognize(changed, boxes[:1])
    assert counting.crops == 2 and cached.hits == 0


def test_identical_crops_in_one_call_are_read_once(ppocr, page):
    image, boxes = page
    tiled = np.concatenate([image, image], axis=1)
    right = [TextBox(b.x0 + image.shape[1], b.y0, b.x1 + image.shape[1], b.y1, 1.0, 0)
             for b in boxes]
    counting = Counting(ppocr)
    out = CachedRecognizer(counting, 16).recognize(tiled, [*boxes, *right])
    assert out[:len(boxes)] == out[len(boxes):]
    assert counting.crops == len(boxes)


def test_the_cache_keeps_the_most_recently_used_entries_up_to_its_size(ppocr, page):
    image, boxes = page
    counting = Counting(ppocr)
    cached = CachedRecognizer(counting, 2)
    cached.recognize(image, boxes[:2])
    cached.recognize(image, boxes[:1])  # boxes[0] is now the most recent
    cached.recognize(image, boxes[2:3])  # evicts boxes[1]
    assert len(cached) == 2
    cached.recognize(image, boxes[:1])
    assert counting.crops == 3
    cached.recognize(image, boxes[1:2])
    assert counting.crops == 4
    cached.clear()
    assert len(cached) == 0 and cached.hits == cached.misses == 0


def test_an_empty_cache_is_refused(ppocr):
    with pytest.raises(ValueError):
        CachedRecognizer(ppocr, 0)


def _cine(frames: int) -> tuple[object, list[tuple[int, int, int, int]]]:
    """A multi-frame CT-like image: the same overlay on every frame, anatomy that moves."""
    stack, truth = [], []
    for k in range(frames):
        body = ct_like(seed=20 + k, size=256)
        img, truth = burn(body, [14, 14, 14], lines=LINES, fill=240)
        stack.append(img.copy())
    base = stack[0]
    for img in stack[1:]:  # the overlay rows are the same pixels on every frame
        img[:truth[-1][3] + 6] = base[:truth[-1][3] + 6]
    ds = make_ct(rows=256, columns=256)
    ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = np.stack(stack).astype(np.uint8).tobytes()
    for tag in ("WindowCenter", "WindowWidth", "RescaleIntercept", "RescaleSlope"):
        if tag in ds:
            delattr(ds, tag)
    return ds, truth


@pytest.mark.slow
def test_every_frame_of_a_cine_loop_gets_the_findings_of_an_uncached_run(ppocr):
    settings = load_profile("dicom-basic", ["clean-pixel-data"]).pixel
    detector = make_detector("ppocr-v4", threads=2)
    plain, counting = Counting(ppocr), Counting(ppocr)
    context = HeaderContext.from_dataset(_cine(3)[0])
    fresh = clean_pixels(_cine(3)[0], settings, context, PixelEngines(detector, plain))
    cached = clean_pixels(_cine(3)[0], settings, context,
                          PixelEngines(detector, CachedRecognizer(counting, 64)))
    assert cached.findings == fresh.findings
    assert {f.frame for f in fresh.findings if f.status == "cleared"} == {0, 1, 2}
    per_frame = plain.crops / 3
    assert counting.crops < plain.crops - per_frame  # frames 1 and 2 mostly from the cache


def test_the_profile_sets_the_cache_size_and_zero_turns_it_off():
    default = load_profile("dicom-basic", ["clean-pixel-data"]).pixel
    assert default.value("read_cache") > 0
    (cache,) = caches_of(engines_for(default).recognizer)
    assert cache.max_entries == default.value("read_cache")
    off = load_profile("dicom-basic", ["clean-pixel-data"],
                       overrides={"pixel.read_cache": "0"}).pixel
    assert caches_of(engines_for(off).recognizer) == []
    with pytest.raises(ProfileError):
        load_profile("dicom-basic", ["clean-pixel-data"], overrides={"pixel.read_cache": "-1"})
    assert compiled("dicom-basic", "clean-pixel-data").profile.pixel.value("read_cache") > 0
