"""TensorRT end to end: run on a Jetson (or any NVIDIA GPU with TensorRT and pycuda) with
``pytest -m jetson tests/engines``. Skipped here with the reason when TensorRT is missing."""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnxruntime as ort
import pytest

from yolo_nano.engines.device import tensorrt_available

pytestmark = [
    pytest.mark.jetson,
    pytest.mark.skipif(
        not tensorrt_available(), reason="needs TensorRT (JetPack) and pycuda on an NVIDIA GPU"
    ),
]


def _build(onnx_path, out, *extra):
    from yolo_nano.engines.builder import build_engine
    from yolo_nano.engines.plan import BuildRequest, prepare

    kw = dict(extra)
    plan = prepare(BuildRequest(onnx=onnx_path, output=str(out), **kw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_engine(plan, log=lambda m: None)


def _ort(onnx_path, batch):
    return ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]).run(None, {"images": batch})


def _batch(n=1):
    return np.random.default_rng(0).random((n, 3, 64, 64), dtype=np.float32)


def test_fp32_engine_matches_onnxruntime(tmp_path, tiny_onnx_path):
    from yolo_nano.engines.identity import read_record
    from yolo_nano.engines.trt_backend import TensorRTBackend

    ident = _build(tiny_onnx_path, tmp_path / "m.engine", ("precision", "fp32"))
    assert os.path.exists(tmp_path / "m.engine") and read_record(tmp_path / "m.engine") == ident
    with TensorRTBackend(str(tmp_path / "m.engine")) as backend:
        assert backend.name == "tensorrt" and backend.batch_size == 1
        outs = backend.infer(_batch())
        for got, ref in zip(outs, _ort(tiny_onnx_path, _batch())):
            np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3)
        with pytest.raises(ValueError, match="exactly 1"):
            backend.infer(_batch(3))  # chunking is the Detector's job, not the backend's
    assert backend.closed


def test_int8_calibration_writes_cache_then_reuses_it(tmp_path, tiny_onnx_path, calib_dir):
    from yolo_nano.calibration.cache import read_cache, read_identity

    cache = tmp_path / "c.calib"
    args = (("precision", "int8"), ("calib_images", calib_dir), ("calib_cache", str(cache)))
    ident = _build(tiny_onnx_path, tmp_path / "a.engine", *args)
    assert ident.quantization == "calibrated" and read_cache(cache).algorithm == "EntropyCalibration2"
    assert read_identity(cache).num_images == 12
    mtime = os.path.getmtime(cache)
    ident2 = _build(tiny_onnx_path, tmp_path / "b.engine", ("precision", "int8"), ("calib_cache", str(cache)))
    assert ident2.calibration["cache_sha256"] == ident.calibration["cache_sha256"]
    assert os.path.getmtime(cache) == mtime


def test_qdq_engine_and_layer_precisions(tmp_path, qdq_onnx_path):
    from yolo_nano.engines.builder import inspect_layers
    from yolo_nano.engines.layers import layer_precisions
    from yolo_nano.engines.trt_backend import TensorRTBackend

    engine = tmp_path / "q.engine"
    assert _build(qdq_onnx_path, engine, ("precision", "int8")).quantization == "qdq"
    rows = layer_precisions({"Layers": inspect_layers(str(engine))})
    assert any(p == "int8" for _, _, p in rows)
    with TensorRTBackend(str(engine)) as backend:
        for got, ref in zip(backend.infer(_batch()), _ort(qdq_onnx_path, _batch())):
            assert np.abs(got - ref).max() <= 0.1 * np.abs(ref).max()


def test_detector_runs_an_engine(tmp_path, tiny_onnx_path, calib_dir):
    import cv2

    from yolo_nano.runtime import Detector

    _build(tiny_onnx_path, tmp_path / "d.engine", ("precision", "fp16"))
    image = cv2.imread(os.path.join(calib_dir, sorted(os.listdir(calib_dir))[0]))
    with Detector(str(tmp_path / "d.engine"), conf_threshold=0.0) as det:
        dets = det(image)
        assert len(det([image] * 3)) == 3  # three calls of the batch-1 engine
    assert len(dets) > 0 and det.backend.closed
