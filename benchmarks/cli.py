"""``nano-bench``: FPS, latency and images/sec/watt of a model under Jetson power modes; camera-paced
energy per frame, sweeps, and the cheapest operating point that keeps up with a camera.

    nano-bench                                   # the embedded default model, current mode, 10 s
    nano-bench model.engine --power 15W,30W --jetson-clocks --gate benchmarks/gates/agx-xavier-15w.json
    nano-bench nano.onnx tiny-yolov2.onnx tiny-yolov3.onnx --plot   # comparison report in one run
    nano-bench fp16.engine int8.engine --power 15W,30W --jetson-clocks both --batch 1,2 --target-fps 30
    nano-bench --choose bench-results/results.jsonl --target-fps 30 --max-p99-ms 50
    nano-bench --apply bench-results/operating-point.json int8.engine --gate my-gate.json
    nano-bench --restore                         # put the board back after a run that was killed

Per point of the sweep (model x power mode x jetson_clocks x batch x threads) it warms up, then measures
two timed windows of ``--duration`` seconds: engine only (``backend.infer`` on one preprocessed batch,
repeated) and end to end (frame in from the source, :class:`~yolo_nano.runtime.Detections` out; with
``--pace`` a camera's, :mod:`.pacing`). Power is sampled in a background thread over exactly each window
and integrated (trapezoid); energy per frame and images/sec/watt follow, the latter both divided by
measured power and by the mode's nominal budget, each labelled. docs/nano-bench.md has the details;
:mod:`.runner` runs it, :mod:`.measure` measures, :mod:`.operating` chooses and applies operating points
(:mod:`.choose`), :mod:`yolo_nano.jetson` holds the board.

The original power mode and jetson_clocks state are ALWAYS restored: on normal exit, on an exception,
and on SIGINT, SIGTERM, SIGHUP and SIGQUIT; after a SIGKILL or a power loss, by the next run or
``nano-bench --restore``. One run owns a board at a time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import List, Optional, Sequence

from yolo_nano.core.cli import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    CommandError,
    error_line,
    run_command,
)
from yolo_nano.jetson.clocks import ClocksPinnedError
from yolo_nano.jetson.control import BoardInterrupted
from yolo_nano.jetson.lock import BoardBusyError, BoardStateError
from yolo_nano.jetson.nvpmodel import NvpModelError, PermissionHintError, RebootRequiredError
from yolo_nano.jetson.operating_point import OperatingPointError
from yolo_nano.jetson.recovery import BoardRestoreError, recover
from yolo_nano.runtime.sources import BENCH_SOURCES

from .choose import CHOOSE_BY, DEFAULT_MAX_LATE
from .pacing import LATE_POLICIES, PacingError, check_pace
from .runner import EXIT_RUN_FAILED, log, run
from .sweep import JETSON_CLOCKS_CHOICES, parse_batches, parse_jetson_clocks, parse_threads

PROG = "nano-bench"
BACKENDS = ("auto", "onnxruntime", "onnxruntime-cpu", "onnxruntime-cuda", "tensorrt")

EXIT_CODES = (
    "Exit codes: 0 ok; 1 a perf gate failed; 2 bad input (arguments, models, frames, --out, an unknown or "
    "reboot-gated --power, clocks pinned before a run with --jetson-clocks off, missing permission, no "
    "operating point meets --target-fps and the bounds, an --apply file for another board, conf or model); "
    "3 the run failed (inference failed, the board is busy with another run, a board tool failed, the board "
    "could not be restored); 4 the gate file is malformed; 129/130/131/143 "
    "SIGHUP/SIGINT/SIGQUIT/SIGTERM (the original power mode and clocks are restored in every case)."
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Benchmark YOLO models: engine-only and end-to-end FPS, latency, module power and "
        "images/sec/watt under Jetson power modes; camera-paced energy per frame, sweeps and the cheapest "
        "operating point that keeps up with a camera; perf gates for CI.",
        epilog=EXIT_CODES,
    )
    p.add_argument(
        "models", nargs="*", metavar="MODEL", help=".onnx or .engine files (default: the embedded model)"
    )
    p.add_argument("--compare", action="store_true",
                   help="comparison report; without MODELs: YOLO Nano vs Tiny YOLOv2 vs Tiny YOLOv3 "
                   "(randomly initialised exports, speed only; needs PyTorch once)")  # fmt: skip
    p.add_argument("--power", help="budget (15W), mode name (MODE_30W_ALL), ID, or a comma list to sweep")
    p.add_argument("--jetson-clocks", nargs="?", const="on", choices=sorted(JETSON_CLOCKS_CHOICES),
                   metavar="on|off|both", help="pin clocks with jetson_clocks in each mode (on, the default "
                   "when given without a value), run unpinned (off), or sweep both")  # fmt: skip
    p.add_argument("--batch", metavar="N[,N...]",
                   help="images per inference call, or a comma list to sweep (default 1)")  # fmt: skip
    p.add_argument("--duration", type=float, default=10.0, help="seconds per timed window (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before timing (default 2; "
                   "use >= 10 after a mode switch on a Jetson)")  # fmt: skip
    p.add_argument(
        "--source", choices=BENCH_SOURCES, default="synthetic", help="frame source (default synthetic)"
    )
    p.add_argument("--input", help="folder of images (--source images) or video file (--source video)")
    p.add_argument("--out", default="bench-results", help="output folder (default ./bench-results)")
    p.add_argument(
        "--gate", help="perf gate JSON, or a shipped gate name (agx-xavier-15w): exit 1 on a regression"
    )
    p.add_argument("--plot", action="store_true", help="write PNG plots into --out")
    p.add_argument("--nvpmodel-conf", help="nvpmodel conf (default <sysfs-root>/etc/nvpmodel.conf)")
    p.add_argument("--sysfs-root", default="/", help="root for /sys, /proc, /etc, /var reads (default /)")
    p.add_argument("--backend", default="auto", choices=BACKENDS)
    p.add_argument("--threads", metavar="N[,N...]",
                   help="ONNX Runtime CPU threads, or a comma list to sweep (default: ONNX Runtime's)")  # fmt: skip
    pg = p.add_argument_group("paced runs and operating points")
    pg.add_argument("--pace", type=float, metavar="FPS",
                    help="offer frames at FPS per second as a camera does; energy per frame over the whole "
                    "window, idle included")  # fmt: skip
    pg.add_argument("--late", choices=LATE_POLICIES,
                    help="a frame arriving while one is in flight: drop it (default, as a camera driver) or queue it")  # fmt: skip
    pg.add_argument("--choose", nargs="+", metavar="RESULTS",
                    help="choose the operating point from results.jsonl files (with --target-fps)")  # fmt: skip
    pg.add_argument("--target-fps", type=float, metavar="FPS",
                    help="the camera rate to choose for; with MODELs: run the sweep paced at it, then choose")  # fmt: skip
    pg.add_argument("--max-p99-ms", type=float, metavar="MS", help="bound on p99 latency from frame arrival")
    pg.add_argument("--max-late", type=float, metavar="SHARE",
                    help=f"largest late + dropped share of frames offered (default {DEFAULT_MAX_LATE})")  # fmt: skip
    pg.add_argument("--by", choices=CHOOSE_BY,
                    help="least energy per frame (default) or lowest p99 latency (where power is not measured)")  # fmt: skip
    pg.add_argument("--apply", metavar="FILE",
                    help="benchmark exactly the point of an operating-point.json (its mode, clocks, batch, "
                    "threads, pace) after checking board, conf and model")  # fmt: skip
    p.add_argument(
        "--power-source",
        default="auto",
        choices=("auto", "ina3221", "jtop", "rapl", "none"),
        help="power sensor (default auto: INA3221 sysfs, then jtop, then RAPL)",
    )
    p.add_argument(
        "--sample-interval", type=float, default=0.1, help="power sampling period in s (default 0.1)"
    )
    p.add_argument("--wait-lock", type=float, default=0.0, metavar="S",
                   help="when another run owns the board, wait up to S seconds for it (default 0: refuse at "
                   "once, naming its PID)")  # fmt: skip
    p.add_argument("--restore", action="store_true",
                   help="only put the board back after a run that was killed (SIGKILL, power loss), then exit")  # fmt: skip
    return p


def check_out_dir(out: str) -> None:
    """``--out`` must be (or become) a writable folder: refused in one line before anything runs."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise CommandError(f"--out {out}: is a file, not a folder")
    parent = os.path.abspath(out)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise CommandError(f"--out {out}: {parent} is a file, so no folder can be made below it")
    try:
        os.makedirs(out, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".nano-bench-probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CommandError(f"--out {out}: not a writable folder ({e.strerror or e})") from e
    jsonl = os.path.join(out, "results.jsonl")
    if os.path.lexists(jsonl) and not os.path.isfile(jsonl):
        raise CommandError(f"--out {out}: {jsonl} exists and is not a regular file")


def validate(args: argparse.Namespace) -> None:
    """Argument checks that need no model and no board; one-line :class:`CommandError` (exit 2). Sets the
    sweep's lists: ``args.batches``, ``args.thread_list``, ``args.clock_list``, and ``args.pace``."""
    args.batches = parse_batches(args.batch or "1")
    args.thread_list = parse_threads(args.threads) if args.threads else [None]
    args.clock_list = parse_jetson_clocks(args.jetson_clocks)
    if args.target_fps is not None:
        from .operating import constraints_from

        constraints_from(args)  # bad bounds are refused before anything is measured
        if args.pace is None:
            args.pace = args.target_fps  # the sweep-and-choose runs paced at the target
        elif args.pace != args.target_fps:
            raise CommandError(f"--pace {args.pace:g} differs from --target-fps {args.target_fps:g}: only runs "
                               "paced at the target qualify; drop --pace")  # fmt: skip
    if args.late is not None and args.pace is None and not args.apply:
        raise CommandError("--late applies to paced runs: add --pace FPS")
    if args.pace is not None:
        args.late = args.late or "drop"
        try:
            check_pace(args.pace, args.late)
        except PacingError as e:
            raise CommandError(str(e)) from None
    if args.apply:
        from .operating import apply_point

        apply_point(args)  # the file's point replaces the sweep's lists; checked against board and model
    if not args.duration > 0:
        raise CommandError(f"--duration must be > 0 seconds, got {args.duration}")
    if args.warmup < 0:
        raise CommandError(f"--warmup must be >= 0 seconds, got {args.warmup}")
    if not 0.005 <= args.sample_interval <= 5:
        raise CommandError(f"--sample-interval must be in [0.005, 5] s, got {args.sample_interval}")
    if not args.wait_lock >= 0:
        raise CommandError(f"--wait-lock must be >= 0 seconds, got {args.wait_lock}")
    if not os.path.isdir(args.sysfs_root):
        raise CommandError(f"--sysfs-root {args.sysfs_root}: not a folder")
    for m in args.models:
        if not os.path.isfile(m):
            raise CommandError(f"model file not found: {m}")
    check_out_dir(args.out)


def check_choice_flags(args: argparse.Namespace) -> None:
    """The choice's bounds need a choice, and a choice needs a target rate."""
    if args.target_fps is None:
        for flag, value in (
            ("--max-p99-ms", args.max_p99_ms),
            ("--max-late", args.max_late),
            ("--by", args.by),
        ):
            if value is not None:
                raise CommandError(f"{flag} bounds the choice of an operating point: add --target-fps FPS")
        if args.choose:
            raise CommandError("--choose needs the camera rate to choose for: add --target-fps FPS")
    if args.apply and (args.choose or args.target_fps is not None):
        raise CommandError(
            "--apply benchmarks a chosen point; it does not choose: drop --choose/--target-fps"
        )


def restore_only(args: argparse.Namespace) -> int:
    """``--restore``: put the board back from the state a killed run left, and say what was done."""
    if args.models:
        raise CommandError("--restore takes no MODEL: it only puts the board back, then exits")
    if not os.path.isdir(args.sysfs_root):
        raise CommandError(f"--sysfs-root {args.sysfs_root}: not a folder")
    lines = recover(args.sysfs_root, log=log, wait_s=args.wait_lock)
    if not lines:
        log("nothing to restore: no run left the board changed")
    return EXIT_OK


def bare_clocks_flag(argv: Sequence[str]) -> List[str]:
    """``--jetson-clocks`` without a value before a MODEL (``--jetson-clocks m.engine``, valid before the
    flag took on/off/both) means ``on``: argparse would take the model for the value."""
    out = list(argv)
    for i in range(len(out) - 1, -1, -1):
        if out[i] == "--jetson-clocks" and (i + 1 == len(out) or out[i + 1] not in JETSON_CLOCKS_CHOICES):
            out.insert(i + 1, "on")
    return out


def _body(argv: Optional[Sequence[str]]) -> int:
    args = build_parser().parse_args(bare_clocks_flag(sys.argv[1:] if argv is None else argv))
    try:
        if args.restore:
            return restore_only(args)
        check_choice_flags(args)
        if args.choose:
            from .operating import choose_from_files

            return choose_from_files(args)
        validate(args)
        return run(args)
    except PermissionHintError as e:  # the hint is several lines to copy: the error line, then the hint
        first, _, rest = str(e).partition("\n")
        print(error_line(PROG, first), file=sys.stderr)
        if rest:
            print(rest, file=sys.stderr)
        return EXIT_BAD_INPUT
    except (RebootRequiredError, ClocksPinnedError, OperatingPointError) as e:
        raise CommandError(str(e), EXIT_BAD_INPUT) from e
    except (NvpModelError, BoardBusyError, BoardStateError) as e:
        raise CommandError(str(e), EXIT_RUN_FAILED) from e
    except BoardRestoreError:
        return EXIT_RUN_FAILED  # each failure was logged as an ERROR line
    except BoardInterrupted as e:  # outside the measured sweep (recovery, waiting for the lock)
        log(f"interrupted by {e.signal_name}")
        return int(e.code)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``nano-bench``; returns the exit code."""
    return run_command(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
