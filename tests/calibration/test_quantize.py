from __future__ import annotations

import glob
import warnings

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from testsupport import tiny_onnx
from yolo_nano.calibration import int8_schemes
from yolo_nano.calibration import quantize as quantize_module
from yolo_nano.calibration.batcher import CalibrationBatcher, FewCalibrationImagesWarning
from yolo_nano.calibration.int8_schemes import (
    CPU_CLASSES,
    INT8_SCHEMES,
    SCHEME_FOR_CPU,
    cpu_class,
    saturating_schemes,
    this_cpu_class,
)
from yolo_nano.calibration.quantize import (
    QuantizeError,
    SaturatingSchemeWarning,
    head_nodes,
    is_qdq_model,
    quantize_qdq,
    resolve_int8_scheme,
    tensorrt_qdq_problems,
)
from yolo_nano.core.metadata import MetadataError, read_onnx_metadata


def _quantize(src, calib_dir, out, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewCalibrationImagesWarning)
        return quantize_qdq(src, calib_dir, out, progress=False, **kw)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, tiny_onnx_path, calib_dir):
    out = str(tmp_path_factory.mktemp("q") / "tiny.int8.onnx")
    return _quantize(tiny_onnx_path, calib_dir, out)


@pytest.fixture(scope="module")
def quantized_with(tmp_path_factory, tiny_onnx_path, calib_dir, quantized):
    """quantized_with(scheme): the tiny model quantized with that --int8-scheme (cpu target), cached."""
    done = {quantized.int8_scheme: quantized}

    def make(scheme):
        if scheme not in done:
            out = str(tmp_path_factory.mktemp("q") / f"tiny.{scheme}.onnx")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SaturatingSchemeWarning)  # u8s8 asked for on AVX2
                try:
                    done[scheme] = _quantize(tiny_onnx_path, calib_dir, out, int8_scheme=scheme)
                except QuantizeError as e:  # ONNX Runtime 1.19 (the py38 suite) writes per-channel as int8
                    assert scheme == "u8u8" and "--per-tensor" in str(e), e
                    done[scheme] = _quantize(
                        tiny_onnx_path, calib_dir, out, int8_scheme=scheme, per_channel=False
                    )
        return done[scheme]

    return make


def _relative_error(a, b):
    return float(np.abs(a - b).max() / (np.abs(a).max() + 1e-12))


def _errors_against_fp32(model_path, tiny_onnx_path, calib_dir):
    """Max relative error of each head on each of 8 calibration images, INT8 vs FP32 in ONNX Runtime."""
    meta = read_onnx_metadata(tiny_onnx_path)
    fp32 = ort.InferenceSession(tiny_onnx_path, providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewCalibrationImagesWarning)
        batches = list(CalibrationBatcher(calib_dir, meta, progress=False))
    errors = []
    for batch in batches[:8]:
        a = fp32.run(None, {"images": batch})
        b = int8.run(None, {"images": batch})
        assert [x.shape for x in a] == [y.shape for y in b] and all(y.dtype == np.float32 for y in b)
        errors += [_relative_error(x, y) for x, y in zip(a, b)]
    return errors


def test_output_is_qdq_with_metadata(quantized, tiny_onnx_path):
    model = onnx.load(quantized.output_path)
    assert is_qdq_model(model) and not is_qdq_model(tiny_onnx_path)
    meta = read_onnx_metadata(model)
    src = read_onnx_metadata(tiny_onnx_path)
    assert (
        meta.heads == src.heads and meta.class_names == src.class_names and meta.input_size == src.input_size
    )
    q = meta.extra["quantization"]
    assert q["format"] == "QDQ" and q["per_channel"] and q["calibration_images"] == 24
    assert q["algorithm"] == "percentile" == quantized.algorithm


def test_tensorrt_target_is_symmetric_int8_with_float_bias(tmp_path, tiny_onnx_path, calib_dir):
    r = _quantize(tiny_onnx_path, calib_dir, str(tmp_path / "trt.onnx"), target="tensorrt", max_images=8)
    model = onnx.load(r.output_path)
    assert read_onnx_metadata(model).extra["quantization"]["activation_type"] == "int8-symmetric"
    assert tensorrt_qdq_problems(model) == []
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    assert not [v for v in inits.values() if v.dtype == np.int32]  # biases stay float
    zero_points = [
        inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2
    ]
    assert zero_points and all(zp.dtype == np.int8 and not zp.any() for zp in zero_points)
    sess = ort.InferenceSession(r.output_path, providers=["CPUExecutionProvider"])
    assert len(sess.run(None, {"images": np.zeros((1, 3, 64, 64), np.float32)})) == 2


