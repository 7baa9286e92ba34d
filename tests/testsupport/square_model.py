"""Helpers for the runtime tests: tiny ONNX models whose outputs we control, and test images.

The "square detector" is a real ONNX graph run by ONNX Runtime. Per head (stride s, one anchor of s x s
pixels): objectness rises with the brightest channel's mean over each s x s cell, class 0 ("red") with
R - B, class 1 ("blue") with B - R, and tx = ty = tw = th = 0, so a bright red or blue square covering
exactly one cell of the network input decodes to that cell's box. Head "s32" needs a fully bright
32-cell, head "s16" a fully bright 16-cell.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from yolo_nano.core.metadata import HeadSpec, ModelMetadata, write_onnx_metadata

SQUARE_CLASSES = ("red", "blue")


def square_metadata(size: int = 64, activation: str = "sigmoid", batch: Any = "dynamic") -> ModelMetadata:
    return ModelMetadata(
        arch="square-test",
        class_names=SQUARE_CLASSES,
        input_size=(size, size),
        heads=(HeadSpec("s32", 32, ((32.0, 32.0),)), HeadSpec("s16", 16, ((16.0, 16.0),))),
        class_activation=activation,
        batch=batch,
    )


def build_square_model(
    path: Path,
    *,
    size: int = 64,
    batch: Any = "dynamic",
    activation: str = "sigmoid",
    meta: Optional[ModelMetadata] = None,
    metadata: bool = True,
    output_names: Sequence[str] = ("s32", "s16"),
) -> Path:
    """Write the square-detector ONNX model to ``path`` and return it."""
    n_dim: Any = "N" if batch == "dynamic" else int(batch)
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "c0"),
        numpy_helper.from_array(np.array([1], np.int64), "c1"),
        numpy_helper.from_array(np.array([2], np.int64), "c2"),
        numpy_helper.from_array(np.array([3], np.int64), "c3"),
        numpy_helper.from_array(np.array([1], np.int64), "ax1"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(10.0, np.float32), "ten"),
    ]
    nodes = []
    outputs = []
    obj_ab: Dict[int, Tuple[float, float]] = {32: (40.0, -30.0), 16: (20.0, -10.0)}
    for stride, name in zip((32, 16), output_names):
        p = f"h{stride}_"
        a, b = obj_ab[stride]
        inits += [
            numpy_helper.from_array(np.array(a, np.float32), p + "a"),
            numpy_helper.from_array(np.array(b, np.float32), p + "b"),
        ]
        nodes += [
            helper.make_node(
                "AveragePool",
                ["images"],
                [p + "pool"],
                kernel_shape=[stride, stride],
                strides=[stride, stride],
            ),
            helper.make_node("Slice", [p + "pool", "c0", "c1", "ax1"], [p + "r"]),
            helper.make_node("Slice", [p + "pool", "c2", "c3", "ax1"], [p + "bl"]),
            helper.make_node("ReduceMax", [p + "pool"], [p + "bright"], axes=[1], keepdims=1),
            helper.make_node("Mul", [p + "r", "zero"], [p + "z"]),
            helper.make_node("Mul", [p + "bright", p + "a"], [p + "oa"]),
            helper.make_node("Add", [p + "oa", p + "b"], [p + "obj"]),
            helper.make_node("Sub", [p + "r", p + "bl"], [p + "rb"]),
            helper.make_node("Mul", [p + "rb", "ten"], [p + "cls0"]),
            helper.make_node("Sub", [p + "bl", p + "r"], [p + "br"]),
            helper.make_node("Mul", [p + "br", "ten"], [p + "cls1"]),
            helper.make_node(
                "Concat",
                [p + "z", p + "z", p + "z", p + "z", p + "obj", p + "cls0", p + "cls1"],
                [name],
                axis=1,
            ),
        ]
        g = size // stride
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [n_dim, 7, g, g]))
    graph = helper.make_graph(
        nodes,
        "square_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [n_dim, 3, size, size])],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    if metadata:
        write_onnx_metadata(model, meta or square_metadata(size, activation, batch))
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def square_image(
    shape: Tuple[int, int] = (128, 256),
    squares: Sequence[Tuple[int, int, int, Tuple[int, int, int]]] = (),
    seed: int = 0,
) -> np.ndarray:
    """A dark noisy BGR image (h, w) with filled squares (x, y, side, bgr colour)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 30, size=(shape[0], shape[1], 3), dtype=np.uint8)
    for x, y, side, color in squares:
        img[y : y + side, x : x + side] = color
    return img


RED = (0, 0, 255)
BLUE = (255, 0, 0)
