"""Validation during training, through the runtime's own pipeline: the one letterbox
(:func:`yolo_nano.core.preprocess.preprocess`), the PyTorch backend
(:class:`yolo_nano.model.torch_backend.TorchBackend`) and the one post-process
(:func:`yolo_nano.core.postprocess.detections_from_heads`). The mAP printed by ``nano-train`` is what
``nano-eval`` reports for the same weights and settings."""

from __future__ import annotations

from typing import Any, Dict, Sequence

import torch
from torch import nn

from yolo_nano.core.detections import Detections
from yolo_nano.core.images import read_image
from yolo_nano.core.postprocess import PostprocessConfig, detections_from_heads
from yolo_nano.core.preprocess import preprocess
from yolo_nano.data.metrics import EvalResult, evaluate
from yolo_nano.data.voc import VOCRecord, VOCSet

from .torch_backend import TorchBackend

# Settings of a mAP run: every detection down to 0.001, as the VOC/COCO protocols expect.
VAL_POSTPROCESS = PostprocessConfig(conf_threshold=0.001, iou_threshold=0.5, max_detections=100)


def predict(
    model: nn.Module,
    class_names: Sequence[str],
    records: Sequence[VOCRecord],
    device: torch.device,
    batch_size: int = 16,
    config: PostprocessConfig = VAL_POSTPROCESS,
    progress: bool = False,
) -> Dict[str, Detections]:
    """Run ``model`` (a built network, put in eval mode) over the images of ``records`` exactly as the
    runtime would: letterbox, raw heads, decode, per-class NMS, boxes in original-image pixels.
    Returns image id -> :class:`Detections`."""
    out: Dict[str, Detections] = {}
    starts: Any = range(0, len(records), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="val", unit="batch", leave=False)
    # The backend wraps ``model`` without copying it; closing it only drops that reference.
    with TorchBackend(model, class_names=class_names, device=str(device)) as backend:
        meta = backend.metadata
        for s in starts:
            chunk = records[s : s + batch_size]
            batch, infos = preprocess([read_image(r.image_path) for r in chunk], meta)
            for r, dets in zip(chunk, detections_from_heads(backend.infer(batch), infos, meta, config)):
                out[r.image_id] = dets
    return out


def validate(
    model: nn.Module,
    val: VOCSet,
    device: torch.device,
    metric: str,
    progress: bool = False,
) -> EvalResult:
    """``metric`` (``voc07``, ``voc12``, ``coco``) of ``model`` on ``val`` (its own class names)."""
    dets = predict(model, val.class_names, val.records, device, progress=progress)
    as_tuples = {k: (d.boxes, d.scores, d.class_ids) for k, d in dets.items()}
    return evaluate(val.records, as_tuples, val.class_names, metric)
