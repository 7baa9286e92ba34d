from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from testsupport import tiny_onnx
from yolo_nano.engines.device import tensorrt_available
from yolo_nano.engines.identity import EngineIdentity, write_record

BIN = os.path.dirname(sys.executable)
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE_RUNNER = "import sys; from testsupport.fake_trt_build import run_nano_build; sys.exit(run_nano_build(sys.argv[1:]))"
no_tensorrt = pytest.mark.skipif(tensorrt_available(), reason="checks the behaviour without TensorRT")


def run(tool, *args, cwd=None):
    return subprocess.run(
        [os.path.join(BIN, tool), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def fake_env(version, **extra):
    path = os.pathsep.join(p for p in (TESTS, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, FAKE_TRT_VERSION=version, PYTHONPATH=path)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_fake(version, *args, **extra):
    """nano-build in a subprocess against the fake TensorRT ``version`` (real exit codes and signals)."""
    return subprocess.run([sys.executable, "-c", FAKE_RUNNER, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=fake_env(version, **extra))  # fmt: skip


def final_error(r, code=2):
    """The one error line of a command that printed progress before failing (it must be the last line)."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and r.stderr.strip().splitlines()[-1].endswith(errors[0]), r.stderr
    return errors[0]


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
    assert "tensorrt-cu12==10.16.1.11" in line  # the install hint names versions that work
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


def test_explain_json_is_the_whole_plan_per_release(tmp_path, calib_dir):
    dyn = tiny_onnx.save_tiny_model(str(tmp_path / "dyn.onnx"), batch="dynamic")
    common = (dyn, "--precision", "int8", "--calib-images", calib_dir, "--batch", "4", "--explain", "--json")
    weak = json.loads(run("nano-build", *common, "--dla", "0", "--tensorrt-version", "8.5.2.2").stdout)
    assert (
        weak["typing"] == "weak" and weak["int8_mode"] == "calibrate" and weak["network_onnx"] == "as given"
    )
    assert weak["profile"] == {"min": [4, 3, 64, 64], "opt": [4, 3, 64, 64], "max": [4, 3, 64, 64]}
    assert weak["device"] == {"type": "DLA", "dla_core": 0, "gpu_fallback": False}
    assert weak["calibration"]["cache_path"].endswith("dyn-int8-dla0-b4.entropy.calib")
    assert weak["calibration"]["cache_kind"] == "tensorrt-cache" and weak["dynamic_batch"] is False
    strong = json.loads(run("nano-build", *common, "--tensorrt-version", "11.4.0").stdout)
    assert (
        strong["typing"] == "strong" and strong["int8_mode"] == "quantize" and strong["network_onnx"] == "qdq"
    )
    assert strong["profile"]["min"] == [1, 3, 64, 64] and strong["device"]["type"] == "GPU"
    assert strong["calibration"]["cache_path"].endswith(".entropy.qdq.onnx")
    r = run("nano-build", *common, "--tensorrt-version", "7.2.3")
    assert r.returncode == 2 and "older than 8.5" in one_line_error(r)
    r = run("nano-build", dyn, "--json")
    assert "only apply with --explain" in one_line_error(r)


def test_qdq_on_85_dla_is_refused_before_building(qdq_onnx_path):
    r = run(
        "nano-build",
        qdq_onnx_path,
        "--precision",
        "int8",
        "--dla",
        "0",
        "--explain",
        "--tensorrt-version",
        "8.5.2.2",
    )
    line = one_line_error(r)
    assert "DLA has no explicit (Q/DQ) quantization" in line and "--calib-images DIR" in line


def test_build_exit_codes_with_a_fake_tensorrt(tmp_path, tiny_onnx_path, calib_dir):
    out = tmp_path / "m.engine"
    r = run_fake("10.3.0", tiny_onnx_path, "--precision", "fp16", "-o", out)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "m.engine.json").read_text())["typing"] == "weak"
    r = run_fake("8.5.3.1", tiny_onnx_path, "--precision", "int8", "--calib-images", calib_dir,
                 "-o", tmp_path / "c" / "m.engine", FAKE_COPY_FAIL_AT=3)  # fmt: skip
    line = final_error(r)
    assert "INT8 calibration failed after 2 batch(es): LogicError" in line and "nothing was written" in line
    assert not (tmp_path / "c").exists() or os.listdir(tmp_path / "c") == []
    r = run_fake(
        "11.4.0.106", tiny_onnx_path, "-o", tmp_path / "x.engine", FAKE_TRT_REPORTED_VERSION="12.0.1"
    )
    line = one_line_error(r, code=3)
    assert "TensorRT 12.0.1 is not supported" in line and "11.0-11.4" in line and "Traceback" not in r.stderr


def _interrupt_when(proc, log_path, marker, delay):
    deadline = time.time() + 120
    while time.time() < deadline:
        if marker in log_path.read_text(encoding="utf-8", errors="replace"):
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            return time.time()
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"{marker!r} never appeared: {log_path.read_text()[-2000:]}")


@pytest.mark.parametrize(
    "version, marker", [("8.5.3.1", "calibrating with"), ("10.3.0", "calibrating with"), ("8.5.3.1", "[4/5]")]
)
def test_ctrl_c_stops_promptly_with_130_and_writes_nothing(
    tmp_path, tiny_onnx_path, calib_dir, version, marker
):
    # a build that would take 12 x 0.4 s of calibration plus 100 x 0.4 s of "tactic search"
    out = tmp_path / "out"
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", FAKE_RUNNER, tiny_onnx_path, "--precision", "int8", "--calib-images", calib_dir,
             "-o", str(out / "m.engine")],
            stdout=subprocess.DEVNULL, stderr=err,
            env=fake_env(version, FAKE_TRT_STEPS=100, FAKE_TRT_STEP_SECONDS=0.4),
        )  # fmt: skip
        sent = _interrupt_when(proc, log, marker, delay=0.6)
        rc = proc.wait(timeout=60)
    waited = time.time() - sent
    text = log.read_text()
    assert rc == 130, text[-2000:]
    assert waited < 15, f"took {waited:.1f} s after Ctrl-C"  # the build had > 40 s to go
    assert "interrupted" in text and "nothing was written" in text and "Traceback" not in text
    assert not out.exists() or os.listdir(out) == []


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


def test_engine_info_with_an_invalid_record_is_one_line(tmp_path):
    meta = tiny_onnx.tiny_metadata()
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"serialized engine")
    write_record(engine, EngineIdentity(
        tensorrt_version="8.5.2.2", gpu_name="Xavier", compute_capability="7.2", precision="fp16",
        onnx_path="m.onnx", onnx_sha256="ab" * 32, input_shape=[1, 3, 64, 64], metadata=meta.to_dict(),
        preprocess=meta.preprocess_params(), build_command="nano-build m.onnx",
    ))  # fmt: skip
    good = (tmp_path / "m.engine.json").read_text()
    for bad in (good.replace('"input_shape": [\n    1,', '"input_shape": [\n    1e400,'),
                good.replace('"onnx_sha256": "' + "ab" * 32 + '"', '"onnx_sha256": ["x"]'),
                '{"a": ' + "[" * 100000 + "]" * 100000 + "}"):  # fmt: skip
        assert bad != good
        (tmp_path / "m.engine.json").write_text(bad)
        line = one_line_error(run("nano-engine", "info", engine, "--no-layers"))
        assert "invalid engine identity record" in line or "unreadable engine identity record" in line
