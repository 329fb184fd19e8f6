"""Veil text detector training: config, data split guard, loss going down, export parity."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from training.detector.config import DetectorConfigError, load_config
from training.detector.data import (
    HELD_OUT_SEED,
    CropSampler,
    DetectorDataError,
    ViewSample,
    corpus_views,
    data_hash,
)
from training.detector.export import KernelNet
from training.detector.train import loss_fn, run, seed_everything

CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "detector.yaml"
TINY = {"data": {"seed": 11, "train_files": 2, "validation_files": 1, "views_per_file": 1,
                 "crop": 64},
        "model": {"channels": [4, 8, 16], "res_units": 0},
        "optim": {"steps": 2, "batch_size": 2, "log_every": 1},
        "post": {"tune": False}}


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one thread (several are far slower on a shared CPU), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def hand_views() -> list[ViewSample]:
    """Two views with bright bars standing in for text lines."""
    out = []
    for offset in (10, 30):
        image = np.full((96, 128), 30, dtype=np.uint8)
        boxes = np.array([[offset, 20, offset + 60, 30], [20, 60, 100, 72]], dtype=np.float32)
        for x0, y0, x1, y1 in boxes.astype(int):
            image[y0:y1, x0:x1:3] = 220
        out.append(ViewSample(image, boxes))
    return out


def test_shipped_config_validates() -> None:
    cfg = load_config(CONFIG)
    assert cfg.model_name == "veil-text-detector"
    assert cfg.data.seed != HELD_OUT_SEED


@pytest.mark.parametrize("bad", [
    {"unknown": 1},
    {"data": {"crop": 8}},
    {"optim": {"steps": 0}},
    {"model": {"channels": [8], "colour": True}},
])
def test_invalid_config_is_a_clear_error(bad: dict[str, object]) -> None:
    with pytest.raises(DetectorConfigError):
        load_config(bad)


@pytest.mark.parametrize(("seed", "split"), [(HELD_OUT_SEED, "train"), (11, "test")])
def test_training_data_never_comes_from_held_out_files(seed: int, split: str) -> None:
    with pytest.raises(DetectorDataError):
        corpus_views(load_config({"data": {"seed": seed}}).data, split, 1)


def test_training_views_come_from_the_train_split_only() -> None:
    from training.pixel_corpus import make_sample

    cfg = load_config({"data": {"seed": 11, "views_per_file": 1}})
    got = corpus_views(cfg.data, "train", 2)
    assert len(got) == 2
    train = [s for s in (make_sample(i, 11)[0] for i in range(12))
             if s.split == "train" and s.background not in cfg.data.exclude_backgrounds][:2]
    for view, sample in zip(got, train, strict=True):
        assert len(view.boxes) == len(sample.lines)


def test_crops_carry_kernels_and_augmentation_keeps_the_range() -> None:
    cfg = load_config({"data": {"crop": 64, "text_crop_share": 1.0}})
    images, target, weight = CropSampler(hand_views(), cfg.data, cfg.augment, 0).batch(8)
    assert images.shape == target.shape == weight.shape == (8, 1, 64, 64)
    assert images.min() >= -1 and images.max() <= 1
    assert target.sum() > 0 and (weight == 0).sum() > 0
    assert np.all(weight[target == 1] == 1)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_few_training_steps_lower_the_loss() -> None:
    seed_everything(0)
    cfg = load_config({"data": {"crop": 64, "text_crop_share": 1.0},
                       "model": {"channels": [4, 8, 16], "res_units": 0}})
    sampler = CropSampler(hand_views(), cfg.data, cfg.augment, 0)
    images, target, weight = (torch.from_numpy(a) for a in sampler.batch(4))
    net = KernelNet(cfg.model)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    losses = []
    for _ in range(15):
        loss = loss_fn(net.unet(images), target, weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_run_exports_a_parity_checked_bundle(tmp_path: Path) -> None:
    import onnxruntime as ort

    result = run(TINY, tmp_path)
    assert result.model_name == "veil-text-detector"
    assert result.onnx_path.is_file() and result.model_card.is_file()
    assert result.metrics["parity_max_abs"] < 1e-4
    assert len(result.history) == 2 and result.data_seed == 11
    metadata = json.loads((tmp_path / "metadata.json").read_text(encoding="utf-8"))
    assert metadata["training"]["data_sha256"] == result.data_hash
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    for shape in [(1, 1, 32, 48), (2, 1, 64, 16)]:  # dynamic batch, height and width
        out = session.run(None, {"image": np.zeros(shape, np.float32)})[0]
        assert out.shape == shape
    cfg = load_config(TINY)
    assert data_hash(corpus_views(cfg.data, "train", 2)) == result.data_hash  # seeded data


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_negative_crops_are_seeded_text_free_images(seed: int) -> None:
    from training.detector.negatives import negative_crop

    a = negative_crop(96, np.random.default_rng(seed))
    b = negative_crop(96, np.random.default_rng(seed))
    assert a.shape == (96, 96) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 255 and a.std() > 1


def test_negative_share_gives_crops_with_empty_targets_and_full_weight() -> None:
    cfg = load_config({"data": {"crop": 64, "text_crop_share": 1.0, "negative_share": 0.9}})
    images, target, weight = CropSampler(hand_views(), cfg.data, cfg.augment, 0).batch(16)
    negative = [k for k in range(16) if target[k].sum() == 0 and np.all(weight[k] == 1)]
    assert 8 <= len(negative) < 16
    assert images.min() >= -1 and images.max() <= 1


def test_no_training_background_is_a_real_evaluation_image() -> None:
    """pydicom's examples_rgb_color.dcm is a copy of the real sample US1_UNCR.dcm (same
    UIDs): the default data config must exclude it, and any other such copy."""
    import pydicom

    from benchmarks import bench_real
    from training.detector.config import DataConfig
    from training.pixel_corpus import _TEST_FILES, real_backgrounds

    real = []
    for entry in bench_real.load_ground_truth()["files"]:
        try:
            real.append(bench_real.locate(entry))
        except bench_real.SampleError:
            assert entry["package"] != "pydicom-data"  # installed by the dev extra
    uids = set()
    for path in real:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        uids |= {ds.get("SOPInstanceUID"), ds.get("StudyInstanceUID")} - {None}
    copies = set()
    for name in (n for names in real_backgrounds().values() for n in names):
        ds = pydicom.dcmread(_TEST_FILES / name, stop_before_pixels=True)
        if {ds.get("SOPInstanceUID"), ds.get("StudyInstanceUID")} & uids:
            copies.add(f"pydicom:{name}")
    assert copies  # the known copy is found (the check can fail)
    assert copies <= set(DataConfig().exclude_backgrounds)


def test_negative_views_are_seeded_and_text_free() -> None:
    from training.detector.tune import negative_views

    cfg = load_config({"post": {"negatives": 2}})
    a, b = negative_views(cfg), negative_views(cfg)
    assert len(a) == 2 and all(v.boxes.shape == (0, 4) for v in a)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert negative_views(load_config({})) == []


def test_tuning_drops_ragged_components_that_fire_on_text_free_views() -> None:
    from training.detector.tune import score, tune

    views = hand_views()
    probs = []
    for view in views:  # a confident kernel inside every true line
        prob = np.zeros(view.image.shape, np.float32)
        for x0, y0, x1, y1 in view.boxes.astype(int):
            d = int(0.25 * min(x1 - x0, y1 - y0))
            prob[y0 + d:y1 - d, x0 + d:x1 - d] = 0.97
        probs.append(prob)
    ragged = np.where(np.indices((96, 128)).sum(axis=0) % 5 == 0, 0.95, 0.75)
    views.append(ViewSample(np.zeros((96, 128), np.uint8), np.zeros((0, 4), np.float32)))
    probs.append(ragged.astype(np.float32))  # a text-free view the network half-believes
    cfg = load_config({})
    post = tune(views, probs, cfg)
    assert post["min_core"] > 0 or post["box_thresh"] > 0.8
    tuned = score(views, probs, post, cfg.data.shrink)
    assert tuned["box_recall"] == 1.0
    lenient = score(views, probs, {**post, "min_core": 0.0, "box_thresh": 0.6}, 0.25)
    assert tuned["over_detection"] < lenient["over_detection"]
