"""The CUDA kernels of the GPU pipeline: sources, launch signatures, and compilation to cubin at first use.

The sources are CUDA C files shipped in the package (``yolo_nano/runtime/kernels/*.cu``). A board
compiles them with its own CUDA toolchain the first time the pipeline runs (NVRTC through ctypes, else
``nvcc``) for its own GPU (``sm_72`` on AGX Xavier, ``sm_87`` on Orin) and keeps the cubin in
``<cache>/kernels`` (``$YOLO_NANO_CACHE`` or ``~/.cache/yolo-nano-edge``), keyed by the source hash, the
compile options, the architecture and the compiler's CUDA version. Only cubins are ever loaded, never
PTX: PTX from a newer CUDA than the driver's (CUDA 11.8's ISA 7.8 on JetPack 5.1's 11.4 driver) does not
load. :data:`KERNELS` is the one table of launch signatures that the CUDA driver launcher and the CPU
emulation (:mod:`yolo_nano.runtime.kernel_emu`) both marshal arguments from.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from yolo_nano.core.fileio import atomic_write_bytes

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
SOURCES: Tuple[str, ...] = ("letterbox.cu", "decode.cu", "nms.cu")
# One rounding per operation, as numpy: no fused multiply-add contraction (the NMS IoU test and the
# decoded boxes are compared bit for bit with the numpy reference).
NVRTC_OPTIONS: Tuple[str, ...] = ("--fmad=false",)
NVCC_OPTIONS: Tuple[str, ...] = ("-fmad=false",)

INSTALL_HINT = (
    "the CUDA post-processing compiles its kernels on this machine at first use and needs NVRTC or nvcc "
    "from the CUDA toolkit (JetPack: `sudo apt install nvidia-jetpack`, or only `sudo apt install "
    "cuda-nvrtc-11-4`; elsewhere the CUDA toolkit, or set YOLO_NANO_NVRTC=/path/to/libnvrtc.so); "
    "or use the numpy post-processing: Detector(..., postprocess='cpu')"
)


class KernelBuildError(RuntimeError):
    """The kernels cannot be compiled here: no compiler for the GPU, or a compile error."""


@dataclass(frozen=True)
class KernelSpec:
    """How to launch one kernel. ``params``: per argument, ``"ptr"`` (a device pointer, 0 for null),
    ``"i32"``, ``"f32"``; ``block``: the block shape the pipeline uses; ``syncs``: the kernel calls
    ``__syncthreads`` (the emulation then runs a block's threads concurrently)."""

    name: str
    source: str
    params: Tuple[str, ...]
    block: Tuple[int, int, int]
    syncs: bool


KERNELS: Dict[str, KernelSpec] = {
    k.name: k
    for k in (
        KernelSpec(
            "letterbox",
            "letterbox.cu",
            (
                "ptr",
                "ptr",
                "ptr",
                "i32",
                "i32",
                "i32",
                "i32",
                "f32",
                "f32",
                "f32",
                "f32",
                "f32",
                "f32",
                "f32",
                "i32",
            ),
            (16, 16, 1),
            False,
        ),
        KernelSpec(
            "decode",
            "decode.cu",
            ("ptr", "i32", "ptr", "i32", "i32", "f32", "f32", "ptr", "i32", "i32", "ptr", "ptr", "ptr"),
            (128, 1, 1),
            False,
        ),
        KernelSpec("sort_candidates", "nms.cu", ("ptr", "ptr", "i32"), (512, 1, 1), True),
        KernelSpec(
            "nms",
            "nms.cu",
            ("ptr", "ptr", "ptr", "ptr", "ptr", "ptr", "i32", "i32", "i32", "f32", "i32"),
            (64, 1, 1),
            True,
        ),
    )
}


def read_source(name: str) -> str:
    """The text of ``kernels/<name>``."""
    return (KERNEL_DIR / name).read_text()


def _digest(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(
            repr(p).encode() if not isinstance(p, (bytes, str)) else (p.encode() if isinstance(p, str) else p)
        )
        h.update(b"\0")
    return h.hexdigest()


def kernel_cache_dir() -> Path:
    """``<cache>/kernels``: ``$YOLO_NANO_CACHE`` or ``~/.cache/yolo-nano-edge`` (the default model's cache)."""
    from .default_model import cache_dir

    return cache_dir() / "kernels"


# -- NVRTC (ctypes) ------------------------------------------------------------------------------------


class Nvrtc:
    """libnvrtc through ctypes: CUDA C -> PTX (``compute_XX``) or cubin (``sm_XX``) without a GPU."""

    kind = "nvrtc"

    def __init__(self, path: str) -> None:
        self.path = path
        folder = os.path.dirname(path)
        # NVRTC dlopens its builtins library by soname: load it first from beside libnvrtc.
        for builtins in sorted(glob.glob(os.path.join(folder, "libnvrtc-builtins.so*"))):
            try:
                ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
                break
            except OSError:
                continue
        self._lib = ctypes.CDLL(path)
        lib = self._lib
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        self.version: Tuple[int, int] = (major.value, minor.value)

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            msg = self._lib.nvrtcGetErrorString(rc)
            raise KernelBuildError(f"{what} failed: {msg.decode() if msg else rc} ({self.path})")

    def supported_archs(self) -> List[int]:
        """Compute capabilities this NVRTC compiles for, e.g. [35, ..., 72, 75, 80, 86, 87, 89, 90]."""
        fn = getattr(self._lib, "nvrtcGetSupportedArchs", None)
        if fn is None:  # before CUDA 11.2
            return []
        n = ctypes.c_int()
        self._check(self._lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)), "nvrtcGetNumSupportedArchs")
        arr = (ctypes.c_int * n.value)()
        self._check(fn(arr), "nvrtcGetSupportedArchs")
        return list(arr)

    def compile(self, source: str, name: str, arch: str, options: Sequence[str] = NVRTC_OPTIONS) -> bytes:
        """Compile ``source``: ``arch`` ``sm_XX`` gives a cubin, ``compute_XX`` gives PTX."""
        lib = self._lib
        prog = ctypes.c_void_p()
        self._check(
            lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None),
            "nvrtcCreateProgram",
        )
        try:
            opts = [f"--gpu-architecture={arch}".encode()] + [o.encode() for o in options]
            argv = (ctypes.c_char_p * len(opts))(*opts)
            rc = lib.nvrtcCompileProgram(prog, len(opts), argv)
            if rc != 0:
                size = ctypes.c_size_t()
                lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
                log = ctypes.create_string_buffer(size.value)
                lib.nvrtcGetProgramLog(prog, log)
                raise KernelBuildError(
                    f"NVRTC {self.version[0]}.{self.version[1]} could not compile {name} for {arch}:\n"
                    + log.value.decode(errors="replace").strip()
                )
            what = "CUBIN" if arch.startswith("sm_") else "PTX"
            size = ctypes.c_size_t()
            self._check(getattr(lib, f"nvrtcGet{what}Size")(prog, ctypes.byref(size)), f"nvrtcGet{what}Size")
            buf = ctypes.create_string_buffer(size.value)
            self._check(getattr(lib, f"nvrtcGet{what}")(prog, buf), f"nvrtcGet{what}")
            data = buf.raw
            return data.rstrip(b"\0") if what == "PTX" else data
        finally:
            lib.nvrtcDestroyProgram(ctypes.byref(prog))


