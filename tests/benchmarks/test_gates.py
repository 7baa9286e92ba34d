"""Perf gates: thresholds, baselines with tolerances, identity requirements, and the shipped gate files."""

from __future__ import annotations

import glob
import json
import os

import pytest

import yolo_nano.benchmarks as pkg
from yolo_nano.benchmarks.gates import GateError, check_record, evaluate, load_gate
from yolo_nano.benchmarks.results import append_jsonl

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
}


def write(tmp_path, gate, name="g.json"):
    p = tmp_path / name
    p.write_text(json.dumps(gate))
    return str(p)


def test_thresholds_pass_and_fail_name_metric_threshold_value(tmp_path):
    gate = load_gate(write(tmp_path, {"thresholds": {"fps_e2e": {"min": 25}, "latency_ms_p99": {"max": 40}}}))
    checks = check_record(REC, gate)
    assert [c.ok for c in checks] == [True, False]
    line = checks[1].line()
    assert line.startswith("GATE FAIL") and "latency_ms_p99" in line and "50 > max 40" in line
    assert "yolo_nano.engine @ MODE_15W" in line
    assert "30 >= min 25" in checks[0].line()


def test_unmeasured_metric_fails_unless_optional(tmp_path):
    rec = dict(REC, power_w=None)
    g1 = load_gate(write(tmp_path, {"thresholds": {"power_w": {"max": 20}}}))
    g2 = load_gate(write(tmp_path, {"thresholds": {"power_w": {"max": 20, "optional": True}}}, "g2.json"))
    (c1,) = check_record(rec, g1)
    (c2,) = check_record(rec, g2)
    assert not c1.ok and "not measured" in c1.why
    assert c2.ok and "optional" in c2.why


def test_baseline_tolerance_directions(tmp_path):
    gate = load_gate(
        write(
            tmp_path,
            {
                "baseline": {
                    "metrics": {"fps_e2e": 32.0, "latency_ms_p99": 40.0},
                    "tolerance": 0.1,
                    "tolerances": {"latency_ms_p99": 0.5},
                }
            },
        )
    )
    fps, lat = check_record(REC, gate)
    assert fps.ok and fps.limit == pytest.approx(28.8)  # 30 >= 32 * 0.9
    assert lat.ok and lat.limit == pytest.approx(60.0)  # lower is better: 50 <= 40 * 1.5
    fps2, _ = check_record(dict(REC, fps_e2e=28.0), gate)
    assert not fps2.ok and "baseline 32 -10%" in fps2.why


def test_baseline_from_results_file_and_require(tmp_path):
    base = str(tmp_path / "baseline.jsonl")
    append_jsonl(base, dict(REC, fps_e2e=40.0, fps_engine=61.0, latency_ms_p99=48.0))
    append_jsonl(base, dict(REC, power_mode_name="MODE_30W_ALL", fps_e2e=99.0))
    gate = load_gate(
        write(
            tmp_path,
            {"require": {"backend": "tensorrt"}, "baseline": {"file": "baseline.jsonl", "tolerance": 0.05}},
        )
    )
    checks = {c.metric: c for c in check_record(REC, gate)}
    assert checks["backend"].ok
    assert not checks["fps_e2e"].ok and "40" in checks["fps_e2e"].why  # 30 < 38: the 15 W baseline, not 30 W
    assert checks["fps_engine"].ok and checks["latency_ms_p99"].ok
    other = check_record(dict(REC, backend="onnxruntime-cpu"), gate)
    assert not [c for c in other if c.metric == "backend"][0].ok
    assert not [c for c in other if c.metric == "baseline"][0].ok  # no matching record for that backend


