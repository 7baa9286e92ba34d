"""CUDA pre- and post-processing around a backend's device buffers: frames in, :class:`Detections` out.

One stream (the backend's), nothing copied that is not needed::

    frames (uint8 BGR, packed) -> letterbox kernel -> engine input buffer -> DeviceIO.execute(n)
    -> decode kernel (fused threshold, atomic compaction) -> sort -> NMS + scale/clip -> count + block

On an integrated GPU (Jetson) the frame buffer and the results are mapped pinned memory: no copies at
all; on a discrete GPU they are pinned host buffers copied asynchronously on the stream. The host gets
per image a count and a fixed (max_detections, 6) block and builds the same :class:`Detections` the
numpy path (:func:`yolo_nano.core.postprocess.detections_from_heads`) returns. The kernels
(``kernels/*.cu``) implement the numpy reference's exact semantics; they run on a real GPU through
:class:`~yolo_nano.runtime.cuda_driver.CudaDriverLauncher` or on the CPU through
:class:`~yolo_nano.runtime.kernel_emu.EmulatedLauncher` (tests), via the same launch interface.

With ``use_graph=True`` the device work of a call is captured in a CUDA graph the second time the same
batch of frame sizes (and settings) comes, and replayed while they stay the same; a change re-captures.

(Over 450 lines: buffers, the stages on one stream, graph capture and the results are one piece of
orchestration whose invariants, such as which buffer a captured graph names, read best in one file.)
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from yolo_nano.core.backend import DeviceIO
from yolo_nano.core.detections import Detections
from yolo_nano.core.postprocess import DecodeStats, PostprocessConfig, decode_thresholds
from yolo_nano.core.preprocess import InvalidImageError, LetterboxInfo, ensure_bgr_uint8, letterbox_params

from .kernel_build import KERNELS, KernelBuildError
from .kernel_launch import Buffer, KernelLauncher, LaunchError, Mirror

FALLBACK_HINT = "use the numpy post-processing instead: Detector(..., postprocess='cpu')"
#: device-side stages, in order (``GpuPipeline.last_timings`` keys, milliseconds)
STAGES = ("upload", "letterbox", "inference", "decode", "sort", "nms", "download")


class GpuPipelineUnavailable(RuntimeError):
    """The CUDA pipeline cannot run here for this backend (message says why and names the fallback)."""


class GpuPipelineError(RuntimeError):
    """A device call failed during detection (the message names the stage and the CUDA error)."""


def _next_pow2(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def _default_launcher(cache: Any) -> KernelLauncher:
    from .cuda_driver import CudaDriverLauncher, CudaUnavailable

    try:
        return CudaDriverLauncher(cache)
    except (CudaUnavailable, LaunchError) as e:
        raise GpuPipelineUnavailable(
            f"no usable CUDA device for the CUDA pipeline ({e}); {FALLBACK_HINT}"
        ) from e


class GpuPipeline:
    """Run a backend with CUDA pre/post-processing.

    ``backend``: a :class:`~yolo_nano.core.backend.Backend` whose :meth:`device_io` gives device buffers
    (TensorRT; tests: an emulated device backend). ``config``: the default
    :class:`~yolo_nano.core.postprocess.PostprocessConfig` (each call may pass another). ``launcher``:
    the device (default: the backend's ``kernel_launcher`` attribute when it has one, else the CUDA
    driver in the backend's context). ``cache``: the kernel cache folder. Raises
    :class:`GpuPipelineUnavailable` when it cannot run (no device buffers, unsupported output dtype, no
    compiler for the kernels: the message names the install step and the numpy fallback).

    :meth:`detect` is thread safe (calls are serialised on the pipeline and the backend's lock).
    """

    def __init__(
        self,
        backend: Any,
        config: Optional[PostprocessConfig] = None,
        launcher: Optional[KernelLauncher] = None,
        *,
        use_graph: bool = False,
        cache: Any = None,
    ) -> None:
        io: Optional[DeviceIO] = backend.device_io() if hasattr(backend, "device_io") else None
        if io is None:
            raise GpuPipelineUnavailable(
                f"backend {getattr(backend, 'name', type(backend).__name__)!r} keeps its tensors on the host "
                f"(no device_io); the CUDA pipeline needs a GPU backend such as TensorRT; {FALLBACK_HINT}"
            )
        self.backend = backend
        self.io = io
        self.meta = meta = backend.metadata
        self.config = config if config is not None else PostprocessConfig()
        self.use_graph = bool(use_graph)
        h, w = meta.input_size
        self._input_hw = (int(h), int(w))
        self.max_batch = int(io.max_batch)
        self._check_io(io)
        self._context = io.context if io.context is not None else contextlib.nullcontext()
        self._io_lock = io.lock if io.lock is not None else threading.RLock()
        self._lock = threading.RLock()
        self._owns_launcher = False
        self._buffers: List[Any] = []
        self._graph: Any = None
        self._graph_key: Any = None
        self._last_key: Any = None
        self._closed = False
        self.last_timings: Dict[str, float] = {}
        with self._io_lock, self._context:
            if launcher is None:
                launcher = getattr(backend, "kernel_launcher", None)
            if launcher is None:
                launcher = _default_launcher(cache)
                self._owns_launcher = True
            self.launcher: KernelLauncher = launcher
            try:
                launcher.load_kernels()
                self._allocate()
            except (KernelBuildError, LaunchError) as e:
                self._closed = True
                for item in list(self._buffers):
                    with contextlib.suppress(Exception):
                        self._release(item)
                if self._owns_launcher:
                    launcher.close()
                hint = "" if "postprocess='cpu'" in str(e) else f"; {FALLBACK_HINT}"
                raise GpuPipelineUnavailable(f"the CUDA pipeline cannot start: {e}{hint}") from e

    # -- setup ------------------------------------------------------------------------------------

    def _check_io(self, io: DeviceIO) -> None:
        meta = self.meta
        for head in meta.heads:
            want = meta.head_shape(head, self.max_batch)
            got = tuple(io.output_shapes.get(head.name, ()))
            dtype = np.dtype(io.output_dtypes.get(head.name, np.float32))
            if got != tuple(want):
                raise GpuPipelineUnavailable(
                    f"output {head.name!r} has shape {got}, the metadata implies {tuple(want)}; {FALLBACK_HINT}"
                )
            if dtype != np.float32:
                raise GpuPipelineUnavailable(
                    f"output {head.name!r} is {dtype}; the decode kernel reads float32 heads (build the engine "
                    f"with float32 outputs); {FALLBACK_HINT}"
                )

    def _allocate(self) -> None:
        meta, launcher, nb = self.meta, self.launcher, self.max_batch
        self.total = sum(
            hd.num_anchors * (self._input_hw[0] // hd.stride) * (self._input_hw[1] // hd.stride)
            for hd in meta.heads
        )
        self.key_cap = _next_pow2(self.total)
        self._heads = self._mirror(np.int64, (len(meta.heads), 8))
        self._anchors = self._mirror(np.float64, (sum(hd.num_anchors for hd in meta.heads), 2))
        first_anchor = first_cand = 0
        for k, hd in enumerate(meta.heads):
            sh, sw = self._input_hw[0] // hd.stride, self._input_hw[1] // hd.stride
            ptr = self.io.output_ptrs[hd.name]
            self._heads.array[k] = (ptr, sh, sw, hd.num_anchors, hd.stride, first_anchor, first_cand, 0)
            self._anchors.array[first_anchor : first_anchor + hd.num_anchors] = hd.anchors
            first_anchor += hd.num_anchors
            first_cand += hd.num_anchors * sh * sw
        self._class_mask = self._mirror(np.int32, (max(meta.num_classes, 1),))
        self._mask_for: Any = None
        self._params = self._mirror(np.int64, (nb, 8))
        self._boxmap = self._mirror(np.float32, (nb, 6))
        # per image (survivors, non-finite) from decode, then per image the kept count from nms
        self._tallies = self._mirror(np.int32, (3 * nb,))
        self._records = self._device(nb * self.total * 8 * 4)
        self._keys = self._device(nb * self.key_cap * 8)
        self._frames: Optional[Mirror] = None
        self._out: Optional[Mirror] = None
        self._out_rows = 0
        stream = self.io.stream
        self._heads.upload(stream)
        self._anchors.upload(stream)
        launcher.synchronize(stream)

    def _mirror(self, dtype: Any, shape: Tuple[int, ...]) -> Mirror:
        m = Mirror(self.launcher, dtype, shape)
        self._buffers.append(m)
        return m

    def _device(self, nbytes: int) -> Buffer:
        b = self.launcher.alloc_device(nbytes)
        self._buffers.append(b)
        return b

    def _release(self, item: Any) -> None:
        self._buffers.remove(item)
        if isinstance(item, Mirror):
            item.free()
        else:
            self.launcher.free(item)

    def _drop_graph(self) -> None:
        if self._graph is not None:
            self.launcher.destroy_graph(self._graph)
        self._graph = self._graph_key = None

    def _prepare(self, config: PostprocessConfig, frame_bytes: int) -> None:
        """Grow the frame buffer and the output block when needed; write the class mask."""
        stream = self.io.stream
        if self._frames is None or self._frames.nbytes < frame_bytes:
            if self._frames is not None:
                self._release(self._frames)
            self._frames = None
            self._drop_graph()  # captured copies and launches name the old buffer
            self._frames = self._mirror(np.uint8, (max(frame_bytes + frame_bytes // 4, 1 << 16),))
        rows = int(config.max_detections)
        if rows < 1:
            raise ValueError(f"max_detections must be >= 1, got {config.max_detections}")
        if self._out is None or self._out_rows < rows:
            if self._out is not None:
                self._release(self._out)
            self._out = None
            self._drop_graph()
            self._out = self._mirror(np.float32, (self.max_batch * rows * 6,))  # viewed (n, rows, 6) per call
            self._out_rows = rows
        mask = (
            None
            if config.classes is None
            else tuple(sorted(int(c) for c in np.asarray(config.classes).reshape(-1)))
        )
        if mask is not None and mask != self._mask_for:
            arr = self._class_mask.array
            arr[:] = 0
            ids = np.asarray([c for c in mask if 0 <= c < arr.size], np.int64)
            arr[ids] = 1
            self._class_mask.upload(stream)
            self.launcher.synchronize(stream)
            self._mask_for = mask

    # -- running ----------------------------------------------------------------------------------

    def detect(
        self,
        images: Sequence[Any],
        config: Optional[PostprocessConfig] = None,
        stats: Optional[DecodeStats] = None,
    ) -> List[Detections]:
        """Detect on a list of HxWx3 uint8 BGR images (gray and BGRA converted, same errors as the numpy
        path); one :class:`Detections` per image, equal to the numpy path's. Batches larger than the
        engine's are run in chunks; a short batch on a fixed-batch engine is padded. ``stats``: non-finite
        outputs are counted into it (see :class:`~yolo_nano.core.postprocess.DecodeStats`)."""
        if isinstance(images, np.ndarray) or images is None:
            raise InvalidImageError("detect takes a list of images; wrap a single image as [image]")
        if len(images) == 0:
            return []
        name = (lambda i: f"image {i}") if len(images) > 1 else (lambda i: "image")
        frames = [ensure_bgr_uint8(im, name=name(i)) for i, im in enumerate(images)]
        out: List[Detections] = []
        for start in range(0, len(frames), self.max_batch):
            out.extend(
                self._detect_chunk(frames[start : start + self.max_batch], config or self.config, stats)
            )
        return out

    def _layout(self, frames: Sequence[np.ndarray]) -> Tuple[List[LetterboxInfo], List[Tuple[int, ...]], int]:
        """Letterbox infos, the letterbox kernel's per-frame params (byte offset in the frame buffer,
        h0, w0, nh, nw, left, top, 0) and the frame bytes in all (each frame 256-byte aligned)."""
        infos, layout, offset = [], [], 0
        for f in frames:
            info, (nh, nw) = letterbox_params(f.shape[:2], self._input_hw)
            infos.append(info)
            layout.append((offset, f.shape[0], f.shape[1], nh, nw, info.pad[0], info.pad[1], 0))
            offset += (f.nbytes + 255) // 256 * 256
        return infos, layout, offset

    def _stage(
        self, frames: Sequence[np.ndarray], layout: Sequence[Tuple[int, ...]], infos: Sequence[LetterboxInfo]
    ) -> None:
        """Write the frames, the letterbox params and the box mapping into their host buffers."""
        if frames:
            assert self._frames is not None
            for f, row in zip(frames, layout):
                self._frames.array[row[0] : row[0] + f.nbytes] = f.reshape(-1)
            self._params.array[: len(layout)] = layout
        self._boxmap.array[: len(infos)] = [
            (i.pad[0], i.pad[1], np.float32(i.scale), i.original_shape[1], i.original_shape[0], 0)
            for i in infos
        ]

    def _detect_chunk(
        self, frames: List[np.ndarray], config: PostprocessConfig, stats: Optional[DecodeStats]
    ) -> List[Detections]:
        t0 = time.perf_counter()
        n = len(frames)
        infos, layout, frame_bytes = self._layout(frames)
        with self._lock, self._io_lock, self._context:
            self._check_open()
            self._prepare(config, frame_bytes)
            self._stage(frames, layout, infos)
            t1 = time.perf_counter()
            key = (n, tuple(f.shape[:2] for f in frames), self._config_key(config))
            device = self._run(n, frame_bytes, config, key, letterbox=True, infer=True)
            t2 = time.perf_counter()
            dets = self._results(n, infos, config, stats)
        t3 = time.perf_counter()
        host_pre, host_post = (t1 - t0) * 1e3, (t3 - t2) * 1e3
        if "graph" in device:
            share = {"preprocess": host_pre, "inference": device["graph"], "postprocess": host_post}
        else:
            post = sum(device[k] for k in ("decode", "sort", "nms", "download"))
            share = {
                "preprocess": host_pre + device["upload"] + device["letterbox"],
                "inference": device["inference"],
                "postprocess": post + host_post,
            }
        self.last_timings = dict(device, host_prepare=host_pre, host_results=host_post)
        for d in dets:
            d.timings = {k: v / n for k, v in share.items()}
        return dets

    def postprocess(
        self,
        n: int,
        infos: Sequence[LetterboxInfo],
        config: Optional[PostprocessConfig] = None,
        stats: Optional[DecodeStats] = None,
    ) -> List[Detections]:
        """Decode + NMS + scaling of the raw heads already in the backend's output buffers (first ``n``
        images; ``infos`` their letterboxes): the post-process alone, for tests and benchmarks."""
        config = config or self.config
        if not 1 <= n <= self.max_batch or len(infos) != n:
            raise ValueError(f"postprocess takes 1..{self.max_batch} images with one LetterboxInfo each")
        with self._lock, self._io_lock, self._context:
            self._check_open()
            self._prepare(config, 0)
            self._stage([], [], infos)
            device = self._run(n, 0, config, None, letterbox=False, infer=False)
            self.last_timings = dict(device)
            return self._results(n, infos, config, stats)

    def preprocess(self, images: Sequence[Any]) -> np.ndarray:
        """Letterbox ``images`` on the device and return the engine input batch (n, 3, H, W) float32 (a
        copy): what :func:`yolo_nano.core.preprocess.preprocess` computes on the host."""
        frames = [ensure_bgr_uint8(im, name=f"image {i}") for i, im in enumerate(images)]
        if not 1 <= len(frames) <= self.max_batch:
            raise ValueError(f"preprocess takes 1..{self.max_batch} images")
        n = len(frames)
        h, w = self._input_hw
        infos, layout, frame_bytes = self._layout(frames)
        with self._lock, self._io_lock, self._context:
            self._check_open()
            self._prepare(self.config, frame_bytes)
            self._stage(frames, layout, infos)
            self._run(n, frame_bytes, self.config, None, letterbox=True, infer=False, decode=False)
            if self.io.input_host is not None:
                return np.array(self.io.input_host[:n], dtype=np.float32, copy=True)
            result = self.launcher.alloc_host(n * 3 * h * w * 4, mapped=False)
            try:
                host = result.view(np.float32, (n, 3, h, w))
                self.launcher.copy_dtoh(host, self.io.input_ptr, self.io.stream)
                self.launcher.synchronize(self.io.stream)
                return host.copy()
            finally:
                self.launcher.free(result)

    def _config_key(self, config: PostprocessConfig) -> Tuple[Any, ...]:
        classes = None if config.classes is None else tuple(np.asarray(config.classes).reshape(-1).tolist())
        return (
            float(config.conf_threshold),
            float(config.iou_threshold),
            int(config.max_detections),
            bool(config.class_agnostic),
            classes,
        )

    def _run(
        self,
        n: int,
        frame_bytes: int,
        config: PostprocessConfig,
        key: Any,
        *,
        letterbox: bool,
        infer: bool,
        decode: bool = True,
    ) -> Dict[str, float]:
        """Queue the stages and wait; device milliseconds per stage. Faults become GpuPipelineError."""
        launcher, stream = self.launcher, self.io.stream
        stage = "setup"
        try:
            if key is not None and self.use_graph:
                stage = "graph"
                return self._run_graph(n, frame_bytes, config, key)
            events: List[Tuple[str, Any]] = [("start", launcher.record_event(stream))]

            def mark(name: str) -> None:
                events.append((name, launcher.record_event(stream)))

            for stage in self._enqueue(n, frame_bytes, config, letterbox, infer, decode):
                mark(stage)
            stage = "synchronize"
            launcher.synchronize(stream)
            times = {name: launcher.elapsed_ms(a, b) for (_, a), (name, b) in zip(events, events[1:])}
            for _, ev in events:
                launcher.release_event(ev)
            return {s: times.get(s, 0.0) for s in STAGES}
        except LaunchError as e:
            raise GpuPipelineError(f"CUDA pipeline failed (after stage {stage!r}): {e}") from e

    def _enqueue(
        self, n: int, frame_bytes: int, config: PostprocessConfig, letterbox: bool, infer: bool, decode: bool
    ) -> Any:
        """Queue every stage on the stream; yields each stage's name after queueing it."""
        launcher, io, meta, stream = self.launcher, self.io, self.meta, self.io.stream
        h, w = self._input_hw
        assert self._out is not None and self._frames is not None
        if letterbox:
            self._frames.upload(stream, frame_bytes)
            self._params.upload(stream, n * 8 * 8)
        self._boxmap.upload(stream, n * 6 * 4)
        launcher.memset_d32(self._tallies.ptr, 0, 2 * n, stream)
        yield "upload"
        if letterbox:
            mean, std = [np.float32(m) for m in meta.mean], [np.float32(s) for s in meta.std]
            plain = int(all(m == 0.0 for m in meta.mean) and all(s == 1.0 for s in meta.std))
            args = (self._frames.ptr, self._params.ptr, io.input_ptr, h, w, int(meta.pad_value))
            args += (int(meta.channel_order == "RGB"), np.float32(meta.scale), *mean, *std, plain)
            launcher.launch(
                "letterbox", ((w + 15) // 16, (h + 15) // 16, n), KERNELS["letterbox"].block, args, stream
            )
            yield "letterbox"
        if infer:
            run_n = self.max_batch if io.fixed_batch else n
            if run_n > n:  # a fixed-batch engine: blank images after the real ones, as the numpy path
                per_image = 3 * h * w
                launcher.memset_d32(io.input_ptr + n * per_image * 4, 0, (run_n - n) * per_image, stream)
            io.execute(run_n)
            yield "inference"
        if not decode:
            return
        logit_thr, conf = decode_thresholds(config.conf_threshold)
        mask = None if config.classes is None else self._class_mask.ptr
        args = (self._heads.ptr, len(meta.heads), self._anchors.ptr, meta.num_classes)
        args += (int(meta.class_activation == "softmax"), logit_thr, conf, mask, self.total, self.key_cap)
        args += (self._records.ptr, self._keys.ptr, self._tallies.ptr)
        launcher.launch("decode", ((self.total + 127) // 128, n, 1), KERNELS["decode"].block, args, stream)
        yield "decode"
        args = (self._keys.ptr, self._tallies.ptr, self.key_cap)
        launcher.launch("sort_candidates", (n, 1, 1), KERNELS["sort_candidates"].block, args, stream)
        yield "sort"
        rows = int(config.max_detections)
        kept_ptr = self._tallies.ptr + 2 * self.max_batch * 4
        args = (
            self._keys.ptr,
            self._records.ptr,
            self._tallies.ptr,
            self._boxmap.ptr,
            self._out.ptr,
            kept_ptr,
        )
        args += (
            self.total,
            self.key_cap,
            rows,
            np.float32(config.iou_threshold),
            int(bool(config.class_agnostic)),
        )
        launcher.launch("nms", (n, 1, 1), KERNELS["nms"].block, args, stream)
        yield "nms"
        self._tallies.download(stream)
        self._out.download(stream, n * rows * 6 * 4)
        yield "download"

    def _run_graph(self, n: int, frame_bytes: int, config: PostprocessConfig, key: Any) -> Dict[str, float]:
        """Replay the captured graph for ``key``; capture it the second time a key comes in a row (the
        first run is plain, so TensorRT has set up for the shape before its enqueue is captured)."""
        launcher, stream = self.launcher, self.io.stream
        if self._graph_key != key:
            self._drop_graph()
            if self._last_key != key:  # first time: run without a graph
                self._last_key = key
                times = self._run(n, frame_bytes, config, None, letterbox=True, infer=True)
                return times
            launcher.begin_capture(stream)
            try:
                for _ in self._enqueue(n, frame_bytes, config, True, True, True):
                    pass
            except BaseException:
                with contextlib.suppress(Exception):
                    launcher.destroy_graph(launcher.end_capture(stream))
                raise
            self._graph = launcher.end_capture(stream)
            self._graph_key = key
        start = launcher.record_event(stream)
        launcher.launch_graph(self._graph, stream)
        end = launcher.record_event(stream)
        launcher.synchronize(stream)
        ms = launcher.elapsed_ms(start, end)
        launcher.release_event(start)
        launcher.release_event(end)
        return {"graph": ms}

    def _results(
        self, n: int, infos: Sequence[LetterboxInfo], config: PostprocessConfig, stats: Optional[DecodeStats]
    ) -> List[Detections]:
        assert self._out is not None
        tallies = self._tallies.array
        counts = tallies[: 2 * n].reshape(n, 2).copy()
        kept = tallies[2 * self.max_batch : 2 * self.max_batch + n].copy()
        if stats is not None:
            stats.nonfinite += int(counts[:, 1].sum())
        rows_per_image = int(config.max_detections)
        out = self._out.array[: n * rows_per_image * 6].reshape(n, rows_per_image, 6)
        dets = []
        for i, info in enumerate(infos):
            k = int(kept[i])
            if not 0 <= k <= rows_per_image:
                raise GpuPipelineError(
                    f"CUDA pipeline returned {k} detections for image {i} (corrupt results)"
                )
            rows = out[i, :k]
            dets.append(
                Detections(
                    boxes=np.array(rows[:, :4], dtype=np.float32),
                    scores=np.array(rows[:, 4], dtype=np.float32),
                    class_ids=rows[:, 5].astype(np.int64),
                    class_names=self.meta.class_names,
                    image_shape=info.original_shape,
                )
            )
        return dets

    # -- lifecycle --------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise GpuPipelineError("the CUDA pipeline is closed")

    def close(self) -> None:
        """Free the pipeline's device memory (and its launcher when it made one). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with self._io_lock, self._context:
                self._drop_graph()
                for item in list(self._buffers):
                    with contextlib.suppress(Exception):
                        self._release(item)
                if self._owns_launcher:
                    self.launcher.close()

    def __enter__(self) -> GpuPipeline:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


POSTPROCESS_CHOICES = ("auto", "cpu", "gpu")


def select_pipeline(
    backend: Any, config: PostprocessConfig, postprocess: str = "auto", **kwargs: Any
) -> Optional[GpuPipeline]:
    """The :class:`GpuPipeline` a Detector should run, or ``None`` for the numpy path.

    ``postprocess``: ``"cpu"``: ``None``. ``"gpu"``: a pipeline, or :class:`GpuPipelineUnavailable`
    saying why not and what to do. ``"auto"``: a pipeline when the backend has device buffers
    (TensorRT) and the kernels can run here; a host backend (ONNX Runtime) quietly gets ``None``, a GPU
    backend whose pipeline cannot start gets ``None`` and one warning with the reason. ``kwargs`` go to
    :class:`GpuPipeline` (``launcher``, ``use_graph``, ``cache``).
    """
    if postprocess not in POSTPROCESS_CHOICES:
        raise ValueError(f"postprocess must be one of {', '.join(POSTPROCESS_CHOICES)}, got {postprocess!r}")
    if postprocess == "cpu":
        return None
    try:
        if postprocess == "auto" and (not hasattr(backend, "device_io") or backend.device_io() is None):
            return None
        return GpuPipeline(backend, config, **kwargs)
    except (
        Exception
    ) as e:  # auto: whatever stops the pipeline starting (driver, compiler) falls back to numpy
        if postprocess == "gpu":
            if isinstance(e, GpuPipelineUnavailable):
                raise
            raise GpuPipelineUnavailable(
                f"the CUDA pipeline cannot start ({type(e).__name__}: {e}); {FALLBACK_HINT}"
            ) from e
        warnings.warn(f"CUDA post-processing unavailable, using numpy: {e}", RuntimeWarning, stacklevel=2)
        return None


__all__ = [
    "POSTPROCESS_CHOICES",
    "STAGES",
    "GpuPipeline",
    "GpuPipelineError",
    "GpuPipelineUnavailable",
    "select_pipeline",
]
