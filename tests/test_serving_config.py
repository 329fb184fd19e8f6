"""Serving configuration, deployment options, batched engines and the embedded fallback.

No Ray cluster here: see ``test_serving.py`` for the deployments themselves.
"""

from __future__ import annotations

import copy

import pytest

from pipeline.profile.schema import PixelSettings
from serving.config import (
    ServingConfigError,
    example_path,
    load_config,
    parse_config,
)

BASE = {
    "detector": {"model": {"name": "ppocr-v4"}},
    "recognizer": {"model": {"name": "ppocr-v4"}},
}


def _with(path: str, value: object) -> dict:
    """BASE with one dotted key set (``detector.num_gpus``)."""
    data = copy.deepcopy(BASE)
    node = data
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return data


def test_the_example_configuration_is_valid():
    config = load_config(example_path())
    assert config.detector.num_gpus == 0.25
    assert config.recognizer.autoscaling is not None
    assert set(config.deployments()) == {"detector", "recognizer"}  # ner disabled there


@pytest.mark.parametrize("path, value, message", [
    ("detector.bogus", 1, "detector.bogus: Extra inputs are not permitted"),
    ("detector.num_gpus", -0.5, "detector.num_gpus"),
    ("detector.num_gpus", 1.5, "above 1 it must be a whole number"),
    ("detector.device", "tpu", "detector.device"),
    ("recognizer.num_replicas", 0, "recognizer.num_replicas"),
    ("detector.max_batch_size", 0, "detector.max_batch_size"),
    ("detector.batch_wait_timeout_s", -1, "detector.batch_wait_timeout_s"),
    ("detector.model.name", "tesseract", "model 'tesseract' is not one of"),
    ("recognizer.model.name", "veil-text-detector", "model 'veil-text-detector'"),
    ("detector.model.source", "registry", "needs an 'alias'"),
    ("detector.model.alias", "champion", "only meaningful with source 'registry'"),
    ("detector.autoscaling", {"min_replicas": 3, "max_replicas": 2},
     "max_replicas (2) is below min_replicas (3)"),
    ("app_name", "has space", "app_name"),
    ("schema_version", 2, "schema_version"),
    ("ray.adress", "auto", "ray.adress: Extra inputs"),
])
def test_invalid_configurations_are_rejected_with_where_and_why(path, value, message):
    with pytest.raises(ServingConfigError, match="invalid serving configuration") as err:
        parse_config(_with(path, value), "site.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("site.yaml")


@pytest.mark.parametrize("changes, message", [
    ({"num_replicas": 2, "autoscaling": {"max_replicas": 4}}, "either num_replicas or"),
    ({"num_gpus": 0.5, "device": "cpu"}, "reserves a GPU it never uses"),
    ({"max_batch_size": 16, "max_ongoing_requests": 4}, "batches could never fill"),
])
def test_contradictory_deployment_settings_are_rejected(changes, message):
    data = copy.deepcopy(BASE)
    data["detector"].update(changes)
    with pytest.raises(ServingConfigError, match=message):
        parse_config(data)


@pytest.mark.parametrize("text, message", [
    ("detector: [unclosed", "not valid YAML"),
    ("- a list", "must be a mapping"),
])
def test_unreadable_files_are_reported_with_the_file_name(tmp_path, text, message):
    path = tmp_path / "serving.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ServingConfigError, match=message) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ServingConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


@pytest.mark.parametrize("spec, expected", [
    ({"num_replicas": 3, "num_gpus": 0.25},
     {"num_replicas": 3, "ray_actor_options": {"num_cpus": 1.0, "num_gpus": 0.25}}),
    ({"autoscaling": {"min_replicas": 0, "max_replicas": 4, "target_ongoing_requests": 3}},
     {"autoscaling_config": {"min_replicas": 0, "max_replicas": 4,
                             "target_ongoing_requests": 3.0}}),
    ({"max_batch_size": 32}, {"max_ongoing_requests": 64, "num_replicas": 1}),
])
def test_deployment_options_carry_replicas_resources_and_autoscaling(spec, expected):
    pytest.importorskip("ray.serve")
    from serving.deployments import deployment_options

    data = copy.deepcopy(BASE)
    data["detector"].update(spec)
    options = deployment_options(parse_config(data).detector)
    assert expected.items() <= options.items()
    assert ("num_replicas" in options) != ("autoscaling_config" in options)


def test_build_app_binds_the_enabled_deployments_under_one_ingress():
    pytest.importorskip("ray.serve")
    from ray.serve import Application

    from serving.deployments import build_app

    data = copy.deepcopy(BASE)
    data["ner"] = {"model": {"name": "phi-ner"}, "enabled": False}
    app = build_app(parse_config(data))
    assert isinstance(app, Application)


def test_without_a_ray_connection_engines_are_in_process():
    pytest.importorskip("onnxruntime")
    from pipeline.pixel.cache import CachedRecognizer
    from pipeline.pixel.ensemble import UnionDetector
    from pipeline.pixel.ppocr import PPOCRRecognizer
    from serving.client import app_status, resolve_engines

    assert app_status() is None
    engines = resolve_engines(PixelSettings())
    assert isinstance(engines.detector, UnionDetector)
    assert isinstance(engines.recognizer, CachedRecognizer)  # the profile's read cache
    assert isinstance(engines.recognizer.inner, PPOCRRecognizer)


def test_requiring_serve_without_a_ray_connection_is_an_error():
    from serving.client import ServeUnavailableError, resolve_engines

    with pytest.raises(ServeUnavailableError, match="not running"):
        resolve_engines(PixelSettings(), mode="serve")


@pytest.mark.slow
def test_batched_detection_finds_the_same_boxes_as_one_image_at_a_time():
    pytest.importorskip("onnxruntime")
    from pipeline.pixel.frames import views
    from pipeline.pixel.ppocr import PPOCRDetector
    from serving.engines import DetectRequest, detect_many
    from training.pixel_corpus import make_sample

    detector = PPOCRDetector(intra_op_num_threads=1)
    images = []
    for index in range(4):  # mixed modalities: several input sizes in one batch
        _, ds, _ = make_sample(index, 11)
        images.append(next(iter(views(ds))).image)
    batched = detect_many(detector, [DetectRequest(image) for image in images])
    assert batched == [detector.detect(image) for image in images]
    assert any(batched)


@pytest.mark.parametrize("config, status, expected", [
    ("example", 0, "valid; deployments: detector, recognizer"),
    ("broken", 2, "detector.num_gpus"),
])
def test_veil_serve_check_validates_the_configuration(tmp_path, capsys, config, status,
                                                      expected):
    from pipeline.cli import main

    path = example_path()
    if config == "broken":
        path = tmp_path / "serving.yaml"
        path.write_text(example_path().read_text().replace("num_gpus: 0.25", "num_gpus: -1"),
                        encoding="utf-8")
    assert main(["serve", "--config", str(path), "--check"]) == status
    captured = capsys.readouterr()
    assert expected in captured.out + captured.err


@pytest.mark.parametrize("change, message", [
    ({"source": "registry"}, "needs an 'alias'"),
    ({"tracking_uri": "file:///tmp/mlruns"}, "'tracking_uri' is only meaningful"),
])
def test_model_source_fields_must_agree(change, message):
    data = copy.deepcopy(BASE)
    data["detector"]["model"].update(change)
    with pytest.raises(ServingConfigError, match=message):
        parse_config(data)


def test_a_registry_alias_without_a_registry_is_an_error_not_the_shipped_files(monkeypatch):
    from serving.config import ModelSource
    from serving.engines import EngineUnavailableError, bundle_path

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    source = ModelSource(name="veil-text-detector", source="registry", alias="production")
    with pytest.raises(EngineUnavailableError):
        bundle_path(source)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ppocr-v4", "veil-text-detector",
                                  "ppocr-v4+veil-text-detector"])
