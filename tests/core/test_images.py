"""yolo_nano.core.images: the one image reader, on real files made byte by byte (EXIF, header bombs)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import threading

import cv2
import numpy as np
import pytest

from testsupport.images import exif_jpeg, gradient, jpeg_bomb, png_bomb
from yolo_nano.core.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    MAX_PIXELS_ENV,
    ImageLimitError,
    ImageReadError,
    ImageTooLargeError,
    check_image,
    header_size,
    is_image_file,
    list_images,
    max_image_pixels,
    read_image,
)
from yolo_nano.core.preprocess import InvalidImageError


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


# EXIF orientation -> the numpy transform that shows the stored pixels upright (the EXIF 2.3 table).
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_exif_orientation_is_applied_like_imread(tmp_path, orientation):
    stored = gradient((20, 40))
    path = _write(tmp_path / "photo.jpg", exif_jpeg(stored, orientation))
    image = read_image(path)
    raw = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert raw.shape == (20, 40, 3)  # the file really stores 40 wide x 20 high
    assert image.dtype == np.uint8 and image.flags.c_contiguous
    assert image.shape == ((40, 20, 3) if orientation >= 5 else (20, 40, 3))
    assert np.array_equal(image, UPRIGHT[orientation](raw))
    assert np.array_equal(image, cv2.imread(str(path)))  # the rule cv2.imread follows by default


def test_formats_gray_alpha_16bit_become_bgr_uint8(tmp_path):
    bgr = gradient((24, 32))
    for ext in IMAGE_EXTENSIONS:
        path = tmp_path / f"a{ext}"
        assert cv2.imwrite(str(path), bgr[..., 0] if ext == ".pgm" else bgr), ext
        fmt, size = header_size(path.read_bytes())
        assert size == (32, 24), (ext, fmt)
        image = read_image(path)
        assert image.shape == (24, 32, 3) and image.dtype == np.uint8, ext
    cv2.imwrite(str(tmp_path / "alpha.png"), np.dstack([bgr, np.full((24, 32), 7, np.uint8)]))
    assert np.array_equal(read_image(tmp_path / "alpha.png"), bgr)
    cv2.imwrite(str(tmp_path / "deep.png"), bgr.astype(np.uint16) * 257)
    assert np.array_equal(read_image(tmp_path / "deep.png"), bgr)
    cv2.imwrite(str(tmp_path / "gray.png"), bgr[..., 1])
    assert np.array_equal(read_image(tmp_path / "gray.png"), np.dstack([bgr[..., 1]] * 3))


@pytest.mark.parametrize(
    "name, data, claimed",
    [("bomb.png", png_bomb(), "65535x65535"), ("bomb.jpg", jpeg_bomb(), "60000x60000")],
)
def test_header_bombs_are_refused_before_decoding(tmp_path, name, data, claimed):
    assert len(data) < 1000
    path = _write(tmp_path / name, data)
    with pytest.raises(
        ImageTooLargeError, match=f"{claimed}.*over the limit of 50 megapixels.*{MAX_PIXELS_ENV}"
    ):
        read_image(path)
    assert issubclass(ImageTooLargeError, ImageReadError) and issubclass(ImageReadError, InvalidImageError)


def test_bomb_costs_no_memory_in_a_fresh_process(tmp_path):
    """A 4-gigapixel claim must not allocate: peak RSS of the whole read stays far below one such image."""
    path = _write(tmp_path / "bomb.png", png_bomb())
    code = textwrap.dedent(
        """
        import resource, sys
        from yolo_nano.core.images import ImageTooLargeError, read_image
        try:
            read_image(sys.argv[1])
        except ImageTooLargeError:
            print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) < 1_000_000  # KiB: under 1 GB, where the decode would need 12 GB


def test_limit_from_argument_and_env(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), gradient((100, 200)))  # 20 000 pixels
    assert read_image(path, max_pixels=20_000).shape == (100, 200, 3)
    with pytest.raises(ImageTooLargeError, match="200x100"):
        read_image(path, max_pixels=19_999)
    monkeypatch.setenv(MAX_PIXELS_ENV, "19999")
    assert max_image_pixels() == 19_999
    with pytest.raises(ImageTooLargeError, match="over the limit"):
        read_image(path)
    assert read_image(path, max_pixels=20_000).shape == (100, 200, 3)  # the argument wins
    monkeypatch.setenv(MAX_PIXELS_ENV, "100_000_000")
    assert max_image_pixels() == 100_000_000
    for bad in ("lots", "-5", "0", "1e9"):
        monkeypatch.setenv(MAX_PIXELS_ENV, bad)
        with pytest.raises(ImageLimitError, match=MAX_PIXELS_ENV):
            read_image(path)
    monkeypatch.delenv(MAX_PIXELS_ENV)
    assert max_image_pixels() == DEFAULT_MAX_PIXELS == 50_000_000
    with pytest.raises(ImageLimitError):
        read_image(path, max_pixels=0)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")
