"""Power sampling against recorded INA3221 sysfs trees (JetPack 4 iio, JetPack 5 hwmon) and RAPL
counters whose values change over time; the integrated energy is checked against the known profile."""

from __future__ import annotations

import math
import os
import sys
import threading
import time

import pytest

from testsupport.board import NX_RAILS, XAVIER_RAILS, SysfsBoard, profile_energy
from yolo_nano.jetson.power import (
    Ina3221Hwmon,
    Ina3221Iio,
    PowerMonitor,
    Rapl,
    board_total,
    find_power_source,
    trapezoid,
)


def xavier_profile(t: float):
    """Six AGX Xavier rails: a GPU ramp, a CPU step at 0.4 s and a slow sine on SOC (watts)."""
    return {
        "GPU": 2.0 + 6.0 * min(t, 1.0),
        "CPU": 1.5 if t < 0.4 else 3.5,
        "SOC": 1.2 + 0.4 * math.sin(2 * math.pi * t),
        "CV": 0.2,
        "VDDRQ": 0.9 + 0.3 * t,
        "SYS5V": 2.0,
    }


def nx_profile(t: float):
    """Xavier NX: the input rail VDD_IN carries the module power; the others are parts of it."""
    vin = 5.0 + 4.0 * min(t, 1.0)
    return {"VDD_IN": vin, "VDD_CPU_GPU_CV": 0.5 * vin, "VDD_SOC": 1.0}


def measure(board: SysfsBoard, source, profile, window: float = 0.9, interval: float = 0.04):
    board.play(profile)
    try:
        time.sleep(0.05)
        mon = PowerMonitor(source, interval_s=interval)
        mon.start()
        time.sleep(window)
        tr = mon.stop()
    finally:
        board.stop()
    return tr, mon.t0 - board.t0, mon.t1 - board.t0


@pytest.mark.parametrize("layout", ["iio", "hwmon"])
def test_agx_xavier_sums_six_rails_and_integrates_the_profile(tmp_path, layout):
    board = SysfsBoard(str(tmp_path), layout, XAVIER_RAILS)
    board.set(xavier_profile(0.0))
    src = find_power_source(str(tmp_path))[0]
    assert isinstance(src, Ina3221Iio if layout == "iio" else Ina3221Hwmon)
    assert sorted(n for n, _, _ in src.channels) == sorted(XAVIER_RAILS["0x40"] + XAVIER_RAILS["0x41"])
    assert "sum(" in src.describe()
    tr, a, b = measure(board, src, xavier_profile)
    want = profile_energy(xavier_profile, a, b, lambda p: sum(p.values()))
    assert tr is not None and len(tr.watts) >= 10
    assert tr.duration_s == pytest.approx(b - a, abs=0.02)
    # tolerance: the writer thread can lag by tens of ms on a loaded 2-core machine
    assert tr.energy_j == pytest.approx(want, rel=0.06)
    assert tr.avg_w == pytest.approx(want / (b - a), rel=0.06)
    assert tr.rails_w_avg["CV"] == pytest.approx(0.2, rel=0.03)


def test_input_rail_alone_on_xavier_nx_hwmon(tmp_path):
    board = SysfsBoard(str(tmp_path), "hwmon", NX_RAILS, bus="7")
    board.set(nx_profile(0.0))
    src = find_power_source(str(tmp_path))[0]
    assert isinstance(src, Ina3221Hwmon)
    assert "in7" not in str(src.channels) and len(src.channels) == 3  # sum-of-shunts channel skipped
    assert "VDD_IN" in src.describe()
    tr, a, b = measure(board, src, nx_profile)
    want = profile_energy(nx_profile, a, b, lambda p: p["VDD_IN"])
    assert tr.energy_j == pytest.approx(want, rel=0.06)  # not the sum of all three rails (which is ~1.6x)


def test_nc_channels_and_iio_current_fallback(tmp_path):
    d = tmp_path / "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    d.mkdir(parents=True)
    for i, (name, mv, ma) in enumerate([("POM_5V_IN", 5000, 1200), ("POM_5V_GPU", 5000, 300), ("NC", 0, 0)]):
        (d / f"rail_name_{i}").write_text(name + "\n")
        (d / f"in_voltage{i}_input").write_text(f"{mv}\n")
        (d / f"in_current{i}_input").write_text(f"{ma}\n")
    src = Ina3221Iio.find(str(tmp_path))
    assert [c[0] for c in src.channels] == ["POM_5V_IN", "POM_5V_GPU"]
    r = src.read()
    assert r.rails["POM_5V_IN"] == pytest.approx(6.0)
    assert r.total == pytest.approx(6.0)  # Nano: the input rail alone


