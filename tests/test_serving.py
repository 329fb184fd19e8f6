"""Veil Serve on a real local Ray cluster: deployment, health, batching, same results.

Ray's gRPC servers listen on every interface, so the cluster is started inside a
private network namespace (loopback only) that this module creates and leaves.
One cluster and one app for the whole module (2 CPUs, replicas with 0 CPU reserved).
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("ray.serve")
pytest.importorskip("onnxruntime")

from pipeline.pixel.cache import CachedRecognizer
from pipeline.pixel.ensemble import UnionDetector
from pipeline.pixel.frames import views
from pipeline.pixel.stage import clean_pixels, engines_for, make_detector
from pipeline.profile import load_profile
from pipeline.profile.schema import PixelSettings
from pipeline.registry import engine_refs
from pipeline.text import HeaderContext
from serving import netns
from serving.client import (
    ServePhiTagger,
    ServeTextDetector,
    ServeTextRecognizer,
    ServeUnavailableError,
    resolve_engines,
    resolve_ner,
)
from serving.config import parse_config
from training.pixel_corpus import make_sample

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not netns.available(),
                       reason="needs root and 'ip' for a loopback-only network namespace"),
]

APP = "veil-test"
SPEC = {"num_replicas": 1, "num_cpus": 0, "device": "cpu", "intra_op_num_threads": 1,
        "max_batch_size": 8, "batch_wait_timeout_s": 0.05}
CONFIG = {
    "app_name": APP,
    "detector": {"model": {"name": "ppocr-v4+veil-text-detector"}, **SPEC},  # the default
    "recognizer": {"model": {"name": "ppocr-v4"}, **SPEC},
    "ner": {"enabled": True, "model": {"name": "phi-ner"}, **SPEC},
}
NER_TEXTS = [
    "CT CHEST for John Smith, MRN 88412345, seen 03/14/2021 at Mercy General Hospital",
    "PATIENT: DOE~JANE  DOB 1950-02-01  ACC A1234567",
    "no identifiers in this text",
]


def _ct_samples(count: int, seed: int = 5) -> list:
    """The first ``count`` CT files (512x512 with burned-in text) of a corpus seed."""
    out, index = [], 0
    while len(out) < count:
        sample, ds, _ = make_sample(index, seed)
        if sample.modality == "CT":
            out.append(ds)
        index += 1
    return out


@pytest.fixture(scope="module")
def app():
    import ray
    from ray import serve

    from serving.deployments import deploy

    with netns.isolated_network() as host_namespace:
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                 logging_level="ERROR", log_to_driver=False)
        try:
            handle = deploy(parse_config(CONFIG))
            handle.host_namespace = host_namespace
            yield handle
        finally:
            serve.shutdown()
            ray.shutdown()


@pytest.fixture(scope="module")
def settings() -> PixelSettings:
    return load_profile("dicom-basic", ["clean-pixel-data"]).pixel


def test_app_deploys_and_answers_health_checks(app):
    from ray import serve

    status = serve.status().applications[APP]
    assert status.status == "RUNNING"
    deployments = status.deployments
    assert {"detector", "recognizer", "ner", "VeilIngress"} <= set(deployments)
    assert all(d.status == "HEALTHY" for d in deployments.values())
    health = app.health.remote().result(timeout_s=60)
    assert set(health) == {"detector", "recognizer", "ner"}
    for stats in health.values():
        assert stats["providers"] == ["CPUExecutionProvider"]
        assert stats["array_module"] == "numpy"
        assert stats["failures"] == 0


def test_findings_and_pixels_are_the_same_through_serve_and_in_process(app, settings):
    served = resolve_engines(settings, app_name=APP)
    assert isinstance(served.detector, ServeTextDetector)
    assert isinstance(served.recognizer, CachedRecognizer)  # repeated crops are not sent
    assert isinstance(served.recognizer.inner, ServeTextRecognizer)
    embedded = engines_for(settings)
    # provenance: the job report names the models the deployments serve, as in process
    assert engine_refs(served.detector) == engine_refs(embedded.detector)
    assert [r.name for r in engine_refs(served.detector)] == ["ppocr-v4-det",
                                                              "veil-text-detector"]
    assert served.recognizer.model_ref == embedded.recognizer.model_ref  # type: ignore[attr-defined]
    compared = 0
    for ds in _ct_samples(2):
        context = HeaderContext.from_dataset(ds)
        a, b = copy.deepcopy(ds), copy.deepcopy(ds)
        local = clean_pixels(a, settings, context, embedded)
        remote = clean_pixels(b, settings, context, served)
        assert remote.findings == local.findings
        assert remote.views_scanned == local.views_scanned
        assert a.PixelData == b.PixelData
        compared += len(local.findings)
    assert compared > 0  # the files do hold text: the comparison is not vacuous
    assert served.recognizer.misses > 0  # and the crops were read by the deployment


def test_ner_spans_are_the_same_through_serve_and_in_process(app):
    from pipeline.profile.schema import TextSettings
    from pipeline.text.ner import NerTagger

    served = resolve_ner(TextSettings(ner=True, ner_threshold=0.5), app_name=APP)
    assert isinstance(served, ServePhiTagger)
    local, context = NerTagger(threshold=0.5), HeaderContext()
    assert served.model_ref == local.model_ref
    expected = [local.tag(text, context) for text in NER_TEXTS]
    assert [served.tag(text, context) for text in NER_TEXTS] == expected
    assert any(expected)  # the model finds PHI here: the comparison is not vacuous


def test_concurrent_requests_are_served_in_batches(app):
    from ray import serve

    detector = ServeTextDetector(serve.get_deployment_handle("detector", app_name=APP))
    images = [view.image for ds in _ct_samples(2, seed=9) for view in views(ds)][:4]
    before = app.health.remote().result()["detector"]["batch_sizes"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(detector.detect, images * 2))
    after = app.health.remote().result()["detector"]["batch_sizes"]
    new = {int(k): v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)}
    assert sum(size * n for size, n in new.items()) == len(images) * 2
    assert max(new) > 1, new
    assert results[:len(images)] == results[len(images):]  # batching changes nothing


def test_per_request_thresholds_reach_the_detector(app):
    from ray import serve

    handle = serve.get_deployment_handle("detector", app_name=APP)
    image = next(iter(views(_ct_samples(1)[0]))).image
    lax = ServeTextDetector(handle, thresh=0.2, box_thresh=0.4).detect(image)
    strict = ServeTextDetector(handle, thresh=0.6, box_thresh=0.95).detect(image)
    local = make_detector("ppocr-v4+veil-text-detector", 0.6, 0.95, 1).detect(image)
    assert strict == local
    assert len(lax) >= len(strict)


@pytest.mark.parametrize("mode, app_name, expected", [
    ("auto", "no-such-app", UnionDetector),
    ("embedded", APP, UnionDetector),
    ("auto", APP, ServeTextDetector),
    ("serve", APP, ServeTextDetector),
])
def test_resolve_engines_uses_serve_only_when_its_app_runs(app, settings, mode, app_name,
                                                           expected):
    engines = resolve_engines(settings, mode=mode, app_name=app_name)
    assert isinstance(engines.detector, expected)


def test_requiring_serve_without_its_app_is_an_error(app, settings):
    with pytest.raises(ServeUnavailableError, match="not running"):
        resolve_engines(settings, mode="serve", app_name="no-such-app")


def test_a_profile_asking_for_another_detector_than_deployed_is_an_error(app, settings):
    other = settings.model_copy(update={"detector": "veil-text-detector"})
    with pytest.raises(ServeUnavailableError, match="veil-text-detector"):
        resolve_engines(other, app_name=APP)


def test_no_ray_process_listens_on_the_host_network(app):
    import shutil
    import subprocess

    def listening(*prefix: str) -> str:
        return subprocess.run([*prefix, "ss", "-ltnpH"], capture_output=True, text=True,
                              check=True).stdout

    inside = listening()
    assert "gcs_server" in inside and "raylet" in inside  # ss does see Ray's servers
    if shutil.which("nsenter") is None:
        pytest.skip("no nsenter to look at the host network")
    host = listening("nsenter", f"--net={app.host_namespace}")
    assert not [line for line in host.splitlines()
                if any(name in line for name in ("gcs_server", "raylet", "ray::"))]
