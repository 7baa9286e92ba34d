"""The board checks against the fake AGX Xavier (testsupport.board): its nvpmodel conf, a fake nvpmodel
and jetson_clocks on PATH, the INA3221 sysfs tree under --sysfs-root, so the real parsing runs; and the
permission question (asked of a fake sudo, never switching anything)."""

from __future__ import annotations

import importlib.util
import os
import stat
import sys

import pytest

from testsupport.board import XAVIER_CONF, jetson_root
from yolo_nano.doctor.checks.power import switch_permission
from yolo_nano.doctor.result import Context, Options
from yolo_nano.doctor.selftests.power_sampling import power_sampling

XAVIER_MODES = "0=MAXN, 1=MODE_10W, 2=MODE_15W, 3=MODE_30W_ALL, 4=MODE_30W_6CORE, 5=MODE_30W_4CORE, 6=MODE_30W_2CORE, 7=MODE_15W_DESKTOP"
RAILS_W = {"GPU": 4.0, "CPU": 2.0, "SOC": 1.5, "CV": 0.5, "VDDRQ": 1.0, "SYS5V": 3.0}

FAKE_SUDO = """
import os, sys
with open(os.environ["FAKE_SUDO_LOG"], "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
rule = os.environ["FAKE_SUDO_RULE"]  # all: NOPASSWD ALL; tools: NOPASSWD for the board tools; none
args = sys.argv[1:]
if args == ["-n", "true"]:
    sys.exit(0 if rule == "all" else 1)
if args[:2] == ["-n", "-l"] and len(args) == 3:
    sys.exit(0 if rule in ("all", "tools") else 1)
print("sudo: a password is required", file=sys.stderr)
sys.exit(1)
"""


def install_fake_sudo(folder, monkeypatch, rule):
    path = folder / "sudo"
    path.write_text(f"#!{sys.executable}\n" + FAKE_SUDO)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    log = folder / "sudo.log"
    monkeypatch.setenv("FAKE_SUDO_LOG", str(log))
    monkeypatch.setenv("FAKE_SUDO_RULE", rule)
    return log


@pytest.fixture
def xavier(tmp_path, fake_board):
    """The fake board in mode 7 (MODE_15W_DESKTOP) with a sudo that asks for a password."""
    board = fake_board(conf=XAVIER_CONF, mode=7)
    root = jetson_root(str(tmp_path / "root"), RAILS_W)
    return board, root


def test_fake_xavier_board_checks_parse_the_real_files(
    tmp_path, xavier, monkeypatch, doctor, check_schema, no_gpu
):
    board, root = xavier
    sudo_log = install_fake_sudo(tmp_path / "fakebin", monkeypatch, "none")
    run = doctor(
        "--quick", "--sysfs-root", root, "--nvpmodel-conf", XAVIER_CONF, report=str(tmp_path / "r.json")
    )
    assert "Traceback" not in run.out + run.err
    assert run.line("board model") == f"ok       {'board model':<24} Jetson-AGX"
    assert run.line("L4T / JetPack").endswith("L4T 35.2.1, JetPack 5.1")
    conf = run.line("nvpmodel conf")
    assert f"8 modes ({XAVIER_MODES}); budgets 10W, 15W, 30W; default 2=MODE_15W" in conf
    assert run.line("power mode").endswith("7=MODE_15W_DESKTOP (15 W budget)")
    assert run.line("jetson_clocks").endswith("clocks not pinned now")
    rails = run.line("INA3221 rails")
    assert rails.startswith("ok") and "ina3221-iio" in rails
    for name, watts in RAILS_W.items():
        assert f"{name} {watts:.2f} W" in rails
    assert f"total {sum(RAILS_W.values()):.2f} W" in rails
    # nothing was switched: nvpmodel was only queried, jetson_clocks only shown
    assert board.nvp_calls() and set(board.nvp_calls()) == {"-q"}
    with open(board.clk_log) as f:
        assert {line.strip() for line in f} == {"--show"}
    assert board.mode() == 7 and board.clocks() == "off"
    if os.geteuid() == 0:
        assert run.line("mode switching").startswith("ok") and "running as root" in run.line("mode switching")
    else:
        assert run.status("mode switching") == "missing" and "sudoers" in run.fix("mode switching")
        assert all(call.startswith("-n ") for call in sudo_log.read_text().splitlines())
    # on a Jetson, a missing TensorRT and pycuda are problems, each with its install step
    if importlib.util.find_spec("tensorrt") is None:
        assert run.status("TensorRT") == "missing"
        assert "sudo apt install python3-libnvinfer" in run.fix("TensorRT")
    if importlib.util.find_spec("pycuda") is None:
        assert run.status("pycuda") == "missing"
        assert "export PATH=/usr/local/cuda/bin:$PATH && pip install 'pycuda>=2022.1'" in run.fix("pycuda")
    assert run.status("GPU") == "failed" and "video group" in run.fix("GPU")
    assert run.code == 1
    check_schema(run.report)
    modes = run.check("nvpmodel conf")["data"]["modes"]
    assert [m["id"] for m in modes] == list(range(8))
    assert [m["budget_w"] for m in modes] == [None, 10.0, 15.0, 30.0, 30.0, 30.0, 30.0, 15.0]
    assert run.check("INA3221 rails")["data"]["rails_w"] == RAILS_W


