"""Frame views for the text detector: decoding, LUTs, photometric interpretations, scale."""

from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

from pipeline.errors import DeidError
from pipeline.pixel.frames import View, refine, resize_bilinear, tighten, views, window
from pipeline.pixel.types import TextBox


def make_image(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    **attrs: object,
) -> Dataset:
    """A minimal uncompressed image dataset around ``pixels`` ((frames,) rows, cols(, 3))."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = generate_uid()
    color = photometric in ("RGB", "YBR_FULL")
    frames = pixels.ndim == (4 if color else 3)
    if frames:
        ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[1:3] if frames else pixels.shape[:2]
    ds.SamplesPerPixel = 3 if color else 1
    if color:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    return ds


def by_name(ds: Dataset, **kwargs: int) -> dict[tuple[int, str], View]:
    return {(v.frame, v.name): v for v in views(ds, **kwargs)}


def ramp(dtype: type, low: int, high: int, shape: tuple[int, int] = (8, 8)) -> np.ndarray:
    return np.linspace(low, high, num=shape[0] * shape[1]).reshape(shape).round().astype(dtype)


# --- monochrome, bit depths ------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "bits", "low", "high"),
    [
        (np.uint8, 8, 0, 255),
        (np.uint16, 12, 0, 4095),
        (np.int16, 12, -2048, 2047),
        (np.uint16, 16, 0, 65535),
        (np.int16, 16, -32768, 32767),
    ],
)
def test_monochrome2_full_range_is_min_to_max(dtype, bits, low, high):
    pixels = ramp(dtype, low, high)
    got = by_name(make_image(pixels, bits_stored=bits), min_side=1)
    assert set(got) == {(0, "full"), (0, "inverted")}
    full = got[0, "full"].image
    assert full.dtype == np.uint8 and full.shape == (8, 8)
    assert full[0, 0] == 0 and full[-1, -1] == 255
    assert np.all(np.diff(full.ravel().astype(int)) >= 0)  # monotone: order kept
    assert np.array_equal(got[0, "inverted"].image, 255 - full)


@pytest.mark.parametrize(("dtype", "bits"), [(np.uint8, 8), (np.uint16, 12), (np.int16, 16)])
def test_monochrome1_is_inverted_to_look_like_monochrome2(dtype, bits):
    pixels = ramp(dtype, 0, 200)
    mono1 = by_name(make_image(pixels, photometric="MONOCHROME1", bits_stored=bits), min_side=1)
    mono2 = by_name(make_image(pixels, bits_stored=bits), min_side=1)
    assert np.array_equal(mono1[0, "full"].image, 255 - mono2[0, "full"].image)
    assert mono1[0, "full"].image[0, 0] == 255  # the lowest stored value is white


def test_monochrome1_window_is_inverted_too():
    pixels = ramp(np.uint16, 0, 1000)
    ds = make_image(pixels, photometric="MONOCHROME1", bits_stored=12,
                    WindowCenter="500", WindowWidth="1000")
    win = by_name(ds, min_side=1)[0, "window"].image
    assert win[0, 0] == 255 and win[-1, -1] == 0


def test_rescale_is_applied_before_windowing():
    # Stored 0..4095 with intercept -1024: HU -1024..3071. Window 40/400 shows HU -160..240.
    pixels = np.full((8, 8), 1024, dtype=np.uint16)  # HU 0
    pixels[0, 0], pixels[0, 1] = 0, 4095  # air, metal
    pixels[1, 0], pixels[1, 1] = 1024 - 160, 1024 + 240
    ds = make_image(pixels, bits_stored=12, RescaleSlope="1", RescaleIntercept="-1024",
                    WindowCenter="40", WindowWidth="400")
    win = by_name(ds, min_side=1)[0, "window"].image
    assert win[0, 0] == 0 and win[0, 1] == 255
    assert abs(int(win[2, 2]) - round((0 - 40 + 200) / 400 * 255)) <= 1
    assert win[1, 0] <= 1 and win[1, 1] >= 254


def test_rescale_slope_changes_window_result():
    pixels = np.full((8, 8), 100, dtype=np.uint16)
    pixels[0, 0] = 0
    plain = make_image(pixels, bits_stored=12, WindowCenter="150", WindowWidth="100")
    sloped = make_image(pixels, bits_stored=12, WindowCenter="150", WindowWidth="100",
                        RescaleSlope="2", RescaleIntercept="0")
    assert by_name(plain, min_side=1)[0, "window"].image[4, 4] == 0  # 100 < 100 lower edge
    assert by_name(sloped, min_side=1)[0, "window"].image[4, 4] == 255  # 200 > 200 upper


def test_first_of_multiple_window_values_is_used():
    pixels = ramp(np.uint16, 0, 1000)
    ds = make_image(pixels, bits_stored=12, WindowCenter=["100", "900"],
                    WindowWidth=["100", "100"])
    win = by_name(ds, min_side=1)[0, "window"].image
    assert win[0, 0] == 0 and win[2, 0] == 255  # values around 100 straddle the window


def test_window_full_and_inverted_differ():
    pixels = ramp(np.int16, -1000, 3000)
    ds = make_image(pixels, bits_stored=16, WindowCenter="0", WindowWidth="200")
    got = by_name(ds, min_side=1)
    assert [name for _, name in got] == ["window", "full", "inverted"]
    win, full = got[0, "window"].image, got[0, "full"].image
    assert not np.array_equal(win, full)
    assert np.array_equal(got[0, "inverted"].image, 255 - full)
    assert (win == 255).sum() > (full == 255).sum()  # the narrow window saturates


def test_window_linear_formula():
    values = np.array([-200.0, 39.5, 40.0, 239.0, 240.0])
    out = window(values, 40, 400)
    assert out[0] == 0 and out[-1] == 255 and 126 <= out[2] <= 129


def test_voi_lut_sequence_is_used_when_present():
    pixels = ramp(np.uint16, 0, 255, (16, 16))
    item = Dataset()
    item.LUTDescriptor = [256, 0, 8]
    item.LUTData = list(range(255, -1, -1))  # a reversing LUT
    ds = make_image(pixels, bits_stored=8 + 4)
    ds.VOILUTSequence = [item]
    win = by_name(ds, min_side=1)[0, "window"].image
    assert win[0, 0] == 255 and win[-1, -1] == 0


def test_flat_image_gives_black_not_an_error():
    got = by_name(make_image(np.full((8, 8), 7, dtype=np.uint16), bits_stored=12), min_side=1)
    assert not got[0, "full"].image.any()


# --- colour ----------------------------------------------------------------------------


def test_rgb_is_kept():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    got = by_name(make_image(pixels, photometric="RGB"), min_side=1)
    assert set(got) == {(0, "color"), (0, "inverted")}
    assert np.array_equal(got[0, "color"].image, pixels)
    assert np.array_equal(got[0, "inverted"].image, 255 - pixels)


def test_ybr_full_is_converted_to_rgb():
    from pydicom.pixels import convert_color_space

    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    got = by_name(make_image(ybr, photometric="YBR_FULL"), min_side=1)[0, "color"].image
    assert np.abs(got.astype(int) - rgb.astype(int)).max() <= 2
    assert got[0, 0, 0] >= 253 and got[0, 0, 1] <= 2


def test_palette_color_is_applied():
    indices = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    ds = make_image(indices, photometric="PALETTE COLOR")
    lut = np.arange(256, dtype=np.uint16)
    for color, data in (("Red", lut * 257), ("Green", (255 - lut) * 257), ("Blue", lut * 0)):
        setattr(ds, f"{color}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{color}PaletteColorLookupTableData", data.astype("<u2").tobytes())
    got = by_name(ds, min_side=1)[0, "color"].image
    assert got.shape == (8, 8, 3) and got.dtype == np.uint8
    assert tuple(got[0, 0]) == (0, 255, 0)
    assert tuple(got[-1, -1]) == (252, 3, 0)


# --- frames and scale ------------------------------------------------------------------


def test_every_frame_of_a_multiframe_is_yielded():
    pixels = np.stack([np.full((8, 8), i * 100, dtype=np.uint16) for i in range(5)])
    for i in range(5):
        pixels[i, 0, 0] = 0 if i else 50
        pixels[i, i, i] = 4000  # a mark that moves with the frame
    ds = make_image(pixels, bits_stored=12)
    got = list(views(ds, min_side=1))
    assert sorted({v.frame for v in got}) == [0, 1, 2, 3, 4]
    for i in range(5):
        full = next(v for v in got if v.frame == i and v.name == "full").image
        assert full[i, i] == 255


def test_multiframe_rgb():
    pixels = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    for i in range(3):
        pixels[i, :, :, i] = 200
    got = by_name(make_image(pixels, photometric="RGB"), min_side=1)
    for i in range(3):
        assert got[i, "color"].image[0, 0, i] == 200


def test_small_images_are_upscaled_with_the_scale_reported():
    pixels = ramp(np.uint16, 0, 4095, (100, 200))
    got = list(views(make_image(pixels, bits_stored=12)))
    assert all(v.image.shape == (640, 1280) and v.scale == pytest.approx(6.4) for v in got)
    big = ramp(np.uint8, 0, 255, (640, 700))
    assert all(v.scale == 1.0 and v.image.shape == (640, 700)
               for v in views(make_image(big)))


def test_to_stored_maps_boxes_back_and_never_shrinks_them():
    pixels = np.zeros((100, 200), dtype=np.uint8)
    pixels[10:20, 30:60] = 255  # a bright block standing for text
    view = next(v for v in views(make_image(pixels)) if v.name == "full")
    ys, xs = np.nonzero(view.image > 127)
    found = TextBox(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1, 0.9)
    stored = view.to_stored(found)
    assert stored.frame == view.frame
    assert stored.x0 <= 30 and stored.y0 <= 10 and stored.x1 >= 60 and stored.y1 >= 20
    assert stored.x0 >= 29 and stored.y0 >= 9 and stored.x1 <= 61 and stored.y1 <= 21
    edge = view.to_stored(TextBox(0, 0, view.image.shape[1], view.image.shape[0], 1.0))
    assert (edge.x0, edge.y0, edge.x1, edge.y1) == (0, 0, 200, 100)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(64, 300), cols=st.integers(64, 300), data=st.data())
def test_an_ink_tight_box_mapped_back_plus_one_pixel_covers_the_ink(rows, cols, data):
    """The redaction box of an upscaled image (ink_to_stored, then the margin of 1) holds
    every stored ink pixel, and is at most a pixel wider than the ink on any side."""
    y0 = data.draw(st.integers(2, rows - 12))
    x0 = data.draw(st.integers(2, cols - 12))
    y1 = data.draw(st.integers(y0 + 1, min(y0 + 10, rows - 2)))
    x1 = data.draw(st.integers(x0 + 1, min(x0 + 60, cols - 2)))
    level = data.draw(st.integers(40, 255))
    pixels = np.zeros((rows, cols), dtype=np.uint8)
    pixels[y0:y1, x0:x1] = level
    view = next(v for v in views(make_image(pixels)) if v.name == "full")
    grown = TextBox(max(math.floor(x0 * view.scale) - 6, 0),
                    max(math.floor(y0 * view.scale) - 6, 0),
                    min(math.ceil(x1 * view.scale) + 6, view.image.shape[1]),
                    min(math.ceil(y1 * view.scale) + 6, view.image.shape[0]), 0.9)
    box = view.ink_to_stored(tighten(view.image, grown))
    assert box.x0 - 1 <= x0 and box.y0 - 1 <= y0 and box.x1 + 1 >= x1 and box.y1 + 1 >= y1
    assert box.x0 >= x0 - 1 and box.y0 >= y0 - 1 and box.x1 <= x1 + 1 and box.y1 <= y1 + 1


def test_refining_on_the_stored_rendering_finds_the_glyph_rows():
    pixels = np.zeros((100, 200), dtype=np.uint8)
    pixels[40:48, 30:90] = 200  # a text line at stored resolution
    view = next(v for v in views(make_image(pixels)) if v.name == "full")
    assert view.native is not None and view.native.shape == (100, 200)
    loose = TextBox(29, 39, 91, 49, 0.9)  # one pixel too wide on every side
    refined = refine(view, loose)
    assert (refined.x0, refined.y0, refined.x1, refined.y1) == (30, 40, 90, 48)
    unscaled = View(frame=0, name="full", image=view.native, scale=1.0)
    assert refine(unscaled, loose) == loose  # no native rendering: nothing to refine


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**16), x0=st.integers(0, 150), y0=st.integers(0, 80),
       width=st.integers(1, 49), height=st.integers(1, 19))
def test_refining_gives_up_at_most_one_pixel_a_side(seed, x0, y0, width, height):
    """Whatever the pixels (noise, ink touching the border), a refined box plus one
    pixel still holds the whole input box."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (100, 200), dtype=np.uint8)
    view = next(v for v in views(make_image(pixels)) if v.name == "full")
    box = TextBox(x0, y0, x0 + width, y0 + height, 0.9)
    refined = refine(view, box)
    assert box.x0 <= refined.x0 <= box.x0 + 1 and box.y0 <= refined.y0 <= box.y0 + 1
    assert box.x1 - 1 <= refined.x1 <= box.x1 and box.y1 - 1 <= refined.y1 <= box.y1


