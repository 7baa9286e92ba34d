"""A stand-in for ``pycuda.driver`` and the few ``libcuda.so.1`` calls we make through ctypes, keeping
pycuda's real semantics (from its ``src/cpp/cuda.hpp``) so lifecycle bugs show up without a GPU:

* two stacks per thread: the driver's context stack and pycuda's own. pycuda keeps the driver stack at
  most one of its entries deep: ``Context.push()`` pops the driver's top first when pycuda's stack is
  not empty; ``Context.pop()`` pops the driver and pushes pycuda's new top;
* ``Device(n).retain_primary_context()`` retains (refcount per device) and remembers the calling
  thread; ``detach()`` of the current context releases it and re-pushes the context under it without
  popping the driver; of a non-current one: same thread -> driver push + release, no pop; another
  thread -> nothing (the retain leaks);
* allocations (``mem_alloc``, ``pagelocked_empty``, ``Stream``) need a current pycuda context and
  belong to it; freeing activates it like pycuda's ``scoped_context_activation``: current -> freed;
  dead context, or another thread's context that is not current here -> skipped silently (counted:
  ``cleanup_skipped``), so the memory stays allocated;
* device memory is real host memory behind fake pointers: :meth:`DriverState.view` is how the fake
  TensorRT reads and writes it; mapped pinned memory has one buffer behind both pointers.

``install(monkeypatch)`` puts a fresh ``pycuda.driver`` into ``sys.modules`` and routes
``ctypes.CDLL("libcuda.so.1")`` to the same state; it returns the :class:`DriverState` with the counts.

(About 500 lines: pycuda's context, allocation and cleanup rules are one interlocking model, kept in
one file so each rule sits next to the ones it depends on.)
"""

from __future__ import annotations

import collections
import ctypes
import itertools
import sys
import threading
import types
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

CUDA_ERROR_INVALID_CONTEXT = 201


class Error(Exception):
    pass


class LogicError(Error):
    pass


class CudaMemoryError(Error):
    """pycuda.driver.MemoryError (named so here to keep the builtin visible)."""


@dataclass
class FakeGpu:
    name: str = "Fake Xavier"
    compute_capability: Tuple[int, int] = (7, 2)
    integrated: bool = True
    can_map_host_memory: bool = True


class DriverState:
    """The simulated driver: contexts, per-thread stacks, memory and the counts the tests check.

    ``counts`` keys: retain, release, driver_push, driver_pop, mem_alloc, mem_free, host_alloc,
    host_free, stream_create, stream_destroy, cleanup_skipped. ``fail_on[name] = k`` makes the k-th
    call of ``mem_alloc``/``pagelocked_empty``/``Stream`` (1-based) raise pycuda's MemoryError.
    """

    def __init__(self, gpus: List[FakeGpu]) -> None:
        self.gpus = gpus
        self.lock = threading.RLock()
        self.initialized = False
        self.refcount: Dict[int, int] = {i: 0 for i in range(len(gpus))}
        self.driver_stacks: Dict[int, List[int]] = collections.defaultdict(list)
        self.pycuda_stacks: Dict[int, List[Any]] = collections.defaultdict(list)
        self.counts: collections.Counter = collections.Counter()
        self.calls: collections.Counter = collections.Counter()
        self.fail_on: Dict[str, int] = {}
        self.live: Dict[int, str] = {}  # token -> kind, for everything allocated and not freed
        self.tokens = itertools.count(1)
        self._memory: Dict[int, np.ndarray] = {}  # base pointer -> uint8 buffer
        self._next_ptr = 0x7F00_0000_0000
        self._next_stream = 0x5000

    # -- handles ------------------------------------------------------------------------------
    @staticmethod
    def context_handle(device: int) -> int:
        return 0xC0_0000 + 0x100 * device

    def device_of(self, handle: int) -> Optional[int]:
        for d in self.refcount:
            if self.context_handle(d) == handle:
                return d
        return None

    # -- per-thread stacks --------------------------------------------------------------------
    def driver_stack(self, thread: Optional[int] = None) -> List[int]:
        """A copy of a thread's driver context stack (bottom first)."""
        return list(self.driver_stacks[thread if thread is not None else threading.get_ident()])

    def pycuda_stack(self, thread: Optional[int] = None) -> List[Any]:
        return list(self.pycuda_stacks[thread if thread is not None else threading.get_ident()])

    def _drv(self) -> List[int]:
        return self.driver_stacks[threading.get_ident()]

    def _py(self) -> List[Any]:
        return self.pycuda_stacks[threading.get_ident()]

    def drv_push(self, handle: int) -> None:
        self._drv().append(handle)
        self.counts["driver_push"] += 1

    def drv_pop(self) -> int:
        stack = self._drv()
        if not stack:
            raise LogicError("cuCtxPopCurrent failed: invalid device context")
        self.counts["driver_pop"] += 1
        return stack.pop()

    def current_context_active(self) -> bool:
        """True when this thread's driver stack has a live context on top (what TensorRT needs)."""
        stack = self._drv()
        if not stack:
            return False
        d = self.device_of(stack[-1])
        return d is not None and self.refcount[d] > 0

    # -- memory -------------------------------------------------------------------------------
    def _new_pointer(self, nbytes: int) -> int:
        ptr = self._next_ptr
        self._next_ptr += (max(nbytes, 1) + 0xFFFF) & ~0xFFF
        return ptr

    def map_memory(self, buf: np.ndarray) -> int:
        ptr = self._new_pointer(buf.nbytes)
        self._memory[ptr] = buf
        return ptr

    def unmap_memory(self, ptr: int) -> None:
        self._memory.pop(ptr, None)

    def view(self, ptr: int, nbytes: int) -> np.ndarray:
        """The ``nbytes`` of simulated device memory at ``ptr`` as a writable uint8 array."""
        for base, buf in self._memory.items():
            if base <= ptr and ptr + nbytes <= base + buf.nbytes:
                return buf[ptr - base : ptr - base + nbytes]
        raise LogicError(f"invalid device pointer {ptr:#x} (+{nbytes} bytes): not allocated")

    def leaks(self) -> List[str]:
        """Kinds of the resources still allocated."""
        return sorted(self.live.values())

    def maybe_fail(self, what: str) -> None:
        self.calls[what] += 1
        if self.fail_on.get(what) == self.calls[what]:
            raise CudaMemoryError(f"{what} failed: out of memory")


