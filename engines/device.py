"""What machine we build on or run on: TensorRT import, GPU, Jetson release, build capabilities.

Everything here imports without TensorRT or CUDA. The GPU is queried through the CUDA driver API
(``libcuda.so.1`` via ctypes: stable ABI, no pycuda or torch needed); the Jetson release comes from
``/etc/nv_tegra_release`` and the ``nvidia-jetpack`` package.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Any, Optional, Tuple

#: JetPack release for an L4T release, for boards where the nvidia-jetpack package is not installed.
L4T_TO_JETPACK = {
    "35.1.0": "5.0.2",
    "35.2.1": "5.1",
    "35.3.1": "5.1.1",
    "35.4.1": "5.1.2",
    "35.5.0": "5.1.3",
    "35.6.0": "5.1.4",
    "36.3.0": "6.0",
    "36.4.0": "6.1",
    "36.4.3": "6.2",
}

TENSORRT_REQUIRED = (
    "TensorRT is required for this (it ships with JetPack on a Jetson: `sudo apt install python3-libnvinfer`; "
    "on an x86 GPU machine: `pip install tensorrt`)"
)


class TensorRTUnavailable(ImportError):
    """TensorRT (or pycuda) is not importable here."""


class GpuUnavailable(RuntimeError):
    """No CUDA driver or GPU could be queried."""


def import_tensorrt() -> Any:
    """Import and return the ``tensorrt`` module, or raise :class:`TensorRTUnavailable` saying what to do.

    A ``tensorrt`` folder without the real bindings (e.g. left by the ``tensorrt-stubs`` package) counts
    as missing.
    """
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(f"{TENSORRT_REQUIRED}: {e}") from e
    if not hasattr(trt, "Builder") or not hasattr(trt, "__version__"):
        raise TensorRTUnavailable(
            f"{TENSORRT_REQUIRED}: the importable 'tensorrt' has no bindings (stubs only?)"
        )
    return trt


def tensorrt_available() -> bool:
    """True when the real TensorRT bindings import (for pytest skips)."""
    try:
        import_tensorrt()
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class GpuInfo:
    """The CUDA device: name, compute capability ``"7.2"``, integrated (shares host memory, Jetson),
    can map host memory (zero-copy pinned buffers)."""

    name: str
    compute_capability: str
    integrated: bool
    can_map_host_memory: bool


_CU_ATTR_INTEGRATED = 18
_CU_ATTR_CAN_MAP_HOST_MEMORY = 19
_CU_ATTR_CC_MAJOR = 75
_CU_ATTR_CC_MINOR = 76


def query_gpu(device: int = 0) -> GpuInfo:
    """Query CUDA device ``device`` through the driver API. Raises :class:`GpuUnavailable`."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        raise GpuUnavailable(f"no CUDA driver (libcuda.so.1): {e}") from e

    def check(rc: int, what: str) -> None:
        if rc != 0:
            raise GpuUnavailable(f"CUDA driver call {what} failed with CUresult {rc}")

    check(lib.cuInit(0), "cuInit")
    dev = ctypes.c_int()
    check(lib.cuDeviceGet(ctypes.byref(dev), device), "cuDeviceGet")
    name = ctypes.create_string_buffer(256)
    check(lib.cuDeviceGetName(name, 256, dev), "cuDeviceGetName")

    def attr(a: int) -> int:
        v = ctypes.c_int()
        check(lib.cuDeviceGetAttribute(ctypes.byref(v), a, dev), f"cuDeviceGetAttribute({a})")
        return int(v.value)

    return GpuInfo(
        name=name.value.decode("utf-8", "replace"),
        compute_capability=f"{attr(_CU_ATTR_CC_MAJOR)}.{attr(_CU_ATTR_CC_MINOR)}",
        integrated=bool(attr(_CU_ATTR_INTEGRATED)),
        can_map_host_memory=bool(attr(_CU_ATTR_CAN_MAP_HOST_MEMORY)),
    )


_TEGRA_RE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)")


