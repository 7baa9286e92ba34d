"""nano-train end to end on a tiny synthetic set: outputs, loadable weights, exact resume, DDP, errors,
an existing run folder."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="training needs PyTorch (train extra)")
pytest.importorskip("safetensors", reason="training needs safetensors (train extra)")

from yolo_nano.data.synth import SHAPE_CLASSES  # noqa: E402
from yolo_nano.model.train import main  # noqa: E402
from yolo_nano.model.weights import load_model, read_config  # noqa: E402

pytestmark = pytest.mark.torch


def args(data, out, epochs, *extra):
    return [
        "--data", str(data), "--out", str(out), "--size", "64", "--epochs", str(epochs), "--batch", "4",
        "--threads", "1", "--no-progress", "--warmup-epochs", "0.5", "--max-val-images", "4", *extra,
    ]  # fmt: skip


def rows(out):
    with open(os.path.join(out, "log.csv")) as f:
        return list(csv.DictReader(f))


def test_train_writes_log_weights_and_resumes_exactly(synth_set, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(args(synth_set, a, 2)) == 0
    log = rows(a)
    assert [r["epoch"] for r in log] == ["1", "2"]
    assert all(r["val_map"] != "" and 0.0 <= float(r["val_map"]) <= 1.0 for r in log)
    assert float(log[0]["total"]) > 0 and float(log[0]["img_per_s"]) > 0
    model, names = load_model(a / "last.safetensors")
    assert tuple(names) == SHAPE_CLASSES and model.input_size == 64
    cfg = read_config(a / "best.safetensors")
    assert json.loads(cfg["train_args"])["epochs"] == 2 and cfg["metric"] == "voc07"
    # every output gets the mode a plain open() gives (safetensors' own writer would make 0600)
    umask = os.umask(0o022)
    os.umask(umask)
    outputs = sorted(os.listdir(a))
    assert outputs == ["args.json", "best.safetensors", "last.safetensors", "log.csv", "state.safetensors"]
    assert {name: os.stat(a / name).st_mode & 0o777 for name in outputs} == dict.fromkeys(
        outputs, 0o666 & ~umask
    )

    # one epoch, then resume to two: the same weights as training two epochs straight
    assert main(args(synth_set, b, 1)) == 0
    assert main(args(synth_set, b, 2, "--resume")) == 0
    assert [r["epoch"] for r in rows(b)] == ["1", "2"]
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "last.safetensors")), load_file(str(b / "last.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5, msg=k)


def run_cli(*argv):
    return subprocess.run(
        [sys.executable, "-m", "yolo_nano.model.train", *argv], capture_output=True, text=True
    )


def test_bad_input_exits_2_with_one_line(synth_set, tmp_path):
    r = run_cli("--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no such folder" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("--data", str(synth_set), "--size", "100")
    assert r.returncode == 2 and "multiple of 32" in r.stderr
    r = run_cli("--data", str(synth_set), "--split", "trainval", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "splits here" in r.stderr
    r = run_cli(*args(synth_set, tmp_path / "o", 1, "--resume", str(tmp_path / "nothing.safetensors")))
    assert r.returncode == 2 and "no training state" in r.stderr
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    r = run_cli(*args(synth_set, tmp_path / "o", 1, "--weights", str(tmp_path / "junk.safetensors")))
    assert r.returncode == 2 and "not a readable safetensors" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.slow
def test_ddp_two_cpu_processes_on_gloo(synth_set, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "yolo_nano.model.train", *args(synth_set, out, 1),
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 process(es) on cpu" in r.stdout
    log = rows(out)
    # 12 images, batch 4 per process, 2 processes: 1 step an epoch... per process 6 images -> 1 full batch
    assert log[0]["iterations"] == "1"
    model, names = load_model(out / "last.safetensors")
    assert len(names) == len(SHAPE_CLASSES)


def fake_run(out):
    """A folder holding an earlier run: its args.json and weights (contents only need to be recognisable)."""
    out.mkdir()
    files = {"args.json": b'{"epochs": 99}\n', "last.safetensors": b"old weights", "log.csv": b"old log\n"}
    for name, data in files.items():
        (out / name).write_bytes(data)
    return files


def contents(out):
    return {p.name: p.read_bytes() for p in out.iterdir()}


def test_an_earlier_run_folder_is_refused_and_left_untouched(synth_set, tmp_path):
    out = tmp_path / "run"
    files = fake_run(out)
    r = run_cli(*args(synth_set, out, 1))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "already holds a training run" in r.stderr and "--resume" in r.stderr and "--force" in r.stderr
    # a --force run that fails at start-up (bad --weights) changes nothing either
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    r = run_cli(*args(synth_set, out, 1, "--force", "--weights", str(tmp_path / "junk.safetensors")))
    assert r.returncode == 2 and "not a readable safetensors" in r.stderr
    assert contents(out) == files


def test_forced_run_that_crashes_leaves_no_old_weights_beside_its_args(synth_set, tmp_path, monkeypatch):
    from yolo_nano.model import train_loop

    out = tmp_path / "run"
    fake_run(out)

    def crash(*a, **k):
        raise KeyboardInterrupt  # what a Ctrl-C in the first step looks like

    monkeypatch.setattr(train_loop, "train_step", crash)
    assert main(args(synth_set, out, 1, "--force")) == 130
    assert sorted(contents(out)) == ["args.json"]  # the earlier weights and log went when the run started
    assert json.loads((out / "args.json").read_text())["epochs"] == 1


def test_unreadable_images_are_left_out_at_start_or_stop_the_run_with_one_line(synth_set, tmp_path, capsys):
    from testsupport.images import jpeg_bomb

    data = tmp_path / "data"
    shutil.copytree(synth_set, data)
    train_ids = (data / "ImageSets" / "Main" / "train.txt").read_text().split()
    (data / "JPEGImages" / f"{train_ids[0]}.jpg").write_bytes(jpeg_bomb())  # 60000x60000 in its header
    (data / "JPEGImages" / f"{train_ids[1]}.jpg").write_bytes(b"not an image")
    assert main(args(data, tmp_path / "a", 1)) == 0
    out = capsys.readouterr().out
    assert "[train] 2 images cannot be read and are left out" in out
    assert f"{len(train_ids) - 2} train / 4 val images" in out
    # without the start-up check the run stops at the first such image: one line, exit 2, no traceback
    assert main(args(data, tmp_path / "b", 1, "--no-check-images")) == 2
    err = capsys.readouterr().err
    assert err.startswith("nano-train: error: ") and ("cannot read image" in err or "too large" in err)
    assert err.count("\n") == 1
