"""Change a board's power mode and clocks for a while, and ALWAYS put them back.

    from yolo_nano.jetson import power_mode

    with power_mode("15W", jetson_clocks=True):     # nvpmodel -m 2, jetson_clocks
        run_my_robot()
    # the original mode and clocks are back: after a normal exit, an exception, or SIGINT, SIGTERM,
    # SIGHUP (an SSH session dropping) or SIGQUIT

:class:`BoardControl` is the general form (several modes in turn, as a sweep does). While one is open:

- the board lock (:mod:`.lock`) is held, so a second run waits or is refused naming this one's PID;
- the original mode and the file holding the original ``jetson_clocks`` state are recorded in the
  state file before anything is switched; a run killed by SIGKILL or a power loss leaves it behind,
  and the next ``BoardControl`` (or :func:`recover`, ``nano-bench --restore``) restores the board from
  it and says so;
- SIGINT, SIGTERM, SIGHUP and SIGQUIT raise :class:`BoardInterrupted` (a ``SystemExit`` with code
  128 + signal number): ``finally`` blocks run, the board is restored, and uncaught it ends the process
  with the status a shell reports for that signal (130, 143, 129, 131), without a traceback. Signals
  that arrive during the restore are held until it is done. Signal handlers can only be set in the main
  thread; elsewhere only exceptions are covered.

Restore order: the original power mode first (``nvpmodel -m``), then ``jetson_clocks --restore``.

Clocks within a run: :meth:`BoardControl.pin_clocks` pins (``jetson_clocks``), :meth:`~BoardControl.unpin_clocks`
undoes that by restoring the state stored before the first pin (a sweep's ``--jetson-clocks both``: off
points, then on points, in each mode). Clocks pinned BEFORE the run cannot be undone that way (the
stored state is pinned too): :meth:`~BoardControl.require_unpinned` refuses a point that must run
unpinned then, with :class:`~.clocks.ClocksPinnedError`, before anything is changed.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from yolo_nano.core.sysfs import sysfs_path

from .clocks import ClocksPinnedError, JetsonClocks
from .lock import (
    BoardBusyError,
    BoardLock,
    BoardStateError,
    StateFile,
    describe_holder,
    read_holder,
    state_dir_for,
)
from .nvpmodel import (
    DEFAULT_CONF,
    ConfError,
    NvpConf,
    NvpModel,
    NvpModelError,
    PowerMode,
    parse_conf,
    resolve_mode,
)
from .recovery import BoardRestoreError, recover, recover_if_left, recover_locked, stderr_log

#: The signals that restore the board before the process ends (those that exist on this platform).
CATCHABLE_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT") if hasattr(signal, name)
)

ModeSpec = Union[PowerMode, int, str]
Log = Callable[[str], None]


class BoardInterrupted(SystemExit):
    """A signal ended the run; the board was restored. ``code`` is 128 + ``signum`` (130 for SIGINT,
    143 SIGTERM, 129 SIGHUP, 131 SIGQUIT): uncaught, the process exits with it and no traceback."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"


def load_conf(sysfs_root: str = "/", nvpmodel_conf: Optional[str] = None) -> NvpConf:
    """The board's nvpmodel conf: ``nvpmodel_conf``, else ``<sysfs_root>/etc/nvpmodel.conf``."""
    return parse_conf(nvpmodel_conf or sysfs_path(sysfs_root, DEFAULT_CONF))


class SignalGuard:
    """While entered, the catchable signals raise :class:`BoardInterrupted`; with ``defer`` set they
    are only noted in ``deferred`` (raised later by the owner)."""

    def __init__(self) -> None:
        self.previous: Dict[int, Any] = {}
        self.deferred: List[int] = []
        self.defer = False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.defer:
            self.deferred.append(signum)
            return
        raise BoardInterrupted(signum)

    def __enter__(self) -> SignalGuard:
        for s in CATCHABLE_SIGNALS:
            with contextlib.suppress(ValueError, OSError):  # ValueError: not the main thread
                self.previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self.previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(s, h)
        self.previous = {}


