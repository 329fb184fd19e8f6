"""Provenance: the job report names the models of the engines it runs, read from them.

Every loader carries the :class:`~pipeline.registry.ModelRef` of what it loaded; the
report takes the refs from the engines in use (not from the profile), and an engine that
cannot say which model it runs is a clear error, never a guess.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import compiled

from models import MODEL_DIR
from pipeline.io.report import UsageError
from pipeline.job import models_used
from pipeline.pixel.ppocr import load_bundle
from pipeline.pixel.stage import PixelEngines, engines_for
from pipeline.profile import compile_profile, load_profile
from pipeline.registry import ModelRef, resolve_bundle
from pipeline.text.tagger import CompositeTagger, default_tagger


@pytest.fixture(autouse=True)
def shipped_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No registry: every bundle resolves to the shipped files."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("VEIL_HOME", str(tmp_path / "veil-home"))


def ppocr(kind: str) -> Any:
    """The PP-OCRv4 engine the stage builds (cached per process; the detector is the
    primary of the default union, the recognizer sits behind the read cache)."""
    engines = engines_for(compiled("dicom-basic", "clean-pixel-data").profile.pixel)
    return engines.detector.primary if kind == "det" else engines.recognizer.inner


def veil_detector() -> Any:
    from pipeline.pixel.dbnet import VeilTextDetector

    return VeilTextDetector()


def ner() -> Any:
    from pipeline.text.ner import NerTagger

    return NerTagger()


def loaded_sha(engine: Any) -> str:
    """sha256 of the model bytes the engine actually holds or reads."""
    if hasattr(engine, "_model"):
        data = engine._model
    elif hasattr(engine, "folder"):
        data = (engine.folder / "model.onnx").read_bytes()
    else:
        data = load_bundle(engine.metadata["name"]).model
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(("make", "bundle", "name"), [
    (lambda: ppocr("det"), "ppocr-v4-det", "ppocr-v4-det"),
    (lambda: ppocr("rec"), "ppocr-v4-rec", "ppocr-v4-rec"),
    (veil_detector, "text-detector", "veil-text-detector"),
    (ner, "phi-ner", "veil-phi-ner"),
], ids=["ppocr-det", "ppocr-rec", "veil-detector", "ner"])
def test_every_loader_carries_the_ref_of_the_model_it_loaded(
    make: Callable[[], Any], bundle: str, name: str
) -> None:
    engine = make()
    ref = engine.model_ref
    assert isinstance(ref, ModelRef)
    assert ref == resolve_bundle(bundle)
    assert (ref.name, ref.source) == (name, "shipped")
    assert ref.sha256 == loaded_sha(engine)


def test_the_report_reads_the_engines_in_use_not_the_profile() -> None:
    profile = compiled("dicom-basic", "clean-pixel-data")  # asks for the union
    assert profile.profile.pixel.detector == "ppocr-v4+veil-text-detector"
    engines = PixelEngines(veil_detector(), ppocr("rec"))
    names = [m.name for m in models_used(profile, pixel_engines=engines)]
    assert names == ["veil-text-detector", "ppocr-v4-rec"]
    assert [m.name for m in models_used(profile)] == ["ppocr-v4-det", "veil-text-detector",
                                                      "ppocr-v4-rec"]


def test_the_default_engines_are_the_ones_the_files_run_with() -> None:
    profile = compiled("dicom-basic", "clean-pixel-data")
    engines = engines_for(profile.profile.pixel)
    assert engines is engines_for(profile.profile.pixel)  # built once per process
    reported = [(m.name, m.sha256) for m in models_used(profile)]
    running: list[Any] = [*engines.detector.members, engines.recognizer]
    assert reported == [(e.model_ref.name, e.model_ref.sha256) for e in running]


def test_the_ner_model_is_read_from_the_tagger_that_runs(tmp_path: Path) -> None:
    from pipeline.text.ner import NerTagger

    profile = compile_profile(load_profile("dicom-basic", overrides={"text.ner": "true"}))
    shipped = models_used(profile)
    assert [(m.name, m.source) for m in shipped] == [("veil-phi-ner", "shipped")]
    copy = tmp_path / "retrained"
    shutil.copytree(MODEL_DIR / "phi-ner", copy)
    metadata = json.loads((copy / "metadata.json").read_text(encoding="utf-8"))
    metadata["version"] = "9.9.9-test"
    (copy / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    tagger = CompositeTagger([*default_tagger().taggers, NerTagger(copy)])
    found = models_used(profile, tagger=tagger)
    assert [(m.name, m.version, m.source) for m in found] == \
        [("veil-phi-ner", "9.9.9-test", "folder")]
    assert found[0].sha256 == shipped[0].sha256  # same weights, another bundle


def test_rule_based_text_tagging_records_no_model() -> None:
    profile = compiled("dicom-basic")
    assert models_used(profile) == []
    assert models_used(profile, tagger=default_tagger()) == []


@pytest.mark.parametrize("which", ["detector", "recognizer", "ner"])
def test_an_engine_that_cannot_say_its_model_is_an_error(which: str) -> None:
    from serving.client import ServePhiTagger, ServeTextDetector, ServeTextRecognizer

    if which == "ner":
        profile = compile_profile(load_profile("dicom-basic", overrides={"text.ner": "true"}))
        tagger = CompositeTagger([*default_tagger().taggers, ServePhiTagger(handle=None)])
        with pytest.raises(UsageError,
                           match=r"PHI tagger in use \(CompositeTagger: .*ServePhiTagger\)"):
            models_used(profile, tagger=tagger)
        return
    profile = compiled("dicom-basic", "clean-pixel-data")
    remote: Any = (ServeTextDetector(handle=None) if which == "detector"
              else ServeTextRecognizer(handle=None))
    engines = PixelEngines(remote if which == "detector" else ppocr("det"),
                           remote if which == "recognizer" else ppocr("rec"))
    with pytest.raises(UsageError, match=f"text {which} in use .{type(remote).__name__}."):
        models_used(profile, pixel_engines=engines)

