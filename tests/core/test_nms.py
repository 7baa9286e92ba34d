"""nms / batched_nms / box_iou: hand cases, hypothesis properties, an independent brute-force reference and
torchvision where it is installed."""

from __future__ import annotations

from typing import List

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from yolo_nano.core import postprocess
from yolo_nano.runtime import batched_nms, box_iou, nms


def _iou64(a, b) -> float:
    """IoU of two xyxy boxes in Python floats (float64), written independently of the library."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _reference(boxes, scores, classes, thr) -> List[int]:
    """Brute-force greedy NMS: visit by (score desc, index asc); keep unless a kept same-class box overlaps."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    kept: List[int] = []
    for i in order:
        if all(classes[j] != classes[i] or _iou64(boxes[i], boxes[j]) <= thr for j in kept):
            kept.append(i)
    return kept


@st.composite
def box_sets(draw, max_boxes: int = 40, classes: int = 3):
    n = draw(st.integers(0, max_boxes))
    xy = draw(arrays(np.float32, (n, 2), elements=st.floats(0, 100, width=32)))
    wh = draw(arrays(np.float32, (n, 2), elements=st.floats(1, 60, width=32)))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = draw(arrays(np.float32, (n,), elements=st.floats(0, 1, width=32), unique=True))
    cls = draw(arrays(np.int64, (n,), elements=st.integers(0, classes - 1)))
    return boxes, scores, cls


def _away_from_threshold(boxes, thr: float) -> bool:
    """No pair's IoU within 1e-4 of the threshold (where float32 and float64 may legitimately differ)."""
    b = boxes.astype(np.float64).tolist()
    return all(abs(_iou64(b[i], b[j]) - thr) > 1e-4 for i in range(len(b)) for j in range(i))


def test_hand_case():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    # box 3 (0.95) suppresses 0 (IoU 1) and 1 (IoU 81/119 = 0.68); 2 is disjoint
    assert nms(boxes, scores, 0.5).tolist() == [3, 2]
    assert nms(boxes, scores, 0.7).tolist() == [3, 1, 2]  # 0.68 <= 0.7 keeps box 1
    cls = np.array([0, 1, 0, 0])
    assert batched_nms(boxes, scores, cls, 0.5).tolist() == [3, 1, 2]
    assert nms(boxes, scores, 0.5).dtype == np.int64


def test_equal_iou_is_not_suppressed():
    # IoU exactly 0.5: torchvision suppresses only IoU > threshold
    boxes = np.array([[0, 0, 2, 1], [0, 0, 1, 1]], np.float32)
    assert box_iou(boxes[:1], boxes[1:])[0, 0] == pytest.approx(0.5)
    assert nms(boxes, np.array([0.9, 0.8], np.float32), 0.5).tolist() == [0, 1]
    assert nms(boxes, np.array([0.9, 0.8], np.float32), 0.49).tolist() == [0]


def test_empty_and_degenerate():
    assert nms(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), 0.5).shape == (0,)
    assert batched_nms(np.zeros((0, 4)), np.zeros((0,)), np.zeros((0,), np.int64), 0.5).shape == (0,)
    # two zero-area boxes at the same place: IoU is 0/0 = NaN, which never suppresses (as torchvision)
    z = np.array([[5, 5, 5, 5], [5, 5, 5, 5]], np.float32)
    assert nms(z, np.array([0.5, 0.6], np.float32), 0.1).tolist() == [1, 0]
    with pytest.raises(ValueError, match="scores"):
        nms(np.zeros((2, 4)), np.zeros((3,)), 0.5)
    with pytest.raises(ValueError, match="category"):
        batched_nms(np.zeros((2, 4)), np.zeros((2,)), np.zeros((3,)), 0.5)


def test_box_iou_matches_reference():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 50, (7, 2))
    b = rng.uniform(0, 50, (5, 2))
    a = np.concatenate([a, a + rng.uniform(1, 30, (7, 2))], 1)
    b = np.concatenate([b, b + rng.uniform(1, 30, (5, 2))], 1)
    got = box_iou(a, b)
    assert got.shape == (7, 5)
    ref = [[_iou64(x, y) for y in b.tolist()] for x in a.tolist()]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


