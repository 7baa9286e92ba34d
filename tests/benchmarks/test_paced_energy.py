"""Paced energy per frame on the fake AGX Xavier: the power model writes INA3221 rails from the mode, the
pinned clocks and the frame in flight; the real PowerMonitor integrates them over the paced window, idle
included, and the result is the J/frame the model predicts, with the tolerance the power tests use.

Real time, 2 s per run, in slow motion (``SCALE``: a 23 Hz camera becomes 5.75 Hz, every call 4x
longer, every J/frame 4x larger): at full speed a 10 ms call on a loaded 2-core machine oversleeps by
a millisecond or two and the rail writes lag, which alone biased J/frame by +5..7%. The rails live on
tmpfs where there is one (a rail write there takes ~0.5 ms instead of ~7 ms on ext4)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import pytest

from testsupport.board import XAVIER_CONF, XAVIER_RAILS, SysfsBoard
from testsupport.power_model import XAVIER_POWER, XavierPowerModel, expected_j_per_frame
from yolo_nano.benchmarks.pacing import pace
from yolo_nano.jetson.clocks import JetsonClocks
from yolo_nano.jetson.nvpmodel import NvpModel, parse_conf
from yolo_nano.jetson.power import PowerMonitor, find_power_source

SCALE = 4.0
RATE = 23.0 / SCALE  # not a multiple of the sampling rate, so pulses and samples do not lock in phase
WINDOW_S = 2.0


def paced_run(model: XavierPowerModel, root: str, rate: float = RATE, late: str = "drop"):
    """A paced run of a fake backend that is busy for the mode's call time, measured by the power monitor."""
    src, why = find_power_source(root)
    assert src is not None, why
    call_s = model.call_s()

    def process(indices):
        with model.in_flight():
            time.sleep(call_s)

    monitor = PowerMonitor(src, interval_s=0.004)
    run = pace(process, rate, duration_s=WINDOW_S, late=late, monitor=monitor)
    return run, monitor


@pytest.fixture
def sysfs_root(tmp_path):
    """A folder for the rail files: on tmpfs (/dev/shm) where there is one, else the test's tmp_path."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        root = tempfile.mkdtemp(prefix="nano-bench-rails-", dir="/dev/shm")
        yield root
        shutil.rmtree(root, ignore_errors=True)
    else:
        yield str(tmp_path / "root")


@pytest.fixture
def xavier(sysfs_root, fake_board):
    """Fake nvpmodel/jetson_clocks at MAXN, clocks off, and the power model writing the rails."""

    def make(layout: str = "hwmon"):
        board = fake_board(conf=XAVIER_CONF, mode=0, clocks="off")
        sysfs = SysfsBoard(sysfs_root, layout, XAVIER_RAILS)
        model = XavierPowerModel(sysfs, board.nvp_state, board.clk_state, time_scale=SCALE)
        return board, sysfs_root, model

    return make


def test_the_table_makes_flat_out_and_paced_winners_differ():
    """The fixture's premise: MAXN has the best flat-out images/s/W, MODE_15W the cheapest 30 Hz frames."""
    flat = {m: (1.0 / p.call_s) / p.busy_w for m, p in XAVIER_POWER.items()}
    paced = {m: expected_j_per_frame(p, False, 30.0) for m, p in XAVIER_POWER.items() if p.call_s < 1 / 30}
    assert max(flat, key=flat.get) == 0 and min(paced, key=paced.get) == 2


@pytest.mark.parametrize("layout", ["hwmon", "iio"])
def test_paced_energy_per_frame_is_known_in_advance(xavier, layout):
    _, root, model = xavier(layout)
    with model:
        run, monitor = paced_run(model, root)
    assert run.frames_offered == int(RATE * WINDOW_S) and run.frames_dropped == 0
    assert run.trace is not None and run.trace.duration_s == pytest.approx(run.window_s, abs=0.02)
    want = expected_j_per_frame(XAVIER_POWER[0], False, RATE, SCALE)  # 9 W / 5.75 Hz + 22 W x 40 ms
    assert run.energy_j_per_frame == pytest.approx(want, rel=0.06)
    # and against the exact integral of what the sensors showed over the monitor's window
    shown = model.energy_j(monitor.t0, monitor.t1) / run.frames_done
    assert run.energy_j_per_frame == pytest.approx(shown, rel=0.04)


def test_mode_and_clocks_switched_by_the_board_tools_change_the_energy(xavier):
    """nvpmodel -m 2 and jetson_clocks (the fake programs, through jetson/) change what the rails show."""
    _, root, model = xavier()
    nvp = NvpModel(parse_conf(XAVIER_CONF))
    clocks = JetsonClocks()
    with model:
        nvp.set_mode(2)
        clocks.enable()
        try:
            run, _ = paced_run(model, root)
        finally:
            clocks.restore()
    assert nvp.query() == (2, "MODE_15W") and model.state()[1] is False  # clocks restored
    want = expected_j_per_frame(XAVIER_POWER[2], True, RATE, SCALE)  # 6 W / 5.75 Hz + 8.5 W x 88 ms
    assert run.energy_j_per_frame == pytest.approx(want, rel=0.06)
    assert run.energy_j_per_frame < 0.9 * expected_j_per_frame(
        XAVIER_POWER[0], False, RATE, SCALE
    )  # < MAXN's


def test_dropped_frames_still_pay_for_the_idle_window(xavier):
    """MODE_10W (45 ms calls) at 30 fps drops frames: the window's energy is shared by fewer frames done."""
    board, root, model = xavier()
    with open(board.nvp_state, "w") as f:
        f.write("1\n")
    with model:
        run, _ = paced_run(model, root, rate=30.0 / SCALE)
    assert run.frames_dropped > 0 and run.frames_done + run.frames_dropped == run.frames_offered
    p = XAVIER_POWER[1]
    busy_j = (p.busy_w - p.idle_w) * p.call_s * SCALE * run.frames_done
    want = (p.idle_w * run.window_s + busy_j) / run.frames_done
    assert run.energy_j_per_frame == pytest.approx(want, rel=0.06)
    assert run.energy_j_per_frame > 1.2 * expected_j_per_frame(p, False, 30.0 / SCALE, SCALE)  # if it kept up
