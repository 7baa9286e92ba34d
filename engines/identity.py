"""Engine identity records: ``<engine>.json`` beside every engine, and the load-time mismatch check.

A TensorRT engine only runs on the TensorRT version and GPU it was built with ("Version tag does not
match"). The record says what built it (TensorRT, GPU, compute capability, JetPack/L4T), how
(precision, DLA, calibration cache and algorithm or Q/DQ, workspace, the exact ``nano-build`` command)
and from what (ONNX sha256, preprocessing, input shape, the ONNX's full model metadata). The runtime
reads the model metadata from here, and :func:`check_compatible` refuses a mismatched engine with the
command that rebuilds it.

Records are untrusted input (copied between boards, edited by hand): :meth:`EngineIdentity.from_dict`
checks every field's type and range, so ``"batch": 1e400``, a list where a hash belongs or the wrong
type anywhere gives one :class:`EngineRecordError` line, never an OverflowError or a wrong value shown
as if valid.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from yolo_nano.core.fileio import PathLike, atomic_write_json, read_json_object
from yolo_nano.core.metadata import MetadataError, ModelMetadata

RECORD_FORMAT = 1
RECORD_SUFFIX = ".json"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MAX_DIM = 1 << 20


class EngineRecordError(ValueError):
    """The engine's identity record is missing or malformed."""


class EngineMismatchError(RuntimeError):
    """The engine was built for another TensorRT version or GPU; the message says how to rebuild it."""


class EngineMismatchWarning(UserWarning):
    """The engine may run here but was built on a different GPU model of the same architecture."""


def record_path(engine_path: PathLike) -> str:
    """The identity record of an engine: ``<engine>.json``."""
    return os.fspath(engine_path) + RECORD_SUFFIX


