"""``nano-bench``, kept under its old module name (``python -m yolo_nano.benchmarks.bench``, old imports).

The command is :mod:`.cli` (flags, exit codes), the run :mod:`.runner` (board plan, sweep, report), the
measurement :mod:`.measure`, what identifies a run :mod:`.hostinfo`, the models :mod:`.models`; frames
come from :mod:`yolo_nano.runtime.sources` and the board is held through :mod:`yolo_nano.jetson`.
"""

from __future__ import annotations

import sys

from .cli import build_parser, main
from .hostinfo import engine_identity, file_sha256, git_revision
from .measure import measure_model, percentiles, power_fields, timed_loop
from .runner import run

__all__ = [
    "build_parser",
    "engine_identity",
    "file_sha256",
    "git_revision",
    "main",
    "measure_model",
    "percentiles",
    "power_fields",
    "run",
    "timed_loop",
]

if __name__ == "__main__":
    sys.exit(main())
