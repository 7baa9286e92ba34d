"""The thin TensorRT part of ``nano-build``: one code path for TensorRT 8.5 (JetPack 5.1) and 10.x.

Only APIs present in both are used: explicit-batch networks, ``OnnxParser.parse_from_file``,
``set_memory_pool_limit``, ``build_serialized_network``, optimisation profiles, the INT8 calibrator
(8.5; deprecated from 10.1 where the Q/DQ path is the one to use), timing caches, the engine inspector.
Every decision is made beforehand by :mod:`yolo_nano.engines.plan` in plain, tested code.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any, Callable, List, Optional

from yolo_nano.calibration.batcher import CalibrationBatcher
from yolo_nano.core.fileio import atomic_write_bytes, sha256_bytes, sha256_file

from .device import (
    GpuInfo,
    PrimaryContext,
    capabilities_from_builder,
    import_tensorrt,
    jetson_release,
    query_gpu,
)
from .identity import EngineIdentity, write_record
from .plan import (
    BuildError,
    BuildPlan,
    check_capabilities,
    check_network_io,
    expected_cache_identity,
    plan_int8,
)

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _explicit_batch_flags(trt: Any) -> int:
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)  # implicit in 10.x
    return 0 if flag is None else 1 << int(flag)


def build_engine(plan: BuildPlan, log: Log = _stderr, device: int = 0) -> EngineIdentity:
    """Build ``plan`` into ``plan.output`` (atomically) and write its identity record beside it.

    Raises :class:`~yolo_nano.engines.device.TensorRTUnavailable` without TensorRT and
    :class:`~yolo_nano.engines.plan.BuildError` when the device cannot do what was asked, a calibration
    cache is stale or TensorRT fails. Calibration needs pycuda: the device's primary context is current
    for the whole build then (the calibrator allocates its batch buffer in it).
    """
    import_tensorrt()  # a clear error when TensorRT is missing
    gpu = query_gpu(device)
    if plan.int8_mode != "calibrate":
        return _build(plan, log, gpu)
    ctx = PrimaryContext(device)
    try:
        with ctx:
            return _build(plan, log, gpu)
    finally:
        ctx.detach()


def _build(plan: BuildPlan, log: Log, gpu: GpuInfo) -> EngineIdentity:
    import tensorrt as trt

    start = time.time()
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    caps = capabilities_from_builder(trt, builder, gpu)
    log(f"[1/5] device: {caps.gpu_name} (sm {caps.compute_capability}), TensorRT {caps.tensorrt_version}, "
        f"DLA cores: {caps.num_dla_cores}")  # fmt: skip
    check_capabilities(plan, caps)
    plan_int8(plan, caps.tensorrt_version)
    for note in plan.notes:
        log(f"note: {note}")

    log(f"[2/5] parsing {plan.request.onnx}")
    network = builder.create_network(_explicit_batch_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.path.abspath(plan.request.onnx)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(
            f"TensorRT could not parse {plan.request.onnx}: {' | '.join(errors) or 'unknown error'}"
        )
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    check_network_io(inputs, outputs, plan.metadata)

    log(f"[3/5] configuring {plan.precision}" + (f" ({plan.int8_mode})" if plan.int8_mode else ""))
    config = builder.create_builder_config()
    if plan.request.workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(plan.request.workspace_mb) << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer precisions for `nano-engine info`
    if plan.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8: layers without INT8 kernels fall back to FP16
    if plan.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    profile = None
    if plan.profile is not None:
        profile = builder.create_optimization_profile()
        lo, opt, hi = plan.profile
        profile.set_shape(
            plan.metadata.input_name, trt.Dims(list(lo)), trt.Dims(list(opt)), trt.Dims(list(hi))
        )
        config.add_optimization_profile(profile)
    if plan.request.dla is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(plan.request.dla)
        if plan.request.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    timing_path = plan.request.timing_cache
    if timing_path:
        data = b""
        if os.path.exists(timing_path):
            with open(timing_path, "rb") as f:
                data = f.read()
        config.set_timing_cache(config.create_timing_cache(data), False)

    calibrator: Any = None
    calibration: Optional[dict] = None
    if plan.int8_mode in ("calibrate", "reuse-cache"):
        from yolo_nano.calibration.calibrators import make_calibrator

        assert plan.cache_path is not None
        identity = expected_cache_identity(plan, caps.tensorrt_version)
        if plan.int8_mode == "calibrate":
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
            calibrator = make_calibrator(plan.calib_algo, plan.cache_path, identity, batcher=batcher)
        else:
            with open(plan.cache_path, "rb") as f:
                calibrator = make_calibrator(plan.calib_algo, plan.cache_path, identity, cache_bytes=f.read())
            log(f"      reusing calibration cache {plan.cache_path}")
        config.int8_calibrator = calibrator
        if profile is not None:
            config.set_calibration_profile(profile)

    log("[4/5] building (TensorRT tactic search: minutes on a Jetson)")
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.release()
    if calibrator is not None and calibrator.error is not None:
        raise BuildError(f"INT8 calibration failed: {calibrator.error}") from calibrator.error
    if serialized is None:
        raise BuildError("TensorRT failed to build the engine (its messages above say why)")
    engine_bytes = bytes(serialized)
    if timing_path:
        atomic_write_bytes(timing_path, bytes(config.get_timing_cache().serialize()))

    log(f"[5/5] writing {plan.output}")
    atomic_write_bytes(plan.output, engine_bytes)
    if plan.cache_path is not None and plan.int8_mode in ("calibrate", "reuse-cache"):
        calibration = {
            "cache_path": plan.cache_path,
            "cache_sha256": sha256_file(plan.cache_path),
            "algorithm": plan.calib_algo,
            "num_images": identity.num_images,
            "batch": plan.batch,
        }
    l4t, jetpack = jetson_release()
    record = EngineIdentity(
        tensorrt_version=caps.tensorrt_version,
        gpu_name=caps.gpu_name,
        compute_capability=caps.compute_capability,
        precision=plan.precision,
        onnx_path=plan.request.onnx,
        onnx_sha256=plan.onnx_sha256,
        input_shape=list(plan.input_shape),
        metadata=plan.metadata.to_dict(),
        preprocess=plan.metadata.preprocess_params(),
        build_command=plan.command(),
        dynamic_batch=plan.dynamic_batch,
        quantization={"qdq": "qdq", "calibrate": "calibrated", "reuse-cache": "calibrated"}.get(
            plan.int8_mode or "", "none"
        ),
        dla_core=plan.request.dla,
        gpu_fallback=plan.request.gpu_fallback,
        calibration=calibration,
        workspace_mb=plan.request.workspace_mb,
        jetpack=jetpack,
        l4t=l4t,
        host=socket.gethostname(),
        build_time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        build_seconds=round(time.time() - start, 1),
        engine_sha256=sha256_bytes(engine_bytes),
        engine_bytes=len(engine_bytes),
    )
    write_record(plan.output, record)
    log(f"done: {plan.output} ({len(engine_bytes) / 1e6:.1f} MB) and its record {plan.output}.json")
    return record


def inspect_layers(engine_path: str, device: int = 0) -> List[Any]:
    """Deserialize ``engine_path`` and return the engine inspector's JSON document (needs TensorRT and a GPU)."""
    import json

    from .identity import check_compatible, read_record

    import_tensorrt()  # a clear error when TensorRT is missing
    import tensorrt as trt

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
        ctx.detach()
    doc = json.loads(info)
    return doc.get("Layers", []) if isinstance(doc, dict) else list(doc)