def test_cpu_target_is_uint8_and_not_for_tensorrt(quantized):
    model = onnx.load(quantized.output_path)
    assert quantized.target == "cpu"
    assert read_onnx_metadata(model).extra["quantization"]["activation_type"] == "uint8-asymmetric"
    problems = tensorrt_qdq_problems(model)
    assert problems and "TensorRT takes int8 Q/DQ only" in problems[0]


def test_weights_are_int8_per_channel(quantized):
    model = onnx.load(quantized.output_path)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    int8_weights = [v for v in inits.values() if v.dtype == np.int8 and v.ndim == 4]
    assert len(int8_weights) == 5  # c1..c5 quantized
    per_channel_scales = [
        inits[n.input[1]] for n in model.graph.node if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None
        and inits[n.input[0]].ndim == 4
    ]  # fmt: skip
    assert per_channel_scales and all(s.ndim == 1 and s.size > 1 for s in per_channel_scales)


def test_head_convolutions_stay_float(quantized):
    model = onnx.load(quantized.output_path)
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    for out in model.graph.output:
        node = producer[out.name]
        while node.op_type == "Identity":
            node = producer[node.input[0]]
        assert node.op_type == "Conv"
        assert node.input[1] in inits and inits[node.input[1]].data_type == onnx.TensorProto.FLOAT
        assert node.name in quantized.float_nodes


def test_runs_in_ort_close_to_fp32(quantized, tiny_onnx_path, calib_dir):
    """The default (auto) model is accurate on the CPU that made it, whatever its class: on AVX2 without
    VNNI full-range u8s8 saturates (max error 0.128 here), so auto must have picked another scheme."""
    cpu = this_cpu_class()
    assert quantized.int8_scheme == SCHEME_FOR_CPU[cpu] and quantized.quantized_on == cpu
    assert quantized.int8_scheme not in saturating_schemes(cpu)
    errors = _errors_against_fp32(quantized.output_path, tiny_onnx_path, calib_dir)
    assert max(errors) < 0.1, (cpu, quantized.int8_scheme, errors)
    assert min(errors) > 0.0  # it really is quantized


@pytest.mark.parametrize("scheme", INT8_SCHEMES)
def test_each_scheme_close_to_fp32_where_exact(quantized_with, tiny_onnx_path, calib_dir, scheme):
    cpu = this_cpu_class()
    if scheme in saturating_schemes(cpu):
        pytest.skip(f"{scheme} saturates in ONNX Runtime on this CPU class ({cpu}); auto never picks it here")
    r = quantized_with(scheme)
    errors = _errors_against_fp32(r.output_path, tiny_onnx_path, calib_dir)
    assert max(errors) < 0.1, (cpu, scheme, errors)
    assert min(errors) > 0.0


def _weights_and_zero_points(model):
    """{weight initializer name: (values, zero point)} of the quantized convolution weights."""
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return {
        n.input[0]: (inits[n.input[0]], inits[n.input[2]])
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim == 4
    }


def test_scheme_sets_weight_type_and_metadata(quantized_with):
    full, seven_bit, unsigned = (quantized_with(s) for s in INT8_SCHEMES)
    # (dtype, zero point, largest |q - zero point|): 7 bits reach 64; symmetric uint8 reaches 0 = 128 - 128
    for r, dtype, zero, reach in (
        (full, np.int8, 0, 127),
        (seven_bit, np.int8, 0, 64),
        (unsigned, np.uint8, 128, 128),
    ):
        weights = _weights_and_zero_points(onnx.load(r.output_path))
        assert len(weights) == 5  # c1..c5
        spans = []
        for values, zp in weights.values():
            assert values.dtype == dtype and zp.dtype == dtype
            assert (zp == zero).all()  # one zero point per tensor: ONNX Runtime's QLinearConv needs it
            spans.append(int(np.abs(values.astype(int) - zero).max()))
        assert max(spans) == reach, (r.int8_scheme, spans)
        q = read_onnx_metadata(r.output_path).extra["quantization"]
        assert q["int8_scheme"] == r.int8_scheme and q["quantized_on_cpu"] == this_cpu_class()
        assert not q["int8_scheme_auto"] or r.int8_scheme == SCHEME_FOR_CPU[this_cpu_class()]
    meta = {s: read_onnx_metadata(quantized_with(s).output_path).extra["quantization"] for s in INT8_SCHEMES}
    assert meta["u8s8"]["saturates_on_cpu"] == ["x86-avx2"]
    assert meta["u8s8"]["for_cpu"] == ["x86-vnni", "x86-sse", "arm", "other"]
    assert meta["u8s8-reduce-range"]["for_cpu"] == ["x86-avx2"] and meta["u8u8"]["for_cpu"] == []
    assert meta["u8s8-reduce-range"]["saturates_on_cpu"] == [] == meta["u8u8"]["saturates_on_cpu"]
    assert meta["u8s8-reduce-range"]["weight_type"] == "int8-symmetric-7bit"
    assert "saturates on x86-avx2" in full.scheme_summary()
    assert "exact on every CPU class" in seven_bit.scheme_summary()


