"""The synthetic set: VOC layout, determinism, sane annotations, CLI errors."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from yolo_nano.core.images import read_image
from yolo_nano.data import synth
from yolo_nano.data.synth import SHAPE_CLASSES, SynthFolderError, generate_sample, main, write_dataset
from yolo_nano.data.voc import INCOMPLETE_MARKER, VOCError, load_split, read_class_names


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


# ------------------------------------------------------------------ interrupted runs (issue 11 item 13)
def _interrupt_after(monkeypatch, n):
    """Make generate_sample raise KeyboardInterrupt on its (n+1)-th call, as Ctrl-C would."""
    real, calls = synth.generate_sample, []

    def gen(*a, **k):
        calls.append(1)
        if len(calls) > n:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(synth, "generate_sample", gen)


def _seed_of_every_image(folder):
    """The seed each JPEG on disk was rendered with (None: neither 1 nor 2); the encoder is deterministic."""
    seeds = set()
    for p in sorted((folder / "JPEGImages").glob("*.jpg")):
        split, index = p.stem.split("_")
        for seed in (1, 2):
            img, _ = generate_sample(seed, split, int(index))
            if cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes() == p.read_bytes():
                seeds.add(seed)
                break
        else:
            seeds.add(None)
    return seeds


def test_interrupted_run_never_leaves_synth_json_of_another_seed(tmp_path, monkeypatch):
    out = tmp_path / "s"
    write_dataset(str(out), 3, 2, seed=1, progress=False)
    assert json.loads((out / "synth.json").read_text())["seed"] == 1
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(str(out), 3, 2, seed=2, progress=False)
    assert not (out / "synth.json").exists()
    assert json.loads((out / INCOMPLETE_MARKER).read_text())["seed"] == 2
    assert not list((out / "ImageSets" / "Main").glob("*.txt"))  # no split lists the old images
    assert _seed_of_every_image(out) == {2}  # seed 1 images were removed before seed 2 began
    with pytest.raises(VOCError, match="interrupted.*run the same nano-data synth command again"):
        load_split(str(out), "train")


def test_rerun_after_interruption_finishes_the_same_set(tmp_path, monkeypatch):
    fresh, out = tmp_path / "fresh", tmp_path / "s"
    write_dataset(str(fresh), 3, 2, seed=2, progress=False)
    write_dataset(str(out), 5, 2, seed=1, progress=False)  # a bigger, other set first
    with monkeypatch.context() as m:
        _interrupt_after(m, 1)
        with pytest.raises(KeyboardInterrupt):
            write_dataset(str(out), 3, 2, seed=2, progress=False)
    write_dataset(str(out), 3, 2, seed=2, progress=False)
    assert _digest(out) == _digest(fresh)  # no leftover of seed 1, no marker
    assert len(load_split(str(out), "train")) == 3


def test_cli_messages_for_reruns(tmp_path, monkeypatch, capsys):
    out = tmp_path / "s"
    args = ["synth", "--out", str(out), "--train", "2", "--val", "1", "--no-progress"]
    assert main(args + ["--seed", "1"]) == 0
    capsys.readouterr()
    with monkeypatch.context() as m:
        _interrupt_after(m, 1)
        assert main(args + ["--seed", "2"]) == 130
    err = capsys.readouterr().err
    assert "replacing the synthetic set there (seed 1, 2 train + 1 val)" in err
    assert "interrupted" in err and INCOMPLETE_MARKER in err and "Traceback" not in err
    assert main(args + ["--seed", "2"]) == 0
    assert "earlier nano-data synth (seed 2, 2 train + 1 val) was interrupted" in capsys.readouterr().err
    assert json.loads((out / "synth.json").read_text())["seed"] == 2
    assert main(args + ["--seed", "2"]) == 0  # the same set again: no warning
    assert "warning" not in capsys.readouterr().err


def test_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    voc = tmp_path / "voc"
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "train.txt").write_text("000001\n")
    with pytest.raises(SynthFolderError, match="not a set nano-data synth wrote"):
        write_dataset(str(voc), 2, 1, progress=False)
    assert (voc / "ImageSets" / "Main" / "train.txt").read_text() == "000001\n"  # untouched
    assert main(["synth", "--out", str(voc), "--train", "1", "--val", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "choose a new or empty folder" in err
    (tmp_path / "file").write_text("x")
    assert main(["synth", "--out", str(tmp_path / "file"), "--train", "1", "--val", "0"]) == 2
    assert "is a file" in capsys.readouterr().err
    (tmp_path / "empty" / "sub").mkdir(parents=True)  # folders without files are fine
    write_dataset(str(tmp_path / "empty"), 1, 0, progress=False)


def test_sigkill_mid_run_leaves_a_marked_folder(tmp_path):
    """A hard kill (no Python cleanup at all) still leaves no synth.json and a marker naming the run."""
    out = tmp_path / "s"
    write_dataset(str(out), 2, 0, seed=1, progress=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "yolo_nano.data.synth", "synth", "--out", str(out), "--train", "400"]
        + ["--val", "0", "--seed", "2", "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while len(list((out / "JPEGImages").glob("train_*.jpg"))) < 4 and time.monotonic() < deadline:
            assert proc.poll() is None, "the 400-image run ended before it could be killed"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (out / "synth.json").exists()
    assert json.loads((out / INCOMPLETE_MARKER).read_text())["seed"] == 2
    with pytest.raises(VOCError, match="incomplete data set"):
        load_split(str(out), "train")
