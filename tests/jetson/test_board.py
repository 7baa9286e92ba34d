"""Board and host identity under a recorded root: device-tree model, L4T/JetPack release (the one parser
in core/l4t.py that engines/ uses too), CPU; nothing raises off a Jetson."""

from __future__ import annotations

import os

import pytest

from testsupport.board import XAVIER_RELEASE
from yolo_nano.core.l4t import L4T_TO_JETPACK, jetson_release, parse_nv_tegra_release, read_l4t_release
from yolo_nano.jetson.board import (
    board_model,
    cpu_model,
    host_identity,
    is_jetson,
    jetpack_release,
    l4t_release,
)


def write(root, rel, data):
    p = os.path.join(str(root), rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


@pytest.mark.parametrize(
    "text, release",
    [
        (XAVIER_RELEASE, "35.2.1"),
        ("# R32 (release), REVISION: 7.1, GCID: 1", "32.7.1"),
        ("# R36 (release), REVISION: 3", "36.3.0"),  # one-part revision, as the L4T packages number it
        ("R35 (release), REVISION: 4.1.", "35.4.1"),
        ("nothing", None),
        ("", None),
    ],
)
def test_parse_nv_tegra_release(text, release):
    assert parse_nv_tegra_release(text) == release


def test_agx_xavier_tree(tmp_path):
    write(tmp_path, "proc/device-tree/model", b"Jetson-AGX\x00")
    write(tmp_path, "etc/nv_tegra_release", XAVIER_RELEASE)
    write(tmp_path, "proc/cpuinfo", "processor\t: 0\nmodel name\t: ARMv8 Processor rev 0 (v8l)\n")
    root = str(tmp_path)
    assert board_model(root) == "Jetson-AGX" and is_jetson(root)
    assert l4t_release(root) == "R35.2.1" and read_l4t_release(root) == "35.2.1"
    assert jetson_release(root) == ("35.2.1", L4T_TO_JETPACK["35.2.1"]) and jetpack_release(root) == "5.1"
    assert cpu_model(root) == "ARMv8 Processor rev 0 (v8l)"
    ident = host_identity(root)
    assert (ident["board"], ident["l4t"], ident["cpu"]) == (
        "Jetson-AGX",
        "R35.2.1",
        "ARMv8 Processor rev 0 (v8l)",
    )
    assert {"tensorrt", "python", "machine"} <= set(ident)


def test_unrecognised_release_keeps_its_first_line(tmp_path):
    write(tmp_path, "etc/nv_tegra_release", "custom BSP 1.0\nsecond line\n")
    assert l4t_release(str(tmp_path)) == "custom BSP 1.0"
    assert jetson_release(str(tmp_path)) == (None, None)


def test_off_a_jetson_everything_is_none(tmp_path):
    root = str(tmp_path)
    assert board_model(root) is None and l4t_release(root) is None and not is_jetson(root)
    assert jetson_release(root) == (None, None) and jetpack_release(root) is None
    write(tmp_path, "proc/device-tree/model", b"\x00")  # an empty device-tree string
    assert board_model(root) is None


def test_a_fifo_named_like_the_release_file_does_not_hang(tmp_path):
    os.makedirs(tmp_path / "etc")
    os.mkfifo(tmp_path / "etc" / "nv_tegra_release")
    assert l4t_release(str(tmp_path)) is None and jetson_release(str(tmp_path)) == (None, None)
