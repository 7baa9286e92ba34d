"""The ``Detector`` apps embed: image(s) in, :class:`Detections` in original pixels out.

Everything model specific (input size, anchors, strides, class names, preprocessing) comes from the
model's own metadata. Steps, each a public numpy building block: :func:`preprocess` (letterbox,
normalise, NCHW) -> ``backend.infer`` -> :func:`decode` fused with the confidence threshold ->
(class filter) -> :func:`batched_nms` / :func:`nms` -> :func:`scale_boxes`.

Batching lives here and only here: a list of images runs in chunks of at most the backend's
``max_batch``, and a short chunk is padded with blank images to ``batch_size`` for a fixed-batch model
(a static TensorRT engine, every DLA engine: their runtime shape must equal the build shape).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from typing import Any, List, Optional, Sequence, Tuple, Union, overload

import numpy as np

from yolo_nano.core.backend import Backend, BackendClosedError
from yolo_nano.core.detections import Detections
from yolo_nano.core.metadata import ModelMetadata
from yolo_nano.core.postprocess import DecodeStats, PostprocessConfig, detections_from_heads
from yolo_nano.core.preprocess import InvalidImageError, LetterboxInfo, preprocess

from .backends import BACKEND_CHOICES, open_backend
from .gpu_pipeline import GpuPipeline, select_pipeline


class Detector:
    """YOLO detector on an exported model.

    ``model``: path to an ``.onnx`` export (ONNX Runtime; CUDA provider if present, else CPU), a
    TensorRT ``.engine`` (needs TensorRT) or ``.safetensors`` weights (needs PyTorch), or a ready
    :class:`~yolo_nano.core.backend.Backend` (see :mod:`yolo_nano.runtime.backends`). ``backend``:
    ``"auto"`` or one of :data:`~yolo_nano.runtime.backends.BACKEND_CHOICES`. ``threads``: CPU threads.

    ``conf_threshold``: keep detections with ``score > conf_threshold`` (score = objectness x class
    probability, in [0, 1]); ``iou_threshold``: NMS drops boxes with IoU above it; ``max_detections``:
    at most this many per image (highest scores); ``class_agnostic``: NMS across classes;
    ``classes``: keep only these class ids or names (None: all).

    ``postprocess``: where letterbox, decode and NMS run. ``"auto"``: on the GPU (CUDA kernels around the
    engine's own buffers, only the detections come back) for a TensorRT engine when the kernels can run
    here, else numpy; ``"gpu"``: the CUDA pipeline or a clear error; ``"cpu"``: numpy.
    :attr:`postprocess_path` says which one runs. Both give the same detections.

    A list of images runs in chunks: the model's fixed batch size (a short last chunk padded with blank
    images), or up to the backend's ``max_batch`` and at most :attr:`max_dynamic_batch` (32) images at
    a time for a dynamic-batch model.

    Calling it is thread safe: one Detector used from several threads gives the results of sequential
    use (no per-call state is stored on the object). :meth:`close` (or ``with Detector(...) as det:``)
    releases the backend the Detector opened from a path (a backend passed in stays its owner's to
    close); calling a closed Detector raises :class:`~yolo_nano.core.backend.BackendClosedError`.
    """

    max_dynamic_batch = 32

    def __init__(
        self,
        model: Any,
        *,
        backend: str = "auto",
        conf_threshold: float = 0.25,
        iou_threshold: float = 0.45,
        max_detections: int = 100,
        class_agnostic: bool = False,
        classes: Optional[Sequence[Union[int, str]]] = None,
        threads: Optional[int] = None,
        postprocess: str = "auto",
    ) -> None:
        if not 0.0 <= float(conf_threshold) <= 1.0:
            raise ValueError(f"conf_threshold must be in [0, 1], got {conf_threshold}")
        if not 0.0 <= float(iou_threshold) <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
        if int(max_detections) < 1:
            raise ValueError(f"max_detections must be >= 1, got {max_detections}")
        self._closed = False
        self._close_lock = threading.Lock()
        self._owns_backend = False
        if isinstance(model, Backend):
            self.backend: Backend = model
        elif isinstance(model, (str, os.PathLike)):
            if backend not in BACKEND_CHOICES:
                raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES)}")
            self.backend = open_backend(os.fspath(model), backend, threads=threads)
            self._owns_backend = True
        else:
            raise TypeError(
                f"model must be a path to .onnx/.engine/.safetensors or a Backend, got {type(model).__name__}"
            )
        self._gpu: Optional[GpuPipeline] = None
        self._stats_lock = threading.Lock()
        self.nonfinite_outputs = 0
        self._warned_nonfinite = False
        try:
            self._configure(conf_threshold, iou_threshold, max_detections, class_agnostic, classes)
            self._gpu = select_pipeline(self.backend, self.config, postprocess)
        except BaseException:
            self.close()  # do not keep a backend we opened when the arguments are bad
            raise

    def _configure(
        self,
        conf_threshold: float,
        iou_threshold: float,
        max_detections: int,
        class_agnostic: bool,
        classes: Optional[Sequence[Union[int, str]]],
    ) -> None:
        self.metadata: ModelMetadata = self.backend.metadata
        self.conf_threshold = float(conf_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        self.class_agnostic = bool(class_agnostic)
        self.classes: Optional[np.ndarray] = self._class_ids(classes)

    def _class_ids(self, classes: Optional[Sequence[Union[int, str]]]) -> Optional[np.ndarray]:
        if classes is None:
            return None
        names = self.metadata.class_names
        ids = []
        for c in classes:
            if isinstance(c, str):
                if c not in names:
                    raise ValueError(f"unknown class name {c!r}; the model's classes are {list(names)}")
                ids.append(names.index(c))
            else:
                if not 0 <= int(c) < len(names):
                    raise ValueError(f"class id {c} out of range 0..{len(names) - 1}")
                ids.append(int(c))
        return np.array(sorted(set(ids)), dtype=np.int64)

    @property
    def config(self) -> PostprocessConfig:
        """The post-processing settings as they are now (the thresholds are plain attributes)."""
        return PostprocessConfig(
            self.conf_threshold, self.iou_threshold, self.max_detections, self.class_agnostic, self.classes
        )

    @property
    def postprocess_path(self) -> str:
        """``"gpu"`` when the CUDA pipeline runs pre- and post-processing, ``"cpu"`` for numpy."""
        return "gpu" if self._gpu is not None else "cpu"

    @property
    def class_names(self) -> Tuple[str, ...]:
        return self.metadata.class_names

    @property
    def input_size(self) -> Tuple[int, int]:
        """Network input (height, width) in pixels."""
        return self.metadata.input_size

    def __repr__(self) -> str:
        h, w = self.input_size
        return (
            f"Detector({self.metadata.arch}, {w}x{h}, {self.metadata.num_classes} classes, "
            f"backend={self.backend.name}, postprocess={self.postprocess_path}, conf={self.conf_threshold}, "
            f"iou={self.iou_threshold})"
        )

    @overload
    def __call__(self, images: np.ndarray) -> Detections: ...

    @overload
    def __call__(self, images: Sequence[np.ndarray]) -> List[Detections]: ...

    def __call__(self, images: Any) -> Any:
        """Detect objects in one HxWx3 uint8 BGR image (returns :class:`Detections`) or a list of them
        (returns a list, run in batches of the model's batch size; a dynamic-batch model takes up to
        :attr:`max_dynamic_batch` at once). Gray (HxW, HxWx1) and BGRA (HxWx4) images are converted to BGR."""
        if isinstance(images, (list, tuple)):
            return self.detect_batch(images)
        if images is None or isinstance(images, np.ndarray):
            return self.detect_batch([images])[0]
        raise InvalidImageError(
            f"expected an HxWx3 uint8 BGR numpy array or a list of them, got {type(images).__name__}"
        )

    def detect_batch(self, images: Sequence[Any]) -> List[Detections]:
        """Detect on a list of images; one :class:`Detections` per image, in order."""
        if self._closed:
            raise BackendClosedError(f"{self!r} is closed")
        if len(images) == 0:
            return []
        stats = DecodeStats()
        if self._gpu is not None:  # chunks, pads and times on its own
            results = self._gpu.detect(images, self.config, stats=stats)
        else:
            chunk = self.chunk_size(len(images))
            results = []
            for start in range(0, len(images), chunk):
                results.extend(self._run_chunk(images[start : start + chunk], stats))
        if stats.nonfinite:
            self._count_nonfinite(stats.nonfinite)
        return results

    def _count_nonfinite(self, count: int) -> None:
        """Add to :attr:`nonfinite_outputs` and warn once per Detector: NaN/inf heads mean overflow."""
        with self._stats_lock:
            self.nonfinite_outputs += count
            first = not self._warned_nonfinite
            self._warned_nonfinite = True
        if first:
            warnings.warn(
                f"{count} non-finite outputs (NaN or inf) were dropped: the engine may overflow in FP16/INT8 "
                "(rebuild it in FP32 or recalibrate to check)",
                RuntimeWarning,
                stacklevel=3,
            )

    def chunk_size(self, num_images: int) -> int:
        """Images per backend call for a list of ``num_images``: the fixed batch size of a fixed-batch
        model, else at most the backend's ``max_batch`` and :attr:`max_dynamic_batch`."""
        fixed = self.backend.batch_size
        if fixed:
            return int(fixed)
        limit = min(int(self.backend.max_batch or self.max_dynamic_batch), self.max_dynamic_batch)
        return max(1, min(num_images, limit))

    def _run_chunk(self, images: Sequence[Any], stats: Optional[DecodeStats] = None) -> List[Detections]:
        """One backend call: preprocess -> infer -> postprocess for at most :meth:`chunk_size` images
        (the step a device-side pipeline replaces). Pads a short chunk for a fixed-batch model."""
        meta = self.metadata
        fixed = self.backend.batch_size
        t0 = time.perf_counter()
        batch, infos = preprocess(images, meta)
        n = batch.shape[0]
        if fixed and n < fixed:  # a fixed-batch model: pad with blank images, drop their outputs below
            batch = np.concatenate([batch, np.zeros((fixed - n,) + batch.shape[1:], np.float32)])
        t1 = time.perf_counter()
        outputs = self.backend.infer(batch)
        t2 = time.perf_counter()
        if fixed and n < fixed:
            outputs = [o[:n] for o in outputs]
        dets = detections_from_heads(outputs, infos, self.metadata, self.config, stats=stats)
        t3 = time.perf_counter()
        share = {
            "preprocess": (t1 - t0) * 1e3 / n,
            "inference": (t2 - t1) * 1e3 / n,
            "postprocess": (t3 - t2) * 1e3 / n,
        }
        for d in dets:
            d.timings = dict(share)
        return dets

    def postprocess(self, outputs: Sequence[np.ndarray], infos: Sequence[LetterboxInfo]) -> List[Detections]:
        """Raw heads (N, A*(5+C), S, S) of N images + their letterbox infos -> one :class:`Detections` each
        (the numpy reference post-process, whichever path :meth:`__call__` runs)."""
        return detections_from_heads(outputs, infos, self.metadata, self.config)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop accepting images and close the backend if this Detector opened it. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._gpu is not None:  # its buffers live in the backend's CUDA context: free them first
            self._gpu.close()
        if self._owns_backend:
            self.backend.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
