"""The self-tests' parts that run here: the tiny model the TensorRT self-test builds (and its FP16
tolerance against real FP16 arithmetic), the Detector self-test on a small model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from yolo_nano.doctor.checks.disk import model as model_check
from yolo_nano.doctor.result import Context, Options
from yolo_nano.doctor.selftests.detector import detector
from yolo_nano.doctor.selftests.tensorrt_fp16 import RELATIVE_TOLERANCE, compare, tensorrt_fp16
from yolo_nano.doctor.selftests.tiny_onnx import sample_input, write_tiny_onnx
from yolo_nano.runtime.onnxruntime_backend import OnnxRuntimeBackend


def _outputs(path):
    with OnnxRuntimeBackend(path, device="cpu") as backend:
        assert backend.metadata.arch == "doctor-tiny" and backend.metadata.input_size == (64, 64)
        return [o.astype(np.float64) for o in backend.infer(sample_input())]


def test_the_tolerance_admits_fp16_arithmetic_and_rejects_another_network(tmp_path):
    from onnxconverter_common import float16

    path = write_tiny_onnx(str(tmp_path / "tiny.onnx"))
    reference = _outputs(path)
    assert [r.shape for r in reference] == [(1, 21, 2, 2), (1, 21, 4, 4)]
    scale = max(1.0, max(float(np.max(np.abs(r))) for r in reference))
    # the same network computed in FP16 (as an FP16 engine does): inside the tolerance, but not exact
    half = float16.convert_float_to_float16(onnx.load(path), keep_io_types=True)
    session = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])
    fp16_diff = compare(session.run(None, {"images": sample_input()}), reference)
    assert 0 < fp16_diff <= RELATIVE_TOLERANCE * scale
    # other weights (a wrong engine): far outside it
    other = _outputs(write_tiny_onnx(str(tmp_path / "other.onnx"), seed=1))
    assert compare(other, reference) > RELATIVE_TOLERANCE * scale


def test_the_tensorrt_self_test_does_not_apply_without_a_gpu(tmp_path, no_gpu):
    result = tensorrt_fp16(Context(Options(sysfs_root=str(tmp_path))))
    assert (result.status, result.detail) == ("n/a", "no GPU")


def test_detector_self_test_runs_the_numpy_path(tmp_path, tiny_onnx, no_gpu):
    ctx = Context(Options(model=tiny_onnx, sysfs_root=str(tmp_path)))
    assert model_check(ctx).status == "ok"  # the model line opens it first
    numpy_path, gpu = detector(ctx, seconds=0.3)
    assert numpy_path.status == "ok" and numpy_path.data["fps"] > 0
    assert numpy_path.data["backend"] == "onnxruntime-cpu" and numpy_path.data["model"] == tiny_onnx
    assert "4 frames 640x480" in numpy_path.detail
    assert (gpu.status, gpu.detail) == ("n/a", "no GPU")


@pytest.mark.parametrize("quick", [True, False])
def test_detector_self_test_skips_or_defers_to_the_model_line(tmp_path, quick):
    ctx = Context(Options(model=str(tmp_path / "absent.onnx"), quick=quick, sysfs_root=str(tmp_path)))
    assert model_check(ctx).status == "failed"
    lines = detector(ctx, seconds=0.1)
    want = "skipped" if quick else "n/a"
    assert [r.status for r in lines] == [want, want]
