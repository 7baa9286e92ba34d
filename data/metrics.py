"""Detection metrics (torch-free, Python 3.8): Pascal VOC AP as the official devkit computes it, and
COCO-style mAP@[.5:.95] through faster-coco-eval or pycocotools (imported lazily).

VOC rules (``VOCdevkit`` ``VOCevaldet.m`` / py-faster-rcnn ``voc_eval.py``):

* detections of a class are taken in descending score order; each is matched to the ground-truth box
  of its image and class with the highest IoU (difficult ones and already matched ones included);
* IoU > ``iou_threshold`` (strictly) with a difficult box: the detection is ignored (neither true nor
  false positive); with a box not yet matched: true positive; with an already matched box, or
  IoU <= threshold: false positive;
* difficult boxes do not count in the number of positives (recall's denominator);
* ``voc07``: 11-point interpolated AP (mean of the max precision at recall >= 0, 0.1, ..., 1);
  ``voc12`` (VOC2010+): area under the monotone precision envelope at every recall change.

Boxes are xyxy in 0-based continuous pixels (see :mod:`yolo_nano.data.voc`): plain IoU on them equals
the devkit's ``+1`` IoU on its 1-based inclusive integers. A class without any non-difficult ground
truth has AP ``nan`` and is left out of the mean (the devkit would divide by zero).

Saved detections in the COCO results format (``nano-eval --detections``) are read by
:func:`read_coco_results`, which validates every field: any malformed file (not JSON, too deeply
nested, not UTF-8, wrong types, NaN/inf/huge numbers, unknown image or class) is one
:class:`ResultsFormatError` naming the detection and the field, never a crash or NaN in a metric.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

METRICS = ("voc07", "voc12", "coco")

# per image: boxes (K, 4) xyxy float, scores (K,), class ids (K,) int
ImageDetections = Tuple[np.ndarray, np.ndarray, np.ndarray]
# pixels: a bbox value beyond this is corrupt (and x + w would leave float32's range near 3e38)
MAX_RESULT_COORDINATE = 1e9
_RESULT_KEYS = ("image_id", "category_id", "bbox", "score")


class ResultsFormatError(ValueError):
    """A COCO results file that is unreadable or malformed; the message names the detection and field."""


def _real(value: Any) -> Optional[float]:
    """``value`` as a finite float, or None for bools, non-numbers, NaN, inf and ints beyond float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def parse_coco_results(
    items: Any, class_names: Sequence[str], image_ids: Sequence[str], source: str = "<results>"
) -> Dict[str, ImageDetections]:
    """Validate a decoded COCO results list (``[{image_id, category_id, bbox [x, y, w, h], score}]``)
    -> image id -> (boxes (K, 4) xyxy float32 pixels, scores (K,) float64, class ids (K,) int64).

    ``image_id``: a string (or integer) naming an image of ``image_ids``; ``category_id``: a 0-based
    index into ``class_names``; bbox values and score: finite numbers, ``|bbox| <=``
    :data:`MAX_RESULT_COORDINATE`, ``w, h >= 0``. :class:`ResultsFormatError` for anything else.
    """
    if not isinstance(items, list):
        raise ResultsFormatError(f"{source}: expected a JSON list of detections (COCO results format)")
    known = set(image_ids)
    per: Dict[str, List[Tuple[List[float], float, int]]] = {}
    for n, d in enumerate(items):
        where = f"{source}: detection {n}"
        if not isinstance(d, dict) or not all(k in d for k in _RESULT_KEYS):
            raise ResultsFormatError(f"{where}: needs image_id, category_id, bbox and score")
        raw_id = d["image_id"]
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            raise ResultsFormatError(f"{where}: image_id must be the image's id string, got {raw_id!r:.60}")
        iid = str(raw_id)
        if iid not in known:
            raise ResultsFormatError(f"{where}: image_id {iid[:60]!r} is not in the evaluated split")
        cat = d["category_id"]
        if not isinstance(cat, int) or isinstance(cat, bool) or not 0 <= cat < len(class_names):
            raise ResultsFormatError(
                f"{where}: category_id {cat!r:.60} is not an index into the {len(class_names)} classes "
                "(0-based; pass --classes FILE for another class list)"
            )
        bbox = d["bbox"]
        values = [_real(v) for v in bbox] if isinstance(bbox, list) and len(bbox) == 4 else [None]
        if any(v is None or abs(v) > MAX_RESULT_COORDINATE for v in values) or values[2] < 0 or values[3] < 0:
            raise ResultsFormatError(
                f"{where}: bbox must be [x, y, w, h] with finite numbers (|v| <= {MAX_RESULT_COORDINATE:g}) "
                f"and w, h >= 0, got {bbox!r:.80}"
            )
        score = _real(d["score"])
        if score is None:
            raise ResultsFormatError(f"{where}: score must be a finite number, got {d['score']!r:.60}")
        per.setdefault(iid, []).append((values, score, cat))  # type: ignore[arg-type]
    out: Dict[str, ImageDetections] = {}
    for iid, dets in per.items():
        b = np.array([x for x, _, _ in dets], np.float64)
        boxes = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1).astype(np.float32)
        out[iid] = (
            boxes,
            np.array([s for _, s, _ in dets], np.float64),  # float32 would turn a score of 1e308 into inf
            np.array([c for _, _, c in dets], np.int64),
        )
    return out


