"""The ``Backend`` base class every inference backend subclasses (Polygraphy's runner is the model).

A backend runs the network and nothing else: preprocessed float32 (N, 3, H, W) in, raw heads out.
Letterbox, decode and NMS belong to the caller (:class:`yolo_nano.runtime.Detector`), which also does
all batch chunking and padding: ``infer`` takes at most ``max_batch`` images, and exactly
``batch_size`` when that is set.

Two ways in:

* host: ``infer(batch) -> List[np.ndarray]``, every backend;
* device (backends on a CUDA GPU): :meth:`Backend.device_io` returns a :class:`DeviceIO` with the
  engine's input buffer and output buffers as device pointers, the CUDA stream and an ``execute`` that
  copies nothing. The CUDA pre/post-processing pipeline writes the letterboxed frames straight into
  ``input_ptr`` and decodes the heads where they lie. Host-only backends return ``None``.

Implementations: ``yolo_nano.runtime.onnxruntime_backend.OnnxRuntimeBackend``,
``yolo_nano.engines.trt_backend.TensorRTBackend``, ``yolo_nano.model.torch_backend.TorchBackend``;
``yolo_nano.runtime.open_backend`` picks one from a model path.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .metadata import ModelMetadata


class ModelLoadError(ValueError):
    """The model file cannot be used: missing, unreadable, not a YOLO model, or not what its metadata says."""


class BackendUnavailableError(RuntimeError):
    """The backend the model needs is not installed here (e.g. TensorRT off a Jetson)."""


class BackendClosedError(RuntimeError):
    """``infer`` or ``device_io`` on a backend after ``close()``."""


@dataclass
class DeviceIO:
    """The device side of a backend on a CUDA GPU: where its tensors live and how to run it in place.

    ``stream``: the CUDA stream handle (``cudaStream_t`` as an int) the backend executes on; work queued
    on it before :meth:`execute` is ordered before the network. ``input_ptr``: device pointer of the
    float32 input buffer, ``max_batch x 3 x H x W`` elements, C-contiguous NCHW. ``input_host``: the
    same memory as a host array when it is mapped pinned memory (integrated GPUs: Jetson), else ``None``.
    ``output_ptrs``/``output_shapes``/``output_dtypes``: per head name (metadata order), the device
    pointer of the raw head buffer and its full (max_batch, A*(5+C), S, S) shape and numpy dtype.
    ``execute(n)``: run the network on the first ``n`` images already in the input buffer, queued on
    ``stream``; copies nothing and does not synchronize. ``max_batch``: the buffers' batch capacity;
    ``execute`` needs ``n == max_batch`` when ``fixed_batch`` (DLA, fixed-batch engines).
    ``context``: a context manager that makes the backend's CUDA context current in the calling thread
    (``with io.context: ...``; re-entrant). ``lock``: a re-entrant lock the backend holds while it uses
    the buffers (``infer``, ``execute``): hold it from writing the input to reading the outputs when
    several threads share the backend.

    Valid until the backend is closed: the pointers and ``input_host`` then name freed memory.
    """

    stream: int
    input_ptr: int
    output_ptrs: Dict[str, int]
    output_shapes: Dict[str, Tuple[int, ...]]
    output_dtypes: Dict[str, Any]
    max_batch: int
    fixed_batch: bool
    execute: Any  # Callable[[int], None]
    input_host: Optional[np.ndarray] = None
    context: Any = field(default=None, repr=False)  # the CUDA context to make current around device work
    lock: Any = field(default=None, repr=False)  # threading.RLock guarding the buffers


class Backend(abc.ABC):
    """One loaded model on one inference engine.

    Attributes every backend sets in ``__init__``: ``metadata`` (:class:`ModelMetadata`, read from the
    model itself), ``name`` (e.g. ``"onnxruntime-cpu"``, ``"tensorrt"``, ``"torch"``), ``batch_size``
    (the fixed batch the model takes, ``None`` when dynamic) and ``max_batch`` (the most images one
    ``infer`` takes: ``batch_size`` when fixed; ``None`` for no limit).

    ``close()`` releases what the backend holds; it is idempotent and the backend is a context manager.
    """

    name: str = "backend"
    metadata: ModelMetadata
    batch_size: Optional[int] = None
    max_batch: Optional[int] = None
    _closed: bool = False

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> List[np.ndarray]:
        """Run float32 (N, 3, H, W) through the network (N <= ``max_batch``; N == ``batch_size`` when
        that is set); return the raw heads (N, A*(5+C), S, S) in ``metadata.heads`` order, on the host."""

    def device_io(self) -> Optional[DeviceIO]:
        """The device-side buffers and ``execute`` for the CUDA pipeline; ``None`` for host-only backends."""
        return None

    def close(self) -> None:
        """Release the model and its buffers. Safe to call twice and from any thread."""
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise BackendClosedError(f"{self!r} is closed")

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["Backend", "BackendClosedError", "BackendUnavailableError", "DeviceIO", "ModelLoadError"]
