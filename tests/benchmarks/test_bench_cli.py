"""nano-bench end to end: real ONNX Runtime sessions, the fake nvpmodel/jetson_clocks as subprocesses,
a recorded INA3221 tree, restore on exception and on SIGINT, SIGTERM, SIGHUP and SIGQUIT, gates and bad
input (more bad input, the board lock and recovery after SIGKILL: test_bench_errors.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from testsupport.board import NX_CONF, XAVIER_CONF
from testsupport.board import jetson_root as make_jetson_root
from yolo_nano.benchmarks import bench, runner
from yolo_nano.benchmarks.results import read_jsonl

FAST = ["--duration", "0.3", "--warmup", "0.05", "--sample-interval", "0.02"]
REQUIRED = (
    "model", "backend", "batch", "fps_e2e", "fps_engine", "latency_ms_p50", "latency_ms_p99", "power_w",
    "ips_per_w_measured", "ips_per_w_nominal", "power_mode_id", "power_mode_name", "jetson_clocks",
)  # fmt: skip


def jetson_root(tmp_path, watts=None):
    """A sysfs root that looks like an AGX Xavier on JetPack 5.1 with constant rail powers (12 W)."""
    return make_jetson_root(str(tmp_path / "root"), watts)


def test_cpu_run_without_power(tiny_onnx, tmp_path, capsys):
    out = str(tmp_path / "out")
    rc = bench.main([tiny_onnx, "--out", out, "--sysfs-root", str(tmp_path), "--plot"] + FAST)
    assert rc == 0
    (rec,) = read_jsonl(os.path.join(out, "results.jsonl"))
    for k in REQUIRED:
        assert k in rec, k
    assert rec["backend"] == "onnxruntime-cpu" and rec["batch"] == 1
    assert rec["fps_e2e"] > 0 and rec["fps_engine"] > 0 and rec["frames_e2e"] >= 1
    assert rec["latency_ms_p50"] <= rec["latency_ms_p90"] <= rec["latency_ms_p99"]
    assert rec["power_w"] is None and rec["ips_per_w_measured"] is None and rec["ips_per_w_nominal"] is None
    assert "no INA3221 rails" in rec["power_not_measured_reason"]
    assert set(rec["stage_ms"]) == {"read", "preprocess", "inference", "postprocess"}
    assert rec["power_mode_id"] is None and rec["jetson_clocks"] is False
    assert len(rec["model_sha256"]) == 64
    assert rec["git_revision"] is None or re.fullmatch(r"[0-9a-f]{12}(\+dirty)?", rec["git_revision"])
    text = capsys.readouterr().out
    assert "power is not measured here" in text and "tiny.onnx" in text
    for png in ("fps_by_mode.png", "power_trace.png", "latency_hist.png"):
        assert os.path.getsize(os.path.join(out, png)) > 1000
    assert os.path.isfile(os.path.join(out, "results.csv"))


def test_power_sweep_with_clocks_measures_and_restores(tiny_onnx, tmp_path, fake_board, capsys):
    fb = fake_board(mode=0, clocks="off")
    root = jetson_root(tmp_path)
    out = str(tmp_path / "out")
    args = [tiny_onnx, "--power", "15W,MODE_30W_ALL", "--jetson-clocks", "--batch", "2", "--out", out]
    rc = bench.main(args + ["--sysfs-root", root, "--nvpmodel-conf", XAVIER_CONF] + FAST)
    assert rc == 0
    r15, r30 = read_jsonl(os.path.join(out, "results.jsonl"))
    assert (r15["power_mode_id"], r15["power_mode_name"]) == (2, "MODE_15W")
    assert (r30["power_mode_id"], r30["power_mode_name"]) == (3, "MODE_30W_ALL")
    for r, budget in ((r15, 15.0), (r30, 30.0)):
        assert r["jetson_clocks"] is True and r["batch"] == 2
        assert r["power_source"] == "ina3221-iio"
        assert r["power_window_s"] == pytest.approx(r["window_s_e2e"], abs=0.02)  # power over the FPS window
        assert r["power_w"] == pytest.approx(12.0, rel=1e-3)  # the six rails summed
        assert r["energy_j_per_frame"] == pytest.approx(r["energy_j"] / r["frames_e2e"])
        assert r["ips_per_w_measured"] == pytest.approx(r["fps_e2e"] / 12.0, rel=1e-3)
        assert r["ips_per_w_nominal"] == pytest.approx(r["fps_e2e"] / budget)
        assert r["board"] == "Jetson-AGX" and r["l4t"] == "R35.2.1"
        assert r["nvpmodel_conf_sha256"] and len(r["nvpmodel_conf_sha256"]) == 64
    assert fb.mode() == 0 and fb.clocks() == "off"
    calls = [c for c in fb.nvp_calls() if c.startswith("-m")]
    assert calls == ["-m 2", "-m 3", "-m 0"]
    assert "GATE" not in capsys.readouterr().out


def test_restore_on_exception(tiny_onnx, tmp_path, fake_board, monkeypatch):
    fb = fake_board(mode=0, clocks="off")

    def boom(*a, **k):
        assert fb.mode() == 2 and fb.clocks() == "on"
        raise RuntimeError("engine exploded")

    monkeypatch.setattr(runner, "measure_model", boom)
    with pytest.raises(RuntimeError, match="engine exploded"):
        bench.main([tiny_onnx, "--power", "15W", "--jetson-clocks", "--nvpmodel-conf", XAVIER_CONF,
                    "--sysfs-root", str(tmp_path), "--out", str(tmp_path / "o")] + FAST)  # fmt: skip
    assert fb.mode() == 0 and fb.clocks() == "off"


def _spawn(args, env):
    return subprocess.Popen(
        [sys.executable, "-m", "yolo_nano.benchmarks.bench"] + args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize(
    "sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGQUIT, 131)]
)
def test_interrupted_run_restores_mode_and_clocks(tiny_onnx, tmp_path, fake_board, sig, code):
    fb = fake_board(mode=7, clocks="off")  # MODE_15W_DESKTOP
    env = dict(os.environ, **fb.env)
    args = [tiny_onnx, "--power", "30W", "--jetson-clocks", "--nvpmodel-conf", XAVIER_CONF,
            "--sysfs-root", str(tmp_path), "--out", str(tmp_path / "o"), "--duration", "60", "--warmup", "0"]  # fmt: skip
    proc = _spawn(args, env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (fb.mode() == 3 and fb.clocks() == "on"):
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
        assert fb.mode() == 3 and fb.clocks() == "on"
        time.sleep(0.5)  # inside the timed loop now
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, out
    assert fb.mode() == 7 and fb.clocks() == "off"
    assert "restored power mode MODE_15W_DESKTOP (ID 7)" in out
    assert "Traceback" not in out
    assert not os.path.exists(
        os.path.join(tmp_path, "o", "results.jsonl")
    )  # an interrupted run records nothing


def test_reboot_gated_mode_refused_with_exit_2(tiny_onnx, tmp_path, fake_board, capsys):
    fb = fake_board(mode=0)
    rc = bench.main(
        [tiny_onnx, "--power", "10W", "--nvpmodel-conf", XAVIER_CONF, "--sysfs-root", str(tmp_path)] + FAST
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "needs a reboot" in err and "MODE_10W (ID 1)" in err
    assert fb.mode() == 0 and not [c for c in fb.nvp_calls() if c.startswith("-m")]


def test_ambiguous_budget_exit_2(tiny_onnx, tmp_path, fake_board, capsys):
    fake_board(conf=NX_CONF, mode=2)
    rc = bench.main(
        [tiny_onnx, "--power", "15W", "--nvpmodel-conf", NX_CONF, "--sysfs-root", str(tmp_path)] + FAST
    )
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ambiguous" in err[0] and "MODE_15W_6CORE" in err[0]


def test_permission_hint(tiny_onnx, tmp_path, fake_board, monkeypatch, capsys):
    fb = fake_board(mode=0)
    monkeypatch.setenv("FAKE_NVPMODEL_REQUIRE_ROOT", "1")
    rc = bench.main([tiny_onnx, "--power", "15W", "--nvpmodel-conf", XAVIER_CONF, "--sysfs-root", str(tmp_path),
                     "--out", str(tmp_path / "o")] + FAST)  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "sudoers" in err and "jtop group" in err
    assert fb.mode() == 0


@pytest.mark.parametrize(
    "args, msg",
    [
        (["missing.onnx"], "model file not found: missing.onnx"),
        (["{m}", "--batch", "0"], "--batch '0': 0 is out of range 1..256"),
        (["{m}", "--duration", "0"], "--duration must be > 0"),
        (["{m}", "--power", "15W", "--nvpmodel-conf", "/nonexistent.conf"], "file not found"),
        (["{m}", "--power", "15W", "--sysfs-root", "{t}"], "--power needs the board's nvpmodel conf"),
        (["{m}", "--source", "images", "--input", "{t}"], "no images"),
        (["{m}", "--source", "video", "--input", "{t}/none.mp4"], "video file not found"),
    ],
)
def test_bad_input_one_line_exit_2(tiny_onnx, tmp_path, capsys, args, msg):
    args = [a.format(m=tiny_onnx, t=str(tmp_path)) for a in args]
    rc = bench.main(FAST + ["--out", str(tmp_path / "o")] + args)
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nano-bench: error:") and msg in err[0], err
    assert err[0][len("nano-bench: error: ") :][0] not in "'\"", err  # the message itself, not its repr


def test_gate_pass_and_fail(tiny_onnx, tmp_path, capsys):
    ok = tmp_path / "ok.json"
    ok.write_text(
        json.dumps({"thresholds": {"fps_e2e": {"min": 0.1}, "power_w": {"max": 5, "optional": True}}})
    )
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "strict", "thresholds": {"fps_engine": {"min": 1e9}}}))
    base = [tiny_onnx, "--sysfs-root", str(tmp_path), "--out", str(tmp_path / "o")] + FAST
    assert bench.main(base + ["--gate", str(ok)]) == 0
    assert "perf gate ok passed (2 checks)" in capsys.readouterr().out
    assert bench.main(base + ["--gate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert (
        "GATE FAIL" in out
        and "fps_engine" in out
        and "< min 1e+09" in out
        and "perf gate strict FAILED" in out
    )


@pytest.mark.parametrize("source", ["images", "video"])
def test_image_and_video_sources_and_comparison(tiny_onnx, tmp_path, capsys, source):
    other = str(tmp_path / "copy.onnx")
    with open(tiny_onnx, "rb") as a, open(other, "wb") as b:
        b.write(a.read())
    out = str(tmp_path / "o")
    rc = bench.main(
        [tiny_onnx, other, "--source", source, "--out", out, "--sysfs-root", str(tmp_path)] + FAST
    )
    assert rc == 0
    recs = read_jsonl(os.path.join(out, "results.jsonl"))
    assert [r["model_name"] for r in recs] == ["tiny.onnx", "copy.onnx"]
    assert all(r["source"].startswith(source) and r["stage_ms"]["read"] > 0 for r in recs)
    table = capsys.readouterr().out
    assert "tiny.onnx" in table and "copy.onnx" in table


@pytest.mark.slow
@pytest.mark.torch
def test_no_arguments_benchmarks_the_embedded_default(tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch", reason="exporting the embedded default model once needs PyTorch")
    monkeypatch.chdir(tmp_path)
    rc = bench.main(["--duration", "0.5", "--warmup", "0.1"])
    assert rc == 0
    (rec,) = read_jsonl(str(tmp_path / "bench-results" / "results.jsonl"))
    assert rec["arch"] == "yolo-nano" and rec["fps_e2e"] > 0 and rec["model"].endswith(".onnx")


def test_second_ctrl_c_to_the_process_group_does_not_break_the_restore(tiny_onnx, tmp_path, fake_board):
    fb = fake_board(mode=0, clocks="off")
    env = dict(os.environ, **fb.env, FAKE_NVPMODEL_DELAY="0.4")  # slow nvpmodel: the restore takes a while
    args = [tiny_onnx, "--power", "15W", "--jetson-clocks", "--nvpmodel-conf", XAVIER_CONF,
            "--sysfs-root", str(tmp_path), "--out", str(tmp_path / "o"), "--duration", "60", "--warmup", "0"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "yolo_nano.benchmarks.bench"] + args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (fb.mode() == 2 and fb.clocks() == "on"):
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
        time.sleep(0.2)  # the restore's `nvpmodel -q` is running now
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out
    assert fb.mode() == 0 and fb.clocks() == "off", out
    assert "ERROR" not in out and "Traceback" not in out
