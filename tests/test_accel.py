"""Run-time device choice: ONNX Runtime providers and the array module."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import accel
from pipeline.accel import CPU_PROVIDER, CUDA_PROVIDER, AcceleratorError

CPU_ONLY = [CPU_PROVIDER]
WITH_CUDA = [CUDA_PROVIDER, CPU_PROVIDER]


@pytest.mark.parametrize("device, available, has_gpu, expected", [
    ("auto", CPU_ONLY, False, CPU_ONLY),
    ("auto", CPU_ONLY, True, CPU_ONLY),          # onnxruntime without CUDA
    ("auto", WITH_CUDA, False, CPU_ONLY),        # onnxruntime-gpu, no device
    ("auto", WITH_CUDA, True, WITH_CUDA),
    ("cpu", WITH_CUDA, True, CPU_ONLY),          # asked for the CPU: never CUDA
    ("cuda", WITH_CUDA, True, WITH_CUDA),
    (" CUDA ", WITH_CUDA, True, WITH_CUDA),      # case and spaces do not matter
])
def test_onnx_providers_follow_the_request_and_what_is_usable(device, available, has_gpu,
                                                               expected):
    assert accel.onnx_providers(device, available=available, has_gpu=has_gpu) == expected


@pytest.mark.parametrize("available, has_gpu, reason", [
    (CPU_ONLY, True, "no CUDAExecutionProvider"),
    (WITH_CUDA, False, "no GPU device"),
])
def test_cuda_requested_but_unusable_fails_loudly(available, has_gpu, reason):
    with pytest.raises(AcceleratorError, match=reason):
        accel.onnx_providers("cuda", available=available, has_gpu=has_gpu)


@pytest.mark.parametrize("device, cupy_found, has_gpu", [
    ("auto", False, False), ("auto", False, True), ("auto", True, False), ("cpu", True, True),
])
def test_array_module_is_numpy_unless_cupy_and_a_device_are_both_there(device, cupy_found,
                                                                       has_gpu):
    assert accel.array_module(device, cupy_found=cupy_found, has_gpu=has_gpu) is np


@pytest.mark.parametrize("cupy_found, has_gpu, reason", [
    (False, True, "CuPy is not installed"), (True, False, "no GPU device"),
])
def test_array_module_cuda_requested_but_unusable_fails_loudly(cupy_found, has_gpu, reason):
    with pytest.raises(AcceleratorError, match=reason):
        accel.array_module("cuda", cupy_found=cupy_found, has_gpu=has_gpu)


def test_the_environment_variable_is_read_at_call_time(monkeypatch):
    monkeypatch.setenv(accel.ENV_VAR, "cpu")
    assert accel.onnx_providers(available=WITH_CUDA, has_gpu=True) == CPU_ONLY
    monkeypatch.setenv(accel.ENV_VAR, "cuda")
    with pytest.raises(AcceleratorError):
        accel.onnx_providers(available=CPU_ONLY, has_gpu=False)
    # an explicit argument wins over the environment
    assert accel.onnx_providers("auto", available=CPU_ONLY, has_gpu=False) == CPU_ONLY


@pytest.mark.parametrize("bad", ["gpu", "tpu", "", "cuda:0"])
def test_unknown_device_names_are_rejected_with_their_source(bad, monkeypatch):
    with pytest.raises(AcceleratorError, match="argument"):
        accel.requested_device(bad)
    monkeypatch.setenv(accel.ENV_VAR, bad)
    with pytest.raises(AcceleratorError, match=accel.ENV_VAR):
        accel.requested_device()


def test_hidden_devices_count_as_absent(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert accel.gpu_present() is False


def test_this_machine_runs_on_the_cpu_with_numpy():
    """No GPU here: auto resolves to the CPU provider and NumPy (checked, not assumed)."""
    if accel.gpu_present():
        pytest.skip("a GPU is present")
    described = accel.describe()
    assert described["onnx_providers"] == CPU_ONLY
    assert described["array_module"] == "numpy"


@given(st.one_of(st.integers(-5, 5).map(np.arange), st.lists(st.floats(allow_nan=False))))
def test_to_host_returns_the_same_values_as_numpy(values):
    array = np.asarray(values)
    back = accel.to_host(array)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, array)


def test_importing_accel_loads_no_runtime():
    """The choice happens at call time: importing the module imports no ONNX Runtime."""
    import subprocess
    import sys

    code = ("import sys, pipeline.accel; "
            "print(sorted(m for m in ('onnxruntime', 'cupy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