def read_coco_results(
    path: str, class_names: Sequence[str], image_ids: Sequence[str]
) -> Dict[str, ImageDetections]:
    """Read and validate the COCO results JSON file ``path`` (see :func:`parse_coco_results`)."""
    if os.path.exists(path) and not os.path.isfile(path):
        raise ResultsFormatError(f"cannot read {path}: not a regular file")  # a FIFO would block
    try:
        with open(path, encoding="utf-8") as f:
            items = json.load(f)
    except OSError as e:
        raise ResultsFormatError(f"cannot read {path}: {e}") from e
    except UnicodeDecodeError as e:
        raise ResultsFormatError(f"{path} is not UTF-8 JSON text: {e}") from e
    except ValueError as e:  # JSONDecodeError
        raise ResultsFormatError(f"{path} is not valid JSON: {e}") from e
    except RecursionError as e:
        raise ResultsFormatError(f"{path} is not valid COCO results: JSON nested too deeply") from e
    return parse_coco_results(items, class_names, image_ids, path)


@dataclass
class EvalResult:
    """``map``: mean AP over classes that have ground truth (0..1); ``per_class``: AP by class name
    (``nan`` when the class has no non-difficult ground truth); ``num_positives``: such boxes a class."""

    metric: str
    map: float
    per_class: Dict[str, float]
    num_positives: Dict[str, int]
    iou_threshold: float = 0.5
    extra: Optional[Dict[str, float]] = None

    def to_json_dict(self) -> Dict[str, Any]:
        """``{"map": float, "per_class": {name: ap or None}}`` plus the metric name."""
        return {
            "metric": self.metric,
            "map": float(self.map),
            "per_class": {k: (None if math.isnan(v) else float(v)) for k, v in self.per_class.items()},
            **({"extra": self.extra} if self.extra else {}),
        }


