"""nano-detect end to end in subprocesses: image, folder, video, bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from testsupport.images import exif_jpeg, jpeg_bomb, png_bomb
from testsupport.square_model import BLUE, RED, build_square_model, square_image

SHAPE = (128, 256)


def _run(*args: str, cwd: Path, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "yolo_nano.runtime.cli", *args],
        cwd=str(cwd),
        capture_output=True,
        text=True,
        timeout=120,
        env=None if env is None else {**os.environ, **env},
    )


def _jsonl(path: Path) -> List[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _one_line_error(proc: subprocess.CompletedProcess, match: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("nano-detect: error:") and match in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr


def test_image(square_model, tmp_path):
    img = square_image(SHAPE, [(128, 0, 64, RED), (0, 64, 64, BLUE)])
    cv2.imwrite(str(tmp_path / "scene.png"), img)
    proc = _run("scene.png", "-m", str(square_model), "--out", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (row,) = _jsonl(tmp_path / "out" / "detections.jsonl")
    assert row["source"] == "scene.png" and row["frame"] == 0
    dets = {d["label"]: d for d in row["detections"]}
    assert dets["red"]["box"] == [128.0, 0.0, 192.0, 64.0] and dets["red"]["class_id"] == 0
    assert dets["blue"]["box"] == [0.0, 64.0, 64.0, 128.0] and dets["blue"]["score"] > 0.99
    annotated = cv2.imread(str(tmp_path / "out" / "scene.png"))
    assert annotated is not None and annotated.shape == img.shape and (annotated != img).any()
    assert "1 frames" in proc.stdout and "FPS" in proc.stdout and "inference" in proc.stdout
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left


def test_folder_with_a_bad_image_skips_it(square_model, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    cv2.imwrite(str(d / "a.jpg"), square_image(SHAPE, [(128, 0, 64, RED)]))
    cv2.imwrite(str(d / "c.png"), square_image(SHAPE, [(0, 64, 64, BLUE)]))
    (d / "b.jpg").write_bytes(b"this is not a jpeg")
    (d / "notes.txt").write_text("ignored")
    proc = _run("imgs", "-m", str(square_model), "--out", "out", "--classes", "blue", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "skipping" in proc.stderr and "b.jpg" in proc.stderr
    rows = _jsonl(tmp_path / "out" / "detections.jsonl")
    assert [Path(r["source"]).name for r in rows] == ["a.jpg", "c.png"]
    assert rows[0]["detections"] == [] and [x["label"] for x in rows[1]["detections"]] == ["blue"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg", "c.png", "detections.jsonl"]
    assert "1 skipped" in proc.stdout


def _write_video(path: Path, frames: int = 8) -> None:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (SHAPE[1], SHAPE[0]))
    assert w.isOpened()
    for i in range(frames):
        w.write(square_image(SHAPE, [((i % 4) * 64, 0, 64, RED)], seed=i))
    w.release()


def test_video(square_model, tmp_path):
    _write_video(tmp_path / "clip.avi")
    proc = _run("clip.avi", "-m", str(square_model), "--out", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = _jsonl(tmp_path / "out" / "detections.jsonl")
    assert [r["frame"] for r in rows] == list(range(8))
    for r in rows:
        (d,) = r["detections"]
        x = (r["frame"] % 4) * 64
        assert d["label"] == "red" and d["box"] == pytest.approx([x, 0, x + 64, 64], abs=1.0)
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip.avi"))
    frames = 0
    while True:
        ok, f = cap.read()
        if not ok:
            break
        assert f.shape == (SHAPE[0], SHAPE[1], 3)
        frames += 1
    assert frames == 8
    assert "8 frames" in proc.stdout


def test_video_max_frames_and_no_save(square_model, tmp_path):
    _write_video(tmp_path / "clip.avi")
    proc = _run(
        "clip.avi", "-m", str(square_model), "--out", "out", "--max-frames", "3", "--no-save", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert len(_jsonl(tmp_path / "out" / "detections.jsonl")) == 3
    assert not (tmp_path / "out" / "clip.avi").exists()


def test_bad_inputs_exit_2_with_one_line(square_model, tmp_path):
    cv2.imwrite(str(tmp_path / "ok.png"), square_image(SHAPE, [(128, 0, 64, RED)]))
    m = str(square_model)
    _one_line_error(_run("missing.jpg", "-m", m, cwd=tmp_path), "source not found")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    _one_line_error(_run("broken.jpg", "-m", m, cwd=tmp_path), "cannot read image")
    (tmp_path / "broken.avi").write_bytes(b"RIFF garbage" * 10)
    _one_line_error(_run("broken.avi", "-m", m, cwd=tmp_path), "broken.avi")
    (tmp_path / "data.xyz").write_text("?")
    _one_line_error(_run("data.xyz", "-m", m, cwd=tmp_path), "unknown file type")
    (tmp_path / "allbad").mkdir()
    (tmp_path / "allbad" / "x.jpg").write_bytes(b"nope")
    _one_line_error(_run("allbad", "-m", m, "--out", "o2", cwd=tmp_path), "none of the 1 images")
    assert not (tmp_path / "o2" / "detections.jsonl").exists()
    (tmp_path / "empty").mkdir()
    _one_line_error(_run("empty", "-m", m, cwd=tmp_path), "has no images")
    _one_line_error(_run("ok.png", "-m", "nope.onnx", cwd=tmp_path), "model file not found")
    nometa = build_square_model(tmp_path / "nometa.onnx", metadata=False)
    _one_line_error(_run("ok.png", "-m", str(nometa), cwd=tmp_path), "no 'yolo_nano' metadata")
    _one_line_error(_run("ok.png", "-m", m, "--conf", "2", cwd=tmp_path), "conf_threshold")
    _one_line_error(_run("9", "-m", m, "--out", "cam", cwd=tmp_path), "camera 9 could not be opened")
    _one_line_error(_run("ok.png", "-m", m, "--out", ".", cwd=tmp_path), "would overwrite")
    _write_video(tmp_path / "v.avi", frames=2)
    _one_line_error(
        _run("v.avi", "-m", m, "--out", str(tmp_path), cwd=tmp_path), "overwrite the source video"
    )
    assert cv2.imread(str(tmp_path / "ok.png")) is not None
    if not _has_gui():
        _one_line_error(_run("ok.png", "-m", m, "--show", cwd=tmp_path), "--show needs OpenCV with GUI")


def test_failed_run_keeps_previous_results(square_model, tmp_path):
    cv2.imwrite(str(tmp_path / "ok.png"), square_image(SHAPE, [(128, 0, 64, RED)]))
    assert _run("ok.png", "-m", str(square_model), "--out", "out", cwd=tmp_path).returncode == 0
    before = (tmp_path / "out" / "detections.jsonl").read_text()
    (tmp_path / "bad.png").write_bytes(b"nope")
    _one_line_error(
        _run("bad.png", "-m", str(square_model), "--out", "out", cwd=tmp_path), "cannot read image"
    )
    assert (tmp_path / "out" / "detections.jsonl").read_text() == before
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def _has_gui() -> bool:
    try:
        cv2.namedWindow("probe")
        cv2.destroyAllWindows()
        return True
    except cv2.error:
        return False


def test_console_script_is_installed(square_model, tmp_path):
    exe = Path(sys.executable).with_name("nano-detect")
    if not exe.exists():
        pytest.skip("nano-detect console script not installed next to this Python")
    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((32, 32, 3), np.uint8))
    proc = subprocess.run(
        [str(exe), "ok.png", "-m", str(square_model), "--out", "o"],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert _jsonl(tmp_path / "o" / "detections.jsonl")[0]["detections"] == []


# ------------------------------------------------------------------ the one image reader and frame sources
def test_exif_rotated_jpeg_is_detected_upright(square_model, tmp_path):
    """A phone photo stored sideways with EXIF Orientation=6: nano-detect sees it upright, like nano-eval."""
    upright = square_image(SHAPE, [(128, 0, 64, RED), (0, 64, 64, BLUE)])
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # what the camera wrote: 128 wide x 256 high
    (tmp_path / "photo.jpg").write_bytes(exif_jpeg(stored, 6))
    proc = _run("photo.jpg", "-m", str(square_model), "--out", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (row,) = _jsonl(tmp_path / "out" / "detections.jsonl")
    dets = {d["label"]: d["box"] for d in row["detections"]}
    assert dets["red"] == pytest.approx([128, 0, 192, 64], abs=1.0)
    assert dets["blue"] == pytest.approx([0, 64, 64, 128], abs=1.0)
    assert cv2.imread(str(tmp_path / "out" / "photo.jpg")).shape == (*SHAPE, 3)


def test_header_bombs_fifo_and_folders_named_like_images(square_model, tmp_path):
    m = str(square_model)
    (tmp_path / "bomb.png").write_bytes(png_bomb())
    _one_line_error(_run("bomb.png", "-m", m, cwd=tmp_path), "65535x65535")
    (tmp_path / "bomb.jpg").write_bytes(jpeg_bomb())
    _one_line_error(_run("bomb.jpg", "-m", m, cwd=tmp_path), "60000x60000")
    if hasattr(os, "mkfifo"):
        os.mkfifo(str(tmp_path / "x.jpg"))
        _one_line_error(
            _run("x.jpg", "-m", m, cwd=tmp_path), "not a regular file"
        )  # _run times out on a hang
    d = tmp_path / "imgs"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), square_image(SHAPE, [(128, 0, 64, RED)]))
    (d / "b.png").write_bytes(png_bomb())
    (d / "c.jpg").write_bytes(jpeg_bomb())
    (d / "d.jpg").mkdir()
    proc = _run("imgs", "-m", m, "--out", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("nano-detect: warning:")]
    assert len(warnings) == 3 and "b.png" in warnings[0] and "c.jpg" in warnings[1]
    assert warnings[2].endswith("skipped 2 of 3 images in imgs") and "Traceback" not in proc.stderr
    assert [Path(r["source"]).name for r in _jsonl(tmp_path / "out" / "detections.jsonl")] == ["a.png"]
    assert "1 frames (2 skipped)" in proc.stdout


def test_max_image_pixels_env(square_model, tmp_path):
    cv2.imwrite(str(tmp_path / "ok.png"), square_image(SHAPE, [(128, 0, 64, RED)]))
    env = {"YOLO_NANO_MAX_IMAGE_PIXELS": str(SHAPE[0] * SHAPE[1] - 1)}
    _one_line_error(_run("ok.png", "-m", str(square_model), cwd=tmp_path, env=env), "over the limit")
    env = {"YOLO_NANO_MAX_IMAGE_PIXELS": "many"}
    _one_line_error(
        _run("ok.png", "-m", str(square_model), cwd=tmp_path, env=env), "YOLO_NANO_MAX_IMAGE_PIXELS"
    )


def test_camera_index_overflow_and_truncated_video(square_model, tmp_path):
    _one_line_error(_run("99999999999999999999", "-m", str(square_model), cwd=tmp_path), "out of range")
    _write_video(tmp_path / "whole.avi", frames=8)
    data = (tmp_path / "whole.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) * 2 // 3])
    proc = _run("cut.avi", "-m", str(square_model), "--out", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    n = len(_jsonl(tmp_path / "out" / "detections.jsonl"))
    assert 0 < n < 8
    assert f"nano-detect: warning: cut.avi: video ended after {n} of its 8 frames" in proc.stderr


def _model_failing_on_white(square_model: Path, path: Path) -> Path:
    """The square model plus a Gather whose index is floor(4 x the input's smallest value): 0 or 1 for
    any image with a dark pixel or letterbox padding, 4 (out of bounds of a 2-element table) for an
    all-white square image, where ONNX Runtime fails inside ``run``. Added to a head times zero, so the
    outputs are unchanged and the model loads and validates like the original."""
    model = onnx.load(str(square_model))
    g = model.graph
    z = next(n for n in g.node if n.output[0] == "h32_z")
    z.output[0] = "h32_z0"
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array([0.0, 0.0], np.float32), "table"),
            numpy_helper.from_array(np.array(4.0, np.float32), "four"),
        ]
    )
    g.node.extend(
        [
            helper.make_node("ReduceMin", ["images"], ["lo"], keepdims=0),
            helper.make_node("Mul", ["lo", "four"], ["lo4"]),
            helper.make_node("Floor", ["lo4"], ["lo4f"]),
            helper.make_node("Cast", ["lo4f"], ["idx"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "idx"], ["picked"]),
            helper.make_node("Mul", ["picked", "zero"], ["bad_z"]),
            helper.make_node("Add", ["h32_z0", "bad_z"], ["h32_z"]),
        ]
    )
    onnx.save(model, str(path))
    return path


def test_onnx_runtime_failure_is_one_line_and_replaces_no_earlier_output(square_model, tmp_path):
    """Inference fails on the third image of a folder: one line, exit 3, and the annotated images of an
    earlier run into the same --out stay byte for byte (the first two are not renamed into place)."""
    d = tmp_path / "imgs"
    d.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        cv2.imwrite(str(d / name), square_image(SHAPE, [(128, 0, 64, RED)]))
    assert _run("imgs", "-m", str(square_model), "--out", "out", cwd=tmp_path).returncode == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(d / name), square_image(SHAPE, [(0, 64, 64, BLUE)]))  # new detections
    cv2.imwrite(str(d / "c.png"), np.full((64, 64, 3), 255, np.uint8))
    bad = _model_failing_on_white(square_model, tmp_path / "bad.onnx")
    proc = _run("imgs", "-m", str(bad), "--out", "out", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith(
        f"nano-detect: error: inference failed on {Path('imgs', 'c.png')} (onnxruntime"
    )
    assert "Traceback" not in proc.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    ok = _run("imgs/a.png", "-m", str(bad), "--out", "out2", cwd=tmp_path)  # the model itself is fine
    assert ok.returncode == 0, ok.stderr
