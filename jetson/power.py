"""Module power over exactly a timed window: INA3221 rails, jtop, or the CPU's RAPL energy counters.

Sources (found under a sysfs root, ``/`` on a board):

* ``ina3221-iio`` (JetPack 4, driver ``ina3221x``): ``sys/bus/i2c/drivers/ina3221x/*/iio:device*/``
  with ``rail_name_N``, ``in_power{N}_input`` (mW), ``in_voltage{N}_input`` (mV), ``in_current{N}_input`` (mA).
* ``ina3221-hwmon`` (JetPack 5+, driver ``ina3221``): ``sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/``
  with ``in{N}_label``, ``in{N}_input`` (mV), ``curr{N}_input`` (mA); ``in7`` (sum of shunts) and ``NC``
  channels skipped.
* ``jtop`` (jetson-stats) when importable and its service answers.
* ``rapl``: ``sys/class/powercap/intel-rapl:N/energy_uj`` package counters (CPU package only, labelled so).

Board-aware total: a board with an input rail (``VDD_IN``, ``POM_5V_IN``: Xavier NX, Orin NX/Nano,
Nano) uses that rail alone; otherwise (AGX Xavier: GPU, CPU, SOC, CV, VDDRQ, SYS5V) the sum of all rails.

:class:`PowerMonitor` samples in a background thread (about every 100 ms), takes one sample exactly at
``start()`` and one exactly at ``stop()``, and integrates P dt with the trapezoid rule over that window.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from yolo_nano.core.sysfs import read_float, read_text

INPUT_RAILS = ("VDD_IN", "POM_5V_IN")


@dataclass
class Reading:
    """One sample: per-rail watts (or joules for counter sources) and the board-aware total."""

    rails: Dict[str, float]
    total: float


def _read_float(path: str) -> float:
    """A sensor value; ValueError (a failed sample, skipped by the monitor) when unreadable or not finite."""
    value = read_float(path)
    if value is None:
        raise ValueError(f"cannot read a number from {path}")
    return value


def _finite_watts(watts: float, folder: str, index: str) -> float:
    """``watts`` when finite; a ValueError (a failed sample, skipped) when mV x mA overflowed."""
    if not math.isfinite(watts):
        raise ValueError(f"{folder} channel {index}: mV x mA is not a finite power")
    return watts


def board_total(rails: Dict[str, float]) -> Tuple[float, str]:
    """Module power from rails: an input rail alone where present, else the sum of all rails."""
    for name in INPUT_RAILS:
        for k, v in rails.items():
            if k.upper() == name:
                return v, k
    return sum(rails.values()), "sum(" + ",".join(sorted(rails)) + ")"


class PowerSource:
    """A readable power sensor. ``kind`` is ``"power"`` (read() gives watts) or ``"energy"`` (joules)."""

    name = "none"
    kind = "power"
    scope = "module"

    def read(self) -> Reading:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return self.name


class _Ina3221(PowerSource):
    """INA3221 rails found under one of the two sysfs layouts; the board decides which rails sum up."""

    def __init__(self, channels: List[Tuple[str, str, str]]) -> None:
        self.channels = channels  # (rail, dir, index)
        _, self.total_rule = board_total({c[0]: 0.0 for c in channels})

    def rail_watts(self, folder: str, index: str) -> float:
        raise NotImplementedError

    def read(self) -> Reading:
        rails = {name: self.rail_watts(d, i) for name, d, i in self.channels}
        total = board_total(rails)[0]
        if not math.isfinite(total):  # finite rails whose sum overflows
            raise ValueError(f"{self.name}: the rails sum to a power that is not finite")
        return Reading(rails, total)

    def describe(self) -> str:
        return f"{self.name}: {self.total_rule}"


class Ina3221Iio(_Ina3221):
    """JetPack 4 iio layout: power from ``in_power{N}_input`` (mW), else mV * mA."""

    name = "ina3221-iio"

    @classmethod
    def find(cls, root: str = "/") -> Optional[Ina3221Iio]:
        chans: List[Tuple[str, str, str]] = []
        for d in sorted(glob.glob(os.path.join(root, "sys/bus/i2c/drivers/ina3221x/*/iio:device*"))):
            for f in sorted(glob.glob(os.path.join(d, "rail_name_*"))):
                idx = f.rsplit("_", 1)[1]
                name = read_text(f)
                if not name or name.upper() == "NC":
                    continue
                chans.append((name, d, idx))
        return cls(chans) if chans else None

    def rail_watts(self, folder: str, index: str) -> float:
        p = os.path.join(folder, f"in_power{index}_input")
        if os.path.exists(p):
            return _read_float(p) / 1000.0
        mv = _read_float(os.path.join(folder, f"in_voltage{index}_input"))
        ma = _read_float(os.path.join(folder, f"in_current{index}_input"))
        return _finite_watts(mv * ma / 1e6, folder, index)


class Ina3221Hwmon(_Ina3221):
    """JetPack 5+ hwmon layout: power = ``in{N}_input`` (mV) * ``curr{N}_input`` (mA) / 1e6 W."""

    name = "ina3221-hwmon"

    @classmethod
    def find(cls, root: str = "/") -> Optional[Ina3221Hwmon]:
        chans: List[Tuple[str, str, str]] = []
        for d in sorted(glob.glob(os.path.join(root, "sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"))):
            for f in sorted(glob.glob(os.path.join(d, "in*_label"))):
                m = re.match(r"in(\d+)_label$", os.path.basename(f))
                if m is None:
                    continue
                idx = m.group(1)
                name = read_text(f)
                if idx == "7" or not name or name.upper() == "NC" or "sum" in name.lower():
                    continue
                if not os.path.exists(os.path.join(d, f"curr{idx}_input")):
                    continue
                chans.append((name, d, idx))
        return cls(chans) if chans else None

    def rail_watts(self, folder: str, index: str) -> float:
        mv = _read_float(os.path.join(folder, f"in{index}_input"))
        ma = _read_float(os.path.join(folder, f"curr{index}_input"))
        return _finite_watts(mv * ma / 1e6, folder, index)


class Rapl(PowerSource):
    """CPU package energy counters (``energy_uj``, wrapping at ``max_energy_range_uj``); joules."""

    name = "rapl"
    kind = "energy"
    scope = "cpu-package"

    def __init__(self, domains: List[Tuple[str, str, float]]) -> None:
        self.domains = domains  # (name, energy_uj path, wrap range in J)

    @classmethod
    def find(cls, root: str = "/") -> Optional[Rapl]:
        doms: List[Tuple[str, str, float]] = []
        for d in sorted(glob.glob(os.path.join(root, "sys/class/powercap/intel-rapl:*"))):
            if not re.fullmatch(r"intel-rapl:\d+", os.path.basename(d)):
                continue  # sub-domains (core, uncore, dram) are parts of the package
            f = os.path.join(d, "energy_uj")
            if read_float(f) is None:
                continue  # root-only on recent kernels
            name = read_text(os.path.join(d, "name")) or os.path.basename(d)
            wrap_uj = read_float(os.path.join(d, "max_energy_range_uj"))
            doms.append((name, f, (wrap_uj if wrap_uj else 2.0**32) / 1e6))
        return cls(doms) if doms else None

    def read(self) -> Reading:
        rails = {name: _read_float(f) / 1e6 for name, f, _ in self.domains}
        return Reading(rails, sum(rails.values()))

    def wrap_j(self, name: str) -> float:
        for n, _, w in self.domains:
            if n == name:
                return w
        return 0.0

    def describe(self) -> str:
        return f"rapl: {'+'.join(n for n, _, _ in self.domains)} (CPU package energy, not the whole machine)"


class Jtop(PowerSource):
    """jetson-stats: ``jetson.power`` rails and total (mW). Needs the jtop service and the jtop group."""

    name = "jtop"

    def __init__(self) -> None:
        from jtop import jtop  # lazy: only on a Jetson with jetson-stats

        self._jetson = jtop(interval=0.1)
        self._jetson.start()
        if not self._jetson.ok():
            self._jetson.close()
            raise RuntimeError("jtop service did not answer")

    def read(self) -> Reading:
        p = self._jetson.power
        rails = {k: float(v.get("power", 0.0)) / 1000.0 for k, v in p.get("rail", {}).items()}
        tot = p.get("tot", {})
        total = float(tot["power"]) / 1000.0 if "power" in tot else board_total(rails)[0]
        return Reading(rails, total)

    def close(self) -> None:
        self._jetson.close()


def find_power_source(root: str = "/", prefer: str = "auto") -> Tuple[Optional[PowerSource], str]:
    """The best readable source, or None and the reason power cannot be measured here.

    ``prefer``: ``auto`` (INA3221 sysfs, then jtop, then RAPL), ``ina3221``, ``jtop``, ``rapl`` or ``none``.
    """
    if prefer == "none":
        return None, "power measurement disabled (--power-source none)"
    tried: List[str] = []
    if prefer in ("auto", "ina3221"):
        for cls in (Ina3221Hwmon, Ina3221Iio):
            src = cls.find(root)
            if src is not None:
                try:
                    src.read()
                    return src, ""
                except (OSError, ValueError) as e:
                    tried.append(f"{cls.name} rails found but unreadable ({e})")
        if not tried:
            tried.append(f"no INA3221 rails under {os.path.join(root, 'sys/bus/i2c/drivers/ina3221*')}")
    if prefer in ("auto", "jtop"):
        try:
            return Jtop(), ""
        except ImportError:
            tried.append("jtop (jetson-stats) is not installed")
        except Exception as e:  # jtop raises its own exception types when the service is down
            tried.append(f"jtop service not reachable ({type(e).__name__}: {e}; is jtop.service running?)")
    if prefer in ("auto", "rapl"):
        rapl = Rapl.find(root)
        if rapl is not None:
            return rapl, ""
        tried.append(
            f"no readable RAPL counters {os.path.join(root, 'sys/class/powercap/intel-rapl:*/energy_uj')}"
        )
    return None, "power not measured: " + "; ".join(tried)


@dataclass
class PowerTrace:
    """Power over one timed window: sample times (s from start), total watts, energy (J), average (W)."""

    source: str
    scope: str
    t: List[float]
    watts: List[float]
    energy_j: float
    duration_s: float
    rails_w_avg: Dict[str, float] = field(default_factory=dict)
    side: List[Any] = field(default_factory=list)

    @property
    def avg_w(self) -> float:
        return self.energy_j / self.duration_s if self.duration_s > 0 else float("nan")


def trapezoid(t: List[float], y: List[float]) -> float:
    """Integral of y dt by the trapezoid rule (t increasing)."""
    return sum((t[i + 1] - t[i]) * (y[i + 1] + y[i]) * 0.5 for i in range(len(t) - 1))


class PowerMonitor:
    """Sample a :class:`PowerSource` (and an optional ``side`` reader, e.g. clocks) in a thread.

    ``start()`` takes the first sample synchronously and starts the thread; ``stop()`` takes the last
    sample synchronously, so the integral covers exactly [start, stop]. Failed reads are skipped.
    """

    def __init__(
        self,
        source: Optional[PowerSource],
        interval_s: float = 0.1,
        side: Optional[Callable[[], Any]] = None,
        side_every: int = 5,
    ) -> None:
        self.source = source
        self.interval_s = interval_s
        self.side = side
        self.side_every = max(1, side_every)
        self._samples: List[Tuple[float, Reading]] = []
        self._side: List[Any] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self.t0 = 0.0
        self.t1 = 0.0
        self._t_last = 0.0

    def _sample(self, with_side: bool) -> Optional[float]:
        """Take one reading; returns its time (midpoint of the read) or None when it failed."""
        t: Optional[float] = None
        if self.source is not None:
            a = time.perf_counter()
            try:
                r = self.source.read()
            except (OSError, ValueError, KeyError, TypeError):
                r = None
            b = time.perf_counter()
            if r is not None:
                t = (a + b) / 2.0
                with self._lock:
                    self._samples.append((t, r))
        if with_side and self.side is not None:
            with contextlib.suppress(OSError, ValueError):
                self._side.append(self.side())
        return t

    def _loop(self) -> None:
        n = 0
        while not self._stop.wait(self.interval_s):
            n += 1
            self._sample(n % self.side_every == 0)

    def start(self) -> None:
        self._samples, self._side = [], []
        self._stop.clear()
        self.t0 = time.perf_counter()
        self._sample(True)
        if self.source is not None or self.side is not None:
            self._thread = threading.Thread(target=self._loop, name="nano-bench-power", daemon=True)
            self._thread.start()

    def stop(self) -> Optional[PowerTrace]:
        """Stop sampling; the trace over [start, stop] or None without a source (or too few samples)."""
        self.t1 = time.perf_counter()
        self._stop.set()
        t_last = self._sample(True)  # the closing sample first, before waiting for the thread
        self._t_last = t_last if t_last is not None else self.t1
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self.source is None:
            return None
        return self._trace()

    @property
    def side_samples(self) -> List[Any]:
        return list(self._side)

    def _trace(self) -> Optional[PowerTrace]:
        with self._lock:  # a thread sample that finished after the closing one is outside the window
            samples = sorted((s for s in self._samples if s[0] <= self._t_last), key=lambda s: s[0])
        if len(samples) < 2 or self.source is None:
            return None
        t0, t1 = self.t0, self.t1
        duration = t1 - t0
        ts = [s[0] - t0 for s in samples]
        if self.source.kind == "energy":
            src = self.source
            names = list(samples[0][1].rails)
            energy = 0.0
            t_mid: List[float] = []
            watts: List[float] = []
            per_rail: Dict[str, float] = {n: 0.0 for n in names}
            rails_avg: Dict[str, float] = {}
            for (ta, ra), (tb, rb) in zip(samples, samples[1:]):
                de = 0.0
                for n in names:
                    d = rb.rails[n] - ra.rails[n]
                    if d < 0:  # counter wrapped
                        d += src.wrap_j(n) if isinstance(src, Rapl) else 0.0
                    per_rail[n] += d
                    de += d
                energy += de
                if tb > ta:
                    t_mid.append((ta + tb) / 2.0 - t0)
                    watts.append(de / (tb - ta))
            span = samples[-1][0] - samples[0][0]
            if span > 0:
                rails_avg = {n: e / span for n, e in per_rail.items()}
            # counters are read at start/stop instants: the covered span is the timed window
            return PowerTrace(
                self.source.name, self.source.scope, t_mid, watts, energy, span, rails_avg, self._side
            )
        watts = [s[1].total for s in samples]
        energy = trapezoid(ts, watts)
        span = ts[-1] - ts[0]
        rails_avg = {}
        for name in samples[0][1].rails:
            ys = [s[1].rails.get(name, 0.0) for s in samples]
            rails_avg[name] = trapezoid(ts, ys) / span if span > 0 else ys[0]
        return PowerTrace(
            self.source.name,
            self.source.scope,
            ts,
            watts,
            energy,
            span if span > 0 else duration,
            rails_avg,
            self._side,
        )
