"""nvpmodel: parse the board's power-mode table and switch modes safely.

The conf file (``/etc/nvpmodel.conf``) is the only source of truth for which modes exist: budgets such
as ``15W`` are mapped to mode IDs by parsing it, never by a hard-coded table. The controller runs the
real ``nvpmodel`` program found on PATH, always with a timeout and with ``no`` on stdin, so a mode that
needs a reboot can never leave it waiting on its ``YES`` prompt.

Conf format (loosely parsed; comments start with ``#``)::

    < PARAM TYPE=FILE NAME=TPC_POWER_GATING >      # knob -> sysfs file(s)
    TPC_PG_MASK /sys/devices/gpu.0/tpc_pg_mask
    < POWER_MODEL ID=2 NAME=MODE_15W >            # then PARAM ARG VALUE lines, -1 = no cap
    CPU_ONLINE CORE_0 1
    TPC_POWER_GATING TPC_PG_MASK 0
    GPU MAX_FREQ 670000000
    < PM_CONFIG DEFAULT=2 >
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

DEFAULT_CONF = "/etc/nvpmodel.conf"
STATUS_FILE = "var/lib/nvpmodel/status"

#: How to let a normal user switch modes, shown whenever permission is missing.
PERMISSION_HINT = (
    "switching power modes needs root. Run nano-bench with sudo, or allow it without a password with a "
    "sudoers line (sudo visudo -f /etc/sudoers.d/nano-bench):\n"
    "    %USER% ALL=(root) NOPASSWD: /usr/sbin/nvpmodel, /usr/bin/jetson_clocks\n"
    "(nano-bench then calls them through `sudo -n`), or install jetson-stats and add yourself to the jtop "
    "group (sudo usermod -aG jtop $USER, then log in again); or run without --power/--jetson-clocks."
)

_SECTION_RE = re.compile(r"^<\s*([A-Za-z_]+)\s*(.*?)\s*>\s*$")
_KV_RE = re.compile(r"([A-Za-z_]+)\s*=\s*(\"[^\"]*\"|\S+)")
_BUDGET_RE = re.compile(r"(?<![0-9.])(\d+(?:\.\d+)?)\s*W(?![A-Za-z])", re.IGNORECASE)
_QUERY_NAME_RE = re.compile(r"NV\s+Power\s+Mode\s*:\s*(\S+)", re.IGNORECASE)
_REBOOT_RE = re.compile(r"reboot\s+required", re.IGNORECASE)
_PERMISSION_RE = re.compile(r"root|permission|not permitted|denied|sudo", re.IGNORECASE)


class NvpModelError(RuntimeError):
    """nvpmodel failed, timed out or answered something unexpected."""


class ConfError(ValueError):
    """The nvpmodel conf file is missing or malformed, or a --power value does not name a mode."""


class RebootRequiredError(NvpModelError):
    """The target mode needs a reboot (different TPC/FBP power-gating mask): refused."""


class PermissionHintError(NvpModelError):
    """Switching needs root; the message says how to grant it."""


@dataclass(frozen=True)
class PowerMode:
    """One ``< POWER_MODEL ID=n NAME=s >`` section.

    ``params`` maps ``(PARAM, ARG)`` to the value string as written (``-1`` = no cap).
    """

    id: int
    name: str
    params: Dict[Tuple[str, str], str] = field(default_factory=dict)

    @property
    def budget_w(self) -> Optional[float]:
        """Nominal power budget in watts parsed from the name (``MODE_15W`` / ``15W``), None for MAXN."""
        m = _BUDGET_RE.search(self.name.replace("_", " "))
        return float(m.group(1)) if m else None

    @property
    def online_cpus(self) -> Optional[int]:
        """Number of CPU cores the mode keeps online (``CPU_ONLINE CORE_n 1`` lines), None if unset."""
        cores = [v for (p, _a), v in self.params.items() if p == "CPU_ONLINE"]
        if not cores:
            return None
        return sum(1 for v in cores if v.strip() == "1")

    @property
    def pg_masks(self) -> Dict[str, str]:
        """Power-gating masks (``TPC_PG_MASK``, ``FBP_PG_MASK``...): a difference needs a reboot."""
        return {a: v for (_p, a), v in self.params.items() if a.upper().endswith("PG_MASK")}

    def max_freq(self, param: str) -> Optional[int]:
        """``PARAM MAX_FREQ`` value as written (kHz for CPU, Hz for GPU on Jetson); None if -1 or unset."""
        v = self.params.get((param, "MAX_FREQ"))
        if v is None:
            return None
        try:
            iv = int(v)
        except ValueError:
            return None
        return None if iv < 0 else iv

    @property
    def gpu_max_hz(self) -> Optional[int]:
        """GPU frequency cap in Hz (None = no cap in the conf)."""
        return self.max_freq("GPU")

    @property
    def cpu_max_khz(self) -> Optional[int]:
        """Highest CPU cluster frequency cap in kHz (None = no cap in the conf)."""
        # at most 18 digits: a frequency, and never over int()'s 4300-digit limit (ValueError) on 3.11
        vals = [
            int(v)
            for (p, a), v in self.params.items()
            if p.startswith("CPU") and a == "MAX_FREQ" and re.fullmatch(r"-?[0-9]{1,18}", v.strip())
        ]
        if not vals or any(v < 0 for v in vals):
            return None
        return max(vals)


@dataclass(frozen=True)
class NvpConf:
    """A parsed nvpmodel conf: modes by ID, the default mode, and the file's sha256."""

    modes: Dict[int, PowerMode]
    default_id: Optional[int]
    sha256: str
    path: Optional[str] = None

    def by_name(self, name: str) -> Optional[PowerMode]:
        for m in self.modes.values():
            if m.name.lower() == name.lower():
                return m
        return None

    def needs_reboot(self, current_id: int, target_id: int) -> bool:
        """True when the power-gating masks of the two modes differ (nvpmodel then asks to reboot)."""
        cur, tgt = self.modes.get(current_id), self.modes.get(target_id)
        if cur is None or tgt is None:
            return False
        a, b = cur.pg_masks, tgt.pg_masks
        return any(
            a.get(k) != b.get(k) for k in set(a) | set(b) if a.get(k) is not None and b.get(k) is not None
        )

    def describe(self) -> str:
        return ", ".join(f"{m.id}={m.name}" for m in sorted(self.modes.values(), key=lambda m: m.id))


