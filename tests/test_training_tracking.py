"""`veil train`: one MLflow run per training, a registered version, aliases moved on request."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_registry import new_store, write_bundle

from pipeline.cli import main
from pipeline.profile import load_profile
from pipeline.registry import FILES_TAG, resolve_bundle
from training.tracking import TrackingError, bundle_manifest, log_result


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SQLite tracking store shared by this module (each test uses its own model name)."""
    store = new_store(tmp_path_factory, "tracking")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VEIL_HOME", str(Path(store.removeprefix("sqlite:///")).parent / "home"))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield store


def client(uri: str) -> Any:
    """An MLflow client on the store."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def production(uri: str, name: str) -> str | None:
    """Version under the ``production`` alias, None when there is none."""
    found = client(uri).get_registered_model(name).aliases.get("production")
    return None if found is None else str(found)


@pytest.mark.slow
def test_run_holds_params_metrics_artifacts_and_provenance(uri: str, tmp_path: Path) -> None:
    result = write_bundle(tmp_path / "bundle", 1.0, name="veil-test-run")
    config = tmp_path / "config.yaml"
    config.write_text("seed: 7\n", encoding="utf-8")
    tracked = log_result(result, config=config, tracking_uri=uri)
    run = client(uri).get_run(tracked.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.01", "model.layers": "2", "model.dims": "[4, 8]",
                               "data_seed": "7", "data_hash": result.data_hash}
    assert run.data.metrics == {"loss": pytest.approx(1 / 3), "val_f1": pytest.approx(0.51)}
    history = client(uri).get_metric_history(tracked.run_id, "loss")
    expected = [(s, pytest.approx(1 / (s + 1))) for s in range(3)]
    assert [(m.step, m.value) for m in history] == expected
    tags = run.data.tags
    assert tags["veil.config_sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
    assert (tags["veil.data_seed"], tags["veil.data_hash"]) == ("7", result.data_hash)
    assert tags["mlflow.note.content"] == result.model_card.read_text(encoding="utf-8")
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent)
    if head.returncode == 0:
        assert tags["veil.git_commit"] == head.stdout.strip()
    listed = {a.path for a in client(uri).list_artifacts(tracked.run_id, "bundle")}
    assert listed == {f"bundle/{n}" for n in
                      ("model.onnx", "tokenizer.json", "metadata.json", "README.md")}
    assert [a.path for a in client(uri).list_artifacts(tracked.run_id, "config")] == [
        "config/config.yaml"]
    version = client(uri).get_model_version("veil-test-run", tracked.version)
    assert (str(version.version), version.run_id, version.source) == (
        "1", tracked.run_id, tracked.artifact_uri)
    assert json.loads(version.tags[FILES_TAG]) == bundle_manifest(result.bundle_dir)
    assert (version.aliases, tracked.aliases) == (["candidate"], ("candidate",))


#: One registration after another: (promote, expected version, expected production).
STEPS = [(False, "1", None), (False, "2", None), (True, "3", "3"), (False, "4", "3")]


@pytest.mark.slow
def test_versions_count_up_and_production_moves_only_with_promote(
    uri: str, tmp_path: Path
) -> None:
    name = "veil-test-aliases"
    for index, (promote, version, prod) in enumerate(STEPS):
        result = write_bundle(tmp_path / f"b{index}", float(index), name=name)
        tracked = log_result(result, promote=promote, tracking_uri=uri)
        assert tracked.version == version
        assert str(client(uri).get_model_version_by_alias(name, "candidate").version) == version
        assert production(uri, name) == prod


@pytest.mark.slow
def test_no_register_logs_the_run_only(uri: str, tmp_path: Path) -> None:
    result = write_bundle(tmp_path / "b", 1.0, name="veil-test-unregistered")
    tracked = log_result(result, register=False, tracking_uri=uri, experiment="unregistered")
    assert (tracked.version, tracked.aliases) == (None, ())
    assert client(uri).get_run(tracked.run_id).data.params["data_seed"] == "7"
    assert client(uri).search_model_versions("name='veil-test-unregistered'") == []


def _tamper_model(folder: Path) -> None:
    (folder / "model.onnx").write_bytes(b"changed after export")


def _drop_card(folder: Path) -> None:
    (folder / "README.md").unlink()


def _unpinned(folder: Path) -> None:
    (folder / "metadata.json").write_text(json.dumps({"version": "1"}), encoding="utf-8")


@pytest.mark.parametrize(("spoil", "message"), [
    (_tamper_model, "sha256 of model.onnx"),
    (_drop_card, "no model card"),
    (_unpinned, "pins no sha256 of model.onnx"),
])
def test_inconsistent_bundles_are_refused_before_logging(
    tmp_path: Path, spoil: Any, message: str
) -> None:
    result = write_bundle(tmp_path / "b", 1.0)
    spoil(result.bundle_dir)
    store = tmp_path / "never" / "mlflow.db"
    with pytest.raises(TrackingError, match=message):
        log_result(result, tracking_uri=f"sqlite:///{store}")
    assert not store.parent.exists()


@pytest.mark.parametrize(("argv", "status"), [
    (["train", "ner", "--config", "no-such.yaml"], 2),
    (["train", "ner", "--config", "{config}", "--promote", "--no-register"], 2),
    (["train", "ocr", "--config", "{config}"], 2),
    pytest.param(["train", "ner", "--config", "{bad}"], 2, marks=pytest.mark.slow),  # torch
])
def test_train_command_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], status: int
) -> None:
    monkeypatch.setenv("VEIL_HOME", str(tmp_path / "home"))
    config, bad = tmp_path / "ner.yaml", tmp_path / "bad.yaml"
    config.write_text("seed: 1\n", encoding="utf-8")
    bad.write_text("no_such_setting: 1\n", encoding="utf-8")
    args = [a.format(config=config, bad=bad) for a in argv] + ["--out", str(tmp_path / "out")]
    assert main(args) == status
    assert not (tmp_path / "home").exists()  # nothing logged


@pytest.mark.slow
def test_profiles_register_logs_the_resolved_yaml_and_hash(
    uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["profiles", "register", "gdpr", "--tracking-uri", uri]) == 0
    profile = load_profile("gdpr", [], allow_disabled=True)
    out = capsys.readouterr().out
    assert f"sha256:{profile.content_hash}" in out
    run_id = out.split()[-1]
    run = client(uri).get_run(run_id)
    assert run.data.tags["veil.profile_content_hash"] == profile.content_hash
    path = client(uri).download_artifacts(run_id, "profile/gdpr.yaml")
    assert Path(path).read_text(encoding="utf-8") == profile.to_yaml()


#: The smallest NER training that still runs every stage (data, tokenizer, fit, export).
TINY_NER = {
    "name": "veil-phi-ner", "version": "0.0.1", "seed": 1,
    "data": {"seed": 5, "train": 16, "validation": 4, "test": 4},
    "tokenizer": {"vocab_size": 300, "min_frequency": 1},
    "model": {"hidden_size": 16, "num_layers": 1, "num_heads": 1, "intermediate_size": 16,
              "max_length": 32},
    "train": {"epochs": 1, "batch_size": 8, "max_steps": 2, "threads": 1, "log_every": 1},
}


@pytest.mark.slow
def test_veil_train_ner_end_to_end(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    from pipeline.text.ner import NerTagger

    store = new_store(tmp_path_factory, "train-ner")
    monkeypatch.setenv("VEIL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_NER), encoding="utf-8")
    argv = ["train", "ner", "--config", str(config), "--out", str(tmp_path / "out"),
            "--promote", "--tracking-uri", store]
    assert main(argv) == 0
    ref = resolve_bundle("phi-ner", tracking_uri=store)
    assert (ref.name, ref.version, ref.source, ref.alias) == (
        "veil-phi-ner", "1", "registry", "production")
    for name in ("model.onnx", "tokenizer.json", "metadata.json", "README.md"):
        assert (ref.path / name).read_bytes() == (tmp_path / "out" / name).read_bytes()
    run = client(store).get_run(client(store).get_model_version("veil-phi-ner", "1").run_id)
    assert run.data.params["data.train"] == "16"
    assert run.data.tags["veil.config_sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
    assert len(NerTagger(ref.path).predict(["CT chest for John Smith"])) == 1  # loader takes it
    shutil.rmtree(tmp_path / "out")
