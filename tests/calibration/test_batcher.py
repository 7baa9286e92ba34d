from __future__ import annotations

import os
import warnings

import cv2
import numpy as np
import pytest

from testsupport import tiny_onnx
from testsupport.images import exif_jpeg, gradient, jpeg_bomb, png_bomb
from yolo_nano.calibration.batcher import (
    RECOMMENDED_IMAGES,
    CalibrationBatcher,
    CalibrationDataError,
    FewCalibrationImagesWarning,
    list_calibration_images,
    subsample,
)
from yolo_nano.core.images import read_image
from yolo_nano.core.preprocess import preprocess

META = tiny_onnx.tiny_metadata()


def _batcher(source, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewCalibrationImagesWarning)
        return CalibrationBatcher(source, META, progress=False, **kw)


def test_batches_are_exactly_the_runtime_preprocessing(calib_dir):
    b = _batcher(calib_dir, batch_size=4)
    batches = list(b)
    assert len(batches) == len(b) == 6
    paths = list_calibration_images(calib_dir)
    expected, _ = preprocess([cv2.imread(p) for p in paths[4:8]], META)
    assert batches[1].dtype == np.float32 and batches[1].shape == (4, 3, 64, 64)
    assert np.array_equal(batches[1], expected)
    # letterbox pad 114 / 255 shows up in a non-square image
    assert np.isclose(batches[0], 114 / 255).any()


def test_partial_last_batch_is_dropped(calib_dir):
    b = _batcher(calib_dir, batch_size=5)
    assert len(b) == 4 and b.num_images == 20
    assert sum(x.shape[0] for x in b) == 20


def test_warns_below_recommended_count(calib_dir):
    with pytest.warns(FewCalibrationImagesWarning, match=f"only 24 calibration images.*{RECOMMENDED_IMAGES}"):
        CalibrationBatcher(calib_dir, META, progress=False)


def test_folder_is_recursive_and_sorted(tmp_path):
    tiny_onnx.write_images(str(tmp_path / "b"), 2, seed=2)
    tiny_onnx.write_images(str(tmp_path / "a"), 2, seed=3)
    (tmp_path / "notes.txt").write_text("not an image")
    paths = list_calibration_images(tmp_path)
    assert [os.path.relpath(p, tmp_path) for p in paths] == [
        os.path.join("a", "img_0000.jpg"), os.path.join("a", "img_0001.jpg"),
        os.path.join("b", "img_0000.jpg"), os.path.join("b", "img_0001.jpg"),
    ]  # fmt: skip


def test_list_file_with_relative_and_absolute_paths(tmp_path, calib_dir):
    names = sorted(os.listdir(calib_dir))
    lst = tmp_path / "calib.txt"
    rel = os.path.relpath(os.path.join(calib_dir, names[0]), tmp_path)
    lst.write_text(f"# my calibration set\n{rel}\n\n{os.path.join(calib_dir, names[1])}\n")
    paths = list_calibration_images(lst)
    assert [os.path.basename(p) for p in paths] == names[:2]
    assert all(os.path.isfile(p) for p in paths)


