"""``nano-bench``'s operating points: ``--choose`` (and ``--target-fps`` after a sweep) and ``--apply``.

The choice itself is :mod:`.choose`; the file's check against the board and the model is
:mod:`yolo_nano.jetson.operating_point`. This module is the glue between them and the command line:
which board the choice is for, what is printed, where operating-point.json goes, and how an applied
point becomes the sweep's single point.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from yolo_nano.core.cli import EXIT_OK, CommandError, warn
from yolo_nano.core.modelfiles import ENGINE_SUFFIXES
from yolo_nano.core.sysfs import sysfs_path
from yolo_nano.jetson.board import board_model, l4t_release
from yolo_nano.jetson.nvpmodel import DEFAULT_CONF, ConfError, parse_conf
from yolo_nano.jetson.operating_point import ChosenPoint, check_operating_point, load_operating_point

from .choose import (
    DEFAULT_MAX_LATE,
    Choice,
    Constraints,
    NoOperatingPoint,
    choose,
    format_candidates,
    format_choice,
    load_records,
    write_operating_point,
)
from .measure import EXIT_RUN_FAILED


def current_identity(sysfs_root: str, nvpmodel_conf: Optional[str]) -> Optional[Dict[str, Any]]:
    """This board's ``board``/``l4t``/``nvpmodel_conf_sha256`` on a Jetson; None off one (the choice then
    takes the most recent record's board)."""
    board = board_model(sysfs_root)
    if board is None:
        return None
    conf_path = nvpmodel_conf or sysfs_path(sysfs_root, DEFAULT_CONF)
    sha: Optional[str] = None
    if os.path.exists(conf_path):
        try:
            sha = parse_conf(conf_path).sha256
        except ConfError as e:
            raise CommandError(str(e)) from e
    return {"board": board, "l4t": l4t_release(sysfs_root), "nvpmodel_conf_sha256": sha}


def constraints_from(args: argparse.Namespace) -> Constraints:
    c = Constraints(
        target_fps=float(args.target_fps),
        max_p99_ms=args.max_p99_ms,
        max_late=DEFAULT_MAX_LATE if args.max_late is None else args.max_late,
        by=args.by or "energy",
    )
    c.check()
    return c


def _choose_print_write(
    args: argparse.Namespace, records: Sequence[Dict[str, Any]], sources: Sequence[str]
) -> Choice:
    constraints = constraints_from(args)
    current = current_identity(args.sysfs_root, args.nvpmodel_conf)
    try:
        choice = choose(records, constraints, current=current, sources=sources)
    except NoOperatingPoint as e:
        print(format_candidates(e.candidates))  # every candidate and what it failed, then the one-line error
        _plot_candidates(args, [c.record for c in e.candidates])
        raise
    print(format_choice(choice))
    _plot_candidates(args, [c.record for c in choice.candidates])
    try:
        path = write_operating_point(choice, args.out)
    except OSError as e:
        raise CommandError(
            f"cannot write the operating point into {args.out}: {e.strerror or e}", EXIT_RUN_FAILED
        ) from e
    print(f"operating point: {path} (nano-bench --apply {path} MODEL; yolo_nano.jetson.operating_point)")
    return choice


def _plot_candidates(args: argparse.Namespace, records: Sequence[Dict[str, Any]]) -> None:
    """``--choose ... --plot``: the Pareto plot of every record of the chosen board (flat out and paced)."""
    if not (args.choose and args.plot):
        return  # after a sweep, report() has plotted the records just measured
    from .pareto import PARETO_FILE, plot_pareto

    print("plot: " + plot_pareto(records, os.path.join(args.out, PARETO_FILE)))


