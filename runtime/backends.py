"""Inference backends behind one small interface (Polygraphy style: lazy optional dependencies).

A backend is any object with

* ``metadata``: :class:`~yolo_nano.core.metadata.ModelMetadata` read from the model itself,
* ``name``: ``str``, e.g. ``"onnxruntime-cpu"``, ``"onnxruntime-cuda"``, ``"tensorrt"``, ``"torch"``,
* ``batch_size``: ``Optional[int]``, the fixed batch the model takes, ``None`` when dynamic,
* ``infer(batch) -> List[np.ndarray]``: ``batch`` float32 (N, 3, H, W) preprocessed input; returns the
  raw head tensors (N, A*(5+C), S, S) in ``metadata.heads`` order.

:class:`OnnxRuntimeBackend` lives here; the TensorRT backend (``yolo_nano.engines.trt_backend``) and the
PyTorch one (``yolo_nano.model``) follow the protocol by duck typing. :func:`open_backend` picks one from
a model path.
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from yolo_nano.core.metadata import MetadataError, ModelMetadata, read_onnx_metadata

BACKEND_CHOICES = ("auto", "onnxruntime", "onnxruntime-cpu", "onnxruntime-cuda", "tensorrt")


class ModelLoadError(ValueError):
    """The model file cannot be used: missing, unreadable, not a YOLO model, or not what its metadata says."""


class BackendUnavailableError(RuntimeError):
    """The backend the model needs is not installed here (e.g. TensorRT off a Jetson)."""


@runtime_checkable
class Backend(Protocol):
    """What :class:`yolo_nano.runtime.Detector` needs from an inference backend."""

    metadata: ModelMetadata
    name: str
    batch_size: Optional[int]

    def infer(self, batch: np.ndarray) -> List[np.ndarray]:
        """Run float32 (N, 3, H, W) through the network; raw heads in ``metadata.heads`` order."""
        ...


def _dim_value(d: Any) -> Optional[int]:
    return d if isinstance(d, int) and d > 0 else None


class OnnxRuntimeBackend:
    """ONNX Runtime session on an exported ``.onnx`` model.

    ``device``: ``"auto"`` (CUDA execution provider if this onnxruntime build has it, else CPU),
    ``"cpu"`` or ``"cuda"``. ``threads``: intra-op thread count (``None``: ONNX Runtime's default, one
    per physical core). The metadata is read from the file and the session's input and outputs are
    checked against it, so a model that is not what its metadata says fails here, not in decode.
    ``infer`` is safe to call from several threads at once (ONNX Runtime sessions are).
    """

    def __init__(self, model_path: str, *, device: str = "auto", threads: Optional[int] = None) -> None:
        import onnxruntime as ort

        path = os.fspath(model_path)
        if not os.path.isfile(path):
            raise ModelLoadError(f"model file not found: {path}")
        try:
            self.metadata: ModelMetadata = read_onnx_metadata(path)
        except MetadataError as e:  # its message names the file already when the file is unreadable
            msg = str(e)
            raise ModelLoadError(msg if msg.startswith(path) else f"{path}: {msg}") from e
        available = ort.get_available_providers()
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise BackendUnavailableError(
                "device='cuda' needs onnxruntime-gpu with the CUDA execution provider; this onnxruntime has "
                f"{available}. Install onnxruntime-gpu, or use device='cpu'"
            )
        use_cuda = device == "cuda" or (device == "auto" and "CUDAExecutionProvider" in available)
        providers: List[Any] = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        )
        opts = ort.SessionOptions()
        if threads is not None:
            if int(threads) < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(path, sess_options=opts, providers=providers)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types
            raise ModelLoadError(
                f"{path}: ONNX Runtime cannot load the model ({type(e).__name__}: {e})"
            ) from e
        used = self.session.get_providers()
        self.name = "onnxruntime-cuda" if "CUDAExecutionProvider" in used else "onnxruntime-cpu"
        self.threads = threads
        self.path = path
        self._check_io()

    def _check_io(self) -> None:
        meta = self.metadata
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != meta.input_name:
            raise ModelLoadError(
                f"{self.path}: expected one input named {meta.input_name!r}, the model has "
                f"{[i.name for i in inputs]}; is this a yolo_nano export?"
            )
        shape = list(inputs[0].shape)
        h, w = meta.input_size
        if len(shape) != 4 or _dim_value(shape[1]) not in (3, None):
            raise ModelLoadError(f"{self.path}: input shape {shape} is not (N, 3, H, W)")
        if (_dim_value(shape[2]), _dim_value(shape[3])) not in ((h, w), (None, None)):
            raise ModelLoadError(
                f"{self.path}: input shape {shape} does not match metadata input_size {h}x{w}"
            )
        self.batch_size: Optional[int] = _dim_value(shape[0])
        outputs = {o.name: list(o.shape) for o in self.session.get_outputs()}
        missing = [n for n in meta.output_names if n not in outputs]
        if missing:
            raise ModelLoadError(
                f"{self.path}: outputs {missing} named in the metadata are not in the model (it has "
                f"{sorted(outputs)}); re-export it with `nano-export`"
            )
        for head in meta.heads:
            want = meta.head_shape(head, batch=self.batch_size or 1)
            got = outputs[head.name]
            ok = len(got) == 4 and all(_dim_value(g) in (x, None) for g, x in zip(got[1:], want[1:]))
            if not ok:
                raise ModelLoadError(
                    f"{self.path}: output {head.name!r} has shape {got}, the metadata implies (N, "
                    f"{want[1]}, {want[2]}, {want[3]}) for {meta.num_classes} classes and stride {head.stride}"
                )
        self._output_names = meta.output_names

    def infer(self, batch: np.ndarray) -> List[np.ndarray]:
        """Run float32 (N, 3, H, W) and return the raw heads in metadata order (N from the batch)."""
        return self.session.run(self._output_names, {self.metadata.input_name: batch})

    def __repr__(self) -> str:
        return f"OnnxRuntimeBackend({self.path!r}, name={self.name!r}, batch_size={self.batch_size})"


def _tensorrt_backend(path: str) -> Any:
    onnx_hint = (
        "Here, run the ONNX model instead: Detector('model.onnx') or `nano-detect SOURCE -m model.onnx`"
    )
    try:
        from yolo_nano.engines.trt_backend import TensorRTBackend
    except ImportError as e:
        raise BackendUnavailableError(
            f"{path} is a TensorRT engine and running it needs TensorRT with pycuda (JetPack on a Jetson) "
            f"({type(e).__name__}: {e}). {onnx_hint}"
        ) from e
    try:
        return TensorRTBackend(path)
    except ImportError as e:  # TensorRTUnavailable: tensorrt or pycuda missing
        raise BackendUnavailableError(
            f"{path}: running .engine files needs TensorRT and pycuda: {e}. {onnx_hint}"
        ) from e
    except ValueError as e:  # EngineRecordError: no or bad identity record
        raise ModelLoadError(str(e)) from e
    except RuntimeError as e:  # GpuUnavailable, EngineMismatchError (its message says how to rebuild)
        if type(e).__name__ == "GpuUnavailable":
            raise BackendUnavailableError(f"{path}: TensorRT needs a CUDA GPU: {e}. {onnx_hint}") from e
        raise ModelLoadError(str(e)) from e


def open_backend(model_path: str, backend: str = "auto", threads: Optional[int] = None) -> Any:
    """Open ``model_path`` with the backend named ``backend`` (one of :data:`BACKEND_CHOICES`).

    ``"auto"``: ``.engine``/``.trt``/``.plan`` -> TensorRT, anything else -> ONNX Runtime (CUDA provider
    when present, else CPU). ``threads``: CPU intra-op threads for ONNX Runtime.
    """
    path = os.fspath(model_path)
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    is_engine = path.lower().endswith((".engine", ".trt", ".plan"))
    if backend == "tensorrt" or (backend == "auto" and is_engine):
        if not os.path.isfile(path):
            raise ModelLoadError(f"model file not found: {path}")
        return _tensorrt_backend(path)
    if is_engine:
        raise ValueError(f"{path} is a TensorRT engine; ONNX Runtime cannot run it (use backend='tensorrt')")
    device = {"onnxruntime-cpu": "cpu", "onnxruntime-cuda": "cuda"}.get(backend, "auto")
    return OnnxRuntimeBackend(path, device=device, threads=threads)


def is_backend(obj: Any) -> bool:
    """True when ``obj`` looks like a :class:`Backend` (has metadata, name, batch_size and infer)."""
    return all(hasattr(obj, a) for a in ("metadata", "name", "batch_size", "infer"))


__all__: Sequence[str] = (
    "BACKEND_CHOICES",
    "Backend",
    "BackendUnavailableError",
    "ModelLoadError",
    "OnnxRuntimeBackend",
    "is_backend",
    "open_backend",
)
