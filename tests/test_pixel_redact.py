"""Box redaction in the stored pixel domain: fills, layouts, bit-exactness, re-encoding."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from factories import make_ct
from pydicom import dcmread, dcmwrite
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_encoder
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from pipeline.errors import DeidError
from pipeline.pixel.codecs import decoding_plugin
from pipeline.pixel.redact import redact
from pipeline.pixel.types import TextBox

RAW: dict[str, Any] = {"as_rgb": False}


def bundled(name: str) -> Dataset:
    """A file from pydicom's own bundled test_files (never downloaded)."""
    path = get_testdata_file(name, download=False)
    assert isinstance(path, str), name
    return dcmread(path)


def box(x0: int, y0: int, x1: int, y1: int, frame: int = 0) -> TextBox:
    return TextBox(x0=x0, y0=y0, x1=x1, y1=y1, score=1.0, frame=frame)


def make_image(
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    signed: bool = False,
    planar: int = 0,
    syntax: UID = ExplicitVRLittleEndian,
    **attrs: object,
) -> Dataset:
    """Native image dataset around raw words ``stored`` (frames, rows, cols, samples)."""
    nframes, rows, cols, samples = stored.shape
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if nframes > 1:
        ds.NumberOfFrames = nframes
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, samples
    if samples > 1:
        ds.PlanarConfiguration = planar
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = stored.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(signed)
    ds.BurnedInAnnotation = "YES"
    for key, value in attrs.items():
        setattr(ds, key, value)
    layout = stored.transpose(0, 3, 1, 2) if planar else stored
    big = syntax == ExplicitVRBigEndian
    data = layout.astype(stored.dtype.newbyteorder(">" if big else "<")).tobytes()
    ds.PixelData = data + b"\xab" * (len(data) % 2)  # odd length: a recognisable pad
    return ds


def decoded(ds: Dataset) -> np.ndarray:
    """(frames, rows, cols, samples) stored values, without colour conversion."""
    tsyntax = ds.file_meta.TransferSyntaxUID
    plugin = decoding_plugin(tsyntax)  # the same decoder as Veil's: lossy JPEG decoders differ
    arr, _ = get_decoder(tsyntax).as_array(ds, **RAW, decoding_plugin=plugin)
    n = int(ds.get("NumberOfFrames") or 1)
    return arr.reshape(n, int(ds.Rows), int(ds.Columns), int(ds.SamplesPerPixel))


def region_mask(
    shape: tuple[int, ...], regions: list[tuple[int, int, int, int, int]]
) -> np.ndarray:
    """Boolean (frames, rows, cols, samples) mask of (frame, y0, y1, x0, x1) regions."""
    mask = np.zeros(shape, dtype=bool)
    for frame, y0, y1, x0, x1 in regions:
        mask[frame, y0:y1, x0:x1, :] = True
    return mask


def assert_bytes_outside(before: bytes, after: bytes, mask: np.ndarray, itemsize: int,
                         planar: int = 0) -> None:
    """Raw bytes outside the masked samples (and any padding) are unchanged."""
    assert len(before) == len(after)
    layout = mask.transpose(0, 3, 1, 2) if planar else mask
    byte_mask = np.repeat(layout.reshape(-1), itemsize)
    b = np.frombuffer(before, dtype=np.uint8)
    a = np.frombuffer(after, dtype=np.uint8)
    n = byte_mask.size
    assert np.array_equal(b[:n][~byte_mask], a[:n][~byte_mask])
    assert before[n:] == after[n:]


def noisy(shape: tuple[int, ...], dtype: str, low: int, high: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, size=shape, endpoint=True).astype(dtype)


# --- monochrome: bit depths, signedness, MONOCHROME1, fills ------------------------------

MONO_CASES = [
    # dtype, bits stored, signed, photometric, expected "min" fill
    ("u1", 8, False, "MONOCHROME2", 0),
    ("u2", 12, False, "MONOCHROME2", 0),
    ("u2", 16, False, "MONOCHROME2", 0),
    ("i1", 8, True, "MONOCHROME2", -128),
    ("i2", 12, True, "MONOCHROME2", -2048),
    ("i2", 16, True, "MONOCHROME2", -32768),
    ("u2", 12, False, "MONOCHROME1", 4095),
    ("i2", 12, True, "MONOCHROME1", 2047),
    ("u1", 8, False, "MONOCHROME1", 255),
]


