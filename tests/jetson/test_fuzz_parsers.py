"""Fuzzing what jetson/ reads from the board: the nvpmodel conf, ``nvpmodel -q`` output (and the
status file it falls back to) and INA3221 sysfs values. Property: a valid result or the module's named
error (ConfError, NvpModelError; a failed power sample is a ValueError/OSError the monitor skips),
never another exception, never a hang (testsupport.fuzz); plus concrete bad cases as examples."""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
from typing import List, Optional, Set, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from testsupport.board import NX_CONF, ORIN_CONF, XAVIER_CONF, XAVIER_RAILS, SysfsBoard
from testsupport.fuzz import NASTY_TOKENS, fuzz, mutated_bytes, mutated_text, no_hang, tried
from yolo_nano.jetson.nvpmodel import (
    STATUS_FILE,
    ConfError,
    NvpModel,
    NvpModelError,
    parse_conf,
    parse_conf_text,
)
from yolo_nano.jetson.power import Ina3221Hwmon, Ina3221Iio, PowerMonitor, find_power_source

_DIR = tempfile.mkdtemp(prefix="fuzz-jetson-")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


CONFS = [_read(p) for p in (XAVIER_CONF, NX_CONF, ORIN_CONF)]
SMALL_CONF = """< PARAM TYPE=FILE NAME=TPC_POWER_GATING >
TPC_PG_MASK /sys/devices/gpu.0/tpc_pg_mask
< POWER_MODEL ID=0 NAME=MAXN >
CPU_ONLINE CORE_0 1
TPC_POWER_GATING TPC_PG_MASK 0
GPU MAX_FREQ -1
CPU_A57 MAX_FREQ 1190400
< POWER_MODEL ID=2 NAME=MODE_15W >
CPU_ONLINE CORE_0 1
TPC_POWER_GATING TPC_PG_MASK 1
GPU MAX_FREQ 670000000
< PM_CONFIG DEFAULT=2 >
"""
CONF_CORPUS = [
    SMALL_CONF.replace("CPU_A57 MAX_FREQ 1190400", "CPU_A57 MAX_FREQ " + "9" * 5000),
    SMALL_CONF.replace("GPU MAX_FREQ 670000000", "GPU MAX_FREQ " + "9" * 5000),
    SMALL_CONF.replace("ID=2", "ID=" + "9" * 5000),
    SMALL_CONF.replace("DEFAULT=2", "DEFAULT=" + "9" * 5000),
    SMALL_CONF.replace("NAME=MODE_15W", "NAME=MODE_" + "9" * 5000 + "W"),
    SMALL_CONF.replace("ID=2", "ID=\u0662"),  # int() takes Arabic-Indic digits
    SMALL_CONF.replace("NAME=MODE_15W", 'NAME=""'),
    SMALL_CONF.replace("< PM_CONFIG DEFAULT=2 >", "< PM_CONFIG DEFAULT=2"),
    "< POWER_MODEL ID=1 >\n",
    "\x00" * 100,
    "",
]
POWER_SPECS = ("15W", "30W", "MAXN", "0", "2", "MODE_15W,MAXN", "10W", "9" * 5000 + "W", "\u0662")


def _use_conf(conf) -> None:  # noqa: ANN001 - an NvpConf
    """Everything nano-bench asks of a parsed conf; may raise ConfError only."""
    conf.describe()
    for mode in conf.modes.values():
        assert mode.budget_w is None or mode.budget_w >= 0
        mode.online_cpus, mode.pg_masks, mode.gpu_max_hz, mode.cpu_max_khz  # noqa: B018
    ids = sorted(conf.modes)
    for a in ids[:3]:
        for b in ids[:3]:
            assert isinstance(conf.needs_reboot(a, b), bool)
    from yolo_nano.jetson.nvpmodel import resolve_modes

    for spec in POWER_SPECS:
        try:
            modes = resolve_modes(spec, conf)
        except ConfError:
            continue
        assert modes and all(m.id in conf.modes for m in modes)


def _check_conf(text: str) -> None:
    tried("nvpmodel conf")
    try:
        with no_hang():
            conf = parse_conf_text(text)
            _use_conf(conf)
    except ConfError:
        pass
    path = os.path.join(_DIR, "nvpmodel.conf")
    with open(path, "wb") as f:
        f.write(text.encode("utf-8", "surrogateescape"))
    try:
        with no_hang():
            _use_conf(parse_conf(path))
    except ConfError:
        pass


@pytest.mark.parametrize("text", CONF_CORPUS, ids=range(len(CONF_CORPUS)))
def test_nvpmodel_conf_corpus(text):
    _check_conf(text)


@fuzz(250)
@given(
    text=mutated_text(CONFS + [SMALL_CONF], max_ops=6)
    | st.text(alphabet="<> =\n#_PARMOWEIDNM0123456789", max_size=200)
)
def test_fuzz_nvpmodel_conf(text):
    """parse_conf_text / parse_conf: a conf nano-bench can use, or ConfError."""
    _check_conf(text)


# ------------------------------------------------------------------------------------ nvpmodel -q
class _Answering(NvpModel):
    """An NvpModel whose ``nvpmodel`` program answers ``output`` with exit ``code`` (the process is the
    part not under test; what is parsed is exactly what the program printed)."""

    def __init__(self, output: str, code: int, root: str) -> None:
        super().__init__(parse_conf_text(SMALL_CONF), executable="/usr/sbin/nvpmodel", root=root)
        self.output, self.code = output, code

    def _run(self, args, prefix=None):  # noqa: ANN001
        return subprocess.CompletedProcess(["nvpmodel", *args], self.code, self.output, None)


