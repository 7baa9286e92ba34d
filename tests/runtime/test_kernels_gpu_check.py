"""scripts/gpu-check.sh, the kernels' check on a real GPU: it parses, its Python side imports and finds the
compilers (--dry-run), and without a GPU it stops with one line and exit status 2."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"


def _run(*args, **env):
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHON=sys.executable, **env),
        timeout=300,
        check=False,
    )


def _have_driver() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0
    assert os.access(SCRIPT, os.X_OK)


def test_dry_run_imports_the_python_side_and_lists_compilers():
    proc = _run("--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "dry run" in proc.stdout and "compiler" in proc.stdout


def test_without_a_gpu_one_line_and_exit_2(tmp_path):
    if _have_driver():
        pytest.skip("a CUDA driver is present here: the real check runs instead")
    proc = _run(str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "gpu-check: no CUDA driver (libcuda.so.1) here: run this on a machine with an NVIDIA GPU"
    ]
    assert not (tmp_path / "out").exists()


def test_no_compiler_names_the_install_step(tmp_path):
    # a Python whose compiler search finds nothing: the script stops before touching the GPU
    hide = tmp_path / "sitecustomize.py"
    hide.write_text("import yolo_nano.runtime.kernel_build as kb\nkb.find_compilers = lambda: []\n")
    proc = _run("--dry-run", PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    assert proc.returncode == 2
    assert "cuda-nvrtc" in proc.stderr and "postprocess='cpu'" in proc.stderr
