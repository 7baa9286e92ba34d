"""yolo_nano.runtime: the Detector apps embed, on ONNX Runtime (or TensorRT), with numpy pre/post processing.

    from yolo_nano.runtime import Detector, default_model_path
    with Detector(default_model_path()) as det:   # or Detector("model.onnx"), Detector("model.engine")
        dets = det(cv2.imread("street.jpg"))      # Detections: boxes (K,4) xyxy original pixels, scores, ...
    for box, score, class_id, label in dets: ...

The building blocks (``letterbox``, ``preprocess``, ``decode``, ``nms``, ``batched_nms``, ``scale_boxes``)
live in ``yolo_nano.core.preprocess``/``postprocess`` (torch-free) and are re-exported here.
"""

from __future__ import annotations

from yolo_nano.core.detections import Detection, Detections
from yolo_nano.core.postprocess import batched_nms, box_iou, decode, nms, scale_boxes
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

__all__ = [
    "Backend",
    "BackendClosedError",
    "BackendUnavailableError",
    "DefaultModelError",
    "Detection",
    "Detections",
    "Detector",
    "DeviceIO",
    "InvalidImageError",
    "LetterboxInfo",
    "ModelLoadError",
    "OnnxRuntimeBackend",
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
