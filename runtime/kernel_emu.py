"""Run the CUDA kernels on the CPU: the same .cu sources, compiled with g++ against ``kernels/cuda_emu.h``.

:func:`build_emulation` compiles every source in :data:`~yolo_nano.runtime.kernel_build.SOURCES` with
``g++ -std=c++20 -pthread`` into one shared library, cached on disk like the cubins (keyed by the
sources, the header, the flags and the g++ version). :class:`EmulatedLauncher` is a
:class:`~yolo_nano.runtime.kernel_launch.KernelLauncher` over it: "device" memory is host memory (a
device pointer is a host address), every stream operation runs at once in order (or is recorded while a
graph is captured), kernels run with the grid and block shapes the pipeline asks for. Tests and
self-checks run the whole GPU pipeline with it where no GPU exists; no timing claims.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .kernel_build import KERNEL_DIR, KERNELS, SOURCES, _digest, kernel_cache_dir, read_source
from .kernel_launch import Buffer, KernelLauncher, LaunchError, pack_params

HEADER = "cuda_emu.h"
GXX_FLAGS: Tuple[str, ...] = (
    "-std=c++20",
    "-O2",
    "-pthread",
    "-shared",
    "-fPIC",
    "-ffp-contract=off",  # one rounding per operation, as --fmad=false on the GPU and numpy
    "-fno-fast-math",
    "-w",
)


class EmulationUnavailable(RuntimeError):
    """The CPU emulation cannot be built here (no C++20 g++)."""


def _gxx() -> str:
    gxx = os.environ.get("CXX") or shutil.which("g++")
    if not gxx:
        raise EmulationUnavailable(
            "the CPU emulation of the CUDA kernels needs g++ 11 or newer (C++20 <barrier>): apt install g++"
        )
    return gxx


def _wrapper(source: str) -> str:
    """A translation unit: the emulation header, the kernel source, an export per kernel in it."""
    lines = [f'#include "{HEADER}"', f'#include "{source}"']
    for spec in KERNELS.values():
        if spec.source == source:
            lines.append(f"CUDA_EMU_EXPORT({spec.name}, {'true' if spec.syncs else 'false'})")
    return "\n".join(lines) + "\n"


def build_emulation(cache: Optional[Path] = None) -> Path:
    """Path of the emulation library (compiled on first use, then cached). ``cache``: the folder
    (default: :func:`~yolo_nano.runtime.kernel_build.kernel_cache_dir`)."""
    gxx = _gxx()
    version = subprocess.run([gxx, "--version"], capture_output=True, text=True, check=False).stdout.split(
        "\n"
    )[0]
    parts: List[Any] = [read_source(HEADER), GXX_FLAGS, version]
    for name in SOURCES:
        parts += [name, read_source(name), _wrapper(name)]
    folder = Path(cache) if cache is not None else kernel_cache_dir()
    lib = folder / f"emu-{_digest(*parts)[:20]}.so"
    if lib.is_file():
        return lib
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="yolo-nano-emu-") as tmp:
        units = []
        for name in SOURCES:
            unit = Path(tmp) / (Path(name).stem + "_emu.cpp")
            unit.write_text(_wrapper(name))
            units.append(str(unit))
        errors = Path(tmp) / "errors_emu.cpp"
        errors.write_text(f'#include "{HEADER}"\nCUDA_EMU_ERROR_EXPORT\n')
        units.append(str(errors))
        out = Path(tmp) / "emu.so"
        proc = subprocess.run(
            [gxx, *GXX_FLAGS, f"-I{KERNEL_DIR}", *units, "-o", str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise EmulationUnavailable(
                f"g++ could not build the CUDA emulation ({gxx}, {version}):\n{(proc.stderr or proc.stdout).strip()}"
            )
        fd, staged = tempfile.mkstemp(prefix=lib.name, dir=folder)
        os.close(fd)
        shutil.copyfile(out, staged)
        os.replace(staged, lib)
    return lib


class _EmulatedGraph:
    def __init__(self, ops: List[Callable[[], None]]) -> None:
        self.ops = ops


class EmulatedLauncher(KernelLauncher):
    """The CPU emulation as a launcher. ``integrated``: mapped host memory counts as device-visible
    (the Jetson path, no copies); ``False`` exercises the discrete-GPU path (separate "device" buffers
    and explicit copies). ``cache``: where the compiled library lives (see :func:`build_emulation`)."""

    name = "emulated"

    def __init__(self, integrated: bool = True, cache: Optional[Path] = None) -> None:
        self.integrated = bool(integrated)
        self.arch = None
        self._lib_path = build_emulation(cache)
        self._lib = ctypes.CDLL(str(self._lib_path))
        self._lib.emu_last_error.restype = ctypes.c_char_p
        self._fns: Dict[str, Any] = {}
        self._capture: Optional[List[Callable[[], None]]] = None
        self._lock = threading.RLock()
        self.launches: List[Tuple[str, Tuple[int, int, int], Tuple[int, int, int]]] = []  # for tests
        self.fail_next: Optional[str] = None  # tests: make the next launch of this kernel fail

    def load_kernels(self) -> None:
        for name in KERNELS:
            fn = getattr(self._lib, f"emu_launch_{name}")
            fn.argtypes = [ctypes.c_uint] * 6 + [ctypes.c_void_p]
            fn.restype = ctypes.c_int
            self._fns[name] = fn

    def _queue(self, op: Callable[[], None]) -> None:
        if self._capture is not None:
            self._capture.append(op)
        else:
            op()

    def launch(
        self,
        kernel: str,
        grid: Tuple[int, int, int],
        block: Tuple[int, int, int],
        args: Sequence[Any],
        stream: int,
    ) -> None:
        if kernel not in self._fns:
            self.load_kernels()
        params, keep = pack_params(kernel, args)
        fn = self._fns[kernel]

        def run() -> None:
            self.launches.append((kernel, tuple(grid), tuple(block)))  # type: ignore[arg-type]
            if self.fail_next == kernel:
                self.fail_next = None
                raise LaunchError(f"kernel {kernel} failed: emulated fault (CUDA_ERROR_LAUNCH_FAILED)")
            _ = keep  # the argument values live as long as the (possibly captured) launch
            with self._lock:
                rc = fn(*grid, *block, params)
            if rc:
                raise LaunchError(f"kernel {kernel} failed: {self._lib.emu_last_error().decode()}")

        self._queue(run)

    def alloc_device(self, nbytes: int) -> Buffer:
        owner = np.zeros(max(int(nbytes), 1) + 256, np.uint8)
        start = (-owner.ctypes.data) % 256  # 256-byte aligned, as cuMemAlloc
        arr = owner[start : start + int(nbytes)]
        # "device" memory: the pipeline must not read it directly unless the GPU is integrated
        return Buffer(ptr=int(arr.ctypes.data), nbytes=int(nbytes), host=None, owner=arr)

    def alloc_host(self, nbytes: int, mapped: bool) -> Buffer:
        buf = self.alloc_device(nbytes)
        buf.host = buf.owner
        if not mapped:
            buf.ptr = 0  # pinned but not mapped: no device address
        return buf

    def free(self, buf: Buffer) -> None:
        buf.owner = None
        buf.host = None
        buf.ptr = 0

    def copy_htod(self, dst: int, src: np.ndarray, stream: int) -> None:
        src = np.ascontiguousarray(src)
        self._queue(lambda: ctypes.memmove(dst, src.ctypes.data, src.nbytes))

    def copy_dtoh(self, dst: np.ndarray, src: int, stream: int) -> None:
        if not dst.flags.c_contiguous:
            raise LaunchError("copy_dtoh needs a contiguous destination")
        self._queue(lambda: ctypes.memmove(dst.ctypes.data, src, dst.nbytes))

    def memset_d32(self, dst: int, value: int, count: int, stream: int) -> None:
        def run() -> None:
            words = (ctypes.c_uint32 * int(count)).from_address(dst)
            np.frombuffer(words, dtype=np.uint32)[:] = np.uint32(value)

        if count > 0:
            self._queue(run)

    def host_call(self, fn: Callable[[], None], stream: int) -> None:
        self._queue(fn)

    def synchronize(self, stream: int) -> None:
        pass  # everything ran when queued

    def record_event(self, stream: int) -> Any:
        return time.perf_counter()

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return (float(end) - float(start)) * 1e3

    def release_event(self, event: Any) -> None:
        pass

    def begin_capture(self, stream: int) -> None:
        if self._capture is not None:
            raise LaunchError("a graph capture is already in progress")
        self._capture = []

    def end_capture(self, stream: int) -> Any:
        if self._capture is None:
            raise LaunchError("end_capture without begin_capture")
        ops, self._capture = self._capture, None
        return _EmulatedGraph(ops)

    def launch_graph(self, graph: Any, stream: int) -> None:
        for op in graph.ops:
            op()

    def destroy_graph(self, graph: Any) -> None:
        graph.ops = []


__all__ = ["EmulatedLauncher", "EmulationUnavailable", "build_emulation"]
