"""TensorRT INT8 calibrators (EntropyCalibrator2, the default, and MinMax) over the one batcher.

They subclass TensorRT classes, so they are created lazily by :func:`make_calibrator` (TensorRT and
pycuda are imported there, never at module import). A calibrator either calibrates (feeds batches,
then writes the cache TensorRT hands back, with its identity sidecar) or replays an existing cache
that :func:`yolo_nano.calibration.cache.decide_cache` found fit for reuse. The caller must have a CUDA
context current (``nano-build`` pushes the device's primary context).
"""

from __future__ import annotations

import sys
from typing import Any, List, Optional

import numpy as np

from yolo_nano.core.fileio import atomic_write_bytes

from .batcher import CalibrationBatcher
from .cache import ALGORITHMS, CacheIdentity, CalibrationCache, write_identity


def make_calibrator(
    algorithm: str,
    cache_path: str,
    identity: CacheIdentity,
    batcher: Optional[CalibrationBatcher] = None,
    cache_bytes: Optional[bytes] = None,
) -> Any:
    """A ``tensorrt.IInt8EntropyCalibrator2`` (``algorithm="entropy"``) or ``IInt8MinMaxCalibrator``
    (``"minmax"``).

    Calibrating: give ``batcher`` (its batch size is the calibration batch); the cache TensorRT writes is
    checked, written to ``cache_path`` atomically and its identity sidecar written from ``identity``.
    Reusing: give ``cache_bytes`` (no images are read). After the build, ``calibrator.error`` holds an
    exception raised inside a callback (TensorRT cannot propagate it), or None.
    """
    import tensorrt as trt

    cuda: Any = None
    if batcher is not None:  # replaying a cache needs no device memory
        import pycuda.driver as _cuda  # the caller has pushed a context

        cuda = _cuda

    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"unknown TensorRT calibration algorithm {algorithm!r}; choose one of {sorted(ALGORITHMS)}"
        )
    if (batcher is None) == (cache_bytes is None):
        raise ValueError("give exactly one of batcher (calibrate) or cache_bytes (reuse a cache)")

    class _Calibration:
        """The callbacks TensorRT calls, shared by both calibrator classes."""

        def _setup(self) -> None:
            self.error: Optional[BaseException] = None
            self.batches = 0
            self._iter = iter(batcher) if batcher is not None else None
            self._device: Any = None
            if batcher is not None:
                h, w = batcher.meta.input_size
                nbytes = batcher.batch_size * 3 * h * w * np.dtype(np.float32).itemsize
                self._device = cuda.mem_alloc(nbytes)

        def release(self) -> None:
            """Free the device batch buffer (call before the CUDA context goes)."""
            if self._device is not None:
                self._device.free()
                self._device = None

        def get_batch_size(self) -> int:
            return batcher.batch_size if batcher is not None else identity.batch

        def get_batch(self, names: List[str]) -> List[int]:
            """Device pointers of the next batch, ``[]`` when done (what TensorRT expects)."""
            if self._iter is None or self.error is not None:
                return []
            try:
                batch = next(self._iter, None)
                if batch is None:
                    return []
                cuda.memcpy_htod(self._device, np.ascontiguousarray(batch, dtype=np.float32))
                self.batches += 1
                return [int(self._device)]
            except BaseException as e:  # TensorRT cannot propagate it: keep it for the builder
                self.error = e
                return []

        def read_calibration_cache(self) -> Optional[bytes]:
            return cache_bytes

        def write_calibration_cache(self, cache: Any) -> None:
            if batcher is None:
                return
            try:
                data = bytes(cache)
                CalibrationCache.parse(data, source="cache written by TensorRT")
                atomic_write_bytes(cache_path, data)
                identity.num_images = self.batches * batcher.batch_size
                write_identity(cache_path, identity)
                print(f"calibration cache written: {cache_path}", file=sys.stderr)
            except BaseException as e:
                self.error = e

    if algorithm == "entropy":

        class EntropyCalibrator(_Calibration, trt.IInt8EntropyCalibrator2):
            def __init__(self) -> None:
                trt.IInt8EntropyCalibrator2.__init__(self)
                self._setup()

        return EntropyCalibrator()

    class MinMaxCalibrator(_Calibration, trt.IInt8MinMaxCalibrator):
        def __init__(self) -> None:
            trt.IInt8MinMaxCalibrator.__init__(self)
            self._setup()

    return MinMaxCalibrator()
