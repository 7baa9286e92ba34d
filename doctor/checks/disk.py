"""Disk: room (and write permission) for the kernel and model caches and for engines beside the model;
the model: MODEL opens with valid metadata, or the embedded default model is cached or exportable."""

from __future__ import annotations

import importlib.util
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, List, Optional, Tuple

from yolo_nano.core.backend import BackendUnavailableError, ModelLoadError
from yolo_nano.core.modelfiles import is_engine_path
from yolo_nano.runtime.backends import open_backend
from yolo_nano.runtime.default_model import DefaultModelError, cache_dir, default_model_path
from yolo_nano.runtime.kernel_build import kernel_cache_dir

from ..result import Check, Context, check, failed, missing, not_here, ok

#: Room a cache folder needs: a YOLO Nano engine is 5-20 MB, the exported default model about 15 MB,
#: cubins and the CPU emulation well under 5 MB; INT8 calibration caches are small.
NEED_MB = 200
CACHE_FIX = "free some space there, or point the caches elsewhere: export YOLO_NANO_CACHE=/path/with/room"
MODEL_FIX = (
    "export the model again (nano-export --weights W.safetensors -o model.onnx) or copy it again; "
    "a .engine must be rebuilt on this board (nano-build model.onnx --precision fp16)"
)


def _existing_parent(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (a cache folder is created at first use)."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def room(folder: Path, need_mb: float = NEED_MB) -> Tuple[bool, str, dict]:
    """Whether ``folder`` (created on first use: its nearest existing ancestor is asked) is writable and
    has ``need_mb`` free: ``(ok, text, data)``."""
    base = _existing_parent(folder)
    free_mb = shutil.disk_usage(str(base)).free / 1e6
    writable = os.access(str(base), os.W_OK | os.X_OK)
    data = {"path": str(folder), "free_mb": round(free_mb, 1), "writable": writable, "need_mb": need_mb}
    size = f"{free_mb / 1000:.1f} GB" if free_mb >= 1000 else f"{free_mb:.0f} MB"
    text = f"{folder}: {size} free" + ("" if folder == base else f" (created at first use under {base})")
    if not writable:
        return False, f"{text}, not writable by this user", data
    if free_mb < need_mb:
        return False, f"{text}, needs {need_mb:g} MB", data
    return True, text + ", writable", data


def _folders(ctx: Context) -> List[Tuple[str, Path]]:
    out: List[Tuple[str, Path]] = [("kernel cache", kernel_cache_dir())]
    model = ctx.options.model
    engines = Path(os.path.dirname(os.path.abspath(model))) if model else cache_dir()
    out.append(("engine folder", engines))
    return out


@check("disk room")
def caches(ctx: Context) -> List[Check]:
    results = []
    for name, folder in _folders(ctx):
        good, text, data = room(folder)
        results.append(ok(name, text, **data) if good else failed(name, text, CACHE_FIX, **data))
    return results


def _describe(backend: Any) -> Tuple[str, dict]:
    meta = backend.metadata
    h, w = meta.input_size
    batch = backend.batch_size or "dynamic"
    text = f"{meta.arch}, {w}x{h}, {meta.num_classes} classes, batch {batch}, {backend.name}"
    return text, {"arch": meta.arch, "input_size": [h, w], "classes": meta.num_classes, "batch": str(batch)}


def _open(path: str, ctx: Context) -> Check:
    """Open ``path`` with the backend the Detector would use and read its metadata."""
    try:
        backend = open_backend(path, "onnxruntime-cpu" if not is_engine_path(path) else "auto")
    except ModelLoadError as e:
        return failed("model", str(e), MODEL_FIX)
    except BackendUnavailableError as e:
        if ctx.gpu_stack_applies:
            return failed("model", str(e), "see the TensorRT and pycuda lines above")
        return not_here("model", f"{os.path.basename(path)} is a TensorRT engine and this machine has no GPU")
    except ValueError as e:  # a metadata or shape problem the backend names
        return failed("model", f"{path}: {e}", MODEL_FIX)
    with backend:
        text, data = _describe(backend)
    ctx.found["model"] = path
    return ok("model", f"{path}: {text}", path=path, **data)


@check("model")
def model(ctx: Context) -> Check:
    given = ctx.options.model
    if given:
        return _open(given, ctx)
    torch = importlib.util.find_spec("torch") is not None
    if torch:  # exported on first use (the Detector self-test does it); asking now would export
        return ok("model", "default model: cached, or exported on first use (PyTorch is installed)",
                  default=True, exportable=True)  # fmt: skip
    path: Optional[str] = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            path = default_model_path()  # without PyTorch it never exports: cached or an error
        except DefaultModelError as e:
            return missing(
                "model",
                "the default model is not exported yet and PyTorch is not installed to export it",
                f"pass your own model (nano-doctor model.onnx), or install the train extra once: "
                f"pip install 'yolo-nano-edge[train]' ({e.__class__.__name__})",
            )
    note = "; ".join(str(w.message).split(":")[0] for w in caught)
    result = _open(path, ctx)
    if note and result.status == "ok":
        result.detail += f" ({note})"
    return result


DISK_CHECKS = [caches, model]
