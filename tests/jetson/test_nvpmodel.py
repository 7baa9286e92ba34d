"""nvpmodel conf parsing, budget -> mode mapping, and the controller against a fake nvpmodel on PATH."""

from __future__ import annotations

import os
import time

import pytest

from testsupport.board import NX_CONF, ORIN_CONF, XAVIER_CONF
from yolo_nano.jetson.nvpmodel import (
    ConfError,
    NvpModel,
    NvpModelError,
    PermissionHintError,
    RebootRequiredError,
    parse_conf,
    parse_conf_text,
    read_status_file,
    resolve_mode,
    resolve_modes,
)

# ID, NAME, budget, CPU cores, CPU max MHz, GPU max MHz, TPC_PG_MASK (the reference table)
XAVIER_TABLE = [
    (0, "MAXN", None, 8, None, None, "0"),
    (1, "MODE_10W", 10.0, 2, 1190.4, 520.2, "5"),
    (2, "MODE_15W", 15.0, 4, 1190.4, 670.0, "0"),
    (3, "MODE_30W_ALL", 30.0, 8, 1190.4, 905.25, "0"),
    (4, "MODE_30W_6CORE", 30.0, 6, 1450.0, 905.25, "0"),
    (5, "MODE_30W_4CORE", 30.0, 4, 1780.0, 905.25, "0"),
    (6, "MODE_30W_2CORE", 30.0, 2, 2100.0, 905.25, "0"),
    (7, "MODE_15W_DESKTOP", 15.0, 4, 2188.8, 670.0, "0"),
]


def test_parse_agx_xavier_matches_reference_table():
    conf = parse_conf(XAVIER_CONF)
    assert sorted(conf.modes) == list(range(8))
    assert conf.default_id == 2
    assert len(conf.sha256) == 64
    for mid, name, budget, cores, cpu_mhz, gpu_mhz, tpc in XAVIER_TABLE:
        m = conf.modes[mid]
        assert m.name == name
        assert m.budget_w == budget
        assert m.online_cpus == cores
        assert (m.cpu_max_khz / 1000 if m.cpu_max_khz else None) == cpu_mhz
        assert (m.gpu_max_hz / 1e6 if m.gpu_max_hz else None) == gpu_mhz
        assert m.pg_masks == {"TPC_PG_MASK": tpc}


@pytest.mark.parametrize(
    "spec, mid",
    [
        ("15W", 2),  # MODE_15W, not MODE_15W_DESKTOP
        ("15w", 2),
        ("MODE_15W", 2),
        ("30W", 3),  # four 30 W modes: the _ALL one
        ("MODE_30W_4CORE", 5),
        ("mode_30w_2core", 6),
        ("10W", 1),
        ("MAXN", 0),
        ("7", 7),
        ("MODE_15W_DESKTOP", 7),
    ],
)
def test_budget_name_and_id_map_to_xavier_modes(spec, mid):
    assert resolve_mode(spec, parse_conf(XAVIER_CONF)).id == mid


def test_sweep_list_keeps_order_and_drops_duplicates():
    conf = parse_conf(XAVIER_CONF)
    assert [m.id for m in resolve_modes("30W, 15W,MODE_15W,0", conf)] == [3, 2, 0]


@pytest.mark.parametrize(
    "spec, words",
    [
        ("25W", ["no 25W", "10W, 15W, 30W"]),
        ("9", ["ID 9", "0=MAXN"]),
        ("fast", ["not an ID"]),
        ("", ["empty"]),
    ],
)
def test_unknown_power_values_say_what_exists(spec, words):
    with pytest.raises(ConfError) as e:
        resolve_mode(spec, parse_conf(XAVIER_CONF))
    for w in words:
        assert w in str(e.value)


def test_xavier_nx_ambiguous_budget_asks_for_the_exact_name():
    conf = parse_conf(NX_CONF)
    assert len(conf.modes) == 9
    with pytest.raises(ConfError, match="ambiguous") as e:
        resolve_mode("15W", conf)
    for name in ("MODE_15W_2CORE", "MODE_15W_4CORE", "MODE_15W_6CORE"):
        assert name in str(e.value)
    assert resolve_mode("MODE_20W_6CORE", conf).id == 8
    assert resolve_mode("MODE_10W_DESKTOP", conf).online_cpus == 4


