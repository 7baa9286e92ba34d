"""Every ``nano-build`` decision that needs no TensorRT: argument checks, output naming, batch and
optimisation profile, device capability checks, Q/DQ detection and the INT8 calibration plan.

:mod:`yolo_nano.engines.builder` only turns a :class:`BuildPlan` into TensorRT calls.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from yolo_nano.calibration.batcher import CalibrationDataError, list_calibration_images
from yolo_nano.calibration.cache import (
    ALGORITHMS,
    CacheFormatError,
    CacheIdentity,
    decide_cache,
    preprocess_hash,
    read_identity,
)
from yolo_nano.calibration.quantize import is_qdq_model, tensorrt_qdq_problems
from yolo_nano.core.fileio import sha256_file
from yolo_nano.core.metadata import MetadataError, ModelMetadata, read_onnx_metadata

from .device import DeviceCapabilities

PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_SUFFIXES = (".engine", ".trt", ".plan")
DEFAULT_CALIB_ALGO = "entropy"


class BuildError(ValueError):
    """The build request cannot be carried out (bad argument, unsupported on this device, stale cache)."""


@dataclass
class BuildRequest:
    """``nano-build`` arguments. ``None`` means "not given" (defaults are resolved by :func:`prepare`)."""

    onnx: str
    precision: str = "fp16"
    calib_images: Optional[str] = None
    calib_cache: Optional[str] = None
    calib_algo: Optional[str] = None
    recalibrate: bool = False
    dla: Optional[int] = None
    gpu_fallback: bool = False
    workspace_mb: Optional[int] = None
    timing_cache: Optional[str] = None
    batch: Optional[int] = None
    output: Optional[str] = None
    max_calib_images: Optional[int] = None


@dataclass
class BuildPlan:
    """A validated request with everything resolved.

    ``int8_mode``: ``None`` (fp32/fp16), ``"qdq"`` (explicit Q/DQ ONNX, no calibrator), ``"calibrate"``
    (run the calibrator over ``calib_images`` and write ``cache_path``) or ``"reuse-cache"``.
    ``profile``: (min, opt, max) input shapes for a dynamic-batch ONNX, else None.
    """

    request: BuildRequest
    metadata: ModelMetadata
    onnx_sha256: str
    output: str
    batch: int
    dynamic_batch: bool
    input_shape: Tuple[int, int, int, int]
    profile: Optional[Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]]
    has_qdq: bool
    calib_algo: str
    cache_path: Optional[str]
    int8_mode: Optional[str] = None
    notes: List[str] = field(default_factory=list)

    @property
    def precision(self) -> str:
        return self.request.precision

    def command(self) -> str:
        """The exact ``nano-build`` command that makes this engine (written into the identity record)."""
        r = self.request
        args = ["nano-build", r.onnx, "--precision", r.precision]
        if self.int8_mode in ("calibrate", "reuse-cache"):
            if r.calib_images:
                args += ["--calib-images", r.calib_images]
            args += ["--calib-cache", self.cache_path or "", "--calib-algo", self.calib_algo]
        if r.dla is not None:
            args += ["--dla", str(r.dla)]
            if r.gpu_fallback:
                args.append("--gpu-fallback")
        if r.workspace_mb is not None:
            args += ["--workspace", str(r.workspace_mb)]
        if r.timing_cache:
            args += ["--timing-cache", r.timing_cache]
        args += ["--batch", str(self.batch), "-o", self.output]
        return shlex.join(args)


def default_output(onnx_path: str, precision: str, batch: int, dla: Optional[int] = None) -> str:
    """``<onnx folder>/<onnx stem>-<precision>[-dla<N>]-b<batch>.engine`` (``.int8`` stems not repeated)."""
    folder = os.path.dirname(onnx_path)
    stem = os.path.splitext(os.path.basename(onnx_path))[0]
    if stem.endswith("." + precision):
        stem = stem[: -len(precision) - 1]
    name = f"{stem}-{precision}" + (f"-dla{dla}" if dla is not None else "") + f"-b{batch}.engine"
    return os.path.join(folder, name)


def default_cache_path(output: str, algo: str) -> str:
    """Calibration cache beside the engine: ``<engine without suffix>.<algo>.calib``."""
    return os.path.splitext(output)[0] + f".{algo}.calib"


def _check_arguments(r: BuildRequest) -> None:
    if r.precision not in PRECISIONS:
        raise BuildError(f"--precision must be one of {', '.join(PRECISIONS)}, got {r.precision!r}")
    if r.precision != "int8":
        for flag, value in (
            ("--calib-images", r.calib_images),
            ("--calib-cache", r.calib_cache),
            ("--calib-algo", r.calib_algo),
            ("--recalibrate", r.recalibrate or None),
        ):
            if value is not None:
                raise BuildError(f"{flag} only applies to --precision int8 (got --precision {r.precision})")
    if r.calib_algo is not None and r.calib_algo not in ALGORITHMS:
        raise BuildError(f"--calib-algo must be one of {', '.join(ALGORITHMS)}, got {r.calib_algo!r}")
    if r.recalibrate and not r.calib_images:
        raise BuildError("--recalibrate needs --calib-images DIR|LIST to calibrate from")
    if r.dla is not None:
        if r.dla < 0:
            raise BuildError(f"--dla must be a DLA core index >= 0, got {r.dla}")
        if r.precision == "fp32":
            raise BuildError("DLA runs only FP16 and INT8: use --precision fp16 or int8 with --dla")
    if r.gpu_fallback and r.dla is None:
        raise BuildError("--gpu-fallback only applies with --dla N")
    if r.workspace_mb is not None and r.workspace_mb <= 0:
        raise BuildError(f"--workspace must be a positive number of MiB, got {r.workspace_mb}")
    if r.batch is not None and r.batch < 1:
        raise BuildError(f"--batch must be >= 1, got {r.batch}")
    if r.max_calib_images is not None and r.max_calib_images < 1:
        raise BuildError(f"--max-calib-images must be >= 1, got {r.max_calib_images}")
    if r.output is not None and not r.output.lower().endswith(ENGINE_SUFFIXES):
        raise BuildError(
            f"-o must end with {', '.join(ENGINE_SUFFIXES)} (the runtime picks TensorRT by it), got {r.output}"
        )
    if r.timing_cache is not None and os.path.isdir(r.timing_cache):
        raise BuildError(f"--timing-cache must be a file path, {r.timing_cache} is a folder")


def _load_onnx(path: str) -> Tuple[ModelMetadata, bool, List[str]]:
    if not os.path.isfile(path):
        raise BuildError(f"ONNX model not found: {path}")
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:
        raise BuildError(f"{path}: not a readable ONNX file ({type(e).__name__}: {e})") from e
    try:
        meta = read_onnx_metadata(model)
    except MetadataError as e:
        raise BuildError(f"{path}: {e}") from e
    has_qdq = is_qdq_model(model)
    return meta, has_qdq, tensorrt_qdq_problems(model) if has_qdq else []


def prepare(request: BuildRequest) -> BuildPlan:
    """Validate ``request`` against its ONNX model and resolve defaults (no TensorRT needed).

    Checks arguments, the model's metadata, batch vs the exported batch, Q/DQ vs precision, that the
    calibration source holds images, and that an existing calibration cache is not stale in anything
    but the TensorRT version (which needs TensorRT: see :func:`plan_int8`). Raises :class:`BuildError`.
    """
    r = request
    _check_arguments(r)
    meta, has_qdq, qdq_problems = _load_onnx(r.onnx)
    if isinstance(meta.batch, int):
        if r.batch is not None and r.batch != meta.batch:
            raise BuildError(
                f"{r.onnx} was exported with a fixed batch of {meta.batch}; pass --batch {meta.batch} or "
                "re-export with `nano-export --batch dynamic`"
            )
        batch, dynamic = meta.batch, False
    else:
        batch, dynamic = (r.batch or 1), True
    h, w = meta.input_size
    shape = (batch, 3, h, w)
    profile = ((1, 3, h, w), shape, shape) if dynamic else None
    output = r.output or default_output(r.onnx, r.precision, batch, r.dla)
    algo = r.calib_algo or DEFAULT_CALIB_ALGO
    plan = BuildPlan(
        request=r,
        metadata=meta,
        onnx_sha256=sha256_file(r.onnx),
        output=output,
        batch=batch,
        dynamic_batch=dynamic,
        input_shape=shape,
        profile=profile,
        has_qdq=has_qdq,
        calib_algo=algo,
        cache_path=None,
    )
    if has_qdq:
        if r.precision != "int8":
            raise BuildError(
                f"{r.onnx} is explicitly quantized (Q/DQ nodes): build it with --precision int8, or build the "
                "FP32 ONNX for fp32/fp16"
            )
        if qdq_problems:
            raise BuildError(
                f"{r.onnx} is not a TensorRT Q/DQ model ({qdq_problems[0]}; `nano-quantize` makes such models for "
                "ONNX Runtime on a CPU): quantize the FP32 model with `nano-quantize FP32_MODEL --target tensorrt "
                "--calib-images ...`, or build the FP32 model with --calib-images"
            )
        plan.int8_mode = "qdq"
        given = [f for f, v in (("--calib-images", r.calib_images), ("--calib-cache", r.calib_cache)) if v]
        if given:
            plan.notes.append(f"{' and '.join(given)} ignored: the Q/DQ model carries its own INT8 scales")
        return plan
    if r.precision != "int8":
        return plan
    plan.cache_path = r.calib_cache or default_cache_path(output, algo)
    if r.calib_images:
        try:
            list_calibration_images(r.calib_images)
        except CalibrationDataError as e:
            raise BuildError(str(e)) from e
    # Pre-check the cache with the TensorRT version it claims: everything but that field is checked here.
    try:
        found = read_identity(plan.cache_path) if os.path.exists(plan.cache_path) else None
    except CacheFormatError:
        found = None
    trt_guess = found.tensorrt_version if found is not None else ""
    _decide(plan, trt_guess)
    return plan


def expected_cache_identity(plan: BuildPlan, tensorrt_version: str) -> CacheIdentity:
    """The identity a calibration cache must have to be reused for ``plan`` on ``tensorrt_version``."""
    return CacheIdentity(
        onnx_sha256=plan.onnx_sha256,
        preprocess_sha256=preprocess_hash(plan.metadata.preprocess_params()),
        algorithm=plan.calib_algo,
        batch=plan.batch,
        tensorrt_version=tensorrt_version,
    )


def _decide(plan: BuildPlan, tensorrt_version: str) -> None:
    assert plan.cache_path is not None
    decision = decide_cache(
        plan.cache_path, expected_cache_identity(plan, tensorrt_version), plan.request.recalibrate
    )
    if decision.action == "stale":
        raise BuildError(decision.message(plan.cache_path))
    if decision.action == "reuse":
        plan.int8_mode = "reuse-cache"
        if plan.request.calib_images:
            plan.notes.append(
                f"reusing calibration cache {plan.cache_path} (matches this model); --recalibrate redoes it"
            )
        return
    if not plan.request.calib_images:
        raise BuildError(
            f"INT8 calibration needs images: pass --calib-images DIR|LIST (no calibration cache at {plan.cache_path}), "
            "or quantize explicitly with `nano-quantize` and build the Q/DQ model"
        )
    plan.int8_mode = "calibrate"


def _version_tuple(version: str) -> Tuple[int, ...]:
    parts = []
    for p in version.split(".")[:3]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def plan_int8(plan: BuildPlan, tensorrt_version: str) -> None:
    """Final INT8 decision with the running TensorRT version (the builder calls it). Raises on a stale cache."""
    if plan.precision == "int8" and not plan.has_qdq:
        _decide(plan, tensorrt_version)
        if _version_tuple(tensorrt_version) >= (10, 1):
            plan.notes.append(
                f"TensorRT {tensorrt_version} deprecates the INT8 calibrator (it still works): the explicit path is "
                "`nano-quantize --target tensorrt` and building the Q/DQ model"
            )


def check_capabilities(plan: BuildPlan, caps: DeviceCapabilities) -> None:
    """Refuse what the device cannot do: INT8/FP16 without fast support, DLA it does not have."""
    r = plan.request
    if r.precision == "int8" and not caps.fast_int8:
        raise BuildError(
            f"{caps.gpu_name} (compute capability {caps.compute_capability}) has no fast INT8 "
            "(platform_has_fast_int8 is False): build --precision fp16 or fp32"
        )
    if r.precision == "fp16" and not caps.fast_fp16:
        raise BuildError(
            f"{caps.gpu_name} (compute capability {caps.compute_capability}) has no fast FP16 "
            "(platform_has_fast_fp16 is False): build --precision fp32"
        )
    if r.dla is not None:
        if caps.num_dla_cores == 0:
            raise BuildError(f"--dla {r.dla}: this device ({caps.gpu_name}) has no DLA cores; drop --dla")
        if r.dla >= caps.num_dla_cores:
            raise BuildError(
                f"--dla {r.dla}: this device has {caps.num_dla_cores} DLA core(s), numbered 0..{caps.num_dla_cores - 1}"
            )
        if not r.gpu_fallback:
            plan.notes.append(
                "DLA without --gpu-fallback: the build fails if any layer cannot run on the DLA"
            )


def check_network_io(input_names: List[str], output_names: List[str], meta: ModelMetadata) -> None:
    """The parsed network must have the metadata's one input and its head outputs (any order)."""
    if input_names != [meta.input_name]:
        raise BuildError(
            f"the network's inputs are {input_names}; the model metadata expects [{meta.input_name!r}]"
        )
    if sorted(output_names) != sorted(meta.output_names):
        raise BuildError(
            f"the network's outputs are {output_names}; the model metadata lists {meta.output_names}"
        )
