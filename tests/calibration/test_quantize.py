from __future__ import annotations

import glob
import warnings

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from testsupport import tiny_onnx
from yolo_nano.calibration.batcher import CalibrationBatcher, FewCalibrationImagesWarning
from yolo_nano.calibration.quantize import (
    QuantizeError,
    head_nodes,
    is_qdq_model,
    quantize_qdq,
    tensorrt_qdq_problems,
)
from yolo_nano.core.metadata import MetadataError, read_onnx_metadata


def _quantize(src, calib_dir, out, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewCalibrationImagesWarning)
        return quantize_qdq(src, calib_dir, out, progress=False, **kw)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, tiny_onnx_path, calib_dir):
    out = str(tmp_path_factory.mktemp("q") / "tiny.int8.onnx")
    return _quantize(tiny_onnx_path, calib_dir, out)


def _relative_error(a, b):
    return float(np.abs(a - b).max() / (np.abs(a).max() + 1e-12))


def test_output_is_qdq_with_metadata(quantized, tiny_onnx_path):
    model = onnx.load(quantized.output_path)
    assert is_qdq_model(model) and not is_qdq_model(tiny_onnx_path)
    meta = read_onnx_metadata(model)
    src = read_onnx_metadata(tiny_onnx_path)
    assert (
        meta.heads == src.heads and meta.class_names == src.class_names and meta.input_size == src.input_size
    )
    q = meta.extra["quantization"]
    assert q["format"] == "QDQ" and q["per_channel"] and q["calibration_images"] == 24
    assert q["algorithm"] == "percentile" == quantized.algorithm


def test_tensorrt_target_is_symmetric_int8_with_float_bias(tmp_path, tiny_onnx_path, calib_dir):
    r = _quantize(tiny_onnx_path, calib_dir, str(tmp_path / "trt.onnx"), target="tensorrt", max_images=8)
    model = onnx.load(r.output_path)
    assert read_onnx_metadata(model).extra["quantization"]["activation_type"] == "int8-symmetric"
    assert tensorrt_qdq_problems(model) == []
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    assert not [v for v in inits.values() if v.dtype == np.int32]  # biases stay float
    zero_points = [
        inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2
    ]
    assert zero_points and all(zp.dtype == np.int8 and not zp.any() for zp in zero_points)
    sess = ort.InferenceSession(r.output_path, providers=["CPUExecutionProvider"])
    assert len(sess.run(None, {"images": np.zeros((1, 3, 64, 64), np.float32)})) == 2


def test_cpu_target_is_uint8_and_not_for_tensorrt(quantized):
    model = onnx.load(quantized.output_path)
    assert quantized.target == "cpu"
    assert read_onnx_metadata(model).extra["quantization"]["activation_type"] == "uint8-asymmetric"
    problems = tensorrt_qdq_problems(model)
    assert problems and "TensorRT takes int8 Q/DQ only" in problems[0]


def test_weights_are_int8_per_channel(quantized):
    model = onnx.load(quantized.output_path)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    int8_weights = [v for v in inits.values() if v.dtype == np.int8 and v.ndim == 4]
    assert len(int8_weights) == 5  # c1..c5 quantized
    per_channel_scales = [
        inits[n.input[1]] for n in model.graph.node if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None
        and inits[n.input[0]].ndim == 4
    ]  # fmt: skip
    assert per_channel_scales and all(s.ndim == 1 and s.size > 1 for s in per_channel_scales)


def test_head_convolutions_stay_float(quantized):
    model = onnx.load(quantized.output_path)
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    for out in model.graph.output:
        node = producer[out.name]
        while node.op_type == "Identity":
            node = producer[node.input[0]]
        assert node.op_type == "Conv"
        assert node.input[1] in inits and inits[node.input[1]].data_type == onnx.TensorProto.FLOAT
        assert node.name in quantized.float_nodes


