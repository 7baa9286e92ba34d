"""PNG plots of benchmark runs (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import matplotlib

from yolo_nano.core.fileio import atomic_output

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig: Any, path: str) -> str:
    """Write ``fig`` as a PNG atomically and close it (also on failure); returns ``path``."""
    try:
        with atomic_output(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return path


def _label(rec: Dict[str, Any]) -> str:
    mode = rec.get("power_mode_name") or "current mode"
    return f"{mode}{' +clocks' if rec.get('jetson_clocks') else ''}"


def plot_modes(records: Sequence[Dict[str, Any]], path: str) -> str:
    """Grouped bars: FPS (e2e, engine) and images/sec/watt (measured, nominal) per power mode and model."""
    models = sorted({os.path.basename(str(r.get("model"))) for r in records})
    modes: List[str] = []
    for r in records:
        if _label(r) not in modes:
            modes.append(_label(r))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    panels = (
        (axes[0], (("fps_e2e", "end-to-end"), ("fps_engine", "engine only")), "FPS"),
        (axes[1], (("ips_per_w_measured", "measured W"), ("ips_per_w_nominal", "nominal W")), "images/s/W"),
    )
    for ax, metrics, ylabel in panels:
        if not any(r.get(key) is not None for r in records for key, _ in metrics):
            ax.text(0.5, 0.5, "not measured here", ha="center", va="center", transform=ax.transAxes)
        n = len(models) * len(metrics)
        width = 0.8 / max(n, 1)
        k = 0
        for model in models:
            for key, what in metrics:
                ys: List[float] = []
                for mode in modes:
                    v = next(
                        (
                            r.get(key)
                            for r in records
                            if _label(r) == mode and os.path.basename(str(r.get("model"))) == model
                        ),
                        None,
                    )
                    ys.append(float(v) if v is not None else 0.0)
                xs = [i + (k - (n - 1) / 2.0) * width for i in range(len(modes))]
                ax.bar(xs, ys, width=width, label=f"{model} ({what})")
                k += 1
        ax.set_xticks(range(len(modes)))
        ax.set_xticklabels(modes, rotation=15)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("Throughput per power mode")
    axes[1].set_title("Images/sec/watt (0 = not measured)")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_power_trace(traces: Sequence[Dict[str, Any]], path: str) -> str:
    """Power (W) over the timed window, one line per run (``{"label", "t", "watts"}`` dicts)."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for tr in traces:
        ax.plot(tr["t"], tr["watts"], label=tr.get("label", ""), marker=".", markersize=3)
    ax.set_xlabel("time in timed window (s)")
    ax.set_ylabel("power (W)")
    ax.set_title("Power over the timed window")
    ax.grid(alpha=0.3)
    if traces:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "power not measured", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_latency_hist(latencies: Mapping[str, Sequence[float]], path: str, bins: Optional[int] = None) -> str:
    """Histogram of end-to-end latencies (ms) per run label."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for label, lat in latencies.items():
        if len(lat):
            ax.hist(list(lat), bins=bins or min(50, max(5, len(lat) // 5)), alpha=0.6, label=label)
    ax.set_xlabel("end-to-end latency per call (ms)")
    ax.set_ylabel("calls")
    ax.set_title("Latency histogram")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