@settings(max_examples=150, deadline=None)
@given(box_sets(), st.sampled_from([0.3, 0.45, 0.7]))
def test_properties_and_brute_force(data, thr):
    boxes, scores, cls = data
    assume(_away_from_threshold(boxes, thr))
    keep = batched_nms(boxes, scores, cls, thr)
    # a subset, no duplicates, sorted by descending score
    assert len(set(keep.tolist())) == len(keep)
    assert set(keep.tolist()) <= set(range(len(scores)))
    assert np.all(np.diff(scores[keep]) <= 0)
    # no two kept boxes of the same class overlap above the threshold
    for i in range(len(keep)):
        for j in range(i):
            a, b = keep[i], keep[j]
            if cls[a] == cls[b]:
                assert _iou64(boxes[a].tolist(), boxes[b].tolist()) <= thr
    # every dropped box is overlapped by a kept, higher-scoring box of its class
    for d in set(range(len(scores))) - set(keep.tolist()):
        assert any(
            cls[k] == cls[d] and scores[k] > scores[d] and _iou64(boxes[k].tolist(), boxes[d].tolist()) > thr
            for k in keep
        )
    # equal to the brute-force reference, and with max_output to its prefix
    assert keep.tolist() == _reference(boxes.tolist(), scores, cls.tolist(), thr)
    assert batched_nms(boxes, scores, cls, thr, max_output=3).tolist() == keep.tolist()[:3]
    # class-agnostic nms is the reference with a single class
    assert nms(boxes, scores, thr).tolist() == _reference(boxes.tolist(), scores, [0] * len(scores), thr)
    assert nms(boxes, scores, thr, max_output=2).tolist() == nms(boxes, scores, thr).tolist()[:2]


@settings(max_examples=60, deadline=None)
@given(box_sets(max_boxes=30), st.sampled_from([0.3, 0.5]))
def test_batched_equals_nms_per_class(data, thr):
    boxes, scores, cls = data
    keep = batched_nms(boxes, scores, cls, thr)
    per_class = []
    for c in np.unique(cls):
        idx = np.flatnonzero(cls == c)
        per_class += idx[nms(boxes[idx], scores[idx], thr)].tolist()
    assert sorted(per_class) == sorted(keep.tolist())


def test_many_classes_large_coordinates():
    # boxes far from the origin and class ids that are large/sparse: no offset trick to overflow
    rng = np.random.default_rng(3)
    xy = rng.uniform(1e5, 1e5 + 200, (300, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(5, 50, (300, 2)).astype(np.float32)], 1)
    scores = rng.permutation(300).astype(np.float32) / 300
    cls = rng.choice([3, 70000, 12345678], 300)
    ref = _reference(boxes.tolist(), scores, cls.tolist(), 0.5)
    assert batched_nms(boxes, scores, cls, 0.5).tolist() == ref
    assert batched_nms(boxes, scores, cls, 0.5, max_output=10).tolist() == ref[:10]


@settings(max_examples=60, deadline=None)
@given(box_sets(), st.sampled_from([0.3, 0.5, 0.7]))
def test_against_torchvision(data, thr):
    torch = pytest.importorskip("torch", reason="torch not installed")
    ops = pytest.importorskip(
        "torchvision.ops", reason="torchvision not installed (not installable next to torch 2.13 here)"
    )
    boxes, scores, cls = data
    tb, ts, tc = torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(cls)
    assert nms(boxes, scores, thr).tolist() == ops.nms(tb, ts, thr).tolist()
    assert batched_nms(boxes, scores, cls, thr).tolist() == ops.batched_nms(tb, ts, tc, thr).tolist()
    np.testing.assert_allclose(box_iou(boxes, boxes), ops.box_iou(tb, tb).numpy(), rtol=1e-5, atol=1e-6)


def _random_boxes(n, classes, seed, spread=416.0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, spread, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(10, 120, (n, 2)).astype(np.float32)], 1)
    return boxes, rng.random(n).astype(np.float32), rng.integers(0, classes, n)


