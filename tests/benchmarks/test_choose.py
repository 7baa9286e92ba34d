"""--choose on hand-written result files: paced energy decides, not flat-out FPS/W; bounds, boards, null power."""

from __future__ import annotations

import json
import os

import pytest

from yolo_nano.benchmarks.choose import (
    POINT_FIELDS,
    ChoiceError,
    Constraints,
    NoOperatingPoint,
    choose,
    format_choice,
    load_records,
    write_operating_point,
)
from yolo_nano.core.cli import EXIT_BAD_INPUT

XAVIER = {"board": "Jetson-AGX", "l4t": "R35.2.1", "nvpmodel_conf_sha256": "a1" * 32}
MODE_IDS = {"MAXN": 0, "MODE_10W": 1, "MODE_15W": 2, "MODE_30W_ALL": 3}


def rec(mode, *, pace=30.0, energy=None, p99=20.0, late=0, dropped=0, offered=300, clocks=False,
        fps=None, ips_per_w=None, ts="2024-05-01T10:00:00+00:00", board=XAVIER, **extra):  # fmt: skip
    """One nano-bench result record; ``pace`` None is a flat-out run (no frame counts)."""
    r = dict(board)
    r.update(
        timestamp=ts, model="/models/nano-fp16.engine", model_name="nano-fp16.engine", model_sha256="f" * 64,
        backend="tensorrt", batch=1, power_mode_id=MODE_IDS.get(mode), power_mode_name=mode,
        jetson_clocks=clocks, latency_ms_p50=p99 / 2, latency_ms_p99=p99, energy_j_per_frame=energy,
        power_w=None if energy is None else energy * (fps or pace or 30.0), ips_per_w_measured=ips_per_w,
        pace_fps=pace, fps_e2e=fps if fps is not None else pace,
    )  # fmt: skip
    if pace is not None:
        done = offered - dropped
        r.update(late_policy="drop", frames_offered=offered, frames_done=done, frames_late=late,
                 frames_dropped=dropped)  # fmt: skip
    r.update(extra)
    return r


def write_results(path, records, corrupt_at=()):
    lines = [json.dumps(r, sort_keys=True) for r in records]
    for i in corrupt_at:
        lines.insert(i, '{"timestamp": "2024-05-01T10:00:00+00:00", "model": "/models/nan')  # a torn line
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def sweep_records():
    """Flat out, MAXN has the best FPS/W; at a 30 Hz camera MODE_15W draws the fewest joules per frame
    (MAXN idles at 9 W between frames); MODE_10W cannot keep up."""
    return [
        rec("MAXN", pace=None, fps=100.0, energy=0.31, ips_per_w=3.23, p99=11.0),
        rec("MODE_15W", pace=None, fps=40.0, energy=0.35, ips_per_w=2.86, p99=26.0),
        rec("MAXN", energy=0.520, p99=12.0),
        rec("MAXN", energy=0.629, p99=11.0, clocks=True),
        rec("MODE_30W_ALL", energy=0.438, p99=16.0),
        rec("MODE_15W", energy=0.383, p99=27.5),
        rec("MODE_10W", energy=0.300, p99=47.0, late=150, dropped=150),
    ]


def by_mode(candidates, mode, clocks=False, paced=True):
    return next(
        c for c in candidates
        if c.record["power_mode_name"] == mode and c.record["jetson_clocks"] == clocks
        and (c.record["pace_fps"] is not None) == paced
    )  # fmt: skip


def test_the_flat_out_winner_is_not_the_paced_winner(tmp_path):
    path = write_results(tmp_path / "results.jsonl", sweep_records())
    records = load_records([path])
    flat_best = max((r for r in records if r["pace_fps"] is None), key=lambda r: r["ips_per_w_measured"])
    assert flat_best["power_mode_name"] == "MAXN"

    choice = choose(records, Constraints(target_fps=30.0, max_p99_ms=50.0), sources=[path])
    assert choice.winner["power_mode_name"] == "MODE_15W" and choice.winner["pace_fps"] == 30.0
    cands = choice.candidates
    assert len(cands) == len(records) and choice.ignored == 0
    assert "unpaced" in by_mode(cands, "MAXN", paced=False).reason
    assert by_mode(cands, "MAXN").reason == "0.52 J/frame > the winner's 0.383"
    assert "late+dropped 300/300 = 100.0% > 1.0%" in by_mode(cands, "MODE_10W").reason
    assert by_mode(cands, "MODE_15W").reason == "chosen"
    assert "most recent record" in choice.identity_from

    out = write_operating_point(choice, str(tmp_path / "out"))
    assert out == str(tmp_path / "out" / "operating-point.json")
    with open(out) as f:
        op = json.load(f)
    for k in POINT_FIELDS:  # the winner's identity and figures under the record field names
        assert op[k] == choice.winner.get(k), k
    assert (
        op["power_mode_id"] == 2
        and op["energy_j_per_frame"] == 0.383
        and op["nvpmodel_conf_sha256"] == "a1" * 32
    )
    assert op["constraints"] == {"target_fps": 30.0, "max_p99_ms": 50.0, "max_late": 0.01, "by": "energy"}
    assert op["chosen"]["results"] == [path] and op["chosen"]["qualified"] == 4
    assert [n for n in os.listdir(tmp_path / "out") if n != "operating-point.json"] == []  # no temp file left

    text = format_choice(choice)
    for c in cands:
        assert c.label in text and c.reason in text
    assert "chosen: nano-fp16 MODE_15W b1 @30fps (0.3830 J/frame" in text


