"""Which INT8 scheme ONNX Runtime runs exactly on which CPU, and which CPU this process runs on.

``nano-quantize --target cpu`` makes uint8-activation Q/DQ models; the weights' integer type must suit
the CPU that will run the model (:data:`INT8_SCHEMES`, :data:`SCHEME_FOR_CPU`). Torch-free, numpy only.
"""

from __future__ import annotations

import importlib
import platform
from typing import Dict, FrozenSet, Iterable, List, Optional, Set

#: ``--int8-scheme`` for the ``cpu`` target: the integer types ONNX Runtime's convolutions multiply
#: (activations are uint8 in all three). ``u8s8``: int8 weights, full 8-bit range, the fastest on x86.
#: ``u8s8-reduce-range``: int8 weights in [-64, 64] (7 bits), same fast kernel. ``u8u8``: uint8 weights
#: (zero point 128), a slower 16-bit x86 kernel. Why the choice depends on the CPU: ONNX Runtime's u8s8
#: kernel on AVX2 and on AVX-512 without VNNI multiplies with VPMADDUBSW, which adds each pair of
#: uint8 x int8 products in int16 and saturates (255*127*2 = 64770 > 32767). VNNI (VPDPBUSD), AMX and
#: pre-AVX2 x86 kernels accumulate in 32 bits; ARM ones use SDOT/UDOT, or (without the dot product,
#: e.g. Xavier's Carmel) add two int16 products of (uint8 - 128) x int8, which cannot overflow with the
#: symmetric [-127, 127] weights written here (128*127*2 = 32512). 7-bit weights cannot overflow
#: (255*64*2 = 32640) and u8u8 widens to 16 bits first, so both are exact everywhere.
INT8_SCHEMES = ("u8s8", "u8s8-reduce-range", "u8u8")
AUTO_SCHEME = "auto"
#: CPU classes, by what ONNX Runtime's u8s8 convolution kernel does on them.
CPU_CLASSES: Dict[str, str] = {
    "x86-vnni": "x86-64 with AVX-512 VNNI, AVX-VNNI or AMX-INT8 (u8s8 accumulates in 32 bits)",
    "x86-avx2": "x86-64 with AVX2 or AVX-512 but no VNNI (u8s8 saturates in VPMADDUBSW)",
    "x86-sse": "x86-64 without AVX2 (u8s8 widened to 16 bits: exact)",
    "arm": "ARM, e.g. the Jetson's CPU (dot-product or 16-bit NEON kernels: exact)",
    "other": "another architecture (ONNX Runtime's portable kernels: exact)",
}
#: What ``auto`` picks per class: full-range u8s8 wherever it is exact (most accurate and fastest);
#: 7-bit weights where it saturates (keeps the fast u8s8 kernel; u8u8 is the slower 16-bit kernel).
SCHEME_FOR_CPU: Dict[str, str] = {
    "x86-vnni": "u8s8",
    "x86-avx2": "u8s8-reduce-range",
    "x86-sse": "u8s8",
    "arm": "u8s8",
    "other": "u8s8",
}
CPUINFO = "/proc/cpuinfo"
_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
#: numpy's runtime CPU feature names (CPUID and OS support, as ONNX Runtime tests them) -> cpuinfo names.
_NUMPY_FLAGS = {"AVX2": "avx2", "AVX512F": "avx512f", "AVX512BW": "avx512bw", "AVX512VNNI": "avx512_vnni"}


def cpu_class(machine: str, flags: Iterable[str]) -> str:
    """The :data:`CPU_CLASSES` key for an architecture (``platform.machine()``: x86_64, AMD64,
    aarch64, ...) and its ISA flags in ``/proc/cpuinfo`` spelling (avx2, avx512_vnni, avx_vnni, ...)."""
    arch = machine.lower()
    if arch in ("x86_64", "amd64", "x64", "i386", "i686", "x86"):
        have = set(flags)
        if have & _VNNI_FLAGS:
            return "x86-vnni"
        return "x86-avx2" if "avx2" in have else "x86-sse"
    if arch.startswith(("aarch64", "arm")):
        return "arm"
    return "other"


def saturating_schemes(cpu: str) -> List[str]:
    """The schemes whose ONNX Runtime kernels saturate (lose accuracy) on CPU class ``cpu``."""
    return ["u8s8"] if cpu == "x86-avx2" else []


def cpus_for_scheme(scheme: str) -> List[str]:
    """The CPU classes ``auto`` picks ``scheme`` for: what a file made with it targets (u8u8: none,
    it is the exact-everywhere fallback)."""
    return [c for c, picked in SCHEME_FOR_CPU.items() if picked == scheme]


def describe_scheme(scheme: str) -> str:
    """Which CPUs a ``scheme`` model is for and where it loses accuracy, in one clause."""
    bad = [c for c in CPU_CLASSES if scheme in saturating_schemes(c)]
    text = f"for {', '.join(cpus_for_scheme(scheme)) or 'any CPU (slower x86 kernel)'}"
    if bad:
        return text + f"; saturates on {', '.join(bad)} (there quantize with --int8-scheme u8s8-reduce-range)"
    return text + "; exact on every CPU class"


def _numpy_cpu_flags() -> Optional[Set[str]]:
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # numpy 2, 1.20+
        try:
            features = importlib.import_module(module).__cpu_features__
        except (ImportError, AttributeError):
            continue
        return {ours for theirs, ours in _NUMPY_FLAGS.items() if features.get(theirs)}
    return None


def _proc_cpuinfo_flags(path: Optional[str] = None) -> Optional[Set[str]]:
    try:
        with open(path or CPUINFO, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):  # x86 / ARM spelling
                    return set(value.split())
    except OSError:
        pass
    return None


def this_cpu_flags() -> FrozenSet[str]:
    """ISA flags of the CPU this process runs on. numpy's runtime CPUID check decides the flags it
    knows (an emulator such as ``qemu-x86_64 -cpu Haswell`` shows the host's ``/proc/cpuinfo``);
    ``/proc/cpuinfo`` adds the ones numpy does not test (avx_vnni, amx_int8) when it agrees with numpy."""
    from_cpuid = _numpy_cpu_flags()
    from_proc = _proc_cpuinfo_flags()
    if from_cpuid is None:
        return frozenset(from_proc or ())
    flags = set(from_cpuid)
    if from_proc is not None and from_proc & set(_NUMPY_FLAGS.values()) == from_cpuid:
        flags |= from_proc
    return frozenset(flags)


def this_cpu_class() -> str:
    """:func:`cpu_class` of the machine this process runs on."""
    return cpu_class(platform.machine(), this_cpu_flags())
