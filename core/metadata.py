"""The model metadata contract: everything a runtime needs travels inside the ONNX file.

An exported model carries one JSON document under the ONNX ``metadata_props`` key
:data:`METADATA_KEY`. Engines copy it into their identity record. A runtime never needs a side config.

Tensor conventions (all architectures):

* input ``images``: float32, (N, 3, H, W), channel order and normalisation as recorded
  (``RGB``, ``x / 255``), letterboxed with ``pad_value`` keeping the aspect ratio.
* outputs: one raw head tensor per scale, float32 (N, A * (5 + C), S, S), listed in :attr:`heads`
  largest stride first (13x13 before 26x26 before 52x52 at 416). Channel ``a * (5 + C) + k`` holds,
  for anchor ``a``: ``k = 0, 1`` tx, ty; ``2, 3`` tw, th; ``4`` objectness logit; ``5..`` class logits.
* decode (kept out of the graph so INT8 never touches box arithmetic)::

      cx = (sigmoid(tx) + grid_x) * stride        w = anchor_w * exp(tw)     (input pixels)
      cy = (sigmoid(ty) + grid_y) * stride        h = anchor_h * exp(th)
      score = sigmoid(obj) * class_prob           class_prob = sigmoid (yolov3) or softmax (yolov2)

This module is torch-free and Python 3.8 compatible: the runtime on a Jetson imports it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

METADATA_KEY = "yolo_nano"
FORMAT_VERSION = 1
INPUT_NAME = "images"

VOC_CLASSES: Tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip

CLASS_ACTIVATIONS = ("sigmoid", "softmax")


class MetadataError(ValueError):
    """The model's metadata is missing or malformed."""


@dataclass(frozen=True)
class HeadSpec:
    """One output scale: its ONNX output name, stride (input pixels per cell) and anchors (pixels)."""

    name: str
    stride: int
    anchors: Tuple[Tuple[float, float], ...]

    @property
    def num_anchors(self) -> int:
        return len(self.anchors)


@dataclass(frozen=True)
class ModelMetadata:
    """What a runtime needs to preprocess, run and decode an exported model.

    ``input_size`` is (height, width) in pixels; ``batch`` is an int or ``"dynamic"``.
    """

    arch: str
    class_names: Tuple[str, ...]
    input_size: Tuple[int, int]
    heads: Tuple[HeadSpec, ...]
    class_activation: str = "sigmoid"
    batch: Any = 1
    input_name: str = INPUT_NAME
    pad_value: int = 114
    channel_order: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    layout: str = "NCHW"
    weights_sha256: Optional[str] = None
    weights_source: str = "random-init"
    opset: Optional[int] = None
    format_version: int = FORMAT_VERSION
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def output_names(self) -> List[str]:
        return [h.name for h in self.heads]

    def preprocess_params(self) -> Dict[str, Any]:
        """The parameters that define preprocessing (what a calibration cache depends on)."""
        return {
            "input_size": list(self.input_size),
            "pad_value": self.pad_value,
            "channel_order": self.channel_order,
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
            "layout": self.layout,
            "letterbox": True,
        }

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["heads"] = [
            {"name": h.name, "stride": h.stride, "anchors": [list(a) for a in h.anchors]} for h in self.heads
        ]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelMetadata:
        try:
            heads = tuple(
                HeadSpec(
                    str(h["name"]), int(h["stride"]), tuple((float(a[0]), float(a[1])) for a in h["anchors"])
                )
                for h in d["heads"]
            )
            meta = cls(
                arch=str(d["arch"]),
                class_names=tuple(str(c) for c in d["class_names"]),
                input_size=(int(d["input_size"][0]), int(d["input_size"][1])),
                heads=heads,
                class_activation=str(d.get("class_activation", "sigmoid")),
                batch=d.get("batch", 1),
                input_name=str(d.get("input_name", INPUT_NAME)),
                pad_value=int(d.get("pad_value", 114)),
                channel_order=str(d.get("channel_order", "RGB")),
                scale=float(d.get("scale", 1.0 / 255.0)),
                mean=tuple(float(v) for v in d.get("mean", (0.0, 0.0, 0.0))),  # type: ignore[arg-type]
                std=tuple(float(v) for v in d.get("std", (1.0, 1.0, 1.0))),  # type: ignore[arg-type]
                layout=str(d.get("layout", "NCHW")),
                weights_sha256=d.get("weights_sha256"),
                weights_source=str(d.get("weights_source", "random-init")),
                opset=d.get("opset"),
                format_version=int(d.get("format_version", FORMAT_VERSION)),
                extra=dict(d.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise MetadataError(f"malformed yolo_nano metadata: {type(e).__name__}: {e}") from e
        meta.validate()
        return meta

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise MetadataError(f"yolo_nano metadata is not valid JSON: {e}") from e
        if not isinstance(d, dict):
            raise MetadataError("yolo_nano metadata must be a JSON object")
        return cls.from_dict(d)

    def validate(self) -> None:
        if self.format_version > FORMAT_VERSION:
            raise MetadataError(
                f"model metadata format {self.format_version} is newer than this runtime understands "
                f"({FORMAT_VERSION}); upgrade yolo-nano-edge"
            )
        if not self.class_names:
            raise MetadataError("model metadata has no class names")
        if not self.heads:
            raise MetadataError("model metadata lists no output heads")
        if self.class_activation not in CLASS_ACTIVATIONS:
            raise MetadataError(
                f"unknown class_activation {self.class_activation!r}; expected one of {CLASS_ACTIVATIONS}"
            )
        h, w = self.input_size
        for head in self.heads:
            if head.stride <= 0 or h % head.stride or w % head.stride:
                raise MetadataError(f"head {head.name!r}: stride {head.stride} does not divide input {h}x{w}")
            if not head.anchors:
                raise MetadataError(f"head {head.name!r} has no anchors")
        if self.channel_order not in ("RGB", "BGR"):
            raise MetadataError(f"unknown channel_order {self.channel_order!r}")

    def head_shape(self, head: HeadSpec, batch: int = 1) -> Tuple[int, int, int, int]:
        """Expected raw output shape (N, A*(5+C), S_h, S_w) of ``head``."""
        h, w = self.input_size
        return (batch, head.num_anchors * (5 + self.num_classes), h // head.stride, w // head.stride)


def read_onnx_metadata(model: Any) -> ModelMetadata:
    """Read :class:`ModelMetadata` from an ``onnx.ModelProto`` or a path to an ``.onnx`` file.

    Raises :class:`MetadataError` when the file has no yolo_nano metadata (e.g. a model exported by
    another tool), with what to do about it.
    """
    if not hasattr(model, "metadata_props"):
        import onnx

        path = str(model)
        try:
            model = onnx.load(path, load_external_data=False)
        except Exception as e:  # onnx raises DecodeError and friends
            raise MetadataError(f"{path}: not a readable ONNX file ({type(e).__name__}: {e})") from e
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise MetadataError(
            "the ONNX file has no 'yolo_nano' metadata: export it with `nano-export` "
            "(or add the metadata with yolo_nano.core.metadata.write_onnx_metadata)"
        )
    return ModelMetadata.from_json(props[METADATA_KEY])


def write_onnx_metadata(model: Any, meta: ModelMetadata) -> None:
    """Store ``meta`` in an ``onnx.ModelProto`` in place (replacing any previous yolo_nano entry)."""
    meta.validate()
    keep = [(p.key, p.value) for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    for k, v in keep:
        model.metadata_props.add(key=k, value=v)
    model.metadata_props.add(key=METADATA_KEY, value=meta.to_json())
