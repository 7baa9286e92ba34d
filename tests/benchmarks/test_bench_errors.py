"""nano-bench with bad input and a shared board: malformed gates exit 4 before the board is touched,
--out problems and corrupt files are one line each, a second run is refused naming the first one's PID,
and a run killed with SIGKILL is undone by the next run or by --restore."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import pytest

from testsupport.board import XAVIER_CONF
from yolo_nano.benchmarks import cli
from yolo_nano.benchmarks.results import append_jsonl, read_jsonl
from yolo_nano.core.cli import EXIT_BAD_CONFIG, EXIT_BAD_INPUT, EXIT_FAILED

FAST = ["--duration", "0.2", "--warmup", "0", "--sample-interval", "0.02"]
STATE = "var/lib/yolo-nano/board-state.json"


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("nano-bench: error:")]
    assert len(err) == 1, err
    return err[0]


def write_gate(tmp_path, gate) -> str:
    p = tmp_path / "gate.json"
    p.write_text(json.dumps(gate) if not isinstance(gate, str) else gate)
    return str(p)


@pytest.mark.parametrize(
    "gate, msg",
    [
        ({"thresholds": [{"fps_e2e": {"min": 1}}]}, "thresholds must be a JSON object"),
        ({"require": ["backend"], "thresholds": {"fps_e2e": {"min": 1}}}, "require must be a JSON object"),
        ({"baseline": {"metrics": {"fps_e2e": 1}, "tolerance": "10%"}}, "baseline.tolerance must be"),
        ({"thresholds": {"fps_e2ee": {"min": 1}}}, "did you mean 'fps_e2e'"),
        ({"baseline": {"file": "missing.jsonl"}}, "cannot read baseline results"),
        ({"baseline": {"file": "corrupt.jsonl"}}, "baseline results are corrupt"),
        ("{not json", "is not valid JSON"),
        (None, "cannot read gate file"),
    ],
)
def test_malformed_gate_exits_4_before_touching_the_board(tiny_onnx, tmp_path, fake_board, capsys, gate, msg):
    fb = fake_board(mode=0)
    (tmp_path / "corrupt.jsonl").write_text('{"fps_e2e": 1}\n{"fps_e2e": \n')
    path = write_gate(tmp_path, gate) if gate is not None else str(tmp_path / "none.json")
    out = tmp_path / "o"
    rc = cli.main([tiny_onnx, "--power", "15W", "--nvpmodel-conf", XAVIER_CONF, "--sysfs-root", str(tmp_path),
                   "--out", str(out), "--gate", path] + FAST)  # fmt: skip
    assert rc == EXIT_BAD_CONFIG
    line = one_error_line(capsys)
    assert msg in line and "gate" in line
    assert fb.nvp_calls() == [] and not (out / "results.jsonl").exists()  # nothing measured, nothing switched


def test_gate_regression_is_exit_1_and_distinct_from_a_typo(tiny_onnx, tmp_path, capsys):
    base = [tiny_onnx, "--sysfs-root", str(tmp_path), "--out", str(tmp_path / "o")] + FAST
    strict = write_gate(tmp_path, {"thresholds": {"fps_engine": {"min": 1e12}}})
    assert cli.main(base + ["--gate", strict]) == EXIT_FAILED
    assert "perf gate gate FAILED" in capsys.readouterr().out


def test_out_is_a_file_or_below_a_file(tiny_onnx, tmp_path, capsys):
    f = tmp_path / "plain"
    f.write_text("x")
    assert cli.main([tiny_onnx, "--out", str(f), "--sysfs-root", str(tmp_path)] + FAST) == EXIT_BAD_INPUT
    assert "is a file, not a folder" in one_error_line(capsys)
    assert (
        cli.main([tiny_onnx, "--out", str(f / "a" / "b"), "--sysfs-root", str(tmp_path)] + FAST)
        == EXIT_BAD_INPUT
    )
    assert f"{f} is a file, so no folder can be made below it" in one_error_line(capsys)
    (tmp_path / "o" / "results.jsonl").mkdir(parents=True)
    assert cli.main([tiny_onnx, "--out", str(tmp_path / "o"), "--sysfs-root", str(tmp_path)] + FAST) == 2
    assert "results.jsonl exists and is not a regular file" in one_error_line(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_read_only(tiny_onnx, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert cli.main([tiny_onnx, "--out", str(ro), "--sysfs-root", str(tmp_path)] + FAST) == EXIT_BAD_INPUT
    finally:
        ro.chmod(0o755)
    assert "not a writable folder" in one_error_line(capsys)


def test_corrupt_lines_in_results_are_skipped_with_a_warning(tiny_onnx, tmp_path, capsys):
    out = tmp_path / "o"
    jsonl = out / "results.jsonl"
    append_jsonl(str(jsonl), {"model": "/old/a.onnx", "fps_e2e": 1.0})
    with open(jsonl, "ab") as f:
        f.write(b'{"model": "/old/b.onnx", "fps_e2\n[1, 2]\n\xff\xfe\n')
    rc = cli.main([tiny_onnx, "--out", str(out), "--sysfs-root", str(tmp_path)] + FAST)
    assert rc == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if line.startswith("nano-bench: warning:")]
    assert len(warned) == 3 and all("not a JSON line" in w and "line skipped" in w for w in warned), warned
    assert [f"results.jsonl:{n}:" in w for n, w in zip((2, 3, 4), warned)] == [True] * 3
    with open(out / "results.csv") as f:
        models = [row["model"] for row in csv.DictReader(f)]
    assert models == ["/old/a.onnx", os.path.abspath(tiny_onnx)]  # the corrupt lines left out of the export
    assert len(read_jsonl(str(jsonl), skip_bad=True)) == 2


def _jpegs(folder, n):
    import cv2
    import numpy as np

    folder.mkdir()
    for i in range(n):
        img = np.full((48, 64, 3), 40 * i, np.uint8)
        cv2.imwrite(str(folder / f"{i}.jpg"), img)


def test_corrupt_image_in_the_image_source(tiny_onnx, tmp_path, capsys):
    imgs = tmp_path / "imgs"
    _jpegs(imgs, 2)
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = str(tmp_path / "o")
    rc = cli.main([tiny_onnx, "--source", "images", "--input", str(imgs), "--out", out,
                   "--sysfs-root", str(tmp_path)] + FAST)  # fmt: skip
    assert rc == 0
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "Traceback" not in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"garbage")
    rc = cli.main([tiny_onnx, "--source", "images", "--input", str(bad), "--out", out,
                   "--sysfs-root", str(tmp_path)] + FAST)  # fmt: skip
    assert rc == EXIT_BAD_INPUT
    assert "could be read" in one_error_line(capsys)


# ------------------------------------------------------------------------------ the board, shared


def _spawn_bench(args, env, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "yolo_nano.benchmarks.cli"] + args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def _wait(cond, proc, what, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not cond():
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    assert cond(), what


def test_second_run_is_refused_naming_the_first_and_sigkill_is_undone(
    tiny_onnx, tmp_path, fake_board, capsys
):
    fb = fake_board(mode=0, clocks="off")
    root = str(tmp_path)
    args = [tiny_onnx, "--power", "30W", "--jetson-clocks", "--nvpmodel-conf", XAVIER_CONF, "--sysfs-root", root,
            "--out", str(tmp_path / "o1"), "--duration", "120", "--warmup", "0"]  # fmt: skip
    first = _spawn_bench(args, dict(os.environ))
    try:
        _wait(lambda: fb.mode() == 3 and fb.clocks() == "on", first, "the first run switched the board")
        # a second run is refused at once, naming the first one's PID, and touches nothing
        rc = cli.main([tiny_onnx, "--power", "15W", "--nvpmodel-conf", XAVIER_CONF, "--sysfs-root", root,
                       "--out", str(tmp_path / "o2")] + FAST)  # fmt: skip
        assert rc == 3
        line = one_error_line(capsys)
        assert f"in use by PID {first.pid}" in line and "one run may own a board at a time" in line
        assert fb.mode() == 3
        first.kill()  # SIGKILL: nothing restores the board now ...
        first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert fb.mode() == 3 and fb.clocks() == "on" and os.path.exists(os.path.join(root, STATE))
    # ... until nano-bench --restore, which says what it did
    assert cli.main(["--restore", "--sysfs-root", root]) == 0
    err = capsys.readouterr().err
    assert f"PID {first.pid}" in err and "ended without restoring the board" in err
    assert "restored power mode MAXN (ID 0)" in err and "restored the jetson_clocks state" in err
    assert fb.mode() == 0 and fb.clocks() == "off" and not os.path.exists(os.path.join(root, STATE))
    assert cli.main(["--restore", "--sysfs-root", root]) == 0
    assert "nothing to restore" in capsys.readouterr().err


def test_next_run_restores_a_killed_run_first(tiny_onnx, tmp_path, fake_board, capsys):
    fb = fake_board(mode=7, clocks="off")
    root = str(tmp_path)
    args = [tiny_onnx, "--power", "30W", "--nvpmodel-conf", XAVIER_CONF, "--sysfs-root", root,
            "--out", str(tmp_path / "o1"), "--duration", "120", "--warmup", "0"]  # fmt: skip
    first = _spawn_bench(args, dict(os.environ))
    try:
        _wait(lambda: fb.mode() == 3, first, "the first run switched the board")
        first.kill()
        first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    # a plain measuring run (no --power) finds the record, puts the board back, says so, then measures
    out = tmp_path / "o2"
    rc = cli.main([tiny_onnx, "--nvpmodel-conf", XAVIER_CONF, "--sysfs-root", root, "--out", str(out)] + FAST)
    assert rc == 0
    err = capsys.readouterr().err
    assert "ended without restoring the board" in err and "restored power mode MODE_15W_DESKTOP (ID 7)" in err
    (rec,) = read_jsonl(str(out / "results.jsonl"))
    assert rec["power_mode_id"] == 7 and fb.mode() == 7


def test_restore_takes_no_model(tiny_onnx, tmp_path, capsys):
    assert cli.main([tiny_onnx, "--restore", "--sysfs-root", str(tmp_path)]) == EXIT_BAD_INPUT
    assert "--restore takes no MODEL" in one_error_line(capsys)
