"""The GPU pipeline's launcher on a real GPU: the CUDA driver API (``libcuda.so.1``) through ctypes.

Why not pycuda: its launches and copies take only pycuda ``Stream`` objects and there is no way to
wrap the stream handle TensorRT's backend hands over (``DeviceIO.stream``). The driver API takes raw
handles, is a stable C ABI, and is the same library pycuda and TensorRT use, so everything here runs in
the backend's context (made current by ``DeviceIO.context``) on the backend's stream.

Kernels are cubins built for this GPU (:func:`yolo_nano.runtime.kernel_build.build_cubins`) and loaded
with ``cuModuleLoadData``. Mapped pinned memory (``cuMemHostAlloc`` with ``DEVICEMAP``) is used where
the GPU is integrated (Jetson), so frames and results are never copied there.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from .kernel_build import KERNELS, SOURCES, build_cubins
from .kernel_launch import Buffer, KernelLauncher, LaunchError, pack_params

_ATTR_INTEGRATED = 18
_ATTR_CAN_MAP_HOST_MEMORY = 19
_ATTR_CC_MAJOR = 75
_ATTR_CC_MINOR = 76
_HOSTALLOC_PORTABLE = 0x01
_HOSTALLOC_DEVICEMAP = 0x02
_CAPTURE_MODE_THREAD_LOCAL = 1

_vp = ctypes.c_void_p
_u64 = ctypes.c_uint64
_SIGNATURES: Dict[str, Tuple[Any, ...]] = {
    "cuInit": (ctypes.c_uint,),
    "cuDriverGetVersion": (ctypes.POINTER(ctypes.c_int),),
    "cuDeviceGet": (ctypes.POINTER(ctypes.c_int), ctypes.c_int),
    "cuDeviceGetAttribute": (ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.c_int),
    "cuCtxGetCurrent": (ctypes.POINTER(_vp),),
    "cuCtxGetDevice": (ctypes.POINTER(ctypes.c_int),),
    "cuCtxPushCurrent_v2": (_vp,),
    "cuCtxPopCurrent_v2": (ctypes.POINTER(_vp),),
    "cuDevicePrimaryCtxRetain": (ctypes.POINTER(_vp), ctypes.c_int),
    "cuDevicePrimaryCtxRelease_v2": (ctypes.c_int,),
    "cuModuleLoadData": (ctypes.POINTER(_vp), ctypes.c_char_p),
    "cuModuleGetFunction": (ctypes.POINTER(_vp), _vp, ctypes.c_char_p),
    "cuModuleUnload": (_vp,),
    "cuLaunchKernel": (_vp,) + (ctypes.c_uint,) * 7 + (_vp, _vp, _vp),
    "cuMemAlloc_v2": (ctypes.POINTER(_u64), ctypes.c_size_t),
    "cuMemFree_v2": (_u64,),
    "cuMemHostAlloc": (ctypes.POINTER(_vp), ctypes.c_size_t, ctypes.c_uint),
    "cuMemFreeHost": (_vp,),
    "cuMemHostGetDevicePointer_v2": (ctypes.POINTER(_u64), _vp, ctypes.c_uint),
    "cuMemcpyHtoDAsync_v2": (_u64, _vp, ctypes.c_size_t, _vp),
    "cuMemcpyDtoHAsync_v2": (_vp, _u64, ctypes.c_size_t, _vp),
    "cuMemsetD32Async": (_u64, ctypes.c_uint, ctypes.c_size_t, _vp),
    "cuStreamSynchronize": (_vp,),
    "cuStreamCreate": (ctypes.POINTER(_vp), ctypes.c_uint),
    "cuStreamDestroy_v2": (_vp,),
    "cuEventCreate": (ctypes.POINTER(_vp), ctypes.c_uint),
    "cuEventRecord": (_vp, _vp),
    "cuEventElapsedTime": (ctypes.POINTER(ctypes.c_float), _vp, _vp),
    "cuEventDestroy_v2": (_vp,),
    "cuStreamBeginCapture_v2": (_vp, ctypes.c_int),
    "cuStreamEndCapture": (_vp, ctypes.POINTER(_vp)),
    "cuGraphInstantiateWithFlags": (ctypes.POINTER(_vp), _vp, ctypes.c_ulonglong),
    "cuGraphLaunch": (_vp, _vp),
    "cuGraphExecDestroy": (_vp,),
    "cuGraphDestroy": (_vp,),
    "cuGetErrorName": (ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)),
    "cuGetErrorString": (ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)),
}


class CudaUnavailable(RuntimeError):
    """No CUDA driver or GPU here."""


def load_libcuda() -> Any:
    """``libcuda.so.1`` with the argument types of every function used here."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        raise CudaUnavailable(f"no CUDA driver (libcuda.so.1) on this machine: {e}") from e
    for name, args in _SIGNATURES.items():
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.argtypes = list(args)
            fn.restype = ctypes.c_int
    return lib