def test_resize_bilinear_keeps_flat_regions_and_colour():
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 1] = 77
    out = resize_bilinear(rgb, 2.5)
    assert out.shape == (10, 10, 3) and np.all(out[..., 1] == 77) and not out[..., 0].any()


# --- decoding --------------------------------------------------------------------------


def test_no_pixel_data_yields_nothing():
    ds = make_image(np.zeros((4, 4), dtype=np.uint8))
    del ds.PixelData
    assert list(views(ds)) == []


def test_real_jpeg2000_file_is_decoded():
    ds = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))
    reference = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    got = by_name(ds, min_side=1)
    full = got[0, "full"].image
    expected = (reference - reference.min()) / (reference.max() - reference.min()) * 255
    assert np.abs(full.astype(float) - expected).max() <= 1  # lossless: same pixels
    assert {name for _, name in got} == {"window", "full", "inverted"}


def test_real_rgb_rle_and_jpeg_files_are_decoded():
    for name in ("SC_rgb_rle.dcm", "SC_rgb_jpeg_dcmtk.dcm"):
        ds = pydicom.dcmread(get_testdata_file(name))
        color = by_name(ds, min_side=1)[0, "color"].image
        assert color.shape == (100, 100, 3)
        assert np.abs(color.astype(int) - ds.pixel_array.astype(int)).max() <= 2


