"""Where a model bundle comes from: the MLflow model registry, or the files shipped in ``models/``.

A bundle is a folder like ``models/<name>/``: ``model.onnx`` (or, for third-party weights, a
file in another package named by ``metadata.json``'s ``source``), ``metadata.json`` pinning
the sha256 of its files, and ``README.md`` (the model card). :func:`resolve_bundle` returns a
:class:`ModelRef` for it: the local folder, the registered name and version, where it came
from and the model's sha256, which jobs record in their report (provenance).

When a registry is configured (an explicit ``tracking_uri`` or ``$MLFLOW_TRACKING_URI``) the
bundles we train (``phi-ner`` -> ``veil-phi-ner``, ``text-detector`` -> ``veil-text-detector``)
come from the registry, by alias (``production`` unless told otherwise); a registry without
that alias is an error, never a silent fall back to the shipped files. Third-party bundles
(PP-OCRv4) are never registered and always come from the shipped files.

MLflow is imported lazily (:func:`import_mlflow`): the core imports without it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from models import MODEL_DIR
from pipeline.errors import VeilError

if TYPE_CHECKING:
    from pipeline.profile import Profile

__all__ = [
    "DEFAULT_ALIAS",
    "FILES_TAG",
    "REGISTERED_NAMES",
    "ModelRef",
    "RegistryError",
    "bundle_digests",
    "configured_tracking_uri",
    "default_tracking_uri",
    "engine_refs",
    "folder_ref",
    "import_mlflow",
    "profile_models",
    "registered_name",
    "resolve_bundle",
    "safe_uri",
    "sha256_file",
    "state_dir",
    "verify_bundle",
]

log = logging.getLogger(__name__)

#: Bundle folder name -> registered model name (the models we train and register).
REGISTERED_NAMES = {"phi-ner": "veil-phi-ner", "text-detector": "veil-text-detector"}
#: Alias the service loads when none is given (``$VEIL_MODEL_ALIAS`` overrides it).
DEFAULT_ALIAS = "production"
ALIAS_ENV = "VEIL_MODEL_ALIAS"
TRACKING_ENV = "MLFLOW_TRACKING_URI"
HOME_ENV = "VEIL_HOME"
#: Model version tag holding the sha256 of every bundle file, set at registration.
FILES_TAG = "veil.files_sha256"
#: Bundles the pixel stage loads per ``pixel.detector`` setting, then the recognizer's.
DETECTOR_BUNDLES = {"ppocr-v4": ("ppocr-v4-det",), "veil-text-detector": ("text-detector",),
                    "ppocr-v4+veil-text-detector": ("ppocr-v4-det", "text-detector")}
RECOGNIZER_BUNDLE = "ppocr-v4-rec"
NER_BUNDLE = "phi-ner"


class RegistryError(VeilError, RuntimeError):
    """A bundle cannot be resolved: missing, not registered, or failing its sha256 check."""


@dataclass(frozen=True)
class ModelRef:
    """A resolved model bundle.

    Attributes
    ----------
    path : Path
        Local bundle folder (``models/<bundle>`` or the registry cache).
    name : str
        Registered name (``veil-phi-ner``...) or, for unregistered bundles, the folder name.
    version : str
        Registry version number, or the ``version`` of the shipped ``metadata.json``.
    source : str
        ``registry``, ``shipped``, or ``folder`` (a bundle loaded from a folder given by
        path, such as a training output).
    sha256 : str
        sha256 of the model file (verified).
    alias : str or None
        The registry alias it was resolved by.
    """

    path: Path
    name: str
    version: str
    source: str
    sha256: str
    alias: str | None = None

    @property
    def metadata(self) -> dict[str, Any]:
        """The bundle's ``metadata.json``."""
        return _read_metadata(self.path)

    def to_dict(self) -> dict[str, str | None]:
        """Plain values (for a Serve reply or a report)."""
        return {"path": str(self.path), "name": self.name, "version": self.version,
                "source": self.source, "sha256": self.sha256, "alias": self.alias}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelRef:
        """The inverse of :meth:`to_dict`."""
        return cls(Path(str(data["path"])), str(data["name"]), str(data["version"]),
                   str(data["source"]), str(data["sha256"]), data.get("alias"))


