"""nano-build's real code against TensorRT 8.5, 10.x and 11.x stand-ins generated from the recorded API
surfaces (testsupport.trt_surface / fake_trt_build): typing per release, the fp16 and Q/DQ derivations,
calibration all or nothing, the DLA profile and placement, refusals."""

from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import onnx
import pytest

from testsupport import fake_trt_build, tiny_onnx
from yolo_nano.calibration.cache import read_identity, sidecar_path
from yolo_nano.engines.builder import build_engine
from yolo_nano.engines.identity import read_record
from yolo_nano.engines.plan import BuildError, BuildRequest, prepare
from yolo_nano.engines.trt_versions import UnsupportedTensorRT

V85, V103, V1016, V114 = "8.5.3.1", "10.3.0", "10.16.1.11", "11.4.0.106"


_WORLDS = []  # the fake releases installed by build(), newest last (for builds that raise)


def build(monkeypatch, version, onnx_path, out, fail_copy_at=None, world=None, **kw):
    """Install the fake release, plan and build; returns (world, record, log lines)."""
    w = fake_trt_build.install(monkeypatch, version, fail_copy_at=fail_copy_at, **(world or {}))
    _WORLDS.append(w)
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = prepare(BuildRequest(onnx=onnx_path, output=str(out), **kw))
        record = build_engine(plan, log=lines.append)
    return w, record, lines


def outputs(folder):
    return sorted(p for p in os.listdir(folder) if not p.startswith("."))


@pytest.mark.parametrize("version", [V85, V103, V1016])
def test_weakly_typed_fp16_uses_the_builder_flag(monkeypatch, tmp_path, tiny_onnx_path, version):
    w, rec, _ = build(monkeypatch, version, tiny_onnx_path, tmp_path / "m.engine", precision="fp16")
    assert w.builds[-1]["flags"] == ["FP16"] and not w.builds[-1]["strong"]
    assert rec.typing == "weak" and rec.network_onnx == "as given" and rec.tensorrt_version == version
    assert fake_trt_build.read_engine((tmp_path / "m.engine").read_bytes())["precision"] == "fp16"
    assert read_record(tmp_path / "m.engine") == rec


@pytest.mark.parametrize("version, strongly", [(V114, False), (V103, True)])
def test_strongly_typed_fp16_builds_an_fp16_copy(monkeypatch, tmp_path, tiny_onnx_path, version, strongly):
    w, rec, lines = build(
        monkeypatch, version, tiny_onnx_path, tmp_path / "m.engine", precision="fp16", strongly_typed=strongly
    )
    b = w.builds[-1]
    assert b["strong"] and b["flags"] == [] and b["precision"] == "fp16"  # from the ONNX types, no flags
    assert rec.typing == "strong" and rec.network_onnx == "fp16"
    assert any("FP16 copy" in ln for ln in lines)
    assert outputs(tmp_path) == ["m.engine", "m.engine.json"]  # the copy was temporary


@pytest.mark.parametrize("name_nodes", [True, False])
def test_fp16_copy_keeps_float32_io_and_matches(tmp_path, tiny_onnx_path, name_nodes):
    import onnxruntime as ort

    from yolo_nano.engines.network_onnx import fp16_model_bytes

    if not name_nodes:  # unnamed nodes made the converter emit two Casts with one output name
        tiny_onnx_path = tiny_onnx.save_tiny_model(str(tmp_path / "unnamed.onnx"), name_nodes=False)
    half = onnx.load_from_string(fp16_model_bytes(tiny_onnx_path))
    onnx.checker.check_model(half)
    assert {i.type.tensor_type.elem_type for i in half.graph.input} == {onnx.TensorProto.FLOAT}
    assert {o.type.tensor_type.elem_type for o in half.graph.output} == {onnx.TensorProto.FLOAT}
    assert all(i.data_type == onnx.TensorProto.FLOAT16 for i in half.graph.initializer if i.dims)
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    ref = ort.InferenceSession(tiny_onnx_path, providers=["CPUExecutionProvider"]).run(None, {"images": x})
    got = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"images": x}
    )
    for a, b in zip(ref, got):
        assert b.dtype == np.float32 and np.abs(a - b).max() <= 2e-2 * max(1.0, np.abs(a).max())


