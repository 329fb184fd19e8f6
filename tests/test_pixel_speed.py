"""The faster CPU pixel chain gives the results of the plain one (issue 3 speed work).

Folded ONNX graphs, table look-up normalisation without grey-to-BGR copies, width-bucket
recognition batches, provider choice through ``pipeline.accel`` and the CPU thread budget.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")
pytest.importorskip("rapidocr_onnxruntime")
onnx = pytest.importorskip("onnx")

from test_pixel_ppocr import LINES, burn, ct_like  # noqa: E402

from pipeline.accel import AcceleratorError  # noqa: E402
from pipeline.pixel import stage  # noqa: E402
from pipeline.pixel.onnxfold import fold_graph  # noqa: E402
from pipeline.pixel.ppocr import (  # noqa: E402
    DET_BUNDLE,
    REC_BUNDLE,
    PPOCRDetector,
    PPOCRRecognizer,
    load_bundle,
    make_session,
    normalize,
    planes,
    to_bgr,
)
from pipeline.pixel.types import TextBox  # noqa: E402

PREP = load_bundle(REC_BUNDLE).metadata["preprocessing"]


@pytest.fixture(scope="module")
def plain() -> tuple[PPOCRDetector, PPOCRRecognizer]:
    """Engines on the bundle's graphs as shipped, one crop per call."""
    return (PPOCRDetector(intra_op_num_threads=1, fold=False),
            PPOCRRecognizer(intra_op_num_threads=1, fold=False, batch_size=1))


@pytest.fixture(scope="module")
def fast() -> tuple[PPOCRDetector, PPOCRRecognizer]:
    """Engines with the defaults: folded graphs, bucketed recognition."""
    return PPOCRDetector(intra_op_num_threads=1), PPOCRRecognizer(intra_op_num_threads=1)


def _ops(model: bytes) -> collections.Counter[str]:
    return collections.Counter(n.op_type for n in onnx.load_from_string(model).graph.node
                               if n.op_type != "Constant")


@pytest.mark.parametrize("bundle, shape", [
    (DET_BUNDLE, (1, 3, 96, 160)),
    (REC_BUNDLE, (2, 3, 48, 200)),
])
def test_folded_graph_computes_the_same_function_with_fewer_operators(bundle, shape):
    model = load_bundle(bundle).model
    folded = fold_graph(model)
    before, after = _ops(model), _ops(folded)
    assert sum(after.values()) < 0.8 * sum(before.values())
    assert after["Clip"] == 0 < before["Clip"]  # every hard-swish rewritten
    assert after["Conv"] == before["Conv"]  # only element-wise operators go
    x = np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)
    outs = [make_session(m, 1, device="cpu") for m in (model, folded)]
    ref, got = (s.run(None, {s.get_inputs()[0].name: x})[0] for s in outs)
    assert ref.shape == got.shape
    np.testing.assert_allclose(got, ref, atol=1e-4)


GREY_OR_RGB = st.one_of(hnp.array_shapes(min_dims=2, max_dims=2, max_side=9),
                       st.tuples(st.integers(1, 9), st.integers(1, 9), st.just(3)))


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.uint8, GREY_OR_RGB))
def test_table_normalisation_equals_the_float_formula(image):
    expected = normalize(to_bgr(image), PREP)
    assert planes(image, PREP).dtype == np.float32
    np.testing.assert_array_equal(planes(image, PREP), expected)


