"""yolo_nano.core.fileio: atomic writes and hashes, on real files (and a real killed subprocess)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from yolo_nano.core.fileio import (
    AtomicOutput,
    atomic_output,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    sha256_bytes,
    sha256_file,
    sha256_json,
)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _listing(folder) -> list:
    return sorted(p.name for p in folder.iterdir())


def test_write_bytes_text_json_and_create_folders(tmp_path):
    target = tmp_path / "a" / "b" / "out.bin"
    atomic_write_bytes(target, b"\x00\x01first")
    assert target.read_bytes() == b"\x00\x01first"
    atomic_write_bytes(str(target), b"second", fsync=False)
    assert target.read_bytes() == b"second"
    atomic_write_text(tmp_path / "t.txt", "caf\u00e9\r\nline\n")
    assert (tmp_path / "t.txt").read_bytes() == "caf\u00e9\r\nline\n".encode()  # no newline translation
    atomic_write_json(tmp_path / "j.json", {"b": 1, "a": [1.5, None]})
    text = (tmp_path / "j.json").read_text()
    assert text.endswith("\n") and text.index('"a"') < text.index('"b"')
    assert json.loads(text) == {"a": [1.5, None], "b": 1}
    assert _listing(target.parent) == ["out.bin"]  # no temp files left behind
    assert sorted(_listing(tmp_path)) == ["a", "j.json", "t.txt"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "result.json"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, 12345)  # type: ignore[arg-type]  # fails inside the write
    assert target.read_bytes() == b"old"
    assert _listing(tmp_path) == ["result.json"]
    with pytest.raises(TypeError):
        atomic_write_json(target, {"x": 1, "y": object()})  # not serialisable: nothing written
    assert target.read_bytes() == b"old" and _listing(tmp_path) == ["result.json"]


def test_rename_failure_removes_temp(tmp_path):
    target = tmp_path / "is_a_dir"
    (target / "child").mkdir(parents=True)  # os.replace of a file over a non-empty directory fails
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"data")
    assert _listing(tmp_path) == ["is_a_dir"] and _listing(target) == ["child"]


def test_killed_writer_never_leaves_a_partial_target(tmp_path):
    """A process killed (SIGKILL) mid-write leaves the old target intact; only a hidden .tmp remains."""
    target = tmp_path / "model.bin"
    target.write_bytes(b"old" * 10)
    code = textwrap.dedent(
        f"""
        import os, signal
        from yolo_nano.core.fileio import atomic_output
        with atomic_output({str(target)!r}) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half-written")
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()
    assert target.read_bytes() == b"old" * 10
    leftovers = [n for n in _listing(tmp_path) if n != "model.bin"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".model.bin.") and leftovers[0].endswith(".tmp")


