"""Clock state of a Jetson: jetson_clocks store/enable/restore, GPU/CPU frequencies, temperatures.

Everything is read under a sysfs root (``/`` on the board; a recorded tree in tests). Files that do not
exist (an x86 machine, a container) give ``None`` rather than errors.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from yolo_nano.core.sysfs import read_int, read_text

from .nvpmodel import PERMISSION_HINT, NvpModelError, PermissionHintError, PowerMode, _is_not_root, run_tool

# Where the integrated GPU's devfreq node lives (Xavier gv11b, Orin ga10b, Nano/TX2 gp10b/gm20b).
_GPU_DEVFREQ_GLOBS = (
    "sys/devices/17000000.gv11b/devfreq/17000000.gv11b",
    "sys/devices/platform/17000000.ga10b/devfreq/17000000.ga10b",
    "sys/devices/platform/bus@0/17000000.gpu/devfreq/17000000.gpu",
    "sys/devices/gpu.0/devfreq/*",
    "sys/devices/57000000.gpu/devfreq/57000000.gpu",
    "sys/devices/17000000.gp10b/devfreq/17000000.gp10b",
)
_GPU_DEVFREQ_NAMES = ("gv11b", "ga10b", "gp10b", "gm20b", "gpu")
# `jetson_clocks --show`: "GPU MinFreq=114750000 MaxFreq=1377000000 CurrentFreq=318750000"; pinning sets
# the GPU's minimum to its maximum (the script stores GPU min_freq and restores it).
_SHOW_GPU_RE = re.compile(r"^GPU MinFreq=(\d+) MaxFreq=(\d+)", re.MULTILINE)


class ClocksPinnedError(RuntimeError):
    """The clocks were pinned (``jetson_clocks``) before this run, and a point must run unpinned: this
    run cannot unpin them, as only the state stored before the pinning can (nothing was changed)."""


def parse_show_pinned(text: str) -> Optional[bool]:
    """Whether ``jetson_clocks --show`` output says the clocks are pinned (GPU MinFreq == MaxFreq); None
    when it has no GPU line to tell by."""
    m = _SHOW_GPU_RE.search(text)
    if m is None:
        return None
    return int(m.group(1)) >= int(m.group(2))


def count_cpu_list(text: str) -> int:
    """Number of CPUs in a kernel CPU list such as ``0-3,5`` (``/sys/devices/system/cpu/online``)."""
    n = 0
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            n += int(b) - int(a) + 1
        else:
            int(part)
            n += 1
    return n


def gpu_devfreq_dir(root: str = "/") -> Optional[str]:
    """The GPU's devfreq folder under ``root`` (contains ``cur_freq``, ``max_freq`` in Hz), or None."""
    for pattern in _GPU_DEVFREQ_GLOBS:
        for d in sorted(glob.glob(os.path.join(root, pattern))):
            if os.path.exists(os.path.join(d, "cur_freq")):
                return d
    for d in sorted(glob.glob(os.path.join(root, "sys/class/devfreq/*"))):
        if any(n in os.path.basename(d) for n in _GPU_DEVFREQ_NAMES) and os.path.exists(
            os.path.join(d, "cur_freq")
        ):
            return d
    return None


@dataclass
class ClockSnapshot:
    """One reading: GPU frequency (Hz), online CPU count, CPU frequencies (kHz), temperatures (deg C)."""

    t: float
    gpu_cur_hz: Optional[int] = None
    gpu_max_hz: Optional[int] = None
    online_cpus: Optional[int] = None
    cpu_cur_khz: Dict[str, int] = field(default_factory=dict)
    temps_c: Dict[str, float] = field(default_factory=dict)


class ClockReader:
    """Reads :class:`ClockSnapshot` under a sysfs root; the file list is found once."""

    def __init__(self, root: str = "/") -> None:
        self.root = root
        self.gpu_dir = gpu_devfreq_dir(root)
        self.cpu_files = sorted(
            glob.glob(os.path.join(root, "sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"))
        )
        self.zones: List[Tuple[str, str]] = []
        for z in sorted(glob.glob(os.path.join(root, "sys/class/thermal/thermal_zone*"))):
            name = read_text(os.path.join(z, "type")) or os.path.basename(z)
            self.zones.append((name, os.path.join(z, "temp")))

    def read(self) -> ClockSnapshot:
        snap = ClockSnapshot(t=time.perf_counter())
        if self.gpu_dir is not None:
            snap.gpu_cur_hz = read_int(os.path.join(self.gpu_dir, "cur_freq"))
            snap.gpu_max_hz = read_int(os.path.join(self.gpu_dir, "max_freq"))
        online = read_text(os.path.join(self.root, "sys/devices/system/cpu/online"))
        if online:
            try:
                snap.online_cpus = count_cpu_list(online)
            except ValueError:
                snap.online_cpus = None
        for f in self.cpu_files:
            v = read_int(f)
            if v is not None:
                snap.cpu_cur_khz[os.path.basename(os.path.dirname(os.path.dirname(f)))] = v
        for name, path in self.zones:
            v = read_int(path)
            if v is not None and v > -40000:
                snap.temps_c[name] = v / 1000.0
        return snap