def test_the_cheapest_point_misses_the_p99_bound():
    choice = choose(sweep_records(), Constraints(target_fps=30.0, max_p99_ms=25.0))
    assert choice.winner["power_mode_name"] == "MODE_30W_ALL"
    assert by_mode(choice.candidates, "MODE_15W").reason == "p99 27.5 ms > 25 ms"
    assert "p99 47.0 ms > 25 ms" in by_mode(choice.candidates, "MODE_10W").reason  # both failures named
    assert "late+dropped" in by_mode(choice.candidates, "MODE_10W").reason


def test_max_late_admits_a_point_that_drops_a_few_frames():
    recs = [rec("MODE_15W", energy=0.383, late=3, dropped=3), rec("MODE_30W_ALL", energy=0.438)]
    assert choose(recs, Constraints(30.0)).winner["power_mode_name"] == "MODE_30W_ALL"  # 2% > 1%
    assert choose(recs, Constraints(30.0, max_late=0.02)).winner["power_mode_name"] == "MODE_15W"


def test_ties_go_to_the_lower_p99():
    recs = [rec("MODE_15W", energy=0.4, p99=30.0), rec("MODE_30W_ALL", energy=0.4, p99=18.0)]
    choice = choose(recs, Constraints(30.0))
    assert choice.winner["power_mode_name"] == "MODE_30W_ALL"
    assert by_mode(choice.candidates, "MODE_15W").reason == "same J/frame, p99 30.0 ms >= the winner's 18.0"


def test_only_the_exact_target_pace_qualifies():
    recs = [rec("MAXN", pace=60.0, energy=0.2), rec("MODE_15W", pace=None, fps=40.0, energy=0.1),
            rec("MODE_30W_ALL", energy=0.44)]  # fmt: skip
    choice = choose(recs, Constraints(30.0))
    assert choice.winner["power_mode_name"] == "MODE_30W_ALL"
    assert by_mode(choice.candidates, "MAXN").reason == "paced at 60 fps, not 30"


HOST = {"board": None, "l4t": None, "nvpmodel_conf_sha256": None}
NO_POWER = (
    "power not measured: no INA3221 rails; jtop (jetson-stats) is not installed; no readable RAPL counters"
)


def host_records():
    return [
        rec(None, board=HOST, p99=41.0, model_name="nano.onnx", precision="fp32", threads=1,
            power_not_measured_reason=NO_POWER),
        rec(None, board=HOST, p99=23.0, model_name="nano.int8.onnx", precision="int8-qdq", threads=2,
            power_not_measured_reason=NO_POWER),
        rec(None, board=HOST, p99=19.0, model_name="nano.int8.onnx", precision="int8-qdq", threads=1,
            late=40, power_not_measured_reason=NO_POWER),
    ]  # fmt: skip


def test_power_null_everywhere_can_only_choose_by_latency():
    with pytest.raises(NoOperatingPoint) as e:
        choose(host_records(), Constraints(30.0))
    msg = str(e.value)
    assert e.value.code == EXIT_BAD_INPUT
    assert "energy not measured" in msg and "--by latency" in msg and "no readable RAPL counters" in msg
    assert all(("energy", "energy not measured") in c.failed for c in e.value.candidates)

    choice = choose(host_records(), Constraints(30.0, max_p99_ms=40.0, by="latency"))
    assert (
        choice.winner["precision"] == "int8-qdq" and choice.winner["threads"] == 2
    )  # 19 ms one drops frames
    reasons = {c.record["latency_ms_p99"]: c.reason for c in choice.candidates}
    assert reasons[41.0] == "p99 41.0 ms > 40 ms" and "late+dropped 40/300" in reasons[19.0]
    assert "J/frame" not in format_choice(choice).split("chosen:")[1]


