"""Run an app at the operating point ``nano-bench --choose`` picked: the file's power mode and clocks, on
the board, conf and model it was chosen for, restored afterwards whatever happens.

    from yolo_nano.jetson import operating_point

    with operating_point("operating-point.json", model="nano-int8.engine") as point:
        run_my_camera_loop(batch=point.batch)      # MODE_15W, clocks as chosen
    # the original mode and clocks are back: normal exit, exception, SIGINT/SIGTERM/SIGHUP/SIGQUIT

Before anything is changed the file is checked against this board: ``board`` (``/proc/device-tree/
model``), ``l4t`` (``/etc/nv_tegra_release``), ``nvpmodel_conf_sha256`` (the conf's sha256: mode IDs
mean what they meant when the point was measured) and, when ``model`` is given, ``model_sha256``. Any
mismatch is :class:`OperatingPointMismatch` naming the field, the file's value and this board's, and
nothing is changed. A host point (``power_mode_id`` null: chosen off a Jetson) sets nothing and just
yields. Mode and clocks are set through :func:`~.control.power_mode` (so one run owns the board, and a
point chosen with ``jetson_clocks`` off refuses clocks pinned before it: ``ClocksPinnedError``).
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Optional

from yolo_nano.core.fileio import read_json_object, sha256_file
from yolo_nano.core.sysfs import sysfs_path

from .board import board_model, l4t_release
from .control import BoardControl, Log, power_mode
from .nvpmodel import DEFAULT_CONF, ConfError, NvpConf, PowerMode, parse_conf

#: ``format`` of operating-point.json (``benchmarks.choose`` writes it).
POINT_FORMAT = "yolo-nano-operating-point"
POINT_FORMAT_VERSION = 1


class OperatingPointError(ValueError):
    """The file is not a usable operating point: unreadable, another format, or a field of the wrong type."""


class OperatingPointMismatch(OperatingPointError):
    """The point was chosen on another board, L4T, nvpmodel conf or model; nothing was changed."""


def _opt(d: Dict[str, Any], key: str, kind: Any, path: str) -> Any:
    v = d.get(key)
    if v is None:
        return None
    if (isinstance(v, bool) and kind is not bool) or not isinstance(v, kind):
        what = {bool: "true/false", int: "a whole number", str: "a string"}.get(kind, "a number")
        raise OperatingPointError(f"{path}: {key} must be {what} or null, got {v!r}")
    return v


@dataclass(frozen=True)
class ChosenPoint:
    """The contents of an operating-point.json (field names as in the result records).

    ``power_mode_id`` None: a host point (nothing to set). ``batch``: images per inference call;
    ``threads``: ONNX Runtime CPU threads (None: its default); ``pace_fps``: the camera rate it was
    chosen for (frames/s); ``late_policy``: ``drop`` or ``queue``. ``fields``: the whole file.
    """

    path: str
    board: Optional[str]
    l4t: Optional[str]
    nvpmodel_conf_sha256: Optional[str]
    power_mode_id: Optional[int]
    power_mode_name: Optional[str]
    jetson_clocks: bool
    model_name: Optional[str]
    model_sha256: Optional[str]
    batch: int
    threads: Optional[int]
    pace_fps: Optional[float]
    late_policy: Optional[str]
    fields: Dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def is_host_point(self) -> bool:
        return self.power_mode_id is None


def load_operating_point(path: str) -> ChosenPoint:
    """Read and type-check an operating-point.json; :class:`OperatingPointError` naming what is wrong."""
    d = read_json_object(path, OperatingPointError, "operating point file")
    if d.get("format") != POINT_FORMAT or d.get("format_version") != POINT_FORMAT_VERSION:
        raise OperatingPointError(
            f"{path}: not an operating point file (format {d.get('format')!r} version "
            f"{d.get('format_version')!r}; expected {POINT_FORMAT!r} version {POINT_FORMAT_VERSION}): "
            "write one with nano-bench --choose"
        )
    batch = _opt(d, "batch", int, path)
    batch = 1 if batch is None else batch
    threads = _opt(d, "threads", int, path)
    pace = _opt(d, "pace_fps", (int, float), path)
    if batch < 1 or (threads is not None and threads < 1):
        raise OperatingPointError(f"{path}: batch and threads must be >= 1, got {batch!r}, {threads!r}")
    if pace is not None and not (math.isfinite(pace) and pace > 0):
        raise OperatingPointError(f"{path}: pace_fps must be a frame rate > 0, got {pace!r}")
    mode_id = _opt(d, "power_mode_id", int, path)
    conf_sha = _opt(d, "nvpmodel_conf_sha256", str, path)
    if mode_id is not None and conf_sha is None:
        raise OperatingPointError(
            f"{path}: power mode {mode_id} without the nvpmodel_conf_sha256 it was measured with: "
            "the mode cannot be checked against this board's conf"
        )
    return ChosenPoint(
        path=path,
        board=_opt(d, "board", str, path),
        l4t=_opt(d, "l4t", str, path),
        nvpmodel_conf_sha256=conf_sha,
        power_mode_id=mode_id,
        power_mode_name=_opt(d, "power_mode_name", str, path),
        jetson_clocks=bool(_opt(d, "jetson_clocks", bool, path)),
        model_name=_opt(d, "model_name", str, path) or _opt(d, "model", str, path),
        model_sha256=_opt(d, "model_sha256", str, path),
        batch=batch,
        threads=threads,
        pace_fps=float(pace) if pace is not None else None,
        late_policy=_opt(d, "late_policy", str, path),
        fields=d,
    )


def _mismatch(point: ChosenPoint, what: str, theirs: Any, ours: Any, fix: str) -> OperatingPointMismatch:
    return OperatingPointMismatch(
        f"{point.path} was chosen for {what} {theirs if theirs is not None else '(none: not a Jetson)'}, "
        f"this is {ours if ours is not None else '(none: not a Jetson)'}; nothing was changed. {fix}"
    )


def check_operating_point(
    point: ChosenPoint,
    nvpmodel_conf: Optional[str] = None,
    sysfs_root: str = "/",
    model: Optional[str] = None,
) -> Optional[PowerMode]:
    """Check ``point`` against this board (and ``model``'s file when given); returns the power mode to
    set (None for a host point). :class:`OperatingPointMismatch` on any difference; changes nothing."""
    rerun = "Choose again from results measured here (nano-bench MODEL... --target-fps N)"
    board = board_model(sysfs_root)
    if board != point.board:
        raise _mismatch(point, "board", point.board, board, rerun)
    l4t = l4t_release(sysfs_root)
    if l4t != point.l4t:
        raise _mismatch(point, "L4T", point.l4t, l4t, rerun + " after an L4T upgrade")
    mode: Optional[PowerMode] = None
    if point.nvpmodel_conf_sha256 is not None:
        conf_path = nvpmodel_conf or sysfs_path(sysfs_root, DEFAULT_CONF)
        if not os.path.exists(conf_path):
            raise OperatingPointMismatch(
                f"{point.path} was chosen with nvpmodel conf sha256 {point.nvpmodel_conf_sha256[:12]}, and "
                f"{conf_path} does not exist; nothing was changed. Pass the board's conf (nvpmodel_conf=, "
                "--nvpmodel-conf)"
            )
        try:
            conf: NvpConf = parse_conf(conf_path)
        except ConfError as e:
            raise OperatingPointMismatch(f"{e}; nothing was changed") from e
        if conf.sha256 != point.nvpmodel_conf_sha256:
            raise _mismatch(point, "nvpmodel conf sha256", point.nvpmodel_conf_sha256[:12],
                            f"{conf.sha256[:12]} ({conf_path})", rerun + " with this conf")  # fmt: skip
        if point.power_mode_id is not None:
            mode = conf.modes.get(point.power_mode_id)
            if mode is None or (point.power_mode_name and mode.name != point.power_mode_name):
                raise _mismatch(point, "power mode", f"{point.power_mode_name} (ID {point.power_mode_id})",
                                f"{mode.name if mode else 'no such mode'} in {conf_path}", rerun)  # fmt: skip
    if model is not None:
        if point.model_sha256 is None:
            raise OperatingPointError(f"{point.path}: no model_sha256 to check {model} against")
        try:
            digest = sha256_file(model)
        except OSError as e:
            raise OperatingPointError(f"cannot read the model {model}: {e.strerror or e}") from e
        if digest != point.model_sha256:
            raise _mismatch(point, "model", f"{point.model_name} (sha256 {point.model_sha256[:12]})",
                            f"{model} (sha256 {digest[:12]})",
                            "Pass the model it was chosen for, or choose again with this one")  # fmt: skip
    return mode


@dataclass
class AppliedPoint:
    """What ``with operating_point(...) as p`` gives: the point (``p.point``: :class:`ChosenPoint`; its
    fields also as ``p.batch``, ``p.threads``, ``p.board`` (the board's name)...) and ``p.control``, the
    :class:`BoardControl` holding the board (None for a host point)."""

    point: ChosenPoint
    control: Optional[BoardControl]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.point, name)


@contextlib.contextmanager
def operating_point(
    path: str,
    nvpmodel_conf: Optional[str] = None,
    sysfs_root: str = "/",
    model: Optional[str] = None,
    *,
    state_dir: Optional[str] = None,
    wait_s: float = 0.0,
    log: Optional[Log] = None,
) -> Iterator[AppliedPoint]:
    """Check ``path`` (an operating-point.json) against this board, conf and ``model`` (a file; None: not
    checked), then run the ``with`` body in its power mode and clocks and restore them afterwards.

    Raises :class:`OperatingPointError` / :class:`OperatingPointMismatch` (nothing changed), and what
    :func:`~.control.power_mode` raises (``RebootRequiredError``, ``PermissionHintError``,
    ``BoardBusyError``, ``ClocksPinnedError``, ``BoardInterrupted`` after a signal).
    """
    point = load_operating_point(path)
    mode = check_operating_point(point, nvpmodel_conf, sysfs_root, model)
    if mode is None:
        yield AppliedPoint(point, None)
        return
    with power_mode(mode, nvpmodel_conf, sysfs_root, point.jetson_clocks, state_dir=state_dir, wait_s=wait_s,
                    log=log) as board:  # fmt: skip
        yield AppliedPoint(point, board)


__all__ = [
    "POINT_FORMAT",
    "POINT_FORMAT_VERSION",
    "AppliedPoint",
    "ChosenPoint",
    "OperatingPointError",
    "OperatingPointMismatch",
    "check_operating_point",
    "load_operating_point",
    "operating_point",
]