@pytest.mark.parametrize("padded", [True, False], ids=["padded-classes", "class-by-class"])
@pytest.mark.parametrize(
    "n, classes",
    [(100, 20), (170, 3), (700, 1), (1300, 2), (1100, 40)],
    ids=["dense", "grouped", "blocks", "grouped-blocks", "many-small-groups"],
)
def test_every_vectorised_path_equals_brute_force(n, classes, padded, monkeypatch):
    # one dense matrix (small sets), classes padded into one tensor or class by class (larger), blocks
    # filtered against the boxes kept so far (big classes, class-agnostic): each against the
    # one-box-at-a-time reference
    if not padded:
        monkeypatch.setattr(postprocess, "_NMS_PADDED", 0)
    boxes, scores, cls = _random_boxes(n, classes, seed=n)
    ref = _reference(boxes.tolist(), scores, cls.tolist(), 0.45)
    assert batched_nms(boxes, scores, cls, 0.45).tolist() == ref
    assert batched_nms(boxes, scores, cls, 0.45, max_output=100).tolist() == ref[:100]
    if classes <= 2:
        agnostic = _reference(boxes.tolist(), scores, [0] * n, 0.45)
        assert nms(boxes, scores, 0.45).tolist() == agnostic
        assert nms(boxes, scores, 0.45, max_output=7).tolist() == agnostic[:7]


def test_a_chain_of_overlaps_across_blocks():
    # boxes 8 px apart, 40 px wide, scores falling along the row: each overlaps its neighbour above the
    # threshold (0.67) but not the next but one (0.43): greedy keeps every other box. 1200 boxes span
    # three blocks, so the decision chain runs through every block boundary.
    n = 1200
    x = np.arange(n, dtype=np.float32) * 8
    boxes = np.stack([x, np.zeros(n, np.float32), x + 40, np.full(n, 40, np.float32)], 1)
    scores = np.linspace(1.0, 0.1, n, dtype=np.float32)
    keep = nms(boxes, scores, 0.45)
    assert keep.tolist() == list(range(0, n, 2))
    assert batched_nms(boxes, scores, np.zeros(n, np.int64), 0.45).tolist() == list(range(0, n, 2))
    assert nms(boxes, scores, 0.45, max_output=300).tolist() == list(range(0, 600, 2))


def test_equal_scores_everywhere_keep_index_order():
    boxes, _, cls = _random_boxes(900, 3, seed=5, spread=100.0)
    scores = np.full(900, 0.5, np.float32)
    ref = _reference(boxes.tolist(), scores, cls.tolist(), 0.5)
    assert batched_nms(boxes, scores, cls, 0.5).tolist() == ref
    assert ref == sorted(ref)  # ties: lower index first
    identical = np.tile(np.float32([[1, 2, 30, 40]]), (600, 1))
    assert nms(identical, np.full(600, 0.3, np.float32), 0.5).tolist() == [0]


def test_negative_threshold_removes_every_later_box_of_a_class():
    # IoU 0 > -0.5: the first box of each class removes all the others of its class (the padded path,
    # whose padding relies on a threshold >= 0, is not used then)
    boxes, scores, cls = _random_boxes(400, 4, seed=2)
    keep = batched_nms(boxes, scores, cls, -0.5)
    assert keep.tolist() == _reference(boxes.tolist(), scores, cls.tolist(), -0.5)
    assert len(keep) == 4


def test_max_output_zero_and_nan_iou_boxes():
    boxes, scores, cls = _random_boxes(50, 2, seed=1)
    assert batched_nms(boxes, scores, cls, 0.5, max_output=0).tolist() == []
    # 700 empty boxes at one point: every IoU is 0/0 = NaN, nothing suppresses anything
    z = np.tile(np.float32([[5, 5, 5, 5]]), (700, 1))
    s = np.linspace(0.9, 0.1, 700, dtype=np.float32)
    assert nms(z, s, 0.1).tolist() == list(range(700))