def test_grey_input_gives_the_probability_map_of_its_bgr_copy(plain):
    detector, _ = plain
    img, _ = burn(ct_like(seed=5), [14, 16, 18, 20])
    rgb = np.repeat(img[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(detector.probability_map(img),
                                  detector.probability_map(rgb))


def test_folded_engines_find_and_read_what_the_plain_engines_do(plain, fast):
    img, _ = burn(ct_like(seed=2), [12, 14, 16, 18])
    (pdet, prec), (fdet, frec) = plain, fast
    np.testing.assert_allclose(fdet.probability_map(img), pdet.probability_map(img),
                               atol=1e-3)
    boxes = pdet.detect(img)
    assert [(b.x0, b.y0, b.x1, b.y1) for b in fdet.detect(img)] == \
        [(b.x0, b.y0, b.x1, b.y1) for b in boxes]
    slow, quick = prec.recognize(img, boxes), frec.recognize(img, boxes)
    assert [r.text for r in quick] == [r.text for r in slow]
    assert [r.score for r in quick] == pytest.approx([r.score for r in slow], abs=1e-3)
    assert len(boxes) >= len(LINES)


def test_crops_of_one_input_width_are_read_together_with_one_at_a_time_results(plain, fast):
    img, truth = burn(ct_like(seed=4), [14] * 4, lines=["DOE^JOHN", "ROE^JANE", "12345678",
                                                          "87654321"])
    boxes = [TextBox(x0 - 3, y0 - 3, x1 + 3, y1 + 3, 1.0) for x0, y0, x1, y1 in truth]
    boxes += boxes[:2]  # same widths again: several crops per call
    _, single = plain
    batched = PPOCRRecognizer(intra_op_num_threads=1, fold=False)
    assert batched.slack == 0 and batched.batch_size > 1
    ratios = [b.width / b.height for b in boxes]
    assert any(len(bucket) > 1 for bucket in batched.buckets(ratios))
    one, many = single.recognize(img, boxes), batched.recognize(img, boxes)
    assert [r.text for r in many] == [r.text for r in one]
    assert [r.score for r in many] == pytest.approx([r.score for r in one], abs=1e-5)


@settings(max_examples=60, deadline=None)
@given(ratios=st.lists(st.floats(0.2, 30.0), max_size=40),
       batch_size=st.integers(1, 9), slack=st.one_of(st.none(), st.integers(0, 64)))
def test_buckets_cover_every_crop_once_within_batch_size_and_slack(fast, ratios, batch_size,
                                                                    slack):
    recognizer = fast[1]
    saved = recognizer.batch_size, recognizer.slack
    recognizer.batch_size, recognizer.slack = batch_size, slack
    try:
        buckets = recognizer.buckets(ratios)
    finally:
        recognizer.batch_size, recognizer.slack = saved
    assert sorted(i for b in buckets for i in b) == list(range(len(ratios)))
    for bucket in buckets:
        widths = [recognizer.input_width(ratios[i]) for i in bucket]
        assert 1 <= len(bucket) <= batch_size
        assert slack is None or max(widths) - min(widths) <= slack
    if slack is None:  # sorted runs of batch_size: the bundle's (CUDA) batching
        assert [len(b) for b in buckets[:-1]] == [batch_size] * (len(buckets) - 1)


@pytest.mark.parametrize("engine", [PPOCRDetector, PPOCRRecognizer])
def test_sessions_use_the_providers_accel_chooses(engine):
    built = engine(intra_op_num_threads=1, device="cpu")
    assert built.session.get_providers() == ["CPUExecutionProvider"]


def test_cuda_without_a_usable_gpu_is_an_error_not_a_cpu_session(monkeypatch):
    monkeypatch.setattr("pipeline.accel.gpu_present", lambda: False)
    with pytest.raises(AcceleratorError, match="cuda"):
        PPOCRRecognizer(intra_op_num_threads=1, device="cuda")


@pytest.mark.parametrize("omp, affinity, expected", [
    ("1", {0, 1, 2, 3}, 1),
    ("3", {0}, 3),
    (None, {0}, 1),
    (None, {0, 1}, 2),
    ("", {0, 1, 2}, 3),
    ("zero", {0, 1}, 2),
])
def test_cpu_budget_follows_omp_threads_then_the_affinity_mask(monkeypatch, omp, affinity,
                                                                 expected):
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    monkeypatch.setattr(stage.os, "sched_getaffinity", lambda pid: affinity, raising=False)
    assert stage.cpu_budget() == expected
