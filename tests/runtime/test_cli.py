"""nano-detect end to end in subprocesses: image, folder, video, bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest

from testsupport.square_model import BLUE, RED, build_square_model, square_image

SHAPE = (128, 256)


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "yolo_nano.runtime.cli", *args],
        cwd=str(cwd),
        capture_output=True,
        text=True,
        timeout=120,
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
