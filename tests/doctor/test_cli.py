"""nano-doctor as a user runs it, here (no board, no GPU, no TensorRT): the real command in a subprocess,
its lines, its exit status, its report (schema, and nothing that identifies the machine or user)."""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import socket
from pathlib import Path

import pytest

from yolo_nano.engines.trt_versions import PIP_HINT


def _default_model_available() -> bool:
    """PyTorch can export the default model, or it is cached (without PyTorch nothing is exported)."""
    if importlib.util.find_spec("torch") is not None:
        return True
    from yolo_nano.runtime.default_model import DefaultModelError, default_model_path

    try:
        default_model_path()
    except DefaultModelError:
        return False
    return True


@pytest.mark.slow
def test_full_run_here_applies_what_it_can_and_exits_0(tmp_path, doctor, check_schema, no_gpu):
    if not _default_model_available():
        pytest.skip("no PyTorch to export the default model, and it is not cached here")
    run = doctor(report=str(tmp_path / "doctor.json"))
    assert run.code == 0, run.out + run.err
    assert "Traceback" not in run.out + run.err
    # what does not apply here says why
    assert run.status("board model") == "n/a" and "not on a Jetson" in run.line("board model")
    for name in ("TensorRT", "pycuda", "GPU", "TensorRT FP16 build", "Detector, CUDA pipeline"):
        assert run.status(name) == "n/a" and "no GPU" in run.line(name), name
    for name in ("nvpmodel", "INA3221 rails", "power sampling"):
        assert "not on a Jetson" in run.line(name), name
    # what applies ran
    assert run.line("Python").split()[2] == platform.python_version()
    assert run.status("ONNX Runtime") == "ok" and "CPU" in run.line("ONNX Runtime")
    fps = float(re.search(r"([\d.]+) FPS", run.line("Detector, numpy path")).group(1))
    assert run.status("Detector, numpy path") == "ok" and fps > 0
    if shutil.which("g++"):  # the kernels' self-test on the CPU emulation: one line per kernel
        for kernel in ("letterbox", "decode", "sort_candidates", "nms", "graph"):
            line = run.line(f"kernel {kernel}")
            assert line.startswith("ok") and "CPU emulation" in line, line
    else:
        assert run.status("CUDA kernels") == "n/a"
    assert run.out.rstrip().endswith("no host name, user name, IP address or home path)")
    doc = run.report
    check_schema(doc)
    assert doc["summary"]["exit_code"] == 0 and doc["summary"]["skipped"] == 0
    numpy_path = run.check("Detector, numpy path")["data"]
    assert numpy_path["fps"] > 0 and numpy_path["backend"] == "onnxruntime-cpu"
    # the missing TensorRT is reported with the install step, though it does not apply here
    assert PIP_HINT in run.check("TensorRT")["fix"]
    home = str(Path.home())
    text = Path(tmp_path / "doctor.json").read_text()
    if home != "/":
        assert home + "/" not in text and numpy_path["model"].startswith("~/")


def test_quick_run_writes_a_scrubbed_report(tmp_path, tiny_onnx, doctor, check_schema, no_gpu):
    """A user zelda-doc with a model and the report in her home: neither her name, her home, the host
    name nor an address of this machine reaches the report; the self-tests are skipped."""
    home = tmp_path / "home" / "zelda-doc"
    home.mkdir(parents=True)
    model = home / "model.onnx"
    shutil.copy(tiny_onnx, model)
    env = {k: v for k, v in os.environ.items() if k != "YOLO_NANO_CACHE"}
    env.update(HOME=str(home), USER="zelda-doc", LOGNAME="zelda-doc")
    run = doctor(str(model), "--quick", report=str(home / "doctor.json"), env=env)
    assert run.code == 0, run.out + run.err
    for name in ("TensorRT FP16 build", "CUDA kernels", "Detector, numpy path", "power sampling"):
        assert run.line(name) == f"skipped  {name:<24} --quick"
    assert run.status("model") == "ok" and "tiny-test, 64x64, 2 classes" in run.line("model")
    assert str(home) in run.line("model")  # the terminal shows the real path ...
    doc = run.report
    check_schema(doc)
    text = (home / "doctor.json").read_text()
    assert "zelda-doc" not in text and str(tmp_path) not in text  # ... the report does not
    assert doc["options"]["model"] == "~/model.onnx"
    assert run.check("kernel cache")["data"]["path"] == "~/.cache/yolo-nano-edge/kernels"
    host = socket.gethostname()
    if host and host != "localhost":
        assert not re.search(r"(?<![A-Za-z0-9_])" + re.escape(host) + r"(?![A-Za-z0-9_])", text)
    try:
        addresses = {a[4][0] for a in socket.getaddrinfo(host, None)}
    except OSError:
        addresses = set()
    for address in addresses:
        assert address not in text


def test_a_broken_model_fails_with_its_fix(tmp_path, doctor, check_schema):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf model \xff\xfe" * 10)
    run = doctor(str(bad), "--quick", report=str(tmp_path / "r.json"))
    assert run.code == 1, run.out + run.err
    assert run.status("model") == "failed" and "not a readable ONNX file" in run.line("model")
    assert run.fix("model").startswith("fix: export the model again (nano-export")
    assert "1 problem(s), each with its fix above" in run.out and "Traceback" not in run.out + run.err
    check_schema(run.report)
    assert run.report["summary"]["exit_code"] == 1 and run.check("model")["status"] == "failed"


def test_a_missing_model_and_a_bad_root(tmp_path, doctor):
    run = doctor(str(tmp_path / "absent.onnx"), "--quick")
    assert run.code == 1 and "model file not found" in run.line("model")
    run = doctor("--quick", "--sysfs-root", str(tmp_path / "nowhere"))
    assert run.code == 2 and run.out == ""
    assert run.err.strip() == f"nano-doctor: error: --sysfs-root {tmp_path / 'nowhere'}: not a folder"
    run = doctor("--quick", report=str(tmp_path / "nowhere" / "r.json"))
    assert run.code == 2 and run.out == "" and "the folder" in run.err and "does not exist" in run.err


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="PyTorch exports the default model")
def test_without_pytorch_an_unexported_default_model_is_missing(tmp_path, doctor):
    env = dict(os.environ, YOLO_NANO_CACHE=str(tmp_path / "empty-cache"))
    run = doctor("--quick", env=env)
    assert run.code == 1 and run.status("model") == "missing"
    assert "nano-doctor model.onnx" in run.fix("model")
