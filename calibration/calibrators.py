"""TensorRT INT8 calibrators (EntropyCalibrator2, the default, and MinMax) over the one batcher.

Only TensorRT 8.x and 10.x have them (weakly typed builds); 11.x builds INT8 from a Q/DQ ONNX instead.
They subclass TensorRT classes, so they are created lazily by :func:`make_calibrator` (TensorRT and
pycuda are imported there, never at module import). The caller must have a CUDA context current
(``nano-build`` pushes the device's primary context).

Calibration is all or nothing. TensorRT calls these methods from C++ and cannot propagate a Python
exception, so the first exception (a CUDA error, an unreadable image) is kept in ``error``, handed to
``on_error`` at once (the builder uses it to cancel the build) and every later batch request answers
"no more batches", as it does once ``stop()`` says so (Ctrl-C: the builder's SIGINT handler). A
calibration TensorRT ends before the last batch is an error too. The cache TensorRT hands back is only
*kept* (``cache``): nothing is written here. The builder writes the cache and its sidecar after
TensorRT returns, and only when nothing failed.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

import numpy as np

from .batcher import CalibrationBatcher, CalibrationDataError
from .cache import ALGORITHMS, CalibrationCache

ErrorHook = Callable[[BaseException], None]

#: The TensorRT majors whose API this module uses (the calibrator classes are gone in 11); read by
#: tests/engines/test_trt_api.py like ``@tensorrt_path`` marks in engines/.
TENSORRT_MAJORS = (8, 10)


def make_calibrator(
    algorithm: str,
    batch_size: int,
    batcher: Optional[CalibrationBatcher] = None,
    cache_bytes: Optional[bytes] = None,
    on_error: Optional[ErrorHook] = None,
    stop: Optional[Callable[[], bool]] = None,
) -> Any:
    """A ``tensorrt.IInt8EntropyCalibrator2`` (``algorithm="entropy"``) or ``IInt8MinMaxCalibrator``
    (``"minmax"``) with batches of ``batch_size``.

    Calibrating: give ``batcher`` (its batch size must be ``batch_size``); afterwards ``cache`` holds the
    cache TensorRT wrote (parsed and checked) and ``batches`` how many batches were fed. Reusing: give
    ``cache_bytes`` (no images are read). ``error`` holds the first exception raised inside a callback,
    or None; ``on_error`` is called with it as soon as it happens. ``stop()`` True ends the batches.
    """
    import tensorrt as trt

    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"unknown TensorRT calibration algorithm {algorithm!r}; choose one of {sorted(ALGORITHMS)}"
        )
    if (batcher is None) == (cache_bytes is None):
        raise ValueError("give exactly one of batcher (calibrate) or cache_bytes (reuse a cache)")
    if batcher is not None and batcher.batch_size != batch_size:
        raise ValueError(f"the batcher makes batches of {batcher.batch_size}, the engine needs {batch_size}")
    cuda: Any = None
    if batcher is not None:  # replaying a cache needs no device memory
        import pycuda.driver as _cuda  # the caller has pushed a context

        cuda = _cuda

    class _Calibration:
        """The callbacks TensorRT calls, shared by both calibrator classes."""

        def _setup(self) -> None:
            self.error: Optional[BaseException] = None
            self.cache: Optional[bytes] = None
            self.batches = 0
            self._iter = iter(batcher) if batcher is not None else None
            self._device: Any = None
            if batcher is not None:
                h, w = batcher.meta.input_size
                nbytes = batch_size * 3 * h * w * np.dtype(np.float32).itemsize
                self._device = cuda.mem_alloc(nbytes)

        def _fail(self, e: BaseException) -> None:
            if self.error is None:
                self.error = e
                if on_error is not None:
                    on_error(e)

        def release(self) -> None:
            """Free the device batch buffer (call before the CUDA context goes) and close the batches."""
            close = getattr(self._iter, "close", None)
            if close is not None:  # a calibration stopped early: end the batcher (its progress bar)
                close()
            if self._device is not None:
                self._device.free()
                self._device = None

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: List[str]) -> List[int]:
            """Device pointers of the next batch; ``[]`` when done or after any error."""
            if self._iter is None or self.error is not None or (stop is not None and stop()):
                return []
            try:
                batch = next(self._iter, None)
                if batcher is not None and batcher.skipped:
                    raise CalibrationDataError(
                        f"calibration stopped at an unreadable image ({batcher.skip_reasons[0]}): fix or remove "
                        "it and calibrate again (a calibration that skipped images is not kept)"
                    )
                if batch is None:
                    return []
                cuda.memcpy_htod(self._device, np.ascontiguousarray(batch, dtype=np.float32))
                self.batches += 1
                return [int(self._device)]
            except BaseException as e:  # TensorRT cannot propagate it: keep it, stop the batches
                self._fail(e)
                return []

        def read_calibration_cache(self) -> Optional[bytes]:
            return cache_bytes

        def write_calibration_cache(self, cache: Any) -> None:
            if batcher is None or self.error is not None or (stop is not None and stop()):
                return
            try:
                if self.batches < len(batcher):
                    raise CalibrationDataError(
                        f"TensorRT ended calibration after {self.batches} of {len(batcher)} batches"
                    )
                data = bytes(cache)
                CalibrationCache.parse(data, source="cache written by TensorRT")
                self.cache = data
            except BaseException as e:
                self._fail(e)

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
