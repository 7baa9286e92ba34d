"""Which Jetson Linux (L4T) and JetPack release a board runs: the one parser of ``/etc/nv_tegra_release``.

Used by engines/ (the engine identity record) and jetson/ (the benchmark record), which may not import
each other. ``/etc/nv_tegra_release`` starts with ``# R35 (release), REVISION: 2.1, GCID: ...``.
"""

from __future__ import annotations

import re
import subprocess
from typing import Optional, Tuple

from .sysfs import read_text, sysfs_path

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

RELEASE_FILE = "/etc/nv_tegra_release"

_TEGRA_RE = re.compile(r"#?\s*R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)")


def parse_nv_tegra_release(text: str) -> Optional[str]:
    """L4T release ``"35.3.1"`` from the text of ``/etc/nv_tegra_release`` (None when not recognised).

    A one-part revision gets ``.0`` (``REVISION: 3`` -> ``35.3.0``), as the L4T package versions do.
    """
    m = _TEGRA_RE.search(text)
    if not m:
        return None
    parts = m.group(2).strip(".").split(".")
    if len(parts) == 1:
        parts.append("0")
    return ".".join([m.group(1)] + parts[:2])


def read_l4t_release(root: str = "/") -> Optional[str]:
    """L4T release of the board under ``root`` (``"35.2.1"``), None off a Jetson or when unrecognised."""
    text = read_text(sysfs_path(root, RELEASE_FILE))
    return parse_nv_tegra_release(text) if text else None


def jetpack_from_package(timeout_s: float = 10.0) -> Optional[str]:
    """JetPack version of the installed ``nvidia-jetpack`` package (``"5.1.1"``), None when absent."""
    try:
        out = subprocess.run(
            ["dpkg-query", "--showformat=${Version}", "--show", "nvidia-jetpack"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    version = out.stdout.strip() if out.returncode == 0 else ""
    return version.split("-")[0] or None


def jetson_release(root: str = "/") -> Tuple[Optional[str], Optional[str]]:
    """``(l4t, jetpack)`` of the board under ``root``, ``(None, None)`` off a Jetson.

    JetPack comes from the ``nvidia-jetpack`` package when installed (only asked on the live system,
    ``root == "/"``), else from :data:`L4T_TO_JETPACK`.
    """
    text = read_text(sysfs_path(root, RELEASE_FILE))
    if text is None:
        return None, None
    l4t = parse_nv_tegra_release(text)
    jetpack = jetpack_from_package() if root in ("", "/") else None
    if jetpack is None and l4t is not None:
        jetpack = L4T_TO_JETPACK.get(l4t)
    return l4t, jetpack
