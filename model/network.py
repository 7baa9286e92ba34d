"""YOLO Nano (Wong et al., 2019, Figure 1). Build any of the three networks by name with
:func:`yolo_nano.model.registry.build_model`.

The topology (every channel count, stride, skip, upsample and concat) is the table in
``shared/reference/architecture.md``. The paper never published the expanded (hidden) width inside
PEP and EP blocks; ours is ``expansion[stride] x`` the block's expansion base (the projection width of a
PEP, the input width of an EP), rounded to a multiple of 4, with one ratio per output stride. The ratios
in :data:`EXPANSION` were chosen by ``scripts/search_widths.py`` so that at 416x416 and 20 classes the
network has 4.0 M conv+linear weights and 4.57 B FLOPs, the paper's two numbers (see docs/architecture.md).

``forward`` returns the three raw head tensors, largest stride first:
(N, 3*(5+C), H/32, W/32), (N, 3*(5+C), H/16, W/16), (N, 3*(5+C), H/8, W/8).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from .blocks import EP, FCA, PEP, ConvBNAct
from .detector_base import DetectorNet

# YOLOv3 anchors at 416 (pixels), per head, largest stride first.
YOLOV3_ANCHORS: Tuple[Tuple[Tuple[float, float], ...], ...] = (
    ((116, 90), (156, 198), (373, 326)),
    ((30, 61), (62, 45), (59, 119)),
    ((10, 13), (16, 30), (33, 23)),
)

# Expansion ratio per output stride (2, 4, 8, 16, 32): found by scripts/search_widths.py.
EXPANSION: Dict[int, float] = {2: 1.0, 4: 1.0, 8: 1.0, 16: 1.0, 32: 2.25}
WIDTH_MULTIPLE = 4


def expanded_width(base: int, stride: int, expansion: Optional[Dict[int, float]] = None) -> int:
    """Hidden width of a PEP/EP block whose output has ``stride``: ratio x base, rounded to a multiple of 4."""
    ratio = (expansion or EXPANSION)[stride]
    return max(WIDTH_MULTIPLE, int(round(ratio * base / WIDTH_MULTIPLE)) * WIDTH_MULTIPLE)


class YoloNano(DetectorNet):
    """YOLO Nano for ``num_classes`` classes at ``input_size`` (a multiple of 32) pixels square;
    ``expansion`` overrides :data:`EXPANSION` (scripts/search_widths.py)."""

    arch = "yolo-nano"
    class_activation = "sigmoid"
    head_names = ("conv11", "conv10", "conv9")

    def __init__(
        self, num_classes: int = 20, input_size: int = 416, expansion: Optional[Dict[int, float]] = None
    ) -> None:
        super().__init__(num_classes, input_size, (32, 16, 8), YOLOV3_ANCHORS)
        out = self.head_channels(0)  # all three heads: 3 anchors x (5 + C)

        def pep(c_in: int, c_out: int, proj: int, stride: int) -> PEP:
            return PEP(c_in, c_out, proj, expanded_width(proj, stride, expansion))

        def ep(c_in: int, c_out: int, stride: int, out_stride: int) -> EP:
            return EP(c_in, c_out, expanded_width(c_in, out_stride, expansion), stride)

        # Backbone, stride 1 -> 32.
        self.conv1 = ConvBNAct(3, 12, 3)
        self.conv2 = ConvBNAct(12, 24, 3, 2)
        self.pep1 = pep(24, 24, 7, 2)
        self.ep1 = ep(24, 70, 2, 4)
        self.pep2 = pep(70, 70, 25, 4)
        self.pep3 = pep(70, 70, 24, 4)
        self.ep2 = ep(70, 150, 2, 8)
        self.pep4 = pep(150, 150, 56, 8)
        self.conv3 = ConvBNAct(150, 150, 1)
        self.fca1 = FCA(150, 8)
        self.pep5 = pep(150, 150, 73, 8)
        self.pep6 = pep(150, 150, 71, 8)
        self.pep7 = pep(150, 150, 75, 8)  # -> skip S52
        self.ep3 = ep(150, 325, 2, 16)
        self.stage26 = nn.Sequential(
            *[pep(325, 325, p, 16) for p in (132, 124, 141, 140, 137, 135, 133, 140)]
        )  # pep8..pep15 -> skip S26
        self.ep4 = ep(325, 545, 2, 32)
        self.pep16 = pep(545, 545, 276, 32)
        self.conv4 = ConvBNAct(545, 230, 1)
        self.ep5 = ep(230, 489, 1, 32)
        self.pep17 = pep(489, 469, 213, 32)
        self.conv5 = ConvBNAct(469, 189, 1)
        # Neck: 13 -> 26.
        self.conv6 = ConvBNAct(189, 105, 1)
        self.pep18 = pep(105 + 325, 325, 113, 16)
        self.pep19 = pep(325, 207, 99, 16)
        self.conv7 = ConvBNAct(207, 98, 1)
        # Neck: 26 -> 52.
        self.conv8 = ConvBNAct(98, 47, 1)
        self.pep20 = pep(47 + 150, 122, 58, 8)
        self.pep21 = pep(122, 87, 52, 8)
        self.pep22 = pep(87, 93, 47, 8)
        # Heads: raw 1x1 convolutions with bias, no BN, no activation.
        self.conv9 = nn.Conv2d(93, out, 1)
        self.ep6 = ep(98, 183, 1, 16)
        self.conv10 = nn.Conv2d(183, out, 1)
        self.ep7 = ep(189, 462, 1, 32)
        self.conv11 = nn.Conv2d(462, out, 1)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.init_weights()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.ep1(self.pep1(self.conv2(self.conv1(x))))
        x = self.ep2(self.pep3(self.pep2(x)))
        x = self.fca1(self.conv3(self.pep4(x)))
        s52 = self.pep7(self.pep6(self.pep5(x)))
        s26 = self.stage26(self.ep3(s52))
        x = self.pep17(self.ep5(self.conv4(self.pep16(self.ep4(s26)))))
        c5 = self.conv5(x)
        x = torch.cat([self.upsample(self.conv6(c5)), s26], dim=1)
        c7 = self.conv7(self.pep19(self.pep18(x)))
        x = torch.cat([self.upsample(self.conv8(c7)), s52], dim=1)
        x = self.pep22(self.pep21(self.pep20(x)))
        head52 = self.conv9(x)
        head26 = self.conv10(self.ep6(c7))
        head13 = self.conv11(self.ep7(c5))
        return head13, head26, head52