def test_weights_not_following_the_scheme_are_refused(quantized_with):
    """What ONNX Runtime wrote is checked against the scheme (1.19 ignores uint8 for per-channel weights)."""
    full = onnx.load(quantized_with("u8s8").output_path)
    quantize_module._check_weights_follow_scheme(full, "u8s8", per_channel=True)
    with pytest.raises(
        QuantizeError, match="wrote int8 weights in .-127, 127. for c1.w_quantized, not u8u8: .*--per-tensor"
    ):
        quantize_module._check_weights_follow_scheme(full, "u8u8", per_channel=True)
    with pytest.raises(QuantizeError, match="not u8s8-reduce-range"):
        quantize_module._check_weights_follow_scheme(full, "u8s8-reduce-range", per_channel=True)
    seven_bit = onnx.load(quantized_with("u8s8-reduce-range").output_path)
    quantize_module._check_weights_follow_scheme(seven_bit, "u8s8-reduce-range", per_channel=True)


# /proc/cpuinfo "flags" / "Features" lines of real CPUs (trimmed to the SIMD part).
HASWELL = "fpu sse sse2 ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand bmi1 avx2 bmi2"
SKYLAKE_X = HASWELL + " avx512f avx512dq avx512cd avx512bw avx512vl"
CASCADE_LAKE = SKYLAKE_X + " avx512_vnni"
ZEN4 = SKYLAKE_X + " avx512ifma avx512vbmi avx512_bf16 avx512_vnni avx512_bitalg avx512_vpopcntdq"
ALDER_LAKE = HASWELL + " avx_vnni"  # AVX-VNNI (VEX) without AVX-512
SAPPHIRE_RAPIDS = CASCADE_LAKE + " avx_vnni amx_bf16 amx_tile amx_int8"
SANDY_BRIDGE = "fpu sse sse2 ssse3 cx16 sse4_1 sse4_2 popcnt aes xsave avx"
XAVIER_CARMEL = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm dcpop"
ORIN_A78AE = XAVIER_CARMEL + " asimddp lrcpc uscat ilrcpc flagm"


@pytest.mark.parametrize(
    "machine, flags, expected_class, expected_scheme",
    [
        ("x86_64", HASWELL, "x86-avx2", "u8s8-reduce-range"),
        ("x86_64", SKYLAKE_X, "x86-avx2", "u8s8-reduce-range"),  # AVX-512 without VNNI saturates too
        ("x86_64", CASCADE_LAKE, "x86-vnni", "u8s8"),
        ("x86_64", ZEN4, "x86-vnni", "u8s8"),
        ("AMD64", ALDER_LAKE, "x86-vnni", "u8s8"),  # Windows spells the machine AMD64
        ("x86_64", SAPPHIRE_RAPIDS, "x86-vnni", "u8s8"),
        ("x86_64", SANDY_BRIDGE, "x86-sse", "u8s8"),
        ("aarch64", XAVIER_CARMEL, "arm", "u8s8"),
        ("aarch64", ORIN_A78AE, "arm", "u8s8"),
        ("arm64", "", "arm", "u8s8"),  # macOS
        ("ppc64le", "", "other", "u8s8"),
    ],
)
def test_scheme_for_cpu_flags(tmp_path, monkeypatch, machine, flags, expected_class, expected_scheme):
    assert cpu_class(machine, flags.split()) == expected_class
    assert resolve_int8_scheme("auto", expected_class) == expected_scheme
    # the same through this machine's detection: a /proc/cpuinfo with that line, no numpy CPUID answer
    key = "Features" if machine.startswith(("aarch", "arm")) else "flags"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\n{key}\t\t: {flags}\n\nprocessor\t: 1\n")
    monkeypatch.setattr(int8_schemes, "_numpy_cpu_flags", lambda: None)
    monkeypatch.setattr(int8_schemes, "CPUINFO", str(cpuinfo))
    monkeypatch.setattr(int8_schemes.platform, "machine", lambda: machine)
    assert this_cpu_class() == expected_class
    assert resolve_int8_scheme("auto") == expected_scheme


