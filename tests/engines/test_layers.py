from __future__ import annotations

import json

from yolo_nano.engines.layers import datatype_of, layer_placement, layer_precisions, precision_counts

# Shaped like IEngineInspector.get_engine_information(LayerInformationFormat.JSON) with DETAILED verbosity.
DETAILED = {
    "Layers": [
        {
            "Name": "images to nvinfer1::DataType::kINT8 + Reformat",
            "LayerType": "Reformat",
            "Inputs": [
                {"Name": "images", "Dimensions": [1, 3, 416, 416], "Format/Datatype": "Row major linear FP32"}
            ],
            "Outputs": [
                {"Name": "images_q", "Format/Datatype": "Four wide channel vectorized row major Int8 format"}
            ],
        },
        {
            "Name": "/conv1/Conv + /act1/Relu",
            "LayerType": "CaskConvolution",
            "Inputs": [
                {"Name": "images_q", "Format/Datatype": "Four wide channel vectorized row major Int8 format"}
            ],
            "Outputs": [
                {"Name": "x1", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}
            ],
        },
        {
            "Name": "/fca/Sigmoid",
            "LayerType": "PointWiseV2",
            "Inputs": [{"Name": "x1", "Format/Datatype": "Channel major FP16 format where channel % 2 == 0"}],
            "Outputs": [
                {"Name": "x2", "Format/Datatype": "Channel major FP16 format where channel % 2 == 0"}
            ],
        },
        {
            "Name": "/head13/Conv",
            "LayerType": "CaskConvolution",
            "Inputs": [{"Name": "x2", "Format/Datatype": "Row major linear FP16 format"}],
            "Outputs": [{"Name": "head13", "Format/Datatype": "Row major linear FP32"}],
        },
    ],
    "Bindings": ["images", "head13"],
}


def test_detailed_inspector_output():
    rows = layer_precisions(json.dumps(DETAILED))
    assert [r[2] for r in rows] == ["int8", "int8", "fp16", "fp32"]
    assert rows[1] == ("/conv1/Conv + /act1/Relu", "CaskConvolution", "int8")
    assert precision_counts(rows) == {"int8": 2, "fp16": 1, "fp32": 1}


def test_names_only_verbosity():
    rows = layer_precisions({"Layers": ["conv1", "conv2"], "Bindings": []})
    assert rows == [("conv1", "?", "?"), ("conv2", "?", "?")]


def test_datatype_strings():
    assert datatype_of("Row major linear FP32") == "fp32"
    assert datatype_of("Channel major FP16 format where channel % 8 == 0") == "fp16"
    assert datatype_of("Row major linear Half") == "fp16"
    assert datatype_of("Thirty-two wide channel vectorized row major Int8 format") == "int8"
    assert datatype_of("Row major linear Int32") == "int32"
    assert datatype_of("something new") == "?"


def test_placement_of_a_dla_build():
    doc = {
        "Layers": [
            {
                "Name": "Reformatting CopyNode for Input Tensor 0 to {ForeignNode[c1...c3]}",
                "LayerType": "Reformat",
            },
            {"Name": "{ForeignNode[c1...c3]}", "LayerType": "DLA"},
            {"Name": "fca/Flatten", "LayerType": "Shuffle"},
            {"Name": "{ForeignNode[c4...head]}", "LayerType": "ForeignNode"},
        ]
    }
    got = layer_placement(json.dumps(doc))
    assert got["dla"] == ["{ForeignNode[c1...c3]}", "{ForeignNode[c4...head]}"]
    assert got["gpu"] == ["fca/Flatten"] and len(got["reformat"]) == 1
    assert layer_placement(doc, dla_build=False)["dla"] == []  # a GPU build's Myelin ForeignNodes are GPU
    assert layer_placement({"Layers": "junk"}) == {"dla": [], "gpu": [], "reformat": []}
