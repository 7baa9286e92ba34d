"""TensorRT inference backend (a :class:`~yolo_nano.core.backend.Backend`), one code path for 8.5 and 10.x.

Name-based I/O only (``num_io_tensors``, ``get_tensor_name``, ``set_tensor_address``,
``execute_async_v3``), no binding indices. The model metadata comes from the engine's identity record,
which is checked against the running TensorRT and GPU before the engine is touched. The device's
primary CUDA context is retained once (:class:`~yolo_nano.engines.cuda_context.PrimaryContext`) and
pushed/popped around each call, so the backend works from any thread. On integrated GPUs (Jetson) the
buffers are mapped pinned host memory: no copies at all. :meth:`TensorRTBackend.device_io` hands the
buffers, the stream and a copy-free ``execute`` to the CUDA pre/post-processing pipeline.

Lifecycle: construction is all or nothing (a failure after the context is retained frees what was
allocated and releases the context); :meth:`~TensorRTBackend.close` frees the TensorRT objects, buffers
and stream with the context current, pops it, then releases it, leaving the calling thread's context
stack as found; it is idempotent and safe from any thread, and a backend dropped without ``close()``
(also by the garbage collector in another thread) is closed the same way by ``__del__``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Dict, List, Optional

import numpy as np

from yolo_nano.core.backend import Backend, DeviceIO
from yolo_nano.core.metadata import ModelMetadata

from .cuda_context import PrimaryContext
from .device import import_tensorrt, query_gpu
from .identity import EngineIdentity, EngineMismatchError, check_compatible, read_record


class _Buffer:
    """One I/O tensor's memory: a host array and the device pointer TensorRT reads or writes (the same
    memory when mapped). Every pycuda allocation is appended to ``allocations`` as soon as it exists,
    so a failure half way through still frees it."""

    def __init__(self, cuda: Any, shape: List[int], dtype: Any, mapped: bool, allocations: List[Any]) -> None:
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        if mapped:
            self.host = cuda.pagelocked_empty(
                self.shape, self.dtype, mem_flags=cuda.host_alloc_flags.DEVICEMAP
            )
            allocations.append(self.host.base)
            self.device: Any = None
            self.device_ptr = int(self.host.base.get_device_pointer())
        else:
            self.host = cuda.pagelocked_empty(self.shape, self.dtype)
            allocations.append(self.host.base)
            self.device = cuda.mem_alloc(self.host.nbytes)
            allocations.append(self.device)
            self.device_ptr = int(self.device)


class TensorRTBackend(Backend):
    """Run a ``nano-build`` engine. ``metadata`` (from the engine's record), ``name`` (``"tensorrt"``),
    ``batch_size`` (the engine's batch for a static engine, e.g. every DLA engine; ``None`` for a
    dynamic-batch one), ``max_batch`` (the largest batch one ``infer`` takes).

    Raises :class:`~yolo_nano.engines.device.TensorRTUnavailable` (an ImportError) without TensorRT or
    pycuda, :class:`~yolo_nano.engines.identity.EngineRecordError` without a readable record and
    :class:`~yolo_nano.engines.identity.EngineMismatchError` when the engine was built for another
    TensorRT or GPU (the message has the ``nano-build`` command that rebuilds it).
    """

    name = "tensorrt"

    def __init__(self, engine_path: str, device: int = 0) -> None:
        self._closed = True  # until fully built: close() and __del__ of a failed construction do nothing
        self._lock = threading.RLock()
        self.path = os.fspath(engine_path)
        self.identity: EngineIdentity = read_record(self.path)
        self.metadata: ModelMetadata = self.identity.model_metadata()
        trt = import_tensorrt()  # a clear error when TensorRT is missing
        gpu = query_gpu(device)
        check_compatible(self.path, self.identity, str(trt.__version__), gpu.name, gpu.compute_capability)
        self._mapped = gpu.integrated and gpu.can_map_host_memory
        # Everything below lives in the CUDA context: one list to free, in reverse order.
        self._allocations: List[Any] = []
        self._buffers: Dict[str, _Buffer] = {}
        self._stream: Any = None
        self._context: Any = None
        self._engine: Any = None
        self._runtime: Any = None
        self._device_io: Optional[DeviceIO] = None
        self._ctx = PrimaryContext(device)  # retained: from here on a failure must release it
        try:
            with self._ctx:
                self._load(trt)
        except BaseException:
            self._release()
            raise
        self._closed = False

    def _load(self, trt: Any) -> None:
        import pycuda.driver as cuda

        self._cuda = cuda
        self._trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")
        self._runtime = trt.Runtime(logger)  # must outlive the engine
        with open(self.path, "rb") as f:
            self._engine = self._runtime.deserialize_cuda_engine(f.read())
        if self._engine is None:
            raise EngineMismatchError(
                f"TensorRT could not deserialize {self.path}; rebuild it with: {self.identity.build_command}"
            )
        self._context = self._engine.create_execution_context()
        self._stream = cuda.Stream()
        inputs: List[str] = []
        outputs: List[str] = []
        shapes: Dict[str, List[int]] = {}
        dtypes: Dict[str, Any] = {}
        # No local names for TensorRT objects here: a traceback keeps this frame's locals alive, and an
        # engine destroyed after the context is released leaks its device memory.
        for i in range(self._engine.num_io_tensors):
            tname = self._engine.get_tensor_name(i)
            is_input = self._engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs).append(tname)
            dims = self._engine.get_tensor_shape(tname)
            shapes[tname] = [int(dims[k]) for k in range(len(dims))]
            dtypes[tname] = np.dtype(trt.nptype(self._engine.get_tensor_dtype(tname)))
        meta = self.metadata
        if inputs != [meta.input_name] or sorted(outputs) != sorted(meta.output_names):
            raise EngineMismatchError(
                f"{self.path}: engine I/O {inputs} -> {outputs} does not match its record "
                f"({meta.input_name} -> {meta.output_names}); rebuild it with: {self.identity.build_command}"
            )
        # A -1 batch dimension needs set_input_shape before each run; it is a dynamic batch only when the
        # profile allows several sizes. A DLA engine built from a dynamic-batch ONNX keeps -1 but has a
        # static profile (min = opt = max): it runs exactly its batch, padded by the Detector.
        self._set_shape = shapes[meta.input_name][0] == -1
        profile = self.identity.profile
        static_profile = bool(profile) and profile[0][0] == profile[2][0]  # type: ignore[index]
        self._dynamic = self._set_shape and self.identity.dynamic_batch and not static_profile
        self.max_batch = self.identity.batch if self._set_shape else shapes[meta.input_name][0]
        self.batch_size = None if self._dynamic else self.max_batch
        n = int(self.max_batch)
        h, w = meta.input_size
        for tname in inputs + outputs:
            if tname == meta.input_name:
                full = [n, 3, h, w]
            else:
                full = list(meta.head_shape(next(hd for hd in meta.heads if hd.name == tname), n))
            self._buffers[tname] = _Buffer(cuda, full, dtypes[tname], self._mapped, self._allocations)
            if not self._context.set_tensor_address(tname, self._buffers[tname].device_ptr):
                raise EngineMismatchError(f"{self.path}: TensorRT refused the address of tensor {tname!r}")

    # -- running ------------------------------------------------------------------------------

    def _check_batch(self, n: int) -> None:
        if not 1 <= n <= int(self.max_batch or 0):
            raise ValueError(f"{self.path}: a batch of {n} images; this engine takes 1..{self.max_batch}")
        if not self._dynamic and n != self.max_batch:
            raise ValueError(
                f"{self.path}: a batch of {n} images; this engine was built for exactly {self.max_batch} "
                "(static shape, as DLA needs): pad the batch (Detector does)"
            )

    def _enqueue(self, n: int) -> None:
        """Queue the network on the first ``n`` images of the input buffer (context current, lock held)."""
        meta = self.metadata
        if self._set_shape:
            h, w = meta.input_size
            if not self._context.set_input_shape(meta.input_name, self._trt.Dims([n, 3, h, w])):
                raise RuntimeError(f"{self.path}: TensorRT refused input shape ({n}, 3, {h}, {w})")
        if not self._context.execute_async_v3(self._stream.handle):
            raise RuntimeError(f"TensorRT execution failed for {self.path}")

    def infer(self, batch: np.ndarray) -> List[np.ndarray]:
        """Run float32 (N, 3, H, W) through the engine; raw heads (N, A*(5+C), S, S) in metadata order.

        N must be 1..``max_batch``, and exactly ``batch_size`` for a static engine (the caller chunks and
        pads: :class:`~yolo_nano.runtime.Detector` does).
        """
        meta = self.metadata
        h, w = meta.input_size
        batch = np.asarray(batch)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != (3, h, w):
            raise ValueError(f"input batch must be (N, 3, {h}, {w}) float32, got {batch.shape}")
        n = batch.shape[0]
        self._check_batch(n)
        cuda = self._cuda
        with self._lock:
            self._check_open()
            with self._ctx:
                inp = self._buffers[meta.input_name]
                inp.host[:n] = batch
                if not self._mapped:
                    cuda.memcpy_htod_async(inp.device, inp.host[:n], self._stream)
                self._enqueue(n)
                if not self._mapped:
                    for head in meta.heads:
                        out = self._buffers[head.name]
                        cuda.memcpy_dtoh_async(out.host[:n], out.device, self._stream)
                self._stream.synchronize()
                return [self._buffers[head.name].host[:n].copy() for head in meta.heads]

    def device_io(self) -> DeviceIO:
        """The engine's buffers for the CUDA pipeline (valid until :meth:`close`)."""
        with self._lock:
            self._check_open()
            if self._device_io is None:
                meta = self.metadata
                inp = self._buffers[meta.input_name]
                if inp.dtype != np.float32:
                    raise EngineMismatchError(
                        f"{self.path}: the engine input is {inp.dtype}, the CUDA pipeline writes float32"
                    )
                heads = [self._buffers[hd.name] for hd in meta.heads]
                self._device_io = DeviceIO(
                    stream=int(self._stream.handle),
                    input_ptr=inp.device_ptr,
                    output_ptrs={hd.name: b.device_ptr for hd, b in zip(meta.heads, heads)},
                    output_shapes={hd.name: b.shape for hd, b in zip(meta.heads, heads)},
                    output_dtypes={hd.name: b.dtype for hd, b in zip(meta.heads, heads)},
                    max_batch=int(self.max_batch or 0),
                    fixed_batch=not self._dynamic,
                    execute=self._execute_device,
                    input_host=inp.host if self._mapped else None,
                    context=self._ctx,
                    lock=self._lock,
                )
            return self._device_io

    def _execute_device(self, n: int) -> None:
        """``DeviceIO.execute``: queue the network on the first ``n`` images already in the input buffer."""
        self._check_batch(n)
        with self._lock:
            self._check_open()
            with self._ctx:
                self._enqueue(n)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Free the TensorRT objects, buffers and stream, then release the context. Idempotent, any thread."""
        lock = getattr(self, "_lock", None)
        if lock is None:  # construction failed before anything was held
            return
        with lock:
            if self._closed:
                return
            self._closed = True
            self._release()

    def _release(self) -> None:
        # With the context current in this thread (pycuda would skip frees of another thread's context
        # silently): TensorRT objects first (they free device memory in their destructors), then our
        # buffers, then the stream. Then pop, then release the retain.
        try:
            with self._ctx:
                self._device_io = None
                self._context = self._engine = self._runtime = None
                self._buffers = {}
                error: Optional[BaseException] = None
                while self._allocations:  # newest first; one failed free does not stop the others
                    try:
                        self._allocations.pop().free()
                    except Exception as e:
                        error = error or e
                self._stream = None  # pycuda destroys a stream when its object goes away
                if error is not None:
                    raise error
        finally:
            self._ctx.release()

    def __del__(self) -> None:
        # Dropped without close(), perhaps by the garbage collector in another thread: free everything
        # now with the context pushed in this thread. A destructor must not raise.
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return f"TensorRTBackend({self.path!r}, precision={self.identity.precision}, batch_size={self.batch_size})"
