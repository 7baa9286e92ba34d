"""``nano-doctor``: check the whole stack on this machine, say what is missing and how to fix it.

    nano-doctor [MODEL] [--report doctor.json] [--quick] [--nvpmodel-conf PATH] [--sysfs-root PATH]

One line per check, by section (board, software, gpu, power, disk, self-test): ``ok``, ``missing``,
``failed``, ``n/a`` (not applicable here) or ``skipped``, and under each problem a ``fix:`` line. Exit 0
when everything that applies here is ok, 1 otherwise, 2 for bad arguments. docs/doctor.md lists the checks.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import List, Optional, Sequence, TextIO

import yolo_nano
from yolo_nano.core.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, CommandError, run_command

from .checks import SECTIONS
from .report import build_report, summary, write_report
from .result import Check, Context, Options, run_check
from .selftests import SELFTESTS

PROG = "nano-doctor"
STATUS_WIDTH = 8
NAME_WIDTH = 24


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Check that everything yolo-nano-edge needs works on this machine (a Jetson or not), "
        "say how to fix what does not, and write a report to attach to an issue.",
    )
    ap.add_argument("model", nargs="?", help="model for the checks and the Detector self-test "
                    "(.onnx or .engine; default: the embedded demo model)")  # fmt: skip
    ap.add_argument("--report", metavar="FILE", help="also write everything as JSON (no host name, user "
                    "name, IP address or home path in it)")  # fmt: skip
    ap.add_argument(
        "--quick", action="store_true", help="skip the self-tests (about a second instead of ~30)"
    )
    ap.add_argument("--nvpmodel-conf", metavar="PATH", help="the nvpmodel conf (default: /etc/nvpmodel.conf)")
    ap.add_argument("--sysfs-root", metavar="PATH", default="/",
                    help="read the board's /sys, /proc and /etc under PATH (a recorded board tree)")  # fmt: skip
    return ap


def format_check(c: Check) -> List[str]:
    """The printed line of a check, and its fix line(s) for a problem."""
    lines = [f"  {c.status:<{STATUS_WIDTH}} {c.name:<{NAME_WIDTH}} {c.detail}".rstrip()]
    if c.fix and c.problem:
        indent = " " * (2 + STATUS_WIDTH + 1)
        fix_lines = c.fix.splitlines()
        lines.append(f"{indent}fix: {fix_lines[0]}")
        lines += [f"{indent}     {line.strip()}" for line in fix_lines[1:]]
    return lines


def _environment(ctx: Context) -> dict:
    return {
        "on_jetson": ctx.on_jetson,
        "gpu": ctx.has_gpu,
        "machine": platform.machine(),
        "system": platform.platform(),
        "python": platform.python_version(),
    }


def run_doctor(ctx: Context, out: Optional[TextIO] = None) -> List[Check]:
    """Run every check and self-test, printing each line as it is known (to ``out``, default stdout);
    returns the checks."""
    out = out or sys.stdout
    checks: List[Check] = []
    for section, fns in list(SECTIONS) + [("self-test", SELFTESTS)]:
        print(section, file=out, flush=True)
        for fn in fns:
            for c in run_check(fn, ctx, section):
                checks.append(c)
                for line in format_check(c):
                    print(line, file=out, flush=True)
    return checks


def _main(argv: Optional[Sequence[str]]) -> int:
    args = build_parser().parse_args(argv)
    if not os.path.isdir(args.sysfs_root):
        raise CommandError(f"--sysfs-root {args.sysfs_root}: not a folder", EXIT_BAD_INPUT)
    if args.report:
        folder = os.path.dirname(os.path.abspath(args.report))
        if not os.path.isdir(folder):
            raise CommandError(f"--report {args.report}: the folder {folder} does not exist", EXIT_BAD_INPUT)
    options = Options(args.model, args.quick, args.sysfs_root, args.nvpmodel_conf)
    t0 = time.perf_counter()
    print(f"{PROG} {yolo_nano.__version__}: checking this machine"
          + (" (--quick: no self-tests)" if args.quick else ""), flush=True)  # fmt: skip
    ctx = Context(options)
    checks = run_doctor(ctx)
    seconds = time.perf_counter() - t0
    problems = [c for c in checks if c.problem]
    code = EXIT_FAILED if problems else EXIT_OK
    counts = summary(checks)
    verdict = (
        f"{len(problems)} problem(s), each with its fix above"
        if problems
        else "everything that applies here works"
    )
    print(
        f"{PROG}: {counts['ok']} ok, {counts['missing']} missing, {counts['failed']} failed, "
        f"{counts['n/a']} not applicable here, {counts['skipped']} skipped ({seconds:.1f} s): {verdict}"
    )
    if args.report:
        try:
            write_report(args.report, build_report(checks, options, code, seconds, _environment(ctx)))
        except OSError as e:
            raise CommandError(
                f"cannot write the report {args.report}: {e.strerror or e}", EXIT_BAD_INPUT
            ) from e
        print(f"{PROG}: report written to {args.report}: attach it to an issue (it holds no host name, user "
              "name, IP address or home path)")  # fmt: skip
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