@pytest.mark.parametrize("version", [V85, V103])
def test_implicit_int8_calibrates_then_reuses_the_cache(
    monkeypatch, tmp_path, tiny_onnx_path, calib_dir, version
):
    cache = tmp_path / "c.calib"
    w, rec, _ = build(monkeypatch, version, tiny_onnx_path, tmp_path / "a.engine", precision="int8",
                      calib_images=calib_dir, calib_cache=str(cache))  # fmt: skip
    assert w.builds[-1]["calibration"] == "calibrated" and w.builds[-1]["flags"] == ["FP16", "INT8"]
    ident = read_identity(cache)
    assert ident.num_images == 12 and ident.tensorrt_version == version and ident.kind == "tensorrt-cache"
    assert rec.quantization == "calibrated" and rec.calibration["cache_sha256"] == ident.cache_sha256
    before = cache.read_bytes()
    w, rec2, _ = build(monkeypatch, version, tiny_onnx_path, tmp_path / "b.engine", precision="int8",
                       calib_cache=str(cache))  # fmt: skip
    assert w.builds[-1]["calibration"] == "reused" and cache.read_bytes() == before
    assert rec2.calibration["cache_sha256"] == rec.calibration["cache_sha256"]


@pytest.mark.parametrize("version, strongly", [(V114, False), (V1016, True)])
def test_strong_int8_derives_a_qdq_model_from_the_images(monkeypatch, tmp_path, tiny_onnx_path, calib_dir,
                                                         version, strongly):  # fmt: skip
    w, rec, _ = build(monkeypatch, version, tiny_onnx_path, tmp_path / "m.engine", precision="int8",
                      calib_images=calib_dir, strongly_typed=strongly)  # fmt: skip
    qdq = tmp_path / "m.entropy.qdq.onnx"
    assert w.builds[-1]["qdq"] and w.builds[-1]["precision"] == "int8" and w.builds[-1]["flags"] == []
    ident = read_identity(qdq)
    assert ident.kind == "qdq-onnx" and ident.num_images == 12 and ident.tensorrt_version == "any"
    assert rec.quantization == "qdq" and rec.network_onnx == "qdq" and rec.calibration["kind"] == "qdq-onnx"
    mtime = os.path.getmtime(qdq)
    w, rec2, lines = build(monkeypatch, version, tiny_onnx_path, tmp_path / "n.engine", precision="int8",
                           calib_cache=str(qdq), strongly_typed=strongly)  # fmt: skip
    assert os.path.getmtime(qdq) == mtime and any("reusing the Q/DQ model" in ln for ln in lines)


def test_tensorrt_11_has_no_weak_path(monkeypatch, tmp_path, tiny_onnx_path):
    w = fake_trt_build.install(monkeypatch, V114)
    assert not hasattr(w.module.BuilderFlag, "FP16") and not hasattr(w.module, "IInt8EntropyCalibrator2")
    assert not hasattr(w.module.IBuilderConfig, "int8_calibrator")


def test_strongly_typed_on_85_is_refused(monkeypatch, tmp_path, tiny_onnx_path):
    with pytest.raises(BuildError, match="--strongly-typed needs TensorRT 10"):
        build(monkeypatch, V85, tiny_onnx_path, tmp_path / "m.engine", strongly_typed=True)
    assert outputs(tmp_path) == []


@pytest.mark.parametrize("version, words", [("8.4.3.1", "older than 8.5"), ("9.2.0", "9.x were early-access"),
                                            ("11.5.0", "newer than the newest 11.x")])  # fmt: skip
def test_unsupported_release_is_named(monkeypatch, tmp_path, tiny_onnx_path, version, words):
    w = fake_trt_build.install(monkeypatch, V103)
    w.module.__version__ = version
    plan = prepare(BuildRequest(onnx=tiny_onnx_path, output=str(tmp_path / "m.engine")))
    with pytest.raises(UnsupportedTensorRT) as e:
        build_engine(plan, log=lambda m: None)
    assert (
        words in str(e.value) and "supported: TensorRT 8.5" in str(e.value) and "pip install" in str(e.value)
    )


# ---- calibration is all or nothing


