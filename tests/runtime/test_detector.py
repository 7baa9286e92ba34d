"""Detector end to end on real ONNX Runtime sessions with models whose output we control."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from testsupport import fake_pycuda, fake_tensorrt
from testsupport.square_model import BLUE, RED, build_square_model, square_image, square_metadata
from yolo_nano.core.metadata import HeadSpec, ModelMetadata, write_onnx_metadata
from yolo_nano.runtime import (
    Backend,
    BackendClosedError,
    BackendUnavailableError,
    Detections,
    Detector,
    InvalidImageError,
    ModelLoadError,
    OnnxRuntimeBackend,
    backends,
    open_backend,
)

# Original 128x256 (h x w) -> 64x64 input: scale 0.25, pad (0, 16). A 64 px square at (x, y) with x, y
# multiples of 64 (y - 0 maps to network y/4 + 16) covers exactly one 16 px cell of the network input.
SHAPE = (128, 256)


def test_known_boxes_on_a_real_image_file(square_model, tmp_path):
    img = square_image(SHAPE, [(128, 0, 64, RED), (0, 64, 64, BLUE)])
    path = tmp_path / "scene.png"
    assert cv2.imwrite(str(path), img)
    det = Detector(str(square_model))
    dets = det(cv2.imread(str(path)))
    assert isinstance(dets, Detections) and len(dets) == 2
    by_label = {d.label: d for d in dets}
    np.testing.assert_allclose(by_label["red"].box, (128, 0, 192, 64), atol=0.01)
    np.testing.assert_allclose(by_label["blue"].box, (0, 64, 64, 128), atol=0.01)
    assert by_label["red"].class_id == 0 and by_label["blue"].class_id == 1
    assert all(d.score > 0.99 for d in dets)
    assert dets.boxes.dtype == np.float32 and dets.class_ids.dtype == np.int64
    assert dets.image_shape == SHAPE
    assert set(dets.timings) == {"preprocess", "inference", "postprocess"} and all(
        v >= 0 for v in dets.timings.values()
    )


def test_large_square_comes_from_the_stride_32_head(square_model):
    # 256x256 -> 64x64: scale 0.25, no padding; a 128 px square at (128, 0) is the 32 px cell (1, 0)
    img = square_image((256, 256), [(128, 0, 128, RED)])
    dets = Detector(str(square_model))(img)
    boxes = [[round(v, 2) for v in b] for b in dets.boxes.tolist()]
    assert boxes[0] == [128.0, 0.0, 256.0, 128.0]  # the s32 box scores highest (objectness 40 - 30 = 10)
    # the four 16 px cells inside it fire on the s16 head too; IoU with the big box is 0.25
    assert len(dets) == 5
    assert len(Detector(str(square_model), iou_threshold=0.2)(img)) == 1


def test_softmax_model_and_thresholds(square_model_softmax):
    img = square_image(SHAPE, [(128, 0, 64, RED)])
    det = Detector(str(square_model_softmax))
    assert det.metadata.class_activation == "softmax"
    (d,) = list(det(img))
    assert d.label == "red" and d.score > 0.99
    assert len(Detector(str(square_model_softmax), conf_threshold=1.0)(img)) == 0


def test_classes_filter_and_max_detections(square_model):
    img = square_image(SHAPE, [(128, 0, 64, RED), (0, 64, 64, BLUE), (192, 64, 64, BLUE)])
    assert len(Detector(str(square_model))(img)) == 3
    assert Detector(str(square_model), classes=["blue"])(img).labels == ["blue", "blue"]
    assert Detector(str(square_model), classes=[0])(img).labels == ["red"]
    assert len(Detector(str(square_model), max_detections=1)(img)) == 1
    with pytest.raises(ValueError, match="unknown class name 'green'"):
        Detector(str(square_model), classes=["green"])
    with pytest.raises(ValueError, match="out of range"):
        Detector(str(square_model), classes=[5])


def test_batch_list_equals_single_calls_dynamic_and_fixed(square_model, square_model_b2):
    imgs = [
        square_image(SHAPE, [(128, 0, 64, RED)], seed=1),
        square_image((300, 200), [(0, 0, 90, BLUE)], seed=2),
        square_image((64, 64), [(16, 16, 16, RED)], seed=3),
    ]
    for path in (square_model, square_model_b2):
        det = Detector(str(path))
        singles = [det(im) for im in imgs]
        batch = det(imgs)
        assert isinstance(batch, list) and len(batch) == 3
        for a, b in zip(singles, batch):
            np.testing.assert_array_equal(a.boxes, b.boxes)
            np.testing.assert_array_equal(a.class_ids, b.class_ids)
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
            assert a.image_shape == b.image_shape
    assert Detector(str(square_model_b2)).backend.batch_size == 2
    assert Detector(str(square_model)).backend.batch_size is None
    assert Detector(str(square_model))([]) == []


def test_thread_safety_equals_sequential(square_model):
    rng = np.random.default_rng(5)
    imgs = []
    for i in range(12):
        sq = [(int(rng.integers(0, 4)) * 64, int(rng.integers(0, 2)) * 64, 64, RED if i % 2 else BLUE)]
        imgs.append(square_image(SHAPE, sq, seed=i))
    det = Detector(str(square_model), conf_threshold=0.01)
    expected = [det(im) for im in imgs]
    jobs = [i % len(imgs) for i in range(96)]
    start = threading.Barrier(4)

    def work(i):
        if i < 4:
            start.wait()  # make the first four calls overlap
        return i, det(imgs[jobs[i]])

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, range(len(jobs))))
    for i, got in results:
        exp = expected[jobs[i]]
        np.testing.assert_array_equal(got.boxes, exp.boxes)
        np.testing.assert_array_equal(got.scores, exp.scores)
        np.testing.assert_array_equal(got.class_ids, exp.class_ids)


def test_input_images_are_checked_and_converted(square_model):
    det = Detector(str(square_model))
    img = square_image(SHAPE, [(128, 0, 64, RED)])
    for bad, match in [
        (None, "is None"),
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (img.astype(np.float32), "dtype"),
    ]:
        with pytest.raises(InvalidImageError, match=match):
            det(bad)
    with pytest.raises(InvalidImageError, match="numpy array"):
        det("scene.jpg")
    bgra = cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
    np.testing.assert_array_equal(det(bgra).boxes, det(img).boxes)
    gray = np.zeros(SHAPE, np.uint8)
    gray[0:64, 128:192] = 255
    g = det(gray)
    assert len(g) == 1 and g.image_shape == SHAPE  # gray -> BGR: a white square, R == B -> class tie -> 0
    view = np.ascontiguousarray(img[:, ::-1])[:, ::-1]  # a non-contiguous view of the same pixels
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(det(view).boxes, det(img).boxes)


def test_detections_helpers(square_model):
    img = square_image(SHAPE, [(128, 0, 64, RED), (0, 64, 64, BLUE)])
    dets = Detector(str(square_model))(img)
    coco = dets.to_coco(image_id=7, category_ids=[1, 2])
    assert {c["category_id"] for c in coco} == {1, 2} and all(c["image_id"] == 7 for c in coco)
    red = next(c for c in coco if c["category_id"] == 1)
    np.testing.assert_allclose(red["bbox"], [128, 0, 64, 64], atol=0.01)
    rows = json.loads(json.dumps(dets.to_dicts()))
    assert {r["label"] for r in rows} == {"red", "blue"} and all(len(r["box"]) == 4 for r in rows)
    drawn = dets.draw(img)
    assert drawn.shape == img.shape and drawn is not img
    assert (drawn != img).any() and (img == square_image(SHAPE, [(128, 0, 64, RED), (0, 64, 64, BLUE)])).all()
    assert "2 boxes" in repr(dets)


def test_to_supervision(square_model):
    sv = pytest.importorskip("supervision", reason="supervision not installed")
    dets = Detector(str(square_model))(square_image(SHAPE, [(128, 0, 64, RED)]))
    s = dets.to_supervision()
    assert isinstance(s, sv.Detections) and len(s) == 1 and list(s.data["class_name"]) == ["red"]


def test_backend_object(square_model):
    be = OnnxRuntimeBackend(str(square_model), device="cpu", threads=1)
    assert isinstance(be, Backend) and be.name == "onnxruntime-cpu"
    assert be.batch_size is None and be.max_batch is None and be.device_io() is None
    assert be.session.get_session_options().intra_op_num_threads == 1
    det = Detector(be)
    assert det.backend is be and len(det(square_image(SHAPE, [(128, 0, 64, RED)]))) == 1
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        if "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers():
            pytest.skip("this onnxruntime has CUDA")
        OnnxRuntimeBackend(str(square_model), device="cuda")


def test_engine_without_tensorrt_says_what_to_do(tmp_path):
    identity = pytest.importorskip("yolo_nano.engines.identity", reason="engines/ not in this tree yet")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(ModelLoadError, match="identity record"):
        Detector(str(engine))
    from yolo_nano.engines.device import tensorrt_available  # real bindings, not a stub folder

    if tensorrt_available():
        pytest.skip("TensorRT is installed here; the error path is for machines without it")
    identity.write_record(
        engine,
        identity.EngineIdentity(
            tensorrt_version="8.5.2",
            gpu_name="Xavier",
            compute_capability="7.2",
            precision="fp16",
            onnx_path="square.onnx",
            onnx_sha256="0" * 64,
            input_shape=[1, 3, 64, 64],
            metadata=square_metadata().to_dict(),
            preprocess=square_metadata().preprocess_params(),
            build_command="nano-build square.onnx",
        ),
    )
    with pytest.raises(BackendUnavailableError, match=r"TensorRT.*model\.onnx"):
        Detector(str(engine))


def _save(model: onnx.ModelProto, path: Path) -> str:
    onnx.save(model, str(path))
    return str(path)


def test_bad_models_give_clear_errors(tmp_path, square_model):
    with pytest.raises(ModelLoadError, match="not found"):
        Detector(str(tmp_path / "missing.onnx"))
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(ModelLoadError, match="not a readable ONNX file") as err:
        Detector(str(corrupt))
    assert str(err.value).count(str(corrupt)) == 1  # the file is named once
    no_meta = build_square_model(tmp_path / "nometa.onnx", metadata=False)
    with pytest.raises(ModelLoadError, match="no 'yolo_nano' metadata.*nano-export"):
        Detector(str(no_meta))
    renamed = build_square_model(tmp_path / "renamed.onnx", output_names=("out0", "out1"))
    with pytest.raises(ModelLoadError, match="outputs.*not in the model"):
        Detector(str(renamed))
    three_classes = ModelMetadata(
        arch="square-test",
        class_names=("a", "b", "c"),
        input_size=(64, 64),
        heads=square_metadata().heads,
    )
    wrong = build_square_model(tmp_path / "wrong_classes.onnx", meta=three_classes)
    with pytest.raises(ModelLoadError, match="output 's32' has shape.*3 classes"):
        Detector(str(wrong))
    other_size = ModelMetadata(
        arch="square-test", class_names=("red", "blue"), input_size=(128, 128), heads=square_metadata().heads
    )
    with pytest.raises(ModelLoadError, match="does not match metadata input_size 128x128"):
        Detector(str(build_square_model(tmp_path / "size.onnx", meta=other_size)))
    # metadata that is not JSON
    m = onnx.load(str(square_model))
    for p in m.metadata_props:
        if p.key == "yolo_nano":
            p.value = "{not json"
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        Detector(_save(m, tmp_path / "badjson.onnx"))
    # a graph ORT cannot load though onnx can parse it (unknown op)
    m = onnx.load(str(square_model))
    m.graph.node[0].op_type = "NoSuchOp"
    write_onnx_metadata(m, square_metadata())
    with pytest.raises(ModelLoadError, match="ONNX Runtime cannot load"):
        Detector(_save(m, tmp_path / "badop.onnx"))


def test_bad_arguments(square_model):
    with pytest.raises(ValueError, match="conf_threshold"):
        Detector(str(square_model), conf_threshold=2)
    with pytest.raises(ValueError, match="iou_threshold"):
        Detector(str(square_model), iou_threshold=-0.1)
    with pytest.raises(ValueError, match="max_detections"):
        Detector(str(square_model), max_detections=0)
    with pytest.raises(ValueError, match="unknown backend"):
        Detector(str(square_model), backend="openvino")
    with pytest.raises(TypeError, match="path"):
        Detector(42)
    with pytest.raises(ValueError, match="threads"):
        Detector(str(square_model), threads=0)


def test_metadata_heads_drive_decode_not_a_side_config(tmp_path):
    """Swap the anchors in the metadata only: the same graph must now give anchor-sized boxes."""
    meta = ModelMetadata(
        arch="square-test",
        class_names=("red", "blue"),
        input_size=(64, 64),
        heads=(HeadSpec("s32", 32, ((32.0, 32.0),)), HeadSpec("s16", 16, ((8.0, 24.0),))),
    )
    path = build_square_model(tmp_path / "anchors.onnx", meta=meta)
    (d,) = list(Detector(str(path))(square_image(SHAPE, [(128, 0, 64, RED)])))
    # cell centre (40, 24) in the input, box 8 x 24 -> (36, 12, 44, 36) -> original: (144, 0, 176, 80)
    np.testing.assert_allclose(d.box, (144, 0, 176, 80), atol=0.01)


def test_default_model_without_torch_says_what_to_do(tmp_path):
    """On a Jetson without PyTorch and no cached export: a clear error, not a traceback from torch."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from yolo_nano.runtime import default_model_path\n"
        "default_model_path()\n"
    )
    env = dict(os.environ, YOLO_NANO_CACHE=str(tmp_path / "empty-cache"))
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert "DefaultModelError" in proc.stderr and "train" in proc.stderr and "model.onnx" in proc.stderr


