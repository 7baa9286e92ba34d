"""Fuzzing the data readers of untrusted files: VOC annotation XML and COCO results JSON (nano-eval
``--detections``). Property: a valid result or the module's named error, never another exception,
never a hang (testsupport.fuzz); plus the concrete bad cases of issue 11 as explicit examples."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from testsupport.fuzz import fuzz, mutated_bytes, mutated_json, no_hang, tried
from yolo_nano.core.metadata import VOC_CLASSES
from yolo_nano.data.metrics import ResultsFormatError, read_coco_results, voc_evaluate
from yolo_nano.data.voc import VOCError, VOCRecord, VOCReport, parse_annotation

_DIR = tempfile.mkdtemp(prefix="fuzz-voc-")  # one file rewritten per example (tmp_path is per test)

VOC_XML = """<?xml version="1.0" encoding="utf-8"?>
<annotation>
  <folder>VOC2007</folder><filename>000001.jpg</filename>
  <size><width>353</width><height>500</height><depth>3</depth></size>
  <object><name>dog</name><pose>Left</pose><truncated>1</truncated><difficult>0</difficult>
    <bndbox><xmin>48</xmin><ymin>240</ymin><xmax>195</xmax><ymax>371</ymax></bndbox></object>
  <object><name>person</name><difficult>1</difficult>
    <bndbox><xmin>8</xmin><ymin>12</ymin><xmax>352</xmax><ymax>498</ymax></bndbox></object>
</annotation>
"""
SEEDS = [VOC_XML.encode(), VOC_XML.replace("<size>", "<sizex>").replace("</size>", "</sizex>").encode()]
# issue 11 item 12 and its relatives: each must be a counted broken box (or a skipped file), never data
VOC_CORPUS = [
    VOC_XML.replace("<xmin>48</xmin>", "<xmin>nan</xmin>"),
    VOC_XML.replace("<ymax>371</ymax>", "<ymax>inf</ymax>"),
    VOC_XML.replace("<xmax>195</xmax>", "<xmax>1e999</xmax>"),
    VOC_XML.replace("<xmax>195</xmax>", "<xmax>1e300</xmax>").replace("<size>", "<nosize>"),
    VOC_XML.replace("<width>353</width>", "<width>inf</width>"),
    VOC_XML.replace("<width>353</width>", "<width>nan</width>"),
    VOC_XML.replace("<height>500</height>", "<height>-500</height>"),
    VOC_XML.replace(
        "<xmin>48</xmin>", "<xmin>\u0664\u0668</xmin>"
    ),  # Arabic-Indic digits: float() takes them
    *(
        VOC_XML.replace('"utf-8"', f'"{c}"')
        for c in ("no-such-codec", "rot13", "utf-32", "idna", "undefined")
    ),
    '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><annotation>&e;</annotation>',
    "<annotation>" + "<object>" * 5000 + "</object>" * 5000 + "</annotation>",
    "\ufeff" + VOC_XML,
    "",
]


def _check_parsed(parsed, report):  # noqa: ANN001
    if parsed is None:
        assert report.counts["bad_annotation"] + report.counts["missing_file"] == 1
        return
    width, height, boxes, labels, difficult = parsed
    assert isinstance(width, int) and isinstance(height, int) and width >= 0 and height >= 0
    assert boxes.dtype == np.float32 and boxes.shape == (len(labels), 4) and len(difficult) == len(labels)
    assert np.isfinite(boxes).all(), "a NaN/inf coordinate entered the ground truth"
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    if width and height:
        assert (boxes >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert ((labels >= 0) & (labels < len(VOC_CLASSES))).all()


@fuzz(400)
@given(data=mutated_bytes(SEEDS) | st.binary(max_size=200))
@example(data=VOC_XML.encode())
def test_fuzz_voc_xml(data):
    """parse_annotation never raises when counting; strict mode raises VOCError only."""
    for case in VOC_CORPUS if data == VOC_XML.encode() else [data]:
        tried("VOC XML")
        path = os.path.join(_DIR, "a.xml")
        with open(path, "wb") as f:
            f.write(case.encode("utf-8") if isinstance(case, str) else case)
        report = VOCReport()
        with no_hang():
            parsed = parse_annotation(path, VOC_CLASSES, report)
        _check_parsed(parsed, report)
        with no_hang():
            try:
                strict = parse_annotation(path, VOC_CLASSES, strict=True)
            except VOCError:
                continue
        assert report.num_warnings == 0 or parsed is not None and strict is not None


# ------------------------------------------------------------------------------------ COCO results
IMAGE_IDS = ["000001", "000002"]
CLASSES = ["dog", "cat"]
GOOD = [
    {"image_id": "000001", "category_id": 0, "bbox": [10.5, 20, 30, 40], "score": 0.9},
    {"image_id": "000002", "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.1},
]
GROUND_TRUTH = [
    VOCRecord(iid, "", 100, 100, np.array([[10, 20, 40, 60]], np.float32), np.array([k]), np.array([False]))
    for k, iid in enumerate(IMAGE_IDS)
]
COCO_CORPUS = [
    "[" * 100_000 + "]" * 100_000,
    '[{"image_id": "000001", "category_id": 0, "bbox": [0, 0, 1e400, 1], "score": 1}]',
    '[{"image_id": "000001", "category_id": 0, "bbox": [0, 0, 1, 1], "score": NaN}]',
    '[{"image_id": "000001", "category_id": 0, "bbox": [0, 0, 1' + "0" * 400 + ', 1], "score": 1}]',
    '[{"image_id": "000001", "category_id": 0, "bbox": [0, 0, 1' + "0" * 5000 + ', 1], "score": 1}]',
    json.dumps([dict(GOOD[0], bbox=[0, 0, 3e38, 3e38])]),
    json.dumps([dict(GOOD[0], category_id=True)]),
    json.dumps([dict(GOOD[0], image_id={"a": 1})]),
    "\xff\xfe[]",
]


@fuzz(400)
@given(text=mutated_json([GOOD, GOOD[:1], []]))
@example(text=json.dumps(GOOD))
def test_fuzz_coco_results(text):
    """read_coco_results: detections with finite boxes that score, or ResultsFormatError."""
    for case in COCO_CORPUS if text == json.dumps(GOOD) else [text]:
        tried("COCO results JSON")
        path = os.path.join(_DIR, "results.json")
        with open(path, "wb") as f:
            f.write(case.encode("utf-8", "surrogateescape") if case != "\xff\xfe[]" else b"\xff\xfe[]")
        try:
            with no_hang():
                dets = read_coco_results(path, CLASSES, IMAGE_IDS)
        except ResultsFormatError as e:
            assert "\n" not in str(e).strip() or "JSON" in str(e)
            continue
        for iid, (boxes, scores, labels) in dets.items():
            assert iid in IMAGE_IDS and np.isfinite(boxes).all() and np.isfinite(scores).all()
            assert ((labels >= 0) & (labels < len(CLASSES))).all()
        result = voc_evaluate(GROUND_TRUTH, dets, CLASSES)
        assert 0.0 <= result.map <= 1.0


@pytest.mark.parametrize("case", COCO_CORPUS[:6])
def test_coco_corpus_cases_are_refused(case, tmp_path):
    """Issue 11's overflow/NaN/nesting cases are errors, not scores."""
    path = tmp_path / "r.json"
    path.write_text(case)
    with pytest.raises(ResultsFormatError):
        read_coco_results(str(path), CLASSES, IMAGE_IDS)
