"""The CUDA kernels executed on the CPU emulation (the same .cu sources, g++ and kernels/cuda_emu.h),
launched by the GPU pipeline with the grid and block shapes it uses on a GPU, against the numpy reference:
letterbox within one grey level, decode + sort + NMS + scaling with the same kept boxes in the same order,
same classes, scores within 1e-5 and boxes within 1e-3 px."""

from __future__ import annotations

import math

import numpy as np
import pytest

from yolo_nano.core.metadata import VOC_CLASSES, ModelMetadata
from yolo_nano.core.postprocess import (
    DecodeStats,
    PostprocessConfig,
    decode,
    detections_from_heads,
    scale_boxes,
)
from yolo_nano.core.preprocess import LetterboxInfo, preprocess
from yolo_nano.runtime.gpu_pipeline import GpuPipeline
from yolo_nano.runtime.kernel_check import (
    FRAME_SHAPES,
    DeviceBuffersBackend,
    identity_infos,
    letterbox_levels,
    random_frames,
    random_heads,
    same_detections,
    special_heads,
    synthetic_metadata,
)
from yolo_nano.runtime.kernel_launch import LaunchError

pytest.importorskip("yolo_nano.runtime.kernel_emu")

META = synthetic_metadata()
UNLIMITED = 3 * 10647


@pytest.fixture(scope="module")
def rig(launcher):
    """A device-buffers backend (no network) and a pipeline over it, 6 images at most."""
    backend = DeviceBuffersBackend(META, launcher, max_batch=6)
    with GpuPipeline(backend, launcher=launcher) as pipe:
        yield backend, pipe
    backend.close()


def _check(got, want):
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        problem = same_detections(g, w)
        assert problem is None, f"image {i}: {problem}"


def _run(rig, heads, infos, cfg, meta=META):
    backend, pipe = rig
    backend.write_heads(heads)
    s_got, s_ref = DecodeStats(), DecodeStats()
    got = pipe.postprocess(len(infos), infos, cfg, s_got)
    want = detections_from_heads(heads, infos, meta, cfg, s_ref)
    _check(got, want)
    assert s_got.nonfinite == s_ref.nonfinite
    return got, s_got.nonfinite


# -- letterbox ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape", FRAME_SHAPES + ((416, 416), (200, 416), (832, 832)), ids=lambda s: f"{s[0]}x{s[1]}"
)
def test_letterbox_one_frame_within_one_grey_level(rig, shape):
    _, pipe = rig
    frame = random_frames([shape], np.random.default_rng(shape[0] * 7 + shape[1]))[0]
    got = pipe.preprocess([frame])
    want, (info,) = preprocess([frame], META)
    assert got.shape == want.shape == (1, 3, 416, 416)
    assert letterbox_levels(got, want, META) <= 1.0
    # padding is exact everywhere, and so is an image that needs no resizing
    left, top = info.pad
    inside = np.zeros((416, 416), bool)
    nh = round(shape[0] * info.scale) if shape[0] * info.scale >= 1 else 1
    nw = round(shape[1] * info.scale) if shape[1] * info.scale >= 1 else 1
    inside[top : top + min(nh, 416), left : left + min(nw, 416)] = True
    np.testing.assert_array_equal(got[0][:, ~inside], want[0][:, ~inside])
    if shape[0] <= 416 and shape[1] == 416:
        np.testing.assert_array_equal(got, want)


def test_letterbox_mixed_batch_in_one_launch(rig, launcher):
    _, pipe = rig
    shapes = [(1, 1), (1, 4000), (4000, 1), (480, 640), (1080, 1920), (333, 517)]
    frames = random_frames(shapes, np.random.default_rng(5))
    before = len(launcher.launches)
    got = pipe.preprocess(frames)
    launches = launcher.launches[before:]
    assert [(k, g[2], b) for k, g, b in launches] == [("letterbox", len(frames), (16, 16, 1))]
    want, _ = preprocess(frames, META)
    for i in range(len(frames)):
        assert letterbox_levels(got[i : i + 1], want[i : i + 1], META) <= 1.0, shapes[i]
    # a 1x1 frame is one colour everywhere inside its (full-size) box
    b, g, r = frames[0][0, 0]
    np.testing.assert_allclose(got[0][:, 0, 0], np.float32([r, g, b]) / np.float32(255), rtol=0, atol=0)


