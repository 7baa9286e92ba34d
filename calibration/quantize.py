"""Explicit (Q/DQ) INT8 quantization with ONNX Runtime's static quantizer, fed by the one batcher.

The output is a QDQ-format ONNX model: per-channel symmetric 8-bit weights, 8-bit activations, the head
convolutions (the nodes producing the graph outputs) kept in float so box offsets and logits are never
rounded to 8 bits, and the ``yolo_nano`` metadata copied over. Two targets, because ONNX Runtime's CPU
kernels and TensorRT want different activations (see :data:`TARGETS`):

* ``cpu`` (default): uint8 asymmetric activations. ONNX Runtime folds each ReLU6 into the quantized
  convolution: this is the fast CPU model. Its weights follow an INT8 scheme chosen for the CPU class
  that will run it (:data:`INT8_SCHEMES`, ``auto``: this machine's, see :data:`SCHEME_FOR_CPU`): a
  model made on a VNNI machine for an AVX2-only one needs ``int8_scheme="u8s8-reduce-range"``.
* ``tensorrt``: int8 symmetric activations (zero point 0), the explicit quantization TensorRT 8.5 and
  10.x accept: ``nano-build model.int8.onnx --precision int8`` needs no calibrator. It also runs in ONNX
  Runtime, but no faster than FP32 there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional

import numpy as np

from yolo_nano.core.fileio import PathLike, atomic_write_bytes
from yolo_nano.core.metadata import MetadataError, ModelMetadata, read_onnx_metadata, write_onnx_metadata

from .batcher import CalibrationBatcher
from .int8_schemes import (
    AUTO_SCHEME,
    CPU_CLASSES,
    INT8_SCHEMES,
    SCHEME_FOR_CPU,
    cpus_for_scheme,
    describe_scheme,
    saturating_schemes,
    this_cpu_class,
)

#: ``--algo`` names -> ONNX Runtime ``CalibrationMethod`` member names.
QUANT_ALGORITHMS: Dict[str, str] = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
DEFAULT_QUANT_ALGORITHM = "percentile"
QDQ_OP_TYPES = ("QuantizeLinear", "DequantizeLinear")
#: Who runs the Q/DQ model. ``cpu``: uint8 asymmetric activations, which ONNX Runtime fuses with the
#: ReLU6/Clip after each convolution into QLinearConv (measured 1.5-2x faster than FP32 on x86, see
#: docs/benchmarks/int8.md; symmetric int8 activations cannot absorb the Clip: 0.7-1.0x).
#: ``tensorrt``: int8 symmetric activations (zero point 0), the only explicit quantization TensorRT
#: 8.5/10 accepts.
TARGETS = ("cpu", "tensorrt")
DEFAULT_TARGET = "cpu"


class QuantizeError(ValueError):
    """The model cannot be quantized as asked (message says why and what to do)."""


class SaturatingSchemeWarning(UserWarning):
    """The requested INT8 scheme loses accuracy in ONNX Runtime on the CPU quantizing it."""


_WEIGHT_TYPES: Dict[Optional[str], str] = {
    None: "int8-symmetric",  # tensorrt
    "u8s8": "int8-symmetric",
    "u8s8-reduce-range": "int8-symmetric-7bit",
    "u8u8": "uint8-symmetric",
}


def _check_weights_follow_scheme(model: Any, scheme: str, per_channel: bool) -> None:
    """Raise :class:`QuantizeError` unless the quantized convolution weights have the scheme's type and
    range: some ONNX Runtime versions (1.19) write per-channel weights as int8 whatever type was asked."""
    import onnx
    from onnxruntime import __version__ as ort_version

    want = np.uint8 if scheme == "u8u8" else np.int8
    reach = 64 if scheme == "u8s8-reduce-range" else 128
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        weight = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if weight is None or len(weight.dims) != 4:
            continue
        values = onnx.numpy_helper.to_array(weight)
        zero = 128 if values.dtype == np.uint8 else 0
        if values.dtype != want or np.abs(values.astype(np.int32) - zero).max() > reach:
            hint = " or --per-tensor" if per_channel and scheme == "u8u8" else ""
            raise QuantizeError(
                f"ONNX Runtime {ort_version}'s quantizer wrote {values.dtype} weights in "
                f"[{values.min()}, {values.max()}] for {node.input[0]}, not {scheme}: use another "
                f"--int8-scheme{hint}, or a newer onnxruntime"
            )


def resolve_int8_scheme(requested: str = AUTO_SCHEME, cpu: Optional[str] = None) -> str:
    """The scheme to quantize with: ``requested`` itself, or for ``auto`` :data:`SCHEME_FOR_CPU` of
    ``cpu`` (default: this machine's class)."""
    if requested == AUTO_SCHEME:
        return SCHEME_FOR_CPU[cpu or this_cpu_class()]
    if requested not in INT8_SCHEMES:
        raise QuantizeError(
            f"unknown INT8 scheme {requested!r}; choose {AUTO_SCHEME} or one of {INT8_SCHEMES}"
        )
    return requested


def is_qdq_model(model: Any) -> bool:
    """True when the ONNX model (a ``ModelProto`` or a path) already holds Q/DQ nodes (explicit INT8)."""
    if not hasattr(model, "graph"):
        import onnx

        model = onnx.load(os.fspath(model), load_external_data=False)
    return any(node.op_type in QDQ_OP_TYPES for node in model.graph.node)


PASSTHROUGH_OPS = ("Identity", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze")


def tensorrt_qdq_problems(model: Any) -> List[str]:
    """Why TensorRT would refuse this Q/DQ model (empty: it is fine). TensorRT takes only int8 Q/DQ with
    zero points of 0 (symmetric); ``nano-quantize --target cpu`` makes uint8 asymmetric activations."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    problems: List[str] = []
    for node in model.graph.node:
        if node.op_type not in QDQ_OP_TYPES or len(node.input) < 3 or not node.input[2]:
            continue
        zp_name = node.input[2]
        if zp_name in inits:
            zp = numpy_helper.to_array(inits[zp_name])
        elif zp_name in consts:
            zp = numpy_helper.to_array(consts[zp_name].attribute[0].t)
        else:
            continue
        if zp.dtype != np.int8:
            problems.append(f"{node.name or node.op_type} is {zp.dtype} (TensorRT takes int8 Q/DQ only)")
        elif zp.any():
            problems.append(
                f"{node.name or node.op_type}: non-zero zero point (TensorRT needs symmetric int8)"
            )
        if len(problems) >= 3:
            break
    return problems


def head_nodes(model: Any) -> List[str]:
    """Names of the nodes that compute the graph outputs (the detection heads): each output's producer,
    followed back through shape-only ops (Identity, Reshape, ...) to the convolution that computes it."""
    producer = {out: node for node in model.graph.node for out in node.output}
    found: List[str] = []
    for graph_output in model.graph.output:
        node = producer.get(graph_output.name)
        while node is not None:
            if node.name not in found:
                found.append(node.name)
            if node.op_type not in PASSTHROUGH_OPS or not node.input:
                break
            node = producer.get(node.input[0])
    return found


def _name_unnamed_nodes(model: Any) -> None:
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def _stride_for(num_batches: int, limit: int = 16) -> int:
    """Largest divisor of ``num_batches`` not above ``limit`` (ORT's strided calibration needs one)."""
    for s in range(min(limit, num_batches), 0, -1):
        if num_batches % s == 0:
            return s
    return 1


def make_data_reader(batcher: CalibrationBatcher, input_name: str) -> Any:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over ``batcher`` (one pass, rangeable)."""
    from onnxruntime.quantization import CalibrationDataReader

    class BatcherDataReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Optional[Iterator[np.ndarray]] = None
            self._remaining: Optional[int] = None
            # Older ONNX Runtime (seen with 1.19) returns graph outputs that are graph inputs as views of the input buffer
            # (microsoft/onnxruntime#21922) and keeps them until the stride is processed: keep the
            # batches alive until then, or the calibrator reads freed memory (NaN ranges).
            self._fed: List[np.ndarray] = []

        def __len__(self) -> int:
            return len(batcher)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._remaining = end_index - start_index
            self._fed = []

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            if self._remaining is not None:
                if self._remaining <= 0:
                    return None
                self._remaining -= 1
            if self._it is None:
                self._it = iter(batcher)
            batch = next(self._it, None)
            if batch is None:
                return None
            self._fed.append(batch)
            return {input_name: batch}

    return BatcherDataReader()


def _fold_removable_ops(src: str, dst: str) -> str:
    """Save ``src`` after ONNX Runtime's basic (hardware-independent) graph optimisations: the Clip of each
    ReLU6 is absorbed into the uint8 QuantizeLinear after it, Identity nodes go. Without this every
    session that loads the model re-does it and logs one warning per orphaned Clip constant (~180 lines
    for YOLO Nano). The result is still a portable QDQ model."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = dst
    ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    return dst


class _DropPreprocessHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


@contextlib.contextmanager
def _quiet_ort() -> Iterator[None]:
    """ONNX Runtime's quantizer prints progress to stdout and a pre-processing hint to the root logger:
    send the prints to stderr (stdout stays for our result line) and drop the hint."""
    hint = _DropPreprocessHint()
    logging.getLogger().addFilter(hint)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        logging.getLogger().removeFilter(hint)


@dataclass
class QuantizeResult:
    """What :func:`quantize_qdq` wrote: the output path, its size (bytes), the metadata in it, how many
    calibration images were used and which nodes were kept in float."""

    output_path: str
    size_bytes: int
    metadata: ModelMetadata
    num_images: int
    float_nodes: List[str]
    algorithm: str
    target: str = DEFAULT_TARGET
    int8_scheme: Optional[str] = None  # cpu target: one of INT8_SCHEMES
    quantized_on: str = ""  # CPU class of this machine (CPU_CLASSES key)

    def scheme_summary(self) -> str:
        """One line: the INT8 scheme, how it was chosen, which CPU classes it is for and where it saturates."""
        if self.int8_scheme is None:
            return "INT8 scheme: symmetric int8 activations and weights (TensorRT)"
        how = "auto" if self.metadata.extra["quantization"]["int8_scheme_auto"] else "as asked"
        return f"INT8 scheme {self.int8_scheme} ({how}; this CPU: {self.quantized_on}): " + describe_scheme(
            self.int8_scheme
        )


def quantize_qdq(
    onnx_path: PathLike,
    calib_source: PathLike,
    output_path: PathLike,
    *,
    algorithm: str = DEFAULT_QUANT_ALGORITHM,
    target: str = DEFAULT_TARGET,
    int8_scheme: str = AUTO_SCHEME,
    per_channel: bool = True,
    max_images: Optional[int] = None,
    percentile: float = 99.999,
    progress: bool = True,
) -> QuantizeResult:
    """Quantize ``onnx_path`` (FP32 with yolo_nano metadata) to a Q/DQ INT8 model at ``output_path``.

    Calibration images come from ``calib_source`` (folder, list file or VOC ImageSets) through
    :class:`~yolo_nano.calibration.batcher.CalibrationBatcher` with the model's own preprocessing and
    batch size (1 for a dynamic-batch model). ``algorithm``: ``minmax``, ``entropy`` or ``percentile``.
    ``target``: ``cpu`` (uint8 asymmetric activations: fast in ONNX Runtime) or ``tensorrt`` (int8
    symmetric activations: what ``nano-build --precision int8`` accepts). Weights are symmetric (per
    channel by default): int8 for ``tensorrt``; for ``cpu`` as ``int8_scheme`` says (:data:`INT8_SCHEMES`;
    ``auto``: :data:`SCHEME_FOR_CPU` of this machine). The output is written atomically.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if target not in TARGETS:
        raise QuantizeError(f"unknown target {target!r}; choose one of {TARGETS}")
    if target == "tensorrt" and int8_scheme != AUTO_SCHEME:
        raise QuantizeError("an INT8 scheme applies to the cpu target only (TensorRT takes symmetric int8)")
    quantized_on = this_cpu_class()
    scheme = resolve_int8_scheme(int8_scheme, quantized_on) if target == "cpu" else None
    if scheme in saturating_schemes(quantized_on):
        warnings.warn(
            f"{scheme} saturates in ONNX Runtime on this CPU ({quantized_on}, AVX2 without VNNI): the "
            "model is for another machine; to run it here use --int8-scheme auto",
            SaturatingSchemeWarning,
            stacklevel=2,
        )
    if algorithm not in QUANT_ALGORITHMS:
        raise QuantizeError(
            f"unknown calibration algorithm {algorithm!r}; choose one of {sorted(QUANT_ALGORITHMS)}"
        )
    src = os.fspath(onnx_path)
    try:
        model = onnx.load(src)
    except Exception as e:
        raise QuantizeError(f"{src}: not a readable ONNX file ({type(e).__name__}: {e})") from e
    meta = read_onnx_metadata(model)  # MetadataError (a ValueError) when the model is not ours
    if is_qdq_model(model):
        raise QuantizeError(f"{src} is already quantized (it has QuantizeLinear/DequantizeLinear nodes)")
    _name_unnamed_nodes(model)
    float_nodes = head_nodes(model)
    batch = meta.batch if isinstance(meta.batch, int) else 1
    batcher = CalibrationBatcher(
        calib_source, meta, batch_size=batch, max_images=max_images, progress=progress
    )
    reader = make_data_reader(batcher, meta.input_name)
    extra: Dict[str, Any] = {
        "ActivationSymmetric": target == "tensorrt",  # zero point 0: what TensorRT needs
        "QuantizeBias": target == "cpu",  # TensorRT takes float biases, not int32 DequantizeLinear
        "WeightSymmetric": True,
        "CalibStridedMinMax": _stride_for(len(batcher)),  # bounded memory (histograms merge per stride)
        "CalibPercentile": float(percentile),
    }
    out = os.fspath(output_path)
    out_dir = os.path.dirname(os.path.abspath(out))
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".nano-quantize-", dir=out_dir) as tmp:
        named = os.path.join(tmp, "input.onnx")
        onnx.save(model, named)
        quantized = os.path.join(tmp, "output.onnx")
        with _quiet_ort():
            quantize_static(
                named,
                quantized,
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                reduce_range=scheme == "u8s8-reduce-range",  # 7-bit weights
                activation_type=QuantType.QInt8 if target == "tensorrt" else QuantType.QUInt8,
                weight_type=QuantType.QUInt8 if scheme == "u8u8" else QuantType.QInt8,
                nodes_to_exclude=float_nodes,
                calibrate_method=getattr(CalibrationMethod, QUANT_ALGORITHMS[algorithm]),
                extra_options=extra,
            )
        if target == "cpu":
            quantized = _fold_removable_ops(quantized, os.path.join(tmp, "folded.onnx"))
        qmodel = onnx.load(quantized)
        qmodel.ir_version = min(qmodel.ir_version, model.ir_version)  # loadable where the FP32 model is
    if scheme is not None:
        _check_weights_follow_scheme(qmodel, scheme, per_channel)
    extra_meta = dict(meta.extra)
    extra_meta["quantization"] = {
        "format": "QDQ",
        "tool": "onnxruntime.quantization.quantize_static",
        "algorithm": algorithm,
        "target": target,
        "per_channel": per_channel,
        "activation_type": "int8-symmetric" if target == "tensorrt" else "uint8-asymmetric",
        "weight_type": _WEIGHT_TYPES[scheme],
        "calibration_images": batcher.num_images - len(batcher.skipped),
        "float_nodes": float_nodes,
    }
    if scheme is not None:
        extra_meta["quantization"].update(
            int8_scheme=scheme,
            int8_scheme_auto=int8_scheme == AUTO_SCHEME,
            quantized_on_cpu=quantized_on,
            for_cpu=cpus_for_scheme(scheme),
            saturates_on_cpu=[c for c in CPU_CLASSES if scheme in saturating_schemes(c)],
        )
    qmeta = dataclasses.replace(meta, extra=extra_meta)
    try:
        write_onnx_metadata(qmodel, qmeta)
    except MetadataError as e:  # pragma: no cover - meta came from a valid model
        raise QuantizeError(str(e)) from e
    data = qmodel.SerializeToString()
    atomic_write_bytes(out, data)
    return QuantizeResult(
        output_path=out,
        size_bytes=len(data),
        metadata=qmeta,
        num_images=batcher.num_images - len(batcher.skipped),
        float_nodes=float_nodes,
        algorithm=algorithm,
        target=target,
        int8_scheme=scheme,
        quantized_on=quantized_on,
    )
