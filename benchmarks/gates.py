"""Performance gates: compare benchmark records to thresholds or a stored baseline.

Gate file (JSON)::

    {
      "name": "agx-xavier-15w",
      "description": "...",
      "power": "15W",                                  # what --power the gate is meant for (informative)
      "require": {"power_mode_name": "MODE_15W"},      # identity fields that must match exactly
      "thresholds": {                                  # absolute limits
        "fps_e2e": {"min": 24.0},
        "latency_ms_p99": {"max": 80.0},
        "power_w": {"max": 20.0, "optional": true}     # optional: a null (unmeasured) value passes
      },
      "baseline": {                                    # relative to a stored baseline
        "metrics": {"fps_engine": 150.0},              # inline values, and/or
        "file": "baseline.jsonl",                      # the last matching record of a results file
        "tolerance": 0.10,                             # allowed relative regression (default)
        "tolerances": {"fps_engine": 0.05}             # per metric
      }
    }

Higher is better except for ``latency_*``, ``*_ms*``, ``power_w``, ``energy_*`` (override per metric
with ``baseline.directions``: ``"lower"`` or ``"higher"``).

:func:`load_gate` checks the whole file before anything is measured: every key known, metrics that are
numeric record fields (:data:`~.results.NUMERIC_FIELDS`), ``require`` fields that records have, numbers
where numbers go, and a readable baseline file whose every line is a record. Anything else is a
:class:`GateError` naming the file and the key (``nano-bench`` exits 4: a broken gate is not a
regression).
"""

from __future__ import annotations

import difflib
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from .results import NUMERIC_FIELDS, RECORD_FIELDS, finite_number, read_jsonl


class GateError(ValueError):
    """The gate file is missing or malformed."""


@dataclass(frozen=True)
class Check:
    """One comparison: ``value`` against ``limit`` with ``op`` ('>=' or '<=')."""

    run: str
    metric: str
    op: str
    limit: Any
    value: Any
    ok: bool
    why: str

    def line(self) -> str:
        status = "PASS" if self.ok else "FAIL"
        return f"GATE {status} [{self.run}] {self.metric}: {self.why}"


def lower_is_better(metric: str) -> bool:
    m = metric.lower()
    return m.startswith("latency") or "_ms" in m or m.startswith("power_w") or m.startswith("energy")


#: Gate files shipped with the package (``benchmarks/gates/*.json``), usable by name: ``--gate agx-xavier-15w``.
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gates")


def shipped_gates() -> Dict[str, str]:
    """Name -> path of the shipped gate files."""
    try:
        names = sorted(f for f in os.listdir(SHIPPED_DIR) if f.endswith(".json"))
    except OSError:
        return {}
    return {os.path.splitext(f)[0]: os.path.join(SHIPPED_DIR, f) for f in names}


GATE_KEYS = ("name", "description", "power", "require", "thresholds", "baseline", "notes")
THRESHOLD_KEYS = ("min", "max", "optional")
BASELINE_KEYS = ("metrics", "file", "tolerance", "tolerances", "directions", "compare")
DEFAULT_COMPARE = ("fps_e2e", "fps_engine", "latency_ms_p99")


def load_gate(path: str) -> Dict[str, Any]:
    """Read and validate a gate file (a path, or the name of a shipped gate such as ``agx-xavier-15w``).

    Raises :class:`GateError` naming the file and what is wrong; a relative ``baseline.file`` is
    resolved against the gate's folder.
    """
    if not os.path.exists(path) and path in shipped_gates():
        path = shipped_gates()[path]
    try:
        with open(path, encoding="utf-8") as f:
            gate = json.loads(f.read(1 << 20))
    except OSError as e:
        names = ", ".join(shipped_gates()) or "none"
        raise GateError(f"cannot read gate file {path}: {e.strerror or e} (shipped gates: {names})") from e
    except (ValueError, RecursionError) as e:
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise GateError(f"gate file {path} is not valid JSON: {why}") from e
    _GateCheck(path).gate(gate)
    gate.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    return gate


def _is_number(v: Any) -> bool:
    """A finite JSON number (an integer too large for a float, e.g. 400 digits, is not one)."""
    return finite_number(v) is not None


