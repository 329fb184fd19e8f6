"""Training data of the text detector: synthetic views, DB-style targets, augmentation.

Files come from :func:`training.pixel_corpus.make_sample` (one seed, one split: the
``train`` split for training, ``validation`` for tuning); each file is rendered through
:func:`pipeline.pixel.frames.views`, exactly as at run time, and the ground-truth line
boxes (stored pixels) are mapped into view pixels. Every rendered line is text, PHI or
not: the detector finds text, the PHI decision comes later.

Targets are the simpler documented variant of DB: one probability map, 1 inside each
line's *kernel* (its box shrunk on every side by ``shrink`` times its smaller side), 0 on
the background, ignored (weight 0) in the band between kernel and box. No threshold map:
at run time the kernel components are grown back by the inverse shrink
(:func:`pipeline.pixel.dbnet.kernel_boxes`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from dataclasses import dataclass

import numpy as np

from pipeline.errors import VeilError
from training.detector.config import AugmentConfig, DataConfig
from training.detector.negatives import negative_crop

logger = logging.getLogger(__name__)

#: Seed of the held-out corpus of ``benchmarks.bench_pixel`` / ``bench_detectors``: never
#: used for training, whatever the split.
HELD_OUT_SEED = 7


class DetectorDataError(VeilError, ValueError):
    """The requested training data cannot be made."""


@dataclass(frozen=True)
class ViewSample:
    """One grey view of one synthetic file and its line boxes (view pixels, exclusive)."""

    image: np.ndarray
    boxes: np.ndarray


def grey_of(image: np.ndarray) -> np.ndarray:
    """uint8 HxW or HxWx3 to uint8 HxW (channel mean, as the run-time detector does)."""
    if image.ndim == 2:
        return image
    return np.asarray(np.rint(image.mean(axis=2)), dtype=np.uint8)


def corpus_views(data: DataConfig, split: str, count: int) -> list[ViewSample]:
    """Views of the first ``count`` files of ``split`` in the corpus of ``data.seed``.

    Raises
    ------
    DetectorDataError
        When the seed is the benchmarks' held-out seed or ``split`` is ``test``.
    """
    from pipeline.pixel.frames import views
    from training.pixel_corpus import make_sample

    if data.seed == HELD_OUT_SEED:
        raise DetectorDataError(f"seed {HELD_OUT_SEED} is the benchmarks' held-out corpus")
    if split not in ("train", "validation"):
        raise DetectorDataError(f"split {split!r} is not for training")
    rnd = random.Random(f"views:{data.seed}:{split}")
    out: list[ViewSample] = []
    index = 0
    files = 0
    while files < count:
        sample, ds, _ = make_sample(index, data.seed)
        index += 1
        if sample.split != split or sample.background in data.exclude_backgrounds:
            continue
        files += 1
        rendered = list(views(ds))
        for view in rnd.sample(rendered, min(data.views_per_file, len(rendered))):
            boxes = np.array(
                [[math.floor(line.box[0] * view.scale), math.floor(line.box[1] * view.scale),
                  math.ceil(line.box[2] * view.scale), math.ceil(line.box[3] * view.scale)]
                 for line in sample.lines], dtype=np.float32).reshape(-1, 4)
            out.append(ViewSample(grey_of(view.image), boxes))
    logger.info("%s: %d files, %d views (corpus indices 0..%d)", split, files, len(out), index)
    return out


def data_hash(samples: list[ViewSample]) -> str:
    """sha256 of every view's pixels and boxes, in order."""
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(np.ascontiguousarray(sample.image).tobytes())
        digest.update(np.ascontiguousarray(sample.boxes, dtype=np.float32).tobytes())
    return digest.hexdigest()


