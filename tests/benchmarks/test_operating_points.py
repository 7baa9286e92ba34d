"""nano-bench operating points end to end: a paced sweep over two power modes on the fake AGX Xavier
(fake nvpmodel/jetson_clocks, INA3221 rails written by the load- and mode-dependent power model) with
energy per frame known in advance, --choose on the results it wrote, --apply on the point it chose
(with --gate), --jetson-clocks both, clocks pinned before the run, an ONNX Runtime failure mid-run, and
the same machinery on the host (threads x batch, no power: --by latency).

The fake board runs in slow motion as in test_paced_energy.py (``SCALE``): every call and frame period
4x longer, so the file writes and thread wake-ups of a loaded 2-core machine stay small against a frame.
The real ONNX Runtime session still runs each call; the power model's busy time is wrapped around it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from testsupport.board import XAVIER_CONF, XAVIER_RAILS, SysfsBoard, jetson_root
from testsupport.power_model import XAVIER_POWER, XavierPowerModel, expected_j_per_frame
from yolo_nano.benchmarks import cli, runner
from yolo_nano.benchmarks.results import read_jsonl

SCALE = 4.0
RATE = 23.0 / SCALE  # 5.75 fps: a 23 Hz camera in slow motion
PACED = ["--pace", f"{RATE:g}", "--duration", "2", "--warmup", "0.2", "--sample-interval", "0.005"]
FAST = ["--duration", "0.3", "--warmup", "0.05", "--sample-interval", "0.02"]
TOLERANCE = 0.06  # the power tests' bound for a loaded 2-core machine


@pytest.fixture
def rails_root(tmp_path):
    """A sysfs root on tmpfs (/dev/shm) where there is one: a rail write there is ~0.5 ms, not ~7 ms."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        root = tempfile.mkdtemp(prefix="nano-bench-op-", dir="/dev/shm")
        yield root
        shutil.rmtree(root, ignore_errors=True)
    else:
        yield str(tmp_path / "root")


@pytest.fixture
def xavier(rails_root, fake_board, monkeypatch):
    """The fake AGX Xavier at MAXN, clocks off; its power model writing the rails; every backend opened
    by nano-bench busy (in the power model's eyes) for the current mode's call time before each call."""
    board = fake_board(mode=0, clocks="off")
    root = jetson_root(rails_root)
    model = XavierPowerModel(SysfsBoard(root, "iio", XAVIER_RAILS), board.nvp_state, board.clk_state,
                             time_scale=SCALE)  # fmt: skip
    import yolo_nano.runtime as rt

    real_open = rt.open_backend

    def open_in_slow_motion(path, *args, **kwargs):
        backend = real_open(path, *args, **kwargs)
        infer = backend.infer

        def busy_infer(batch):
            call_s = model.call_s()
            with model.in_flight():
                time.sleep(call_s)
            return infer(batch)

        backend.infer = busy_infer
        return backend

    monkeypatch.setattr(rt, "open_backend", open_in_slow_motion)
    with model:
        yield board, root


def board_args(root, out):
    return ["--sysfs-root", root, "--nvpmodel-conf", XAVIER_CONF, "--out", str(out)]


def check_energy(rec, mode_id):
    want = expected_j_per_frame(XAVIER_POWER[mode_id], bool(rec["jetson_clocks"]), RATE, SCALE)
    assert rec["frames_offered"] == int(RATE * 2) and rec["frames_dropped"] == 0, rec
    assert rec["power_window_s"] == pytest.approx(rec["window_s_e2e"], abs=0.02)  # idle included
    assert rec["energy_j_per_frame"] == pytest.approx(rec["energy_j"] / rec["frames_done"])
    assert rec["energy_j_per_frame"] == pytest.approx(want, rel=TOLERANCE), (mode_id, want)


