"""Self-check of the CUDA kernels against the numpy reference, on a GPU or on the CPU emulation.

    python -m yolo_nano.runtime.kernel_check [--gpu] [--time]

Runs every kernel through :class:`~yolo_nano.runtime.gpu_pipeline.GpuPipeline` on synthetic cases and
prints one line per kernel: letterbox (frames 1x1, 1x4000, 4000x1, 640x480, 1920x1080 and a mixed
batch; max difference in grey levels), decode and sort (random logits, every one of the 10647
candidates passing at 416, equal scores, NaN/inf, none; NMS off so the sorted candidates are compared),
nms (the whole post-process against ``detections_from_heads``). ``--gpu`` uses the CUDA driver (else the
CPU emulation); ``--time`` (GPU) adds per-kernel and whole post-process times for 1, 100 and 10647
candidates next to numpy's. Exit status 0 when every kernel agrees.

:class:`DeviceBuffersBackend` is a backend made of device buffers only (no network), used here, by
``scripts/gpu-check.sh`` and, with ONNX Runtime as its ``run``, by the tests' emulated device backend.
(Over 450 lines: the cases, the checks and the timings are one self-test, shared by three callers.)
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from yolo_nano.core.backend import Backend, DeviceIO
from yolo_nano.core.metadata import VOC_CLASSES, HeadSpec, ModelMetadata
from yolo_nano.core.postprocess import DecodeStats, PostprocessConfig, decode, detections_from_heads
from yolo_nano.core.preprocess import LetterboxInfo, preprocess

from .kernel_launch import Buffer, KernelLauncher

YOLO_ANCHORS = (
    ((116.0, 90.0), (156.0, 198.0), (373.0, 326.0)),
    ((30.0, 61.0), (62.0, 45.0), (59.0, 119.0)),
    ((10.0, 13.0), (16.0, 30.0), (33.0, 23.0)),
)
FRAME_SHAPES = ((1, 1), (1, 4000), (4000, 1), (480, 640), (1080, 1920))


def synthetic_metadata(
    size: int = 416, classes: Sequence[str] = VOC_CLASSES, activation: str = "sigmoid"
) -> ModelMetadata:
    """YOLO Nano's output layout at ``size``: three heads (strides 32, 16, 8), three anchors each."""
    heads = tuple(HeadSpec(f"head_s{s}", s, a) for s, a in zip((32, 16, 8), YOLO_ANCHORS))
    return ModelMetadata(
        arch="yolo-nano",
        class_names=tuple(classes),
        input_size=(size, size),
        heads=heads,
        class_activation=activation,
    )