@pytest.mark.parametrize("version, cancelled", [(V85, False), (V103, True)])
def test_cuda_error_in_batch_3_leaves_nothing(
    monkeypatch, tmp_path, tiny_onnx_path, calib_dir, version, cancelled
):
    cache = tmp_path / "c.calib"
    with pytest.raises(BuildError) as e:
        build(monkeypatch, version, tiny_onnx_path, tmp_path / "m.engine", fail_copy_at=3, precision="int8",
              calib_images=calib_dir, calib_cache=str(cache))  # fmt: skip
    msg = str(e.value)
    assert "INT8 calibration failed after 2 batch(es): LogicError: cuMemcpyHtoD failed" in msg
    assert "nothing was written" in msg
    assert outputs(tmp_path) == []  # no cache, no sidecar, no engine, no record
    summary = _WORLDS[-1].builds[-1]
    assert summary["calibration_batches"] == 2
    # 10.x: the progress monitor cancelled the build at its first step; 8.5 cannot cancel
    assert summary["cancelled"] is cancelled and summary["steps_done"] == (0 if cancelled else 4)


def test_unreadable_image_stops_calibration(monkeypatch, tmp_path, tiny_onnx_path, calib_dir):
    images = tmp_path / "images"
    shutil.copytree(calib_dir, images)
    (images / "img_0005.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "out"
    with pytest.raises(BuildError, match="unreadable image.*img_0005.jpg"):
        build(monkeypatch, V85, tiny_onnx_path, out / "m.engine", precision="int8", calib_images=str(images))
    assert not out.exists() or outputs(out) == []


def test_unreadable_image_stops_the_qdq_derivation(monkeypatch, tmp_path, tiny_onnx_path, calib_dir):
    images = tmp_path / "images"
    shutil.copytree(calib_dir, images)
    (images / "img_0003.jpg").write_bytes(b"broken")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BuildError, match="read 11 of 12 images.*nothing was written"):
        build(monkeypatch, V114, tiny_onnx_path, out / "m.engine", precision="int8", calib_images=str(images))
    assert outputs(out) == []


def test_edited_cache_is_refused(monkeypatch, tmp_path, tiny_onnx_path, calib_dir):
    cache = tmp_path / "c.calib"
    build(monkeypatch, V85, tiny_onnx_path, tmp_path / "a.engine", precision="int8", calib_images=calib_dir,
          calib_cache=str(cache))  # fmt: skip
    text = cache.read_text().splitlines()
    name, _ = text[1].split(": ")
    cache.write_text("\n".join([text[0], f"{name}: 3f800000"] + text[2:]) + "\n")  # a plausible edit
    with pytest.raises(BuildError, match="changed after it was written.*edited or replaced.*--recalibrate"):
        prepare(BuildRequest(onnx=tiny_onnx_path, precision="int8", calib_cache=str(cache),
                             output=str(tmp_path / "b.engine")))  # fmt: skip


@pytest.mark.parametrize("value", ["1e400", "Infinity", '["x"]', '"8"', "true"])
def test_invalid_sidecar_is_stale_not_a_crash(tmp_path, tiny_onnx_path, value):
    cache = tmp_path / "c.calib"
    cache.write_text("TRT-8503-EntropyCalibration2\nimages: 3c010a14\n")
    doc = {
        "onnx_sha256": "a" * 64,
        "preprocess_sha256": "b" * 64,
        "algorithm": "entropy",
        "batch": 1,
        "tensorrt_version": "8.5.3.1",
        "cache_sha256": "c" * 64,
        "kind": "tensorrt-cache",
        "format_version": 2,
    }
    text = json.dumps(doc).replace('"batch": 1', f'"batch": {value}')
    with open(sidecar_path(cache), "w") as f:
        f.write(text)
    with pytest.raises(BuildError) as e:
        prepare(BuildRequest(onnx=tiny_onnx_path, precision="int8", calib_cache=str(cache),
                             output=str(tmp_path / "m.engine")))  # fmt: skip
    msg = str(e.value)
    assert "is stale" in msg and ("'batch' must be an integer" in msg or "not a JSON number" in msg), msg


# ---- DLA