def parse_conf_text(text: str, path: Optional[str] = None) -> NvpConf:
    """Parse nvpmodel conf text (loosely: ``<PARAM``/``< PARAM``, any case of keys, ID gaps)."""
    modes: Dict[int, PowerMode] = {}
    default_id: Optional[int] = None
    current: Optional[PowerMode] = None
    where = path or "<conf>"
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        sec = _SECTION_RE.match(line)
        if sec:
            kind = sec.group(1).upper()
            kv = {k.upper(): v.strip('"') for k, v in _KV_RE.findall(sec.group(2))}
            current = None
            if kind == "POWER_MODEL":
                if "ID" not in kv or "NAME" not in kv:
                    raise ConfError(f"{where}:{lineno}: POWER_MODEL needs ID= and NAME=: {raw.strip()!r}")
                try:
                    mid = int(kv["ID"])
                except ValueError:
                    raise ConfError(
                        f"{where}:{lineno}: POWER_MODEL ID is not an integer: {raw.strip()!r}"
                    ) from None
                if mid in modes:
                    raise ConfError(f"{where}:{lineno}: duplicate POWER_MODEL ID={mid}")
                current = PowerMode(mid, kv["NAME"], {})
                modes[mid] = current
            elif kind == "PM_CONFIG" and "DEFAULT" in kv:
                try:
                    default_id = int(kv["DEFAULT"])
                except ValueError:
                    raise ConfError(f"{where}:{lineno}: PM_CONFIG DEFAULT is not an integer") from None
            continue
        if line.startswith("<"):
            raise ConfError(f"{where}:{lineno}: unterminated section header {raw.strip()!r}")
        if current is not None:
            parts = line.split()
            if len(parts) >= 3:
                current.params[(parts[0].upper(), parts[1].upper())] = " ".join(parts[2:])
            elif len(parts) == 2:
                current.params[(parts[0].upper(), "")] = parts[1]
    if not modes:
        raise ConfError(f"{where}: no '< POWER_MODEL ID=n NAME=s >' sections: is this an nvpmodel conf?")
    sha = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
    return NvpConf(modes=modes, default_id=default_id, sha256=sha, path=path)


