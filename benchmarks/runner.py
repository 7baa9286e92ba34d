"""One ``nano-bench`` run: check everything, take the board, measure every point of the sweep, put
the board back, report (and with ``--target-fps``, choose).

The points are :func:`~.sweep.expand_sweep`'s cross product: power modes x jetson_clocks x models x
batches x ONNX Runtime threads, mode-major, each flat out or paced (``--pace``). Everything that can be
refused is checked before the board is touched: the gate file, the models, the ``--power`` modes against
the board's nvpmodel conf (including switches that need a reboot), the tools, clocks pinned before the
run when a point must run unpinned, the frame source and the output folder. The board is then held
through :class:`BoardControl`: one run per board, the original mode and clocks recorded before the
first switch and restored after the last point, on an exception and on SIGINT, SIGTERM, SIGHUP and
SIGQUIT.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from yolo_nano.core.cli import EXIT_BAD_CONFIG, EXIT_FAILED, CommandError
from yolo_nano.core.sysfs import sysfs_path
from yolo_nano.jetson.clocks import ClockReader, ClocksPinnedError, JetsonClocks
from yolo_nano.jetson.control import BoardControl, BoardInterrupted
from yolo_nano.jetson.nvpmodel import (
    DEFAULT_CONF,
    ConfError,
    NvpConf,
    NvpModel,
    NvpModelError,
    PowerMode,
    parse_conf,
    read_status_file,
    resolve_modes,
)
from yolo_nano.jetson.power import PowerMonitor, PowerSource, find_power_source
from yolo_nano.jetson.recovery import BoardRestoreError, recover_if_left
from yolo_nano.runtime.sources import LoopingFrames, SourceError, print_warning

from .gates import GateError, evaluate, load_gate
from .hostinfo import engine_identity, file_sha256, git_revision, host_identity
from .measure import EXIT_RUN_FAILED, measure_model
from .models import close_detectors, open_detectors, resolve_models
from .results import append_jsonl, export_csv, format_table
from .sweep import OperatingPoint, expand_sweep, model_precision

__all__ = ["EXIT_RUN_FAILED", "BoardPlan", "Collected", "log", "plan_board", "run", "sweep"]


def log(msg: str) -> None:
    """One ``nano-bench: ...`` line on stderr; never raises (after SIGHUP the terminal is gone)."""
    with contextlib.suppress(OSError, ValueError):
        print(f"nano-bench: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ the board plan


@dataclass
class BoardPlan:
    """What this run will do to the board, decided before touching it.

    ``modes``: the ``--power`` modes in order, or ``[None]`` (measure in the current mode).
    ``current``: the mode in force at the start ``(id, name)`` when it can be read.
    ``nvp``: the nvpmodel tool when on PATH. ``clocks``: set when a point pins clocks (``--jetson-clocks
    on|both``). ``require_unpinned``: points were asked to run with clocks off (``--jetson-clocks
    off|both``, ``--apply``), so clocks pinned before the run are refused before anything changes.
    """

    conf: Optional[NvpConf]
    nvp: Optional[NvpModel]
    modes: List[Optional[PowerMode]]
    current: Optional[Tuple[int, str]]
    clocks: Optional[JetsonClocks]
    require_unpinned: bool = False

    @property
    def changes_board(self) -> bool:
        return any(m is not None for m in self.modes) or self.clocks is not None

    def current_mode(self) -> Optional[PowerMode]:
        """The current mode as a :class:`PowerMode` (from the conf; name-only without one)."""
        if self.current is None:
            return None
        mid, name = self.current
        if self.conf is not None and mid in self.conf.modes:
            return self.conf.modes[mid]
        return PowerMode(mid, name) if name else None


def plan_board(args: argparse.Namespace) -> BoardPlan:
    """Parse the conf, map ``--power`` to modes, refuse reboot-gated switches and missing tools up front."""
    root = args.sysfs_root
    conf_path = args.nvpmodel_conf or sysfs_path(root, DEFAULT_CONF)
    conf: Optional[NvpConf] = None
    if os.path.exists(conf_path):
        try:
            conf = parse_conf(conf_path)
        except ConfError as e:
            if args.power or args.nvpmodel_conf:
                raise CommandError(str(e)) from e
    elif args.nvpmodel_conf:
        raise CommandError(f"--nvpmodel-conf {conf_path}: file not found")
    nvp: Optional[NvpModel] = NvpModel(conf, root=root)
    if not nvp.available:  # type: ignore[union-attr]
        nvp = None
    modes: List[Optional[PowerMode]] = [None]
    if args.power:
        if conf is None:
            raise CommandError(
                f"--power needs the board's nvpmodel conf ({conf_path} not found); pass --nvpmodel-conf"
            )
        if nvp is None:
            raise CommandError("--power needs the nvpmodel program on PATH (JetPack); it was not found")
        try:
            modes = list(resolve_modes(args.power, conf))
        except ConfError as e:
            raise CommandError(str(e)) from e
    current: Optional[Tuple[int, str]] = None
    if nvp is not None:
        try:
            current = nvp.query()
        except NvpModelError as e:
            if args.power:
                raise CommandError(str(e)) from e
    elif conf is not None:
        sid = read_status_file(root)
        if sid is not None:
            current = (sid, conf.modes[sid].name if sid in conf.modes else f"ID{sid}")
    if args.power and current is not None and conf is not None and nvp is not None:
        for m in modes:
            if m is not None and conf.needs_reboot(current[0], m.id):
                raise CommandError(nvp.reboot_message(current[0], m.id))
    clocks: Optional[JetsonClocks] = None
    if True in args.clock_list:
        clocks = JetsonClocks()
        if not clocks.available:
            raise CommandError(
                "--jetson-clocks needs the jetson_clocks program on PATH (JetPack); it was not found"
            )
    explicit_off = args.jetson_clocks is not None or bool(getattr(args, "apply", None))
    return BoardPlan(
        conf, nvp, modes, current, clocks, require_unpinned=explicit_off and False in args.clock_list
    )


# ------------------------------------------------------------------------------------------ the run


@dataclass
class Collected:
    """What the sweep produced: records (also appended to results.jsonl), power traces and latencies
    for the plots, and the exit status so far."""

    records: List[Dict[str, Any]] = field(default_factory=list)
    traces: List[Dict[str, Any]] = field(default_factory=list)
    latencies: Dict[str, List[float]] = field(default_factory=dict)
    rc: int = 0


def load_gate_file(spec: Optional[str]) -> Optional[Dict[str, Any]]:
    """The validated gate, or None; a malformed gate is exit 4 before anything is measured."""
    if not spec:
        return None
    try:
        return load_gate(spec)
    except GateError as e:
        raise CommandError(str(e), EXIT_BAD_CONFIG) from e


def open_frames(args: argparse.Namespace) -> Any:
    """The end-to-end frame source (``--source``, ``--input``); bad input is one line, exit 2."""
    try:
        return LoopingFrames(args.source, args.input, warn=print_warning("nano-bench"))
    except SourceError as e:
        raise CommandError(str(e)) from e


def run(args: argparse.Namespace) -> int:
    """The whole run (``args`` already validated by the CLI, sweep lists parsed); returns the exit status."""
    gate = load_gate_file(args.gate)
    models = resolve_models(args.models, args.compare, log)
    recover_if_left(args.sysfs_root, log=log)  # a killed run's mode must not be taken for this board's own
    plan = plan_board(args)
    points = expand_sweep(models, modes=plan.modes, batches=args.batches, jetson_clocks=args.clock_list,
                          threads=args.thread_list, backend=args.backend,
                          precisions={m: model_precision(m) for m in models}, pace_fps=args.pace,
                          late_policy=args.late)  # fmt: skip
    detectors = open_detectors(models, args.backend, args.batches, args.thread_list)
    try:
        source = open_frames(args)
        try:
            psrc, why_not = find_power_source(args.sysfs_root, args.power_source)
            try:
                return _measure_and_report(args, plan, points, detectors, source, psrc, why_not, gate)
            finally:
                if psrc is not None:
                    psrc.close()
        finally:
            source.close()
    finally:
        close_detectors(detectors.values())


def _measure_and_report(
    args: argparse.Namespace,
    plan: BoardPlan,
    points: Sequence[OperatingPoint],
    detectors: Dict[Tuple[str, Optional[int]], Any],
    source: Any,
    psrc: Optional[PowerSource],
    why_not: str,
    gate: Optional[Dict[str, Any]],
) -> int:
    if psrc is None:
        log(why_not + ". FPS is measured; power, energy and measured images/sec/watt are null.")
    else:
        log(f"power source: {psrc.describe()}")
    ident = dict(
        host_identity(args.sysfs_root),
        git_revision=git_revision(),
        nvpmodel_conf=plan.conf.path if plan.conf else None,
        nvpmodel_conf_sha256=plan.conf.sha256 if plan.conf else None,
        power_not_measured_reason=why_not or None,
        source=source.description,
        warmup_s=args.warmup,
        duration_s=args.duration,
    )
    got = sweep(args, plan, points, detectors, source, psrc, ident)
    if got.rc >= 128:  # a signal: the board is restored; an interrupted run reports nothing
        return got.rc
    if not got.records:
        return got.rc or EXIT_RUN_FAILED
    rc = report(args, got, psrc, why_not, gate)
    if args.target_fps is not None:  # sweep-and-choose in one command
        from .operating import choose_and_write

        choose_and_write(args, got.records, [os.path.join(args.out, "results.jsonl")])
    elif getattr(args, "applied", None) is not None:
        from .operating import compare_with_applied

        print(compare_with_applied(args.applied, got.records[0]))
    return rc


class _BoardState:
    """What the sweep has set so far, to change only what the next point needs."""

    def __init__(self, plan: BoardPlan) -> None:
        self.mode_id, self.mode_name = plan.current if plan.current is not None else (None, None)
        self.active: Optional[PowerMode] = plan.current_mode()
        self.pinned_in_mode = False  # clocks pinned at this mode's maximum by this run


def _enter_point(
    board: BoardControl, state: _BoardState, point: OperatingPoint, modes: Dict[int, PowerMode]
) -> None:
    """Switch the board to ``point``'s mode and clocks (only what differs from the previous point)."""
    if point.power_mode_id is not None and point.power_mode_id != state.mode_id:
        if not point.jetson_clocks:
            board.unpin_clocks()  # before the switch: the new mode's limits are written over the restored state
        mode = modes[point.power_mode_id]
        log(f"switching to power mode {mode.name} (ID {mode.id})")
        state.mode_id, state.mode_name = board.set_mode(mode)
        state.active = mode
        state.pinned_in_mode = False
    if point.jetson_clocks and not state.pinned_in_mode:
        board.pin_clocks()
        state.pinned_in_mode = True
        log("jetson_clocks: clocks pinned at the mode's maximum")
    elif not point.jetson_clocks and board.pinned:
        board.unpin_clocks()
        state.pinned_in_mode = False


