"""PP-OCRv4 detector and recogniser on ONNX Runtime, on rendered burned-in text."""

from __future__ import annotations

import json
import time
from importlib import resources
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")
pytest.importorskip("rapidocr_onnxruntime")
Image = pytest.importorskip("PIL.Image")
ImageDraw = pytest.importorskip("PIL.ImageDraw")
ImageFont = pytest.importorskip("PIL.ImageFont")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from pipeline.pixel import ppocr  # noqa: E402
from pipeline.pixel.frames import views  # noqa: E402
from pipeline.pixel.ppocr import (  # noqa: E402
    ModelBundleError,
    PPOCRDetector,
    PPOCRRecognizer,
    ctc_greedy_decode,
    db_boxes,
    load_bundle,
)
from pipeline.pixel.types import TextBox, TextDetector, TextRecognizer  # noqa: E402

LINES = ["DOE^JOHN", "MRN 12345678", "2024-01-05", "ST ELSEWHERE HOSP"]


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def ct_like(seed: int = 0, size: int = 512) -> np.ndarray:
    """A noisy dark background with a brighter disc (body), uint8."""
    rng = np.random.default_rng(seed)
    img = rng.normal(20, 8, (size, size))
    yy, xx = np.mgrid[:size, :size]
    img[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.35 * size) ** 2] += 70
    return np.clip(img, 0, 255).astype(np.uint8)


