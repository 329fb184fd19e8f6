"""Pixel views and redaction on a run-time array module (NumPy here, CuPy on a GPU).

No GPU and no CuPy here: these tests pass NumPy explicitly through the ``xp`` argument
(a real array module, never a stand-in), check that NumPy results are those of the
pydicom reference arithmetic and survive a write and read back bit for bit, that the
module is chosen at the call (``$VEIL_DEVICE``), that the generic functions use no
NumPy call that would not run on a device array, and that each frame comes back to the
host exactly once.
"""

from __future__ import annotations

import ast
import inspect
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut
from test_pixel_redact import make_image

from pipeline import accel
from pipeline.pixel import frames, redact
from pipeline.pixel.types import TextBox

#: Functions that must run unchanged on any array module: no ``np.`` call in their body.
GENERIC = [
    (frames, "render"), (frames, "_rescale"), (frames, "_stored_window"), (frames, "window"),
    (frames, "_stretch"), (frames, "_to_uint8_color"), (frames, "resize_bilinear"),
    (frames, "_axis_weights"), (redact, "_fill_frame"),
]


def ct(seed: int = 0, nframes: int = 1, rows: int = 24, cols: int = 32, **attrs: object
       ) -> Dataset:
    """A 12-bit CT-like image with rescale and window (multi-frame when asked)."""
    rng = np.random.default_rng(seed)
    stored = rng.integers(0, 4095, size=(nframes, rows, cols, 1), endpoint=True).astype("<u2")
    ds = make_image(stored, bits_stored=12)
    values = {"RescaleSlope": "1", "RescaleIntercept": "-1024", "WindowCenter": "40",
              "WindowWidth": "400", **attrs}
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


