"""The launch interface the GPU pipeline runs on, with its two implementations.

:class:`KernelLauncher` is everything :class:`~yolo_nano.runtime.gpu_pipeline.GpuPipeline` asks of a
device: memory (device, pinned host, mapped host), stream-ordered copies, memsets and kernel launches,
events for timing, and CUDA graph capture. Implementations:

* :class:`yolo_nano.runtime.cuda_driver.CudaDriverLauncher`: a real GPU through the CUDA driver API
  (``libcuda``, ctypes). It takes raw stream and context handles, so it runs on the very stream the
  TensorRT backend (pycuda) created; pycuda itself cannot launch on a stream it did not create.
* :class:`yolo_nano.runtime.kernel_emu.EmulatedLauncher`: the same .cu sources compiled with g++
  against ``kernels/cuda_emu.h`` and run on the CPU; device pointers are host addresses.

Both marshal kernel arguments the same way (:func:`pack_params`, cuLaunchKernel's ``kernelParams``:
one pointer per argument value) from the signatures in :data:`yolo_nano.runtime.kernel_build.KERNELS`.
"""

from __future__ import annotations

import abc
import ctypes
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from .kernel_build import KERNELS


class LaunchError(RuntimeError):
    """A kernel launch or another device call failed; the message names the call and the CUDA error."""


@dataclass
class Buffer:
    """Memory the pipeline uses. ``ptr``: the address kernels use (device pointer); ``host``: a uint8
    numpy view of the same bytes when the host can read and write them directly (mapped pinned memory,
    the emulation), else ``None``; ``nbytes``: size. ``owner``: whatever keeps the memory alive."""

    ptr: int
    nbytes: int
    host: Optional[np.ndarray] = None
    owner: Any = field(default=None, repr=False)

    def view(self, dtype: Any, shape: Tuple[int, ...]) -> np.ndarray:
        """The host bytes as an array of ``dtype`` and ``shape`` (from the start of the buffer)."""
        if self.host is None:
            raise LaunchError("this buffer has no host view (device memory)")
        count = int(np.prod(shape)) if shape else 1
        return self.host[: count * np.dtype(dtype).itemsize].view(dtype).reshape(shape)


_CTYPES = {"ptr": ctypes.c_uint64, "i32": ctypes.c_int32, "f32": ctypes.c_float}


def pack_params(kernel: str, args: Sequence[Any]) -> Tuple[Any, List[Any]]:
    """cuLaunchKernel's ``kernelParams`` for ``args`` of ``kernel``: (array of pointers, values to keep
    alive until the launch returns). Raises ``TypeError`` when the count does not match the signature."""
    spec = KERNELS[kernel]
    if len(args) != len(spec.params):
        raise TypeError(f"kernel {kernel} takes {len(spec.params)} arguments, got {len(args)}")
    values = []
    for kind, a in zip(spec.params, args):
        if kind == "ptr":
            a = 0 if a is None else int(a.ptr if isinstance(a, Buffer) else a)
        values.append(_CTYPES[kind](a))
    params = (ctypes.c_void_p * len(values))(
        *[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values]
    )
    return params, values