@dataclass
class EngineIdentity:
    """What an engine is, what built it and from what. Serialised as the ``<engine>.json`` record.

    ``precision``: ``fp32`` | ``fp16`` | ``int8``; ``quantization``: ``none`` | ``calibrated`` (implicit
    INT8 with a calibration cache) | ``qdq`` (explicit INT8 from a Q/DQ ONNX). ``input_shape``: the
    (N, 3, H, W) the engine runs with the largest batch (``dynamic_batch`` True: any batch 1..N).
    ``calibration``: ``{cache_path, cache_sha256, kind, algorithm, num_images, batch}`` for INT8 engines
    calibrated by nano-build (``kind``: ``tensorrt-cache`` or ``qdq-onnx``). ``metadata``:
    ``ModelMetadata.to_dict()`` of the ONNX. ``typing``: ``weak`` | ``strong`` network; ``network_onnx``:
    what TensorRT parsed (``as given``, an ``fp16`` copy, a ``qdq`` model derived from calibration
    images). ``profile``: the optimisation profile [min, opt, max] shapes (DLA: all the same, the runtime
    pads short batches). ``placement``: for DLA builds, ``{dla: [...], gpu: [...], source}`` layer names.
    """

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    onnx_path: str
    onnx_sha256: str
    input_shape: List[int]
    metadata: Dict[str, Any]
    preprocess: Dict[str, Any]
    build_command: str
    dynamic_batch: bool = False
    quantization: str = "none"
    dla_core: Optional[int] = None
    gpu_fallback: bool = False
    calibration: Optional[Dict[str, Any]] = None
    workspace_mb: Optional[int] = None
    jetpack: Optional[str] = None
    l4t: Optional[str] = None
    host: str = ""
    build_time: str = ""
    build_seconds: Optional[float] = None
    engine_sha256: Optional[str] = None
    engine_bytes: Optional[int] = None
    typing: str = "weak"
    network_onnx: str = "as given"
    profile: Optional[List[List[int]]] = None
    placement: Optional[Dict[str, Any]] = None
    format_version: int = RECORD_FORMAT
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<record>") -> EngineIdentity:
        """Validate a record document; raises :class:`EngineRecordError` (one line) on any bad field."""
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - names)
        try:
            _validate(d)
            ident = cls(**{k: v for k, v in d.items() if k in names})
        except (TypeError, ValueError) as e:
            raise EngineRecordError(f"{source}: invalid engine identity record: {e}") from e
        if ident.format_version > RECORD_FORMAT:
            raise EngineRecordError(
                f"{source}: record format {ident.format_version} is newer than this yolo-nano-edge understands "
                f"({RECORD_FORMAT}); upgrade yolo-nano-edge"
            )
        try:
            ModelMetadata.from_dict(ident.metadata)
        except MetadataError as e:
            raise EngineRecordError(f"{source}: engine record holds invalid model metadata: {e}") from e
        if unknown:
            ident.extra.setdefault("unknown_fields", unknown)
        return ident

    def model_metadata(self) -> ModelMetadata:
        """The model metadata of the ONNX the engine was built from."""
        try:
            return ModelMetadata.from_dict(self.metadata)
        except MetadataError as e:
            raise EngineRecordError(f"engine record holds invalid model metadata: {e}") from e

    @property
    def batch(self) -> int:
        """Largest batch the engine accepts."""
        return int(self.input_shape[0])

    def summary_lines(self) -> List[str]:
        """Human-readable lines for ``nano-engine info``."""
        meta = self.metadata
        dla = (
            "no"
            if self.dla_core is None
            else f"core {self.dla_core}" + (" + GPU fallback" if self.gpu_fallback else "")
        )
        lines = [
            f"precision:        {self.precision} (quantization: {self.quantization})",
            f"TensorRT:         {self.tensorrt_version}",
            f"GPU:              {self.gpu_name} (compute capability {self.compute_capability})",
            f"JetPack / L4T:    {self.jetpack or '-'} / {self.l4t or '-'}",
            f"DLA:              {dla}",
            f"input:            {meta.get('input_name', 'images')} {self.input_shape}"
            + (" (dynamic batch 1..N)" if self.dynamic_batch else "")
            + (" (static profile: shorter batches are padded)" if self.dla_core is not None else ""),
            f"network:          {self.typing}ly typed, TensorRT parsed {self.network_onnx} ONNX",
            f"model:            {meta.get('arch')} with {len(meta.get('class_names', []))} classes, "
            f"outputs {[h.get('name') for h in meta.get('heads', [])]}",
            f"ONNX:             {self.onnx_path} (sha256 {self.onnx_sha256[:16]})",
        ]
        if self.calibration:
            c = self.calibration
            lines.append(
                f"calibration:      {c.get('algorithm')} cache {c.get('cache_path')} "
                f"(sha256 {str(c.get('cache_sha256'))[:16]}, {c.get('num_images') or '?'} images)"
            )
        if self.placement:
            p = self.placement
            gpu = p.get("gpu") or []
            lines.append(
                f"placement:        {len(p.get('dla') or [])} DLA loadable(s), {len(gpu)} GPU layer(s)"
                + (f" ({', '.join(gpu[:6])}{' ...' if len(gpu) > 6 else ''})" if gpu else "")
                + f" [from the {p.get('source', '?')}]"
            )
        lines += [
            f"workspace:        {self.workspace_mb if self.workspace_mb is not None else 'default'} MiB",
            f"built:            {self.build_time} on {self.host}"
            + (f" in {self.build_seconds:.1f} s" if self.build_seconds is not None else ""),
            f"rebuild with:     {self.build_command}",
        ]
        return lines


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _check(d: Mapping[str, Any], name: str, ok: Any, what: str, required: bool = False) -> None:
    if name not in d or d[name] is None:
        if required:
            raise ValueError(f"'{name}' is missing")
        return
    if not ok(d[name]):
        raise ValueError(f"'{name}' must be {what}, got {_short(d[name])}")


def _is_str(v: Any) -> bool:
    return isinstance(v, str) and len(v) <= 4096


