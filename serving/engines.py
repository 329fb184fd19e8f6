"""Model engines behind the deployments, and their batched calls (no Ray needed).

The deployments and the in-process (embedded) path build the same plain engines here:
:class:`~pipeline.pixel.ppocr.PPOCRDetector`, ``VeilTextDetector``,
:class:`~pipeline.pixel.ppocr.PPOCRRecognizer` and ``NerTagger``, on the ONNX Runtime
providers :mod:`pipeline.accel` chooses at run time. Batched detection stacks images of
one input size into one inference call; results are those of one-at-a-time calls
(a test checks it).
"""

from __future__ import annotations

import copy
import importlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import accel
from pipeline.errors import VeilError
from pipeline.pixel.types import Recognition, TextBox
from pipeline.text.spans import PhiSpan
from serving.config import DeploymentSpec, ModelSource

logger = logging.getLogger(__name__)


class EngineUnavailableError(VeilError, RuntimeError):
    """A configured model or model source is not available in this installation."""


@dataclass(frozen=True)
class DetectRequest:
    """One image to detect text in, with optional per-request DB thresholds."""

    image: np.ndarray
    thresh: float | None = None
    box_thresh: float | None = None


#: Bundle folder (``models/<bundle>``, registry name mapping) of each served model.
#: For PP-OCRv4 joined by ours, the bundle is ours (PP-OCRv4 always ships with Veil).
BUNDLES = {"ppocr-v4": "ppocr-v4-det", "veil-text-detector": "text-detector",
           "ppocr-v4+veil-text-detector": "text-detector", "phi-ner": "phi-ner"}


def _optional(module: str, attribute: str, what: str) -> Any:
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise EngineUnavailableError(f"{what} is not available: {module}.{attribute} "
                                     f"cannot be imported") from exc


def bundle_path(model: ModelSource) -> Path | None:
    """The verified local bundle of a registry alias (None for the shipped files).

    Raises
    ------
    EngineUnavailableError
        ``source: registry`` without a configured registry (``model.tracking_uri`` or
        ``$MLFLOW_TRACKING_URI``): never the shipped files in its place.
    """
    if model.source == "shipped":
        return None
    resolve = _optional("pipeline.registry", "resolve_bundle", "the MLflow model registry")
    ref = resolve(BUNDLES[model.name], alias=model.alias, tracking_uri=model.tracking_uri)
    if ref.source != "registry":
        raise EngineUnavailableError(
            f"model {model.name!r}: registry alias {model.alias!r} requested but no registry "
            "is configured (model.tracking_uri or $MLFLOW_TRACKING_URI)")
    logger.info("model %s: registry version %s (alias %s)", model.name, ref.version,
                model.alias)
    return Path(ref.path)


def _rebind(engine: Any, model: bytes, device: str, threads: int | None,
            attribute: str = "session") -> Any:
    """Give ``engine`` a session on the providers ``accel`` chooses, when they differ."""
    wanted = accel.onnx_providers(device)
    if providers_of(engine) != wanted:
        setattr(engine, attribute, accel.make_session(model, device, threads))
    return engine


def build_detector(spec: DeploymentSpec) -> Any:
    """The text detector a detector deployment serves."""
    accel.onnx_providers(spec.device)  # fails loudly when cuda is asked for and absent
    threads = spec.intra_op_num_threads
    if spec.model.name == "ppocr-v4":
        if spec.model.source != "shipped":
            raise EngineUnavailableError("ppocr-v4 ships with Veil: use source 'shipped'")
        from pipeline.pixel.ppocr import PPOCRDetector

        # the session is made on spec.device from the same (folded) graph as in process
        return PPOCRDetector(intra_op_num_threads=threads, device=spec.device)
    cls = _optional("pipeline.pixel.dbnet", "VeilTextDetector", "the Veil text detector")
    path = bundle_path(spec.model)
    detector = cls(intra_op_num_threads=threads) if path is None else \
        cls(intra_op_num_threads=threads, bundle=str(path))
    ours = _rebind(detector, detector._model, spec.device, threads, "_session")
    if spec.model.name == "veil-text-detector":
        return ours
    from pipeline.pixel.ensemble import UnionDetector
    from pipeline.pixel.ppocr import PPOCRDetector

    return UnionDetector(PPOCRDetector(intra_op_num_threads=threads, device=spec.device), ours)


def build_recognizer(spec: DeploymentSpec) -> Any:
    """The text recognizer a recognizer deployment serves."""
    accel.onnx_providers(spec.device)
    from pipeline.pixel.ppocr import PPOCRRecognizer

    return PPOCRRecognizer(intra_op_num_threads=spec.intra_op_num_threads, device=spec.device)


def build_ner(spec: DeploymentSpec) -> Any:
    """The NER tagger an NER deployment serves (its session made now, on ``spec.device``)."""
    accel.onnx_providers(spec.device)
    cls = _optional("pipeline.text.ner", "NerTagger", "the PHI NER model")
    tagger = cls(bundle_path(spec.model), intra_op_num_threads=spec.intra_op_num_threads)
    tagger._load()
    model = (tagger.folder / "model.onnx").read_bytes()
    return _rebind(tagger, model, spec.device, spec.intra_op_num_threads, "_session")


