"""operating_point(): the file checked against the board, the conf and the model before anything changes,
then the mode and clocks set and restored (exception, SIGTERM in a child process); host points."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from testsupport.board import NX_CONF, XAVIER_CONF, jetson_root
from yolo_nano.core.fileio import sha256_file
from yolo_nano.jetson import (
    ClocksPinnedError,
    OperatingPointError,
    OperatingPointMismatch,
    operating_point,
)
from yolo_nano.jetson.nvpmodel import parse_conf
from yolo_nano.jetson.operating_point import POINT_FORMAT, POINT_FORMAT_VERSION, load_operating_point


def write_point(path, **fields) -> str:
    """An operating-point.json as nano-bench --choose writes it (the fields the check and the apply read)."""
    point = {
        "format": POINT_FORMAT,
        "format_version": POINT_FORMAT_VERSION,
        "board": "Jetson-AGX",
        "l4t": "R35.2.1",
        "nvpmodel_conf": XAVIER_CONF,
        "nvpmodel_conf_sha256": parse_conf(XAVIER_CONF).sha256,
        "power_mode_id": 2,
        "power_mode_name": "MODE_15W",
        "jetson_clocks": True,
        "model_name": "nano-int8.engine",
        "model_sha256": None,
        "batch": 2,
        "threads": None,
        "pace_fps": 30.0,
        "late_policy": "drop",
        "energy_j_per_frame": 0.3,
    }
    point.update(fields)
    with open(path, "w") as f:
        json.dump(point, f)
    return str(path)


@pytest.fixture
def xavier(tmp_path, fake_board):
    """The fake AGX Xavier at MAXN, clocks off; its sysfs root (device-tree model, L4T release)."""
    fb = fake_board(mode=0, clocks="off")
    return fb, jetson_root(str(tmp_path / "root"))


def test_sets_the_point_and_restores(xavier, tmp_path):
    fb, root = xavier
    path = write_point(tmp_path / "op.json")
    with operating_point(path, XAVIER_CONF, root, log=lambda m: None) as p:
        assert fb.mode() == 2 and fb.clocks() == "on"
        assert (p.batch, p.pace_fps, p.late_policy, p.power_mode_name) == (2, 30.0, "drop", "MODE_15W")
        assert p.control is not None and p.control.original_mode == (0, "MAXN") and p.board == "Jetson-AGX"
    assert fb.mode() == 0 and fb.clocks() == "off"


def test_restores_after_an_exception(xavier, tmp_path):
    fb, root = xavier
    path = write_point(tmp_path / "op.json", power_mode_id=3, power_mode_name="MODE_30W_ALL")
    with pytest.raises(RuntimeError, match="camera unplugged"), operating_point(path, XAVIER_CONF, root):
        assert fb.mode() == 3 and fb.clocks() == "on"
        raise RuntimeError("camera unplugged")
    assert fb.mode() == 0 and fb.clocks() == "off"


def test_restores_after_sigterm_in_a_child_process(xavier, tmp_path):
    fb, root = xavier
    path = write_point(tmp_path / "op.json")
    code = textwrap.dedent(
        f"""
        import time
        from yolo_nano.jetson import operating_point
        with operating_point({path!r}, {XAVIER_CONF!r}, {root!r}):
            print("READY", flush=True)
            time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.strip() == "READY", line + proc.stdout.read()
        assert fb.mode() == 2 and fb.clocks() == "on"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, out
    assert fb.mode() == 0 and fb.clocks() == "off", out
    assert "restored power mode MAXN (ID 0)" in out and "Traceback" not in out


@pytest.mark.parametrize(
    "fields, conf, match",
    [
        ({"board": "Jetson-AGX-Orin"}, XAVIER_CONF, "chosen for board Jetson-AGX-Orin, this is Jetson-AGX"),
        ({"l4t": "R35.4.1"}, XAVIER_CONF, "chosen for L4T R35.4.1, this is R35.2.1"),
        ({}, NX_CONF, "chosen for nvpmodel conf sha256"),
        (
            {"power_mode_name": "MODE_20W"},
            XAVIER_CONF,
            "chosen for power mode MODE_20W .ID 2., this is MODE_15W",
        ),
        ({"model_sha256": "0" * 64}, XAVIER_CONF, "chosen for model nano-int8.engine .sha256 000000000000."),
    ],
)
def test_a_mismatch_is_refused_with_nothing_changed(xavier, tmp_path, fields, conf, match):
    fb, root = xavier
    model = tmp_path / "nano.onnx"
    model.write_bytes(b"not the chosen model")
    path = write_point(tmp_path / "op.json", **fields)
    with pytest.raises(OperatingPointMismatch, match=match) as e, operating_point(
        path, conf, root, str(model)
    ):
        pass
    assert "nothing was changed" in str(e.value)
    assert fb.nvp_calls() == [] and fb.mode() == 0 and fb.clocks() == "off"
    assert not os.path.exists(os.path.join(root, "var/lib/yolo-nano/board-state.json"))


def test_off_a_jetson_a_jetson_point_is_refused(fake_board, tmp_path):
    fb = fake_board(mode=0)
    path = write_point(tmp_path / "op.json")
    with pytest.raises(OperatingPointMismatch, match=r"this is \(none: not a Jetson\)"), operating_point(
        path, XAVIER_CONF, str(tmp_path)
    ):
        pass
    assert fb.nvp_calls() == []


def test_the_model_is_checked_by_its_sha256(xavier, tmp_path):
    fb, root = xavier
    model = tmp_path / "nano.onnx"
    model.write_bytes(b"the chosen model")
    path = write_point(tmp_path / "op.json", model_sha256=sha256_file(str(model)))
    with operating_point(path, XAVIER_CONF, root, str(model)):
        assert fb.mode() == 2
    assert fb.mode() == 0


def test_a_host_point_sets_nothing(fake_board, tmp_path):
    fb = fake_board(mode=0)
    path = write_point(tmp_path / "op.json", board=None, l4t=None, nvpmodel_conf=None, nvpmodel_conf_sha256=None,
                       power_mode_id=None, power_mode_name=None, jetson_clocks=False, threads=2, batch=1)  # fmt: skip
    with operating_point(path, sysfs_root=str(tmp_path)) as p:
        assert p.control is None and p.board is None and p.threads == 2 and p.is_host_point
    assert fb.nvp_calls() == [] and not os.path.exists(fb.clk_log)


def test_a_point_with_clocks_off_refuses_clocks_pinned_before(xavier, tmp_path):
    fb, root = xavier
    with open(fb.clk_state, "w") as f:
        f.write("on\n")
    path = write_point(tmp_path / "op.json", jetson_clocks=False)
    with pytest.raises(ClocksPinnedError), operating_point(path, XAVIER_CONF, root):
        pass
    assert [c for c in fb.nvp_calls() if c.startswith("-m")] == [] and fb.clocks() == "on"


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"format": "something-else"}, "not an operating point file"),
        ({"batch": 0}, "batch and threads must be >= 1"),
        ({"batch": "2"}, "batch must be a whole number"),
        ({"jetson_clocks": "yes"}, "jetson_clocks must be true/false"),
        ({"pace_fps": -1}, "pace_fps must be a frame rate > 0"),
        ({"nvpmodel_conf_sha256": None}, "without the nvpmodel_conf_sha256"),
    ],
)
def test_a_malformed_file_is_named(tmp_path, fields, match):
    with pytest.raises(OperatingPointError, match=match):
        load_operating_point(write_point(tmp_path / "op.json", **fields))
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(OperatingPointError, match="must be a JSON object"):
        load_operating_point(str(tmp_path / "bad.json"))
