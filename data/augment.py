"""YOLO training augmentation (torch-free, numpy + OpenCV).

One function, :func:`augment`, turns a decoded BGR image and its boxes into a square training sample:
HSV jitter, then ONE affine warp that does the letterbox, a random scale, a random translation (which
crops when the image moves out of the frame) and an optional horizontal flip, then box clipping and
filtering. :func:`mosaic` optionally tiles four samples first (YOLOv4's mosaic). With
``AugmentConfig.none()`` the warp is exactly the runtime letterbox (centred, aspect kept, pad 114).

Boxes are float32 (K, 4) ``x1, y1, x2, y2`` in continuous pixel coordinates of the image they
belong to (0-based; a box covering pixel columns 0..9 is ``x1=0, x2=10``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths (the YOLOv3/v5 defaults, scaled for small data sets).

    ``scale``: the letterboxed image is resized by a factor in [1 - scale, 1 + scale];
    ``translate``: shifted by up to this fraction of the output size each way;
    ``hsv_h/s/v``: maximum relative hue/saturation/value gain; ``flip_lr``/``flip_ud``: probabilities;
    ``mosaic``: probability of a 4-image mosaic (needs :func:`mosaic`, done by the data set);
    ``min_visible``: a box is dropped when less than this fraction of its area survives the crop;
    ``min_side``: a box is dropped when it ends up narrower or lower than this many output pixels.
    """

    scale: float = 0.4
    translate: float = 0.15
    hsv_h: float = 0.015
    hsv_s: float = 0.6
    hsv_v: float = 0.35
    flip_lr: float = 0.5
    flip_ud: float = 0.0
    mosaic: float = 0.0
    min_visible: float = 0.25
    min_side: float = 2.0

    @staticmethod
    def none() -> AugmentConfig:
        """No randomness: the sample is the plain letterbox (used for validation)."""
        return AugmentConfig(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def hsv_jitter(image_bgr: np.ndarray, rng: np.random.Generator, h: float, s: float, v: float) -> np.ndarray:
    """Random hue shift and saturation/value gains on a BGR uint8 image (returns a new image)."""
    if h == 0 and s == 0 and v == 0:
        return image_bgr
    gains = rng.uniform(-1, 1, 3) * np.array([h, s, v]) + 1.0
    hue, sat, val = cv2.split(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x * gains[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def _transform_boxes(boxes: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine (scale/translate/flip only) to (K, 4) boxes; returns sorted corners."""
    if len(boxes) == 0:
        return boxes.reshape(0, 4).astype(np.float32)
    xs = boxes[:, [0, 2]] * m[0, 0] + m[0, 2]
    ys = boxes[:, [1, 3]] * m[1, 1] + m[1, 2]
    out = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], 1)
    return out.astype(np.float32)


def filter_boxes(
    boxes: np.ndarray, labels: np.ndarray, size: Tuple[int, int], before: np.ndarray, cfg: AugmentConfig
) -> Tuple[np.ndarray, np.ndarray]:
    """Clip ``boxes`` to the (h, w) frame and drop those mostly cropped away or too thin."""
    h, w = size
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, w)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, h)
    bw, bh = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area_before = np.maximum((before[:, 2] - before[:, 0]) * (before[:, 3] - before[:, 1]), 1e-6)
    keep = (bw >= cfg.min_side) & (bh >= cfg.min_side) & (bw * bh / area_before >= cfg.min_visible)
    return clipped[keep], labels[keep]


def augment(
    image_bgr: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    size: Tuple[int, int],
    rng: np.random.Generator,
    cfg: AugmentConfig = AugmentConfig(),
    pad_value: int = 114,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training sample.

    ``image_bgr``: HxWx3 uint8; ``boxes``: (K, 4) float xyxy pixels; ``labels``: (K,) int64;
    ``size``: output (height, width). Returns the (height, width, 3) uint8 BGR image, its boxes (K', 4)
    float32 in output pixels and labels (K',) int64.
    """
    out_h, out_w = size
    img = hsv_jitter(image_bgr, rng, cfg.hsv_h, cfg.hsv_s, cfg.hsv_v)
    h, w = img.shape[:2]
    s = min(out_h / h, out_w / w)  # the letterbox scale
    if cfg.scale > 0:
        s *= rng.uniform(1 - cfg.scale, 1 + cfg.scale)
    tx = (out_w - w * s) / 2 + (rng.uniform(-cfg.translate, cfg.translate) * out_w if cfg.translate else 0.0)
    ty = (out_h - h * s) / 2 + (rng.uniform(-cfg.translate, cfg.translate) * out_h if cfg.translate else 0.0)
    m = np.array([[s, 0, tx], [0, s, ty]], np.float64)
    if cfg.flip_lr and rng.random() < cfg.flip_lr:
        m[0] = [-s, 0, out_w - tx]
    if cfg.flip_ud and rng.random() < cfg.flip_ud:
        m[1] = [0, -s, out_h - ty]
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    out = cv2.warpAffine(
        img, m, (out_w, out_h), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=(pad_value,) * 3
    )
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    moved = _transform_boxes(boxes, m)
    kept, kept_labels = filter_boxes(moved, labels, size, moved, cfg)
    return out, kept, kept_labels


def mosaic(
    samples: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray]],
    size: Tuple[int, int],
    rng: np.random.Generator,
    pad_value: int = 114,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tile four (image, boxes, labels) samples around a random centre on a 2x canvas, then shrink it
    back to ``size`` (height, width). Each input is letterboxed into its quadrant first."""
    if len(samples) != 4:
        raise ValueError(f"mosaic needs exactly 4 samples, got {len(samples)}")
    out_h, out_w = size
    ch, cw = 2 * out_h, 2 * out_w
    canvas = np.full((ch, cw, 3), pad_value, np.uint8)
    yc = int(rng.uniform(0.5, 1.5) * out_h)
    xc = int(rng.uniform(0.5, 1.5) * out_w)
    all_boxes: List[np.ndarray] = []
    all_labels: List[np.ndarray] = []
    quadrants = [(0, 0, xc, yc), (xc, 0, cw, yc), (0, yc, xc, ch), (xc, yc, cw, ch)]
    for (img, boxes, labels), (x1, y1, x2, y2) in zip(samples, quadrants):
        qw, qh = x2 - x1, y2 - y1
        if qw < 2 or qh < 2:
            continue
        h, w = img.shape[:2]
        s = min(qw / w, qh / h)
        nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
        # anchor each tile at the mosaic centre so the four meet there
        ox = x2 - nw if x1 == 0 else x1
        oy = y2 - nh if y1 == 0 else y1
        canvas[oy : oy + nh, ox : ox + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        b = np.asarray(boxes, np.float32).reshape(-1, 4) * np.float32(s)
        b[:, [0, 2]] += ox
        b[:, [1, 3]] += oy
        all_boxes.append(b)
        all_labels.append(np.asarray(labels, np.int64).reshape(-1))
    boxes = np.concatenate(all_boxes) if all_boxes else np.zeros((0, 4), np.float32)
    labels = np.concatenate(all_labels) if all_labels else np.zeros((0,), np.int64)
    small = cv2.resize(canvas, (out_w, out_h), interpolation=cv2.INTER_AREA)
    boxes = boxes * np.float32(0.5)
    cfg = AugmentConfig()
    kept, kept_labels = filter_boxes(boxes, labels, size, boxes, cfg)
    return small, kept, kept_labels
