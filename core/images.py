"""The ONE image reader: every command that reads image files (nano-detect, nano-eval, nano-train,
calibration, nano-bench) decodes them here, so the same photo gives the same pixels everywhere.

    image = read_image("street.jpg")            # HxWx3 uint8 BGR; EXIF orientation applied
    paths = list_images("folder")               # sorted image files directly in the folder

Rules (docs/runtime.md, "Image files"):

* EXIF orientation is applied, as ``cv2.imread`` does by default (``IMREAD_COLOR``): a phone photo
  stored 40x20 with Orientation=6 comes back 20x40, upright. Gray, 16-bit and alpha images become
  8-bit BGR (alpha dropped).
* The pixel size is read from the file header BEFORE decoding (PNG, JPEG, BMP, WebP, TIFF, GIF, PNM/PAM/
  PFM, Sun raster, Radiance HDR) and an image over ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`,
  sized for an 8 GB board; env ``YOLO_NANO_MAX_IMAGE_PIXELS``) is refused with
  :class:`ImageTooLargeError` without decoding, so a 74-byte PNG claiming 65535x65535 costs no memory.
  A file whose header cannot be read, or whose format none of those parsers knows, is refused
  (:class:`ImageReadError`) rather than handed to a decoder that might allocate gigabytes.
* Only regular files are opened (a FIFO or device named ``x.jpg`` would block or never end), the bytes
  are read with a size cap and decoded with ``cv2.imdecode`` (non-ASCII paths work on every OS).
"""

from __future__ import annotations

import os
import stat
import struct
from typing import Callable, List, Optional, Tuple

import numpy as np

from .fileio import PathLike
from .preprocess import InvalidImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS_ENV",
    "ImageLimitError",
    "ImageReadError",
    "ImageTooLargeError",
    "check_image",
    "header_size",
    "is_image_file",
    "list_images",
    "max_image_pixels",
    "read_image",
]

# Image files every reader of folders accepts (what OpenCV's imread decodes in every build we support).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")

#: 50 megapixels: 150 MB as BGR uint8, plus the decoder's own buffers; safe on an 8 GB Jetson running a
#: model beside it. A 48 MP phone photo (8000x6000) passes.
DEFAULT_MAX_PIXELS = 50_000_000
MAX_PIXELS_ENV = "YOLO_NANO_MAX_IMAGE_PIXELS"
# Bytes per pixel of the largest uncompressed file we accept (16-bit RGBA TIFF/PNM), plus headers.
_MAX_BYTES_PER_PIXEL = 8
_HEADER_SLACK = 1 << 20
_HEAD_BYTES = 1 << 16  # header parsers look at most this far (JPEG: EXIF/ICC segments come first)


class ImageReadError(InvalidImageError):
    """An image file that cannot be read: missing, not a regular file, empty, corrupt, unknown format."""


class ImageTooLargeError(ImageReadError):
    """An image whose header claims more pixels than the limit (refused before decoding)."""


class ImageLimitError(ValueError):
    """``YOLO_NANO_MAX_IMAGE_PIXELS`` (or a ``max_pixels`` argument) is not a positive whole number."""