class BoardControl:
    """One run's ownership of a board: switch modes and pin clocks, then restore exactly what was there.

    ``nvp``: the :class:`NvpModel` to use (default: ``nvpmodel`` on PATH with the conf from
    ``nvpmodel_conf`` or ``<sysfs_root>/etc/nvpmodel.conf`` when readable). ``clocks``: a
    :class:`JetsonClocks` when this run will pin clocks: their state is stored before its first change.
    ``lock``: take the board lock on entry (default); without it the lock is taken at the first change.
    ``wait_s``: how long to wait for another run's lock (0: refuse at once with :class:`BoardBusyError`).
    ``state_dir``: where the lock and state file live (see :func:`.lock.state_dir_for`).
    """

    def __init__(
        self,
        *,
        nvpmodel_conf: Optional[str] = None,
        sysfs_root: str = "/",
        state_dir: Optional[str] = None,
        wait_s: float = 0.0,
        lock: bool = True,
        handle_signals: bool = True,
        log: Optional[Log] = None,
        nvp: Optional[NvpModel] = None,
        clocks: Optional[JetsonClocks] = None,
        conf: Optional[NvpConf] = None,
    ) -> None:
        self.sysfs_root = sysfs_root
        self.log = log or stderr_log
        self.state_dir = state_dir_for(sysfs_root, state_dir)
        self._lock = BoardLock(self.state_dir, wait_s=wait_s, log=self.log)
        self._state = StateFile(self.state_dir)
        self._lock_on_enter = lock
        self._guard: Optional[SignalGuard] = SignalGuard() if handle_signals else None
        if conf is None and nvp is None:
            with contextlib.suppress(ConfError):
                conf = load_conf(sysfs_root, nvpmodel_conf)
        self.conf = conf if conf is not None else (nvp.conf if nvp is not None else None)
        self.nvp = nvp if nvp is not None else NvpModel(self.conf, root=sysfs_root)
        self.clocks = clocks
        self.original_mode: Optional[Tuple[int, str]] = None
        self.mode: Optional[Tuple[int, str]] = None  # the mode in force now, once queried or set
        self._record: Dict[str, Any] = {}
        self._mode_changed = False
        self._clocks_store: Optional[str] = None
        self.pinned = False  # True while clocks pinned by this run are in force
        self._closed = False

    # ------------------------------------------------------------------------------------ lifecycle

    def __enter__(self) -> BoardControl:
        if self._guard is not None:
            self._guard.__enter__()
        try:
            if self._lock_on_enter:
                self._take_lock()
            else:
                self._recover_if_free()
        except BaseException as e:
            self._release()
            if isinstance(e, BoardInterrupted):
                self.log(f"interrupted by {e.signal_name}")
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if isinstance(exc, BoardInterrupted):
            self.log(f"interrupted by {exc.signal_name}" + ("; restoring the board" if self.changed else ""))
        errors = self.close()
        if exc is not None:
            return  # the exception in flight wins; restore errors were logged
        if errors:
            raise BoardRestoreError(errors)
        if self._guard is not None and self._guard.deferred:
            deferred = BoardInterrupted(self._guard.deferred[0])
            self.log(f"interrupted by {deferred.signal_name} while restoring the board; it is restored")
            raise deferred

    def close(self) -> List[str]:
        """Restore the board, drop the lock and the signal handlers; returns what could not be restored
        (also logged as ``ERROR:`` lines). Idempotent."""
        if self._closed:
            return []
        self._closed = True
        if self._guard is not None:
            self._guard.defer = True
        try:
            errors = self.restore()
        finally:
            self._release()
        for err in errors:
            self.log("ERROR: " + err)
        return errors

    def _release(self) -> None:
        self._lock.release()
        if self._guard is not None:
            self._guard.__exit__(None, None, None)

    @property
    def changed(self) -> bool:
        """True once this run has switched the mode or stored the clocks (there is something to restore)."""
        return self._mode_changed or self._clocks_store is not None

    # ------------------------------------------------------------------------------------- the lock

    def _take_lock(self) -> None:
        if self._lock.held:
            return
        self._lock.acquire()
        recover_locked(self._state, self.log, self.sysfs_root)

    def _recover_if_free(self) -> None:
        """Without a lock to hold: restore what a killed run left, if anything, and note when another
        run owns the board now (its mode may change under this one's measurements)."""
        recover_if_left(self.sysfs_root, self.state_dir, self.log)

    # ---------------------------------------------------------------------------------- the changes

    def _save_state(self) -> None:
        self._record.update(
            sysfs_root=self.sysfs_root,
            nvpmodel_conf=self.conf.path if self.conf is not None else None,
            original_mode=(
                {"id": self.original_mode[0], "name": self.original_mode[1]} if self.original_mode else None
            ),
            mode_changed=self._mode_changed,
            clocks_store=self._clocks_store,
        )
        self._state.write(self._record)

    def query_mode(self) -> Tuple[int, str]:
        """The mode in force now ``(id, name)`` (``nvpmodel -q``)."""
        self.mode = self.nvp.query()
        return self.mode

    def set_mode(self, mode: ModeSpec) -> Tuple[int, str]:
        """Switch to ``mode`` (a :class:`PowerMode`, an ID, a name or a budget such as ``"15W"``, resolved
        in the conf) and verify it; returns the verified ``(id, name)``. The original mode (and clocks,
        see :meth:`pin_clocks`) is recorded first. Raises ``RebootRequiredError`` (nothing switched),
        ``PermissionHintError`` and ``NvpModelError``."""
        target = self.resolve(mode)
        self._begin_change(switching_mode=True)
        self.mode = self.nvp.set_mode(target.id)
        return self.mode

    def pin_clocks(self) -> None:
        """Pin the clocks at the current mode's maximum (``jetson_clocks``; run it again after each
        mode switch). The original clock state is stored before the first change this run makes, so
        pass ``clocks`` to the constructor when a mode switch comes first: stored after a switch, it
        would hold the other mode's limits."""
        if self.clocks is None:
            self.clocks = JetsonClocks()
        self._begin_change(switching_mode=False)
        self.clocks.enable()
        self.pinned = True

    def unpin_clocks(self) -> None:
        """Undo this run's :meth:`pin_clocks` by restoring the clock state stored before it (kept for the
        final restore); a no-op when this run has not pinned them. Before a mode switch, unpin first:
        the switch then writes the new mode's limits over the restored state."""
        if not self.pinned or self.clocks is None or self._clocks_store is None:
            return
        self.clocks.restore(self._clocks_store, keep=True)
        self.pinned = False
        self.log("jetson_clocks: clocks unpinned (the stored state restored)")

    def require_unpinned(self) -> None:
        """Make sure the clocks are not pinned, for a point with ``jetson_clocks`` off: unpin what this
        run pinned; raise :class:`ClocksPinnedError` (nothing changed) when they were pinned before the
        run, since only the state stored before that pinning could undo it. Where ``jetson_clocks
        --show`` cannot tell (no permission, unknown output) this is noted and the run goes on."""
        if self.pinned:
            self.unpin_clocks()
            return
        clocks = self.clocks if self.clocks is not None else JetsonClocks()
        if not clocks.available:
            return  # no jetson_clocks on this system: nothing can have pinned the clocks with it
        state = clocks.pinned()
        if state is None:
            self.log("note: `jetson_clocks --show` could not tell whether the clocks are pinned; "
                     "points with jetson_clocks off assume they are not")  # fmt: skip
        elif state:
            raise ClocksPinnedError(
                "the clocks are pinned (`jetson_clocks --show`: the GPU's minimum frequency is its maximum), "
                "so they were pinned before this run, which can only undo its own pinning; a point with "
                "jetson_clocks off would run pinned. Restore them first (sudo jetson_clocks --restore FILE "
                "with the state stored before pinning, or reboot), or use jetson_clocks on"
            )

    def _begin_change(self, switching_mode: bool) -> None:
        """Before any change: hold the lock, record the originals in the state file, store the clocks."""
        self._take_lock()
        if switching_mode and self.original_mode is None:
            self.original_mode = self.nvp.query()
        if self.clocks is not None and self._clocks_store is None:
            self._clocks_store = os.path.join(self.state_dir, f"clocks-{os.getpid()}.conf")
            self._save_state()  # names the file before it exists: a kill now leaves nothing to undo
            self.clocks.store(self._clocks_store)
        if switching_mode:
            self._mode_changed = True  # recorded before the switch: a kill mid-switch still restores
        self._save_state()

    def resolve(self, mode: ModeSpec) -> PowerMode:
        """A :class:`PowerMode` for ``mode`` (IDs without a conf get a name-less mode)."""
        if isinstance(mode, PowerMode):
            return mode
        if self.conf is None:
            if isinstance(mode, int) or (isinstance(mode, str) and mode.strip().isdigit()):
                return PowerMode(int(mode), f"ID{int(mode)}")
            raise ConfError(
                f"power mode {mode!r} needs the board's nvpmodel conf "
                f"({sysfs_path(self.sysfs_root, DEFAULT_CONF)} not found); pass nvpmodel_conf"
            )
        return resolve_mode(str(mode), self.conf)

    def restore(self) -> List[str]:
        """Put back the original mode, then the stored clocks; returns errors (empty: all restored,
        the state file removed)."""
        errors: List[str] = []
        if self._mode_changed and self.original_mode is not None:
            oid, oname = self.original_mode
            try:
                if self.nvp.query()[0] != oid:
                    self.nvp.set_mode(oid)
                self.mode = self.original_mode
                self.log(f"restored power mode {oname} (ID {oid})")
                self._mode_changed = False
            except NvpModelError as e:
                errors.append(f"could not restore power mode {oname} (ID {oid}): {e}")
        if self._clocks_store is not None and not os.path.exists(self._clocks_store):
            self._clocks_store = None  # `jetson_clocks --store` failed: the clocks were never pinned
        if self._clocks_store is not None and self.clocks is not None:
            try:
                self.clocks.restore(self._clocks_store)
                self.log("restored the jetson_clocks state")
                self._clocks_store = None
                self.pinned = False
            except NvpModelError as e:
                errors.append(f"could not restore jetson_clocks: {e}")
        if errors:
            errors.append(
                f"the original state stays recorded in {self._state.path} for the next run to restore"
            )
        elif self._lock.held:
            self._state.remove()
        return errors


