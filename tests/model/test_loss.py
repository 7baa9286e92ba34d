"""YOLOv3 loss: anchor assignment, the ignore rule, and that a perfect prediction scores ~0."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch", reason="the loss needs PyTorch (train extra)")
pytestmark = pytest.mark.torch

from yolo_nano.core.metadata import HeadSpec, ModelMetadata  # noqa: E402
from yolo_nano.model.loss import LossConfig, YoloLoss  # noqa: E402

ANCHORS = (
    ((116, 90), (156, 198), (373, 326)),
    ((30, 61), (62, 45), (59, 119)),
    ((10, 13), (16, 30), (33, 23)),
)
META = ModelMetadata(
    arch="yolo-nano",
    class_names=("a", "b", "c"),
    input_size=(416, 416),
    heads=tuple(HeadSpec(f"h{s}", s, a) for s, a in zip((32, 16, 8), ANCHORS)),
)
C = 3


def empty_heads(obj_logit=-16.0):
    heads = []
    for h in META.heads:
        s = 416 // h.stride
        t = torch.zeros(1, 3, 5 + C, s, s)
        t[:, :, 4] = obj_logit
        t[:, :, 5:] = -12.0
        heads.append(t)
    return heads


def put(heads, head, anchor, gx, gy, box, cls, obj=12.0):
    """Write logits that decode exactly to ``box`` (cx, cy, w, h) at one anchor and cell."""
    stride = META.heads[head].stride
    aw, ah = META.heads[head].anchors[anchor]
    fx, fy = box[0] / stride - gx, box[1] / stride - gy
    t = heads[head][0, anchor, :, gy, gx]
    t[0], t[1] = math.log(fx / (1 - fx)), math.log(fy / (1 - fy))
    t[2], t[3] = math.log(box[2] / aw), math.log(box[3] / ah)
    t[4] = obj
    t[5 + cls] = 12.0


def flat(heads):
    return [h.reshape(1, 3 * (5 + C), h.shape[-2], h.shape[-1]) for h in heads]


def test_best_anchor_assignment():
    loss = YoloLoss(META, LossConfig(match_iou=1.0))
    targets = torch.tensor([[0, 1, 200.0, 100.0, 116.0, 90.0], [0, 2, 50.0, 60.0, 16.0, 30.0]])
    per_head = loss._assign(targets)
    rows, aid, gy, gx = per_head[0]
    assert rows.tolist() == [0] and aid.tolist() == [0] and gx.tolist() == [6] and gy.tolist() == [3]
    rows, aid, gy, gx = per_head[2]
    assert rows.tolist() == [1] and aid.tolist() == [1] and gx.tolist() == [6] and gy.tolist() == [7]
    assert len(per_head[1][0]) == 0
    # with match_iou 0.5 a box between two anchors' shapes gets both
    loose = YoloLoss(META, LossConfig(match_iou=0.3))._assign(
        torch.tensor([[0, 0, 100.0, 100.0, 60.0, 50.0]])
    )
    assert sum(len(r) for r, *_ in loose) >= 2


@pytest.mark.parametrize("box_loss", ["giou", "classic"])
def test_perfect_prediction_scores_near_zero(box_loss):
    loss = YoloLoss(META, LossConfig(box_loss=box_loss, match_iou=1.0))
    targets = torch.tensor([[0, 1, 200.0, 100.0, 116.0, 90.0]])
    heads = empty_heads()
    put(heads, 0, 0, 6, 3, (200.0, 100.0, 116.0, 90.0), 1)
    total, parts = loss(flat(heads), targets)
    assert float(total) < 0.05, parts
    wrong = empty_heads()
    put(wrong, 0, 0, 6, 3, (210.0, 110.0, 80.0, 120.0), 2)
    total_w, parts_w = loss(flat(wrong), targets)
    assert parts_w["box"] > 0.05 and parts_w["cls"] > 10 and float(total_w) > float(total) + 10


def test_ignore_rule_spares_good_negatives():
    loss = YoloLoss(META, LossConfig(match_iou=1.0, ignore_iou=0.5))
    targets = torch.tensor([[0, 1, 200.0, 100.0, 116.0, 90.0]])
    base = empty_heads()
    put(base, 0, 0, 6, 3, (200.0, 100.0, 116.0, 90.0), 1)
    _, p0 = loss(flat(base), targets)
    # another anchor predicting the same box confidently: ignored, no objectness penalty
    near = [h.clone() for h in base]
    put(near, 0, 1, 6, 3, (200.0, 100.0, 116.0, 90.0), 1)
    _, p1 = loss(flat(near), targets)
    assert p1["obj"] == pytest.approx(p0["obj"], abs=1e-3)
    # the same confident prediction far from any object: penalised
    far = [h.clone() for h in base]
    put(far, 0, 1, 1, 1, (50.0, 50.0, 116.0, 90.0), 1)
    _, p2 = loss(flat(far), targets)
    assert p2["obj"] > p0["obj"] + 5


def test_gradients_flow_and_empty_targets():
    loss = YoloLoss(META)
    heads = [h.requires_grad_(True) for h in flat(empty_heads(0.0))]
    total, _ = loss(heads, torch.tensor([[0, 0, 100.0, 100.0, 50.0, 40.0]]))
    total.backward()
    assert all(h.grad is not None and torch.isfinite(h.grad).all() for h in heads)
    total0, parts0 = loss([h.detach() for h in heads], torch.zeros(0, 6))
    assert parts0["box"] == 0 and parts0["cls"] == 0 and float(total0) > 0
    with pytest.raises(ValueError, match="box_loss"):
        YoloLoss(META, LossConfig(box_loss="l1"))
