"""Self-test: the Detector on MODEL (default: the embedded demo model) for a few seconds with the numpy
path and, on a backend with device buffers (a TensorRT engine on a GPU), with the CUDA pipeline: FPS of
each, and the same detections on the same frames."""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable, List, Sequence, Tuple

import numpy as np

from yolo_nano.core.backend import BackendUnavailableError, ModelLoadError
from yolo_nano.core.postprocess import PostprocessConfig

from ..result import Check, Context, check, failed, missing, not_here, ok, skipped

#: Seconds each path runs (after one warm-up call).
SECONDS = 5.0
FRAMES = 4
FRAME_SIZE = (640, 480)  # width, height: a VGA camera
NUMPY = "Detector, numpy path"
GPU = "Detector, CUDA pipeline"
FIX = "attach the report to an issue"


def sample_frames(n: int = FRAMES) -> List[np.ndarray]:
    """``n`` synthetic-shape images (the demo model's classes) as 640x480 BGR frames."""
    import cv2

    from yolo_nano.data.synth import generate_sample

    return [cv2.resize(generate_sample(0, "val", i)[0], FRAME_SIZE) for i in range(n)]


def timed(
    run: Callable[[Sequence[np.ndarray]], Any], frames: List[np.ndarray], seconds: float
) -> Tuple[float, Any]:
    """``(frames per second, the first call's result)``: one warm-up call, then calls for ``seconds``."""
    first = run(frames)
    count, t0 = 0, time.perf_counter()
    while True:
        run(frames)
        count += len(frames)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return count / elapsed, first


def _model_path(ctx: Context) -> Tuple[str, str]:
    """``(path, "")`` or ``("", why not)``."""
    if ctx.options.model:
        return ctx.options.model, ""
    from yolo_nano.runtime.default_model import DefaultModelError, default_model_path

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the model line already said what the default model is
            return default_model_path(), ""
    except DefaultModelError as e:
        return "", str(e)


@check(NUMPY)
def detector(ctx: Context, seconds: float = SECONDS) -> List[Check]:
    if ctx.options.quick:
        return [skipped(NUMPY), skipped(GPU)]
    if ctx.options.model and ctx.found.get("model") != ctx.options.model:
        return [not_here(n, "the model did not open (see the model line)") for n in (NUMPY, GPU)]
    path, why = _model_path(ctx)
    if not path:
        fix = "pass a model: nano-doctor model.onnx"
        return [missing(NUMPY, why.split(". ")[0], fix), not_here(GPU, "no model")]
    from yolo_nano.runtime.backends import open_backend
    from yolo_nano.runtime.detector import Detector

    try:
        backend = open_backend(path)
    except (ModelLoadError, BackendUnavailableError) as e:
        return [failed(NUMPY, str(e), FIX), not_here(GPU, "no model")]
    frames = sample_frames()
    with backend:
        det = Detector(backend)
        fps, want = timed(det, frames, seconds)
        found = sum(len(d) for d in want)
        where = f"{backend.name}, {len(frames)} frames {FRAME_SIZE[0]}x{FRAME_SIZE[1]}"
        lines = [ok(NUMPY, f"{fps:.1f} FPS ({where}), {found} detections", fps=round(fps, 2),
                    detections=found, backend=backend.name, model=path)]  # fmt: skip
        lines.append(_gpu_pipeline(ctx, backend, det, frames, want, seconds))
    return lines


def _gpu_pipeline(
    ctx: Context, backend: Any, det: Any, frames: List[np.ndarray], want: List[Any], seconds: float
) -> Check:
    if not ctx.has_gpu:
        return not_here(GPU, "no GPU" if not ctx.on_jetson else "the GPU did not answer (above)")
    if backend.device_io() is None:
        return not_here(
            GPU,
            f"{backend.name} keeps its tensors on the host; the CUDA pipeline runs TensorRT engines",
            "build one and check it: nano-build MODEL.onnx --precision fp16, then nano-doctor MODEL-fp16-b1.engine",
        )
    from yolo_nano.runtime.gpu_pipeline import GpuPipeline, GpuPipelineError, GpuPipelineUnavailable
    from yolo_nano.runtime.kernel_check import same_detections

    config = PostprocessConfig(det.conf_threshold, det.iou_threshold, det.max_detections, det.class_agnostic)
    try:
        with GpuPipeline(backend, config) as pipe:
            fps, got = timed(pipe.detect, frames, seconds)
    except GpuPipelineUnavailable as e:
        return missing(GPU, str(e).split(";")[0], str(e))
    except GpuPipelineError as e:
        return failed(GPU, str(e), FIX)
    diffs = [f"frame {i}: {d}" for i, d in enumerate(same_detections(a, b) for a, b in zip(got, want)) if d]
    data = {"fps": round(fps, 2), "same_detections": not diffs}
    if diffs:
        return failed(GPU, f"{fps:.1f} FPS, but detections differ from the numpy path: {'; '.join(diffs)}", FIX,
                      **data)  # fmt: skip
    return ok(GPU, f"{fps:.1f} FPS, the same detections as the numpy path", **data)
