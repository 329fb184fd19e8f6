"""Model bundles by registry alias or from the shipped files, sha256-checked; job provenance."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import compiled
from factories import make_ct
from hypothesis import given
from hypothesis import strategies as st

from models import MODEL_DIR
from pipeline.job import run_job
from pipeline.keys import Keyring
from pipeline.registry import (
    RegistryError,
    registered_name,
    resolve_bundle,
    safe_uri,
    verify_bundle,
)
from training.result import TrainResult

SHIPPED = sorted(p.parent.name for p in MODEL_DIR.glob("*/metadata.json"))


def onnx_bytes(offset: float) -> bytes:
    """A real ONNX model, ``y = x + offset`` on a float vector."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor("c", TensorProto.FLOAT, [1], [offset])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def write_bundle(folder: Path, offset: float, *, name: str = "veil-phi-ner") -> TrainResult:
    """A bundle laid out like a trainer's (NER-style sha256 map) and its TrainResult."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(onnx_bytes(offset))
    (folder / "tokenizer.json").write_text(json.dumps({"offset": offset}), encoding="utf-8")
    digests = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest()
               for n in ("model.onnx", "tokenizer.json")}
    metadata = {"name": folder.name, "version": f"0.{int(offset)}", "sha256": digests}
    (folder / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    (folder / "README.md").write_text(f"# {name}\n\nTest model card.\n", encoding="utf-8")
    history = [{"step": s, "loss": 1.0 / (s + 1)} for s in range(3)]
    return TrainResult(name, folder, {"lr": 0.01, "model": {"layers": 2, "dims": [4, 8]}},
                       {"val_f1": 0.5 + offset / 100}, 7, f"{int(offset):064x}", history)


@pytest.fixture
def veil_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private state folder and no tracking server from the environment."""
    home = tmp_path / "home"
    monkeypatch.setenv("VEIL_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("VEIL_MODEL_ALIAS", raising=False)
    return home


def new_store(factory: pytest.TempPathFactory, name: str) -> str:
    """URI of a fresh SQLite tracking store (a copy of one migrated once per session)."""
    from pipeline.registry import import_mlflow

    template = factory.getbasetemp() / "mlflow-template.db"
    if not template.exists():
        import_mlflow()
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()
    folder = factory.mktemp(name)
    shutil.copyfile(template, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[TrainResult]]]:
    """A SQLite registry with veil-phi-ner v1 (production) and v2 (candidate)."""
    from training.tracking import log_result

    uri = new_store(tmp_path_factory, "registry")
    root = Path(uri.removeprefix("sqlite:///")).parent
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VEIL_HOME", str(root / "home"))
        results = [write_bundle(root / f"out{i}", float(i)) for i in (1, 2)]
        log_result(results[0], promote=True, tracking_uri=uri)
        log_result(results[1], tracking_uri=uri)
        yield uri, results


def artifact_folder(uri: str, version: str) -> Path:
    """Local folder of a registered version's artifacts."""
    from mlflow.tracking import MlflowClient

    source = MlflowClient(tracking_uri=uri).get_model_version("veil-phi-ner", version).source
    return Path(str(source).removeprefix("file://"))


@pytest.mark.parametrize("bundle", SHIPPED)
def test_without_registry_shipped_bundles_resolve_verified(bundle: str, veil_home: Path) -> None:
    ref = resolve_bundle(bundle)
    metadata = json.loads((MODEL_DIR / bundle / "metadata.json").read_text(encoding="utf-8"))
    assert (ref.path, ref.source, ref.alias) == (MODEL_DIR / bundle, "shipped", None)
    assert ref.version == str(metadata["version"])
    pinned = metadata.get("sha256", {}).get("model.onnx") or metadata["source"]["sha256"]
    assert ref.sha256 == pinned
    assert ref.name == (registered_name(bundle) or bundle)


