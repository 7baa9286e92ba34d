from __future__ import annotations

import os
import shlex

import pytest

from testsupport import tiny_onnx
from yolo_nano.calibration.cache import CacheIdentity, preprocess_hash, write_identity
from yolo_nano.core.fileio import sha256_file
from yolo_nano.engines.device import (
    DeviceCapabilities,
    fast_precisions_for,
    jetson_release,
    parse_nv_tegra_release,
)
from yolo_nano.engines.plan import (
    BuildError,
    BuildRequest,
    check_capabilities,
    check_network_io,
    default_output,
    finalize,
    prepare,
)
from yolo_nano.engines.trt_versions import check_version

XAVIER = DeviceCapabilities(
    "8.5.2.2", "Xavier", "7.2", fast_fp16=True, fast_int8=True, num_dla_cores=2, integrated=True
)
NANO = DeviceCapabilities("8.2.1", "NVIDIA Tegra X1", "5.3", fast_fp16=True, fast_int8=False, num_dla_cores=0)
CACHE_TEXT = "TRT-8502-EntropyCalibration2\nimages: 3c010a14\n"


def req(onnx, **kw):
    return BuildRequest(onnx=onnx, **kw)


def test_fp16_defaults(tiny_onnx_path):
    plan = prepare(req(tiny_onnx_path))
    assert plan.precision == "fp16" and plan.int8_mode is None and plan.batch == 1 and not plan.dynamic_batch
    assert plan.output == os.path.join(os.path.dirname(tiny_onnx_path), "tiny-fp16-b1.engine")
    assert plan.input_shape == (1, 3, 64, 64) and plan.profile is None
    assert plan.onnx_sha256 == sha256_file(tiny_onnx_path)
    args = shlex.split(plan.command())
    assert args[:4] == ["nano-build", tiny_onnx_path, "--precision", "fp16"] and args[-2:] == [
        "-o",
        plan.output,
    ]


def test_default_output_names():
    assert default_output("m/yolo.onnx", "int8", 4, dla=1) == os.path.join("m", "yolo-int8-dla1-b4.engine")
    assert default_output("yolo.int8.onnx", "int8", 1) == "yolo-int8-b1.engine"


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(precision="int4"), "--precision must be one of"),
        (dict(precision="fp16", calib_images="x"), "--calib-images only applies to --precision int8"),
        (dict(precision="fp32", calib_cache="x"), "--calib-cache only applies"),
        (dict(precision="fp16", recalibrate=True), "--recalibrate only applies"),
        (dict(precision="int8", calib_algo="kl"), "--calib-algo must be one of"),
        (dict(precision="int8", recalibrate=True), "--recalibrate needs --calib-images"),
        (dict(dla=-1), "--dla must be"),
        (dict(precision="fp32", dla=0), "DLA runs only FP16 and INT8"),
        (dict(gpu_fallback=True), "--gpu-fallback only applies with --dla"),
        (dict(workspace_mb=0), "--workspace must be"),
        (dict(batch=0), "--batch must be >= 1"),
        (dict(output="model.onnx"), "-o must end with .engine"),
        (dict(batch=4), "fixed batch of 1; pass --batch 1"),
    ],
)
def test_argument_errors(tiny_onnx_path, kw, words):
    with pytest.raises(BuildError, match=words.replace("(", r"\(").replace(".", r"\.").replace("-", r"\-")):
        prepare(req(tiny_onnx_path, **kw))


def test_onnx_problems(tmp_path):
    with pytest.raises(BuildError, match="ONNX model not found"):
        prepare(req(str(tmp_path / "none.onnx")))
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(BuildError, match="not a readable ONNX file"):
        prepare(req(str(tmp_path / "junk.onnx")))
    foreign = tiny_onnx.save_tiny_model(str(tmp_path / "foreign.onnx"), with_metadata=False)
    with pytest.raises(BuildError, match="no 'yolo_nano' metadata.*nano-export"):
        prepare(req(foreign))


def test_dynamic_batch_gets_a_profile(tmp_path):
    src = tiny_onnx.save_tiny_model(str(tmp_path / "dyn.onnx"), batch="dynamic")
    plan = prepare(req(src, batch=8))
    assert plan.dynamic_batch and plan.batch == 8
    assert plan.profile == ((1, 3, 64, 64), (8, 3, 64, 64), (8, 3, 64, 64))
    assert plan.output.endswith("dyn-fp16-b8.engine")