def test_fifo_named_like_an_image_does_not_hang(tmp_path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(str(fifo))
    result = []
    t = threading.Thread(target=lambda: result.append(_error_of(fifo)), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "read_image blocked on a FIFO"
    assert isinstance(result[0], ImageReadError) and "not a regular file" in str(result[0])
    assert list_images(tmp_path) == [str(fifo)]  # listed, so a folder run can say what is wrong with it


def _error_of(path):
    try:
        read_image(path)
    except Exception as e:
        return e
    return None


def test_directory_named_like_an_image(tmp_path):
    (tmp_path / "x.jpg").mkdir()
    with pytest.raises(ImageReadError, match="x.jpg: cannot read image: a folder"):
        read_image(tmp_path / "x.jpg")
    assert list_images(tmp_path) == []


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "the file is empty"),
        (b"this is not an image", "not a recognised image format"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "corrupt JPEG header"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "corrupt PNG header"),
        (png_bomb(0, 10), "empty image"),
        (b"BM" + b"\x00" * 10, "corrupt BMP header"),
    ],
)
def test_corrupt_bytes_give_a_named_error(tmp_path, data, match):
    path = _write(tmp_path / "bad.png", data)
    with pytest.raises(ImageReadError, match=match) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_truncated_body_is_a_named_error_not_cv2_error(tmp_path):
    ok, buf = cv2.imencode(".png", gradient((64, 64)))
    path = _write(tmp_path / "cut.png", buf.tobytes()[:60])  # IHDR intact, data cut
    with pytest.raises(ImageReadError, match="cut.png: cannot read image"):
        read_image(path)


def test_missing_file_and_non_ascii_path(tmp_path):
    with pytest.raises(ImageReadError, match="missing.jpg: cannot read image"):
        read_image(tmp_path / "missing.jpg")
    folder = tmp_path / "Bilder ÄÖÜ 写真"
    folder.mkdir()
    path = folder / "straße.jpg"
    path.write_bytes(exif_jpeg(gradient((20, 40)), 6))
    assert read_image(path).shape == (40, 20, 3)
    assert read_image(str(path)).shape == (40, 20, 3)
    assert list_images(folder) == [str(path)]


def test_header_size_never_raises_on_garbage():
    rng = np.random.default_rng(0)
    prefixes = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"RIFF\x00\x00\x00\x00WEBP", b"II*\x00", b"MM\x00*",
                b"II+\x00", b"GIF89a", b"P6\n", b"P7\n", b"\x59\xa6\x6a\x95", b"#?RADIANCE\n"]  # fmt: skip
    for prefix in prefixes:
        for _ in range(300):
            data = prefix + rng.integers(0, 256, int(rng.integers(0, 80)), dtype=np.uint8).tobytes()
            fmt, size = header_size(data)
            assert size is None or (len(size) == 2 and all(isinstance(v, int) and v >= 0 for v in size))


def test_header_size_of_webp_tiff_variants():
    vp8x = b"RIFF" + struct.pack("<I", 30) + b"WEBPVP8X" + struct.pack("<I", 10) + b"\x00" * 4
    vp8x += (59999).to_bytes(3, "little") + (39999).to_bytes(3, "little")
    assert header_size(vp8x) == ("WebP", (60000, 40000))
    big = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 2)
    big += struct.pack(">HHII", 256, 4, 1, 70000) + struct.pack(">HHIHH", 257, 3, 1, 50000, 0)
    assert header_size(big) == ("TIFF", (70000, 50000))
    pam = b"P7\nWIDTH 9000\nHEIGHT 8000\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n"
    assert header_size(pam) == ("PNM", (9000, 8000))
    assert header_size(b"P5\n# a comment\n 640 480\n255\n") == ("PNM", (640, 480))


def test_is_image_file_and_list_images(tmp_path):
    assert is_image_file("a.JPG") and is_image_file("b.tiff") and not is_image_file("c.txt")
    for n in ("b.png", "a.jpg", "notes.txt", "c.JPEG"):
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.jpg").write_bytes(b"x")
    assert [os.path.basename(p) for p in list_images(tmp_path)] == ["a.jpg", "b.png", "c.JPEG"]


def test_check_image_refuses_what_read_image_refuses(tmp_path):
    cv2.imwrite(str(tmp_path / "ok.jpg"), gradient((64, 96)))
    check_image(tmp_path / "ok.jpg")
    cases = {
        "bomb.png": (png_bomb(), ImageTooLargeError),
        "bomb.jpg": (jpeg_bomb(), ImageTooLargeError),
        "junk.jpg": (b"junk", ImageReadError),
        "cut.png": (cv2.imencode(".png", gradient((64, 64)))[1].tobytes()[:60], ImageReadError),
    }
    for name, (data, error) in cases.items():
        _write(tmp_path / name, data)
        with pytest.raises(error) as checked:
            check_image(tmp_path / name)
        with pytest.raises(error) as read:
            read_image(tmp_path / name)
        assert str(checked.value).split(":")[:2] == str(read.value).split(":")[:2], name
