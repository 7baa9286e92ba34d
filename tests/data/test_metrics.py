"""VOC07 / VOC2010+ AP against hand-computed cases, and COCO mAP through faster-coco-eval."""

from __future__ import annotations

import json
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest

from yolo_nano.data.metrics import (
    ResultsFormatError,
    ap_from_pr,
    evaluate,
    format_table,
    read_coco_results,
    voc_evaluate,
)


def rec(iid, boxes, labels, difficult=None, w=100, h=100):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int64)
    diff = np.zeros(len(labels), bool) if difficult is None else np.asarray(difficult, bool)
    return SimpleNamespace(image_id=iid, boxes=boxes, labels=labels, difficult=diff, width=w, height=h)


def dets(boxes, scores, labels):
    return (
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(scores, np.float32),
        np.asarray(labels, np.int64),
    )


GT = [rec("a", [[10, 10, 50, 50]], [0]), rec("b", [[20, 20, 60, 60]], [0])]
# TP (a, 0.9), FP (b, 0.8: no overlap), TP (b, 0.7): rec .5 .5 1, prec 1 .5 .667
DETS = {
    "a": dets([[10, 10, 50, 50]], [0.9], [0]),
    "b": dets([[70, 70, 90, 90], [21, 21, 60, 60]], [0.8, 0.7], [0, 0]),
}


def test_hand_computed_voc07_and_voc12():
    r07 = voc_evaluate(GT, DETS, ["x"], "voc07")
    r12 = voc_evaluate(GT, DETS, ["x"], "voc12")
    assert r07.map == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert r12.map == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert r07.num_positives == {"x": 2}


def test_ap_from_pr_perfect_and_empty_tail():
    assert ap_from_pr(np.array([0.5, 1.0]), np.array([1.0, 1.0]), True) == pytest.approx(1.0)
    assert ap_from_pr(np.array([0.5, 1.0]), np.array([1.0, 1.0]), False) == pytest.approx(1.0)
    # recall never reaches 1: 11-point gets 0 for t > 0.5
    assert ap_from_pr(np.array([0.5]), np.array([1.0]), True) == pytest.approx(6 / 11)
    assert ap_from_pr(np.array([0.5]), np.array([1.0]), False) == pytest.approx(0.5)


def test_difficult_is_neither_positive_nor_false_positive():
    gt = [rec("a", [[0, 0, 40, 40], [50, 50, 90, 90]], [0, 0], difficult=[False, True])]
    d = {"a": dets([[50, 50, 90, 90], [0, 0, 40, 40]], [0.95, 0.9], [0, 0])}
    r = voc_evaluate(gt, d, ["x"], "voc12")
    assert r.num_positives["x"] == 1
    assert r.map == pytest.approx(1.0)
    # the same boxes without the difficult flag: two positives, both found
    gt2 = [rec("a", [[0, 0, 40, 40], [50, 50, 90, 90]], [0, 0])]
    assert voc_evaluate(gt2, d, ["x"], "voc12").num_positives["x"] == 2
    # an only-difficult ground truth leaves the class out of the mean
    gt3 = [rec("a", [[0, 0, 40, 40]], [0], difficult=[True]), rec("b", [[0, 0, 10, 10]], [1])]
    r3 = voc_evaluate(gt3, {"b": dets([[0, 0, 10, 10]], [0.5], [1])}, ["x", "y"], "voc07")
    assert math.isnan(r3.per_class["x"]) and r3.map == pytest.approx(1.0)
    assert r3.to_json_dict()["per_class"]["x"] is None


def test_duplicate_is_false_positive_and_threshold_is_strict():
    gt = [rec("a", [[0, 0, 10, 10]], [0])]
    dup = {"a": dets([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], [0, 0])}
    r = voc_evaluate(gt, dup, ["x"], "voc12")
    assert r.map == pytest.approx(1.0)  # the FP comes after recall 1: envelope unchanged
    # FP first, then the TP: precision at recall 1 is 0.5
    first_fp = {"a": dets([[0, 0, 10, 20], [0, 0, 10, 10]], [0.9, 0.8], [0, 0])}  # IoU exactly 0.5: FP
    assert voc_evaluate(gt, first_fp, ["x"], "voc12").map == pytest.approx(0.5)


def test_wrong_class_and_missing_images():
    r = voc_evaluate(GT, {"a": dets([[10, 10, 50, 50]], [0.9], [1])}, ["x", "y"], "voc07")
    assert r.per_class["x"] == 0.0 and math.isnan(r.per_class["y"])
    with pytest.raises(ValueError, match="not in the ground truth"):
        voc_evaluate(GT, {"zzz": dets([[0, 0, 1, 1]], [0.5], [0])}, ["x"])
    with pytest.raises(ValueError, match="class id out of range"):
        voc_evaluate(GT, {"a": dets([[0, 0, 1, 1]], [0.5], [3])}, ["x"])
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(GT, DETS, ["x"], "voc99")
    assert "mAP@0.5" in format_table(voc_evaluate(GT, DETS, ["x"]))


