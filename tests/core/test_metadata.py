"""Metadata that lies is refused when the model is opened, with one error naming the field (issue 11)."""

from __future__ import annotations

import copy
import json

import pytest

from yolo_nano.core.metadata import HeadSpec, MetadataError, ModelMetadata


def _good() -> dict:
    meta = ModelMetadata(
        arch="yolo-nano",
        class_names=("a", "b"),
        input_size=(64, 64),
        heads=(
            HeadSpec("head_s32", 32, ((10.0, 13.0), (16.0, 30.0))),
            HeadSpec("head_s16", 16, ((4.0, 5.0),)),
        ),
        batch="dynamic",
    )
    return meta.to_dict()


def test_round_trip():
    d = _good()
    assert ModelMetadata.from_dict(d).to_dict() == d
    assert ModelMetadata.from_json(json.dumps(d)).to_dict() == d


LIES = [
    ("mean", [0.0, 0.0], "mean"),
    ("mean", [0.0, float("nan"), 0.0], "mean[1]"),
    ("std", [1.0, 0.0, 1.0], "std"),
    ("std", "abc", "std"),
    ("pad_value", 300, "pad_value"),
    ("pad_value", 1.5, "pad_value"),
    ("scale", float("nan"), "scale"),
    ("scale", 0.0, "scale"),
    ("scale", "0.1", "scale"),
    ("layout", ["NCHW"], "layout"),
    ("layout", "NHWC", "layout"),
    ("batch", "4", "batch"),
    ("batch", 1e400, "batch"),
    ("batch", 0, "batch"),
    ("batch", True, "batch"),
    ("class_names", "person", "class_names"),
    ("class_names", [], "class names"),
    ("class_names", ["a", 3], "class_names[1]"),
    ("input_size", [64], "input_size"),
    ("input_size", [64.5, 64], "input_size[0]"),
    ("input_size", [0, 64], "input_size"),
    ("channel_order", "GBR", "channel_order"),
    ("arch", None, "arch"),
    ("extra", [1], "extra"),
    ("format_version", "1", "format_version"),
]


@pytest.mark.parametrize("field,value,named", LIES)
def test_lies_are_refused_naming_the_field(field, value, named):
    d = _good()
    d[field] = value
    with pytest.raises(MetadataError) as e:
        ModelMetadata.from_dict(d)
    assert named in str(e.value)


@pytest.mark.parametrize(
    "mutate,named",
    [
        (lambda d: d["heads"][0]["anchors"].__setitem__(0, [float("nan"), 1.0]), "anchors[0]"),
        (lambda d: d["heads"][0]["anchors"].__setitem__(0, [1e308, 1e308]), "anchor"),
        (lambda d: d["heads"][0]["anchors"].__setitem__(0, [-3.0, 4.0]), "anchor"),
        (lambda d: d["heads"][1].__setitem__("name", "head_s32"), "twice"),
        (lambda d: d["heads"][1].__setitem__("stride", 24), "stride"),
        (lambda d: d["heads"][1].__setitem__("stride", "16"), "stride"),
        (lambda d: d["heads"].__setitem__(0, "head"), "heads[0]"),
        (lambda d: d.__setitem__("heads", {"a": 1}), "heads"),
        (lambda d: d["heads"][0].__setitem__("anchors", []), "anchors"),
        (lambda d: d.__delitem__("heads"), "heads"),
    ],
)
def test_lying_heads_are_refused(mutate, named):
    d = copy.deepcopy(_good())
    mutate(d)
    with pytest.raises(MetadataError) as e:
        ModelMetadata.from_dict(d)
    assert named in str(e.value)


def test_deeply_nested_json_is_a_metadata_error():
    text = "[" * 100000 + "]" * 100000
    with pytest.raises(MetadataError):
        ModelMetadata.from_json(text)


def test_non_object_json_is_refused():
    with pytest.raises(MetadataError):
        ModelMetadata.from_json("[1, 2]")
