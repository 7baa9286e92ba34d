"""power_mode()/BoardControl on the fake board: the real nvpmodel/jetson_clocks subprocess code, real
signals to a real child process, a real flock held by another process, and recovery after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from testsupport.board import XAVIER_CONF
from yolo_nano.jetson import (
    BoardBusyError,
    BoardControl,
    BoardRestoreError,
    BoardStateError,
    ClocksPinnedError,
    power_mode,
    recover,
)
from yolo_nano.jetson.clocks import JetsonClocks
from yolo_nano.jetson.lock import STATE_NAME, StateFile, read_holder
from yolo_nano.jetson.nvpmodel import ConfError, RebootRequiredError


def state_path(root) -> str:
    return os.path.join(str(root), "var/lib/yolo-nano", STATE_NAME)


def read_state(root) -> dict:
    with open(state_path(root)) as f:
        return json.load(f)


def holder_script(root, mode="30W", clocks=True, then="sleep"):
    """A child process that enters power_mode, prints READY, then sleeps (to be signalled or killed)
    or exits after a short while (``then="exit"``)."""
    body = "time.sleep(120)" if then == "sleep" else "time.sleep(1.0)"
    return textwrap.dedent(
        f"""
        import sys, time
        from yolo_nano.jetson import power_mode
        with power_mode({mode!r}, nvpmodel_conf={XAVIER_CONF!r}, sysfs_root={str(root)!r}, jetson_clocks={clocks}):
            print("READY", flush=True)
            {body}
        """
    )


def spawn(code, env=None):
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=env or dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_ready(proc):
    line = proc.stdout.readline()
    assert line.strip() == "READY", line + proc.stdout.read()


def test_sets_mode_and_clocks_then_restores(fake_board, tmp_path):
    fb = fake_board(mode=0, clocks="off")
    logs = []
    with power_mode(
        "15W", nvpmodel_conf=XAVIER_CONF, sysfs_root=str(tmp_path), jetson_clocks=True, log=logs.append
    ) as board:
        assert fb.mode() == 2 and fb.clocks() == "on"
        assert board.mode == (2, "MODE_15W") and board.original_mode == (0, "MAXN")
        state = read_state(tmp_path)
        assert state["original_mode"] == {"id": 0, "name": "MAXN"} and state["pid"] == os.getpid()
        assert os.path.isfile(state["clocks_store"])  # the original clocks, stored where a kill leaves them
    assert fb.mode() == 0 and fb.clocks() == "off"
    assert not os.path.exists(state_path(tmp_path)) and not os.path.exists(state["clocks_store"])
    assert "restored power mode MAXN (ID 0)" in logs and "restored the jetson_clocks state" in logs


def test_restores_on_exception(fake_board, tmp_path):
    fb = fake_board(mode=7, clocks="off")
    with pytest.raises(RuntimeError, match="engine exploded"), power_mode(
        "MODE_30W_ALL", nvpmodel_conf=XAVIER_CONF, sysfs_root=str(tmp_path), jetson_clocks=True
    ):
        assert fb.mode() == 3
        raise RuntimeError("engine exploded")
    assert fb.mode() == 7 and fb.clocks() == "off"
    assert not os.path.exists(state_path(tmp_path))


def test_refusals_change_nothing(fake_board, tmp_path):
    fb = fake_board(mode=0)
    with pytest.raises(RebootRequiredError, match="needs a reboot"), power_mode(
        "10W", nvpmodel_conf=XAVIER_CONF, sysfs_root=str(tmp_path)
    ):
        pass
    with pytest.raises(ConfError, match="ambiguous|no 99W"), power_mode(
        "99W", nvpmodel_conf=XAVIER_CONF, sysfs_root=str(tmp_path)
    ):
        pass
    assert fb.mode() == 0 and [c for c in fb.nvp_calls() if c.startswith("-m")] == []
    assert not os.path.exists(state_path(tmp_path))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT])
def test_every_catchable_signal_restores_and_exits_128_plus_signum(fake_board, tmp_path, sig):
    fb = fake_board(mode=7, clocks="off")  # MODE_15W_DESKTOP
    proc = spawn(holder_script(tmp_path))
    try:
        wait_ready(proc)
        assert fb.mode() == 3 and fb.clocks() == "on"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, out
    assert fb.mode() == 7 and fb.clocks() == "off", out
    assert "restored power mode MODE_15W_DESKTOP (ID 7)" in out and "Traceback" not in out
    assert f"interrupted by {signal.Signals(sig).name}" in out
    assert not os.path.exists(state_path(tmp_path))


def test_second_run_is_refused_naming_the_holder(fake_board, tmp_path):
    fb = fake_board(mode=0, clocks="off")
    proc = spawn(holder_script(tmp_path))
    try:
        wait_ready(proc)
        with pytest.raises(BoardBusyError) as e, power_mode(
            "15W", nvpmodel_conf=XAVIER_CONF, sysfs_root=str(tmp_path)
        ):
            pass
        assert e.value.holder_pid == proc.pid and f"PID {proc.pid}" in str(e.value)
        assert fb.mode() == 3  # the holder's mode, untouched, and its record kept for it to restore
        assert read_state(tmp_path)["original_mode"]["id"] == 0
        # a run that only measures takes no lock; it notes who owns the board and touches nothing
        notes = []
        with BoardControl(sysfs_root=str(tmp_path), lock=False, log=notes.append):
            pass
        assert any(f"PID {proc.pid}" in n for n in notes) and fb.mode() == 3
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert fb.mode() == 0 and fb.clocks() == "off", out


def test_second_run_waits_for_the_lock(fake_board, tmp_path):
    fb = fake_board(mode=0, clocks="off")
    proc = spawn(holder_script(tmp_path, then="exit"))
    logs = []
    try:
        wait_ready(proc)
        with power_mode(
            "15W", nvpmodel_conf=XAVIER_CONF, sysfs_root=str(tmp_path), wait_s=120, log=logs.append
        ):
            # the holder restored MAXN before this run got the board, and this run switched from there
            assert [c for c in fb.nvp_calls() if c.startswith("-m")] == ["-m 3", "-m 0", "-m 2"]
    finally:
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert any(f"in use by PID {proc.pid}" in line and "waiting up to 120 s" in line for line in logs), logs
    assert fb.mode() == 0 and fb.clocks() == "off"
    # each run restored its own original: the waiting run found MAXN, not the first run's 30 W mode
    assert [c for c in fb.nvp_calls() if c.startswith("-m")] == ["-m 3", "-m 0", "-m 2", "-m 0"]


def test_nested_power_mode_is_refused(fake_board, tmp_path):
    fake_board(mode=0)
    outer = power_mode("15W", nvpmodel_conf=XAVIER_CONF, sysfs_root=str(tmp_path))
    inner = power_mode("30W", nvpmodel_conf=XAVIER_CONF, sysfs_root=str(tmp_path))
    with outer, pytest.raises(BoardBusyError, match="do not nest"), inner:
        pass


def test_sigkill_then_recover_puts_the_board_back_and_says_so(fake_board, tmp_path):
    fb = fake_board(mode=0, clocks="off")
    proc = spawn(holder_script(tmp_path))
    wait_ready(proc)
    proc.kill()
    proc.communicate(timeout=60)
    assert fb.mode() == 3 and fb.clocks() == "on" and os.path.exists(state_path(tmp_path))
    lines = recover(sysfs_root=str(tmp_path), log=lambda m: None)
    assert lines[0].startswith(f"PID {proc.pid}, started ") and "ended without restoring" in lines[0]
    assert "restored power mode MAXN (ID 0) that it had found" in lines
    assert "restored the jetson_clocks state it had stored" in lines
    assert fb.mode() == 0 and fb.clocks() == "off" and not os.path.exists(state_path(tmp_path))
    assert recover(sysfs_root=str(tmp_path)) == []  # nothing left


def test_next_run_recovers_first(fake_board, tmp_path):
    fb = fake_board(mode=0, clocks="off")
    proc = spawn(holder_script(tmp_path, mode="MODE_30W_ALL"))
    wait_ready(proc)
    proc.kill()
    proc.communicate(timeout=60)
    logs = []
    with power_mode("15W", nvpmodel_conf=XAVIER_CONF, sysfs_root=str(tmp_path), log=logs.append) as board:
        assert board.original_mode == (0, "MAXN")  # recorded after the recovery, not the killed run's mode
        assert fb.clocks() == "off"
    assert any("ended without restoring" in line for line in logs)
    assert fb.mode() == 0
    assert [c for c in fb.nvp_calls() if c.startswith("-m")] == ["-m 3", "-m 0", "-m 2", "-m 0"]


def test_killed_before_the_clocks_were_stored(fake_board, tmp_path):
    """The state file names a clocks file that was never written: nothing to restore there, said so."""
    fb = fake_board(mode=0)
    folder = os.path.join(str(tmp_path), "var/lib/yolo-nano")
    os.makedirs(folder)
    StateFile(folder).write(
        {"pid": 12345, "original_mode": None, "clocks_store": os.path.join(folder, "c.conf")}
    )
    lines = recover(sysfs_root=str(tmp_path), log=lambda m: None)
    assert "never written" in lines[-1] and fb.nvp_calls() == []


@pytest.mark.parametrize(
    "text", ["{", "[]", '{"original_mode": {"id": "x", "name": 3}}', '{"clocks_store": 5}', "[" * 100000]
)
def test_corrupt_state_file_stops_before_touching_the_board(fake_board, tmp_path, text):
    fb = fake_board(mode=0)
    path = state_path(tmp_path)
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write(text)
    with pytest.raises(BoardStateError, match="original power mode is unknown"), power_mode(
        "15W", nvpmodel_conf=XAVIER_CONF, sysfs_root=str(tmp_path)
    ):
        pass
    assert fb.nvp_calls() == [] and os.path.exists(path)


def test_failed_restore_keeps_the_record_for_later(fake_board, tmp_path, monkeypatch):
    fb = fake_board(mode=0)
    monkeypatch.setenv("PATH", fb.bin)  # no sudo to retry through
    with pytest.raises(BoardRestoreError, match="could not restore power mode MAXN"), power_mode(
        "15W", nvpmodel_conf=XAVIER_CONF, sysfs_root=str(tmp_path), log=lambda m: None
    ):
        monkeypatch.setenv("FAKE_NVPMODEL_REQUIRE_ROOT", "1")
    assert fb.mode() == 2 and os.path.exists(state_path(tmp_path))
    assert read_holder(os.path.join(os.path.dirname(state_path(tmp_path)), "board.lock")) == {
        "pid": None,
        "command": "",
        "since": "",
    }  # the lock was released
    monkeypatch.delenv("FAKE_NVPMODEL_REQUIRE_ROOT")
    assert "restored power mode MAXN (ID 0) that it had found" in recover(sysfs_root=str(tmp_path))
    assert fb.mode() == 0


def test_unusable_state_folder_says_how_to_fix(fake_board, tmp_path):
    fb = fake_board(mode=0)
    os.makedirs(tmp_path / "var")
    (tmp_path / "var" / "lib").write_text("a file where the state folder's parent should be")
    with pytest.raises(
        BoardStateError, match="cannot create the board state folder .*sudo install -d"
    ), power_mode("15W", nvpmodel_conf=XAVIER_CONF, sysfs_root=str(tmp_path)):
        pass
    assert fb.nvp_calls() == []


def test_state_dir_from_the_environment(fake_board, tmp_path, monkeypatch):
    fake_board(mode=0)
    monkeypatch.setenv("YOLO_NANO_STATE_DIR", str(tmp_path / "elsewhere"))
    with power_mode("15W", nvpmodel_conf=XAVIER_CONF, sysfs_root=str(tmp_path)):
        assert os.path.exists(tmp_path / "elsewhere" / STATE_NAME)
    assert not os.path.exists(state_path(tmp_path))


def test_unpin_restores_the_stored_state_and_keeps_it_for_the_end(fake_board, tmp_path):
    """--jetson-clocks both: off points, pin, on points, unpin before the next mode, and so on."""
    fb = fake_board(mode=0, clocks="off")
    seen = []
    with BoardControl(nvpmodel_conf=XAVIER_CONF, sysfs_root=str(tmp_path), clocks=JetsonClocks(),
                      log=lambda m: None) as board:  # fmt: skip
        for mode in ("15W", "MODE_30W_ALL"):
            board.require_unpinned()  # unpins what this run pinned
            board.set_mode(mode)
            seen.append((fb.mode(), fb.clocks()))
            board.pin_clocks()
            seen.append((fb.mode(), fb.clocks()))
        store = read_state(tmp_path)["clocks_store"]
        assert os.path.isfile(store)  # still there for the final restore
    assert seen == [(2, "off"), (2, "on"), (3, "off"), (3, "on")]
    assert fb.mode() == 0 and fb.clocks() == "off" and not os.path.exists(store)
    with open(fb.clk_log) as f:
        calls = [line.split()[0] if line.strip() else "pin" for line in f]
    assert calls == ["--show", "--store", "pin", "--restore", "pin", "--restore"]


def test_clocks_pinned_before_the_run_are_refused_for_an_unpinned_point(fake_board, tmp_path):
    fb = fake_board(mode=0, clocks="on")  # someone ran jetson_clocks before
    with pytest.raises(ClocksPinnedError, match="pinned before this run"), power_mode(
        "15W", nvpmodel_conf=XAVIER_CONF, sysfs_root=str(tmp_path), jetson_clocks=False
    ):
        pass
    assert fb.mode() == 0 and fb.clocks() == "on" and not [c for c in fb.nvp_calls() if c.startswith("-m")]
    with power_mode("15W", nvpmodel_conf=XAVIER_CONF, sysfs_root=str(tmp_path)):  # None: as they are
        assert fb.mode() == 2 and fb.clocks() == "on"
    assert fb.mode() == 0 and fb.clocks() == "on"