def test_paced_sweep_then_choose_then_apply(xavier, tiny_onnx, tmp_path, capsys):
    fb, root = xavier
    out = tmp_path / "sweep"
    rc = cli.main([tiny_onnx, "--power", "15W,MODE_30W_ALL", "--plot"] + PACED + board_args(root, out))
    assert rc == 0, capsys.readouterr().err
    r15, r30 = read_jsonl(str(out / "results.jsonl"))
    assert (r15["power_mode_id"], r30["power_mode_id"]) == (2, 3)
    for rec, mode_id in ((r15, 2), (r30, 3)):
        assert rec["pace_fps"] == RATE and rec["late_policy"] == "drop" and rec["precision"] == "fp32"
        assert rec["board"] == "Jetson-AGX" and rec["power_source"] == "ina3221-iio"
        check_energy(rec, mode_id)
    assert r15["energy_j_per_frame"] < r30["energy_j_per_frame"]  # the slower mode is cheaper per frame
    assert fb.mode() == 0 and [c for c in fb.nvp_calls() if c.startswith("-m")] == ["-m 2", "-m 3", "-m 0"]
    assert os.path.getsize(out / "pareto.png") > 1000
    capsys.readouterr()

    choose = ["--choose", str(out / "results.jsonl"), "--target-fps", f"{RATE:g}"] + board_args(root, out)
    assert cli.main(choose) == 0
    text = capsys.readouterr().out
    assert "choosing among the records of the current board (board Jetson-AGX, L4T R35.2.1" in text
    assert "chosen: tiny MODE_15W b1 @5.75fps" in text
    point = json.loads((out / "operating-point.json").read_text())
    assert (point["power_mode_id"], point["power_mode_name"], point["jetson_clocks"]) == (
        2,
        "MODE_15W",
        False,
    )
    assert point["model_sha256"] == r15["model_sha256"] and point["constraints"]["target_fps"] == RATE

    # the cheaper mode misses a p99 bound its calls cannot meet (100 ms calls), the faster one (56 ms) does not
    assert r15["latency_ms_p99"] > 90 and r30["latency_ms_p99"] < 85
    assert cli.main(choose[:-1] + [str(tmp_path / "bounded"), "--max-p99-ms", "88"]) == 0
    assert "chosen: tiny MODE_30W_ALL b1" in capsys.readouterr().out

    gate = tmp_path / "gate.json"
    gate.write_text(json.dumps({"require": {"power_mode_name": "MODE_15W", "pace_fps": RATE},
                                "thresholds": {"frames_dropped": {"max": 0}, "energy_j_per_frame": {"max": 2.0}}}))  # fmt: skip
    applied = tmp_path / "applied"
    rc = cli.main(["--apply", str(out / "operating-point.json"), tiny_onnx, "--gate", str(gate)]
                  + PACED[2:] + board_args(root, applied))  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "applying" in text and "perf gate gate passed (4 checks)" in text and "when chosen -> now" in text
    (rec,) = read_jsonl(str(applied / "results.jsonl"))
    assert (rec["power_mode_id"], rec["jetson_clocks"], rec["batch"], rec["pace_fps"]) == (2, False, 1, RATE)
    check_energy(rec, 2)
    assert fb.mode() == 0 and fb.clocks() == "off"


def test_apply_refuses_another_model_with_nothing_changed(tiny_onnx, tmp_path, fake_board, capsys):
    fb = fake_board(mode=0)
    root = jetson_root(str(tmp_path / "root"))
    from yolo_nano.jetson.nvpmodel import parse_conf
    from yolo_nano.jetson.operating_point import POINT_FORMAT, POINT_FORMAT_VERSION

    op = tmp_path / "operating-point.json"
    op.write_text(json.dumps({"format": POINT_FORMAT, "format_version": POINT_FORMAT_VERSION, "board": "Jetson-AGX",
                              "l4t": "R35.2.1", "nvpmodel_conf_sha256": parse_conf(XAVIER_CONF).sha256,
                              "power_mode_id": 2, "power_mode_name": "MODE_15W", "jetson_clocks": False,
                              "model_name": "other.onnx", "model_sha256": "1" * 64, "batch": 1, "pace_fps": 30}))  # fmt: skip
    rc = cli.main(["--apply", str(op), tiny_onnx] + FAST + board_args(root, tmp_path / "o"))
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "chosen for model other.onnx" in err[0] and "nothing was changed" in err[0]
    assert fb.nvp_calls() == [] and not (tmp_path / "o" / "results.jsonl").exists()


