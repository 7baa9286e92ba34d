"""pareto.png: the front is computed right and the plot is written (decodable, not blank)."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from yolo_nano.benchmarks.pareto import panels, pareto_front, plot_pareto


def assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = cv2.imread(path)
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 300
    assert float(np.std(img)) > 5.0  # something was drawn
    return img


def test_front_maximising_fps_and_minimising_energy():
    pts = [(100.0, 0.31), (40.0, 0.35), (71.0, 0.32), (50.0, 0.25), (50.0, 0.25), (30.0, 0.40)]
    # (40, .35), (71, .32) and (30, .40) are beaten by (100, .31); the duplicate (50, .25) stays twice
    assert pareto_front(pts, minimize_x=False) == [3, 4, 0]


def test_front_minimising_latency_and_energy():
    pts = [(27.5, 0.383), (16.0, 0.438), (12.0, 0.520), (11.0, 0.629), (30.0, 0.390), (12.0, 0.700)]
    assert pareto_front(pts, minimize_x=True) == [3, 2, 1, 0]
    assert pareto_front([], minimize_x=True) == []


def test_front_matches_brute_force_on_random_points():
    rng = np.random.default_rng(3)
    pts = [tuple(map(float, p)) for p in rng.integers(0, 12, size=(60, 2))]
    front = set(pareto_front(pts, minimize_x=False))
    for i, (x, y) in enumerate(pts):
        beaten = any(x2 >= x and y2 <= y and (x2, y2) != (x, y) for x2, y2 in pts)
        assert (i in front) == (not beaten)


def sweep():
    def r(mode, clocks, pace, fps, p99, energy, batch=1):
        return {"model": "/m/nano-fp16.engine", "power_mode_name": mode, "jetson_clocks": clocks, "batch": batch,
                "pace_fps": pace, "fps_e2e": fps, "latency_ms_p99": p99, "energy_j_per_frame": energy}  # fmt: skip

    return [
        r("MAXN", False, None, 100.0, 11.0, 0.31),
        r("MAXN", True, None, 111.0, 10.0, 0.29),
        r("MODE_15W", False, None, 40.0, 26.0, 0.35),
        r("MODE_30W_ALL", False, None, 71.0, 15.0, 0.32),
        r("MAXN", False, 30.0, 30.0, 12.0, 0.520),
        r("MAXN", True, 30.0, 30.0, 11.0, 0.629),
        r("MODE_30W_ALL", False, 30.0, 30.0, 16.0, 0.438),
        r("MODE_15W", False, 30.0, 30.0, 27.5, 0.383),
        r("MODE_15W", False, 30.0, 30.0, 45.0, 0.300, batch=2),
        r("MODE_10W", False, 30.0, 15.0, 47.0, None),  # no energy: left out of the panel
    ]


def test_panels_split_flat_out_and_paced(tmp_path):
    ps = panels(sweep())
    assert [p.title for p in ps] == ["flat out: energy per frame", "paced at 30 fps: energy per frame"]
    flat, paced = ps
    assert (flat.x_key, flat.minimize_x) == ("fps_e2e", False) and len(flat.records) == 4
    assert [flat.records[i]["fps_e2e"] for i in flat.front()] == [111.0]  # pinned MAXN beats all flat out
    assert (paced.x_key, paced.minimize_x) == ("latency_ms_p99", True) and paced.left_out == 1
    front = [(paced.records[i]["power_mode_name"], paced.records[i]["batch"]) for i in paced.front()]
    assert front == [("MAXN", 1), ("MAXN", 1), ("MODE_30W_ALL", 1), ("MODE_15W", 1), ("MODE_15W", 2)]


def test_without_energy_it_plots_fps_against_latency():
    recs = [{"model": "nano.onnx", "precision": p, "threads": t, "batch": 1, "pace_fps": None, "fps_e2e": f,
             "latency_ms_p99": p99, "energy_j_per_frame": None}
            for p, t, f, p99 in [("fp32", 1, 20.0, 60.0), ("fp32", 2, 34.0, 35.0), ("int8-qdq", 2, 52.0, 22.0)]]  # fmt: skip
    (panel,) = panels(recs)
    assert "energy not measured" in panel.title and (panel.x_key, panel.y_key) == (
        "latency_ms_p99",
        "fps_e2e",
    )
    assert [panel.records[i]["fps_e2e"] for i in panel.front()] == [52.0]


def test_paced_without_energy_plots_the_late_share_not_timer_noise():
    """Paced points that keep up all reach the pace; their FPS differ in the 5th digit only. The panel
    ranks them by the late + dropped share instead, so the fastest-latency point alone is the front."""
    recs = [{"model": "nano.onnx", "precision": p, "threads": 1, "batch": 1, "pace_fps": 5.0, "fps_e2e": f,
             "latency_ms_p99": p99, "late_share": late, "energy_j_per_frame": None}
            for p, f, p99, late in [("fp32", 5.00002, 160.0, 0.0), ("int8-qdq", 4.99998, 68.0, 0.0),
                                    ("fp32", 4.9, 170.0, 0.04)]]  # fmt: skip
    (panel,) = panels(recs)
    assert "late + dropped share" in panel.title and panel.y_key == "late_share" and panel.minimize_y
    assert [panel.records[i]["precision"] for i in panel.front()] == ["int8-qdq"]


@pytest.mark.parametrize("which", ["sweep", "empty"])
def test_png_is_written_atomically(tmp_path, which):
    path = str(tmp_path / "out" / "pareto.png")
    assert plot_pareto(sweep() if which == "sweep" else [], path) == path
    img = assert_png(path)
    if which == "sweep":
        assert img.shape[1] > img.shape[0]  # two panels side by side
    assert os.listdir(tmp_path / "out") == ["pareto.png"]  # no temp file left behind
