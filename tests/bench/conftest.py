"""Fixtures for nano-bench tests; the helpers live in ``benchkit.py`` beside this file."""

from __future__ import annotations

import os
import sys
from typing import Callable

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchkit import FIXTURES, XAVIER_CONF, FakeBoard, install_script, make_tiny_onnx  # noqa: E402


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_tiny_onnx(str(tmp_path_factory.mktemp("model") / "tiny.onnx"))


@pytest.fixture
def fake_board(tmp_path, monkeypatch) -> Callable[..., FakeBoard]:
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
