"""What board and host this is: Jetson model, L4T/JetPack release, CPU, TensorRT, Python.

Everything is read under a sysfs root (``/`` on the board; a recorded tree in tests) and gives ``None``
where it does not exist (an x86 machine, a container), never an error.
"""

from __future__ import annotations

import platform
from typing import Any, Dict, Optional

from yolo_nano.core.l4t import RELEASE_FILE, jetson_release, parse_nv_tegra_release
from yolo_nano.core.sysfs import read_text, sysfs_path


def board_model(root: str = "/") -> Optional[str]:
    """Board name from ``/proc/device-tree/model`` (e.g. ``Jetson-AGX``), None off a Jetson/ARM board."""
    return read_text(sysfs_path(root, "/proc/device-tree/model")) or None


def is_jetson(root: str = "/") -> bool:
    """True when ``/etc/nv_tegra_release`` exists under ``root`` (every L4T image ships it)."""
    return read_text(sysfs_path(root, RELEASE_FILE)) is not None


def l4t_release(root: str = "/") -> Optional[str]:
    """L4T release as the benchmark records it, ``R35.2.1``; the file's first line (80 characters at
    most) when it is not in the usual ``# R35 (release), REVISION: 2.1`` form; None off a Jetson."""
    text = read_text(sysfs_path(root, RELEASE_FILE))
    if not text:
        return None
    release = parse_nv_tegra_release(text)
    return f"R{release}" if release else text.splitlines()[0][:80]


def jetpack_release(root: str = "/") -> Optional[str]:
    """JetPack version (``"5.1"``) from the nvidia-jetpack package or the L4T release; None off a Jetson."""
    return jetson_release(root)[1]


def cpu_model(root: str = "/") -> Optional[str]:
    """CPU name from ``/proc/cpuinfo`` (``model name``, ``Hardware`` or ``cpu model``), else the platform's."""
    text = read_text(sysfs_path(root, "/proc/cpuinfo"), limit=1 << 20) or ""
    for line in text.splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")) and ":" in line:
            return line.split(":", 1)[1].strip()
    return platform.processor() or None


def tensorrt_version() -> Optional[str]:
    """Version of the importable TensorRT, ``unloadable (...)`` when its libraries fail, None without it."""
    try:
        import tensorrt  # lazy: only on a Jetson / a TensorRT install
    except ImportError:
        return None
    except OSError as e:  # installed but its libraries do not load
        return f"unloadable ({e})"
    return str(getattr(tensorrt, "__version__", "unknown"))


def onnxruntime_version() -> Optional[str]:
    """Version of the importable ONNX Runtime, None without it."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return str(onnxruntime.__version__)


def host_identity(root: str = "/") -> Dict[str, Any]:
    """The board and host fields of a benchmark record: ``board``, ``cpu``, ``l4t``, ``tensorrt``,
    ``python``, ``machine`` (and ``onnxruntime`` when importable)."""
    ident: Dict[str, Any] = {
        "board": board_model(root),
        "cpu": cpu_model(root),
        "l4t": l4t_release(root),
        "tensorrt": tensorrt_version(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    ort = onnxruntime_version()
    if ort is not None:
        ident["onnxruntime"] = ort
    return ident
