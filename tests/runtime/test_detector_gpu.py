"""The Detector's choice of post-processing path, on the emulated device (CUDA kernels on the CPU).

``postprocess="auto"`` takes the CUDA pipeline for a backend with device buffers and numpy otherwise;
both give the same detections, and the mAP over the synthetic val set is the same to the last digit.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from testsupport.emulated_device import emulated_device_backend
from yolo_nano.core.postprocess import PostprocessConfig
from yolo_nano.data.metrics import voc_evaluate
from yolo_nano.data.voc import load_split
from yolo_nano.runtime import Detector, default_model_path
from yolo_nano.runtime.gpu_pipeline import GpuPipelineUnavailable
from yolo_nano.runtime.kernel_check import DeviceBuffersBackend, special_heads, synthetic_metadata

kernel_emu = pytest.importorskip("yolo_nano.runtime.kernel_emu")


def test_host_backend_runs_numpy_and_gpu_is_refused_with_the_fallback(square_model):
    with Detector(square_model) as det:
        assert det.postprocess_path == "cpu" and "postprocess=cpu" in repr(det)
    with pytest.raises(GpuPipelineUnavailable, match="postprocess='cpu'"):
        Detector(square_model, postprocess="gpu")
    with pytest.raises(ValueError, match="postprocess"):
        Detector(square_model, postprocess="cuda")


def test_auto_takes_the_gpu_path_and_equals_numpy_over_the_val_set(launcher, demo_ort, synth_set):
    data = load_split(str(synth_set), "val")
    images = [cv2.imread(r.image_path) for r in data.records]
    device = emulated_device_backend(default_model_path(), launcher, max_batch=4, ort=demo_ort)
    gpu = Detector(device, conf_threshold=0.001)
    cpu = Detector(demo_ort, conf_threshold=0.001)
    assert gpu.postprocess_path == "gpu" and cpu.postprocess_path == "cpu"
    got, want = gpu(images), cpu(images)
    # The GPU letterbox is within one grey level of numpy's, so the network sees nearly the same input:
    # the confident detections agree closely (exact equality from equal heads is the kernels' own test).
    for g, w in zip(got, want):
        gs, ws = g.scores > 0.25, w.scores > 0.25
        np.testing.assert_array_equal(g.class_ids[gs], w.class_ids[ws])
        np.testing.assert_allclose(g.scores[gs], w.scores[ws], rtol=0, atol=0.02)
        np.testing.assert_allclose(g.boxes[gs], w.boxes[ws], rtol=0, atol=2.0)

    def map_of(dets):
        pred = {r.image_id: (d.boxes, d.scores, d.class_ids) for r, d in zip(data.records, dets)}
        return voc_evaluate(data.records, pred, data.class_names).map

    assert map_of(got) == map_of(want)
    # Thresholds are live attributes on both paths.
    gpu.conf_threshold = cpu.conf_threshold = 0.5
    assert [len(d) for d in gpu(images[:3])] == [len(d) for d in cpu(images[:3])]
    gpu.close()
    cpu.close()
    device.close()


def test_nonfinite_outputs_warn_once_and_are_counted(launcher):
    meta = synthetic_metadata()
    heads = special_heads(meta, "nonfinite", np.random.default_rng(1))
    backend = DeviceBuffersBackend(meta, launcher, max_batch=1, run=lambda n: backend.write_heads(heads))
    frame = np.zeros((416, 416, 3), np.uint8)
    cpu_backend = DeviceBuffersBackend(meta, launcher, max_batch=1, run=lambda n: None)
    cpu_backend.infer = lambda batch: [h[: len(batch)] for h in heads]  # the host path reads the same heads
    for path, be in (("gpu", backend), ("cpu", cpu_backend)):
        with Detector(be, postprocess=path) as det:
            with pytest.warns(RuntimeWarning, match="non-finite outputs"):
                dets = det(frame)
            assert np.isfinite(dets.boxes).all() and np.isfinite(dets.scores).all()
            first = det.nonfinite_outputs
            assert first > 0
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a second warning would raise here
                det(frame)
            assert det.nonfinite_outputs == 2 * first
    backend.close()
    cpu_backend.close()


def test_config_property_matches_the_attributes(square_model):
    with Detector(
        square_model, conf_threshold=0.3, iou_threshold=0.6, max_detections=7, classes=["blue"]
    ) as d:
        c = d.config
        assert isinstance(c, PostprocessConfig)
        assert (c.conf_threshold, c.iou_threshold, c.max_detections) == (0.3, 0.6, 7)
        assert c.classes.tolist() == [1]