def test_records_of_another_board_or_conf_are_not_compared(tmp_path):
    other_conf = dict(XAVIER, nvpmodel_conf_sha256="b2" * 32)
    orin = {"board": "Jetson-AGX-Orin", "l4t": "R35.4.1", "nvpmodel_conf_sha256": "c3" * 32}
    recs = [
        rec("MODE_15W", energy=0.383, ts="2024-05-01T10:00:00+00:00"),
        rec("MODE_30W_ALL", energy=0.438, ts="2024-05-01T10:05:00+00:00"),
        rec("MODE_15W", energy=0.100, ts="2024-05-02T09:00:00+00:00", board=other_conf),  # edited conf
        rec("MODE_15W", energy=0.050, ts="2024-04-01T09:00:00+00:00", board=orin),
    ]
    # no current board given (off the Jetson): the most recent record's board and conf
    choice = choose(recs, Constraints(30.0))
    assert choice.identity["nvpmodel_conf_sha256"] == "b2" * 32 and choice.ignored == 3
    assert choice.winner["energy_j_per_frame"] == 0.100 and "2024-05-02T09:00:00" in choice.identity_from
    # on the Xavier with the original conf: only its own two records, never Orin's cheaper one
    choice = choose(recs, Constraints(30.0), current=XAVIER)
    assert choice.winner["energy_j_per_frame"] == 0.383 and len(choice.candidates) == 2
    assert "current board" in choice.identity_from and choice.ignored == 2
    assert "(2 records of other boards or confs ignored)" in format_choice(choice)
    with pytest.raises(ChoiceError, match="no records from the current board.*Jetson-AGX-Orin"):
        choose(
            recs,
            Constraints(30.0),
            current={"board": "Jetson-Orin-Nano", "l4t": "R36.2", "nvpmodel_conf_sha256": "d"},
        )


def test_nothing_qualifies_names_each_failure_and_what_to_run():
    recs = [rec("MODE_10W", energy=0.3, late=150, dropped=150, p99=47.0), rec("MODE_15W", energy=0.38, p99=60.0),
            rec("MAXN", pace=None, fps=100.0, energy=0.31)]  # fmt: skip
    with pytest.raises(NoOperatingPoint) as e:
        choose(recs, Constraints(30.0, max_p99_ms=50.0))
    msg = str(e.value)
    assert "nano-fp16 MODE_10W b1 @30fps: late+dropped 300/300 = 100.0% > 1.0%" in msg
    assert "nano-fp16 MODE_15W b1 @30fps: p99 60.0 ms > 50 ms" in msg
    assert "nano-fp16 MAXN b1: unpaced" in msg
    assert "faster points" in msg and "--max-p99-ms" in msg
    assert [c.qualified for c in e.value.candidates] == [False, False, False]


def test_only_flat_out_records_says_run_a_paced_sweep():
    with pytest.raises(NoOperatingPoint, match=r"nano-bench MODEL\.\.\. --pace 25"):
        choose([rec("MAXN", pace=None, fps=100.0, energy=0.31)], Constraints(25.0))


def test_corrupt_lines_are_skipped_with_a_warning(tmp_path):
    path = write_results(tmp_path / "r.jsonl", sweep_records(), corrupt_at=(3,))
    with open(path, "a") as f:
        f.write("[1, 2]\n\n")
    warnings = []
    records = load_records([path], warn=warnings.append)
    assert len(records) == len(sweep_records())
    assert len(warnings) == 2 and f"{path}:4: skipped a corrupt line" in warnings[0]
    assert "not a JSON object" in warnings[1]
    with pytest.raises(ChoiceError, match="results file not found"):
        load_records([str(tmp_path / "none.jsonl")])
    with pytest.raises(ChoiceError, match="no result records"):
        choose([], Constraints(30.0))


@pytest.mark.parametrize(
    "kwargs,match",
    [({"target_fps": 0.0}, "--target-fps"), ({"target_fps": 30.0, "max_p99_ms": -1.0}, "--max-p99-ms"),
     ({"target_fps": 30.0, "max_late": 1.5}, "--max-late"), ({"target_fps": 30.0, "by": "fps"}, "--by")],
)  # fmt: skip
def test_bad_constraints(kwargs, match):
    with pytest.raises(ChoiceError, match=match):
        choose(sweep_records(), Constraints(**kwargs))
