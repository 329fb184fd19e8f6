"""Serve-backed engines, and the choice between Veil Serve and in-process ONNX.

:func:`resolve_engines` returns :class:`~pipeline.pixel.stage.PixelEngines` that call
the Veil Serve deployments when the app runs on the Ray cluster this process is
connected to, and the in-process ONNX engines otherwise (embedded mode). The decision
is logged. A running app that is unhealthy, or an app asked for (``mode="serve"``) that
is not running, is an error: only "no Ray connection" and "no Veil app" fall back.

Ray is imported only when this process already imported it (a process that never
imported Ray cannot be connected to a cluster), so the embedded path costs nothing.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import numpy as np

from pipeline.errors import VeilError
from pipeline.pixel.cache import with_read_cache
from pipeline.pixel.stage import PixelEngines, engines_for
from pipeline.pixel.types import Recognition, TextBox
from pipeline.profile.schema import PixelSettings, TextSettings
from pipeline.registry import ModelRef
from pipeline.text.context import HeaderContext
from pipeline.text.spans import PhiSpan
from serving.config import DEFAULT_APP

logger = logging.getLogger(__name__)

Mode = Literal["auto", "serve", "embedded"]
#: Seconds a client waits for one deployment call before failing.
DEFAULT_TIMEOUT_S = 120.0


class ServeUnavailableError(VeilError, RuntimeError):
    """Veil Serve was required but is not running, or the running app is not healthy."""


class ServeTextDetector:
    """A :class:`~pipeline.pixel.types.TextDetector` calling the detector deployment."""

    def __init__(self, handle: Any, *, thresh: float | None = None,
                 box_thresh: float | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
                 ) -> None:
        self.handle = handle
        self.thresh, self.box_thresh, self.timeout_s = thresh, box_thresh, timeout_s
        self.model_ref: ModelRef | None = None  # set from the deployment (provenance)

    def detect(self, image: np.ndarray) -> list[TextBox]:
        """Text boxes of ``image``, computed by a detector replica."""
        boxes: list[TextBox] = self.handle.detect.remote(
            image, self.thresh, self.box_thresh).result(timeout_s=self.timeout_s)
        return boxes


class ServeTextRecognizer:
    """A :class:`~pipeline.pixel.types.TextRecognizer` calling the recognizer deployment."""

    def __init__(self, handle: Any, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.handle, self.timeout_s = handle, timeout_s
        self.model_ref: ModelRef | None = None  # set from the deployment (provenance)

    def recognize(self, image: np.ndarray, boxes: list[TextBox]) -> list[Recognition]:
        """One :class:`Recognition` per box, read by a recognizer replica."""
        if not boxes:
            return []
        texts: list[Recognition] = self.handle.recognize.remote(
            image, list(boxes)).result(timeout_s=self.timeout_s)
        return texts


class ServePhiTagger:
    """A :class:`~pipeline.text.tagger.PhiTagger` calling the NER deployment.

    The model reads the text alone; ``context`` (the header's PHI) is for the rule
    taggers, which keep running in process.
    """

    def __init__(self, handle: Any, *, threshold: float | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.handle, self.threshold, self.timeout_s = handle, threshold, timeout_s
        self.model_ref: ModelRef | None = None  # set from the deployment (provenance)

    def tag(self, text: str, context: HeaderContext) -> tuple[PhiSpan, ...]:
        """PHI spans of ``text`` found by an NER replica."""
        if not text:
            return ()
        spans: tuple[PhiSpan, ...] = self.handle.tag.remote(text, self.threshold).result(
            timeout_s=self.timeout_s)
        return tuple(spans)


def app_status(app_name: str = DEFAULT_APP) -> str | None:
    """Status of the Veil app on the connected cluster (``RUNNING``...), or None.

    None when Ray was never imported or not initialised, or no such app is deployed.
    """
    if "ray" not in sys.modules:
        return None
    import ray

    if not ray.is_initialized():
        return None
    from ray import serve

    app = serve.status().applications.get(app_name)
    return None if app is None else str(getattr(app.status, "value", app.status))


def _running(app_name: str, mode: Mode) -> bool:
    """Whether to use the app; raises when it must be used and cannot."""
    if mode not in ("auto", "serve", "embedded"):
        raise ValueError(f"unknown serving mode {mode!r}")
    if mode == "embedded":
        logger.info("engines: embedded (in-process ONNX), as requested")
        return False
    status = app_status(app_name)
    if status is None:
        if mode == "serve":
            raise ServeUnavailableError(
                f"Veil Serve app {app_name!r} is not running on a connected Ray cluster")
        logger.info("engines: embedded (in-process ONNX): no Veil Serve app %r on a "
                    "connected Ray cluster", app_name)
        return False
    if status != "RUNNING":
        raise ServeUnavailableError(
            f"Veil Serve app {app_name!r} is {status}; fix or delete it (serve.delete) "
            "to run embedded")
    logger.info("engines: Veil Serve app %r (Ray Serve deployments)", app_name)
    return True


def _handle(name: str, app_name: str) -> Any:
    from ray import serve

    try:
        return serve.get_deployment_handle(name, app_name=app_name)
    except Exception as exc:
        raise ServeUnavailableError(
            f"Veil Serve app {app_name!r} has no {name!r} deployment") from exc


def _with_ref(client: Any, handle: Any) -> Any:
    """Give a client the ``model_ref`` of the model its deployment serves, or the
    ``model_refs`` of the models a composite deployment serves (provenance)."""
    stats = handle.stats.remote().result(timeout_s=DEFAULT_TIMEOUT_S)
    refs = [ModelRef.from_dict(ref) for ref in stats.get("model_ref") or ()]
    if not refs:
        raise ServeUnavailableError(f"the {stats.get('kind')!r} deployment does not say "
                                    "which model it serves")
    if len(refs) == 1:
        client.model_ref = refs[0]
    else:
        client.model_refs = refs
    return client


def _check_detector(settings: PixelSettings, app_name: str) -> None:
    """The deployed detector must be the one the profile asks for."""
    wanted = settings.value("detector")
    described = _handle("VeilIngress", app_name).describe.remote().result(
        timeout_s=DEFAULT_TIMEOUT_S)
    deployed = described["detector"]["model"]["name"]
    if deployed != wanted:
        raise ServeUnavailableError(
            f"the profile asks for detector {wanted!r}, Veil Serve app {app_name!r} serves "
            f"{deployed!r}")


def resolve_engines(settings: PixelSettings, *, mode: Mode = "auto",
                    app_name: str = DEFAULT_APP) -> PixelEngines:
    """Pixel engines: Veil Serve when its app runs, in-process ONNX otherwise.

    Parameters
    ----------
    settings : PixelSettings
        The profile's pixel settings (thresholds and detector choice).
    mode : {"auto", "serve", "embedded"}
        ``auto`` uses the app when it is running; ``serve`` requires it; ``embedded``
        never uses it.
    app_name : str
        The Serve application name (``app_name`` of the serving configuration).

    Raises
    ------
    ServeUnavailableError
        The app is required and absent, is not healthy, or serves another detector.
    """
    if not _running(app_name, mode):
        return engines_for(settings)
    _check_detector(settings, app_name)
    detector, recognizer = _handle("detector", app_name), _handle("recognizer", app_name)
    return PixelEngines(
        _with_ref(ServeTextDetector(detector, thresh=settings.det_threshold,
                                    box_thresh=settings.box_threshold), detector),
        with_read_cache(_with_ref(ServeTextRecognizer(recognizer), recognizer),
                        int(settings.value("read_cache"))),  # repeats are not even sent
    )


def resolve_ner(settings: TextSettings, *, mode: Mode = "auto",
                app_name: str = DEFAULT_APP) -> Any:
    """The NER tagger of ``text.ner``: the ``ner`` deployment when the app runs, else
    in-process; None when the profile does not ask for it.

    Raises
    ------
    ServeUnavailableError
        The app runs without an ``ner`` deployment, or is required and absent.
    """
    if not settings.ner:
        return None
    if _running(app_name, mode):
        handle = _handle("ner", app_name)
        return _with_ref(ServePhiTagger(handle, threshold=settings.ner_threshold), handle)
    from pipeline.text.ner import NerTagger

    if settings.ner_threshold is None:
        return NerTagger()
    return NerTagger(threshold=settings.ner_threshold)


def engines_factory(compiled: Any) -> PixelEngines:
    """:data:`pipeline.distributed.worker.EnginesFactory` choosing Serve or in-process.

    Picklable (a module-level function); called inside each Ray worker, where Ray is
    initialised, so workers use the Veil Serve app when it runs on their cluster.
    """
    return resolve_engines(compiled.profile.pixel)
