"""TensorRT inference backend (the runtime's Backend protocol), one code path for TensorRT 8.5 and 10.x.

Name-based I/O only (``num_io_tensors``, ``get_tensor_name``, ``set_tensor_address``,
``execute_async_v3``), no binding indices. The model metadata comes from the engine's identity record,
which is checked against the running TensorRT and GPU before the engine is touched. The device's
primary CUDA context is retained once and pushed/popped around each call, so ``infer`` works from any
thread. On integrated GPUs (Jetson) buffers are mapped pinned host memory: no copies at all.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, List, Optional

import numpy as np

from yolo_nano.core.metadata import ModelMetadata

from .device import PrimaryContext, import_tensorrt, query_gpu
from .identity import EngineIdentity, EngineMismatchError, check_compatible, read_record


class _Buffer:
    """A host array and the device pointer TensorRT reads or writes (the same memory when mapped)."""

    def __init__(self, cuda: Any, shape: List[int], dtype: Any, mapped: bool) -> None:
        self.mapped = mapped
        if mapped:
            self.host = cuda.pagelocked_empty(tuple(shape), dtype, mem_flags=cuda.host_alloc_flags.DEVICEMAP)
            self.device_ptr = int(self.host.base.get_device_pointer())
            self.device: Any = None
        else:
            self.host = cuda.pagelocked_empty(tuple(shape), dtype)
            self.device = cuda.mem_alloc(self.host.nbytes)
            self.device_ptr = int(self.device)


class TensorRTBackend:
    """Run a ``nano-build`` engine. ``metadata``, ``name`` (``"tensorrt"``), ``batch_size`` (None for a
    dynamic-batch engine, whose largest batch is ``max_batch``), ``infer(batch) -> List[np.ndarray]``.

    Raises :class:`~yolo_nano.engines.device.TensorRTUnavailable` (an ImportError) without TensorRT or
    pycuda, :class:`~yolo_nano.engines.identity.EngineRecordError` without a readable record and
    :class:`~yolo_nano.engines.identity.EngineMismatchError` when the engine was built for another
    TensorRT or GPU (the message has the ``nano-build`` command that rebuilds it).
    """

    name = "tensorrt"

    def __init__(self, engine_path: str, device: int = 0) -> None:
        self.path = os.fspath(engine_path)
        self.identity: EngineIdentity = read_record(self.path)
        self.metadata: ModelMetadata = self.identity.model_metadata()
        import_tensorrt()  # a clear error when TensorRT is missing
        import tensorrt as trt

        gpu = query_gpu(device)
        check_compatible(self.path, self.identity, str(trt.__version__), gpu.name, gpu.compute_capability)
        self._ctx = PrimaryContext(device)
        import pycuda.driver as cuda

        self._cuda = cuda
        self._lock = threading.Lock()
        self._mapped = gpu.integrated and gpu.can_map_host_memory
        with self._ctx:
            self._logger = trt.Logger(trt.Logger.WARNING)
            trt.init_libnvinfer_plugins(self._logger, "")
            self._runtime = trt.Runtime(self._logger)  # must outlive the engine
            with open(self.path, "rb") as f:
                self._engine = self._runtime.deserialize_cuda_engine(f.read())
            if self._engine is None:
                raise EngineMismatchError(
                    f"TensorRT could not deserialize {self.path}; rebuild it with: {self.identity.build_command}"
                )
            self._context = self._engine.create_execution_context()
            self._stream = cuda.Stream()
            self._inputs: List[str] = []
            self._outputs: List[str] = []
            shapes: Dict[str, List[int]] = {}
            dtypes: Dict[str, Any] = {}
            for i in range(self._engine.num_io_tensors):
                tname = self._engine.get_tensor_name(i)
                is_input = self._engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT
                (self._inputs if is_input else self._outputs).append(tname)
                dims = self._engine.get_tensor_shape(tname)
                shapes[tname] = [int(dims[k]) for k in range(len(dims))]
                dtypes[tname] = np.dtype(trt.nptype(self._engine.get_tensor_dtype(tname)))
            meta = self.metadata
            if self._inputs != [meta.input_name] or sorted(self._outputs) != sorted(meta.output_names):
                raise EngineMismatchError(
                    f"{self.path}: engine I/O {self._inputs} -> {self._outputs} does not match its record "
                    f"({meta.input_name} -> {meta.output_names}); rebuild it with: {self.identity.build_command}"
                )
            self._dynamic = shapes[meta.input_name][0] == -1
            self.max_batch = self.identity.batch if self._dynamic else int(shapes[meta.input_name][0])
            self.batch_size: Optional[int] = None if self._dynamic else self.max_batch
            self._buffers: Dict[str, _Buffer] = {}
            for tname in self._inputs + self._outputs:
                if tname == meta.input_name:
                    full = [self.max_batch, 3, meta.input_size[0], meta.input_size[1]]
                else:
                    head = next(h for h in meta.heads if h.name == tname)
                    full = list(meta.head_shape(head, self.max_batch))
                self._buffers[tname] = _Buffer(cuda, full, dtypes[tname], self._mapped)
                self._context.set_tensor_address(tname, self._buffers[tname].device_ptr)
        self._closed = False

    def infer(self, batch: np.ndarray) -> List[np.ndarray]:
        """Run float32 (N, 3, H, W) through the engine; raw heads (N, A*(5+C), S, S) in metadata order.

        N above the engine's batch is split into chunks; a short batch on a fixed-batch engine is padded.
        """
        meta = self.metadata
        h, w = meta.input_size
        batch = np.asarray(batch)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != (3, h, w):
            raise ValueError(f"input batch must be (N, 3, {h}, {w}) float32, got {batch.shape}")
        if self._closed:
            raise RuntimeError(f"{self.path}: backend is closed")
        n = batch.shape[0]
        if n > self.max_batch:
            parts = [self.infer(batch[i : i + self.max_batch]) for i in range(0, n, self.max_batch)]
            return [np.concatenate([p[k] for p in parts], axis=0) for k in range(len(meta.heads))]
        run_n = n if self._dynamic else self.max_batch
        cuda = self._cuda
        with self._lock, self._ctx:
            inp = self._buffers[meta.input_name]
            inp.host[:n] = batch
            if run_n > n:
                inp.host[n:run_n] = 0.0
            if self._dynamic:
                self._context.set_input_shape(meta.input_name, (run_n, 3, h, w))
            if not self._mapped:
                cuda.memcpy_htod_async(inp.device, inp.host[:run_n], self._stream)
            if not self._context.execute_async_v3(self._stream.handle):
                raise RuntimeError(f"TensorRT execution failed for {self.path}")
            for tname in self._outputs:
                out = self._buffers[tname]
                if not self._mapped:
                    cuda.memcpy_dtoh_async(out.host[:run_n], out.device, self._stream)
            self._stream.synchronize()
            return [self._buffers[head.name].host[:n].copy() for head in meta.heads]

    def close(self) -> None:
        """Free the engine, its buffers and the retained context."""
        if getattr(self, "_closed", True):
            return
        with self._lock, self._ctx:
            for buf in self._buffers.values():
                if buf.device is not None:
                    buf.device.free()
            self._buffers = {}
            del self._context, self._engine, self._runtime
        self._ctx.detach()
        self._closed = True

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TensorRTBackend({self.path!r}, precision={self.identity.precision}, batch_size={self.batch_size})"