@contextlib.contextmanager
def power_mode(
    mode: ModeSpec,
    nvpmodel_conf: Optional[str] = None,
    sysfs_root: str = "/",
    jetson_clocks: Optional[bool] = None,
    *,
    state_dir: Optional[str] = None,
    wait_s: float = 0.0,
    log: Optional[Log] = None,
) -> Iterator[BoardControl]:
    """Run the ``with`` body in power ``mode`` (``"15W"``, ``"MODE_30W_ALL"``, an ID or a
    :class:`PowerMode`), with clocks pinned by ``jetson_clocks`` when ``jetson_clocks`` is True, not
    pinned when it is False (clocks pinned before this call raise :class:`ClocksPinnedError`, nothing
    changed), and as they are when it is None; and restore both afterwards whatever happens.

    ``nvpmodel_conf``: the conf naming the modes (default ``<sysfs_root>/etc/nvpmodel.conf``). Raises
    ``ConfError`` (unknown or ambiguous mode), ``RebootRequiredError`` (the switch needs a reboot;
    nothing changed), ``PermissionHintError``, :class:`BoardBusyError` (another run owns the board),
    :class:`ClocksPinnedError` and :class:`BoardInterrupted` after a signal.
    """
    conf = load_conf(sysfs_root, nvpmodel_conf)
    target = resolve_mode(str(mode), conf) if not isinstance(mode, PowerMode) else mode
    clocks = JetsonClocks() if jetson_clocks else None
    with BoardControl(
        conf=conf, clocks=clocks, sysfs_root=sysfs_root, state_dir=state_dir, wait_s=wait_s, log=log
    ) as board:
        if jetson_clocks is False:
            board.require_unpinned()
        board.set_mode(target)
        if jetson_clocks:
            board.pin_clocks()
        yield board


__all__ = [
    "CATCHABLE_SIGNALS",
    "BoardBusyError",
    "BoardControl",
    "BoardInterrupted",
    "BoardRestoreError",
    "BoardStateError",
    "ClocksPinnedError",
    "SignalGuard",
    "describe_holder",
    "load_conf",
    "power_mode",
    "read_holder",
    "recover",
    "recover_if_left",
    "recover_locked",
]
