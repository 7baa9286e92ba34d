"""Fuzzing core's parsers of untrusted input: the ONNX metadata JSON and image file headers.
Property: a valid result or the module's named error (MetadataError, ImageReadError), never another
exception, never a hang (testsupport.fuzz); plus issue 11's concrete bad cases as explicit examples."""

from __future__ import annotations

import json
import os
import tempfile

import cv2
import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from testsupport.fuzz import fuzz, mutated_bytes, mutated_json, no_hang, tried
from testsupport.images import exif_jpeg, gradient, jpeg_bomb, png_bomb
from yolo_nano.core.images import ImageReadError, check_image, header_size, read_image
from yolo_nano.core.metadata import VOC_CLASSES, HeadSpec, MetadataError, ModelMetadata

# ------------------------------------------------------------------------------------ metadata JSON
VALID = ModelMetadata(
    arch="yolo-nano",
    class_names=VOC_CLASSES,
    input_size=(416, 416),
    heads=(
        HeadSpec("out13", 32, ((116.0, 90.0), (156.0, 198.0), (373.0, 326.0))),
        HeadSpec("out26", 16, ((30.0, 61.0), (62.0, 45.0), (59.0, 119.0))),
        HeadSpec("out52", 8, ((10.0, 13.0), (16.0, 30.0), (33.0, 23.0))),
    ),
    weights_sha256="ab" * 32,
    opset=13,
).to_dict()


def _with(**fields):  # noqa: ANN003
    d = json.loads(json.dumps(VALID))
    d.update(fields)
    return json.dumps(d)


# issue 11 item 7: metadata that lies, each must be refused when the model is opened
METADATA_CORPUS = [
    _with(mean=[0.0, 0.0]),
    _with(pad_value=300),
    _with(std=[0.0, 1.0, 1.0]),
    _with(std=[float("nan"), 1.0, 1.0]),
    _with(heads=[dict(VALID["heads"][0], anchors=[[float("nan"), 1.0]])]),
    _with(heads=[dict(VALID["heads"][0], anchors=[[1e308, 1e308]])]),
    _with(heads=[VALID["heads"][0], VALID["heads"][0]]),
    _with(scale=float("nan")),
    _with(layout=["NCHW"]),
    _with(batch="4"),
    _with(batch=10**400),
    _with(class_names="dog,cat"),
    _with(input_size=[416.5, 416]),
    _with(heads=[dict(VALID["heads"][0], stride=0)]),
    _with(format_version=10**400),
    json.dumps(VALID).replace('"scale": 0.00392156862745098', '"scale": 1e400'),
    "[" * 100_000 + "]" * 100_000,
    "{" * 100_000,
    "",
    "null",
]


@fuzz(300)
@given(text=mutated_json([VALID], max_ops=3))
@example(text=json.dumps(VALID))
def test_fuzz_metadata_json(text):
    """ModelMetadata.from_json: metadata that validates and round-trips, or MetadataError."""
    for case in METADATA_CORPUS if text == json.dumps(VALID) else [text]:
        tried("ONNX metadata JSON")
        try:
            with no_hang():
                meta = ModelMetadata.from_json(case)
        except MetadataError:
            assert case not in (json.dumps(VALID),)
            continue
        assert case not in METADATA_CORPUS, f"lying metadata accepted: {case[:120]}"
        meta.validate()
        assert ModelMetadata.from_json(meta.to_json()) == meta
        for head in meta.heads:
            shape = meta.head_shape(head, batch=2)
            assert all(isinstance(v, int) and v > 0 for v in shape)
        assert all(np.isfinite(v) for v in (meta.scale, *meta.mean, *meta.std))


# ------------------------------------------------------------------------------------ image headers
_DIR = tempfile.mkdtemp(prefix="fuzz-images-")
LIMIT = 200_000  # pixels: small, so a mutated header that still passes cannot make a decode costly


def _encoded(ext: str, image: np.ndarray) -> bytes:
    """``image`` in the format of ``ext``, or b"" where this OpenCV has no such encoder (4.5: no GIF)."""
    try:
        ok, buf = cv2.imencode(ext, image)
    except cv2.error:
        return b""
    return buf.tobytes() if ok else b""


# a 1x1 GIF made by hand, for OpenCV builds that cannot write GIF
GIF_1X1 = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


def _image_seeds():
    img = gradient((6, 5))
    seeds = [
        _encoded(e, img) for e in (".png", ".jpg", ".bmp", ".webp", ".tiff", ".ppm", ".ras", ".pam", ".gif")
    ]
    seeds += [_encoded(".pfm", img.astype(np.float32) / 255), _encoded(".hdr", img.astype(np.float32) / 255)]
    seeds += [_encoded(".pgm", img[..., 0]), _encoded(".png", (img.astype(np.uint16) * 257))]
    seeds += [exif_jpeg(img, 6), png_bomb(), jpeg_bomb(), GIF_1X1]
    return [s for s in seeds if s]


IMAGE_SEEDS = _image_seeds()
# issue 11 item 4: header bombs; a header that undersells; empty and garbage files
IMAGE_CORPUS = [png_bomb(), jpeg_bomb(), png_bomb(20000, 20000), jpeg_bomb(1, 60000), b"", b"\x00" * 64]


def _check_read(path: str) -> None:
    try:
        with no_hang(20.0):
            image = read_image(path, max_pixels=LIMIT)
    except ImageReadError as e:
        assert str(e).startswith(path) and "\n" not in str(e)
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert 0 < image.shape[0] * image.shape[1] <= LIMIT
    try:
        with no_hang(20.0):
            check_image(path, max_pixels=LIMIT)
    except ImageReadError:
        pass


@fuzz(500)
@given(data=mutated_bytes(IMAGE_SEEDS, max_ops=4))
@example(data=b"corpus")
def test_fuzz_image_files(data):
    """read_image on mutated files of every format it knows: an HxWx3 uint8 image within the pixel
    limit, or ImageReadError (ImageTooLargeError included) naming the file."""
    for case in IMAGE_CORPUS if data == b"corpus" else [data]:
        tried("image headers (read_image)")
        path = os.path.join(_DIR, "x.img")
        with open(path, "wb") as f:
            f.write(case)
        _check_read(path)


@fuzz(600)
@given(head=mutated_bytes(IMAGE_SEEDS, max_ops=6) | st.binary(max_size=64))
def test_fuzz_header_size(head):
    """header_size never raises and never reports a negative size, whatever the bytes."""
    tried("image headers (header_size)")
    with no_hang():
        fmt, size = header_size(head)
    assert isinstance(fmt, str)
    assert size is None or (len(size) == 2 and all(isinstance(v, int) and v >= 0 for v in size))