def test_per_request_thresholds_give_what_a_detector_built_with_them_gives(name):
    pytest.importorskip("onnxruntime")
    from pipeline.pixel.frames import views
    from pipeline.pixel.ppocr import ModelBundleError
    from pipeline.pixel.stage import make_detector
    from serving.config import DeploymentSpec, ModelSource
    from serving.engines import BatchDetector, DetectRequest, EngineUnavailableError, build_detector
    from training.pixel_corpus import make_sample

    spec = DeploymentSpec(model=ModelSource(name=name), intra_op_num_threads=1, device="cpu")
    try:
        detector = build_detector(spec)
    except (EngineUnavailableError, ModelBundleError) as exc:  # bundle not shipped yet
        pytest.skip(f"{name} not available here ({type(exc).__name__})")
    image = next(iter(views(make_sample(0, 5)[1]))).image
    batcher = BatchDetector(detector, "cpu", 1)
    strict, default = batcher.detect_many([DetectRequest(image, 0.6, 0.9),
                                           DetectRequest(image)])
    assert default == detector.detect(image)
    tuned = make_detector(name, 0.6, 0.9, 1)
    assert strict == tuned.detect(image)


@pytest.mark.parametrize("status, mode, outcome", [
    (None, "auto", False),
    (None, "embedded", False),
    (None, "serve", "not running"),
    ("RUNNING", "auto", True),
    ("RUNNING", "embedded", False),
    ("RUNNING", "serve", True),
    ("DEPLOY_FAILED", "auto", "is DEPLOY_FAILED"),
    ("UNHEALTHY", "auto", "is UNHEALTHY"),
    ("DEPLOYING", "serve", "is DEPLOYING"),
])
def test_only_an_absent_app_falls_back_a_broken_one_is_an_error(monkeypatch, status, mode,
                                                                 outcome):
    """Decision table (the cluster states themselves are exercised in test_serving.py)."""
    from serving import client

    monkeypatch.setattr(client, "app_status", lambda app_name: status)
    if isinstance(outcome, str):
        with pytest.raises(client.ServeUnavailableError, match=outcome):
            client._running("veil", mode)
    else:
        assert client._running("veil", mode) is outcome
