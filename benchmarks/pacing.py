"""Camera-paced runs: frames offered at a fixed rate on a monotonic clock, as a camera delivers them.

Frame ``k`` arrives at ``t0 + k / rate`` (an absolute schedule: a slow call never shifts later frames,
unlike sleeping a period after each call). A call processes ``batch`` frames once the last of them has
arrived. What happens to a frame that arrives while a call is still in flight is the ``late`` policy:

* ``drop`` (default, what a camera driver does when the application does not read): the frame is lost;
  the next call starts with the first frame that arrives after the call ended.
* ``queue``: it waits; calls run back to back until the backlog is gone.

Counted per run: ``frames_offered`` = ``rate x window`` (``floor(rate * duration_s)``), ``frames_done``,
``frames_dropped`` and ``frames_late``: frames whose result came after the next call's frames were due
(``end > due(last frame of the batch) + batch / rate``; for batch 1: after the next frame was due).
Latency is measured from each frame's ARRIVAL (its due time) to the end of the call that processed it,
so queueing and batching delays count. The paced window runs from the first frame's arrival to the end
of the last frame period, or to the end of the last call when that is later (a queue backlog), and the
optional monitor (e.g. :class:`~yolo_nano.jetson.power.PowerMonitor`) is started and stopped at its
edges, so the energy covers the idle time between frames: energy per frame = window energy / frames done.

    run = pace(lambda idx: detector([frames[i % n] for i in idx]), 30.0, duration_s=10, monitor=monitor)
    record.update(run.fields())

The clock is injectable (:class:`Clock`: ``now()``, ``sleep_until(t)``) so tests use :class:`ManualClock`
and get exact counts; :class:`MonotonicClock` (``time.perf_counter``, the power monitor's timebase) is
the real one. It sleeps and never spins: a spinning pacer would draw the very idle power we measure.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence

import numpy as np

LATE_POLICIES = ("drop", "queue")
DEFAULT_LATE_POLICY = "drop"

#: The latency fields of a record, as the flat-out end-to-end window names them (milliseconds).
LATENCY_FIELDS = ("latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "latency_ms_mean")


class PacingError(ValueError):
    """Bad pacing parameters (the message says which and what is allowed)."""


class Clock(Protocol):
    """Seconds on a monotonic timeline."""

    def now(self) -> float: ...

    def sleep_until(self, t: float) -> None:
        """Return at or after time ``t`` (immediately when ``t`` has passed)."""
        ...


class WindowMonitor(Protocol):
    """Something measured over exactly the paced window (a ``PowerMonitor``): ``stop()`` returns its result."""

    def start(self) -> None: ...

    def stop(self) -> Any: ...


class MonotonicClock:
    """``time.perf_counter`` (monotonic; what ``PowerMonitor`` stamps samples with); sleeps, never spins."""

    def now(self) -> float:
        return time.perf_counter()

    def sleep_until(self, t: float) -> None:
        while True:
            left = t - time.perf_counter()
            if left <= 0:
                return
            time.sleep(left)


class ManualClock:
    """A clock that moves only when told: ``sleep_until`` jumps forward, ``advance(dt)`` is work taking ``dt``.

    For tests and simulations: with a fake backend that calls ``advance(call_s)``, every count and
    latency of a paced run is exact and independent of the machine's speed.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.t = float(start)

    def now(self) -> float:
        return self.t

    def sleep_until(self, t: float) -> None:
        self.t = max(self.t, float(t))

    def advance(self, dt: float) -> None:
        if dt < 0:
            raise ValueError(f"a clock cannot go back ({dt} s)")
        self.t += dt