def test_runs_in_ort_close_to_fp32(quantized, tiny_onnx_path, calib_dir):
    meta = read_onnx_metadata(tiny_onnx_path)
    fp32 = ort.InferenceSession(tiny_onnx_path, providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(quantized.output_path, providers=["CPUExecutionProvider"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewCalibrationImagesWarning)
        batches = list(CalibrationBatcher(calib_dir, meta, progress=False))
    errors = []
    for batch in batches[:8]:
        a = fp32.run(None, {"images": batch})
        b = int8.run(None, {"images": batch})
        assert [x.shape for x in a] == [y.shape for y in b] and all(y.dtype == np.float32 for y in b)
        errors += [_relative_error(x, y) for x, y in zip(a, b)]
    assert max(errors) < 0.1, errors
    assert min(errors) > 0.0  # it really is quantized


def test_detector_runs_the_quantized_model(quantized, tiny_onnx_path, calib_dir):
    from yolo_nano.runtime import Detector

    image = cv2.imread(sorted(glob.glob(calib_dir + "/*.jpg"))[0])
    d32 = Detector(tiny_onnx_path, backend="onnxruntime-cpu", conf_threshold=0.0)
    d8 = Detector(quantized.output_path, backend="onnxruntime-cpu", conf_threshold=0.0)
    r32, r8 = d32(image), d8(image)
    assert len(r8) > 0 and len(r32) > 0
    assert set(r8.labels) <= {"class0", "class1"}
    # the top detection agrees in class and roughly in place
    assert r8.class_ids[0] == r32.class_ids[0]
    assert np.abs(r8.boxes[0] - r32.boxes[0]).max() < 8.0


@pytest.mark.parametrize("algorithm", ["minmax", "entropy"])
def test_other_algorithms(tmp_path, tiny_onnx_path, calib_dir, algorithm):
    r = _quantize(tiny_onnx_path, calib_dir, str(tmp_path / "m.onnx"), algorithm=algorithm, max_images=8)
    assert r.num_images == 8
    assert read_onnx_metadata(r.output_path).extra["quantization"]["algorithm"] == algorithm
    sess = ort.InferenceSession(r.output_path, providers=["CPUExecutionProvider"])
    assert len(sess.run(None, {"images": np.zeros((1, 3, 64, 64), np.float32)})) == 2


def test_unnamed_nodes_and_dynamic_batch(tmp_path, calib_dir):
    src = tiny_onnx.save_tiny_model(str(tmp_path / "dyn.onnx"), batch="dynamic", name_nodes=False)
    assert not any(n.name for n in onnx.load(src).graph.node)
    r = _quantize(src, calib_dir, str(tmp_path / "dyn.int8.onnx"), max_images=4)
    assert len(r.float_nodes) == 4 and all(r.float_nodes)  # named, then excluded: 2 Identity + 2 Conv
    sess = ort.InferenceSession(r.output_path, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"images": np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)})
    assert outs[0].shape == (3, 14, 2, 2) and outs[1].shape == (3, 14, 4, 4)


def test_model_without_metadata_is_refused(tmp_path, calib_dir):
    src = tiny_onnx.save_tiny_model(str(tmp_path / "foreign.onnx"), with_metadata=False)
    with pytest.raises(MetadataError, match="nano-export"):
        _quantize(src, calib_dir, str(tmp_path / "out.onnx"))
    assert not (tmp_path / "out.onnx").exists()


def test_already_quantized_and_unknown_algorithm(quantized, tmp_path, calib_dir, tiny_onnx_path):
    with pytest.raises(QuantizeError, match="already quantized"):
        _quantize(quantized.output_path, calib_dir, str(tmp_path / "again.onnx"))
    with pytest.raises(QuantizeError, match="unknown calibration algorithm"):
        _quantize(tiny_onnx_path, calib_dir, str(tmp_path / "x.onnx"), algorithm="kl")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written


def test_head_nodes_follow_shape_only_ops():
    model = tiny_onnx.build_tiny_model()
    assert head_nodes(model) == ["out32", "head32", "out16", "head16"]


def test_cpu_model_loads_quietly_with_relu_folded(quantized):
    import subprocess
    import sys

    ops = {n.op_type for n in onnx.load(quantized.output_path).graph.node}
    assert "Relu" not in ops and "Identity" not in ops  # absorbed into the uint8 QuantizeLinear / removed
    r = subprocess.run(
        [sys.executable, "-c", f"import onnxruntime as o; o.InferenceSession({quantized.output_path!r})"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0 and r.stderr == ""
