"""A stand-in for the ``tensorrt`` module with only the members ``engines/trt_backend.py`` uses, under
their real names and signatures (all present in TensorRT 8.5 and 10.x; :data:`TRT_MEMBERS` lists them).

An engine file here is a small JSON plan pointing at an ONNX model; the engine computes its outputs
with ONNX Runtime from the input it finds at the tensor addresses in the fake pycuda's device memory
(:mod:`testsupport.fake_pycuda`), so results are real. Like TensorRT it needs a current, live CUDA
context to deserialize, create contexts and execute; static shapes cannot change (DLA engines are
static: runtime shape = build shape); it records every execution's batch and any object destroyed
without a current context (TensorRT frees device memory in its destructors).

``install(monkeypatch)`` puts a fresh module in ``sys.modules["tensorrt"]`` and returns its
:class:`TrtState`; :func:`make_engine` writes an engine and its identity record.
"""

from __future__ import annotations

import enum
import json
import os
import sys
import types
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

MAGIC = b"yolo-nano fake TensorRT plan\n"

#: The tensorrt members the fake provides: each exists in TensorRT 8.5 and 10.x.
TRT_MEMBERS = (
    "__version__",
    "Builder",
    "DataType",
    "Dims",
    "ICudaEngine",
    "IExecutionContext",
    "Logger",
    "Runtime",
    "TensorIOMode",
    "init_libnvinfer_plugins",
    "nptype",
)


class TrtState:
    """What the fake TensorRT saw: ``executions`` (batch of each run), ``deserialized``, ``live`` (engines
    and execution contexts not yet destroyed) and ``destroyed_without_context``."""

    def __init__(self) -> None:
        self.executions: List[int] = []
        self.deserialized = 0
        self.live: Dict[int, str] = {}
        self.destroyed_without_context = 0
        self.log: List[str] = []


def _cuda_state() -> Any:
    driver = sys.modules.get("pycuda.driver")
    return getattr(driver, "_fake_state", None)


def _context_current() -> bool:
    state = _cuda_state()
    return state is not None and state.current_context_active()


def _make_module(version: str, state: TrtState) -> types.ModuleType:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class Logger:
        INTERNAL_ERROR = Severity.INTERNAL_ERROR
        ERROR = Severity.ERROR
        WARNING = Severity.WARNING
        INFO = Severity.INFO
        VERBOSE = Severity.VERBOSE

        def __init__(self, min_severity: Severity = Severity.WARNING) -> None:
            self.min_severity = min_severity

        def log(self, severity: Severity, msg: str) -> None:
            if severity <= self.min_severity:
                state.log.append(f"{severity.name}: {msg}")

    Logger.Severity = Severity  # type: ignore[attr-defined]

    class DataType(enum.IntEnum):
        FLOAT = 0
        HALF = 1
        INT8 = 2
        INT32 = 3
        BOOL = 4

    numpy_types = {
        DataType.FLOAT: np.float32,
        DataType.HALF: np.float16,
        DataType.INT8: np.int8,
        DataType.INT32: np.int32,
        DataType.BOOL: np.bool_,
    }

    def nptype(trt_type: DataType) -> Any:
        return numpy_types[trt_type]

    class TensorIOMode(enum.IntEnum):
        NONE = 0
        INPUT = 1
        OUTPUT = 2

    class Dims:
        def __init__(self, shape: Sequence[int] = ()) -> None:
            self._dims = tuple(int(d) for d in shape)

        def __len__(self) -> int:
            return len(self._dims)

        def __getitem__(self, i: int) -> int:
            return self._dims[i]

        def __iter__(self) -> Any:
            return iter(self._dims)

        def __repr__(self) -> str:
            return f"Dims({list(self._dims)})"

    def init_libnvinfer_plugins(logger: Logger, namespace: str) -> bool:
        return True

    class Builder:
        def __init__(self, logger: Logger) -> None:
            raise NotImplementedError("the fake TensorRT runs engines; it does not build them")

    class _Tracked:
        _kind = "object"

        def _track(self) -> None:
            state.live[id(self)] = self._kind

        def __del__(self) -> None:
            if state.live.pop(id(self), None) is not None and not _context_current():
                state.destroyed_without_context += 1

    class ICudaEngine(_Tracked):
        _kind = "engine"

        def __init__(self, plan: Dict[str, Any], logger: Logger) -> None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            self._logger = logger
            self._session = ort.InferenceSession(
                plan["onnx"], sess_options=opts, providers=["CPUExecutionProvider"]
            )
            self._static_batch: Optional[int] = None if plan["dynamic"] else int(plan["batch"])
            self._max_batch = int(plan["batch"])
            inp = self._session.get_inputs()[0]
            # A static profile over a -1 batch dimension (DLA from a dynamic-batch ONNX): min = max.
            self._min_batch = self._max_batch if plan.get("static_profile") else 1
            batch = -1 if plan["dynamic"] or plan.get("static_profile") else self._max_batch
            self._io: List[Tuple[str, TensorIOMode, Tuple[int, ...]]] = [
                (inp.name, TensorIOMode.INPUT, (batch,) + tuple(int(d) for d in inp.shape[1:]))
            ]
            for o in self._session.get_outputs():
                self._io.append((o.name, TensorIOMode.OUTPUT, (batch,) + tuple(int(d) for d in o.shape[1:])))
            self._track()

        def _tensor(self, name: str) -> Tuple[str, TensorIOMode, Tuple[int, ...]]:
            for t in self._io:
                if t[0] == name:
                    return t
            raise KeyError(name)

        @property
        def num_io_tensors(self) -> int:
            return len(self._io)

        def get_tensor_name(self, index: int) -> str:
            return self._io[index][0]

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return self._tensor(name)[1]

        def get_tensor_shape(self, name: str) -> Dims:
            return Dims(self._tensor(name)[2])

        def get_tensor_dtype(self, name: str) -> DataType:
            self._tensor(name)
            return DataType.FLOAT

        def create_execution_context(self) -> IExecutionContext:
            if not _context_current():
                raise RuntimeError("create_execution_context: no current CUDA context")
            return IExecutionContext(self)

    class IExecutionContext(_Tracked):
        _kind = "execution_context"

        def __init__(self, engine: ICudaEngine) -> None:
            self._engine = engine
            self._addresses: Dict[str, int] = {}
            name, _, shape = engine._io[0]
            self._input_shape: Optional[Tuple[int, ...]] = None if shape[0] == -1 else shape
            self._track()

        def set_tensor_address(self, name: str, memory: int) -> bool:
            self._engine._tensor(name)
            self._addresses[name] = int(memory)
            return True

        def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
            _, mode, built = self._engine._tensor(name)
            shape = tuple(int(d) for d in shape)
            ok = mode == TensorIOMode.INPUT and len(shape) == len(built)
            ok = ok and all(b in (-1, s) for b, s in zip(built, shape))
            ok = ok and self._engine._min_batch <= shape[0] <= self._engine._max_batch
            if not ok:
                self._engine._logger.log(
                    Severity.ERROR, f"set_input_shape: {shape} is outside the profile of {built}"
                )
                return False
            self._input_shape = shape
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            cuda = _cuda_state()
            if cuda is None or not cuda.current_context_active():
                self._engine._logger.log(Severity.ERROR, "execute_async_v3: invalid device context")
                return False
            if self._input_shape is None or any(t[0] not in self._addresses for t in self._engine._io):
                self._engine._logger.log(Severity.ERROR, "execute_async_v3: input shape or addresses not set")
                return False
            n = self._input_shape[0]
            name = self._engine._io[0][0]
            x = cuda.view(self._addresses[name], int(np.prod(self._input_shape)) * 4).view(np.float32)
            outs = self._engine._session.run(None, {name: x.reshape(self._input_shape)})
            for (oname, _, _), out in zip(self._engine._io[1:], outs):
                out = np.ascontiguousarray(out, dtype=np.float32)
                cuda.view(self._addresses[oname], out.nbytes)[:] = out.view(np.uint8).reshape(-1)
            state.executions.append(n)
            return True

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self._logger = logger

        def deserialize_cuda_engine(self, serialized_engine: bytes) -> Optional[ICudaEngine]:
            data = bytes(serialized_engine)
            if not data.startswith(MAGIC):
                self._logger.log(Severity.ERROR, "deserialize_cuda_engine: magic tag does not match")
                return None
            if not _context_current():
                self._logger.log(Severity.ERROR, "deserialize_cuda_engine: no current CUDA context")
                return None
            state.deserialized += 1
            return ICudaEngine(json.loads(data[len(MAGIC) :].decode()), self._logger)

    mod = types.ModuleType("tensorrt")
    mod.__dict__.update(
        __version__=version, Builder=Builder, DataType=DataType, Dims=Dims, ICudaEngine=ICudaEngine,
        IExecutionContext=IExecutionContext, Logger=Logger, Runtime=Runtime, TensorIOMode=TensorIOMode,
        init_libnvinfer_plugins=init_libnvinfer_plugins, nptype=nptype,
    )  # fmt: skip
    return mod


