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
(``<cache>.json``: ONNX sha256, preprocessing hash, algorithm, batch, TensorRT version) and a cache is
reused only when all of them match; otherwise :func:`decide_cache` says exactly why it is stale and
``--recalibrate`` rebuilds it.
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
    atomic_write_json,
    atomic_write_text,
    read_json_object,
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

IDENTITY_FORMAT = 1

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


@dataclass
class CacheIdentity:
    """What a calibration cache was made from. The first five fields decide reuse; the rest inform."""

    onnx_sha256: str
    preprocess_sha256: str
    algorithm: str  # our name: "entropy" | "minmax"
    batch: int
    tensorrt_version: str
    num_images: Optional[int] = None
    created: Optional[str] = None
    format_version: int = IDENTITY_FORMAT

    COMPARED = ("onnx_sha256", "preprocess_sha256", "algorithm", "batch", "tensorrt_version")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<sidecar>") -> CacheIdentity:
        try:
            return cls(
                onnx_sha256=str(d["onnx_sha256"]),
                preprocess_sha256=str(d["preprocess_sha256"]),
                algorithm=str(d["algorithm"]),
                batch=int(d["batch"]),
                tensorrt_version=str(d["tensorrt_version"]),
                num_images=None if d.get("num_images") is None else int(d["num_images"]),
                created=d.get("created"),
                format_version=int(d.get("format_version", IDENTITY_FORMAT)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CacheFormatError(
                f"{source}: malformed calibration cache identity ({type(e).__name__}: {e})"
            ) from e

    def differences(self, other: CacheIdentity) -> List[str]:
        """Human-readable reasons why a cache made for ``self`` does not fit ``other`` (empty: it fits)."""
        labels = {
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
    """Write the sidecar of ``cache_path`` atomically (fills ``created`` if unset)."""
    if identity.created is None:
        identity.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write_json(sidecar_path(cache_path), identity.to_dict())


def read_identity(cache_path: PathLike) -> Optional[CacheIdentity]:
    """The sidecar of ``cache_path``, or None when there is none. Raises on a malformed sidecar."""
    path = sidecar_path(cache_path)
    if not os.path.exists(path):
        return None
    d = read_json_object(path, CacheFormatError, "calibration cache identity")
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
    """Apply the reuse rule: reuse only when the cache parses and its sidecar matches ``expected``.

    A malformed cache, a missing or malformed sidecar and any identity mismatch make the cache stale.
    ``recalibrate=True`` always answers ``"calibrate"``.
    """
    path = os.fspath(cache_path)
    if recalibrate or not os.path.exists(path):
        return CacheDecision("calibrate")
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
    header_algo = ALGORITHMS.get(expected.algorithm)
    if (
        header_algo is not None
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