class _RecordingBackend(Backend):
    """Runs the square model's ONNX session as a fixed-batch (3) or limited-batch backend, recording
    every batch it is given and refusing any the Backend contract forbids."""

    name = "recording"

    def __init__(self, path: str, batch_size=3, max_batch=None) -> None:
        self.batch_size = batch_size
        self.max_batch = batch_size or max_batch
        self._inner = OnnxRuntimeBackend(path, device="cpu")
        self.metadata = self._inner.metadata
        self.calls: list = []

    def infer(self, batch: np.ndarray):
        self._check_open()
        n = batch.shape[0]
        assert n == self.batch_size if self.batch_size else 1 <= n <= (self.max_batch or n)
        self.calls.append(batch.shape)
        return self._inner.infer(batch)


def test_fixed_batch_backend_gets_full_padded_chunks(square_model):
    be = _RecordingBackend(str(square_model))
    det = Detector(be)
    imgs = [square_image(SHAPE, [((i % 4) * 64, 0, 64, RED)], seed=i) for i in range(7)]
    out = det(imgs)
    assert be.calls == [(3, 3, 64, 64)] * 3  # 7 images -> 3 + 3 + (1 + 2 blank)
    assert len(out) == 7
    for i, d in enumerate(out):
        x = (i % 4) * 64
        assert len(d) == 1 and d.labels == ["red"]
        np.testing.assert_allclose(d.boxes[0], (x, 0, x + 64, 64), atol=0.01)
    assert "recording" in repr(det)


