from __future__ import annotations

import json
import os
import subprocess
import sys

import onnxruntime as ort

from testsupport import tiny_onnx
from yolo_nano.calibration.cache import CacheIdentity, write_identity
from yolo_nano.core.metadata import read_onnx_metadata

BIN = os.path.dirname(sys.executable)


def run(tool, *args):
    return subprocess.run(
        [os.path.join(BIN, tool), *map(str, args)], capture_output=True, text=True, timeout=120
    )


CACHE = "TRT-8502-EntropyCalibration2\nimages: 3c010a14\nhead_s32: 3f800000\n"


def test_calib_show_prints_ranges_and_identity(tmp_path):
    path = tmp_path / "m.calib"
    path.write_text(CACHE)
    r = run("nano-calib", "show", path)
    assert r.returncode == 0, r.stderr
    assert "TensorRT 8502, EntropyCalibration2, 2 tensors" in r.stdout
    assert "identity:   none" in r.stdout
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("head_s32"))
    assert line.split()[1:] == ["1", "127"]
    write_identity(path, CacheIdentity("a" * 64, "b" * 64, "entropy", 4, "8.5.2.2", num_images=500))
    r = run("nano-calib", "show", path)
    assert "cache sha256 matches" in r.stdout
    r = run("nano-calib", "show", path, "--json")
    doc = json.loads(r.stdout)
    assert doc["identity"]["num_images"] == 500 and doc["tensors"][1]["dynamic_range"] == 127.0
    assert doc["cache_matches_identity"] is True
    path.write_text(CACHE.replace("3f800000", "3f000000"))
    r = run("nano-calib", "show", path)
    assert r.returncode == 0 and "EDITED after it was written" in r.stdout and "will not reuse" in r.stdout


def test_calib_show_invalid_sidecar_is_one_line(tmp_path):
    path = tmp_path / "m.calib"
    path.write_text(CACHE)
    for raw in (
        '{"batch": 1e400}',
        '{"batch": Infinity}',
        "[" * 50000 + "]" * 50000,
        '{"onnx_sha256": ["x"]}',
    ):
        (tmp_path / "m.calib.json").write_text(raw)
        r = run("nano-calib", "show", path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        assert "calibration cache identity" in r.stderr and "['x']" not in r.stdout


def test_calib_show_rejects_malformed_with_line_number(tmp_path):
    path = tmp_path / "bad.calib"
    path.write_text("TRT-8502-EntropyCalibration2\nimages: 3c010a14\nthis is not a scale\n")
    r = run("nano-calib", "show", path)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert f"{path}:3:" in r.stderr


def test_quantize_cli_end_to_end(tmp_path, tiny_onnx_path, calib_dir):
    out = tmp_path / "tiny.int8.onnx"
    r = run(
        "nano-quantize",
        tiny_onnx_path,
        "--calib-images",
        calib_dir,
        "-o",
        out,
        "--no-progress",
        "--algo",
        "minmax",
    )
    assert r.returncode == 0, r.stderr
    assert (
        r.stdout.startswith(f"wrote {out}") and "minmax" in r.stdout and "24 calibration images" in r.stdout
    )
    assert "only 24 calibration images" in r.stderr  # the warning reaches the user
    assert read_onnx_metadata(str(out)).extra["quantization"]["algorithm"] == "minmax"
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])


def test_quantize_cli_bad_inputs(tmp_path, tiny_onnx_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    foreign = tiny_onnx.save_tiny_model(str(tmp_path / "foreign.onnx"), with_metadata=False)
    cases = [
        ((tiny_onnx_path, "--calib-images", empty), "no calibration images"),
        ((tmp_path / "missing.onnx", "--calib-images", empty), "ONNX model not found"),
        ((foreign, "--calib-images", empty), "no 'yolo_nano' metadata"),
        ((tiny_onnx_path, "--calib-images", empty, "--max-images", "0"), "--max-images"),
    ]
    for args, words in cases:
        r = run("nano-quantize", *args, "-o", tmp_path / "out.onnx")
        assert r.returncode == 2, (args, r.stderr)
        assert words in r.stderr and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "out.onnx").exists()


def test_quantize_cli_unwritable_output_is_one_line(tmp_path, tiny_onnx_path, calib_dir):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    r = run("nano-quantize", tiny_onnx_path, "--calib-images", calib_dir, "--max-images", "2", "--no-progress",
            "-o", blocker / "q.onnx")  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "cannot write" in r.stderr and "Traceback" not in r.stderr
    assert blocker.read_text() == "not a folder"
