"""Benchmark results: the record's fields, atomic JSON-lines append, CSV export and a terminal table.

``results.jsonl`` is rewritten whole into a temp file in the same folder and swapped in with
``os.replace``, under an exclusive lock where ``fcntl`` exists: a reader (or an interrupted writer)
only ever sees the old file or the old file plus one complete line. A line that is not a JSON object
(edited by hand, a disk error) is skipped with one warning where the whole file is read back (the CSV
export), and named as an error where it must be trusted (a gate's baseline).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence

from yolo_nano.core.fileio import atomic_write_bytes, atomic_write_text

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Columns of the CSV export and the terminal table, in order (other keys follow in the CSV).
CSV_COLUMNS = (
    "timestamp",
    "model",
    "backend",
    "precision",
    "threads",
    "batch",
    "pace_fps",
    "late_policy",
    "frames_offered",
    "frames_done",
    "frames_late",
    "frames_dropped",
    "source",
    "power_mode_id",
    "power_mode_name",
    "jetson_clocks",
    "fps_e2e",
    "fps_engine",
    "latency_ms_p50",
    "latency_ms_p90",
    "latency_ms_p99",
    "power_w",
    "power_source",
    "energy_j_per_frame",
    "ips_per_w_measured",
    "ips_per_w_nominal",
    "nominal_budget_w",
    "throttled",
    "board",
    "git_revision",
)


#: Numeric fields of a result record: what a perf gate may bound (``thresholds``) or compare with a
#: baseline. A new numeric field in the record must be added here to be gateable.
NUMERIC_FIELDS = (
    "batch",
    "threads",
    "power_mode_id",
    "pace_fps",
    "frames_offered",
    "frames_done",
    "frames_late",
    "frames_dropped",
    "late_share",
    "paced_calls",
    "frames_e2e",
    "frames_engine",
    "window_s_e2e",
    "window_s_engine",
    "fps_e2e",
    "fps_engine",
    "latency_ms_p50",
    "latency_ms_p90",
    "latency_ms_p99",
    "latency_ms_mean",
    "latency_engine_ms_p50",
    "latency_engine_ms_p90",
    "latency_engine_ms_p99",
    "power_w",
    "power_w_engine",
    "energy_j",
    "energy_j_per_frame",
    "ips_per_w_measured",
    "ips_per_w_measured_engine",
    "nominal_budget_w",
    "ips_per_w_nominal",
    "ips_per_w_nominal_engine",
    "power_samples",
    "power_window_s",
    "warmup_s",
    "duration_s",
)

#: Every top-level field of a result record (a gate's ``require`` may name any of them).
RECORD_FIELDS = tuple(
    sorted(
        set(CSV_COLUMNS)
        | set(NUMERIC_FIELDS)
        | {
            "model_name", "model_sha256", "engine", "cpu", "l4t", "tensorrt", "onnxruntime", "python",
            "machine", "nvpmodel_conf", "nvpmodel_conf_sha256", "power_not_measured_reason", "arch",
            "input_size", "stage_ms", "power_scope", "power_rails_w", "labels", "clocks", "late_policy",
            "precision",
        }
    )
)  # fmt: skip


class ResultsWarning(UserWarning):
    """A line of a results file was skipped (not a JSON object)."""


def finite_number(v: Any) -> Optional[float]:
    """``v`` as a float when it is a finite JSON number (not a bool, not NaN/inf, not an integer too
    large for a float); else None. How every reader of records takes a numeric field."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def write_atomic(path: str, data: str) -> None:
    """Write text to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``)."""
    atomic_write_text(path, data)


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    with open(path + ".lock", "a") as lf:
        fcntl.flock(lf.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lf.fileno(), fcntl.LOCK_UN)


