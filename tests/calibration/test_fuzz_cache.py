"""Fuzzing the calibration cache and its identity sidecar (what ``nano-calib show`` and ``nano-build``
read back). Property: a valid cache/identity, or CacheFormatError (and decide_cache answers stale),
never another exception, never a hang (testsupport.fuzz); plus issue 11's sidecar cases as examples."""

from __future__ import annotations

import json
import math
import os
import tempfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from testsupport.fuzz import fuzz, mutated_bytes, mutated_json, no_hang, tried
from yolo_nano.calibration.cache import (
    CacheFormatError,
    CacheIdentity,
    CalibrationCache,
    decide_cache,
    read_cache,
    read_identity,
    save_with_identity,
    sidecar_path,
    summarize,
)

_DIR = tempfile.mkdtemp(prefix="fuzz-calib-")

CACHE = b"""TRT-8502-EntropyCalibration2
images: 3c010a14
/conv1/Conv_output_0: 3d8b5e7f
(Unnamed Layer* 3) [Activation]_output: 3e0f2a11
head_s32: 3f800000
"""
CACHE_CORPUS = [
    b"TRT-8502-EntropyCalibration2\nx: 7fc00000\n",  # NaN scale
    b"TRT-8502-EntropyCalibration2\nx: 7f800000\n",  # inf scale
    b"TRT-8502-EntropyCalibration2\nx: bf800000\n",  # negative scale
    b"TRT-8502-EntropyCalibration2\nx: 3f800000\nx: 3f800000\n",
    b"TRT-8502-EntropyCalibration2\n" + b"\xff" * 10,
    b"\x00" * 64,
    b"",
]


def test_long_version_is_just_text():
    tried("calibration cache")
    assert CalibrationCache.parse(b"TRT-" + b"9" * 5000 + b"-Entropy\nx: 1\n").version == "9" * 5000


def _check_cache(data: bytes) -> None:
    tried("calibration cache")
    try:
        with no_hang():
            cache = CalibrationCache.parse(data, source="fuzz.calib")
    except CacheFormatError as e:
        assert str(e).startswith("fuzz.calib:")
        return
    assert cache.scales and all(math.isfinite(s) and s >= 0 for s in cache.scales.values())
    rows = summarize(cache)
    assert len(rows) == len(cache.scales) and all(math.isfinite(r[2]) for r in rows)
    assert CalibrationCache.parse(cache.to_text()).scales == cache.scales


@pytest.mark.parametrize("data", CACHE_CORPUS)
def test_calibration_cache_corpus(data):
    """NaN, inf and negative scales, duplicates, binary and empty files are malformed caches."""
    _check_cache(data)
    with pytest.raises(CacheFormatError):
        CalibrationCache.parse(data)


@fuzz(600)
@given(data=mutated_bytes([CACHE], max_ops=6) | st.binary(max_size=100))
def test_fuzz_calibration_cache(data):
    """CalibrationCache.parse: finite non-negative scales that round-trip, or CacheFormatError."""
    _check_cache(data)


# ------------------------------------------------------------------------------------ sidecar
EXPECTED = CacheIdentity(
    onnx_sha256="a" * 64,
    preprocess_sha256="b" * 64,
    algorithm="entropy",
    batch=8,
    tensorrt_version="8.5.2.2",
    num_images=500,
    created="2026-12-01T00:00:00Z",
)
CACHE_PATH = os.path.join(_DIR, "model.calib")
save_with_identity(CACHE_PATH, CACHE, EXPECTED)
with open(sidecar_path(CACHE_PATH), encoding="utf-8") as _f:
    SIDECAR = json.load(_f)


def _sidecar(**fields):  # noqa: ANN003
    d = dict(SIDECAR)
    d.update(fields)
    return json.dumps(d)


# issue 11 item 9: such a sidecar is invalid (one line) and the cache is not reused
SIDECAR_CORPUS = [
    _sidecar(batch=1e400),
    _sidecar(batch=10**400),
    _sidecar(batch=float("inf")),
    _sidecar(batch="8"),
    _sidecar(onnx_sha256=["x"]),
    _sidecar(format_version=10**400),
    _sidecar(num_images=-1),
    _sidecar(created=["2026"]),
    _sidecar(kind=None),
    "[" * 100_000 + "]" * 100_000,
    '{"a": ' * 50_000 + "1" + "}" * 50_000,
    "",
    "\udcff",
]


def _check_sidecar(text: str) -> None:
    tried("calibration cache sidecar")
    with open(sidecar_path(CACHE_PATH), "wb") as f:
        f.write(text.encode("utf-8", "surrogateescape"))
    try:
        with no_hang():
            found = read_identity(CACHE_PATH)
    except CacheFormatError as e:
        assert "\n" not in str(e)
        found = None
    else:
        assert isinstance(found, CacheIdentity)
        assert isinstance(found.batch, int) and isinstance(found.onnx_sha256, str)
        found.differences(EXPECTED)
    with no_hang():
        decision = decide_cache(CACHE_PATH, EXPECTED)
    assert decision.action in ("reuse", "stale")
    if decision.action == "reuse":
        assert found is not None and not found.differences(EXPECTED)
    else:
        assert decision.reasons and decision.message(CACHE_PATH)


@pytest.mark.parametrize("text", SIDECAR_CORPUS, ids=range(len(SIDECAR_CORPUS)))
def test_sidecar_corpus(text):
    _check_sidecar(text)
    assert decide_cache(CACHE_PATH, EXPECTED).action == "stale"


@fuzz(400)
@given(text=mutated_json([SIDECAR], max_ops=3))
def test_fuzz_sidecar(text):
    """read_identity / decide_cache: an identity (reused only when it matches) or CacheFormatError."""
    _check_sidecar(text)


def test_read_cache_of_a_folder_and_a_missing_file():
    tried("calibration cache")
    with pytest.raises(CacheFormatError):
        read_cache(_DIR)
    with pytest.raises(CacheFormatError):
        read_cache(os.path.join(_DIR, "missing.calib"))
