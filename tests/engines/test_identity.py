from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from testsupport import tiny_onnx
from yolo_nano.engines.identity import (
    EngineIdentity,
    EngineMismatchError,
    EngineMismatchWarning,
    EngineRecordError,
    check_compatible,
    read_record,
    record_path,
    write_record,
)

COMMAND = "nano-build model.onnx --precision int8 --calib-images calib/ --batch 1 -o m.engine"


def make_identity(**kw) -> EngineIdentity:
    meta = tiny_onnx.tiny_metadata()
    base = dict(
        tensorrt_version="8.5.2.2",
        gpu_name="Xavier",
        compute_capability="7.2",
        precision="int8",
        onnx_path="model.onnx",
        onnx_sha256="f" * 64,
        input_shape=[1, 3, 64, 64],
        metadata=meta.to_dict(),
        preprocess=meta.preprocess_params(),
        build_command=COMMAND,
        quantization="calibrated",
        calibration={
            "cache_path": "m.calib",
            "cache_sha256": "c" * 64,
            "algorithm": "entropy",
            "num_images": 500,
        },
        jetpack="5.1.1",
        l4t="35.3.1",
    )
    base.update(kw)
    return EngineIdentity(**base)


def test_record_round_trip_and_metadata(tmp_path):
    engine = tmp_path / "m.engine"
    path = write_record(engine, make_identity())
    assert path == str(engine) + ".json" == record_path(engine)
    doc = json.loads(Path(path).read_text())
    for key in (
        "tensorrt_version",
        "gpu_name",
        "compute_capability",
        "jetpack",
        "l4t",
        "precision",
        "dla_core",
        "onnx_sha256",
        "calibration",
        "preprocess",
        "input_shape",
        "metadata",
        "build_time",
        "host",
    ):
        assert key in doc, key  # fmt: skip
    got = read_record(engine)
    assert got == make_identity()
    assert got.model_metadata() == tiny_onnx.tiny_metadata()
    assert got.batch == 1


def test_missing_and_broken_records(tmp_path):
    with pytest.raises(EngineRecordError, match="no identity record.*nano-build"):
        read_record(tmp_path / "x.engine")
    (tmp_path / "x.engine.json").write_text("{not json")
    with pytest.raises(EngineRecordError, match="unreadable"):
        read_record(tmp_path / "x.engine")
    (tmp_path / "x.engine.json").write_text(json.dumps({"precision": "fp16"}))
    with pytest.raises(
        EngineRecordError, match="invalid engine identity record: 'tensorrt_version' is missing"
    ):
        read_record(tmp_path / "x.engine")
    newer = make_identity(format_version=99).to_dict()
    (tmp_path / "x.engine.json").write_text(json.dumps(newer))
    with pytest.raises(EngineRecordError, match="newer"):
        read_record(tmp_path / "x.engine")


def test_bad_metadata_in_record(tmp_path):
    ident = make_identity(metadata={"arch": "x"})
    with pytest.raises(EngineRecordError, match="invalid model metadata"):
        ident.model_metadata()


def test_matching_runtime_passes():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_compatible("m.engine", make_identity(), "8.5.2.2", "Xavier", "7.2")


def test_tensorrt_mismatch_says_rebuild_with_the_exact_command():
    with pytest.raises(EngineMismatchError) as e:
        check_compatible("m.engine", make_identity(), "10.3.0.30", "Xavier", "7.2")
    msg = str(e.value)
    assert "built with TensorRT 8.5.2.2, this is TensorRT 10.3.0.30" in msg
    assert "rebuild it here with: " + COMMAND in msg


def test_gpu_mismatch():
    with pytest.raises(EngineMismatchError, match=r"compute capability 7.2 \(Xavier\), this GPU is 8.7"):
        check_compatible("m.engine", make_identity(), "8.5.2.2", "Orin", "8.7")
    with pytest.warns(EngineMismatchWarning, match="built on Xavier, this is Xavier NX"):
        check_compatible("m.engine", make_identity(), "8.5.2.2", "Xavier NX", "7.2")


def test_summary_lines_show_what_ran():
    text = "\n".join(make_identity(dla_core=0, gpu_fallback=True).summary_lines())
    assert "int8 (quantization: calibrated)" in text
    assert "core 0 + GPU fallback" in text and "5.1.1 / 35.3.1" in text
    assert "entropy cache m.calib" in text and "500 images" in text
    assert "rebuild with:     " + COMMAND in text


def test_new_fields_round_trip_and_show(tmp_path):
    ident = make_identity(
        dla_core=0, typing="strong", network_onnx="fp16", profile=[[4, 3, 64, 64]] * 3,
        placement={"dla": ["{ForeignNode[c1...c5]}"], "gpu": ["head16"], "source": "TensorRT build log"},
    )  # fmt: skip
    write_record(tmp_path / "m.engine", ident)
    got = read_record(tmp_path / "m.engine")
    assert got == ident
    text = "\n".join(got.summary_lines())
    assert "strongly typed, TensorRT parsed fp16 ONNX" in text and "static profile" in text
    assert "1 DLA loadable(s), 1 GPU layer(s) (head16) [from the TensorRT build log]" in text


@pytest.mark.parametrize(
    "field, raw, words",
    [
        ("input_shape", "[1e400, 3, 64, 64]", "'input_shape' must be [N, 3, H, W]"),
        ("input_shape", "[Infinity, 3, 64, 64]", "'input_shape' must be|not a JSON number"),
        ("onnx_sha256", '["x"]', "'onnx_sha256' must be a sha256"),
        ("precision", '"int4"', "'precision' must be fp32, fp16 or int8"),
        ("dla_core", '"0"', "'dla_core' must be a DLA core index"),
        ("build_seconds", "NaN", "'build_seconds' must be a finite number|not a JSON number"),
        ("calibration", '{"cache_path": "c", "num_images": 1e400}', "calibration.num_images"),
        ("calibration", '{"cache_path": ["c"]}', "calibration.cache_path"),
        ("metadata", '{"arch": "x"}', "invalid model metadata"),
        ("gpu_fallback", '"yes"', "'gpu_fallback' must be true or false"),
    ],
)
def test_invalid_records_are_one_line_errors(tmp_path, field, raw, words):
    doc = make_identity().to_dict()
    doc[field] = "PLACEHOLDER"
    (tmp_path / "m.engine.json").write_text(json.dumps(doc).replace('"PLACEHOLDER"', raw))
    with pytest.raises(EngineRecordError) as e:
        read_record(tmp_path / "m.engine")
    assert any(w in str(e.value) for w in words.split("|")) and "\n" not in str(e.value)


def test_deeply_nested_record_is_invalid_not_a_recursion_error(tmp_path):
    (tmp_path / "m.engine.json").write_text('{"extra": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(EngineRecordError, match="nested too deeply|unreadable"):
        read_record(tmp_path / "m.engine")
