"""Q/DQ INT8 against FP32 YOLO Nano in ONNX Runtime on this CPU, every INT8 scheme side by side in one run.

    python benchmarks/bench_int8.py [--weights W.safetensors | --onnx M.onnx] [--data VOCDIR] [--size 416]
                                    [--calib 300] [--eval 200] [--algo percentile] [--repeat 40]
                                    [--variants u8s8,u8s8-reduce-range,u8u8,tensorrt] [--threads 1]
                                    [--save-models DIR | --models DIR] [--no-timing] [--json out.json]

1. The FP32 model: ``--onnx``, or ``--weights`` (or the shipped demo weights) exported at ``--size`` with
   batch 1 through ``export_onnx``; without any weights a randomly initialised YOLO Nano (mAP then
   meaningless and reported as such).
2. Data: ``--data`` (VOC layout with ``train``/``val`` splits), else the synthetic demo set
   (``yolo_nano.data.synth``) written to a temporary folder: ``--calib`` train images calibrate
   (through the VOC ``ImageSets`` list, i.e. the one calibration batcher), ``--eval`` val images measure.
3. ``quantize_qdq`` once per variant, same algorithm and images: the ``--target cpu`` INT8 schemes
   (``u8s8``, ``u8s8-reduce-range``, ``u8u8``; see ``yolo_nano.calibration.int8_schemes``) and the
   ``tensorrt`` target (symmetric int8, the TensorRT input). ``--save-models DIR`` keeps the files;
   ``--models DIR`` reuses them (``fp32.onnx``, ``int8-<variant>.onnx``) instead of exporting and
   quantizing, e.g. to measure accuracy under an emulated CPU with ``--no-timing``:
   ``qemu-x86_64 -cpu Haswell .venv/bin/python benchmarks/bench_int8.py --models DIR --no-timing --eval 40``
   (an emulator's timings mean nothing; its integer arithmetic is the emulated CPU's).
4. Speed: batch-1 ``session.run`` on the same preprocessed val images, all models interleaved call by
   call (order alternating); ratio = FP32 / INT8 of the medians (goal >= 1.5x for the cpu target), and of
   the minimums (less sensitive to other load on a shared machine).
5. Agreement on the val images: raw head error (RMS of INT8 - FP32 over RMS of FP32, averaged over heads
   and 16 images), and the share of FP32 detections (conf 0.25) that INT8 reproduces (same class, IoU
   >= 0.5), from the same detections as the mAP.
6. File size of each model vs the paper's 4.0 MB (8-bit weights), and the weight count.
7. mAP@0.5 (VOC07 11-point, the project's evaluator) of FP32 and INT8 on the val images (goal: <= 1
   point lost), when the data's classes are the model's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from yolo_nano.core.postprocess import box_iou

PAPER_MB = 4.0
VARIANTS = ("u8s8", "u8s8-reduce-range", "u8u8", "tensorrt")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fp32_model(args: argparse.Namespace, work: str) -> Tuple[str, str]:
    """(path of the FP32 ONNX, where its weights came from)."""
    if args.onnx:
        return args.onnx, os.path.basename(args.onnx)
    from yolo_nano.model.export import export_onnx
    from yolo_nano.model.registry import build_model
    from yolo_nano.model.weights import load_model

    weights = args.weights
    if weights is None:
        from yolo_nano.runtime.default_model import default_weights_path

        shipped = default_weights_path()
        weights = str(shipped) if shipped.is_file() else None
    out = os.path.join(work, "yolo_nano.onnx")
    if weights:
        model, names = load_model(weights, input_size=args.size)
        export_onnx(model, out, class_names=names, batch=1, weights_path=weights)
        return out, os.path.basename(weights)
    log(
        "warning: no trained weights (pass --weights): using a RANDOMLY INITIALISED YOLO Nano; mAP is meaningless"
    )
    export_onnx(build_model("yolo-nano", 20, args.size), out, batch=1)
    return out, "random-init"


def demo_data(args: argparse.Namespace, work: str, n_train: int) -> str:
    if args.data:
        return args.data
    from yolo_nano.data.synth import write_dataset

    out = os.path.join(work, "synth")
    log(f"writing the synthetic demo set: {n_train} train + {args.eval} val images")
    return write_dataset(out, n_train, args.eval, seed=args.seed, progress=False)


def session(path: str, threads: Optional[int]) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def interleaved_ms(
    sessions: List[Any], inputs: List[np.ndarray], repeat: int, name: str
) -> Tuple[List[float], List[float]]:
    """(median, min) batch-1 latency (ms) of each session, calls interleaved, order alternating."""
    feeds = [{name: x} for x in inputs]
    for s in sessions:
        for f in feeds[:3]:
            s.run(None, f)
    times: List[List[float]] = [[] for _ in sessions]
    for i in range(repeat):
        order = list(range(len(sessions)))
        if i % 2:
            order.reverse()
        feed = feeds[i % len(feeds)]
        for k in order:
            t0 = time.perf_counter()
            sessions[k].run(None, feed)
            times[k].append((time.perf_counter() - t0) * 1000.0)
    return [statistics.median(t) for t in times], [min(t) for t in times]


def agreement(
    ref: List[Tuple[np.ndarray, np.ndarray, np.ndarray]], got: List[Tuple[Any, ...]]
) -> Optional[float]:
    """Share of reference detections that ``got`` reproduces (same class, IoU >= 0.5)."""
    total = hit = 0
    for (rb, _, rc), (gb, _, gc) in zip(ref, got):
        total += len(rb)
        if len(rb) and len(gb):
            iou = np.nan_to_num(box_iou(rb, gb))
            same = rc[:, None] == gc[None, :]
            hit += int(((iou >= 0.5) & same).any(axis=1).sum())
    return None if total == 0 else hit / total


def quantized_models(args: argparse.Namespace, work: str, res: Dict[str, Any]) -> Dict[str, str]:
    """{"fp32": path, "int8-<variant>": path, ...}: reused from ``--models`` or exported and quantized."""
    if args.models:
        models = {"fp32": os.path.join(args.models, "fp32.onnx")}
        models.update({f"int8-{v}": os.path.join(args.models, f"int8-{v}.onnx") for v in args.variants})
        missing = [p for p in models.values() if not os.path.isfile(p)]
        if missing:
            raise SystemExit(f"bench_int8: error: --models {args.models} lacks {', '.join(missing)}")
        res["model"] = f"reused from {args.models}"
        return models
    from yolo_nano.calibration.quantize import QuantizeError, quantize_qdq
    from yolo_nano.core.metadata import read_onnx_metadata

    src, source = fp32_model(args, work)
    meta = read_onnx_metadata(src)
    calib_list = os.path.join(res["data"], "ImageSets", "Main", "train.txt")
    models = {"fp32": src}
    quant_s = {}
    for variant in args.variants:
        out = os.path.join(work, f"int8-{variant}.onnx")
        log(f"quantizing: {variant} ({args.algo}, up to {args.calib} images)")
        tq = time.time()
        target, scheme = ("tensorrt", "auto") if variant == "tensorrt" else ("cpu", variant)
        try:
            r = quantize_qdq(
                src, calib_list, out, algorithm=args.algo, target=target, int8_scheme=scheme,
                max_images=args.calib, progress=False,
            )  # fmt: skip
        except QuantizeError as e:  # e.g. per-channel u8u8 on an onnxruntime that cannot write it
            log(f"skipped {variant}: {e}")
            res.setdefault("skipped_variants", {})[variant] = str(e)
            continue
        quant_s[variant] = round(time.time() - tq, 1)
        models[f"int8-{variant}"] = out
        res["calibration_images"] = r.num_images
    res.update(
        model=f"{meta.arch} {meta.input_size[0]}x{meta.input_size[1]}, {meta.num_classes} classes, weights {source}",
        algorithm=args.algo,
        quantize_seconds=quant_s,
    )
    if args.save_models:
        import shutil

        os.makedirs(args.save_models, exist_ok=True)
        for name, path in models.items():
            shutil.copyfile(path, os.path.join(args.save_models, name + ".onnx"))
        log(f"models saved in {args.save_models}")
    return models


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", help="FP32 model to quantize (else exported from --weights)")
    p.add_argument("--weights", help=".safetensors weights (default: the shipped demo weights)")
    p.add_argument("--data", help="VOC-layout data with train and val splits (default: synthetic demo set)")
    p.add_argument("--size", type=int, default=416, help="input size when exporting (default 416)")
    p.add_argument("--calib", type=int, default=300, help="calibration images (default 300)")
    p.add_argument("--eval", type=int, default=200, help="evaluation images (default 200)")
    p.add_argument("--algo", default="percentile", choices=("minmax", "entropy", "percentile"))
    p.add_argument("--repeat", type=int, default=40, help="timed calls per model (default 40)")
    p.add_argument(
        "--variants", default=",".join(VARIANTS),
        help=f"comma-separated INT8 variants: cpu-target schemes and/or tensorrt (default: {','.join(VARIANTS)})",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=int, default=1,
        help="ONNX Runtime intra-op threads, 0 = ORT's default (default 1: on a small shared machine ORT's "
        "spinning worker threads make timings swing by 2-3x)",
    )  # fmt: skip
    p.add_argument("--save-models", metavar="DIR", help="keep the FP32 and INT8 models here")
    p.add_argument(
        "--models", metavar="DIR", help="reuse the models a --save-models run kept (no quantizing)"
    )
    p.add_argument("--no-timing", action="store_true", help="accuracy only (e.g. under a CPU emulator)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown or not args.variants:
        p.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    warnings.simplefilter("ignore")

    import onnxruntime

    from yolo_nano.benchmarks.evaluate import run_model
    from yolo_nano.calibration.int8_schemes import CPU_CLASSES, SCHEME_FOR_CPU, this_cpu_class, this_cpu_flags
    from yolo_nano.core.images import read_image
    from yolo_nano.core.metadata import read_onnx_metadata
    from yolo_nano.core.preprocess import preprocess
    from yolo_nano.data.metrics import evaluate
    from yolo_nano.data.voc import load_split, read_class_names
    from yolo_nano.runtime.backends import OnnxRuntimeBackend

    cpu = this_cpu_class()
    simd = sorted(f for f in this_cpu_flags() if f.startswith(("avx", "amx", "asimd")))
    res: Dict[str, Any] = {
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs, {platform.system()} {platform.machine()}",
        "cpu_class": f"{cpu}: {CPU_CLASSES[cpu]}; SIMD flags seen by CPUID: {' '.join(simd) or 'none'}",
        "auto_scheme_here": SCHEME_FOR_CPU[cpu],
        "onnxruntime": onnxruntime.__version__,
        "threads": args.threads or "onnxruntime default",
    }
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as work:
        t0 = time.time()
        res["data"] = data = demo_data(args, work, n_train=0 if args.models else args.calib)
        models = quantized_models(args, work, res)
        del res["data"]
        names_int8 = list(models)[1:]
        meta = read_onnx_metadata(models["fp32"])
        import onnx

        weights = sum(
            int(np.prod(i.dims)) for i in onnx.load(models["fp32"]).graph.initializer if len(i.dims) >= 2
        )  # conv and FC kernels
        res["weights_millions"] = round(weights / 1e6, 3)
        res["size_mb"] = {k: round(os.path.getsize(v) / 1e6, 3) for k, v in models.items()}
        res["paper_size_mb"] = PAPER_MB

        names = tuple(meta.class_names)
        data_names = read_class_names(data)
        val = load_split(data, "val", data_names)
        val.records = val.records[: args.eval]
        inputs = [preprocess([read_image(rec.image_path)], meta)[0] for rec in val.records[:16]]
        sessions = [session(models[k], args.threads) for k in models]

        if not args.no_timing:
            log(f"timing batch-1 session.run, {args.repeat} interleaved calls per model")
            ms, ms_min = interleaved_ms(sessions, inputs, args.repeat, meta.input_name)
            res["latency_ms"] = {k: round(v, 2) for k, v in zip(models, ms)}
            res["speedup"] = {k: round(ms[0] / v, 2) for k, v in zip(names_int8, ms[1:])}
            res["latency_min_ms"] = {k: round(v, 2) for k, v in zip(models, ms_min)}
            res["speedup_by_min"] = {k: round(ms_min[0] / v, 2) for k, v in zip(names_int8, ms_min[1:])}

        log("comparing outputs on the val images")
        head_err: Dict[str, List[float]] = {k: [] for k in names_int8}
        for x in inputs:
            ref = sessions[0].run(None, {meta.input_name: x})
            for k, s in zip(names_int8, sessions[1:]):
                got = s.run(None, {meta.input_name: x})
                head_err[k] += [
                    float(np.sqrt(np.mean((a - b) ** 2) / (np.mean(a**2) + 1e-12))) for a, b in zip(ref, got)
                ]
        res["head_relative_rms_error"] = {k: round(float(np.mean(v)), 4) for k, v in head_err.items()}

        log(f"detecting on {len(val.records)} val images with each model")
        dets = {}
        for k, path in models.items():
            out, _ = run_model(
                OnnxRuntimeBackend(path, device="cpu", threads=args.threads), val, progress=False
            )
            dets[k] = out
        confident = {
            k: [tuple(a[d[1] >= 0.25] for a in d) for d in (v[r.image_id] for r in val.records)]
            for k, v in dets.items()
        }
        res["detection_agreement"] = {}
        for k in names_int8:
            share = agreement(confident["fp32"], confident[k])
            res["detection_agreement"][k] = None if share is None else round(share, 3)
        res["fp32_detections_at_0.25"] = int(sum(len(d[0]) for d in confident["fp32"]))

        if tuple(data_names) == names:
            maps = {k: evaluate(val.records, v, names, "voc07").map for k, v in dets.items()}
            res["map50_voc07"] = {k: round(v * 100, 2) for k, v in maps.items()}
            res["map50_delta_points"] = {k: round((maps[k] - maps["fp32"]) * 100, 2) for k in names_int8}
            if "random-init" in res.get("model", ""):
                res["map_note"] = "random-init weights: mAP meaningless"
        else:
            res["map_note"] = (
                f"skipped: the data's classes {data_names[:3]}... are not the model's {names[:3]}..."
            )
        res["eval_images"] = len(val.records)
        res["seconds"] = round(time.time() - t0, 1)

    print(json.dumps(res, indent=2))
    auto = f"int8-{SCHEME_FOR_CPU[cpu]}"
    print(f"\nCPU class {cpu}: nano-quantize --target cpu picks {SCHEME_FOR_CPU[cpu]} here")
    for k in names_int8:
        line = f"{k:24s}"
        if "speedup" in res:
            lat = res["latency_ms"]
            line += f" {lat[k]:6.1f} ms vs FP32 {lat['fp32']:.1f} ms: {res['speedup'][k]:.2f}x by median,"
            line += f" {res['speedup_by_min'][k]:.2f}x by min;"
        if "map50_delta_points" in res:
            maps = res["map50_voc07"]
            line += (
                f" mAP@0.5 {maps[k]:.2f} vs {maps['fp32']:.2f} ({res['map50_delta_points'][k]:+.2f} points);"
            )
        print(line + f" {res['size_mb'][k]:.2f} MB (paper {PAPER_MB} MB)")
    if auto in names_int8:
        goals = []
        if "speedup" in res:
            goals.append(f"{res['speedup'][auto]:.2f}x faster than FP32 by median (goal >= 1.5x)")
        if "map50_delta_points" in res:
            goals.append(f"{res['map50_delta_points'][auto]:+.2f} mAP points (goal >= -1)")
        print(f"INT8 (cpu target, {auto[5:]} as auto picks on this CPU): " + ", ".join(goals or ["measured"]))
    if args.json:
        from yolo_nano.core.fileio import atomic_write_json

        atomic_write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
