from __future__ import annotations

import pytest

from testsupport import tiny_onnx
from yolo_nano.engines.device import TensorRTUnavailable, import_tensorrt, tensorrt_available
from yolo_nano.engines.identity import EngineIdentity, EngineRecordError, write_record

no_tensorrt = pytest.mark.skipif(tensorrt_available(), reason="checks the behaviour without TensorRT")


def _engine_with_record(tmp_path):
    meta = tiny_onnx.tiny_metadata()
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    write_record(engine, EngineIdentity(
        tensorrt_version="8.5.2.2", gpu_name="Xavier", compute_capability="7.2", precision="fp16",
        onnx_path="m.onnx", onnx_sha256="0" * 64, input_shape=[1, 3, 64, 64], metadata=meta.to_dict(),
        preprocess=meta.preprocess_params(), build_command="nano-build m.onnx --precision fp16 -o m.engine",
    ))  # fmt: skip
    return str(engine)


def test_engine_without_record_is_refused_first(tmp_path):
    from yolo_nano.engines.trt_backend import TensorRTBackend

    (tmp_path / "x.engine").write_bytes(b"x")
    with pytest.raises(EngineRecordError, match="no identity record"):
        TensorRTBackend(str(tmp_path / "x.engine"))


@no_tensorrt
def test_missing_tensorrt_is_an_import_error_saying_what_to_install(tmp_path):
    from yolo_nano.engines.trt_backend import TensorRTBackend

    with pytest.raises(ImportError, match="TensorRT is required.*JetPack"):
        import_tensorrt()
    with pytest.raises(TensorRTUnavailable):
        TensorRTBackend(_engine_with_record(tmp_path))


@no_tensorrt
def test_detector_on_an_engine_says_tensorrt_is_needed(tmp_path):
    from yolo_nano.runtime import BackendUnavailableError, Detector

    with pytest.raises(BackendUnavailableError, match="TensorRT"):
        Detector(_engine_with_record(tmp_path))


def test_stub_only_tensorrt_counts_as_missing(tmp_path, monkeypatch):
    # tensorrt-stubs leaves a bare `tensorrt` folder: importable, no bindings
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.pyi").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "tensorrt", raising=False)
    if tensorrt_available():
        pytest.skip("a real TensorRT shadows the stub folder here")
    with pytest.raises(TensorRTUnavailable, match="no bindings"):
        import_tensorrt()
