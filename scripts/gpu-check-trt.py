#!/usr/bin/env python3
"""TensorRT on a real GPU: nano-build makes FP32, FP16 and INT8 engines of a small detector and each runs
through the Detector, compared with the same ONNX model in ONNX Runtime.

    scripts/gpu-check-trt.py [OUT_DIR]        (default OUT_DIR: build/gpu-check)

The model is the tests' "square detector" (tests/testsupport/square_model.py: a bright red or blue
square covering one 32- or 16-pixel cell decodes to exactly that cell), so the right answer is known.
Builds: fp32, fp16, int8 calibrated from 48 generated images (weakly typed on 8.x/10.x, from a derived
Q/DQ model on 11.x); on 10.x also fp16 and int8 ``--strongly-typed``; with DLA cores also fp16 and int8
``--dla 0 --gpu-fallback``. Each engine's detections must match ONNX Runtime's (same classes, box IoU
>= 0.9, score within 0.05 for fp32/fp16 and 0.15 for int8); the mean Detector latency is reported.

Writes OUT_DIR/trt.txt and OUT_DIR/trt.json. Exit 0 when every engine agrees, or when TensorRT, pycuda
or a GPU is not available here (one "SKIPPED" line says which); 1 when an engine disagrees or a build
fails; 2 when yolo_nano cannot be imported (install the checkout: ``pip install -e .``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings
from typing import Any, Dict, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # testsupport: the square detector

try:
    import numpy as np

    from yolo_nano.engines.builder import build_engine
    from yolo_nano.engines.device import TensorRTUnavailable, import_tensorrt, query_gpu
    from yolo_nano.engines.plan import BuildError, BuildRequest, prepare
    from yolo_nano.runtime import Detector
except ImportError as e:
    print(
        f"gpu-check-trt: cannot import yolo_nano ({e}); install the checkout: pip install -e .",
        file=sys.stderr,
    )
    sys.exit(2)

RED, BLUE = (0, 0, 255), (255, 0, 0)


def _available() -> Tuple[bool, str]:
    try:
        trt = import_tensorrt()
        gpu = query_gpu()
        import pycuda.driver  # noqa: F401 - the Detector's TensorRT backend needs it
    except (TensorRTUnavailable, ImportError, RuntimeError) as e:
        return False, str(e).split("\n")[0]
    return True, f"TensorRT {trt.__version__} on {gpu.name} (sm {gpu.compute_capability})"


def _images(folder: str, n: int, seed: int) -> List[str]:
    import cv2

    from testsupport.square_model import square_image

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(n):
        cell = 32 if i % 2 else 16
        x, y = (int(v) * cell for v in rng.integers(0, 64 // cell, 2))
        img = square_image((64, 64), [(x, y, cell, RED if rng.random() < 0.5 else BLUE)], seed=i)
        paths.append(os.path.join(folder, f"sq_{i:03d}.png"))
        cv2.imwrite(paths[-1], img)
    return paths


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _compare(ref: Any, got: Any, score_tol: float) -> str:
    """'' when ``got`` matches ``ref`` (Detections), else why not."""
    if len(got) != len(ref):
        return f"{len(got)} detections, ONNX Runtime {len(ref)}"
    for i in range(len(ref)):
        if int(got.class_ids[i]) != int(ref.class_ids[i]):
            return f"class {got.class_ids[i]} != {ref.class_ids[i]}"
        if _iou(got.boxes[i], ref.boxes[i]) < 0.9:
            return f"box {got.boxes[i].tolist()} vs {ref.boxes[i].tolist()}"
        if abs(float(got.scores[i]) - float(ref.scores[i])) > score_tol:
            return f"score {got.scores[i]:.3f} vs {ref.scores[i]:.3f}"
    return ""


def main(argv: List[str]) -> int:
    out_dir = argv[0] if argv else os.path.join(ROOT, "build", "gpu-check")
    ok, what = _available()
    if not ok:
        print(f"gpu-check-trt: SKIPPED: TensorRT engines cannot be built here: {what}")
        return 0
    import cv2

    from testsupport.square_model import build_square_model
    from yolo_nano.engines.trt_versions import check_version

    trt = import_tensorrt()
    api = check_version(str(trt.__version__))
    print(f"gpu-check-trt: {what}")
    work = tempfile.mkdtemp(prefix="gpu-check-trt-")
    from pathlib import Path

    onnx_path = str(build_square_model(Path(work) / "square.onnx", batch=1))
    calib = os.path.join(work, "calib")
    _images(calib, 48, seed=1)
    tests = _images(os.path.join(work, "test"), 8, seed=2)
    variants: List[Tuple[str, Dict[str, Any]]] = [
        ("fp32", {}),
        ("fp16", {}),
        ("int8", {"calib_images": calib}),
    ]
    if api.major == 10:
        variants += [
            ("fp16", {"strongly_typed": True}),
            ("int8", {"calib_images": calib, "strongly_typed": True}),
        ]
    dla_cores = int(trt.Builder(trt.Logger(trt.Logger.ERROR)).num_DLA_cores)
    if dla_cores:
        variants += [("fp16", {"dla": 0, "gpu_fallback": True}),
                     ("int8", {"calib_images": calib, "dla": 0, "gpu_fallback": True})]  # fmt: skip
    reference = Detector(onnx_path, backend="onnxruntime-cpu", conf_threshold=0.3)
    images = [cv2.imread(p) for p in tests]
    expected = [reference(img) for img in images]
    rows: List[Dict[str, Any]] = []
    failed = 0
    for i, (precision, kw) in enumerate(variants):
        label = precision + "".join(f" {k}={v}" for k, v in kw.items() if k != "calib_images")
        engine = os.path.join(work, f"square-{i}.engine")
        row: Dict[str, Any] = {"variant": label}
        start = time.time()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                record = build_engine(prepare(BuildRequest(onnx=onnx_path, precision=precision, output=engine, **kw)),
                                      log=lambda m: None)  # fmt: skip
        except (BuildError, TensorRTUnavailable) as e:
            row.update(result="BUILD FAILED", why=str(e))
            failed += 1
            rows.append(row)
            continue
        row.update(build_s=round(time.time() - start, 1), typing=record.typing, quantization=record.quantization,
                   placement=record.placement)  # fmt: skip
        tol = 0.15 if precision == "int8" else 0.05
        with Detector(engine, conf_threshold=0.3) as det:
            why = next((w for w in (_compare(e, det(img), tol) for e, img in zip(expected, images)) if w), "")
            det(images[0])
            t0 = time.perf_counter()
            for _ in range(50):
                det(images[0])
            row["latency_ms"] = round((time.perf_counter() - t0) / 50 * 1000, 3)
        row["result"] = "ok" if not why else f"MISMATCH: {why}"
        failed += bool(why)
        rows.append(row)
    os.makedirs(out_dir, exist_ok=True)
    lines = [f"# {what}", f"{'variant':40s} {'result':12s} {'build s':>8s} {'Detector ms':>12s}"]
    for r in rows:
        lines.append(f"{r['variant']:40s} {r['result'][:12]:12s} {r.get('build_s', '-')!s:>8s} "
                     f"{r.get('latency_ms', '-')!s:>12s}" + (f"  {r.get('why', '')}" if r.get("why") else ""))  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text, end="")
    with open(os.path.join(out_dir, "trt.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "trt.json"), "w") as f:
        json.dump({"device": what, "rows": rows}, f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
