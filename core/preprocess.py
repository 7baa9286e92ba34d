"""Preprocessing shared by the runtime, calibration and evaluation (numpy + OpenCV, no torch).

The ONE definition of how an image becomes network input:

1. :func:`ensure_bgr_uint8` checks and normalises the input image (HxWx3 uint8 BGR, as ``cv2.imread``
   gives). Gray images (HxW or HxWx1) are converted to BGR and 4-channel BGRA images have their alpha
   channel dropped; other dtypes, ranks and channel counts are refused with a message saying how to
   convert them.
2. :func:`letterbox` resizes keeping the aspect ratio (bilinear, ``cv2.INTER_LINEAR``; images are scaled
   up as well as down) and pads to the network input size with ``pad_value`` (114), the unpadded image
   centred (left/top padding = floor of half the slack).
3. :func:`preprocess` applies the channel order, ``x * scale``, ``(x - mean) / std`` of the model's
   metadata and lays out a float32 NCHW batch.

Python 3.8 compatible: the runtime on a Jetson imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import cv2
import numpy as np

from .metadata import ModelMetadata


class InvalidImageError(ValueError):
    """The image passed in is not something we can run detection on (None, empty, wrong dtype/shape)."""


@dataclass(frozen=True)
class LetterboxInfo:
    """How :func:`letterbox` mapped an original image into the network input.

    ``scale``: network-input pixels per original pixel; ``pad``: (left, top) padding in network-input
    pixels; ``original_shape``: (height, width) of the original image in pixels. A point ``p`` of the
    original image lands at ``p * scale + pad`` in the network input.
    """

    scale: float
    pad: Tuple[int, int]
    original_shape: Tuple[int, int]


def ensure_bgr_uint8(image: object, name: str = "image") -> np.ndarray:
    """Check ``image`` and return it as a C-contiguous HxWx3 uint8 BGR array.

    Accepted: HxWx3 uint8 BGR (returned as is when contiguous), HxW or HxWx1 uint8 gray (converted to
    BGR), HxWx4 uint8 BGRA (alpha dropped, no blending). Non-contiguous views (crops, ``[:, ::-1]``) are
    copied. Anything else raises :class:`InvalidImageError` naming the problem and the fix.
    """
    if image is None:
        raise InvalidImageError(
            f"{name} is None (cv2.imread returns None when it cannot read a file: check the path)"
        )
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(
            f"{name} must be a numpy array (HxWx3 uint8 BGR as OpenCV gives), got {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        hint = (
            "scale it to 0..255 and convert: (img * 255).clip(0, 255).astype(np.uint8)"
            if image.dtype.kind == "f"
            else "convert it: cv2.convertScaleAbs(img, alpha=255 / img.max()) or img.astype(np.uint8)"
        )
        raise InvalidImageError(f"{name} has dtype {image.dtype}, expected uint8; {hint}")
    if image.ndim == 4:
        raise InvalidImageError(
            f"{name} has 4 dimensions {image.shape}; pass a batch as a list of HxWx3 images"
        )
    if image.ndim not in (2, 3):
        raise InvalidImageError(
            f"{name} has shape {image.shape}; expected HxWx3 (BGR), HxW (gray) or HxWx4 (BGRA)"
        )
    if image.shape[0] == 0 or image.shape[1] == 0 or image.size == 0:
        raise InvalidImageError(f"{name} is empty (shape {image.shape})")
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise InvalidImageError(
            f"{name} has {image.shape[2]} channels (shape {image.shape}); expected 3 (BGR), 1 (gray) or 4 (BGRA)"
        )
    if not image.flags.c_contiguous:
        image = np.ascontiguousarray(image)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[0], image.shape[1]), cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def letterbox_params(
    original_shape: Tuple[int, int], new_shape: Tuple[int, int]
) -> Tuple[LetterboxInfo, Tuple[int, int]]:
    """The letterbox of an (h, w) image into ``new_shape`` (h, w): its :class:`LetterboxInfo` and the
    resized, unpadded size (h, w) in network-input pixels."""
    h0, w0 = int(original_shape[0]), int(original_shape[1])
    h1, w1 = int(new_shape[0]), int(new_shape[1])
    scale = min(h1 / h0, w1 / w0)
    nh = min(h1, max(1, int(round(h0 * scale))))
    nw = min(w1, max(1, int(round(w0 * scale))))
    left = (w1 - nw) // 2
    top = (h1 - nh) // 2
    return LetterboxInfo(scale=float(scale), pad=(left, top), original_shape=(h0, w0)), (nh, nw)


def letterbox(
    image: np.ndarray, new_shape: Tuple[int, int] = (416, 416), pad_value: int = 114
) -> Tuple[np.ndarray, LetterboxInfo]:
    """Resize ``image`` (HxWx3 uint8) keeping its aspect ratio and pad it to ``new_shape`` (h, w).

    Returns the padded (h, w, 3) uint8 image and the :class:`LetterboxInfo` that
    :func:`yolo_nano.core.postprocess.scale_boxes` uses to map boxes back to original pixels.
    """
    image = ensure_bgr_uint8(image)
    info, (nh, nw) = letterbox_params(image.shape[:2], new_shape)
    h1, w1 = int(new_shape[0]), int(new_shape[1])
    if (nh, nw) != image.shape[:2]:
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    else:
        resized = image
    left, top = info.pad
    if (nh, nw) == (h1, w1):
        return (resized if resized is not image else image.copy()), info
    out = np.full((h1, w1, 3), pad_value, dtype=np.uint8)
    out[top : top + nh, left : left + nw] = resized
    return out, info


def normalize_into(padded_bgr: np.ndarray, out_chw: np.ndarray, meta: ModelMetadata) -> None:
    """Write one letterboxed HxWx3 uint8 BGR image into ``out_chw`` (3, H, W) float32 as the model wants
    it (channel order, ``x * scale``, ``(x - mean) / std``)."""
    src = padded_bgr[..., ::-1] if meta.channel_order == "RGB" else padded_bgr
    # One pass per channel over a strided view: no temporary HxWx3 float image.
    mean = meta.mean
    std = meta.std
    plain = all(m == 0.0 for m in mean) and all(s == 1.0 for s in std)
    for c in range(3):
        np.multiply(src[..., c], meta.scale, out=out_chw[c], dtype=np.float32, casting="unsafe")
        if not plain:
            out_chw[c] -= np.float32(mean[c])
            out_chw[c] /= np.float32(std[c])


def preprocess(images: Sequence[np.ndarray], meta: ModelMetadata) -> Tuple[np.ndarray, List[LetterboxInfo]]:
    """Turn BGR uint8 images into the network's input batch.

    ``images``: a list of HxWx3 uint8 BGR arrays (gray and BGRA are converted, see
    :func:`ensure_bgr_uint8`), any sizes. Returns a float32 array (N, 3, H, W) with (H, W) =
    ``meta.input_size`` and one :class:`LetterboxInfo` per image.
    """
    if isinstance(images, np.ndarray):
        raise InvalidImageError("preprocess takes a list of images; wrap a single image as [image]")
    h, w = meta.input_size
    batch = np.empty((len(images), 3, h, w), dtype=np.float32)
    infos: List[LetterboxInfo] = []
    for i, img in enumerate(images):
        img = ensure_bgr_uint8(img, name=f"image {i}" if len(images) > 1 else "image")
        padded, info = letterbox(img, (h, w), meta.pad_value)
        normalize_into(padded, batch[i], meta)
        infos.append(info)
    return batch, infos