@pytest.mark.parametrize(("dtype", "bits", "signed", "photometric", "expected"), MONO_CASES)
def test_monochrome_min_fill_is_bit_exact_outside(
    dtype: str, bits: int, signed: bool, photometric: str, expected: int
) -> None:
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    values = noisy((1, 9, 7, 1), "i8", low + 1, high - 1)
    words = values & (2**bits - 1)
    itembits = np.dtype(dtype).itemsize * 8
    if bits < itembits:  # junk above Bits Stored must survive outside the boxes
        words = words | (noisy(words.shape, "i8", 0, 2 ** (itembits - bits) - 1, 7) << bits)
    stored = words.astype(np.dtype(dtype).str.replace("i", "u"))
    ds = make_image(stored, photometric=photometric, bits_stored=bits, signed=signed)
    before, original = bytes(ds.PixelData), decoded(ds)
    assert len(before) % 2 == 0

    result = redact(ds, [box(1, 2, 4, 5)])

    after = decoded(ds)
    mask = region_mask(after.shape, [(0, 2, 5, 1, 4)])
    assert np.all(after[mask] == expected)
    assert np.array_equal(after[~mask], original[~mask])
    assert_bytes_outside(before, bytes(ds.PixelData), mask, stored.dtype.itemsize)
    raw = np.frombuffer(ds.PixelData, dtype=stored.dtype, count=stored.size)
    raw = raw.reshape(stored.shape)
    assert np.all(raw[mask] == (expected & (2**itembits - 1)))  # sign-extended full word
    assert result.reencoded == "none"
    assert result.transfer_syntax_out == ExplicitVRLittleEndian
    assert (result.boxes_applied, result.frames_changed) == (1, (0,))
    assert ds.BurnedInAnnotation == "NO"


@pytest.mark.parametrize(
    ("photometric", "slope", "fill", "expected"),
    [
        ("MONOCHROME2", "1", "black", 100),  # darkest present
        ("MONOCHROME1", "1", "black", 900),  # MONOCHROME1: the largest is darkest
        ("MONOCHROME2", "-1", "black", 900),  # negative slope flips the order
        ("MONOCHROME2", "-1", "min", 4095),
        ("MONOCHROME2", "1", "zero", 0),
        ("MONOCHROME1", "1", "zero", 0),
    ],
)
def test_monochrome_fill_modes(photometric: str, slope: str, fill: str, expected: int) -> None:
    values = noisy((1, 8, 8, 1), "u2", 100, 900)
    values[0, 0, 0, 0], values[0, 7, 7, 0] = 100, 900
    ds = make_image(values, photometric=photometric, bits_stored=12,
                    RescaleSlope=slope, RescaleIntercept="0")
    redact(ds, [box(2, 2, 5, 5)], fill=fill)  # type: ignore[arg-type]
    assert np.all(decoded(ds)[0, 2:5, 2:5, 0] == expected)


def test_black_fill_is_computed_per_frame() -> None:
    values = noisy((2, 6, 6, 1), "u2", 500, 600)
    values[0, 5, 5, 0], values[1, 5, 5, 0] = 10, 20
    ds = make_image(values, bits_stored=12)
    redact(ds, [box(0, 0, 2, 2, frame=-1)], fill="black")
    after = decoded(ds)
    assert np.all(after[0, :2, :2] == 10)
    assert np.all(after[1, :2, :2] == 20)


def test_ct_factory_black_uses_rescale() -> None:
    ds = make_ct(rows=16, columns=16)
    present = decoded(ds).min()
    result = redact(ds, [box(0, 0, 16, 3)], fill="black")
    assert np.all(decoded(ds)[0, :3] == present)
    assert result.frames_changed == (0,)


# --- colour ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("photometric", "planar", "fill", "expected"),
    [
        ("RGB", 0, "min", (0, 0, 0)),
        ("RGB", 1, "min", (0, 0, 0)),
        ("RGB", 1, "black", (0, 0, 0)),
        ("YBR_FULL", 0, "min", (0, 128, 128)),
        ("YBR_FULL", 1, "black", (0, 128, 128)),
        ("YBR_FULL", 0, "zero", (0, 0, 0)),
    ],
)
def test_color_fill(photometric: str, planar: int, fill: str, expected: tuple[int, ...]) -> None:
    values = noisy((1, 5, 7, 3), "u1", 1, 254)
    ds = make_image(values, photometric=photometric, planar=planar)
    before, original = bytes(ds.PixelData), decoded(ds)
    assert len(before) % 2 == 0 and before[-1:] == b"\xab"  # 105 bytes + pad
    redact(ds, [box(5, 3, 9, 9)], fill=fill)  # type: ignore[arg-type]
    after = decoded(ds)
    mask = region_mask(after.shape, [(0, 3, 5, 5, 7)])
    assert np.all(after[0, 3:5, 5:7] == np.array(expected))
    assert np.array_equal(after[~mask], original[~mask])
    assert_bytes_outside(before, bytes(ds.PixelData), mask, 1, planar)