@pytest.mark.parametrize(
    "variant",
    [
        {"channel_order": "BGR"},
        {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
        {"pad_value": 0, "scale": 1.0},
    ],
    ids=["bgr", "mean-std", "pad0-scale1"],
)
def test_letterbox_follows_the_metadata(launcher, variant):
    d = META.to_dict()
    d.update(variant)
    meta = ModelMetadata.from_dict(d)
    backend = DeviceBuffersBackend(meta, launcher, max_batch=2)
    frames = random_frames([(300, 500), (640, 360)], np.random.default_rng(1))
    with GpuPipeline(backend, launcher=launcher) as pipe:
        got = pipe.preprocess(frames)
    backend.close()
    want, _ = preprocess(frames, meta)
    assert letterbox_levels(got, want, meta) <= 1.0
    np.testing.assert_array_equal(got[:, :, 0, 0], want[:, :, 0, 0])  # a padding pixel: exact


# -- decode and sort (NMS off: IoU > 1 never happens, so every candidate comes back, sorted) -------------


def _everything(conf):
    return PostprocessConfig(conf_threshold=conf, iou_threshold=1.0, max_detections=UNLIMITED)


@pytest.mark.parametrize("conf", [0.001, 0.25, 0.6])
def test_decode_and_sort_random_logits_batch(rig, conf):
    rng = np.random.default_rng(int(conf * 1000))
    heads = random_heads(META, 3, rng, obj_mean=-3.0, spread=2.5)
    got, _ = _run(rig, heads, identity_infos(META, 3), _everything(conf))
    counts = [len(d) for d in got]
    assert counts == [len(c[1]) for c in decode(heads, META, conf)]
    assert len(set(counts)) > 1 or counts[0] > 0  # images differ: per-image counters


def test_decode_worst_case_every_candidate_passes(rig):
    heads = special_heads(META, "all-pass", np.random.default_rng(2))
    (got,), _ = _run(rig, heads, identity_infos(META, 1), _everything(0.0))
    assert len(got) == 10647  # 13*13*3 + 26*26*3 + 52*52*3: compaction cannot overflow
    assert np.all(np.diff(got.scores) <= 0)


def test_decode_equal_scores_keep_candidate_order(rig):
    heads = special_heads(META, "equal-scores", np.random.default_rng(3))
    (got,), _ = _run(rig, heads, identity_infos(META, 1), _everything(0.25))
    assert len(got) == 10647 and len(set(got.scores.tolist())) == 1 and set(got.class_ids.tolist()) == {7}
    # equal scores: candidate order (head, anchor, cell), so the first box is head 0, anchor 0, cell 0
    first = scale_boxes(decode(heads, META, 0.25)[0][0][:1], identity_infos(META, 1)[0])[0]
    np.testing.assert_allclose(got.boxes[0], first, atol=1e-3)


def test_decode_nonfinite_are_dropped_and_counted(rig):
    heads = special_heads(META, "nonfinite", np.random.default_rng(4))
    (got,), nonfinite = _run(rig, heads, identity_infos(META, 1), _everything(0.25))
    assert nonfinite > 0 and len(got) > 0
    assert np.isfinite(got.boxes).all() and np.isfinite(got.scores).all()


def test_decode_no_candidates(rig):
    heads = special_heads(META, "none", np.random.default_rng(5))
    (got,), nonfinite = _run(rig, heads, identity_infos(META, 1), PostprocessConfig())
    assert len(got) == 0 and got.boxes.shape == (0, 4) and nonfinite == 0


def test_decode_softmax_classes(launcher):
    meta = synthetic_metadata(160, classes=("a", "b", "c", "d", "e"), activation="softmax")
    backend = DeviceBuffersBackend(meta, launcher, max_batch=2)
    heads = random_heads(meta, 2, np.random.default_rng(6), obj_mean=0.0, spread=3.0)
    with GpuPipeline(backend, launcher=launcher) as pipe:
        _run((backend, pipe), heads, identity_infos(meta, 2), _everything(0.05), meta)
        _run((backend, pipe), heads, identity_infos(meta, 2), PostprocessConfig(0.05), meta)
    backend.close()


def test_decode_class_filter(rig):
    heads = random_heads(META, 2, np.random.default_rng(7), obj_mean=-1.0)
    cfg = PostprocessConfig(0.1, 0.45, 100, False, np.array([3, 11], np.int64))
    got, _ = _run(rig, heads, identity_infos(META, 2), cfg)
    assert set(np.concatenate([d.class_ids for d in got]).tolist()) <= {3, 11}
    # and without the filter again (the mask is per call)
    _run(rig, heads, identity_infos(META, 2), PostprocessConfig(0.1))


# -- NMS and scaling ------------------------------------------------------------------------------------


INFOS = [
    LetterboxInfo(scale=0.65, pad=(0, 52), original_shape=(480, 640)),
    LetterboxInfo(scale=416 / 1920, pad=(0, 91), original_shape=(1080, 1920)),
    LetterboxInfo(scale=0.104, pad=(207, 0), original_shape=(4000, 1)),
    LetterboxInfo(scale=1.0, pad=(0, 0), original_shape=(416, 416)),
]


@pytest.mark.parametrize(
    "cfg",
    [
        PostprocessConfig(0.001, 0.45, 100),
        PostprocessConfig(0.001, 0.45, UNLIMITED),
        PostprocessConfig(0.01, 0.3, 1),
        PostprocessConfig(0.01, 0.7, 300),
        PostprocessConfig(0.001, 0.45, 100, class_agnostic=True),
        PostprocessConfig(0.05, 0.5, UNLIMITED, class_agnostic=True),
    ],
    ids=["capped", "uncapped", "max1", "iou0.7", "agnostic", "agnostic-uncapped"],
)
def test_nms_and_scaling_match_numpy(rig, cfg):
    heads = random_heads(META, 4, np.random.default_rng(8), obj_mean=-2.0, spread=2.0)
    got, _ = _run(rig, heads, INFOS, cfg)
    assert all(len(d) <= cfg.max_detections for d in got)
    for d, info in zip(got, INFOS):  # clipped to the original image
        h, w = info.original_shape
        assert np.all(d.boxes >= 0) and np.all(d.boxes[:, [0, 2]] <= w) and np.all(d.boxes[:, [1, 3]] <= h)


@pytest.mark.parametrize("kind", ["all-pass", "equal-scores", "nonfinite", "none"])
@pytest.mark.parametrize("agnostic", [False, True])
def test_nms_special_cases(rig, kind, agnostic):
    heads = special_heads(META, kind, np.random.default_rng(9))
    conf = 0.0 if kind == "all-pass" else 0.25
    _run(rig, heads, INFOS[:1], PostprocessConfig(conf, 0.45, 100, agnostic))


def _place(meta, entries):
    """Heads with only the given candidates: (head, anchor, gy, gx, obj logit, tw, class)."""
    heads = []
    for hd in meta.heads:
        shape = meta.head_shape(hd, 1)
        x = np.zeros(shape, np.float32)
        v = x.reshape(1, hd.num_anchors, 5 + meta.num_classes, shape[2], shape[3])
        v[:, :, 4] = -30.0
        v[:, :, 5:] = -10.0
        heads.append(x)
    for k, a, gy, gx, obj, tw, cls in entries:
        v = heads[k].reshape(1, 3, 5 + meta.num_classes, heads[k].shape[2], heads[k].shape[3])
        v[0, a, 4, gy, gx] = obj
        v[0, a, 2, gy, gx] = tw
        v[0, a, 5 + cls, gy, gx] = 8.0
    return heads


def test_nms_chain_across_chunk_boundaries(rig):
    # 40 far-apart strong boxes first, then a chain of 52 boxes 8 px apart on one row of the stride-8
    # head, scores falling along it: each overlaps its neighbour (IoU 0.67) but not the next but one
    # (0.43), so greedy keeps every other box, a decision that crosses the 64-candidate chunk boundary.
    entries = [(0, 0, gy, gx, 6.0, 0.0, 1) for gy in range(0, 13, 2) for gx in range(0, 13, 2)][:40]
    width = math.log(40.0 / 10.0)  # anchor 10 px wide -> 40 px
    entries += [(2, 0, 30, gx, 4.0 - gx * 0.05, width, 2) for gx in range(52)]
    heads = _place(META, entries)
    (got,), _ = _run(rig, heads, identity_infos(META, 1), PostprocessConfig(0.25, 0.45, UNLIMITED))
    chain = got.boxes[got.class_ids == 2]
    assert len(chain) == 26  # every other box of the chain
    (capped,), _ = _run(rig, heads, identity_infos(META, 1), PostprocessConfig(0.25, 0.45, 50))
    assert len(capped) == 50


def test_identical_boxes_suppress_all_but_the_first(rig):
    entries = [(1, a, 5, 5, 3.0, 0.0, 4) for a in range(3)] * 1
    entries += [(1, 0, 5, 6, 3.0, 0.0, 5)]  # other class, same score: kept, ties by candidate index
    heads = _place(META, entries)
    (got,), _ = _run(rig, heads, identity_infos(META, 1), PostprocessConfig(0.25, 0.45, 100))
    assert got.class_ids.tolist()[0] == 4


# -- the emulation itself -------------------------------------------------------------------------------


def test_kernels_run_with_the_runtime_launch_shapes(rig, launcher):
    backend, pipe = rig
    heads = random_heads(META, 2, np.random.default_rng(10))
    backend.write_heads(heads)
    before = len(launcher.launches)
    pipe.postprocess(2, identity_infos(META, 2), PostprocessConfig(0.01))
    shapes = [(k, g, b) for k, g, b in launcher.launches[before:]]
    assert shapes == [
        ("decode", ((10647 + 127) // 128, 2, 1), (128, 1, 1)),
        ("sort_candidates", (2, 1, 1), (512, 1, 1)),
        ("nms", (2, 1, 1), (64, 1, 1)),
    ]


def test_a_bad_launch_is_an_error_not_a_crash(launcher):
    with pytest.raises(LaunchError, match="invalid launch configuration"):
        launcher.launch("sort_candidates", (1, 1, 1), (2048, 1, 1), (0, 0, 0), 0)
    with pytest.raises(TypeError, match="takes 3 arguments"):
        launcher.launch("sort_candidates", (1, 1, 1), (512, 1, 1), (0, 0), 0)


def test_metadata_fixture_is_yolo_nano_at_416():
    assert META.class_names == VOC_CLASSES and [h.stride for h in META.heads] == [32, 16, 8]
