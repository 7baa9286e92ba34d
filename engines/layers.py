"""Layer precisions from TensorRT's engine inspector (``IEngineInspector`` JSON), parsed without TensorRT.

With ``ProfilingVerbosity.DETAILED`` (``nano-build`` sets it) each layer lists its inputs and outputs
with a ``Format/Datatype`` string such as ``"Row major linear FP32"`` or ``"Channel major FP16 format
where channel % 2 == 0"`` or ``"Thirty-two wide channel vectorized row major Int8 format"``; the
precision of a layer is the data type of its first output (else its first input).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Dict, List, Tuple

_TYPES = (
    ("int8", "Int8"),
    ("fp16", "FP16"),
    ("fp16", "Half"),
    ("fp32", "FP32"),
    ("fp32", "Float"),
    ("int32", "Int32"),
)


def datatype_of(format_string: str) -> str:
    """``int8`` | ``fp16`` | ``fp32`` | ``int32`` | ``bool``/``?`` from an inspector format string."""
    for name, token in _TYPES:
        if token.lower() in format_string.lower():
            return name
    if "bool" in format_string.lower():
        return "bool"
    return "?"


def layer_precisions(info: Any) -> List[Tuple[str, str, str]]:
    """``(layer name, layer type, precision)`` for each layer of an inspector JSON document (str or dict).

    With ``LAYER_NAMES_ONLY`` verbosity the layers are bare names: type and precision are ``"?"``.
    """
    doc = json.loads(info) if isinstance(info, (str, bytes)) else info
    layers = doc.get("Layers", []) if isinstance(doc, dict) else doc
    rows = []
    for layer in layers:
        if isinstance(layer, str):
            rows.append((layer, "?", "?"))
            continue
        name = str(layer.get("Name", "?"))
        kind = str(layer.get("LayerType", "?"))
        precision = "?"
        for key in ("Outputs", "Inputs"):
            tensors = layer.get(key) or []
            if tensors and isinstance(tensors[0], dict):
                precision = datatype_of(str(tensors[0].get("Format/Datatype", "")))
                break
        rows.append((name, kind, precision))
    return rows


def precision_counts(rows: List[Tuple[str, str, str]]) -> Dict[str, int]:
    """How many layers run in each precision."""
    return dict(Counter(p for _, _, p in rows))
