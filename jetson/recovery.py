"""Put a board back after a run that died without restoring it (SIGKILL, a power loss).

The run recorded the original power mode and the file holding the original ``jetson_clocks`` state in
the board's state file (:mod:`.lock`) before switching anything; whoever takes the board lock next finds
the file, restores from it and says so. ``nano-bench --restore`` does only that.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, List, Optional

from .clocks import JetsonClocks
from .lock import BoardBusyError, BoardLock, BoardStateError, StateFile, state_dir_for
from .nvpmodel import ConfError, NvpModel, NvpModelError, parse_conf

Log = Callable[[str], None]


class BoardRestoreError(RuntimeError):
    """The board could not be put back; ``errors`` says what failed (the state file is kept)."""

    def __init__(self, errors: List[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def stderr_log(msg: str) -> None:
    """Default log: one line on stderr. Never raises: after SIGHUP the terminal is gone (EIO)."""
    with contextlib.suppress(OSError, ValueError):
        print(f"yolo_nano.jetson: {msg}", file=sys.stderr, flush=True)


def recover_locked(state: StateFile, log: Log, sysfs_root: str = "/") -> List[str]:
    """Restore the board from a state file left by a run that died (the caller holds the lock, so its
    writer is gone). Returns the lines logged; raises :class:`BoardStateError` for an unusable file and
    :class:`BoardRestoreError` when the board could not be put back (logged as ``ERROR:`` lines; the
    file is then kept)."""
    data = state.read()
    if data is None:
        return []
    who = f"PID {data['pid']}" if data.get("pid") else "an earlier run"
    started = f", started {data['started']}" if isinstance(data.get("started"), str) else ""
    lines = [f"{who}{started} ended without restoring the board (killed, or the power was lost)"]
    errors: List[str] = []
    orig = data.get("original_mode")
    if orig is not None and data.get("mode_changed", True):
        conf = None
        if data.get("nvpmodel_conf"):
            with contextlib.suppress(ConfError):
                conf = parse_conf(data["nvpmodel_conf"])
        nvp = NvpModel(conf, root=sysfs_root)
        try:
            if nvp.query()[0] != orig["id"]:
                nvp.set_mode(orig["id"])
            lines.append(f"restored power mode {orig['name']} (ID {orig['id']}) that it had found")
        except NvpModelError as e:
            errors.append(f"could not restore power mode {orig['name']} (ID {orig['id']}) left by {who}: {e}")
    store = data.get("clocks_store")
    if store:
        if os.path.exists(store):
            try:
                JetsonClocks().restore(store)
                lines.append("restored the jetson_clocks state it had stored")
            except NvpModelError as e:
                errors.append(f"could not restore the jetson_clocks state left by {who} ({store}): {e}")
        else:
            lines.append(
                f"its stored jetson_clocks state ({store}) was never written, so the clocks were not pinned yet"
            )
    for line in lines:
        log(line)
    if errors:
        errors.append(f"the state stays recorded in {state.path}")
        for err in errors:
            log("ERROR: " + err)
        raise BoardRestoreError(errors)
    state.remove()
    return lines


def recover(
    sysfs_root: str = "/", state_dir: Optional[str] = None, log: Optional[Log] = None, wait_s: float = 0.0
) -> List[str]:
    """Put the board back after a run that died without restoring it (``nano-bench --restore``).

    Returns the lines logged (empty: nothing was left to restore). Raises :class:`BoardBusyError` when a
    live run owns the board (it restores the board itself), :class:`BoardStateError` and
    :class:`BoardRestoreError`.
    """
    log = log or stderr_log
    folder = state_dir_for(sysfs_root, state_dir)
    state = StateFile(folder)
    if not state.exists():
        return []
    lock = BoardLock(folder, wait_s=wait_s, log=log)
    lock.acquire()
    try:
        return recover_locked(state, log, sysfs_root)
    finally:
        lock.release()


def recover_if_left(
    sysfs_root: str = "/", state_dir: Optional[str] = None, log: Optional[Log] = None
) -> List[str]:
    """:func:`recover` for a run about to read the board's mode: a board owned by a live run is not an
    error here, only noted (that run may switch the mode during this one), and an unusable state file
    or folder is a warning (a run that changes the board stops on it when it takes the lock).
    :class:`BoardRestoreError` when a left state could not be restored."""
    log = log or stderr_log
    try:
        return recover(sysfs_root, state_dir, log)
    except BoardBusyError as e:
        log(f"note: {e}; the power mode may change during this run")
    except BoardStateError as e:
        log(f"warning: {e}")
    return []
