"""decode: hand-computed YOLOv3 (sigmoid) and YOLOv2 (softmax) cases, fusion with the threshold, and a
brute-force dense reference."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from yolo_nano.core.metadata import HeadSpec, ModelMetadata
from yolo_nano.core.postprocess import DecodeStats, decode_thresholds
from yolo_nano.runtime import decode


def _meta(activation: str = "sigmoid", classes=("a", "b")) -> ModelMetadata:
    return ModelMetadata(
        arch="t",
        class_names=tuple(classes),
        input_size=(16, 16),
        heads=(HeadSpec("h8", 8, ((10.0, 13.0), (16.0, 30.0))),),
        class_activation=activation,
    )


LN9 = math.log(9.0)


def _one_candidate(cls_logits=(0.0, LN9)) -> np.ndarray:
    """Raw head (1, 2*(5+2), 2, 2); only anchor 1 at cell gx=1, gy=0 has objectness 0.8."""
    raw = np.zeros((1, 2, 7, 2, 2), np.float32)
    raw[:, :, 4] = -20.0
    a, gy, gx = 1, 0, 1
    raw[0, a, 0, gy, gx] = 0.0  # sigmoid -> 0.5
    raw[0, a, 1, gy, gx] = math.log(3.0)  # sigmoid -> 0.75
    raw[0, a, 2, gy, gx] = math.log(2.0)  # w = 16 * 2 = 32
    raw[0, a, 3, gy, gx] = 0.0  # h = 30
    raw[0, a, 4, gy, gx] = math.log(4.0)  # sigmoid -> 0.8
    raw[0, a, 5:, gy, gx] = cls_logits
    return raw.reshape(1, 14, 2, 2)


def test_yolov3_sigmoid_hand_computed():
    ((boxes, scores, cls),) = decode([_one_candidate()], _meta("sigmoid"), 0.25)
    # cx = (0.5 + 1) * 8 = 12, cy = (0.75 + 0) * 8 = 6, w = 32, h = 30; score = 0.8 * sigmoid(ln 9) = 0.72
    np.testing.assert_allclose(boxes, [[-4.0, -9.0, 28.0, 21.0]], atol=1e-5)
    np.testing.assert_allclose(scores, [0.72], atol=1e-6)
    assert cls.tolist() == [1]
    assert boxes.dtype == np.float32 and scores.dtype == np.float32 and cls.dtype == np.int64


def test_yolov2_softmax_hand_computed():
    raw = _one_candidate(cls_logits=(math.log(3.0), math.log(9.0)))
    ((boxes, scores, cls),) = decode([raw], _meta("softmax"), 0.25)
    # softmax(ln 3, ln 9) = (0.25, 0.75): score = 0.8 * 0.75 = 0.6 (sigmoid would give 0.8 * 0.9 = 0.72)
    np.testing.assert_allclose(scores, [0.6], atol=1e-6)
    assert cls.tolist() == [1]
    np.testing.assert_allclose(boxes, [[-4.0, -9.0, 28.0, 21.0]], atol=1e-5)
    ((_, s3, _),) = decode([raw], _meta("sigmoid"), 0.25)
    np.testing.assert_allclose(s3, [0.72], atol=1e-6)


def test_threshold_is_strict_and_applies_to_the_product():
    raw = _one_candidate()
    assert len(decode([raw], _meta(), 0.71)[0][1]) == 1
    assert len(decode([raw], _meta(), 0.73)[0][1]) == 0  # objectness 0.8 passes, the product 0.72 does not
    assert len(decode([raw], _meta(), 1.0)[0][1]) == 0
    # conf 0: every anchor and cell is a candidate (8 of them)
    assert len(decode([raw], _meta(), 0.0)[0][1]) == 8


def test_class_logits_untouched_where_objectness_cannot_pass():
    raw = _one_candidate().reshape(1, 2, 7, 2, 2)
    low = raw[:, :, 4] < -10
    cls = raw[:, :, 5:]
    cls[np.broadcast_to(low[:, :, None], cls.shape)] = np.nan  # poison the class logits of hopeless cells
    raw[:, :, :4][np.broadcast_to(low[:, :, None], raw[:, :, :4].shape)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NaN touched would raise RuntimeWarning or leak into results
        ((boxes, scores, c),) = decode([raw.reshape(1, 14, 2, 2)], _meta(), 0.25)
    assert np.isfinite(boxes).all() and np.isfinite(scores).all()
    np.testing.assert_allclose(scores, [0.72], atol=1e-6)


def test_heads_in_metadata_order_and_batch():
    meta = ModelMetadata(
        arch="t",
        class_names=("a", "b", "c"),
        input_size=(32, 32),
        heads=(HeadSpec("s32", 32, ((20.0, 20.0),)), HeadSpec("s16", 16, ((8.0, 8.0),))),
    )
    s32 = np.full((2, 8, 1, 1), -30.0, np.float32)
    s16 = np.full((2, 8, 2, 2), -30.0, np.float32)
    s32[0, 0:4] = 0.0  # image 0: the stride-32 cell, centred, anchor-sized, class 2
    s32[0, 4] = 5.0
    s32[0, 5 + 2] = 5.0
    s16[1, 4, 1, 0] = 5.0  # image 1: stride-16 cell gx=0, gy=1, class 0
    s16[1, 5 + 0, 1, 0] = 5.0
    s16[1, 0:4, 1, 0] = 0.0
    r0, r1 = decode([s32, s16], meta, 0.5)
    np.testing.assert_allclose(r0[0], [[16 - 10, 16 - 10, 16 + 10, 16 + 10]], atol=1e-4)
    assert r0[2].tolist() == [2]
    np.testing.assert_allclose(r1[0], [[8 - 4, 24 - 4, 8 + 4, 24 + 4]], atol=1e-4)
    assert r1[2].tolist() == [0]
    sig5 = 1 / (1 + math.exp(-5))
    np.testing.assert_allclose(r0[1], [sig5 * sig5], rtol=1e-6)


def _dense_reference(outputs, meta, conf):
    """Every anchor and cell with plain Python floats: the candidates with score > conf."""
    found = []
    for out, head in zip(outputs, meta.heads):
        n, _, sh, sw = out.shape
        raw = out.reshape(n, head.num_anchors, 5 + meta.num_classes, sh, sw).astype(np.float64)
        for i in range(n):
            for a, (aw, ah) in enumerate(head.anchors):
                for gy in range(sh):
                    for gx in range(sw):
                        v = raw[i, a, :, gy, gx]
                        sig = [1 / (1 + math.exp(-x)) for x in v]
                        if meta.class_activation == "softmax":
                            e = [math.exp(x) for x in v[5:]]
                            probs = [x / sum(e) for x in e]
                        else:
                            probs = sig[5:]
                        c = int(np.argmax(probs))
                        score = sig[4] * probs[c]
                        if score > conf:
                            cx, cy = (sig[0] + gx) * head.stride, (sig[1] + gy) * head.stride
                            w, h = aw * math.exp(v[2]), ah * math.exp(v[3])
                            found.append((i, c, score, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return found


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
@pytest.mark.parametrize("conf", [0.001, 0.1, 0.3])
def test_matches_dense_reference(activation, conf):
    rng = np.random.default_rng(7)
    meta = ModelMetadata(
        arch="t",
        class_names=("a", "b", "c", "d"),
        input_size=(64, 64),
        heads=(
            HeadSpec("s32", 32, ((40.0, 30.0), (60.0, 50.0))),
            HeadSpec("s16", 16, ((10.0, 12.0), (20.0, 18.0))),
        ),
        class_activation=activation,
    )
    outs = [
        rng.normal(0, 2, (2, 18, 2, 2)).astype(np.float32),
        rng.normal(0, 2, (2, 18, 4, 4)).astype(np.float32),
    ]
    got = decode(outs, meta, conf)
    ref = _dense_reference(outs, meta, conf)
    for i in range(2):
        r = sorted((x for x in ref if x[0] == i), key=lambda x: -x[2])
        boxes, scores, cls = got[i]
        order = np.argsort(-scores, kind="stable")
        assert len(r) == len(scores)
        np.testing.assert_allclose(scores[order], [x[2] for x in r], rtol=1e-5)
        assert cls[order].tolist() == [x[1] for x in r]
        np.testing.assert_allclose(boxes[order], [x[3:] for x in r], rtol=1e-4, atol=1e-3)


def test_bad_arguments():
    meta = _meta()
    with pytest.raises(ValueError, match="head outputs"):
        decode([], meta, 0.25)
    with pytest.raises(ValueError, match="conf_threshold"):
        decode([_one_candidate()], meta, 1.5)
    with pytest.raises(ValueError, match="expected"):
        decode([np.zeros((1, 13, 2, 2), np.float32)], meta, 0.25)


def _yolo3(size=64):
    return ModelMetadata(
        arch="t",
        class_names=("a", "b", "c"),
        input_size=(size, size),
        heads=(HeadSpec("s32", 32, ((40.0, 30.0), (60.0, 50.0))), HeadSpec("s16", 16, ((10.0, 12.0),))),
    )


def test_nonfinite_outputs_are_dropped_and_counted():
    meta = _yolo3()
    s32 = np.full((1, 16, 2, 2), -20.0, np.float32)
    s16 = np.full((1, 8, 4, 4), -20.0, np.float32)
    v32 = s32.reshape(1, 2, 8, 2, 2)
    v32[0, :, 4] = 3.0  # all 8 anchor-cells of s32 pass the threshold...
    v32[0, :, 5] = 5.0
    v32[0, 0, 4, 0, 0] = np.nan  # ...but: NaN objectness (1)
    v32[0, 0, 4, 0, 1] = np.inf  # +inf objectness (2)
    v32[0, 0, 0, 1, 0] = np.nan  # a NaN box logit of a passing cell (3)
    v32[0, 1, 6, 0, 0] = np.inf  # an infinite class logit of a passing cell (4)
    s16[0, 4, 0, 0] = -np.inf  # -inf objectness of a cell that never passes (5)
    s16[0, 4, 1, 1] = np.nan  # NaN objectness (6)
    stats = DecodeStats()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ((boxes, scores, cls),) = decode([s32, s16], meta, 0.25, stats)
    assert stats.nonfinite == 6
    assert len(scores) == 8 - 4 and np.isfinite(boxes).all() and np.isfinite(scores).all()
    decode([s32, s16], meta, 0.25, stats)  # counts add up over calls
    assert stats.nonfinite == 12
    # the positional signature without stats is unchanged
    assert len(decode([s32, s16], meta, 0.25)[0][1]) == 4


def test_a_box_that_overflows_float32_is_dropped_and_counted():
    meta = ModelMetadata(
        arch="t", class_names=("a",), input_size=(32, 32), heads=(HeadSpec("s32", 32, ((1e38, 1e38),)),)
    )
    raw = np.zeros((1, 6, 1, 1), np.float32)
    raw[0, 4] = 5.0
    raw[0, 2] = 10.0  # 1e38 * e^10 is not a float32
    stats = DecodeStats()
    assert len(decode([raw], meta, 0.25, stats)[0][1]) == 0 and stats.nonfinite == 1


def test_decode_thresholds():
    assert decode_thresholds(0.0)[0] == -np.inf and decode_thresholds(1.0)[0] == np.inf
    logit, conf = decode_thresholds(0.25)
    assert logit.dtype == np.float32 and conf == np.float32(0.25)
    assert logit == np.float32(math.log(0.25 / 0.75) - 1e-3)
    with pytest.raises(ValueError, match="conf_threshold"):
        decode_thresholds(-0.1)


def test_candidate_math_is_float64_rounded_once():
    # the CUDA kernel computes score and box in double and rounds once; so does decode: exactly the
    # float64 formula rounded to float32 (not float32 arithmetic, which differs in the last bits)
    rng = np.random.default_rng(11)
    meta = _yolo3()
    outs = [
        rng.normal(0, 2, (1, 16, 2, 2)).astype(np.float32),
        rng.normal(0, 2, (1, 8, 4, 4)).astype(np.float32),
    ]
    ((boxes, scores, cls),) = decode(outs, meta, 0.05)
    ref = _dense_reference(outs, meta, 0.05)
    order = np.argsort(-scores, kind="stable")
    r = sorted(ref, key=lambda x: -x[2])
    np.testing.assert_array_equal(scores[order], np.float32([x[2] for x in r]))
    np.testing.assert_array_equal(boxes[order], np.float32([x[3:] for x in r]))
