"""TensorRT INT8 calibration caches: the text format, the identity sidecar and the reuse rule.

Cache format (what ``IInt8Calibrator.write_calibration_cache`` receives and ``read_calibration_cache``
returns)::

    TRT-8502-EntropyCalibration2
    images: 3c010a14
    /conv1/Conv_output_0: 3d8b5e7f
    ...

The first line is ``TRT-<version digits>-<algorithm>``; every other line is ``tensor_name: hex`` where
``hex`` is the big-endian IEEE float32 bit pattern of the tensor's scale. The dynamic range TensorRT
uses is ``scale * 127``.

TensorRT silently ignores a cache it cannot use and a cache silently reused after the weights or the
preprocessing changed gives a broken INT8 engine. So every cache we write gets an identity sidecar
(``<cache>.json``: ONNX sha256, preprocessing hash, algorithm, batch, TensorRT version, and the sha256
of the cache file itself) and a cache is reused only when all of them match; otherwise
:func:`decide_cache` says exactly why it is stale and ``--recalibrate`` rebuilds it. A cache edited
after it was written no longer matches its own sha256 and is refused. The same rule serves the Q/DQ
ONNX that strongly typed INT8 builds derive from calibration images (``kind="qdq-onnx"``): the
"cache" is then that ONNX file and no TensorRT version is involved.

Sidecars are untrusted input: :meth:`CacheIdentity.from_dict` checks every field's type and range
(a ``"batch": 1e400``, a list where a hash belongs, deep nesting) and raises :class:`CacheFormatError`.
Both files are written only after a calibration finished without error (:func:`save_with_identity`).
"""

from __future__ import annotations

import os
import re
import struct
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from yolo_nano.core.fileio import (
    PathLike,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_json_object,
    sha256_bytes,
    sha256_file,
    sha256_json,
)

#: Our CLI names -> the names TensorRT writes in the cache header.
ALGORITHMS: Dict[str, str] = {"entropy": "EntropyCalibration2", "minmax": "MinMaxCalibration"}
#: Every algorithm name TensorRT may write in a header (the legacy ones are parsed, never produced).
KNOWN_HEADER_ALGORITHMS = (
    "EntropyCalibration2",
    "EntropyCalibration",
    "MinMaxCalibration",
    "LegacyCalibration",
)

#: 2: the sidecar records the cache's own sha256 (format 1 sidecars are stale: recalibrate).
IDENTITY_FORMAT = 2
#: What the cache file is: TensorRT's calibration cache, or a Q/DQ ONNX derived from calibration images.
CACHE_KINDS = ("tensorrt-cache", "qdq-onnx")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
MAX_BATCH = 4096

_HEADER_RE = re.compile(r"^TRT-(\d+)-([A-Za-z0-9_]+)$")
_LINE_RE = re.compile(r"^(.+): ([0-9a-fA-F]{1,8})$")


class CacheFormatError(ValueError):
    """A calibration cache or its sidecar is malformed (the message names the file and line)."""


def scale_to_hex(scale: float) -> str:
    """The cache's hex spelling of a float32 scale (big-endian bit pattern, 8 lowercase hex digits)."""
    return struct.pack(">f", scale).hex()


def hex_to_scale(text: str) -> float:
    """Inverse of :func:`scale_to_hex`; accepts 1-8 hex digits (TensorRT may drop leading zeros)."""
    return float(struct.unpack(">f", bytes.fromhex(text.zfill(8)))[0])