class Nvcc:
    """The ``nvcc`` compiler driver: CUDA C -> cubin for one ``sm_XX``."""

    kind = "nvcc"

    def __init__(self, path: str) -> None:
        self.path = path
        out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
        m = re.search(r"release (\d+)\.(\d+)", out)
        if not m:
            raise KernelBuildError(f"{path} --version does not name a CUDA release: {out.strip()[:200]}")
        self.version = (int(m.group(1)), int(m.group(2)))

    def supported_archs(self) -> List[int]:
        out = subprocess.run(
            [self.path, "--list-gpu-arch"], capture_output=True, text=True, check=False
        ).stdout
        return sorted({int(x) for x in re.findall(r"compute_(\d+)", out)})

    def compile(self, source: str, name: str, arch: str, options: Sequence[str] = NVCC_OPTIONS) -> bytes:
        if not arch.startswith("sm_"):
            raise KernelBuildError(f"nvcc builds cubins here; got arch {arch!r} (expected sm_XX)")
        with tempfile.TemporaryDirectory(prefix="yolo-nano-nvcc-") as tmp:
            src = os.path.join(tmp, name)
            out = os.path.join(tmp, "out.cubin")
            Path(src).write_text(source)
            proc = subprocess.run(
                [self.path, "-cubin", f"-arch={arch}", *options, "-o", out, src],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise KernelBuildError(
                    f"nvcc {self.version[0]}.{self.version[1]} could not compile {name} for {arch}:\n"
                    + (proc.stderr or proc.stdout).strip()
                )
            return Path(out).read_bytes()


def _nvrtc_candidates() -> List[str]:
    found: List[str] = []
    env = os.environ.get("YOLO_NANO_NVRTC")
    if env:
        found.append(env)
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    for root in filter(None, roots):
        for sub in ("lib64", "lib", "targets/*/lib"):
            found += sorted(glob.glob(os.path.join(root, sub, "libnvrtc.so*")))
    name = ctypes.util.find_library("nvrtc")
    if name:
        found.append(name)
    try:  # the PyPI wheel (nvidia-cuda-nvrtc-cu11/-cu12)
        spec = importlib.util.find_spec("nvidia.cuda_nvrtc")
    except (ImportError, ValueError):
        spec = None
    for loc in list(spec.submodule_search_locations or []) if spec else []:
        found += sorted(glob.glob(os.path.join(loc, "lib", "libnvrtc.so*")))
    # libnvrtc.so.X.Y and its symlinks name one library; builtins are not NVRTC itself
    out: List[str] = []
    seen = set()
    for p in found:
        if "builtins" in os.path.basename(p) or p.endswith(".alt.so"):
            continue
        key = os.path.realpath(p) if os.path.exists(p) else p
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _nvcc_candidates() -> List[str]:
    paths = [shutil.which("nvcc")]
    for root in filter(None, [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]):
        paths.append(os.path.join(root, "bin", "nvcc"))
    out: List[str] = []
    for p in paths:
        if (
            p
            and os.path.isfile(p)
            and os.access(p, os.X_OK)
            and os.path.realpath(p) not in map(os.path.realpath, out)
        ):
            out.append(p)
    return out


def find_compilers() -> List[object]:
    """Every usable NVRTC library and nvcc found here (:class:`Nvrtc` / :class:`Nvcc` objects)."""
    compilers: List[object] = []
    for path in _nvrtc_candidates():
        try:
            compilers.append(Nvrtc(path))
        except (OSError, KernelBuildError, AttributeError):
            continue
    for path in _nvcc_candidates():
        try:
            compilers.append(Nvcc(path))
        except (OSError, KernelBuildError):
            continue
    return compilers


def choose_compiler(arch: str, driver_version: Optional[Tuple[int, int]] = None) -> object:
    """The compiler to build cubins for ``arch`` (``sm_XX``): one that supports it, the newest not newer
    than the driver's CUDA version (a cubin from a newer major CUDA does not load), NVRTC before nvcc.
    Raises :class:`KernelBuildError` with the install step when there is none."""
    cc = int(arch.split("_")[1])
    usable = []
    for c in find_compilers():
        archs = c.supported_archs()  # type: ignore[attr-defined]
        if archs and cc not in archs:
            continue
        version = c.version  # type: ignore[attr-defined]
        if driver_version is not None and version[0] > driver_version[0]:
            continue
        usable.append(c)
    if not usable:
        raise KernelBuildError(f"no CUDA compiler for {arch} found: {INSTALL_HINT}")
    if driver_version is not None and any(c.version <= driver_version for c in usable):  # type: ignore[attr-defined]
        usable = [c for c in usable if c.version <= driver_version]  # type: ignore[attr-defined]
    usable.sort(key=lambda c: (c.version, c.kind == "nvrtc"), reverse=True)  # type: ignore[attr-defined]
    return usable[0]


def build_cubins(
    arch: str,
    compiler: Optional[object] = None,
    cache: Optional[Path] = None,
    driver_version: Optional[Tuple[int, int]] = None,
) -> Dict[str, bytes]:
    """Cubins of every source in :data:`SOURCES` for ``arch`` (e.g. ``"sm_72"``), from the cache when
    present, else compiled (by ``compiler``, default :func:`choose_compiler`) and cached atomically.
    ``cache``: the cache folder (default :func:`kernel_cache_dir`)."""
    folder = Path(cache) if cache is not None else kernel_cache_dir()
    comp = compiler if compiler is not None else choose_compiler(arch, driver_version)
    kind, version = comp.kind, comp.version  # type: ignore[attr-defined]
    options = NVRTC_OPTIONS if kind == "nvrtc" else NVCC_OPTIONS
    out: Dict[str, bytes] = {}
    for name in SOURCES:
        source = read_source(name)
        key = _digest(source, options, arch, kind, version)[:20]
        path = folder / f"{Path(name).stem}-{arch}-{kind}{version[0]}.{version[1]}-{key}.cubin"
        data = path.read_bytes() if path.is_file() else b""
        if not data.startswith(b"\x7fELF"):  # absent (or not a cubin): compile
            data = comp.compile(source, name, arch, options)  # type: ignore[attr-defined]
            try:
                folder.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path, data, fsync=False)
            except OSError:
                pass  # a read-only cache only costs a compile next time
        out[name] = data
    return out


