"""Board and software: board model, L4T and JetPack, Python, numpy, OpenCV, ONNX Runtime (and its
providers), TensorRT (and its plugins), pycuda, the CUDA driver and runtime versions, the CUDA compiler
the kernels need, jetson-stats.

The Python packages every install needs are ``missing`` when absent anywhere; TensorRT, pycuda and CUDA
are expected only on a Jetson or beside a CUDA GPU (``n/a`` elsewhere, with the install step anyway).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
import os
import platform
import re
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any, List, Optional, Tuple

from yolo_nano.core.l4t import jetson_release
from yolo_nano.jetson.board import board_model

from ..result import Check, Context, check, failed, missing, not_here, ok

#: Oldest L4T major with a TensorRT we support (R35 = JetPack 5.x: TensorRT 8.5).
OLDEST_L4T_MAJOR = 35

TENSORRT_FIX_JETSON = (
    "TensorRT comes with JetPack: sudo apt install python3-libnvinfer (JetPack 5.1 ships TensorRT 8.5); in "
    "a virtual environment, create it with `python3 -m venv --system-site-packages` so JetPack's tensorrt "
    "is importable"
)
PYCUDA_FIX = (
    "pip install 'pycuda>=2022.1' with JetPack's CUDA compiler on PATH (it builds from source, about 3 "
    "minutes, needs python3-dev): export PATH=/usr/local/cuda/bin:$PATH && pip install 'pycuda>=2022.1' "
    "(or pip install 'yolo-nano-edge[jetson]')"
)
JETSON_STATS_FIX = "sudo pip3 install -U jetson-stats, then reboot (it installs the jtop service)"
CUDA_FIX_JETSON = (
    "JetPack's CUDA is missing or broken: sudo apt install nvidia-jetpack (or reflash JetPack 5.1+)"
)


def version_tuple(text: str) -> Tuple[int, ...]:
    """``"4.5.4-dev"`` -> ``(4, 5, 4)``: the leading numbers of a version string."""
    m = re.match(r"\d+(?:\.\d+)*", text.strip())
    return tuple(int(x) for x in m.group(0).split(".")) if m else ()


def _dotted(v: Tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"


# -- board --------------------------------------------------------------------------------------------


@check("board model")
def board(ctx: Context) -> Check:
    model = board_model(ctx.root)
    if not ctx.on_jetson:
        where = f"{model}, " if model else ""
        return not_here("board model", f"not on a Jetson ({where}{ctx.machine})", machine=platform.machine())
    if not model:
        return failed(
            "board model",
            "L4T is installed but /proc/device-tree/model is unreadable",
            "run on the board itself (not in a container without /proc/device-tree), or attach the report",
        )
    return ok("board model", model, model=model)


@check("L4T / JetPack")
def l4t(ctx: Context) -> Check:
    if not ctx.on_jetson:
        return not_here("L4T / JetPack", "not on a Jetson")
    release, jetpack = jetson_release(ctx.root)
    if release is None:
        return failed(
            "L4T / JetPack",
            "/etc/nv_tegra_release is not in the '# R35 (release), REVISION: 2.1' form",
            "attach the report; this project supports JetPack 5.1 (L4T R35) and newer",
        )
    detail = f"L4T {release}, JetPack {jetpack or 'unknown (not in our table)'}"
    if version_tuple(release)[0] < OLDEST_L4T_MAJOR:
        return failed(
            "L4T / JetPack",
            detail + ": its TensorRT is older than 8.5",
            "flash JetPack 5.1 (L4T R35) or newer with NVIDIA SDK Manager",
            l4t=release,
            jetpack=jetpack,
        )
    return ok("L4T / JetPack", detail, l4t=release, jetpack=jetpack)


BOARD_CHECKS = [board, l4t]


# -- Python packages ----------------------------------------------------------------------------------


@check("Python")
def python(ctx: Context) -> Check:
    return ok("Python", f"{platform.python_version()} ({platform.python_implementation()})",
              version=platform.python_version())  # fmt: skip


def _package(name: str, module: str, minimum: Tuple[int, ...], fix: str) -> Check:
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        return missing(name, f"not importable ({e})", fix)
    version = str(getattr(mod, "__version__", "unknown"))
    if version_tuple(version) < minimum:
        need = ".".join(map(str, minimum))
        return failed(name, f"{version} is older than {need}", fix, version=version)
    return ok(name, version, version=version)


@check("numpy")
def numpy_check(ctx: Context) -> Check:
    return _package("numpy", "numpy", (1, 19), "pip install 'numpy>=1.19' (JetPack 5.1: numpy 1.x)")


@check("OpenCV")
def opencv(ctx: Context) -> Check:
    return _package(
        "OpenCV",
        "cv2",
        (4, 5),
        "pip install 'opencv-python-headless>=4.5' (JetPack's python3-opencv 4.5 works)",
    )


@check("ONNX Runtime")
def onnxruntime(ctx: Context) -> Check:
    result = _package("ONNX Runtime", "onnxruntime", (1, 12), "pip install 'onnxruntime>=1.12'")
    if result.status != "ok":
        return result
    import onnxruntime as ort

    providers = list(ort.get_available_providers())
    result.detail += ", providers: " + ", ".join(p.replace("ExecutionProvider", "") for p in providers)
    result.data["providers"] = providers
    return result


# -- TensorRT, pycuda, CUDA ---------------------------------------------------------------------------


def tensorrt_fix(ctx: Context) -> str:
    from yolo_nano.engines.trt_versions import PIP_HINT, SUPPORTED_TEXT

    if ctx.on_jetson:
        return TENSORRT_FIX_JETSON
    return f"on an x86 GPU machine: {PIP_HINT}; supported: {SUPPORTED_TEXT}"


def _plugins(trt: Any) -> List[str]:
    """Names of the registered TensorRT plugin creators (after loading libnvinfer_plugin)."""
    trt.init_libnvinfer_plugins(trt.Logger(trt.Logger.ERROR), "")
    registry = trt.get_plugin_registry()
    creators = getattr(registry, "all_creators", None) or getattr(registry, "plugin_creator_list", [])
    return sorted({str(c.name) for c in creators})


@check("TensorRT")
def tensorrt(ctx: Context) -> Check:
    trt, why, status = ctx.tensorrt()
    if trt is None:
        if not ctx.gpu_stack_applies:
            return not_here("TensorRT", f"no GPU ({why})", tensorrt_fix(ctx))
        detail = f"not importable ({why})" if why.startswith("No module") else why
        return Check("TensorRT", status, detail, tensorrt_fix(ctx))
    version = str(trt.__version__)
    try:
        plugins = _plugins(trt)
    except Exception as e:  # libnvinfer_plugin missing or broken: engines with plugins will not load
        return failed(
            "TensorRT",
            f"{version}, but its plugins do not load ({type(e).__name__}: {e})",
            tensorrt_fix(ctx),
            version=version,
        )
    nms = "EfficientNMS_TRT" in plugins
    detail = f"{version}, {len(plugins)} plugins" + (" (EfficientNMS_TRT)" if nms else "")
    return ok("TensorRT", detail, version=version, plugins=plugins)


@check("pycuda")
def pycuda(ctx: Context) -> Check:
    try:
        import pycuda  # noqa: F401
        import pycuda.driver  # noqa: F401
    except ImportError as e:
        if not ctx.gpu_stack_applies:
            return not_here("pycuda", f"no GPU (not installed: {e})", PYCUDA_FIX)
        return missing("pycuda", f"not importable ({e})", PYCUDA_FIX)
    except OSError as e:  # built against a CUDA that is gone
        return failed("pycuda", f"installed but does not load ({e})", "reinstall it: " + PYCUDA_FIX)
    import pycuda as pc

    version = str(getattr(pc, "VERSION_TEXT", "unknown"))
    return ok("pycuda", version, version=version)


def cuda_driver_version() -> Tuple[Optional[Tuple[int, int]], str]:
    """The CUDA version the driver supports, ``(11, 4)``, from ``libcuda.so.1`` (no GPU call needed)."""
    from yolo_nano.runtime.cuda_driver import CudaUnavailable, load_libcuda

    try:
        lib = load_libcuda()
    except CudaUnavailable as e:
        return None, str(e)
    v = ctypes.c_int()
    rc = lib.cuDriverGetVersion(ctypes.byref(v))
    if rc != 0:
        return None, f"cuDriverGetVersion failed with CUresult {rc}"
    return (v.value // 1000, v.value % 1000 // 10), ""


def _cudart_candidates() -> List[str]:
    found = []
    name = ctypes.util.find_library("cudart")
    if name:
        found.append(name)
    for root in filter(None, [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]):
        found += sorted(glob.glob(os.path.join(root, "lib64", "libcudart.so*")))
        found += sorted(glob.glob(os.path.join(root, "targets", "*", "lib", "libcudart.so*")))
    try:  # the PyPI wheel (nvidia-cuda-runtime-cu11/-cu12)
        spec = importlib.util.find_spec("nvidia.cuda_runtime")
    except (ImportError, ValueError):
        spec = None
    for loc in list(spec.submodule_search_locations or []) if spec else []:
        found += sorted(glob.glob(os.path.join(loc, "lib", "libcudart.so*")))
    return found


def cuda_runtime_version() -> Tuple[Optional[Tuple[int, int]], str]:
    """The CUDA runtime (``libcudart``) version and where it was found, or ``(None, why not)``."""
    for path in _cudart_candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        v = ctypes.c_int()
        if lib.cudaRuntimeGetVersion(ctypes.byref(v)) == 0:
            return (v.value // 1000, v.value % 1000 // 10), path
    return None, "no libcudart found (ldconfig, /usr/local/cuda/lib64, CUDA_HOME)"


@check("CUDA driver / runtime")
def cuda_versions(ctx: Context) -> Check:
    driver, why = cuda_driver_version()
    runtime, where = cuda_runtime_version()
    ctx.found["cuda_driver"] = driver
    data = {"driver": _dotted(driver) if driver else None, "runtime": _dotted(runtime) if runtime else None}
    if driver is None:
        if not ctx.gpu_stack_applies:
            return not_here("CUDA driver / runtime", "no GPU (no CUDA driver libcuda.so.1)", **data)
        fix = CUDA_FIX_JETSON if ctx.on_jetson else "install the NVIDIA driver for this GPU"
        return missing("CUDA driver / runtime", why, fix, **data)
    detail = f"driver CUDA {_dotted(driver)}, runtime " + (f"{_dotted(runtime)}" if runtime else "not found")
    if runtime is None and ctx.gpu_stack_applies:
        fix = CUDA_FIX_JETSON if ctx.on_jetson else "install the CUDA toolkit (TensorRT needs libcudart)"
        return missing("CUDA driver / runtime", f"{detail} ({where})", fix, **data)
    if runtime is not None and runtime > driver:
        return failed(
            "CUDA driver / runtime",
            f"{detail}: the runtime is newer than the driver supports",
            "use the CUDA that matches the driver (JetPack's own), or update the driver",
            **data,
        )
    return ok("CUDA driver / runtime", detail, **data)


def _describe_compiler(c: Any) -> str:
    return f"{c.kind} {c.version[0]}.{c.version[1]} ({c.path})"


@check("CUDA compiler")
def cuda_compiler(ctx: Context) -> Check:
    from yolo_nano.runtime.kernel_build import INSTALL_HINT, KernelBuildError, choose_compiler, find_compilers

    gpu, _ = ctx.gpu()
    if gpu is not None:
        arch = "sm_" + gpu.compute_capability.replace(".", "")
        try:
            comp: Any = choose_compiler(arch, ctx.found.get("cuda_driver"))
        except KernelBuildError as e:
            return missing("CUDA compiler", str(e).split(":")[0], INSTALL_HINT, arch=arch)
        return ok("CUDA compiler", f"{_describe_compiler(comp)} builds {arch}", arch=arch, kind=comp.kind,
                  version=f"{comp.version[0]}.{comp.version[1]}")  # fmt: skip
    compilers: List[Any] = find_compilers()
    listed = "; ".join(_describe_compiler(c) for c in compilers)
    if ctx.on_jetson:  # the GPU did not answer (its own line says why): at least one compiler must exist
        if not compilers:
            return missing("CUDA compiler", "no NVRTC or nvcc found", INSTALL_HINT)
        return ok("CUDA compiler", listed, compilers=[c.kind for c in compilers])
    return not_here("CUDA compiler", "no GPU" + (f"; found here: {listed}" if listed else "; none found"),
                    compilers=[c.kind for c in compilers])  # fmt: skip


@check("jetson-stats")
def jetson_stats(ctx: Context) -> Check:
    if not ctx.on_jetson:
        return not_here("jetson-stats", "not on a Jetson")
    try:
        v = package_version("jetson-stats")
    except PackageNotFoundError:
        return missing("jetson-stats", "not installed", JETSON_STATS_FIX)
    ctx.found["jetson_stats"] = v
    return ok("jetson-stats", v, version=v)


SOFTWARE_CHECKS = [
    python,
    numpy_check,
    opencv,
    onnxruntime,
    tensorrt,
    pycuda,
    cuda_versions,
    cuda_compiler,
    jetson_stats,
]
