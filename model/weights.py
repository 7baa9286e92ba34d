"""Weights on disk: safetensors only (never unpickle a checkpoint).

A weights file carries its own config in the safetensors metadata (string -> string): ``arch``,
``num_classes``, ``input_size``, ``class_names`` (JSON list) and any ``extra`` entries, so
``load_model(path)`` rebuilds the exact network without a side config.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from yolo_nano.core.fileio import atomic_write_bytes, sha256_file

from .registry import build_model

PathLike = Union[str, os.PathLike]


class WeightsError(ValueError):
    """A weights file is missing, unreadable, or does not fit the requested network."""


#: Hex SHA-256 of a file (kept under this name for callers; the one implementation is in ``fileio``).
file_sha256 = sha256_file


def save_weights(
    model: nn.Module,
    path: PathLike,
    *,
    class_names: Sequence[str],
    extra: Optional[Dict[str, str]] = None,
    dtype: Optional[torch.dtype] = None,
) -> None:
    """Write ``model``'s state dict (optionally cast to ``dtype``, e.g. torch.float16) atomically."""

    if len(class_names) != model.num_classes:  # type: ignore[attr-defined]
        raise WeightsError(f"{len(class_names)} class names for a {model.num_classes}-class model")
    meta = {
        "arch": model.arch,  # type: ignore[attr-defined]
        "num_classes": str(model.num_classes),  # type: ignore[attr-defined]
        "input_size": str(model.input_size),  # type: ignore[attr-defined]
        "class_names": json.dumps(list(class_names)),
    }
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        state[k] = v
    write_safetensors(path, state, meta)


def write_safetensors(path: PathLike, tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> None:
    """Write ``tensors`` (contiguous, on the CPU) and string ``metadata`` as a safetensors file, atomically
    and with the usual file mode (serialised in memory: ``safetensors``' own ``save_file`` replaces the
    file with a 0600 one)."""
    from safetensors.torch import save

    atomic_write_bytes(path, save(tensors, metadata=metadata))


def read_config(path: PathLike) -> Dict[str, str]:
    """The metadata of a weights file, without loading tensors."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise WeightsError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises SafetensorError and friends
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from e


def load_state(model: nn.Module, path: PathLike) -> None:
    """Load ``path`` into ``model``, refusing missing, unexpected or mis-shaped tensors with their names."""
    from safetensors.torch import load_file

    read_config(path)
    state = load_file(str(path))
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} tensors of the wrong shape (e.g. {k}: file {tuple(state[k].shape)}, "
                f"model {tuple(own[k].shape)})"
            )
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise WeightsError(
            f"{path} does not fit {model.arch} with {model.num_classes} classes: "  # type: ignore[attr-defined]
            + "; ".join(parts)
            + " — check --arch and --classes against the file's training config"
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def load_model(path: PathLike, input_size: Optional[int] = None) -> Tuple[nn.Module, List[str]]:
    """Rebuild the network described in ``path``'s metadata and load its weights.

    ``input_size`` overrides the recorded size (the weights are size-independent). Returns the model in
    eval mode and its class names.
    """
    cfg = read_config(path)
    try:
        arch = cfg["arch"]
        num_classes = int(cfg["num_classes"])
        size = input_size or int(cfg["input_size"])
        class_names = list(json.loads(cfg["class_names"]))
    except (KeyError, ValueError) as e:
        raise WeightsError(
            f"{path} lacks the yolo-nano-edge config (arch, num_classes, input_size, class_names): {e}; "
            "save weights with yolo_nano.model.weights.save_weights"
        ) from e
    model = build_model(arch, num_classes, size)
    load_state(model, path)
    model.eval()
    return model, class_names
