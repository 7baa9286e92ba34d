"""The baselines of the paper's Table 1, Tiny YOLOv2 (VOC) and Tiny YOLOv3, as darknet defines them.

Both use Conv-BN-LeakyReLU(0.1) and max pooling, and share YOLO Nano's base class and raw-head
convention (:mod:`yolo_nano.model.detector_base`), so the runtime decodes all three from metadata alone:

* Tiny YOLOv2: one head at stride 32, 5 anchors (darknet's VOC anchors, converted to pixels), softmax classes.
* Tiny YOLOv3: two heads at strides 32 and 16, 3 anchors each, sigmoid classes.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

from .detector_base import DetectorNet

# darknet tiny-yolo-voc.cfg anchors are in 13x13 grid units: x 32 for pixels at stride 32.
TINY_YOLOV2_ANCHORS = (
    tuple(
        (w * 32.0, h * 32.0)
        for w, h in ((1.08, 1.19), (3.42, 4.41), (6.63, 11.38), (9.42, 5.11), (16.62, 10.52))
    ),
)
TINY_YOLOV3_ANCHORS = (
    ((81, 82), (135, 169), (344, 319)),
    ((10, 14), (23, 27), (37, 58)),
)


class ConvBNLeaky(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int = 3) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, k, 1, k // 2, bias=False),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(0.1, inplace=True),
        )


class MaxPoolSame(nn.Module):
    """darknet's size-2 stride-1 max pool: pads right/bottom by one so the size is kept."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool2d(nn.functional.pad(x, (0, 1, 0, 1), mode="replicate"), 2, 1)


def _trunk(channels: List[int]) -> List[nn.Module]:
    layers: List[nn.Module] = []
    c_in = 3
    for i, c in enumerate(channels):
        layers.append(ConvBNLeaky(c_in, c))
        layers.append(nn.MaxPool2d(2, 2) if i < 5 else MaxPoolSame())
        c_in = c
    return layers


class TinyYoloV2(DetectorNet):
    """Tiny YOLOv2 (darknet tiny-yolo-voc.cfg): 9 convolutions, one 13x13 head at 416."""

    arch = "tiny-yolov2"
    class_activation = "softmax"
    head_names = ("head",)

    def __init__(self, num_classes: int = 20, input_size: int = 416) -> None:
        super().__init__(num_classes, input_size, (32,), TINY_YOLOV2_ANCHORS)
        self.features = nn.Sequential(
            *_trunk([16, 32, 64, 128, 256, 512]), ConvBNLeaky(512, 1024), ConvBNLeaky(1024, 1024)
        )
        self.head = nn.Conv2d(1024, self.head_channels(0), 1)
        self.init_weights()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor]:
        return (self.head(self.features(x)),)


class TinyYoloV3(DetectorNet):
    """Tiny YOLOv3 (darknet yolov3-tiny.cfg): heads at 13x13 and 26x26 at 416."""

    arch = "tiny-yolov3"
    class_activation = "sigmoid"
    head_names = ("head13", "head26")

    def __init__(self, num_classes: int = 20, input_size: int = 416) -> None:
        super().__init__(num_classes, input_size, (32, 16), TINY_YOLOV3_ANCHORS)
        out = self.head_channels(0)  # both heads: 3 anchors x (5 + C)
        trunk = _trunk([16, 32, 64, 128, 256, 512])
        self.to26 = nn.Sequential(*trunk[:9])  # through conv 128->256: the stride-16 route
        self.to13 = nn.Sequential(*trunk[9:], ConvBNLeaky(512, 1024), ConvBNLeaky(1024, 256, 1))
        self.branch13 = ConvBNLeaky(256, 512)
        self.head13 = nn.Conv2d(512, out, 1)
        self.lateral = ConvBNLeaky(256, 128, 1)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.branch26 = ConvBNLeaky(128 + 256, 256)
        self.head26 = nn.Conv2d(256, out, 1)
        self.init_weights()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        r26 = self.to26(x)
        r13 = self.to13(r26)
        h13 = self.head13(self.branch13(r13))
        h26 = self.head26(self.branch26(torch.cat([self.upsample(self.lateral(r13)), r26], dim=1)))
        return h13, h26
