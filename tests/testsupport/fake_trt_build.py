"""The behaviour of a TensorRT *build* on the recorded API surfaces (:mod:`testsupport.trt_surface`), so
``nano-build`` runs its real code against TensorRT 8.5, 10.x and 11.x without a GPU.

What it emulates, as the real builder does (and only through members the release has):

* parsing: ``OnnxParser.parse_from_file`` loads the ONNX for real; inputs, outputs and layers come from it;
* typing: a strongly typed network (``STRONGLY_TYPED`` flag; always on 11.x) takes its precision from the
  ONNX tensor types and refuses the FP16/INT8 builder flags and a calibrator; a weakly typed one takes it
  from the flags;
* shapes: a dynamic input needs an optimisation profile covering it;
* calibration (weak INT8 without Q/DQ): ``read_calibration_cache`` first, else ``get_batch`` until it
  answers ``[]`` (the batch is read from the fake pycuda's device memory), then
  ``write_calibration_cache`` with a cache in TensorRT's text format; no batch at all fails the build;
* the rest of the build as steps: each logs a VERBOSE line (the logger callback runs, as TensorRT's does)
  and, on 10+, asks the progress monitor, whose ``False`` cancels the build (``None`` returned);
* DLA: the core must exist, the precision must be FP16/INT8, shapes must be static (min = opt = max);
  layers DLA cannot run (by ONNX op and tensor rank, :data:`DLA_OPS`; Q/DQ on 8.x) go to the GPU with
  ``GPU_FALLBACK`` or fail the build; placement is logged as TensorRT does ("[DlaLayer] {ForeignNode[a...b]}",
  "[GpuLayer] ...") and the engine inspector lists DLA loadables as ForeignNodes.

The serialized "engine" is JSON describing what was built (:func:`read_engine`).
"""

from __future__ import annotations

import json
import struct
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .trt_surface import FakeTensorRT, load_surface, recorded_versions

MAGIC = b"fake TensorRT engine built from a recorded surface\n"
#: ONNX ops the emulated DLA runs when every output is 4-D (NVIDIA's DLA layer table: convolution,
#: activations, element-wise, pooling, channel concatenation, nearest resize). GlobalAveragePool
#: (TensorRT: a Reduce layer) is assumed DLA-capable, as the export expects; unverified on a board.
DLA_OPS = {"Conv", "Relu", "Clip", "Sigmoid", "LeakyRelu", "Tanh", "Add", "Sub", "Mul", "Max", "Min", "Concat",
           "MaxPool", "AveragePool", "GlobalAveragePool", "Resize", "BatchNormalization", "Identity"}  # fmt: skip
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def read_engine(data: bytes) -> Dict[str, Any]:
    assert data.startswith(MAGIC), "not an engine of the fake builder"
    return json.loads(data[len(MAGIC) :].decode())


