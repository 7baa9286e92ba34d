"""An emulated GPU backend for the CUDA pipeline's tests: an ONNX model behind the device seam.

:func:`emulated_device_backend` wraps an ONNX Runtime session in a
:class:`~yolo_nano.runtime.kernel_check.DeviceBuffersBackend` whose buffers come from an
:class:`~yolo_nano.runtime.kernel_emu.EmulatedLauncher` (host memory standing in for device memory):
``execute(n)`` runs the network on the first ``n`` images of the input buffer, in stream order, and
writes the heads into the head buffers, as TensorRT's ``execute_async_v3`` would on the GPU.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from yolo_nano.runtime.kernel_check import DeviceBuffersBackend
from yolo_nano.runtime.onnxruntime_backend import OnnxRuntimeBackend


def emulated_device_backend(
    model_path: Any, launcher: Any, max_batch: int = 8, ort: Optional[OnnxRuntimeBackend] = None
) -> DeviceBuffersBackend:
    """``model_path`` (.onnx) on the emulated device; a fixed-batch model keeps its batch. ``ort``: an
    already open ONNX Runtime backend of the same model (to share it with a numpy-path Detector)."""
    session = ort if ort is not None else OnnxRuntimeBackend(str(model_path), device="cpu")
    meta = session.metadata
    fixed = session.batch_size
    backend: Any = None

    def run(n: int) -> None:
        inp = backend.host_array(meta.input_name)[:n]
        for head, out in zip(meta.heads, session.infer(np.ascontiguousarray(inp))):
            backend.host_array(head.name)[:n] = out

    backend = DeviceBuffersBackend(
        meta, launcher, max_batch=fixed or max_batch, fixed_batch=bool(fixed), run=run
    )
    backend.ort = session
    return backend