def written(ds: Dataset) -> Dataset:
    """``ds`` written to bytes and read back."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return dcmread(io.BytesIO(buffer.getvalue()))


# --- the module is chosen at the call -----------------------------------------------------


def run_views(ds: Dataset, xp: Any) -> Any:
    return list(frames.views(ds, xp=xp))


def run_redact(ds: Dataset, xp: Any) -> Any:
    return redact.redact(ds, [TextBox(0, 0, 4, 4, 1.0)], xp=xp)


@pytest.mark.parametrize("stage", [run_views, run_redact], ids=["views", "redact"])
def test_the_array_module_follows_veil_device_at_the_call(
    monkeypatch: pytest.MonkeyPatch, stage: Callable[[Dataset, Any], Any]
) -> None:
    monkeypatch.setenv(accel.ENV_VAR, "cuda")  # set after import: read at the call
    if accel.cupy_importable() and accel.gpu_present():
        pytest.skip("a usable GPU is present: cuda is valid here")
    with pytest.raises(accel.AcceleratorError, match="cuda"):
        stage(ct(), None)
    assert stage(ct(), np)  # an explicit module wins over the environment
    monkeypatch.setenv(accel.ENV_VAR, "cpu")
    assert stage(ct(), None)


@pytest.mark.parametrize(("array", "expected"), [
    (np.zeros(3, np.uint8), np), (np.float64(1.5), np), (np.zeros((2, 2)).T, np),
])
def test_array_namespace_names_the_module_of_an_array(array: Any, expected: Any) -> None:
    assert accel.array_namespace(array) is expected


@pytest.mark.parametrize("value", [[1, 2], 3, "pixels"])
def test_array_namespace_refuses_what_is_not_an_array(value: Any) -> None:
    with pytest.raises(accel.AcceleratorError, match="not an array"):
        accel.array_namespace(value)


# --- NumPy results are those of the reference arithmetic -----------------------------------

rescales = st.tuples(st.sampled_from(["1", "2.5", "-1", "0.001", "1e3"]),
                     st.sampled_from(["0", "-1024", "3.75", "-0.5"]))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), rescale=rescales, signed=st.booleans(),
       only_slope=st.booleans())
def test_rescale_on_the_module_is_pydicoms_bit_for_bit(
    seed: int, rescale: tuple[str, str], signed: bool, only_slope: bool
) -> None:
    rng = np.random.default_rng(seed)
    dtype = "<i2" if signed else "<u2"
    stored = rng.integers(-2048 if signed else 0, 2047 if signed else 4095, size=(9, 7),
                          endpoint=True).astype(dtype)
    ds = make_image(stored[None, :, :, None], bits_stored=12, signed=signed,
                    RescaleSlope=rescale[0])
    if not only_slope:
        ds.RescaleIntercept = rescale[1]
    expected = np.asarray(apply_modality_lut(stored, ds))
    got = frames._rescale(np.asarray(stored), ds, np)
    assert got.dtype == expected.dtype and np.array_equal(got, expected)
    shown = redact._modality(ds, stored, 0, np)
    assert np.array_equal(shown, expected.astype(np.float64))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), rescale=rescales,
       center=st.floats(-500, 3000, allow_nan=False), width=st.floats(0.5, 5000),
       function=st.sampled_from(["LINEAR", "LINEAR_EXACT"]), mono1=st.booleans())
def test_window_and_full_views_equal_the_pydicom_reference(
    seed: int, rescale: tuple[str, str], center: float, width: float, function: str,
    mono1: bool,
) -> None:
    ds = ct(seed, rows=20, cols=20, RescaleSlope=rescale[0], RescaleIntercept=rescale[1],
            WindowCenter=f"{center:.4f}", WindowWidth=f"{width:.4f}", VOILUTFunction=function)
    if mono1:
        ds.PhotometricInterpretation = "MONOCHROME1"
    stored = np.frombuffer(ds.PixelData, "<u2").reshape(20, 20)
    values = np.asarray(apply_modality_lut(stored, ds)).astype(np.float64)
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    if function == "LINEAR" and w >= 1:
        c, w = c - 0.5, w - 1
    win = np.rint(np.clip((values - c) / max(w, 1e-6) + 0.5, 0, 1) * 255).astype(np.uint8)
    low, high = values.min(), values.max()
    full = (np.zeros(values.shape, np.uint8) if not high > low else
            np.rint(np.clip((values - low) / (high - low), 0, 1) * 255).astype(np.uint8))
    if mono1:
        win, full = 255 - win, 255 - full
    got = {v.name: v.image for v in frames.views(ds, min_side=1, xp=np)}
    assert got.keys() == {"window", "full", "inverted"}
    assert np.array_equal(got["window"], win)
    assert np.array_equal(got["full"], full)
    assert np.array_equal(got["inverted"], 255 - full)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.floats(1.1, 4.0))
def test_upscaled_views_are_the_same_on_an_explicit_module_and_by_default(
    seed: int, scale: float
) -> None:
    ds = ct(seed, nframes=2, rows=12, cols=17)
    side = round(12 * scale)
    explicit = list(frames.views(ds, min_side=side, xp=np))
    default = list(frames.views(ds, min_side=side))
    assert [(v.frame, v.name, v.scale) for v in explicit] == \
        [(v.frame, v.name, v.scale) for v in default]
    for a, b in zip(explicit, default, strict=True):
        assert isinstance(a.image, np.ndarray) and a.image.dtype == np.uint8
        assert min(a.image.shape) == side
        assert np.array_equal(a.image, b.image)


# --- redaction: written and read back, bit-exact outside the boxes ------------------------

layouts = st.sampled_from([
    # dtype, bits stored, signed, samples, planar, photometric
    ("<u1", 8, False, 1, 0, "MONOCHROME2"), ("<u2", 12, False, 1, 0, "MONOCHROME2"),
    ("<i2", 12, True, 1, 0, "MONOCHROME2"), ("<u2", 16, False, 1, 0, "MONOCHROME1"),
    ("<i2", 16, True, 1, 0, "MONOCHROME1"), ("<u1", 8, False, 3, 0, "RGB"),
    ("<u1", 8, False, 3, 1, "RGB"), ("<u2", 10, False, 1, 0, "MONOCHROME2"),
])


def expected_fill(stored: np.ndarray, layout: tuple[Any, ...], fill: Any, frame: int
                  ) -> list[int]:
    """The stored value(s) each fill must write, worked out from the DICOM rules."""
    _, bits, signed, samples, _, photometric = layout
    if fill == "zero" or photometric == "RGB":
        return [0] * samples
    mask = (1 << bits) - 1
    values = stored[frame, ..., 0].astype(np.int64) & mask
    if signed:
        values = np.where(values >= 1 << (bits - 1), values - (1 << bits), values)
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        low, high = 0, mask
    if fill == "black":
        low, high = int(values.min()), int(values.max())
    return [high if photometric == "MONOCHROME1" else low]


@settings(max_examples=40, deadline=None)
@given(layout=layouts, seed=st.integers(0, 2**16), nframes=st.integers(1, 3),
       fill=st.sampled_from(["min", "black", "zero"]),
       boxes=st.lists(st.tuples(st.integers(-1, 2), st.integers(0, 14), st.integers(0, 10),
                                st.integers(1, 8), st.integers(1, 8)), min_size=1, max_size=3),
       margin=st.integers(0, 2))
def test_redaction_written_and_read_back_is_bit_exact_outside_the_boxes(
    layout: tuple[Any, ...], seed: int, nframes: int, fill: Any,
    boxes: list[tuple[int, int, int, int, int]], margin: int,
) -> None:
    dtype, bits, signed, samples, planar, photometric = layout
    rows, cols = 11, 15
    rng = np.random.default_rng(seed)
    top = np.iinfo(np.dtype(dtype).newbyteorder("=")).max
    low = np.iinfo(np.dtype(dtype).newbyteorder("=")).min
    stored = rng.integers(low, top, size=(nframes, rows, cols, samples), endpoint=True,
                          dtype=np.dtype(dtype).newbyteorder("="))  # bits above BitsStored too
    ds = make_image(stored, photometric=photometric, bits_stored=bits, signed=signed,
                    planar=planar)
    before = bytes(ds.PixelData)
    text = [TextBox(x, y, min(x + w, cols), min(y + h, rows), 1.0, f % nframes if f >= 0 else -1)
            for f, x, y, w, h in boxes]
    reference = make_image(stored, photometric=photometric, bits_stored=bits, signed=signed,
                           planar=planar)
    redact.redact(reference, text, fill=fill, margin=margin)  # default module (NumPy here)
    result = redact.redact(ds, text, fill=fill, margin=margin, xp=np)
    assert ds.PixelData == reference.PixelData
    back = written(ds)
    after = bytes(back.PixelData)
    assert len(after) == len(before) and after[len(after) - len(before) % 2:] == \
        before[len(before) - len(before) % 2:]
    layout_shape = (nframes, samples, rows, cols) if planar else (nframes, rows, cols, samples)
    old = np.frombuffer(before, dtype, count=stored.size).reshape(layout_shape)
    new = np.frombuffer(after, dtype, count=stored.size).reshape(layout_shape)
    if planar:
        old, new = old.transpose(0, 2, 3, 1), new.transpose(0, 2, 3, 1)
    inside = np.zeros(new.shape, dtype=bool)
    for b in text:
        y0, y1 = max(b.y0 - margin, 0), min(b.y1 + margin, rows)
        x0, x1 = max(b.x0 - margin, 0), min(b.x1 + margin, cols)
        targets = range(nframes) if b.frame == -1 else [b.frame]
        for f in targets:
            inside[f, y0:y1, x0:x1, :] = True
    assert np.array_equal(old[~inside], new[~inside])
    assert set(result.frames_changed) == {f for f in range(nframes) if inside[f].any()}
    width = np.dtype(dtype).itemsize * 8
    for f in result.frames_changed:
        for s, value in enumerate(expected_fill(old, layout, fill, f)):
            written_values = new[f, ..., s][inside[f, ..., s]].astype(np.int64)
            assert set(written_values & ((1 << width) - 1)) == {value & ((1 << width) - 1)}
    assert back.BurnedInAnnotation == "NO"


# --- host copies happen once, at the edges ----------------------------------------------


@pytest.fixture
def host_copies(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts of calls to the real :func:`pipeline.accel.to_host` from frames and redact."""
    counts = {"frames": 0, "redact": 0}

    def counted(module: str) -> Callable[[Any], np.ndarray]:
        def call(array: Any) -> np.ndarray:
            counts[module] += 1
            return accel.to_host(array)
        return call

    monkeypatch.setattr(frames, "to_host", counted("frames"))
    monkeypatch.setattr(redact, "to_host", counted("redact"))
    return counts