@dataclass
class CalibrationCache:
    """A parsed TensorRT calibration cache.

    ``version`` is the digit string of the header (``"8502"`` for TensorRT 8.5.2), ``algorithm`` the
    TensorRT algorithm name, ``scales`` tensor name -> float32 scale in file order.
    """

    version: str
    algorithm: str
    scales: Dict[str, float] = field(default_factory=OrderedDict)

    def dynamic_range(self, name: str) -> float:
        """The symmetric dynamic range TensorRT uses for ``name``: ``scale * 127``."""
        return self.scales[name] * 127.0

    def to_text(self) -> str:
        """The cache in TensorRT's text format (ends with a newline)."""
        lines = [f"TRT-{self.version}-{self.algorithm}"]
        lines += [f"{name}: {scale_to_hex(s)}" for name, s in self.scales.items()]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, data: Any, source: str = "<cache>") -> CalibrationCache:
        """Parse cache ``data`` (bytes or str). Raises :class:`CacheFormatError` naming ``source:line``."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            try:
                text = bytes(data).decode("ascii")
            except UnicodeDecodeError as e:
                lineno = bytes(data)[: e.start].count(b"\n") + 1
                raise CacheFormatError(
                    f"{source}:{lineno}: not a TensorRT calibration cache (non-text byte at offset {e.start})"
                ) from e
        else:
            text = str(data)
        lines = text.splitlines()
        if not lines or not lines[0].strip():
            raise CacheFormatError(
                f"{source}:1: empty calibration cache (expected a 'TRT-<version>-<algorithm>' header)"
            )
        m = _HEADER_RE.match(lines[0].strip())
        if not m:
            raise CacheFormatError(
                f"{source}:1: bad header {lines[0][:60]!r}; expected 'TRT-<version digits>-<algorithm>', "
                "e.g. 'TRT-8502-EntropyCalibration2'"
            )
        cache = cls(version=m.group(1), algorithm=m.group(2))
        for number, raw in enumerate(lines[1:], start=2):
            line = raw.strip()
            if not line:
                continue
            lm = _LINE_RE.match(line)
            if not lm:
                raise CacheFormatError(
                    f"{source}:{number}: expected 'tensor_name: hexscale' (1-8 hex digits), got {line[:80]!r}"
                )
            name, value = lm.group(1), lm.group(2)
            if name in cache.scales:
                raise CacheFormatError(f"{source}:{number}: tensor {name!r} appears twice")
            scale = hex_to_scale(value)
            if not (scale >= 0.0 and scale != float("inf")):  # also rejects NaN
                raise CacheFormatError(f"{source}:{number}: tensor {name!r} has an invalid scale {scale!r}")
            cache.scales[name] = scale
        if not cache.scales:
            raise CacheFormatError(f"{source}:{len(lines) + 1}: the cache lists no tensors")
        return cache


def read_cache(path: PathLike) -> CalibrationCache:
    """Read and parse the cache at ``path``."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CacheFormatError(f"{path}: cannot read calibration cache ({e.strerror})") from e
    return CalibrationCache.parse(data, source=path)


def write_cache(path: PathLike, cache: CalibrationCache) -> None:
    """Write ``cache`` to ``path`` atomically."""
    atomic_write_text(path, cache.to_text())


# --------------------------------------------------------------------------------------------------
# identity sidecar and reuse rule


def preprocess_hash(preprocess_params: Mapping[str, Any]) -> str:
    """Stable hash of ``ModelMetadata.preprocess_params()`` (what the cache depends on besides weights)."""
    return sha256_json(dict(preprocess_params))


