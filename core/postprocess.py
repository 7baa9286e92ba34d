"""Postprocessing shared by the runtime, calibration and evaluation (numpy only, no torch).

* :func:`decode`: raw YOLO heads -> candidate boxes, fused with the confidence threshold. The objectness
  logit is compared with ``logit(conf)`` first (one comparison per anchor and cell, no ``exp``); only the
  candidates whose objectness can pass get their box and class logits decoded, so a typical frame touches
  a few dozen of the 10647 candidates at 416. Non-finite outputs (NaN/inf: an FP16/INT8 overflow) are
  dropped and counted (:class:`DecodeStats`).
* :func:`nms`, :func:`batched_nms`: greedy non-maximum suppression with the semantics of
  ``torchvision.ops.nms`` / ``batched_nms`` (kept indices by descending score; a box is suppressed when
  its IoU with a kept box is strictly greater than the threshold; boxes of different classes never
  suppress each other), vectorised in blocks (no Python loop per kept box).
* :func:`scale_boxes`: network-input pixels -> original image pixels (undo the letterbox, clip).
* :func:`box_iou`: pairwise IoU like ``torchvision.ops.box_iou``.

The CUDA kernels in ``yolo_nano/runtime/kernels`` implement exactly these semantics and are tested
against these functions: change one, change both. Boxes are float32 (K, 4) ``x1, y1, x2, y2`` in pixels.
Python 3.8 compatible. (Over 450 lines: decode, NMS and the post-process that chains them are one
contract with the CUDA kernels and read best side by side.)
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

# Prefilter margin on the objectness logit: the score is rounded to float32, so candidates within this
# margin of logit(conf) are decoded and the exact ``score > conf`` test decides.
_LOGIT_MARGIN = 1e-3
# tw/th are clamped so exp() stays finite (an untrained head at conf 0.001 emits huge logits); any box
# this clamp changes is larger than 10^13 pixels anyway.
_MAX_LOG_WH = 30.0


@dataclass
class DecodeStats:
    """Counters :func:`decode` adds to when passed one (pass the same object to several calls to sum).

    ``nonfinite``: anchor-cell candidates dropped because a model output was NaN or infinite (what an
    FP16/INT8 overflow looks like): every cell whose objectness logit is not finite, plus every cell
    whose objectness passes the threshold and whose box or class logits, or decoded box, are not finite.
    """

    nonfinite: int = 0


def decode_thresholds(conf_threshold: float) -> Tuple[np.float32, np.float32]:
    """The two float32 thresholds of :func:`decode` (and the CUDA decode kernel): the objectness-logit
    prefilter (``logit(conf) - margin``; -inf at conf 0, +inf at conf 1) and ``conf`` itself."""
    conf = float(conf_threshold)
    if not 0.0 <= conf <= 1.0:
        raise ValueError(f"conf_threshold must be in [0, 1], got {conf_threshold}")
    if conf <= 0.0:
        logit_thr = -math.inf
    elif conf >= 1.0:
        logit_thr = math.inf
    else:
        logit_thr = math.log(conf / (1.0 - conf)) - _LOGIT_MARGIN
    return np.float32(logit_thr), np.float32(conf)


def _sigmoid64(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _empty() -> Candidates:
    return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64)


def decode(
    outputs: Sequence[np.ndarray],
    meta: ModelMetadata,
    conf_threshold: float = 0.25,
    stats: Optional[DecodeStats] = None,
) -> List[Candidates]:
    """Decode raw heads into per-image candidate detections above ``conf_threshold``.

    ``outputs``: one float array (N, A * (5 + C), S_h, S_w) per head in ``meta.heads`` order (channel
    layout and formula in :mod:`yolo_nano.core.metadata`). For each anchor and cell the class with the
    highest logit is taken (the first on ties); ``score = sigmoid(obj) * class_prob`` and a candidate is
    kept when ``score > conf_threshold``. The arithmetic of the (few) candidates runs in float64 and is
    rounded to float32 once at the end, so the CUDA kernel gives the same bits.

    Candidates with non-finite outputs are dropped and counted into ``stats.nonfinite`` when ``stats``
    (a :class:`DecodeStats`) is given.

    Returns, per image, ``(boxes, scores, class_ids)``: boxes float32 (K, 4) xyxy in network-input
    pixels, scores float32 (K,), class ids int64 (K,), in head, anchor, cell order (not sorted).
    """
    if len(outputs) != len(meta.heads):
        raise ValueError(
            f"decode got {len(outputs)} head outputs, the model metadata lists {len(meta.heads)}"
        )
    logit_thr, conf = decode_thresholds(conf_threshold)
    nc = meta.num_classes
    softmax = meta.class_activation == "softmax"
    n_images = outputs[0].shape[0]
    per_image: List[List[Candidates]] = [[] for _ in range(n_images)]
    nonfinite = 0

    for out, head in zip(outputs, meta.heads):
        na = head.num_anchors
        n, ch, sh, sw = out.shape
        if n != n_images or ch != na * (5 + nc):
            raise ValueError(
                f"head {head.name!r} has shape {tuple(out.shape)}, expected ({n_images}, {na * (5 + nc)}, S, S)"
            )
        raw = out.reshape(n, na, 5 + nc, sh * sw)
        anchors = np.asarray(head.anchors, dtype=np.float64)  # (A, 2) pixels
        stride = float(head.stride)
        for i in range(n):
            obj_logit = raw[i, :, 4, :]  # (A, S*S)
            passing = obj_logit > logit_thr  # NaN compares False
            finite = np.isfinite(obj_logit)
            bad = finite.size - int(np.count_nonzero(finite))
            if bad:
                nonfinite += bad
                passing &= finite  # +inf objectness is an overflow too
            a_idx, cell = np.nonzero(passing)
            if a_idx.size == 0:
                continue
            cand = raw[i][a_idx, :, cell]  # (K, 5 + C)
            ok = np.isfinite(cand).all(axis=1)
            if not ok.all():
                nonfinite += int(ok.size - np.count_nonzero(ok))
                cand, a_idx, cell = cand[ok], a_idx[ok], cell[ok]
                if not cand.shape[0]:
                    continue
            c64 = cand.astype(np.float64)
            with np.errstate(over="ignore"):  # exp(-x) of a huge negative logit: inf, sigmoid 0
                obj = _sigmoid64(c64[:, 4])
                logits = c64[:, 5:]
                cls = np.argmax(logits, axis=1)
                best = logits[np.arange(cls.size), cls]
                if softmax:
                    prob = 1.0 / np.exp(logits - best[:, None]).sum(axis=1)
                else:
                    prob = _sigmoid64(best)
                scores = (obj * prob).astype(np.float32)
                keep = scores > conf
                if not keep.any():
                    continue
                c64, cls, scores, a_idx, cell = c64[keep], cls[keep], scores[keep], a_idx[keep], cell[keep]
                gx = (cell % sw).astype(np.float64)
                gy = (cell // sw).astype(np.float64)
                cx = (_sigmoid64(c64[:, 0]) + gx) * stride
                cy = (_sigmoid64(c64[:, 1]) + gy) * stride
                half_w = anchors[a_idx, 0] * np.exp(np.minimum(c64[:, 2], _MAX_LOG_WH)) * 0.5
                half_h = anchors[a_idx, 1] * np.exp(np.minimum(c64[:, 3], _MAX_LOG_WH)) * 0.5
                boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1).astype(
                    np.float32
                )
            ok = np.isfinite(boxes).all(axis=1)  # absurd anchors overflow float32
            if not ok.all():
                nonfinite += int(ok.size - np.count_nonzero(ok))
                boxes, scores, cls = boxes[ok], scores[ok], cls[ok]
                if not scores.size:
                    continue
            per_image[i].append((boxes, scores, cls.astype(np.int64)))

    if stats is not None:
        stats.nonfinite += nonfinite
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


# Greedy NMS, vectorised. Boxes are visited by descending score (equal scores: lower index first). A
# class-aware set larger than _NMS_DENSE is split per class (boxes of different classes never interact):
# while the classes are small (classes x largest^2 <= _NMS_PADDED) all at once, padded to one 3-D
# suppression tensor, else class by class. A set is processed in blocks of _NMS_BLOCK in visiting order: the block is first filtered against the
# boxes kept so far (in chunks of _NMS_KEPT_CHUNK, dropping removed boxes as it goes), then resolved
# within itself, strip by strip of _NMS_STRIP rows of its pairwise suppression matrix (only the part
# right of the diagonal, and no strip after the last one needed). Every IoU is the reference's float32
# expression inter / (area_i + area_j - inter), so the kept set is exactly the one-box-at-a-time loop's.
_NMS_DENSE = 128
_NMS_PADDED = 1 << 20
_NMS_BLOCK = 256
_NMS_KEPT_CHUNK = 256
_NMS_STRIP = 128


def _suppresses(
    a: Tuple[np.ndarray, ...], b: Tuple[np.ndarray, ...], thr: np.float32, flat: bool = True
) -> np.ndarray:
    """(len a, len b) bool: IoU > ``thr`` (and the same class when classes are given). ``a``/``b``:
    (x1, y1, x2, y2, area, classes or None); ``flat=False``: already shaped to broadcast against each
    other. Callers silence 0/0 (a NaN IoU, which never suppresses)."""
    ax1, ay1, ax2, ay2, aarea, acls = a
    bx1, by1, bx2, by2, barea, bcls = b
    if flat:
        ax1, ay1, ax2, ay2, aarea = ax1[:, None], ay1[:, None], ax2[:, None], ay2[:, None], aarea[:, None]
        acls = None if acls is None else acls[:, None]
    inter = np.minimum(ax2, bx2)
    inter -= np.maximum(ax1, bx1)
    h = np.minimum(ay2, by2)
    h -= np.maximum(ay1, by1)
    np.maximum(inter, 0, out=inter)
    if thr < 0:  # else a negative height needs no clamp: it makes inter <= 0, never > thr either way
        np.maximum(h, 0, out=h)
    inter *= h
    union = aarea + barea
    union -= inter
    np.divide(inter, union, out=inter)
    sup = inter > thr
    if acls is not None:
        sup &= acls == bcls
    return sup


def _resolve(block: Tuple[np.ndarray, ...], thr: np.float32, limit: int) -> List[int]:
    """Greedy keep inside one block (boxes in visiting order, see :func:`_suppresses` for ``block``).
    Returns the kept positions (ascending), at most ``limit``. The suppression matrix is built in strips
    of rows, each only from its first column on; the loop does one cheap Python step per box on bit
    masks (Python ints), so the O(m^2) work stays in numpy."""
    m = block[0].shape[0]
    strip = m if m <= _NMS_STRIP * 3 // 2 else _NMS_STRIP
    keep: List[int] = []
    removed = 0
    for top in range(0, m, strip):
        first = top - top % 8  # byte-aligned first column: bits of earlier boxes are never read again
        if strip == m:
            rows = cols = block
        else:
            rows = tuple(None if c is None else c[top : top + strip] for c in block)
            cols = tuple(None if c is None else c[first:] for c in block)
        packed = np.packbits(_suppresses(rows, cols, thr), axis=1, bitorder="little")
        width = packed.shape[1]
        data = packed.tobytes()
        for k in range(rows[0].shape[0]):
            i = top + k
            if not (removed >> i) & 1:
                keep.append(i)
                if len(keep) >= limit:
                    return keep
                removed |= int.from_bytes(data[k * width : (k + 1) * width], "little") << first
    return keep


def _nms_sorted(cols: Tuple[np.ndarray, ...], thr: np.float32, limit: int) -> np.ndarray:
    """Greedy NMS of boxes already in visiting order. ``cols``: (x1, y1, x2, y2, area, classes or None),
    each (K,). Returns the kept positions, ascending, at most ``limit``."""
    n = cols[0].shape[0]
    if n <= _NMS_BLOCK:
        return np.asarray(_resolve(cols, thr, limit), dtype=np.int64)
    kept: List[np.ndarray] = []
    n_kept = 0
    for start in range(0, n, _NMS_BLOCK):
        live = np.arange(start, min(n, start + _NMS_BLOCK))
        if n_kept:
            done = np.concatenate(kept)
            for k in range(0, done.size, _NMS_KEPT_CHUNK):
                chunk = done[k : k + _NMS_KEPT_CHUNK]
                live = live[~_suppresses(_take(cols, chunk), _take(cols, live), thr).any(axis=0)]
                if not live.size:
                    break
            if not live.size:
                continue
        pos = live[np.asarray(_resolve(_take(cols, live), thr, limit - n_kept), dtype=np.int64)]
        kept.append(pos)
        n_kept += pos.size
        if n_kept >= limit:
            break
    return np.concatenate(kept) if kept else np.zeros((0,), np.int64)


def _take(cols: Tuple[np.ndarray, ...], idx: np.ndarray) -> Tuple[np.ndarray, ...]:
    return tuple(None if c is None else c[idx] for c in cols)


def _by_class_padded(
    cols: Tuple[np.ndarray, ...], groups: List[np.ndarray], thr: np.float32, limit: int
) -> np.ndarray:
    """Greedy NMS of many small classes at once: the classes' boxes padded to (classes, largest) and one
    (classes, largest, largest) suppression tensor. Padding is an empty box at the origin: its IoU with
    anything is 0 or 0/0, which never exceeds a threshold >= 0. Returns kept positions (any order)."""
    sizes = np.asarray([g.size for g in groups])
    width = int(sizes.max())
    padded = np.zeros((len(groups), width), np.int64)
    row = np.repeat(np.arange(len(groups)), sizes)
    col = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    members = np.concatenate(groups)
    padded[row, col] = members
    fields = []
    for c in cols[:5]:
        f = np.zeros((len(groups), width), np.float32)
        f[row, col] = c[members]
        fields.append(f)
    x1, y1, x2, y2, area = fields
    a = (x1[:, :, None], y1[:, :, None], x2[:, :, None], y2[:, :, None], area[:, :, None], None)
    b = (x1[:, None, :], y1[:, None, :], x2[:, None, :], y2[:, None, :], area[:, None, :], None)
    packed = np.packbits(_suppresses(a, b, thr, flat=False), axis=2, bitorder="little")
    stride = packed.shape[2]
    data = packed.tobytes()
    members_of = padded.tolist()
    keep: List[int] = []
    for gi, size in enumerate(sizes.tolist()):
        removed = 0
        kept_here = 0
        base = gi * width * stride
        for k in range(size):
            if not (removed >> k) & 1:
                keep.append(members_of[gi][k])
                kept_here += 1
                if kept_here >= limit:
                    break
                removed |= int.from_bytes(data[base + k * stride : base + (k + 1) * stride], "little")
    return np.asarray(keep, dtype=np.int64)


def _greedy_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: Optional[np.ndarray],
    iou_threshold: float,
    max_output: Optional[int],
) -> np.ndarray:
    """The one greedy NMS behind :func:`nms` and :func:`batched_nms` (float32 IoU like torchvision)."""
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"nms: {boxes.shape[0]} boxes but {scores.shape[0]} scores")
    if classes is not None and classes.shape[0] != boxes.shape[0]:
        raise ValueError(f"batched_nms: {boxes.shape[0]} boxes but {classes.shape[0]} category ids")
    n = boxes.shape[0]
    limit = n if max_output is None else int(max_output)
    if n == 0 or limit <= 0:
        return np.zeros((0,), np.int64)
    thr = np.float32(iou_threshold)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[order].T if n <= 64 else np.ascontiguousarray(boxes[order].T)
    area = (x2 - x1) * (y2 - y1)
    cls = None if classes is None else classes[order]
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 IoU of empty boxes: NaN, never suppresses
        if cls is None or n <= _NMS_DENSE:
            pos = _nms_sorted((x1, y1, x2, y2, area, cls), thr, limit)
        else:
            by_class = np.argsort(cls, kind="stable")  # per class, still in visiting order
            sorted_cls = cls[by_class]
            starts = np.flatnonzero(sorted_cls[1:] != sorted_cls[:-1]) + 1
            groups = np.split(by_class, starts)
            largest = max(g.size for g in groups)
            if thr >= 0 and len(groups) * largest * largest <= _NMS_PADDED:
                pos = _by_class_padded((x1, y1, x2, y2, area, None), groups, thr, limit)
            else:
                parts = []
                for group in groups:
                    cols = (x1[group], y1[group], x2[group], y2[group], area[group], None)
                    parts.append(group[_nms_sorted(cols, thr, limit)])
                pos = np.concatenate(parts)
            pos = np.sort(pos)[:limit]
    return order[pos].astype(np.int64)


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
    ``torchvision.ops.batched_nms``; exact float32 IoUs, no coordinate-offset trick. ``max_output``
    keeps the first that many (the same as slicing the full result).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    idxs = np.asarray(idxs).reshape(-1)
    return _greedy_nms(boxes, scores, idxs, iou_threshold, max_output)


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
    stats: Optional[DecodeStats] = None,
) -> List[Detections]:
    """Raw heads (N, A*(5+C), S, S) of N images + their letterbox infos -> one :class:`Detections` each:
    decode (fused with the threshold) -> class filter -> NMS -> boxes in original-image pixels.

    The numpy reference of the whole post-process: the Detector's CPU path, training validation and
    the oracle the CUDA pipeline is compared with. ``stats``: see :func:`decode`.
    """
    results = []
    for (boxes, scores, cls), info in zip(decode(outputs, meta, config.conf_threshold, stats), infos):
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
