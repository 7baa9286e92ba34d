"""The ONNX file TensorRT parses for a build plan: the given model, an FP16 copy, or a Q/DQ model.

Strongly typed networks (TensorRT 11, or ``--strongly-typed`` on 10) take their precision from the
tensor types of the ONNX, so ``nano-build`` derives the model TensorRT needs from the FP32 export:

* **fp16**: every float tensor and initializer converted to float16 by onnxconverter-common's
  ``float16.convert_float_to_float16(keep_io_types=True)`` (the graph input and outputs stay float32,
  with Cast nodes at the edges, so the engine's I/O and the runtime are unchanged). Why that converter:
  it is Microsoft's maintained one behind ONNX Runtime's own FP16 tooling, pure Python (Python 3.8 and
  numpy 1.x on JetPack 5.1 included), and clamps weights into the float16 range instead of overflowing;
  NVIDIA's modelopt autocast does the same job but pulls in PyTorch/CUDA packages a Jetson build does
  not otherwise need. The copy lives in a temporary folder for the build only (cheap to redo).
* **int8**: a Q/DQ model calibrated from ``--calib-images`` by the project's own quantizer
  (:func:`yolo_nano.calibration.quantize.quantize_qdq` with ``target="tensorrt"``: symmetric int8, the
  one batcher and preprocessing). It is a calibration cache in all but format, so it follows the same
  rules: written beside the engine with an identity sidecar only after a calibration without error
  (an unreadable image is an error), reused only while the identity and its own sha256 match.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Callable, Iterator

from yolo_nano.calibration.batcher import list_calibration_images, subsample
from yolo_nano.calibration.cache import save_with_identity

from .plan import BuildError, BuildPlan, expected_cache_identity

Log = Callable[[str], None]


def fp16_model_bytes(onnx_path: str) -> bytes:
    """The model at ``onnx_path`` with float16 weights and activations, float32 input and outputs."""
    import onnx
    from onnxconverter_common.float16 import convert_float_to_float16

    model = onnx.load(onnx_path)
    # The converter names its I/O Cast nodes after the consuming node: unnamed nodes would collide
    # ("images_cast_to_" twice for an input read by two unnamed nodes), so name them first.
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
    half = convert_float_to_float16(model, keep_io_types=True)
    try:
        onnx.checker.check_model(half)
    except onnx.checker.ValidationError as e:
        raise BuildError(f"the FP16 copy of {onnx_path} is not a valid ONNX model ({e})") from e
    return half.SerializeToString()


@contextlib.contextmanager
def network_onnx(plan: BuildPlan, log: Log) -> Iterator[str]:
    """The path of the ONNX TensorRT should parse for ``plan`` (derived ones made first)."""
    if plan.network_onnx == "fp16":
        with tempfile.TemporaryDirectory(prefix="nano-build-fp16-") as tmp:
            path = os.path.join(tmp, os.path.basename(plan.request.onnx)[:-5] + ".fp16.onnx")
            with open(path, "wb") as f:
                f.write(fp16_model_bytes(plan.request.onnx))
            log(
                f"      strongly typed fp16: derived an FP16 copy of {plan.request.onnx} (FP32 input/outputs)"
            )
            yield path
        return
    if plan.network_onnx == "qdq" and not plan.has_qdq:
        assert plan.cache_path is not None
        if plan.int8_mode == "quantize":
            derive_qdq_model(plan, log)
        else:
            log(f"      reusing the Q/DQ model {plan.cache_path} (matches this model)")
        yield plan.cache_path
        return
    yield plan.request.onnx


def derive_qdq_model(plan: BuildPlan, log: Log) -> None:
    """Calibrate a Q/DQ model from ``--calib-images`` and save it at ``plan.cache_path`` with its sidecar.

    All or nothing: an unreadable image, an error or Ctrl-C leaves neither file (the model is made in a
    temporary folder and saved only when every listed image was used).
    """
    from yolo_nano.calibration.quantize import quantize_qdq

    r = plan.request
    assert r.calib_images is not None and plan.cache_path is not None
    batch = plan.calibration_batch
    expected = len(subsample(list_calibration_images(r.calib_images), r.max_calib_images)) // batch * batch
    log(f"      strongly typed int8: calibrating a Q/DQ model ({plan.calib_algo}) on {expected} images "
        f"from {r.calib_images}")  # fmt: skip
    folder = os.path.dirname(os.path.abspath(plan.cache_path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".nano-build-qdq-", dir=folder) as tmp:
        out = os.path.join(tmp, "model.qdq.onnx")
        result = quantize_qdq(
            r.onnx, r.calib_images, out, algorithm=plan.calib_algo, target="tensorrt",
            max_images=r.max_calib_images, progress=True,
        )  # fmt: skip
        if result.num_images < expected:
            raise BuildError(
                f"calibration read {result.num_images} of {expected} images from {r.calib_images} (unreadable "
                "images were skipped): fix or remove them and build again; nothing was written"
            )
        with open(out, "rb") as f:
            data = f.read()
    identity = expected_cache_identity(plan, "")
    identity.num_images = result.num_images
    save_with_identity(plan.cache_path, data, identity)
    log(f"      Q/DQ model written: {plan.cache_path} (+ {plan.cache_path}.json)")