def _field(d: Mapping[str, Any], name: str, kind: str, required: bool = True) -> Any:
    """``d[name]`` checked against ``kind`` (``hex64``, ``str``, ``int``, ``count``); raises ValueError."""
    if name not in d or d[name] is None:
        if required:
            raise ValueError(f"'{name}' is missing")
        return None
    v = d[name]
    if kind == "hex64":
        if not isinstance(v, str) or not _HEX64.match(v):
            raise ValueError(f"'{name}' must be a 64-digit lowercase hex sha256, got {_short(v)}")
    elif kind == "str":
        if not isinstance(v, str) or len(v) > 200:
            raise ValueError(f"'{name}' must be a short string, got {_short(v)}")
    elif isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"'{name}' must be an integer, got {_short(v)}")
    elif kind == "int" and not 1 <= v <= MAX_BATCH:
        raise ValueError(f"'{name}' must be in 1..{MAX_BATCH}, got {v}")
    elif kind == "count" and not 0 <= v <= 10**9:
        raise ValueError(f"'{name}' must be a count >= 0, got {_short(v)}")
    return v


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class CacheIdentity:
    """What a calibration cache was made from. The fields in :attr:`COMPARED` decide reuse;
    ``cache_sha256`` (the cache file's own hash, set when the cache is written) must match the file."""

    onnx_sha256: str
    preprocess_sha256: str
    algorithm: str  # our name: "entropy" | "minmax"
    batch: int
    tensorrt_version: str  # "any" for kind "qdq-onnx"
    cache_sha256: Optional[str] = None
    kind: str = "tensorrt-cache"
    num_images: Optional[int] = None
    created: Optional[str] = None
    format_version: int = IDENTITY_FORMAT

    COMPARED = ("kind", "onnx_sha256", "preprocess_sha256", "algorithm", "batch", "tensorrt_version")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<sidecar>") -> CacheIdentity:
        """Validate a sidecar document; raises :class:`CacheFormatError` (one line) on any bad field."""
        try:
            version = _field(d, "format_version", "count")
            if version != IDENTITY_FORMAT:
                raise ValueError(
                    f"format {version} ({'newer than this yolo-nano-edge: upgrade it' if version > IDENTITY_FORMAT else 'written by an older nano-build, without the sha256 of the cache'})"
                )
            kind = _field(d, "kind", "str")
            if kind not in CACHE_KINDS:
                raise ValueError(f"'kind' must be one of {CACHE_KINDS}, got {_short(kind)}")
            algorithm = _field(d, "algorithm", "str")
            if algorithm not in ALGORITHMS:
                raise ValueError(f"'algorithm' must be one of {sorted(ALGORITHMS)}, got {_short(algorithm)}")
            return cls(
                onnx_sha256=_field(d, "onnx_sha256", "hex64"),
                preprocess_sha256=_field(d, "preprocess_sha256", "hex64"),
                algorithm=algorithm,
                batch=_field(d, "batch", "int"),
                tensorrt_version=_field(d, "tensorrt_version", "str"),
                cache_sha256=_field(d, "cache_sha256", "hex64"),
                kind=kind,
                num_images=_field(d, "num_images", "count", required=False),
                created=_field(d, "created", "str", required=False),
                format_version=version,
            )
        except ValueError as e:
            raise CacheFormatError(f"{source}: invalid calibration cache identity: {e}") from e

    def differences(self, other: CacheIdentity) -> List[str]:
        """Human-readable reasons why a cache made for ``self`` does not fit ``other`` (empty: it fits)."""
        labels = {
            "kind": "the cache is another kind of file",
            "onnx_sha256": "the ONNX model changed",
            "preprocess_sha256": "the preprocessing changed",
            "algorithm": "the calibration algorithm differs",
            "batch": "the calibration batch size differs",
            "tensorrt_version": "the TensorRT version differs",
        }
        out = []
        for name in self.COMPARED:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                if name.endswith("sha256"):
                    mine, theirs = str(mine)[:12], str(theirs)[:12]
                out.append(f"{labels[name]} (cache: {mine}, now: {theirs})")
        return out


def sidecar_path(cache_path: PathLike) -> str:
    """The identity sidecar of a cache: ``<cache>.json``."""
    return os.fspath(cache_path) + ".json"


def write_identity(cache_path: PathLike, identity: CacheIdentity) -> None:
    """Write the sidecar of ``cache_path`` atomically (fills ``created``, and ``cache_sha256`` from the
    file on disk, if unset)."""
    if identity.created is None:
        identity.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if identity.cache_sha256 is None:
        identity.cache_sha256 = sha256_file(cache_path)
    atomic_write_json(sidecar_path(cache_path), identity.to_dict())


