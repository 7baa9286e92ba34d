"""Counting weights and FLOPs the way the paper does.

The paper's "operations" are FLOPs = 2 x multiply-accumulates of convolution and linear layers
(that convention reproduces its Tiny YOLOv2 figure, 3.49 GMAC -> 6.97 B). BatchNorm, activations,
pooling, upsampling and additions are not counted. "Weights" are the conv and linear weight tensors
(biases and BatchNorm parameters are reported separately as ``params_total``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch
from torch import nn


@dataclass
class LayerCount:
    """One conv/linear layer: its module name, kind, output shape (C, H, W), weights and FLOPs."""

    name: str
    kind: str
    out_shape: tuple
    weights: int
    flops: int


@dataclass
class ModelCount:
    layers: List[LayerCount]
    params_total: int

    @property
    def weights(self) -> int:
        return sum(layer.weights for layer in self.layers)

    @property
    def flops(self) -> int:
        return sum(layer.flops for layer in self.layers)


def count_model(model: nn.Module, input_size: int) -> ModelCount:
    """Count conv+linear weights and FLOPs of ``model`` on one (1, 3, input_size, input_size) input."""
    layers: List[LayerCount] = []
    hooks = []

    def hook(name: str):  # noqa: ANN202
        def fn(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                k_h, k_w = module.kernel_size
                macs_per_out = (module.in_channels // module.groups) * k_h * k_w
                kind = "dwconv" if module.groups > 1 else f"conv{k_h}x{k_w}"
                shape = tuple(output.shape[1:])
            else:
                macs_per_out = module.in_features
                kind = "linear"
                shape = tuple(output.shape[1:])
            layers.append(
                LayerCount(name, kind, shape, module.weight.numel(), 2 * macs_per_out * output.numel())
            )

        return fn

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return ModelCount(layers, sum(p.numel() for p in model.parameters()))
