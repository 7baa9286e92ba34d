"""One run owns a board at a time: an ``flock`` on a lock file, and a state file that survives a kill.

Both live in the board's state folder, ``<sysfs_root>/var/lib/yolo-nano`` (``/var/lib/yolo-nano`` on a
board; ``$YOLO_NANO_STATE_DIR`` or an explicit folder override it). It is on disk, not under ``/run``,
because ``nvpmodel`` keeps the mode across a reboot: after a power loss the board boots in the
benchmark's mode, and only a record that survived the reboot can say what to go back to.

- ``board.lock``: held with ``flock(LOCK_EX)`` for a whole run; it holds the owner's PID and command so
  a second run can say who has the board. The kernel drops the lock when its owner dies, even by
  SIGKILL, so a stale lock never blocks anyone.
- ``board-state.json``: the original power mode and where the original ``jetson_clocks`` state was
  stored, written (atomically) before anything is switched and removed once it is restored. Found
  by a run that could take the lock, it was left by a run that died before restoring.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
import time
from typing import Any, Callable, Dict, Optional

from yolo_nano.core.fileio import atomic_write_json
from yolo_nano.core.sysfs import sysfs_path

try:
    import fcntl
except ImportError:  # pragma: no cover - not Linux: no Jetson to share
    fcntl = None  # type: ignore[assignment]

DEFAULT_STATE_DIR = "/var/lib/yolo-nano"
STATE_DIR_ENV = "YOLO_NANO_STATE_DIR"
LOCK_NAME = "board.lock"
STATE_NAME = "board-state.json"
STATE_FORMAT = 1

#: How to make the default state folder usable by a non-root user (nvpmodel through sudoers).
STATE_DIR_HINT = (
    f"create it once with `sudo install -d -m 0775 -o $USER {DEFAULT_STATE_DIR}`, or choose another "
    f"folder with {STATE_DIR_ENV}=DIR"
)


class BoardBusyError(RuntimeError):
    """Another process holds the board lock; ``holder_pid`` names it (None when it could not be read)."""

    def __init__(self, message: str, holder_pid: Optional[int] = None) -> None:
        super().__init__(message)
        self.holder_pid = holder_pid


class BoardStateError(RuntimeError):
    """The state folder cannot be used, or a state file left by an earlier run cannot be read."""


def state_dir_for(sysfs_root: str = "/", state_dir: Optional[str] = None) -> str:
    """The state folder: ``state_dir``, else ``$YOLO_NANO_STATE_DIR``, else ``<sysfs_root>/var/lib/yolo-nano``."""
    return state_dir or os.environ.get(STATE_DIR_ENV) or sysfs_path(sysfs_root, DEFAULT_STATE_DIR)


def ensure_state_dir(path: str) -> str:
    """Create the state folder if needed; :class:`BoardStateError` with the fix when that is not allowed."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise BoardStateError(
            f"cannot create the board state folder {path} ({e.strerror or e}): {STATE_DIR_HINT}"
        ) from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise BoardStateError(f"the board state folder {path} is not writable: {STATE_DIR_HINT}")
    return path


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _command_line() -> str:
    return " ".join([os.path.basename(sys.argv[0] or "python")] + sys.argv[1:])[:300]


def read_holder(lock_path: str) -> Dict[str, Any]:
    """What the lock file says about its holder: ``pid``, ``command``, ``since`` (empty when unknown)."""
    try:
        with open(lock_path, encoding="utf-8", errors="replace") as f:
            data = json.loads(f.read(4096) or "{}")
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    pid = data.get("pid")
    return {
        "pid": pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        "command": str(data.get("command", ""))[:300],
        "since": str(data.get("since", ""))[:40],
    }


def describe_holder(holder: Dict[str, Any]) -> str:
    """``PID 1234 (nano-bench m.engine --power 15W, since 2025-01-01T10:00:00+00:00)``."""
    if not holder.get("pid"):
        return "another process (PID not recorded yet)"
    details = ", ".join(
        x for x in (holder.get("command"), f"since {holder['since']}" if holder.get("since") else "") if x
    )
    return f"PID {holder['pid']}" + (f" ({details})" if details else "")