def save_with_identity(cache_path: PathLike, data: bytes, identity: CacheIdentity) -> None:
    """Write a finished cache (``data``) and then its sidecar, each atomically. The sidecar holds the
    sha256 of ``data``: a crash between the two leaves a cache that does not match any sidecar (stale)."""
    atomic_write_bytes(cache_path, data)
    identity.cache_sha256 = sha256_bytes(data)
    write_identity(cache_path, identity)


def read_identity(cache_path: PathLike) -> Optional[CacheIdentity]:
    """The sidecar of ``cache_path``, or None when there is none. Raises :class:`CacheFormatError` on an
    unreadable or invalid sidecar."""
    path = sidecar_path(cache_path)
    if not os.path.exists(path):
        return None
    try:
        d = read_json_object(path, CacheFormatError, "calibration cache identity")
    except RecursionError:
        raise CacheFormatError(
            f"{path}: invalid calibration cache identity (JSON nested too deeply)"
        ) from None
    return CacheIdentity.from_dict(d, source=path)


@dataclass
class CacheDecision:
    """What to do with a calibration cache.

    ``action``: ``"reuse"`` (use the cache, no images needed), ``"calibrate"`` (no usable cache or
    ``--recalibrate``: calibrate from images and write the cache) or ``"stale"`` (a cache exists but
    does not fit: refuse, ``reasons`` say why).
    """

    action: str
    reasons: List[str] = field(default_factory=list)
    cache: Optional[CalibrationCache] = None

    def message(self, cache_path: PathLike) -> str:
        """One line telling the user why the cache is stale and how to rebuild it."""
        return (
            f"calibration cache {os.fspath(cache_path)} is stale: {'; '.join(self.reasons)}. "
            "Rebuild it with --recalibrate (and --calib-images DIR|LIST), or point --calib-cache elsewhere"
        )


def decide_cache(cache_path: PathLike, expected: CacheIdentity, recalibrate: bool = False) -> CacheDecision:
    """Apply the reuse rule: reuse only when the cache parses (TensorRT caches), its sidecar is valid,
    matches ``expected`` and records the sha256 the cache file has now.

    A malformed cache, a missing or invalid sidecar, an edited cache and any identity mismatch make the
    cache stale. ``recalibrate=True`` always answers ``"calibrate"``.
    """
    path = os.fspath(cache_path)
    if recalibrate or not os.path.exists(path):
        return CacheDecision("calibrate")
    cache: Optional[CalibrationCache] = None
    if expected.kind == "tensorrt-cache":
        try:
            cache = read_cache(path)
        except CacheFormatError as e:
            return CacheDecision("stale", [f"the cache is malformed ({e})"])
    reasons: List[str] = []
    try:
        found = read_identity(path)
    except CacheFormatError as e:
        found = None
        reasons.append(str(e))
    if found is None:
        if not reasons:
            reasons.append(f"it has no identity sidecar {sidecar_path(path)} (made outside nano-build?)")
    else:
        reasons += found.differences(expected)
        actual = sha256_file(path)
        if found.cache_sha256 != actual:
            reasons.append(
                f"the cache file changed after it was written (sha256 {actual[:12]}, its sidecar records "
                f"{str(found.cache_sha256)[:12]}): edited or replaced"
            )
    header_algo = ALGORITHMS.get(expected.algorithm)
    if (
        cache is not None
        and header_algo is not None
        and cache.algorithm != header_algo
        and not any("algorithm" in r for r in reasons)
    ):
        reasons.append(f"the cache header says {cache.algorithm}, expected {header_algo}")
    if reasons:
        return CacheDecision("stale", reasons, cache)
    return CacheDecision("reuse", [], cache)


def summarize(cache: CalibrationCache) -> List[Tuple[str, float, float]]:
    """Rows ``(tensor, scale, dynamic_range)`` in file order, for ``nano-calib show``."""
    return [(name, s, s * 127.0) for name, s in cache.scales.items()]
