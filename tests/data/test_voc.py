"""VOC reader: devkit layouts, box convention, and every kind of bad input."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from testsupport.images import exif_jpeg, gradient
from yolo_nano.core.images import ImageReadError, ImageTooLargeError, read_image
from yolo_nano.core.metadata import VOC_CLASSES
from yolo_nano.data.voc import VOCError, VOCReport, find_voc_roots, load_split, parse_annotation

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
    """VOC images go through the one image reader: named errors with the path, never cv2.error."""
    root = make_voc(tmp_path / "VOC", {"a": XML.format(objs=obj())})
    path = root / "JPEGImages" / "a.jpg"
    path.write_bytes(b"not a jpeg at all")
    with pytest.raises(ImageReadError, match="a.jpg: cannot read image"):
        read_image(str(path))
    path.write_bytes(b"\xff\xd8\xff\xc0\x00\x11\x08\xea\x60\xea\x60\x03" + b"\x00" * 9)  # SOF0: 60000x60000
    with pytest.raises(ImageTooLargeError, match="60000x60000"):
        read_image(str(path))
    shutil.rmtree(root / "JPEGImages")
    with pytest.raises(ImageReadError, match="No such file"):
        read_image(str(path))


def test_exif_rotated_jpeg_in_a_voc_set_reads_upright(tmp_path):
    """The same photo gives the same pixels to nano-eval/nano-train (VOC) as to nano-detect."""
    stored = gradient((20, 40))
    root = make_voc(tmp_path / "VOC", {"a": XML.format(objs=obj())})
    (root / "JPEGImages" / "a.jpg").write_bytes(exif_jpeg(stored, 6))
    (rec,) = load_split(str(root), "trainval").records
    image = read_image(rec.image_path)
    assert image.shape == (40, 20, 3)
    raw = cv2.imdecode(
        np.fromfile(rec.image_path, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    )
    assert np.array_equal(image, np.rot90(raw, -1))


@pytest.mark.parametrize("bad", ["nan", "NaN", "inf", "-inf", "1e999", "1e300", "ten", ""])
@pytest.mark.parametrize("tag", ["xmin", "ymin", "xmax", "ymax"])
def test_non_finite_coordinate_is_a_broken_box(tmp_path, tag, bad):
    """Issue 11 item 12: float() accepts "nan" and "1e999"; such a box must be counted, not kept."""
    coords = {"a": 11, "b": 21, "c": 50, "e": 60}
    coords[{"xmin": "a", "ymin": "b", "xmax": "c", "ymax": "e"}[tag]] = bad
    p = tmp_path / "a.xml"
    p.write_text(XML.format(objs=obj(**coords) + obj("cat")))
    report = VOCReport()
    w, h, boxes, labels, _ = parse_annotation(str(p), VOC_CLASSES, report)
    assert report.counts["broken_box"] == 1
    assert f"<{tag}>" in report.summary()
    assert np.isfinite(boxes).all() and labels.tolist() == [VOC_CLASSES.index("cat")]
    with pytest.raises(VOCError, match=f"<{tag}>"):
        parse_annotation(str(p), VOC_CLASSES, strict=True)


@pytest.mark.parametrize("side", ["nan", "inf", "1e999", "-5", "0", "huge"])
def test_unusable_image_size_means_no_clipping(tmp_path, side):
    """A corrupt <size> (inf made int() raise OverflowError) is treated as absent: boxes kept unclipped."""
    p = tmp_path / "a.xml"
    p.write_text(XML.replace("<width>100</width>", f"<width>{side}</width>").format(objs=obj(c=150)))
    w, h, boxes, _, _ = parse_annotation(str(p), VOC_CLASSES)
    assert (w, h) == (0, 0)
    np.testing.assert_array_equal(boxes, [[10, 20, 150, 60]])


def test_nan_box_never_reaches_training_or_eval(tmp_path):
    """The split that nano-train and nano-eval load (load_split) has no NaN box and says why."""
    anns = {"nan": XML.format(objs=obj(a="nan")), "ok": XML.format(objs=obj())}
    root = make_voc(tmp_path / "VOC", anns)
    s = load_split(str(root), "trainval")
    assert s.report.counts["broken_box"] == 1 and "<xmin> is 'nan'" in s.report.summary()
    assert all(np.isfinite(r.boxes).all() for r in s.records)
    assert [len(r.boxes) for r in s.records] == [0, 1]  # the image stays, as a negative


def test_split_file_that_is_not_text(tmp_path):
    root = make_voc(tmp_path / "VOC", {"a": XML.format(objs=obj())})
    (root / "ImageSets" / "Main" / "trainval.txt").write_bytes(b"\xff\xfe\x00a\n")
    with pytest.raises(VOCError, match="cannot read split file"):
        load_split(str(root), "trainval")


@pytest.mark.torch
def test_nano_train_data_loader_drops_the_nan_box(tmp_path):
    """What nano-train trains on (load_training_data) never holds the NaN box; the valid box beside it stays."""
    pytest.importorskip("torch")
    from yolo_nano.model.train_data import load_training_data

    anns = {"nan": XML.format(objs=obj(e="nan") + obj("cat")), "ok": XML.format(objs=obj())}
    root = make_voc(tmp_path / "VOC", anns)
    data = load_training_data(str(root), "trainval", None, "trainval", None, check=True, verbose=False)
    assert [r.boxes.tolist() for r in data.records] == [[[10, 20, 50, 60]], [[10, 20, 50, 60]]]
    assert all(np.isfinite(r.boxes).all() for r in data.records + data.val_set.records)