@pytest.mark.parametrize("version", [V85, V103])
def test_dla_gets_a_static_profile_and_records_placement(monkeypatch, tmp_path, calib_dir, version):
    dyn = tiny_onnx.save_tiny_model(str(tmp_path / "dyn.onnx"), batch="dynamic")
    w, rec, lines = build(monkeypatch, version, dyn, tmp_path / "m.engine", precision="fp16", dla=0, batch=4)
    assert w.builds[-1]["profile"] == ((4, 3, 64, 64),) * 3
    assert rec.profile == [[4, 3, 64, 64]] * 3 and rec.dynamic_batch is False and rec.input_shape[0] == 4
    assert rec.placement["gpu"] == [] and len(rec.placement["dla"]) == 1
    assert rec.placement["source"] == "TensorRT build log"
    assert not any("fell back to the GPU" in ln for ln in lines)


def test_dla_fallback_is_warned_with_the_gpu_layers(monkeypatch, tmp_path):
    src = tiny_onnx.build_tiny_model()
    # a 2-D island like the old attention block: Flatten -> Unsqueeze x2 -> Mul (DLA cannot run 2-D)
    helper = onnx.helper
    g = src.graph
    relu = next(n for n in g.node if n.name == "c3_relu")
    out = relu.output[0]
    relu.output[0] = "c3_pre"
    g.node.extend([])
    extra = [
        helper.make_node("GlobalAveragePool", ["c3_pre"], ["gap"], name="fca_gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="fca_flatten"),
        helper.make_node("Unsqueeze", ["flat", "axes"], ["unsq"], name="fca_unsqueeze"),
        helper.make_node("Mul", ["c3_pre", "unsq"], [out], name="fca_mul"),
    ]
    g.initializer.append(onnx.numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"))
    idx = list(g.node).index(relu) + 1
    for k, node in enumerate(extra):
        g.node.insert(idx + k, node)
    path = str(tmp_path / "island.onnx")
    onnx.save(src, path)
    with pytest.raises(BuildError, match="failed to build"):
        build(monkeypatch, V85, path, tmp_path / "a.engine", precision="fp16", dla=0)
    w, rec, lines = build(
        monkeypatch, V85, path, tmp_path / "b.engine", precision="fp16", dla=0, gpu_fallback=True
    )
    assert rec.placement["gpu"] == ["fca_flatten", "fca_unsqueeze"] and len(rec.placement["dla"]) == 2
    warning = next(ln for ln in lines if "fell back to the GPU" in ln)
    assert (
        "2 layer(s)" in warning and "fca_flatten, fca_unsqueeze" in warning and "2 DLA loadable(s)" in warning
    )


def test_qdq_model_on_the_85_dla_is_refused_with_the_way_out(monkeypatch, tmp_path, qdq_onnx_path):
    with pytest.raises(BuildError) as e:
        build(
            monkeypatch, V85, qdq_onnx_path, tmp_path / "m.engine", precision="int8", dla=0, gpu_fallback=True
        )
    msg = str(e.value)
    assert "8.5.3.1's DLA has no explicit (Q/DQ) quantization" in msg and "--calib-images" in msg
    assert outputs(tmp_path) == []
    w, rec, _ = build(monkeypatch, V103, qdq_onnx_path, tmp_path / "m.engine", precision="int8", dla=0,
                      gpu_fallback=True)  # fmt: skip
    assert rec.quantization == "qdq" and rec.placement is not None


def test_timing_cache_is_read_and_updated(monkeypatch, tmp_path, tiny_onnx_path):
    timing = tmp_path / "t.cache"
    build(monkeypatch, V103, tiny_onnx_path, tmp_path / "m.engine", timing_cache=str(timing))
    first = timing.read_bytes()
    build(monkeypatch, V103, tiny_onnx_path, tmp_path / "n.engine", timing_cache=str(timing))
    assert timing.read_bytes().startswith(first) and len(timing.read_bytes()) > len(first)


def test_yolo_nano_runs_whole_on_the_dla(monkeypatch, tmp_path):
    """The export's 4-D attention block keeps the whole network in one DLA loadable (emulated DLA table)."""
    pytest.importorskip("torch", reason="exporting YOLO Nano needs PyTorch (the train extra)")
    from yolo_nano.model.export import export_onnx
    from yolo_nano.model.registry import build_model

    path = tmp_path / "nano.onnx"
    export_onnx(build_model("yolo-nano", 20, 64), path)
    w, rec, lines = build(monkeypatch, V85, str(path), tmp_path / "nano.engine", precision="fp16", dla=0)
    assert rec.placement["gpu"] == [] and len(rec.placement["dla"]) == 1
    assert not any("fell back" in ln for ln in lines)
