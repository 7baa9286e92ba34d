"""The TensorRT part of ``nano-build``: one builder for TensorRT 8.5-8.6, 10.x and 11.x.

Every decision is made beforehand by :mod:`yolo_nano.engines.plan` in plain, tested code; this module
turns a plan into TensorRT calls. Calls that exist only in some releases live in small functions
marked ``@tensorrt_path(...)`` (see :mod:`.trt_versions`): weakly typed precision flags and the
calibrator (8, 10), the explicit-batch flag (8), the strongly typed flag and the progress monitor
(10, 11), the DLA parser flag (11). tests/engines/test_trt_api.py checks each against the recorded API.

Failure is all or nothing: TensorRT cannot propagate a Python exception out of its callbacks (logger,
calibrator, progress monitor), so the first one is kept and, where TensorRT can cancel (10+, the
progress monitor), the build is cancelled at the next step; when TensorRT returns, that error is raised
and nothing is written: no engine, no record, no calibration cache.

Ctrl-C during the build: Python runs a SIGINT handler only between Python bytecodes, i.e. in one of our
callbacks, and an exception raised at a callback's first bytecode would escape it into TensorRT. So for
the build a handler that never raises is installed: it records the interrupt, the calibrator and the
progress monitor stop at their next call, and ``KeyboardInterrupt`` is raised when TensorRT returns. On
TensorRT 8.x, which cannot cancel a build, ``nano-build`` (``exit_on_interrupt``) exits with 130 from
the handler at once (the logger receives TensorRT's messages all through the build, so it runs soon).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

from yolo_nano.calibration.batcher import CalibrationBatcher
from yolo_nano.calibration.cache import read_identity, save_with_identity
from yolo_nano.core.fileio import atomic_write_bytes, sha256_bytes

from .cuda_context import PrimaryContext
from .device import GpuInfo, capabilities_from_builder, import_tensorrt, jetson_release, query_gpu
from .identity import EngineIdentity, write_record
from .layers import layer_placement
from .network_onnx import network_onnx
from .plan import (
    BuildError,
    BuildPlan,
    check_capabilities,
    check_network_io,
    expected_cache_identity,
    finalize,
)
from .trt_versions import TensorRTApi, check_version, tensorrt_path

Log = Callable[[str], None]
#: TensorRT's INFO lines naming where each layer of a DLA build runs ("[DlaLayer] {ForeignNode[...]}").
_PLACEMENT_RE = re.compile(r"^\s*\[(Dla|Gpu)Layer\]\s*(.+?)\s*$")
EXIT_INTERRUPTED = 130
#: The record's ``quantization`` for each plan ``int8_mode``.
_QUANTIZATION = {"qdq": "qdq", "quantize": "qdq", "reuse-qdq": "qdq", "calibrate": "calibrated",
                 "reuse-cache": "calibrated"}  # fmt: skip


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _interrupts_recorded(state: _BuildState) -> Iterator[None]:
    """While TensorRT builds: Ctrl-C is recorded by ``state`` instead of raising (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: state.fail(KeyboardInterrupt()))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _BuildState:
    """The first exception raised in a TensorRT callback, and what TensorRT said about layer placement."""

    def __init__(self, api: TensorRTApi, exit_on_interrupt: bool) -> None:
        self.api = api
        self.exit_on_interrupt = exit_on_interrupt
        self.error: Optional[BaseException] = None
        self.placement: Dict[str, List[str]] = {"dla": [], "gpu": []}

    def fail(self, e: BaseException) -> None:
        if self.error is None:
            self.error = e
        if isinstance(e, KeyboardInterrupt) and self.exit_on_interrupt and not self.api.progress_monitor:
            sys.stdout.flush()
            print(f"nano-build: interrupted: TensorRT {self.api.version} cannot cancel a build, so nano-build "
                  "stops now; nothing was written", file=sys.stderr, flush=True)  # fmt: skip
            os._exit(EXIT_INTERRUPTED)


def _make_logger(trt: Any, state: _BuildState, log: Log) -> Any:
    """An ``ILogger`` that prints warnings and errors and keeps the DLA/GPU placement lines."""

    class BuildLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            try:
                m = _PLACEMENT_RE.match(msg)
                if m:
                    state.placement[m.group(1).lower()].append(m.group(2))
                if int(severity) <= int(trt.ILogger.WARNING):
                    log(f"TensorRT: {msg}")
            except BaseException as e:  # never into C++: keep it
                state.fail(e)

    return BuildLogger()