def targets(boxes: np.ndarray, shape: tuple[int, int],
            shrink: float) -> tuple[np.ndarray, np.ndarray]:
    """Kernel map and loss weight (float32, ``shape``) for boxes ``(x0, y0, x1, y1)``.

    Boxes may extend past the image (a cut line keeps its own kernel); they are clipped
    when drawn. Weight is 0 between a kernel and its box, 1 elsewhere.
    """
    rows, cols = shape
    target = np.zeros(shape, dtype=np.float32)
    weight = np.ones(shape, dtype=np.float32)

    def span(a: float, b: float, size: int) -> slice:
        return slice(int(min(max(round(a), 0), size)), int(min(max(round(b), 0), size)))

    kernels = []
    for x0, y0, x1, y1 in boxes:
        d = shrink * min(x1 - x0, y1 - y0)
        weight[span(y0, y1, rows), span(x0, x1, cols)] = 0.0
        kernels.append((span(y0 + d, max(y1 - d, y0 + d + 1), rows),
                        span(x0 + d, max(x1 - d, x0 + d + 1), cols)))
    for ys, xs in kernels:
        target[ys, xs] = 1.0
        weight[ys, xs] = 1.0
    return target, weight


class CropSampler:
    """Random augmented training crops (image, kernel target, weight) from views."""

    def __init__(self, samples: list[ViewSample], data: DataConfig, augment: AugmentConfig,
                 seed: int) -> None:
        if not samples:
            raise DetectorDataError("no training views")
        self.samples = samples
        self.data = data
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``size`` crops: float32 (size, 1, crop, crop) image in [-1, 1], target, weight."""
        crop = self.data.crop
        images = np.empty((size, 1, crop, crop), dtype=np.float32)
        tgts = np.empty_like(images)
        weights = np.empty_like(images)
        for k in range(size):
            image, target, weight = self.one()
            images[k, 0], tgts[k, 0], weights[k, 0] = image, target, weight
        return images, tgts, weights

    def one(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One crop: scaled, shifted (or a generated negative, ``data.negative_share`` of the
        time), then contrast, polarity, blur and noise."""
        import cv2

        rng, aug, crop = self.rng, self.augment, self.data.crop
        if self.data.negative_share and rng.random() < self.data.negative_share:
            empty = np.zeros((crop, crop), np.float32)
            return self.photometric(negative_crop(crop, rng)), empty, np.ones_like(empty)
        sample = self.samples[int(rng.integers(len(self.samples)))]
        rows, cols = sample.image.shape
        scale = float(np.exp(rng.uniform(np.log(aug.scale_min), np.log(aug.scale_max))))
        size = crop / scale
        if len(sample.boxes) and rng.random() < self.data.text_crop_share:
            x0, y0, x1, y1 = sample.boxes[int(rng.integers(len(sample.boxes)))]
            cx = (x0 + x1) / 2 + rng.uniform(-size / 3, size / 3)
            cy = (y0 + y1) / 2 + rng.uniform(-size / 3, size / 3)
        else:
            cx, cy = rng.uniform(0, cols), rng.uniform(0, rows)
        left = float(np.clip(cx - size / 2, min(0.0, cols - size), max(0.0, cols - size)))
        top = float(np.clip(cy - size / 2, min(0.0, rows - size), max(0.0, rows - size)))
        matrix = np.array([[scale, 0, -left * scale], [0, scale, -top * scale]], np.float32)
        image = cv2.warpAffine(sample.image.astype(np.float32), matrix, (crop, crop),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        boxes = (sample.boxes - np.array([left, top, left, top], np.float32)) * scale
        target, weight = targets(boxes, (crop, crop), self.data.shrink)
        return self.photometric(image), target, weight

    def photometric(self, image: np.ndarray) -> np.ndarray:
        """Polarity, contrast, brightness, blur and noise; float32 in [-1, 1]."""
        import cv2

        rng, aug = self.rng, self.augment
        if rng.random() < aug.invert:
            image = 255.0 - image
        mean = float(image.mean())
        contrast = rng.uniform(aug.contrast_min, 1.0)
        image = (image - mean) * contrast + mean + rng.uniform(-30, 30)
        if rng.random() < aug.blur:
            image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.4, 1.0)))
        if aug.noise_max > 0:
            image = image + rng.normal(0, rng.uniform(0, aug.noise_max), image.shape)
        out: np.ndarray = np.clip(image, 0, 255).astype(np.float32) * np.float32(2 / 255) - 1
        return out
