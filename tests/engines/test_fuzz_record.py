"""Fuzzing the engine identity record ``<engine>.json`` (read by ``nano-engine info``, ``nano-build
--explain`` and every engine load). Property: a valid EngineIdentity whose summary and metadata work,
or EngineRecordError, never another exception, never a hang (testsupport.fuzz); plus issue 11's record
cases as explicit examples."""

from __future__ import annotations

import json
import os
import tempfile

import pytest
from hypothesis import given

from testsupport import tiny_onnx
from testsupport.fuzz import fuzz, mutated_json, no_hang, tried
from yolo_nano.core.metadata import ModelMetadata
from yolo_nano.engines.identity import EngineIdentity, EngineRecordError, read_record, record_path

_DIR = tempfile.mkdtemp(prefix="fuzz-engine-")
ENGINE = os.path.join(_DIR, "m.engine")

_META = tiny_onnx.tiny_metadata()
RECORD = EngineIdentity(
    tensorrt_version="8.5.2.2",
    gpu_name="Xavier",
    compute_capability="7.2",
    precision="int8",
    onnx_path="model.onnx",
    onnx_sha256="f" * 64,
    input_shape=[1, 3, 64, 64],
    metadata=_META.to_dict(),
    preprocess=_META.preprocess_params(),
    build_command="nano-build model.onnx --precision int8 --calib-images calib/ -o m.engine",
    quantization="calibrated",
    calibration={
        "cache_path": "m.calib",
        "cache_sha256": "c" * 64,
        "algorithm": "entropy",
        "num_images": 500,
    },
    placement={"dla": ["a"], "gpu": ["b", "c"], "source": "engine inspector"},
    profile=[[1, 3, 64, 64]] * 3,
    build_seconds=12.5,
    jetpack="5.1.1",
    l4t="35.3.1",
).to_dict()


def _record(**fields):  # noqa: ANN003
    d = json.loads(json.dumps(RECORD))
    d.update(fields)
    return json.dumps(d)


# issue 11 item 9: each is an invalid record (one line), never an OverflowError or shown as valid
RECORD_CORPUS = [
    _record(input_shape=[1e400, 3, 64, 64]),
    _record(input_shape=[10**400, 3, 64, 64]),
    _record(onnx_sha256=["x"]),
    _record(build_seconds=float("inf")),
    _record(build_seconds=10**400),
    _record(workspace_mb=1e400),
    _record(format_version=10**400),
    _record(calibration={"cache_path": "m.calib", "cache_sha256": ["x"]}),
    _record(calibration={"cache_path": "m.calib", "num_images": 1e400}),
    _record(placement={"dla": "abc", "gpu": []}),
    _record(metadata={"arch": "x"}),
    _record(metadata=dict(RECORD["metadata"], mean=[0.0, 0.0])),
    _record(precision=None),
    "[" * 100_000 + "]" * 100_000,
    '{"a": ' * 50_000 + "1" + "}" * 50_000,
    "Infinity",
    "",
]


def _check_record(text: str) -> None:
    tried("engine record")
    with open(record_path(ENGINE), "wb") as f:
        f.write(text.encode("utf-8", "surrogateescape"))
    try:
        with no_hang():
            identity = read_record(ENGINE)
    except EngineRecordError as e:
        assert "\n" not in str(e)
        return
    lines = identity.summary_lines()
    assert all(isinstance(line, str) for line in lines)
    assert isinstance(identity.model_metadata(), ModelMetadata)
    assert isinstance(identity.batch, int) and identity.batch >= 1
    assert isinstance(identity.onnx_sha256, str)


@pytest.mark.parametrize("text", RECORD_CORPUS, ids=range(len(RECORD_CORPUS)))
def test_engine_record_corpus(text):
    _check_record(text)
    with pytest.raises(EngineRecordError):
        read_record(ENGINE)


def test_valid_record_reads():
    _check_record(json.dumps(RECORD))
    assert read_record(ENGINE).precision == "int8"


@fuzz(250)
@given(text=mutated_json([RECORD], max_ops=3))
def test_fuzz_engine_record(text):
    """read_record: an identity whose summary, metadata and batch work, or EngineRecordError."""
    _check_record(text)
