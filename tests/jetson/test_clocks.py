"""Clock readings under a recorded sysfs tree, the throttling flag, and jetson_clocks store/restore."""

from __future__ import annotations

import os

import pytest

from testsupport.board import XAVIER_CONF
from yolo_nano.jetson.clocks import (
    ClockReader,
    JetsonClocks,
    count_cpu_list,
    parse_show_pinned,
    summarize_clocks,
)
from yolo_nano.jetson.nvpmodel import parse_conf

GPU = "sys/devices/17000000.gv11b/devfreq/17000000.gv11b"


def write_tree(root, gpu_hz=670000000, online="0-3", temps=(("CPU-therm", 45500), ("GPU-therm", 51000))):
    def w(rel, text):
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(f"{text}\n")

    w(f"{GPU}/cur_freq", gpu_hz)
    w(f"{GPU}/max_freq", 1377000000)
    w("sys/devices/system/cpu/online", online)
    for c in range(4):
        w(f"sys/devices/system/cpu/cpu{c}/cpufreq/scaling_cur_freq", 1190400)
    for i, (name, mc) in enumerate(temps):
        w(f"sys/class/thermal/thermal_zone{i}/type", name)
        w(f"sys/class/thermal/thermal_zone{i}/temp", mc)


@pytest.mark.parametrize("text, n", [("0-3", 4), ("0-3,5", 5), ("0", 1), ("0-1,4-7\n", 6)])
def test_cpu_list(text, n):
    assert count_cpu_list(text) == n


def test_reader_and_no_throttle_at_the_mode_cap(tmp_path):
    write_tree(str(tmp_path))
    r = ClockReader(str(tmp_path))
    s = r.read()
    assert s.gpu_cur_hz == 670000000 and s.online_cpus == 4
    assert s.temps_c == {"CPU-therm": 45.5, "GPU-therm": 51.0}
    assert set(s.cpu_cur_khz) == {"cpu0", "cpu1", "cpu2", "cpu3"}
    mode = parse_conf(XAVIER_CONF).modes[2]  # MODE_15W: 670 MHz cap, 4 cores
    summ = summarize_clocks([s, r.read()], mode)
    assert summ["throttled"] is False
    assert summ["gpu_freq_mhz_median"] == 670.0
    assert summ["temps_c_max"]["GPU-therm"] == 51.0


def test_throttling_flagged_with_reasons(tmp_path):
    write_tree(str(tmp_path), gpu_hz=420000000, online="0-1")
    mode = parse_conf(XAVIER_CONF).modes[2]
    summ = summarize_clocks([ClockReader(str(tmp_path)).read()], mode)
    assert summ["throttled"] is True
    assert any("GPU median 420 MHz < 90% of cap 670 MHz" in r for r in summ["throttle_reasons"])
    assert any("2 CPUs online, mode keeps 4" in r for r in summ["throttle_reasons"])


def test_without_mode_cap_uses_devfreq_max(tmp_path):
    write_tree(str(tmp_path), gpu_hz=1377000000)
    assert summarize_clocks([ClockReader(str(tmp_path)).read()], None)["throttled"] is False
    write_tree(str(tmp_path), gpu_hz=900000000)
    assert summarize_clocks([ClockReader(str(tmp_path)).read()], None)["throttled"] is True


def test_not_a_jetson_gives_unknown(tmp_path):
    summ = summarize_clocks([ClockReader(str(tmp_path)).read()], None)
    assert summ["throttled"] is None and summ["gpu_freq_mhz_median"] is None


def test_jetson_clocks_store_enable_restore(fake_board):
    fb = fake_board(clocks="off")
    jc = JetsonClocks()
    assert jc.available
    jc.enable()  # stores first
    assert jc.stored and fb.clocks() == "on"
    stored_file = jc._store_path
    assert os.path.isfile(stored_file)
    jc.restore()
    assert fb.clocks() == "off"
    assert not os.path.exists(stored_file) and not jc.stored
    jc.restore()  # idempotent
    with open(fb.clk_log) as f:
        calls = [line.split()[0] if line.strip() else "" for line in f]
    assert calls == ["--store", "", "--restore"]


@pytest.mark.parametrize(
    "text, pinned",
    [
        ("cpu0: Online=1 Governor=schedutil MinFreq=1190400 MaxFreq=2265600 CurrentFreq=1574400 IdleStates: C1=1 c6=1\n"
         "GPU MinFreq=114750000 MaxFreq=1377000000 CurrentFreq=318750000\n"
         "EMC MinFreq=204000000 MaxFreq=2133000000 CurrentFreq=1065600000 FreqOverride=0\n", False),
        ("GPU MinFreq=1377000000 MaxFreq=1377000000 CurrentFreq=1377000000\n"
         "EMC MinFreq=204000000 MaxFreq=2133000000 CurrentFreq=2133000000 FreqOverride=1\n", True),
        ("SOC family:tegra194  Machine:Jetson-AGX\n", None),
    ],
)  # fmt: skip
def test_pinned_is_read_from_jetson_clocks_show(text, pinned):
    assert parse_show_pinned(text) is pinned


def test_pinned_asks_the_program(fake_board):
    fb = fake_board(clocks="off")
    clocks = JetsonClocks()
    assert clocks.pinned() is False
    clocks.enable()
    assert clocks.pinned() is True and fb.clocks() == "on"
    clocks.restore()
    assert clocks.pinned() is False