def palette_image(dark: int) -> Dataset:
    ds = make_image(noisy((1, 6, 6, 1), "u1", 0, 255), photometric="PALETTE COLOR")
    lut = np.full(256, 40000, dtype="<u2")
    lut[dark] = 100
    green = lut.copy()
    green[(dark + 1) % 256] = 0  # darkest green alone is not darkest colour
    for colour, table in (("Red", lut), ("Green", lut), ("Blue", lut)):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", table.tobytes())
    ds.BluePaletteColorLookupTableData = green.tobytes()
    return ds


@pytest.mark.parametrize("dark", [0, 77, 255])
def test_palette_uses_darkest_entry(dark: int) -> None:
    ds = palette_image(dark)
    redact(ds, [box(0, 0, 3, 3)])
    assert np.all(decoded(ds)[0, :3, :3] == dark)


def test_palette_example_file() -> None:
    ds = bundled("examples_palette.dcm")
    from pydicom.pixels import apply_color_lut

    rgb = apply_color_lut(np.arange(256, dtype=np.uint8), ds).astype(float)
    darkest = int(np.argmin(rgb @ [0.299, 0.587, 0.114]))
    original = decoded(ds)
    redact(ds, [box(10, 10, 50, 20)])
    after = decoded(ds)
    mask = region_mask(after.shape, [(0, 10, 20, 10, 50)])
    assert np.all(after[mask] == darkest)
    assert np.array_equal(after[~mask], original[~mask])


def test_big_endian_native() -> None:
    values = noisy((1, 4, 4, 1), "u2", 1, 60000)
    ds = make_image(values, syntax=ExplicitVRBigEndian)
    before, original = bytes(ds.PixelData), decoded(ds)
    redact(ds, [box(0, 0, 2, 1)], fill="min")
    after = decoded(ds)
    mask = region_mask(after.shape, [(0, 0, 1, 0, 2)])
    assert np.all(after[mask] == 0) and np.array_equal(after[~mask], original[~mask])
    assert_bytes_outside(before, bytes(ds.PixelData), mask, 2)


# --- frames, margin, clipping, errors ----------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "changed"), [(0, (0,)), (1, (1,)), (2, (2,)), (-1, (0, 1, 2))]
)
def test_multiframe_addressing(frame: int, changed: tuple[int, ...]) -> None:
    values = noisy((3, 5, 5, 1), "u1", 10, 250)  # 75 bytes: odd, padded
    ds = make_image(values)
    before, original = bytes(ds.PixelData), decoded(ds)
    result = redact(ds, [box(1, 1, 3, 3, frame=frame)])
    after = decoded(ds)
    mask = region_mask(after.shape, [(f, 1, 3, 1, 3) for f in changed])
    assert np.all(after[mask] == 0)
    assert np.array_equal(after[~mask], original[~mask])
    assert_bytes_outside(before, bytes(ds.PixelData), mask, 1)
    assert result.frames_changed == changed and result.boxes_applied == 1


@pytest.mark.parametrize(
    ("bx", "margin", "region", "applied"),
    [
        (box(2, 2, 3, 3), 1, (1, 4, 1, 4), 1),
        (box(0, 0, 2, 2), 3, (0, 5, 0, 5), 1),  # clipped at top-left
        (box(5, 6, 8, 8), 0, (6, 8, 5, 8), 1),
        (box(6, 6, 20, 20), 2, (4, 8, 4, 8), 1),  # clipped at bottom-right
        (box(30, 30, 40, 40), 0, None, 0),  # wholly outside: nothing, no error
        (box(3, 3, 3, 3), 0, None, 0),  # empty
    ],
)
def test_margin_and_clipping(
    bx: TextBox, margin: int, region: tuple[int, int, int, int] | None, applied: int
) -> None:
    values = noisy((1, 8, 8, 1), "u2", 1, 65535)
    ds = make_image(values)
    before, original = bytes(ds.PixelData), decoded(ds)
    result = redact(ds, [bx], margin=margin)
    after = decoded(ds)
    mask = region_mask(after.shape, [(0, *region)] if region else [])
    assert np.all(after[mask] == 0)
    assert np.array_equal(after[~mask], original[~mask])
    assert_bytes_outside(before, bytes(ds.PixelData), mask, 2)
    assert result.boxes_applied == applied
    if not applied:
        assert bytes(ds.PixelData) == before


