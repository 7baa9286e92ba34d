"""The points of a sweep as plain data: models x power modes x jetson_clocks x batch x ONNX Runtime threads.

    points = expand_sweep(["nano-fp16.engine", "nano-int8.engine"], modes=[m15, m30],
                          batches=parse_batches("1,2,4"), jetson_clocks=parse_jetson_clocks("both"))

On a Jetson the axes are power modes and ``jetson_clocks`` (off, on); off a Jetson there is no mode to
switch and the axes are the model files themselves (FP32 ONNX, the Q/DQ INT8 ONNX: ``precision``) and
ONNX Runtime's thread count. Points come mode-major (a mode switch is slow and needs a warm-up), then
clocks, then model, batch and threads, so a runner switches the board as rarely as possible. Running them
is the caller's job; this module only builds and validates the list.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

from yolo_nano.core.cli import CommandError
from yolo_nano.core.modelfiles import is_engine_path
from yolo_nano.jetson.nvpmodel import PowerMode

from .pacing import DEFAULT_LATE_POLICY, PacingError, check_pace

JETSON_CLOCKS_CHOICES = {"off": (False,), "on": (True,), "both": (False, True)}
MAX_BATCH = 256
MAX_THREADS = 1024


class SweepError(CommandError):
    """A bad sweep flag value (exit 2); the message names the flag and what it accepts."""


@dataclass(frozen=True)
class OperatingPoint:
    """One point of a sweep: what to set and what to run. Field names are those of the result records.

    ``power_mode_id``/``power_mode_name`` None: leave the mode as it is (off a Jetson, or no ``--power``).
    ``jetson_clocks``: pin clocks at the mode's maximum for this point. ``threads`` None: ONNX Runtime's
    default. ``precision``: what the model file computes in (``fp32``, ``int8-qdq``, ``fp16``, ``int8``,
    with ``-dla0``/``-dla1`` for engines on a DLA core), None when unknown. ``pace_fps`` None: flat out.
    """

    model: str
    power_mode_id: Optional[int] = None
    power_mode_name: Optional[str] = None
    jetson_clocks: bool = False
    batch: int = 1
    backend: str = "auto"
    precision: Optional[str] = None
    threads: Optional[int] = None
    pace_fps: Optional[float] = None
    late_policy: Optional[str] = None

    @property
    def label(self) -> str:
        return point_label(asdict(self))

    def fields(self) -> Dict[str, Any]:
        """The record fields this point sets (``model`` as given, the rest as is)."""
        return asdict(self)


def point_label(record: Mapping[str, Any], with_pace: bool = True) -> str:
    """A short name for a point or result record: ``nano-int8 MODE_15W +clocks b2 @30fps`` / ``nano fp32 t4 b1``."""
    model = os.path.basename(str(record.get("model_name") or record.get("model") or "?"))
    parts = [os.path.splitext(model)[0] or model]
    if record.get("power_mode_name"):
        parts.append(str(record["power_mode_name"]))
    elif record.get("precision"):
        parts.append(str(record["precision"]))
    if record.get("jetson_clocks"):
        parts.append("+clocks")
    if record.get("threads"):
        parts.append(f"t{record['threads']}")
    parts.append(f"b{record.get('batch') or 1}")
    if with_pace and record.get("pace_fps"):
        parts.append(
            f"@{float(record['pace_fps']):g}fps"
            + ("" if record.get("late_policy") in (None, "drop") else "/queue")
        )
    return " ".join(parts)


def _int_list(value: str, flag: str, low: int, high: int, example: str) -> List[int]:
    items = [s.strip() for s in str(value).split(",")]
    out: List[int] = []
    for s in items:
        if not s:
            raise SweepError(f"{flag} {value!r}: an empty item; pass a comma list like {example}")
        try:
            n = int(s)
        except ValueError:
            raise SweepError(
                f"{flag} {value!r}: {s!r} is not a whole number; pass a comma list like {example}"
            ) from None
        if not low <= n <= high:
            raise SweepError(f"{flag} {value!r}: {n} is out of range {low}..{high}")
        if n in out:
            raise SweepError(f"{flag} {value!r}: {n} is listed twice")
        out.append(n)
    return out


def parse_batches(value: str) -> List[int]:
    """``--batch 1,2,4`` -> ``[1, 2, 4]`` (whole numbers 1..256, no repeats, in the order given)."""
    return _int_list(value, "--batch", 1, MAX_BATCH, "1,2,4")


def parse_threads(value: str) -> List[int]:
    """``--threads 1,2,4`` (ONNX Runtime intra-op threads) -> ``[1, 2, 4]``."""
    return _int_list(value, "--threads", 1, MAX_THREADS, "1,2")


def parse_jetson_clocks(value: Optional[str]) -> List[bool]:
    """``--jetson-clocks [on|off|both]``: None (flag absent) or ``off`` -> [False]; ``on`` -> [True];
    ``both`` -> [False, True] (off first: pinning is then undone by restoring the stored state)."""
    if value is None:
        return [False]
    key = str(value).strip().lower()
    if key not in JETSON_CLOCKS_CHOICES:
        raise SweepError(f"--jetson-clocks {value!r}: choose on, off or both")
    return list(JETSON_CLOCKS_CHOICES[key])


def model_precision(path: str) -> Optional[str]:
    """What a model file computes in: ``fp32``/``int8-qdq`` for ONNX (Q/DQ nodes present), the identity
    record's precision for an engine (``-dla0`` when built for DLA core 0); None when it cannot be read."""
    try:
        if is_engine_path(path):
            from yolo_nano.engines.identity import read_record

            ident = read_record(path)  # EngineRecordError is a ValueError
            return ident.precision + (f"-dla{ident.dla_core}" if ident.dla_core is not None else "")
        from yolo_nano.calibration.quantize import is_qdq_model

        return "int8-qdq" if is_qdq_model(path) else "fp32"
    except (OSError, ValueError):
        return None


