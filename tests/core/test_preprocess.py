"""letterbox, preprocess, scale_boxes and the image checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yolo_nano.core.metadata import HeadSpec, ModelMetadata
from yolo_nano.core.preprocess import letterbox_params
from yolo_nano.runtime import (
    InvalidImageError,
    LetterboxInfo,
    ensure_bgr_uint8,
    letterbox,
    preprocess,
    scale_boxes,
)


def _meta(size=(64, 96), **kw) -> ModelMetadata:
    return ModelMetadata(
        arch="t", class_names=("a",), input_size=size, heads=(HeadSpec("h", 32, ((8.0, 8.0),)),), **kw
    )


def test_letterbox_wide_image():
    img = np.full((100, 200, 3), 200, np.uint8)
    out, info = letterbox(img, (64, 64), pad_value=114)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert info == LetterboxInfo(scale=0.32, pad=(0, 16), original_shape=(100, 200))
    assert (out[:16] == 114).all() and (out[48:] == 114).all()  # 32 rows of image, centred
    assert (out[16:48] == 200).all()


def test_letterbox_tall_upscale_and_exact_fit():
    img = np.zeros((20, 10, 3), np.uint8)
    out, info = letterbox(img, (64, 64))
    assert info.scale == 3.2 and info.pad == (16, 0)
    assert (out[:, :16] == 114).all() and (out[:, 16:48] == 0).all() and (out[:, 48:] == 114).all()
    same = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    out, info = letterbox(same, (64, 64))
    assert info.scale == 1.0 and info.pad == (0, 0)
    np.testing.assert_array_equal(out, same)
    assert out is not same  # callers may write into the result


@settings(max_examples=200, deadline=None)
@given(
    st.integers(8, 1500),
    st.integers(8, 1500),
    st.sampled_from([(416, 416), (320, 480), (64, 64)]),
    st.floats(0.0, 0.8),
    st.floats(0.0, 0.8),
    st.floats(0.05, 0.2),
    st.floats(0.05, 0.2),
)
def test_letterbox_then_scale_boxes_round_trips(h, w, net, fx, fy, fw, fh):
    info, (nh, nw) = letterbox_params((h, w), net)
    assert nh <= net[0] and nw <= net[1] and (nh == net[0] or nw == net[1])
    box = np.array([[fx * w, fy * h, (fx + fw) * w, (fy + fh) * h]], np.float32)
    # forward map of the letterbox: p * scale + pad
    fwd = box * info.scale + np.array([info.pad[0], info.pad[1]] * 2, np.float32)
    back = scale_boxes(fwd, info)
    np.testing.assert_allclose(back, box, rtol=1e-5, atol=1e-3 * max(h, w) / 100)
    # the resized image is the original scaled by info.scale (to the pixel) and centred
    # (a side that would round to 0 pixels is kept at 1)
    assert abs(w * info.scale - nw) <= 0.5 + 1e-6 or nw == 1
    assert abs(h * info.scale - nh) <= 0.5 + 1e-6 or nh == 1
    assert info.pad == ((net[1] - nw) // 2, (net[0] - nh) // 2)


@settings(max_examples=40, deadline=None)
@given(st.integers(40, 700), st.integers(40, 700), st.floats(0.05, 0.6), st.floats(0.05, 0.6))
def test_pixels_round_trip(h, w, fx, fy):
    """A white rectangle drawn in the original, found again in the letterboxed image, maps back onto itself."""
    img = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = int(fx * w), int(fy * h), int(fx * w) + w // 3, int(fy * h) + h // 3
    img[y1:y2, x1:x2] = 255
    out, info = letterbox(img, (128, 160), pad_value=0)
    ys, xs = np.nonzero(out[..., 0] > 127)
    found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
    back = scale_boxes(found, info)
    tol = 1.0 / info.scale + 1.0  # one network-input pixel, in original pixels
    np.testing.assert_allclose(back[0], [x1, y1, x2, y2], atol=tol)


def test_scale_boxes_clips_to_image():
    info = LetterboxInfo(scale=0.5, pad=(0, 10), original_shape=(40, 60))
    out = scale_boxes(np.array([[-5, 0, 100, 50]], np.float32), info)
    np.testing.assert_allclose(out, [[0, 0, 60, 40]])
    assert out.dtype == np.float32


def test_preprocess_layout_channel_order_and_scale():
    img = np.zeros((64, 96, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30  # B, G, R
    batch, infos = preprocess([img, img], _meta())
    assert batch.shape == (2, 3, 64, 96) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[1, :, 5, 7], [30 / 255, 20 / 255, 10 / 255], rtol=1e-6)  # RGB
    assert infos[0].pad == (0, 0)
    bgr_batch, _ = preprocess([img], _meta(channel_order="BGR"))
    np.testing.assert_allclose(bgr_batch[0, :, 0, 0], [10 / 255, 20 / 255, 30 / 255], rtol=1e-6)
    norm, _ = preprocess([img], _meta(mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0)))
    np.testing.assert_allclose(
        norm[0, :, 0, 0], [(30 / 255 - 0.5) / 0.25, (20 / 255 - 0.5) / 0.5, 10 / 255 - 0.5], rtol=1e-5
    )


def test_preprocess_pads_with_metadata_value():
    img = np.zeros((32, 96, 3), np.uint8)
    batch, infos = preprocess([img], _meta(pad_value=0))
    assert infos[0].pad == (0, 16)
    assert float(batch[0, :, :16].max()) == 0.0
    batch, _ = preprocess([img], _meta())
    np.testing.assert_allclose(batch[0, :, 0, 0], [114 / 255] * 3, rtol=1e-6)


def test_gray_bgra_and_non_contiguous_are_converted():
    base = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    gray = base[..., 1].copy()
    for g in (gray, gray[..., None]):
        out = ensure_bgr_uint8(g)
        assert out.shape == (40, 50, 3) and (out[..., 0] == gray).all() and (out[..., 2] == gray).all()
    bgra = np.concatenate([base, np.full((40, 50, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(ensure_bgr_uint8(bgra), base)
    flipped = base[:, ::-1]
    assert not flipped.flags.c_contiguous
    np.testing.assert_array_equal(ensure_bgr_uint8(flipped), np.ascontiguousarray(flipped))
    # the preprocessed input of a view equals that of its contiguous copy
    a, _ = preprocess([flipped], _meta())
    b, _ = preprocess([np.ascontiguousarray(flipped)], _meta())
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "image, match",
    [
        (None, "is None"),
        ("img.jpg", "numpy array"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((10, 10, 3), np.float32), "dtype float32.*astype"),
        (np.zeros((10, 10, 3), np.uint16), "dtype uint16"),
        (np.zeros((1, 10, 10, 3), np.uint8), "list of"),
        (np.zeros((10,), np.uint8), "shape"),
        (np.zeros((10, 10, 2), np.uint8), "2 channels"),
    ],
)
def test_bad_images_raise_clear_errors(image, match):
    with pytest.raises(InvalidImageError, match=match):
        ensure_bgr_uint8(image)


def test_preprocess_names_the_bad_image_and_refuses_a_bare_array():
    good = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(InvalidImageError, match="image 1 is None"):
        preprocess([good, None], _meta())
    with pytest.raises(InvalidImageError, match=r"\[image\]"):
        preprocess(good, _meta())
