from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from yolo_nano.calibration.cache import (
    CacheFormatError,
    CacheIdentity,
    CalibrationCache,
    decide_cache,
    hex_to_scale,
    preprocess_hash,
    read_cache,
    read_identity,
    save_with_identity,
    scale_to_hex,
    sidecar_path,
    write_cache,
    write_identity,
)
from yolo_nano.core.fileio import sha256_file
from yolo_nano.core.metadata import ModelMetadata

SAMPLE = """TRT-8502-EntropyCalibration2
images: 3c010a14
/conv1/Conv_output_0: 3d8b5e7f
(Unnamed Layer* 3) [Activation]_output: 3e0f2a11
head_s32: 3f800000
"""


def ident(**kw):
    base = dict(
        onnx_sha256="a" * 64,
        preprocess_sha256="b" * 64,
        algorithm="entropy",
        batch=8,
        tensorrt_version="8.5.2.2",
    )
    base.update(kw)
    return CacheIdentity(**base)


def test_hex_round_trip_is_big_endian_float32():
    assert scale_to_hex(1.0) == "3f800000"
    assert hex_to_scale("3f800000") == 1.0
    assert hex_to_scale("0") == 0.0  # leading zeros may be dropped
    for v in (0.0078125, 1e-3, 12.5):
        assert hex_to_scale(scale_to_hex(v)) == pytest.approx(v, rel=1e-7)


def test_parse_sample_cache():
    cache = CalibrationCache.parse(SAMPLE.encode())
    assert cache.version == "8502"
    assert cache.algorithm == "EntropyCalibration2"
    assert list(cache.scales)[:2] == ["images", "/conv1/Conv_output_0"]
    assert "(Unnamed Layer* 3) [Activation]_output" in cache.scales
    assert cache.scales["head_s32"] == 1.0
    assert cache.dynamic_range("head_s32") == pytest.approx(127.0)
    assert cache.scales["images"] == pytest.approx(0.00787, rel=1e-3)  # ~1/127: input in [0, 1]


def test_write_read_round_trip(tmp_path):
    cache = CalibrationCache.parse(SAMPLE)
    path = tmp_path / "m.calib"
    write_cache(path, cache)
    again = read_cache(path)
    assert again.scales == cache.scales
    assert path.read_text() == SAMPLE  # byte-identical to TensorRT's spelling
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("", 1, "empty"),
        ("TRT-85-\nx: 1\n", 1, "bad header"),
        ("calibration cache\nx: 3f800000\n", 1, "bad header"),
        ("TRT-8502-EntropyCalibration2\ngood: 3f800000\nbad line here\n", 3, "tensor_name: hexscale"),
        ("TRT-8502-EntropyCalibration2\nx: 3f800000\nx: 3f800000\n", 3, "twice"),
        ("TRT-8502-EntropyCalibration2\nx: 7fc00000\n", 2, "invalid scale"),
        ("TRT-8502-EntropyCalibration2\nx: zz\n", 2, "hexscale"),
        ("TRT-8502-EntropyCalibration2\n", 2, "no tensors"),
    ],
)
def test_malformed_caches_name_the_line(tmp_path, text, line, words):
    path = tmp_path / "bad.calib"
    path.write_text(text)
    with pytest.raises(CacheFormatError) as e:
        read_cache(path)
    assert f"{path}:{line}:" in str(e.value)
    assert words in str(e.value)


def test_binary_file_is_rejected_with_line(tmp_path):
    path = tmp_path / "engine.calib"
    path.write_bytes(b"TRT-8502-EntropyCalibration2\nx: 3f800000\n\xff\xfe")
    with pytest.raises(CacheFormatError, match=r":3: not a TensorRT calibration cache"):
        read_cache(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CacheFormatError, match="cannot read"):
        read_cache(tmp_path / "nope.calib")


def test_preprocess_hash_tracks_preprocessing():
    from dataclasses import replace

    from testsupport import tiny_onnx

    meta: ModelMetadata = tiny_onnx.tiny_metadata()
    h = preprocess_hash(meta.preprocess_params())
    assert h == preprocess_hash(replace(meta, class_names=("x", "y", "z")).preprocess_params())
    assert h != preprocess_hash(replace(meta, pad_value=0).preprocess_params())
    assert h != preprocess_hash(replace(meta, scale=1.0).preprocess_params())


def test_identity_sidecar_round_trip(tmp_path):
    path = tmp_path / "m.calib"
    save_with_identity(path, SAMPLE.encode(), ident(num_images=512))
    got = read_identity(path)
    assert got is not None and got.num_images == 512 and got.created
    assert got.cache_sha256 == sha256_file(path) and got.kind == "tensorrt-cache"
    assert json.loads(Path(sidecar_path(path)).read_text())["batch"] == 8
    assert read_identity(tmp_path / "other.calib") is None
    (tmp_path / "bad.calib.json").write_text('{"onnx_sha256": 1}')
    with pytest.raises(CacheFormatError, match="invalid calibration cache identity"):
        read_identity(tmp_path / "bad.calib")