def run_label(point: OperatingPoint, mode_name: Optional[str]) -> str:
    """``nano.onnx @ MODE_15W`` plus what else sets the point apart (``+clocks, threads 2, batch 2, paced 30 fps``)."""
    extra = []
    if point.jetson_clocks:
        extra.append("+clocks")
    if point.precision and point.precision not in ("fp32",):
        extra.append(point.precision)
    if point.threads:
        extra.append(f"threads {point.threads}")
    if point.batch != 1:
        extra.append(f"batch {point.batch}")
    if point.pace_fps:
        extra.append(f"paced {point.pace_fps:g} fps" + ("" if point.late_policy == "drop" else " (queue)"))
    return f"{os.path.basename(point.model)} @ {mode_name or 'current mode'}" + (
        ", " + ", ".join(extra) if extra else ""
    )


def sweep(
    args: argparse.Namespace,
    plan: BoardPlan,
    points: Sequence[OperatingPoint],
    detectors: Dict[Tuple[str, Optional[int]], Any],
    source: Any,
    psrc: Optional[PowerSource],
    ident: Dict[str, Any],
) -> Collected:
    """Measure every point while holding the board; the board is restored before this returns, whatever
    happened."""
    jsonl = os.path.join(args.out, "results.jsonl")
    clock_reader = ClockReader(args.sysfs_root)
    monitor = PowerMonitor(psrc, interval_s=args.sample_interval, side=clock_reader.read)
    got = Collected()
    modes = {m.id: m for m in plan.modes if m is not None}
    board = BoardControl(
        nvp=plan.nvp or NvpModel(plan.conf, root=args.sysfs_root),
        conf=plan.conf,
        clocks=plan.clocks,
        sysfs_root=args.sysfs_root,
        wait_s=args.wait_lock,
        lock=plan.changes_board,
        log=log,
    )
    state = _BoardState(plan)
    try:
        with board:
            if plan.require_unpinned:
                board.require_unpinned()  # before any change: clocks pinned before the run are refused
            for point in points:
                _enter_point(board, state, point, modes)
                label = run_label(point, state.mode_name)
                if point.pace_fps:
                    log(
                        f"measuring {label}: warm-up {args.warmup:g} s, engine only {args.duration:g} s, then "
                        f"{args.duration:g} s paced at {point.pace_fps:g} fps (late frames: {point.late_policy})"
                    )
                else:
                    log(f"measuring {label}: warm-up {args.warmup:g} s, then 2 x {args.duration:g} s")
                res = measure_model(detectors[(point.model, point.threads)], source, batch=point.batch,
                                    duration_s=args.duration, warmup_s=args.warmup, monitor=monitor,
                                    clock_reader=clock_reader, mode=state.active, label=label,
                                    pace_fps=point.pace_fps, late=point.late_policy)  # fmt: skip
                rec = build_record(point, state.mode_id, state.mode_name, ident, res)
                got.latencies[label] = rec.pop("_latencies_e2e")
                trace = rec.pop("_power_trace", None)
                write_record(jsonl, rec)
                got.records.append(rec)
                if trace is not None:
                    got.traces.append(dict(trace, label=label))
    except BoardInterrupted as e:  # logged and restored by BoardControl
        got.rc = int(e.code)
    except BoardRestoreError:
        got.rc = EXIT_RUN_FAILED  # each failure was logged as an ERROR line
    except ClocksPinnedError as e:  # nothing was changed
        raise CommandError(str(e)) from e
    except SourceError as e:  # a frame that could be read when the run started no longer can
        raise CommandError(str(e)) from e
    return got


