"""``--choose``: the cheapest operating point that keeps up with a camera, from nano-bench result records.

    choice = choose(load_records(["bench-results/results.jsonl"]), Constraints(target_fps=30, max_p99_ms=50))
    print(format_choice(choice)); write_operating_point(choice, "bench-results")

Only records of one board and conf are compared (same ``board``, ``l4t``, ``nvpmodel_conf_sha256``): the
current board's when the caller names it (on a Jetson), else those of the most recent record. A record
qualifies when it was paced at exactly the target rate (flat-out records never do, whatever their FPS/W:
between camera frames the board idles at a power flat-out runs never see), its late + dropped share of
the frames offered is at most ``max_late``, its ``latency_ms_p99`` is within ``max_p99_ms`` (when given)
and, choosing by energy, its ``energy_j_per_frame`` was measured. The least energy per frame wins, ties
to the lower p99; ``by="latency"`` (hosts without a power sensor) chooses the lowest p99 instead. Every
candidate keeps the reason it lost. Nothing qualifying raises :class:`NoOperatingPoint` (exit 2), which
names what each candidate failed and what to run.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from yolo_nano.core.cli import CommandError
from yolo_nano.core.fileio import atomic_write_json
from yolo_nano.jetson.operating_point import POINT_FORMAT, POINT_FORMAT_VERSION

from .results import finite_number
from .sweep import point_label

IDENTITY_FIELDS = ("board", "l4t", "nvpmodel_conf_sha256")
#: What operating-point.json copies from the winning record (same names as the results records).
POINT_FIELDS = (
    "board",
    "l4t",
    "nvpmodel_conf",
    "nvpmodel_conf_sha256",
    "power_mode_id",
    "power_mode_name",
    "jetson_clocks",
    "model",
    "model_name",
    "model_sha256",
    "engine",
    "backend",
    "precision",
    "threads",
    "batch",
    "pace_fps",
    "late_policy",
    "source",
    "fps_e2e",
    "frames_offered",
    "frames_done",
    "frames_late",
    "frames_dropped",
    "latency_ms_p50",
    "latency_ms_p90",
    "latency_ms_p99",
    "power_w",
    "power_source",
    "power_scope",
    "energy_j_per_frame",
    "throttled",
    "timestamp",
    "git_revision",
)
OPERATING_POINT_FILE = "operating-point.json"
OPERATING_POINT_FORMAT = POINT_FORMAT_VERSION
CHOOSE_BY = ("energy", "latency")
DEFAULT_MAX_LATE = 0.01
PACE_TOLERANCE = 1e-9  # "exactly the target": equal up to float noise


class ChoiceError(CommandError):
    """Bad input to the choice (no records, bad constraints, no records of this board): exit 2."""


class NoOperatingPoint(ChoiceError):
    """No candidate meets the constraints. ``candidates`` holds each one with what it failed."""

    def __init__(self, message: str, candidates: Sequence[Candidate]) -> None:
        super().__init__(message)
        self.candidates = list(candidates)


@dataclass(frozen=True)
class Constraints:
    """What the choice must meet: ``target_fps`` (frames/s), ``max_p99_ms`` (None: no bound), ``max_late``
    (a share 0..1 of frames offered that may be late or dropped) and ``by`` (``energy`` | ``latency``)."""

    target_fps: float
    max_p99_ms: Optional[float] = None
    max_late: float = DEFAULT_MAX_LATE
    by: str = "energy"

    def check(self) -> None:
        if not (math.isfinite(self.target_fps) and self.target_fps > 0):
            raise ChoiceError(f"--target-fps must be a frame rate > 0, got {self.target_fps!r}")
        if self.max_p99_ms is not None and not (math.isfinite(self.max_p99_ms) and self.max_p99_ms > 0):
            raise ChoiceError(f"--max-p99-ms must be > 0 milliseconds, got {self.max_p99_ms!r}")
        if not (math.isfinite(self.max_late) and 0 <= self.max_late <= 1):
            raise ChoiceError(
                f"--max-late must be a share between 0 and 1 (0.01 = 1%), got {self.max_late!r}"
            )
        if self.by not in CHOOSE_BY:
            raise ChoiceError(f"--by must be one of {', '.join(CHOOSE_BY)}, got {self.by!r}")

    def to_dict(self) -> Dict[str, Any]:
        return {"target_fps": self.target_fps, "max_p99_ms": self.max_p99_ms, "max_late": self.max_late,
                "by": self.by}  # fmt: skip

    def describe(self) -> str:
        parts = [f"paced at {self.target_fps:g} fps", f"late+dropped <= {self.max_late:.1%}"]
        if self.max_p99_ms is not None:
            parts.append(f"p99 <= {self.max_p99_ms:g} ms")
        parts.append("least energy per frame" if self.by == "energy" else "lowest p99 latency")
        return ", ".join(parts)


@dataclass
class Candidate:
    """One record of the chosen board: ``failed`` lists the constraints it missed (kind, text); ``lost``
    says why a qualifying record was beaten; both empty for the winner."""

    record: Dict[str, Any]
    failed: List[Tuple[str, str]] = field(default_factory=list)
    lost: Optional[str] = None

    @property
    def label(self) -> str:
        return point_label(self.record)

    @property
    def qualified(self) -> bool:
        return not self.failed

    @property
    def reason(self) -> str:
        if self.failed:
            return "; ".join(text for _, text in self.failed)
        return self.lost or "chosen"


@dataclass
class Choice:
    """The outcome: the ``winner`` record, every candidate, the board identity compared and where it came from."""

    winner: Dict[str, Any]
    candidates: List[Candidate]
    constraints: Constraints
    identity: Dict[str, Any]
    identity_from: str
    ignored: int = 0
    sources: List[str] = field(default_factory=list)

    def operating_point(self) -> Dict[str, Any]:
        """The operating-point.json content: the winner's fields under their record names + the constraints."""
        out: Dict[str, Any] = {k: self.winner.get(k) for k in POINT_FIELDS}
        out["format"] = POINT_FORMAT
        out["format_version"] = OPERATING_POINT_FORMAT
        out["constraints"] = self.constraints.to_dict()
        out["chosen"] = {
            "identity_from": self.identity_from,
            "results": list(self.sources),
            "candidates": len(self.candidates),
            "qualified": sum(1 for c in self.candidates if c.qualified),
            "other_board_records_ignored": self.ignored,
            "chosen_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        return out


# ------------------------------------------------------------------------------------------- records


def load_records(paths: Sequence[str], warn: Optional[Callable[[str], None]] = None) -> List[Dict[str, Any]]:
    """Every record of the JSON-lines files, in file order. A corrupt line (an interrupted writer, a hand
    edit) is skipped with a warning through ``warn``; a missing or unreadable file is a :class:`ChoiceError`."""
    out: List[Dict[str, Any]] = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            raise ChoiceError(
                f"{path}: results file not found (nano-bench writes <out>/results.jsonl)"
            ) from None
        except (OSError, UnicodeDecodeError) as e:
            raise ChoiceError(f"{path}: cannot read the results file ({e})") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                if warn is not None:
                    warn(f"{path}:{n}: skipped a corrupt line ({e})")
                continue
            if not isinstance(rec, dict):
                if warn is not None:
                    warn(f"{path}:{n}: skipped a line that is not a JSON object")
                continue
            out.append(rec)
    return out


def identity_of(record: Mapping[str, Any]) -> Tuple[Any, ...]:
    """(board, l4t, nvpmodel_conf_sha256) of a record (None where absent, e.g. off a Jetson)."""
    return tuple(record.get(k) for k in IDENTITY_FIELDS)


def describe_identity(ident: Sequence[Any]) -> str:
    board, l4t, conf = ident
    return (f"board {board or '(not a Jetson)'}, L4T {l4t or '-'}, "
            f"nvpmodel conf {str(conf)[:12] if conf else '-'}")  # fmt: skip


def _timestamp(record: Mapping[str, Any]) -> datetime.datetime:
    """The record's timestamp (naive taken as UTC); the oldest possible time when absent or unparsable."""
    oldest = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)
    text = record.get("timestamp")
    if not isinstance(text, str):
        return oldest
    try:
        t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return oldest
    return t if t.tzinfo is not None else t.replace(tzinfo=datetime.timezone.utc)