def providers_of(engine: Any) -> list[str]:
    """The ONNX Runtime providers an engine runs on (empty when it has no session; for
    a composite, those of its first member, and empty unless every member has one)."""
    members = getattr(engine, "members", None)
    if members:
        each = [providers_of(member) for member in members]
        return each[0] if all(each) else []
    session = getattr(engine, "_session", None) or getattr(engine, "session", None)
    return list(session.get_providers()) if session is not None else []


class BatchDetector:
    """Batched detection with per-request DB thresholds over one detector.

    PP-OCR: images of one input size share one inference, thresholds apply in
    post-processing. Other detectors (``detect_many``): one variant per thresholds pair,
    made on first use.
    """

    def __init__(self, detector: Any, device: str | None = None,
                 threads: int | None = None) -> None:
        self.detector, self.device, self.threads = detector, device, threads
        self._variants: dict[tuple[float | None, float | None], Any] = {(None, None): detector}
        #: a union's members, batched each on its own (the thresholds apply to both)
        self._members = [BatchDetector(member, device, threads)
                         for member in getattr(detector, "members", ())]

    def _variant(self, key: tuple[float | None, float | None]) -> Any:
        if key not in self._variants:
            variant = copy.copy(self.detector)
            variant.thresh = self.detector.thresh if key[0] is None else float(key[0])
            variant.box_thresh = self.detector.box_thresh if key[1] is None else float(key[1])
            if hasattr(variant, "_model") and hasattr(variant, "_session"):
                variant._session = accel.make_session(variant._model, self.device, self.threads)
            self._variants[key] = variant
        return self._variants[key]

    def detect_many(self, requests: list[DetectRequest]) -> list[list[TextBox]]:
        """Boxes of every request, in order."""
        from pipeline.pixel.ppocr import PPOCRDetector

        if self._members:
            found = [member.detect_many(requests) for member in self._members]
            return [self.detector.combine(*boxes, request.image)
                    for *boxes, request in zip(*found, requests, strict=True)]
        if isinstance(self.detector, PPOCRDetector):
            return _ppocr_detect_many(self.detector, requests)
        groups: dict[tuple[float | None, float | None], list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault((request.thresh, request.box_thresh), []).append(index)
        out: list[list[TextBox]] = [[] for _ in requests]
        for key, members in groups.items():
            variant = self._variant(key)
            images = [requests[i].image for i in members]
            found = variant.detect_many(images) if hasattr(variant, "detect_many") else \
                [variant.detect(image) for image in images]
            for index, boxes in zip(members, found, strict=True):
                out[index] = list(boxes)
        return out


def detect_many(detector: Any, requests: list[DetectRequest]) -> list[list[TextBox]]:
    """Detect text in several images (see :class:`BatchDetector`)."""
    return BatchDetector(detector).detect_many(requests)


def _ppocr_detect_many(detector: Any, requests: list[DetectRequest]) -> list[list[TextBox]]:
    import cv2

    from pipeline.pixel.ppocr import normalize, to_bgr

    groups: dict[tuple[int, int], list[int]] = {}
    tensors = []
    for index, request in enumerate(requests):
        bgr = to_bgr(request.image)
        rows, cols = detector.input_size(*bgr.shape[:2])
        groups.setdefault((rows, cols), []).append(index)
        resized = cv2.resize(bgr, (cols, rows), interpolation=cv2.INTER_LINEAR)
        tensors.append(normalize(resized, detector.prep))
    maps: list[np.ndarray | None] = [None] * len(requests)
    for members in groups.values():
        batch = np.stack([tensors[i] for i in members])
        out = detector.session.run(None, {detector.input_name: batch})[0]
        for k, index in enumerate(members):
            maps[index] = np.asarray(out[k, 0], dtype=np.float32)
    results = []
    for request, prob in zip(requests, maps, strict=True):
        assert prob is not None
        results.append(_boxes(detector, request, prob))
    return results


def _boxes(detector: Any, request: DetectRequest, prob: np.ndarray) -> list[TextBox]:
    """DB post-processing of one map into image boxes (as ``PPOCRDetector.detect``)."""
    from pipeline.pixel.ppocr import db_boxes

    image = request.image
    sy, sx = image.shape[0] / prob.shape[0], image.shape[1] / prob.shape[1]
    thresh = detector.thresh if request.thresh is None else request.thresh
    box_thresh = detector.box_thresh if request.box_thresh is None else request.box_thresh
    return [
        TextBox(x0=max(math.floor(x0 * sx), 0), y0=max(math.floor(y0 * sy), 0),
                x1=min(math.ceil(x1 * sx), image.shape[1]),
                y1=min(math.ceil(y1 * sy), image.shape[0]), score=score)
        for x0, y0, x1, y1, score in db_boxes(
            prob, thresh=thresh, box_thresh=box_thresh, unclip_ratio=detector.unclip_ratio,
            min_size=detector.min_size, max_candidates=detector.max_candidates,
            dilate=detector.use_dilation)
    ]


def tag_many(tagger: Any, requests: list[tuple[str, float | None]]) -> list[tuple[PhiSpan, ...]]:
    """NER spans of several texts in one batched model call; per-request thresholds."""
    return list(tagger.tag_many([text for text, _ in requests],
                                thresholds=[threshold for _, threshold in requests]))


def recognize_many(recognizer: Any,
                   requests: list[tuple[np.ndarray, list[TextBox]]]) -> list[list[Recognition]]:
    """Read the boxes of several images, image by image (same padding, same results)."""
    return [recognizer.recognize(image, boxes) for image, boxes in requests]