def test_dynamic_batch_runs_in_bounded_chunks(square_model):
    be = _RecordingBackend(str(square_model), batch_size=None)
    det = Detector(be)
    det.max_dynamic_batch = 2
    imgs = [square_image(SHAPE, [(64, 0, 64, BLUE)], seed=i) for i in range(5)]
    out = det(imgs)
    assert [c[0] for c in be.calls] == [2, 2, 1]
    assert [d.labels for d in out] == [["blue"]] * 5


def test_dynamic_batch_is_chunked_by_the_backends_max_batch(square_model):
    be = _RecordingBackend(str(square_model), batch_size=None, max_batch=2)
    imgs = [square_image(SHAPE, [(0, 64, 64, RED)], seed=i) for i in range(5)]
    out = Detector(be)(imgs)
    assert [c[0] for c in be.calls] == [2, 2, 1]
    assert [d.labels for d in out] == [["red"]] * 5


def test_only_backend_subclasses_are_accepted(square_model):
    class DuckTyped:  # what the old Protocol accepted
        name, batch_size = "duck", None
        metadata = square_metadata()

        def infer(self, batch):
            return []

    with pytest.raises(TypeError, match="Backend"):
        Detector(DuckTyped())


def test_onnxruntime_backend_close(square_model):
    batch = np.zeros((1, 3, 64, 64), np.float32)
    with OnnxRuntimeBackend(str(square_model), device="cpu") as be:
        assert len(be.infer(batch)) == 2 and not be.closed
    assert be.closed and be.session is None
    with pytest.raises(BackendClosedError, match="closed"):
        be.infer(batch)
    be.close()  # idempotent


