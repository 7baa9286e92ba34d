"""One photo, one set of pixels: an EXIF-rotated JPEG (Orientation=6) through every command that reads
images. nano-detect and nano-eval must find the same boxes on it; nano-train's dataset must see it
upright. (nano-detect alone, the VOC reader and the calibration batcher have their own tests in
tests/runtime/test_cli.py, tests/data/test_voc.py and tests/calibration/test_batcher.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from testsupport.images import exif_jpeg
from testsupport.square_model import BLUE, RED, SQUARE_CLASSES, square_image

SHAPE = (128, 256)  # upright: 256 wide x 128 high
RED_BOX = (128, 0, 192, 64)  # x1, y1, x2, y2 in upright pixels
BLUE_BOX = (0, 64, 64, 128)


def _voc_with_sideways_photo(root: Path) -> Path:
    """A VOC set of one photo stored sideways (128 wide x 256 high) with EXIF Orientation=6, annotated
    in upright pixels, as a labelling tool that honours EXIF writes it."""
    upright = square_image(SHAPE, [(*RED_BOX[:2], 64, RED), (*BLUE_BOX[:2], 64, BLUE)])
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    (root / "JPEGImages" / "photo.jpg").write_bytes(exif_jpeg(np.ascontiguousarray(np.rot90(upright, 1)), 6))
    objs = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0] + 1}</xmin><ymin>{b[1] + 1}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in (("red", RED_BOX), ("blue", BLUE_BOX))
    )
    (root / "Annotations" / "photo.xml").write_text(
        f"<annotation><size><width>{SHAPE[1]}</width><height>{SHAPE[0]}</height><depth>3</depth></size>"
        f"{objs}</annotation>"
    )
    (root / "ImageSets" / "Main" / "test.txt").write_text("photo\n")
    (root / "classes.txt").write_text("\n".join(SQUARE_CLASSES) + "\n")
    return root


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=str(cwd), capture_output=True, text=True, timeout=180
    )


def test_nano_eval_and_nano_detect_see_the_same_upright_photo(square_model, tmp_path):
    voc = _voc_with_sideways_photo(tmp_path / "VOC")
    ev = _cli(
        "yolo_nano.benchmarks.evaluate",
        "--model", str(square_model), "--data", str(voc), "--split", "test", "--json", "--no-progress",
        "--save-detections", str(tmp_path / "eval.json"),
        cwd=tmp_path,
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["map"] == pytest.approx(
        1.0
    )  # annotations are upright: a sideways read scores 0
    det = _cli(
        "yolo_nano.runtime.cli", str(voc / "JPEGImages" / "photo.jpg"), "-m", str(square_model),
        "--out", str(tmp_path / "out"), "--conf", "0.5",
        cwd=tmp_path,
    )  # fmt: skip
    assert det.returncode == 0, det.stderr
    (row,) = [json.loads(line) for line in (tmp_path / "out" / "detections.jsonl").read_text().splitlines()]
    detect_boxes = sorted((d["class_id"], [round(v, 2) for v in d["box"]]) for d in row["detections"])
    eval_boxes = sorted(
        (r["category_id"], [round(v, 2) for v in (r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3])])
        for r in json.loads((tmp_path / "eval.json").read_text())
        if r["score"] > 0.5
    )  # fmt: skip
    assert detect_boxes == eval_boxes
    assert [c for c, _ in detect_boxes] == [0, 1]
    assert detect_boxes[0][1] == pytest.approx(list(RED_BOX), abs=1.0)


@pytest.mark.torch
def test_training_dataset_reads_the_photo_upright(tmp_path):
    pytest.importorskip("torch", reason="training needs PyTorch (train extra)")
    from testsupport.square_model import square_metadata
    from yolo_nano.data.augment import AugmentConfig
    from yolo_nano.data.voc import load_split
    from yolo_nano.model.train_data import DetectionDataset

    voc = _voc_with_sideways_photo(tmp_path / "VOC")
    data = load_split(str(voc), "test")
    dataset = DetectionDataset(data.records, square_metadata(size=64), AugmentConfig())
    image, boxes, labels = dataset._raw(0)
    assert image.shape == (*SHAPE, 3)  # upright, as nano-detect sees it
    assert [tuple(b) for b in boxes.tolist()] == [RED_BOX, BLUE_BOX] and labels.tolist() == [0, 1]
    red = image[RED_BOX[1] : RED_BOX[3], RED_BOX[0] : RED_BOX[2]].reshape(-1, 3).mean(0)
    assert red[2] > 200 and red[0] < 60  # the annotated box holds the red square: pixels and boxes agree
