"""A tiny two-head YOLO-style ONNX model with our metadata, built with onnx.helper (no torch).

Input ``images`` (B, 3, 64, 64); heads ``head_s32`` (B, A*(5+C), 2, 2) and ``head_s16`` (B, A*(5+C), 4, 4),
largest stride first, like the real export. Also used by tests/engines (loaded by file path).
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from yolo_nano.core.metadata import HeadSpec, ModelMetadata, write_onnx_metadata

INPUT = 64


def tiny_metadata(num_classes: int = 2, batch: Any = 1) -> ModelMetadata:
    anchors = ((10.0, 13.0), (33.0, 23.0))
    return ModelMetadata(
        arch="tiny-test",
        class_names=tuple(f"class{i}" for i in range(num_classes)),
        input_size=(INPUT, INPUT),
        heads=(HeadSpec("head_s32", 32, anchors), HeadSpec("head_s16", 16, anchors)),
        batch=batch,
        opset=13,
    )


def build_tiny_model(
    num_classes: int = 2, batch: Any = 1, seed: int = 0, with_metadata: bool = True, name_nodes: bool = True
) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    meta = tiny_metadata(num_classes, batch)
    out_ch = 2 * (5 + num_classes)
    inits: List[onnx.TensorProto] = []
    nodes: List[onnx.NodeProto] = []

    def conv(x: str, cin: int, cout: int, k: int, stride: int, name: str, relu: bool = True) -> str:
        w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        inits.append(numpy_helper.from_array(w, name + ".w"))
        inits.append(numpy_helper.from_array(b, name + ".b"))
        y = name + ".out"
        nodes.append(
            helper.make_node(
                "Conv", [x, name + ".w", name + ".b"], [y], name=name if name_nodes else "",
                kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4,
            )
        )  # fmt: skip
        if relu:
            nodes.append(
                helper.make_node("Relu", [y], [name + ".relu"], name=(name + "_relu") if name_nodes else "")
            )
            return name + ".relu"
        return y

    x = conv("images", 3, 8, 3, 2, "c1")  # 32
    x = conv(x, 8, 16, 3, 2, "c2")  # 16
    x = conv(x, 16, 16, 3, 2, "c3")  # 8
    s16 = conv(x, 16, 16, 3, 2, "c4")  # 4
    s32 = conv(s16, 16, 16, 3, 2, "c5")  # 2
    h32 = conv(s32, 16, out_ch, 1, 1, "head32", relu=False)
    h16 = conv(s16, 16, out_ch, 1, 1, "head16", relu=False)
    nodes.append(helper.make_node("Identity", [h32], ["head_s32"], name="out32" if name_nodes else ""))
    nodes.append(helper.make_node("Identity", [h16], ["head_s16"], name="out16" if name_nodes else ""))
    bdim: Any = batch if isinstance(batch, int) else "batch"
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [bdim, 3, INPUT, INPUT])],
        [
            helper.make_tensor_value_info("head_s32", TensorProto.FLOAT, [bdim, out_ch, 2, 2]),
            helper.make_tensor_value_info("head_s16", TensorProto.FLOAT, [bdim, out_ch, 4, 4]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tiny-test")
    model.ir_version = 8
    onnx.checker.check_model(model)
    if with_metadata:
        write_onnx_metadata(model, meta)
    return model


def save_tiny_model(path: str, **kw: Any) -> str:
    onnx.save(build_tiny_model(**kw), path)
    return path


def write_images(folder: str, n: int, seed: int = 0, size: Optional[Tuple[int, int]] = None) -> List[str]:
    """``n`` random-but-structured BGR JPEGs of assorted sizes (blobs on a gradient)."""
    import cv2

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        h, w = size or (int(rng.integers(40, 120)), int(rng.integers(40, 120)))
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), np.full_like(xx, 90)], -1)
        img = img.astype(np.uint8)
        for _ in range(3):
            c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.circle(img, c, int(rng.integers(4, 20)), tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
        p = os.path.join(folder, f"img_{i:04d}.jpg")
        cv2.imwrite(p, img)
        paths.append(p)
    return paths
