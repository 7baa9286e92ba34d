"""The embedded default model (exported on first use, cached) and YOLO Nano end to end through Detector."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolo_nano.core.metadata import read_onnx_metadata
from yolo_nano.runtime import Detector, batched_nms, decode, default_model_path, preprocess, scale_boxes
from yolo_nano.runtime.default_model import default_weights_path

pytestmark = [pytest.mark.torch, pytest.mark.slow]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip(
        "torch", reason="PyTorch is not installed (the train extra); the export needs it once"
    )
    pytest.importorskip("yolo_nano.model.export", reason="model/export.py not in the tree yet")
    d = tmp_path_factory.mktemp("cache")
    old = os.environ.get("YOLO_NANO_CACHE")
    os.environ["YOLO_NANO_CACHE"] = str(d)
    yield d
    if old is None:
        del os.environ["YOLO_NANO_CACHE"]
    else:
        os.environ["YOLO_NANO_CACHE"] = old


@pytest.fixture(scope="module")
def default_onnx(cache) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return default_model_path()


def test_exported_once_into_the_cache(cache, default_onnx):
    path = Path(default_onnx)
    assert path.parent == cache and path.is_file()
    meta = read_onnx_metadata(str(path))
    assert meta.arch == "yolo-nano" and meta.batch == "dynamic"
    weights = default_weights_path()
    if weights.is_file():
        from yolo_nano.model.weights import read_config

        size = int(read_config(str(weights))["input_size"])
        assert meta.input_size == (size, size)  # the size the weights were trained at
        assert meta.weights_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
        assert meta.weights_source == weights.name
    else:
        assert meta.input_size == (416, 416)
        assert meta.weights_source == "random-init"
        with pytest.warns(RuntimeWarning, match="RANDOMLY INITIALISED"):
            default_model_path()
    stamp = path.stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert default_model_path() == default_onnx  # cached: no second export
    assert path.stat().st_mtime_ns == stamp
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


def test_input_size_is_a_separate_cached_export(cache, default_onnx):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = default_model_path(input_size=256)
        assert p != default_onnx and default_model_path(input_size=256) == p
        with pytest.raises(ValueError, match="multiple of 32"):
            default_model_path(input_size=250)
    meta = read_onnx_metadata(p)
    assert (
        meta.input_size == (256, 256)
        and meta.weights_sha256 == read_onnx_metadata(default_onnx).weights_sha256
    )


def test_shipped_weights_find_the_objects(default_onnx):
    """The demo weights on synthetic validation scenes: every clearly visible object is found (IoU >= 0.5
    with a detection), whatever the class (the box pipeline end to end, not the model's accuracy)."""
    if not default_weights_path().is_file():
        pytest.skip("the demo weights model/yolo_nano_synth.safetensors are not in this tree")
    from yolo_nano.core.postprocess import box_iou
    from yolo_nano.data.synth import generate_sample

    det = Detector(default_onnx, conf_threshold=0.1)
    found = total = 0
    for i in range(16):
        img, objects = generate_sample(0, "val", i)
        gt = np.array([o.box for o in objects if not o.difficult and not o.truncated], np.float32).reshape(
            -1, 4
        )
        if not len(gt):
            continue
        d = det(img)
        total += len(gt)
        if len(d):
            found += int((box_iou(gt, d.boxes).max(axis=1) >= 0.5).sum())
    assert total >= 12 and found >= 0.75 * total, (found, total)  # 22 of 24 with the first demo weights


def test_custom_weights_are_keyed_by_sha256(cache, tmp_path):
    from yolo_nano.model.registry import build_model
    from yolo_nano.model.weights import save_weights

    w = tmp_path / "mine.safetensors"
    save_weights(build_model("yolo-nano", num_classes=3, input_size=416), str(w), class_names=["a", "b", "c"])
    sha = hashlib.sha256(w.read_bytes()).hexdigest()
    path = default_model_path(str(w))
    assert sha[:16] in Path(path).name
    meta = read_onnx_metadata(path)
    assert meta.class_names == ("a", "b", "c") and meta.weights_sha256 == sha
    with pytest.raises(FileNotFoundError):
        default_model_path(str(tmp_path / "absent.safetensors"))


def test_yolo_nano_detector_equals_the_building_blocks(default_onnx):
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8), (7, 7), 0)
    det = Detector(default_onnx, conf_threshold=0.001, max_detections=100, threads=2)
    got = det(img)
    assert len(got) <= 100
    assert np.all(np.diff(got.scores) <= 0) and np.all(got.scores > 0.001)
    b = got.boxes
    assert np.all(b[:, 0] >= 0) and np.all(b[:, 2] <= 500) and np.all(b[:, 1] >= 0) and np.all(b[:, 3] <= 375)
    # the same thing by hand from the public building blocks and a raw ONNX Runtime session
    import onnxruntime as ort

    meta = det.metadata
    batch, infos = preprocess([img], meta)
    sess = ort.InferenceSession(default_onnx, providers=["CPUExecutionProvider"])
    raw = sess.run(meta.output_names, {meta.input_name: batch})
    assert [r.shape for r in raw] == [meta.head_shape(h) for h in meta.heads]
    boxes, scores, cls = decode(raw, meta, 0.001)[0]
    keep = batched_nms(boxes, scores, cls, 0.45)[:100]
    np.testing.assert_allclose(got.scores, scores[keep], rtol=1e-4)
    np.testing.assert_array_equal(got.class_ids, cls[keep])
    np.testing.assert_allclose(got.boxes, scale_boxes(boxes[keep], infos[0]), atol=0.05)