def _make_module(state: DriverState) -> types.ModuleType:
    mod = types.ModuleType("pycuda.driver")
    mod.__dict__.update(Error=Error, LogicError=LogicError, MemoryError=CudaMemoryError)

    def init(flags: int = 0) -> None:
        state.initialized = True

    def require_init(what: str) -> None:
        if not state.initialized:
            raise LogicError(f"{what} failed: initialization error")

    def current_context(except_: Any = None) -> Any:
        stack = state._py()
        while stack:
            top = stack[-1]
            if top is not except_ and top._valid:
                return top
            stack.pop()
        return None

    def prepare_context_switch() -> None:
        if state._py():
            state.drv_pop()

    def context_push(ctx: Any) -> None:
        prepare_context_switch()
        state.drv_push(ctx._handle)
        state._py().append(ctx)

    class Context:
        def __init__(self, handle: int, device: int) -> None:
            self._handle = handle
            self._device = device
            self._valid = True
            self._thread = threading.get_ident()

        @property
        def handle(self) -> int:
            return self._handle

        def push(self) -> None:
            context_push(self)

        @staticmethod
        def pop() -> None:
            with state.lock:
                prepare_context_switch()
                stack = state._py()
                if not stack:
                    raise LogicError(
                        "context::pop failed: invalid device context - cannot pop non-current context"
                    )
                stack.pop()
                cur = current_context()
                if cur is not None:
                    state.drv_push(cur._handle)

        @staticmethod
        def get_current() -> Any:
            return current_context()

        @staticmethod
        def synchronize() -> None:
            pass

        def _release(self) -> None:  # detach_internal of a primary context: cuDevicePrimaryCtxRelease
            state.refcount[self._device] -= 1
            state.counts["release"] += 1

        def detach(self) -> None:
            with state.lock:
                if not self._valid:
                    raise LogicError(
                        "context::detach failed: invalid device context - cannot detach from invalid context"
                    )
                active = current_context() is self
                if active:
                    self._release()
                elif self._thread == threading.get_ident():
                    state.drv_push(self._handle)
                    self._release()  # "pop is implicit in detach": not for a primary context
                # else: another thread's context, not current here: nothing happens, the retain leaks
                self._valid = False
                if active:
                    new_active = current_context(self)
                    if new_active is not None:
                        state.drv_push(new_active._handle)

        def __del__(self) -> None:  # ~context: detach when still valid
            try:
                if self._valid:
                    self.detach()
            except Exception:
                pass

    class Device:
        def __init__(self, ordinal: int) -> None:
            require_init("cuDeviceGet")
            if not 0 <= ordinal < len(state.gpus):
                raise LogicError("cuDeviceGet failed: invalid device ordinal")
            self._ordinal = ordinal

        @staticmethod
        def count() -> int:
            require_init("cuDeviceGetCount")
            return len(state.gpus)

        def name(self) -> str:
            return state.gpus[self._ordinal].name

        def compute_capability(self) -> Tuple[int, int]:
            return state.gpus[self._ordinal].compute_capability

        def retain_primary_context(self) -> Context:
            with state.lock:
                state.refcount[self._ordinal] += 1
                state.counts["retain"] += 1
                return Context(state.context_handle(self._ordinal), self._ordinal)

    class _ContextDependent:
        kind = "resource"

        def _acquire(self) -> None:
            ward = current_context()
            if ward is None:
                raise LogicError(
                    "explicit_context_dependent failed: invalid device context - no currently active context?"
                )
            if not state.current_context_active():
                raise LogicError("cuMemAlloc failed: invalid device context")
            self._ward = ward
            self._valid = True
            self._token = next(state.tokens)
            state.live[self._token] = self.kind

        def _cleanup(self, destroy: Callable[[], None]) -> None:
            """pycuda's scoped_context_activation around a destroy call, with its silent skips."""
            ward = self._ward
            with state.lock:
                if not ward._valid:  # cannot_activate_dead_context: skipped silently
                    state.counts["cleanup_skipped"] += 1
                elif current_context() is ward:
                    destroy()
                    state.live.pop(self._token, None)
                elif ward._thread != threading.get_ident():  # cannot_activate_out_of_thread_context
                    state.counts["cleanup_skipped"] += 1
                else:
                    context_push(ward)
                    try:
                        destroy()
                        state.live.pop(self._token, None)
                    finally:
                        Context.pop()
            self._valid = False
            self._ward = None

        def __del__(self) -> None:  # the C++ destructor frees what is still valid
            try:
                if getattr(self, "_valid", False):
                    self._finalize()
            except Exception:
                pass

        def _finalize(self) -> None:
            raise NotImplementedError

    class DeviceAllocation(_ContextDependent):
        kind = "device_allocation"

        def __init__(self, nbytes: int) -> None:
            self._acquire()
            self._ptr = state.map_memory(np.zeros(int(nbytes), np.uint8))
            state.counts["mem_alloc"] += 1

        def __int__(self) -> int:
            return self._ptr

        __index__ = __int__

        def free(self) -> None:
            if not self._valid:
                raise LogicError("device_allocation::free failed: invalid resource handle")

            def destroy() -> None:
                state.unmap_memory(self._ptr)
                state.counts["mem_free"] += 1

            self._cleanup(destroy)

        _finalize = free

    class HostAllocation(_ContextDependent):
        kind = "host_allocation"

        def __init__(self, shape: Tuple[int, ...], dtype: Any, flags: int) -> None:
            self._acquire()
            self._flags = int(flags)
            self._buf = np.zeros(int(np.prod(shape)) * np.dtype(dtype).itemsize, np.uint8)
            self._device_ptr: Optional[int] = None
            arr = self._buf.view(dtype).reshape(shape)
            self.__array_interface__ = dict(arr.__array_interface__)
            state.counts["host_alloc"] += 1

        def get_device_pointer(self) -> int:
            if not self._flags & host_alloc_flags.DEVICEMAP:
                raise LogicError("cuMemHostGetDevicePointer failed: invalid value")
            if current_context() is None:
                raise LogicError("cuMemHostGetDevicePointer failed: invalid device context")
            if self._device_ptr is None:
                self._device_ptr = state.map_memory(self._buf)  # the same memory, seen by the device
            return self._device_ptr

        def get_flags(self) -> int:
            return self._flags

        def free(self) -> None:
            if not self._valid:
                raise LogicError("pagelocked_host_allocation::free failed: invalid resource handle")

            def destroy() -> None:
                if self._device_ptr is not None:
                    state.unmap_memory(self._device_ptr)
                state.counts["host_free"] += 1

            self._cleanup(destroy)

        _finalize = free

    class Stream(_ContextDependent):
        kind = "stream"

        def __init__(self, flags: int = 0) -> None:
            state.maybe_fail("Stream")
            self._acquire()
            state._next_stream += 0x10
            self._handle = state._next_stream
            state.counts["stream_create"] += 1

        @property
        def handle(self) -> int:
            return self._handle

        def synchronize(self) -> None:
            pass

        def is_done(self) -> bool:
            return True

        def _finalize(self) -> None:  # pycuda has no Stream.free: ~stream runs when the object goes away
            def destroy() -> None:
                state.counts["stream_destroy"] += 1

            self._cleanup(destroy)

    class host_alloc_flags:  # noqa: N801 - pycuda's name
        PORTABLE = 1
        DEVICEMAP = 2
        WRITECOMBINED = 4

    def mem_alloc(nbytes: int) -> DeviceAllocation:
        state.maybe_fail("mem_alloc")
        return DeviceAllocation(nbytes)

    def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
        state.maybe_fail("pagelocked_empty")
        if order != "C":
            raise ValueError("the fake supports order='C' only")
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        return np.asarray(HostAllocation(shape, dtype, mem_flags))  # .base is the allocation, as in pycuda

    def _need_context(what: str) -> None:
        if not state.current_context_active():
            raise LogicError(f"{what} failed: invalid device context")

    def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Any = None) -> None:
        _need_context("cuMemcpyHtoDAsync")
        src = np.ascontiguousarray(src)
        state.view(int(dest), src.nbytes)[:] = src.view(np.uint8).reshape(-1)

    def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Any = None) -> None:
        _need_context("cuMemcpyDtoHAsync")
        if not dest.flags.c_contiguous:
            raise LogicError("memcpy_dtoh_async: destination must be contiguous")
        dest.view(np.uint8).reshape(-1)[:] = state.view(int(src), dest.nbytes)

    def memcpy_htod(dest: Any, src: np.ndarray) -> None:
        memcpy_htod_async(dest, src)

    def memcpy_dtoh(dest: np.ndarray, src: Any) -> None:
        memcpy_dtoh_async(dest, src)

    mod.__dict__.update(
        init=init, Device=Device, Context=Context, Stream=Stream, DeviceAllocation=DeviceAllocation,
        HostAllocation=HostAllocation, host_alloc_flags=host_alloc_flags, mem_alloc=mem_alloc,
        pagelocked_empty=pagelocked_empty, memcpy_htod_async=memcpy_htod_async,
        memcpy_dtoh_async=memcpy_dtoh_async, memcpy_htod=memcpy_htod, memcpy_dtoh=memcpy_dtoh,
        _fake_state=state,
    )  # fmt: skip
    return mod


