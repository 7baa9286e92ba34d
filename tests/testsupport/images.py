"""Image files made byte by byte for the image-reader tests (no Pillow needed): a JPEG with a real EXIF
APP1 segment, and "header bombs" whose headers claim huge sizes in a few hundred bytes."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np


def gradient(shape=(20, 40)) -> np.ndarray:
    """An HxWx3 uint8 BGR image whose every row and column differs, so a rotation or flip shows."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1).astype(np.uint8)


def exif_segment(orientation: int) -> bytes:
    """A JPEG APP1 segment: ``Exif\\0\\0`` + a little-endian TIFF header + IFD0 with one entry,
    Orientation (tag 0x0112, SHORT, count 1)."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd
    body = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def exif_jpeg(image: np.ndarray, orientation: int = 6, quality: int = 100) -> bytes:
    """``image`` encoded as JPEG (stored as is) with an EXIF Orientation tag right after SOI."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    data = buf.tobytes()
    assert data[:2] == b"\xff\xd8"
    return data[:2] + exif_segment(orientation) + data[2:]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def png_bomb(width: int = 65535, height: int = 65535) -> bytes:
    """A valid-looking 8-bit RGB PNG whose IHDR claims ``width`` x ``height`` (a few dozen bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _png_chunk(b"IEND", b"")
    )


def jpeg_bomb(width: int = 60000, height: int = 60000) -> bytes:
    """A small baseline JPEG whose SOF0 frame header is rewritten to claim ``width`` x ``height``."""
    ok, buf = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 50])
    assert ok
    data = bytearray(buf.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)
