"""Augmentation: the no-op config is the runtime letterbox; boxes follow the pixels."""

from __future__ import annotations

import cv2
import numpy as np

from yolo_nano.core.preprocess import letterbox
from yolo_nano.data.augment import AugmentConfig, augment, mosaic


def scene(h=120, w=200, box=(30, 20, 90, 70)):
    img = np.full((h, w, 3), 40, np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = (0, 255, 255)
    return img, np.array([box], np.float32), np.array([3], np.int64)


def bright_bbox(img):
    ys, xs = np.nonzero(img[..., 1] > 160)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def test_no_augmentation_equals_runtime_letterbox():
    img, boxes, labels = scene()
    out, b, lab = augment(img, boxes, labels, (160, 160), np.random.default_rng(0), AugmentConfig.none())
    ref, info = letterbox(img, (160, 160), 114)
    assert out.shape == ref.shape
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 2
    expect = boxes[0] * info.scale + np.array([info.pad[0], info.pad[1]] * 2)
    np.testing.assert_allclose(b[0], expect, atol=1e-3)
    assert lab.tolist() == [3]


def test_boxes_follow_pixels_under_random_augmentation():
    cfg = AugmentConfig(scale=0.4, translate=0.1, hsv_h=0, hsv_s=0, hsv_v=0, flip_lr=0.5, min_visible=0.99)
    for seed in range(12):
        img, boxes, labels = scene()
        out, b, lab = augment(img, boxes, labels, (128, 128), np.random.default_rng(seed), cfg)
        if len(b) == 0:  # dropped: the rectangle must be gone or cut by the frame
            mask = out[..., 1] > 160
            assert not mask.any() or mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
            continue
        np.testing.assert_allclose(b[0], bright_bbox(out), atol=1.5)


def test_crop_drops_and_clips_boxes():
    img, _, _ = scene()
    boxes = np.array([[30, 20, 90, 70], [-50, 0, -10, 10], [190, 100, 260, 160]], np.float32)
    cfg = AugmentConfig(scale=0, translate=0, hsv_h=0, hsv_s=0, hsv_v=0, flip_lr=0)  # min_visible 0.25
    out, b, lab = augment(img, boxes, np.array([0, 1, 2]), (160, 160), np.random.default_rng(0), cfg)
    assert lab.tolist() == [0]  # the box outside the image is dropped; the one mostly outside too
    assert (b >= 0).all() and (b <= 160).all()


def test_mosaic_boxes_and_hsv_keep_shape():
    rng = np.random.default_rng(1)
    samples = [scene(100 + 10 * i, 150) for i in range(4)]
    out, b, lab = mosaic(samples, (128, 128), rng)
    assert out.shape == (128, 128, 3)
    assert len(b) == len(lab) <= 4 and len(b) >= 1
    assert (b[:, 2] > b[:, 0]).all() and (b <= 128).all()
    img, boxes, labels = scene()
    jit = augment(img, boxes, labels, (96, 96), rng, AugmentConfig(scale=0, translate=0, flip_lr=0))[0]
    assert jit.dtype == np.uint8 and jit.shape == (96, 96, 3)
    assert not np.array_equal(jit, cv2.resize(img, (96, 58)))