def burn(img: np.ndarray, sizes: list[int], lines: list[str] = LINES, fill: int = 230,
         origin: tuple[int, int] = (8, 8)) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Render ``lines`` top-left; return the image and each line's ink box (x0,y0,x1,y1)."""
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    x, y = origin
    truth = []
    for size, text in zip(sizes, lines, strict=True):
        font = ImageFont.load_default(size=size)
        box = draw.textbbox((x, y), text, font=font)
        draw.text((x, y), text, fill=fill, font=font)
        x0, y0, x1, y1 = (int(v) for v in box)
        truth.append((x0, y0, x1, y1))
        y = box[3] + max(4, size // 3)
    return np.asarray(pil), truth


def covers(box: TextBox, truth: tuple[int, int, int, int], tol: int = 1) -> bool:
    x0, y0, x1, y1 = truth
    return (box.x0 <= x0 + tol and box.y0 <= y0 + tol
            and box.x1 >= x1 - tol and box.y1 >= y1 - tol)


def best_match(boxes: list[TextBox], truth: tuple[int, int, int, int]) -> int | None:
    """Index of the smallest box covering ``truth`` (None if none does)."""
    found = [i for i, b in enumerate(boxes) if covers(b, truth)]
    return min(found, key=lambda i: boxes[i].area) if found else None


@pytest.fixture(scope="module")
def detector() -> PPOCRDetector:
    return PPOCRDetector(intra_op_num_threads=2)


@pytest.fixture(scope="module")
def recognizer() -> PPOCRRecognizer:
    return PPOCRRecognizer(intra_op_num_threads=2)


# --- bundles and sessions --------------------------------------------------------------


def test_bundles_ship_as_package_data_and_match_the_onnx_files(detector, recognizer):
    for name, engine in (("ppocr-v4-det", detector), ("ppocr-v4-rec", recognizer)):
        folder = resources.files("models").joinpath(name)
        assert folder.joinpath("README.md").is_file()
        meta = json.loads(folder.joinpath("metadata.json").read_text(encoding="utf-8"))
        assert meta["license"] == "Apache-2.0" and meta["name"] == name
        inputs = engine.session.get_inputs()
        outputs = engine.session.get_outputs()
        assert [i.name for i in inputs] == list(meta["inputs"])
        assert [o.name for o in outputs] == list(meta["outputs"])
        assert all(i.type == "tensor(float)" for i in inputs)
    assert recognizer.session.get_outputs()[0].shape[-1] == len(recognizer.charset) == 6625
    assert recognizer.charset[0] == "<blank>" and recognizer.charset[-1] == " "


def test_engines_satisfy_the_protocols(detector, recognizer):
    assert isinstance(detector, TextDetector)
    assert isinstance(recognizer, TextRecognizer)


def test_cpu_provider_is_used_without_cuda(detector):
    import onnxruntime

    providers = detector.session.get_providers()
    assert "CPUExecutionProvider" in providers
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert providers[0] == "CUDAExecutionProvider"


def test_a_modified_model_file_is_refused(tmp_path, monkeypatch):
    real = json.loads(resources.files("models").joinpath("ppocr-v4-det", "metadata.json")
                      .read_text(encoding="utf-8"))
    real["source"]["sha256"] = "0" * 64
    (tmp_path / "tampered").mkdir()
    (tmp_path / "tampered" / "metadata.json").write_text(json.dumps(real))
    fake = SimpleNamespace(
        files=lambda pkg: tmp_path if pkg == "models" else resources.files(pkg))
    monkeypatch.setattr(ppocr, "resources", fake)
    with pytest.raises(ModelBundleError, match="sha256"):
        load_bundle("tampered")
    with pytest.raises(ModelBundleError, match="not usable"):
        load_bundle("missing")


# --- post-processing in isolation --------------------------------------------------------


def test_ctc_greedy_decode_merges_repeats_and_drops_blanks():
    charset = ["<blank>", "A", "B", " "]
    steps = [1, 1, 0, 1, 2, 2, 0, 0, 3, 2]
    probs = np.full((len(steps), 4), 0.01, dtype=np.float32)
    probs[np.arange(len(steps)), steps] = 0.9
    result = ctc_greedy_decode(probs, charset)
    assert result.text == "AAB B"
    assert result.score == pytest.approx(0.9)
    # each character spans its run of steps, as fractions of the input width
    assert np.allclose(result.chars, [(0.0, 0.2), (0.3, 0.4), (0.4, 0.6), (0.8, 0.9),
                                      (0.9, 1.0)])
    assert ctc_greedy_decode(np.eye(4, dtype=np.float32)[[0, 0]], charset).text == ""
    assert "AAB" not in repr(result)  # recognised text stays out of reprs/logs


def test_db_boxes_finds_a_rectangle_and_grows_it():
    prob = np.zeros((64, 128), dtype=np.float32)
    prob[20:30, 10:90] = 0.9
    prob[50:52, 100:102] = 0.9  # too small
    prob[40:44, 10:40] = 0.35  # above thresh, below box_thresh
    boxes = db_boxes(prob, thresh=0.3, box_thresh=0.5, unclip_ratio=1.5, dilate=False)
    assert len(boxes) == 1
    x0, y0, x1, y1, score = boxes[0]
    grow = 80 * 10 * 1.5 / (2 * 90)
    assert score == pytest.approx(0.9, abs=0.01)
    assert x0 == pytest.approx(10 - grow, abs=0.6) and x1 == pytest.approx(90 + grow, abs=0.6)
    assert y0 == pytest.approx(20 - grow, abs=0.6) and y1 == pytest.approx(30 + grow, abs=0.6)


def test_empty_image_and_empty_box_list(detector, recognizer):
    blank = np.zeros((256, 256), dtype=np.uint8)
    assert detector.detect(blank) == []
    assert recognizer.recognize(blank, []) == []
    assert recognizer.recognize(blank, [TextBox(5, 5, 5, 9, 1.0)])[0].text == ""


# --- rendered burned-in text ------------------------------------------------------------


@pytest.mark.slow
def test_corner_block_is_detected_and_read(detector, recognizer):
    img, truth = burn(ct_like(), [14, 16, 18, 20])
    detector.detect(img)  # warm-up
    runs = 3
    start = time.perf_counter()
    for _ in range(runs):
        boxes = detector.detect(img)
    det_ms = (time.perf_counter() - start) / runs * 1000
    matched = [best_match(boxes, t) for t in truth]
    missed = [i for i, m in enumerate(matched) if m is None]
    assert not missed, f"lines not covered: {missed}"
    chosen = [boxes[i] for i in matched if i is not None]
    start = time.perf_counter()
    read = recognizer.recognize(img, chosen)
    rec_ms = (time.perf_counter() - start) * 1000
    for line, result in zip(LINES, read, strict=True):
        want, got = line.replace(" ", ""), result.text.replace(" ", "")
        assert edit_distance(got, want) <= max(1, len(want) // 8), f"line {LINES.index(line)}"
        assert result.score > 0.5
    print(f"\n[ppocr] detector {det_ms:.0f} ms per 512x512 image; recognizer "
          f"{rec_ms:.0f} ms for {len(chosen)} boxes ({rec_ms / len(chosen):.0f} ms/box)")


@pytest.mark.slow
def test_text_on_a_12_bit_ct_is_found_through_the_frame_views(detector):
    img, truth = burn(ct_like(seed=3), [16] * 4, fill=255)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = img.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    stored = (img.astype(np.uint16) * 16).astype(np.uint16)  # text at 4080, body ~1400
    ds.PixelData = stored.tobytes()
    found: dict[str, list[TextBox]] = {}
    for view in views(ds):
        assert view.scale == pytest.approx(1.25)
        found[view.name] = [view.to_stored(b) for b in detector.detect(view.image)]
    assert set(found) == {"window", "full", "inverted"}
    for name in ("window", "full"):
        missed = [i for i, t in enumerate(truth) if best_match(found[name], t) is None]
        assert not missed, f"{name} view missed lines {missed}"


@pytest.mark.slow
def test_small_text_recall_is_reported(detector, recognizer):
    """7-9 px fonts: assert what works on this renderer, print recall and reading errors."""
    report = []
    for size in (7, 8, 9):
        img, truth = burn(ct_like(seed=size), [size] * 4)
        boxes = detector.detect(img)
        matched = [best_match(boxes, t) for t in truth]
        recall = sum(m is not None for m in matched) / len(truth)
        chosen = [boxes[m] for m in matched if m is not None]
        wanted = [w.replace(" ", "") for w, m in zip(LINES, matched, strict=True) if m is not None]
        read = recognizer.recognize(img, chosen)
        errors = [edit_distance(r.text.replace(" ", ""), w)
                  for r, w in zip(read, wanted, strict=True)]
        report.append(f"{size}px: detection recall {recall:.2f}, edit distances {errors}")
        assert recall >= 0.75
    print("\n[ppocr small text] " + "; ".join(report))


def test_cpu_recognizer_batches_only_crops_of_one_unpadded_width(recognizer):
    if recognizer.session.get_providers()[0] == "CUDAExecutionProvider":
        pytest.skip("CUDA keeps the bundle's batching")
    assert recognizer.slack == 0
    assert recognizer.buckets([2 / 3, 10.0, 0.5, 10.0]) == [[2, 0], [1, 3]]
    assert recognizer.min_width == PPOCRRecognizer.CPU_MIN_WIDTH < recognizer.prep["min_width"]
    short = np.zeros((30, 20, 3), dtype=np.uint8)  # ratio 2/3: 32 columns, padded to 96
    long = np.zeros((30, 300, 3), dtype=np.uint8)  # ratio 10: 480 columns
    assert recognizer._batch([short]).shape == (1, 3, 48, 96)
    assert recognizer._batch([long]).shape == (1, 3, 48, 480)


@pytest.mark.slow
def test_reading_without_padding_to_320_columns_gives_the_same_text(recognizer):
    img, truth = burn(ct_like(), [12, 14, 16, 18])
    boxes = [TextBox(x0 - 3, y0 - 3, x1 + 3, y1 + 3, 1.0) for x0, y0, x1, y1 in truth]
    padded = PPOCRRecognizer(intra_op_num_threads=2, batch_size=6, min_width=320)
    fast = recognizer.recognize(img, boxes)
    slow = padded.recognize(img, boxes)
    for line, a, b in zip(LINES, fast, slow, strict=True):
        want = line.replace(" ", "")
        assert edit_distance(a.text.replace(" ", ""), want) <= edit_distance(
            b.text.replace(" ", ""), want) + 1