def install(monkeypatch: Any, version: str = "8.5.2.2") -> TrtState:
    """Put a fresh fake ``tensorrt`` into ``sys.modules``; returns what it will record."""
    state = TrtState()
    monkeypatch.setitem(sys.modules, "tensorrt", _make_module(version, state))
    return state


def make_engine(
    path: str,
    onnx_path: str,
    batch: int,
    dynamic: bool,
    *,
    version: str = "8.5.2.2",
    gpu_name: str = "Fake Xavier",
    compute_capability: str = "7.2",
    dla_core: Optional[int] = None,
    static_profile: bool = False,
) -> str:
    """Write a fake engine of ``onnx_path`` (a dynamic-batch ONNX) and its identity record; returns ``path``.

    ``batch``: the build batch (largest for ``dynamic``; the only one otherwise, as on DLA).
    ``static_profile``: the batch dimension stays -1 but the profile is min = opt = max = ``batch``, as
    nano-build makes DLA engines from a dynamic-batch ONNX.
    """
    from yolo_nano.core.metadata import read_onnx_metadata
    from yolo_nano.engines.identity import EngineIdentity, write_record

    plan = {
        "onnx": os.path.abspath(onnx_path),
        "batch": int(batch),
        "dynamic": bool(dynamic),
        "static_profile": bool(static_profile),
    }
    with open(path, "wb") as f:
        f.write(MAGIC + json.dumps(plan).encode())
    meta = read_onnx_metadata(onnx_path)
    h, w = meta.input_size
    write_record(
        path,
        EngineIdentity(
            tensorrt_version=version, gpu_name=gpu_name, compute_capability=compute_capability,
            precision="fp16", onnx_path=onnx_path, onnx_sha256="0" * 64, input_shape=[int(batch), 3, h, w],
            metadata=meta.to_dict(), preprocess=meta.preprocess_params(), dynamic_batch=bool(dynamic),
            dla_core=dla_core, build_command=f"nano-build {onnx_path} -o {path}",
            profile=[[int(batch), 3, h, w]] * 3 if static_profile else None,
        ),
    )  # fmt: skip
    return path
