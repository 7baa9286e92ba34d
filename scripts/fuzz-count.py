#!/usr/bin/env python3
"""Run the parser fuzz tests once and print how many inputs each parser was given, with the CPU and
wall seconds each fuzz test took (docs/benchmarks.md, "Fuzzing").

    .venv/bin/python scripts/fuzz-count.py            # every tests/**/test_fuzz_*.py
    .venv/bin/python scripts/fuzz-count.py --json     # the same as JSON

The counts come from ``testsupport.fuzz.tried`` (one call per input, explicit corpus cases included);
the runs are derandomized, so the same code gives the same counts on any machine.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from typing import Any, Dict, Iterator, List

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Timer:
    """A pytest plugin that records the CPU and wall seconds of each test's call phase."""

    def __init__(self) -> None:
        self.times: Dict[str, List[float]] = {}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: Any) -> Iterator[None]:
        cpu, wall = time.process_time(), time.perf_counter()
        yield
        self.times[item.nodeid] = [time.process_time() - cpu, time.perf_counter() - wall]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    os.chdir(ROOT)
    from testsupport import fuzz  # the module the tests count into (pytest reuses it: pythonpath=tests)

    timer = _Timer()
    files = sorted(glob.glob(os.path.join("tests", "**", "test_fuzz_*.py"), recursive=True))
    code = pytest.main(["-q", "-p", "no:cacheprovider", "--no-header", *files], plugins=[timer])
    fuzz_tests = {k: v for k, v in timer.times.items() if "::test_fuzz_" in k}
    if args.json:
        print(json.dumps({"inputs": dict(sorted(fuzz.COUNTS.items())), "seconds": fuzz_tests}, indent=2))
    else:
        print(f"\n{'parser':34} {'inputs':>7}")
        for name, n in sorted(fuzz.COUNTS.items()):
            print(f"{name:34} {n:>7}")
        print(f"{'total':34} {sum(fuzz.COUNTS.values()):>7}\n\n{'fuzz test':68} {'cpu s':>6} {'wall s':>7}")
        for nodeid, (cpu, wall) in sorted(fuzz_tests.items()):
            print(f"{nodeid:68} {cpu:6.2f} {wall:7.2f}")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
