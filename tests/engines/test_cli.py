from __future__ import annotations

import os
import subprocess
import sys

import pytest

from testsupport import tiny_onnx
from yolo_nano.engines.device import tensorrt_available
from yolo_nano.engines.identity import EngineIdentity, write_record

BIN = os.path.dirname(sys.executable)
no_tensorrt = pytest.mark.skipif(tensorrt_available(), reason="checks the behaviour without TensorRT")


def run(tool, *args, cwd=None):
    return subprocess.run(
        [os.path.join(BIN, tool), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def one_line_error(r, code=2):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("warning:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


@no_tensorrt
def test_build_validates_then_says_tensorrt_is_required(tmp_path, tiny_onnx_path, calib_dir):
    out = tmp_path / "m.engine"
    r = run("nano-build", tiny_onnx_path, "--precision", "int8", "--calib-images", calib_dir, "-o", out)
    line = one_line_error(r, code=3)
    assert line.startswith("nano-build: error: TensorRT is required") and "JetPack" in line
    assert f"--calib-images {calib_dir}" in line and f"-o {out}" in line
    assert sorted(os.listdir(tmp_path)) == []  # nothing half-written


@no_tensorrt
def test_build_checks_input_before_tensorrt(tmp_path, tiny_onnx_path, qdq_onnx_path):
    foreign = tiny_onnx.save_tiny_model(str(tmp_path / "foreign.onnx"), with_metadata=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_cache = tmp_path / "bad.calib"
    bad_cache.write_text("TRT-8502-EntropyCalibration2\ngarbage\n")
    cases = [
        ((foreign,), "no 'yolo_nano' metadata"),
        ((tiny_onnx_path, "--precision", "int8", "--calib-images", empty), "no calibration images"),
        ((tiny_onnx_path, "--precision", "int8"), "needs images"),
        (
            (tiny_onnx_path, "--precision", "int8", "--calib-cache", bad_cache),
            "is stale: the cache is malformed",
        ),
        ((qdq_onnx_path, "--precision", "fp16"), "explicitly quantized"),
        ((tiny_onnx_path, "--precision", "fp32", "--dla", "0"), "DLA runs only FP16 and INT8"),
        ((tiny_onnx_path, "--batch", "2"), "fixed batch of 1"),
    ]
    for args, words in cases:
        line = one_line_error(run("nano-build", *args))
        assert words in line, (args, line)
    r = run("nano-build", tiny_onnx_path, "--precision", "int9")
    assert r.returncode == 2 and "invalid choice" in r.stderr  # argparse's own usage error


def test_explain_prints_the_plan(tiny_onnx_path, qdq_onnx_path, calib_dir):
    r = run("nano-build", qdq_onnx_path, "--precision", "int8", "--explain")
    assert r.returncode == 0, r.stderr
    assert "precision:  int8 (qdq)" in r.stdout and "tiny-int8-b1.engine" in r.stdout
    r = run("nano-build", tiny_onnx_path, "--precision", "int8", "--calib-images", calib_dir, "--explain")
    assert "int8 (calibrate)" in r.stdout and ".entropy.calib (entropy)" in r.stdout
    assert "command:    nano-build" in r.stdout


def test_engine_info_prints_identity(tmp_path):
    meta = tiny_onnx.tiny_metadata()
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"serialized engine")
    write_record(engine, EngineIdentity(
        tensorrt_version="8.5.2.2", gpu_name="Xavier", compute_capability="7.2", precision="int8",
        onnx_path="tiny.int8.onnx", onnx_sha256="ab" * 32, input_shape=[1, 3, 64, 64], metadata=meta.to_dict(),
        preprocess=meta.preprocess_params(), build_command="nano-build tiny.int8.onnx --precision int8",
        quantization="qdq", jetpack="5.1.1", l4t="35.3.1",
    ))  # fmt: skip
    r = run("nano-engine", "info", engine, "--no-layers")
    assert r.returncode == 0, r.stderr
    assert "int8 (quantization: qdq)" in r.stdout and "TensorRT:         8.5.2.2" in r.stdout
    assert "['head_s32', 'head_s16']" in r.stdout
    if not tensorrt_available():
        r = run("nano-engine", "info", engine)
        assert r.returncode == 0 and "TensorRT is not installed here" in r.stdout
    r = run("nano-engine", "info", engine, "--json")
    assert '"quantization": "qdq"' in r.stdout


def test_engine_info_without_record(tmp_path):
    line = one_line_error(run("nano-engine", "info", tmp_path / "x.engine"))
    assert "no identity record" in line
