"""yolo_nano.runtime: the Detector apps embed. On a GPU: TensorRT with letterbox, decode and NMS as CUDA
kernels (only the detections come back); elsewhere ONNX Runtime with the numpy reference pipeline.

    from yolo_nano.runtime import Detector, default_model_path
    with Detector(default_model_path()) as det:   # or Detector("model.onnx"), Detector("model.engine")
        dets = det(cv2.imread("street.jpg"))      # Detections: boxes (K,4) xyxy original pixels, scores, ...
    for box, score, class_id, label in dets: ...

The building blocks (``letterbox``, ``preprocess``, ``decode``, ``nms``, ``batched_nms``, ``scale_boxes``)
live in ``yolo_nano.core.preprocess``/``postprocess`` (torch-free) and are re-exported here.
"""

from __future__ import annotations

from yolo_nano.core.detections import Detection, Detections
from yolo_nano.core.postprocess import (
    DecodeStats,
    PostprocessConfig,
    batched_nms,
    box_iou,
    decode,
    nms,
    scale_boxes,
)
from yolo_nano.core.preprocess import (
    InvalidImageError,
    LetterboxInfo,
    ensure_bgr_uint8,
    letterbox,
    preprocess,
)

from . import backends
from .backends import (
    Backend,
    BackendClosedError,
    BackendUnavailableError,
    DeviceIO,
    ModelLoadError,
    OnnxRuntimeBackend,
    open_backend,
)
from .default_model import DefaultModelError, default_model_path
from .detector import Detector
from .gpu_pipeline import GpuPipeline, GpuPipelineError, GpuPipelineUnavailable

__all__ = [
    "Backend",
    "BackendClosedError",
    "BackendUnavailableError",
    "DecodeStats",
    "DefaultModelError",
    "Detection",
    "Detections",
    "Detector",
    "DeviceIO",
    "GpuPipeline",
    "GpuPipelineError",
    "GpuPipelineUnavailable",
    "InvalidImageError",
    "LetterboxInfo",
    "ModelLoadError",
    "OnnxRuntimeBackend",
    "PostprocessConfig",
    "backends",
    "batched_nms",
    "box_iou",
    "decode",
    "default_model_path",
    "ensure_bgr_uint8",
    "letterbox",
    "nms",
    "open_backend",
    "preprocess",
    "scale_boxes",
]
