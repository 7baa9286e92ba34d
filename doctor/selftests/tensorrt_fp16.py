"""Self-test: TensorRT builds an FP16 engine from the tiny ONNX (:mod:`.tiny_onnx`) through nano-build's
own builder, and the engine's outputs match ONNX Runtime's on a fixed input (max abs diff)."""

from __future__ import annotations

import tempfile
import time
from typing import List

import numpy as np

from ..result import Check, Context, check, failed, not_here, ok, skipped
from .tiny_onnx import sample_input, write_tiny_onnx

#: FP16 keeps about three significant digits; five layers of order-1 activations stay well inside 2 %.
RELATIVE_TOLERANCE = 0.02
FIX = "attach the report to an issue: it holds TensorRT's build log"


def compare(engine_outputs: List[np.ndarray], reference: List[np.ndarray]) -> float:
    """Largest absolute difference between two lists of heads (same shapes)."""
    return max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(engine_outputs, reference))


@check("TensorRT FP16 build")
def tensorrt_fp16(ctx: Context) -> Check:
    name = "TensorRT FP16 build"
    if ctx.options.quick:
        return skipped(name)
    if not ctx.has_gpu:
        return not_here(name, "no GPU" if not ctx.on_jetson else "the GPU did not answer (above)")
    trt, why, _ = ctx.tensorrt()
    if trt is None:
        return not_here(name, "needs TensorRT (see its line above)")
    from yolo_nano.engines.builder import build_engine
    from yolo_nano.engines.plan import BuildError, BuildRequest, prepare
    from yolo_nano.engines.trt_backend import TensorRTBackend
    from yolo_nano.runtime.onnxruntime_backend import OnnxRuntimeBackend

    log: List[str] = []
    x = sample_input()
    with tempfile.TemporaryDirectory(prefix="nano-doctor-") as tmp:
        onnx_path = write_tiny_onnx(f"{tmp}/tiny.onnx")
        t0 = time.perf_counter()
        try:
            build_engine(prepare(BuildRequest(onnx=onnx_path, precision="fp16", output=f"{tmp}/tiny.engine")),
                         log=log.append)  # fmt: skip
        except BuildError as e:
            return failed(name, f"the build failed: {e}", FIX, log=log[-20:])
        build_s = time.perf_counter() - t0
        with OnnxRuntimeBackend(onnx_path, device="cpu") as ort:
            reference = [o.astype(np.float64) for o in ort.infer(x)]
        try:
            with TensorRTBackend(f"{tmp}/tiny.engine") as engine:
                outputs = engine.infer(x)
        except ImportError as e:  # pycuda missing: its own line says how to install it
            return not_here(name, f"built in {build_s:.1f} s, but running it needs pycuda ({e})")
    diff = compare(outputs, reference)
    scale = max(1.0, max(float(np.max(np.abs(r))) for r in reference))
    data = {"max_abs_diff": diff, "reference_max_abs": scale, "build_seconds": round(build_s, 2),
            "tensorrt": str(trt.__version__)}  # fmt: skip
    detail = f"built in {build_s:.1f} s; max abs diff vs ONNX Runtime {diff:.2g} (outputs up to {scale:.2g})"
    if not diff <= RELATIVE_TOLERANCE * scale:  # also catches NaN
        return failed(name, detail + f": over {RELATIVE_TOLERANCE:.0%}", FIX, log=log[-20:], **data)
    return ok(name, detail, **data)
