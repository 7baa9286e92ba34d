"""Session fixtures shared by several test folders (registered by tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

from testsupport.board import FIXTURES, XAVIER_CONF, FakeBoard, install_script, make_tiny_onnx
from testsupport.square_model import build_square_model


@pytest.fixture(scope="session")
def synth_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 train + 6 val synthetic VOC-layout images, seed 7."""
    from yolo_nano.data.synth import write_dataset

    out = tmp_path_factory.mktemp("synth")
    write_dataset(str(out), 12, 6, seed=7, progress=False)
    return out


@pytest.fixture(scope="session")
def square_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dynamic-batch square detector, 64x64 input, sigmoid classes."""
    return build_square_model(tmp_path_factory.mktemp("models") / "square.onnx")


@pytest.fixture(scope="session")
def square_model_b2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fixed batch 2 square detector."""
    return build_square_model(tmp_path_factory.mktemp("models") / "square_b2.onnx", batch=2)


@pytest.fixture(scope="session")
def square_model_softmax(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_square_model(tmp_path_factory.mktemp("models") / "square_softmax.onnx", activation="softmax")


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_tiny_onnx(str(tmp_path_factory.mktemp("model") / "tiny.onnx"))


@pytest.fixture
def fake_board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeBoard]:
    """Factory: fake_board(conf=XAVIER_CONF, mode=0, clocks="off") puts fake tools first on PATH."""

    def make(conf: str = XAVIER_CONF, mode: int = 0, clocks: str = "off") -> FakeBoard:
        b = tmp_path / "fakebin"
        b.mkdir(exist_ok=True)
        install_script(os.path.join(FIXTURES, "fake_nvpmodel.py"), str(b / "nvpmodel"))
        install_script(os.path.join(FIXTURES, "fake_jetson_clocks.py"), str(b / "jetson_clocks"))
        fb = FakeBoard(
            bin=str(b),
            conf=conf,
            nvp_state=str(tmp_path / "nvp_state"),
            nvp_log=str(tmp_path / "nvp.log"),
            clk_state=str(tmp_path / "clk_state"),
            clk_log=str(tmp_path / "clk.log"),
            env={},
        )
        with open(fb.nvp_state, "w") as f:
            f.write(f"{mode}\n")
        with open(fb.clk_state, "w") as f:
            f.write(clocks + "\n")
        fb.env = {
            "PATH": str(b) + os.pathsep + os.environ.get("PATH", ""),
            "FAKE_NVPMODEL_STATE": fb.nvp_state,
            "FAKE_NVPMODEL_CONF": conf,
            "FAKE_NVPMODEL_LOG": fb.nvp_log,
            "FAKE_JETSON_CLOCKS_STATE": fb.clk_state,
            "FAKE_JETSON_CLOCKS_LOG": fb.clk_log,
        }
        for k, v in fb.env.items():
            monkeypatch.setenv(k, v)
        return fb

    return make


@pytest.fixture(scope="session")
def launcher():
    """The CUDA kernels' CPU emulation (g++ against runtime/kernels/cuda_emu.h); skips without a compiler."""
    kernel_emu = pytest.importorskip("yolo_nano.runtime.kernel_emu")
    try:
        return kernel_emu.EmulatedLauncher()
    except kernel_emu.EmulationUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def demo_ort():
    """The embedded demo model on ONNX Runtime (CPU); skips where it is not cached and cannot be exported."""
    from yolo_nano.runtime import DefaultModelError, default_model_path
    from yolo_nano.runtime.onnxruntime_backend import OnnxRuntimeBackend

    try:
        path = default_model_path()
    except DefaultModelError as e:  # not cached and no PyTorch to export it (the Python 3.8 suite)
        pytest.skip(str(e))
    return OnnxRuntimeBackend(path, device="cpu")
