"""The serving configuration file: one block per deployment (detector, recognizer, NER).

Validated strictly (unknown keys are errors) with pydantic; :func:`load_config` reports
every problem with its place in the file. See ``serving/config.yaml`` for an example.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import VeilError

#: Models each deployment can serve (``model.name``).
MODELS: dict[str, tuple[str, ...]] = {
    "detector": ("ppocr-v4", "veil-text-detector", "ppocr-v4+veil-text-detector"),
    "recognizer": ("ppocr-v4",),
    "ner": ("phi-ner",),
}
DEFAULT_APP = "veil"


class ServingConfigError(VeilError, ValueError):
    """The serving configuration file is unreadable or invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSource(_Strict):
    """Where a deployment's model comes from: the files shipped with Veil or the registry.

    ``registry`` resolves ``alias`` (e.g. ``production``) of the registered model
    ``name`` in the MLflow registry at ``tracking_uri`` (default ``$MLFLOW_TRACKING_URI``
    of the replica); without a registry that is an error, not the shipped files.
    """

    name: str
    source: Literal["shipped", "registry"] = "shipped"
    alias: str | None = Field(default=None, min_length=1)
    tracking_uri: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _alias(self) -> ModelSource:
        if self.source == "registry" and self.alias is None:
            raise ValueError("source 'registry' needs an 'alias' (e.g. champion)")
        if self.source == "shipped" and self.alias is not None:
            raise ValueError("'alias' is only meaningful with source 'registry'")
        if self.source == "shipped" and self.tracking_uri is not None:
            raise ValueError("'tracking_uri' is only meaningful with source 'registry'")
        return self


class Autoscaling(_Strict):
    """Ray Serve autoscaling bounds and target."""

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(ge=1)
    target_ongoing_requests: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below min_replicas "
                             f"({self.min_replicas})")
        return self


class DeploymentSpec(_Strict):
    """One deployment: its model, replicas, resources and dynamic batching."""

    enabled: bool = True
    model: ModelSource
    num_replicas: int | None = Field(default=None, ge=1)
    autoscaling: Autoscaling | None = None
    num_cpus: float = Field(default=1.0, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_batch_size: int = Field(default=8, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(default=0.005, ge=0, le=10)
    max_ongoing_requests: int | None = Field(default=None, ge=1)
    intra_op_num_threads: int | None = Field(default=None, ge=1)
    health_check_period_s: float = Field(default=10.0, gt=0)
    health_check_timeout_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> DeploymentSpec:
        if self.num_replicas is not None and self.autoscaling is not None:
            raise ValueError("give either num_replicas or autoscaling, not both")
        if self.num_gpus > 1 and not float(self.num_gpus).is_integer():
            raise ValueError(f"num_gpus {self.num_gpus}: above 1 it must be a whole number "
                             "(fractions share one GPU)")
        if self.num_gpus > 0 and self.device == "cpu":
            raise ValueError("num_gpus > 0 with device 'cpu' reserves a GPU it never uses")
        if self.max_ongoing_requests is not None and \
                self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(f"max_ongoing_requests ({self.max_ongoing_requests}) is below "
                             f"max_batch_size ({self.max_batch_size}): batches could never fill")
        return self

    @property
    def ongoing_requests(self) -> int:
        """Requests a replica accepts at once: enough for two full batches."""
        return self.max_ongoing_requests or max(2 * self.max_batch_size, 8)


class RayConnection(_Strict):
    """How ``veil serve`` reaches Ray: an existing cluster or a local one it starts."""

    address: str | None = None
    num_cpus: int | None = Field(default=None, ge=1)
    num_gpus: int | None = Field(default=None, ge=0)
    isolate_network: bool = False


class ServingConfig(_Strict):
    """The whole serving configuration."""

    schema_version: Literal[1] = 1
    app_name: str = Field(default=DEFAULT_APP, min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    ray: RayConnection = RayConnection()
    detector: DeploymentSpec
    recognizer: DeploymentSpec
    ner: DeploymentSpec | None = None

    @model_validator(mode="after")
    def _models(self) -> ServingConfig:
        for kind in MODELS:
            spec = getattr(self, kind)
            if spec is not None and spec.model.name not in MODELS[kind]:
                raise ValueError(f"{kind}: model {spec.model.name!r} is not one of "
                                 f"{MODELS[kind]}")
        if not (self.detector.enabled and self.recognizer.enabled):
            raise ValueError("the detector and recognizer deployments cannot be disabled")
        return self

    def deployments(self) -> dict[str, DeploymentSpec]:
        """The enabled deployments by kind."""
        out = {"detector": self.detector, "recognizer": self.recognizer}
        if self.ner is not None and self.ner.enabled:
            out["ner"] = self.ner
        return out


def _describe(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return f"{source}: invalid serving configuration\n" + "\n".join(lines)


def parse_config(data: Any, source: str = "<config>") -> ServingConfig:
    """Validate a mapping (YAML already parsed) into a :class:`ServingConfig`.

    Raises
    ------
    ServingConfigError
        With one line per problem: its dotted location and what is wrong.
    """
    if not isinstance(data, dict):
        raise ServingConfigError(f"{source}: the serving configuration must be a mapping")
    try:
        return ServingConfig.model_validate(data)
    except ValidationError as exc:
        raise ServingConfigError(_describe(exc, source)) from exc


def load_config(path: str | Path) -> ServingConfig:
    """Read and validate a serving configuration file (YAML)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ServingConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ServingConfigError(f"{path}:{where} is not valid YAML") from exc
    return parse_config(data, str(path))


def example_path() -> Path:
    """The example configuration shipped next to this module."""
    return Path(__file__).with_name("config.yaml")