@pytest.mark.parametrize(("given", "expected"), [
    ("phi-ner", "veil-phi-ner"), ("veil-phi-ner", "veil-phi-ner"),
    ("text-detector", "veil-text-detector"), ("ppocr-v4-det", None),
])
def test_bundle_folders_map_to_registered_names(given: str, expected: str | None) -> None:
    assert registered_name(given) == expected


def test_unknown_bundle_is_an_error(veil_home: Path) -> None:
    with pytest.raises(RegistryError, match="no shipped model bundle 'no-such-model'"):
        resolve_bundle("no-such-model")


@pytest.mark.slow
@pytest.mark.parametrize(("alias", "version"), [("production", "1"), ("candidate", "2")])
def test_registry_alias_resolves_the_registered_files(
    store: tuple[str, list[TrainResult]], veil_home: Path, alias: str, version: str
) -> None:
    import onnxruntime as ort

    uri, results = store
    ref = resolve_bundle("phi-ner", alias=alias, tracking_uri=uri)
    original = results[int(version) - 1].bundle_dir
    assert (ref.name, ref.version, ref.source, ref.alias) == (
        "veil-phi-ner", version, "registry", alias)
    assert ref.path.is_relative_to(veil_home / "registry-cache")
    for name in ("model.onnx", "tokenizer.json", "metadata.json", "README.md"):
        assert (ref.path / name).read_bytes() == (original / name).read_bytes()
    assert ref.sha256 == hashlib.sha256((original / "model.onnx").read_bytes()).hexdigest()
    session = ort.InferenceSession(str(ref.path / "model.onnx"))
    out = session.run(None, {"x": np.zeros(2, dtype=np.float32)})[0]
    assert out.tolist() == [float(version)] * 2  # the registered ONNX runs as-is


@pytest.mark.slow
def test_registry_from_environment_without_the_alias_is_an_error(
    store: tuple[str, list[TrainResult]], veil_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store[0])
    with pytest.raises(RegistryError, match="no version of 'veil-phi-ner' with alias 'staging'"):
        resolve_bundle("phi-ner", alias="staging")
    monkeypatch.setenv("VEIL_MODEL_ALIAS", "staging")
    with pytest.raises(RegistryError, match="alias 'staging'"):
        resolve_bundle("phi-ner")  # never the shipped files instead
    if "ppocr-v4-det" in SHIPPED:  # third-party weights are never registered
        assert resolve_bundle("ppocr-v4-det").source == "shipped"