def test_rapl_counter_energy_with_wraparound(tmp_path):
    d = tmp_path / "sys/class/powercap/intel-rapl:0"
    sub = tmp_path / "sys/class/powercap/intel-rapl:0:0"
    sub.mkdir(parents=True)
    d.mkdir(parents=True, exist_ok=True)
    (d / "name").write_text("package-0\n")
    (sub / "name").write_text("core\n")
    (sub / "energy_uj").write_text("0\n")
    wrap_uj = 10_000_000  # wraps every 10 J: twice in this test
    (d / "max_energy_range_uj").write_text(f"{wrap_uj}\n")
    rate_w = 25.0
    stop = threading.Event()
    t0 = time.perf_counter()

    def writer():
        while not stop.is_set():
            e_uj = int((7.0 + rate_w * (time.perf_counter() - t0)) * 1e6) % wrap_uj
            tmp = d / "energy_uj.w"
            tmp.write_text(f"{e_uj}\n")
            os.replace(tmp, d / "energy_uj")
            time.sleep(0.001)

    (d / "energy_uj").write_text("7000000\n")
    th = threading.Thread(target=writer, daemon=True)
    th.start()
    try:
        src, why = find_power_source(str(tmp_path))
        assert isinstance(src, Rapl) and why == ""
        assert [n for n, _, _ in src.domains] == ["package-0"]  # sub-domain not double counted
        assert "CPU package" in src.describe()
        time.sleep(0.05)
        mon = PowerMonitor(src, interval_s=0.03)
        mon.start()
        time.sleep(0.8)
        tr = mon.stop()
    finally:
        stop.set()
        th.join()
    assert tr.scope == "cpu-package"
    # tolerance: the counter written by a thread can be stale by tens of ms on a loaded machine
    assert tr.energy_j == pytest.approx(rate_w * tr.duration_s, rel=0.1)
    assert tr.avg_w == pytest.approx(rate_w, rel=0.1)
    assert tr.energy_j > 10.0  # two wraps of 10 J would be lost without the correction
    assert min(tr.watts) >= 0  # no negative step at the wrap


def test_no_sensors_says_why(tmp_path):
    src, why = find_power_source(str(tmp_path), prefer="auto")
    assert src is None
    assert "no INA3221 rails" in why and "RAPL" in why and "jtop" in why
    assert find_power_source(str(tmp_path), prefer="none")[1].startswith("power measurement disabled")


def test_monitor_without_source_returns_none_and_still_samples_side(tmp_path):
    calls = []
    mon = PowerMonitor(None, interval_s=0.01, side=lambda: calls.append(1) or len(calls), side_every=1)
    mon.start()
    time.sleep(0.1)
    assert mon.stop() is None
    assert len(mon.side_samples) >= 3


def test_board_total_and_trapezoid():
    assert board_total({"GPU": 1.0, "CPU": 2.0})[0] == 3.0
    assert board_total({"vdd_in": 7.0, "VDD_SOC": 1.0}) == (7.0, "vdd_in")
    assert trapezoid([0.0, 1.0, 3.0], [2.0, 4.0, 4.0]) == pytest.approx(3.0 + 8.0)


class _FakeJtop:
    """Stands in for jetson-stats' ``jtop`` client with the documented ``power`` layout (mW)."""

    service_up = True

    def __init__(self, interval=1.0):
        self.interval = interval
        self.closed = False

    def start(self):
        if not _FakeJtop.service_up:
            raise ConnectionRefusedError("The jtop.service is not active")

    def ok(self):
        return True

    def close(self):
        self.closed = True

    @property
    def power(self):
        return {
            "rail": {
                "VDD_IN": {"volt": 5000, "curr": 1800, "power": 9000, "avg": 8000},
                "VDD_SOC": {"power": 1500},
            },
            "tot": {"volt": 5000, "curr": 1800, "power": 9000, "avg": 8000, "name": "VDD_IN"},
        }


def test_jtop_source_reads_total_not_average(tmp_path, monkeypatch):
    import types

    monkeypatch.setitem(sys.modules, "jtop", types.SimpleNamespace(jtop=_FakeJtop))
    src, why = find_power_source(str(tmp_path), prefer="jtop")
    assert why == "" and src.name == "jtop"
    r = src.read()
    assert r.total == pytest.approx(9.0) and r.rails["VDD_SOC"] == pytest.approx(1.5)
    src.close()
    monkeypatch.setattr(_FakeJtop, "service_up", False)
    src, why = find_power_source(str(tmp_path), prefer="auto")
    assert src is None and "jtop service not reachable" in why and "jtop.service" in why
