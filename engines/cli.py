"""``nano-build`` (ONNX -> TensorRT engine + identity record) and ``nano-engine info`` (what an engine is).

Exit codes: 0 done, 2 bad input (one-line error), 3 TensorRT (or the GPU) is not available here or
its release is not supported, 130 interrupted (Ctrl-C; nothing is written).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from yolo_nano.calibration.cli import fail, show_warnings_plainly

from .device import GpuUnavailable, TensorRTUnavailable, import_tensorrt, tensorrt_available
from .identity import EngineMismatchError, EngineRecordError, read_record
from .plan import DEFAULT_CALIB_ALGO, PRECISIONS, BuildError, BuildPlan, BuildRequest, finalize, prepare
from .trt_versions import UnsupportedTensorRT, check_version

EXIT_BAD_INPUT = 2
EXIT_NO_TENSORRT = 3
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nano-build",
        description="Build a TensorRT engine from an exported YOLO Nano ONNX model, with an identity record "
        "(<engine>.json) beside it. INT8: calibrate from images (cache reused only when it matches), or give "
        "a Q/DQ model from nano-quantize (no calibrator).",
    )
    p.add_argument("onnx", help="exported model (nano-export or nano-quantize output)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16", help="engine precision (default: fp16)")
    p.add_argument(
        "--calib-images",
        metavar="DIR|LIST",
        help="INT8 calibration images: folder, list file or VOC ImageSets",
    )
    p.add_argument(
        "--calib-cache", metavar="PATH", help="INT8 calibration cache (default: beside the engine)"
    )
    p.add_argument(
        "--calib-algo", choices=("entropy", "minmax"), help=f"INT8 calibrator (default: {DEFAULT_CALIB_ALGO})"
    )
    p.add_argument(
        "--recalibrate", action="store_true", help="ignore an existing calibration cache and calibrate again"
    )
    p.add_argument(
        "--max-calib-images", type=int, metavar="N", help="use at most N calibration images (evenly spread)"
    )
    p.add_argument("--dla", type=int, metavar="N", help="run on DLA core N (fp16/int8 only)")
    p.add_argument(
        "--gpu-fallback", action="store_true", help="with --dla: run layers the DLA cannot on the GPU"
    )
    p.add_argument("--workspace", type=int, metavar="MB", help="builder workspace memory pool limit in MiB")
    p.add_argument(
        "--timing-cache", metavar="PATH", help="TensorRT timing cache to read and update (faster rebuilds)"
    )
    p.add_argument(
        "--batch", type=int, metavar="N", help="batch size (must match a fixed-batch ONNX; max for dynamic)"
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="ENGINE",
        help="output engine (default: <onnx stem>-<precision>-b<N>.engine)",
    )
    p.add_argument(
        "--strongly-typed", action="store_true",
        help="TensorRT 10: build a strongly typed network (fp16 from an FP16 copy of the model, int8 from a Q/DQ "
        "model calibrated from --calib-images); TensorRT 11 always does",
    )  # fmt: skip
    p.add_argument("--explain", action="store_true", help="validate and print the build plan, build nothing")
    p.add_argument("--json", action="store_true", help="with --explain: the whole plan as JSON")
    p.add_argument(
        "--tensorrt-version", metavar="V",
        help="with --explain: plan for this TensorRT release (default: the installed one, if any)",
    )  # fmt: skip
    return p


def _explain(plan: BuildPlan, as_json: bool) -> None:
    if as_json:
        print(json.dumps(plan.to_dict(), indent=2))
        return
    meta = plan.metadata
    print(f"model:      {meta.arch}, {meta.num_classes} classes, input {list(plan.input_shape)}"
          + (" (dynamic batch)" if plan.dynamic_batch else ""))  # fmt: skip
    if plan.profile is not None:
        print(
            f"profile:    min {list(plan.profile[0])}, opt {list(plan.profile[1])}, max {list(plan.profile[2])}"
        )
    r = plan.request
    print(
        "device:     "
        + ("GPU" if r.dla is None else f"DLA core {r.dla}" + (" + GPU fallback" if r.gpu_fallback else ""))
    )
    trt_line = plan.tensorrt_version or "not known here (--tensorrt-version V plans for one)"
    print(f"tensorrt:   {trt_line}" + (f", {plan.typing}ly typed" if plan.typing else ""))
    print(f"precision:  {plan.precision}" + (f" ({plan.int8_mode})" if plan.int8_mode else "")
          + (f", TensorRT parses the {plan.network_onnx} ONNX" if plan.network_onnx != "as given" else ""))  # fmt: skip
    if plan.cache_path:
        print(f"cache:      {plan.cache_path} ({plan.calib_algo})")
    print(f"output:     {plan.output} (+ {plan.output}.json)")
    for note in plan.notes:
        print(f"note:       {note}")
    print(f"command:    {plan.command()}")


def build_main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``nano-build``."""
    args = build_parser().parse_args(argv)
    try:
        return _build_main(args)
    except KeyboardInterrupt:
        print("nano-build: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED


def _build_main(args: argparse.Namespace) -> int:
    show_warnings_plainly()
    request = BuildRequest(
        onnx=args.onnx,
        precision=args.precision,
        calib_images=args.calib_images,
        calib_cache=args.calib_cache,
        calib_algo=args.calib_algo,
        recalibrate=args.recalibrate,
        dla=args.dla,
        gpu_fallback=args.gpu_fallback,
        workspace_mb=args.workspace,
        timing_cache=args.timing_cache,
        batch=args.batch,
        output=args.output,
        max_calib_images=args.max_calib_images,
        strongly_typed=args.strongly_typed,
    )
    if (args.json or args.tensorrt_version) and not args.explain:
        return fail("nano-build", "--json and --tensorrt-version only apply with --explain")
    try:
        plan = prepare(request)
        if args.explain:
            version = args.tensorrt_version or (
                str(import_tensorrt().__version__) if tensorrt_available() else None
            )
            if version is not None:
                finalize(plan, check_version(version))
            _explain(plan, args.json)
            return 0
    except BuildError as e:
        return fail("nano-build", str(e))
    except UnsupportedTensorRT as e:
        return fail("nano-build", str(e), EXIT_BAD_INPUT if args.tensorrt_version else EXIT_NO_TENSORRT)
    try:
        import_tensorrt()
    except TensorRTUnavailable as e:
        return fail(
            "nano-build",
            f"{e}. The request is valid; run it where TensorRT is: {plan.command()}",
            EXIT_NO_TENSORRT,
        )
    from .builder import build_engine

    try:
        build_engine(plan, exit_on_interrupt=True)
    except BuildError as e:
        return fail("nano-build", str(e))
    except (TensorRTUnavailable, GpuUnavailable) as e:
        return fail("nano-build", str(e), EXIT_NO_TENSORRT)
    return 0


def engine_main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``nano-engine`` (``nano-engine info ENGINE [--json] [--layers]``)."""
    p = argparse.ArgumentParser(
        prog="nano-engine", description="Inspect TensorRT engines built by nano-build."
    )
    sub = p.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print the engine's identity and, with TensorRT, its layer precisions")
    info.add_argument("engine")
    info.add_argument("--json", action="store_true", help="print the identity record as JSON")
    info.add_argument(
        "--no-layers", action="store_true", help="skip the layer precisions (no TensorRT needed)"
    )
    args = p.parse_args(argv)
    try:
        identity = read_record(args.engine)
    except EngineRecordError as e:
        return fail("nano-engine", str(e))
    if args.json:
        print(json.dumps(identity.to_dict(), indent=2, sort_keys=True))
        return 0
    print(f"engine:           {args.engine}")
    for line in identity.summary_lines():
        print(line)
    if args.no_layers:
        return 0
    if not tensorrt_available():
        print("layers:           (TensorRT is not installed here: run `nano-engine info` on the device to see "
              "which layers run in INT8/FP16)")  # fmt: skip
        return 0
    from .builder import inspect_layers
    from .layers import layer_precisions, precision_counts

    try:
        rows = layer_precisions({"Layers": inspect_layers(args.engine)})
    except (BuildError, EngineMismatchError, GpuUnavailable, TensorRTUnavailable) as e:
        return fail("nano-engine", str(e), EXIT_NO_TENSORRT)
    counts = precision_counts(rows)
    print(f"layers:           {len(rows)} ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))})")
    width = max((len(r[0]) for r in rows), default=10)
    for name, kind, precision in rows:
        print(f"  {precision:5s} {kind:16s} {name[: max(width, 10)]}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(build_main())
