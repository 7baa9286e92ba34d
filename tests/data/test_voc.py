"""VOC reader: devkit layouts, box convention, and every kind of bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from yolo_nano.core.metadata import VOC_CLASSES
from yolo_nano.data.voc import VOCError, find_voc_roots, load_split, parse_annotation, read_image

XML = """<annotation><size><width>100</width><height>80</height><depth>3</depth></size>{objs}</annotation>"""
OBJ = "<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{e}</ymax></bndbox></object>"


def obj(n="dog", d=0, a=11, b=21, c=50, e=60):
    return OBJ.format(n=n, d=d, a=a, b=b, c=c, e=e)


def make_voc(root, anns, split="trainval", image=True):
    import cv2

    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for iid, xml in anns.items():
        (root / "Annotations" / f"{iid}.xml").write_text(xml)
        if image:
            cv2.imwrite(str(root / "JPEGImages" / f"{iid}.jpg"), np.full((80, 100, 3), 90, np.uint8))
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(anns) + "\n")
    return root


def test_parse_box_convention_and_difficult(tmp_path):
    p = tmp_path / "a.xml"
    p.write_text(XML.format(objs=obj() + obj("cat", 1, 1, 1, 100, 80)))
    w, h, boxes, labels, diff = parse_annotation(str(p), VOC_CLASSES)
    assert (w, h) == (100, 80)
    np.testing.assert_array_equal(boxes, [[10, 20, 50, 60], [0, 0, 100, 80]])
    assert labels.tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("cat")]
    assert diff.tolist() == [False, True]


def test_devkit_with_two_years(tmp_path):
    make_voc(tmp_path / "VOCdevkit" / "VOC2007", {"000001": XML.format(objs=obj())})
    make_voc(tmp_path / "VOCdevkit" / "VOC2012", {"2008_000001": XML.format(objs=obj("cat"))})
    s = load_split(str(tmp_path / "VOCdevkit"), "trainval")
    assert [r.image_id for r in s.records] == ["000001", "2008_000001"]
    assert len(s.roots) == 2 and s.class_names == VOC_CLASSES
    assert len(find_voc_roots(str(tmp_path / "VOCdevkit" / "VOC2007"))) == 1


def test_bad_annotations_are_counted_not_silent(tmp_path):
    anns = {
        "unknown": XML.format(objs=obj("unicorn") + obj()),
        "flipped": XML.format(objs=obj(a=50, c=11)),
        "outside": XML.format(objs=obj(a=200, c=300)),
        "clipped": XML.format(objs=obj(a=-5, c=150)),
        "nobox": XML.format(objs="<object><name>dog</name></object>"),
        "noobj": XML.format(objs=""),
        "empty": "",
        "broken": "<annotation><size>",
    }
    root = make_voc(tmp_path / "VOC", anns)
    s = load_split(str(root), "trainval")
    c = s.report.counts
    assert c["unknown_class"] == 1
    assert c["broken_box"] == 3  # flipped, outside, nobox
    assert c["clipped_box"] == 1
    assert c["bad_annotation"] == 2  # empty, broken
    assert c["no_objects"] >= 1
    ids = [r.image_id for r in s.records]
    assert "empty" not in ids and "broken" not in ids and "noobj" in ids
    clipped = next(r for r in s.records if r.image_id == "clipped")
    np.testing.assert_array_equal(clipped.boxes, [[0, 20, 100, 60]])
    assert "unicorn" in s.report.summary()
    with pytest.raises(VOCError, match="unknown class"):
        load_split(str(root), "trainval", strict=True)


def test_entity_expansion_is_refused(tmp_path):
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        "<annotation><object><name>&lol2;</name></object></annotation>"
    )
    root = make_voc(tmp_path / "VOC", {"bomb": bomb, "ok": XML.format(objs=obj())})
    s = load_split(str(root), "trainval")
    assert s.report.counts["bad_annotation"] == 1
    assert [r.image_id for r in s.records] == ["ok"]


def test_missing_folders_files_and_splits(tmp_path):
    with pytest.raises(VOCError, match="no such folder"):
        load_split(str(tmp_path / "nope"), "test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VOCError, match="not a VOC data set"):
        load_split(str(tmp_path / "empty"), "test")
    root = make_voc(tmp_path / "VOC", {"a": XML.format(objs=obj())}, split="train")
    with pytest.raises(VOCError, match="splits here: train"):
        load_split(str(root), "test")
    (root / "JPEGImages" / "a.jpg").unlink()
    with pytest.raises(VOCError, match="no usable images"):
        load_split(str(root), "train")


def test_undecodable_image(tmp_path):
    root = make_voc(tmp_path / "VOC", {"a": XML.format(objs=obj())})
    path = root / "JPEGImages" / "a.jpg"
    path.write_bytes(b"not a jpeg at all")
    with pytest.raises(VOCError, match="not a decodable image"):
        read_image(str(path))
    shutil.rmtree(root / "JPEGImages")
    with pytest.raises(VOCError):
        read_image(str(path))
