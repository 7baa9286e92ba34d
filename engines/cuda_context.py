"""The CUDA device's primary context through pycuda, retained once and released without leaving a trace.

A CUDA context is current per thread. pycuda's ``autoinit`` creates a context for the importing thread
only (the common "invalid device context" when inference runs in another thread); the primary context
is the one the CUDA runtime and TensorRT use, so retaining it shares their state. :class:`PrimaryContext`
retains it once; ``with ctx:`` makes it current in the calling thread (any thread) and restores what
was current before.

Releasing is the delicate part. pycuda's ``Context.detach()`` on a retained primary context calls
``cuDevicePrimaryCtxRelease``, which never pops the context from the driver's per-thread stack:

* when the context is current in pycuda's stack (any thread), detach releases it and drops it from
  pycuda's stack, but the driver stack keeps it (and pycuda re-pushes whatever was under it on top);
* when it is not current, detach pushes it (driver only), releases and does not pop; in a thread other
  than the one that retained it, detach does nothing at all (the retain leaks).

No pycuda call pops a driver entry that pycuda itself did not push, so :meth:`PrimaryContext.release`
makes the context current (the first case, which works in every thread), detaches, and then puts the
driver stack back itself with ``cuCtxPopCurrent``/``cuCtxPushCurrent`` from ``libcuda`` (ctypes):
the thread's stack ends exactly as it was found.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any, List


def _load_libcuda() -> Any:
    """The CUDA driver library (a stable C ABI; pycuda links the same one)."""
    return ctypes.CDLL("libcuda.so.1")


class DriverContextStack:
    """The calling thread's CUDA driver context stack, for the entries pycuda leaves behind."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            raise RuntimeError(f"CUDA driver call {what} failed with CUresult {rc}")

    def current(self) -> int:
        """Handle of the context on top of this thread's stack (0: none)."""
        h = ctypes.c_void_p()
        self._check(self._lib.cuCtxGetCurrent(ctypes.byref(h)), "cuCtxGetCurrent")
        return int(h.value or 0)

    def pop(self) -> int:
        """Pop this thread's current context; returns its handle."""
        h = ctypes.c_void_p()
        self._check(self._lib.cuCtxPopCurrent_v2(ctypes.byref(h)), "cuCtxPopCurrent")
        return int(h.value or 0)

    def push(self, handle: int) -> None:
        self._check(self._lib.cuCtxPushCurrent_v2(ctypes.c_void_p(handle)), "cuCtxPushCurrent")


class PrimaryContext:
    """Device ``device``'s primary CUDA context, retained for the lifetime of this object.

    ``with ctx: ...`` pushes it in the calling thread and pops it on exit (re-entrant, any thread);
    pycuda allocations made inside belong to it. :meth:`release` (alias :meth:`detach`) gives the retain
    back; it is idempotent, works from any thread and leaves that thread's context stack as found.
    Raises :class:`~yolo_nano.engines.device.TensorRTUnavailable` when pycuda is missing.
    """

    def __init__(self, device: int = 0) -> None:
        try:
            import pycuda.driver as cuda
        except ImportError as e:
            from .device import TensorRTUnavailable  # device.py re-exports this class: import late

            raise TensorRTUnavailable(
                f"pycuda is required to run TensorRT engines from Python (`pip install pycuda` with "
                f"/usr/local/cuda/bin on PATH): {e}"
            ) from e
        self._cuda = cuda
        self._lock = threading.Lock()
        self.device = int(device)
        cuda.init()
        self._driver = DriverContextStack(_load_libcuda())
        self._ctx: Any = cuda.Device(self.device).retain_primary_context()
        self.handle = int(self._ctx.handle)

    @property
    def released(self) -> bool:
        return self._ctx is None

    def __enter__(self) -> PrimaryContext:
        ctx = self._ctx
        if ctx is None:
            raise RuntimeError(f"the primary context of CUDA device {self.device} was released")
        ctx.push()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._cuda.Context.pop()

    def release(self) -> None:
        """Give the retain back (after everything allocated in the context was freed).

        Not from inside ``with ctx:`` of the same object: the pop on its exit would take another entry.
        """
        with self._lock:
            ctx, self._ctx = self._ctx, None
        if ctx is None:
            return
        ctx.push()  # current in pycuda's stack: detach releases from any thread
        ctx.detach()
        self._unwind_driver_stack()

    detach = release  # the pycuda name the callers used; same safe behaviour

    def _unwind_driver_stack(self) -> None:
        # After detach the driver stack is [..., ours, (the context pycuda re-pushed, if any)]: take
        # ours out and put back what lay above it. (Another holder of the same primary context has the
        # same handle; popping either entry leaves the same stack.)
        above: List[int] = []
        for _ in range(2):
            if self._driver.current() == 0:
                break
            top = self._driver.pop()
            if top == self.handle:
                break
            above.append(top)
        for h in reversed(above):
            self._driver.push(h)

    def __repr__(self) -> str:
        state = "released" if self.released else "retained"
        return f"PrimaryContext(device={self.device}, {state})"