class BuildWorld:
    """One fake TensorRT release with build behaviour. ``module`` is what ``import tensorrt`` returns.

    ``dla_cores``: DLA cores of the device. ``steps``: build steps after calibration; ``step_seconds``:
    how long each takes (for Ctrl-C tests). ``builds``: a summary per ``build_serialized_network``.
    """

    def __init__(self, version: str, dla_cores: int = 2, steps: int = 4, step_seconds: float = 0.0) -> None:
        self.version = version
        self.major = int(version.split(".")[0])
        self.dla_cores = dla_cores
        self.steps = steps
        self.step_seconds = step_seconds
        self.builds: List[Dict[str, Any]] = []
        self.fake = FakeTensorRT(version, self._behaviour())
        self.module = self.fake.module

    # -------------------------------------------------------------------------------------------
    def _behaviour(self) -> Dict[str, Any]:
        w = self
        b: Dict[str, Any] = {
            "init_libnvinfer_plugins": lambda logger, namespace: True,
            "Logger.__init__": lambda self, min_severity=None: None,
            "Logger.log": lambda self, severity, msg: print(f"[TRT] {msg}", file=sys.stderr),
            "Builder.__init__": lambda self, logger: object.__setattr__(self, "_fake_logger", logger),
            "Builder.num_DLA_cores": lambda self: w.dla_cores,
            "Builder.platform_has_fast_fp16": lambda self: True,
            "Builder.platform_has_fast_int8": lambda self: True,
            "Builder.create_network": lambda self, flags=0: w.fake.new("INetworkDefinition", flags=int(flags),
                                                                       model=None, logger=self._fake_logger),
            "Builder.create_builder_config": lambda self: w.fake.new("IBuilderConfig", flags=set(), profiles=[],
                                                                     pools={}, calibration_profile=None),
            "Builder.create_optimization_profile": lambda self: w.fake.new("IOptimizationProfile", shapes={}),
            "Builder.build_serialized_network": lambda self, network, config, kernel_text=None: w._build(
                self, network, config),
            "OnnxParser.__init__": _parser_init,
            "OnnxParser.parse_from_file": _parse_from_file,
            "OnnxParser.num_errors": lambda self: len(self._fake_errors),
            "OnnxParser.get_error": lambda self, index: w.fake.new("ParserError", desc=self._fake_errors[index]),
            "OnnxParser.set_flag": lambda self, flag: self._fake_flags.add(flag.name),
            "ParserError.desc": lambda self: self._fake_desc,
            "ParserError.node": lambda self: -1,
            "INetworkDefinition.num_inputs": lambda self: len(self._fake_model.graph.input),
            "INetworkDefinition.num_outputs": lambda self: len(self._fake_model.graph.output),
            "INetworkDefinition.get_input": lambda self, index: w.fake.new(
                "ITensor", name=self._fake_model.graph.input[index].name),
            "INetworkDefinition.get_output": lambda self, index: w.fake.new(
                "ITensor", name=self._fake_model.graph.output[index].name),
            "ITensor.name": lambda self: self._fake_name,
            "IBuilderConfig.set_memory_pool_limit": lambda self, pool, pool_size: self._fake_pools.update(
                {pool.name: int(pool_size)}),
            "IBuilderConfig.set_flag": lambda self, flag: self._fake_flags.add(flag.name),
            "IBuilderConfig.get_flag": lambda self, flag: flag.name in self._fake_flags,
            "IBuilderConfig.add_optimization_profile": _add_profile,
            "IBuilderConfig.set_calibration_profile": lambda self, profile: object.__setattr__(
                self, "_fake_calibration_profile", profile) or True,
            "IBuilderConfig.create_timing_cache": lambda self, serialized_timing_cache: w.fake.new(
                "ITimingCache", data=bytes(serialized_timing_cache) or b"timing v1"),
            "IBuilderConfig.set_timing_cache": lambda self, cache, ignore_mismatch: object.__setattr__(
                self, "_fake_timing", cache) or True,
            "IBuilderConfig.get_timing_cache": lambda self: self._fake_timing,
            "ITimingCache.serialize": lambda self: w.fake.new("IHostMemory", data=self._fake_data + b"+"),
            "IOptimizationProfile.set_shape": _set_shape,
            "Dims.__init__": lambda self, shape=None: object.__setattr__(self, "_fake_dims", tuple(shape or ())),
            "Dims.__len__": lambda self: len(self._fake_dims),
            "Dims.__getitem__": lambda self, arg0: self._fake_dims[arg0],
            "IHostMemory.__bytes__": lambda self: self._fake_data,
            "IHostMemory.nbytes": lambda self: len(self._fake_data),
            "Runtime.__init__": lambda self, logger: None,
            "Runtime.deserialize_cuda_engine": lambda self, serialized_engine: w.fake.new(
                "ICudaEngine", doc=read_engine(bytes(serialized_engine))),
            "ICudaEngine.create_engine_inspector": lambda self: w.fake.new("EngineInspector", doc=self._fake_doc),
            "EngineInspector.get_engine_information": lambda self, format: json.dumps(
                {"Layers": self._fake_doc["inspector_layers"]}),
        }  # fmt: skip
        return {k: v for k, v in b.items() if self.fake_has(k)}

    def fake_has(self, key: str) -> bool:
        """Whether this release has ``key``; a key no recorded release has is a typo (KeyError)."""
        if key.endswith(".__bytes__"):
            return True
        s = load_surface(self.version)
        cls, _, member = key.rpartition(".")
        present = key in s["functions"] or (cls in s["classes"] and member in s["classes"][cls]["members"])
        if not present and not any(_in_surface(v, key) for v in recorded_versions()):
            raise KeyError(f"behaviour for {key!r}, which no recorded TensorRT has")
        return present

    # -------------------------------------------------------------------------------------------
    def _log(self, logger: Any, severity: str, msg: str) -> None:
        logger.log(getattr(self.module.ILogger.Severity, severity), msg)

    def _monitor_step(self, config: Any, phase: str, step: int) -> bool:
        monitor = config.progress_monitor if self.major >= 10 else None
        return True if monitor is None else bool(monitor.step_complete(phase, step))

    def _build(self, builder: Any, network: Any, config: Any) -> Any:
        trt, logger = self.module, builder._fake_logger
        summary: Dict[str, Any] = {"cancelled": False, "steps_done": 0, "calibration_batches": 0}
        self.builds.append(summary)
        model = network._fake_model
        if model is None:
            self._log(logger, "ERROR", "Network must have at least one output")
            return None
        flags = config._fake_flags
        strong = self.major >= 11 or (
            self.major == 10
            and bool(network._fake_flags & (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
        )
        has_qdq = any(n.op_type in QDQ_OPS for n in model.graph.node)
        half = any(i.data_type == 10 for i in model.graph.initializer)  # TensorProto.FLOAT16
        calibrator = config.int8_calibrator if self.major <= 10 else None
        if strong and (flags & {"FP16", "INT8"} or calibrator is not None):
            self._log(
                logger, "ERROR", "a strongly typed network takes no FP16/INT8 builder flag and no calibrator"
            )
            return None
        precision = (
            ("int8" if has_qdq else "fp16" if half else "fp32")
            if strong
            else ("int8" if "INT8" in flags else "fp16" if "FP16" in flags else "fp32")
        )
        summary.update(strong=strong, precision=precision, flags=sorted(flags), qdq=has_qdq)
        inp = model.graph.input[0]
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inp.type.tensor_type.shape.dim]
        profile = next((p._fake_shapes.get(inp.name) for p in config._fake_profiles), None)
        if -1 in dims:
            if profile is None:
                self._log(
                    logger,
                    "ERROR",
                    f"Network has dynamic or shape inputs, but no optimization profile has "
                    f"been defined ({inp.name})",
                )
                return None
            lo, opt, hi = profile
            if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
                self._log(logger, "ERROR", f"profile of {inp.name} is not min <= opt <= max: {profile}")
                return None
        summary["profile"] = profile
        dla = config.default_device_type == trt.DeviceType.DLA
        placement = self._place(model, config, logger, dla, precision, strong, has_qdq, profile, summary)
        if placement is None:
            return None
        if precision == "int8" and not strong and not has_qdq:
            if calibrator is None:
                self._log(logger, "ERROR", "INT8 requested without a calibrator or Q/DQ scales")
                return None
            if not self._calibrate(calibrator, model, config, logger, summary):
                return None
        for step in range(self.steps):
            self._log(logger, "VERBOSE", f"tactic search step {step}")
            time.sleep(self.step_seconds)
            if not self._monitor_step(config, "Building engine", step):
                summary["cancelled"] = True
                self._log(logger, "ERROR", "the build was cancelled by the progress monitor")
                return None
            summary["steps_done"] = step + 1
        doc = {"version": self.version, "precision": precision, "strong": strong, "dla": dla,
               "dla_core": config.DLA_core if dla else None, "input": inp.name, "profile": profile,
               "inspector_layers": placement}  # fmt: skip
        return self.fake.new("IHostMemory", data=MAGIC + json.dumps(doc).encode())

    def _place(self, model: Any, config: Any, logger: Any, dla: bool, precision: str, strong: bool,
               has_qdq: bool, profile: Any, summary: Dict[str, Any]) -> Optional[List[Dict[str, str]]]:  # fmt: skip
        nodes = network_layers(model)
        names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(nodes)]
        if not dla:
            return [{"Name": n, "LayerType": "CaskConvolution"} for n in names]
        fallback = "GPU_FALLBACK" in config._fake_flags
        core = config.DLA_core
        if core >= self.dla_cores:
            self._log(logger, "ERROR", f"DLA core {core} requested, the device has {self.dla_cores}")
            return None
        static = profile is None or profile[0] == profile[2]
        if not static:
            self._log(logger, "WARNING", "DLA requests all profiles have same min, max, and opt value. All dla "
                                         "layers are falling back to GPU")  # fmt: skip
        ranks = _output_ranks(model)
        io_names = {v.name for v in list(model.graph.input) + list(model.graph.output)}
        on_dla: List[Optional[bool]] = []
        for node in nodes:
            if node.op_type == "Cast" and io_names & (set(node.input) | set(node.output)):
                on_dla.append(None)  # an I/O cast: TensorRT's reformat at the DLA boundary
                continue
            ok = static and precision in ("fp16", "int8")
            ok = ok and (node.op_type in DLA_OPS or (node.op_type in QDQ_OPS and self.major >= 10))
            ok = ok and all(ranks.get(o, 0) == 4 for o in node.output)
            ok = ok and not (
                strong and precision == "int8" and node.op_type == "Conv" and not _quantized(model, node)
            )
            on_dla.append(ok)
        gpu = [n for n, ok in zip(names, on_dla) if ok is False]
        if gpu and not fallback:
            self._log(logger, "ERROR", f"Layer {gpu[0]} is not supported on DLA and GPU fallback is disabled")
            return None
        loadables, layers, run = [], [], []
        for name, ok in list(zip(names, on_dla)) + [("", False)]:
            if ok:
                run.append(name)
                continue
            if run:
                fn = "{ForeignNode[" + (run[0] if len(run) == 1 else f"{run[0]}...{run[-1]}") + "]}"
                loadables.append(fn)
                layers.append({"Name": fn, "LayerType": "DLA"})
                run = []
            if name:
                layers.append({"Name": name, "LayerType": "Reformat" if ok is None else "CaskConvolution"})
        self._log(logger, "INFO", "---------- Layers Running on DLA ----------")
        for fn in loadables:
            self._log(logger, "INFO", f"[DlaLayer] {fn}")
        self._log(logger, "INFO", "---------- Layers Running on GPU ----------")
        for name in gpu:
            self._log(logger, "INFO", f"[GpuLayer] {name}")
        summary.update(dla_loadables=loadables, gpu_layers=gpu)
        return layers

    def _calibrate(
        self, calibrator: Any, model: Any, config: Any, logger: Any, summary: Dict[str, Any]
    ) -> bool:
        cache = calibrator.read_calibration_cache()
        digits = "".join(self.version.split(".")[:3]).ljust(4, "0")[:4]
        algo = (
            "MinMaxCalibration"
            if isinstance(calibrator, self.module.IInt8MinMaxCalibrator)
            else "EntropyCalibration2"
        )
        if cache:
            text = bytes(cache).decode("ascii", "replace")
            if text.startswith(f"TRT-{digits}-{algo}"):
                summary["calibration"] = "reused"
                return True
            self._log(logger, "WARNING", "calibration cache does not match this version: recalibrating")
        import onnxruntime as ort

        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        inp = model.graph.input[0]
        batch = int(calibrator.get_batch_size())
        shape = [batch] + [d.dim_value for d in inp.type.tensor_type.shape.dim][1:]
        amax: Dict[str, float] = {}
        step = 0
        while True:
            ptrs = calibrator.get_batch([inp.name])
            if not ptrs:
                break
            x = device_view(int(ptrs[0]), int(np.prod(shape)) * 4).view(np.float32).reshape(shape).copy()
            outs = session.run(None, {inp.name: x})
            for name, arr in [(inp.name, x)] + list(zip([o.name for o in model.graph.output], outs)):
                amax[name] = max(amax.get(name, 0.0), float(np.abs(arr).max()))
            step += 1
            summary["calibration_batches"] = step
            self._log(logger, "VERBOSE", f"calibrated batch {step}")
            time.sleep(self.step_seconds)
            if not self._monitor_step(config, "Calibration", step):
                summary["cancelled"] = True
                return False
        if step == 0:
            self._log(logger, "ERROR", "Calibration failure occurred with no scaling factors detected")
            return False
        lines = [f"TRT-{digits}-{algo}"] + [
            f"{k}: {struct.pack('>f', v / 127.0).hex()}" for k, v in amax.items()
        ]
        calibrator.write_calibration_cache(memoryview(("\n".join(lines) + "\n").encode()))
        summary["calibration"] = "calibrated"
        return True


