"""Install tensorrt-stubs into build/trt-stubs and repair the syntax errors of its generated stubs.

tensorrt-stubs 10.13.0.35.1 (pybind11-stubgen output) has parameters named ``in`` and a required
parameter after defaulted ones; mypy refuses to read such files. Usage (from the repo root)::

    .venv/bin/python typings/install-trt-stubs.py
    .venv/bin/mypy --config-file typings/mypy-trt.ini
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

VERSION = "10.13.0.35.1"
TARGET = Path("build/trt-stubs")


def repair(text: str) -> str:
    text = re.sub(r"\bin: ", "in_: ", text)
    text = text.replace(
        "power: Weights = None, channel_axis: int)", "power: Weights = None, channel_axis: int = ...)"
    )
    text = text.replace("import tensorrt_libs as tensorrt_libs\n", "")
    return text


def main() -> int:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--target", str(TARGET),
         f"tensorrt-stubs=={VERSION}"],
        check=True,
    )  # fmt: skip
    for path in sorted(TARGET.glob("tensorrt*/*.pyi")):
        fixed = repair(path.read_text(encoding="utf-8"))
        ast.parse(fixed, filename=str(path))  # fail loudly if another release breaks differently
        path.write_text(fixed, encoding="utf-8")
    print(f"tensorrt-stubs {VERSION} ready in {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
