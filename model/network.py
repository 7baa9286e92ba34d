"""YOLO Nano (Wong et al., 2019, Figure 1) and the model registry.

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

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from yolo_nano.core.metadata import VOC_CLASSES, HeadSpec, ModelMetadata

from .blocks import EP, FCA, PEP, ConvBNAct

ARCHS = ("yolo-nano", "tiny-yolov2", "tiny-yolov3")

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


class YoloNano(nn.Module):
    """YOLO Nano for ``num_classes`` classes at ``input_size`` (a multiple of 32) pixels square."""

    arch = "yolo-nano"
    class_activation = "sigmoid"

    def __init__(
        self, num_classes: int = 20, input_size: int = 416, expansion: Optional[Dict[int, float]] = None
    ) -> None:
        super().__init__()
        check_config(num_classes, input_size)
        self.num_classes = num_classes
        self.input_size = input_size
        self.strides = (32, 16, 8)
        self.anchors = YOLOV3_ANCHORS
        out = 3 * (5 + num_classes)

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
        init_weights(self)

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

    def build_metadata(self, class_names: Optional[Sequence[str]] = None) -> ModelMetadata:
        return build_metadata(self, class_names)


def check_config(num_classes: int, input_size: int) -> None:
    """Refuse configurations no network can be built for, with a message that says what to pass."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"classes must be an integer >= 1, got {num_classes!r}")
    if not isinstance(input_size, int) or input_size < 32 or input_size % 32:
        raise ValueError(f"input size must be a positive multiple of 32 (e.g. 416), got {input_size!r}")


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions, unit BN; the heads' objectness biases start low (prior p ~ 0.01)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for head in head_convs(model):
        n_anchors = head.out_channels // (5 + model.num_classes)  # type: ignore[operator]
        with torch.no_grad():
            bias = head.bias.view(n_anchors, -1)  # type: ignore[union-attr]
            bias[:, 4] = -4.6  # log(0.01 / 0.99)


def head_convs(model: nn.Module) -> List[nn.Conv2d]:
    """The raw output convolutions of ``model``, in forward-output order."""
    return [getattr(model, name) for name in model.head_names]  # type: ignore[attr-defined]


YoloNano.head_names = ("conv11", "conv10", "conv9")  # type: ignore[attr-defined]


def build_metadata(model: nn.Module, class_names: Optional[Sequence[str]] = None) -> ModelMetadata:
    """The runtime metadata of ``model`` (anchors, strides, classes, input size, head names)."""
    num_classes = model.num_classes  # type: ignore[attr-defined]
    if class_names is None:
        class_names = (
            VOC_CLASSES if num_classes == len(VOC_CLASSES) else [f"class{i}" for i in range(num_classes)]
        )
    class_names = tuple(class_names)
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names given for a {num_classes}-class model")
    size = model.input_size  # type: ignore[attr-defined]
    heads = tuple(
        HeadSpec(f"head_s{s}", s, tuple((float(w), float(h)) for w, h in a))
        for s, a in zip(model.strides, model.anchors)  # type: ignore[attr-defined]
    )
    return ModelMetadata(
        arch=model.arch,  # type: ignore[attr-defined]
        class_names=class_names,
        input_size=(size, size),
        heads=heads,
        class_activation=model.class_activation,  # type: ignore[attr-defined]
    )


def build_model(arch: str = "yolo-nano", num_classes: int = 20, input_size: int = 416) -> nn.Module:
    """Build ``arch`` (one of :data:`ARCHS`) for ``num_classes`` classes at ``input_size`` pixels."""
    from .baselines import TinyYoloV2, TinyYoloV3

    check_config(num_classes, input_size)
    builders = {"yolo-nano": YoloNano, "tiny-yolov2": TinyYoloV2, "tiny-yolov3": TinyYoloV3}
    if arch not in builders:
        raise ValueError(f"unknown arch {arch!r}; choose one of: {', '.join(ARCHS)}")
    return builders[arch](num_classes=num_classes, input_size=input_size)
