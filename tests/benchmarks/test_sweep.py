"""Sweep expansion: the cross product of models x modes x clocks x batch x threads, and flag validation."""

from __future__ import annotations

import itertools

import pytest

from testsupport.board import XAVIER_CONF
from yolo_nano.benchmarks.sweep import (
    OperatingPoint,
    SweepError,
    expand_sweep,
    model_precision,
    parse_batches,
    parse_jetson_clocks,
    parse_threads,
    point_label,
)
from yolo_nano.core.cli import EXIT_BAD_INPUT
from yolo_nano.jetson.nvpmodel import parse_conf, resolve_modes


def test_jetson_cross_product_is_mode_major():
    modes = resolve_modes("15W,30W", parse_conf(XAVIER_CONF))
    models = ["/m/nano-fp16.engine", "/m/nano-int8.engine"]
    points = expand_sweep(
        models,
        modes=modes,
        batches=parse_batches("1,2,4"),
        jetson_clocks=parse_jetson_clocks("both"),
        pace_fps=30.0,
    )
    assert len(points) == 2 * 2 * 2 * 3
    want = list(itertools.product([m.id for m in modes], [False, True], models, [1, 2, 4]))
    assert [(p.power_mode_id, p.jetson_clocks, p.model, p.batch) for p in points] == want
    assert {p.power_mode_name for p in points} == {m.name for m in modes}
    assert all(p.pace_fps == 30.0 and p.late_policy == "drop" and p.threads is None for p in points)
    # a mode is switched to once: all of its points are adjacent
    ids = [p.power_mode_id for p in points]
    assert ids == sorted(ids, key=[m.id for m in modes].index)


def test_host_points_are_precision_times_threads_times_batch():
    models = ["/m/nano.onnx", "/m/nano.int8.onnx"]
    points = expand_sweep(
        models,
        batches=[1, 2],
        threads=parse_threads("1,2"),
        precisions={"/m/nano.onnx": "fp32", "/m/nano.int8.onnx": "int8-qdq"},
        backend="onnxruntime-cpu",
    )
    assert len(points) == 2 * 2 * 2
    assert all(p.power_mode_id is None and p.jetson_clocks is False for p in points)
    assert [(p.precision, p.batch, p.threads) for p in points[:4]] == [
        ("fp32", 1, 1), ("fp32", 1, 2), ("fp32", 2, 1), ("fp32", 2, 2),
    ]  # fmt: skip
    assert all(p.pace_fps is None and p.late_policy is None for p in points)  # flat out
    assert points[0].fields()["backend"] == "onnxruntime-cpu"


def test_defaults_are_one_point_per_model_as_today():
    points = expand_sweep(["a.onnx"])
    assert points == [OperatingPoint(model="a.onnx")]


def test_labels():
    rec = {"model": "/x/nano-int8.engine", "power_mode_name": "MODE_15W", "jetson_clocks": True, "batch": 2,
           "pace_fps": 30.0, "late_policy": "queue"}  # fmt: skip
    assert point_label(rec) == "nano-int8 MODE_15W +clocks b2 @30fps/queue"
    p = OperatingPoint(model="/x/nano.onnx", precision="fp32", threads=4)
    assert p.label == "nano fp32 t4 b1"


@pytest.mark.parametrize(
    "value,match",
    [("1,,2", "empty item"), ("1,x", "'x' is not a whole number"), ("0", "out of range"),
     ("1,2,1", "listed twice"), ("512", "out of range"), ("", "empty item")],
)  # fmt: skip
def test_bad_batch_lists(value, match):
    with pytest.raises(SweepError, match=match) as e:
        parse_batches(value)
    assert e.value.code == EXIT_BAD_INPUT and "--batch" in str(e.value)


def test_clock_choices():
    assert parse_jetson_clocks(None) == [False]
    assert parse_jetson_clocks("off") == [False]
    assert parse_jetson_clocks("ON") == [True]
    assert parse_jetson_clocks("both") == [False, True]
    with pytest.raises(SweepError, match="on, off or both"):
        parse_jetson_clocks("sometimes")


def test_bad_threads_and_threads_on_an_engine():
    with pytest.raises(SweepError, match="--threads"):
        parse_threads("2,-1")
    with pytest.raises(SweepError, match="TensorRT engine"):
        expand_sweep(["a.onnx", "b.engine"], threads=[1, 2])
    with pytest.raises(SweepError, match="listed twice"):
        expand_sweep(["a.onnx", "a.onnx"])
    with pytest.raises(SweepError, match="no model"):
        expand_sweep([])
    with pytest.raises(SweepError, match="--batch"):
        expand_sweep(["a.onnx"], batches=[0])
    with pytest.raises(SweepError, match="--pace"):
        expand_sweep(["a.onnx"], pace_fps=0.0)
    with pytest.raises(SweepError, match="--late"):
        expand_sweep(["a.onnx"], pace_fps=30.0, late_policy="later")


def _qdq_onnx(path):
    """The smallest explicit-INT8 graph: x -> QuantizeLinear -> DequantizeLinear -> y."""
    import onnx
    from onnx import TensorProto, helper

    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    zero = helper.make_tensor("z", TensorProto.INT8, [], [0])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]  # fmt: skip
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], initializer=[scale, zero],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_model_precision_reads_the_files(tiny_onnx, tmp_path):
    assert model_precision(tiny_onnx) == "fp32"
    assert model_precision(_qdq_onnx(str(tmp_path / "q.onnx"))) == "int8-qdq"
    assert model_precision(str(tmp_path / "missing.onnx")) is None
    assert model_precision(str(tmp_path / "no-record.engine")) is None


def test_engine_precision_comes_from_its_identity_record(tmp_path, tiny_onnx):
    import onnx

    from yolo_nano.core.metadata import read_onnx_metadata
    from yolo_nano.engines.identity import EngineIdentity, write_record

    engine = tmp_path / "nano-int8.engine"
    engine.write_bytes(b"not a real plan")
    meta = read_onnx_metadata(onnx.load(tiny_onnx)).to_dict()
    fields = dict(tensorrt_version="8.5.2", gpu_name="Xavier", compute_capability="7.2", precision="int8",
                  onnx_path=tiny_onnx, onnx_sha256="0" * 64, input_shape=[1, 3, 64, 64], metadata=meta,
                  preprocess={}, build_command="nano-build tiny.onnx --precision int8 --dla-core 0")  # fmt: skip
    write_record(str(engine), EngineIdentity(**fields, dla_core=0))
    assert model_precision(str(engine)) == "int8-dla0"
    write_record(str(engine), EngineIdentity(**dict(fields, precision="fp16")))
    assert model_precision(str(engine)) == "fp16"