def is_image_file(name: PathLike) -> bool:
    """Whether ``name`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return os.fspath(name).lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder: PathLike) -> List[str]:
    """Sorted paths of the image files directly in ``folder`` (not recursive; folders named x.jpg are
    left out, other non-regular files are kept so the reader can say what is wrong with them)."""
    folder = os.fspath(folder)
    return sorted(
        os.path.join(folder, n)
        for n in os.listdir(folder)
        if is_image_file(n) and not os.path.isdir(os.path.join(folder, n))
    )


def max_image_pixels(max_pixels: Optional[int] = None) -> int:
    """The pixel limit in force: ``max_pixels`` if given, else ``$YOLO_NANO_MAX_IMAGE_PIXELS``, else
    :data:`DEFAULT_MAX_PIXELS`. :class:`ImageLimitError` for a value that is not a positive integer."""
    if max_pixels is None:
        raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not raw:
            return DEFAULT_MAX_PIXELS
        try:
            value = int(raw.replace("_", ""))
        except ValueError:
            value = 0
        if value <= 0:
            raise ImageLimitError(
                f"{MAX_PIXELS_ENV}={raw!r} is not a positive whole number of pixels "
                f"(e.g. {DEFAULT_MAX_PIXELS}); fix or unset it"
            )
        return value
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ImageLimitError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    return max_pixels


# ------------------------------------------------------------------------------------ header parsers
# Each takes the first bytes of a file and returns (width, height), or None when the header is cut
# short or malformed. They never raise on any input (struct.error is caught by header_size).


def _png(b: bytes) -> Optional[Tuple[int, int]]:
    if len(b) < 24 or b[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", b[16:24])


def _jpeg(b: bytes) -> Optional[Tuple[int, int]]:
    i = 2
    while i + 4 <= len(b):
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        (length,) = struct.unpack(">H", b[i + 2 : i + 4])
        if length < 2:
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            if i + 9 > len(b):
                return None
            h, w = struct.unpack(">HH", b[i + 5 : i + 9])
            return (w, h) if h > 0 else None  # height 0 = DNL, which libjpeg does not support
        i += 2 + length
    return None


def _bmp(b: bytes) -> Optional[Tuple[int, int]]:
    if len(b) < 26:
        return None
    (dib,) = struct.unpack("<I", b[14:18])
    if dib == 12:  # OS/2 BITMAPCOREHEADER
        return struct.unpack("<HH", b[18:22])
    w, h = struct.unpack("<ii", b[18:26])
    return abs(w), abs(h)  # negative height: top-down rows


def _webp(b: bytes) -> Optional[Tuple[int, int]]:
    if len(b) < 30:
        return None
    chunk = b[12:16]
    if chunk == b"VP8 " and b[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", b[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and b[20] == 0x2F:
        (bits,) = struct.unpack("<I", b[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        w = int.from_bytes(b[24:27], "little") + 1
        h = int.from_bytes(b[27:30], "little") + 1
        return w, h
    return None


def _tiff(b: bytes, read_at: Callable[[int, int], bytes]) -> Optional[Tuple[int, int]]:
    e = "<" if b[:2] == b"II" else ">"
    (version,) = struct.unpack(e + "H", b[2:4])
    big = version == 43  # BigTIFF: 8-byte offsets and counts
    if big:
        (ifd,) = struct.unpack(e + "Q", b[8:16])
        head = read_at(ifd, 8)
        (count,) = struct.unpack(e + "Q", head)
        entry, first = 20, ifd + 8
    else:
        (ifd,) = struct.unpack(e + "I", b[4:8])
        head = read_at(ifd, 2)
        (count,) = struct.unpack(e + "H", head)
        entry, first = 12, ifd + 2
    table = read_at(first, min(count, 4096) * entry)
    found = {}
    for k in range(len(table) // entry):
        rec = table[k * entry : (k + 1) * entry]
        tag, kind = struct.unpack(e + "HH", rec[:4])
        if tag not in (256, 257):
            continue
        value = rec[12:] if big else rec[8:]
        if kind == 3:  # SHORT
            (found[tag],) = struct.unpack(e + "H", value[:2])
        elif kind == 4:  # LONG
            (found[tag],) = struct.unpack(e + "I", value[:4])
        elif kind == 16 and big:  # LONG8
            (found[tag],) = struct.unpack(e + "Q", value[:8])
        else:
            return None
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None


def _gif(b: bytes) -> Optional[Tuple[int, int]]:
    return struct.unpack("<HH", b[6:10]) if len(b) >= 10 else None


def _pnm(b: bytes) -> Optional[Tuple[int, int]]:
    text = b[:4096].decode("latin-1")
    if text[:2] == "P7":  # PAM: "WIDTH w" / "HEIGHT h" lines up to ENDHDR
        fields = {}
        for line in text.splitlines()[1:]:
            parts = line.split()
            if parts and parts[0] == "ENDHDR":
                break
            if len(parts) == 2 and parts[0] in ("WIDTH", "HEIGHT") and parts[1].isdigit():
                fields[parts[0]] = int(parts[1])
        return (fields["WIDTH"], fields["HEIGHT"]) if len(fields) == 2 else None
    tokens: List[str] = []
    for line in text[2:].splitlines():
        tokens += line.split("#", 1)[0].split()
        if len(tokens) >= 2:
            break
    if len(tokens) < 2 or not (tokens[0].isdigit() and tokens[1].isdigit()):
        return None
    return int(tokens[0]), int(tokens[1])


def _sun(b: bytes) -> Optional[Tuple[int, int]]:
    return struct.unpack(">II", b[4:12]) if len(b) >= 12 else None


def _hdr(b: bytes) -> Optional[Tuple[int, int]]:
    lines = b[:4096].decode("latin-1").split("\n")
    for k, line in enumerate(lines):
        if line.strip() == "" and k + 1 < len(lines):  # the resolution line follows the blank line
            parts = lines[k + 1].split()
            if len(parts) == 4 and parts[1].isdigit() and parts[3].isdigit():
                a, b2 = int(parts[1]), int(parts[3])
                return (b2, a) if parts[0][1] == "Y" else (a, b2)
            return None
    return None


def header_size(
    head: bytes, read_at: Optional[Callable[[int, int], bytes]] = None
) -> Tuple[str, Optional[Tuple[int, int]]]:
    """The format and claimed ``(width, height)`` in pixels of an image from its first bytes.

    ``read_at(offset, n)`` reads further (TIFF keeps its size in a directory anywhere in the file);
    without it only ``head`` is used. Returns ``(format, size)``: format ``"unknown"`` when no parser
    knows the signature, size ``None`` when the header is cut short or malformed. Never raises.
    """

    def within_head(offset: int, n: int) -> bytes:
        return head[offset : offset + n]

    reader = read_at or within_head
    try:
        if head[:8] == b"\x89PNG\r\n\x1a\n":
            return "PNG", _png(head)
        if head[:3] == b"\xff\xd8\xff":
            return "JPEG", _jpeg(head)
        if head[:2] == b"BM":
            return "BMP", _bmp(head)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return "WebP", _webp(head)
        if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return "TIFF", _tiff(head, reader)
        if head[:6] in (b"GIF87a", b"GIF89a"):
            return "GIF", _gif(head)
        if len(head) >= 3 and head[:1] == b"P" and head[1:2] in b"1234567fF" and head[2:3].isspace():
            return "PNM", _pnm(head)
        if head[:4] == b"\x59\xa6\x6a\x95":
            return "Sun raster", _sun(head)
        if head[:2] == b"#?":
            return "Radiance HDR", _hdr(head)
    except (struct.error, IndexError, KeyError, ValueError):
        return "corrupt", None
    return "unknown", None


# ------------------------------------------------------------------------------------------- reader
def _read_capped(path: str, max_bytes: int) -> Tuple[bytes, Callable[[int, int], bytes]]:
    """All bytes of the regular file ``path`` (at most ``max_bytes``), checked with stat before and
    after opening so a FIFO, device or folder is refused instead of blocking."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read image: {e.strerror or e}; check the path") from e
    if not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a pipe, socket or device)"
        raise ImageReadError(f"{path}: cannot read image: {what}; give an image file")
    if st.st_size > max_bytes:
        raise ImageTooLargeError(
            f"{path}: image too large: {st.st_size} bytes is more than any image within the pixel limit could need "
            f"({max_bytes} bytes); raise {MAX_PIXELS_ENV} if this image is genuine"
        )
    # O_NONBLOCK: if the file was swapped for a FIFO after stat, opening it must not wait for a writer.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read image: {e.strerror or e}; check its permissions") from e
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ImageReadError(
                f"{path}: cannot read image: not a regular file (a pipe, socket or device); give an image file"
            )
        try:
            data = f.read(max_bytes + 1)
        except OSError as e:
            raise ImageReadError(f"{path}: cannot read image: {e.strerror or e}") from e
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"{path}: image too large: grew past {max_bytes} bytes while being read")

    def read_at(offset: int, n: int) -> bytes:
        return data[offset : offset + n]

    return data, read_at