def build_record(
    point: OperatingPoint,
    mode_id: Optional[int],
    mode_name: Optional[str],
    ident: Dict[str, Any],
    measured: Dict[str, Any],
) -> Dict[str, Any]:
    """One result record: the point (model, mode, clocks, precision, threads, batch, pace), the run's
    identity and what :func:`measure_model` measured."""
    path = point.model
    rec: Dict[str, Any] = {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": os.path.abspath(path),
        "model_name": os.path.basename(path),
        "model_sha256": file_sha256(path),
        "engine": engine_identity(path),
        "power_mode_id": mode_id,
        "power_mode_name": mode_name,
        "jetson_clocks": point.jetson_clocks,
        "precision": point.precision,
        "threads": point.threads,
    }
    rec.update(ident)
    rec.update(measured)
    return rec


def write_record(jsonl: str, rec: Dict[str, Any]) -> None:
    try:
        append_jsonl(jsonl, rec)
    except OSError as e:
        raise CommandError(f"cannot write the results to {jsonl}: {e.strerror or e}", EXIT_RUN_FAILED) from e


def report(
    args: argparse.Namespace,
    got: Collected,
    psrc: Optional[PowerSource],
    why_not: str,
    gate: Optional[Dict[str, Any]],
) -> int:
    """The table, the CSV export, the plots and the gate; returns the exit status."""
    records = got.records
    print(format_table(records))
    if any(r.get("power_w") is None for r in records):
        print(f"power is not measured here ({why_not.replace('power not measured: ', '')}): power_w, energy and "
              "measured images/sec/watt are null; img/s/W nominal needs a Jetson power mode")  # fmt: skip
    else:
        print(f"power: {psrc.describe() if psrc else '?'}; img/s/W meas = fps_e2e / measured W, "
              "nominal = fps_e2e / mode budget")  # fmt: skip
    if any(r.get("pace_fps") is not None for r in records):
        print("paced: FPS e2e = frames done / paced window; p50/p99 from each frame's arrival; power and "
              "J/frame over the whole window, idle between frames included")  # fmt: skip
    jsonl = os.path.join(args.out, "results.jsonl")
    try:
        csv_path = export_csv(jsonl)
    except OSError as e:
        raise CommandError(
            f"cannot write the CSV export beside {jsonl}: {e.strerror or e}", EXIT_RUN_FAILED
        ) from e
    print(f"results: {jsonl} (+{len(records)} lines), CSV: {csv_path}")
    if args.plot:
        from .pareto import PARETO_FILE, plot_pareto
        from .plots import plot_latency_hist, plot_modes, plot_power_trace

        pngs = [
            plot_modes(records, os.path.join(args.out, "fps_by_mode.png")),
            plot_power_trace(got.traces, os.path.join(args.out, "power_trace.png")),
            plot_latency_hist(got.latencies, os.path.join(args.out, "latency_hist.png")),
            plot_pareto(records, os.path.join(args.out, PARETO_FILE)),
        ]
        print("plots: " + ", ".join(pngs))
    if gate is None:
        return got.rc
    try:
        checks = evaluate(records, gate)
    except GateError as e:  # its baseline file changed since it was checked
        raise CommandError(str(e), EXIT_BAD_CONFIG) from e
    for c in checks:
        print(c.line())
    failed = [c for c in checks if not c.ok]
    if failed:
        print(f"nano-bench: perf gate {gate['name']} FAILED: {len(failed)} of {len(checks)} checks")
        return EXIT_FAILED
    print(f"nano-bench: perf gate {gate['name']} passed ({len(checks)} checks)")
    return got.rc
