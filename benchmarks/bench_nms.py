"""numpy NMS against OpenCV's, side by side in one run (the goal: never slower than OpenCV).

    python benchmarks/bench_nms.py [--counts 10,100,1000,10647] [--classes 20] [--iou 0.45] [--json out.json]

Random boxes (10-120 px, anywhere in a 416x416 input) with random scores over ``--classes`` classes, the
shape of a conf-0.001 evaluation frame. For each candidate count, interleaved call by call (median ms):

* ``batched_nms`` uncapped and capped at 100 kept (what the Detector runs, ``max_detections``) against
  ``cv2.dnn.NMSBoxesBatched`` (OpenCV has no kept-count cap: its ``top_k`` trims the input instead);
* ``nms`` (class-agnostic) uncapped against ``cv2.dnn.NMSBoxes``.

The kept indices are compared with OpenCV's: "same" when identical, else the size of the symmetric
difference (OpenCV computes IoU in double from x, y, w, h, so a pair within float rounding of the
threshold may go the other way; our exact semantics are pinned by tests/core/test_nms.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any, Callable, Dict, List, Sequence

import cv2
import numpy as np

from yolo_nano.core.fileio import atomic_write_text
from yolo_nano.core.postprocess import batched_nms, nms


def _boxes(n: int, classes: int, rng: np.random.Generator) -> Any:
    xy = rng.uniform(0, 416, (n, 2)).astype(np.float32)
    wh = rng.uniform(10, 120, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], axis=1)
    return boxes, rng.random(n).astype(np.float32), rng.integers(0, classes, n)


def _interleaved(fns: Sequence[Callable[[], Any]], budget_s: float) -> List[float]:
    """Median ms per function, calls interleaved so load changes hit all of them alike."""
    times: List[List[float]] = [[] for _ in fns]
    for f in fns:  # warm up
        f()
    start = time.perf_counter()
    while time.perf_counter() - start < budget_s or len(times[0]) < 5:
        for k, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            times[k].append((time.perf_counter() - t0) * 1e3)
        if len(times[0]) >= 2000:
            break
    return [statistics.median(t) for t in times]


def _agreement(ours: np.ndarray, theirs: Any) -> str:
    a, b = set(np.asarray(ours).tolist()), set(np.asarray(theirs).reshape(-1).tolist())
    return "same" if a == b else f"{len(a ^ b)} differ"


def _calls(boxes: np.ndarray, scores: np.ndarray, cls: np.ndarray, iou: float) -> List[Callable[[], Any]]:
    """ours uncapped, ours capped at 100, OpenCV batched, ours class-agnostic, OpenCV class-agnostic."""
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    return [
        lambda: batched_nms(boxes, scores, cls, iou),
        lambda: batched_nms(boxes, scores, cls, iou, max_output=100),
        lambda: cv2.dnn.NMSBoxesBatched(xywh, scores, cls, 0.0, iou),
        lambda: nms(boxes, scores, iou),
        lambda: cv2.dnn.NMSBoxes(xywh, scores, 0.0, iou),
    ]


def run(counts: Sequence[int], classes: int, iou: float, budget_s: float) -> List[Dict[str, Any]]:
    rng = np.random.default_rng(0)
    rows = []
    for n in counts:
        fns = _calls(*_boxes(n, classes, rng), iou)
        t = _interleaved(fns, budget_s)
        rows.append(
            {
                "candidates": n,
                "batched_ms": t[0],
                "batched_capped_ms": t[1],
                "cv2_batched_ms": t[2],
                "nms_ms": t[3],
                "cv2_nms_ms": t[4],
                "batched_vs_cv2": _agreement(fns[0](), fns[2]()),
                "nms_vs_cv2": _agreement(fns[3](), fns[4]()),
            }
        )
    return rows


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", default="10,30,100,300,1000,3000,10647")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--iou", type=float, default=0.45)
    ap.add_argument("--budget", type=float, default=1.0, help="seconds of timing per candidate count")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    rows = run(counts, args.classes, args.iou, args.budget)
    print(
        f"NMS, random boxes over {args.classes} classes, IoU {args.iou}; median ms "
        f"(numpy {np.__version__}, OpenCV {cv2.__version__}, {platform.processor() or platform.machine()})"
    )
    head = (
        f"{'candidates':>10} | {'batched_nms':>11} {'capped 100':>10} {'cv2 Batched':>11} {'kept':>9} | "
        f"{'nms':>9} {'cv2 NMSBoxes':>12} {'kept':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['candidates']:>10} | {r['batched_ms']:>11.3f} {r['batched_capped_ms']:>10.3f} "
            f"{r['cv2_batched_ms']:>11.3f} {r['batched_vs_cv2']:>9} | {r['nms_ms']:>9.3f} "
            f"{r['cv2_nms_ms']:>12.3f} {r['nms_vs_cv2']:>9}"
        )
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