def select_board(
    records: Sequence[Dict[str, Any]], current: Optional[Mapping[str, Any]] = None
) -> Tuple[Tuple[Any, ...], str, List[Dict[str, Any]]]:
    """(identity, where it came from, the records with it). ``current``: the running board's identity
    fields; None (off a Jetson) takes the most recent record's (latest timestamp, then file order)."""
    if not records:
        raise ChoiceError(
            "no result records to choose from: run a paced sweep first (nano-bench MODEL --pace FPS)"
        )
    if current is not None:
        ident = identity_of(current)
        source = f"the current board ({describe_identity(ident)})"
    else:
        latest = max(range(len(records)), key=lambda i: (_timestamp(records[i]), i))
        ident = identity_of(records[latest])
        when = records[latest].get("timestamp") or f"record {latest + 1}"
        source = f"the board of the most recent record ({when}: {describe_identity(ident)})"
    mine = [r for r in records if identity_of(r) == ident]
    if not mine:
        others = sorted({describe_identity(identity_of(r)) for r in records})
        raise ChoiceError(
            f"no records from {source}; the results hold: {'; '.join(others)}. Run the paced sweep on this "
            "board (nano-bench MODEL... --pace FPS) or choose off the board"
        )
    return ident, source, mine


# -------------------------------------------------------------------------------------------- choice