def expand_sweep(
    models: Sequence[str],
    *,
    modes: Sequence[Optional[PowerMode]] = (None,),
    batches: Sequence[int] = (1,),
    jetson_clocks: Sequence[bool] = (False,),
    threads: Sequence[Optional[int]] = (None,),
    backend: str = "auto",
    precisions: Optional[Mapping[str, Optional[str]]] = None,
    pace_fps: Optional[float] = None,
    late_policy: Optional[str] = None,
) -> List[OperatingPoint]:
    """The cross product, mode-major: modes x jetson_clocks x models x batches x threads.

    ``modes``: resolved power modes (``resolve_modes``), or ``[None]`` to leave the mode alone.
    ``precisions``: model path -> precision label (see :func:`model_precision`). ``threads`` other than
    None only apply to ONNX models (ONNX Runtime); ``pace_fps`` None makes flat-out points.
    """
    if not models:
        raise SweepError("no model to sweep: pass at least one MODEL")
    for name, values in (("MODEL", models), ("--power", modes), ("--batch", batches),
                         ("--jetson-clocks", jetson_clocks), ("--threads", threads)):  # fmt: skip
        if not len(values):
            raise SweepError(f"{name}: an empty list")
        keys = [(v.id if isinstance(v, PowerMode) else v) for v in values]
        if len(set(keys)) != len(keys):
            raise SweepError(f"{name}: the same value is listed twice ({', '.join(map(str, keys))})")
    for b in batches:
        if not isinstance(b, int) or not 1 <= b <= MAX_BATCH:
            raise SweepError(f"--batch: {b!r} is not a whole number in 1..{MAX_BATCH}")
    for t in threads:
        if t is not None and (not isinstance(t, int) or not 1 <= t <= MAX_THREADS):
            raise SweepError(f"--threads: {t!r} is not a whole number in 1..{MAX_THREADS}")
    if any(t is not None for t in threads):
        engines = [m for m in models if is_engine_path(m)]
        if engines:
            raise SweepError(
                f"--threads sets ONNX Runtime's CPU threads; {os.path.basename(engines[0])} is a TensorRT "
                "engine: sweep threads over .onnx models only"
            )
    if pace_fps is not None:
        try:
            check_pace(pace_fps, late_policy or DEFAULT_LATE_POLICY)
        except PacingError as e:
            raise SweepError(str(e)) from None
        late_policy = late_policy or DEFAULT_LATE_POLICY
    precisions = precisions or {}
    return [
        OperatingPoint(
            model=model,
            power_mode_id=mode.id if mode is not None else None,
            power_mode_name=mode.name if mode is not None else None,
            jetson_clocks=bool(clk),
            batch=batch,
            backend=backend,
            precision=precisions.get(model),
            threads=thr,
            pace_fps=float(pace_fps) if pace_fps is not None else None,
            late_policy=late_policy if pace_fps is not None else None,
        )
        for mode in modes
        for clk in jetson_clocks
        for model in models
        for batch in batches
        for thr in threads
    ]


__all__ = [
    "JETSON_CLOCKS_CHOICES",
    "OperatingPoint",
    "SweepError",
    "expand_sweep",
    "model_precision",
    "parse_batches",
    "parse_jetson_clocks",
    "parse_threads",
    "point_label",
]