def ap_from_pr(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """Average precision from a recall/precision curve (1-D arrays in detection order)."""
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            mask = recall >= t
            ap += (float(np.max(precision[mask])) if mask.any() else 0.0) / 11.0
        return ap
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix1 = np.maximum(boxes[:, 0], box[0])
    iy1 = np.maximum(boxes[:, 1], box[1])
    ix2 = np.minimum(boxes[:, 2], box[2])
    iy2 = np.minimum(boxes[:, 3], box[3])
    inter = np.maximum(ix2 - ix1, 0.0) * np.maximum(iy2 - iy1, 0.0)
    union = (
        (box[2] - box[0]) * (box[3] - box[1])
        + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        - inter
    )
    return inter / np.maximum(union, np.finfo(np.float64).eps)


def voc_evaluate(
    ground_truth: Sequence[Any],
    detections: Mapping[str, ImageDetections],
    class_names: Sequence[str],
    metric: str = "voc07",
    iou_threshold: float = 0.5,
) -> EvalResult:
    """VOC AP per class and mAP.

    ``ground_truth``: records with ``image_id``, ``boxes`` (K, 4), ``labels`` (K,), ``difficult`` (K,)
    (e.g. :class:`yolo_nano.data.voc.VOCRecord`); ``detections``: image id -> (boxes, scores,
    class ids) in the same pixel coordinates (images without an entry have no detections; entries for
    unknown image ids are an error). ``metric``: ``voc07`` or ``voc12``.
    """
    if metric not in ("voc07", "voc12"):
        raise ValueError(f"metric must be 'voc07' or 'voc12' here, got {metric!r}")
    known = {r.image_id for r in ground_truth}
    unknown = [k for k in detections if k not in known]
    if unknown:
        raise ValueError(
            f"{len(unknown)} detection image ids are not in the ground truth (e.g. {unknown[0]!r}); "
            "image_id must be the VOC image id of the evaluated split"
        )
    num_classes = len(class_names)
    per_class: Dict[str, float] = {}
    num_pos: Dict[str, int] = {}
    for c, name in enumerate(class_names):
        gt: Dict[str, Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        npos = 0
        for r in ground_truth:
            labels = np.asarray(r.labels).reshape(-1)
            m = labels == c
            boxes = np.asarray(r.boxes, np.float64).reshape(-1, 4)[m]
            diff = np.asarray(r.difficult, bool).reshape(-1)[m]
            gt[r.image_id] = (boxes, diff, np.zeros(len(boxes), bool))
            npos += int((~diff).sum())
        ids: List[str] = []
        scores: List[np.ndarray] = []
        boxes_l: List[np.ndarray] = []
        for iid, (b, s, k) in detections.items():
            k = np.asarray(k).reshape(-1)
            if k.size and (k.min() < 0 or k.max() >= num_classes):
                raise ValueError(f"image {iid!r}: class id out of range 0..{num_classes - 1}")
            m = k == c
            if m.any():
                ids.extend([iid] * int(m.sum()))
                scores.append(np.asarray(s, np.float64).reshape(-1)[m])
                boxes_l.append(np.asarray(b, np.float64).reshape(-1, 4)[m])
        num_pos[name] = npos
        if npos == 0:
            per_class[name] = float("nan")
            continue
        if not ids:
            per_class[name] = 0.0
            continue
        all_scores = np.concatenate(scores)
        all_boxes = np.concatenate(boxes_l)
        order = np.argsort(-all_scores, kind="mergesort")
        tp = np.zeros(len(order))
        fp = np.zeros(len(order))
        for d, j in enumerate(order):
            g_boxes, g_diff, g_used = gt[ids[j]]
            if len(g_boxes) == 0:
                fp[d] = 1
                continue
            ious = _iou_one_to_many(all_boxes[j], g_boxes)
            best = int(np.argmax(ious))
            if ious[best] > iou_threshold:
                if g_diff[best]:
                    continue
                if not g_used[best]:
                    tp[d] = 1
                    g_used[best] = True
                else:
                    fp[d] = 1
            else:
                fp[d] = 1
        tp_c, fp_c = np.cumsum(tp), np.cumsum(fp)
        recall = tp_c / npos
        precision = tp_c / np.maximum(tp_c + fp_c, np.finfo(np.float64).eps)
        per_class[name] = ap_from_pr(recall, precision, metric == "voc07")
    valid = [v for v in per_class.values() if not math.isnan(v)]
    mean = float(np.mean(valid)) if valid else float("nan")
    return EvalResult(metric, mean, per_class, num_pos, iou_threshold)


def coco_evaluate(
    ground_truth: Sequence[Any],
    detections: Mapping[str, ImageDetections],
    class_names: Sequence[str],
    image_sizes: Optional[Mapping[str, Tuple[int, int]]] = None,
) -> EvalResult:
    """COCO-style mAP@[.5:.95] (and AP50/AP75 in ``extra``) through faster-coco-eval, else pycocotools.

    Difficult boxes become ``iscrowd=1`` regions: detections on them are neither true nor false
    positives, the closest COCO analogue of VOC's rule. ``image_sizes``: image id -> (h, w), used for the
    COCO image records (falls back to the records' width/height).
    """
    COCO, COCOeval = _coco_api()
    known = {r.image_id for r in ground_truth}
    unknown = [k for k in detections if k not in known]
    if unknown:
        raise ValueError(
            f"{len(unknown)} detection image ids are not in the ground truth (e.g. {unknown[0]!r})"
        )
    num = {r.image_id: i + 1 for i, r in enumerate(ground_truth)}
    images: List[Dict[str, Any]] = []
    annotations: List[Dict[str, Any]] = []
    for r in ground_truth:
        h, w = (image_sizes or {}).get(r.image_id, (r.height, r.width))
        images.append({"id": num[r.image_id], "file_name": r.image_id, "height": int(h), "width": int(w)})
        for b, lab, dif in zip(
            np.asarray(r.boxes, np.float64).reshape(-1, 4),
            np.asarray(r.labels).reshape(-1),
            np.asarray(r.difficult).reshape(-1),
        ):
            bw, bh = float(b[2] - b[0]), float(b[3] - b[1])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": num[r.image_id],
                    "category_id": int(lab) + 1,
                    "bbox": [float(b[0]), float(b[1]), bw, bh],
                    "area": bw * bh,
                    "iscrowd": int(bool(dif)),
                }
            )
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(class_names)]
    results = []
    for iid, (b, s, k) in detections.items():
        for box, score, cls in zip(
            np.asarray(b, np.float64).reshape(-1, 4), np.asarray(s).reshape(-1), np.asarray(k).reshape(-1)
        ):
            results.append(
                {
                    "image_id": num[iid],
                    "category_id": int(cls) + 1,
                    "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                    "score": float(score),
                }
            )
    per_class = {n: float("nan") for n in class_names}
    num_pos = {n: 0 for n in class_names}
    for a in annotations:
        if not a["iscrowd"]:
            num_pos[class_names[a["category_id"] - 1]] += 1
    if not results:
        for n in class_names:
            if num_pos[n]:
                per_class[n] = 0.0
        return EvalResult("coco", 0.0, per_class, num_pos, extra={"ap50": 0.0, "ap75": 0.0})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations, "categories": categories}
    gt.createIndex()
    dt = gt.loadRes(results)
    ev = COCOeval(gt, dt, "bbox")
    ev.params.maxDets = [1, 10, 100]
    _quiet(ev.evaluate)
    _quiet(ev.accumulate)
    _quiet(ev.summarize)
    precision = np.asarray(ev.eval["precision"])  # (T, R, K, A, M)
    for ci, n in enumerate(class_names):
        pk = precision[:, :, ci, 0, -1]
        valid = pk[pk > -1]
        if num_pos[n]:
            per_class[n] = float(valid.mean()) if valid.size else 0.0
    stats = [float(x) for x in ev.stats[:3]]
    return EvalResult("coco", stats[0], per_class, num_pos, extra={"ap50": stats[1], "ap75": stats[2]})