def test_detector_close_and_context_manager(square_model):
    img = square_image(SHAPE, [(128, 0, 64, RED)])
    with Detector(str(square_model)) as det:
        assert len(det(img)) == 1
        owned = det.backend
    assert det.closed and owned.closed  # it opened the backend, so it closed it
    for call in (lambda: det(img), lambda: det([img, img]), lambda: det.detect_batch([])):
        with pytest.raises(BackendClosedError, match="closed"):
            call()
    det.close()  # idempotent

    be = OnnxRuntimeBackend(str(square_model), device="cpu")
    with Detector(be) as det2:
        det2(img)
    assert det2.closed and not be.closed  # a backend passed in stays its owner's
    assert len(Detector(be)(img)) == 1
    be.close()
    with pytest.raises(BackendClosedError):
        Detector(be)(img)  # a closed backend says so through the Detector


def test_detector_closes_the_backend_it_opened_when_arguments_are_bad(square_model, monkeypatch):
    opened = []
    real = backends.open_backend

    def spy(*a, **kw):
        opened.append(real(*a, **kw))
        return opened[-1]

    monkeypatch.setattr("yolo_nano.runtime.detector.open_backend", spy)
    with pytest.raises(ValueError, match="unknown class name"):
        Detector(str(square_model), classes=["green"])
    assert len(opened) == 1 and opened[0].closed


