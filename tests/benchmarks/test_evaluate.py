"""nano-eval: saved-detections mode, model mode (PyTorch and ONNX Runtime), bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from yolo_nano.benchmarks.evaluate import main
from yolo_nano.data.voc import load_split


def perfect_results(data, split="val"):
    s = load_split(str(data), split)
    out = []
    for r in s.records:
        for b, c in zip(r.boxes, r.labels):
            out.append(
                {
                    "image_id": r.image_id,
                    "category_id": int(c),
                    "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                    "score": 0.9,
                }
            )
    return out


def write(path, obj):
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return str(path)


def run_json(capsys, *argv):
    assert main([*argv, "--json", "--no-progress"]) == 0
    return json.loads(capsys.readouterr().out)


def test_detections_mode_perfect_and_degraded(synth_set, tmp_path, capsys):
    res = perfect_results(synth_set)
    out = run_json(
        capsys, "--detections", write(tmp_path / "p.json", res), "--data", str(synth_set), "--split", "val"
    )
    assert out["map"] == pytest.approx(1.0)
    assert set(out["per_class"]) == {"circle", "square", "triangle", "star", "cross"}
    # drop half of the detections: recall (and mAP) must fall
    half = run_json(
        capsys,
        "--detections",
        write(tmp_path / "h.json", res[::2]),
        "--data",
        str(synth_set),
        "--split",
        "val",
        "--metric",
        "voc12",
    )
    assert half["map"] < 0.95
    # the table output names the metric
    assert main(["--detections", str(tmp_path / "p.json"), "--data", str(synth_set), "--split", "val"]) == 0
    assert "mAP@0.5 (VOC07 11-point)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ({"a": 1}, "JSON list"),
        ([{"image_id": "val_000000", "category_id": 9, "bbox": [0, 0, 1, 1], "score": 0.5}], "category_id 9"),
        (
            [{"image_id": "nope", "category_id": 0, "bbox": [0, 0, 1, 1], "score": 0.5}],
            "not in the evaluated split",
        ),
        ([{"image_id": "val_000000", "category_id": 0, "bbox": [0, 0, -1, 1], "score": 0.5}], "w, h >= 0"),
        ([{"image_id": "val_000000", "bbox": [0, 0, 1, 1], "score": 0.5}], "needs image_id"),
    ],
)
def test_bad_results_exit_2(synth_set, tmp_path, capsys, content, message):
    path = write(tmp_path / "bad.json", content)
    assert main(["--detections", path, "--data", str(synth_set), "--split", "val"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_errors_are_one_line(synth_set, tmp_path):
    cases = [
        (["--model", str(tmp_path / "none.onnx"), "--data", str(synth_set)], "model file not found"),
        (["--detections", str(tmp_path / "x.json"), "--data", str(tmp_path / "nodata")], "no such folder"),
        (
            ["--detections", str(tmp_path / "x.json"), "--data", str(synth_set), "--split", "test"],
            "splits here",
        ),
    ]
    for argv, msg in cases:
        r = subprocess.run(
            [sys.executable, "-m", "yolo_nano.benchmarks.evaluate", *argv], capture_output=True, text=True
        )
        assert r.returncode == 2, r.stderr
        assert msg in r.stderr and "Traceback" not in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.torch
def test_model_mode_torch_and_onnx_agree(synth_set, tmp_path, capsys):
    torch = pytest.importorskip("torch", reason="the PyTorch backend needs the train extra")
    from yolo_nano.data.synth import SHAPE_CLASSES
    from yolo_nano.model.export import export_onnx
    from yolo_nano.model.registry import build_model
    from yolo_nano.model.weights import save_weights

    torch.manual_seed(0)
    model = build_model("yolo-nano", len(SHAPE_CLASSES), 64).eval()
    st = tmp_path / "m.safetensors"
    save_weights(model, st, class_names=SHAPE_CLASSES)
    export_onnx(model, tmp_path / "m.onnx", class_names=SHAPE_CLASSES, batch="dynamic")
    dets = tmp_path / "dets.json"
    a = run_json(
        capsys, "--model", str(st), "--data", str(synth_set), "--split", "val", "--save-detections", str(dets)
    )
    b = run_json(capsys, "--model", str(tmp_path / "m.onnx"), "--data", str(synth_set), "--split", "val")
    assert a["backend"] == "torch" and b["backend"].startswith("onnxruntime")
    assert a["images"] == b["images"] == 6
    assert a["map"] == pytest.approx(b["map"], abs=0.02)
    # the saved detections score the same without the model
    c = run_json(capsys, "--detections", str(dets), "--data", str(synth_set), "--split", "val")
    assert c["map"] == pytest.approx(a["map"], abs=1e-3)
    assert len(json.loads(dets.read_text())) > 0
