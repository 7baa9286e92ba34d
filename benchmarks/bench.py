"""``nano-bench``: FPS, latency and images/sec/watt of a model under Jetson power modes.

    nano-bench                                   # the embedded default model, current mode, 10 s
    nano-bench model.engine --power 15W,30W --jetson-clocks --gate benchmarks/gates/agx-xavier-15w.json
    nano-bench nano.onnx tiny-yolov2.onnx tiny-yolov3.onnx --plot   # comparison report in one run

Per model and power mode it warms up, then measures two timed windows of ``--duration`` seconds:
engine only (``backend.infer`` on one preprocessed batch, repeated) and end to end (frame in from the
source, :class:`~yolo_nano.runtime.Detections` out). Power is sampled in a background thread over
exactly each window and integrated (trapezoid); energy per frame and images/sec/watt follow, the latter
both divided by measured power and by the mode's nominal budget, each labelled.

The original power mode and jetson_clocks state are ALWAYS restored: on normal exit, on an exception,
on Ctrl-C (exit 130) and on SIGTERM (exit 143).

Exit codes: 0 ok, 1 a perf gate failed, 2 bad input (or a refused mode switch), 3 the run failed,
130/143 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from yolo_nano.core.fileio import IMAGE_EXTENSIONS, list_images, sha256_file
from yolo_nano.jetson.clocks import ClockReader, JetsonClocks, summarize_clocks
from yolo_nano.jetson.nvpmodel import (
    ConfError,
    NvpConf,
    NvpModel,
    NvpModelError,
    PermissionHintError,
    PowerMode,
    RebootRequiredError,
    parse_conf,
    read_status_file,
    resolve_modes,
)
from yolo_nano.jetson.power import PowerMonitor, find_power_source

from .gates import GateError, evaluate, load_gate
from .results import append_jsonl, export_csv, format_table

SOURCES = ("synthetic", "images", "video")
COMPARE_ARCHS = ("yolo-nano", "tiny-yolov2", "tiny-yolov3")


class UsageError(ValueError):
    """Bad command-line input: exit 2 with a one-line message."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


PAPER_INPUT_SIZE = 416  # the paper benchmarks YOLO Nano at 416x416


def log(msg: str) -> None:
    print(f"nano-bench: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- frames


def synthetic_frames(n: int = 16, size: Tuple[int, int] = (480, 640), seed: int = 0) -> List[np.ndarray]:
    """``n`` BGR uint8 scenes (H, W, 3) with shapes on textured backgrounds, resized to ``size`` (h, w)."""
    import cv2

    from yolo_nano.data.synth import generate_sample

    out = []
    for i in range(n):
        img, _ = generate_sample(seed, "test", i)
        out.append(cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LINEAR))
    return out