QUERY_SEEDS = [
    "NV Power Mode: MODE_15W\n2\n",
    "NVPM WARN: fan mode is not set!\nNV Power Mode: MAXN\n0\n",
    "NV Power Mode: MODE_15W\n",
    "nvpmodel: error: permission denied\n",
]
QUERY_CORPUS = [
    ("NV Power Mode: MODE_15W\n" + "9" * 5000 + "\n", 0, None),
    ("NV Power Mode: MODE_15W\n\u0662\n", 0, None),
    ("garbage", 1, b"pmode:" + b"9" * 5000),
    ("garbage", 1, b"pmode:\xff\xfe0002"),
    ("garbage", 1, b"\xff" * 100),
    ("NV Power Mode: \n", 0, None),
]


def _check_query(output: str, code: int, status: Optional[bytes]) -> None:
    tried("nvpmodel -q output")
    root = os.path.join(_DIR, "root")
    path = os.path.join(root, STATUS_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if status is None:
        if os.path.exists(path):
            os.unlink(path)
    else:
        with open(path, "wb") as f:
            f.write(status)
    try:
        with no_hang():
            mode_id, name = _Answering(output, code, root).query()
    except NvpModelError:
        return
    assert isinstance(mode_id, int) and isinstance(name, str)


@pytest.mark.parametrize("output, code, status", QUERY_CORPUS, ids=range(len(QUERY_CORPUS)))
def test_nvpmodel_query_corpus(output, code, status):
    _check_query(output, code, status)


@fuzz(250)
@given(
    output=mutated_text(QUERY_SEEDS, max_ops=4) | st.sampled_from(NASTY_TOKENS),
    code=st.sampled_from((0, 1, 255)),
    status=st.none() | mutated_bytes([b"pmode:0002 fmode:quiet\n", b"pmode:0000\n"], max_ops=4),
)
def test_fuzz_nvpmodel_query(output, code, status):
    """NvpModel.query(): (id, name) of a mode, or NvpModelError."""
    _check_query(output, code, status)


# ------------------------------------------------------------------------------------ INA3221 sysfs
def _tree(layout: str):
    root = os.path.join(_DIR, layout)
    board = SysfsBoard(root, layout, XAVIER_RAILS)
    board.set({"GPU": 4.0, "CPU": 2.0, "SOC": 1.5, "CV": 0.5, "VDDRQ": 1.0, "SYS5V": 3.0})
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if not f.endswith(".w"))
    return root, files, {p: open(p, "rb").read() for p in files}  # noqa: SIM115


TREES = {layout: _tree(layout) for layout in ("iio", "hwmon")}
_EDITED: Set[str] = set()  # files of TREES an input has overwritten
VALUE_SEEDS = [b"4000\n", b"1000\n", b"GPU\n", b"VDD_IN\n", b"sum of shunt voltages\n"]
POWER_CORPUS = [
    b"nan\n",
    b"inf\n",
    b"-inf\n",
    b"1e308\n",
    b"9" * 5000 + b"\n",
    b"\xff\xfe\n",
    b"",
    b"-4000\n",
]


def _check_power(layout: str, edits: List[Tuple[int, bytes]]) -> None:
    tried("INA3221 sysfs values")
    root, files, original = TREES[layout]
    for path in _EDITED & set(original):  # restore what the previous input changed (writes are slow here)
        with open(path, "wb") as f:
            f.write(original[path])
        _EDITED.discard(path)
    for index, data in edits:
        path = files[index % len(files)]
        with open(path, "wb") as f:
            f.write(data)
        _EDITED.add(path)
    with no_hang():
        source, reason = find_power_source(root, prefer="ina3221")
    if source is None:
        assert reason
        return
    assert isinstance(source, (Ina3221Iio, Ina3221Hwmon))
    try:
        reading = source.read()
    except (ValueError, OSError):
        return
    assert all(math.isfinite(w) for w in reading.rails.values()), reading
    assert math.isfinite(reading.total), reading
    monitor = PowerMonitor(source, interval_s=10.0)
    monitor.start()
    trace = monitor.stop()
    assert trace is None or math.isfinite(trace.energy_j)


@pytest.mark.parametrize(
    "layout, edits",
    [
        ("hwmon", list(enumerate(POWER_CORPUS))),
        ("iio", list(enumerate(POWER_CORPUS))),
        ("iio", [(k, b"1e308\n") for k in range(40)]),
        ("hwmon", [(k, b"1e200\n") for k in range(40)]),
    ],
)
def test_ina3221_sysfs_corpus(layout, edits):
    _check_power(layout, edits)


@fuzz(200)
@given(
    layout=st.sampled_from(sorted(TREES)),
    edits=st.lists(
        st.tuples(
            st.integers(0, 10**6), mutated_bytes(VALUE_SEEDS, max_ops=4) | st.sampled_from(POWER_CORPUS)
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_fuzz_ina3221_sysfs(layout, edits):
    """Random bytes in a recorded INA3221 tree: find_power_source gives a source or a reason; a source
    reads finite watts or fails the sample with ValueError/OSError (which the monitor skips)."""
    _check_power(layout, edits)