@pytest.mark.parametrize("frame", [3, 7, -2])
def test_box_on_missing_frame_is_an_error(frame: int) -> None:
    ds = make_image(noisy((3, 4, 4, 1), "u1", 0, 255))
    before = bytes(ds.PixelData)
    with pytest.raises(DeidError, match="frame"):
        redact(ds, [box(0, 0, 1, 1), box(0, 0, 1, 1, frame=frame)])
    assert bytes(ds.PixelData) == before


def test_float_pixel_data_is_refused() -> None:
    ds = make_image(noisy((1, 2, 2, 1), "u1", 0, 9))
    del ds.PixelData
    ds.FloatPixelData = np.zeros(4, dtype="<f4").tobytes()
    with pytest.raises(DeidError, match="float pixel data redaction is not supported"):
        redact(ds, [box(0, 0, 1, 1)])


def test_no_pixel_data_with_boxes_is_an_error() -> None:
    ds = make_image(noisy((1, 2, 2, 1), "u1", 0, 9))
    del ds.PixelData
    with pytest.raises(DeidError):
        redact(ds, [box(0, 0, 1, 1)])


def test_negative_margin_is_an_error() -> None:
    with pytest.raises(DeidError):
        redact(make_image(noisy((1, 2, 2, 1), "u1", 0, 9)), [box(0, 0, 1, 1)], margin=-1)


def test_undecodable_compressed_input_is_an_error() -> None:
    ds = bundled("JPEG-lossy.dcm")  # 12-bit JPEG no installed plugin reads
    with pytest.raises(DeidError, match="cannot decode"):
        redact(ds, [box(0, 0, 4, 4)])


# --- compressed input --------------------------------------------------------------------


def _jls() -> UID:
    return JPEGLSLossless if get_encoder(JPEGLSLossless).is_available else RLELossless


COMPRESSED = [
    # file, expected syntax out (None: Explicit VR Little Endian), expected fill
    ("MR_small_RLE.dcm", RLELossless, [-32768]),
    ("JPEG2000.dcm", JPEG2000Lossless, [-32768]),
    ("MR_small_jp2klossless.dcm", JPEG2000Lossless, [-32768]),
    ("693_J2KI.dcm", JPEG2000Lossless, [-8192]),
    ("GDCMJ2K_TextGBR.dcm", JPEG2000Lossless, [0, 0, 0]),  # YBR_RCT decodes to RGB
    ("MR_small_jpeg_ls_lossless.dcm", "jls", [-32768]),
    ("JPEGLSNearLossless_08.dcm", "jls", [0]),
    ("SC_rgb_jpeg_dcmtk.dcm", RLELossless, [0, 128, 128]),
    ("SC_rgb_jpeg_app14_dcmd.dcm", RLELossless, [0, 0, 0]),
    ("SC_jpeg_no_color_transform.dcm", RLELossless, [0, 0, 0]),
    ("SC_rgb_small_odd_jpeg.dcm", RLELossless, [0, 128, 128]),
    ("examples_ybr_color.dcm", RLELossless, [0, 128, 128]),  # YBR_FULL_422 -> YBR_FULL
    ("JPGExtended.dcm", RLELossless, [0]),
    ("SC_rgb_jpeg_gdcm.dcm", RLELossless, [0, 0, 0]),  # JPEG Lossless SV1: no encoder
    ("SC_rgb_rle_2frame.dcm", RLELossless, [0, 0, 0]),
    ("rtdose_rle.dcm", None, [0]),  # 32-bit: outside pydicom's RLE profile
    ("SC_rgb_rle_32bit_2frame.dcm", None, [0, 0, 0]),
    ("SC_ybr_full_422_uncompressed.dcm", None, [0, 128, 128]),  # native but subsampled
]


