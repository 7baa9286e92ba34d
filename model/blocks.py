"""YOLO Nano building blocks (PyTorch): Conv-BN-ReLU6, EP, PEP and FCA.

Internals follow ``shared/reference/architecture.md``: every convolution is followed by BatchNorm; all
but the last 1x1 projection of a block use ReLU6; the last projection is linear; a residual connection is
added where the stride is 1 and channels in == channels out. Shapes are (N, C, H, W).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ConvBNAct(nn.Module):
    """k x k convolution (no bias) -> BatchNorm -> ReLU6 (or identity when ``act=False``)."""

    def __init__(
        self, c_in: int, c_out: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class EP(nn.Module):
    """Expansion-projection: 1x1 expand to ``c_mid`` -> 3x3 depthwise (stride) -> linear 1x1 to ``c_out``."""

    def __init__(self, c_in: int, c_out: int, c_mid: int, stride: int = 1) -> None:
        super().__init__()
        self.expand = ConvBNAct(c_in, c_mid, 1)
        self.dw = ConvBNAct(c_mid, c_mid, 3, stride, groups=c_mid)
        self.project = ConvBNAct(c_mid, c_out, 1, act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


class PEP(nn.Module):
    """Projection-expansion-projection: 1x1 project to ``c_proj`` -> 1x1 expand to ``c_mid`` -> 3x3
    depthwise -> linear 1x1 to ``c_out``; stride 1 everywhere in YOLO Nano."""

    def __init__(self, c_in: int, c_out: int, c_proj: int, c_mid: int) -> None:
        super().__init__()
        self.project_in = ConvBNAct(c_in, c_proj, 1)
        self.expand = ConvBNAct(c_proj, c_mid, 1)
        self.dw = ConvBNAct(c_mid, c_mid, 3, groups=c_mid)
        self.project = ConvBNAct(c_mid, c_out, 1, act=False)
        self.residual = c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(self.project_in(x))))
        return x + y if self.residual else y


class FCA(nn.Module):
    """Fully-connected attention: global average pool -> FC(C, C/r) -> ReLU -> FC(C/r, C) -> sigmoid,
    then a channel-wise scale of the input."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.mean(dim=(2, 3))
        w = torch.sigmoid(self.fc2(torch.relu(self.fc1(w))))
        return x * w[:, :, None, None]


class FCA4d(nn.Module):
    """The export form of :class:`FCA`, with every activation 4-D (N, C, 1, 1) and only layers NVIDIA's DLA
    runs: global average pool -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid -> channel-wise Mul.

    The same weights as ``fca``'s two Linear layers, reshaped to 1x1 kernels (C_out, C_in, 1, 1); the
    outputs equal the FCA's to float32 rounding. The FCA's own form (mean -> Linear -> ... -> broadcast)
    exports as ReduceMean -> Gemm -> ... -> Unsqueeze with 2-D tensors, which DLA does not run: a DLA
    engine would split around it with a GPU island.
    """

    def __init__(self, fca: FCA) -> None:
        super().__init__()
        hidden, channels = fca.fc1.weight.shape
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        with torch.no_grad():
            self.fc1.weight.copy_(fca.fc1.weight[:, :, None, None])
            self.fc1.bias.copy_(fca.fc1.bias)
            self.fc2.weight.copy_(fca.fc2.weight[:, :, None, None])
            self.fc2.bias.copy_(fca.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(self.pool(x)))))


def with_4d_attention(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) whose :class:`FCA` blocks are :class:`FCA4d` (for export); the
    original is untouched, so checkpoints, training and FLOP counts keep the FCA's Linear layers."""
    copied = copy.deepcopy(model).eval()
    for parent in list(copied.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, FCA):
                parent._modules[name] = FCA4d(child)
    return copied
