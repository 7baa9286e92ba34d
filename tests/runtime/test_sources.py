"""yolo_nano.runtime.sources: image files, folders, real videos (whole and truncated), cameras, bench frames."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest

from testsupport.images import exif_jpeg, gradient, jpeg_bomb, png_bomb
from yolo_nano.core.images import ImageReadError, ImageTooLargeError
from yolo_nano.runtime.sources import (
    BENCH_SOURCES,
    ImageFiles,
    LoopingFrames,
    SourceError,
    VideoFrames,
    open_source,
    synthetic_frames,
)

SHAPE = (48, 64)


def _frame(i: int) -> np.ndarray:
    return np.ascontiguousarray(np.roll(gradient(SHAPE), 7 * i, axis=1))


def _write_video(path: Path, frames: int = 12) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (SHAPE[1], SHAPE[0]))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(_frame(i))
    writer.release()
    return path


def _collect(source) -> List:
    with source:
        return list(source)


def test_single_image_applies_exif_and_raises_when_unreadable(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(exif_jpeg(gradient((20, 40)), 6))
    source = open_source(str(tmp_path / "photo.jpg"))
    assert isinstance(source, ImageFiles) and source.kind == "image" and source.frame_count == 1
    (frame,) = _collect(source)
    assert frame.image.shape == (40, 20, 3) and frame.number == 0
    assert frame.path == tmp_path / "photo.jpg" and frame.label == str(tmp_path / "photo.jpg")
    (tmp_path / "bomb.png").write_bytes(png_bomb())
    with pytest.raises(ImageTooLargeError, match="65535x65535"):
        _collect(open_source(str(tmp_path / "bomb.png")))


def test_folder_skips_and_counts_bad_files_one_line_each(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), _frame(0))
    (tmp_path / "b.jpg").write_bytes(jpeg_bomb())
    (tmp_path / "c.jpg").write_bytes(b"not a jpeg")
    if hasattr(os, "mkfifo"):
        os.mkfifo(str(tmp_path / "d.jpg"))
    cv2.imwrite(str(tmp_path / "e.bmp"), _frame(1))
    (tmp_path / "f.jpg").mkdir()  # a folder named like an image is not listed
    (tmp_path / "notes.txt").write_text("ignored")
    lines: List[str] = []
    source = open_source(str(tmp_path), warn=lines.append)
    frames = _collect(source)
    assert [f.path.name for f in frames] == ["a.png", "e.bmp"]
    assert np.array_equal(frames[1].image, cv2.imread(str(tmp_path / "e.bmp")))
    bad = 3 if hasattr(os, "mkfifo") else 2
    assert source.skipped == bad and len(lines) == bad + 1
    assert "b.jpg" in lines[0] and "60000x60000" in lines[0]
    assert "c.jpg" in lines[1] and "cannot read image" in lines[1]
    assert lines[-1] == f"skipped {bad} of {bad + 2} images in {tmp_path}"
    assert all("\n" not in line for line in lines)


def test_folder_where_nothing_reads_and_empty_folder(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"nope")
    lines: List[str] = []
    with pytest.raises(SourceError, match="none of the 1 images"):
        _collect(open_source(str(tmp_path), warn=lines.append))
    assert len(lines) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="has no images"):
        open_source(str(empty))


def test_video_gives_every_frame_in_order(tmp_path):
    path = _write_video(tmp_path / "clip.avi", frames=12)
    lines: List[str] = []
    source = open_source(str(path), warn=lines.append)
    assert isinstance(source, VideoFrames) and source.kind == "video"
    assert source.frame_count == 12 and source.fps == pytest.approx(10.0) and source.name == "clip"
    frames = _collect(source)
    assert [f.number for f in frames] == list(range(12)) and all(f.path is None for f in frames)
    for i, f in enumerate(frames):  # MJPG is lossy: compare against the frame written, loosely
        assert f.image.shape == (*SHAPE, 3)
        assert np.abs(f.image.astype(int) - _frame(i)).mean() < 8
    assert not source.truncated and lines == []
    limited = _collect(open_source(str(path), max_frames=5, warn=lines.append))
    assert len(limited) == 5 and lines == []


def test_truncated_video_is_warned_about(tmp_path):
    whole = _write_video(tmp_path / "whole.avi", frames=20).read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    lines: List[str] = []
    source = open_source(str(cut), warn=lines.append)
    frames = _collect(source)
    assert 0 < len(frames) < 20 and source.truncated
    assert lines == [
        f"{cut}: video ended after {len(frames)} of its 20 frames (truncated or corrupt file); "
        "the results cover only those frames"
    ]


def test_video_that_does_not_open(tmp_path):
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(SourceError, match="cannot open video|no frame could be read"):
        _collect(open_source(str(tmp_path / "junk.mp4")))


@pytest.mark.parametrize("index", ["99999999999999999999", str(2**31), str(2**64)])
def test_camera_index_that_overflows_is_a_clear_error(index):
    with pytest.raises(SourceError, match=f"camera index {index} is out of range"):
        open_source(index)


def test_camera_that_does_not_exist():
    with pytest.raises(SourceError, match="camera 2147483647 could not be opened"):
        open_source(str(2**31 - 1))


def test_unknown_and_missing_sources(tmp_path):
    (tmp_path / "data.xyz").write_text("?")
    with pytest.raises(SourceError, match="unknown file type .xyz"):
        open_source(str(tmp_path / "data.xyz"))
    with pytest.raises(SourceError, match="source not found"):
        open_source(str(tmp_path / "nothing.jpg"))
    (tmp_path / "x.jpg").mkdir()
    with pytest.raises(SourceError, match="no images"):  # a folder, even when named like an image
        open_source(str(tmp_path / "x.jpg"))


# ------------------------------------------------------------------------------------ nano-bench frames
def test_bench_synthetic_frames_cycle():
    assert BENCH_SOURCES == ("synthetic", "images", "video")
    frames = LoopingFrames("synthetic", n_frames=3)
    got = [frames.next() for _ in range(7)]
    assert got[0] is got[3] is got[6] and got[1] is got[4]
    assert got[0].shape == (480, 640, 3) and got[0].dtype == np.uint8
    assert np.array_equal(got[0], synthetic_frames(3)[0])
    frames.close()


def test_bench_images_skip_bad_files_up_front(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(exif_jpeg(_frame(i), 6))
    (tmp_path / "3.jpg").write_bytes(b"broken")
    (tmp_path / "4.png").write_bytes(png_bomb())
    lines: List[str] = []
    frames = LoopingFrames("images", str(tmp_path), warn=lines.append)
    assert frames.skipped == 2 and len(lines) == 3 and lines[-1] == f"skipped 2 of 5 images in {tmp_path}"
    shapes = {frames.next().shape for _ in range(6)}
    assert shapes == {(SHAPE[1], SHAPE[0], 3)}  # EXIF applied, as nano-detect reads them
    os.remove(tmp_path / "0.jpg")  # gone after the check: a one-line SourceError, not a traceback
    with pytest.raises(SourceError, match="0.jpg: cannot read image"):
        frames.next()
    frames.close()
    for name in ("1.jpg", "2.jpg"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(SourceError, match="none of the 4 images could be read"):
        LoopingFrames("images", str(tmp_path), warn=lines.append)


def test_bench_video_rewinds_and_generated_sources_clean_up(tmp_path):
    path = _write_video(tmp_path / "clip.avi", frames=4)
    frames = LoopingFrames("video", str(path))
    got = [frames.next() for _ in range(9)]
    assert (
        np.array_equal(got[0], got[4]) and np.array_equal(got[1], got[5]) and np.array_equal(got[0], got[8])
    )
    frames.close()
    for kind in ("images", "video"):
        generated = LoopingFrames(kind, n_frames=2)
        assert "generated" in generated.description and generated.next().shape == (480, 640, 3)
        folder = generated._tmp.name
        generated.close()
        generated.close()
        assert not os.path.exists(folder)


def test_bench_bad_inputs(tmp_path):
    with pytest.raises(SourceError, match="unknown --source 'webcam'"):
        LoopingFrames("webcam")
    with pytest.raises(SourceError, match="synthetic frames are generated"):
        LoopingFrames("synthetic", str(tmp_path))
    with pytest.raises(SourceError, match="not a folder of images"):
        LoopingFrames("images", str(tmp_path / "missing"))
    with pytest.raises(SourceError, match="no images"):
        LoopingFrames("images", str(tmp_path))
    with pytest.raises(SourceError, match="video file not found"):
        LoopingFrames("video", str(tmp_path / "missing.avi"))
    (tmp_path / "junk.avi").write_bytes(b"RIFF" + b"\x00" * 60)
    with pytest.raises(SourceError, match="cannot decode this video"):
        LoopingFrames("video", str(tmp_path / "junk.avi"))
    assert issubclass(SourceError, ValueError) and not issubclass(SourceError, ImageReadError)
