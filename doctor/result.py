"""What one check found (:class:`Check`) and what every check may ask of this machine (:class:`Context`).

A check is a function ``fn(ctx) -> Check | List[Check]`` marked with :func:`check`; :func:`run_check`
runs it, times it and turns an unexpected exception into a ``failed`` line (with the traceback kept for
the report, never printed). Statuses: ``ok``; ``missing`` (something to install or grant); ``failed``
(present but not working); ``n/a`` (not applicable here: not on a Jetson, no GPU); ``skipped``
(``--quick``). Only ``missing`` and ``failed`` make ``nano-doctor`` exit 1.
"""

from __future__ import annotations

import platform
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from yolo_nano.jetson.board import is_jetson

OK = "ok"
MISSING = "missing"
FAILED = "failed"
NA = "n/a"
SKIPPED = "skipped"
STATUSES = (OK, MISSING, FAILED, NA, SKIPPED)
#: Statuses that make the doctor exit 1.
PROBLEMS = (MISSING, FAILED)


@dataclass
class Check:
    """One line of the doctor: ``section`` (``board``, ``software``, ``gpu``, ``power``, ``disk``,
    ``self-test``), ``name``, one of :data:`STATUSES`, ``detail`` (versions, numbers or the reason),
    ``fix`` (what to do; set for ``missing`` and ``failed``, sometimes for ``n/a``), ``data`` (numbers
    and versions for the report), ``seconds`` (how long it took), ``error`` (the traceback of an
    unexpected exception, report only)."""

    name: str
    status: str
    detail: str = ""
    fix: str = ""
    data: Dict[str, Any] = field(default_factory=dict)
    section: str = ""
    seconds: float = 0.0
    error: Optional[str] = None

    @property
    def problem(self) -> bool:
        return self.status in PROBLEMS


def ok(name: str, detail: str, **data: Any) -> Check:
    return Check(name, OK, detail, data=data)


def missing(name: str, detail: str, fix: str, **data: Any) -> Check:
    return Check(name, MISSING, detail, fix, data=data)


def failed(name: str, detail: str, fix: str, **data: Any) -> Check:
    return Check(name, FAILED, detail, fix, data=data)


def not_here(name: str, reason: str, fix: str = "", **data: Any) -> Check:
    """Not applicable here; ``reason`` says why (``not on a Jetson``, ``no GPU``)."""
    return Check(name, NA, reason, fix, data=data)


def skipped(name: str, reason: str = "--quick") -> Check:
    return Check(name, SKIPPED, reason)


CheckFn = Callable[["Context"], Union[Check, List[Check]]]


def check(name: str) -> Callable[[CheckFn], CheckFn]:
    """Mark a check function with the line name used when it raises unexpectedly."""

    def mark(fn: CheckFn) -> CheckFn:
        fn.check_name = name  # type: ignore[attr-defined]
        return fn

    return mark


def run_check(fn: CheckFn, ctx: Context, section: str) -> List[Check]:
    """Run one check function: its lines, each timed and put in ``section``; an exception becomes a
    ``failed`` line naming it (a bug in the doctor or an unforeseen machine: the report keeps the trace)."""
    t0 = time.perf_counter()
    try:
        out = fn(ctx)
        results = out if isinstance(out, list) else [out]
    except Exception as e:  # one broken check must not hide the others
        name = getattr(fn, "check_name", fn.__name__)
        results = [
            Check(
                name,
                FAILED,
                f"the check itself failed: {type(e).__name__}: {e}",
                "attach the report (nano-doctor --report doctor.json) to an issue: it holds the traceback",
                error=traceback.format_exc(),
            )
        ]
    seconds = (time.perf_counter() - t0) / max(len(results), 1)
    for r in results:
        r.section = section
        r.seconds = round(seconds, 3)
    return results


@dataclass
class Options:
    """The command line: ``model`` (None: the embedded default model), ``quick`` (no self-tests),
    ``sysfs_root`` (``/``; a recorded board tree in tests), ``nvpmodel_conf`` (None: the board's)."""

    model: Optional[str] = None
    quick: bool = False
    sysfs_root: str = "/"
    nvpmodel_conf: Optional[str] = None


class Context:
    """What checks share, each found once: whether this is a Jetson, the GPU, TensorRT. Later checks
    read what earlier ones found (``found``: e.g. the DLA check skips when TensorRT was missing)."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.root = options.sysfs_root
        self.on_jetson = is_jetson(self.root)
        self._gpu: Optional[Tuple[Any, str]] = None
        self._tensorrt: Optional[Tuple[Any, str, str]] = None
        self.found: Dict[str, Any] = {}

    @property
    def machine(self) -> str:
        return f"{platform.machine()} {platform.system()}"

    def gpu(self) -> Tuple[Any, str]:
        """``(GpuInfo, "")`` for CUDA device 0, or ``(None, why not)``."""
        if self._gpu is None:
            from yolo_nano.engines.device import GpuUnavailable, query_gpu

            try:
                self._gpu = (query_gpu(0), "")
            except GpuUnavailable as e:
                self._gpu = (None, str(e))
        return self._gpu

    @property
    def has_gpu(self) -> bool:
        return self.gpu()[0] is not None

    @property
    def gpu_stack_applies(self) -> bool:
        """TensorRT, pycuda and CUDA are expected here: a Jetson, or any machine with a CUDA GPU."""
        return self.on_jetson or self.has_gpu

    def tensorrt(self) -> Tuple[Any, str, str]:
        """``(tensorrt module, "", "")`` when a supported TensorRT imports, else ``(None, why not,
        status)``: ``missing`` (not installed, or stubs only) or ``failed`` (an unsupported release, or
        installed but its libraries do not load)."""
        if self._tensorrt is None:
            from yolo_nano.engines.device import import_tensorrt
            from yolo_nano.engines.trt_versions import UnsupportedTensorRT

            try:
                self._tensorrt = (import_tensorrt(), "", "")
            except UnsupportedTensorRT as e:
                self._tensorrt = (None, str(e), FAILED)
            except ImportError as e:  # TensorRTUnavailable: its message starts with the install step
                self._tensorrt = (None, str(e).rsplit(": ", 1)[-1], MISSING)
            except OSError as e:
                self._tensorrt = (None, f"tensorrt is installed but does not load: {e}", FAILED)
        return self._tensorrt
