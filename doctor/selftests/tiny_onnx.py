"""The tiny ONNX model the TensorRT self-test builds: a two-head YOLO-style network with our metadata,
made with onnx.helper in a few milliseconds (so nothing binary ships and nothing needs PyTorch).

Input ``images`` (1, 3, 64, 64); five 3x3 convolutions with ReLU down to stride 32, then 1x1 heads
``head_s32`` (1, 21, 2, 2) and ``head_s16`` (1, 21, 4, 4), weights He-initialised with a fixed seed:
outputs of order 1, where FP16 keeps about three significant digits.
"""

from __future__ import annotations

from typing import List

import numpy as np

from yolo_nano.core.metadata import HeadSpec, ModelMetadata, write_onnx_metadata

SIZE = 64
CLASSES = 2
ANCHORS = ((10.0, 13.0), (16.0, 30.0), (33.0, 23.0))


def tiny_metadata() -> ModelMetadata:
    return ModelMetadata(
        arch="doctor-tiny",
        class_names=tuple(f"class{i}" for i in range(CLASSES)),
        input_size=(SIZE, SIZE),
        heads=(HeadSpec("head_s32", 32, ANCHORS), HeadSpec("head_s16", 16, ANCHORS)),
        batch=1,
        opset=13,
    )


def write_tiny_onnx(path: str, seed: int = 0) -> str:
    """Write the model to ``path``; returns ``path``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits: List[onnx.TensorProto] = []
    nodes: List[onnx.NodeProto] = []

    def conv(x: str, cin: int, cout: int, k: int, stride: int, name: str, relu: bool = True) -> str:
        w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, name + ".w"), numpy_helper.from_array(b, name + ".b")])
        nodes.append(
            helper.make_node(
                "Conv", [x, name + ".w", name + ".b"], [name + ".out"], name=name,
                kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4,
            )
        )  # fmt: skip
        if not relu:
            return name + ".out"
        nodes.append(helper.make_node("Relu", [name + ".out"], [name + ".relu"], name=name + "_relu"))
        return name + ".relu"

    out_ch = len(ANCHORS) * (5 + CLASSES)
    x = conv("images", 3, 8, 3, 2, "c1")  # stride 2
    x = conv(x, 8, 16, 3, 2, "c2")  # 4
    x = conv(x, 16, 16, 3, 2, "c3")  # 8
    s16 = conv(x, 16, 16, 3, 2, "c4")  # 16
    s32 = conv(s16, 16, 16, 3, 2, "c5")  # 32
    nodes.append(helper.make_node("Identity", [conv(s32, 16, out_ch, 1, 1, "h32", False)], ["head_s32"]))
    nodes.append(helper.make_node("Identity", [conv(s16, 16, out_ch, 1, 1, "h16", False)], ["head_s16"]))
    graph = helper.make_graph(
        nodes,
        "doctor-tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [
            helper.make_tensor_value_info("head_s32", TensorProto.FLOAT, [1, out_ch, SIZE // 32, SIZE // 32]),
            helper.make_tensor_value_info("head_s16", TensorProto.FLOAT, [1, out_ch, SIZE // 16, SIZE // 16]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="nano-doctor")
    model.ir_version = 8
    onnx.checker.check_model(model)
    write_onnx_metadata(model, tiny_metadata())
    onnx.save(model, path)
    return path


def sample_input(seed: int = 1) -> np.ndarray:
    """A fixed (1, 3, 64, 64) float32 input in [0, 1], as preprocessing produces."""
    return np.random.default_rng(seed).random((1, 3, SIZE, SIZE), dtype=np.float32)
