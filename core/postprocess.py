"""Postprocessing shared by the runtime, calibration and evaluation (numpy only, no torch).

* :func:`decode`: raw YOLO heads -> candidate boxes, fused with the confidence threshold. The objectness
  logit is compared with ``logit(conf)`` first (one comparison per anchor and cell, no ``exp``); only the
  candidates whose objectness can pass get their box and class logits decoded, so a typical frame touches
  a few dozen of the 10647 candidates at 416.
* :func:`nms`, :func:`batched_nms`: greedy non-maximum suppression with the semantics of
  ``torchvision.ops.nms`` / ``batched_nms`` (kept indices by descending score; a box is suppressed when
  its IoU with a kept box is strictly greater than the threshold; boxes of different classes never
  suppress each other).
* :func:`scale_boxes`: network-input pixels -> original image pixels (undo the letterbox, clip).
* :func:`box_iou`: pairwise IoU like ``torchvision.ops.box_iou``.

Boxes are float32 (K, 4) ``x1, y1, x2, y2`` in pixels. Python 3.8 compatible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .detections import Detections
from .metadata import ModelMetadata
from .preprocess import LetterboxInfo

# One image's candidates: boxes float32 (K, 4) xyxy, scores float32 (K,), class ids int64 (K,).
Candidates = Tuple[np.ndarray, np.ndarray, np.ndarray]

# Prefilter margin on the objectness logit: float32 sigmoid near the threshold may round either way, so
# candidates within this margin are decoded and the exact ``score > conf`` test decides.
_LOGIT_MARGIN = 1e-3
_MAX_LOG_WH = np.float32(30.0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _empty() -> Candidates:
    return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64)


def decode(
    outputs: Sequence[np.ndarray], meta: ModelMetadata, conf_threshold: float = 0.25
) -> List[Candidates]:
    """Decode raw heads into per-image candidate detections above ``conf_threshold``.

    ``outputs``: one float array (N, A * (5 + C), S_h, S_w) per head in ``meta.heads`` order (channel
    layout and formula in :mod:`yolo_nano.core.metadata`). For each anchor and cell the class with the
    highest probability is taken; ``score = sigmoid(obj) * class_prob`` and a candidate is kept when
    ``score > conf_threshold``.

    Returns, per image, ``(boxes, scores, class_ids)``: boxes float32 (K, 4) xyxy in network-input
    pixels, scores float32 (K,), class ids int64 (K,), in head, anchor, cell order (not sorted).
    """
    if len(outputs) != len(meta.heads):
        raise ValueError(
            f"decode got {len(outputs)} head outputs, the model metadata lists {len(meta.heads)}"
        )
    conf = float(conf_threshold)
    if not 0.0 <= conf <= 1.0:
        raise ValueError(f"conf_threshold must be in [0, 1], got {conf_threshold}")
    nc = meta.num_classes
    if conf <= 0.0:
        logit_thr = -np.inf
    elif conf >= 1.0:
        logit_thr = np.inf
    else:
        logit_thr = math.log(conf / (1.0 - conf)) - _LOGIT_MARGIN
    softmax = meta.class_activation == "softmax"
    n_images = outputs[0].shape[0]
    per_image: List[List[Candidates]] = [[] for _ in range(n_images)]

    for out, head in zip(outputs, meta.heads):
        na = head.num_anchors
        n, ch, sh, sw = out.shape
        if n != n_images or ch != na * (5 + nc):
            raise ValueError(
                f"head {head.name!r} has shape {tuple(out.shape)}, expected ({n_images}, {na * (5 + nc)}, S, S)"
            )
        raw = out.reshape(n, na, 5 + nc, sh * sw)
        anchors = np.asarray(head.anchors, dtype=np.float32)  # (A, 2) pixels
        stride = np.float32(head.stride)
        for i in range(n):
            obj_logit = raw[i, :, 4, :]  # (A, S*S)
            a_idx, cell = np.nonzero(obj_logit > logit_thr)
            if a_idx.size == 0:
                continue
            cand = raw[i][a_idx, :, cell].astype(np.float32, copy=False)  # (K, 5 + C)
            obj = _sigmoid(cand[:, 4])
            logits = cand[:, 5:]
            cls = np.argmax(logits, axis=1)
            best = logits[np.arange(cls.size), cls]
            if softmax:
                prob = 1.0 / np.exp(logits - best[:, None]).sum(axis=1)
            else:
                prob = _sigmoid(best)
            scores = (obj * prob).astype(np.float32)
            keep = scores > conf
            if not keep.any():
                continue
            cand, cls, scores, a_idx, cell = cand[keep], cls[keep], scores[keep], a_idx[keep], cell[keep]
            gx = (cell % sw).astype(np.float32)
            gy = (cell // sw).astype(np.float32)
            cx = (_sigmoid(cand[:, 0]) + gx) * stride
            cy = (_sigmoid(cand[:, 1]) + gy) * stride
            # tw/th are clamped so exp() stays finite in float32 (an untrained head at conf 0.001 emits
            # huge logits); any box this clamp changes is larger than 10^13 pixels anyway.
            half_w = anchors[a_idx, 0] * np.exp(np.minimum(cand[:, 2], _MAX_LOG_WH)) * np.float32(0.5)
            half_h = anchors[a_idx, 1] * np.exp(np.minimum(cand[:, 3], _MAX_LOG_WH)) * np.float32(0.5)
            boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1).astype(np.float32)
            per_image[i].append((boxes, scores, cls.astype(np.int64)))

    results: List[Candidates] = []
    for parts in per_image:
        if not parts:
            results.append(_empty())
        elif len(parts) == 1:
            results.append(parts[0])
        else:
            results.append(
                (
                    np.concatenate([p[0] for p in parts]),
                    np.concatenate([p[1] for p in parts]),
                    np.concatenate([p[2] for p in parts]),
                )
            )
    return results


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas (K,) of xyxy boxes (K, 4), ``(x2 - x1) * (y2 - y1)`` like torchvision (no +1)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise IoU (N, M) of xyxy boxes (N, 4) and (M, 4), as ``torchvision.ops.box_iou``."""
    b1 = np.asarray(boxes1, dtype=np.float32).reshape(-1, 4)
    b2 = np.asarray(boxes2, dtype=np.float32).reshape(-1, 4)
    lt = np.maximum(b1[:, None, :2], b2[None, :, :2])
    rb = np.minimum(b1[:, None, 2:], b2[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(b1)[:, None] + box_area(b2)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def _greedy_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: Optional[np.ndarray],
    iou_threshold: float,
    max_output: Optional[int],
) -> np.ndarray:
    """The one greedy NMS loop behind :func:`nms` and :func:`batched_nms` (float32 IoU like torchvision)."""
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"nms: {boxes.shape[0]} boxes but {scores.shape[0]} scores")
    if classes is not None and classes.shape[0] != boxes.shape[0]:
        raise ValueError(f"batched_nms: {boxes.shape[0]} boxes but {classes.shape[0]} category ids")
    if boxes.shape[0] == 0:
        return np.zeros((0,), np.int64)
    limit = boxes.shape[0] if max_output is None else int(max_output)
    thr = np.float32(iou_threshold)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[order, k]) for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    cls = None if classes is None else np.ascontiguousarray(classes[order])
    keep: List[int] = []
    rest = np.arange(order.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        while rest.size and len(keep) < limit:
            i = rest[0]
            keep.append(i)
            rest = rest[1:]
            if not rest.size:
                break
            w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
            h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
            inter = np.maximum(w, 0) * np.maximum(h, 0)
            # NaN IoU (zero union) compares False: such a box is kept, as in torchvision.
            suppress = inter / (areas[i] + areas[rest] - inter) > thr
            if cls is not None:
                suppress &= cls[rest] == cls[i]
            rest = rest[~suppress]
    return order[np.asarray(keep, dtype=np.int64)].astype(np.int64)


def nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_output: Optional[int] = None
) -> np.ndarray:
    """Greedy NMS. Returns int64 indices of the kept boxes, by descending score.

    ``boxes`` (K, 4) xyxy, ``scores`` (K,). A box is dropped when its IoU with an already kept,
    higher-scoring box is > ``iou_threshold`` (equal scores: the lower index comes first). Same result
    as ``torchvision.ops.nms``. ``max_output`` stops after that many kept boxes (the same as slicing the
    full result, only faster).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    return _greedy_nms(boxes, scores, None, iou_threshold, max_output)


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    idxs: np.ndarray,
    iou_threshold: float,
    max_output: Optional[int] = None,
) -> np.ndarray:
    """NMS per category ``idxs`` (K,) int: boxes of different categories never suppress each other.

    Returns int64 indices by descending score over all categories (equal scores: lower index first), as
    ``torchvision.ops.batched_nms``; exact float32 IoUs, no coordinate-offset trick. Without
    ``max_output`` each category runs its own greedy pass on its own boxes and the kept lists are merged
    (cheapest when most boxes survive, e.g. ``conf 0.001`` evaluation); with ``max_output`` one pass over
    all boxes suppresses only within a category and stops after ``max_output`` kept boxes (cheapest for
    the runtime's ``max_detections``). Both give the same indices.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    idxs = np.asarray(idxs).reshape(-1)
    if max_output is not None or boxes.shape[0] == 0:
        return _greedy_nms(boxes, scores, idxs, iou_threshold, max_output)
    if idxs.shape[0] != boxes.shape[0]:
        raise ValueError(f"batched_nms: {boxes.shape[0]} boxes but {idxs.shape[0]} category ids")
    by_class = np.argsort(idxs, kind="stable")
    starts = np.flatnonzero(np.diff(idxs[by_class])) + 1
    kept = []
    for group in np.split(by_class, starts):
        kept.append(group[_greedy_nms(boxes[group], scores[group], None, iou_threshold, None)])
    k = np.concatenate(kept)
    return k[np.lexsort((k, -scores[k]))].astype(np.int64)


def scale_boxes(boxes: np.ndarray, info: LetterboxInfo) -> np.ndarray:
    """Map xyxy boxes (K, 4) from network-input pixels back to the original image's pixels.

    Undoes :func:`yolo_nano.core.preprocess.letterbox` (subtract the padding, divide by the scale) and
    clips to ``[0, width] x [0, height]`` of the original image. Returns a new float32 array.
    """
    out = np.array(boxes, dtype=np.float32, copy=True).reshape(-1, 4)
    left, top = info.pad
    h0, w0 = info.original_shape
    out[:, [0, 2]] -= np.float32(left)
    out[:, [1, 3]] -= np.float32(top)
    out /= np.float32(info.scale)
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w0)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h0)
    return out