@pytest.mark.parametrize("names", [None, ("inverted",), ("window", "full")])
def test_each_view_comes_back_to_the_host_once(
    host_copies: dict[str, int], names: tuple[str, ...] | None
) -> None:
    """Once, and its stored-resolution rendering once more when it was upscaled (for
    ``frames.refine``)."""
    yielded = list(frames.views(ct(nframes=3), names=names, xp=np))
    assert len(yielded) == 3 * (3 if names is None else len(names))
    upscaled = sum(v.native is not None for v in yielded)
    assert upscaled == sum(v.scale != 1.0 for v in yielded)
    assert host_copies == {"frames": len(yielded) + upscaled, "redact": 0}
    big = list(frames.views(ct(nframes=1), names=names, xp=np, min_side=8))
    assert all(v.scale == 1.0 and v.native is None for v in big)


@pytest.mark.parametrize(("fill", "boxes", "copies"), [
    ("min", [TextBox(0, 0, 5, 5, 1.0, 0), TextBox(3, 3, 9, 9, 1.0, 2)], 2),
    ("black", [TextBox(0, 0, 5, 5, 1.0, 0), TextBox(1, 1, 2, 2, 1.0, 0)], 1),
    ("zero", [TextBox(0, 0, 5, 5, 1.0, -1)], 3),
    ("min", [TextBox(0, 0, 0, 0, 1.0, -1)], 0),
])
def test_each_changed_frame_comes_back_to_the_host_once(
    host_copies: dict[str, int], fill: str, boxes: list[TextBox], copies: int
) -> None:
    redact.redact(ct(nframes=3), boxes, fill=fill, xp=np)  # type: ignore[arg-type]
    assert host_copies == {"frames": 0, "redact": copies}


@pytest.mark.parametrize(("module", "name"), GENERIC,
                         ids=[f"{m.__name__.rsplit('.', 1)[1]}.{n}" for m, n in GENERIC])
def test_generic_functions_make_no_numpy_call_on_the_arrays(module: Any, name: str) -> None:
    """A ``np.`` call on a CuPy array would copy it to the host or fail: only ``xp.``."""
    tree = ast.parse(inspect.getsource(getattr(module, name)).lstrip())
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef)
    used = sorted({f"np.{node.attr}" for statement in function.body
                   for node in ast.walk(statement)
                   if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                   and node.value.id == "np"})
    assert used == []