class CudaDriverLauncher(KernelLauncher):
    """Kernels, memory and copies through the driver API, in the context current in the calling thread.

    Construct it (and call everything) with the target context current (``with io.context:``); use
    :meth:`standalone` for a launcher that retains device ``device``'s primary context itself.
    ``cache``: the cubin cache folder (default: the package's).
    """

    name = "cuda"

    def __init__(self, cache: Any = None) -> None:
        self._cu = load_libcuda()
        self._check(self._cu.cuInit(0), "cuInit")
        dev = ctypes.c_int()
        self._check(self._cu.cuCtxGetDevice(ctypes.byref(dev)), "cuCtxGetDevice (is a CUDA context current?)")
        self.device = dev.value
        major, minor = self._attr(_ATTR_CC_MAJOR), self._attr(_ATTR_CC_MINOR)
        self.arch = f"sm_{major}{minor}"
        self.integrated = bool(self._attr(_ATTR_INTEGRATED)) and bool(self._attr(_ATTR_CAN_MAP_HOST_MEMORY))
        v = ctypes.c_int()
        self._check(self._cu.cuDriverGetVersion(ctypes.byref(v)), "cuDriverGetVersion")
        self.driver_version = (v.value // 1000, v.value % 1000 // 10)
        self._cache = cache
        self._modules: Dict[str, Any] = {}
        self._functions: Dict[str, Any] = {}
        self._lock = threading.Lock()
        self._retained: Optional[int] = None
        self._ctx: Optional[int] = None

    @classmethod
    def standalone(cls, device: int = 0, cache: Any = None) -> CudaDriverLauncher:
        """A launcher that retains ``device``'s primary context; use it inside ``with launcher.context():``."""
        cu = load_libcuda()
        rc = cu.cuInit(0)
        if rc != 0:
            raise CudaUnavailable(f"cuInit failed with CUresult {rc}: no usable GPU")
        ctx = _vp()
        handle = ctypes.c_int()
        if cu.cuDeviceGet(ctypes.byref(handle), device) != 0:
            raise CudaUnavailable(f"no CUDA device {device}")
        if cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), handle.value) != 0:
            raise CudaUnavailable(f"cannot retain the primary context of CUDA device {device}")
        cu.cuCtxPushCurrent_v2(ctx)
        try:
            launcher = cls(cache)
        finally:
            popped = _vp()
            cu.cuCtxPopCurrent_v2(ctypes.byref(popped))
        launcher._retained = handle.value
        launcher._ctx = int(ctx.value or 0)
        return launcher

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """Make the retained primary context current in this thread (for :meth:`standalone` launchers)."""
        if self._ctx is None:
            yield
            return
        self._check(self._cu.cuCtxPushCurrent_v2(_vp(self._ctx)), "cuCtxPushCurrent")
        try:
            yield
        finally:
            popped = _vp()
            self._cu.cuCtxPopCurrent_v2(ctypes.byref(popped))

    # -- errors -----------------------------------------------------------------------------------

    def _error(self, rc: int) -> str:
        name, text = ctypes.c_char_p(), ctypes.c_char_p()
        self._cu.cuGetErrorName(rc, ctypes.byref(name))
        self._cu.cuGetErrorString(rc, ctypes.byref(text))
        n = name.value.decode() if name.value else f"CUresult {rc}"
        return f"{n}: {text.value.decode()}" if text.value else n

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            raise LaunchError(f"{what} failed: {self._error(rc)}")

    def _attr(self, attr: int) -> int:
        v = ctypes.c_int()
        self._check(self._cu.cuDeviceGetAttribute(ctypes.byref(v), attr, self.device), "cuDeviceGetAttribute")
        return v.value

    # -- kernels ----------------------------------------------------------------------------------

    def load_kernels(self) -> None:
        with self._lock:
            if self._functions:
                return
            cubins = build_cubins(self.arch, cache=self._cache, driver_version=self.driver_version)
            for source in SOURCES:
                mod = _vp()
                rc = self._cu.cuModuleLoadData(ctypes.byref(mod), cubins[source])
                if rc != 0:
                    raise LaunchError(
                        f"loading the {source} cubin for {self.arch} failed: {self._error(rc)} (built by a CUDA "
                        f"newer than this driver's {self.driver_version[0]}.{self.driver_version[1]}? delete "
                        f"the cache folder's *.cubin to rebuild)"
                    )
                self._modules[source] = mod
            for spec in KERNELS.values():
                fn = _vp()
                self._check(
                    self._cu.cuModuleGetFunction(
                        ctypes.byref(fn), self._modules[spec.source], spec.name.encode()
                    ),
                    f"cuModuleGetFunction({spec.name})",
                )
                self._functions[spec.name] = fn

    def launch(
        self,
        kernel: str,
        grid: Tuple[int, int, int],
        block: Tuple[int, int, int],
        args: Sequence[Any],
        stream: int,
    ) -> None:
        if not self._functions:
            self.load_kernels()
        params, _keep = pack_params(kernel, args)
        rc = self._cu.cuLaunchKernel(self._functions[kernel], *grid, *block, 0, _vp(stream), params, None)
        self._check(rc, f"launching kernel {kernel} (grid {grid}, block {block})")

    # -- memory -----------------------------------------------------------------------------------

    def alloc_device(self, nbytes: int) -> Buffer:
        ptr = _u64()
        self._check(self._cu.cuMemAlloc_v2(ctypes.byref(ptr), max(int(nbytes), 1)), f"cuMemAlloc({nbytes})")
        return Buffer(ptr=int(ptr.value), nbytes=int(nbytes), host=None, owner=("device", int(ptr.value)))

    def alloc_host(self, nbytes: int, mapped: bool) -> Buffer:
        p = _vp()
        flags = _HOSTALLOC_PORTABLE | (_HOSTALLOC_DEVICEMAP if mapped else 0)
        self._check(
            self._cu.cuMemHostAlloc(ctypes.byref(p), max(int(nbytes), 1), flags), f"cuMemHostAlloc({nbytes})"
        )
        addr = int(p.value or 0)
        host = np.ctypeslib.as_array((ctypes.c_uint8 * max(int(nbytes), 1)).from_address(addr))[: int(nbytes)]
        dev = 0
        if mapped:
            d = _u64()
            self._check(
                self._cu.cuMemHostGetDevicePointer_v2(ctypes.byref(d), _vp(addr), 0),
                "cuMemHostGetDevicePointer",
            )
            dev = int(d.value)
        return Buffer(ptr=dev, nbytes=int(nbytes), host=host, owner=("host", addr))

    def free(self, buf: Buffer) -> None:
        owner, buf.owner, buf.host, buf.ptr = buf.owner, None, None, 0
        if not owner:
            return
        kind, addr = owner
        if kind == "device":
            self._check(self._cu.cuMemFree_v2(_u64(addr)), "cuMemFree")
        else:
            self._check(self._cu.cuMemFreeHost(_vp(addr)), "cuMemFreeHost")

    def copy_htod(self, dst: int, src: np.ndarray, stream: int) -> None:
        self._check(
            self._cu.cuMemcpyHtoDAsync_v2(_u64(dst), _vp(src.ctypes.data), src.nbytes, _vp(stream)),
            "cuMemcpyHtoDAsync",
        )

    def copy_dtoh(self, dst: np.ndarray, src: int, stream: int) -> None:
        self._check(
            self._cu.cuMemcpyDtoHAsync_v2(_vp(dst.ctypes.data), _u64(src), dst.nbytes, _vp(stream)),
            "cuMemcpyDtoHAsync",
        )

    def memset_d32(self, dst: int, value: int, count: int, stream: int) -> None:
        if count > 0:
            self._check(
                self._cu.cuMemsetD32Async(_u64(dst), int(value), int(count), _vp(stream)), "cuMemsetD32Async"
            )

    def host_call(self, fn: Callable[[], None], stream: int) -> None:
        self.synchronize(stream)
        fn()

    def synchronize(self, stream: int) -> None:
        self._check(self._cu.cuStreamSynchronize(_vp(stream)), "cuStreamSynchronize (a kernel faulted)")

    # -- events and graphs ------------------------------------------------------------------------

    def record_event(self, stream: int) -> Any:
        ev = _vp()
        self._check(self._cu.cuEventCreate(ctypes.byref(ev), 0), "cuEventCreate")
        self._check(self._cu.cuEventRecord(ev, _vp(stream)), "cuEventRecord")
        return ev

    def elapsed_ms(self, start: Any, end: Any) -> float:
        ms = ctypes.c_float()
        self._check(self._cu.cuEventElapsedTime(ctypes.byref(ms), start, end), "cuEventElapsedTime")
        return float(ms.value)

    def release_event(self, event: Any) -> None:
        self._cu.cuEventDestroy_v2(event)

    def begin_capture(self, stream: int) -> None:
        self._check(
            self._cu.cuStreamBeginCapture_v2(_vp(stream), _CAPTURE_MODE_THREAD_LOCAL), "cuStreamBeginCapture"
        )

    def end_capture(self, stream: int) -> Any:
        graph, exe = _vp(), _vp()
        self._check(self._cu.cuStreamEndCapture(_vp(stream), ctypes.byref(graph)), "cuStreamEndCapture")
        try:
            self._check(
                self._cu.cuGraphInstantiateWithFlags(ctypes.byref(exe), graph, 0), "cuGraphInstantiate"
            )
        finally:
            self._cu.cuGraphDestroy(graph)
        return exe

    def launch_graph(self, graph: Any, stream: int) -> None:
        self._check(self._cu.cuGraphLaunch(graph, _vp(stream)), "cuGraphLaunch")

    def destroy_graph(self, graph: Any) -> None:
        self._cu.cuGraphExecDestroy(graph)

    def close(self) -> None:
        """Unload the modules (in the caller's current context, or the retained one for a
        :meth:`standalone` launcher, which is then released). Idempotent."""
        with self._lock:
            if self._modules:
                with self.context():
                    for mod in self._modules.values():
                        self._cu.cuModuleUnload(mod)
            self._modules, self._functions = {}, {}
            if self._retained is not None:
                self._cu.cuDevicePrimaryCtxRelease_v2(self._retained)
                self._retained, self._ctx = None, None


__all__ = ["CudaDriverLauncher", "CudaUnavailable", "load_libcuda"]
