"""--plot PNGs are produced, decodable and not blank."""

from __future__ import annotations

import cv2
import numpy as np

from yolo_nano.benchmarks.plots import plot_latency_hist, plot_modes, plot_power_trace


def assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = cv2.imread(path)
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 100
    assert float(np.std(img)) > 5.0  # something was drawn


def test_three_plots(tmp_path):
    recs = [
        {
            "model": "/a/nano.onnx",
            "power_mode_name": m,
            "jetson_clocks": c,
            "fps_e2e": f,
            "fps_engine": f * 1.5,
            "ips_per_w_measured": f / w if w else None,
            "ips_per_w_nominal": f / b,
        }  # fmt: skip
        for m, c, f, w, b in [("MODE_15W", False, 26.9, 13.5, 15), ("MODE_30W_ALL", True, 48.2, None, 30)]
    ]
    recs.append(dict(recs[0], model="/a/tiny-yolov3.onnx", fps_e2e=20.0))
    p1 = plot_modes(recs, str(tmp_path / "p" / "modes.png"))
    t = np.linspace(0, 10, 100)
    p2 = plot_power_trace(
        [{"label": "nano", "t": list(t), "watts": list(12 + np.sin(t))}], str(tmp_path / "power.png")
    )
    p3 = plot_latency_hist(
        {"nano": list(np.random.default_rng(0).gamma(5, 4, 500))}, str(tmp_path / "lat.png")
    )
    p4 = plot_power_trace([], str(tmp_path / "empty.png"))
    for p in (p1, p2, p3, p4):
        assert_png(p)
