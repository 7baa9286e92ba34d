"""The one place for atomic file writes and file hashes (torch-free; every layer may import it).

Results are written to a temporary file in the destination folder and renamed over the target only
when complete, so an interrupted run never leaves a half-written model, engine, cache or record
behind: a reader sees the old file or the new one, never a mix. Temporary files get the permissions a
plain ``open`` would give (:data:`FILE_MODE`: ``0o666 & ~umask``, the umask read once at import and
never changed, so threads writing files never race on it; ``tempfile.mkstemp`` alone makes ``0o600``)
and are named ``.<name>.<random>.tmp<suffix>`` beside the target, so a crash leaves at most a hidden
``.tmp`` file and never a file under the target's name.

    atomic_write_json("result.json", {"map": 0.61})
    with atomic_output("clip.avi", suffix=".avi") as tmp:   # for tools that write to a path
        writer = cv2.VideoWriter(tmp, ...)                   # (format picked by the extension)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from typing import Any, Dict, Optional, Tuple, Type, Union

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "FILE_MODE",
    "AtomicOutput",
    "PathLike",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "sha256_bytes",
    "sha256_file",
    "sha256_json",
]


def _read_umask() -> int:
    """The process umask, read once at import. Linux reports it in /proc/self/status; elsewhere
    ``os.umask`` is the only way to read it and it sets it too, so it is called only here (imports run
    under the import lock, before any Detector thread exists), never while threads write files."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Mode of every file this module writes: what a plain ``open`` would give (``0o666 & ~umask``, 0644
#: under the usual umask 022). Fixed at import; a program that changes its umask later keeps this mode.
FILE_MODE = 0o666 & ~_read_umask()


def _temp_beside(path: str, suffix: str = "") -> Tuple[int, str]:
    """An open ``(fd, temp path)`` in ``path``'s folder (created if missing), with the usual permissions."""
    folder = os.path.dirname(os.path.abspath(path))
    parent = folder
    while parent and not os.path.exists(parent):  # a file in the way: say so, not "File exists"
        parent = os.path.dirname(parent) if os.path.dirname(parent) != parent else ""
    if parent and not os.path.isdir(parent):
        raise NotADirectoryError(errno.ENOTDIR, "a file is in the way of the output folder", parent)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp" + suffix, dir=folder)
    try:
        os.chmod(tmp, FILE_MODE)  # mkstemp makes 0600; give the file the usual permissions
    except BaseException:
        os.close(fd)
        _remove(tmp)
        raise
    return fd, tmp


def _remove(tmp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def _fsync_path(path: str) -> None:
    """Flush a closed file's data to disk before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``).

    ``fsync=False`` skips flushing to disk before the rename (still atomic for readers; after a power
    loss the file may be empty): for bulk outputs that are cheap to regenerate, e.g. a synthetic dataset.
    """
    path = os.fspath(path)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_text(path: PathLike, text: str, *, fsync: bool = True) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (no newline translation)."""
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_json(path: PathLike, obj: Any, *, fsync: bool = True) -> None:
    """Write ``obj`` as indented, key-sorted JSON (plus a final newline) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", fsync=fsync)


class AtomicOutput:
    """A temporary file beside ``path`` that becomes ``path`` on :meth:`commit` or vanishes on :meth:`discard`.

    For tools that write to a file name themselves (``cv2.VideoWriter``, ``fig.savefig``,
    ``safetensors.save_file``) or for outputs streamed over a long run. The temp file exists (empty,
    usual permissions) from construction; ``suffix`` (e.g. ``".avi"``, ``".png"``) ends its name so
    tools that pick the format from the extension still work. As a context manager (see
    :func:`atomic_output`) it yields the temp path, commits when the block exits normally and discards
    on any exception. Outside ``with``: call exactly one of :meth:`commit` / :meth:`discard`.
    """

    def __init__(self, path: PathLike, suffix: str = "") -> None:
        self.path = os.fspath(path)
        fd, self.tmp = _temp_beside(self.path, suffix)
        os.close(fd)
        self.done = False

    def commit(self, fsync: bool = True) -> None:
        """Flush the temp file to disk and rename it over ``path`` (the temp file is removed on failure).

        ``fsync=False`` skips the flush (still atomic for readers), as in :func:`atomic_write_bytes`.
        """
        if self.done:
            raise RuntimeError(f"atomic output for {self.path} was already committed or discarded")
        self.done = True
        try:
            if not os.path.isfile(self.tmp):
                raise FileNotFoundError(
                    f"the temporary file for {self.path} is gone ({self.tmp}): nothing to commit"
                )
            if fsync:
                _fsync_path(self.tmp)
            os.replace(self.tmp, self.path)
        except BaseException:
            _remove(self.tmp)
            raise

    def discard(self) -> None:
        """Remove the temp file; ``path`` keeps its old content (or stays absent). Safe to call twice."""
        self.done = True
        _remove(self.tmp)

    def __enter__(self) -> str:
        return self.tmp

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Any
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def atomic_output(path: PathLike, suffix: str = "") -> AtomicOutput:
    """Context manager: ``with atomic_output(path, ".png") as tmp:`` write to the ``str`` ``tmp``.

    ``tmp`` is in ``path``'s folder (created if missing) with the usual permissions and ends in
    ``suffix``; on normal exit it is fsynced and renamed over ``path``; on any exception it is removed
    and ``path`` is left as it was.
    """
    return AtomicOutput(path, suffix)


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of the file at ``path`` (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(os.fspath(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex SHA-256 of the canonical JSON of ``obj`` (sorted keys, no spaces): a stable content hash."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8"))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_json_object(
    path: PathLike, error: Type[Exception], what: str, max_bytes: int = 16 * 1024 * 1024
) -> Dict[str, Any]:
    """Load a JSON object from ``path``; an unreadable file, a non-object, ``NaN``/``Infinity``, nesting
    too deep for the parser or a file over ``max_bytes`` raises ``error`` naming ``what`` the file is
    (e.g. "engine identity record"). Field types are the caller's to check."""
    path = os.fspath(path)
    try:
        if os.path.getsize(path) > max_bytes:
            raise ValueError(f"larger than {max_bytes} bytes")
        with open(path, encoding="utf-8") as f:
            d = json.load(f, parse_constant=_refuse_constant)
    except (OSError, ValueError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise error(f"{path}: unreadable {what} ({reason})") from e
    if not isinstance(d, dict):
        raise error(f"{path}: {what} must be a JSON object")
    return d
