"""Helpers for nano-bench tests (``testsupport.board``): a tiny
ONNX model with our metadata, fake nvpmodel/jetson_clocks on PATH, and recorded INA3221 sysfs trees
(both layouts) whose values follow a known power profile."""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
XAVIER_CONF = os.path.join(FIXTURES, "nvpmodel_agx_xavier.conf")
NX_CONF = os.path.join(FIXTURES, "nvpmodel_xavier_nx.conf")
ORIN_CONF = os.path.join(FIXTURES, "nvpmodel_agx_orin.conf")


# ------------------------------------------------------------------------------------ tiny model


def make_tiny_onnx(path: str, size: int = 64, classes: int = 2) -> str:
    """A real ONNX model with yolo_nano metadata: 2 heads (stride 32, 16), dynamic batch, 3 anchors."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from yolo_nano.core.metadata import HeadSpec, ModelMetadata, write_onnx_metadata

    rng = np.random.default_rng(0)
    ch = 3 * (5 + classes)
    nodes, inits, outputs = [], [], []
    heads = []
    for stride, name in ((32, "head_s32"), (16, "head_s16")):
        w = numpy_helper.from_array(
            (rng.standard_normal((ch, 3, 1, 1)) * 0.5).astype(np.float32), f"w{stride}"
        )
        inits.append(w)
        nodes.append(
            helper.make_node(
                "AveragePool",
                ["images"],
                [f"p{stride}"],
                kernel_shape=[stride, stride],
                strides=[stride, stride],
            )
        )
        nodes.append(helper.make_node("Conv", [f"p{stride}", f"w{stride}"], [name]))
        outputs.append(
            helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", ch, size // stride, size // stride])
        )
        anchors = (
            ((30.0, 40.0), (50.0, 45.0), (60.0, 60.0))
            if stride == 32
            else ((8.0, 10.0), (12.0, 16.0), (20.0, 18.0))
        )
        heads.append(HeadSpec(name, stride, anchors))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, size, size])],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    meta = ModelMetadata(
        arch="tiny-test", class_names=tuple(f"c{i}" for i in range(classes)), input_size=(size, size),
        heads=tuple(heads), batch="dynamic", opset=13,
    )  # fmt: skip
    write_onnx_metadata(model, meta)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


# ------------------------------------------------------------------------------ fake board tools


def install_script(src: str, dst: str) -> str:
    with open(src) as f:
        body = f.read()
    with open(dst, "w") as f:
        f.write(f"#!{sys.executable}\n" + body)
    os.chmod(dst, os.stat(dst).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return dst


@dataclass
class FakeBoard:
    bin: str
    conf: str
    nvp_state: str
    nvp_log: str
    clk_state: str
    clk_log: str
    env: Dict[str, str]

    def mode(self) -> int:
        with open(self.nvp_state) as f:
            return int(f.read().strip())

    def clocks(self) -> str:
        with open(self.clk_state) as f:
            return f.read().strip()

    def nvp_calls(self) -> List[str]:
        if not os.path.exists(self.nvp_log):
            return []
        with open(self.nvp_log) as f:
            return [line.strip() for line in f]


# --------------------------------------------------------------------------- recorded sysfs trees

XAVIER_RAILS = {"0x40": ["GPU", "CPU", "SOC"], "0x41": ["CV", "VDDRQ", "SYS5V"]}
NX_RAILS = {"0x40": ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]}


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".w"
    with open(tmp, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, path)  # readers never see a half-written value


class SysfsBoard:
    """Writes an INA3221 tree under ``root`` in the ``iio`` (JetPack 4) or ``hwmon`` (JetPack 5) layout.

    ``profile(t) -> {rail: watts}`` is written by a background thread every ``step`` seconds (voltage
    fixed per rail, current chosen so V*I is the rail power), so the true energy over any window is
    the integral of the profile.
    """

    def __init__(self, root: str, layout: str, rails: Dict[str, List[str]], bus: str = "1") -> None:
        self.root = root
        self.layout = layout
        self.paths: Dict[str, str] = {}  # rail -> dir
        self.index: Dict[str, int] = {}
        self.volts_mv = {}
        for addr, names in rails.items():
            dev = f"{bus}-00{addr[2:]}"
            if layout == "iio":
                d = os.path.join(root, "sys/bus/i2c/drivers/ina3221x", dev, f"iio:device{int(addr[2:]) - 40}")
                for i, n in enumerate(names):
                    _write(os.path.join(d, f"rail_name_{i}"), n)
                    self.paths[n], self.index[n] = d, i
            else:
                d = os.path.join(
                    root, "sys/bus/i2c/drivers/ina3221", dev, "hwmon", f"hwmon{3 + int(addr[2:]) - 40}"
                )
                for i, n in enumerate(names, 1):
                    _write(os.path.join(d, f"in{i}_label"), n)
                    self.paths[n], self.index[n] = d, i
                _write(os.path.join(d, "in7_label"), "sum of shunt voltages")
                _write(os.path.join(d, "in7_input"), "40")
                _write(os.path.join(d, "curr7_input"), "99999")
            for n in names:
                self.volts_mv[n] = 5000.0 if "5V" in n or n == "VDD_IN" else 1000.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.t0 = 0.0

    def set(self, watts: Dict[str, float]) -> None:
        for n, w in watts.items():
            d, i = self.paths[n], self.index[n]
            mv = self.volts_mv[n]
            ma = w * 1e6 / mv
            if self.layout == "iio":
                _write(os.path.join(d, f"in_power{i}_input"), str(int(round(w * 1000))))
                _write(os.path.join(d, f"in_voltage{i}_input"), str(int(mv)))
                _write(os.path.join(d, f"in_current{i}_input"), str(int(round(ma))))
            else:
                _write(os.path.join(d, f"in{i}_input"), str(int(mv)))
                _write(os.path.join(d, f"curr{i}_input"), str(int(round(ma))))

    def play(self, profile: Callable[[float], Dict[str, float]], step: float = 0.002) -> None:
        self.t0 = time.perf_counter()
        self.set(profile(0.0))

        def loop() -> None:
            while not self._stop.is_set():
                self.set(profile(time.perf_counter() - self.t0))
                time.sleep(step)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


XAVIER_RELEASE = (
    "# R35 (release), REVISION: 2.1, GCID: 32413640, BOARD: t186ref, EABI: aarch64, DATE: Tue Jan 24\n"
)


def jetson_root(root: str, watts: Optional[Dict[str, float]] = None) -> str:
    """A sysfs root that looks like an AGX Xavier on JetPack 5.1 (L4T R35.2.1): device-tree model,
    ``/etc/nv_tegra_release`` and an INA3221 tree (iio layout) with constant rail powers ``watts``."""
    board = SysfsBoard(root, "iio", XAVIER_RAILS)
    board.set(watts or {"GPU": 4.0, "CPU": 2.0, "SOC": 1.5, "CV": 0.5, "VDDRQ": 1.0, "SYS5V": 3.0})
    _write_bytes(os.path.join(root, "proc/device-tree/model"), b"Jetson-AGX\x00")
    _write_bytes(os.path.join(root, "etc/nv_tegra_release"), XAVIER_RELEASE.encode())
    return root


def _write_bytes(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def profile_energy(
    profile: Callable[[float], Dict[str, float]],
    a: float,
    b: float,
    pick: Callable[[Dict[str, float]], float],
    n: int = 20000,
) -> float:
    """Reference integral of pick(profile(t)) over [a, b] (fine trapezoid)."""
    ts = np.linspace(a, b, n)
    ys = np.array([pick(profile(t)) for t in ts])
    return float(np.sum((ys[1:] + ys[:-1]) * 0.5 * np.diff(ts)))