_WRITE_ALL = textwrap.dedent(
    """
    import os, sys
    os.umask(int(sys.argv[2], 8))  # before the import: fileio reads the umask once, then never again
    from yolo_nano.core.fileio import FILE_MODE, atomic_output, atomic_write_bytes

    out = sys.argv[1]
    atomic_write_bytes(os.path.join(out, "a.bin"), b"x")
    with atomic_output(os.path.join(out, "b.png"), suffix=".png") as tmp:
        print(oct(os.stat(tmp).st_mode & 0o777))  # the temp file already has the mode (tools keep the inode)
        with open(tmp, "wb") as f:
            f.write(b"y")
    with atomic_output(os.path.join(out, "c.bin")) as tmp:
        os.unlink(tmp)  # a tool that recreates the file gets the umask's permissions anyway
        with open(tmp, "wb") as f:
            f.write(b"z")
    print(oct(FILE_MODE))
    """
)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_permissions_follow_the_umask_at_import(tmp_path, mask, expected):
    proc = subprocess.run(
        [sys.executable, "-c", _WRITE_ALL, str(tmp_path), oct(mask)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [oct(expected), oct(expected)]
    assert [_mode(tmp_path / n) for n in ("a.bin", "b.png", "c.bin")] == [expected] * 3


def test_writes_never_touch_the_process_umask(tmp_path, monkeypatch):
    """os.umask sets the mask of the whole process: a call while other threads create files races."""
    import threading

    calls = []
    monkeypatch.setattr(os, "umask", lambda *a: calls.append(a) or 0o022)
    errors = []

    def write(i: int) -> None:
        try:
            for k in range(20):
                atomic_write_bytes(tmp_path / f"{i}-{k}.bin", b"x", fsync=False)
                with atomic_output(tmp_path / f"{i}-{k}.png", suffix=".png") as tmp, open(tmp, "wb") as f:
                    f.write(b"y")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not calls
    modes = {_mode(p) for p in tmp_path.iterdir()}
    assert len(modes) == 1 and len(list(tmp_path.iterdir())) == 160


def test_hashes_match_hashlib(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(5 << 20) // 2 + 17, dtype=np.uint8).tobytes()  # > 2 chunks of 1 MiB
    p = tmp_path / "blob.bin"
    p.write_bytes(data)
    assert sha256_file(p) == sha256_file(str(p)) == hashlib.sha256(data).hexdigest()
    assert sha256_bytes(data) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(empty) == hashlib.sha256(b"").hexdigest()
    canonical = json.dumps({"a": 1, "b": [2, 3]}, sort_keys=True, separators=(",", ":")).encode()
    assert sha256_json({"b": [2, 3], "a": 1}) == hashlib.sha256(canonical).hexdigest()
    assert sha256_json({"a": 1, "b": [2, 3]}) != sha256_json({"a": 1, "b": [3, 2]})
    with pytest.raises(FileNotFoundError):
        sha256_file(tmp_path / "missing")


def test_atomic_output_keeps_suffix_and_renames_on_success(tmp_path):
    target = tmp_path / "sub" / "frame.png"
    image = np.zeros((8, 12, 3), np.uint8)
    image[2:5, 3:9] = (0, 128, 255)
    with atomic_output(target, suffix=".png") as tmp:
        assert isinstance(tmp, str) and tmp.endswith(".png")
        assert os.path.dirname(tmp) == str(target.parent) and os.path.basename(tmp).startswith(".")
        assert not target.exists()  # nothing under the target's name until the block succeeds
        assert cv2.imwrite(tmp, image)  # OpenCV picks the encoder from the extension
    assert _listing(target.parent) == ["frame.png"]
    back = cv2.imread(str(target))
    assert back is not None and np.array_equal(back, image)


def test_atomic_output_exception_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "clip.avi"
    target.write_bytes(b"old video")
    seen = []
    with pytest.raises(RuntimeError, match="boom"), atomic_output(target, suffix=".avi") as tmp:
        seen.append(tmp)
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("boom")
    assert not os.path.exists(seen[0])
    assert target.read_bytes() == b"old video"
    assert _listing(tmp_path) == ["clip.avi"]
    with pytest.raises(KeyboardInterrupt), atomic_output(target):  # BaseException too (Ctrl-C)
        raise KeyboardInterrupt
    assert _listing(tmp_path) == ["clip.avi"] and target.read_bytes() == b"old video"


def test_atomic_output_streaming_commit_and_discard(tmp_path):
    out = AtomicOutput(tmp_path / "log.jsonl")
    with open(out.tmp, "w") as f:
        f.write('{"frame": 0}\n')
    out.commit()
    assert (tmp_path / "log.jsonl").read_text() == '{"frame": 0}\n'
    with pytest.raises(RuntimeError, match="already committed"):
        out.commit()
    aborted = AtomicOutput(tmp_path / "log.jsonl")
    with open(aborted.tmp, "w") as f:
        f.write("never seen\n")
    aborted.discard()
    aborted.discard()  # harmless twice
    assert (tmp_path / "log.jsonl").read_text() == '{"frame": 0}\n'
    assert _listing(tmp_path) == ["log.jsonl"]
    gone = AtomicOutput(tmp_path / "other.bin")
    os.unlink(gone.tmp)
    with pytest.raises(FileNotFoundError, match="nothing to commit"):
        gone.commit()
    assert _listing(tmp_path) == ["log.jsonl"]


def test_fileio_is_torch_free():
    code = "import sys, yolo_nano.core.fileio; assert 'torch' not in sys.modules, 'fileio imported torch'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "content,match", [("{not json", "unreadable widget record"), ("[1, 2]", "must be a JSON object")]
)
def test_read_json_object_names_the_file_and_what_it_is(tmp_path, content, match):
    from yolo_nano.core.fileio import read_json_object

    class WidgetError(ValueError):
        pass

    path = tmp_path / "w.json"
    path.write_text(content)
    with pytest.raises(WidgetError, match=match) as err:
        read_json_object(path, WidgetError, "widget record")
    assert str(path) in str(err.value)
    path.write_text('{"a": 1}')
    assert read_json_object(path, WidgetError, "widget record") == {"a": 1}
    with pytest.raises(WidgetError, match="unreadable"):
        read_json_object(tmp_path / "missing.json", WidgetError, "widget record")