class BoardLock:
    """``flock`` on ``<state_dir>/board.lock``: :meth:`acquire` waits up to ``wait_s`` seconds (0: refuse
    at once) and raises :class:`BoardBusyError` naming the holder's PID; :meth:`release` unlocks."""

    def __init__(
        self, state_dir: str, *, wait_s: float = 0.0, log: Optional[Callable[[str], None]] = None
    ) -> None:
        self.path = os.path.join(state_dir, LOCK_NAME)
        self.state_dir = state_dir
        self.wait_s = max(0.0, float(wait_s))
        self.log = log
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        ensure_state_dir(self.state_dir)
        cloexec = getattr(os, "O_CLOEXEC", 0)
        writable = True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | cloexec, 0o664)
        except PermissionError:  # another user's lock file: flock works on a read-only descriptor too
            writable = False
            try:
                fd = os.open(self.path, os.O_RDONLY | cloexec)
            except OSError as e:
                raise BoardStateError(
                    f"cannot open the board lock {self.path} ({e.strerror or e}): {STATE_DIR_HINT}"
                ) from e
        except OSError as e:
            raise BoardStateError(
                f"cannot open the board lock {self.path} ({e.strerror or e}): {STATE_DIR_HINT}"
            ) from e
        try:
            self._wait_for(fd)
            if not writable:
                self._fd = fd
                return
            os.ftruncate(fd, 0)
            os.pwrite(
                fd, json.dumps({"pid": os.getpid(), "command": _command_line(), "since": _now()}).encode(), 0
            )
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _wait_for(self, fd: int) -> None:
        if fcntl is None:
            return
        deadline = time.monotonic() + self.wait_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            holder = read_holder(self.path)
            who = describe_holder(holder)
            if holder.get("pid") == os.getpid():
                raise BoardBusyError(
                    f"this process already owns the board ({self.path}): power_mode()/BoardControl do not nest",
                    os.getpid(),
                )
            if time.monotonic() >= deadline:
                waited = f" after waiting {self.wait_s:g} s" if self.wait_s > 0 else ""
                raise BoardBusyError(
                    f"the board is in use by {who}{waited}: one run may own a board at a time "
                    f"(lock {self.path})",
                    holder.get("pid"),
                )
            if not told and self.log is not None:
                self.log(f"the board is in use by {who}; waiting up to {self.wait_s:g} s for it")
                told = True
            time.sleep(0.1)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # no stale PID for the next reader
        except OSError:
            pass
        finally:
            os.close(fd)  # closing drops the flock


class StateFile:
    """``<state_dir>/board-state.json``: what to put back, written before the board is touched."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, STATE_NAME)

    def exists(self) -> bool:
        return os.path.lexists(self.path)

    def write(self, state: Dict[str, Any]) -> None:
        data = dict(state, format=STATE_FORMAT)
        data.setdefault("pid", os.getpid())
        data.setdefault("command", _command_line())
        data.setdefault("started", _now())
        try:
            atomic_write_json(self.path, data)
        except OSError as e:  # recording first is the point: no record, no switch
            raise BoardStateError(f"cannot record the board state in {self.path} ({e.strerror or e})") from e

    def read(self) -> Optional[Dict[str, Any]]:
        """The recorded state, None when there is none; :class:`BoardStateError` when it is unusable."""
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.loads(f.read(1 << 16))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as e:
            raise self._corrupt(f"unreadable ({e})") from e
        if not isinstance(data, dict):
            raise self._corrupt("not a JSON object")
        orig = data.get("original_mode")
        if orig is not None and not (
            isinstance(orig, dict)
            and isinstance(orig.get("id"), int)
            and not isinstance(orig.get("id"), bool)
            and isinstance(orig.get("name"), str)
        ):
            raise self._corrupt('original_mode must be {"id": int, "name": str} or null')
        for key in ("clocks_store", "nvpmodel_conf"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise self._corrupt(f"{key} must be a path or null")
        if not isinstance(data.get("pid"), int) or isinstance(data.get("pid"), bool):
            data["pid"] = None
        return data

    def _corrupt(self, why: str) -> BoardStateError:
        return BoardStateError(
            f"the board state file {self.path} left by an earlier run is {why}: the original power mode is "
            "unknown. Set it by hand (sudo nvpmodel -m ID; sudo jetson_clocks --restore FILE if clocks were "
            "pinned), then delete the file"
        )

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