class FrameSource:
    """Frames for the end-to-end loop. ``next()`` returns one BGR uint8 (H, W, 3) frame, cycling forever.

    ``synthetic``: frames held in memory (no I/O). ``images``: files decoded with OpenCV on every read
    (``path``: a folder; default: synthetic scenes written as JPEG to a temp folder). ``video``: frames
    decoded from a video file (default: the synthetic scenes written as an MJPG AVI), rewound at the end.
    """

    def __init__(self, kind: str, path: Optional[str] = None, n_frames: int = 16) -> None:
        import cv2

        self.kind = kind
        self._cv2 = cv2
        self._tmp: Optional[tempfile.TemporaryDirectory] = None
        self._i = 0
        self._cap: Any = None
        self.description = kind
        if kind == "synthetic":
            if path is not None:
                raise UsageError("--input is for --source images|video; synthetic frames are generated")
            self.frames = synthetic_frames(n_frames)
            return
        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="nano-bench-")
            frames = synthetic_frames(n_frames)
            if kind == "images":
                for i, f in enumerate(frames):
                    cv2.imwrite(
                        os.path.join(self._tmp.name, f"{i:04d}.jpg"), f, [cv2.IMWRITE_JPEG_QUALITY, 90]
                    )
                path = self._tmp.name
            else:
                path = os.path.join(self._tmp.name, "synthetic.avi")
                h, w = frames[0].shape[:2]
                fourcc = cv2.VideoWriter_fourcc(*"MJPG")  # type: ignore[attr-defined]
                vw = cv2.VideoWriter(path, fourcc, 30.0, (w, h))
                if not vw.isOpened():
                    raise RuntimeError(
                        "OpenCV cannot write an MJPG video here; use --source images or synthetic"
                    )
                for f in frames:
                    vw.write(f)
                vw.release()
            self.description = f"{kind} (generated: {n_frames} synthetic scenes)"
        else:
            self.description = f"{kind}: {path}"
        if kind == "images":
            if not os.path.isdir(path):
                raise UsageError(f"--input {path}: not a folder of images")
            self.files = list_images(path)
            if not self.files:
                raise UsageError(f"--input {path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
        elif kind == "video":
            if not os.path.isfile(path):
                raise UsageError(f"--input {path}: video file not found")
            self._path = path
            self._cap = cv2.VideoCapture(path)
            ok, frame = self._cap.read()
            if not ok:
                raise UsageError(f"--input {path}: OpenCV cannot decode this video")
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        else:
            raise UsageError(f"unknown --source {kind!r}; choose one of {', '.join(SOURCES)}")

    def next(self) -> np.ndarray:
        if self.kind == "synthetic":
            f = self.frames[self._i % len(self.frames)]
            self._i += 1
            return f
        if self.kind == "images":
            p = self.files[self._i % len(self.files)]
            self._i += 1
            img = self._cv2.imread(p, self._cv2.IMREAD_COLOR)
            if img is None:
                raise RuntimeError(f"cannot decode image {p}")
            return img
        ok, frame = self._cap.read()
        if not ok:
            self._cap.release()
            self._cap = self._cv2.VideoCapture(self._path)
            ok, frame = self._cap.read()
            if not ok:
                raise RuntimeError(f"cannot decode video {self._path}")
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


# ------------------------------------------------------------------------------------------- identity


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None


def board_model(root: str = "/") -> Optional[str]:
    """Board name from ``/proc/device-tree/model`` (e.g. ``Jetson-AGX``), None off a Jetson/ARM board."""
    return _read_text(os.path.join(root, "proc/device-tree/model")) or None


def l4t_release(root: str = "/") -> Optional[str]:
    """L4T release from ``/etc/nv_tegra_release``, e.g. ``R35.2.1`` (``# R35 (release), REVISION: 2.1``)."""
    text = _read_text(os.path.join(root, "etc/nv_tegra_release"))
    if not text:
        return None
    import re

    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{m.group(1)}.{m.group(2)}" if m else text.splitlines()[0][:80]


def cpu_model(root: str = "/") -> Optional[str]:
    text = _read_text(os.path.join(root, "proc/cpuinfo")) or ""
    for line in text.splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or None


def tensorrt_version() -> Optional[str]:
    try:
        import tensorrt  # lazy: only on a Jetson / a TensorRT install
    except ImportError:
        return None
    except OSError as e:  # installed but its libraries do not load
        return f"unloadable ({e})"
    return str(getattr(tensorrt, "__version__", "unknown"))


def _git(args: List[str], cwd: str) -> Optional[str]:
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")  # read only: never take the index lock
    try:
        cp = subprocess.run(
            ["git", "--no-optional-locks"] + args,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            timeout=10,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return cp.stdout if cp.returncode == 0 else None


def git_revision() -> Optional[str]:
    """Commit of the source tree this package runs from (12 hex digits, ``+dirty`` with local changes
    to tracked files), or None outside a git checkout. Read-only: the index is never written."""
    here = os.path.dirname(os.path.abspath(__file__))
    head = _git(["rev-parse", "--short=12", "HEAD"], here)
    if not head or not head.strip():
        return None
    status = _git(["status", "--porcelain", "--untracked-files=no"], here)
    return head.strip() + ("+dirty" if status and status.strip() else "")


#: Hex SHA-256 of a file (kept under this name for callers; the one implementation is in ``fileio``).
file_sha256 = sha256_file


def engine_identity(model_path: str) -> Optional[Dict[str, Any]]:
    """For a TensorRT engine: its ``<engine>.json`` identity record if present, plus its sha256."""
    if not model_path.lower().endswith((".engine", ".trt", ".plan")):
        return None
    ident: Dict[str, Any] = {}
    for cand in (model_path + ".json", os.path.splitext(model_path)[0] + ".json"):
        if os.path.isfile(cand):
            try:
                with open(cand, encoding="utf-8") as f:
                    data = json.load(f)
                ident = data if isinstance(data, dict) else {"record": data}
            except ValueError as e:
                ident = {"error": f"{cand}: not JSON ({e})"}
            ident["identity_file"] = cand
            break
    ident["engine_sha256"] = file_sha256(model_path)
    return ident


# ----------------------------------------------------------------------------------------- measuring


def percentiles(values_ms: Sequence[float]) -> Dict[str, Optional[float]]:
    if not len(values_ms):
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    a = np.asarray(values_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(a.mean())}


def _progress(total_s: float, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=round(total_s, 1), desc=desc, unit="s", leave=False, disable=None, file=sys.stderr,
                bar_format="{desc}: {bar} {n:.1f}/{total:.1f} s")  # fmt: skip


def timed_loop(
    step: Callable[[], int], duration_s: float, desc: str, monitor: Optional[PowerMonitor] = None
) -> Tuple[float, int, List[float], Any]:
    """Call ``step`` (returns frames done) until ``duration_s`` has passed.

    Returns (window s, frames, per-call ms, power trace or None). The window runs from the monitor's
    start (just before the first call) to just after the last call, where the monitor is stopped: the
    frames counted and the energy integrated cover the same interval.
    """
    lat: List[float] = []
    frames = 0
    bar = _progress(duration_s, desc)
    try:
        if monitor is not None:
            monitor.start()
            t0 = monitor.t0
        else:
            t0 = time.perf_counter()
        last = t0
        while True:
            a = time.perf_counter()
            frames += step()
            b = time.perf_counter()
            lat.append((b - a) * 1e3)
            if b - t0 >= duration_s:
                break
            if b - last >= 0.25:
                bar.update(min(b - t0, duration_s) - bar.n)
                last = b
        trace = monitor.stop() if monitor is not None else None
    finally:
        bar.close()
    return b - t0, frames, lat, trace


def measure_model(
    detector: Any,
    source: FrameSource,
    *,
    batch: int,
    duration_s: float,
    warmup_s: float,
    monitor: PowerMonitor,
    clock_reader: Optional[ClockReader],
    mode: Optional[PowerMode],
    label: str,
) -> Dict[str, Any]:
    """Warm up, then time engine-only and end-to-end windows; returns the metrics of one run."""
    from yolo_nano.runtime import preprocess

    backend = detector.backend
    meta = detector.metadata

    def e2e_step() -> Tuple[int, Dict[str, float]]:
        a = time.perf_counter()
        frames = [source.next() for _ in range(batch)]
        b = time.perf_counter()
        dets = detector(frames)
        st = {k: v * len(dets) for k, v in dets[0].timings.items()} if dets else {}
        st["read"] = (b - a) * 1e3
        return len(dets), st

    # warm-up (not timed): DVFS settles, lazy initialisation happens, the first repetition is dropped
    t_end = time.perf_counter() + warmup_s
    e2e_step()
    while time.perf_counter() < t_end:
        e2e_step()

    # engine only: the same preprocessed batch again and again
    imgs = [source.next() for _ in range(batch)]
    x, _ = preprocess(imgs, meta)
    backend.infer(x)
    el_engine, n_engine, lat_engine, tr_engine = timed_loop(
        lambda: (backend.infer(x), batch)[1], duration_s, f"{label} engine", monitor
    )
    clocks_engine = monitor.side_samples

    # end to end: frame in, Detections out
    stage_sum: Dict[str, float] = {}

    def step() -> int:
        n, st = e2e_step()
        for k, v in st.items():
            stage_sum[k] = stage_sum.get(k, 0.0) + v
        return n

    el_e2e, n_e2e, lat_e2e, tr_e2e = timed_loop(step, duration_s, f"{label} end-to-end", monitor)
    clock_snaps = clocks_engine + monitor.side_samples

    pe, pg = percentiles(lat_e2e), percentiles(lat_engine)
    fps_e2e = n_e2e / el_e2e
    fps_engine = n_engine / el_engine
    res: Dict[str, Any] = {
        "backend": backend.name,
        "arch": meta.arch,
        "input_size": list(meta.input_size),
        "batch": batch,
        "frames_e2e": n_e2e,
        "frames_engine": n_engine,
        "window_s_e2e": el_e2e,
        "window_s_engine": el_engine,
        "fps_e2e": fps_e2e,
        "fps_engine": fps_engine,
        "latency_ms_p50": pe["p50"],
        "latency_ms_p90": pe["p90"],
        "latency_ms_p99": pe["p99"],
        "latency_ms_mean": pe["mean"],
        "latency_engine_ms_p50": pg["p50"],
        "latency_engine_ms_p90": pg["p90"],
        "latency_engine_ms_p99": pg["p99"],
        "stage_ms": {k: v / max(n_e2e, 1) for k, v in sorted(stage_sum.items())},
        "_latencies_e2e": lat_e2e,
    }
    res.update(power_fields(tr_e2e, tr_engine, fps_e2e, fps_engine, n_e2e, mode))
    if clock_reader is not None:
        summary = summarize_clocks(clock_snaps, mode)
        res["clocks"] = summary
        res["throttled"] = summary["throttled"]
    return res


def power_fields(
    tr_e2e: Any, tr_engine: Any, fps_e2e: float, fps_engine: float, frames_e2e: int, mode: Optional[PowerMode]
) -> Dict[str, Any]:
    """Power, energy and images/sec/watt fields (null when not measured), each labelled."""
    budget = mode.budget_w if mode is not None else None
    out: Dict[str, Any] = {
        "power_w": None,
        "power_source": None,
        "power_scope": None,
        "power_w_engine": None,
        "energy_j": None,
        "energy_j_per_frame": None,
        "ips_per_w_measured": None,
        "ips_per_w_measured_engine": None,
        "nominal_budget_w": budget,
        "ips_per_w_nominal": fps_e2e / budget if budget else None,
        "ips_per_w_nominal_engine": fps_engine / budget if budget else None,
    }
    if tr_e2e is not None and tr_e2e.duration_s > 0:
        p = tr_e2e.avg_w
        out.update(
            power_w=p,
            energy_j=tr_e2e.energy_j,
            energy_j_per_frame=tr_e2e.energy_j / frames_e2e if frames_e2e else None,
            ips_per_w_measured=fps_e2e / p if p > 0 else None,
            power_source=tr_e2e.source,
            power_scope=tr_e2e.scope,
            power_rails_w=tr_e2e.rails_w_avg,
            power_samples=len(tr_e2e.watts),
            power_window_s=tr_e2e.duration_s,
            _power_trace={"t": tr_e2e.t, "watts": tr_e2e.watts},
        )
    if tr_engine is not None and tr_engine.duration_s > 0 and tr_engine.avg_w > 0:
        out["power_w_engine"] = tr_engine.avg_w
        out["ips_per_w_measured_engine"] = fps_engine / tr_engine.avg_w
    out["labels"] = {
        "fps_e2e": "frames per second, frame read + preprocess + inference + decode/NMS (end to end)",
        "fps_engine": "frames per second of backend.infer on a preprocessed batch (engine only)",
        "power_w": "average power over exactly the end-to-end timed window (energy / time); power_scope says "
        "what was measured (module = Jetson module rails, cpu-package = RAPL, CPU package only)",
        "ips_per_w_measured": "fps_e2e / power_w (measured)",
        "ips_per_w_nominal": "fps_e2e / the power mode's nominal budget (not measured)",
    }
    return out


# ----------------------------------------------------------------------------------- board controller


class BoardState:
    """Switches power modes / jetson_clocks and restores exactly what it found, once."""

    def __init__(self, nvp: Optional[NvpModel], clocks: Optional[JetsonClocks]) -> None:
        self.nvp = nvp
        self.clocks = clocks
        self.original: Optional[Tuple[int, str]] = None
        self.switched = False
        self.restored = False

    def capture(self) -> None:
        if self.nvp is not None:
            self.original = self.nvp.query()
        if self.clocks is not None:
            self.clocks.store()

    def set_mode(self, mode: PowerMode) -> Tuple[int, str]:
        assert self.nvp is not None
        self.switched = True
        got = self.nvp.set_mode(mode.id)
        return got

    def enable_clocks(self) -> None:
        assert self.clocks is not None
        self.clocks.enable()

    def restore(self) -> List[str]:
        """Restore the original mode, then the stored clocks (nvpmodel first, then jetson_clocks)."""
        if self.restored:
            return []
        self.restored = True
        errors: List[str] = []
        if self.nvp is not None and self.original is not None and self.switched:
            try:
                cur = self.nvp.query()
                if cur[0] != self.original[0]:
                    self.nvp.set_mode(self.original[0])
                log(f"restored power mode {self.original[1]} (ID {self.original[0]})")
            except NvpModelError as e:
                errors.append(f"could not restore power mode {self.original[1]} (ID {self.original[0]}): {e}")
        if self.clocks is not None and self.clocks.stored:
            try:
                self.clocks.restore()
                log("restored the jetson_clocks state")
            except NvpModelError as e:
                errors.append(f"could not restore jetson_clocks: {e}")
        return errors


class SignalGuard:
    """SIGINT/SIGTERM raise :class:`Interrupted` while active; while restoring they are only noted."""

    def __init__(self) -> None:
        self.previous: Dict[int, Any] = {}
        self.deferred: List[int] = []
        self.defer = False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.defer:
            self.deferred.append(signum)
            return
        raise Interrupted(signum)

    def __enter__(self) -> SignalGuard:
        for s in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                self.previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h)


# ----------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nano-bench",
        description="Benchmark YOLO models: engine-only and end-to-end FPS, latency, module power and "
        "images/sec/watt under Jetson power modes; perf gates for CI.",
        epilog="Exit codes: 0 ok, 1 perf gate failed, 2 bad input or refused mode switch, 3 run failed, "
        "130/143 interrupted (the original power mode and clocks are restored in every case).",
    )
    p.add_argument(
        "models", nargs="*", metavar="MODEL", help=".onnx or .engine files (default: the embedded model)"
    )
    p.add_argument("--compare", action="store_true",
                   help="comparison report; without MODELs: YOLO Nano vs Tiny YOLOv2 vs Tiny YOLOv3 "
                   "(randomly initialised exports, speed only; needs PyTorch once)")  # fmt: skip
    p.add_argument("--power", help="budget (15W), mode name (MODE_30W_ALL), ID, or a comma list to sweep")
    p.add_argument("--jetson-clocks", action="store_true", help="pin clocks with jetson_clocks in each mode")
    p.add_argument("--batch", type=int, default=1, help="images per inference call (default 1)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per timed window (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before timing (default 2; "
                   "use >= 10 after a mode switch on a Jetson)")  # fmt: skip
    p.add_argument("--source", choices=SOURCES, default="synthetic", help="frame source (default synthetic)")
    p.add_argument("--input", help="folder of images (--source images) or video file (--source video)")
    p.add_argument("--out", default="bench-results", help="output folder (default ./bench-results)")
    p.add_argument(
        "--gate", help="perf gate JSON, or a shipped gate name (agx-xavier-15w): exit 1 on a regression"
    )
    p.add_argument("--plot", action="store_true", help="write PNG plots into --out")
    p.add_argument("--nvpmodel-conf", help="nvpmodel conf (default <sysfs-root>/etc/nvpmodel.conf)")
    p.add_argument("--sysfs-root", default="/", help="root for /sys, /proc, /etc reads (default /)")
    p.add_argument("--backend", default="auto",
                   choices=("auto", "onnxruntime", "onnxruntime-cpu", "onnxruntime-cuda", "tensorrt"))  # fmt: skip
    p.add_argument("--threads", type=int, help="ONNX Runtime CPU threads (default: ONNX Runtime's)")
    p.add_argument(
        "--power-source",
        default="auto",
        choices=("auto", "ina3221", "jtop", "rapl", "none"),
        help="power sensor (default auto: INA3221 sysfs, then jtop, then RAPL)",
    )
    p.add_argument(
        "--sample-interval", type=float, default=0.1, help="power sampling period in s (default 0.1)"
    )
    return p