def test_jetson_clocks_both_pins_and_unpins_in_each_mode(tiny_onnx, tmp_path, fake_board, monkeypatch):
    fb = fake_board(mode=0, clocks="off")
    root = jetson_root(str(tmp_path / "root"))
    seen = []
    real = runner.measure_model

    def observe(*args, **kwargs):
        seen.append((fb.mode(), fb.clocks()))
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "measure_model", observe)
    out = tmp_path / "o"
    rc = cli.main(
        [tiny_onnx, "--power", "15W,MODE_30W_ALL", "--jetson-clocks", "both"] + FAST + board_args(root, out)
    )
    assert rc == 0
    assert seen == [(2, "off"), (2, "on"), (3, "off"), (3, "on")]
    recs = read_jsonl(str(out / "results.jsonl"))
    assert [(r["power_mode_id"], r["jetson_clocks"]) for r in recs] == [
        (2, False),
        (2, True),
        (3, False),
        (3, True),
    ]
    assert all(r["pace_fps"] is None and r["late_policy"] is None for r in recs)
    assert fb.mode() == 0 and fb.clocks() == "off"
    with open(fb.clk_log) as f:
        calls = [line.split()[0] if line.strip() else "pin" for line in f]
    assert calls == ["--show", "--store", "pin", "--restore", "pin", "--restore"]


def test_clocks_pinned_before_the_run_refuse_unpinned_points(tiny_onnx, tmp_path, fake_board, capsys):
    fb = fake_board(mode=0, clocks="on")
    root = jetson_root(str(tmp_path / "root"))
    rc = cli.main(
        [tiny_onnx, "--power", "15W", "--jetson-clocks", "both"] + FAST + board_args(root, tmp_path / "o")
    )
    assert rc == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("nano-bench: error:")]
    assert len(err) == 1 and "pinned before this run" in err[0]
    assert fb.mode() == 0 and fb.clocks() == "on" and not [c for c in fb.nvp_calls() if c.startswith("-m")]
    assert not (tmp_path / "o" / "results.jsonl").exists()


def failing_model(tiny: str, path: str) -> str:
    """The tiny model plus a Gather at index floor(min(image) x 0 + 4) into a 2-element table, added to a
    head times zero: it loads and validates like the original, and ONNX Runtime fails inside every run."""
    model = onnx.load(tiny)
    g = model.graph
    conv = next(n for n in g.node if n.output[0] == "head_s32")
    conv.output[0] = "head_s32_raw"
    g.initializer.extend([numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
                          (("table", [0.0, 0.0]), ("zero", 0.0), ("four", 4.0))])  # fmt: skip
    g.node.extend([
        helper.make_node("ReduceMin", ["images"], ["lo"], keepdims=0),
        helper.make_node("Mul", ["lo", "zero"], ["lo0"]),
        helper.make_node("Add", ["lo0", "four"], ["lo4"]),
        helper.make_node("Floor", ["lo4"], ["lo4f"]),
        helper.make_node("Cast", ["lo4f"], ["idx"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "idx"], ["picked"]),
        helper.make_node("Mul", ["picked", "zero"], ["bad"]),
        helper.make_node("Add", ["head_s32_raw", "bad"], ["head_s32"]),
    ])  # fmt: skip
    onnx.save(model, path)
    return path


def test_onnx_runtime_failure_is_one_line_exit_3_and_the_board_restored(
    tiny_onnx, tmp_path, fake_board, capsys
):
    fb = fake_board(mode=0, clocks="off")
    bad = failing_model(tiny_onnx, str(tmp_path / "bad.onnx"))
    rc = cli.main([bad, "--power", "15W", "--jetson-clocks", "--pace", "20"] + FAST
                  + board_args(str(tmp_path), tmp_path / "o"))  # fmt: skip
    assert rc == 3
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("nano-bench: error:")]
    assert len(lines) == 1 and lines[0].startswith(
        "nano-bench: error: inference failed on bad.onnx @ MODE_15W"
    )
    assert "onnxruntime-cpu" in lines[0] and "Traceback" not in err
    assert "restored power mode MAXN (ID 0)" in err
    assert fb.mode() == 0 and fb.clocks() == "off"


# ------------------------------------------------------------------------------------ off a Jetson


