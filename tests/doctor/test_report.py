"""The report's scrubbing (host, user, home, addresses; versions kept), a check that raises, and the
printed form of a problem."""

from __future__ import annotations

import json
from pathlib import Path

from yolo_nano.doctor.cli import format_check
from yolo_nano.doctor.report import Identity, Scrubber, build_report, local_identity, write_report
from yolo_nano.doctor.result import Check, Context, Options, failed, ok, run_check

ALICE = Identity(homes=["/home/alice"], users=["alice"], hosts=["jetson-lab-7.example.org", "jetson-lab-7"])


def test_scrubber_replaces_what_identifies_and_keeps_the_rest():
    text = (
        "model /home/alice/m.onnx on jetson-lab-7 (jetson-lab-7.example.org) by alice from 192.168.1.20 "
        "and fe80::1ff:fe23:4567:890a, also ::ffff:10.0.0.7; /home/bob/x and /Users/carol/y; "
        "TensorRT 8.5.2.2-1+cuda11.4 at 12:30:45 on 2026-01-02T03:04:05Z; alicebeth /rootfs root 35.2.1"
    )
    out = Scrubber(ALICE, versions=["8.5.2.2-1+cuda11.4"]).text(text)
    assert out == (
        "model ~/m.onnx on <host> (<host>) by <user> from <ip> "
        "and <ip>, also ::ffff:<ip>; ~/x and ~/y; "
        "TensorRT 8.5.2.2-1+cuda11.4 at 12:30:45 on 2026-01-02T03:04:05Z; alicebeth /rootfs root 35.2.1"
    )


def test_a_dotted_quad_is_an_address_unless_written_or_recorded_as_a_version():
    scrub = Scrubber(ALICE, versions=["2022.2.2.1"])
    assert scrub.text("TensorRT 8.6.1.6 is not supported; pip install 'tensorrt-cu12==10.16.1.11'") == (
        "TensorRT 8.6.1.6 is not supported; pip install 'tensorrt-cu12==10.16.1.11'"
    )
    assert scrub.text("version 4.3.2.1, v1.2.3.4, pycuda 2022.2.2.1 at 1.2.3.400") == (
        "version 4.3.2.1, v1.2.3.4, pycuda 2022.2.2.1 at 1.2.3.400"  # 400: no address
    )
    assert scrub.text("connect to 8.5.2.2 and 10.0.0.5.") == "connect to <ip> and <ip>."


def test_scrubber_walks_keys_values_and_objects():
    doc = {"/home/alice/a": [Path("/home/alice/b"), ("alice", 3, None, True)], "n": 1.5}
    assert Scrubber(ALICE)(doc) == {"~/a": ["~/b", ["<user>", 3, None, True]], "n": 1.5}


def test_local_identity_reads_the_environment(monkeypatch, tmp_path):
    home = tmp_path / "home" / "zed"
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USER", "zed-user")
    ident = local_identity()
    assert str(home) in ident.homes and "zed-user" in ident.users and "root" not in ident.users
    assert ident.hosts and all(h not in ("", "localhost") for h in ident.hosts)


def test_report_records_versions_it_keeps_and_scrubs_the_rest(tmp_path):
    checks = [
        ok("TensorRT", "8.5.2.2, 40 plugins", version="8.5.2.2"),
        failed("model", "/home/alice/m.onnx: not readable on jetson-lab-7 (10.1.2.3)", "export it again"),
    ]
    for c in checks:
        c.section = "software"
    report = build_report(checks, Options(model="/home/alice/m.onnx"), 1, 0.5, {"on_jetson": True}, ALICE)
    write_report(str(tmp_path / "r.json"), report)
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["checks"][0]["detail"] == "8.5.2.2, 40 plugins"
    assert doc["checks"][1]["detail"] == "~/m.onnx: not readable on <host> (<ip>)"
    assert doc["options"]["model"] == "~/m.onnx"
    assert doc["summary"] == {"ok": 1, "missing": 0, "failed": 1, "n/a": 0, "skipped": 0, "exit_code": 1,
                              "seconds": 0.5}  # fmt: skip


def test_a_check_that_raises_becomes_a_failed_line_with_its_traceback_in_the_report(tmp_path):
    def broken(ctx):
        raise RuntimeError("boom")

    broken.check_name = "broken thing"
    (c,) = run_check(broken, Context(Options(sysfs_root=str(tmp_path))), "power")
    assert (c.name, c.status, c.section) == ("broken thing", "failed", "power")
    assert c.detail == "the check itself failed: RuntimeError: boom"
    assert "Traceback" in c.error and 'raise RuntimeError("boom")' in c.error
    assert "\n".join(format_check(c)).count("Traceback") == 0


def test_a_problem_prints_its_fix_under_it_and_other_lines_do_not():
    c = Check("mode switching", "missing", "not root", "first line\n    second line")
    assert format_check(c) == [
        "  missing  mode switching           not root",
        "           fix: first line",
        "                second line",
    ]
    assert format_check(Check("TensorRT", "n/a", "no GPU", "pip install tensorrt")) == [
        "  n/a      TensorRT                 no GPU"
    ]
