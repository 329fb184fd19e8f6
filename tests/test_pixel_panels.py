"""Faint text on flat panels (pipeline.pixel.panels and the stage's second pass)."""

from __future__ import annotations

import numpy as np
import pytest
from factories import make_ct
from test_pixel_ppocr import burn

from pipeline.pixel.panels import FAINT_MAX, PANEL_GAIN, PanelView, panel_view
from pipeline.pixel.stage import clean_pixels, engines_for
from pipeline.pixel.types import TextBox
from pipeline.profile import load_profile
from pipeline.text import HeaderContext


def _panel_image(fill: int, panel: int = 40, size: int = 22) -> tuple[np.ndarray, tuple]:
    """A 640x640 view: a noisy field with a flat panel at ``panel`` on top, a name drawn
    on it at ``fill``; the name's ink box."""
    rng = np.random.default_rng(3)
    image = rng.integers(90, 200, (640, 640)).astype(np.uint8)
    image[20:120, 20:620] = panel
    image, (truth,) = burn(image, [size], lines=["MRN 12345678 SMITH"], fill=fill,
                           origin=(40, 50))
    return image, truth


def test_faint_ink_on_a_panel_is_drawn_strong_on_white():
    image, (x0, y0, x1, y1) = _panel_image(fill=52)  # 12 grey levels over the panel
    panel = panel_view(image)
    assert panel is not None
    ink = panel.image[y0:y1, x0:x1]
    assert int(ink.min()) <= 255 - 10 * PANEL_GAIN  # the strokes, stretched
    assert panel.image[25:45, 400:600].min() == 255  # the empty panel: white
    assert panel.image[300:600, 100:500].min() == 255  # the noisy field is no panel
    assert panel.holds(TextBox(x0, y0, x1, y1, 1.0))
    assert not panel.holds(TextBox(100, 300, 400, 340, 1.0))


@pytest.mark.parametrize("fill", [40 + FAINT_MAX + 60, 255])
def test_an_image_without_faint_ink_gets_no_second_pass(fill):
    image, _ = _panel_image(fill=fill)  # strong text only: the first pass sees it
    assert panel_view(image) is None


def test_a_field_without_flat_blocks_gets_no_second_pass():
    noise = np.random.default_rng(1).integers(0, 255, (640, 640)).astype(np.uint8)
    assert panel_view(noise) is None
    rgb = np.stack([noise] * 3, axis=2)
    assert panel_view(rgb) is None


def _faint_mr() -> tuple[object, tuple]:
    """A 16-bit 256x256 MR-like frame (values 0..4000): a light panel at 3500 over the top,
    the header's name drawn on it at 3700 (about 13 levels of the full-range view), a
    gradient below; the name's ink box (stored pixels)."""
    ds = make_ct(rows=256, columns=256)
    ds.Modality = "MR"
    ds.PatientName = "MORALES^NICOLE"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for tag in ("WindowCenter", "WindowWidth", "RescaleIntercept", "RescaleSlope"):
        if tag in ds:
            delattr(ds, tag)
    frame = np.tile(np.linspace(0, 4000, 256), (256, 1)).astype(np.uint16)
    frame[8:40, 8:248] = 3500
    canvas, (truth,) = burn(np.zeros((256, 256), np.uint8), [14],
                            lines=["Pt: NICOLE MORALES"], fill=200, origin=(40, 14))
    frame[canvas > 0] = 3500 + (canvas[canvas > 0].astype(np.uint16))  # up to 3700
    ds.PixelData = frame.tobytes()
    return ds, truth


@pytest.mark.parametrize("panel_pass", [True, False])
def test_a_faint_name_on_a_panel_is_redacted_by_the_second_pass(panel_pass):
    ds, (x0, y0, x1, y1) = _faint_mr()
    before = ds.pixel_array.copy()
    settings = load_profile("dicom-basic", ["clean-pixel-data"],
                            overrides={"pixel.panel_pass": str(panel_pass).lower()}).pixel
    outcome = clean_pixels(ds, settings, HeaderContext.from_dataset(ds),
                           engines_for(settings))
    names = [f for f in outcome.findings if f.entity == "NAME" and f.status != "rejected"]
    changed = (ds.pixel_array[y0:y1, x0:x1] != before[y0:y1, x0:x1]).mean()
    if panel_pass:
        assert names and changed > 0.9
    else:  # what the second pass is for: the first one does not see the name
        assert not names and changed == 0


def test_the_panel_pass_is_on_by_default():
    assert load_profile("dicom-basic", ["clean-pixel-data"]).pixel.value("panel_pass")


def test_a_strong_first_letter_does_not_hide_the_faint_line_it_starts():
    """The label drawn strong, the name after it faint: the first pass reads the label
    alone (confidently, not PHI); the panel pass must still read the whole line."""
    ds, (x0, y0, x1, y1) = _faint_mr()
    frame = ds.pixel_array.copy()
    canvas, _ = burn(np.zeros((256, 256), np.uint8), [14], lines=["Pt:"], fill=200,
                     origin=(40, 14))
    frame[canvas > 0] = 3500 - 8 * canvas[canvas > 0].astype(np.uint16)  # dark, strong
    ds.PixelData = frame.tobytes()
    before = ds.pixel_array.copy()
    settings = load_profile("dicom-basic", ["clean-pixel-data"]).pixel
    outcome = clean_pixels(ds, settings, HeaderContext.from_dataset(ds),
                           engines_for(settings))
    assert any(f.entity == "NAME" and f.status != "rejected" for f in outcome.findings)
    assert (ds.pixel_array[y0:y1, x0:x1] != before[y0:y1, x0:x1]).mean() > 0.9


@pytest.mark.parametrize(("box", "held"), [
    # a line 25 px tall whose middle block row is full of ink: the rows around it count
    (TextBox(140, 60, 400, 85, 1.0), True),
    # over the image beside a panel: most of it (and of the rows around it) is not flat
    (TextBox(0, 200, 200, 225, 1.0), False),
    (TextBox(100, 300, 400, 340, 1.0), True),
])
def test_a_line_taller_than_a_block_lies_on_its_panel(box: TextBox, held: bool) -> None:
    own = np.ones((640, 640), bool)
    own[64:80, :] = False        # the block row the line's strokes fill
    own[:, :120] = False         # the image beside the panel
    view = PanelView(np.full((640, 640), 255, np.uint8), own)
    assert view.holds(box) is held
