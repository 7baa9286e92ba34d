"""The one reader for small text files under /sys, /proc and /etc (sysfs attributes, device tree
strings, release files), with a ``root`` so tests can point it at a recorded tree."""

from __future__ import annotations

import os
from typing import Optional


def sysfs_path(root: str, path: str) -> str:
    """``path`` (absolute, e.g. ``/sys/bus/i2c``) under ``root`` (``/`` on a real board)."""
    return os.path.join(root, path.lstrip("/")) if root not in ("", "/") else path


def read_text(path: str, limit: int = 65536) -> Optional[str]:
    """The file's text, stripped, NULs removed (device-tree strings end in one), undecodable bytes
    replaced; ``None`` when it cannot be read (missing, no permission, a directory). Reads at most
    ``limit`` bytes so a FIFO or a huge file cannot hang or exhaust memory."""
    try:
        if not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            data = f.read(limit)
    except OSError:
        return None
    return data.decode("utf-8", "replace").replace("\x00", "").strip()


def read_int(path: str) -> Optional[int]:
    """The first whitespace-separated token as an int; ``None`` when missing or not an integer."""
    text = read_text(path)
    if not text:
        return None
    try:
        return int(text.split()[0])
    except ValueError:
        return None


def read_float(path: str) -> Optional[float]:
    """The first token as a finite float; ``None`` when missing, not a number, NaN or infinite."""
    text = read_text(path)
    if not text:
        return None
    try:
        value = float(text.split()[0])
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None
