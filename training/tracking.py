"""Log a finished training run to MLflow and register its bundle as a model version.

One run holds the parameters, the data seed and hash, the metrics (the history as step
metrics), the bundle folder as artifacts (``bundle/``: the ONNX file, ``metadata.json``,
the model card ``README.md``, the tokenizer...), the config file and tags (Veil version,
git commit, config sha256). The registered version's source is that artifact folder:
the exact bytes ``metadata.json`` pins, loadable offline with ONNX Runtime, no MLflow
model flavour (which would re-serialise the ONNX file and capture a Python environment).
Every new version gets the alias ``candidate``; ``production`` moves only when asked.

Store: ``$MLFLOW_TRACKING_URI`` when set (a team's server), else the embedded
``sqlite:///<state>/mlflow.db`` with artifacts in ``<state>/mlartifacts``. No server is
started; the :class:`~mlflow.tracking.MlflowClient` API is used throughout (no fluent,
process-global active run).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.errors import VeilError
from pipeline.registry import (
    FILES_TAG,
    RegistryError,
    configured_tracking_uri,
    default_tracking_uri,
    import_mlflow,
    safe_uri,
    sha256_file,
    verify_bundle,
)
from training.result import TrainResult

__all__ = [
    "CANDIDATE",
    "PRODUCTION",
    "TrackedRun",
    "TrackingError",
    "bundle_manifest",
    "log_result",
    "tracking_uri",
]

log = logging.getLogger(__name__)

CANDIDATE = "candidate"
PRODUCTION = "production"
ARTIFACT_DIR = "bundle"
_NOTE_MAX = 5000  # characters of the model card kept as the run's description


class TrackingError(VeilError, RuntimeError):
    """A training run could not be logged or registered."""


@dataclass(frozen=True)
class TrackedRun:
    """Where a training run was logged and what was registered."""

    run_id: str
    experiment: str
    tracking_uri: str
    artifact_uri: str
    model_name: str
    version: str | None
    aliases: tuple[str, ...]


def tracking_uri(explicit: str | None = None) -> str:
    """``explicit``, else ``$MLFLOW_TRACKING_URI``, else the embedded SQLite store."""
    return configured_tracking_uri(explicit) or default_tracking_uri()


def bundle_manifest(folder: Path) -> dict[str, str]:
    """sha256 of every file in a bundle folder, by relative POSIX path."""
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def log_result(
    result: TrainResult,
    *,
    config: Path | None = None,
    experiment: str | None = None,
    register: bool = True,
    promote: bool = False,
    tracking_uri: str | None = None,
) -> TrackedRun:
    """Log ``result`` as one MLflow run; register a model version unless ``register`` is off.

    Parameters
    ----------
    result
        The trainer's result; its bundle must pass its own sha256 check.
    config
        The training config file (logged, and its sha256 tagged).
    experiment
        Experiment name (default: the model name).
    register, promote
        Register a version (alias ``candidate``); also move ``production`` to it.

    Raises
    ------
    TrackingError
        When the bundle is inconsistent or MLflow refuses the run or the registration.
    """
    if promote and not register:
        raise TrackingError("promote needs a registered version (drop --no-register)")
    bundle = Path(result.bundle_dir)
    try:
        verify_bundle(bundle)
    except RegistryError as exc:
        raise TrackingError(f"the trained bundle is inconsistent: {exc}") from exc
    if not result.model_card.is_file():
        raise TrackingError(f"the trained bundle has no model card ({result.model_card.name})")
    manifest = bundle_manifest(bundle)
    uri = _tracking_uri(tracking_uri)
    import_mlflow()
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    name = experiment or result.model_name
    tags = _run_tags(result, config)
    try:
        experiment_id = _experiment(client, name, uri)
        run = client.create_run(experiment_id, tags=tags, run_name=f"{result.model_name}-train")
    except MlflowException as exc:
        raise TrackingError(f"cannot start a run at {safe_uri(uri)}: {exc.message}") from exc
    run_id = run.info.run_id
    try:
        _log_values(client, run_id, result)
        client.log_artifacts(run_id, str(bundle), ARTIFACT_DIR)
        if config is not None:
            client.log_artifact(run_id, str(config), "config")
    except (MlflowException, OSError) as exc:
        client.set_terminated(run_id, "FAILED")
        raise TrackingError(f"cannot log run {run_id} ({type(exc).__name__})") from exc
    client.set_terminated(run_id, "FINISHED")
    artifact_uri = f"{run.info.artifact_uri.rstrip('/')}/{ARTIFACT_DIR}"
    version: str | None = None
    aliases: tuple[str, ...] = ()
    if register:
        try:
            version, aliases = _register(client, result, run_id, artifact_uri, manifest, promote)
        except MlflowException as exc:
            raise TrackingError(
                f"run {run_id} logged but {result.model_name!r} not registered: {exc.message}"
            ) from exc
        client.set_tag(run_id, "veil.registered_version", version)
    log.info("run %s logged to %s", run_id, safe_uri(uri))
    return TrackedRun(run_id, name, uri, artifact_uri, result.model_name, version, aliases)


def _tracking_uri(explicit: str | None) -> str:
    """The store to log to; the embedded store's folder is created."""
    uri = tracking_uri(explicit)
    local = _sqlite_path(uri)
    if local is not None:
        local.parent.mkdir(parents=True, exist_ok=True)
    return uri


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI; None for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).expanduser()