def test_undecodable_pixel_data_raises_deid_error_without_values():
    ds = make_image(np.zeros((8, 8), dtype=np.uint8))
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PatientName = "SECRET^NAME"
    ds.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00" + b"SECRET^NAME" * 4 + b"\x00"
    with pytest.raises(DeidError) as info:
        list(views(ds))
    assert "SECRET" not in str(info.value)
    assert JPEGLSLossless in str(info.value)


def test_missing_transfer_syntax_raises_deid_error():
    ds = make_image(np.zeros((8, 8), dtype=np.uint8))
    del ds.file_meta.TransferSyntaxUID
    with pytest.raises(DeidError):
        list(views(ds))


def test_palette_without_lut_raises_deid_error():
    ds = make_image(np.zeros((8, 8), dtype=np.uint8), photometric="PALETTE COLOR")
    with pytest.raises(DeidError, match="PALETTE COLOR"):
        list(views(ds))


def test_unsupported_photometric_interpretation_raises_deid_error():
    ds = make_image(np.zeros((8, 8), dtype=np.uint8), photometric="HSV")
    with pytest.raises(DeidError):
        list(views(ds))


def test_decoding_prefers_pylibjpeg_over_gdcm_which_can_crash_the_process():
    from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless

    from pipeline.pixel.codecs import decoding_plugin

    assert decoding_plugin(JPEGBaseline8Bit) == "pylibjpeg"
    assert decoding_plugin(JPEG2000) == "pylibjpeg"
    assert decoding_plugin(RLELossless) == "pylibjpeg"
    assert decoding_plugin(ExplicitVRLittleEndian) == ""
    from pydicom.uid import JPEG2000Lossless

    from pipeline.pixel.codecs import encoding_plugin

    assert encoding_plugin(RLELossless) == "pydicom"
    assert encoding_plugin(JPEG2000Lossless) == "pylibjpeg"