def test_cpuid_overrules_an_emulators_cpuinfo(monkeypatch):
    """Under ``qemu-x86_64 -cpu Haswell`` on a VNNI host, /proc/cpuinfo is the host's but CPUID (what numpy
    and ONNX Runtime test) is Haswell's: trust CPUID. On real hardware they agree and cpuinfo adds the
    flags numpy does not test (avx_vnni, amx_int8)."""
    monkeypatch.setattr(int8_schemes.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(int8_schemes, "_proc_cpuinfo_flags", lambda path=None: set(CASCADE_LAKE.split()))
    monkeypatch.setattr(int8_schemes, "_numpy_cpu_flags", lambda: {"avx2"})
    assert this_cpu_class() == "x86-avx2"
    monkeypatch.setattr(int8_schemes, "_proc_cpuinfo_flags", lambda path=None: set(ALDER_LAKE.split()))
    assert this_cpu_class() == "x86-vnni"  # numpy agrees on avx2/avx512; cpuinfo adds avx_vnni
    monkeypatch.setattr(int8_schemes, "_proc_cpuinfo_flags", lambda path=None: None)  # no /proc (Windows)
    assert this_cpu_class() == "x86-avx2"


def test_every_cpu_class_has_an_exact_scheme():
    for cpu in CPU_CLASSES:
        assert SCHEME_FOR_CPU[cpu] in INT8_SCHEMES and SCHEME_FOR_CPU[cpu] not in saturating_schemes(cpu)


def test_auto_follows_the_cpu_and_a_saturating_request_warns(
    tmp_path, tiny_onnx_path, calib_dir, monkeypatch
):
    monkeypatch.setattr(quantize_module, "this_cpu_class", lambda: "x86-avx2")
    r = _quantize(tiny_onnx_path, calib_dir, str(tmp_path / "auto.onnx"), max_images=4)
    assert r.int8_scheme == "u8s8-reduce-range" and r.quantized_on == "x86-avx2"
    q = read_onnx_metadata(r.output_path).extra["quantization"]
    assert q["int8_scheme_auto"] and q["quantized_on_cpu"] == "x86-avx2" and q["for_cpu"] == ["x86-avx2"]
    assert r.scheme_summary().startswith(
        "INT8 scheme u8s8-reduce-range (auto; this CPU: x86-avx2): for x86-avx2"
    )
    with pytest.warns(SaturatingSchemeWarning, match="u8s8 saturates in ONNX Runtime on this CPU .x86-avx2"):
        r = _quantize(
            tiny_onnx_path, calib_dir, str(tmp_path / "vnni.onnx"), max_images=4, int8_scheme="u8s8"
        )
    assert r.int8_scheme == "u8s8"  # made here for a VNNI machine: as asked


def test_bad_scheme_requests(tmp_path, tiny_onnx_path, calib_dir):
    assert resolve_int8_scheme("u8u8", "x86-vnni") == "u8u8"  # explicit wins over the CPU
    with pytest.raises(QuantizeError, match="unknown INT8 scheme 'u8s7'"):
        resolve_int8_scheme("u8s7")
    with pytest.raises(QuantizeError, match="cpu target only"):
        _quantize(tiny_onnx_path, calib_dir, str(tmp_path / "t.onnx"), target="tensorrt", int8_scheme="u8u8")
    assert list(tmp_path.iterdir()) == []


def test_nano_quantize_int8_scheme_flag(tmp_path, tiny_onnx_path, calib_dir, capsys):
    from yolo_nano.calibration.cli import quantize_main

    out = tmp_path / "m.onnx"
    argv = [tiny_onnx_path, "--calib-images", calib_dir, "-o", str(out), "--no-progress", "--max-images", "4"]
    assert quantize_main(argv + ["--int8-scheme", "u8s8-reduce-range"]) == 0
    printed = capsys.readouterr().out
    assert f"INT8 scheme u8s8-reduce-range (as asked; this CPU: {this_cpu_class()})" in printed
    assert read_onnx_metadata(str(out)).extra["quantization"]["int8_scheme"] == "u8s8-reduce-range"
    with pytest.raises(SystemExit) as e:
        quantize_main(argv + ["--int8-scheme", "u8s7"])
    assert e.value.code == 2 and "invalid choice: 'u8s7'" in capsys.readouterr().err


def test_detector_runs_the_quantized_model(quantized, tiny_onnx_path, calib_dir):
    from yolo_nano.runtime import Detector

    image = cv2.imread(sorted(glob.glob(calib_dir + "/*.jpg"))[0])
    d32 = Detector(tiny_onnx_path, backend="onnxruntime-cpu", conf_threshold=0.0)
    d8 = Detector(quantized.output_path, backend="onnxruntime-cpu", conf_threshold=0.0)
    r32, r8 = d32(image), d8(image)
    assert len(r8) > 0 and len(r32) > 0
    assert set(r8.labels) <= {"class0", "class1"}
    # the top detection agrees in class and roughly in place
    assert r8.class_ids[0] == r32.class_ids[0]
    assert np.abs(r8.boxes[0] - r32.boxes[0]).max() < 8.0


@pytest.mark.parametrize("algorithm", ["minmax", "entropy"])
def test_other_algorithms(tmp_path, tiny_onnx_path, calib_dir, algorithm):
    r = _quantize(tiny_onnx_path, calib_dir, str(tmp_path / "m.onnx"), algorithm=algorithm, max_images=8)
    assert r.num_images == 8
    assert read_onnx_metadata(r.output_path).extra["quantization"]["algorithm"] == algorithm
    sess = ort.InferenceSession(r.output_path, providers=["CPUExecutionProvider"])
    assert len(sess.run(None, {"images": np.zeros((1, 3, 64, 64), np.float32)})) == 2


def test_unnamed_nodes_and_dynamic_batch(tmp_path, calib_dir):
    src = tiny_onnx.save_tiny_model(str(tmp_path / "dyn.onnx"), batch="dynamic", name_nodes=False)
    assert not any(n.name for n in onnx.load(src).graph.node)
    r = _quantize(src, calib_dir, str(tmp_path / "dyn.int8.onnx"), max_images=4)
    assert len(r.float_nodes) == 4 and all(r.float_nodes)  # named, then excluded: 2 Identity + 2 Conv
    sess = ort.InferenceSession(r.output_path, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"images": np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)})
    assert outs[0].shape == (3, 14, 2, 2) and outs[1].shape == (3, 14, 4, 4)


