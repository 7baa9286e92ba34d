"""Every ``nano-build`` decision that needs no TensorRT: argument checks, output naming, batch and
optimisation profile (static for DLA), device capability checks, network typing and the INT8 strategy
per TensorRT release, and the calibration cache plan.

Two steps: :func:`prepare` validates the request against its ONNX model; :func:`finalize` settles what
depends on the TensorRT release (:class:`~yolo_nano.engines.trt_versions.TensorRTApi`): weak or strong
typing, which INT8 path, the cache check with the TensorRT version, Q/DQ-on-DLA refusals. The builder
calls both; ``nano-build --explain [--tensorrt-version V]`` prints the result. :mod:`.builder` only
turns a :class:`BuildPlan` into TensorRT calls.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

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
from yolo_nano.core.modelfiles import ENGINE_SUFFIXES

from .device import DeviceCapabilities
from .trt_versions import TensorRTApi

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_CALIB_ALGO = "entropy"
#: ``int8_mode`` values: a given Q/DQ model; implicit calibration (weak typing) from images or a cache;
#: a Q/DQ model derived from the images (strong typing), made now or reused.
INT8_MODES = ("qdq", "calibrate", "reuse-cache", "quantize", "reuse-qdq")
QDQ_ANY_TENSORRT = "any"  # the tensorrt_version of a derived Q/DQ ONNX's identity: no TensorRT involved

Shape = Tuple[int, ...]


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
    strongly_typed: bool = False


@dataclass
class BuildPlan:
    """A validated request with everything resolved.

    ``profile``: (min, opt, max) input shapes for a dynamic-batch ONNX (all three the engine batch for
    DLA, which has no dynamic shapes), else None. ``typing``: ``"weak"`` (builder flags, calibrator) or
    ``"strong"`` (precision from the ONNX tensor types), None until :func:`finalize`. ``int8_mode``: one
    of :data:`INT8_MODES` for int8, else None. ``cache_path``: the calibration cache (weak) or the derived
    Q/DQ ONNX (strong) with its identity sidecar beside it. ``network_onnx``: how the ONNX TensorRT
    parses is made (``"as given"``, ``"fp16"``, ``"qdq"``).
    """

    request: BuildRequest
    metadata: ModelMetadata
    onnx_sha256: str
    output: str
    batch: int
    dynamic_batch: bool
    input_shape: Tuple[int, int, int, int]
    profile: Optional[Tuple[Shape, Shape, Shape]]
    has_qdq: bool
    calib_algo: str
    cache_path: Optional[str]
    int8_mode: Optional[str] = None
    typing: Optional[str] = None
    tensorrt_version: Optional[str] = None
    network_onnx: str = "as given"
    notes: List[str] = field(default_factory=list)

    @property
    def precision(self) -> str:
        return self.request.precision

    @property
    def calibration_batch(self) -> int:
        """Batch the calibration runs with: the engine batch (a Q/DQ derivation: the model's own)."""
        if self.int8_mode in ("quantize", "reuse-qdq"):
            return self.metadata.batch if isinstance(self.metadata.batch, int) else 1
        return self.batch

    def command(self) -> str:
        """The exact ``nano-build`` command that makes this engine (written into the identity record)."""
        r = self.request
        args = ["nano-build", r.onnx, "--precision", r.precision]
        if r.strongly_typed:
            args.append("--strongly-typed")
        if self.cache_path is not None:
            if r.calib_images:
                args += ["--calib-images", r.calib_images]
            if r.max_calib_images is not None:
                args += ["--max-calib-images", str(r.max_calib_images)]
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

    def to_dict(self) -> Dict[str, Any]:
        """The whole plan as JSON-able data (``nano-build --explain --json``)."""
        r = self.request
        lo_opt_hi = (
            None if self.profile is None else dict(zip(("min", "opt", "max"), map(list, self.profile)))
        )
        calibration = None
        if self.cache_path is not None:
            calibration = {
                "cache_path": self.cache_path,
                "cache_kind": "qdq-onnx" if self.network_onnx == "qdq" else "tensorrt-cache",
                "algorithm": self.calib_algo,
                "images": r.calib_images,
                "max_images": r.max_calib_images,
                "recalibrate": r.recalibrate,
                "batch": self.calibration_batch,
            }
        return {
            "onnx": r.onnx,
            "onnx_sha256": self.onnx_sha256,
            "model": {"arch": self.metadata.arch, "classes": self.metadata.num_classes},
            "precision": self.precision,
            "tensorrt_version": self.tensorrt_version,
            "typing": self.typing,
            "int8_mode": self.int8_mode,
            "network_onnx": self.network_onnx,
            "has_qdq": self.has_qdq,
            "batch": self.batch,
            "dynamic_batch": self.dynamic_batch,
            "input_shape": list(self.input_shape),
            "profile": lo_opt_hi,
            "device": {
                "type": "GPU" if r.dla is None else "DLA",
                "dla_core": r.dla,
                "gpu_fallback": r.gpu_fallback,
            },
            "calibration": calibration,
            "workspace_mb": r.workspace_mb,
            "timing_cache": r.timing_cache,
            "output": self.output,
            "record": self.output + ".json",
            "notes": list(self.notes),
            "command": self.command(),
        }


def default_output(onnx_path: str, precision: str, batch: int, dla: Optional[int] = None) -> str:
    """``<onnx folder>/<onnx stem>-<precision>[-dla<N>]-b<batch>.engine`` (``.int8`` stems not repeated)."""
    folder = os.path.dirname(onnx_path)
    stem = os.path.splitext(os.path.basename(onnx_path))[0]
    if stem.endswith("." + precision):
        stem = stem[: -len(precision) - 1]
    name = f"{stem}-{precision}" + (f"-dla{dla}" if dla is not None else "") + f"-b{batch}.engine"
    return os.path.join(folder, name)


def default_cache_path(output: str, algo: str, qdq: bool = False) -> str:
    """Beside the engine: ``<engine without suffix>.<algo>.calib`` (TensorRT's calibration cache) or
    ``<engine without suffix>.<algo>.qdq.onnx`` (the Q/DQ model a strongly typed INT8 build derives)."""
    return os.path.splitext(output)[0] + (f".{algo}.qdq.onnx" if qdq else f".{algo}.calib")


def _check_arguments(r: BuildRequest) -> None:
    if r.precision not in PRECISIONS:
        raise BuildError(f"--precision must be one of {', '.join(PRECISIONS)}, got {r.precision!r}")
    if r.precision != "int8":
        for flag, value in (
            ("--calib-images", r.calib_images),
            ("--calib-cache", r.calib_cache),
            ("--calib-algo", r.calib_algo),
            ("--recalibrate", r.recalibrate or None),
            ("--max-calib-images", r.max_calib_images),
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
    calibration source holds images. Raises :class:`BuildError`. What depends on the TensorRT release
    is left to :func:`finalize`.
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
    profile: Optional[Tuple[Shape, Shape, Shape]] = None
    notes: List[str] = []
    if dynamic and r.dla is not None:
        # DLA has no dynamic dimensions: min = opt = max, and the runtime shape must equal it.
        profile = (shape, shape, shape)
        dynamic = False
        notes.append(
            f"DLA needs a static shape: the profile is min = opt = max = {list(shape)} and the runtime pads "
            f"shorter batches to {batch}"
        )
    elif dynamic:
        profile = ((1, 3, h, w), shape, shape)
    output = r.output or default_output(r.onnx, r.precision, batch, r.dla)
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
        calib_algo=r.calib_algo or DEFAULT_CALIB_ALGO,
        cache_path=None,
        notes=notes,
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
    if r.precision == "int8" and r.calib_images:
        try:
            list_calibration_images(r.calib_images)
        except CalibrationDataError as e:
            raise BuildError(str(e)) from e
    if r.precision == "int8":
        # Pre-check an existing cache before TensorRT is involved (its claimed TensorRT version is trusted
        # here; finalize() checks it against the real one). A Q/DQ-kind sidecar means the strong path.
        path = r.calib_cache or default_cache_path(output, plan.calib_algo, qdq=r.strongly_typed)
        try:
            found = read_identity(path) if os.path.exists(path) else None
        except CacheFormatError:
            found = None
        strong = r.strongly_typed or (found is not None and found.kind == "qdq-onnx")
        _plan_int8(plan, strong, found.tensorrt_version if found is not None else "")
    return plan


def finalize(plan: BuildPlan, api: TensorRTApi) -> None:
    """Settle what depends on the TensorRT release: typing, the INT8 path and its cache (checked against
    ``api.version``), and refusals (strong typing unavailable, Q/DQ on an 8.x DLA). Raises :class:`BuildError`."""
    r = plan.request
    plan.tensorrt_version = api.version
    if r.strongly_typed and not api.strong_typing:
        raise BuildError(
            f"--strongly-typed needs TensorRT 10 or newer (this is TensorRT {api.version}); drop it: "
            "TensorRT 8.x builds weakly typed networks from builder flags"
        )
    strong = r.strongly_typed or not api.weak_typing
    plan.typing = "strong" if strong else "weak"
    if strong and not r.strongly_typed:
        plan.notes.append(f"TensorRT {api.version} builds strongly typed networks only")
    if r.precision == "fp16" and strong:
        plan.network_onnx = "fp16"
    if r.precision == "int8" and not plan.has_qdq:
        _plan_int8(plan, strong, api.version)
        if api.weak_typing and not strong and api.major >= 10:
            plan.notes.append(
                f"TensorRT {api.version} deprecates the INT8 calibrator (it still works): --strongly-typed "
                "derives a Q/DQ model from the same images instead"
            )
    quantized_explicitly = plan.has_qdq or plan.int8_mode in ("quantize", "reuse-qdq")
    if r.dla is not None and quantized_explicitly and not api.dla_explicit_quantization:
        raise BuildError(
            f"TensorRT {api.version}'s DLA has no explicit (Q/DQ) quantization, so this INT8 build cannot run on "
            f"DLA core {r.dla}: build the FP32 model with --precision int8 --calib-images DIR (implicit "
            "calibration, which DLA runs), or drop --dla to run the Q/DQ model on the GPU"
        )
    if r.dla is not None and strong and r.precision == "int8" and not r.gpu_fallback:
        raise BuildError(
            "a strongly typed INT8 build keeps the detection heads in FP32 (the Q/DQ model leaves them float) "
            "and DLA runs no FP32 layer: add --gpu-fallback to run the heads on the GPU"
        )


def _plan_int8(plan: BuildPlan, strong: bool, tensorrt_version: str) -> None:
    """Choose the INT8 path for an FP32 model: implicit calibration (weak) or a derived Q/DQ model
    (strong), each reusing a matching cache and refusing a stale one."""
    r = plan.request
    plan.cache_path = r.calib_cache or default_cache_path(plan.output, plan.calib_algo, qdq=strong)
    if strong:
        plan.network_onnx = "qdq"
        modes = ("quantize", "reuse-qdq")
    else:
        plan.network_onnx = "as given"
        modes = ("calibrate", "reuse-cache")
    plan.int8_mode = modes[0]  # calibration_batch depends on the mode
    decision = decide_cache(
        plan.cache_path, expected_cache_identity(plan, tensorrt_version), plan.request.recalibrate
    )
    if decision.action == "stale":
        raise BuildError(decision.message(plan.cache_path))
    if decision.action == "reuse":
        plan.int8_mode = modes[1]
        note = f"reusing {'Q/DQ model' if strong else 'calibration cache'} {plan.cache_path} (matches this model)"
        if r.calib_images and note not in plan.notes:
            plan.notes.append(note + "; --recalibrate redoes it")
        return
    if not r.calib_images:
        raise BuildError(
            f"INT8 calibration needs images: pass --calib-images DIR|LIST (no calibration cache at {plan.cache_path}), "
            "or quantize explicitly with `nano-quantize --target tensorrt` and build the Q/DQ model"
        )


def expected_cache_identity(plan: BuildPlan, tensorrt_version: str) -> CacheIdentity:
    """The identity a cache must have to be reused for ``plan`` (``tensorrt_version`` is ignored for a
    derived Q/DQ model, which no TensorRT made)."""
    qdq = plan.int8_mode in ("quantize", "reuse-qdq")
    return CacheIdentity(
        onnx_sha256=plan.onnx_sha256,
        preprocess_sha256=preprocess_hash(plan.metadata.preprocess_params()),
        algorithm=plan.calib_algo,
        batch=plan.calibration_batch,
        tensorrt_version=QDQ_ANY_TENSORRT if qdq else tensorrt_version,
        kind="qdq-onnx" if qdq else "tensorrt-cache",
    )


def check_capabilities(plan: BuildPlan, caps: DeviceCapabilities) -> None:
    """Refuse what the device cannot do: INT8/FP16 without fast support, DLA it does not have."""
    r = plan.request
    if r.precision == "int8" and not caps.fast_int8:
        raise BuildError(
            f"{caps.gpu_name} (compute capability {caps.compute_capability}) has no fast INT8: build "
            "--precision fp16 or fp32"
        )
    if r.precision == "fp16" and not caps.fast_fp16:
        raise BuildError(
            f"{caps.gpu_name} (compute capability {caps.compute_capability}) has no fast FP16: build "
            "--precision fp32"
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