def device_view(ptr: int, nbytes: int) -> np.ndarray:
    """The fake pycuda's device memory at ``ptr`` (what TensorRT reads a calibration batch from)."""
    return sys.modules["pycuda.driver"]._fake_state.view(ptr, nbytes)  # type: ignore[attr-defined]


def install(monkeypatch: Any, version: str, fail_copy_at: Optional[int] = None, **world: Any) -> BuildWorld:
    """Install the fake pycuda (with ``memcpy_htod``; its ``fail_copy_at``-th call raises pycuda's
    LogicError, a CUDA error) and a :class:`BuildWorld` as ``tensorrt``; returns the world."""
    from . import fake_pycuda

    state = fake_pycuda.install(monkeypatch)
    driver = sys.modules["pycuda.driver"]
    calls = {"n": 0}

    def memcpy_htod(dest: Any, src: Any) -> None:
        calls["n"] += 1
        if fail_copy_at is not None and calls["n"] == fail_copy_at:
            raise fake_pycuda.LogicError("cuMemcpyHtoD failed: an illegal memory access was encountered")
        if not state.current_context_active():
            raise fake_pycuda.LogicError("cuMemcpyHtoD failed: invalid device context")
        src = np.ascontiguousarray(src)
        state.view(int(dest), src.nbytes)[:] = src.view(np.uint8).reshape(-1)

    monkeypatch.setattr(driver, "memcpy_htod", memcpy_htod, raising=False)
    w = BuildWorld(version, **world)
    monkeypatch.setitem(sys.modules, "tensorrt", w.module)
    return w