def _validate(args: argparse.Namespace) -> None:
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    if not args.duration > 0:
        raise UsageError(f"--duration must be > 0 seconds, got {args.duration}")
    if args.warmup < 0:
        raise UsageError(f"--warmup must be >= 0 seconds, got {args.warmup}")
    if not 0.005 <= args.sample_interval <= 5:
        raise UsageError(f"--sample-interval must be in [0.005, 5] s, got {args.sample_interval}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    if not os.path.isdir(args.sysfs_root):
        raise UsageError(f"--sysfs-root {args.sysfs_root}: not a folder")
    for m in args.models:
        if not os.path.isfile(m):
            raise UsageError(f"model file not found: {m}")


def compare_models() -> List[str]:
    """Exported YOLO Nano / Tiny YOLOv2 / Tiny YOLOv3 (random init, 416, dynamic batch), cached."""
    from yolo_nano.runtime.default_model import cache_dir

    paths = []
    for arch in COMPARE_ARCHS:
        target = os.path.join(str(cache_dir()), f"bench-{arch}-random-416.onnx")
        if not os.path.isfile(target):
            try:
                from yolo_nano.core.metadata import VOC_CLASSES
                from yolo_nano.model.export import export_onnx
                from yolo_nano.model.network import build_model
            except ImportError as e:
                raise UsageError(f"--compare without MODELs exports the three networks and needs PyTorch ({e}); "
                                 "pass exported models instead: nano-bench a.onnx b.onnx c.onnx") from e  # fmt: skip
            log(f"exporting {arch} (random weights, speed only) to {target}")
            # export_onnx writes atomically (temp file + rename): concurrent runs never see a partial file
            export_onnx(build_model(arch, num_classes=20, input_size=416), target, class_names=list(VOC_CLASSES),
                        batch="dynamic")  # fmt: skip
        paths.append(target)
    return paths


def _open_detectors(models: List[str], args: argparse.Namespace) -> List[Tuple[str, Any]]:
    from yolo_nano.runtime import Detector, open_backend
    from yolo_nano.runtime.backends import BackendUnavailableError, ModelLoadError

    out = []
    for m in models:
        try:
            backend = open_backend(m, args.backend, threads=args.threads)
        except (ModelLoadError, BackendUnavailableError, ValueError) as e:
            raise UsageError(str(e)) from e
        fixed = backend.batch_size
        if fixed and fixed != args.batch:
            raise UsageError(
                f"{m} has a fixed batch of {fixed}: pass --batch {fixed} or export with a dynamic batch"
            )
        out.append((m, Detector(backend)))
    return out


def run(args: argparse.Namespace) -> int:  # noqa: C901 - the harness reads top to bottom
    _validate(args)
    root = args.sysfs_root
    models = list(args.models)
    if not models:
        if args.compare:
            models = compare_models()
        else:
            from yolo_nano.runtime import DefaultModelError, default_model_path

            try:
                # The paper's measurement is at 416x416: benchmark the demo weights at that size
                # (speed does not depend on what the weights were trained at).
                models = [default_model_path(input_size=PAPER_INPUT_SIZE)]
            except DefaultModelError as e:
                raise UsageError(str(e)) from e
    gate = None
    if args.gate:
        try:
            gate = load_gate(args.gate)
        except GateError as e:
            raise UsageError(str(e)) from e

    # --- power modes: parse the conf, map --power to modes, refuse reboot-gated switches up front
    conf_path = args.nvpmodel_conf or os.path.join(root, "etc/nvpmodel.conf")
    conf: Optional[NvpConf] = None
    if os.path.exists(conf_path):
        try:
            conf = parse_conf(conf_path)
        except ConfError as e:
            if args.power or args.nvpmodel_conf:
                raise UsageError(str(e)) from e
    elif args.nvpmodel_conf:
        raise UsageError(f"--nvpmodel-conf {conf_path}: file not found")
    nvp: Optional[NvpModel] = NvpModel(conf, root=root)
    assert nvp is not None
    if not nvp.available:
        nvp = None
    modes: List[Optional[PowerMode]] = [None]
    if args.power:
        if conf is None:
            raise UsageError(
                f"--power needs the board's nvpmodel conf ({conf_path} not found); pass --nvpmodel-conf"
            )
        if nvp is None:
            raise UsageError("--power needs the nvpmodel program on PATH (JetPack); it was not found")
        try:
            modes = list(resolve_modes(args.power, conf))
        except ConfError as e:
            raise UsageError(str(e)) from e
    current: Optional[Tuple[int, str]] = None
    if nvp is not None:
        try:
            current = nvp.query()
        except NvpModelError as e:
            if args.power:
                raise UsageError(str(e)) from e
    elif conf is not None:
        sid = read_status_file(root)
        if sid is not None:
            current = (sid, conf.modes[sid].name if sid in conf.modes else f"ID{sid}")
    if args.power and current is not None and conf is not None:
        for m in modes:
            if m is not None and conf.needs_reboot(current[0], m.id):
                assert nvp is not None
                raise UsageError(nvp.reboot_message(current[0], m.id))
    clocks: Optional[JetsonClocks] = None
    if args.jetson_clocks:
        clocks = JetsonClocks()
        if not clocks.available:
            raise UsageError(
                "--jetson-clocks needs the jetson_clocks program on PATH (JetPack); it was not found"
            )

    detectors = _open_detectors(models, args)
    source = FrameSource(args.source, args.input)
    psrc, why_not = find_power_source(root, args.power_source)
    if psrc is None:
        log(why_not + ". FPS is measured; power, energy and measured images/sec/watt are null.")
    else:
        log(f"power source: {psrc.describe()}")
    clock_reader = ClockReader(root)

    ident = {
        "board": board_model(root),
        "cpu": cpu_model(root),
        "l4t": l4t_release(root),
        "tensorrt": tensorrt_version(),
        "git_revision": git_revision(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "nvpmodel_conf": conf.path if conf else None,
        "nvpmodel_conf_sha256": conf.sha256 if conf else None,
        "power_not_measured_reason": why_not or None,
        "source": source.description,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
    }
    try:
        import onnxruntime

        ident["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass

    os.makedirs(args.out, exist_ok=True)
    jsonl = os.path.join(args.out, "results.jsonl")
    records: List[Dict[str, Any]] = []
    traces: List[Dict[str, Any]] = []
    latencies: Dict[str, List[float]] = {}
    board = BoardState(nvp if args.power else None, clocks)
    monitor = PowerMonitor(psrc, interval_s=args.sample_interval, side=clock_reader.read)
    rc = 0
    with SignalGuard() as guard:
        try:
            board.capture()
            for mode in modes:
                mode_id, mode_name = current if current is not None else (None, None)
                active_mode = conf.modes.get(mode_id) if (conf is not None and mode_id is not None) else None
                if active_mode is None and mode_id is not None and mode_name:
                    active_mode = PowerMode(mode_id, mode_name)  # no conf: budget from the name only
                if mode is not None:
                    log(f"switching to power mode {mode.name} (ID {mode.id})")
                    mode_id, mode_name = board.set_mode(mode)
                    active_mode = mode
                if clocks is not None:
                    board.enable_clocks()
                    log("jetson_clocks: clocks pinned at the mode's maximum")
                for path, det in detectors:
                    label = f"{os.path.basename(path)} @ {mode_name or 'current mode'}"
                    log(f"measuring {label}: warm-up {args.warmup:g} s, then 2 x {args.duration:g} s")
                    res = measure_model(
                        det,
                        source,
                        batch=args.batch,
                        duration_s=args.duration,
                        warmup_s=args.warmup,
                        monitor=monitor,
                        clock_reader=clock_reader,
                        mode=active_mode,
                        label=label,
                    )
                    rec: Dict[str, Any] = {
                        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(
                            timespec="seconds"
                        ),
                        "model": os.path.abspath(path),
                        "model_name": os.path.basename(path),
                        "model_sha256": file_sha256(path),
                        "engine": engine_identity(path),
                        "power_mode_id": mode_id,
                        "power_mode_name": mode_name,
                        "jetson_clocks": bool(clocks is not None),
                    }
                    rec.update(ident)
                    lat = res.pop("_latencies_e2e")
                    trace = res.pop("_power_trace", None)
                    rec.update(res)
                    append_jsonl(jsonl, rec)
                    records.append(rec)
                    latencies[label] = lat
                    if trace is not None:
                        traces.append(dict(trace, label=label))
        except Interrupted as e:
            rc = 130 if e.signum == signal.SIGINT else 143
            log(f"interrupted by {'SIGINT' if rc == 130 else 'SIGTERM'}; restoring the board")
        except KeyboardInterrupt:
            rc = 130
            log("interrupted; restoring the board")
        finally:
            guard.defer = True
            errors = board.restore()
            source.close()
            if psrc is not None:
                psrc.close()
            for err in errors:
                log("ERROR: " + err)
            if guard.deferred and rc == 0:  # a signal arrived while restoring: honour it now
                rc = 130 if guard.deferred[0] == signal.SIGINT else 143
            if errors and rc == 0:
                rc = 3
    if rc in (130, 143):
        return rc
    if not records:
        return rc or 3

    print(format_table(records))
    if any(r.get("power_w") is None for r in records):
        print(f"power is not measured here ({why_not.replace('power not measured: ', '')}): power_w, energy and "
              "measured images/sec/watt are null; img/s/W nominal needs a Jetson power mode")  # fmt: skip
    else:
        print(f"power: {psrc.describe() if psrc else '?'}; img/s/W meas = fps_e2e / measured W, "
              "nominal = fps_e2e / mode budget")  # fmt: skip
    csv_path = export_csv(jsonl)
    print(f"results: {jsonl} (+{len(records)} lines), CSV: {csv_path}")
    if args.plot:
        from .plots import plot_latency_hist, plot_modes, plot_power_trace

        pngs = [
            plot_modes(records, os.path.join(args.out, "fps_by_mode.png")),
            plot_power_trace(traces, os.path.join(args.out, "power_trace.png")),
            plot_latency_hist(latencies, os.path.join(args.out, "latency_hist.png")),
        ]
        print("plots: " + ", ".join(pngs))
    if gate is not None:
        checks = evaluate(records, gate)
        for c in checks:
            print(c.line())
        failed = [c for c in checks if not c.ok]
        if failed:
            print(f"nano-bench: perf gate {gate['name']} FAILED: {len(failed)} of {len(checks)} checks")
            return 1
        print(f"nano-bench: perf gate {gate['name']} passed ({len(checks)} checks)")
    return rc


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``nano-bench``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UsageError as e:
        lines = str(e).splitlines() or [repr(e)]
        print(f"nano-bench: error: {lines[0]}", file=sys.stderr)
        rest = lines[1:]
        if rest:
            print("\n".join(rest), file=sys.stderr)
        return 2
    except (RebootRequiredError, PermissionHintError) as e:
        print(f"nano-bench: error: {e}", file=sys.stderr)
        return 2
    except NvpModelError as e:
        print(f"nano-bench: error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:  # before the board was touched (loading models, preparing frames)
        print("nano-bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