def _number(record: Mapping[str, Any], key: str) -> Optional[float]:
    return finite_number(record.get(key))


def _failures(record: Mapping[str, Any], c: Constraints) -> List[Tuple[str, str]]:
    """What ``record`` misses of ``c``, as (kind, text); kinds: pace, late, p99, energy."""
    pace = _number(record, "pace_fps")
    if pace is None:
        return [("pace", "unpaced (flat out): only runs paced at the target qualify")]
    if abs(pace - c.target_fps) > PACE_TOLERANCE * max(1.0, c.target_fps):
        return [("pace", f"paced at {pace:g} fps, not {c.target_fps:g}")]
    out: List[Tuple[str, str]] = []
    offered = _number(record, "frames_offered")
    late, dropped = _number(record, "frames_late"), _number(record, "frames_dropped")
    if not offered or late is None or dropped is None:
        out.append(("late", "no frames_offered/frames_late/frames_dropped in the record"))
    elif (late + dropped) / offered > c.max_late:
        share = (late + dropped) / offered
        out.append(
            ("late", f"late+dropped {int(late + dropped)}/{int(offered)} = {share:.1%} > {c.max_late:.1%}")
        )
    p99 = _number(record, "latency_ms_p99")
    if p99 is None:
        if c.max_p99_ms is not None or c.by == "latency":
            out.append(("p99", "no latency_ms_p99 in the record"))
    elif c.max_p99_ms is not None and p99 > c.max_p99_ms:
        out.append(("p99", f"p99 {p99:.1f} ms > {c.max_p99_ms:g} ms"))
    if c.by == "energy" and _number(record, "energy_j_per_frame") is None:
        out.append(("energy", "energy not measured"))
    return out


def _rank_key(record: Mapping[str, Any], by: str) -> Tuple[float, float]:
    inf = float("inf")
    e = _number(record, "energy_j_per_frame")
    p99 = _number(record, "latency_ms_p99")
    e_key = e if e is not None else inf
    p_key = p99 if p99 is not None else inf
    return (e_key, p_key) if by == "energy" else (p_key, e_key)


def _lost_reason(loser: Mapping[str, Any], winner: Mapping[str, Any], by: str) -> str:
    le, we = _number(loser, "energy_j_per_frame"), _number(winner, "energy_j_per_frame")
    lp, wp = _number(loser, "latency_ms_p99"), _number(winner, "latency_ms_p99")
    if by == "energy":
        if le is not None and we is not None and le != we:
            return f"{le:.4g} J/frame > the winner's {we:.4g}"
        return f"same J/frame, p99 {lp:.1f} ms >= the winner's {wp:.1f}" if lp is not None and wp is not None \
            else "same J/frame; listed after the winner"  # fmt: skip
    if lp is not None and wp is not None and lp != wp:
        return f"p99 {lp:.1f} ms > the winner's {wp:.1f}"
    return "same p99; listed after the winner"


def _what_to_run(c: Constraints, candidates: Sequence[Candidate]) -> str:
    """The next step for a choice where nothing qualified, from what the candidates failed."""
    kinds = {k for cand in candidates for k, _ in cand.failed}
    hints: List[str] = []
    if "energy" in kinds:
        why = next((str(cand.record["power_not_measured_reason"]) for cand in candidates
                    if cand.record.get("power_not_measured_reason")), "no power sensor was readable")  # fmt: skip
        if all(
            ("energy", "energy not measured") in cand.failed or cand.failed[0][0] == "pace"
            for cand in candidates
        ):
            hints.append(
                f"energy is not measured in these records ({why}): only speed and latency can decide here; "
                "choose on them with --by latency"
            )
        else:
            hints.append("some records have no energy measured: rerun those points where power is measured")
    if not any(all(k != "pace" for k, _ in cand.failed) for cand in candidates):
        hints.append(
            f"run a paced sweep at the target first: nano-bench MODEL... --pace {c.target_fps:g} "
            "[--power 15W,30W --batch 1,2 --jetson-clocks both]"
        )
    if "late" in kinds:
        hints.append(
            "to keep up, sweep faster points (a higher --power mode, --jetson-clocks, an FP16/INT8 engine, "
            "another --batch), or lower --target-fps or raise --max-late"
        )
    if "p99" in kinds:
        hints.append(
            "relax --max-p99-ms or sweep faster points (a higher --power mode, --jetson-clocks, INT8)"
        )
    return "; ".join(hints)