def _in_surface(version: str, key: str) -> bool:
    s = load_surface(version)
    cls, _, member = key.rpartition(".")
    return key in s["functions"] or (cls in s["classes"] and member in s["classes"][cls]["members"])


def _parser_init(self: Any, network: Any, logger: Any) -> None:
    for k, v in (("network", network), ("errors", []), ("flags", set())):
        object.__setattr__(self, "_fake_" + k, v)


def _parse_from_file(self: Any, model: str) -> bool:
    import onnx

    try:
        proto = onnx.load(model)
        onnx.checker.check_model(proto)
    except Exception as e:  # what TensorRT reports as a parser error
        self._fake_errors.append(f"{type(e).__name__}: {e}")
        return False
    object.__setattr__(self._fake_network, "_fake_model", proto)
    return True


def _add_profile(self: Any, profile: Any) -> int:
    self._fake_profiles.append(profile)
    return len(self._fake_profiles) - 1


def _set_shape(self: Any, input: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002 - TensorRT's names
    self._fake_shapes[input] = tuple(tuple(int(d) for d in _dims(x)) for x in (min, opt, max))


def _dims(x: Any) -> Tuple[int, ...]:
    return tuple(x._fake_dims) if hasattr(x, "_fake_dims") else tuple(x)


def _output_ranks(model: Any) -> Dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        if vi.type.tensor_type.HasField("shape"):
            ranks[vi.name] = len(vi.type.tensor_type.shape.dim)
    return ranks


def network_layers(model: Any) -> List[Any]:
    """The nodes TensorRT makes layers of: those with an activation input (Constant nodes and weight-only
    nodes, such as an Identity over an initializer or Clip bounds, become weights)."""
    weights = {i.name for i in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        if node.op_type == "Constant" or all(not i or i in weights for i in node.input):
            weights.update(node.output)
            continue
        layers.append(node)
    return layers


def _quantized(model: Any, node: Any) -> bool:
    """Whether a convolution's weights come through a DequantizeLinear (the Q/DQ model's int8 layers)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    src = producers.get(node.input[1]) if len(node.input) > 1 else None
    return src is not None and src.op_type == "DequantizeLinear"


def run_nano_build(argv: List[str]) -> int:
    """``nano-build`` against a fake TensorRT in this process (for subprocess tests: real signals, real
    exit codes). Environment: ``FAKE_TRT_VERSION``, ``FAKE_TRT_STEPS``, ``FAKE_TRT_STEP_SECONDS``,
    ``FAKE_COPY_FAIL_AT``, ``FAKE_TRT_REPORTED_VERSION``."""
    import os

    import pytest

    from yolo_nano.engines.cli import build_main

    env = os.environ
    fail_at = env.get("FAKE_COPY_FAIL_AT")
    mp = pytest.MonkeyPatch()
    w = install(
        mp,
        env.get("FAKE_TRT_VERSION", "8.5.3.1"),
        fail_copy_at=int(fail_at) if fail_at else None,
        steps=int(env.get("FAKE_TRT_STEPS", "4")),
        step_seconds=float(env.get("FAKE_TRT_STEP_SECONDS", "0")),
    )
    if env.get("FAKE_TRT_REPORTED_VERSION"):  # a release we have no surface for: only its version differs
        w.module.__version__ = env["FAKE_TRT_REPORTED_VERSION"]
    try:
        return build_main(argv)
    finally:
        mp.undo()
