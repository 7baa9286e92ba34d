"""Helpers for the nano-doctor tests: run the real command in a subprocess, check a report's schema."""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
from typing import Any, Callable, Dict, List, Optional

import pytest

from yolo_nano.doctor.result import PROBLEMS, STATUSES

SCRIPT = os.path.join(os.path.dirname(sys.executable), "nano-doctor")


def _has_libcuda() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@pytest.fixture
def no_gpu() -> None:
    """For tests that describe a machine without a GPU (CI, our machines): with one, other lines apply."""
    if _has_libcuda():
        pytest.skip("a CUDA driver is present here: the no-GPU lines do not apply")


class Run:
    def __init__(self, cp: subprocess.CompletedProcess, report: Optional[Dict[str, Any]]) -> None:
        self.code = cp.returncode
        self.out = cp.stdout
        self.err = cp.stderr
        self.report = report

    def line(self, name: str) -> str:
        """The printed line of the check ``name`` (status, name, detail)."""
        for line in self.out.splitlines():
            parts = line.split(None, 1)
            if len(parts) == 2 and parts[0] in STATUSES and parts[1].startswith(name + " "):
                return line.strip()
        raise AssertionError(f"no line for {name!r} in:\n{self.out}")

    def status(self, name: str) -> str:
        return self.line(name).split()[0]

    def fix(self, name: str) -> str:
        """The fix line(s) printed under the check ``name``."""
        lines = self.out.splitlines()
        i = next(k for k, line in enumerate(lines) if line.strip() == self.line(name))
        out: List[str] = []
        for line in lines[i + 1 :]:
            if not line.startswith(" " * 11):
                break
            out.append(line.strip())
        return " ".join(out)

    def check(self, name: str) -> Dict[str, Any]:
        assert self.report is not None
        return next(c for c in self.report["checks"] if c["name"] == name)


def _run_doctor(*args: str, report: Optional[str] = None, env: Optional[Dict[str, str]] = None,
               timeout: float = 300) -> Run:  # fmt: skip
    """``nano-doctor ARGS [--report report]`` as a subprocess; the report parsed when written."""
    cmd = [SCRIPT] if os.path.exists(SCRIPT) else [sys.executable, "-m", "yolo_nano.doctor.cli"]
    argv = cmd + list(args) + (["--report", report] if report else [])
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    doc = None
    if report and os.path.exists(report):
        with open(report) as f:
            doc = json.load(f)
    return Run(cp, doc)


def _check_schema(doc: Dict[str, Any]) -> None:
    """The report's schema (docs/doctor.md): keys, types, statuses, a fix for every problem, and a
    summary that agrees with the checks."""
    assert set(doc) == {"schema", "tool", "created_utc", "options", "environment", "summary", "checks"}
    assert doc["schema"] == "nano-doctor/1"
    assert doc["tool"]["name"] == "nano-doctor" and isinstance(doc["tool"]["version"], str)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["created_utc"])
    assert set(doc["options"]) == {"model", "quick", "sysfs_root", "nvpmodel_conf"}
    assert isinstance(doc["environment"]["on_jetson"], bool) and isinstance(doc["environment"]["gpu"], bool)
    assert doc["checks"]
    for c in doc["checks"]:
        assert set(c) == {"section", "name", "status", "detail", "fix", "data", "seconds", "error"}, c
        assert c["status"] in STATUSES, c
        assert c["section"] in ("board", "software", "gpu", "power", "disk", "self-test"), c
        assert isinstance(c["detail"], str) and c["detail"], c
        assert isinstance(c["data"], dict) and isinstance(c["seconds"], (int, float)) and c["seconds"] >= 0
        if c["status"] in PROBLEMS:
            assert c["fix"], f"a problem without a fix: {c}"
    summary = doc["summary"]
    for s in STATUSES:
        assert summary[s] == sum(1 for c in doc["checks"] if c["status"] == s)
    problems = sum(summary[s] for s in PROBLEMS)
    assert summary["exit_code"] == (1 if problems else 0)


@pytest.fixture
def doctor() -> Callable[..., Run]:
    """``doctor(*args, report=None, env=None)``: run nano-doctor in a subprocess (see :func:`_run_doctor`)."""
    return _run_doctor


@pytest.fixture
def check_schema() -> Callable[[Dict[str, Any]], None]:
    return _check_schema
