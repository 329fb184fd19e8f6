"""Ray Serve deployments of the text detector, the recognizer and the PHI NER model.

:func:`build_app` wraps plain server classes with ``serve.deployment(...)`` and
``.options(...)`` from a :class:`~serving.config.ServingConfig` and binds them under one
ingress; the engines themselves (:mod:`serving.engines`) know nothing of Ray. Each
server batches concurrent requests with ``@serve.batch`` (the size and wait come from
the configuration), runs inference off the event loop, counts its batch sizes and
answers Serve's ``check_health``. Clients call the deployments by handle
(:mod:`serving.client`); no HTTP proxy is needed.

Importing this module imports Ray: only :mod:`serving.client` (lazily) and ``veil serve``
do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any, cast

import numpy as np
from ray import serve
from ray.serve import Application, Deployment
from ray.serve.handle import DeploymentHandle

from pipeline import accel
from pipeline.errors import VeilError
from pipeline.pixel.types import Recognition, TextBox
from pipeline.registry import engine_refs
from pipeline.text.spans import PhiSpan
from serving import engines
from serving.config import DeploymentSpec, ServingConfig

logger = logging.getLogger(__name__)

#: Deployment names inside the app (clients find them by these names).
DETECTOR, RECOGNIZER, NER, INGRESS = "detector", "recognizer", "ner", "VeilIngress"


class ServerError(VeilError, RuntimeError):
    """A deployment's engine failed; the replica reports itself unhealthy."""