def summarize_clocks(snaps: Sequence[ClockSnapshot], mode: Optional[PowerMode] = None) -> Dict[str, object]:
    """Summary of the clock readings taken during a timed window, with a throttling flag.

    ``throttled`` is True when the median GPU frequency was below 90% of the mode's cap (or of the
    devfreq ``max_freq`` when the mode sets none) or fewer CPUs were online than the mode keeps; None
    when nothing could be read (not a Jetson).
    """
    gpu = [s.gpu_cur_hz for s in snaps if s.gpu_cur_hz is not None]
    cpus = [s.online_cpus for s in snaps if s.online_cpus is not None]
    temps: Dict[str, float] = {}
    for s in snaps:
        for k, v in s.temps_c.items():
            temps[k] = max(temps.get(k, v), v)
    cpu_freqs = [max(s.cpu_cur_khz.values()) for s in snaps if s.cpu_cur_khz]
    out: Dict[str, object] = {
        "gpu_freq_mhz_median": round(statistics.median(gpu) / 1e6, 1) if gpu else None,
        "gpu_freq_mhz_min": round(min(gpu) / 1e6, 1) if gpu else None,
        "cpu_freq_mhz_max": round(statistics.median(cpu_freqs) / 1e3, 1) if cpu_freqs else None,
        "online_cpus": min(cpus) if cpus else None,
        "temps_c_max": {k: round(v, 1) for k, v in sorted(temps.items())},
        "throttled": None,
        "throttle_reasons": [],
    }
    reasons: List[str] = []
    cap = mode.gpu_max_hz if mode is not None else None
    if cap is None:
        maxes = [s.gpu_max_hz for s in snaps if s.gpu_max_hz]
        cap = max(maxes) if maxes else None
    known = False
    if gpu and cap:
        known = True
        med = statistics.median(gpu)
        if med < 0.9 * cap:
            reasons.append(f"GPU median {med / 1e6:.0f} MHz < 90% of cap {cap / 1e6:.0f} MHz")
    want = mode.online_cpus if mode is not None else None
    if cpus and want:
        known = True
        if min(cpus) < want:
            reasons.append(f"{min(cpus)} CPUs online, mode keeps {want}")
    if known:
        out["throttled"] = bool(reasons)
        out["throttle_reasons"] = reasons
    return out


class JetsonClocks:
    """``jetson_clocks`` on PATH: store the current state, pin clocks, restore exactly what was stored."""

    def __init__(self, executable: Optional[str] = None, timeout_s: float = 30.0) -> None:
        self.executable = executable or shutil.which("jetson_clocks")
        self.timeout_s = timeout_s
        self._prefix: List[str] = []
        self._store_path: Optional[str] = None

    @property
    def available(self) -> bool:
        return self.executable is not None

    @property
    def stored(self) -> bool:
        return self._store_path is not None

    def _call(self, args: List[str]) -> str:
        if self.executable is None:
            raise NvpModelError(
                "jetson_clocks is not on PATH: this does not look like a Jetson (JetPack) system"
            )
        cp = run_tool(self._prefix + [self.executable] + args, self.timeout_s)
        if cp.returncode != 0 and not self._prefix and _is_not_root() and shutil.which("sudo"):
            cp2 = run_tool(["sudo", "-n", self.executable] + args, self.timeout_s)
            if cp2.returncode == 0:
                self._prefix = ["sudo", "-n"]
                return cp2.stdout or ""
        if cp.returncode != 0:
            msg = f"`jetson_clocks {' '.join(args)}` failed (exit {cp.returncode}): {(cp.stdout or '').strip()[-200:]}"
            if _is_not_root():
                raise PermissionHintError(msg + "\n" + PERMISSION_HINT)
            raise NvpModelError(msg)
        return cp.stdout or ""

    def store(self, path: Optional[str] = None) -> str:
        """Save the current clock state (``jetson_clocks --store``) to ``path`` (default: a private temp
        file); returns the path. A file already there is replaced (jetson_clocks would ask first)."""
        if path is None:
            fd, path = tempfile.mkstemp(prefix="nano-bench-clocks-", suffix=".conf")
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # jetson_clocks writes it, and prompts (answered no) when it exists
        self._call(["--store", path])
        self._store_path = path
        return path

    def enable(self) -> None:
        """Pin CPU/GPU/EMC clocks at the current mode's maximum (store first)."""
        if self._store_path is None:
            self.store()
        self._call([])

    def pinned(self) -> Optional[bool]:
        """Whether the clocks are pinned now (``jetson_clocks --show``: the GPU's minimum frequency at its
        maximum); None when that cannot be told (no jetson_clocks, no permission, an unknown output)."""
        if self.executable is None:
            return None
        try:
            return parse_show_pinned(self._call(["--show"]))
        except NvpModelError:  # PermissionHintError included: telling is optional, pinning is not
            return None

    def restore(self, path: Optional[str] = None, keep: bool = False) -> None:
        """Restore the stored state, or the one stored in ``path`` by an earlier process (no-op when
        nothing was stored). The file is removed once restored (kept for a retry when that fails), or
        with ``keep`` kept as the stored state: pinning again and restoring later both still work."""
        if path is None:
            if self._store_path is None:
                return
            path = self._store_path
        self._call(["--restore", path])
        if keep:
            return
        if path == self._store_path:
            self._store_path = None
        with contextlib.suppress(OSError):
            os.unlink(path)