def test_cli_uses_the_default_model(cache, default_onnx, tmp_path):
    cv2.imwrite(str(tmp_path / "x.jpg"), np.full((120, 160, 3), 90, np.uint8))
    env = dict(os.environ, YOLO_NANO_CACHE=str(cache))
    proc = subprocess.run(
        [sys.executable, "-m", "yolo_nano.runtime.cli", "x.jpg", "--out", "o"],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "model yolo-nano " in proc.stdout
    assert (tmp_path / "o" / "detections.jsonl").read_text().count("\n") == 1


def test_yolo_nano_from_several_threads_equals_sequential(default_onnx):
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(1)
    imgs = [
        cv2.GaussianBlur(rng.integers(0, 256, (240 + 40 * i, 320, 3), dtype=np.uint8), (5, 5), 0)
        for i in range(3)
    ]
    det = Detector(default_onnx, conf_threshold=0.001, max_detections=50, threads=1)
    expected = [det(im) for im in imgs]
    jobs = [i % 3 for i in range(9)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        got = list(pool.map(lambda j: det(imgs[j]), jobs))
    for j, d in zip(jobs, got):
        np.testing.assert_array_equal(d.boxes, expected[j].boxes)
        np.testing.assert_array_equal(d.scores, expected[j].scores)
        np.testing.assert_array_equal(d.class_ids, expected[j].class_ids)


@pytest.mark.parametrize("arch", ["tiny-yolov2", "tiny-yolov3", "yolo-nano"])
def test_every_architecture_runs_from_its_metadata_alone(arch, cache, tmp_path):
    """Each exported architecture (one head + softmax for Tiny YOLOv2, two for Tiny YOLOv3, three for YOLO
    Nano) runs through the Detector with nothing but the ONNX file, fixed batch 2, at 128x128."""
    import torch

    from yolo_nano.model.export import export_onnx
    from yolo_nano.model.registry import build_model

    torch.manual_seed(0)
    path = tmp_path / f"{arch}.onnx"
    meta = export_onnx(
        build_model(arch, num_classes=4, input_size=128), str(path), class_names=list("abcd"), batch=2
    )
    det = Detector(str(path), conf_threshold=0.001, max_detections=30)
    assert det.backend.batch_size == 2 and det.metadata.heads == meta.heads
    assert len(meta.heads) == {"tiny-yolov2": 1, "tiny-yolov3": 2, "yolo-nano": 3}[arch]
    if arch == "tiny-yolov2":
        assert meta.class_activation == "softmax"
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 256, (100 + 20 * i, 150, 3), dtype=np.uint8) for i in range(3)]
    out = det(imgs)  # 3 images -> batches of 2 (the last padded)
    assert len(out) == 3
    for d, im in zip(out, imgs):
        assert 0 < len(d) <= 30 and set(d.labels) <= set("abcd")
        assert np.all(d.boxes[:, 2] <= im.shape[1]) and np.all(d.boxes[:, 3] <= im.shape[0])
        single = det(im)
        np.testing.assert_allclose(single.scores, d.scores, rtol=1e-5)


def test_corrupt_cached_model_is_exported_again(default_onnx, tmp_path, monkeypatch):
    """A truncated cache file is noticed (its recorded sha256) and replaced, with a warning."""
    import shutil

    from yolo_nano.runtime import default_model as dm

    monkeypatch.setenv("YOLO_NANO_CACHE", str(tmp_path))
    target = tmp_path / Path(default_onnx).name
    shutil.copy(default_onnx, target)
    shutil.copy(default_onnx + ".sha256", str(target) + ".sha256")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert default_model_path() == str(target)  # intact: used as is
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="unusable"):
        assert default_model_path() == str(target)
    assert target.read_bytes() == Path(default_onnx).read_bytes()

    # Where it cannot be exported again (no PyTorch), the error names the file and says to delete it.
    target.write_bytes(b"garbage")

    def no_torch(*a, **k):
        raise dm.DefaultModelError("exporting it needs PyTorch")

    monkeypatch.setattr(dm, "_export", no_torch)
    with pytest.raises(dm.DefaultModelError, match=r"Delete .*\.onnx"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default_model_path()
