"""Layer precisions from TensorRT's engine inspector (``IEngineInspector`` JSON), parsed without TensorRT.

With ``ProfilingVerbosity.DETAILED`` (``nano-build`` sets it) each layer lists its inputs and outputs
with a ``Format/Datatype`` string such as ``"Row major linear FP32"`` or ``"Channel major FP16 format
where channel % 2 == 0"`` or ``"Thirty-two wide channel vectorized row major Int8 format"``; the
precision of a layer is the data type of its first output (else its first input).

Placement (DLA builds): DLA subgraphs appear as one layer each, a DLA loadable named
``{ForeignNode[first...last]}``; everything else of a DLA build runs on the GPU. Reformat layers copy
tensors across the DLA/GPU boundary and are counted apart (they are not fallback). NVIDIA documents the
ForeignNode naming; the exact ``LayerType`` string of a DLA layer is not documented, so any type
containing "DLA" or "Foreign" counts too. Unverified on a board: ``nano-build`` prefers TensorRT's own
"[DlaLayer]"/"[GpuLayer]" build log lines when it printed them.
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


def layer_placement(info: Any, dla_build: bool = True) -> Dict[str, List[str]]:
    """``{"dla": [...], "gpu": [...], "reformat": [...]}`` layer names of an inspector document."""
    doc = json.loads(info) if isinstance(info, (str, bytes)) else info
    layers = doc.get("Layers", []) if isinstance(doc, dict) else doc
    out: Dict[str, List[str]] = {"dla": [], "gpu": [], "reformat": []}
    for layer in layers if isinstance(layers, list) else []:
        name = str(layer.get("Name", "?")) if isinstance(layer, dict) else str(layer)
        kind = str(layer.get("LayerType", "")) if isinstance(layer, dict) else ""
        if kind.lower() in ("reformat", "noop") or name.startswith("Reformatting CopyNode"):
            out["reformat"].append(name)
        elif dla_build and (
            "dla" in kind.lower() or "foreign" in kind.lower() or name.startswith("{ForeignNode[")
        ):
            out["dla"].append(name)
        else:
            out["gpu"].append(name)
    return out


def precision_counts(rows: List[Tuple[str, str, str]]) -> Dict[str, int]:
    """How many layers run in each precision."""
    return dict(Counter(p for _, _, p in rows))