def _is_seconds(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return 0 <= v <= 1e9 and (isinstance(v, int) or math.isfinite(v))  # no float() of a 400-digit int


def _is_shape(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 4 and all(_is_int(x, 1, _MAX_DIM) for x in v)


def _validate(d: Mapping[str, Any]) -> None:
    """Type and range of every field (raises ValueError naming the first bad one)."""
    for name in ("tensorrt_version", "gpu_name", "compute_capability", "onnx_path", "build_command"):
        _check(d, name, _is_str, "a string", required=True)
    for name in ("jetpack", "l4t", "host", "build_time", "network_onnx"):
        _check(d, name, _is_str, "a string")
    _check(d, "precision", lambda v: v in ("fp32", "fp16", "int8"), "fp32, fp16 or int8", required=True)
    _check(d, "quantization", lambda v: v in ("none", "calibrated", "qdq"), "none, calibrated or qdq")
    _check(d, "typing", lambda v: v in ("weak", "strong"), "weak or strong")
    _check(
        d, "onnx_sha256", lambda v: isinstance(v, str) and bool(_HEX64.match(v)), "a sha256", required=True
    )
    _check(d, "engine_sha256", lambda v: isinstance(v, str) and bool(_HEX64.match(v)), "a sha256")
    _check(d, "input_shape", _is_shape, "[N, 3, H, W] positive integers", required=True)
    _check(d, "profile", lambda v: isinstance(v, list) and len(v) == 3 and all(map(_is_shape, v)),
           "three [N, 3, H, W] shapes")  # fmt: skip
    for name in ("dynamic_batch", "gpu_fallback"):
        _check(d, name, lambda v: isinstance(v, bool), "true or false")
    _check(d, "dla_core", lambda v: _is_int(v, 0, 64), "a DLA core index")
    _check(d, "workspace_mb", lambda v: _is_int(v, 1, 1 << 30), "a positive number of MiB")
    _check(d, "engine_bytes", lambda v: _is_int(v, 0, 1 << 44), "a size in bytes")
    _check(d, "format_version", lambda v: _is_int(v, 0, 1 << 20), "an integer")
    _check(d, "build_seconds", _is_seconds, "a finite number of seconds")
    for name in ("metadata", "preprocess"):
        _check(d, name, lambda v: isinstance(v, dict), "a JSON object", required=True)
    _check(d, "extra", lambda v: isinstance(v, dict), "a JSON object")
    _check(d, "placement", lambda v: isinstance(v, dict) and all(
        isinstance(v.get(k, []), list) and all(_is_str(x) for x in v.get(k, [])) for k in ("dla", "gpu")
    ), "{dla: [names], gpu: [names]}")  # fmt: skip
    cal = d.get("calibration")
    if cal is not None:
        if not isinstance(cal, dict):
            raise ValueError(f"'calibration' must be a JSON object, got {_short(cal)}")
        _check(cal, "cache_path", _is_str, "a string (calibration.cache_path)", required=True)
        _check(cal, "cache_sha256", lambda v: isinstance(v, str) and bool(_HEX64.match(v)),
               "a sha256 (calibration.cache_sha256)")  # fmt: skip
        _check(cal, "algorithm", _is_str, "a string (calibration.algorithm)")
        _check(cal, "kind", _is_str, "a string (calibration.kind)")
        for name in ("num_images", "batch"):
            _check(cal, name, lambda v: _is_int(v, 0, 10**9), f"a count (calibration.{name})")


def write_record(engine_path: PathLike, identity: EngineIdentity) -> str:
    """Write the record of ``engine_path`` atomically; returns its path."""
    path = record_path(engine_path)
    atomic_write_json(path, identity.to_dict())
    return path


def read_record(engine_path: PathLike) -> EngineIdentity:
    """Read the identity record beside ``engine_path``. Raises :class:`EngineRecordError`."""
    path = record_path(engine_path)
    if not os.path.exists(path):
        raise EngineRecordError(
            f"{os.fspath(engine_path)} has no identity record {path}: build engines with `nano-build`, "
            "which writes it (the record carries the model metadata the runtime needs)"
        )
    try:
        d = read_json_object(path, EngineRecordError, "engine identity record")
    except RecursionError:
        raise EngineRecordError(f"{path}: invalid engine identity record (JSON nested too deeply)") from None
    return EngineIdentity.from_dict(d, source=path)


def mismatch_reasons(identity: EngineIdentity, tensorrt_version: str, compute_capability: str) -> List[str]:
    """Why an engine with ``identity`` cannot run on this TensorRT / GPU (empty: it can)."""
    reasons = []
    if identity.tensorrt_version != tensorrt_version:
        reasons.append(
            f"it was built with TensorRT {identity.tensorrt_version}, this is TensorRT {tensorrt_version}"
        )
    if identity.compute_capability != compute_capability:
        reasons.append(
            f"it was built for compute capability {identity.compute_capability} ({identity.gpu_name}), "
            f"this GPU is {compute_capability}"
        )
    return reasons


def check_compatible(
    engine_path: PathLike,
    identity: EngineIdentity,
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: str,
) -> None:
    """Refuse an engine built for another TensorRT version or GPU architecture.

    Raises :class:`EngineMismatchError` whose message says to rebuild and gives the exact command;
    warns (:class:`EngineMismatchWarning`) when only the GPU model name differs.
    """
    reasons = mismatch_reasons(identity, tensorrt_version, compute_capability)
    if reasons:
        raise EngineMismatchError(
            f"cannot load {os.fspath(engine_path)}: {'; '.join(reasons)}. TensorRT engines only run where "
            f"they were built: rebuild it here with: {identity.build_command}"
        )
    if identity.gpu_name != gpu_name:
        warnings.warn(
            f"{os.fspath(engine_path)} was built on {identity.gpu_name}, this is {gpu_name} (same compute "
            f"capability {compute_capability}); if it fails or runs slowly, rebuild: {identity.build_command}",
            EngineMismatchWarning,
            stacklevel=2,
        )