class _Server:
    """What every model server shares: its spec, batch-size counter and health."""

    kind = ""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = DeploymentSpec.model_validate(spec)
        self.batch_sizes: Counter[int] = Counter()
        self.failures = 0
        self.busy_s = 0.0
        self.engine: Any = None

    def _configure(self, batched: Any) -> None:
        batched.set_max_batch_size(self.spec.max_batch_size)
        batched.set_batch_wait_timeout_s(self.spec.batch_wait_timeout_s)

    async def _run(self, fn: Any, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return await asyncio.to_thread(fn, *args)
        except Exception as exc:  # counted, then raised to the caller (message not logged)
            self.failures += 1
            logger.error("%s inference failed (%s)", self.kind, type(exc).__name__)
            raise
        finally:
            self.busy_s += time.perf_counter() - start

    def check_health(self) -> None:
        """Called by Serve: raise when the engine is gone or its session is unusable."""
        if self.engine is None:
            raise ServerError(f"{self.kind}: engine not loaded")
        if not engines.providers_of(self.engine):
            raise ServerError(f"{self.kind}: no ONNX Runtime session")

    def stats(self) -> dict[str, Any]:
        """Batch sizes seen, seconds spent in inference, failures, model and providers."""
        return {
            "kind": self.kind,
            "model": self.spec.model.model_dump(),
            "model_ref": [ref.to_dict() for ref in engine_refs(self.engine)],
            "providers": engines.providers_of(self.engine),
            "array_module": accel.array_module(self.spec.device).__name__,
            "batch_sizes": dict(self.batch_sizes),
            "failures": self.failures,
            "busy_s": self.busy_s,
        }


class DetectorServer(_Server):
    """Serves :meth:`detect` (one image per request, batched across requests)."""

    kind = DETECTOR

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.engine = engines.build_detector(self.spec)
        self.batcher = engines.BatchDetector(self.engine, self.spec.device,
                                             self.spec.intra_op_num_threads)
        self._configure(self.detect_batch)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def detect_batch(
        self, requests: list[engines.DetectRequest]
    ) -> list[list[TextBox]]:
        """One inference over the batch of queued requests."""
        self.batch_sizes[len(requests)] += 1
        result: list[list[TextBox]] = await self._run(self.batcher.detect_many, requests)
        return result

    async def detect(self, image: np.ndarray, thresh: float | None = None,
                     box_thresh: float | None = None) -> list[TextBox]:
        """Text boxes of ``image``; DB thresholds default to the model's."""
        boxes: list[TextBox] = await self.detect_batch(
            engines.DetectRequest(image, thresh, box_thresh))
        return boxes


class RecognizerServer(_Server):
    """Serves :meth:`recognize` (one image and its boxes per request)."""

    kind = RECOGNIZER

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.engine = engines.build_recognizer(self.spec)
        self._configure(self.recognize_batch)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def recognize_batch(
        self, requests: list[tuple[np.ndarray, list[TextBox]]]
    ) -> list[list[Recognition]]:
        """Read the boxes of every queued request."""
        self.batch_sizes[len(requests)] += 1
        result: list[list[Recognition]] = await self._run(engines.recognize_many,
                                                          self.engine, requests)
        return result

    async def recognize(self, image: np.ndarray, boxes: list[TextBox]) -> list[Recognition]:
        """One :class:`Recognition` per box, in order."""
        texts: list[Recognition] = await self.recognize_batch((image, list(boxes)))
        return texts


class NerServer(_Server):
    """Serves :meth:`tag` (one text per request) with the PHI NER model."""

    kind = NER

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.engine = engines.build_ner(self.spec)
        self._configure(self.tag_batch)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def tag_batch(
        self, requests: list[tuple[str, float | None]]
    ) -> list[tuple[PhiSpan, ...]]:
        """Tag every queued text in one batched model call."""
        self.batch_sizes[len(requests)] += 1
        result: list[tuple[PhiSpan, ...]] = await self._run(engines.tag_many, self.engine,
                                                            requests)
        return result

    async def tag(self, text: str, threshold: float | None = None) -> tuple[PhiSpan, ...]:
        """PHI spans the model finds in ``text`` (never logged); threshold per request."""
        spans: tuple[PhiSpan, ...] = await self.tag_batch((text, threshold))
        return spans


class VeilIngress:
    """The app's ingress: describes the app and gathers its deployments' health."""

    def __init__(self, config: dict[str, Any], **handles: DeploymentHandle) -> None:
        self.config = ServingConfig.model_validate(config)
        self.handles = handles

    async def health(self) -> dict[str, Any]:
        """Every deployment's stats (raises when one cannot answer)."""
        stats = {kind: handle.stats.remote() for kind, handle in self.handles.items()}
        return {kind: await response for kind, response in stats.items()}

    def describe(self) -> dict[str, Any]:
        """The configuration the app was built from (models, batching, resources)."""
        return self.config.model_dump()


SERVERS: dict[str, type[_Server]] = {
    DETECTOR: DetectorServer, RECOGNIZER: RecognizerServer, NER: NerServer,
}


def deployment_options(spec: DeploymentSpec) -> dict[str, Any]:
    """``serve.deployment`` options of one spec (replicas, resources, health checks)."""
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus},
        "max_ongoing_requests": spec.ongoing_requests,
        "health_check_period_s": spec.health_check_period_s,
        "health_check_timeout_s": spec.health_check_timeout_s,
    }
    if spec.autoscaling is not None:
        options["autoscaling_config"] = spec.autoscaling.model_dump()
    else:
        options["num_replicas"] = spec.num_replicas or 1
    return options


def build_app(config: ServingConfig) -> Application:
    """The Veil Serve application of ``config``: model deployments under one ingress."""
    bound = {}
    for kind, spec in config.deployments().items():
        deployment = cast(Deployment, serve.deployment(SERVERS[kind], name=kind))
        bound[kind] = deployment.options(**deployment_options(spec)).bind(spec.model_dump())
        logger.info("deployment %s: model %s (%s), %s", kind, spec.model.name,
                    spec.model.source, deployment_options(spec))
    ingress = cast(Deployment, serve.deployment(VeilIngress, name=INGRESS)).options(
        num_replicas=1, ray_actor_options={"num_cpus": 0})
    return ingress.bind(config.model_dump(), **bound)


def deploy(config: ServingConfig, *, blocking: bool = False) -> DeploymentHandle:
    """Start Serve without an HTTP proxy (handles only) and run the app of ``config``."""
    serve.start(proxy_location="Disabled")
    return serve.run(build_app(config), name=config.app_name, route_prefix=None,
                     blocking=blocking)