def test_open_backend_picks_by_suffix_and_refuses_mismatches(square_model, tmp_path, monkeypatch):
    assert "torch" in backends.BACKEND_CHOICES
    assert open_backend(str(square_model), "onnxruntime-cpu").name == "onnxruntime-cpu"
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    with pytest.raises(ValueError, match="ONNX Runtime cannot run it"):
        open_backend(str(engine), "onnxruntime")
    with pytest.raises(ModelLoadError, match="not found"):
        open_backend(str(tmp_path / "missing.safetensors"))
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(ValueError, match="PyTorch weights"):
        open_backend(str(weights), "onnxruntime")
    # no PyTorch installed: a clear one-line error naming the extra, not a traceback from torch
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "yolo_nano.model.torch_backend", raising=False)
    with pytest.raises(BackendUnavailableError, match=r"needs PyTorch: pip install '\.\[train\]'"):
        open_backend(str(weights))


def _fake_gpu(monkeypatch, integrated=True):
    cuda = fake_pycuda.install(monkeypatch, [fake_pycuda.FakeGpu(integrated=integrated)])
    return cuda, fake_tensorrt.install(monkeypatch)


@pytest.mark.parametrize("integrated", [True, False], ids=["mapped", "device-memory"])
def test_detector_pads_short_chunks_for_a_static_dla_engine(square_model, tmp_path, monkeypatch, integrated):
    """A DLA engine is static (runtime shape = build shape): 7 images on a batch-4 engine run as 4 + (3 +
    1 blank); the backend itself refuses a short batch, so the padding must come from the Detector."""
    cuda, trt = _fake_gpu(monkeypatch, integrated)
    path = fake_tensorrt.make_engine(str(tmp_path / "dla.engine"), str(square_model), 4, False, dla_core=0)
    imgs = [square_image(SHAPE, [((i % 4) * 64, 0, 64, RED if i % 2 else BLUE)], seed=i) for i in range(7)]
    expected = Detector(str(square_model))(imgs)
    with Detector(path) as det:
        assert det.backend.name == "tensorrt" and det.backend.batch_size == 4
        with pytest.raises(ValueError, match="exactly 4"):
            det.backend.infer(np.zeros((3, 3, 64, 64), np.float32))
        got = det(imgs)
    assert trt.executions == [4, 4]
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
        assert a.labels == b.labels
    assert cuda.leaks() == [] and cuda.counts["retain"] == cuda.counts["release"] == 1
    assert cuda.driver_stack() == [] and trt.destroyed_without_context == 0


def test_detector_chunks_a_dynamic_engine_by_its_max_batch(square_model, tmp_path, monkeypatch):
    cuda, trt = _fake_gpu(monkeypatch)
    path = fake_tensorrt.make_engine(str(tmp_path / "dyn.engine"), str(square_model), 3, True)
    imgs = [square_image(SHAPE, [(64, 0, 64, RED)], seed=i) for i in range(7)]
    with Detector(path) as det:
        assert det.backend.batch_size is None and det.backend.max_batch == 3
        out = det(imgs)
    assert trt.executions == [3, 3, 1]  # no padding for a dynamic engine
    assert [d.labels for d in out] == [["red"]] * 7
    assert cuda.leaks() == [] and cuda.driver_stack() == []
