#!/usr/bin/env python3
"""Search the PEP/EP expansion ratios (one per output stride) of YOLO Nano.

Goal: at 416x416 and 20 classes, 4.0 M conv+linear weights and 4.57 B FLOPs together (the paper's numbers).
A block's expanded width only changes that block's own layers, so weights and FLOPs are exactly additive
over strides: total(r) = total(1) + sum_s [total(r_s at stride s, 1 elsewhere) - total(1)]. We measure
each stride's contribution once per candidate ratio (real model builds, real counts), then scan the grid.
Among the candidates within tolerance we prefer ratios that do not shrink with depth (expanding more at
low resolution, where it is cheap in FLOPs), then the smallest combined error.

    .venv/bin/python scripts/search_widths.py [--top 5]

Prints the best plans; the chosen one goes into ``EXPANSION`` in model/network.py.
"""

from __future__ import annotations

import argparse

import numpy as np

from yolo_nano.model.flops import count_model
from yolo_nano.model.network import EXPANSION, YoloNano

TARGET_WEIGHTS = 4.0e6
TARGET_FLOPS = 4.57e9
STRIDES = (2, 4, 8, 16, 32)
GRID = [1.0 + 0.125 * i for i in range(25)]  # 1.0 .. 4.0: an expansion never narrows


def measure(plan: dict) -> tuple:
    c = count_model(YoloNano(20, 416, expansion=plan), 416)
    return c.weights, c.flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    ones = {s: 1.0 for s in STRIDES}
    base_w, base_f = measure(ones)
    contrib = {}
    for s in STRIDES:
        for r in GRID:
            w, f = measure({**ones, s: r})
            contrib[s, r] = (w - base_w, f - base_f)
    # Vectorised scan of the whole grid: one axis per stride.
    grids_w = np.meshgrid(*[np.array([contrib[s, r][0] for r in GRID]) for s in STRIDES], indexing="ij")
    grids_f = np.meshgrid(*[np.array([contrib[s, r][1] for r in GRID]) for s in STRIDES], indexing="ij")
    w_all = base_w + sum(grids_w)
    f_all = base_f + sum(grids_f)
    err = np.abs(w_all / TARGET_WEIGHTS - 1) + np.abs(f_all / TARGET_FLOPS - 1)
    idx = np.stack(np.meshgrid(*[np.arange(len(GRID))] * len(STRIDES), indexing="ij"), -1)
    monotone = np.all(np.diff(idx, axis=-1) >= 0, axis=-1)
    order = np.lexsort((err.ravel(), ~monotone.ravel()))[: args.top]
    results = []
    for flat in order:
        i = np.unravel_index(flat, err.shape)
        combo = tuple(GRID[k] for k in i)
        w, f = float(w_all[i]), float(f_all[i])
        results.append((combo, w, f, w / TARGET_WEIGHTS - 1, f / TARGET_FLOPS - 1))
    print(f"ratio 1 everywhere: {base_w / 1e6:.3f} M weights, {base_f / 1e9:.3f} B FLOPs")
    print("stride ratios (2, 4, 8, 16, 32) | weights | FLOPs | error w / f")
    for combo, w, f, ew, ef in results:
        print(f"{combo} | {w / 1e6:.3f} M | {f / 1e9:.3f} B | {ew:+.2%} / {ef:+.2%}")
    chosen = tuple(EXPANSION[s] for s in STRIDES)
    w, f = measure(EXPANSION)
    print(f"in model/network.py now: {chosen} | {w / 1e6:.3f} M | {f / 1e9:.3f} B (measured)")


if __name__ == "__main__":
    main()