class DeviceBuffersBackend(Backend):
    """A backend that is only device buffers: the input (max_batch, 3, H, W) and the raw head buffers,
    allocated by ``launcher`` (mapped host memory where the device is integrated). ``execute(n)`` queues
    ``run(n)`` on the host in stream order (``None``: the heads hold whatever was written into them)."""

    name = "device-buffers"

    def __init__(
        self,
        metadata: ModelMetadata,
        launcher: KernelLauncher,
        max_batch: int = 1,
        fixed_batch: bool = False,
        run: Optional[Callable[[int], None]] = None,
        stream: int = 0,
    ) -> None:
        self.metadata = metadata
        self.kernel_launcher = launcher
        self.max_batch = int(max_batch)
        self.batch_size = self.max_batch if fixed_batch else None
        self.stream = stream
        self._run = run
        h, w = metadata.input_size
        self.shapes: Dict[str, Tuple[int, ...]] = {metadata.input_name: (self.max_batch, 3, h, w)}
        for hd in metadata.heads:
            self.shapes[hd.name] = tuple(metadata.head_shape(hd, self.max_batch))
        self.buffers: Dict[str, Buffer] = {}
        for name, shape in self.shapes.items():
            nbytes = int(np.prod(shape)) * 4
            mapped = launcher.integrated
            self.buffers[name] = (
                launcher.alloc_host(nbytes, mapped=True) if mapped else launcher.alloc_device(nbytes)
            )
        self.executed: List[int] = []

    def host_array(self, name: str) -> Optional[np.ndarray]:
        """The buffer as a float32 array when the host can address it (mapped memory, the emulation)."""
        buf = self.buffers[name]
        shape = self.shapes[name]
        if buf.host is not None:
            return buf.view(np.float32, shape)
        owner = buf.owner
        if isinstance(owner, np.ndarray):  # the emulation: "device" memory is a host array
            return owner[: buf.nbytes].view(np.float32).reshape(shape)
        return None

    def write_heads(self, outputs: Sequence[np.ndarray]) -> None:
        """Put raw heads (n, A*(5+C), S, S) float32, metadata order, into the head buffers."""
        for hd, out in zip(self.metadata.heads, outputs):
            arr = np.ascontiguousarray(out, dtype=np.float32)
            view = self.host_array(hd.name)
            if view is not None:
                view[: arr.shape[0]] = arr
            else:
                self.kernel_launcher.copy_htod(self.buffers[hd.name].ptr, arr, self.stream)
        self.kernel_launcher.synchronize(self.stream)

    def _execute(self, n: int) -> None:
        if not 1 <= n <= self.max_batch or (self.batch_size and n != self.batch_size):
            raise ValueError(
                f"execute({n}): this backend takes 1..{self.max_batch} (fixed: {self.batch_size})"
            )
        self.executed.append(n)
        if self._run is not None:
            run = self._run
            self.kernel_launcher.host_call(lambda: run(n), self.stream)

    def device_io(self) -> DeviceIO:
        meta = self.metadata
        return DeviceIO(
            stream=self.stream,
            input_ptr=self.buffers[meta.input_name].ptr,
            output_ptrs={hd.name: self.buffers[hd.name].ptr for hd in meta.heads},
            output_shapes={hd.name: self.shapes[hd.name] for hd in meta.heads},
            output_dtypes={hd.name: np.dtype(np.float32) for hd in meta.heads},
            max_batch=self.max_batch,
            fixed_batch=self.batch_size is not None,
            execute=self._execute,
            input_host=self.host_array(meta.input_name)
            if self.buffers[meta.input_name].host is not None
            else None,
        )

    def infer(self, batch: np.ndarray) -> List[np.ndarray]:
        raise NotImplementedError("DeviceBuffersBackend runs only through device_io()")

    def close(self) -> None:
        if not self._closed:
            for buf in self.buffers.values():
                self.kernel_launcher.free(buf)
        super().close()


# -- cases ----------------------------------------------------------------------------------------


def random_heads(
    meta: ModelMetadata, n: int, rng: np.random.Generator, *, obj_mean: float = -6.0, spread: float = 2.0
) -> List[np.ndarray]:
    """Raw heads of ``n`` images with normal logits (objectness around ``obj_mean``)."""
    outs = []
    for hd in meta.heads:
        shape = meta.head_shape(hd, n)
        x = rng.normal(0.0, spread, shape).astype(np.float32)
        v = x.reshape(n, hd.num_anchors, 5 + meta.num_classes, shape[2], shape[3])
        v[:, :, 4] += np.float32(obj_mean)
        outs.append(x)
    return outs