def _experiment(client: Any, name: str, uri: str) -> str:
    """The experiment's id, created if new (artifacts beside a local SQLite database)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    local = _sqlite_path(uri)
    location = None
    if local is not None:
        location = (local.resolve().parent / "mlartifacts" / name).as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def _run_tags(result: TrainResult, config: Path | None) -> dict[str, str]:
    """Tags of the run: versions, provenance, data identity, model card."""
    tags = {
        "veil.version": __version__,
        "veil.model_name": result.model_name,
        "veil.data_seed": str(result.data_seed),
        "veil.data_hash": result.data_hash,
    }
    commit = _git_commit()
    if commit is not None:
        tags["veil.git_commit"], tags["veil.git_dirty"] = commit
    if config is not None:
        tags["veil.config_sha256"] = sha256_file(config)
        tags["veil.config_file"] = config.name
    card = result.model_card.read_text(encoding="utf-8")
    tags["mlflow.note.content"] = card[:_NOTE_MAX]
    return tags


def _git_commit() -> tuple[str, str] | None:
    """(commit, dirty) of the checkout Veil runs from; None outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read only: no index refresh
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True, env=env)
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True, env=env)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip(), str(bool(status.stdout.strip())).lower()


def flatten(params: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Nested parameters as ``a.b`` keys and string values (lists as JSON)."""
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten(value, f"{name}.")
        elif isinstance(value, (list, tuple)):
            yield name, json.dumps(value, default=str)
        else:
            yield name, str(value)


def _log_values(client: Any, run_id: str, result: TrainResult) -> None:
    """Parameters (with the data seed and hash), step metrics and final metrics."""
    from mlflow.entities import Metric, Param

    params = dict(flatten(result.params))
    params["data_seed"] = str(result.data_seed)
    params["data_hash"] = result.data_hash
    now = int(time.time() * 1000)
    metrics: list[Any] = []
    last = 0
    for index, entry in enumerate(result.history):
        step = int(entry.get("step", entry.get("epoch", index)))
        last = max(last, step)
        metrics += [Metric(key, float(value), now, step)
                    for key, value in entry.items() if key not in ("step", "epoch")]
    metrics += [Metric(key, float(value), now, last) for key, value in result.metrics.items()]
    for chunk in _chunks([Param(k, v) for k, v in params.items()], 100):
        client.log_batch(run_id, params=chunk)
    for chunk in _chunks(metrics, 1000):
        client.log_batch(run_id, metrics=chunk)


def _chunks(items: Sequence[Any], size: int) -> Iterable[list[Any]]:
    """``items`` in lists of at most ``size``."""
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def _register(
    client: Any,
    result: TrainResult,
    run_id: str,
    source: str,
    manifest: dict[str, str],
    promote: bool,
) -> tuple[str, tuple[str, ...]]:
    """Create the model version (aliases ``candidate`` and, if ``promote``, ``production``)."""
    from mlflow.exceptions import MlflowException

    name = result.model_name
    try:
        client.create_registered_model(name, description=f"Veil model {name} (ONNX bundle)")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    tags = {
        FILES_TAG: json.dumps(manifest, sort_keys=True),
        "veil.data_hash": result.data_hash,
        "veil.model_sha256": manifest.get("model.onnx", ""),
    }
    version = client.create_model_version(name, source, run_id=run_id, tags=tags)
    aliases = (CANDIDATE, PRODUCTION) if promote else (CANDIDATE,)
    for alias in aliases:
        client.set_registered_model_alias(name, alias, version.version)
    return str(version.version), aliases


def log_profile(
    ref: str,
    options: Sequence[str] = (),
    *,
    experiment: str = "veil-profiles",
    tracking_uri: str | None = None,
) -> tuple[str, str]:
    """Log a resolved profile (YAML and content hash) as a run; return (run id, hash)."""
    from pipeline.profile import load_profile

    profile = load_profile(ref, options, allow_disabled=True)
    uri = _tracking_uri(tracking_uri)
    import_mlflow()
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.create_run(
            _experiment(client, experiment, uri),
            tags={"veil.version": __version__, "veil.profile": profile.name,
                  "veil.profile_content_hash": profile.content_hash},
            run_name=f"profile-{profile.name}",
        )
        client.log_batch(run.info.run_id, params=[
            _param("name", profile.name), _param("content_hash", profile.content_hash),
            _param("options", json.dumps(list(profile.options)))])
        client.log_text(run.info.run_id, profile.to_yaml(), f"profile/{profile.name}.yaml")
        client.set_terminated(run.info.run_id, "FINISHED")
    except MlflowException as exc:
        raise TrackingError(f"cannot log the profile at {safe_uri(uri)}: {exc.message}") from exc
    return run.info.run_id, profile.content_hash


def _param(key: str, value: str) -> Any:
    """An MLflow parameter."""
    from mlflow.entities import Param

    return Param(key, value)

