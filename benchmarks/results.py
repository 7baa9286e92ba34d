"""Benchmark results: atomic JSON-lines append, CSV export and a terminal table.

``results.jsonl`` is rewritten whole into a temp file in the same folder and swapped in with
``os.replace``, under an exclusive lock where ``fcntl`` exists: a reader (or an interrupted writer)
only ever sees the old file or the old file plus one complete line.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence

from yolo_nano.core.fileio import atomic_write_text

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Columns of the CSV export and the terminal table, in order (other keys follow in the CSV).
CSV_COLUMNS = (
    "timestamp",
    "model",
    "backend",
    "batch",
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
    """Append one record as one JSON line to ``path``, atomically."""
    line = json.dumps(_clean(record), sort_keys=True, allow_nan=False)
    with _locked(path):
        try:
            with open(path, encoding="utf-8") as f:
                old = f.read()
        except FileNotFoundError:
            old = ""
        if old and not old.endswith("\n"):
            old += "\n"
        write_atomic(path, old + line + "\n")


def read_jsonl(path: str) -> List[Dict[str, Any]]:
    """All records of a JSON-lines file (blank lines skipped); ValueError names a bad line."""
    out: List[Dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError as e:
                raise ValueError(f"{path}:{n}: not a JSON line: {e}") from e
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
    """Write the CSV export of a results file (default: beside it, ``.csv``); returns its path."""
    csv_path = csv_path or os.path.splitext(jsonl_path)[0] + ".csv"
    write_atomic(csv_path, to_csv(read_jsonl(jsonl_path)))
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
    """A fixed-width comparison table of runs (one row each) for the terminal."""
    cols = [
        ("model", "model", 0),
        ("backend", "backend", 0),
        ("mode", "power_mode_name", 0),
        ("clk", "jetson_clocks", 0),
        ("batch", "batch", 0),
        ("FPS e2e", "fps_e2e", 1),
        ("FPS engine", "fps_engine", 1),
        ("p50 ms", "latency_ms_p50", 2),
        ("p99 ms", "latency_ms_p99", 2),
        ("power W", "power_w", 2),
        ("J/frame", "energy_j_per_frame", 3),
        ("img/s/W meas", "ips_per_w_measured", 2),
        ("img/s/W nominal", "ips_per_w_nominal", 2),
    ]
    rows = [[h for h, _, _ in cols]]
    for r in records:
        row = []
        for _, k, nd in cols:
            v = r.get(k)
            if k == "model" and isinstance(v, str):
                v = os.path.basename(v)
            row.append(_fmt(v, nd))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = [
        "  ".join(c.rjust(w) if i > 3 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
