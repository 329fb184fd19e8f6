"""Veil's own text-region detector (DB-style segmentation) on ONNX Runtime.

The model (``models/text-detector``, trained by :mod:`training.detector`) maps a grey
image to a per-pixel probability of lying in the *kernel* of a text line: the line's box
shrunk on every side by ``shrink`` times its smaller side. Post-processing binarises the
map, takes connected components, scores each by its mean probability and grows its
bounding box back by the inverse of the shrink (plus ``pad`` pixels), which is exact for
the axis-aligned lines burned into medical images. No torch here: ONNX Runtime, numpy
and OpenCV only (imported lazily, like :mod:`pipeline.pixel.ppocr`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.pixel.ppocr import ModelBundleError, make_session
from pipeline.pixel.types import TextBox
from pipeline.registry import ModelRef, resolve_bundle

logger = logging.getLogger(__name__)

BUNDLE = "text-detector"
#: Probability at or above which a kernel pixel is confident (see ``min_core``).
CORE = 0.9


def to_grey(image: np.ndarray) -> np.ndarray:
    """uint8 HxW or HxWx3 (RGB) to float32 HxW grey in [0, 255] (channel mean)."""
    if image.dtype != np.uint8:
        raise TypeError("expected a uint8 image")
    if image.ndim == 2:
        return image.astype(np.float32)
    if image.ndim == 3 and image.shape[2] == 3:
        return np.asarray(image.mean(axis=2, dtype=np.float32))
    raise ValueError("expected an HxW or HxWx3 image")


def prepare(grey: np.ndarray, multiple_of: int) -> np.ndarray:
    """Grey HxW in [0, 255] to the model input 1x1xH'xW' (``(x / 255 - 0.5) / 0.5``),
    edge-padded at the bottom and right to multiples of ``multiple_of``."""
    rows, cols = grey.shape
    pad_r = -rows % multiple_of
    pad_c = -cols % multiple_of
    norm = grey.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
    if pad_r or pad_c:
        norm = np.pad(norm, ((0, pad_r), (0, pad_c)), mode="edge")
    return np.ascontiguousarray(norm[None, None])


def kernel_components(prob: np.ndarray, thresh: float) -> np.ndarray:
    """The 8-connected components of ``prob > thresh`` as rows ``(x, y, w, h, area, mean
    probability, share of pixels at or above CORE)`` (float64, one row per component)."""
    import cv2

    binary = (prob > thresh).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        return np.zeros((0, 7), dtype=np.float64)
    flat = labels.ravel()
    sums = np.bincount(flat, weights=prob.ravel().astype(np.float64), minlength=count)
    cores = np.bincount(flat, weights=prob.ravel() >= CORE, minlength=count)
    area = np.maximum(stats[1:, 4].astype(np.float64), 1.0)
    return np.column_stack([stats[1:].astype(np.float64), sums[1:] / area, cores[1:] / area])


def grow_boxes(
    components: np.ndarray,
    shape: tuple[int, ...],
    *,
    box_thresh: float,
    shrink: float,
    pad: float,
    min_size: int,
    min_core: float = 0.0,
) -> list[tuple[float, float, float, float, float]]:
    """Boxes ``(x0, y0, x1, y1, score)`` of the components (see :func:`kernel_boxes`) that
    pass the filters, in a map of ``shape`` (rows, cols)."""
    rows, cols = shape[0], shape[1]
    factor = shrink / (1.0 - 2.0 * shrink)
    boxes = []
    for x, y, w, h, _, score, core in components.tolist():
        if min(w, h) < min_size or score < box_thresh or core < min_core:
            continue
        grow = factor * min(w, h) + pad
        boxes.append((max(x - grow, 0.0), max(y - grow, 0.0), min(x + w + grow, float(cols)),
                      min(y + h + grow, float(rows)), float(score)))
    return boxes


def kernel_boxes(
    prob: np.ndarray,
    *,
    thresh: float,
    box_thresh: float,
    shrink: float,
    pad: float,
    min_size: int,
    min_core: float = 0.0,
) -> list[tuple[float, float, float, float, float]]:
    """Kernel map to boxes ``(x0, y0, x1, y1, score)`` (map pixels, exclusive ends, clipped).

    Each 8-connected component of ``prob > thresh`` whose smaller side is at least
    ``min_size``, whose mean probability is at least ``box_thresh`` and whose share of
    pixels at or above :data:`CORE` (its confident core) is at least ``min_core`` gives one
    box: its bounding box grown on every side by ``shrink / (1 - 2 * shrink)`` times its
    smaller side plus ``pad`` (the inverse of the training targets' shrink). A text kernel
    is a solid, confident bar; texture the network half-believes (speckle, tissue edges)
    gives ragged components with little confident core.
    """
    return grow_boxes(kernel_components(prob, thresh), prob.shape, box_thresh=box_thresh,
                      shrink=shrink, pad=pad, min_size=min_size, min_core=min_core)


class VeilTextDetector:
    """Veil's text detector; implements :class:`~pipeline.pixel.types.TextDetector`.

    The bundle is read and sha256-checked when the detector is made; the ONNX Runtime
    session is made on first use (and again after unpickling, e.g. in a Ray worker).

    Parameters
    ----------
    thresh, box_thresh : float, optional
        Binarisation threshold and minimum mean probability of a box (bundle defaults).
    intra_op_num_threads : int, optional
        ONNX Runtime intra-op threads (``None``: runtime default).
    bundle : str
        Bundle folder name under ``models/``.
    """

    def __init__(
        self,
        *,
        thresh: float | None = None,
        box_thresh: float | None = None,
        intra_op_num_threads: int | None = None,
        bundle: str = BUNDLE,
    ) -> None:
        #: Which model this is (shipped files, or a registry version by alias).
        self.model_ref: ModelRef = resolve_bundle(bundle)
        self.metadata, self._model = _read_verified(self.model_ref)
        try:
            post = self.metadata["postprocessing"]
            self.multiple_of = int(self.metadata["preprocessing"]["multiple_of"])
            self.thresh = float(post["thresh"] if thresh is None else thresh)
            self.box_thresh = float(post["box_thresh"] if box_thresh is None else box_thresh)
            self.shrink = float(post["shrink"])
            self.pad = float(post["pad"])
            self.min_size = int(post["min_size"])
            # bundles before 1.1.0 have no core filter: 0 keeps every component
            self.min_core = float(post.get("min_core", 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelBundleError(
                f"model bundle {bundle!r}: metadata incomplete ({type(exc).__name__})"
            ) from exc
        self.intra_op_num_threads = intra_op_num_threads
        self._session: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_session"] = None  # ONNX Runtime sessions do not pickle; remade on use
        return state

    @property
    def session(self) -> Any:
        """The ONNX Runtime session (CUDA first when available), made on first use."""
        if self._session is None:
            self._session = make_session(self._model, self.intra_op_num_threads)
        return self._session

    def probability_maps(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Kernel probability per pixel (float32, each image's own rows x cols).

        Images of one shape are run as one batch.
        """
        greys = [to_grey(image) for image in images]
        out: list[np.ndarray] = [np.empty(0, np.float32)] * len(greys)
        shapes: dict[tuple[int, ...], list[int]] = {}
        for index, grey in enumerate(greys):
            shapes.setdefault(grey.shape, []).append(index)
        name = self.session.get_inputs()[0].name
        for (rows, cols), indices in shapes.items():
            batch = np.concatenate([prepare(greys[i], self.multiple_of) for i in indices])
            probs = self.session.run(None, {name: batch})[0]
            for i, prob in zip(indices, probs, strict=True):
                out[i] = np.asarray(prob[0, :rows, :cols], dtype=np.float32)
        return out

    def detect(self, image: np.ndarray) -> list[TextBox]:
        """Text boxes in ``image`` coordinates (frame 0; see ``View.to_stored``)."""
        return self.detect_many([image])[0]

    def detect_many(self, images: Sequence[np.ndarray]) -> list[list[TextBox]]:
        """:meth:`detect` for several images (one inference per distinct shape)."""
        results = []
        for prob in self.probability_maps(images):
            boxes = [
                TextBox(x0=math.floor(x0), y0=math.floor(y0), x1=math.ceil(x1),
                        y1=math.ceil(y1), score=score)
                for x0, y0, x1, y1, score in kernel_boxes(
                    prob, thresh=self.thresh, box_thresh=self.box_thresh,
                    shrink=self.shrink, pad=self.pad, min_size=self.min_size,
                    min_core=self.min_core)
            ]
            logger.debug("detected %d text boxes", len(boxes))
            results.append(boxes)
        return results


def _read_verified(ref: ModelRef) -> tuple[dict[str, Any], bytes]:
    """The metadata and ONNX bytes of a resolved bundle, checked against its sha256."""
    try:
        metadata = json.loads((ref.path / "metadata.json").read_text(encoding="utf-8"))
        model = (ref.path / "model.onnx").read_bytes()
    except (OSError, ValueError) as exc:
        raise ModelBundleError(
            f"model bundle {ref.name!r} is not usable ({type(exc).__name__})") from exc
    if hashlib.sha256(model).hexdigest() != ref.sha256:
        raise ModelBundleError(f"model bundle {ref.name!r}: model.onnx changed after its check")
    return metadata, model