def test_host_sweep_and_choice_in_one_command_then_apply(tiny_onnx, tmp_path, capsys):
    out = tmp_path / "o"
    host = ["--sysfs-root", str(tmp_path), "--out", str(out)]
    rc = cli.main([tiny_onnx, "--threads", "1,2", "--target-fps", "20"] + FAST + host)
    text = capsys.readouterr()
    assert rc == 2  # no power here: the choice by energy is impossible, and says what to do
    assert "energy not measured" in text.out and "tiny fp32 t1 b1 @20fps" in text.out
    err = [ln for ln in text.err.splitlines() if ln.startswith("nano-bench: error:")]
    assert (
        len(err) == 1 and "only speed and latency can decide here; choose on them with --by latency" in err[0]
    )
    recs = read_jsonl(str(out / "results.jsonl"))
    assert [(r["threads"], r["pace_fps"], r["late_policy"]) for r in recs] == [
        (1, 20.0, "drop"),
        (2, 20.0, "drop"),
    ]
    assert all(r["power_mode_id"] is None and r["energy_j_per_frame"] is None for r in recs)

    rc = cli.main(
        ["--choose", str(out / "results.jsonl"), "--target-fps", "20", "--by", "latency", "--plot"] + host
    )
    assert rc == 0
    assert os.path.getsize(out / "pareto.png") > 1000
    point = json.loads((out / "operating-point.json").read_text())
    assert point["power_mode_id"] is None and point["board"] is None and point["threads"] in (1, 2)
    assert point["constraints"]["by"] == "latency"
    best = min(recs, key=lambda r: r["latency_ms_p99"])
    assert point["threads"] == best["threads"]
    capsys.readouterr()

    gate = tmp_path / "gate.json"
    gate.write_text(json.dumps({"require": {"threads": point["threads"], "late_policy": "drop"},
                                "thresholds": {"frames_offered": {"min": 1}}}))  # fmt: skip
    rc = cli.main(["--apply", str(out / "operating-point.json"), "--gate", str(gate)] + FAST
                  + ["--sysfs-root", str(tmp_path), "--out", str(tmp_path / "applied")])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    (rec,) = read_jsonl(str(tmp_path / "applied" / "results.jsonl"))
    assert (rec["threads"], rec["pace_fps"], rec["batch"]) == (point["threads"], 20.0, 1)


@pytest.mark.parametrize(
    "args, msg",
    [
        (["{m}", "--late", "queue"], "--late applies to paced runs: add --pace FPS"),
        (["{m}", "--max-p99-ms", "50"], "--max-p99-ms bounds the choice of an operating point"),
        (["--choose", "r.jsonl"], "--choose needs the camera rate to choose for"),
        (["{m}", "--pace", "30", "--target-fps", "25"], "--pace 30 differs from --target-fps 25"),
        (["{m}", "--pace", "0"], "--pace must be a frame rate > 0"),
        (["{m}", "--target-fps", "30", "--max-late", "2"], "--max-late must be a share between 0 and 1"),
        (["{m}", "--batch", "1,x"], "--batch '1,x': 'x' is not a whole number"),
        (["{m}", "--threads", "0"], "--threads '0': 0 is out of range"),
        (["--choose", "{t}/none.jsonl", "--target-fps", "30"], "results file not found"),
        (["--choose", "r.jsonl", "{m}", "--target-fps", "30"], "--choose reads result files, not models"),
        (
            ["--apply", "{t}/op.json", "{m}", "--power", "15W"],
            "--apply takes the point from the file; drop --power",
        ),
        (["--apply", "{t}/none.json", "{m}"], "unreadable operating point file"),
    ],
)
def test_bad_choice_and_pace_flags_are_one_line_exit_2(tiny_onnx, tmp_path, capsys, args, msg):
    args = [a.format(m=tiny_onnx, t=str(tmp_path)) for a in args]
    rc = cli.main(args + FAST + ["--sysfs-root", str(tmp_path), "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nano-bench: error:") and msg in err[0], err


def test_bare_jetson_clocks_before_a_model_still_means_on():
    """``--jetson-clocks m.engine`` was valid before the flag took a value: the model is not the value."""
    args = cli.build_parser().parse_args(
        cli.bare_clocks_flag(["--jetson-clocks", "m.engine", "--pace", "30"])
    )
    assert args.jetson_clocks == "on" and args.models == ["m.engine"]
    args = cli.build_parser().parse_args(cli.bare_clocks_flag(["m.engine", "--jetson-clocks", "both"]))
    assert args.jetson_clocks == "both"