def choose(
    records: Sequence[Dict[str, Any]],
    constraints: Constraints,
    *,
    current: Optional[Mapping[str, Any]] = None,
    sources: Sequence[str] = (),
) -> Choice:
    """Choose among ``records`` (see the module doc). Raises :class:`ChoiceError` / :class:`NoOperatingPoint`."""
    constraints.check()
    ident, ident_from, mine = select_board(records, current)
    candidates = [Candidate(r, _failures(r, constraints)) for r in mine]
    qualified = [c for c in candidates if c.qualified]
    if not qualified:
        per = "; ".join(f"{cand.label}: {cand.reason}" for cand in candidates)
        raise NoOperatingPoint(
            f"no operating point of {ident_from} meets: {constraints.describe()}. {per}. "
            f"What to run: {_what_to_run(constraints, candidates)}",
            candidates,
        )
    ranked = sorted(qualified, key=lambda cand: _rank_key(cand.record, constraints.by))  # stable: file order
    winner = ranked[0]
    for cand in ranked[1:]:
        cand.lost = _lost_reason(cand.record, winner.record, constraints.by)
    return Choice(
        winner=winner.record,
        candidates=candidates,
        constraints=constraints,
        identity=dict(zip(IDENTITY_FIELDS, ident)),
        identity_from=ident_from,
        ignored=len(records) - len(mine),
        sources=list(sources),
    )


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_candidates(candidates: Sequence[Candidate], winner: Optional[Mapping[str, Any]] = None) -> str:
    """One line per candidate: label, pace, late share, p99, J/frame and the verdict."""
    rows = [["", "point", "pace", "late+drop", "p99 ms", "J/frame", "verdict"]]
    for cand in candidates:
        r = cand.record
        offered = _number(r, "frames_offered")
        share = None
        if offered:
            share = ((_number(r, "frames_late") or 0.0) + (_number(r, "frames_dropped") or 0.0)) / offered
        mark = "*" if winner is not None and cand.record is winner else ""
        rows.append([mark, cand.label, _fmt(_number(r, "pace_fps"), "g"), _fmt(share, ".1%"),
                     _fmt(_number(r, "latency_ms_p99"), ".1f"), _fmt(_number(r, "energy_j_per_frame"), ".4f"),
                     cand.reason])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows
    ).rstrip()


def format_choice(choice: Choice) -> str:
    """What ``--choose`` prints: the board compared, every candidate with its verdict, the winner."""
    lines = [f"choosing among the records of {choice.identity_from}"]
    if choice.ignored:
        lines.append(f"({choice.ignored} records of other boards or confs ignored)")
    lines.append(f"constraints: {choice.constraints.describe()}")
    lines.append(format_candidates(choice.candidates, choice.winner))
    w = choice.winner
    figure = (f"{_fmt(_number(w, 'energy_j_per_frame'), '.4f')} J/frame, " if choice.constraints.by == "energy"
              else "")  # fmt: skip
    lines.append(
        f"chosen: {point_label(w)} ({figure}p99 {_fmt(_number(w, 'latency_ms_p99'), '.1f')} ms, "
        f"{_fmt(_number(w, 'fps_e2e'), '.1f')} fps achieved)"
    )
    return "\n".join(lines)


def write_operating_point(choice: Choice, out_dir: str = "bench-results") -> str:
    """Write ``out_dir/operating-point.json`` atomically; returns its path."""
    path = os.path.join(out_dir, OPERATING_POINT_FILE)
    atomic_write_json(path, choice.operating_point())
    return path


__all__ = [
    "CHOOSE_BY",
    "DEFAULT_MAX_LATE",
    "IDENTITY_FIELDS",
    "OPERATING_POINT_FILE",
    "POINT_FIELDS",
    "Candidate",
    "Choice",
    "ChoiceError",
    "Constraints",
    "NoOperatingPoint",
    "choose",
    "format_candidates",
    "format_choice",
    "identity_of",
    "load_records",
    "select_board",
    "write_operating_point",
]