def test_model_without_metadata_is_refused(tmp_path, calib_dir):
    src = tiny_onnx.save_tiny_model(str(tmp_path / "foreign.onnx"), with_metadata=False)
    with pytest.raises(MetadataError, match="nano-export"):
        _quantize(src, calib_dir, str(tmp_path / "out.onnx"))
    assert not (tmp_path / "out.onnx").exists()


def test_already_quantized_and_unknown_algorithm(quantized, tmp_path, calib_dir, tiny_onnx_path):
    with pytest.raises(QuantizeError, match="already quantized"):
        _quantize(quantized.output_path, calib_dir, str(tmp_path / "again.onnx"))
    with pytest.raises(QuantizeError, match="unknown calibration algorithm"):
        _quantize(tiny_onnx_path, calib_dir, str(tmp_path / "x.onnx"), algorithm="kl")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written


def test_head_nodes_follow_shape_only_ops():
    model = tiny_onnx.build_tiny_model()
    assert head_nodes(model) == ["out32", "head32", "out16", "head16"]


def test_cpu_model_loads_quietly_with_relu_folded(quantized):
    import subprocess
    import sys

    ops = {n.op_type for n in onnx.load(quantized.output_path).graph.node}
    assert "Relu" not in ops and "Identity" not in ops  # absorbed into the uint8 QuantizeLinear / removed
    r = subprocess.run(
        [sys.executable, "-c", f"import onnxruntime as o; o.InferenceSession({quantized.output_path!r})"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0 and r.stderr == ""


def test_runtime_warns_when_the_scheme_saturates_on_this_cpu(quantized_with, monkeypatch):
    """A u8s8 file opened on an AVX2-only CPU: the ONNX Runtime backend says so and how to fix it."""
    from yolo_nano.calibration import int8_schemes
    from yolo_nano.runtime.onnxruntime_backend import OnnxRuntimeBackend

    path = quantized_with("u8s8").output_path
    monkeypatch.setattr(int8_schemes, "this_cpu_class", lambda: "x86-avx2")
    with pytest.warns(RuntimeWarning, match=r"saturates on this CPU \(x86-avx2\).*--int8-scheme auto"):
        OnnxRuntimeBackend(path, device="cpu").close()
    monkeypatch.setattr(int8_schemes, "this_cpu_class", lambda: "x86-vnni")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        OnnxRuntimeBackend(path, device="cpu").close()