@pytest.mark.parametrize(("name", "syntax", "fill"), COMPRESSED)
def test_compressed_roundtrip(name: str, syntax: UID | str | None, fill: list[int]) -> None:
    ds = bundled(name)
    ts_in = ds.file_meta.TransferSyntaxUID
    lossy, sop = ds.get("LossyImageCompression"), ds.SOPInstanceUID
    original = decoded(ds)
    nframes, rows, cols, _ = original.shape
    boxes = [box(1, 1, cols // 2 + 1, rows // 3 + 1, frame=-1), box(cols - 3, rows - 2, cols, rows)]

    result = redact(ds, boxes, margin=1)

    expected_ts = _jls() if syntax == "jls" else syntax or ExplicitVRLittleEndian
    assert ds.file_meta.TransferSyntaxUID == expected_ts == result.transfer_syntax_out
    assert result.transfer_syntax_in == ts_in
    assert result.reencoded == ("lossless" if syntax else "uncompressed")
    assert result.frames_changed == tuple(range(nframes))
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    back = dcmread(io.BytesIO(buffer.getvalue()))
    assert back.file_meta.TransferSyntaxUID == expected_ts
    assert back.get("LossyImageCompression") == lossy and back.SOPInstanceUID == sop
    assert back.BurnedInAnnotation == "NO"
    assert "422" not in back.PhotometricInterpretation
    after = decoded(back)
    top = (0, min(rows // 3 + 2, rows), 0, min(cols // 2 + 2, cols))  # margin 1, clipped
    regions = [(f, *top) for f in range(nframes)]
    mask = region_mask(after.shape, [*regions, (0, rows - 3, rows, max(cols - 4, 0), cols)])
    assert np.all(after[mask[..., 0]] == np.array(fill))
    assert np.array_equal(after[~mask], original[~mask])


def test_failed_encoder_falls_back_to_uncompressed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Dataset, *args: object, **kwargs: object) -> None:
        self.PixelData = b"garbage"
        raise RuntimeError("encoder failure")

    monkeypatch.setattr(Dataset, "compress", broken)
    ds = bundled("MR_small_RLE.dcm")
    original = decoded(ds)
    result = redact(ds, [box(0, 0, 5, 5)])
    assert result.reencoded == "uncompressed"
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    after = decoded(ds)
    mask = region_mask(after.shape, [(0, 0, 5, 0, 5)])
    assert np.all(after[mask] == -32768)
    assert np.array_equal(after[~mask], original[~mask])


def test_compressed_without_effective_boxes_is_untouched() -> None:
    ds = bundled("MR_small_RLE.dcm")
    before = ds.PixelData
    result = redact(ds, [box(500, 500, 600, 600)])
    assert result.reencoded == "none" and result.boxes_applied == 0
    assert ds.PixelData == before and ds.file_meta.TransferSyntaxUID == RLELossless


def test_signed_black_uses_sign_extended_values() -> None:
    values = noisy((1, 6, 6, 1), "i8", -1000, 1000)
    values[0, 5, 5, 0] = -2000
    words = (values & 0xFFF).astype("u2")  # 12-bit two's complement, high bits clear
    ds = make_image(words, bits_stored=12, signed=True)
    redact(ds, [box(0, 0, 3, 3)], fill="black")
    assert np.all(decoded(ds)[0, :3, :3] == -2000)


def test_big_endian_black_keeps_byte_order() -> None:
    values = np.full((1, 4, 4, 1), 0x0500, dtype="u2")  # byte-swapped, 0x0500 is smaller
    values[0, 3, 3, 0] = 0x0102
    ds = make_image(values, syntax=ExplicitVRBigEndian)
    redact(ds, [box(0, 0, 2, 2)], fill="black")
    assert np.all(decoded(ds)[0, :2, :2] == 0x0102)
    assert ds.PixelData[:2] == b"\x01\x02"


def test_functional_group_slope_orders_black() -> None:
    values = noisy((2, 5, 5, 1), "u2", 100, 200)
    values[:, 4, 4, 0] = 300
    ds = make_image(values, bits_stored=12)
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept = "-1", "0"
    shared = Dataset()
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    redact(ds, [box(0, 0, 2, 2, frame=-1)], fill="black")
    assert np.all(decoded(ds)[:, :2, :2] == 300)


def test_encoder_output_that_does_not_round_trip_is_rejected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = Dataset.compress

    def lossy(self: Dataset, uid: str, arr: np.ndarray, **kwargs: Any) -> Any:
        changed = arr.copy()
        changed.flat[-1] ^= 1  # a one-bit error far from the box
        return real(self, uid, changed, **kwargs)

    monkeypatch.setattr(Dataset, "compress", lossy)
    ds = bundled("MR_small_RLE.dcm")
    original = decoded(ds)
    result = redact(ds, [box(0, 0, 5, 5)])
    assert result.reencoded == "uncompressed"
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    after = decoded(ds)
    mask = region_mask(after.shape, [(0, 0, 5, 0, 5)])
    assert np.array_equal(after[~mask], original[~mask])
