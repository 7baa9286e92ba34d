"""What machine we build on or run on: TensorRT import, GPU, Jetson release, build capabilities.

Everything here imports without TensorRT or CUDA. The GPU is queried through the CUDA driver API
(``libcuda.so.1`` via ctypes: stable ABI, no pycuda or torch needed); the Jetson release comes from
``/etc/nv_tegra_release`` and the ``nvidia-jetpack`` package.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Tuple

from yolo_nano.core.l4t import L4T_TO_JETPACK as L4T_TO_JETPACK  # the one L4T parser; re-exported
from yolo_nano.core.l4t import jetson_release as jetson_release
from yolo_nano.core.l4t import parse_nv_tegra_release as parse_nv_tegra_release

from .cuda_context import PrimaryContext as PrimaryContext  # moved there; re-exported for callers
from .trt_versions import TensorRTUnavailable as TensorRTUnavailable  # defined there; re-exported
from .trt_versions import check_version, tensorrt_path

TENSORRT_REQUIRED = (
    "TensorRT is required for this (on a Jetson it ships with JetPack: `sudo apt install python3-libnvinfer`; "
    "on an x86 GPU machine: pip install 'tensorrt-cu12==10.16.1.11' or 'tensorrt-cu12==11.4.0.106'; supported: "
    "TensorRT 8.5-8.6, 10.0-10.16, 11.0-11.4)"
)


class GpuUnavailable(RuntimeError):
    """No CUDA driver or GPU could be queried."""


def import_tensorrt() -> Any:
    """Import and return the ``tensorrt`` module, or raise :class:`TensorRTUnavailable` saying what to do.

    A ``tensorrt`` folder without the real bindings (e.g. left by the ``tensorrt-stubs`` package) counts
    as missing; a release outside the supported range raises
    :class:`~yolo_nano.engines.trt_versions.UnsupportedTensorRT` (a :class:`TensorRTUnavailable`) naming
    it and what is supported.
    """
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(f"{TENSORRT_REQUIRED}: {e}") from e
    if not hasattr(trt, "Builder") or not hasattr(trt, "__version__"):
        raise TensorRTUnavailable(
            f"{TENSORRT_REQUIRED}: the importable 'tensorrt' has no bindings (stubs only?)"
        )
    check_version(str(trt.__version__))
    return trt


def tensorrt_available() -> bool:
    """True when real TensorRT bindings of a supported release import (for pytest skips)."""
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
    version = str(trt.__version__)
    if check_version(version).major == 8:
        fp16, int8 = _fast_precisions_from_builder(builder)
    else:  # platform_has_fast_* are deprecated in 10 and gone in 11: the compute capability says it
        fp16, int8 = fast_precisions_for(gpu.compute_capability)
    return DeviceCapabilities(
        tensorrt_version=version,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        fast_fp16=fp16,
        fast_int8=int8,
        num_dla_cores=int(builder.num_DLA_cores),
        integrated=gpu.integrated,
    )


@tensorrt_path(8)
def _fast_precisions_from_builder(builder: Any) -> Tuple[bool, bool]:
    """TensorRT 8.x's own answer (``platform_has_fast_*``)."""
    return bool(builder.platform_has_fast_fp16), bool(builder.platform_has_fast_int8)