def state_dir() -> Path:
    """Veil's state folder: ``$VEIL_HOME`` or ``~/.veil``."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".veil").expanduser()


def default_tracking_uri() -> str:
    """The embedded tracking store: ``sqlite:///<state>/mlflow.db``."""
    return f"sqlite:///{(state_dir() / 'mlflow.db').resolve()}"


def configured_tracking_uri(tracking_uri: str | None = None) -> str | None:
    """The registry to load models from: ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``."""
    return tracking_uri or os.environ.get(TRACKING_ENV) or None


def safe_uri(uri: str) -> str:
    """``uri`` with any user and password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def import_mlflow() -> ModuleType:
    """Import MLflow with its telemetry off, its log quiet and no progress bars.

    Every process that talks to MLflow goes through here (Ray workers included), so the
    settings reach all of them. Telemetry is forced off; the log level and progress bar
    only default (``MLFLOW_LOGGING_LEVEL`` and ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``
    set by the user win).
    """
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    imported_before = "mlflow" in sys.modules
    try:
        import mlflow
    except ModuleNotFoundError as exc:
        raise RegistryError(
            "MLflow is not installed: pip install 'veil[train]' (or 'veil[serve]')"
        ) from exc
    if imported_before:  # imported by another library first: apply the settings now
        logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())
        telemetry = sys.modules.get("mlflow.telemetry")
        reset = getattr(telemetry, "set_telemetry_client", None)
        if reset is not None:
            reset()
    return mlflow


def registered_name(bundle: str) -> str | None:
    """Registered model name of a bundle folder (or of a registered name); None if none."""
    if bundle in REGISTERED_NAMES.values():
        return bundle
    return REGISTERED_NAMES.get(bundle)


def _bundle_folder(bundle: str) -> str:
    """Bundle folder name of a folder or registered name."""
    for folder, name in REGISTERED_NAMES.items():
        if bundle == name:
            return folder
    return bundle


def sha256_file(path: Path) -> str:
    """sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_digests(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The sha256 each bundle file must have, as ``metadata.json`` declares them.

    Accepted forms: ``"files": {"model.onnx": "<hex>" | {"sha256": "<hex>"}}``,
    ``"sha256": {"model.onnx": "<hex>"}`` or ``"sha256": "<hex>"`` (the model file).
    """
    found: dict[str, str] = {}
    for key in ("files", "sha256"):
        value = metadata.get(key)
        if isinstance(value, str):
            found["model.onnx"] = value
        elif isinstance(value, Mapping):
            for name, entry in value.items():
                digest = entry.get("sha256") if isinstance(entry, Mapping) else entry
                if isinstance(digest, str):
                    found[str(name)] = digest.lower()
    return found


def _read_metadata(folder: Path) -> dict[str, Any]:
    """``metadata.json`` of a bundle folder."""
    try:
        data = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryError(
            f"bundle {folder.name!r} has no readable metadata.json ({type(exc).__name__})"
        ) from exc
    if not isinstance(data, dict):
        raise RegistryError(f"bundle {folder.name!r}: metadata.json is not an object")
    return data


def verify_bundle(folder: Path, expected: Mapping[str, str] | None = None) -> str:
    """Check every file ``metadata.json`` (and ``expected``) pins; return the model's sha256.

    Raises
    ------
    RegistryError
        When a pinned file is missing or its digest differs, or nothing pins the model.
    """
    metadata = _read_metadata(folder)
    pinned = bundle_digests(metadata)
    checks = [(folder / name, digest, "metadata.json") for name, digest in pinned.items()]
    checks += [(folder / name, digest, "the registry") for name, digest in (expected or {}).items()]
    source = metadata.get("source")
    if isinstance(source, Mapping) and {"package", "file", "sha256"} <= source.keys():
        checks.append((_source_file(folder, source), str(source["sha256"]), "metadata.json"))
    elif "model.onnx" not in pinned:
        raise RegistryError(f"bundle {folder.name!r}: metadata.json pins no sha256 of model.onnx")
    actual: dict[Path, str] = {}
    for path, digest, who in checks:
        if not path.is_file():
            raise RegistryError(f"bundle {folder.name!r}: {path.name} is missing")
        actual[path] = actual.get(path) or sha256_file(path)
        if actual[path] != digest:
            raise RegistryError(
                f"bundle {folder.name!r}: sha256 of {path.name} is {actual[path]}, "
                f"{who} expects {digest}"
            )
    model = checks[-1][0] if "model.onnx" not in pinned else folder / "model.onnx"
    return actual[model]


def _source_file(folder: Path, source: Mapping[str, Any]) -> Path:
    """The model file ``source`` names: in the bundle itself or inside another package.

    ``{"package": "models", "file": "<bundle>/model.onnx"}`` is the bundle's own file,
    wherever the folder lies (``models/``, a training output, the registry cache).
    """
    parts = Path(str(source["file"])).parts
    if source["package"] == "models" and len(parts) > 1:
        return folder.joinpath(*parts[1:])
    bundle = folder.name
    try:
        ref = resources.files(str(source["package"])).joinpath(str(source["file"]))
        with resources.as_file(ref) as path:
            return Path(path)
    except (ModuleNotFoundError, OSError) as exc:
        raise RegistryError(
            f"bundle {bundle!r}: package {source['package']!r} is not installed "
            f"({type(exc).__name__})"
        ) from exc


def resolve_bundle(
    bundle: str, *, alias: str | None = None, tracking_uri: str | None = None
) -> ModelRef:
    """Resolve a bundle to verified local files.

    Parameters
    ----------
    bundle
        Folder name (``phi-ner``, ``text-detector``, ``ppocr-v4-det``...) or registered name.
    alias
        Registry alias (default ``$VEIL_MODEL_ALIAS``, else ``production``).
    tracking_uri
        Registry to use; default ``$MLFLOW_TRACKING_URI``. Without either, the shipped files.

    Raises
    ------
    RegistryError
        When the bundle is unknown, the configured registry has no version under the
        alias, or a file fails its sha256 check.
    """
    name = registered_name(bundle)
    uri = configured_tracking_uri(tracking_uri)
    if name is not None and uri is not None:
        return _from_registry(name, alias or os.environ.get(ALIAS_ENV) or DEFAULT_ALIAS, uri)
    folder = MODEL_DIR / _bundle_folder(bundle)
    if not folder.is_dir():
        raise RegistryError(
            f"no shipped model bundle {bundle!r} in {MODEL_DIR}"
            + ("" if name is None else f" and no registry configured (${TRACKING_ENV})")
        )
    sha = verify_bundle(folder)
    version = str(_read_metadata(folder).get("version", "unversioned"))
    return ModelRef(folder, name or folder.name, version, "shipped", sha)


def folder_ref(folder: Path) -> ModelRef:
    """A bundle given as a folder (a training output, a copy), verified like a shipped one.

    Its name is the registered name of its ``metadata.json`` ``name`` (or of the folder);
    its source is ``shipped`` when it is the shipped folder itself, else ``folder``.

    Raises
    ------
    RegistryError
        When the folder has no readable metadata or a file fails its sha256 check.
    """
    folder = Path(folder)
    sha = verify_bundle(folder)
    metadata = _read_metadata(folder)
    name = str(metadata.get("name") or folder.name)
    shipped = folder.resolve() == (MODEL_DIR / _bundle_folder(name)).resolve()
    return ModelRef(folder, registered_name(name) or name,
                    str(metadata.get("version", "unversioned")),
                    "shipped" if shipped else "folder", sha)


def engine_refs(engine: object) -> list[ModelRef]:
    """The models an engine runs, as it says itself (its ``model_ref``).

    A composite (an object with ``taggers``, such as
    :class:`~pipeline.text.tagger.CompositeTagger`, or ``members``, such as
    :class:`~pipeline.pixel.ensemble.UnionDetector`) runs the models of its members, in
    order, without repeats; so does a remote client of a composite (``model_refs``). An
    engine with none of these runs no model (a rule-based tagger) or does not say which
    (a remote client): the caller decides whether that is an error.
    """
    ref = getattr(engine, "model_ref", None)
    if isinstance(ref, ModelRef):
        return [ref]
    listed = getattr(engine, "model_refs", None)
    if listed and all(isinstance(r, ModelRef) for r in listed):
        return list(dict.fromkeys(listed))
    out: list[ModelRef] = []
    members = getattr(engine, "taggers", ()) or getattr(engine, "members", ()) or ()
    for member in members:
        out.extend(r for r in engine_refs(member) if r not in out)
    return out


def _from_registry(name: str, alias: str, uri: str) -> ModelRef:
    """Fetch the aliased version of ``name`` into the local cache and verify it."""
    mlflow = import_mlflow()
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise RegistryError(
            f"the model registry at {safe_uri(uri)} has no version of {name!r} with alias "
            f"{alias!r} ({exc.error_code}); register one with `veil train` (--promote for "
            f"production) or unset ${TRACKING_ENV} to use the shipped files"
        ) from exc
    expected = _files_tag(version.tags, name)
    key = hashlib.sha256(uri.encode("utf-8")).hexdigest()[:16]
    cache = state_dir() / "registry-cache" / key / name / str(version.version)
    if cache.is_dir():
        try:
            sha = verify_bundle(cache, expected)
        except RegistryError as exc:
            log.warning("cached %s v%s failed its check (%s); fetching again",
                        name, version.version, exc)
            shutil.rmtree(cache)
        else:
            return ModelRef(cache, name, str(version.version), "registry", sha, alias)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent, prefix=".fetch-") as tmp:
        try:
            fetched = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=version.source, dst_path=tmp, tracking_uri=uri))
        except (MlflowException, OSError) as exc:
            raise RegistryError(
                f"cannot fetch {name!r} version {version.version} from its artifact store "
                f"({type(exc).__name__})"
            ) from exc
        sha = verify_bundle(fetched, expected)
        try:
            os.replace(fetched, cache)
        except OSError:  # another process put (and verified) the same version there first
            if not cache.is_dir():
                raise
    log.info("model %s v%s (alias %s) fetched from the registry", name, version.version, alias)
    return ModelRef(cache, name, str(version.version), "registry", sha, alias)


def _files_tag(tags: Mapping[str, str], name: str) -> dict[str, str]:
    """The per-file sha256 pinned in the model version's tag at registration."""
    raw = tags.get(FILES_TAG)
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise RegistryError(f"{name!r}: model version tag {FILES_TAG} is not JSON") from exc
    return {str(k): str(v) for k, v in data.items()}


def profile_models(
    profile: Profile, *, alias: str | None = None, tracking_uri: str | None = None
) -> list[ModelRef]:
    """The models a job under ``profile`` would load, resolved from the profile alone.

    The job report reads them from the engines instead (:func:`engine_refs`,
    :func:`pipeline.job.models_used`); this is for tools without engines. The pixel
    stage loads a detector (``pixel.detector``) and the PP-OCRv4 recognizer when
    ``clean-pixel-data`` is on; the text stage loads the NER model when ``text.ner`` is on.
    """
    bundles: list[str] = []
    if "clean-pixel-data" in profile.options:
        bundles += [*DETECTOR_BUNDLES[profile.pixel.value("detector")], RECOGNIZER_BUNDLE]
    if profile.text is not None and profile.text.ner:
        bundles.append(NER_BUNDLE)
    return [resolve_bundle(b, alias=alias, tracking_uri=tracking_uri) for b in bundles]
