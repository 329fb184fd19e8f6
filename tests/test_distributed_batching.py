"""Adaptive batch sizes of the Ray pipeline (pure; the Ray job is in test_distributed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.distributed import RayOptions
from pipeline.distributed.batching import BatchSizer
from pipeline.io.report import UsageError


def test_first_batches_are_small_until_a_cost_is_known():
    assert BatchSizer().size() == BatchSizer.initial


@pytest.mark.parametrize(("per_file_s", "expected"), [
    (0.003, 166),   # metadata on the byte fast path: 0.5 s / 3 ms
    (0.0001, 256),  # capped at the maximum
    (0.1, 5),
    (0.5, 1),       # pixel cleaning on a CPU core: one file a batch
    (4.0, 1),       # never below one
])
def test_batches_aim_at_the_target_seconds(per_file_s, expected):
    sizer = BatchSizer(target_s=0.5)
    sizer.observe([per_file_s] * 10)
    assert sizer.size() == expected


def test_a_fixed_size_ignores_the_measured_cost():
    sizer = BatchSizer(fixed=16)
    sizer.observe([100.0 / 16] * 16)
    assert sizer.size() == 16


def test_the_estimate_follows_a_change_of_cost():
    sizer = BatchSizer(target_s=0.5)
    sizer.observe([0.5] * 4)  # pixel files first
    assert sizer.size() == 1
    for _ in range(30):
        sizer.observe([0.005])  # then metadata-only files
    assert sizer.size() >= 90


def test_a_vanishing_cost_gives_the_largest_batch():
    sizer = BatchSizer(target_s=60.0, maximum=300)
    sizer.observe([5e-324])  # found by Hypothesis: 60 / 5e-324 overflows to infinity
    assert sizer.size() == 300


@pytest.mark.parametrize("seconds", [[], [-1.0], [float("nan")], [float("inf"), -2.0]])
def test_meaningless_observations_are_ignored(seconds):
    sizer = BatchSizer()
    sizer.observe(seconds)
    assert sizer.per_file_s is None and sizer.size() == BatchSizer.initial


def test_a_cold_first_file_does_not_shrink_the_batches():
    sizer = BatchSizer(target_s=0.5)
    sizer.observe([1.5, 0.004, 0.003, 0.005])  # the worker's first file warms it up
    assert sizer.size() >= 100


@given(batches=st.lists(st.lists(st.one_of(st.floats(-1, 1000), st.sampled_from(
           [float("nan"), float("inf")])), max_size=20), max_size=40),
       maximum=st.integers(1, 512), target=st.floats(1e-4, 60))
def test_sizes_stay_between_one_and_the_maximum(batches, maximum, target):
    sizer = BatchSizer(target_s=target, initial=1, maximum=maximum)
    for seconds in batches:
        sizer.observe(seconds)
        assert 1 <= sizer.size() <= maximum


@pytest.mark.parametrize("kwargs", [{"fixed": 0}, {"target_s": 0}, {"initial": 0},
                                    {"initial": 9, "maximum": 8}, {"smoothing": 0}])
def test_bad_sizer_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        BatchSizer(**kwargs)


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"max_batch": 0},
                                    {"target_batch_s": 0.0}])
def test_bad_ray_batch_options_are_usage_errors(kwargs):
    with pytest.raises(UsageError):
        RayOptions(**kwargs)


def test_ray_options_build_the_sizer_they_describe():
    assert RayOptions(batch_size=7).sizer().size() == 7
    sizer = RayOptions(target_batch_s=2.0, max_batch=3).sizer()
    assert (sizer.target_s, sizer.maximum, sizer.size()) == (2.0, 3, 3)
