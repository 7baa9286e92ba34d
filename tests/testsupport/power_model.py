"""A load- and mode-dependent power model of the fake AGX Xavier (``testsupport.power_model``).

A thread writes the six INA3221 rails (through :class:`testsupport.board.SysfsBoard`, either layout) from

* the current power mode: the fake ``nvpmodel``'s state file (``FakeBoard.nvp_state``),
* whether clocks are pinned: the fake ``jetson_clocks``'s state file (``on``/``off``),
* whether a frame is in flight: :meth:`XavierPowerModel.in_flight`, which the fake backend wraps its call in,

so the energy of a paced run is known in advance: with a pace of ``rate`` and a call of ``call_s`` that
keeps up, J/frame = ``idle_w / rate + (busy_w - idle_w) * call_s`` (:func:`expected_j_per_frame`).
``time_scale`` plays the board in slow motion (calls ``time_scale`` times longer; pace at ``rate /
time_scale``; every J/frame ``time_scale`` times the real one), so that file writes and thread wake-ups of
a busy test machine are small against a frame. The
thread wakes the moment the in-flight flag changes and otherwise every ``step`` seconds (to see mode and
clock switches). Each write is stamped in a ledger, so :meth:`XavierPowerModel.energy_j` gives the exact
integral of what the sensors showed over any window.

The table is made up but shaped like the board: a faster mode draws more both idle and busy, and pinned
clocks raise the idle floor (DVFS cannot drop) while shortening the call a little. With these numbers
MAXN has the best flat-out images/s/W and MODE_15W the cheapest frames at a 30 Hz camera.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

from testsupport.board import XAVIER_RAILS, SysfsBoard


@dataclass(frozen=True)
class ModePower:
    """Module power of one mode (W): idle (between frames) and busy (a frame in flight), and the fake
    backend's call time (s) in that mode; ``pinned_*``: the same with jetson_clocks on."""

    idle_w: float
    busy_w: float
    call_s: float
    pinned_idle_w: float
    pinned_busy_w: float
    pinned_call_s: float

    def figures(self, pinned: bool) -> Tuple[float, float, float]:
        """(idle W, busy W, call s) with or without pinned clocks."""
        if pinned:
            return self.pinned_idle_w, self.pinned_busy_w, self.pinned_call_s
        return self.idle_w, self.busy_w, self.call_s


#: Mode ID of tests/testsupport/fixtures/nvpmodel_agx_xavier.conf -> power and speed.
XAVIER_POWER: Dict[int, ModePower] = {
    0: ModePower(9.0, 31.0, 0.010, 14.0, 32.0, 0.009),  # MAXN
    1: ModePower(3.0, 8.5, 0.045, 4.5, 9.0, 0.040),  # MODE_10W: too slow for 30 Hz
    2: ModePower(4.0, 14.0, 0.025, 6.0, 14.5, 0.022),  # MODE_15W
    3: ModePower(6.0, 23.0, 0.014, 9.5, 24.0, 0.0125),  # MODE_30W_ALL
}

# How idle and the load's extra power split over the rails (each sums to 1; AGX Xavier: module = sum).
IDLE_SHARE = {"GPU": 0.15, "CPU": 0.20, "SOC": 0.25, "CV": 0.05, "VDDRQ": 0.15, "SYS5V": 0.20}
LOAD_SHARE = {"GPU": 0.60, "CPU": 0.15, "SOC": 0.10, "CV": 0.0, "VDDRQ": 0.15, "SYS5V": 0.0}


def expected_j_per_frame(mode: ModePower, pinned: bool, rate_fps: float, time_scale: float = 1.0) -> float:
    """J/frame of a paced run at ``rate_fps`` that keeps up: a frame period of idle plus the load's extra
    for one call of ``call_s x time_scale`` seconds."""
    idle, busy, call = mode.figures(pinned)
    return idle / rate_fps + (busy - idle) * call * time_scale


