"""Measuring one model: warm-up, then an engine-only and an end-to-end timed window, with latency
percentiles and power over exactly each window.

Both windows run from just before their first call to just after their last; only frames inside count.
Power is sampled by a :class:`~yolo_nano.jetson.power.PowerMonitor` started and stopped at those
instants, so frames and energy cover the same interval. Paced (``pace_fps``), the end-to-end window is
a camera's instead (:func:`~.pacing.pace`): frames arrive at the rate, latency counts from arrival, and
power covers the whole window, idle time between frames included.

A failure inside the backend (ONNX Runtime raises its own exception types, TensorRT/pycuda
RuntimeError) is :class:`InferenceFailed`: one line, exit 3, instead of a traceback.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from yolo_nano.core.cli import CommandError
from yolo_nano.jetson.clocks import ClockReader, summarize_clocks
from yolo_nano.jetson.nvpmodel import PowerMode
from yolo_nano.jetson.power import PowerMonitor

from .pacing import DEFAULT_LATE_POLICY, latency_fields, pace

#: Exit status of nano-bench when the run itself failed (inference, the board, writing the results).
EXIT_RUN_FAILED = 3

#: The fields only a paced run has; null in a flat-out record.
PACED_FIELDS = ("pace_fps", "late_policy", "frames_offered", "frames_done", "frames_late", "frames_dropped",
                "late_share", "paced_calls")  # fmt: skip


class InferenceFailed(CommandError):
    """Inference raised inside the backend during a measurement (exit 3, the board restored)."""


def guard_inference(fn: Callable[..., Any], label: str, backend_name: str) -> Callable[..., Any]:
    """``fn`` with a failure inside the backend turned into :class:`InferenceFailed` naming the run; our
    own input checks (ValueError, TypeError) keep their types."""

    def call(*args: Any) -> Any:
        try:
            return fn(*args)
        except (ValueError, TypeError, CommandError):
            raise
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise InferenceFailed(
                f"inference failed on {label} ({backend_name}: {type(e).__name__}: {first}); out of memory, "
                "a GPU fault, or a model the backend cannot run",
                EXIT_RUN_FAILED,
            ) from e

    return call


def percentiles(values_ms: Sequence[float]) -> Dict[str, Optional[float]]:
    """p50/p90/p99/mean of latencies in ms (linear interpolation); all None for no values."""
    return {k[len("latency_ms_") :]: v for k, v in latency_fields(values_ms).items()}


def _progress(total_s: float, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=round(total_s, 1), desc=desc, unit="s", leave=False, disable=None, file=sys.stderr,
                bar_format="{desc}: {bar} {n:.1f}/{total:.1f} s")  # fmt: skip


def timed_loop(
    step: Callable[[], int], duration_s: float, desc: str, monitor: Optional[PowerMonitor] = None
) -> Tuple[float, int, List[float], Any]:
    """Call ``step`` (returns frames done) until ``duration_s`` has passed.

    Returns (window s, frames, per-call ms, power trace or None). The window runs from the monitor's
    start (just before the first call) to just after the last call, where the monitor is stopped: the
    frames counted and the energy integrated cover the same interval.
    """
    lat: List[float] = []
    frames = 0
    sampling = False
    bar = _progress(duration_s, desc)
    try:
        if monitor is not None:
            monitor.start()
            sampling = True
            t0 = monitor.t0
        else:
            t0 = time.perf_counter()
        last = t0
        while True:
            a = time.perf_counter()
            frames += step()
            b = time.perf_counter()
            lat.append((b - a) * 1e3)
            if b - t0 >= duration_s:
                break
            if b - last >= 0.25:
                bar.update(min(b - t0, duration_s) - bar.n)
                last = b
        trace = monitor.stop() if monitor is not None else None
        sampling = False
    finally:
        if sampling and monitor is not None:  # a failed step: stop the sampling thread too
            monitor.stop()
        bar.close()
    return b - t0, frames, lat, trace


def measure_model(
    detector: Any,
    source: Any,
    *,
    batch: int,
    duration_s: float,
    warmup_s: float,
    monitor: PowerMonitor,
    clock_reader: Optional[ClockReader],
    mode: Optional[PowerMode],
    label: str,
    pace_fps: Optional[float] = None,
    late: Optional[str] = None,
) -> Dict[str, Any]:
    """Warm up, then time engine-only and end-to-end windows; returns the metrics of one run.

    ``source.next()`` gives one HxWx3 uint8 BGR frame (``runtime.sources.LoopingFrames``). With
    ``pace_fps`` (frames/s) the end-to-end window is paced for ``duration_s`` with the ``late`` policy
    (``drop``/``queue``). The result holds the record's measurement fields plus ``_latencies_e2e``
    (ms per call, or per frame from arrival when paced) and ``_power_trace`` (``{"t": s, "watts": W}``
    when power was measured), which the caller pops for the plots.
    """
    from yolo_nano.runtime import preprocess

    backend = detector.backend
    meta = detector.metadata
    detect = guard_inference(detector, label, backend.name)
    infer = guard_inference(backend.infer, label, backend.name)

    def e2e_step(n: int = batch) -> Tuple[int, Dict[str, float]]:
        a = time.perf_counter()
        frames = [source.next() for _ in range(n)]
        b = time.perf_counter()
        dets = detect(frames)
        st = {k: v * len(dets) for k, v in dets[0].timings.items()} if dets else {}
        st["read"] = (b - a) * 1e3
        return len(dets), st

    # warm-up (not timed): DVFS settles, lazy initialisation happens, the first repetition is dropped
    t_end = time.perf_counter() + warmup_s
    e2e_step()
    while time.perf_counter() < t_end:
        e2e_step()

    # engine only: the same preprocessed batch again and again
    # (one backend call takes what the Detector would give it: a fixed-batch engine its batch, a dynamic
    # one at most its max_batch)
    per_call = int(backend.batch_size or min(batch, backend.max_batch or batch))
    imgs = [source.next() for _ in range(per_call)]
    x, _ = preprocess(imgs, meta)
    infer(x)
    el_engine, n_engine, lat_engine, tr_engine = timed_loop(
        lambda: (infer(x), per_call)[1], duration_s, f"{label} engine", monitor
    )
    clocks_engine = monitor.side_samples

    # end to end: frame in, Detections out
    stage_sum: Dict[str, float] = {}

    def step(n: int = batch) -> int:
        done, st = e2e_step(n)
        for k, v in st.items():
            stage_sum[k] = stage_sum.get(k, 0.0) + v
        return done

    paced: Dict[str, Any] = dict.fromkeys(PACED_FIELDS)
    if pace_fps is None:
        el_e2e, n_e2e, lat_e2e, tr_e2e = timed_loop(step, duration_s, f"{label} end-to-end", monitor)
    else:  # a camera: frame k arrives at k / pace_fps; the indices of dropped frames are never read
        run = pace(lambda idx: step(len(idx)), pace_fps, duration_s=duration_s,
                   late=late or DEFAULT_LATE_POLICY, batch=batch, monitor=monitor)  # fmt: skip
        paced = {k: v for k, v in run.fields().items() if k in PACED_FIELDS}
        el_e2e, n_e2e, lat_e2e, tr_e2e = run.window_s, run.frames_done, run.latencies_ms, run.trace
    clock_snaps = clocks_engine + monitor.side_samples

    pe, pg = percentiles(lat_e2e), percentiles(lat_engine)
    fps_e2e = n_e2e / el_e2e
    fps_engine = n_engine / el_engine
    res: Dict[str, Any] = {
        "backend": backend.name,
        "arch": meta.arch,
        "input_size": list(meta.input_size),
        "batch": batch,
        "frames_e2e": n_e2e,
        "frames_engine": n_engine,
        "window_s_e2e": el_e2e,
        "window_s_engine": el_engine,
        "fps_e2e": fps_e2e,
        "fps_engine": fps_engine,
        "latency_ms_p50": pe["p50"],
        "latency_ms_p90": pe["p90"],
        "latency_ms_p99": pe["p99"],
        "latency_ms_mean": pe["mean"],
        "latency_engine_ms_p50": pg["p50"],
        "latency_engine_ms_p90": pg["p90"],
        "latency_engine_ms_p99": pg["p99"],
        "stage_ms": {k: v / max(n_e2e, 1) for k, v in sorted(stage_sum.items())},
        "_latencies_e2e": lat_e2e,
    }
    res.update(paced)
    res.update(power_fields(tr_e2e, tr_engine, fps_e2e, fps_engine, n_e2e, mode))
    if pace_fps is not None:
        res["labels"].update(PACED_LABELS)
    if clock_reader is not None:
        summary = summarize_clocks(clock_snaps, mode)
        res["clocks"] = summary
        res["throttled"] = summary["throttled"]
    return res


#: What the fields of a paced record mean (added to its ``labels``).
PACED_LABELS = {
    "pace_fps": "frames offered per second, on an absolute schedule (a camera)",
    "fps_e2e": "frames done per second of the paced window (the pace when every frame was done)",
    "latency_ms_p99": "ms from a frame's arrival to its Detections (queueing and batching included)",
    "frames_late": "frames whose result came after the next call's frames were due",
    "frames_dropped": "frames that arrived while a call was in flight (late policy drop)",
    "power_w": "average power over the whole paced window, idle time between frames included",
    "energy_j_per_frame": "energy of the whole paced window / frames done (what a battery pays per frame)",
}


def power_fields(
    tr_e2e: Any, tr_engine: Any, fps_e2e: float, fps_engine: float, frames_e2e: int, mode: Optional[PowerMode]
) -> Dict[str, Any]:
    """Power, energy and images/sec/watt fields (null when not measured), each labelled."""
    budget = mode.budget_w if mode is not None else None
    out: Dict[str, Any] = {
        "power_w": None,
        "power_source": None,
        "power_scope": None,
        "power_w_engine": None,
        "energy_j": None,
        "energy_j_per_frame": None,
        "ips_per_w_measured": None,
        "ips_per_w_measured_engine": None,
        "nominal_budget_w": budget,
        "ips_per_w_nominal": fps_e2e / budget if budget else None,
        "ips_per_w_nominal_engine": fps_engine / budget if budget else None,
    }
    if tr_e2e is not None and tr_e2e.duration_s > 0:
        p = tr_e2e.avg_w
        out.update(
            power_w=p,
            energy_j=tr_e2e.energy_j,
            energy_j_per_frame=tr_e2e.energy_j / frames_e2e if frames_e2e else None,
            ips_per_w_measured=fps_e2e / p if p > 0 else None,
            power_source=tr_e2e.source,
            power_scope=tr_e2e.scope,
            power_rails_w=tr_e2e.rails_w_avg,
            power_samples=len(tr_e2e.watts),
            power_window_s=tr_e2e.duration_s,
            _power_trace={"t": tr_e2e.t, "watts": tr_e2e.watts},
        )
    if tr_engine is not None and tr_engine.duration_s > 0 and tr_engine.avg_w > 0:
        out["power_w_engine"] = tr_engine.avg_w
        out["ips_per_w_measured_engine"] = fps_engine / tr_engine.avg_w
    out["labels"] = {
        "fps_e2e": "frames per second, frame read + preprocess + inference + decode/NMS (end to end)",
        "fps_engine": "frames per second of backend.infer on a preprocessed batch (engine only)",
        "power_w": "average power over exactly the end-to-end timed window (energy / time); power_scope says "
        "what was measured (module = Jetson module rails, cpu-package = RAPL, CPU package only)",
        "ips_per_w_measured": "fps_e2e / power_w (measured)",
        "ips_per_w_nominal": "fps_e2e / the power mode's nominal budget (not measured)",
    }
    return out