def choose_from_files(args: argparse.Namespace) -> int:
    """``nano-bench --choose RESULTS... --target-fps N``: choose from result files, write the point."""
    from .cli import check_out_dir

    models = list(args.models) + [p for p in args.choose if p.lower().endswith((".onnx",) + ENGINE_SUFFIXES)]
    if models:
        raise CommandError(
            f"--choose reads result files, not models ({models[0]}): to measure and choose in one "
            "command, drop --choose: nano-bench MODEL... --target-fps N"
        )
    if args.apply:
        raise CommandError("--apply benchmarks a chosen point; it does not choose: drop --choose")
    constraints_from(args)  # bad bounds are refused before any file is read
    check_out_dir(args.out)
    records = load_records(args.choose, warn=lambda msg: warn("nano-bench", msg))
    _choose_print_write(args, records, list(args.choose))
    return EXIT_OK


def choose_and_write(
    args: argparse.Namespace, records: Sequence[Dict[str, Any]], sources: Sequence[str]
) -> None:
    """After ``nano-bench MODEL... --target-fps N``: choose among the records just measured."""
    print()
    _choose_print_write(args, records, sources)


APPLY_CONFLICTS = ("power", "batch", "threads", "jetson_clocks", "pace", "late", "compare")


def apply_point(args: argparse.Namespace) -> None:
    """``--apply FILE [MODEL]``: load and check the point (board, L4T, conf and model must be the ones it
    was chosen on: else exit 2, nothing changed), then make it the sweep's only point."""
    given = [
        f"--{k.replace('_', '-')}" for k in APPLY_CONFLICTS if getattr(args, k, None) not in (None, False)
    ]
    if given:
        raise CommandError(f"--apply takes the point from the file; drop {', '.join(given)}")
    point = load_operating_point(args.apply)  # OperatingPointError: exit 2
    if len(args.models) > 1:
        raise CommandError("--apply benchmarks one model: pass the model the point was chosen for")
    model = args.models[0] if args.models else point.fields.get("model")
    if not isinstance(model, str) or not os.path.isfile(model):
        raise CommandError(f"--apply: the point's model {model!r} is not here; pass it: nano-bench --apply "
                           f"{args.apply} MODEL")  # fmt: skip
    check_operating_point(point, args.nvpmodel_conf, args.sysfs_root, model)  # OperatingPointMismatch
    args.models = [model]
    args.power = str(point.power_mode_id) if point.power_mode_id is not None else None
    args.clock_list = [point.jetson_clocks]
    args.batches = [point.batch]
    args.thread_list = [point.threads]
    args.pace = point.pace_fps
    args.late = point.late_policy or ("drop" if point.pace_fps is not None else None)
    backend = point.fields.get("backend")
    if args.backend == "auto" and backend in ("onnxruntime-cpu", "onnxruntime-cuda", "tensorrt"):
        args.backend = backend
    args.applied = point
    mode = (
        f"{point.power_mode_name} (ID {point.power_mode_id})" if point.power_mode_id is not None else "host"
    )
    pace = f"paced at {point.pace_fps:g} fps ({args.late})" if point.pace_fps else "flat out"
    print(f"applying {args.apply}: {os.path.basename(model)}, mode {mode}, jetson_clocks "
          f"{'on' if point.jetson_clocks else 'off'}, batch {point.batch}, threads {point.threads or 'default'}, "
          f"{pace}")  # fmt: skip


def _num(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def compare_with_applied(point: ChosenPoint, record: Mapping[str, Any]) -> str:
    """One line: the point's figures when chosen beside this run's."""
    parts: List[str] = []
    for key, name, fmt in (("fps_e2e", "FPS", ".1f"), ("latency_ms_p99", "p99 ms", ".1f"),
                           ("energy_j_per_frame", "J/frame", ".4f")):  # fmt: skip
        was, now = _num(point.fields.get(key)), _num(record.get(key))
        parts.append(
            f"{name} {format(was, fmt) if was is not None else '-'} -> {format(now, fmt) if now is not None else '-'}"
        )
    return "operating point when chosen -> now: " + ", ".join(parts)


__all__ = [
    "apply_point",
    "choose_and_write",
    "choose_from_files",
    "compare_with_applied",
    "constraints_from",
    "current_identity",
]