class _GateCheck:
    """The validation of one gate file; every method raises :class:`GateError` on the first problem."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, what: str) -> GateError:
        return GateError(f"gate file {self.path}: {what}")

    def obj(self, v: Any, where: str, what: str) -> Dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(f"{where} must be a JSON object {what}, not {type(v).__name__} {_short(v)}")
        return v

    def keys(self, d: Dict[str, Any], allowed: Sequence[str], where: str) -> None:
        unknown = sorted(set(d) - set(allowed))
        if unknown:
            raise self.fail(f"unknown keys {unknown} in {where}; allowed: {sorted(allowed)}")

    def field(self, name: str, where: str, numeric: bool) -> None:
        known = NUMERIC_FIELDS if numeric else RECORD_FIELDS
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            kind = "numeric record field" if numeric else "record field"
            raise self.fail(f"{where}: {name!r} is not a {kind}; {hint}known: {', '.join(known)}")

    def number(self, v: Any, where: str, minimum: Optional[float] = None) -> None:
        if not _is_number(v) or (minimum is not None and v < minimum):
            bound = f" >= {minimum:g}" if minimum is not None else ""
            raise self.fail(f"{where} must be a finite number{bound}, not {_short(v)}")

    def gate(self, gate: Any) -> None:
        self.obj(gate, "the top level", "with 'thresholds' and/or 'baseline'")
        self.keys(gate, GATE_KEYS, "the top level")
        for k in ("name", "description", "power", "notes"):
            if k in gate and not isinstance(gate[k], str):
                raise self.fail(f"{k} must be a string, not {_short(gate[k])}")
        for name, want in self.obj(
            gate.get("require", {}), "require", "mapping a record field to a value"
        ).items():
            self.field(name, "require", numeric=False)
            scalar = (str, int, float, bool, type(None))
            if not isinstance(want, scalar) and not (
                isinstance(want, list) and all(isinstance(x, scalar) for x in want)
            ):
                raise self.fail(
                    f"require.{name} must be a string, number, true/false or null, not {_short(want)}"
                )
        thresholds = self.obj(
            gate.get("thresholds", {}), "thresholds", 'mapping a metric to {"min": x} and/or {"max": x}'
        )
        for metric, spec in thresholds.items():
            self.threshold(metric, spec)
        if "baseline" in gate:
            self.baseline(gate["baseline"])
        if not thresholds and "baseline" not in gate:
            raise self.fail("no 'thresholds' and no 'baseline': nothing to check")

    def threshold(self, metric: str, spec: Any) -> None:
        where = f"thresholds.{metric}"
        self.field(metric, "thresholds", numeric=True)
        self.obj(spec, where, 'like {"min": x} and/or {"max": x}')
        self.keys(spec, THRESHOLD_KEYS, where)
        if not {"min", "max"} & set(spec):
            raise self.fail(f"threshold {metric!r} needs {{'min': x}} and/or {{'max': x}}")
        for bound in ("min", "max"):
            if bound in spec:
                self.number(spec[bound], f"{where}.{bound}")
        if "min" in spec and "max" in spec and spec["min"] > spec["max"]:
            raise self.fail(f"{where}: min {spec['min']:g} is above max {spec['max']:g}: nothing can pass")
        if not isinstance(spec.get("optional", False), bool):
            raise self.fail(f"{where}.optional must be true or false, not {_short(spec['optional'])}")

    def baseline(self, base: Any) -> None:
        self.obj(base, "baseline", "with 'metrics' and/or 'file'")
        self.keys(base, BASELINE_KEYS, "baseline")
        if not {"metrics", "file"} & set(base):
            raise self.fail("baseline needs 'metrics' and/or 'file'")
        for metric, value in self.obj(
            base.get("metrics", {}), "baseline.metrics", "mapping a metric to a number"
        ).items():
            self.field(metric, "baseline.metrics", numeric=True)
            self.number(value, f"baseline.metrics.{metric}")
        if "tolerance" in base:
            self.number(base["tolerance"], "baseline.tolerance", minimum=0.0)
        for metric, tol in self.obj(
            base.get("tolerances", {}), "baseline.tolerances", "mapping a metric to a number"
        ).items():
            self.field(metric, "baseline.tolerances", numeric=True)
            self.number(tol, f"baseline.tolerances.{metric}", minimum=0.0)
        for metric, d in self.obj(
            base.get("directions", {}), "baseline.directions", 'mapping a metric to "lower" or "higher"'
        ).items():
            self.field(metric, "baseline.directions", numeric=True)
            if d not in ("lower", "higher"):
                raise self.fail(f'baseline.directions.{metric} must be "lower" or "higher", not {_short(d)}')
        compare = base.get("compare", list(DEFAULT_COMPARE))
        if not isinstance(compare, list) or not compare:
            raise self.fail(f"baseline.compare must be a non-empty list of metrics, not {_short(compare)}")
        for metric in compare:
            if not isinstance(metric, str):
                raise self.fail(f"baseline.compare: {_short(metric)} is not a metric name")
            self.field(metric, "baseline.compare", numeric=True)
        if "file" in base:
            self.baseline_file(base)

    def baseline_file(self, base: Dict[str, Any]) -> None:
        f = base["file"]
        if not isinstance(f, str) or not f:
            raise self.fail(f"baseline.file must be a path to a results.jsonl, not {_short(f)}")
        if not os.path.isabs(f):
            base["file"] = f = os.path.join(os.path.dirname(os.path.abspath(self.path)), f)
        try:
            rows = read_jsonl(f)
        except OSError as e:
            raise self.fail(f"cannot read baseline results {f}: {e.strerror or e}") from e
        except ValueError as e:
            raise self.fail(f"baseline results are corrupt: {e}") from e
        if not rows:
            raise self.fail(f"baseline results {f} hold no records")


def _short(v: Any) -> str:
    text = json.dumps(v) if isinstance(v, (str, int, float, bool, type(None), list, dict)) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _num(v: Any) -> Optional[float]:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer too large for a float
        return None
    return f if math.isfinite(f) else None


def _run_label(rec: Dict[str, Any]) -> str:
    model = os.path.basename(str(rec.get("model", "?")))
    label = f"{model} @ {rec.get('power_mode_name') or 'no-mode'} batch {rec.get('batch', '?')}"
    if rec.get("threads"):
        label += f" threads {rec['threads']}"
    if rec.get("pace_fps"):
        label += f" paced {_short(rec['pace_fps'])} fps"
    return label


def _baseline_record(path: str, rec: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    try:
        rows = read_jsonl(path)
    except OSError as e:
        raise GateError(f"cannot read baseline results {path}: {e.strerror or e}") from e
    except ValueError as e:  # changed since load_gate checked it
        raise GateError(f"baseline results are corrupt: {e}") from e
    # the same point: a paced run is compared with a run paced alike, never with a flat-out one
    key = ("power_mode_name", "batch", "backend", "threads", "pace_fps", "late_policy")
    model = os.path.basename(str(rec.get("model", "")))
    for row in reversed(rows):
        if os.path.basename(str(row.get("model", ""))) == model and all(
            row.get(k) == rec.get(k) for k in key
        ):
            return row
    return None


def check_record(rec: Dict[str, Any], gate: Dict[str, Any]) -> List[Check]:
    """All checks of one record against one gate."""
    run = _run_label(rec)
    out: List[Check] = []
    for field, want in gate.get("require", {}).items():
        got = rec.get(field)
        ok = got == want
        out.append(
            Check(run, field, "==", want, got, ok, f"{got!r} {'==' if ok else '!='} required {want!r}")
        )
    for metric, spec in gate.get("thresholds", {}).items():
        v = _num(rec.get(metric))
        for bound, op in (("min", ">="), ("max", "<=")):
            if bound not in spec:
                continue
            limit = float(spec[bound])
            if v is None:
                ok = bool(spec.get("optional", False))
                why = f"not measured (null); threshold {bound} {limit:g}" + (" is optional" if ok else "")
            else:
                ok = v >= limit if op == ">=" else v <= limit
                why = f"{v:.4g} {op if ok else ('<' if op == '>=' else '>')} {bound} {limit:g}"
            out.append(Check(run, metric, op, limit, v, ok, why))
    base = gate.get("baseline")
    if base:
        values: Dict[str, Any] = dict(base.get("metrics", {}))
        if "file" in base:
            row = _baseline_record(base["file"], rec)
            if row is None:
                out.append(
                    Check(
                        run,
                        "baseline",
                        "==",
                        base["file"],
                        None,
                        False,
                        f"no matching baseline record in {base['file']}",
                    )
                )
            else:
                for m in base.get("compare", DEFAULT_COMPARE):
                    values.setdefault(m, row.get(m))
        tol_default = float(base.get("tolerance", 0.10))
        directions = base.get("directions", {})
        for metric, ref in values.items():
            r = _num(ref)
            v = _num(rec.get(metric))
            tol = float(base.get("tolerances", {}).get(metric, tol_default))
            lower = directions.get(metric, "lower" if lower_is_better(metric) else "higher") == "lower"
            if r is None:
                continue
            limit = r * (1 + tol) if lower else r * (1 - tol)
            op = "<=" if lower else ">="
            if v is None:
                out.append(Check(run, metric, op, limit, None, False, f"not measured; baseline {r:.4g}"))
                continue
            ok = v <= limit if lower else v >= limit
            why = (
                f"{v:.4g} {op if ok else ('>' if lower else '<')} {limit:.4g} "
                f"(baseline {r:.4g} {'+' if lower else '-'}{tol * 100:g}%)"
            )
            out.append(Check(run, metric, op, limit, v, ok, why))
    return out


def evaluate(records: Sequence[Dict[str, Any]], gate: Dict[str, Any]) -> List[Check]:
    """Checks of every record; a regression is any check with ``ok`` False."""
    checks: List[Check] = []
    for rec in records:
        checks.extend(check_record(rec, gate))
    return checks
