"""Atomic JSON-lines results (also under interruption), CSV export and the terminal table."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from yolo_nano.benchmarks import results
from yolo_nano.benchmarks.results import append_jsonl, export_csv, format_table, read_jsonl, to_csv

REC = {
    "model": "/m/yolo_nano.onnx",
    "backend": "onnxruntime-cpu",
    "batch": 1,
    "fps_e2e": 31.5,
    "fps_engine": 40.25,
    "latency_ms_p50": 30.0,
    "latency_ms_p99": 45.0,
    "power_w": None,
    "ips_per_w_measured": None,
    "ips_per_w_nominal": 2.1,
    "power_mode_id": 2,
    "power_mode_name": "MODE_15W",
    "jetson_clocks": True,
    "stage_ms": {"preprocess": 1.5},
}


def test_append_read_csv_table(tmp_path):
    p = str(tmp_path / "out" / "results.jsonl")
    append_jsonl(p, REC)
    append_jsonl(p, dict(REC, model="/m/tiny.onnx", fps_e2e=float("nan"), latency_ms_p50=12.5))
    rows = read_jsonl(p)
    assert len(rows) == 2 and rows[0] == REC
    assert rows[1]["fps_e2e"] is None  # NaN -> null: strict JSON
    with open(p) as f:
        assert all(json.loads(line) for line in f)
    csv_path = export_csv(p)
    assert csv_path.endswith("results.csv")
    with open(csv_path) as f:
        table = list(csv.DictReader(f))
    assert (
        table[0]["model"] == "/m/yolo_nano.onnx"
        and table[0]["power_w"] == ""
        and table[0]["fps_e2e"] == "31.5"
    )
    assert json.loads(table[0]["stage_ms"]) == {"preprocess": 1.5}
    text = format_table(rows)
    lines = text.splitlines()
    assert "img/s/W meas" in lines[0] and "img/s/W nominal" in lines[0]
    assert (
        "yolo_nano.onnx" in lines[2] and "MODE_15W" in lines[2] and "31.5" in lines[2] and "yes" in lines[2]
    )
    assert "tiny.onnx" in lines[3] and "12.50" in lines[3]


def test_to_csv_puts_known_columns_first():
    header = next(csv.reader(io.StringIO(to_csv([{"zzz": 1, "model": "m", "fps_e2e": 2.0}]))))
    assert header[:3] == ["timestamp", "model", "backend"] and header[-1] == "zzz"


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    p = str(tmp_path / "results.jsonl")
    append_jsonl(p, REC)
    before = Path(p).read_text()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        append_jsonl(p, dict(REC, model="other"))
    assert Path(p).read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["results.jsonl", "results.jsonl.lock"]


def test_killed_writer_never_leaves_a_partial_line(tmp_path):
    p = str(tmp_path / "results.jsonl")
    code = (
        "import sys\n"
        "from yolo_nano.benchmarks.results import append_jsonl\n"
        "big = 'x' * 20000\n"
        "i = 0\n"
        "while True:\n"
        "    append_jsonl(sys.argv[1], {'i': i, 'pad': big})\n"
        "    i += 1\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, p])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if os.path.exists(p) and os.path.getsize(p) > 20000 * 8:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    rows = read_jsonl(p)  # every line complete JSON
    assert len(rows) >= 8
    assert [r["i"] for r in rows] == list(range(len(rows)))
    assert Path(p).read_text().endswith("\n")


def test_bad_line_is_named(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"r.jsonl:2: not a JSON line"):
        read_jsonl(str(p))