# --- view selection and box tightening --------------------------------------------------


@pytest.mark.parametrize(("photometric", "pixels", "names", "expected"), [
    ("MONOCHROME2", np.arange(64, dtype=np.uint16).reshape(8, 8), ("inverted",), ["inverted"]),
    ("MONOCHROME2", np.arange(64, dtype=np.uint16).reshape(8, 8), None, ["full", "inverted"]),
    ("RGB", np.zeros((8, 8, 3), dtype=np.uint8), ("inverted",), ["inverted"]),
    ("RGB", np.zeros((8, 8, 3), dtype=np.uint8), ("window",), ["color"]),  # none: the first
])
def test_views_can_be_restricted_by_name_and_never_skip_a_frame(photometric, pixels, names,
                                                                   expected):
    ds = make_image(pixels, photometric=photometric)
    assert [v.name for v in views(ds, names=names)] == expected


def test_the_inverted_view_is_the_full_view_negated():
    ds = make_image(np.arange(64, dtype=np.uint16).reshape(8, 8))
    full = next(v for v in views(ds) if v.name == "full")
    only = list(views(ds, names=("inverted",)))
    assert len(only) == 1 and (only[0].image == 255 - full.image).all()


def _glyphs(background: int, ink: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(background, noise, (60, 120)), 0, 255)
    img[25:35, 30:90:4] = ink  # vertical strokes, rows 25-34, columns 30-86
    return img.astype(np.uint8)