def test_dla_profile_is_static(tmp_path):
    src = tiny_onnx.save_tiny_model(str(tmp_path / "dyn.onnx"), batch="dynamic")
    plan = prepare(req(src, batch=8, dla=1))
    assert plan.profile == ((8, 3, 64, 64),) * 3 and not plan.dynamic_batch
    assert "min = opt = max = [8, 3, 64, 64]" in plan.notes[0] and "pads" in plan.notes[0]
    assert plan.output.endswith("dyn-fp16-dla1-b8.engine")


def test_qdq_model_needs_no_calibrator(qdq_onnx_path, calib_dir):
    plan = prepare(req(qdq_onnx_path, precision="int8"))
    assert plan.has_qdq and plan.int8_mode == "qdq" and plan.cache_path is None
    assert plan.output.endswith("tiny-int8-b1.engine")
    assert "--calib" not in plan.command()
    plan = prepare(req(qdq_onnx_path, precision="int8", calib_images=calib_dir))
    assert plan.int8_mode == "qdq" and "ignored" in plan.notes[0]
    with pytest.raises(BuildError, match="explicitly quantized.*--precision int8"):
        prepare(req(qdq_onnx_path, precision="fp16"))


def test_cpu_qdq_model_is_refused_for_tensorrt(cpu_qdq_onnx_path):
    with pytest.raises(BuildError, match="not a TensorRT Q/DQ model.*--target tensorrt"):
        prepare(req(cpu_qdq_onnx_path, precision="int8"))


def test_int8_needs_images_or_a_cache(tiny_onnx_path, tmp_path):
    out = str(tmp_path / "m.engine")
    with pytest.raises(BuildError, match="INT8 calibration needs images: pass --calib-images"):
        prepare(req(tiny_onnx_path, precision="int8", output=out))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BuildError, match="no calibration images in"):
        prepare(req(tiny_onnx_path, precision="int8", calib_images=str(empty), output=out))


def test_int8_calibrate_plan(tiny_onnx_path, calib_dir, tmp_path):
    out = str(tmp_path / "m.engine")
    plan = prepare(req(tiny_onnx_path, precision="int8", calib_images=calib_dir, output=out))
    assert plan.int8_mode == "calibrate" and plan.calib_algo == "entropy"
    assert plan.cache_path == str(tmp_path / "m.entropy.calib")
    args = shlex.split(plan.command())
    assert args[args.index("--calib-cache") + 1] == plan.cache_path and "--calib-images" in args


def _write_cache(plan, path, **changes):
    fields = dict(
        onnx_sha256=plan.onnx_sha256,
        preprocess_sha256=preprocess_hash(plan.metadata.preprocess_params()),
        algorithm="entropy",
        batch=1,
        tensorrt_version="8.5.2.2",
    )
    fields.update(changes)
    with open(path, "w") as f:
        f.write(CACHE_TEXT)
    write_identity(path, CacheIdentity(**fields))


def test_matching_cache_is_reused_without_images(tiny_onnx_path, calib_dir, tmp_path):
    cache = str(tmp_path / "c.calib")
    first = prepare(req(tiny_onnx_path, precision="int8", calib_images=calib_dir, calib_cache=cache))
    _write_cache(first, cache)
    plan = prepare(req(tiny_onnx_path, precision="int8", calib_cache=cache))
    assert plan.int8_mode == "reuse-cache"
    finalize(plan, check_version("8.5.2.2"))
    assert plan.int8_mode == "reuse-cache" and plan.typing == "weak"
    assert not any("deprecates" in n for n in plan.notes)
    # the same cache on another TensorRT is stale, and the message says how to rebuild
    with pytest.raises(BuildError, match="TensorRT version differs.*--recalibrate"):
        finalize(plan, check_version("8.6.1"))


