"""The camera pacer with an injected clock: counts, latencies and the schedule are exact."""

from __future__ import annotations

import math

import pytest

from yolo_nano.benchmarks.pacing import (
    LATENCY_FIELDS,
    ManualClock,
    PacingError,
    latency_fields,
    offered_frames,
    pace,
)


class FakeBackend:
    """Takes ``call_s(n_frames)`` seconds of the manual clock per call; records what it was given."""

    def __init__(self, clock: ManualClock, call_s) -> None:
        self.clock = clock
        self.call_s = call_s if callable(call_s) else (lambda n, c=call_s: c)
        self.calls = []

    def __call__(self, indices):
        self.calls.append((self.clock.now(), list(indices)))
        self.clock.advance(self.call_s(len(indices)))


class CountingMonitor:
    """A window monitor stand-in that remembers when it was started and stopped on the clock."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.t0 = self.t1 = None

    def start(self):
        self.t0 = self.clock.now()

    def stop(self):
        self.t1 = self.clock.now()
        return {"window": (self.t0, self.t1)}


@pytest.mark.parametrize("late", ["drop", "queue"])
@pytest.mark.parametrize("rate,duration", [(30.0, 10.0), (29.97, 4.0), (8.0, 2.5), (15.0, 1.0)])
def test_offered_is_rate_times_window_and_a_fast_backend_is_never_late(late, rate, duration):
    clock = ManualClock(100.0)
    backend = FakeBackend(clock, 0.4 / rate)  # 40% of a frame period
    mon = CountingMonitor(clock)
    run = pace(backend, rate, duration_s=duration, late=late, clock=clock, monitor=mon)
    n = math.floor(rate * duration + 1e-9)
    assert run.frames_offered == n == offered_frames(rate, duration)
    assert run.frames_done == n and run.frames_late == 0 and run.frames_dropped == 0
    assert [i for _, idx in backend.calls for i in idx] == list(range(n))
    # the window is whole frame periods: idle after the last frame included
    assert run.window_start == 100.0 and run.window_s == pytest.approx(n / rate, abs=1e-9)
    assert mon.t0 == run.window_start and mon.t1 == run.window_end and run.trace["window"] == (mon.t0, mon.t1)
    assert run.fps_achieved == pytest.approx(rate, rel=1e-9)
    assert run.latencies_ms == pytest.approx([400.0 / rate] * n)


def test_no_drift_the_schedule_is_absolute():
    """Each call starts exactly when its frame is due, however long the calls take (within a period);
    sleeping one period after each call would have drifted by 5000 x the mean call time."""
    rate, n = 30.0, 5000
    clock = ManualClock()
    times = [0.002, 0.031, 0.017]  # varying call times, all shorter than the 33.3 ms period
    calls = {"i": 0}

    def call_s(_n):
        calls["i"] += 1
        return times[calls["i"] % 3]

    backend = FakeBackend(clock, call_s)
    run = pace(backend, rate, frames=n, clock=clock)
    starts = [t for t, _ in backend.calls]
    assert len(starts) == n
    assert max(abs(s - k / rate) for k, s in enumerate(starts)) < 1e-9
    assert run.window_end == pytest.approx(n / rate, abs=1e-9)
    assert run.frames_late == run.frames_dropped == 0


def test_drop_slower_backend_exact_counts():
    """10 fps, 250 ms calls, 10 frames: frames 0, 3, 6, 9 run (each late), the six between are dropped."""
    clock = ManualClock()
    backend = FakeBackend(clock, 0.25)
    run = pace(backend, 10.0, frames=10, late="drop", clock=clock)
    assert [idx for _, idx in backend.calls] == [[0], [3], [6], [9]]
    assert (run.frames_offered, run.frames_done, run.frames_late, run.frames_dropped) == (10, 4, 4, 6)
    assert run.latencies_ms == pytest.approx([250.0] * 4)  # each processed on arrival
    assert run.window_end == pytest.approx(0.9 + 0.25)  # the last call outlives the offering window
    assert run.late_share == pytest.approx((4 + 6) / 10)


def test_queue_slower_backend_exact_counts_and_growing_latency():
    """Queued frames wait: frame k starts at 0.25 k, ends at 0.25 (k + 1), its latency grows by 150 ms."""
    clock = ManualClock()
    backend = FakeBackend(clock, 0.25)
    run = pace(backend, 10.0, frames=10, late="queue", clock=clock)
    assert [t for t, _ in backend.calls] == pytest.approx([0.25 * k for k in range(10)])
    assert (run.frames_done, run.frames_late, run.frames_dropped) == (10, 10, 0)
    assert run.latencies_ms == pytest.approx([250.0 + 150.0 * k for k in range(10)])
    assert run.window_end == pytest.approx(2.5)


@pytest.mark.parametrize("late", ["drop", "queue"])
def test_a_call_ending_exactly_when_the_next_frame_arrives_is_on_time(late):
    clock = ManualClock()
    run = pace(FakeBackend(clock, 0.125), 8.0, frames=16, late=late, clock=clock)  # exact binary fractions
    assert (run.frames_done, run.frames_late, run.frames_dropped) == (16, 0, 0)


@pytest.mark.parametrize("call_periods", [1.5, 2.5, 3.2])
def test_drop_counts_follow_the_call_length(call_periods):
    """A call of c periods (not a whole number) blocks ceil(c) frame slots: one done, ceil(c) - 1 dropped."""
    rate, n = 16.0, 96
    clock = ManualClock()
    run = pace(FakeBackend(clock, call_periods / rate), rate, frames=n, late="drop", clock=clock)
    slots = math.ceil(call_periods)
    assert run.frames_done == math.ceil(n / slots)
    assert run.frames_late == run.frames_done
    assert run.frames_dropped == n - run.frames_done


def test_a_batch_waits_for_its_last_frame():
    """Batch 4 at 10 fps, 50 ms calls: a call starts when frame 3 arrives; latency 350, 250, 150, 50 ms."""
    clock = ManualClock()
    backend = FakeBackend(clock, 0.05)
    run = pace(backend, 10.0, frames=10, batch=4, clock=clock)
    assert [idx for _, idx in backend.calls] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # the tail is flushed
    assert [t for t, _ in backend.calls] == pytest.approx([0.3, 0.7, 0.9])
    assert (run.frames_done, run.frames_late, run.frames_dropped) == (10, 0, 0)
    assert run.latencies_ms[:4] == pytest.approx([350.0, 250.0, 150.0, 50.0])


def test_batch_drop_and_queue_differ_for_frames_arriving_in_flight():
    """8 fps, batch 4, 300 ms calls (2.4 periods, less than the 4 a batch takes to fill): never late, but
    with drop the two frames arriving during each call are lost; with queue they join the next batch."""
    clock = ManualClock()
    drop = FakeBackend(clock, 0.3)
    run = pace(drop, 8.0, frames=16, batch=4, late="drop", clock=clock)
    assert [idx for _, idx in drop.calls] == [[0, 1, 2, 3], [6, 7, 8, 9], [12, 13, 14, 15]]
    assert (run.frames_done, run.frames_late, run.frames_dropped) == (12, 0, 4)
    clock = ManualClock()
    queue = FakeBackend(clock, 0.3)
    run = pace(queue, 8.0, frames=16, batch=4, late="queue", clock=clock)
    assert [t for t, _ in queue.calls] == pytest.approx([0.375, 0.875, 1.375, 1.875])
    assert (run.frames_done, run.frames_late, run.frames_dropped) == (16, 0, 0)
    assert run.latencies_ms[:4] == pytest.approx([675.0, 550.0, 425.0, 300.0])


def test_a_batch_is_late_when_it_ends_after_the_next_batch_is_due():
    """8 fps, batch 2, 300 ms calls (2.4 periods > the 2 a batch takes): queued, every frame is late."""
    clock = ManualClock()
    run = pace(FakeBackend(clock, 0.3), 8.0, frames=8, batch=2, late="queue", clock=clock)
    assert (run.frames_done, run.frames_late, run.frames_dropped) == (8, 8, 0)
    assert run.window_end == pytest.approx(4 * 0.3 + 0.125)  # the backlog outlives the offering window


def test_latency_fields_use_the_record_names():
    f = latency_fields([10.0, 20.0, 30.0, 40.0])
    assert (
        tuple(f)
        == LATENCY_FIELDS
        == ("latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "latency_ms_mean")
    )
    assert f["latency_ms_p50"] == pytest.approx(25.0) and f["latency_ms_mean"] == pytest.approx(25.0)
    assert latency_fields([]) == dict.fromkeys(LATENCY_FIELDS)


def test_record_fields_and_energy_per_frame():
    class Trace:
        energy_j = 12.0

    clock = ManualClock()
    run = pace(FakeBackend(clock, 0.25), 10.0, frames=10, clock=clock)
    run.trace = Trace()
    f = run.fields()
    assert f["pace_fps"] == 10.0 and f["late_policy"] == "drop"
    assert (f["frames_offered"], f["frames_done"], f["frames_late"], f["frames_dropped"]) == (10, 4, 4, 6)
    assert f["fps_e2e"] == pytest.approx(4 / 1.15) and f["latency_ms_p99"] == pytest.approx(250.0)
    assert run.energy_j_per_frame == pytest.approx(12.0 / 4)  # window energy / frames done


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"duration_s": 1.0, "late": "skip"}, "--late"),
        ({"duration_s": 0.01}, "offers no frame"),
        ({"duration_s": 1.0, "frames": 3}, "exactly one"),
        ({}, "exactly one"),
        ({"frames": 0}, "at least one"),
        ({"frames": 4, "batch": 0}, "batch"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(PacingError, match=match):
        pace(lambda idx: None, 30.0, clock=ManualClock(), **kwargs)


@pytest.mark.parametrize("rate", [0, -5, float("nan"), float("inf")])
def test_bad_rate(rate):
    with pytest.raises(PacingError, match="--pace"):
        pace(lambda idx: None, rate, frames=3, clock=ManualClock())
