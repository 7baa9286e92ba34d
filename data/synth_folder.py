"""The folder ``nano-data synth`` writes into: its states, and the marker that keeps an interrupted run
from leaving a folder that lies about itself (torch-free).

* ``new``: missing, or a folder without files -> written from scratch.
* ``incomplete``: ``synth.incomplete.json`` is there (a run started and has not finished: interrupted,
  killed, disk full). It names that run's parameters; the VOC reader refuses such a folder.
* ``complete``: ``synth.json`` is there and describes every image in the folder.
* anything else with files (a real VOC set, photos) -> :class:`SynthFolderError`, nothing touched.

A run calls :func:`start_run` before its first image (marker written, then ``synth.json`` and the split
files removed, then the generated images of other parameters deleted, so every image left matches the
marker) and :func:`finish_run` after its last file (``synth.json`` written, then the marker removed).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from typing import Any, Dict, Optional, Tuple

from yolo_nano.core.fileio import atomic_write_bytes
from yolo_nano.data.voc import INCOMPLETE_MARKER

INFO_FILE = "synth.json"
# the files a run generates (synth.image_id() names), the only ones a rerun ever deletes
_GENERATED = re.compile(r"^(train|val|test)_\d{6}\.(jpg|xml)$")
# what decides the pixels of image (split, index); the counts do not
_IMAGE_KEYS = ("generator", "version", "seed", "classes", "config")


class SynthFolderError(ValueError):
    """``--out`` is a folder nano-data synth must not write into (not empty, not a synthetic set)."""


def same_images(a: Optional[Dict[str, Any]], b: Dict[str, Any]) -> bool:
    """Whether runs ``a`` and ``b`` generate identical images for every (split, index) they share."""
    return a is not None and all(a.get(k) == b.get(k) for k in _IMAGE_KEYS)


def _read_params(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError, RecursionError):
        return None
    return d if isinstance(d, dict) else None


def previous_run(out: str) -> Tuple[str, Optional[Dict[str, Any]]]:
    """What ``out`` holds: ``("new", None)``, ``("incomplete", params)`` or ``("complete", params)``
    (params None when its file is unreadable). :class:`SynthFolderError` for a file, or a folder with
    files that nano-data synth did not write."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise SynthFolderError(f"{out} is a file, not a folder; choose another --out")
    if not os.path.isdir(out):
        return "new", None
    marker, info = os.path.join(out, INCOMPLETE_MARKER), os.path.join(out, INFO_FILE)
    if os.path.lexists(marker):
        return "incomplete", _read_params(marker)
    if os.path.lexists(info):
        return "complete", _read_params(info)
    for _, _, files in os.walk(out):
        if files:
            raise SynthFolderError(
                f"{out} already holds files and no {INFO_FILE}: it is not a set nano-data synth wrote; "
                "choose a new or empty folder for --out"
            )
    return "new", None


def describe(params: Optional[Dict[str, Any]]) -> str:
    """``seed 3, 100 train + 10 val`` for messages."""
    if params is None:
        return "unknown parameters"
    return f"seed {params.get('seed')!r}, {params.get('train')!r} train + {params.get('val')!r} val"


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _write_json(path: str, params: Dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(params, indent=2) + "\n").encode())


def start_run(out: str, params: Dict[str, Any]) -> None:
    """Mark ``out`` incomplete for run ``params`` and remove what would describe another run."""
    state, before = previous_run(out)
    os.makedirs(out, exist_ok=True)
    _write_json(os.path.join(out, INCOMPLETE_MARKER), params)
    _remove(os.path.join(out, INFO_FILE))
    for split in ("train", "val"):
        _remove(os.path.join(out, "ImageSets", "Main", split + ".txt"))
    if state != "new" and not same_images(before, params):
        for sub in ("JPEGImages", "Annotations"):
            folder = os.path.join(out, sub)
            for name in os.listdir(folder) if os.path.isdir(folder) else ():
                if _GENERATED.match(name):
                    _remove(os.path.join(folder, name))


def finish_run(out: str, params: Dict[str, Any]) -> None:
    """``synth.json`` appears only now that every file it describes is on disk; then the marker goes."""
    _write_json(os.path.join(out, INFO_FILE), params)
    _remove(os.path.join(out, INCOMPLETE_MARKER))