def _quiet(fn: Any) -> None:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        fn()


def _coco_api() -> Tuple[Any, Any]:
    try:
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    except ImportError:
        pass
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    except ImportError as e:
        raise ImportError(
            "the coco metric needs faster-coco-eval or pycocotools: pip install faster-coco-eval "
            "(it is in the dev extra)"
        ) from e


def evaluate(
    ground_truth: Sequence[Any],
    detections: Mapping[str, ImageDetections],
    class_names: Sequence[str],
    metric: str = "voc07",
    iou_threshold: float = 0.5,
) -> EvalResult:
    """Dispatch to :func:`voc_evaluate` (``voc07``, ``voc12``) or :func:`coco_evaluate` (``coco``)."""
    if metric == "coco":
        return coco_evaluate(ground_truth, detections, class_names)
    if metric in ("voc07", "voc12"):
        return voc_evaluate(ground_truth, detections, class_names, metric, iou_threshold)
    raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def format_table(result: EvalResult) -> str:
    """Per-class AP and the mean as an aligned text table (percent)."""
    width = max([len(n) for n in result.per_class] + [5])
    lines = [f"{'class':<{width}}  {'AP':>6}  {'GT':>6}"]
    for n, ap in result.per_class.items():
        ap_s = "   n/a" if math.isnan(ap) else f"{100 * ap:6.2f}"
        lines.append(f"{n:<{width}}  {ap_s}  {result.num_positives.get(n, 0):>6}")
    label = {
        "voc07": "mAP@0.5 (VOC07 11-point)",
        "voc12": "mAP@0.5 (VOC2010+ area)",
        "coco": "mAP@[.5:.95] (COCO)",
    }
    lines.append(f"{label.get(result.metric, result.metric)}: {100 * result.map:.2f}")
    if result.extra:
        lines.append("  ".join(f"{k}: {100 * v:.2f}" for k, v in result.extra.items()))
    return "\n".join(lines)
