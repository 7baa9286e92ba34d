from __future__ import annotations

import pytest

from testsupport import tiny_onnx


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """24 small JPEGs of assorted sizes."""
    folder = str(tmp_path_factory.mktemp("calib") / "images")
    tiny_onnx.write_images(folder, 24, seed=1)
    return folder


@pytest.fixture(scope="session")
def tiny_onnx_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_onnx.save_tiny_model(str(tmp_path_factory.mktemp("model") / "tiny.onnx"))
