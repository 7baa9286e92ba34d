"""The embedded default model: the shipped demo weights, exported to ONNX on first use and cached.

The package ships PyTorch weights (``model/yolo_nano_synth.safetensors``, trained on the synthetic
shapes set). :func:`default_model_path` exports them once into a cache directory (``$YOLO_NANO_CACHE``,
else ``~/.cache/yolo-nano-edge``), keyed by the weights' sha256, written atomically, and returns the
``.onnx`` path; later calls return the cached file without touching PyTorch. The export needs PyTorch
(the ``train`` extra) once; on a Jetson without it, pass your own ``-m model.onnx``.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from typing import Optional

import yolo_nano
from yolo_nano.core.fileio import atomic_write_text, sha256_file
from yolo_nano.core.metadata import MetadataError, read_onnx_metadata

WEIGHTS_NAME = "yolo_nano_synth.safetensors"
RANDOM_KEY = "random-init-seed0"


class DefaultModelError(RuntimeError):
    """The default model cannot be produced here (no PyTorch to export it once)."""


def cache_dir() -> Path:
    """Where exported default models live: ``$YOLO_NANO_CACHE`` or ``~/.cache/yolo-nano-edge``."""
    env = os.environ.get("YOLO_NANO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "yolo-nano-edge"


def default_weights_path() -> Path:
    """The shipped demo weights, ``<yolo_nano.model package>/yolo_nano_synth.safetensors`` (may be absent)."""
    spec = importlib.util.find_spec("yolo_nano.model")  # locates model/ without importing it
    locations = list(spec.submodule_search_locations or []) if spec else []
    return (
        Path(locations[0] if locations else Path(__file__).resolve().parent.parent / "model") / WEIGHTS_NAME
    )


def default_model_path(weights: Optional[str] = None, input_size: Optional[int] = None) -> str:
    """Path of the default ONNX model (YOLO Nano, dynamic batch), exporting it on first use.

    ``weights``: another ``.safetensors`` file to export instead of the shipped one. ``input_size``:
    the network input side in pixels (a multiple of 32); default: the size recorded in the weights (the
    size they were trained at), 416 for the random model. Without the weights file it exports a randomly
    initialised YOLO Nano (seed 0) and warns that its detections are meaningless. Raises
    :class:`DefaultModelError` when the model is not cached yet and PyTorch is not installed.
    """
    wpath = Path(weights) if weights else default_weights_path()
    if weights and not wpath.is_file():
        raise FileNotFoundError(f"weights file not found: {wpath}")
    have_weights = wpath.is_file()
    key = sha256_file(wpath)[:16] if have_weights else RANDOM_KEY
    stem = wpath.stem if have_weights else "yolo_nano_random"
    if input_size is not None and (int(input_size) <= 0 or int(input_size) % 32):
        raise ValueError(f"input_size must be a positive multiple of 32, got {input_size}")
    size_tag = f"-{int(input_size)}" if input_size is not None else ""
    target = cache_dir() / f"{stem}-{key}{size_tag}-v{yolo_nano.__version__}.onnx"
    if not have_weights:
        warnings.warn(
            f"the demo weights {wpath} are missing: using a RANDOMLY INITIALISED YOLO Nano, its detections "
            "are meaningless. Pass a trained model (-m model.onnx / Detector('model.onnx')).",
            RuntimeWarning,
            stacklevel=2,
        )
    if target.is_file():
        problem = _cached_problem(target)
        if problem is None:
            return str(target)
        warnings.warn(
            f"the cached default model {target} is unusable ({problem}); exporting it again", stacklevel=2
        )
        try:
            _export(wpath if have_weights else None, target, input_size)
        except DefaultModelError as e:
            raise DefaultModelError(
                f"the cached default model {target} is unusable ({problem}) and cannot be exported again here: "
                f"{e}. Delete {target} and run again where PyTorch is installed, or pass a model with -m"
            ) from e
    else:
        _export(wpath if have_weights else None, target, input_size)
    atomic_write_text(_hash_path(target), sha256_file(target) + "\n")
    return str(target)


def _hash_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _cached_problem(target: Path) -> Optional[str]:
    """Why the cached export cannot be used (``None``: it can): its recorded sha256 no longer matches
    (truncated, overwritten), or, for a cache from before the hash was recorded, its metadata is unreadable."""
    try:
        recorded = _hash_path(target).read_text().strip()
    except (OSError, UnicodeDecodeError):
        recorded = ""
    if recorded:
        return (
            None
            if sha256_file(target) == recorded
            else "its sha256 does not match the one recorded at export"
        )
    try:
        read_onnx_metadata(str(target))
    except MetadataError as e:
        return str(e)
    atomic_write_text(_hash_path(target), sha256_file(target) + "\n")
    return None


def _export(weights: Optional[Path], target: Path, input_size: Optional[int]) -> None:
    try:
        from yolo_nano.model.export import export_weights_file  # imports torch: only here, only once
    except ImportError as e:
        raise DefaultModelError(
            f"the default model is not exported yet ({target}) and exporting it needs PyTorch ({e}). "
            "Install the train extra once (pip install 'yolo-nano-edge[train]'), or pass a model: "
            "nano-detect SOURCE -m model.onnx / Detector('model.onnx')"
        ) from e
    # export_onnx writes atomically: a concurrent or interrupted first use never leaves a partial file.
    export_weights_file(target, weights, input_size=input_size, batch="dynamic")
