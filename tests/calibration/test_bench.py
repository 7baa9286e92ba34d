from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_bench_int8_runs_end_to_end_on_a_tiny_model(tmp_path, tiny_onnx_path):
    out = tmp_path / "res.json"
    r = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_int8.py"), "--onnx", tiny_onnx_path,
         "--calib", "8", "--eval", "8", "--repeat", "4", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    # An older onnxruntime (1.19, JetPack 5.1's Python 3.8) cannot write per-channel uint8 weights: u8u8
    # is then skipped with the reason, never silently mislabelled.
    skipped = res.get("skipped_variants", {})
    assert set(skipped) <= {"u8u8"} and all("onnxruntime" in why for why in skipped.values())
    int8 = {"int8-u8s8", "int8-u8s8-reduce-range", "int8-u8u8", "int8-tensorrt"} - {
        f"int8-{v}" for v in skipped
    }
    assert set(res["latency_ms"]) == {"fp32"} | int8
    assert all(v > 0 for v in res["latency_ms"].values())
    assert all(res["size_mb"][k] < res["size_mb"]["fp32"] for k in int8)
    assert res["calibration_images"] == 8 and res["eval_images"] == 8
    assert "skipped" in res["map_note"]  # the tiny model's classes are not the demo data's
    assert "INT8 (cpu target, " in r.stdout and "x faster than FP32" in r.stdout