def test_voc_imagesets(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2007"
    tiny_onnx.write_images(str(root / "JPEGImages"), 3, seed=4)
    os.makedirs(root / "ImageSets" / "Main")
    split = root / "ImageSets" / "Main" / "val.txt"
    split.write_text("img_0002\nimg_0000\n")
    paths = list_calibration_images(split)
    assert paths == [str(root / "JPEGImages" / "img_0002.jpg"), str(root / "JPEGImages" / "img_0000.jpg")]
    cls = root / "ImageSets" / "Main" / "dog_val.txt"
    cls.write_text("img_0001  1\nimg_0002 -1\n")
    assert len(list_calibration_images(cls)) == 2
    # the VOC year folder itself uses JPEGImages
    assert len(list_calibration_images(root)) == 3


def test_missing_listed_images_are_reported(tmp_path):
    lst = tmp_path / "l.txt"
    lst.write_text("a.jpg\nb.jpg\n")
    with pytest.raises(CalibrationDataError, match="2 listed image.*a.jpg"):
        list_calibration_images(lst)


def test_ids_without_voc_tree_are_explained(tmp_path):
    lst = tmp_path / "ids.txt"
    lst.write_text("000005\n")
    with pytest.raises(
        CalibrationDataError, match=r"ids.txt:1: '000005' is neither an image path nor a VOC image id"
    ):
        list_calibration_images(lst)


def test_empty_and_missing_sources(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationDataError, match="no calibration images in"):
        list_calibration_images(tmp_path / "empty")
    with pytest.raises(CalibrationDataError, match="does not exist"):
        list_calibration_images(tmp_path / "nowhere")
    with pytest.raises(CalibrationDataError, match="cannot fill one calibration batch of 64"):
        _batcher(_one_image(tmp_path), batch_size=64)


def _one_image(tmp_path):
    folder = str(tmp_path / "one")
    tiny_onnx.write_images(folder, 1)
    return folder


def test_unreadable_images_are_skipped_with_a_warning(tmp_path):
    folder = tmp_path / "mixed"
    tiny_onnx.write_images(str(folder), 3, seed=5)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    b = _batcher(str(folder))
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        out = list(b)
    assert len(out) == 3 and b.skipped == [str(folder / "broken.jpg")]


def test_header_bombs_and_fifos_are_skipped_not_decoded(tmp_path):
    folder = tmp_path / "bombs"
    tiny_onnx.write_images(str(folder), 2, seed=6)
    (folder / "bomb.png").write_bytes(png_bomb())
    (folder / "bomb.jpg").write_bytes(jpeg_bomb())
    if hasattr(os, "mkfifo"):
        os.mkfifo(str(folder / "pipe.jpg"))
    b = _batcher(str(folder))
    with pytest.warns(UserWarning, match="skipped .* unreadable calibration image.*image too large"):
        out = list(b)
    assert len(out) == 2
    assert sorted(os.path.basename(p) for p in b.skipped) == sorted(
        ["bomb.jpg", "bomb.png"] + (["pipe.jpg"] if hasattr(os, "mkfifo") else [])
    )


def test_exif_rotated_jpeg_is_calibrated_upright(tmp_path):
    """Calibration sees a phone photo as nano-detect does (EXIF orientation applied, the one reader)."""
    folder = tmp_path / "exif"
    folder.mkdir()
    stored = gradient((20, 40))
    (folder / "photo.jpg").write_bytes(exif_jpeg(stored, 6))
    (batch,) = list(_batcher(str(folder)))
    upright = read_image(folder / "photo.jpg")
    assert upright.shape == (40, 20, 3)
    expected, infos = preprocess([upright], META)
    assert np.array_equal(batch, expected)
    assert infos[0].original_shape == (40, 20)
    sideways, _ = preprocess(
        [cv2.imdecode(np.fromfile(str(folder / "photo.jpg"), np.uint8), cv2.IMREAD_UNCHANGED)], META
    )
    assert not np.array_equal(batch, sideways)  # the test can tell the two apart


def test_all_unreadable_is_an_error(tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    for i in range(2):
        (folder / f"{i}.png").write_bytes(b"\x00" * 10)
    b = _batcher(str(folder))
    with warnings.catch_warnings(), pytest.raises(
        CalibrationDataError, match="none of the 2 calibration images"
    ):
        warnings.simplefilter("ignore")
        list(b)


def test_subsample_is_even_and_deterministic():
    paths = [f"{i}.jpg" for i in range(10)]
    assert subsample(paths, 3) == ["0.jpg", "4.jpg", "9.jpg"]
    assert subsample(paths, 3) == subsample(paths, 3)
    assert subsample(paths, None) == paths and subsample(paths, 50) == paths
    with pytest.raises(CalibrationDataError):
        subsample(paths, 0)