def rails(total_idle_w: float, extra_w: float) -> Dict[str, float]:
    """Per-rail watts for a module total of ``total_idle_w + extra_w``."""
    return {n: total_idle_w * IDLE_SHARE[n] + extra_w * LOAD_SHARE[n] for n in IDLE_SHARE}


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


class XavierPowerModel:
    """The writer thread. ``start()``/``stop()`` (or ``with``); the fake backend calls ``with model.in_flight():``."""

    def __init__(
        self,
        sysfs: SysfsBoard,
        nvp_state: str,
        clk_state: str,
        table: Optional[Dict[int, ModePower]] = None,
        step: float = 0.005,
        time_scale: float = 1.0,
    ) -> None:
        if sorted(sysfs.paths) != sorted(n for ns in XAVIER_RAILS.values() for n in ns):
            raise ValueError(
                "the power model writes the six AGX Xavier rails: build SysfsBoard with XAVIER_RAILS"
            )
        self.sysfs = sysfs
        self.nvp_state = nvp_state
        self.clk_state = clk_state
        self.table = table or XAVIER_POWER
        self.step = step
        self.time_scale = time_scale
        self._written: Dict[str, float] = {}
        self._last_state: Tuple[int, bool] = (0, False)
        self._busy = False
        self._cond = threading.Condition()
        self._stop = False
        self._thread: Optional[threading.Thread] = None
        self.ledger: List[Tuple[float, float]] = []  # (time the values became visible, module W)

    def state(self) -> Tuple[ModePower, bool]:
        """The current mode's figures and whether clocks are pinned, from the fake tools' state files
        (which they rewrite in place: a half-written file keeps the last state seen)."""
        mode_text, clk_text = _read(self.nvp_state), _read(self.clk_state)
        mode_id, pinned = self._last_state
        if mode_text and mode_text.isdigit() and int(mode_text) in self.table:
            mode_id = int(mode_text)
        if clk_text in ("on", "off"):
            pinned = clk_text == "on"
        self._last_state = (mode_id, pinned)
        return self.table[mode_id], pinned

    def call_s(self) -> float:
        """How long the fake backend's call takes in the current mode (times ``time_scale``)."""
        mode, pinned = self.state()
        return mode.figures(pinned)[2] * self.time_scale

    def watts(self, busy: bool) -> Dict[str, float]:
        mode, pinned = self.state()
        idle, load, _ = mode.figures(pinned)
        return rails(idle, (load - idle) if busy else 0.0)

    def _write(self) -> None:
        with self._cond:
            busy = self._busy
        w = self.watts(busy)
        changed = {
            n: v for n, v in w.items() if self._written.get(n) != v
        }  # fewer file writes, sharper edges
        a = time.perf_counter()
        self.sysfs.set(changed)
        b = time.perf_counter()
        self._written.update(changed)
        self.ledger.append(((a + b) / 2.0, sum(w.values())))

    def _loop(self) -> None:
        seen = None
        while True:
            with self._cond:
                if self._stop:
                    return
                if seen == self._busy:
                    self._cond.wait(self.step)
                if self._stop:
                    return
                seen = self._busy
            self._write()

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        """A frame is being processed while the block runs (the writer is woken at both edges)."""
        with self._cond:
            self._busy = True
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def start(self) -> XavierPowerModel:
        self._write()
        self._thread = threading.Thread(target=self._loop, name="fake-xavier-power", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> XavierPowerModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def energy_j(self, t0: float, t1: float) -> float:
        """Exact energy (J) of the written values over [t0, t1] (perf_counter seconds): a step function."""
        pts = sorted(self.ledger)
        total = 0.0
        for i, (t, w) in enumerate(pts):
            end = pts[i + 1][0] if i + 1 < len(pts) else t1
            a, b = max(t, t0), min(end, t1)
            if b > a:
                total += w * (b - a)
        return total
