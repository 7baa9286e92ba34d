"""``pareto.png``: energy per frame against speed for every point of a sweep, with the Pareto front.

One panel per kind of run in the records: flat out (J/frame against achieved FPS: right and down is
better) and paced at each rate (J/frame against p99 latency from frame arrival: left and down is
better; at a fixed camera rate achieved FPS is the pace for every point that keeps up). Where a panel's
records have no energy (a host without RAPL), it says so and plots what the choice then decides on:
flat out, achieved FPS against p99 latency; paced, the late + dropped share of frames offered against
p99 (achieved FPS of the points that keep up differs only by timer noise there, which would make a
noise front). Every point is labelled; the front (the points no other point beats on both axes) is drawn as a line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import matplotlib

from .plots import save_figure
from .results import finite_number
from .sweep import point_label

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PARETO_FILE = "pareto.png"


def pareto_front(
    points: Sequence[Tuple[float, float]], minimize_x: bool, minimize_y: bool = True
) -> List[int]:
    """Indices of the points no other point dominates, sorted by x (ascending).

    A point dominates another when it is at least as good on both axes and better on one; equal points
    do not dominate each other, so both stay on the front.
    """

    def better_eq(a: float, b: float, minimize: bool) -> bool:
        return a <= b if minimize else a >= b

    front = []
    for i, (xi, yi) in enumerate(points):
        dominated = any(
            better_eq(xj, xi, minimize_x) and better_eq(yj, yi, minimize_y) and (xj, yj) != (xi, yi)
            for j, (xj, yj) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], points[i][1]))


def _num(record: Dict[str, Any], key: str) -> Optional[float]:
    return finite_number(record.get(key))


@dataclass
class Panel:
    """What one panel plots: axes keys, which way is better, the records with both values, and a title."""

    title: str
    x_key: str
    y_key: str
    minimize_x: bool
    minimize_y: bool
    records: List[Dict[str, Any]]
    left_out: int

    def points(self) -> List[Tuple[float, float]]:
        return [(float(r[self.x_key]), float(r[self.y_key])) for r in self.records]

    def front(self) -> List[int]:
        return pareto_front(self.points(), self.minimize_x, self.minimize_y)


AXIS_LABELS = {
    "fps_e2e": "achieved FPS (end to end)",
    "latency_ms_p99": "p99 latency (ms; paced: from frame arrival)",
    "energy_j_per_frame": "energy per frame (J, idle included when paced)",
    "late_share": "late + dropped share of frames offered",
}


def panels(records: Sequence[Dict[str, Any]]) -> List[Panel]:
    """The panels for ``records``: flat out first, then each pace rate ascending."""
    groups: Dict[Optional[float], List[Dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(_num(r, "pace_fps"), []).append(r)
    out: List[Panel] = []
    for pace in sorted(groups, key=lambda p: (p is not None, p or 0.0)):
        rs = groups[pace]
        with_energy = any(_num(r, "energy_j_per_frame") is not None for r in rs)
        what = "flat out" if pace is None else f"paced at {pace:g} fps"
        if with_energy:
            x_key, min_x = ("fps_e2e", False) if pace is None else ("latency_ms_p99", True)
            y_key, min_y, title = "energy_j_per_frame", True, f"{what}: energy per frame"
        elif pace is None:
            x_key, min_x, y_key, min_y = "latency_ms_p99", True, "fps_e2e", False
            title = f"{what}: energy not measured, FPS against p99"
        else:
            x_key, min_x, y_key, min_y = "latency_ms_p99", True, "late_share", True
            title = f"{what}: energy not measured, late + dropped share against p99"
        keep = [r for r in rs if _num(r, x_key) is not None and _num(r, y_key) is not None]
        out.append(Panel(title, x_key, y_key, min_x, min_y, keep, len(rs) - len(keep)))
    return out


def label_offsets(points: Sequence[Tuple[float, float]]) -> List[Tuple[int, int, str]]:
    """(dx, dy, alignment) of each point's label in offset points, keeping labels of nearby points apart:
    left to right, a label whose point is within a quarter of the x range and 4% of the y range of an
    already labelled one moves to the next free row (above, below, further above...); labels of points
    in the right fifth go to their left so they stay inside the figure."""
    if not points:
        return []
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    xr, yr = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    rows = (4, -12, 16, -24, 28, -36)
    placed: List[Tuple[float, float, int]] = []  # normalised x, y and the row used
    out: List[Tuple[int, int, str]] = [(4, 4, "left")] * len(points)
    for i in sorted(range(len(points)), key=lambda i: points[i]):
        x, y = (points[i][0] - min(xs)) / xr, (points[i][1] - min(ys)) / yr
        taken = {row for px, py, row in placed if abs(px - x) < 0.25 and abs(py - y) < 0.04}
        row = next((r for r in range(len(rows)) if r not in taken), 0)
        placed.append((x, y, row))
        out[i] = (-4, rows[row], "right") if x > 0.8 else (4, rows[row], "left")
    return out


def plot_pareto(records: Sequence[Dict[str, Any]], path: str) -> str:
    """Write the Pareto plot of ``records`` (result records) to ``path`` atomically; returns ``path``."""
    ps = panels(records) or [Panel("no records", "fps_e2e", "energy_j_per_frame", False, True, [], 0)]
    fig, axes = plt.subplots(1, len(ps), figsize=(7.5 * len(ps), 5.5), squeeze=False)
    for ax, panel in zip(axes[0], ps):
        pts = panel.points()
        front = panel.front()
        if pts:
            xs, ys = zip(*pts)
            ax.scatter(xs, ys, s=28, color="tab:gray", zorder=2, label="measured point")
            fx, fy = [pts[i][0] for i in front], [pts[i][1] for i in front]
            ax.plot(fx, fy, "-o", color="tab:red", lw=1.8, ms=6, zorder=3, label="Pareto front")
            offsets = label_offsets(pts)
            for i, r in enumerate(panel.records):
                dx, dy, align = offsets[i]
                ax.annotate(point_label(r, with_pace=False), pts[i], xytext=(dx, dy), textcoords="offset points",
                            ha=align, fontsize=7, color="tab:red" if i in front else "black")  # fmt: skip
            ax.legend(fontsize=8, loc="best")
        else:
            ax.text(0.5, 0.5, "nothing to plot", ha="center", va="center", transform=ax.transAxes)
        better = (
            ("lower" if panel.minimize_x else "higher")
            + " x, "
            + ("lower" if panel.minimize_y else "higher")
            + " y"
        )
        note = f"; {panel.left_out} point(s) without these values left out" if panel.left_out else ""
        ax.set_title(f"{panel.title}\n(better: {better}{note})", fontsize=10)
        ax.set_xlabel(AXIS_LABELS.get(panel.x_key, panel.x_key))
        ax.set_ylabel(AXIS_LABELS.get(panel.y_key, panel.y_key))
        ax.grid(alpha=0.3)
        ax.margins(0.15)
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = ["PARETO_FILE", "Panel", "panels", "pareto_front", "plot_pareto"]
