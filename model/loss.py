"""YOLOv3-style detection loss for raw multi-scale heads (PyTorch).

Heads are the network's raw outputs, (N, A*(5+C), S_h, S_w) each, in the order of
``ModelMetadata.heads`` (largest stride first), decoded as in :mod:`yolo_nano.core.metadata`.

Targets: float tensor (M, 6) ``[image_index, class_id, cx, cy, w, h]`` in network-input pixels.

Assignment (YOLOv3): every ground-truth box goes to the anchor, over all heads, whose shape best
matches it (IoU of the two boxes centred on each other), in the grid cell holding its centre. With
``match_iou < 1`` every other anchor whose shape IoU exceeds ``match_iou`` is also a positive for
that box (darknet's ``iou_thresh`` of YOLOv4: more positives, faster early training); 1.0 is the
strict YOLOv3 rule. When two boxes claim the same anchor and cell (rare), both train that prediction.

Terms, each summed and divided by the batch size N:

* box: ``giou`` (default) ``1 - GIoU(pred, gt)`` over positives, or ``classic`` (YOLOv3): squared
  error on ``sigmoid(tx), sigmoid(ty)`` and on ``tw, th`` against their inverse-decoded targets,
  weighted by ``2 - w*h/(W*H)`` so small boxes count more;
* objectness: BCE with target 1 on positives and 0 on negatives, except negatives whose decoded box
  overlaps some ground truth of the image with IoU > ``ignore_iou`` (ignored: YOLOv3's rule);
* class: BCE per class (sigmoid, multi-label) on positives, or cross-entropy for softmax models.

``total = box_gain * box + obj_gain * obj + cls_gain * cls``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

from yolo_nano.core.metadata import ModelMetadata


@dataclass(frozen=True)
class LossConfig:
    """Loss hyper-parameters (see the module docstring)."""

    box_loss: str = "giou"
    ignore_iou: float = 0.5
    match_iou: float = 0.5
    box_gain: float = 2.0
    obj_gain: float = 1.0
    cls_gain: float = 1.0
    max_log_wh: float = 6.0


def box_iou_xyxy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of (..., P, 4) and (..., Q, 4) xyxy boxes -> (..., P, Q)."""
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a[..., :, None] + area_b[..., None, :] - inter + 1e-9)


def giou_aligned(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of matching rows of (K, 4) xyxy boxes -> (K,)."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    union = area_a + area_b - inter + 1e-9
    iou = inter / union
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).clamp(min=0).prod(
        -1
    ) + 1e-9
    return iou - (hull - union) / hull


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    return torch.cat([b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2], -1)