def parse_conf(path: str) -> NvpConf:
    """Read and parse an nvpmodel conf file (symlinks followed)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as e:
        raise ConfError(f"cannot read nvpmodel conf {path}: {e.strerror or e}") from e
    return parse_conf_text(text, os.path.realpath(path))


def resolve_mode(spec: str, conf: NvpConf) -> PowerMode:
    """Map one ``--power`` item (an ID, an exact mode name, or a budget such as ``15W``) to a mode.

    A budget matching several modes picks the plain one (``MODE_15W`` beside ``MODE_15W_DESKTOP``),
    else the one whose name ends in ``_ALL``; otherwise it is ambiguous and :class:`ConfError` lists
    the exact names to choose from.
    """
    s = spec.strip()
    if not s:
        raise ConfError("empty --power item")
    if re.fullmatch(r"\d+", s):
        mid = int(s)
        if mid not in conf.modes:
            raise ConfError(f"power mode ID {mid} is not in the conf; modes: {conf.describe()}")
        return conf.modes[mid]
    exact = conf.by_name(s)
    if exact is not None:
        return exact
    m = re.fullmatch(r"(?:MODE_)?(\d+(?:\.\d+)?)\s*W", s, re.IGNORECASE)
    if m:
        watts = float(m.group(1))
        matches = [pm for pm in conf.modes.values() if pm.budget_w == watts]
        if len(matches) == 1:
            return matches[0]
        # the plain mode of that budget (MODE_15W next to MODE_15W_DESKTOP; Orin's bare 15W) ...
        plain = {f"MODE_{m.group(1)}W", f"{m.group(1)}W"}
        plain_matches = [pm for pm in matches if pm.name.upper() in plain]
        if len(plain_matches) == 1:
            return plain_matches[0]
        # ... else the all-cores one (MODE_30W_ALL among the four 30 W modes of AGX Xavier)
        alls = [pm for pm in matches if pm.name.upper().endswith("_ALL")]
        if len(alls) == 1:
            return alls[0]
        if not matches:
            budgets = sorted({pm.budget_w for pm in conf.modes.values() if pm.budget_w is not None})
            raise ConfError(
                f"no {s} power mode on this board; budgets: "
                f"{', '.join(f'{b:g}W' for b in budgets) or 'none'}; modes: {conf.describe()}"
            )
        names = ", ".join(f"{pm.name} (ID {pm.id})" for pm in sorted(matches, key=lambda p: p.id))
        raise ConfError(f"--power {s} is ambiguous on this board: pass the exact mode name, one of {names}")
    raise ConfError(f"--power {s!r} is not an ID, a mode name or a budget like 15W; modes: {conf.describe()}")


def resolve_modes(spec: str, conf: NvpConf) -> List[PowerMode]:
    """Map a comma-separated ``--power`` value to modes, in order, without duplicates."""
    out: List[PowerMode] = []
    for item in spec.split(","):
        pm = resolve_mode(item, conf)
        if pm.id not in [p.id for p in out]:
            out.append(pm)
    return out


def read_status_file(root: str = "/") -> Optional[int]:
    """Current mode ID from ``/var/lib/nvpmodel/status`` (``pmode:0002``), readable without root."""
    try:  # undecodable bytes replaced; an ID has at most 9 digits (a longer one is no ID: None)
        with open(os.path.join(root, STATUS_FILE), encoding="utf-8", errors="replace") as f:
            m = re.search(r"pmode\s*:\s*([0-9]{1,9})(?![0-9])", f.read(4096))
    except OSError:
        return None
    return int(m.group(1)) if m else None


class NvpModel:
    """Run the ``nvpmodel`` program: query, switch (refusing reboot-gated modes), restore.

    Every call has a timeout and gets ``no`` on stdin. Without root, a failed switch is retried
    through ``sudo -n`` (never prompts) and then reported with :data:`PERMISSION_HINT`.
    """

    def __init__(
        self,
        conf: Optional[NvpConf] = None,
        *,
        executable: Optional[str] = None,
        timeout_s: float = 30.0,
        root: str = "/",
    ) -> None:
        self.conf = conf
        self.executable = executable or shutil.which("nvpmodel")
        self.timeout_s = timeout_s
        self.root = root
        self._prefix: List[str] = []

    @property
    def available(self) -> bool:
        return self.executable is not None

    def _run(self, args: Sequence[str], prefix: Optional[List[str]] = None) -> subprocess.CompletedProcess:
        if self.executable is None:
            raise NvpModelError("nvpmodel is not on PATH: this does not look like a Jetson (JetPack) system")
        return run_tool(
            list(self._prefix if prefix is None else prefix) + [self.executable] + list(args), self.timeout_s
        )

    def query(self) -> Tuple[int, str]:
        """Current mode ``(id, name)`` from ``nvpmodel -q`` (falls back to the status file for the ID)."""
        cp = self._run(["-q"])
        out = cp.stdout or ""
        m = _QUERY_NAME_RE.search(out)
        if cp.returncode != 0 or m is None:
            sid = read_status_file(self.root)
            if sid is not None:
                name = self.conf.modes[sid].name if self.conf and sid in self.conf.modes else f"ID{sid}"
                return sid, name
            raise NvpModelError(f"`nvpmodel -q` failed (exit {cp.returncode}): {out.strip()[-300:]}")
        name = m.group(1)
        after = out[m.end() :]
        idm = re.search(r"^\s*([0-9]{1,9})\s*$", after, re.MULTILINE)  # a longer number is no mode ID
        if idm is not None:
            return int(idm.group(1)), name
        if self.conf is not None and self.conf.by_name(name) is not None:
            return self.conf.by_name(name).id, name  # type: ignore[union-attr]
        raise NvpModelError(f"`nvpmodel -q` printed no mode ID: {out.strip()[-300:]}")

    def set_mode(self, mode_id: int, *, verify: bool = True) -> Tuple[int, str]:
        """Switch to ``mode_id`` and verify with ``-q``; returns the verified ``(id, name)``.

        Raises :class:`RebootRequiredError` (before running anything when the conf shows a mask change,
        or when nvpmodel asks anyway; it is answered ``no``) and :class:`PermissionHintError`.
        """
        cur_id, cur_name = self.query()
        if cur_id == mode_id:
            return cur_id, cur_name
        if self.conf is not None and self.conf.needs_reboot(cur_id, mode_id):
            raise RebootRequiredError(self.reboot_message(cur_id, mode_id))
        cp = self._run(["-m", str(mode_id)])
        out = cp.stdout or ""
        if _REBOOT_RE.search(out):
            raise RebootRequiredError(self.reboot_message(cur_id, mode_id, answered=True))
        if cp.returncode != 0:
            if _PERMISSION_RE.search(out) or _is_not_root():
                if not self._prefix and _is_not_root() and shutil.which("sudo"):
                    cp2 = self._run(["-m", str(mode_id)], prefix=["sudo", "-n"])
                    if cp2.returncode == 0 and not _REBOOT_RE.search(cp2.stdout or ""):
                        self._prefix = ["sudo", "-n"]
                        return self.query() if verify else (mode_id, "")
                raise PermissionHintError(
                    f"`nvpmodel -m {mode_id}` failed: {out.strip()[-200:]}\n{PERMISSION_HINT}"
                )
            raise NvpModelError(
                f"`nvpmodel -m {mode_id}` failed (exit {cp.returncode}): {out.strip()[-300:]}"
            )
        if not verify:
            return mode_id, ""
        got = self.query()
        if got[0] != mode_id:
            raise NvpModelError(
                f"asked nvpmodel for mode {mode_id} but `nvpmodel -q` reports {got[1]} ({got[0]})"
            )
        return got

    def reboot_message(self, cur_id: int, mode_id: int, answered: bool = False) -> str:
        def nm(i: int) -> str:
            return f"{self.conf.modes[i].name} (ID {i})" if self.conf and i in self.conf.modes else f"ID {i}"

        how = (
            "nvpmodel asked for a reboot and was answered no" if answered else "its power-gating mask differs"
        )
        return (
            f"switching from {nm(cur_id)} to {nm(mode_id)} needs a reboot ({how}); nano-bench does not "
            f"reboot the board. Switch by hand (sudo nvpmodel -m {mode_id}, answer YES, reboot) and run "
            f"nano-bench again with --power {mode_id} (or without --power)."
        )


def run_tool(cmd: List[str], timeout_s: float) -> subprocess.CompletedProcess:
    """Run a board tool with ``no`` on stdin and a timeout; stdout and stderr merged into ``stdout``."""
    try:
        return subprocess.run(
            cmd,
            input="no\n",
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
            start_new_session=True,  # a second Ctrl-C at the terminal must not kill a restore
        )
    except subprocess.TimeoutExpired as e:
        raise NvpModelError(
            f"`{' '.join(cmd)}` did not finish in {timeout_s:g} s (waiting on a prompt?)"
        ) from e
    except OSError as e:
        raise NvpModelError(f"cannot run `{' '.join(cmd)}`: {e.strerror or e}") from e


def _is_not_root() -> bool:
    geteuid = getattr(os, "geteuid", None)
    return bool(geteuid and geteuid() != 0)
