"""``nano-calib show CACHE`` (a TensorRT calibration cache, tensor by tensor) and ``nano-quantize``
(Q/DQ INT8 ONNX for ONNX Runtime on a CPU and for TensorRT without a calibrator).

Exit codes: 0 done, 2 bad input (one-line error, no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import List, Optional

from yolo_nano.core.fileio import sha256_file
from yolo_nano.core.metadata import MetadataError

from .batcher import CalibrationDataError
from .cache import CacheFormatError, read_cache, read_identity, summarize

EXIT_BAD_INPUT = 2


def fail(prog: str, message: str, code: int = EXIT_BAD_INPUT) -> int:
    """Print ``prog: error: message`` as one line on stderr and return ``code`` (the exit status)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def show_warnings_plainly() -> None:
    """Show warnings as one ``warning: ...`` line each (no file/line noise) for CLI users."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show


def calib_main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``nano-calib`` (``nano-calib show CACHE [--json]``)."""
    p = argparse.ArgumentParser(prog="nano-calib", description="Inspect TensorRT INT8 calibration caches.")
    sub = p.add_subparsers(dest="command", required=True)
    show = sub.add_parser(
        "show", help="print per-tensor scales and dynamic ranges (scale * 127) and the identity"
    )
    show.add_argument("cache")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args(argv)
    try:
        cache = read_cache(args.cache)
        identity = read_identity(args.cache)
    except CacheFormatError as e:
        return fail("nano-calib", str(e))
    rows = summarize(cache)
    matches = None if identity is None else identity.cache_sha256 == sha256_file(args.cache)
    if args.json:
        doc = {
            "version": cache.version,
            "algorithm": cache.algorithm,
            "tensors": [{"name": n, "scale": s, "dynamic_range": r} for n, s, r in rows],
            "identity": identity.to_dict() if identity is not None else None,
            "cache_matches_identity": matches,
        }
        print(json.dumps(doc, indent=2))
        return 0
    print(f"cache:      {args.cache}")
    print(f"header:     TensorRT {cache.version}, {cache.algorithm}, {len(rows)} tensors")
    if identity is None:
        print("identity:   none (no sidecar: nano-build will not reuse this cache without --recalibrate)")
    else:
        print(
            f"identity:   {identity.algorithm}, batch {identity.batch}, TensorRT {identity.tensorrt_version}, "
            f"ONNX sha256 {identity.onnx_sha256[:16]}, preprocessing {identity.preprocess_sha256[:16]}, "
            f"{identity.num_images if identity.num_images is not None else '?'} images, {identity.created or '?'}"
        )
        if matches:
            print("            cache sha256 matches the identity")
        else:
            print("            EDITED after it was written: its sha256 differs from the identity's "
                  "(nano-build will not reuse it without --recalibrate)")  # fmt: skip
    width = min(max(len(n) for n, _, _ in rows), 80)
    print(f"{'tensor':{width}s}  {'scale':>12s}  {'range':>12s}")
    for name, scale, rng in rows:
        print(f"{name:{width}s}  {scale:12.6g}  {rng:12.6g}")
    return 0


def quantize_main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``nano-quantize model.onnx --calib-images DIR|LIST -o model.int8.onnx``."""
    from .int8_schemes import AUTO_SCHEME, INT8_SCHEMES
    from .quantize import (
        DEFAULT_QUANT_ALGORITHM,
        DEFAULT_TARGET,
        QUANT_ALGORITHMS,
        TARGETS,
        QuantizeError,
        quantize_qdq,
    )

    p = argparse.ArgumentParser(
        prog="nano-quantize",
        description="Q/DQ INT8 quantization with ONNX Runtime's static quantizer (per-channel 8-bit weights, "
        "8-bit activations, head convolutions in float). --target cpu (default): fast in ONNX Runtime. "
        "--target tensorrt: symmetric int8 that `nano-build MODEL --precision int8` builds with no calibrator.",
    )
    p.add_argument("onnx", help="FP32 model exported by nano-export")
    p.add_argument(
        "--calib-images", required=True, metavar="DIR|LIST", help="folder, list file or VOC ImageSets"
    )
    p.add_argument("-o", "--output", metavar="PATH", help="output (default: <onnx stem>.int8.onnx beside it)")
    p.add_argument(
        "--algo", choices=sorted(QUANT_ALGORITHMS), default=DEFAULT_QUANT_ALGORITHM,
        help=f"activation range calibration (default: {DEFAULT_QUANT_ALGORITHM})",
    )  # fmt: skip
    p.add_argument(
        "--target", choices=TARGETS, default=DEFAULT_TARGET,
        help="cpu: uint8 activations, fast in ONNX Runtime; tensorrt: symmetric int8 for nano-build (default: cpu)",
    )  # fmt: skip
    p.add_argument(
        "--int8-scheme", choices=(AUTO_SCHEME,) + INT8_SCHEMES, default=AUTO_SCHEME,
        help="--target cpu: weight type for the CPU that will RUN the model. u8s8: int8 weights, for x86 "
        "with VNNI (AVX-512 VNNI, AVX-VNNI, AMX), ARM (Jetson) and pre-AVX2 x86; u8s8-reduce-range: 7-bit "
        "weights, for x86 with AVX2 or AVX-512 but no VNNI, where ONNX Runtime's u8s8 kernel saturates "
        "(exact everywhere, slightly coarser); u8u8: uint8 weights, exact everywhere, slower on x86. "
        "auto (default): the one for this machine's CPU",
    )  # fmt: skip
    p.add_argument("--percentile", type=float, default=99.999, help="percentile for --algo percentile")
    p.add_argument(
        "--per-tensor", action="store_true", help="per-tensor weight scales (default: per channel)"
    )
    p.add_argument(
        "--max-images", type=int, metavar="N", help="use at most N calibration images (evenly spread)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    show_warnings_plainly()
    if args.max_images is not None and args.max_images < 1:
        return fail("nano-quantize", f"--max-images must be >= 1, got {args.max_images}")
    if not 50.0 < args.percentile <= 100.0:
        return fail("nano-quantize", f"--percentile must be in (50, 100], got {args.percentile}")
    output = args.output
    if output is None:
        stem = args.onnx[:-5] if args.onnx.lower().endswith(".onnx") else args.onnx
        output = stem + ".int8.onnx"
    if not os.path.isfile(args.onnx):
        return fail("nano-quantize", f"ONNX model not found: {args.onnx}")
    if os.path.abspath(output) == os.path.abspath(args.onnx):
        return fail("nano-quantize", "-o must differ from the input model")
    try:
        result = quantize_qdq(
            args.onnx,
            args.calib_images,
            output,
            algorithm=args.algo,
            target=args.target,
            int8_scheme=args.int8_scheme,
            per_channel=not args.per_tensor,
            max_images=args.max_images,
            percentile=args.percentile,
            progress=not args.no_progress,
        )
    except (QuantizeError, MetadataError, CalibrationDataError) as e:
        return fail("nano-quantize", str(e))
    except OSError as e:  # -o below a file, in a read-only folder: nothing was written
        return fail(
            "nano-quantize",
            f"cannot write {output} ({e.strerror or e}: {e.filename or output}); choose a writable -o path",
        )
    print(
        f"wrote {result.output_path}: {result.size_bytes / 1e6:.2f} MB, Q/DQ INT8 for {result.target} ({result.algorithm}, "
        f"{result.num_images} calibration images), float heads: {', '.join(result.float_nodes)}"
    )
    print(result.scheme_summary())
    return 0