@pytest.mark.parametrize(("background", "ink"), [(20, 230), (230, 20), (100, 140)])
def test_a_detector_box_is_tightened_to_its_ink_plus_a_pad(background, ink):
    from pipeline.pixel.frames import INK_PAD, tighten

    box = TextBox(5, 5, 110, 55, 0.8, frame=2)
    got = tighten(_glyphs(background, ink), box)
    assert (got.x0, got.y0, got.x1, got.y1) == (30 - INK_PAD, 25 - INK_PAD, 87 + INK_PAD,
                                                35 + INK_PAD)
    assert (got.score, got.frame) == (0.8, 2)


def test_text_changing_polarity_along_the_line_keeps_its_whole_extent():
    from pipeline.pixel.frames import tighten

    img = np.full((40, 100), 128, dtype=np.uint8)
    img[15:25, 10:50:3] = 10  # dark strokes on the left
    img[15:25, 50:90:3] = 250  # bright strokes on the right
    got = tighten(img, TextBox(0, 0, 100, 40, 0.9))
    assert got.x0 <= 10 and got.x1 >= 88 and got.y0 <= 15 and got.y1 >= 25


def test_a_box_without_ink_that_stands_out_is_left_unchanged():
    from pipeline.pixel.frames import tighten

    box = TextBox(2, 3, 98, 37, 0.5)
    assert tighten(np.full((40, 100), 77, dtype=np.uint8), box) == box


@pytest.mark.parametrize("seed", range(5))
def test_faint_strokes_in_strong_noise_are_never_cut_off(seed):
    from pipeline.pixel.frames import tighten

    got = tighten(_glyphs(120, 140, noise=40.0, seed=seed), TextBox(5, 5, 110, 55, 0.5))
    assert got.x0 <= 30 and got.y0 <= 25 and got.x1 >= 87 and got.y1 >= 35


@pytest.mark.parametrize("seed", range(3))
def test_background_specks_far_fainter_than_the_text_do_not_hold_a_box_open(seed):
    from pipeline.pixel.frames import tighten

    rng = np.random.default_rng(seed)
    img = _glyphs(20, 230, noise=2.0, seed=seed).astype(np.int16)
    rows = np.r_[np.arange(8, 21, 3), np.arange(38, 52, 3)]  # apart from the glyphs
    ys, xs = rng.choice(rows, 12), rng.choice(np.arange(8, 112, 3), 12)
    img[ys, xs] += 20  # lone specks at a tenth of the glyphs' contrast, above INK_CONTRAST
    img[ys[:3], xs[:3] + 1] += 20  # and pairs
    img[24, 30:90:4] = 20 + 63  # a faint anti-aliased fringe (30% of the contrast) is ink
    got = tighten(img.clip(0, 255).astype(np.uint8), TextBox(5, 5, 110, 55, 0.5))
    assert (got.x0, got.y0, got.x1, got.y1) == (30, 24, 87, 35)


def test_dim_text_beside_bright_text_on_one_line_keeps_its_extent():
    from pipeline.pixel.frames import tighten

    img = np.full((40, 120), 10, dtype=np.uint8)
    img[15:25, 10:40:3] = 250  # a bright label on the left
    img[15:25, 50:110:3] = 40  # a dim value on the right: under a fifth of the label
    got = tighten(img, TextBox(0, 0, 120, 40, 0.9))
    assert got.x0 <= 10 and got.x1 >= 108 and got.y0 <= 15 and got.y1 >= 25


@given(st.integers(0, 59), st.integers(0, 59), st.integers(0, 59), st.integers(0, 59),
       st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_tightening_never_grows_a_box(a, b, c, d, seed):
    from pipeline.pixel.frames import tighten

    image = np.random.default_rng(seed).integers(0, 256, (60, 60), dtype=np.uint8)
    box = TextBox(min(a, b), min(c, d), max(a, b), max(c, d), 0.5)
    got = tighten(image, box)
    assert box.x0 <= got.x0 <= got.x1 <= box.x1 and box.y0 <= got.y0 <= got.y1 <= box.y1