class KernelLauncher(abc.ABC):
    """A device to run the pipeline's kernels on (see the module docstring). Every stream operation is
    ordered on ``stream`` (an int handle; the emulation has one implicit stream) and asynchronous."""

    name: str = "launcher"
    #: kernels can read and write mapped pinned host memory (integrated GPUs: Jetson): no copies needed
    integrated: bool = False
    #: the ``sm_XX`` the kernels are built for (``None`` in the emulation)
    arch: Optional[str] = None

    @abc.abstractmethod
    def load_kernels(self) -> None:
        """Make every kernel of :data:`KERNELS` launchable (compile or load them; idempotent)."""

    @abc.abstractmethod
    def launch(
        self,
        kernel: str,
        grid: Tuple[int, int, int],
        block: Tuple[int, int, int],
        args: Sequence[Any],
        stream: int,
    ) -> None:
        """Queue ``kernel`` with ``grid`` x ``block`` threads on ``stream``."""

    @abc.abstractmethod
    def alloc_device(self, nbytes: int) -> Buffer:
        """Device memory (uninitialised)."""

    @abc.abstractmethod
    def alloc_host(self, nbytes: int, mapped: bool) -> Buffer:
        """Pinned host memory; ``mapped``: kernels can address it too (``ptr`` is its device address)."""

    @abc.abstractmethod
    def free(self, buf: Buffer) -> None:
        """Give ``buf`` back (idempotent per buffer)."""

    @abc.abstractmethod
    def copy_htod(self, dst: int, src: np.ndarray, stream: int) -> None:
        """Copy the bytes of ``src`` (pinned host memory) to device address ``dst``."""

    @abc.abstractmethod
    def copy_dtoh(self, dst: np.ndarray, src: int, stream: int) -> None:
        """Copy ``dst.nbytes`` bytes from device address ``src`` into ``dst`` (pinned host memory)."""

    @abc.abstractmethod
    def memset_d32(self, dst: int, value: int, count: int, stream: int) -> None:
        """Set ``count`` 32-bit words at ``dst`` to ``value``."""

    @abc.abstractmethod
    def host_call(self, fn: Callable[[], None], stream: int) -> None:
        """Run ``fn`` on the host in stream order (the emulated device backend runs its network so)."""

    @abc.abstractmethod
    def synchronize(self, stream: int) -> None:
        """Wait until everything queued on ``stream`` has run; raises :class:`LaunchError` on a fault."""

    @abc.abstractmethod
    def record_event(self, stream: int) -> Any:
        """A timing event recorded on ``stream`` now."""

    @abc.abstractmethod
    def elapsed_ms(self, start: Any, end: Any) -> float:
        """Milliseconds between two recorded events (after :meth:`synchronize`)."""

    @abc.abstractmethod
    def release_event(self, event: Any) -> None:
        """Free an event from :meth:`record_event`."""

    @abc.abstractmethod
    def begin_capture(self, stream: int) -> None:
        """Start recording ``stream``'s work into a graph instead of running it."""

    @abc.abstractmethod
    def end_capture(self, stream: int) -> Any:
        """Stop recording; returns an executable graph."""

    @abc.abstractmethod
    def launch_graph(self, graph: Any, stream: int) -> None:
        """Queue a captured graph on ``stream``."""

    @abc.abstractmethod
    def destroy_graph(self, graph: Any) -> None:
        """Free a graph from :meth:`end_capture`."""

    def close(self) -> None:  # noqa: B027 - optional: most launchers hold nothing to release
        """Release what the launcher holds (modules); idempotent."""


class Mirror:
    """A host array (``array``, of ``dtype`` and ``shape``) and the device address kernels use (``ptr``):
    one mapped buffer where the device is integrated, else pinned host memory plus device memory kept in
    step by explicit stream copies (:meth:`upload`, :meth:`download`; no-ops when mapped)."""

    def __init__(self, launcher: KernelLauncher, dtype: Any, shape: Tuple[int, ...]) -> None:
        self._launcher = launcher
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        self.nbytes = nbytes
        self.host_buf = launcher.alloc_host(nbytes, mapped=launcher.integrated)
        self.dev: Optional[Buffer] = None if launcher.integrated else launcher.alloc_device(nbytes)
        self.ptr = self.host_buf.ptr if self.dev is None else self.dev.ptr
        self.array = self.host_buf.view(dtype, shape)

    def upload(self, stream: int, nbytes: Optional[int] = None) -> None:
        if self.dev is not None:
            self._launcher.copy_htod(self.dev.ptr, self.host_buf.host[: nbytes or self.nbytes], stream)  # type: ignore[index]

    def download(self, stream: int, nbytes: Optional[int] = None) -> None:
        if self.dev is not None:
            self._launcher.copy_dtoh(self.host_buf.host[: nbytes or self.nbytes], self.dev.ptr, stream)  # type: ignore[index]

    def free(self) -> None:
        self._launcher.free(self.host_buf)
        if self.dev is not None:
            self._launcher.free(self.dev)


__all__ = ["Buffer", "KernelLauncher", "LaunchError", "Mirror", "pack_params"]