@tensorrt_path(10, 11)
def _attach_progress_monitor(trt: Any, config: Any, state: _BuildState) -> Any:
    """Cancel the build at the next step once a callback failed (TensorRT 10+)."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
            pass

        def phase_finish(self, phase_name: str) -> None:
            pass

        def step_complete(self, phase_name: str, step: int) -> bool:
            try:
                return state.error is None
            except BaseException as e:
                state.fail(e)
                return False

    monitor = Monitor()
    config.progress_monitor = monitor
    return monitor  # the caller keeps it alive for the build


@tensorrt_path(8)
def _explicit_batch_flags(trt: Any) -> int:
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


@tensorrt_path(10, 11)
def _strongly_typed_flags(trt: Any) -> int:
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


@tensorrt_path(8, 10)
def _set_weak_precision(trt: Any, config: Any, precision: str) -> None:
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8: layers without INT8 kernels fall back to FP16
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)


@tensorrt_path(8, 10)
def _attach_calibrator(config: Any, calibrator: Any, profile: Any) -> None:
    config.int8_calibrator = calibrator
    if profile is not None:
        config.set_calibration_profile(profile)


@tensorrt_path(11)
def _adjust_parser_for_dla(trt: Any, parser: Any) -> None:
    parser.set_flag(trt.OnnxParserFlag.ADJUST_FOR_DLA)


def build_engine(
    plan: BuildPlan, log: Log = _stderr, device: int = 0, exit_on_interrupt: bool = False
) -> EngineIdentity:
    """Build ``plan`` into ``plan.output`` (atomically) and write its identity record beside it.

    Raises :class:`~yolo_nano.engines.device.TensorRTUnavailable` without a supported TensorRT,
    :class:`~yolo_nano.engines.plan.BuildError` when the device cannot do what was asked, a cache is
    stale, calibration or TensorRT fails, and ``KeyboardInterrupt`` when interrupted (with
    ``exit_on_interrupt`` on TensorRT 8.x: the process exits with 130 instead).
    """
    trt = import_tensorrt()  # a clear error when TensorRT is missing or unsupported
    api = check_version(str(trt.__version__))
    gpu = query_gpu(device)
    return _build(plan, log, gpu, trt, api, device, exit_on_interrupt)


def _build(
    plan: BuildPlan, log: Log, gpu: GpuInfo, trt: Any, api: TensorRTApi, device: int, exit_on_interrupt: bool
) -> EngineIdentity:
    start = time.time()
    state = _BuildState(api, exit_on_interrupt)
    logger = _make_logger(trt, state, log)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    caps = capabilities_from_builder(trt, builder, gpu)
    log(f"[1/5] device: {caps.gpu_name} (sm {caps.compute_capability}), TensorRT {caps.tensorrt_version}, "
        f"DLA cores: {caps.num_dla_cores}")  # fmt: skip
    check_capabilities(plan, caps)
    finalize(plan, api)
    for note in plan.notes:
        log(f"note: {note}")

    ctx = PrimaryContext(device) if plan.int8_mode == "calibrate" else None  # the calibrator's buffer
    try:
        with network_onnx(plan, log) as onnx_path:
            if ctx is None:
                return _build_network(plan, log, trt, api, state, logger, builder, caps, onnx_path, start)
            with ctx:
                return _build_network(plan, log, trt, api, state, logger, builder, caps, onnx_path, start)
    finally:
        if ctx is not None:
            ctx.release()


def _build_network(
    plan: BuildPlan, log: Log, trt: Any, api: TensorRTApi, state: _BuildState, logger: Any, builder: Any,
    caps: Any, onnx_path: str, start: float,
) -> EngineIdentity:  # fmt: skip
    r = plan.request
    log(f"[2/5] parsing {onnx_path} ({plan.typing}ly typed)")
    flags = _explicit_batch_flags(trt) if api.major == 8 else 0
    if plan.typing == "strong":
        flags = _strongly_typed_flags(trt)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if r.dla is not None and api.major == 11:
        _adjust_parser_for_dla(trt, parser)
    if not parser.parse_from_file(os.path.abspath(onnx_path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(f"TensorRT could not parse {onnx_path}: {' | '.join(errors) or 'unknown error'}")
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    check_network_io(inputs, outputs, plan.metadata)

    log(f"[3/5] configuring {plan.precision}" + (f" ({plan.int8_mode})" if plan.int8_mode else ""))
    config = builder.create_builder_config()
    if r.workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(r.workspace_mb) << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer precisions for `nano-engine info`
    if plan.typing == "weak":
        _set_weak_precision(trt, config, plan.precision)
    monitor = _attach_progress_monitor(trt, config, state) if api.progress_monitor else None
    profile = None
    if plan.profile is not None:
        profile = builder.create_optimization_profile()
        lo, opt, hi = plan.profile
        profile.set_shape(
            plan.metadata.input_name, trt.Dims(list(lo)), trt.Dims(list(opt)), trt.Dims(list(hi))
        )
        config.add_optimization_profile(profile)
    if r.dla is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(r.dla)
        if r.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if r.timing_cache:
        data = b""
        if os.path.exists(r.timing_cache):
            with open(r.timing_cache, "rb") as f:
                data = f.read()
        config.set_timing_cache(config.create_timing_cache(data), False)
    calibrator = (
        _make_calibrator(plan, log, state) if plan.int8_mode in ("calibrate", "reuse-cache") else None
    )
    if calibrator is not None:
        _attach_calibrator(config, calibrator, profile)

    log("[4/5] building (TensorRT tactic search: minutes on a Jetson)")
    try:
        with _interrupts_recorded(state):
            serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.release()
    del monitor
    if state.error is not None:
        _raise_failure(state.error, calibrator)
    if serialized is None:
        raise BuildError(
            "TensorRT failed to build the engine (its messages above say why); nothing was written"
        )
    engine_bytes = bytes(serialized)

    placement = _placement(plan, trt, logger, engine_bytes, state, log) if r.dla is not None else None
    log(f"[5/5] writing {plan.output}")
    calibration = _save_calibration(plan, calibrator, caps.tensorrt_version, log)
    if r.timing_cache:
        atomic_write_bytes(r.timing_cache, bytes(config.get_timing_cache().serialize()))
    atomic_write_bytes(plan.output, engine_bytes)
    l4t, jetpack = jetson_release()
    record = EngineIdentity(
        tensorrt_version=caps.tensorrt_version,
        gpu_name=caps.gpu_name,
        compute_capability=caps.compute_capability,
        precision=plan.precision,
        onnx_path=r.onnx,
        onnx_sha256=plan.onnx_sha256,
        input_shape=list(plan.input_shape),
        metadata=plan.metadata.to_dict(),
        preprocess=plan.metadata.preprocess_params(),
        build_command=plan.command(),
        dynamic_batch=plan.dynamic_batch,
        quantization=_QUANTIZATION.get(plan.int8_mode or "", "none"),
        dla_core=r.dla,
        gpu_fallback=r.gpu_fallback,
        calibration=calibration,
        workspace_mb=r.workspace_mb,
        jetpack=jetpack,
        l4t=l4t,
        host=socket.gethostname(),
        build_time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        build_seconds=round(time.time() - start, 1),
        engine_sha256=sha256_bytes(engine_bytes),
        engine_bytes=len(engine_bytes),
        typing=plan.typing or "weak",
        network_onnx=plan.network_onnx,
        profile=None if plan.profile is None else [list(s) for s in plan.profile],
        placement=placement,
    )  # fmt: skip
    write_record(plan.output, record)
    log(f"done: {plan.output} ({len(engine_bytes) / 1e6:.1f} MB) and its record {plan.output}.json")
    return record


def _parser_error(error: Any) -> str:
    return f"{error.desc()} (ONNX node {error.node()})"


def _make_calibrator(plan: BuildPlan, log: Log, state: _BuildState) -> Any:
    from yolo_nano.calibration.calibrators import make_calibrator

    assert plan.cache_path is not None
    if plan.int8_mode == "reuse-cache":
        with open(plan.cache_path, "rb") as f:
            cache_bytes = f.read()
        log(f"      reusing calibration cache {plan.cache_path}")
        return make_calibrator(plan.calib_algo, plan.batch, cache_bytes=cache_bytes, on_error=state.fail)
    assert plan.request.calib_images is not None
    batcher = CalibrationBatcher(
        plan.request.calib_images,
        plan.metadata,
        batch_size=plan.batch,
        max_images=plan.request.max_calib_images,
    )
    log(
        f"      calibrating with {plan.calib_algo} on {batcher.num_images} images from {plan.request.calib_images}"
    )
    return make_calibrator(
        plan.calib_algo,
        plan.batch,
        batcher=batcher,
        on_error=state.fail,
        stop=lambda: state.error is not None,
    )


def _raise_failure(error: BaseException, calibrator: Any) -> None:
    if isinstance(error, KeyboardInterrupt):
        raise error
    where = "INT8 calibration" if calibrator is not None else "the build"
    done = f" after {calibrator.batches} batch(es)" if calibrator is not None else ""
    raise BuildError(
        f"{where} failed{done}: {type(error).__name__}: {error}; nothing was written (no engine, no "
        "calibration cache)"
    ) from error


def _save_calibration(
    plan: BuildPlan, calibrator: Any, tensorrt_version: str, log: Log
) -> Optional[Dict[str, Any]]:
    """Write a fresh calibration cache and its sidecar (only now: the build succeeded) and describe the
    cache the engine was calibrated with, for the record."""
    if plan.cache_path is None or plan.int8_mode not in ("calibrate", "reuse-cache", "quantize", "reuse-qdq"):
        return None
    identity = expected_cache_identity(plan, tensorrt_version)
    if plan.int8_mode == "calibrate":
        if calibrator.cache is None:
            raise BuildError(
                "TensorRT finished without handing back a calibration cache; nothing was written"
            )
        identity.num_images = calibrator.batches * plan.batch
        save_with_identity(plan.cache_path, calibrator.cache, identity)
        log(f"      calibration cache written: {plan.cache_path} (+ {plan.cache_path}.json)")
    found = read_identity(plan.cache_path)
    assert found is not None  # reuse and fresh caches both have their sidecar now
    return {
        "cache_path": plan.cache_path,
        "cache_sha256": found.cache_sha256,
        "kind": found.kind,
        "algorithm": plan.calib_algo,
        "num_images": found.num_images,
        "batch": found.batch,
    }


def _placement(
    plan: BuildPlan, trt: Any, logger: Any, engine_bytes: bytes, state: _BuildState, log: Log
) -> Dict[str, Any]:
    """Where the layers of a DLA build run: TensorRT's own placement lines from the build log, else the
    engine inspector's layers. Warns naming the layers that fell back to the GPU."""
    if state.placement["dla"] or state.placement["gpu"]:
        placement: Dict[str, Any] = {"dla": state.placement["dla"], "gpu": state.placement["gpu"],
                                     "source": "TensorRT build log"}  # fmt: skip
    else:
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(engine_bytes)
        doc = "{}"
        if engine is not None:
            inspector = engine.create_engine_inspector()
            doc = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
            del inspector
        del engine, runtime
        placement = dict(layer_placement(doc, dla_build=True), source="engine inspector")
    if placement["gpu"]:
        names = ", ".join(placement["gpu"][:12]) + (" ..." if len(placement["gpu"]) > 12 else "")
        log(f"warning: DLA core {plan.request.dla}: {len(placement['gpu'])} layer(s) fell back to the GPU "
            f"({len(placement['dla'])} DLA loadable(s)): {names}")  # fmt: skip
    return placement


def inspect_layers(engine_path: str, device: int = 0) -> List[Any]:
    """Deserialize ``engine_path`` and return the engine inspector's layers (needs TensorRT and a GPU)."""
    import json

    from .identity import check_compatible, read_record

    trt = import_tensorrt()  # a clear error when TensorRT is missing or unsupported
    gpu = query_gpu(device)
    check_compatible(
        engine_path, read_record(engine_path), str(trt.__version__), gpu.name, gpu.compute_capability
    )
    ctx = PrimaryContext(device)
    try:
        with ctx:
            logger = trt.Logger(trt.Logger.WARNING)
            trt.init_libnvinfer_plugins(logger, "")
            runtime = trt.Runtime(logger)  # must outlive the engine
            with open(engine_path, "rb") as f:
                engine = runtime.deserialize_cuda_engine(f.read())
            if engine is None:
                raise BuildError(
                    f"TensorRT could not deserialize {engine_path} (built with another version?)"
                )
            inspector = engine.create_engine_inspector()
            info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
            del inspector, engine, runtime
    finally:
        ctx.release()
    doc = json.loads(info)
    return doc.get("Layers", []) if isinstance(doc, dict) else list(doc)
