"""Self-test: two seconds of power sampling through :mod:`yolo_nano.jetson.power` (the INA3221 rails,
else jtop, else RAPL): average watts per rail and in total, integrated over exactly the window."""

from __future__ import annotations

import time

from yolo_nano.jetson.power import PowerMonitor, find_power_source

from ..result import Check, Context, check, failed, not_here, ok, skipped

NAME = "power sampling"
SECONDS = 2.0


@check(NAME)
def power_sampling(ctx: Context, seconds: float = SECONDS) -> Check:
    if ctx.options.quick:
        return skipped(NAME)
    source, why = find_power_source(ctx.root)
    if source is None:
        if ctx.on_jetson:
            return failed(NAME, why, "see the INA3221 rails and jtop lines above")
        return not_here(NAME, f"not on a Jetson ({why})")
    monitor = PowerMonitor(source, interval_s=0.1)
    try:
        monitor.start()
        time.sleep(seconds)
        trace = monitor.stop()
    finally:
        source.close()
    if trace is None:
        return failed(NAME, f"{source.describe()}: fewer than two readings in {seconds:g} s",
                      "the sensors stopped answering: attach the report")  # fmt: skip
    rails = ", ".join(f"{k} {v:.2f} W" for k, v in trace.rails_w_avg.items())
    detail = (
        f"{source.describe()}, {len(trace.t)} samples over {trace.duration_s:.1f} s: {rails}; "
        f"total {trace.avg_w:.2f} W"
    )
    return ok(NAME, detail, source=source.name, scope=trace.scope, samples=len(trace.t),
              seconds=round(trace.duration_s, 3), total_w=round(trace.avg_w, 4),
              rails_w={k: round(v, 4) for k, v in trace.rails_w_avg.items()})  # fmt: skip