def _clean(v: Any) -> Any:
    """JSON-safe value: NaN/inf become null (strict JSON), numpy scalars become Python numbers."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item") and callable(v.item) and not isinstance(v, (str, bytes)):
        with contextlib.suppress(TypeError, ValueError):
            v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def append_jsonl(path: str, record: Dict[str, Any]) -> None:
    """Append one record as one JSON line to ``path``, atomically. Existing lines are kept byte for
    byte, corrupt ones included (the readers skip or name them)."""
    line = json.dumps(_clean(record), sort_keys=True, allow_nan=False).encode("utf-8")
    with _locked(path):
        try:
            with open(path, "rb") as f:
                old = f.read()
        except FileNotFoundError:
            old = b""
        if old and not old.endswith(b"\n"):
            old += b"\n"
        atomic_write_bytes(path, old + line + b"\n")


def read_jsonl(path: str, skip_bad: bool = False) -> List[Dict[str, Any]]:
    """All records (JSON objects) of a JSON-lines file, blank lines skipped.

    A line that is not a JSON object raises ValueError naming ``path:line``, or with ``skip_bad`` is
    skipped with one :class:`ResultsWarning` each. OSError when the file cannot be read.
    """
    out: List[Dict[str, Any]] = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
                if not isinstance(rec, dict):
                    raise ValueError(f"a JSON {type(rec).__name__}, not an object")
            except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
                why = "nested too deeply" if isinstance(e, RecursionError) else str(e)[:200]
                msg = f"{path}:{n}: not a JSON line: {why}"
                if not skip_bad:
                    raise ValueError(msg) from e
                warnings.warn(f"{msg}; line skipped", ResultsWarning, stacklevel=2)
                continue
            out.append(rec)
    return out


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


def to_csv(records: Sequence[Dict[str, Any]]) -> str:
    """CSV text: :data:`CSV_COLUMNS` first, then every other top-level key, sorted."""
    extra = sorted({k for r in records for k in r} - set(CSV_COLUMNS))
    cols = list(CSV_COLUMNS) + extra
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in records:
        w.writerow([_cell(r.get(c)) for c in cols])
    return buf.getvalue()


def export_csv(jsonl_path: str, csv_path: Optional[str] = None) -> str:
    """Write the CSV export of a results file (default: beside it, ``.csv``); returns its path.
    Corrupt lines are left out, one :class:`ResultsWarning` each."""
    csv_path = csv_path or os.path.splitext(jsonl_path)[0] + ".csv"
    write_atomic(csv_path, to_csv(read_jsonl(jsonl_path, skip_bad=True)))
    return csv_path


def _fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def format_table(records: Sequence[Dict[str, Any]]) -> str:
    """A fixed-width comparison table of runs (one row each) for the terminal. Precision shows when the
    records differ in it, threads when set; the pace and the late + dropped share when a record is paced."""
    cols = [("model", "model", 0), ("backend", "backend", 0)]
    if len({r.get("precision") for r in records}) > 1:
        cols.append(("precision", "precision", 0))
    if any(r.get("threads") for r in records):
        cols.append(("threads", "threads", 0))
    cols += [("mode", "power_mode_name", 0), ("clk", "jetson_clocks", 0), ("batch", "batch", 0)]
    if any(r.get("pace_fps") is not None for r in records):
        cols += [("pace", "pace_fps", 1), ("late+drop %", "late_share", -1)]
    cols += [
        ("FPS e2e", "fps_e2e", 1),
        ("FPS engine", "fps_engine", 1),
        ("p50 ms", "latency_ms_p50", 2),
        ("p99 ms", "latency_ms_p99", 2),
        ("power W", "power_w", 2),
        ("J/frame", "energy_j_per_frame", 3),
        ("img/s/W meas", "ips_per_w_measured", 2),
        ("img/s/W nominal", "ips_per_w_nominal", 2),
    ]
    left = {"model", "backend", "precision", "threads", "power_mode_name", "jetson_clocks"}
    rows = [[h for h, _, _ in cols]]
    for r in records:
        row = []
        for _, k, nd in cols:
            v = r.get(k)
            if k == "model" and isinstance(v, str):
                v = os.path.basename(v)
            if nd < 0:  # a share shown in percent
                v, nd = (v * 100.0 if isinstance(v, (int, float)) else None), 1
            row.append(_fmt(v, nd))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = [
        "  ".join(
            c.ljust(w) if cols[i][1] in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