GOOD = dict(onnx_sha256="a" * 64, preprocess_sha256="b" * 64, algorithm="entropy", batch=8,
            tensorrt_version="8.5.2.2", cache_sha256="c" * 64, kind="tensorrt-cache", format_version=2)  # fmt: skip


@pytest.mark.parametrize(
    "field, raw, words",
    [
        ("batch", "1e400", "'batch' must be an integer, got inf"),
        ("batch", "Infinity", "'batch' must be an integer|not a JSON number"),
        ("batch", "0", "'batch' must be in 1..4096"),
        ("batch", "true", "'batch' must be an integer, got True"),
        ("onnx_sha256", '["x"]', "'onnx_sha256' must be a 64-digit lowercase hex sha256, got ['x']"),
        ("num_images", "-3", "'num_images' must be a count"),
        ("tensorrt_version", "8.5", "'tensorrt_version' must be a short string"),
        ("algorithm", '"kl"', "'algorithm' must be one of"),
        ("kind", '"model"', "'kind' must be one of"),
        ("format_version", "1", "written by an older nano-build, without the sha256 of the cache"),
        ("format_version", "9", "newer than this yolo-nano-edge"),
        ("cache_sha256", "null", "'cache_sha256' is missing"),
    ],
)
def test_invalid_sidecars_are_one_line_errors(tmp_path, field, raw, words):
    doc = dict(GOOD)
    doc[field] = "PLACEHOLDER"
    (tmp_path / "m.calib.json").write_text(json.dumps(doc).replace('"PLACEHOLDER"', raw))
    with pytest.raises(CacheFormatError) as e:
        read_identity(tmp_path / "m.calib")
    assert any(w in str(e.value) for w in words.split("|")) and "\n" not in str(e.value)


def test_deeply_nested_sidecar_is_invalid(tmp_path):
    (tmp_path / "m.calib.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(CacheFormatError, match="nested too deeply|unreadable"):
        read_identity(tmp_path / "m.calib")


def test_edited_cache_no_longer_matches_its_sidecar(tmp_path):
    path = _cache_with_identity(tmp_path, ident())
    assert decide_cache(path, ident()).action == "reuse"
    path.write_text(SAMPLE.replace("3f800000", "3f000000"))  # still a valid cache, other scales
    d = decide_cache(path, ident())
    assert d.action == "stale" and "changed after it was written" in d.reasons[0]


def test_qdq_kind_is_not_parsed_as_a_tensorrt_cache(tmp_path):
    path = tmp_path / "m.qdq.onnx"
    save_with_identity(path, b"\x08\x07 an onnx file", ident(kind="qdq-onnx", tensorrt_version="any"))
    assert decide_cache(path, ident(kind="qdq-onnx", tensorrt_version="any")).action == "reuse"
    d = decide_cache(path, ident())
    assert d.action == "stale" and "malformed" in d.reasons[0]


def _cache_with_identity(tmp_path, identity):
    path = tmp_path / "m.calib"
    path.write_text(SAMPLE)
    write_identity(path, identity)  # records the sha256 of the file as written
    return path


def test_reuse_when_everything_matches(tmp_path):
    path = _cache_with_identity(tmp_path, ident())
    d = decide_cache(path, ident())
    assert d.action == "reuse" and d.reasons == [] and d.cache is not None


def test_no_cache_means_calibrate(tmp_path):
    assert decide_cache(tmp_path / "none.calib", ident()).action == "calibrate"


def test_recalibrate_overrides_a_stale_cache(tmp_path):
    path = _cache_with_identity(tmp_path, ident(onnx_sha256="c" * 64))
    assert decide_cache(path, ident(), recalibrate=True).action == "calibrate"


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("onnx_sha256", "c" * 64, "the ONNX model changed"),
        ("preprocess_sha256", "d" * 64, "the preprocessing changed"),
        ("algorithm", "minmax", "the calibration algorithm differs"),
        ("batch", 1, "the calibration batch size differs"),
        ("tensorrt_version", "10.3.0.30", "the TensorRT version differs"),
    ],
)
def test_each_mismatch_makes_it_stale_and_says_why(tmp_path, field, value, words):
    path = _cache_with_identity(tmp_path, ident(**{field: value}))
    d = decide_cache(path, ident())
    assert d.action == "stale"
    assert len(d.reasons) == 1 and words in d.reasons[0]
    msg = d.message(path)
    assert str(path) in msg and "--recalibrate" in msg and words in msg


def test_cache_without_sidecar_is_stale(tmp_path):
    path = tmp_path / "foreign.calib"
    path.write_text(SAMPLE)
    d = decide_cache(path, ident())
    assert d.action == "stale" and "no identity sidecar" in d.reasons[0]


def test_corrupt_cache_is_stale_with_line(tmp_path):
    path = _cache_with_identity(tmp_path, ident())
    path.write_text("TRT-8502-EntropyCalibration2\nbroken\n")
    d = decide_cache(path, ident())
    assert d.action == "stale" and ":2:" in d.reasons[0]


def test_header_algorithm_must_match(tmp_path):
    path = _cache_with_identity(tmp_path, ident(algorithm="minmax"))
    d = decide_cache(path, ident(algorithm="minmax"))
    assert d.action == "stale" and "MinMaxCalibration" in d.reasons[0]
