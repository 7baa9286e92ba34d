"""What a benchmark record says about where and what ran: the board and host (``jetson.board``), the
source tree's git revision, and for TensorRT engines the identity record ``nano-build`` wrote."""

from __future__ import annotations

import os
import subprocess
from typing import Any, Dict, List, Optional

from yolo_nano.core.fileio import sha256_file
from yolo_nano.core.modelfiles import is_engine_path
from yolo_nano.engines.identity import EngineRecordError, read_record, record_path
from yolo_nano.jetson.board import host_identity

__all__ = ["engine_identity", "file_sha256", "git_revision", "host_identity"]

#: Hex SHA-256 of a file (kept under this name for callers; the one implementation is in ``fileio``).
file_sha256 = sha256_file


def _git(args: List[str], cwd: str) -> Optional[str]:
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")  # read only: never take the index lock
    try:
        cp = subprocess.run(
            ["git", "--no-optional-locks"] + args,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            timeout=10,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return cp.stdout if cp.returncode == 0 else None


def git_revision() -> Optional[str]:
    """Commit of the source tree this package runs from (12 hex digits, ``+dirty`` with local changes
    to tracked files), or None outside a git checkout. Read-only: the index is never written."""
    here = os.path.dirname(os.path.abspath(__file__))
    head = _git(["rev-parse", "--short=12", "HEAD"], here)
    if not head or not head.strip():
        return None
    status = _git(["status", "--porcelain", "--untracked-files=no"], here)
    return head.strip() + ("+dirty" if status and status.strip() else "")


def engine_identity(model_path: str) -> Optional[Dict[str, Any]]:
    """For a TensorRT engine: its identity record (``engines.identity``, ``<engine>.json``) as a dict
    with ``identity_file``, or ``error`` when the record is unreadable, plus the engine's sha256.
    None for other models."""
    if not is_engine_path(model_path):
        return None
    ident: Dict[str, Any] = {}
    path = record_path(model_path)
    if os.path.exists(path):
        try:
            ident = read_record(model_path).to_dict()
        except (EngineRecordError, TypeError, ValueError, RecursionError) as e:  # any malformed record
            ident = {"error": str(e)[:300] or type(e).__name__}
        ident["identity_file"] = path
    ident["engine_sha256"] = file_sha256(model_path)
    return ident