def special_heads(meta: ModelMetadata, kind: str, rng: np.random.Generator) -> List[np.ndarray]:
    """One image's heads for the named case: ``"all-pass"`` (every candidate above any threshold),
    ``"equal-scores"`` (identical logits everywhere: every score ties), ``"nonfinite"`` (NaN and inf
    sprinkled over objectness, boxes and classes), ``"none"`` (nothing passes)."""
    outs = random_heads(meta, 1, rng, obj_mean=0.0)
    for x in outs:
        v = x.reshape(1, -1, 5 + meta.num_classes, x.shape[2], x.shape[3])
        if kind == "all-pass":
            v[:, :, 4] = np.abs(v[:, :, 4]) + 8.0
        elif kind == "equal-scores":
            v[:, :, 4] = 3.0
            v[:, :, 5:] = 0.0
            v[:, :, 5 + 7] = 4.0
        elif kind == "nonfinite":
            v[:, :, 4] += 3.0
            flat = x.reshape(-1)
            for value in (np.nan, np.inf, -np.inf):
                flat[rng.choice(flat.size, max(1, flat.size // 200), replace=False)] = value
        elif kind == "none":
            v[:, :, 4] = -40.0
        else:
            raise ValueError(kind)
    return outs


def random_frames(shapes: Sequence[Tuple[int, int]], rng: np.random.Generator) -> List[np.ndarray]:
    """Smooth-ish random BGR frames (noise plus a gradient, so resizing has something to interpolate)."""
    frames = []
    for h, w in shapes:
        base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ramp = (np.arange(w)[None, :, None] * 255 // max(w - 1, 1)).astype(np.uint8)
        frames.append(
            np.where(rng.random((h, w, 1)) < 0.5, base, np.broadcast_to(ramp, (h, w, 3))).astype(np.uint8)
        )
    return frames


def identity_infos(meta: ModelMetadata, n: int) -> List[LetterboxInfo]:
    """Letterboxes that map boxes to themselves (an original image the size of the input)."""
    h, w = meta.input_size
    return [LetterboxInfo(scale=1.0, pad=(0, 0), original_shape=(h, w)) for _ in range(n)]


def letterbox_levels(got: np.ndarray, want: np.ndarray, meta: ModelMetadata) -> float:
    """Largest difference of two preprocessed batches, in grey levels of the original uint8 image."""
    per_level = np.asarray([meta.scale / s for s in meta.std], np.float64).reshape(1, 3, 1, 1)
    if not got.size:
        return 0.0
    # rounded: float32 normalisation leaves a difference of one level a few ulps off 1
    return float(np.round(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)) / per_level), 3))


def same_detections(got: Any, want: Any, score_tol: float = 1e-5, box_tol: float = 1e-3) -> Optional[str]:
    """``None`` when two Detections agree (same classes in the same order, scores and boxes within the
    tolerances), else what differs."""
    if len(got) != len(want):
        return f"{len(got)} detections, reference {len(want)}"
    if got.class_ids.tolist() != want.class_ids.tolist():
        return "class ids or order differ"
    if len(got) and np.max(np.abs(got.scores - want.scores)) > score_tol:
        return f"scores differ by {np.max(np.abs(got.scores - want.scores)):.3g}"
    if len(got) and np.max(np.abs(got.boxes - want.boxes)) > box_tol:
        return f"boxes differ by {np.max(np.abs(got.boxes - want.boxes)):.3g} px"
    return None


@dataclass
class KernelCheck:
    kernel: str
    ok: bool
    detail: str


def run_checks(launcher: KernelLauncher, seed: int = 0) -> List[KernelCheck]:
    """Every kernel against the numpy reference on the cases of the module docstring."""
    from .gpu_pipeline import GpuPipeline

    rng = np.random.default_rng(seed)
    meta = synthetic_metadata()
    results: List[KernelCheck] = []
    backend = DeviceBuffersBackend(meta, launcher, max_batch=len(FRAME_SHAPES) + 1)
    try:
        with GpuPipeline(backend, launcher=launcher) as pipe:
            # letterbox: each frame alone, then all of them in one launch
            frames = random_frames(FRAME_SHAPES, rng)
            worst = 0.0
            for f in frames:
                worst = max(worst, letterbox_levels(pipe.preprocess([f]), preprocess([f], meta)[0], meta))
            worst = max(worst, letterbox_levels(pipe.preprocess(frames), preprocess(frames, meta)[0], meta))
            results.append(
                KernelCheck(
                    "letterbox",
                    worst <= 1.0,
                    f"{len(frames)} frames 1x1..1920x1080 + mixed batch: max {worst:g} grey level",
                )
            )
            # decode + sort: NMS off (IoU > 1 never happens), everything kept, order compared
            off = PostprocessConfig(
                conf_threshold=0.25, iou_threshold=1.0, max_detections=meta.num_classes * 10647
            )
            cases = [("random", random_heads(meta, 1, rng))] + [
                (k, special_heads(meta, k, rng)) for k in ("all-pass", "equal-scores", "nonfinite", "none")
            ]
            bad: List[str] = []
            for name, heads in cases:
                conf = 0.0 if name == "all-pass" else 0.25
                cfg = PostprocessConfig(conf, 1.0, off.max_detections)
                backend.write_heads(heads)
                s_ref, s_got = DecodeStats(), DecodeStats()
                want = detections_from_heads(heads, identity_infos(meta, 1), meta, cfg, s_ref)[0]
                got = pipe.postprocess(1, identity_infos(meta, 1), cfg, s_got)[0]
                diff = same_detections(got, want)
                if diff or s_got.nonfinite != s_ref.nonfinite:
                    bad.append(f"{name}: {diff or f'non-finite {s_got.nonfinite} vs {s_ref.nonfinite}'}")
            n_all = len(decode(cases[1][1], meta, 0.0)[0][1])
            detail = f"{len(cases)} cases (all {n_all} candidates passing, ties, NaN/inf, none)"
            results.append(KernelCheck("decode", not bad, "; ".join(bad) or detail))
            results.append(
                KernelCheck("sort_candidates", not bad, "; ".join(bad) or "descending score, ties by index")
            )
            # the whole post-process
            bad = []
            for name, heads in cases:
                for cfg in (
                    PostprocessConfig(0.001 if name != "none" else 0.25),
                    PostprocessConfig(0.3, 0.5, 300, True),
                ):
                    backend.write_heads(heads)
                    want = detections_from_heads(heads, identity_infos(meta, 1), meta, cfg)[0]
                    got = pipe.postprocess(1, identity_infos(meta, 1), cfg)[0]
                    diff = same_detections(got, want)
                    if diff:
                        bad.append(f"{name} (agnostic={cfg.class_agnostic}): {diff}")
            results.append(
                KernelCheck("nms", not bad, "; ".join(bad) or "class-aware + agnostic, capped, = numpy")
            )
    finally:
        backend.close()
    results.append(_graph_check(launcher, meta, rng))
    return results


def _graph_check(launcher: KernelLauncher, meta: ModelMetadata, rng: np.random.Generator) -> KernelCheck:
    """The whole pipeline captured in a CUDA graph and replayed gives what the plain run gives."""
    from .gpu_pipeline import GpuPipeline

    backend = DeviceBuffersBackend(meta, launcher, max_batch=2)
    try:
        backend.write_heads(random_heads(meta, 2, rng, obj_mean=-2.0))
        frames = random_frames([(480, 640), (720, 1280)], rng)
        cfg = PostprocessConfig(0.01)
        with GpuPipeline(backend, cfg, launcher=launcher) as plain:
            want = plain.detect(frames)
        with GpuPipeline(backend, cfg, launcher=launcher, use_graph=True) as graphed:
            runs = [graphed.detect(frames) for _ in range(3)]  # plain, captured, replayed
            captured = graphed._graph is not None
        bad = [
            f"run {k}: {d}"
            for k, r in enumerate(runs)
            for d in (same_detections(a, b) for a, b in zip(r, want))
            if d
        ]
        ok = captured and not bad
        return KernelCheck(
            "graph", ok, "; ".join(bad) or ("captured, replayed = plain run" if captured else "not captured")
        )
    finally:
        backend.close()


def time_postprocess(launcher: KernelLauncher, repeat: int = 50, seed: int = 0) -> List[Dict[str, Any]]:
    """Per-kernel device times (median ms) and the whole post-process (host wall time, with the
    copy-back) for 1, 100 and 10647 candidates, next to numpy's ``detections_from_heads``."""
    from .gpu_pipeline import GpuPipeline

    rng = np.random.default_rng(seed)
    meta = synthetic_metadata()
    rows = []
    backend = DeviceBuffersBackend(meta, launcher, max_batch=1)
    try:
        with GpuPipeline(backend, launcher=launcher) as pipe:
            for target in (1, 100, 10647):
                heads = special_heads(meta, "none", rng)
                flat = [h.reshape(1, 3, 5 + meta.num_classes, -1) for h in heads]
                cells = [(k, a, c) for k, f in enumerate(flat) for a in range(3) for c in range(f.shape[3])]
                for i in rng.permutation(len(cells))[:target]:
                    k, a, c = cells[i]
                    flat[k][0, a, 4, c] = 6.0
                cfg = PostprocessConfig(conf_threshold=0.001)
                backend.write_heads(heads)
                stages: Dict[str, List[float]] = {}
                walls, numpy_ms = [], []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    pipe.postprocess(1, identity_infos(meta, 1), cfg)
                    walls.append((time.perf_counter() - t0) * 1e3)
                    for k, v in pipe.last_timings.items():
                        stages.setdefault(k, []).append(v)
                    t0 = time.perf_counter()
                    detections_from_heads(heads, identity_infos(meta, 1), meta, cfg)
                    numpy_ms.append((time.perf_counter() - t0) * 1e3)
                row: Dict[str, Any] = {"candidates": target}
                row.update(
                    {
                        k: float(np.median(v))
                        for k, v in stages.items()
                        if k in ("decode", "sort", "nms", "download")
                    }
                )
                row["gpu_postprocess_ms"] = float(np.median(walls))
                row["numpy_ms"] = float(np.median(numpy_ms))
                rows.append(row)
            frame = random_frames([(1080, 1920)], rng)
            lb = []
            for _ in range(repeat):
                pipe.preprocess(frame)
                lb.append(pipe.last_timings.get("letterbox", 0.0))
            rows.append({"letterbox_1080p_ms": float(np.median(lb))})
    finally:
        backend.close()
    return rows


def compile_checks(archs: Sequence[str] = ("sm_72", "sm_87")) -> Dict[str, Dict[str, str]]:
    """Compile every source for each of ``archs`` with the compilers found here: per source and arch,
    ``"ok (<compiler> <version>)"``, ``"FAIL: ..."`` or ``"no compiler"``."""
    from .kernel_build import SOURCES, KernelBuildError, choose_compiler, read_source

    out: Dict[str, Dict[str, str]] = {name: {} for name in SOURCES}
    for arch in archs:
        try:
            comp: Any = choose_compiler(arch)
        except KernelBuildError:
            for name in SOURCES:
                out[name][arch] = "no compiler"
            continue
        for name in SOURCES:
            try:
                ok = comp.compile(read_source(name), name, arch).startswith(b"\x7fELF")
                out[name][arch] = (
                    f"ok ({comp.kind} {comp.version[0]}.{comp.version[1]})" if ok else "FAIL: not a cubin"
                )
            except KernelBuildError as e:
                out[name][arch] = "FAIL: " + str(e).splitlines()[0]
    return out


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description="Check the CUDA kernels against the numpy reference.")
    ap.add_argument("--gpu", action="store_true", help="run on the CUDA GPU (default: the CPU emulation)")
    ap.add_argument("--time", action="store_true", help="also time the kernels (GPU only)")
    ap.add_argument("--compile", action="store_true", help="also compile every source for sm_72 and sm_87")
    ap.add_argument("--json", help="also write the checks (and timings) to this JSON file")
    args = ap.parse_args(argv)
    from .kernel_build import KERNELS

    compiled = compile_checks() if args.compile else {}
    if args.gpu:
        from .cuda_driver import CudaDriverLauncher

        launcher: Any = CudaDriverLauncher.standalone()
        ctx = launcher.context()
        where = f"GPU {launcher.arch}"
    else:
        from contextlib import nullcontext

        from .kernel_emu import EmulatedLauncher

        launcher = EmulatedLauncher()
        ctx = nullcontext()
        where = "CPU emulation"
    with ctx:
        checks = run_checks(launcher)
        failed_compile = False
        for c in checks:
            builds = compiled.get(KERNELS[c.kernel].source, {}) if c.kernel in KERNELS else {}
            failed_compile |= any(not v.startswith(("ok", "no compiler")) for v in builds.values())
            arch = "".join(f"{a} {v}  " for a, v in builds.items())
            print(f"{c.kernel:<16} {arch}{where} {'ok' if c.ok else 'FAIL'}: {c.detail}")
        timings: List[Dict[str, Any]] = []
        if args.time and args.gpu:
            timings = time_postprocess(launcher)
            for row in timings:
                print(
                    "time",
                    " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                )
        if args.json:
            import json

            from yolo_nano.core.fileio import atomic_write_text

            doc = {
                "where": where,
                "checks": [{"kernel": c.kernel, "ok": c.ok, "detail": c.detail} for c in checks],
                "compile": compiled,
                "timings": timings,
            }
            atomic_write_text(args.json, json.dumps(doc, indent=2) + "\n")
    launcher.close()
    return 0 if all(c.ok for c in checks) and not failed_compile else 1


if __name__ == "__main__":
    sys.exit(main())