class YoloLoss:
    """Callable loss: ``loss(heads, targets) -> (total scalar, {"box", "obj", "cls"} detached)``."""

    def __init__(self, meta: ModelMetadata, config: LossConfig = LossConfig()) -> None:
        if config.box_loss not in ("giou", "classic"):
            raise ValueError(f"box_loss must be 'giou' or 'classic', got {config.box_loss!r}")
        self.meta = meta
        self.cfg = config
        self.num_classes = meta.num_classes
        self.softmax = meta.class_activation == "softmax"
        self.input_hw = meta.input_size
        # every anchor of every head, flattened: (T, 2) and the head/anchor each came from
        anchors: List[Tuple[float, float]] = []
        self.anchor_index: List[Tuple[int, int]] = []
        for hi, head in enumerate(meta.heads):
            for ai, a in enumerate(head.anchors):
                anchors.append(a)
                self.anchor_index.append((hi, ai))
        self.all_anchors = torch.tensor(anchors, dtype=torch.float32)

    def _assign(
        self, targets: torch.Tensor
    ) -> List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per head: (target rows, anchor ids, gy, gx) of the positives."""
        device = targets.device
        anchors = self.all_anchors.to(device)
        wh = targets[:, 4:6]
        inter = torch.minimum(wh[:, None], anchors[None]).prod(-1)
        shape_iou = inter / (wh.prod(-1)[:, None] + anchors.prod(-1)[None] - inter + 1e-9)  # (M, T)
        positive = shape_iou > self.cfg.match_iou
        if len(targets):
            positive[torch.arange(len(targets), device=device), shape_iou.argmax(1)] = True
        out = []
        for hi, head in enumerate(self.meta.heads):
            rows_l, anchors_l = [], []
            for t, (h2, ai) in enumerate(self.anchor_index):
                if h2 != hi:
                    continue
                rows = positive[:, t].nonzero().flatten()
                rows_l.append(rows)
                anchors_l.append(torch.full_like(rows, ai))
            rows = torch.cat(rows_l) if rows_l else torch.zeros(0, dtype=torch.long, device=device)
            aid = torch.cat(anchors_l) if anchors_l else torch.zeros(0, dtype=torch.long, device=device)
            gh, gw = self.input_hw[0] // head.stride, self.input_hw[1] // head.stride
            gx = (targets[rows, 2] / head.stride).long().clamp(0, gw - 1)
            gy = (targets[rows, 3] / head.stride).long().clamp(0, gh - 1)
            out.append((rows, aid, gy, gx))
        return out

    def __call__(
        self, heads: Sequence[torch.Tensor], targets: torch.Tensor
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        n = heads[0].shape[0]
        device = heads[0].device
        targets = targets.to(device=device, dtype=torch.float32)
        c = self.num_classes
        # ground truth per image, padded: (N, Mmax, 4) xyxy and a validity mask, for the ignore rule
        counts = (
            torch.bincount(targets[:, 0].long(), minlength=n)
            if len(targets)
            else torch.zeros(n, dtype=torch.long)
        )
        m_max = int(counts.max()) if len(targets) else 0
        gt_xyxy = torch.zeros(n, max(m_max, 1), 4, device=device)
        gt_valid = torch.zeros(n, max(m_max, 1), dtype=torch.bool, device=device)
        if m_max:
            order = torch.argsort(targets[:, 0], stable=True)
            img = targets[order, 0].long()
            first = torch.cumsum(counts, 0) - counts
            slot = torch.arange(len(targets), device=device) - first.to(device)[img]
            gt_xyxy[img, slot] = cxcywh_to_xyxy(targets[order, 2:6])
            gt_valid[img, slot] = True

        box_sum = torch.zeros((), device=device)
        obj_sum = torch.zeros((), device=device)
        cls_sum = torch.zeros((), device=device)
        for head, p, (rows, aid, gy, gx) in zip(self.meta.heads, heads, self._assign(targets)):
            a = head.num_anchors
            _, _, gh, gw = p.shape
            p = p.float().view(n, a, 5 + c, gh, gw).permute(0, 1, 3, 4, 2)  # (N, A, gh, gw, 5+C)
            anchor_wh = torch.tensor(head.anchors, dtype=torch.float32, device=device)
            grid_y, grid_x = torch.meshgrid(
                torch.arange(gh, device=device, dtype=torch.float32),
                torch.arange(gw, device=device, dtype=torch.float32),
                indexing="ij",
            )
            xy = (torch.sigmoid(p[..., :2]) + torch.stack([grid_x, grid_y], -1)) * head.stride
            wh = torch.exp(p[..., 2:4].clamp(max=self.cfg.max_log_wh)) * anchor_wh.view(1, a, 1, 1, 2)
            pred_xyxy = cxcywh_to_xyxy(torch.cat([xy, wh], -1))

            obj_target = torch.zeros(n, a, gh, gw, device=device)
            obj_weight = torch.ones(n, a, gh, gw, device=device)
            if m_max:
                with torch.no_grad():
                    iou = box_iou_xyxy(pred_xyxy.detach().view(n, -1, 4), gt_xyxy)  # (N, A*gh*gw, Mmax)
                    iou = iou.masked_fill(~gt_valid[:, None, :], 0.0)
                    ignore = (iou.max(-1).values > self.cfg.ignore_iou).view(n, a, gh, gw)
                obj_weight[ignore] = 0.0
            if len(rows):
                t = targets[rows]
                b = t[:, 0].long()
                obj_target[b, aid, gy, gx] = 1.0
                obj_weight[b, aid, gy, gx] = 1.0
                ps = p[b, aid, gy, gx]  # (K, 5+C)
                if self.cfg.box_loss == "giou":
                    giou = giou_aligned(pred_xyxy[b, aid, gy, gx], cxcywh_to_xyxy(t[:, 2:6]))
                    box_sum = box_sum + (1.0 - giou).sum()
                else:
                    txy = t[:, 2:4] / head.stride - torch.stack([gx, gy], -1).float()
                    twh = torch.log(t[:, 4:6] / anchor_wh[aid] + 1e-9)
                    scale = 2.0 - t[:, 4] * t[:, 5] / float(self.input_hw[0] * self.input_hw[1])
                    err = (torch.sigmoid(ps[:, :2]) - txy).pow(2).sum(-1) + (ps[:, 2:4] - twh).pow(2).sum(-1)
                    box_sum = box_sum + (scale * err).sum()
                cls_t = t[:, 1].long()
                if self.softmax:
                    cls_sum = cls_sum + F.cross_entropy(ps[:, 5:], cls_t, reduction="sum")
                else:
                    onehot = F.one_hot(cls_t, c).float()
                    cls_sum = cls_sum + F.binary_cross_entropy_with_logits(ps[:, 5:], onehot, reduction="sum")
            obj_sum = (
                obj_sum
                + (
                    F.binary_cross_entropy_with_logits(p[..., 4], obj_target, reduction="none") * obj_weight
                ).sum()
            )

        box_l, obj_l, cls_l = box_sum / n, obj_sum / n, cls_sum / n
        total = self.cfg.box_gain * box_l + self.cfg.obj_gain * obj_l + self.cfg.cls_gain * cls_l
        parts = {"box": float(box_l.detach()), "obj": float(obj_l.detach()), "cls": float(cls_l.detach())}
        return total, parts