def test_orin_loose_spelling_bare_names_id_gaps_and_reboot_masks():
    conf = parse_conf(ORIN_CONF)
    assert sorted(conf.modes) == [0, 1, 2, 4]
    assert conf.default_id == 2
    assert resolve_mode("15W", conf).id == 1
    assert resolve_mode("50w", conf).id == 4
    assert resolve_mode("MAXN", conf).budget_w is None
    assert conf.modes[1].online_cpus == 4
    assert conf.modes[1].gpu_max_hz == 420750000  # trailing '# Hz' comment stripped
    assert conf.needs_reboot(0, 1) and conf.needs_reboot(1, 2)
    assert not conf.needs_reboot(0, 4)
    xavier = parse_conf(XAVIER_CONF)
    assert xavier.needs_reboot(0, 1) and not xavier.needs_reboot(0, 6)  # a core-count change alone: no


def test_malformed_conf_errors_name_the_line():
    with pytest.raises(ConfError, match="no '< POWER_MODEL"):
        parse_conf_text("< PARAM TYPE=FILE NAME=X >\nX /sys/x\n")
    with pytest.raises(ConfError, match=":2: POWER_MODEL ID is not an integer"):
        parse_conf_text("# c\n< POWER_MODEL ID=two NAME=A >\n")
    with pytest.raises(ConfError, match="duplicate POWER_MODEL ID=1"):
        parse_conf_text("< POWER_MODEL ID=1 NAME=A >\n< POWER_MODEL ID=1 NAME=B >\n")
    with pytest.raises(ConfError, match="cannot read"):
        parse_conf("/nonexistent/nvpmodel.conf")


def test_status_file_gives_mode_without_root(tmp_path):
    (tmp_path / "var/lib/nvpmodel").mkdir(parents=True)
    (tmp_path / "var/lib/nvpmodel/status").write_text("pmode:0003\n")
    assert read_status_file(str(tmp_path)) == 3
    assert read_status_file(str(tmp_path / "none")) is None


# ----------------------------------------------------------------------- controller, fake nvpmodel


def test_query_and_switch_with_verification(fake_board):
    fb = fake_board(mode=0)
    nvp = NvpModel(parse_conf(XAVIER_CONF))
    assert nvp.available and os.path.dirname(nvp.executable) == fb.bin
    assert nvp.query() == (0, "MAXN")
    assert nvp.set_mode(2) == (2, "MODE_15W")
    assert fb.mode() == 2
    assert "-m 2" in fb.nvp_calls()
    assert nvp.set_mode(2) == (2, "MODE_15W")  # already there: no second switch
    assert fb.nvp_calls().count("-m 2") == 1


def test_reboot_gated_mode_refused_before_running_nvpmodel(fake_board):
    fb = fake_board(mode=0)
    nvp = NvpModel(parse_conf(XAVIER_CONF))
    with pytest.raises(RebootRequiredError, match="MODE_10W .ID 1. needs a reboot"):
        nvp.set_mode(1)
    assert fb.mode() == 0
    assert not any(c.startswith("-m") for c in fb.nvp_calls())


def test_reboot_prompt_is_answered_no_and_never_hangs(fake_board):
    fb = fake_board(conf=ORIN_CONF, mode=0)
    nvp = NvpModel(None, timeout_s=20)  # no conf: nvpmodel itself prompts
    t = time.monotonic()
    with pytest.raises(RebootRequiredError, match="answered no"):
        nvp.set_mode(1)
    assert time.monotonic() - t < 10
    assert fb.mode() == 0
    assert "-m 1" in fb.nvp_calls()


def test_permission_failure_explains_how_to_grant(fake_board, monkeypatch):
    fake_board(mode=0)
    monkeypatch.setenv("FAKE_NVPMODEL_REQUIRE_ROOT", "1")
    nvp = NvpModel(parse_conf(XAVIER_CONF))
    with pytest.raises(PermissionHintError) as e:
        nvp.set_mode(2)
    msg = str(e.value)
    assert "NOPASSWD: /usr/sbin/nvpmodel" in msg and "jtop" in msg


def test_timeout_instead_of_hanging(fake_board, monkeypatch):
    fake_board(mode=0)
    monkeypatch.setenv("FAKE_NVPMODEL_DELAY", "5")
    nvp = NvpModel(parse_conf(XAVIER_CONF), timeout_s=0.5)
    t = time.monotonic()
    with pytest.raises(NvpModelError, match="did not finish in 0.5 s"):
        nvp.query()
    assert time.monotonic() - t < 4


def test_missing_nvpmodel_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    nvp = NvpModel(None)
    assert not nvp.available
    with pytest.raises(NvpModelError, match="not on PATH"):
        nvp.query()
