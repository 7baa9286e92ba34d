"""ONNX Runtime backend: an exported ``.onnx`` model (FP32 or Q/DQ INT8) on the CPU or the CUDA provider."""

from __future__ import annotations

import os
import warnings
from typing import Any, List, Optional

import numpy as np

from yolo_nano.core.backend import Backend, BackendClosedError, BackendUnavailableError, ModelLoadError
from yolo_nano.core.metadata import MetadataError, ModelMetadata, read_onnx_metadata


def _dim_value(d: Any) -> Optional[int]:
    return d if isinstance(d, int) and d > 0 else None


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime session on an exported ``.onnx`` model.

    ``device``: ``"auto"`` (CUDA execution provider if this onnxruntime build has it, else CPU),
    ``"cpu"`` or ``"cuda"``. ``threads``: intra-op thread count (``None``: ONNX Runtime's default, one
    per physical core). The metadata is read from the file and the session's input and outputs are
    checked against it, so a model that is not what its metadata says fails here, not in decode.
    ``infer`` is safe to call from several threads at once (ONNX Runtime sessions are); ``close()``
    drops the session (a call already running finishes on it).
    """

    def __init__(self, model_path: str, *, device: str = "auto", threads: Optional[int] = None) -> None:
        import onnxruntime as ort

        path = os.fspath(model_path)
        if not os.path.isfile(path):
            raise ModelLoadError(f"model file not found: {path}")
        try:
            self.metadata: ModelMetadata = read_onnx_metadata(path)
        except MetadataError as e:  # its message names the file already when the file is unreadable
            msg = str(e)
            raise ModelLoadError(msg if msg.startswith(path) else f"{path}: {msg}") from e
        warn_if_int8_saturates_here(path, self.metadata)
        available = ort.get_available_providers()
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise BackendUnavailableError(
                "device='cuda' needs onnxruntime-gpu with the CUDA execution provider; this onnxruntime has "
                f"{available}. Install onnxruntime-gpu, or use device='cpu'"
            )
        use_cuda = device == "cuda" or (device == "auto" and "CUDAExecutionProvider" in available)
        providers: List[Any] = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        )
        opts = ort.SessionOptions()
        if threads is not None:
            if int(threads) < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(path, sess_options=opts, providers=providers)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types
            raise ModelLoadError(
                f"{path}: ONNX Runtime cannot load the model ({type(e).__name__}: {e})"
            ) from e
        used = self.session.get_providers()
        self.name = "onnxruntime-cuda" if "CUDAExecutionProvider" in used else "onnxruntime-cpu"
        self.threads = threads
        self.path = path
        self._check_io()

    def _check_io(self) -> None:
        meta = self.metadata
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != meta.input_name:
            raise ModelLoadError(
                f"{self.path}: expected one input named {meta.input_name!r}, the model has "
                f"{[i.name for i in inputs]}; is this a yolo_nano export?"
            )
        shape = list(inputs[0].shape)
        h, w = meta.input_size
        if len(shape) != 4 or _dim_value(shape[1]) not in (3, None):
            raise ModelLoadError(f"{self.path}: input shape {shape} is not (N, 3, H, W)")
        if (_dim_value(shape[2]), _dim_value(shape[3])) not in ((h, w), (None, None)):
            raise ModelLoadError(
                f"{self.path}: input shape {shape} does not match metadata input_size {h}x{w}"
            )
        self.batch_size = _dim_value(shape[0])
        self.max_batch = self.batch_size  # a dynamic batch has no limit here; the Detector bounds it
        outputs = {o.name: list(o.shape) for o in self.session.get_outputs()}
        missing = [n for n in meta.output_names if n not in outputs]
        if missing:
            raise ModelLoadError(
                f"{self.path}: outputs {missing} named in the metadata are not in the model (it has "
                f"{sorted(outputs)}); re-export it with `nano-export`"
            )
        for head in meta.heads:
            want = meta.head_shape(head, batch=self.batch_size or 1)
            got = outputs[head.name]
            ok = len(got) == 4 and all(_dim_value(g) in (x, None) for g, x in zip(got[1:], want[1:]))
            if not ok:
                raise ModelLoadError(
                    f"{self.path}: output {head.name!r} has shape {got}, the metadata implies (N, "
                    f"{want[1]}, {want[2]}, {want[3]}) for {meta.num_classes} classes and stride {head.stride}"
                )
        self._output_names = meta.output_names

    def infer(self, batch: np.ndarray) -> List[np.ndarray]:
        """Run float32 (N, 3, H, W) and return the raw heads in metadata order (N from the batch)."""
        session = self.session  # one read: close() in another thread cannot pull it away mid-call
        if session is None:
            raise BackendClosedError(f"{self!r} is closed")
        return session.run(self._output_names, {self.metadata.input_name: batch})

    def close(self) -> None:
        """Release the ONNX Runtime session. Idempotent."""
        self._closed = True
        self.session = None

    def __repr__(self) -> str:
        return f"OnnxRuntimeBackend({self.path!r}, name={self.name!r}, batch_size={self.batch_size})"


def warn_if_int8_saturates_here(path: str, meta: ModelMetadata) -> None:
    """Warn when a CPU-target Q/DQ model was quantized with a scheme whose int8 kernel saturates on this
    CPU (u8s8 full range on AVX2 without VNNI): accuracy drops there; re-quantizing fixes it."""
    quant = meta.extra.get("quantization")
    if not isinstance(quant, dict) or not isinstance(quant.get("saturates_on_cpu"), list):
        return
    from yolo_nano.calibration.int8_schemes import this_cpu_class

    cpu = this_cpu_class()
    if cpu in quant["saturates_on_cpu"]:
        warnings.warn(
            f"{path}: its INT8 scheme {quant.get('int8_scheme')} saturates on this CPU ({cpu}), which costs "
            f"accuracy; re-quantize it here with `nano-quantize ... --int8-scheme auto`",
            RuntimeWarning,
            stacklevel=3,
        )