def ptxas_path() -> Optional[str]:
    """A ``ptxas`` (PTX -> cubin): the PyPI ``nvidia-cuda-nvcc-cu11`` wheel's, else the toolkit's."""
    try:
        spec = importlib.util.find_spec("nvidia.cuda_nvcc")
    except (ImportError, ValueError):
        spec = None
    for loc in list(spec.submodule_search_locations or []) if spec else []:
        p = os.path.join(loc, "bin", "ptxas")
        if os.path.isfile(p):
            return p
    return shutil.which("ptxas")


def ptx_to_cubin(ptx: bytes, arch: str, ptxas: str) -> bytes:
    """Assemble PTX into a cubin for ``arch`` (``sm_XX``) with ``ptxas``."""
    with tempfile.TemporaryDirectory(prefix="yolo-nano-ptxas-") as tmp:
        src, out = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
        Path(src).write_bytes(ptx)
        proc = subprocess.run(
            [ptxas, f"-arch={arch}", src, "-o", out], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise KernelBuildError(
                f"ptxas could not assemble for {arch}:\n{(proc.stderr or proc.stdout).strip()}"
            )
        return Path(out).read_bytes()


__all__ = [
    "INSTALL_HINT",
    "KERNELS",
    "KERNEL_DIR",
    "SOURCES",
    "KernelBuildError",
    "KernelSpec",
    "Nvcc",
    "Nvrtc",
    "build_cubins",
    "choose_compiler",
    "find_compilers",
    "kernel_cache_dir",
    "ptx_to_cubin",
    "ptxas_path",
    "read_source",
]