def test_typing_and_int8_path_per_release(tiny_onnx_path, calib_dir):
    for version, typing, mode, cache in (
        ("8.5.2.2", "weak", "calibrate", ".entropy.calib"),
        ("10.3.0", "weak", "calibrate", ".entropy.calib"),
        ("11.4.0", "strong", "quantize", ".entropy.qdq.onnx"),
    ):
        plan = prepare(req(tiny_onnx_path, precision="int8", calib_images=calib_dir))
        finalize(plan, check_version(version))
        assert (plan.typing, plan.int8_mode) == (typing, mode) and plan.cache_path.endswith(cache), version
    plan = prepare(req(tiny_onnx_path, precision="int8", calib_images=calib_dir))
    finalize(plan, check_version("10.3.0"))
    assert any("deprecates the INT8 calibrator" in n for n in plan.notes)
    plan = prepare(req(tiny_onnx_path, precision="fp16", strongly_typed=True))
    finalize(plan, check_version("10.3.0"))
    assert plan.typing == "strong" and plan.network_onnx == "fp16" and "--strongly-typed" in plan.command()
    with pytest.raises(BuildError, match="--strongly-typed needs TensorRT 10"):
        finalize(prepare(req(tiny_onnx_path, strongly_typed=True)), check_version("8.5.2.2"))


def test_strong_int8_on_dla_needs_gpu_fallback(tiny_onnx_path, calib_dir):
    plan = prepare(req(tiny_onnx_path, precision="int8", calib_images=calib_dir, dla=0))
    with pytest.raises(BuildError, match="heads in FP32.*--gpu-fallback"):
        finalize(plan, check_version("11.4.0"))


def test_stale_cache_is_refused_before_tensorrt(tiny_onnx_path, calib_dir, tmp_path):
    cache = str(tmp_path / "c.calib")
    first = prepare(req(tiny_onnx_path, precision="int8", calib_images=calib_dir, calib_cache=cache))
    _write_cache(first, cache, onnx_sha256="0" * 64)
    with pytest.raises(BuildError) as e:
        prepare(req(tiny_onnx_path, precision="int8", calib_images=calib_dir, calib_cache=cache))
    assert "is stale: the ONNX model changed" in str(e.value) and "--recalibrate" in str(e.value)
    plan = prepare(
        req(tiny_onnx_path, precision="int8", calib_images=calib_dir, calib_cache=cache, recalibrate=True)
    )
    assert plan.int8_mode == "calibrate"


def test_capability_checks(tiny_onnx_path, calib_dir):
    int8 = prepare(req(tiny_onnx_path, precision="int8", calib_images=calib_dir))
    check_capabilities(int8, XAVIER)
    with pytest.raises(BuildError, match="no fast INT8: build --precision fp16"):
        check_capabilities(int8, NANO)
    fp32 = DeviceCapabilities("8.5.2.2", "Old", "3.0", fast_fp16=False, fast_int8=False, num_dla_cores=0)
    with pytest.raises(BuildError, match="no fast FP16"):
        check_capabilities(prepare(req(tiny_onnx_path)), fp32)
    dla = prepare(req(tiny_onnx_path, dla=1))
    check_capabilities(dla, XAVIER)
    assert "without --gpu-fallback" in dla.notes[-1]
    with pytest.raises(BuildError, match="has no DLA cores"):
        check_capabilities(dla, NANO)
    with pytest.raises(BuildError, match="has 2 DLA core"):
        check_capabilities(prepare(req(tiny_onnx_path, dla=2, gpu_fallback=True)), XAVIER)


def test_network_io_check():
    meta = tiny_onnx.tiny_metadata()
    check_network_io(["images"], ["head_s16", "head_s32"], meta)
    with pytest.raises(BuildError, match="inputs are"):
        check_network_io(["input"], ["head_s16", "head_s32"], meta)
    with pytest.raises(BuildError, match="outputs are"):
        check_network_io(["images"], ["head_s16"], meta)


def test_fast_precisions_from_compute_capability():
    assert fast_precisions_for("7.2") == (True, True)
    assert fast_precisions_for("5.3") == (True, False)
    assert fast_precisions_for("6.1") == (False, True)
    assert fast_precisions_for("5.0") == (False, False)


def test_jetson_release(tmp_path):
    text = "# R35 (release), REVISION: 3.1, GCID: 32827747, BOARD: t186ref, EABI: aarch64, DATE: Sun Mar 19\n"
    assert parse_nv_tegra_release(text) == "35.3.1"
    assert parse_nv_tegra_release("# R32 (release), REVISION: 7.1, GCID: 1") == "32.7.1"
    assert parse_nv_tegra_release("nothing") is None
    os.makedirs(tmp_path / "etc")
    (tmp_path / "etc" / "nv_tegra_release").write_text(text)
    assert jetson_release(str(tmp_path)) == ("35.3.1", "5.1.1")
    assert jetson_release(str(tmp_path / "nowhere")) == (None, None)
