"""Run-time choice of the compute device: ONNX Runtime providers and the array module.

Nothing is chosen at import: every function looks at what is installed and present when
it is called, so a Ray worker on a GPU node and a CPU driver each choose for themselves.

The device is ``auto`` (CUDA when usable, else CPU), ``cpu`` or ``cuda``. It comes from
the caller's argument (a profile or serving-config setting), else from the environment
variable ``VEIL_DEVICE`` read at call time (pass it to Ray workers through their
``runtime_env``), else ``auto``. Asking for ``cuda`` where it is not usable is an error,
never a quiet fall back to the CPU.

* ONNX Runtime: ``CUDAExecutionProvider`` (then CPU for the operators CUDA lacks) when
  the installed onnxruntime has it (``onnxruntime-gpu``, the ``gpu`` extra) and a device
  is present; ``CPUExecutionProvider`` otherwise.
* Arrays: CuPy when importable and a device is present (``cupy-cuda12x``, the ``gpu``
  extra), NumPy otherwise; :func:`to_host` brings a result back as NumPy. The pixel
  views (:mod:`pipeline.pixel.frames`) and redaction (:mod:`pipeline.pixel.redact`) take
  the module as an ``xp`` argument (:func:`pixel_module` when none is given): a decoded
  frame is copied to the device once, and back once, as a detector view or as the
  written pixel bytes.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np

from pipeline.errors import VeilError

logger = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
ENV_VAR = "VEIL_DEVICE"
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


class AcceleratorError(VeilError, RuntimeError):
    """A device was requested that is not usable here, or the request is malformed."""


def requested_device(device: str | None = None) -> str:
    """The device asked for: ``device``, else ``$VEIL_DEVICE``, else ``auto``.

    Raises
    ------
    AcceleratorError
        When the value is not one of ``auto``, ``cpu``, ``cuda``.
    """
    value = device if device is not None else os.environ.get(ENV_VAR, "auto")
    value = value.strip().lower()
    if value not in DEVICES:
        source = "argument" if device is not None else f"${ENV_VAR}"
        raise AcceleratorError(f"device {value!r} (from {source}) is not one of {DEVICES}")
    return value


def gpu_present() -> bool:
    """Whether an NVIDIA device is visible to this process (driver files, no CUDA import)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    try:
        return gpus.is_dir() and any(gpus.iterdir())
    except OSError:
        return False


def ort_providers_available() -> list[str]:
    """Providers the installed onnxruntime was built with (empty when not installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def cupy_importable() -> bool:
    """Whether CuPy is installed (found without importing it)."""
    return importlib.util.find_spec("cupy") is not None


def onnx_providers(
    device: str | None = None,
    *,
    available: list[str] | None = None,
    has_gpu: bool | None = None,
) -> list[str]:
    """ONNX Runtime providers for ``device``, best first.

    ``available`` and ``has_gpu`` default to what this machine has (given for tests).

    Raises
    ------
    AcceleratorError
        ``cuda`` requested without a CUDA-enabled onnxruntime or without a device.
    """
    wanted = requested_device(device)
    providers = ort_providers_available() if available is None else available
    present = gpu_present() if has_gpu is None else has_gpu
    cuda_ok = CUDA_PROVIDER in providers and present
    if wanted == "cuda" and not cuda_ok:
        missing = ("onnxruntime has no CUDAExecutionProvider (install the 'gpu' extra)"
                   if CUDA_PROVIDER not in providers else "no GPU device is visible")
        raise AcceleratorError(f"device 'cuda' requested but {missing}")
    if wanted != "cpu" and cuda_ok:
        return [CUDA_PROVIDER, CPU_PROVIDER]
    return [CPU_PROVIDER]


def array_module(
    device: str | None = None,
    *,
    cupy_found: bool | None = None,
    has_gpu: bool | None = None,
) -> ModuleType:
    """``cupy`` on a usable GPU, ``numpy`` otherwise.

    Raises
    ------
    AcceleratorError
        ``cuda`` requested without CuPy or without a device, or CuPy fails to import.
    """
    wanted = requested_device(device)
    found = cupy_importable() if cupy_found is None else cupy_found
    present = gpu_present() if has_gpu is None else has_gpu
    if wanted == "cuda" and not (found and present):
        missing = "CuPy is not installed (install the 'gpu' extra)" if not found else \
            "no GPU device is visible"
        raise AcceleratorError(f"device 'cuda' requested but {missing}")
    if wanted == "cpu" or not (found and present):
        return np
    try:
        return importlib.import_module("cupy")
    except ImportError as exc:  # installed but broken (e.g. CUDA runtime missing)
        raise AcceleratorError("CuPy is installed but does not import") from exc


def array_namespace(array: Any) -> ModuleType:
    """The array module an array belongs to: ``numpy`` for NumPy arrays, else the module
    the array names through ``__array_namespace__`` (CuPy, array-API libraries).

    Raises
    ------
    AcceleratorError
        When ``array`` is not an array of a known module.
    """
    if isinstance(array, np.ndarray | np.generic):
        return np
    namespace = getattr(array, "__array_namespace__", None)
    if namespace is not None:
        return namespace()
    root = type(array).__module__.split(".", 1)[0]
    if root == "cupy":  # CuPy releases without __array_namespace__
        return importlib.import_module("cupy")
    raise AcceleratorError(f"{type(array).__name__} is not an array of a known module")


def pixel_module(xp: ModuleType | None = None, device: str | None = None) -> ModuleType:
    """The array module for pixel work: ``xp`` when given, else :func:`array_module`
    of ``device`` (``$VEIL_DEVICE``, else ``auto``), chosen now, at the call."""
    return xp if xp is not None else array_module(device)


def to_host(array: Any) -> np.ndarray:
    """A NumPy array from a NumPy or CuPy array (copied from the device when needed)."""
    if isinstance(array, np.ndarray):
        return array
    get = getattr(array, "get", None)
    if get is None:
        return np.asarray(array)
    return np.asarray(get())


def make_session(model: bytes, device: str | None = None,
                 intra_op_num_threads: int | None = None) -> Any:
    """An ONNX Runtime session on the providers chosen for ``device``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if intra_op_num_threads is not None:
        options.intra_op_num_threads = intra_op_num_threads
    providers = onnx_providers(device)
    session = ort.InferenceSession(model, sess_options=options, providers=providers)
    logger.info("onnxruntime session providers: %s", session.get_providers())
    return session


def describe(device: str | None = None) -> dict[str, Any]:
    """What would be used for ``device`` here (for benchmark and health reports)."""
    xp = array_module(device)
    return {
        "requested": requested_device(device),
        "gpu_present": gpu_present(),
        "onnx_providers": onnx_providers(device),
        "array_module": xp.__name__,
    }