def _checked_bytes(path: str, limit: int) -> Tuple[bytes, str]:
    """The bytes and format of the image file ``path`` once its header says it is within ``limit`` pixels."""
    data, read_at = _read_capped(path, limit * _MAX_BYTES_PER_PIXEL + _HEADER_SLACK)
    if not data:
        raise ImageReadError(f"{path}: cannot read image: the file is empty; remove it or write it again")
    fmt, size = header_size(data[:_HEAD_BYTES], read_at)
    if fmt == "unknown":
        raise ImageReadError(
            f"{path}: cannot read image: not a recognised image format (JPEG, PNG, BMP, WebP, TIFF, GIF, PNM, "
            "Sun raster, HDR); convert it to JPEG or PNG"
        )
    if size is None:
        raise ImageReadError(
            f"{path}: cannot read image: corrupt {fmt} header (file cut short or damaged); write it again or remove it"
        )
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageReadError(
            f"{path}: cannot read image: its {fmt} header claims an empty image ({width}x{height}); write it again"
        )
    if width * height > limit:
        raise ImageTooLargeError(
            f"{path}: image too large: {fmt} of {width}x{height} = {width * height / 1e6:.0f} megapixels, over the "
            f"limit of {limit / 1e6:g} megapixels; downscale it, or raise {MAX_PIXELS_ENV} (needs ~3 bytes per pixel)"
        )
    return data, fmt


