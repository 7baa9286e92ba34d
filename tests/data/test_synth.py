"""The synthetic set: VOC layout, determinism, sane annotations, CLI errors."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np

from yolo_nano.data.synth import SHAPE_CLASSES, generate_sample, main, write_dataset
from yolo_nano.data.voc import load_split, read_class_names, read_image


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_layout_and_reader_roundtrip(synth_set):
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        assert (synth_set / sub).is_dir()
    assert read_class_names(str(synth_set)) == SHAPE_CLASSES
    train = load_split(str(synth_set), "train")
    val = load_split(str(synth_set), "val")
    assert len(train) == 12 and len(val) == 6
    assert train.report.num_warnings == 0
    n_obj = 0
    for r in train.records + val.records:
        img = read_image(r.image_path)
        assert img.shape == (r.height, r.width, 3)
        assert (r.boxes[:, 2] > r.boxes[:, 0]).all() and (r.boxes[:, 3] > r.boxes[:, 1]).all()
        assert (r.boxes >= 0).all() and (r.boxes[:, 2] <= r.width).all() and (r.boxes[:, 3] <= r.height).all()
        n_obj += len(r.labels)
    assert n_obj >= 18  # 1..4 objects an image


def test_boxes_cover_the_drawn_shape():
    img, objs = generate_sample(3, "train", 5)
    assert objs
    for o in objs:
        x1, y1, x2, y2 = (int(round(v)) for v in o.box)
        inside = img[y1:y2, x1:x2].astype(np.float32)
        # the shape's colour differs from the box's surroundings: there is real content in the box
        assert inside.std() > 5


def test_deterministic_and_val_independent_of_train_count(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_dataset(str(a), 3, 2, seed=11, progress=False)
    write_dataset(str(b), 3, 2, seed=11, progress=False)
    assert _digest(a) == _digest(b)
    write_dataset(str(c), 0, 2, seed=11, progress=False)
    for i in range(2):
        name = f"val_{i:06d}"
        assert (a / "JPEGImages" / f"{name}.jpg").read_bytes() == (
            c / "JPEGImages" / f"{name}.jpg"
        ).read_bytes()
        assert (a / "Annotations" / f"{name}.xml").read_text() == (
            c / "Annotations" / f"{name}.xml"
        ).read_text()
    img1, _ = generate_sample(12, "val", 0)
    img2, _ = generate_sample(11, "val", 0)
    assert img1.shape != img2.shape or not np.array_equal(img1, img2)


def test_all_classes_and_some_difficult_over_many_samples():
    seen, difficult = set(), 0
    for i in range(40):
        _, objs = generate_sample(0, "train", i)
        seen.update(o.class_id for o in objs)
        difficult += sum(o.difficult for o in objs)
    assert seen == set(range(len(SHAPE_CLASSES)))
    assert difficult >= 1


def test_cli(tmp_path, capsys):
    assert (
        main(
            [
                "synth",
                "--out",
                str(tmp_path / "s"),
                "--train",
                "2",
                "--val",
                "1",
                "--seed",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (tmp_path / "s" / "ImageSets" / "Main" / "train.txt").read_text().split() == [
        "train_000000",
        "train_000001",
    ]
    assert main(["synth", "--out", str(tmp_path / "t"), "--train", "0", "--val", "0"]) == 2
    assert "error" in capsys.readouterr().err
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "yolo_nano.data.synth",
            "synth",
            "--out",
            str(tmp_path / "u"),
            "--train",
            "-3",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