def test_coco_metric_with_faster_coco_eval():
    pytest.importorskip("faster_coco_eval", reason="faster-coco-eval (dev extra) is not installed")
    perfect = {g.image_id: dets(g.boxes, [0.9] * len(g.labels), g.labels) for g in GT}
    r = evaluate(GT, perfect, ["x"], "coco")
    assert r.map == pytest.approx(1.0)
    assert r.extra["ap50"] == pytest.approx(1.0)
    # a box shifted to IoU ~0.68 counts at thresholds .5-.65 only: 4 of 10 -> mAP about 0.4 for that image
    shifted = dict(perfect)
    shifted["b"] = dets([[26, 20, 66, 60]], [0.9], [0])  # IoU = 34*40 / (2*1600 - 1360) = 0.739
    r2 = evaluate(GT, shifted, ["x"], "coco")
    assert r2.extra["ap50"] == pytest.approx(1.0)
    assert 0.5 < r2.map < 0.95
    none = evaluate(GT, {}, ["x"], "coco")
    assert none.map == 0.0


# ------------------------------------------------------------------------ COCO results files (nano-eval)
def _det(**over):
    d = {"image_id": "a", "category_id": 0, "bbox": [10, 10, 40, 40], "score": 0.9}
    d.update(over)
    return d


def test_coco_results_roundtrip_into_the_metric(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([_det(), _det(image_id="b", bbox=[20.0, 20.0, 40.0, 40.0], score=1)]))
    got = read_coco_results(str(path), ["dog"], ["a", "b"])
    np.testing.assert_array_equal(got["a"][0], [[10, 10, 50, 50]])
    assert got["b"][1].dtype == np.float64 and got["b"][2].tolist() == [0]
    assert voc_evaluate(GT, got, ["dog"]).map == pytest.approx(1.0)


BAD_RESULTS = [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe[]", "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"a": 1}', "JSON list"),
    (b"[1]", "needs image_id"),
    (json.dumps([_det(image_id=None)]).encode(), "image_id must be"),
    (json.dumps([_det(image_id=["a"])]).encode(), "image_id must be"),
    (json.dumps([_det(image_id="zz")]).encode(), "not in the evaluated split"),
    (json.dumps([_det(category_id=True)]).encode(), "category_id True"),
    (json.dumps([_det(category_id=1.0)]).encode(), "category_id 1.0"),
    (json.dumps([_det(category_id=-1)]).encode(), "category_id -1"),
    (b'[{"image_id": "a", "category_id": 0, "bbox": [NaN, 0, 1, 1], "score": 1}]', "bbox"),
    (b'[{"image_id": "a", "category_id": 0, "bbox": [0, 0, Infinity, 1], "score": 1}]', "bbox"),
    (b'[{"image_id": "a", "category_id": 0, "bbox": [0, 0, 1e400, 1], "score": 1}]', "bbox"),
    (
        ('[{"image_id": "a", "category_id": 0, "bbox": [0, 0, 1' + "0" * 400 + ', 1], "score": 1}]').encode(),
        "bbox",
    ),
    (json.dumps([_det(bbox=[0, 0, 3e38, 3e38])]).encode(), "bbox"),  # x + w: inf in float32
    (json.dumps([_det(bbox=[0, 0, -1, 1])]).encode(), "w, h >= 0"),
    (json.dumps([_det(bbox=[0, 0, 1])]).encode(), "bbox"),
    (json.dumps([_det(bbox=[True, 0, 1, 1])]).encode(), "bbox"),
    (json.dumps([_det(bbox="0 0 1 1")]).encode(), "bbox"),
    (json.dumps([_det(bbox={"x": 0})]).encode(), "bbox"),
    (b'[{"image_id": "a", "category_id": 0, "bbox": [0, 0, 1, 1], "score": NaN}]', "score"),
    (
        ('[{"image_id": "a", "category_id": 0, "bbox": [0, 0, 1, 1], "score": 1' + "0" * 400 + "}]").encode(),
        "score",
    ),
    (json.dumps([_det(score="0.9")]).encode(), "score"),
    (json.dumps([_det(score=None)]).encode(), "score"),
]


@pytest.mark.parametrize("content, message", BAD_RESULTS, ids=range(len(BAD_RESULTS)))
def test_malformed_coco_results_are_one_named_error(tmp_path, content, message):
    path = tmp_path / "r.json"
    path.write_bytes(content)
    with pytest.raises(ResultsFormatError, match=message):
        read_coco_results(str(path), ["dog"], ["a", "b"])


def test_coco_results_path_that_is_not_a_file(tmp_path):
    with pytest.raises(ResultsFormatError, match="cannot read"):
        read_coco_results(str(tmp_path / "missing.json"), ["dog"], ["a"])
    with pytest.raises(ResultsFormatError, match="not a regular file"):
        read_coco_results(str(tmp_path), ["dog"], ["a"])
    fifo = tmp_path / "r.json.fifo"
    os.mkfifo(fifo)  # would block open() forever
    with pytest.raises(ResultsFormatError, match="not a regular file"):
        read_coco_results(str(fifo), ["dog"], ["a"])
