"""Shared fixtures: small synthetic VOC-layout sets written once per session."""

from __future__ import annotations

import pytest
from yolo_nano.model.synth import write_dataset


@pytest.fixture(scope="session")
def synth_set(tmp_path_factory):
    """12 train + 6 val images, seed 7."""
    out = tmp_path_factory.mktemp("synth")
    write_dataset(str(out), 12, 6, seed=7, progress=False)
    return out
