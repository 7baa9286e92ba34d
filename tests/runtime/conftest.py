"""Fixtures for the runtime tests (model builders in runtime_fixtures.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the test modules import runtime_fixtures

from runtime_fixtures import build_square_model  # noqa: E402


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
