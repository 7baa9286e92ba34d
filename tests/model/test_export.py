"""ONNX export: checker, shape inference, ORT parity, determinism, metadata, weights I/O, bad input."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (train extra)")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from yolo_nano.core.metadata import MetadataError, ModelMetadata, read_onnx_metadata  # noqa: E402
from yolo_nano.model.export import export_onnx, onnx_parity  # noqa: E402
from yolo_nano.model.registry import build_model  # noqa: E402
from yolo_nano.model.weights import WeightsError, load_model, save_weights  # noqa: E402

pytestmark = pytest.mark.torch


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("arch", ["yolo-nano", "tiny-yolov2", "tiny-yolov3"])
def test_export_checks_parity_and_metadata(tmp_path, arch):
    torch.manual_seed(0)
    model = build_model(arch, 20, 128)
    path = tmp_path / "m.onnx"
    meta = export_onnx(model, path, opset=13)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    assert [o.name for o in proto.graph.output] == meta.output_names
    assert [i.name for i in proto.graph.input] == ["images"]
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)  # folded for inference
    assert onnx_parity(model, path) <= 1e-4
    back = read_onnx_metadata(path)
    assert back == meta
    assert back.arch == arch and back.input_size == (128, 128) and back.weights_source == "random-init"
    assert len(back.weights_sha256) == 64 and back.pad_value == 114 and back.channel_order == "RGB"


def test_dynamic_batch_and_opset17(tmp_path):
    model = build_model("yolo-nano", 3, 96)
    path = tmp_path / "dyn.onnx"
    meta = export_onnx(model, path, batch="dynamic", opset=17, class_names=["a", "b", "c"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"images": np.zeros((3, 3, 96, 96), np.float32)})
    assert [o.shape for o in outs] == [meta.head_shape(h, 3) for h in meta.heads]
    assert read_onnx_metadata(path).class_names == ("a", "b", "c")
    assert onnx_parity(model, path, batch=2) <= 1e-4


def test_export_is_deterministic(tmp_path):
    model = build_model("yolo-nano", 20, 64)
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    export_onnx(model, a)
    export_onnx(model, b)
    assert sha(a) == sha(b)


def test_weights_round_trip_and_hash_in_metadata(tmp_path):
    torch.manual_seed(1)
    model = build_model("tiny-yolov3", 2, 64)
    w = tmp_path / "w.safetensors"
    save_weights(model, w, class_names=["cat", "dog"], extra={"epochs": 3})
    loaded, names = load_model(w)
    assert names == ["cat", "dog"]
    for (k, v), (_, u) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(v, u), k
    meta = export_onnx(loaded, tmp_path / "m.onnx", class_names=names, weights_path=w)
    assert meta.weights_sha256 == sha(w) and meta.weights_source == "w.safetensors"
    # fp16 weights load into an fp32 model
    save_weights(model, tmp_path / "h.safetensors", class_names=["cat", "dog"], dtype=torch.float16)
    half, _ = load_model(tmp_path / "h.safetensors")
    assert next(half.parameters()).dtype == torch.float32


def test_mismatched_weights_are_refused_with_names(tmp_path):
    w = tmp_path / "w.safetensors"
    save_weights(build_model("yolo-nano", 2, 64), w, class_names=["a", "b"])
    from yolo_nano.model.weights import load_state

    with pytest.raises(WeightsError, match=r"wrong shape.*conv9.weight: file \(21, 93"):
        load_state(build_model("yolo-nano", 20, 64), w)
    with pytest.raises(WeightsError, match="missing"):
        load_state(build_model("tiny-yolov2", 2, 64), w)
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_model(tmp_path / "junk.safetensors")


def test_metadata_contract_round_trip_and_errors():
    meta = build_model("yolo-nano").build_metadata()
    assert ModelMetadata.from_json(meta.to_json()) == meta
    with pytest.raises(MetadataError, match="not valid JSON"):
        ModelMetadata.from_json("{nope")
    bad = json.loads(meta.to_json())
    bad["class_activation"] = "relu"
    with pytest.raises(MetadataError, match="class_activation"):
        ModelMetadata.from_dict(bad)
    bad = json.loads(meta.to_json())
    bad["format_version"] = 99
    with pytest.raises(MetadataError, match="upgrade"):
        ModelMetadata.from_dict(bad)
    with pytest.raises(MetadataError, match="malformed"):
        ModelMetadata.from_dict({"arch": "x"})


def test_onnx_without_our_metadata_is_refused(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(MetadataError, match="no 'yolo_nano' metadata"):
        read_onnx_metadata(path)
    (tmp_path / "corrupt.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(MetadataError, match="not a readable ONNX"):
        read_onnx_metadata(tmp_path / "corrupt.onnx")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--arch", "yolo-giga"], "unknown arch"),
        (["--size", "100"], "multiple of 32"),
        (["--classes", "0"], ">= 1"),
        (["--opset", "11"], "13..17"),
        (["--weights", "missing.safetensors"], "not found"),
    ],
)
def test_export_cli_bad_input_exit_2(tmp_path, args, message):
    r = run_cli("yolo_nano.model.export", *args, "-o", str(tmp_path / "x.onnx"))
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_export_cli_weights_class_mismatch(tmp_path):
    w = tmp_path / "w.safetensors"
    save_weights(build_model("yolo-nano", 2, 64), w, class_names=["a", "b"])
    r = run_cli(
        "yolo_nano.model.export", "--weights", str(w), "--classes", "20", "-o", str(tmp_path / "x.onnx")
    )
    assert r.returncode == 2 and "trained for 2 classes" in r.stderr
    r = run_cli(
        "yolo_nano.model.export", "--weights", str(w), "--size", "96", "-o", str(tmp_path / "ok.onnx")
    )
    assert r.returncode == 0, r.stderr
    assert "max abs diff" in r.stdout and read_onnx_metadata(tmp_path / "ok.onnx").class_names == ("a", "b")


def test_export_cli_random_init_says_so(tmp_path):
    r = run_cli(
        "yolo_nano.model.export", "--size", "64", "--batch", "dynamic", "-o", str(tmp_path / "r.onnx")
    )
    assert r.returncode == 0, r.stderr
    assert "RANDOMLY INITIALISED" in r.stdout


def test_summary_cli_json_and_compare():
    r = run_cli("yolo_nano.model.summary", "summary", "--json")
    s = json.loads(r.stdout)
    assert {"arch", "size", "classes", "params", "flops"} <= set(s)
    assert s["arch"] == "yolo-nano" and s["size"] == 416 and abs(s["flops"] / 4.57e9 - 1) <= 0.02
    r = run_cli("yolo_nano.model.summary", "summary", "--arch", "tiny-yolov2", "--layers")
    assert r.returncode == 0 and "head" in r.stdout and "6.971 B" in r.stdout
    r = run_cli("yolo_nano.model.summary", "compare")
    assert r.returncode == 0 and all(n in r.stdout for n in ("YOLO Nano", "Tiny YOLOv2", "Tiny YOLOv3"))
    r = run_cli("yolo_nano.model.summary", "summary", "--size", "33")
    assert r.returncode == 2 and "multiple of 32" in r.stderr


def test_attention_block_4d_form_equals_the_fca():
    from yolo_nano.model.blocks import FCA, FCA4d

    torch.manual_seed(3)
    fca = FCA(150, 8)
    x = torch.randn(2, 150, 13, 13) * 3
    with torch.no_grad():
        ref, got = fca(x), FCA4d(fca)(x)
    assert got.shape == ref.shape and float((got - ref).abs().max()) <= 1e-5


def test_export_keeps_every_activation_4d_for_dla(tmp_path):
    from testsupport.fake_trt_build import DLA_OPS, _output_ranks, network_layers

    torch.manual_seed(0)
    model = build_model("yolo-nano", 20, 96)
    path = tmp_path / "m.onnx"
    export_onnx(model, path, batch=2)
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    assert not {"ReduceMean", "Gemm", "MatMul", "Unsqueeze", "Flatten", "Reshape"} & set(ops), sorted(
        set(ops)
    )
    i = ops.index("GlobalAveragePool")
    assert ops.count("GlobalAveragePool") == 1
    assert ops[i : i + 6] == ["GlobalAveragePool", "Conv", "Relu", "Conv", "Sigmoid", "Mul"]
    ranks = _output_ranks(proto)
    not_dla = [(n.name, n.op_type) for n in network_layers(proto)
               if n.op_type not in DLA_OPS or any(ranks.get(o) != 4 for o in n.output)]  # fmt: skip
    assert not_dla == []
    # the exported network equals the PyTorch model (with its Linear FCA) to float32 rounding
    assert onnx_parity(model, path, batch=2) <= 1e-5
    assert isinstance(model.fca1.fc1, torch.nn.Linear)  # the model itself is untouched
