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
import math
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


MAX_INPUT_SIZE = 8192  # pixels per side: beyond any detector input
MAX_BATCH = 4096
MAX_ANCHOR_TO_INPUT = 16  # an anchor larger than 16x the input is a corrupt file, not a design


class MetadataError(ValueError):
    """The model's metadata is missing or malformed."""


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise MetadataError(f"metadata field {name!r} must be a non-empty string, got {value!r:.60}")
    return value


def _number(value: Any, name: str, integer: bool = False) -> float:
    """A finite JSON number (not a bool); ``integer``: also integral."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MetadataError(f"metadata field {name!r} must be a number, got {value!r:.60}")
    try:
        number = float(value)  # a JSON integer of 400 digits does not fit: OverflowError
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise MetadataError(f"metadata field {name!r} must be finite, got {str(value)[:60]}")
    if integer and number != int(number):
        raise MetadataError(f"metadata field {name!r} must be an integer, got {value!r}")
    return number


def _number_list(value: Any, name: str, length: int, integer: bool = False) -> List[float]:
    if not isinstance(value, (list, tuple)) or len(value) != length:
        raise MetadataError(f"metadata field {name!r} must be a list of {length} numbers, got {value!r:.60}")
    return [_number(v, f"{name}[{i}]", integer) for i, v in enumerate(value)]


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
        """Build and validate metadata from its JSON form. Every field is type-checked here, when the
        model is opened, so a file that lies fails with one :class:`MetadataError` naming the field
        instead of an IndexError on the first frame or NaN boxes later."""
        if not isinstance(d, Mapping):
            raise MetadataError(f"yolo_nano metadata must be a JSON object, got {type(d).__name__}")
        for key in ("arch", "class_names", "input_size", "heads"):
            if key not in d:
                raise MetadataError(f"malformed yolo_nano metadata: field {key!r} is missing")
        size = _number_list(d["input_size"], "input_size", 2, integer=True)
        heads_raw = d["heads"]
        if not isinstance(heads_raw, list):
            raise MetadataError(f"metadata field 'heads' must be a list, got {type(heads_raw).__name__}")
        heads = []
        for i, h in enumerate(heads_raw):
            if not isinstance(h, Mapping):
                raise MetadataError(f"metadata field 'heads[{i}]' must be an object")
            anchors = h.get("anchors")
            if not isinstance(anchors, list) or not anchors:
                raise MetadataError(f"metadata field 'heads[{i}].anchors' must be a non-empty list of [w, h]")
            heads.append(
                HeadSpec(
                    _string(h.get("name"), f"heads[{i}].name"),
                    int(_number(h.get("stride"), f"heads[{i}].stride", integer=True)),
                    tuple(
                        tuple(_number_list(a, f"heads[{i}].anchors[{j}]", 2)) for j, a in enumerate(anchors)
                    ),  # type: ignore[misc]
                )
            )
        names = d["class_names"]
        if not isinstance(names, list):
            raise MetadataError(
                f"metadata field 'class_names' must be a list of strings, got {type(names).__name__}"
            )
        batch = d.get("batch", 1)
        if batch != "dynamic":
            batch = int(_number(batch, "batch", integer=True))
        extra = d.get("extra", {})
        if not isinstance(extra, Mapping):
            raise MetadataError("metadata field 'extra' must be an object")
        sha = d.get("weights_sha256")
        opset = d.get("opset")
        meta = cls(
            arch=_string(d["arch"], "arch"),
            class_names=tuple(_string(c, f"class_names[{i}]") for i, c in enumerate(names)),
            input_size=(int(size[0]), int(size[1])),
            heads=tuple(heads),
            class_activation=_string(d.get("class_activation", "sigmoid"), "class_activation"),
            batch=batch,
            input_name=_string(d.get("input_name", INPUT_NAME), "input_name"),
            pad_value=int(_number(d.get("pad_value", 114), "pad_value", integer=True)),
            channel_order=_string(d.get("channel_order", "RGB"), "channel_order"),
            scale=_number(d.get("scale", 1.0 / 255.0), "scale"),
            mean=tuple(_number_list(d.get("mean", [0.0, 0.0, 0.0]), "mean", 3)),  # type: ignore[arg-type]
            std=tuple(_number_list(d.get("std", [1.0, 1.0, 1.0]), "std", 3)),  # type: ignore[arg-type]
            layout=_string(d.get("layout", "NCHW"), "layout"),
            weights_sha256=None if sha is None else _string(sha, "weights_sha256"),
            weights_source=_string(d.get("weights_source", "random-init"), "weights_source"),
            opset=None if opset is None else int(_number(opset, "opset", integer=True)),
            format_version=int(
                _number(d.get("format_version", FORMAT_VERSION), "format_version", integer=True)
            ),
            extra=dict(extra),
        )
        meta.validate()
        return meta

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        try:
            d = json.loads(text)
        except (ValueError, RecursionError) as e:  # JSONDecodeError; an integer of over 4300 digits
            raise MetadataError(
                f"yolo_nano metadata is not valid JSON: {type(e).__name__}: {str(e)[:200]}"
            ) from e
        if not isinstance(d, dict):
            raise MetadataError("yolo_nano metadata must be a JSON object")
        return cls.from_dict(d)

    def validate(self) -> None:
        """Check every field's range and consistency; raises :class:`MetadataError` naming the field."""
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
        if not (0 < h <= MAX_INPUT_SIZE and 0 < w <= MAX_INPUT_SIZE):
            raise MetadataError(f"metadata field 'input_size' {h}x{w} is outside 1..{MAX_INPUT_SIZE} pixels")
        names = [head.name for head in self.heads]
        if len(set(names)) != len(names):
            raise MetadataError(f"metadata field 'heads' names an output twice: {names}")
        if self.input_name in names:
            raise MetadataError(f"metadata field 'input_name' {self.input_name!r} is also an output name")
        largest = float(max(h, w)) * MAX_ANCHOR_TO_INPUT
        for head in self.heads:
            if head.stride <= 0 or h % head.stride or w % head.stride:
                raise MetadataError(f"head {head.name!r}: stride {head.stride} does not divide input {h}x{w}")
            if not head.anchors:
                raise MetadataError(f"head {head.name!r} has no anchors")
            for aw, ah in head.anchors:
                if not (0.0 < aw <= largest and 0.0 < ah <= largest):
                    raise MetadataError(
                        f"head {head.name!r}: anchor ({aw}, {ah}) is not in (0, {largest:g}] pixels "
                        f"({MAX_ANCHOR_TO_INPUT}x the input size)"
                    )
        if self.channel_order not in ("RGB", "BGR"):
            raise MetadataError(f"unknown channel_order {self.channel_order!r}; expected 'RGB' or 'BGR'")
        if self.layout != "NCHW":
            raise MetadataError(f"metadata field 'layout' is {self.layout!r}; this runtime reads NCHW only")
        if not 0 <= self.pad_value <= 255:
            raise MetadataError(f"metadata field 'pad_value' {self.pad_value} is outside 0..255")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise MetadataError(f"metadata field 'scale' must be a positive finite number, got {self.scale}")
        if len(self.mean) != 3 or not all(math.isfinite(v) for v in self.mean):
            raise MetadataError(f"metadata field 'mean' must be 3 finite numbers, got {list(self.mean)}")
        if len(self.std) != 3 or not all(math.isfinite(v) and v > 0 for v in self.std):
            raise MetadataError(
                f"metadata field 'std' must be 3 positive finite numbers, got {list(self.std)}"
            )
        if self.batch != "dynamic" and not (isinstance(self.batch, int) and 1 <= self.batch <= MAX_BATCH):
            raise MetadataError(
                f"metadata field 'batch' must be 'dynamic' or 1..{MAX_BATCH}, got {self.batch!r}"
            )

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
