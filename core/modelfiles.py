"""What kind of model a path names, by its suffix: the one list every command uses."""

from __future__ import annotations

import os
from typing import Union

ENGINE_SUFFIXES = (".engine", ".trt", ".plan")  # serialized TensorRT engines (nano-build writes .engine)
ONNX_SUFFIXES = (".onnx",)
WEIGHTS_SUFFIXES = (".safetensors",)  # PyTorch weights (needs the train extra)


def is_engine_path(path: Union[str, os.PathLike[str]]) -> bool:
    """True for a TensorRT engine file name (``.engine``, ``.trt``, ``.plan``; any case)."""
    return os.fspath(path).lower().endswith(ENGINE_SUFFIXES)


def is_weights_path(path: Union[str, os.PathLike[str]]) -> bool:
    """True for PyTorch ``.safetensors`` weights."""
    return os.fspath(path).lower().endswith(WEIGHTS_SUFFIXES)
