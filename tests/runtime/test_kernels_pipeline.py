"""The GPU pipeline end to end on the emulated device: the demo weights in ONNX Runtime behind the device
seam, every kernel on the CPU emulation, the real orchestration (buffers, growth, batch padding, graph
re-capture, errors). Compared with the numpy path: the same detections from the same raw heads, and the
same synthetic-val mAP."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from testsupport.emulated_device import emulated_device_backend
from testsupport.square_model import BLUE, RED, square_image
from yolo_nano.core.postprocess import DecodeStats, PostprocessConfig, detections_from_heads
from yolo_nano.core.preprocess import InvalidImageError, LetterboxInfo, letterbox_params, preprocess
from yolo_nano.data.metrics import voc_evaluate
from yolo_nano.data.voc import load_split
from yolo_nano.runtime import Detector
from yolo_nano.runtime.gpu_pipeline import STAGES, GpuPipeline, GpuPipelineError, GpuPipelineUnavailable
from yolo_nano.runtime.kernel_build import KernelBuildError
from yolo_nano.runtime.kernel_check import (
    DeviceBuffersBackend,
    same_detections,
    special_heads,
    synthetic_metadata,
)
from yolo_nano.runtime.onnxruntime_backend import OnnxRuntimeBackend

kernel_emu = pytest.importorskip("yolo_nano.runtime.kernel_emu")


@pytest.fixture(scope="module")
def val(synth_set):
    data = load_split(str(synth_set), "val")
    return data, [cv2.imread(r.image_path) for r in data.records]


def _heads(backend, n):
    return [backend.host_array(h.name)[:n].copy() for h in backend.metadata.heads]


def _infos(images, meta):
    return [letterbox_params(im.shape[:2], meta.input_size)[0] for im in images]


def _same(got, want):
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        problem = same_detections(g, w)
        assert problem is None, f"image {i}: {problem}"
        assert g.image_shape == w.image_shape and g.class_names == w.class_names
        assert g.boxes.dtype == np.float32 and g.scores.dtype == np.float32 and g.class_ids.dtype == np.int64


@pytest.mark.parametrize("conf", [0.25, 0.001])
def test_demo_weights_same_detections_as_numpy_from_the_same_heads(launcher, demo_ort, val, conf):
    _, images = val
    backend = emulated_device_backend(None, launcher, max_batch=4, ort=demo_ort)
    cfg = PostprocessConfig(conf_threshold=conf)
    with GpuPipeline(backend, cfg) as pipe:
        total = 0
        for start in range(0, len(images), 4):
            chunk = images[start : start + 4]
            got = pipe.detect(chunk)
            want = detections_from_heads(
                _heads(backend, len(chunk)), _infos(chunk, backend.metadata), backend.metadata, cfg
            )
            _same(got, want)
            total += sum(len(d) for d in got)
            assert all(set(d.timings) == {"preprocess", "inference", "postprocess"} for d in got)
            assert set(STAGES) <= set(pipe.last_timings)
    assert total > 0
    backend.close()


def test_synthetic_val_map_equals_the_numpy_path(launcher, demo_ort, val):
    data, images = val
    backend = emulated_device_backend(None, launcher, max_batch=8, ort=demo_ort)
    numpy_det = Detector(demo_ort, conf_threshold=0.001, iou_threshold=0.5, max_detections=100)
    cfg = PostprocessConfig(conf_threshold=0.001, iou_threshold=0.5, max_detections=100)
    with GpuPipeline(backend, cfg) as pipe:
        gpu = pipe.detect(images)
    ref = numpy_det.detect_batch(images)
    ids = [r.image_id for r in data.records]
    as_eval = lambda dets: {i: (d.boxes, d.scores, d.class_ids) for i, d in zip(ids, dets)}  # noqa: E731
    m_gpu = voc_evaluate(data.records, as_eval(gpu), data.class_names)
    m_ref = voc_evaluate(data.records, as_eval(ref), data.class_names)
    assert m_ref.map > 0.5
    assert m_gpu.map == m_ref.map
    assert m_gpu.per_class == pytest.approx(m_ref.per_class, nan_ok=True, abs=0)
    backend.close()


def test_discrete_gpu_path_copies_and_gives_the_same_results(demo_ort, val):
    _, images = val
    results = []
    for integrated in (True, False):
        launcher = kernel_emu.EmulatedLauncher(integrated=integrated)
        backend = emulated_device_backend(None, launcher, max_batch=3, ort=demo_ort)
        assert (backend.device_io().input_host is not None) == integrated
        with GpuPipeline(backend, PostprocessConfig(0.05)) as pipe:
            results.append(pipe.detect(images[:3]))
            results.append(pipe.preprocess(images[:3]))
        backend.close()
    _same(results[0], results[2])
    np.testing.assert_array_equal(results[1], results[3])


def test_frame_buffer_grows_and_batches_are_chunked(launcher, demo_ort):
    backend = emulated_device_backend(None, launcher, max_batch=2, ort=demo_ort)
    rng = np.random.default_rng(0)
    small = [rng.integers(0, 255, (48, 64, 3), np.uint8)]
    big = [rng.integers(0, 255, (1080, 1920, 3), np.uint8), rng.integers(0, 255, (720, 1280, 3), np.uint8)]
    cfg = PostprocessConfig(0.01)
    with GpuPipeline(backend, cfg) as pipe:
        pipe.detect(small)
        before = pipe._frames.nbytes
        pipe.detect(big)
        assert pipe._frames.nbytes >= sum(f.nbytes for f in big) > before
        backend.executed.clear()
        five = small + big + small + big[:1]
        got = pipe.detect(five)
        assert backend.executed == [2, 2, 1]
        assert [d.image_shape for d in got] == [f.shape[:2] for f in five]
        again = pipe.detect(five[-1:])
        _same(again, got[-1:])
    backend.close()


def test_fixed_batch_engine_is_padded(launcher, square_model_b2):
    ort = OnnxRuntimeBackend(str(square_model_b2), device="cpu")
    backend = emulated_device_backend(None, launcher, ort=ort)
    assert backend.device_io().fixed_batch and backend.max_batch == 2
    images = [
        square_image((128, 256), [(128, 0, 64, RED)], seed=1),
        square_image((256, 256), [(128, 0, 128, BLUE)], seed=2),
        square_image((64, 64), [(16, 16, 16, RED)], seed=3),
    ]  # squares on whole cells at exact scales: no letterbox rounding near a threshold
    with GpuPipeline(backend, PostprocessConfig()) as pipe:
        got = pipe.detect(images)
        assert backend.executed == [2, 2]  # the last image alone, padded with a blank one
        pad = backend.host_array(backend.metadata.input_name)[1]
        assert not pad.any()
    want = Detector(ort).detect_batch(images)
    # the big square: its stride-32 cell and the four stride-16 cells inside it (IoU 0.25)
    assert [d.labels for d in got] == [d.labels for d in want] == [["red"], ["blue"] * 5, ["red"]]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.boxes, w.boxes, atol=1e-3)
    backend.close()


def test_cuda_graph_is_captured_replayed_and_recaptured(launcher, demo_ort, val):
    _, images = val
    backend = emulated_device_backend(None, launcher, max_batch=2, ort=demo_ort)
    cfg = PostprocessConfig(0.05)
    with GpuPipeline(backend, cfg, use_graph=True) as pipe:
        a, b = images[:2], [images[2], cv2.resize(images[3], (300, 200))]
        first = pipe.detect(a)
        assert pipe._graph is None  # the first time runs plain
        second = pipe.detect(a)
        graph = pipe._graph
        assert graph is not None and "graph" in pipe.last_timings
        before = len(launcher.launches)
        third = pipe.detect(a)
        assert pipe._graph is graph  # replayed, not captured again
        assert [k for k, _, _ in launcher.launches[before:]] == [
            "letterbox",
            "decode",
            "sort_candidates",
            "nms",
        ]
        _same(first, second)
        _same(first, third)
        want = detections_from_heads(_heads(backend, 2), _infos(a, backend.metadata), backend.metadata, cfg)
        _same(third, want)
        other = pipe.detect(b)  # new frame sizes: plain again, then a new capture
        pipe.detect(b)
        assert pipe._graph is not None and pipe._graph is not graph
        replay = pipe.detect(b)
        _same(other, replay)
        _same(
            replay,
            detections_from_heads(_heads(backend, 2), _infos(b, backend.metadata), backend.metadata, cfg),
        )
        pipe.detect(a, PostprocessConfig(0.3))  # other settings: another key
        assert pipe._graph is None or pipe._graph_key[0] == 2
    backend.close()


def test_a_kernel_fault_is_a_clear_error_and_the_pipeline_stays_usable(launcher, demo_ort, val):
    _, images = val
    backend = emulated_device_backend(None, launcher, max_batch=2, ort=demo_ort)
    with GpuPipeline(backend, PostprocessConfig(0.05)) as pipe:
        good = pipe.detect(images[:2])
        launcher.fail_next = "nms"
        with pytest.raises(GpuPipelineError, match=r"kernel nms failed.*CUDA_ERROR_LAUNCH_FAILED"):
            pipe.detect(images[:2])
        _same(pipe.detect(images[:2]), good)
    backend.close()


def test_image_errors_are_the_numpy_paths(launcher, demo_ort):
    backend = emulated_device_backend(None, launcher, max_batch=2, ort=demo_ort)
    with GpuPipeline(backend) as pipe:
        for bad in (
            None,
            np.zeros((10, 10, 3), np.float32),
            np.zeros((0, 5, 3), np.uint8),
            np.zeros((4, 4, 2), np.uint8),
        ):
            with pytest.raises(InvalidImageError) as gpu_error:
                pipe.detect([bad])
            with pytest.raises(InvalidImageError) as numpy_error:
                preprocess([bad], backend.metadata)
            assert str(gpu_error.value) == str(numpy_error.value)
        with pytest.raises(InvalidImageError, match="list"):
            pipe.detect(np.zeros((8, 8, 3), np.uint8))
        gray = np.full((50, 70), 90, np.uint8)
        bgra = np.dstack([np.full((50, 70, 3), 90, np.uint8), np.zeros((50, 70), np.uint8)])
        np.testing.assert_array_equal(pipe.preprocess([gray]), pipe.preprocess([bgra]))
        assert pipe.detect([]) == []
    pipe.close()
    with pytest.raises(GpuPipelineError, match="closed"):
        pipe.detect([gray])
    backend.close()


def test_nonfinite_outputs_are_counted(launcher):
    meta = synthetic_metadata()
    heads = special_heads(meta, "nonfinite", np.random.default_rng(1))
    backend = DeviceBuffersBackend(meta, launcher, max_batch=1, run=lambda n: backend.write_heads(heads))
    stats, ref = DecodeStats(), DecodeStats()
    frame = np.zeros((416, 416, 3), np.uint8)
    with GpuPipeline(backend) as pipe:
        got = pipe.detect([frame], stats=stats)
    info = LetterboxInfo(1.0, (0, 0), (416, 416))
    want = detections_from_heads(heads, [info], meta, PostprocessConfig(), ref)
    _same(got, want)
    assert stats.nonfinite == ref.nonfinite > 0
    backend.close()


def test_concurrent_calls_equal_sequential(launcher, demo_ort, val):
    _, images = val
    backend = emulated_device_backend(None, launcher, max_batch=2, ort=demo_ort)
    with GpuPipeline(backend, PostprocessConfig(0.05)) as pipe:
        sequential = [pipe.detect(images[i : i + 2]) for i in (0, 2, 4)]
        results = {}

        def work(i):
            results[i] = pipe.detect(images[i : i + 2])

        threads = [threading.Thread(target=work, args=(i,)) for i in (0, 2, 4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for seq, i in zip(sequential, (0, 2, 4)):
            _same(results[i], seq)
    backend.close()


def test_unavailable_with_the_fallback_named(launcher, demo_ort, monkeypatch):
    with pytest.raises(GpuPipelineUnavailable, match=r"host.*postprocess='cpu'"):
        GpuPipeline(demo_ort)
    backend = emulated_device_backend(None, launcher, max_batch=1, ort=demo_ort)
    io = backend.device_io()
    name = backend.metadata.heads[0].name
    io.output_dtypes[name] = np.dtype(np.float16)
    monkeypatch.setattr(backend, "device_io", lambda: io)
    with pytest.raises(GpuPipelineUnavailable, match=r"float16.*postprocess='cpu'"):
        GpuPipeline(backend)

    class NoCompiler(kernel_emu.EmulatedLauncher):
        def load_kernels(self):
            raise KernelBuildError(
                "no CUDA compiler for sm_72 found: install cuda-nvrtc; or postprocess='cpu'"
            )

    backend2 = emulated_device_backend(None, launcher, max_batch=1, ort=demo_ort)
    with pytest.raises(GpuPipelineUnavailable, match=r"cuda-nvrtc.*postprocess='cpu'"):
        GpuPipeline(backend2, launcher=NoCompiler())
    backend.close()
    backend2.close()


def test_select_pipeline_policy(launcher, demo_ort):
    from yolo_nano.runtime.gpu_pipeline import select_pipeline

    cfg = PostprocessConfig()
    assert select_pipeline(demo_ort, cfg, "auto") is None  # a host backend: numpy, quietly
    assert select_pipeline(demo_ort, cfg, "cpu") is None
    with pytest.raises(GpuPipelineUnavailable, match="postprocess='cpu'"):
        select_pipeline(demo_ort, cfg, "gpu")
    with pytest.raises(ValueError, match="auto, cpu, gpu"):
        select_pipeline(demo_ort, cfg, "cuda")
    backend = emulated_device_backend(None, launcher, max_batch=1, ort=demo_ort)
    for mode in ("auto", "gpu"):
        pipe = select_pipeline(backend, cfg, mode)
        assert isinstance(pipe, GpuPipeline)
        pipe.close()
    assert select_pipeline(backend, cfg, "cpu") is None

    class NoCompiler(kernel_emu.EmulatedLauncher):
        def load_kernels(self):
            raise KernelBuildError(
                "no CUDA compiler for sm_72 found: install cuda-nvrtc; or postprocess='cpu'"
            )

    with pytest.warns(RuntimeWarning, match="using numpy: .*cuda-nvrtc"):
        assert select_pipeline(backend, cfg, "auto", launcher=NoCompiler()) is None
    with pytest.raises(GpuPipelineUnavailable):
        select_pipeline(backend, cfg, "gpu", launcher=NoCompiler())
    backend.close()