def test_a_malformed_conf_fails_naming_the_line(tmp_path, xavier, doctor):
    bad = tmp_path / "bad.conf"
    bad.write_text("< POWER_MODEL ID=x NAME=MODE_15W >\nGPU MAX_FREQ 1\n")
    run = doctor("--quick", "--sysfs-root", xavier[1], "--nvpmodel-conf", str(bad))
    assert run.code == 1 and run.status("nvpmodel conf") == "failed"
    assert f"{bad}:1: POWER_MODEL ID is not an integer" in run.line("nvpmodel conf")
    assert "--nvpmodel-conf" in run.fix("nvpmodel conf")


def test_the_conf_under_the_sysfs_root_is_found_without_the_flag(tmp_path, xavier, doctor):
    root = xavier[1]
    os.makedirs(os.path.join(root, "etc"), exist_ok=True)
    with open(XAVIER_CONF) as src, open(os.path.join(root, "etc", "nvpmodel.conf"), "w") as dst:
        dst.write(src.read())
    run = doctor("--quick", "--sysfs-root", root)
    assert run.status("nvpmodel conf") == "ok" and XAVIER_MODES in run.line("nvpmodel conf")


@pytest.mark.parametrize(
    "rule, allowed, how",
    [
        ("all", True, "passwordless sudo"),
        ("tools", True, "sudo without a password for nvpmodel, jetson_clocks"),
        ("none", False, "not root, and sudo asks for a password"),
    ],
)
def test_switch_permission_is_asked_without_switching(tmp_path, fake_board, monkeypatch, rule, allowed, how):
    board = fake_board()
    log = install_fake_sudo(tmp_path / "fakebin", monkeypatch, rule)
    tools = [os.path.join(board.bin, "nvpmodel"), os.path.join(board.bin, "jetson_clocks")]
    assert switch_permission(tools, is_root=False) == (allowed, how)
    calls = log.read_text().splitlines()
    assert calls[0] == "-n true"
    assert all(c == "-n true" or c.startswith("-n -l ") for c in calls)  # listed, never run
    assert board.nvp_calls() == []
    assert switch_permission(tools, is_root=True) == (True, "running as root")


def test_power_sampling_reads_every_rail_for_the_window(tmp_path):
    root = jetson_root(str(tmp_path / "root"), RAILS_W)
    result = power_sampling(Context(Options(sysfs_root=root)), seconds=0.4)
    assert result.status == "ok", result.detail
    assert result.data["source"] == "ina3221-iio" and result.data["samples"] >= 3
    assert result.data["rails_w"] == pytest.approx(RAILS_W, abs=1e-3)
    assert result.data["total_w"] == pytest.approx(sum(RAILS_W.values()), abs=1e-3)
    assert "GPU 4.00 W" in result.detail and "total 12.00 W" in result.detail


def test_power_sampling_off_a_board_is_not_applicable(tmp_path):
    result = power_sampling(Context(Options(sysfs_root=str(tmp_path))), seconds=0.1)
    assert result.status == "n/a" and result.detail.startswith("not on a Jetson (power not measured")
    assert power_sampling(Context(Options(quick=True, sysfs_root=str(tmp_path)))).status == "skipped"
