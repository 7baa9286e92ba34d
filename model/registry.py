"""The one registry of the networks: names (``--arch`` values) -> classes, and :func:`build_model`.

It imports :mod:`yolo_nano.model.network` and :mod:`yolo_nano.model.baselines`, which import only
:mod:`yolo_nano.model.detector_base`: no import cycle.
"""

from __future__ import annotations

from typing import Dict, Tuple, Type

from .baselines import TinyYoloV2, TinyYoloV3
from .detector_base import DetectorNet, check_config
from .network import YoloNano

NETWORKS: Dict[str, Type[DetectorNet]] = {net.arch: net for net in (YoloNano, TinyYoloV2, TinyYoloV3)}
#: The architecture names, YOLO Nano first (the default everywhere).
ARCHS: Tuple[str, ...] = tuple(NETWORKS)


def build_model(arch: str = "yolo-nano", num_classes: int = 20, input_size: int = 416) -> DetectorNet:
    """Build ``arch`` (one of :data:`ARCHS`) for ``num_classes`` classes at ``input_size`` pixels,
    randomly initialised, in training mode."""
    check_config(num_classes, input_size)
    if arch not in NETWORKS:
        raise ValueError(f"unknown arch {arch!r}; choose one of: {', '.join(ARCHS)}")
    return NETWORKS[arch](num_classes=num_classes, input_size=input_size)


__all__ = ["ARCHS", "NETWORKS", "build_model"]