@pytest.mark.parametrize(
    "gate, msg",
    [
        ({}, "nothing to check"),
        ([], "the top level must be a JSON object"),
        ({"thresholds": {"fps_e2e": 3}}, "thresholds.fps_e2e must be a JSON object"),
        ({"thresholds": [{"fps_e2e": {"min": 1}}]}, "thresholds must be a JSON object .* not list"),
        (
            {"thresholds": {"fps_e2e": {"min": "fast"}}},
            'thresholds.fps_e2e.min must be a finite number, not "fast"',
        ),
        ({"thresholds": {"fps_e2e": {"min": True}}}, "min must be a finite number, not true"),
        ({"thresholds": {"fps_e2e": {"max": 1, "min": 2}}}, "min 2 is above max 1"),
        ({"thresholds": {"fps_e2e": {"min": 1, "optional": "yes"}}}, "optional must be true or false"),
        ({"thresholds": {"fps_e2e": {"minimum": 1}}}, r"unknown keys \['minimum'\] in thresholds.fps_e2e"),
        (
            {"thresholds": {"fps_e2ee": {"min": 1}}},
            "'fps_e2ee' is not a numeric record field; did you mean 'fps_e2e'",
        ),
        ({"thresholds": {"backend": {"min": 1}}}, "'backend' is not a numeric record field"),
        ({"thresholds": {}, "bogus": 1}, "unknown keys"),
        ({"name": 5, "thresholds": {"fps_e2e": {"min": 1}}}, "name must be a string"),
        ({"require": ["backend"], "thresholds": {"fps_e2e": {"min": 1}}}, "require must be a JSON object"),
        (
            {"require": {"backnd": "tensorrt"}, "thresholds": {"fps_e2e": {"min": 1}}},
            "did you mean 'backend'",
        ),
        (
            {"require": {"backend": {"x": 1}}, "thresholds": {"fps_e2e": {"min": 1}}},
            "require.backend must be",
        ),
        ({"baseline": {"tolerance": 0.1}}, "baseline needs"),
        ({"baseline": [1]}, "baseline must be a JSON object"),
        (
            {"baseline": {"metrics": {"fps_e2e": 30}, "tolerance": "10%"}},
            'baseline.tolerance must be a finite number >= 0, not "10%"',
        ),
        (
            {"baseline": {"metrics": {"fps_e2e": 30}, "tolerance": -0.1}},
            "baseline.tolerance must be a finite number >= 0",
        ),
        ({"baseline": {"metrics": {"fps_e2e": "30"}}}, "baseline.metrics.fps_e2e must be a finite number"),
        (
            {"baseline": {"metrics": {"fps_e2e": 30}, "tolerances": {"fps_e2e": None}}},
            "tolerances.fps_e2e must be",
        ),
        (
            {"baseline": {"metrics": {"fps_e2e": 30}, "directions": {"fps_e2e": "up"}}},
            'must be "lower" or "higher"',
        ),
        (
            {"baseline": {"metrics": {"fps_e2e": 30}, "compare": "fps_e2e"}},
            "compare must be a non-empty list",
        ),
        ({"baseline": {"file": "missing.jsonl"}}, "cannot read baseline results .*missing.jsonl"),
        ({"baseline": {"file": 3}}, "baseline.file must be a path"),
    ],
)
def test_malformed_gates(tmp_path, gate, msg):
    with pytest.raises(GateError, match=msg):
        load_gate(write(tmp_path, gate))


@pytest.mark.parametrize(
    "text, msg",
    [
        ('{"fps_e2e": 1}\n{oops\n', r"baseline results are corrupt: .*base.jsonl:2: not a JSON line"),
        ("[1, 2]\n", "base.jsonl:1: not a JSON line: a JSON list, not an object"),
        ("", "hold no records"),
        ("\xff\xfe\n", "base.jsonl:1: not a JSON line"),
    ],
)
def test_corrupt_baseline_file_is_a_gate_error(tmp_path, text, msg):
    (tmp_path / "base.jsonl").write_bytes(text.encode("latin-1"))
    with pytest.raises(GateError, match=msg):
        load_gate(write(tmp_path, {"baseline": {"file": "base.jsonl"}}))


def test_deeply_nested_gate_is_a_gate_error(tmp_path):
    p = tmp_path / "deep.json"
    p.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(GateError, match="not valid JSON"):
        load_gate(str(p))


def test_not_json_or_missing(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{")
    with pytest.raises(GateError, match="not valid JSON"):
        load_gate(str(p))
    with pytest.raises(GateError, match="cannot read"):
        load_gate(str(tmp_path / "none.json"))


def test_shipped_agx_xavier_gates():
    folder = os.path.join(os.path.dirname(pkg.__file__), "gates")
    files = sorted(glob.glob(os.path.join(folder, "*.json")))
    assert [os.path.basename(f) for f in files] == ["agx-xavier-15w.json", "agx-xavier-30w.json"]
    g15, g30 = (load_gate(f) for f in files)
    assert (
        g15["require"]["power_mode_name"] == "MODE_15W"
        and g30["require"]["power_mode_name"] == "MODE_30W_ALL"
    )
    # the paper's numbers (26.9 FPS at 15 W, 48.2 at 30 W) pass their gate; a CPU run fails it
    paper15 = dict(
        REC, fps_e2e=26.9, fps_engine=26.9, ips_per_w_nominal=26.9 / 15, ips_per_w_measured=26.9 / 15
    )
    assert all(c.ok for c in evaluate([paper15], g15))
    assert load_gate("agx-xavier-15w") == g15  # a shipped gate by name
    paper30 = dict(paper15, power_mode_name="MODE_30W_ALL", fps_e2e=48.2, fps_engine=48.2, latency_ms_p99=25.0,
                   power_w=30.0, ips_per_w_nominal=48.2 / 30, ips_per_w_measured=48.2 / 30)  # fmt: skip
    assert all(c.ok for c in evaluate([paper30], g30))
    cpu = dict(REC, backend="onnxruntime-cpu", fps_e2e=5.0, power_w=None, power_mode_name=None)
    failed = {c.metric for c in evaluate([cpu], g15) if not c.ok}
    assert {"backend", "power_mode_name", "fps_e2e", "power_w"} <= failed