@dataclass(frozen=True)
class PostprocessConfig:
    """How raw heads become detections (the Detector's settings).

    ``conf_threshold``: keep ``score > conf_threshold``; ``iou_threshold``: NMS drops a box whose IoU
    with a kept box of the same class (any class when ``class_agnostic``) is > it; ``max_detections``:
    at most this many per image, highest scores first; ``classes``: int64 class ids to keep (None: all).
    """

    conf_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100
    class_agnostic: bool = False
    classes: Optional[np.ndarray] = None


def detections_from_heads(
    outputs: Sequence[np.ndarray],
    infos: Sequence[LetterboxInfo],
    meta: ModelMetadata,
    config: PostprocessConfig,
) -> List[Detections]:
    """Raw heads (N, A*(5+C), S, S) of N images + their letterbox infos -> one :class:`Detections` each:
    decode (fused with the threshold) -> class filter -> NMS -> boxes in original-image pixels.

    The numpy reference of the whole post-process: the Detector's CPU path, training validation and
    the oracle the CUDA pipeline is compared with.
    """
    results = []
    for (boxes, scores, cls), info in zip(decode(outputs, meta, config.conf_threshold), infos):
        if config.classes is not None and cls.size:
            m = np.isin(cls, config.classes)
            boxes, scores, cls = boxes[m], scores[m], cls[m]
        if config.class_agnostic:
            keep = nms(boxes, scores, config.iou_threshold, max_output=config.max_detections)
        else:
            keep = batched_nms(boxes, scores, cls, config.iou_threshold, max_output=config.max_detections)
        results.append(
            Detections(
                boxes=scale_boxes(boxes[keep], info),
                scores=scores[keep].astype(np.float32),
                class_ids=cls[keep].astype(np.int64),
                class_names=meta.class_names,
                image_shape=info.original_shape,
            )
        )
    return results
