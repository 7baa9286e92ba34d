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

Higher is better except for ``latency_*``, ``*_ms*``, ``power_w``, ``energy_*`` (override with
``"direction": "lower"|"higher"`` inside a threshold or ``baseline.directions``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from .results import read_jsonl


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


def load_gate(path: str) -> Dict[str, Any]:
    """Read and validate a gate file (a path, or the name of a shipped gate such as ``agx-xavier-15w``)."""
    if not os.path.exists(path) and path in shipped_gates():
        path = shipped_gates()[path]
    try:
        with open(path, encoding="utf-8") as f:
            gate = json.load(f)
    except OSError as e:
        names = ", ".join(shipped_gates()) or "none"
        raise GateError(f"cannot read gate file {path}: {e.strerror or e} (shipped gates: {names})") from e
    except ValueError as e:
        raise GateError(f"gate file {path} is not valid JSON: {e}") from e
    if not isinstance(gate, dict):
        raise GateError(f"gate file {path}: expected a JSON object")
    known = {"name", "description", "power", "require", "thresholds", "baseline", "notes"}
    unknown = set(gate) - known
    if unknown:
        raise GateError(f"gate file {path}: unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
    for metric, spec in gate.get("thresholds", {}).items():
        if not isinstance(spec, dict) or not ({"min", "max"} & set(spec)):
            raise GateError(f"gate file {path}: threshold {metric!r} needs {{'min': x}} and/or {{'max': x}}")
        for k in ("min", "max"):
            if k in spec and not isinstance(spec[k], (int, float)):
                raise GateError(f"gate file {path}: threshold {metric}.{k} must be a number")
    base = gate.get("baseline")
    if base is not None:
        if not isinstance(base, dict) or not ({"metrics", "file"} & set(base)):
            raise GateError(f"gate file {path}: baseline needs 'metrics' and/or 'file'")
        if "file" in base and not os.path.isabs(base["file"]):
            base["file"] = os.path.join(os.path.dirname(os.path.abspath(path)), base["file"])
    if not gate.get("thresholds") and base is None:
        raise GateError(f"gate file {path}: no 'thresholds' and no 'baseline': nothing to check")
    gate.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    return gate


def _num(v: Any) -> Optional[float]:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _run_label(rec: Dict[str, Any]) -> str:
    model = os.path.basename(str(rec.get("model", "?")))
    return f"{model} @ {rec.get('power_mode_name') or 'no-mode'} batch {rec.get('batch', '?')}"


def _baseline_record(path: str, rec: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    try:
        rows = read_jsonl(path)
    except OSError as e:
        raise GateError(f"cannot read baseline results {path}: {e.strerror or e}") from e
    key = ("power_mode_name", "batch", "backend")
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
                for m in base.get("compare", ["fps_e2e", "fps_engine", "latency_ms_p99"]):
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
