"""Shared fixtures (testsupport.fixtures_plugin). Tests marked ``torch`` skip with a reason where the
train extra is not installed."""

from __future__ import annotations

import pytest

pytest_plugins = ["testsupport.fixtures_plugin"]


def pytest_collection_modifyitems(config, items):  # noqa: ANN001
    try:
        import torch  # noqa: F401
    except ImportError:
        skip = pytest.mark.skip(reason="PyTorch is not installed (pip install -e '.[train]')")
        for item in items:
            if "torch" in item.keywords:
                item.add_marker(skip)
