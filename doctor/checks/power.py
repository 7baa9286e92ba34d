"""Power: nvpmodel found, its conf parsed (modes and budgets), the current mode, whether this user may
switch modes (asked without switching anything), jetson_clocks, the INA3221 rails (one reading each),
jtop. Everything through :mod:`yolo_nano.jetson`, under ``--sysfs-root`` and ``--nvpmodel-conf``."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from typing import Any, List, Optional, Tuple

from yolo_nano.jetson.clocks import JetsonClocks
from yolo_nano.jetson.control import load_conf
from yolo_nano.jetson.nvpmodel import PERMISSION_HINT, ConfError, NvpModel, NvpModelError, read_status_file
from yolo_nano.jetson.power import Ina3221Hwmon, Ina3221Iio, board_total

from ..result import Check, Context, check, failed, missing, not_here, ok

TOOL_TIMEOUT_S = 10.0
JTOP_TIMEOUT_S = 10.0
NVPMODEL_FIX = (
    "nvpmodel ships with JetPack in /usr/sbin: put /usr/sbin on PATH, or reinstall it "
    "(sudo apt install --reinstall nvidia-l4t-tools)"
)
JETSON_CLOCKS_FIX = "jetson_clocks ships with JetPack in /usr/bin: reinstall it (sudo apt install --reinstall nvidia-l4t-tools)"
JTOP_FIX = (
    "start the service (sudo systemctl restart jtop.service) and add yourself to the jtop group "
    "(sudo usermod -aG jtop $USER, then log in again)"
)


@check("nvpmodel")
def nvpmodel(ctx: Context) -> Check:
    path = shutil.which("nvpmodel")
    if path:
        return ok("nvpmodel", path)
    if ctx.on_jetson:
        return missing("nvpmodel", "not on PATH", NVPMODEL_FIX)
    return not_here("nvpmodel", "not on a Jetson")


def _mode_text(m: Any) -> str:
    return f"{m.id}={m.name}"


@check("nvpmodel conf")
def conf(ctx: Context) -> Check:
    given = ctx.options.nvpmodel_conf
    if not given and not ctx.on_jetson:
        return not_here("nvpmodel conf", "not on a Jetson")
    try:
        parsed = load_conf(ctx.root, given)
    except ConfError as e:
        return failed(
            "nvpmodel conf",
            str(e),
            "pass the board's conf with --nvpmodel-conf /etc/nvpmodel/<board>.conf, or reinstall nvidia-l4t-tools",
        )
    ctx.found["conf"] = parsed
    modes = sorted(parsed.modes.values(), key=lambda m: m.id)
    budgets = sorted({m.budget_w for m in modes if m.budget_w is not None})
    default = parsed.modes.get(parsed.default_id) if parsed.default_id is not None else None
    detail = (
        f"{len(modes)} modes ({', '.join(_mode_text(m) for m in modes)}); budgets "
        f"{', '.join(f'{b:g}W' for b in budgets) or 'none'}; default "
        + (_mode_text(default) if default else "not set")
    )
    return ok(
        "nvpmodel conf",
        detail,
        path=parsed.path,
        default_id=parsed.default_id,
        modes=[
            {"id": m.id, "name": m.name, "budget_w": m.budget_w, "online_cpus": m.online_cpus,
             "gpu_max_hz": m.gpu_max_hz, "cpu_max_khz": m.cpu_max_khz}
            for m in modes
        ],
    )  # fmt: skip


@check("power mode")
def current_mode(ctx: Context) -> Check:
    parsed = ctx.found.get("conf")
    path = shutil.which("nvpmodel")
    if path is None:
        sid = read_status_file(ctx.root) if ctx.on_jetson else None
        if sid is None:
            return not_here("power mode", "no nvpmodel (see above)" if ctx.on_jetson else "not on a Jetson")
        name = parsed.modes[sid].name if parsed and sid in parsed.modes else f"ID{sid}"
        return ok("power mode", f"{sid}={name} (from /var/lib/nvpmodel/status)", id=sid, mode=name)
    try:
        mode_id, name = NvpModel(parsed, executable=path, timeout_s=TOOL_TIMEOUT_S, root=ctx.root).query()
    except NvpModelError as e:
        return failed("power mode", str(e), "run `nvpmodel -q` by hand and attach its output and the report")
    budget = parsed.modes[mode_id].budget_w if parsed and mode_id in parsed.modes else None
    detail = f"{mode_id}={name}" + (f" ({budget:g} W budget)" if budget else "")
    return ok("power mode", detail, id=mode_id, mode=name, budget_w=budget)


def _run_quiet(cmd: List[str]) -> bool:
    """True when ``cmd`` exits 0 (never prompts: stdin closed, a timeout)."""
    try:
        cp = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=TOOL_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return cp.returncode == 0


def switch_permission(tools: List[str], is_root: Optional[bool] = None) -> Tuple[bool, str]:
    """Whether this user may switch power modes and pin clocks, asked without changing anything:
    root, passwordless sudo (``sudo -n true``), or a sudoers NOPASSWD rule for each of ``tools``
    (``sudo -n -l TOOL`` lists a command without running it). Returns ``(allowed, how)``."""
    if is_root is None:
        geteuid = getattr(os, "geteuid", None)
        is_root = bool(geteuid and geteuid() == 0)
    if is_root:
        return True, "running as root"
    sudo = shutil.which("sudo")
    if sudo is None:
        return False, "not root, and sudo is not installed"
    if _run_quiet([sudo, "-n", "true"]):
        return True, "passwordless sudo"
    if tools and all(_run_quiet([sudo, "-n", "-l", t]) for t in tools):
        return True, "sudo without a password for " + ", ".join(os.path.basename(t) for t in tools)
    return False, "not root, and sudo asks for a password"


@check("mode switching")
def permission(ctx: Context) -> Check:
    nvp = shutil.which("nvpmodel")
    if nvp is None:
        return not_here("mode switching", "no nvpmodel (see above)" if ctx.on_jetson else "not on a Jetson")
    tools = [nvp] + [t for t in [shutil.which("jetson_clocks")] if t]
    allowed, how = switch_permission(tools)
    if allowed:
        return ok("mode switching", f"allowed ({how}); nothing was switched", how=how)
    return missing("mode switching", how + "; nothing was switched", PERMISSION_HINT, how=how)


@check("jetson_clocks")
def jetson_clocks(ctx: Context) -> Check:
    path = shutil.which("jetson_clocks")
    if path is None:
        if ctx.on_jetson:
            return missing("jetson_clocks", "not on PATH", JETSON_CLOCKS_FIX)
        return not_here("jetson_clocks", "not on a Jetson")
    pinned = JetsonClocks(path, timeout_s=TOOL_TIMEOUT_S).pinned()  # --show: reads, changes nothing
    state = {True: "clocks pinned now", False: "clocks not pinned now", None: "pinned state unknown"}[pinned]
    return ok("jetson_clocks", f"{path}; {state}", pinned=pinned)


@check("INA3221 rails")
def rails(ctx: Context) -> Check:
    source: Any = Ina3221Hwmon.find(ctx.root) or Ina3221Iio.find(ctx.root)
    if source is None:
        if ctx.on_jetson:
            return failed(
                "INA3221 rails",
                f"no INA3221 rails under {os.path.join(ctx.root, 'sys/bus/i2c/drivers/ina3221*')}",
                "the ina3221 driver is not loaded: attach the report (power is then measured through jtop)",
            )
        return not_here("INA3221 rails", "not on a Jetson")
    try:
        reading = source.read()
    except (OSError, ValueError) as e:
        return failed("INA3221 rails", f"{source.name}: found but unreadable ({e})",
                      "the rail files need read permission for this user: attach the report")  # fmt: skip
    _, rule = board_total(reading.rails)
    parts = ", ".join(f"{name} {w:.2f} W" for name, w in reading.rails.items())
    detail = f"{source.name}: {parts}; total {reading.total:.2f} W ({rule})"
    return ok("INA3221 rails", detail, layout=source.name,
              rails_w={k: round(v, 4) for k, v in reading.rails.items()}, total_w=round(reading.total, 4))  # fmt: skip


def _jtop_answers() -> Optional[str]:
    """None when the jtop service answers, else why not (bounded by :data:`JTOP_TIMEOUT_S`)."""
    from yolo_nano.jetson.power import Jtop

    outcome: List[Optional[str]] = []

    def connect() -> None:
        try:
            Jtop().close()
            outcome.append(None)
        except Exception as e:  # jtop raises its own types when the service is down
            outcome.append(f"{type(e).__name__}: {e}")

    t = threading.Thread(target=connect, name="nano-doctor-jtop", daemon=True)
    t.start()
    t.join(JTOP_TIMEOUT_S)
    return outcome[0] if outcome else f"no answer in {JTOP_TIMEOUT_S:g} s"


@check("jtop")
def jtop(ctx: Context) -> Check:
    if not ctx.on_jetson:
        return not_here("jtop", "not on a Jetson")
    if "jetson_stats" not in ctx.found:
        return not_here("jtop", "jetson-stats is not installed (see above)")
    why = _jtop_answers()
    if why is not None:
        return failed("jtop", f"the jtop service does not answer ({why})", JTOP_FIX)
    return ok("jtop", "the jtop service answers")


POWER_CHECKS = [nvpmodel, conf, current_mode, permission, jetson_clocks, rails, jtop]