class FakeLibcuda:
    """The ``libcuda.so.1`` entry points we call through ctypes, on the same simulated driver."""

    def __init__(self, state: DriverState) -> None:
        self._s = state

    def cuInit(self, flags: int) -> int:  # noqa: N802 - the driver's names
        self._s.initialized = True
        return 0

    def cuDeviceGet(self, pdev: Any, ordinal: int) -> int:  # noqa: N802
        if not 0 <= int(ordinal) < len(self._s.gpus):
            return 101  # CUDA_ERROR_INVALID_DEVICE
        pdev._obj.value = int(ordinal)
        return 0

    def cuDeviceGetName(self, buf: Any, length: int, dev: Any) -> int:  # noqa: N802
        buf.value = self._s.gpus[dev.value].name.encode()[: length - 1]
        return 0

    def cuDeviceGetAttribute(self, pi: Any, attrib: int, dev: Any) -> int:  # noqa: N802
        gpu = self._s.gpus[dev.value]
        values = {
            18: int(gpu.integrated),
            19: int(gpu.can_map_host_memory),
            75: gpu.compute_capability[0],
            76: gpu.compute_capability[1],
        }
        if attrib not in values:
            return 1  # CUDA_ERROR_INVALID_VALUE
        pi._obj.value = values[attrib]
        return 0

    def cuCtxGetCurrent(self, pctx: Any) -> int:  # noqa: N802
        stack = self._s._drv()
        pctx._obj.value = stack[-1] if stack else None
        return 0

    def cuCtxPopCurrent_v2(self, pctx: Any) -> int:  # noqa: N802
        with self._s.lock:
            if not self._s._drv():
                return CUDA_ERROR_INVALID_CONTEXT
            pctx._obj.value = self._s.drv_pop()
        return 0

    def cuCtxPushCurrent_v2(self, ctx: Any) -> int:  # noqa: N802
        self._s.drv_push(int(ctx.value))
        return 0


def install(monkeypatch: Any, gpus: Optional[List[FakeGpu]] = None) -> DriverState:
    """Install a fresh fake ``pycuda.driver`` (and ``libcuda.so.1`` for ctypes); return its state."""
    state = DriverState(gpus or [FakeGpu()])
    mod = _make_module(state)
    pkg = types.ModuleType("pycuda")
    pkg.__path__ = []  # a package, so `import pycuda.driver` resolves through sys.modules
    pkg.driver = mod  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", mod)
    real_cdll = ctypes.CDLL
    lib = FakeLibcuda(state)

    def cdll(name: Any, *args: Any, **kwargs: Any) -> Any:
        return lib if name == "libcuda.so.1" else real_cdll(name, *args, **kwargs)

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    return state
