"""Fuzzing the files nano-bench reads back: gate files and results.jsonl (the CSV export, the table and
a gate's baseline read it). Property: a valid result or the module's named error (GateError; a corrupt
results line is skipped with a ResultsWarning, or a ValueError naming path:line where it must be
trusted), never another exception, never a hang (testsupport.fuzz); plus issue 11's cases as examples."""

from __future__ import annotations

import json
import os
import tempfile
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from testsupport.fuzz import fuzz, mutated_bytes, mutated_json, no_hang, tried
from yolo_nano.benchmarks.gates import GateError, evaluate, load_gate, shipped_gates
from yolo_nano.benchmarks.results import ResultsWarning, format_table, read_jsonl, to_csv

_DIR = tempfile.mkdtemp(prefix="fuzz-bench-")

REC = {
    "model": "/x/yolo_nano.engine",
    "backend": "tensorrt",
    "batch": 1,
    "fps_e2e": 30.0,
    "fps_engine": 60.0,
    "latency_ms_p99": 50.0,
    "power_w": 14.0,
    "ips_per_w_measured": 30.0 / 14.0,
    "ips_per_w_nominal": 2.0,
    "power_mode_name": "MODE_15W",
    "timestamp": "2026-12-01T00:00:00Z",
    "labels": {"run": "ci"},
}
BASELINE = os.path.join(_DIR, "base.jsonl")
with open(BASELINE, "w", encoding="utf-8") as _f:
    _f.write(json.dumps(REC) + "\n")

GATES = [json.load(open(p, encoding="utf-8")) for p in shipped_gates().values()]  # noqa: SIM115
GATES.append(
    {
        "thresholds": {"fps_e2e": {"min": 25, "optional": False}},
        "baseline": {
            "file": "base.jsonl",
            "tolerance": 0.1,
            "tolerances": {"fps_e2e": 0.2},
            "directions": {"fps_e2e": "higher"},
            "compare": ["fps_e2e", "latency_ms_p99"],
            "metrics": {"power_w": 14.0},
        },
        "require": {"backend": "tensorrt", "batch": [1, 2]},
    }
)


def _gate(**fields):  # noqa: ANN003
    g = json.loads(json.dumps(GATES[-1]))
    g.update(fields)
    return json.dumps(g)


# issue 11 item 10: each is a malformed gate (GateError before the board is touched)
GATE_CORPUS = [
    _gate(thresholds=[{"fps_e2e": {"min": 1}}]),
    _gate(require=["backend"]),
    _gate(baseline=dict(GATES[-1]["baseline"], tolerance="10%")),
    _gate(baseline=dict(GATES[-1]["baseline"], file="missing.jsonl")),
    _gate(baseline=dict(GATES[-1]["baseline"], file="corrupt.jsonl")),
    _gate(baseline=dict(GATES[-1]["baseline"], file=_DIR)),
    _gate(thresholds={"fps_e2e": {"min": float("nan")}}),
    _gate(thresholds={"fps_e2e": {"min": 5, "max": 1}}),
    _gate(thresholds={"fps": {"min": 5}}),
    _gate(thresholds={"fps_e2e": {"min": 10**400}}),
    _gate(baseline=dict(GATES[-1]["baseline"], tolerance=10**400)),
    "[" * 100_000 + "]" * 100_000,
    "",
    "\udcff",
]
with open(os.path.join(_DIR, "corrupt.jsonl"), "wb") as _f:
    _f.write(b'{"fps_e2e": 1}\n{"fps_e2e": \n\xff\xfe\n')


def _check_gate(text: str) -> None:
    tried("gate file")
    path = os.path.join(_DIR, "gate.json")
    with open(path, "wb") as f:
        f.write(text.encode("utf-8", "surrogateescape"))
    try:
        with no_hang():
            gate = load_gate(path)
    except GateError as e:
        assert "\n" not in str(e) and str(e).startswith(("gate file", "cannot read gate file"))
        return
    for rec in (REC, {}, {"fps_e2e": None, "model": 3}):
        with no_hang():
            checks = evaluate([rec], gate)
        assert all(isinstance(c.ok, bool) and isinstance(c.line(), str) for c in checks)


@pytest.mark.parametrize("text", GATE_CORPUS, ids=range(len(GATE_CORPUS)))
def test_gate_corpus(text):
    _check_gate(text)
    with pytest.raises(GateError):
        load_gate(os.path.join(_DIR, "gate.json"))


def test_shipped_gates_load():
    for text in map(json.dumps, GATES):
        _check_gate(text)
        load_gate(os.path.join(_DIR, "gate.json"))


@fuzz(300)
@given(text=mutated_json(GATES, max_ops=3))
def test_fuzz_gate_file(text):
    """load_gate: a gate that evaluates any record without raising, or GateError."""
    _check_gate(text)


# ------------------------------------------------------------------------------------ results.jsonl
RESULTS_CORPUS = [
    b'{"fps_e2e": 1e400}\n',
    b'{"fps_e2e": NaN, "model": Infinity}\n',
    b'{"labels": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
    b"[" * 100_000 + b"\n",
    b'{"batch": 1' + b"0" * 5000 + b"}\n",
    b"\xff\xfe{}\n",
    b"\x00\x00\x00\n",
    b'{"model": "a"}',  # no final newline
    b"[1, 2]\n",
    b"",
    b'{"fps_e2e": 1' + b"0" * 400 + b"}\n",  # an integer too large for a float
]


def _check_results(data: bytes) -> None:
    tried("results.jsonl")
    path = os.path.join(_DIR, "results.jsonl")
    with open(path, "wb") as f:
        f.write(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResultsWarning)
        with no_hang():
            records = read_jsonl(path, skip_bad=True)
    assert all(isinstance(r, dict) for r in records)
    try:
        with no_hang():
            strict = read_jsonl(path)
    except ValueError as e:
        assert str(e).startswith(path + ":")
    else:
        assert strict == records
    with no_hang():
        assert to_csv(records).count("\n") >= 1
        assert format_table(records)
        for gate in GATES[:-1]:  # the shipped gates, against every row read back
            evaluate(records, gate)


@pytest.mark.parametrize("data", RESULTS_CORPUS, ids=range(len(RESULTS_CORPUS)))
def test_results_corpus(data):
    _check_results(data)


@fuzz(300)
@given(
    data=st.lists(
        mutated_json([REC], max_ops=3).map(lambda t: t.encode("utf-8", "surrogateescape") + b"\n")
        | mutated_bytes([json.dumps(REC).encode() + b"\n"], max_ops=4),
        max_size=4,
    ).map(b"".join)
)
def test_fuzz_results_jsonl(data):
    """read_jsonl skips (or names) bad lines; what it returns exports to CSV, tabulates and gates."""
    _check_results(data)
