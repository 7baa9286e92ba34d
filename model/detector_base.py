"""The base class of the three networks (YOLO Nano, Tiny YOLOv2, Tiny YOLOv3): the raw-head convention.

A :class:`DetectorNet` returns one raw head tensor per output scale, largest stride first:
(N, A * (5 + C), H / stride, W / stride) float32, channel layout as in :mod:`yolo_nano.core.metadata`
(tx, ty, tw, th, objectness logit, C class logits per anchor). Decode stays out of the network, so the
runtime decodes any of the three from :meth:`DetectorNet.build_metadata` alone.

A subclass sets the class attributes ``arch``, ``class_activation`` and ``head_names`` (its raw output
convolutions, in forward-output order), calls ``super().__init__(num_classes, input_size, strides,
anchors)``, builds its layers and then :meth:`DetectorNet.init_weights`.

This module imports no network: :mod:`yolo_nano.model.network` and :mod:`yolo_nano.model.baselines`
import it, and :mod:`yolo_nano.model.registry` imports those two (no cycle).
"""

from __future__ import annotations

from typing import ClassVar, List, Optional, Sequence, Tuple

import torch
from torch import nn

from yolo_nano.core.metadata import VOC_CLASSES, HeadSpec, ModelMetadata

# Anchors (width, height) in input pixels, per head, largest stride first.
Anchors = Tuple[Tuple[Tuple[float, float], ...], ...]

# Objectness bias at initialisation: log(0.01 / 0.99), a prior probability of about 0.01 per anchor.
OBJECTNESS_PRIOR_LOGIT = -4.6


def check_config(num_classes: int, input_size: int) -> None:
    """Refuse configurations no network can be built for, with a message that says what to pass."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"classes must be an integer >= 1, got {num_classes!r}")
    if not isinstance(input_size, int) or input_size < 32 or input_size % 32:
        raise ValueError(f"input size must be a positive multiple of 32 (e.g. 416), got {input_size!r}")


class DetectorNet(nn.Module):
    """A YOLO-style detector for ``num_classes`` classes at ``input_size`` (a multiple of 32) pixels square.

    ``strides``: input pixels per cell of each head, largest first; ``anchors``: per head, the anchor
    (width, height) pairs in input pixels. ``forward`` returns the raw heads in that order.
    """

    arch: ClassVar[str] = ""
    class_activation: ClassVar[str] = "sigmoid"
    head_names: ClassVar[Tuple[str, ...]] = ()

    def __init__(self, num_classes: int, input_size: int, strides: Sequence[int], anchors: Anchors) -> None:
        super().__init__()
        check_config(num_classes, input_size)
        if len(strides) != len(anchors) or len(strides) != len(self.head_names):
            raise ValueError(
                f"{type(self).__name__}: {len(strides)} strides, {len(anchors)} anchor sets and "
                f"{len(self.head_names)} head names must match"
            )
        self.num_classes = num_classes
        self.input_size = input_size
        self.strides = tuple(strides)
        self.anchors = anchors

    def head_channels(self, head: int) -> int:
        """Output channels of raw head ``head``: A * (5 + C)."""
        return len(self.anchors[head]) * (5 + self.num_classes)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:  # pragma: no cover - abstract
        """(N, 3, H, W) float32 -> the raw heads, largest stride first."""
        raise NotImplementedError

    def head_convs(self) -> List[nn.Conv2d]:
        """The raw output convolutions, in forward-output order."""
        return [getattr(self, name) for name in self.head_names]

    def init_weights(self) -> None:
        """Kaiming-normal convolutions, unit BN; the heads' objectness biases start low (prior p ~ 0.01)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for head in self.head_convs():
            n_anchors = head.out_channels // (5 + self.num_classes)
            with torch.no_grad():
                bias = head.bias.view(n_anchors, -1)  # type: ignore[union-attr]
                bias[:, 4] = OBJECTNESS_PRIOR_LOGIT

    def build_metadata(self, class_names: Optional[Sequence[str]] = None) -> ModelMetadata:
        """The runtime metadata (anchors, strides, classes, input size, head names). Without
        ``class_names``: VOC's 20 for a 20-class network, else ``class0``, ``class1``, ..."""
        n = self.num_classes
        if class_names is None:
            class_names = VOC_CLASSES if n == len(VOC_CLASSES) else [f"class{i}" for i in range(n)]
        names = tuple(class_names)
        if len(names) != n:
            raise ValueError(f"{len(names)} class names given for a {n}-class model")
        heads = tuple(
            HeadSpec(f"head_s{s}", s, tuple((float(w), float(h)) for w, h in a))
            for s, a in zip(self.strides, self.anchors)
        )
        return ModelMetadata(
            arch=self.arch,
            class_names=names,
            input_size=(self.input_size, self.input_size),
            heads=heads,
            class_activation=self.class_activation,
        )


__all__ = ["OBJECTNESS_PRIOR_LOGIT", "Anchors", "DetectorNet", "check_config"]