def _decode(path: str, data: bytes, fmt: str, flags: int) -> np.ndarray:
    import cv2

    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as e:
        raise ImageReadError(
            f"{path}: cannot read image: OpenCV cannot decode this {fmt} ({str(e).strip().splitlines()[-1]})"
        ) from e
    if image is None or image.size == 0:
        raise ImageReadError(
            f"{path}: cannot read image: corrupt {fmt} data (OpenCV cannot decode it); write it again or remove it"
        )
    return image


def read_image(path: PathLike, max_pixels: Optional[int] = None) -> np.ndarray:
    """Decode the image file at ``path`` to an HxWx3 uint8 BGR array (EXIF orientation applied).

    ``max_pixels``: refuse images whose header claims more pixels (width x height) than this (default
    :func:`max_image_pixels`: ``$YOLO_NANO_MAX_IMAGE_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`).
    Raises :class:`ImageTooLargeError` (over the limit, nothing decoded) or :class:`ImageReadError`
    (missing, not a regular file, empty, unknown format, corrupt), both naming the path and the fix.
    """
    import cv2

    path = os.fspath(path)
    limit = max_image_pixels(max_pixels)
    data, fmt = _checked_bytes(path, limit)
    image = _decode(path, data, fmt, cv2.IMREAD_COLOR)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageReadError(f"{path}: cannot read image: OpenCV gave shape {image.shape} for this {fmt}")
    if image.shape[0] * image.shape[1] > limit:  # a header that undersold the real size
        raise ImageTooLargeError(
            f"{path}: image too large: decoded to {image.shape[1]}x{image.shape[0]}, over the limit of {limit} pixels "
            f"(its header said less); raise {MAX_PIXELS_ENV} if it is genuine"
        )
    return image


def check_image(path: PathLike, max_pixels: Optional[int] = None) -> None:
    """Raise what :func:`read_image` would raise for ``path``, more cheaply: the same file, header and
    size checks, then a decode at 1/8 scale in gray (JPEG decodes only a fraction of its data). For
    start-up checks over a whole dataset (nano-train); a file that passes reads with :func:`read_image`.
    """
    import cv2

    path = os.fspath(path)
    data, fmt = _checked_bytes(path, max_image_pixels(max_pixels))
    _decode(path, data, fmt, cv2.IMREAD_REDUCED_GRAYSCALE_8)