def latency_fields(latencies_ms: Sequence[float]) -> Dict[str, Optional[float]]:
    """``latency_ms_p50/p90/p99/mean`` of per-frame latencies in ms (numpy's linear percentiles; null if none)."""
    if not len(latencies_ms):
        return dict.fromkeys(LATENCY_FIELDS)
    a = np.asarray(latencies_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return dict(zip(LATENCY_FIELDS, (float(p50), float(p90), float(p99), float(a.mean()))))


@dataclass
class PacedRun:
    """One paced run. Times are on the run's clock (seconds); latencies in ms from frame arrival.

    ``call_starts``: when each call began; ``trace``: what the monitor's ``stop()`` returned (a
    ``PowerTrace`` over exactly [``window_start``, ``window_end``], or None).
    """

    pace_fps: float
    late_policy: str
    batch: int
    frames_offered: int
    frames_done: int
    frames_late: int
    frames_dropped: int
    window_start: float
    window_end: float
    latencies_ms: List[float] = field(default_factory=list)
    call_starts: List[float] = field(default_factory=list)
    trace: Any = None

    @property
    def calls(self) -> int:
        return len(self.call_starts)

    @property
    def window_s(self) -> float:
        return self.window_end - self.window_start

    @property
    def fps_achieved(self) -> float:
        """Frames done per second of the paced window (the pace itself when every frame was done in time)."""
        return self.frames_done / self.window_s if self.window_s > 0 else float("nan")

    @property
    def late_share(self) -> float:
        """(late + dropped) / offered: the share of frames the application did not get in time."""
        return (self.frames_late + self.frames_dropped) / self.frames_offered

    @property
    def energy_j_per_frame(self) -> Optional[float]:
        """Window energy (idle included) / frames done, from the monitor's trace; None when not measured."""
        energy = getattr(self.trace, "energy_j", None)
        if energy is None or not self.frames_done:
            return None
        return float(energy) / self.frames_done

    def fields(self) -> Dict[str, Any]:
        """The record fields of a paced run (power fields come from the trace, as for a flat-out window)."""
        out: Dict[str, Any] = {
            "pace_fps": self.pace_fps,
            "late_policy": self.late_policy,
            "frames_offered": self.frames_offered,
            "frames_done": self.frames_done,
            "frames_late": self.frames_late,
            "frames_dropped": self.frames_dropped,
            "late_share": self.late_share,
            "paced_calls": self.calls,
            "fps_e2e": self.fps_achieved,
            "frames_e2e": self.frames_done,
            "window_s_e2e": self.window_s,
        }
        out.update(latency_fields(self.latencies_ms))
        return out


def offered_frames(rate_fps: float, duration_s: float) -> int:
    """Frames a camera at ``rate_fps`` delivers in ``duration_s``: ``floor(rate x duration)`` (float-safe)."""
    return int(math.floor(rate_fps * duration_s + 1e-9))


def check_pace(rate_fps: float, late: str = DEFAULT_LATE_POLICY, batch: int = 1) -> None:
    """Raise :class:`PacingError` for a rate that is not a positive finite number, an unknown policy or batch < 1."""
    if not (isinstance(rate_fps, (int, float)) and math.isfinite(rate_fps) and rate_fps > 0):
        raise PacingError(f"--pace must be a frame rate > 0 (frames per second), got {rate_fps!r}")
    if late not in LATE_POLICIES:
        raise PacingError(f"--late must be one of {', '.join(LATE_POLICIES)}, got {late!r}")
    if not isinstance(batch, int) or batch < 1:
        raise PacingError(f"batch must be a whole number >= 1, got {batch!r}")


def pace(
    process: Callable[[List[int]], Any],
    rate_fps: float,
    *,
    duration_s: Optional[float] = None,
    frames: Optional[int] = None,
    late: str = DEFAULT_LATE_POLICY,
    batch: int = 1,
    clock: Optional[Clock] = None,
    monitor: Optional[WindowMonitor] = None,
) -> PacedRun:
    """Offer frames at ``rate_fps`` for ``duration_s`` seconds (or exactly ``frames`` frames) to ``process``.

    ``process(indices)`` handles the frames with those offered indices (0-based, increasing; ``batch``
    of them, fewer only for the last call when the offered frames run out) and returns when their
    results exist. Indices of dropped frames are never passed, so a source can serve frame ``k`` as the
    camera would have at ``k / rate``. ``monitor.start()`` is called just before the first frame arrives
    and ``monitor.stop()`` at the window's end; its result is ``PacedRun.trace``.
    """
    check_pace(rate_fps, late, batch)
    if (duration_s is None) == (frames is None):
        raise PacingError("give exactly one of duration_s (seconds) or frames (a count)")
    if frames is None:
        assert duration_s is not None
        if not (math.isfinite(duration_s) and duration_s > 0):
            raise PacingError(f"the paced window must be > 0 seconds, got {duration_s!r}")
        n = offered_frames(rate_fps, duration_s)
        if n < 1:
            raise PacingError(
                f"{duration_s:g} s at {rate_fps:g} fps offers no frame: lengthen --duration or raise --pace"
            )
    else:
        n = int(frames)
        if n < 1:
            raise PacingError(f"a paced run needs at least one frame, got frames={frames!r}")
    clock = clock if clock is not None else MonotonicClock()

    if monitor is not None:
        monitor.start()
    t0 = clock.now()

    def due(k: int) -> float:
        return t0 + k / rate_fps  # absolute: never accumulated, so no drift over any number of frames

    done = late_count = dropped = 0
    latencies: List[float] = []
    starts: List[float] = []
    busy_until = t0
    k = 0
    while k < n:
        if late == "drop":
            while k < n and due(k) < busy_until:  # arrived while the previous call was in flight
                dropped += 1
                k += 1
            if k >= n:
                break
        members = list(range(k, min(k + batch, n)))
        last = members[-1]
        clock.sleep_until(due(last))  # the batch is complete when its last frame arrives
        starts.append(clock.now())
        process(members)
        end = clock.now()
        busy_until = end
        next_due = t0 + (last + batch) / rate_fps  # when the next call's frames have all arrived
        for i in members:
            latencies.append((end - due(i)) * 1e3)
            if end > next_due:
                late_count += 1
        done += len(members)
        k = last + 1
    clock.sleep_until(due(n))  # the last frame period is part of the window (idle included)
    window_end = clock.now()
    trace = monitor.stop() if monitor is not None else None
    return PacedRun(
        pace_fps=float(rate_fps),
        late_policy=late,
        batch=batch,
        frames_offered=n,
        frames_done=done,
        frames_late=late_count,
        frames_dropped=dropped,
        window_start=t0,
        window_end=window_end,
        latencies_ms=latencies,
        call_starts=starts,
        trace=trace,
    )


__all__ = [
    "DEFAULT_LATE_POLICY",
    "LATENCY_FIELDS",
    "LATE_POLICIES",
    "Clock",
    "ManualClock",
    "MonotonicClock",
    "PacedRun",
    "PacingError",
    "WindowMonitor",
    "check_pace",
    "latency_fields",
    "offered_frames",
    "pace",
]