@pytest.mark.slow
@pytest.mark.parametrize(("tamper", "caught"), [
    ("model", "model.onnx"),  # against metadata.json
    ("model-and-metadata", "metadata.json"),  # a consistent forgery: against the registry tag
    ("model-card", "README.md"),
])
def test_tampered_registry_artifacts_are_refused(
    store: tuple[str, list[TrainResult]], veil_home: Path, tmp_path: Path, tamper: str,
    caught: str,
) -> None:
    uri, _ = store
    folder = artifact_folder(uri, "2")
    saved = tmp_path / "saved"
    shutil.copytree(folder, saved)
    try:
        if tamper == "model-card":
            (folder / "README.md").write_text("# another card\n", encoding="utf-8")
        else:
            (folder / "model.onnx").write_bytes(onnx_bytes(99.0))
        if tamper == "model-and-metadata":
            metadata = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
            metadata["sha256"]["model.onnx"] = hashlib.sha256(onnx_bytes(99.0)).hexdigest()
            (folder / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
        with pytest.raises(RegistryError, match=f"sha256 of {caught} is"):
            resolve_bundle("phi-ner", alias="candidate", tracking_uri=uri)
    finally:
        shutil.rmtree(folder)
        shutil.copytree(saved, folder)


@pytest.mark.slow
def test_tampered_cache_is_fetched_again(
    store: tuple[str, list[TrainResult]], veil_home: Path
) -> None:
    uri, _ = store
    first = resolve_bundle("phi-ner", tracking_uri=uri)
    (first.path / "model.onnx").write_bytes(b"not the model")
    again = resolve_bundle("phi-ner", tracking_uri=uri)
    assert again.path == first.path and again.sha256 == first.sha256
    assert verify_bundle(again.path) == again.sha256


@pytest.mark.parametrize(("profile", "options", "expected"), [
    ("dicom-basic", (), []),
    ("dicom-basic", ("clean-pixel-data",), ["ppocr-v4-det", "veil-text-detector", "ppocr-v4-rec"]),
])
def test_job_report_records_the_models_used(
    tmp_path: Path, veil_home: Path, profile: str, options: tuple[str, ...], expected: list[str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    ds = make_ct(seed=1)
    del ds.PixelData  # no OCR needed: the record is about what the job loads
    ds.save_as(src / "1.dcm", enforce_file_format=True)
    report = run_job([src], tmp_path / "out", compiled(profile, *options), Keyring.generate(),
                     report_path=tmp_path / "report.json", progress=False)
    written = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    models = written["job"]["models"]
    assert [m["name"] for m in models] == expected
    for model in models:
        ref = resolve_bundle(model["name"])
        assert model == {"name": ref.name, "version": ref.version, "source": "shipped",
                         "sha256": ref.sha256, "alias": None}
    assert written["job"]["profile"]["content_hash"] == report.job.profile.content_hash


@given(user=st.text(min_size=1, max_size=12), password=st.text(min_size=3, max_size=12))
def test_credentials_never_appear_in_shown_uris(user: str, password: str) -> None:
    from urllib.parse import quote

    uri = f"https://{quote(user, safe='')}:{quote(password, safe='')}@mlflow.example:5000/x"
    assert safe_uri(uri) == "https://***@mlflow.example:5000/x"


@pytest.mark.slow
def test_mlflow_is_imported_with_telemetry_off() -> None:
    code = (
        "import os, sys; os.environ.pop('MLFLOW_DISABLE_TELEMETRY', None)\n"
        "from pipeline.registry import import_mlflow\n"
        "import_mlflow()\n"
        "from mlflow.telemetry.client import get_telemetry_client\n"
        "print(get_telemetry_client() is None, os.environ['MLFLOW_DISABLE_TELEMETRY'])\n"
    )
    quiet_anyway = {"CI", "GITHUB_ACTIONS", "GITLAB_CI", "PYTEST_CURRENT_TEST", "DO_NOT_TRACK"}
    env = {k: v for k, v in os.environ.items() if k not in quiet_anyway}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    assert out.stdout.split() == ["True", "true"]


@pytest.mark.parametrize("how", ["shipped", "copy", "tampered", "no-metadata"])
def test_a_bundle_folder_is_named_by_its_metadata_and_checked(
    veil_home: Path, tmp_path: Path, how: str
) -> None:
    from pipeline.registry import folder_ref

    shipped = MODEL_DIR / "text-detector"
    if how == "shipped":
        assert folder_ref(shipped) == resolve_bundle("text-detector")
        return
    copy = tmp_path / "trained"
    shutil.copytree(shipped, copy)
    if how == "tampered":
        (copy / "model.onnx").write_bytes(b"other weights")
    if how == "no-metadata":
        (copy / "metadata.json").unlink()
    if how != "copy":
        with pytest.raises(RegistryError, match=r"sha256 of model\.onnx|metadata\.json"):
            folder_ref(copy)
        return
    ref = folder_ref(copy)
    assert (ref.path, ref.name, ref.source) == (copy, "veil-text-detector", "folder")
    assert ref.sha256 == resolve_bundle("text-detector").sha256


def test_engine_refs_walk_composite_taggers_without_repeats(veil_home: Path) -> None:
    from pipeline.registry import engine_refs
    from pipeline.text.ner import NerTagger
    from pipeline.text.tagger import CompositeTagger, default_tagger

    model = NerTagger()
    rules = default_tagger()
    nested = CompositeTagger([model, CompositeTagger([*rules.taggers, model])])
    assert engine_refs(nested) == [resolve_bundle("phi-ner")]
    assert engine_refs(rules) == []
    assert engine_refs(object()) == []
