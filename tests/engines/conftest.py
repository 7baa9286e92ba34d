from __future__ import annotations

import pytest

from testsupport import tiny_onnx


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = str(tmp_path_factory.mktemp("calib") / "images")
    tiny_onnx.write_images(folder, 12, seed=1)
    return folder


@pytest.fixture(scope="session")
def tiny_onnx_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_onnx.save_tiny_model(str(tmp_path_factory.mktemp("model") / "tiny.onnx"))


def _quantized(
    tmp_path_factory: pytest.TempPathFactory, src: str, calib_dir: str, target: str, name: str
) -> str:
    import warnings

    from yolo_nano.calibration.quantize import quantize_qdq

    out = str(tmp_path_factory.mktemp(f"qdq-{target}") / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_qdq(src, calib_dir, out, target=target, progress=False)
    return out


@pytest.fixture(scope="session")
def qdq_onnx_path(tmp_path_factory: pytest.TempPathFactory, tiny_onnx_path: str, calib_dir: str) -> str:
    """The TensorRT-target Q/DQ model (symmetric int8)."""
    return _quantized(tmp_path_factory, tiny_onnx_path, calib_dir, "tensorrt", "tiny.int8.onnx")


@pytest.fixture(scope="session")
def cpu_qdq_onnx_path(tmp_path_factory: pytest.TempPathFactory, tiny_onnx_path: str, calib_dir: str) -> str:
    """The CPU-target Q/DQ model (uint8 activations)."""
    return _quantized(tmp_path_factory, tiny_onnx_path, calib_dir, "cpu", "tiny.cpu.int8.onnx")