def parse_nv_tegra_release(text: str) -> Optional[str]:
    """L4T release ``"35.3.1"`` from the text of ``/etc/nv_tegra_release`` (None when not recognised)."""
    m = _TEGRA_RE.search(text)
    if not m:
        return None
    revision = m.group(2).strip(".")
    parts = revision.split(".")
    if len(parts) == 1:
        parts.append("0")
    return ".".join([m.group(1)] + parts[:2])


def jetson_release(root: str = "/") -> Tuple[Optional[str], Optional[str]]:
    """``(l4t, jetpack)`` of this board, ``(None, None)`` off a Jetson.

    JetPack comes from the ``nvidia-jetpack`` package when installed, else from :data:`L4T_TO_JETPACK`.
    """
    try:
        with open(os.path.join(root, "etc", "nv_tegra_release"), encoding="utf-8", errors="replace") as f:
            l4t = parse_nv_tegra_release(f.read())
    except OSError:
        return None, None
    jetpack = None
    if root == "/":
        try:
            out = subprocess.run(
                ["dpkg-query", "--showformat=${Version}", "--show", "nvidia-jetpack"],
                capture_output=True, text=True, timeout=10, check=False,
            )  # fmt: skip
            if out.returncode == 0 and out.stdout.strip():
                jetpack = out.stdout.strip().split("-")[0]
        except (OSError, subprocess.SubprocessError):
            pass
    if jetpack is None and l4t is not None:
        jetpack = L4T_TO_JETPACK.get(l4t)
    return l4t, jetpack


@dataclass(frozen=True)
class DeviceCapabilities:
    """What the build device can do (from the TensorRT builder and the CUDA driver)."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    fast_fp16: bool
    fast_int8: bool
    num_dla_cores: int
    integrated: bool = False


def _cc_tuple(cc: str) -> Tuple[int, int]:
    major, _, minor = cc.partition(".")
    return int(major), int(minor or 0)


def fast_precisions_for(compute_capability: str) -> Tuple[bool, bool]:
    """``(fast_fp16, fast_int8)`` from the compute capability, where the builder no longer says
    (``platform_has_fast_*`` are deprecated in TensorRT 10): FP16 from 5.3 (except 6.1), INT8 from 6.1."""
    cc = _cc_tuple(compute_capability)
    return (cc >= (5, 3) and cc != (6, 1)), cc >= (6, 1)


def capabilities_from_builder(trt: Any, builder: Any, gpu: GpuInfo) -> DeviceCapabilities:
    """Read :class:`DeviceCapabilities` from a ``tensorrt.Builder`` on the queried GPU."""
    fp16, int8 = fast_precisions_for(gpu.compute_capability)
    fp16 = bool(getattr(builder, "platform_has_fast_fp16", fp16))
    int8 = bool(getattr(builder, "platform_has_fast_int8", int8))
    return DeviceCapabilities(
        tensorrt_version=str(trt.__version__),
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        fast_fp16=fp16,
        fast_int8=int8,
        num_dla_cores=int(getattr(builder, "num_DLA_cores", 0)),
        integrated=gpu.integrated,
    )


class PrimaryContext:
    """The CUDA device's primary context, retained once and pushed/popped around each use.

    A CUDA context is current per thread; pycuda's ``autoinit`` makes one for the importing thread only,
    which gives the common "invalid device context" error when inference runs in another thread. The
    primary context is the one the CUDA runtime (and TensorRT) use, so retaining it shares state with
    them. Use as ``with ctx: ...``; re-entrant; :meth:`detach` releases it.
    """

    def __init__(self, device: int = 0) -> None:
        try:
            import pycuda.driver as cuda
        except ImportError as e:
            raise TensorRTUnavailable(
                f"pycuda is required to run TensorRT engines from Python (`pip install pycuda` with "
                f"/usr/local/cuda/bin on PATH): {e}"
            ) from e
        self._cuda = cuda
        cuda.init()
        self.device = cuda.Device(device)
        self._ctx: Any = self.device.retain_primary_context()
        self._depth = 0

    def __enter__(self) -> PrimaryContext:
        self._ctx.push()
        self._depth += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        self._depth -= 1
        self._cuda.Context.pop()

    def detach(self) -> None:
        """Release the retained context (after freeing everything allocated in it)."""
        if self._ctx is not None:
            self._ctx.detach()
            self._ctx = None
