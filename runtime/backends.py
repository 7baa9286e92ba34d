"""Every inference backend behind one opener (Polygraphy style: optional dependencies imported lazily).

Each backend subclasses :class:`~yolo_nano.core.backend.Backend` (``metadata``, ``name``,
``batch_size``, ``max_batch``, ``infer``, ``device_io``, ``close``, context manager):

* :class:`~yolo_nano.runtime.onnxruntime_backend.OnnxRuntimeBackend`: ``.onnx`` (CPU or CUDA provider);
* ``yolo_nano.engines.trt_backend.TensorRTBackend``: ``.engine``/``.trt``/``.plan`` (TensorRT + pycuda);
* ``yolo_nano.model.torch_backend.TorchBackend``: ``.safetensors`` weights (PyTorch, the train extra).

:func:`open_backend` picks one from the model path (or the name asked for).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

from yolo_nano.core.backend import (
    Backend,
    BackendClosedError,
    BackendUnavailableError,
    DeviceIO,
    ModelLoadError,
)
from yolo_nano.core.modelfiles import is_engine_path, is_weights_path

from .onnxruntime_backend import OnnxRuntimeBackend

BACKEND_CHOICES = ("auto", "onnxruntime", "onnxruntime-cpu", "onnxruntime-cuda", "tensorrt", "torch")

_ONNX_HINT = "Here, run the ONNX model instead: Detector('model.onnx') or `nano-detect SOURCE -m model.onnx`"


def _tensorrt_backend(path: str) -> Backend:
    try:
        from yolo_nano.engines.trt_backend import TensorRTBackend
    except ImportError as e:
        raise BackendUnavailableError(
            f"{path} is a TensorRT engine and running it needs TensorRT with pycuda (JetPack on a Jetson) "
            f"({type(e).__name__}: {e}). {_ONNX_HINT}"
        ) from e
    try:
        return TensorRTBackend(path)
    except ImportError as e:  # TensorRTUnavailable: tensorrt or pycuda missing
        raise BackendUnavailableError(
            f"{path}: running .engine files needs TensorRT and pycuda: {e}. {_ONNX_HINT}"
        ) from e
    except ValueError as e:  # EngineRecordError: no or bad identity record
        raise ModelLoadError(str(e)) from e
    except RuntimeError as e:  # GpuUnavailable, EngineMismatchError (its message says how to rebuild)
        if type(e).__name__ == "GpuUnavailable":
            raise BackendUnavailableError(f"{path}: TensorRT needs a CUDA GPU: {e}. {_ONNX_HINT}") from e
        raise ModelLoadError(str(e)) from e


def _torch_backend(path: str, threads: Optional[int]) -> Backend:
    try:
        from yolo_nano.model.torch_backend import TorchBackend
    except ImportError as e:  # torch (or safetensors) missing: the train extra is not installed
        raise BackendUnavailableError(
            f"{path}: running .safetensors weights needs PyTorch: pip install '.[train]' ({e}). Or export "
            "them once with `nano-export` and run the .onnx"
        ) from e
    try:
        return TorchBackend(path, threads=threads)
    except ValueError as e:  # WeightsError, MetadataError: not loadable weights
        raise ModelLoadError(str(e) if path in str(e) else f"{path}: {e}") from e


def open_backend(model_path: str, backend: str = "auto", threads: Optional[int] = None) -> Backend:
    """Open ``model_path`` with the backend named ``backend`` (one of :data:`BACKEND_CHOICES`).

    ``"auto"``: TensorRT for engine files (``.engine``, ``.trt``, ``.plan``), PyTorch for
    ``.safetensors`` weights, ONNX Runtime for anything else (CUDA provider when present, else CPU).
    ``threads``: CPU threads for ONNX Runtime (intra-op) or PyTorch. Raises :class:`ModelLoadError` for
    a missing or unusable file, :class:`BackendUnavailableError` when the backend is not installed.
    """
    path = os.fspath(model_path)
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    if not os.path.isfile(path):
        raise ModelLoadError(f"model file not found: {path}")
    if backend == "auto":
        backend = "tensorrt" if is_engine_path(path) else "torch" if is_weights_path(path) else "onnxruntime"
    if backend == "tensorrt":
        return _tensorrt_backend(path)
    if backend == "torch":
        return _torch_backend(path, threads)
    if is_engine_path(path):
        raise ValueError(f"{path} is a TensorRT engine; ONNX Runtime cannot run it (use backend='tensorrt')")
    if is_weights_path(path):
        raise ValueError(f"{path} holds PyTorch weights; ONNX Runtime cannot run them (use backend='torch')")
    device = {"onnxruntime-cpu": "cpu", "onnxruntime-cuda": "cuda"}.get(backend, "auto")
    return OnnxRuntimeBackend(path, device=device, threads=threads)


__all__: Sequence[str] = (
    "BACKEND_CHOICES",
    "Backend",
    "BackendClosedError",
    "BackendUnavailableError",
    "DeviceIO",
    "ModelLoadError",
    "OnnxRuntimeBackend",
    "open_backend",
)
