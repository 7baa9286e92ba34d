"""``nano-detect``: run the Detector on an image, a folder of images, a video file or a camera.

    nano-detect SOURCE [-m model.onnx|model.engine] [--conf 0.25] [--iou 0.45] [--max-det 100]
                [--out runs/detect] [--show] [--backend auto] [--threads N] [--classes ...]
                [--max-frames N] [--no-save]

SOURCE: an image file, a folder (its images, not recursive), a video file, or a camera index (``0``).
Writes into ``--out``: annotated images (same file names) or an annotated ``<name>.avi`` (MJPG) for videos
and cameras, and ``detections.jsonl``, one JSON line per frame::

    {"source": "img.jpg", "frame": 0, "detections": [{"box": [x1, y1, x2, y2], "score": 0.9,
     "class_id": 14, "label": "person"}]}

with boxes in original image pixels. Frames come from :mod:`yolo_nano.runtime.sources` (images through
the one image reader: EXIF orientation applied, oversized images refused). Every file is written
atomically (temp file + rename), and annotated images are renamed into place only when the run ends
well (or is interrupted), so a failed run leaves the outputs of an earlier run as they were. Without
``-m`` the embedded default model is used (exported on first use into a cache directory). Exit status
(:mod:`yolo_nano.core.cli`): 0 done, 2 bad input (one-line error on stderr), 3 inference failed in the
backend, 130 interrupted (outputs so far are kept).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from yolo_nano.core.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_UNAVAILABLE, CommandError, run_command
from yolo_nano.core.fileio import AtomicOutput
from yolo_nano.core.images import IMAGE_EXTENSIONS

from .sources import FrameSource, ImageFiles, VideoFrames, open_source, print_warning

PROG = "nano-detect"
STAGES = ("preprocess", "inference", "postprocess")


def _parser() -> argparse.ArgumentParser:
    from .backends import BACKEND_CHOICES

    p = argparse.ArgumentParser(
        prog="nano-detect",
        description="Detect objects in an image, a folder of images, a video file or a camera.",
    )
    p.add_argument("source", help="image file, folder of images, video file, or camera index (e.g. 0)")
    p.add_argument(
        "-m", "--model", default=None, help="model .onnx or .engine (default: the embedded default model)"
    )
    p.add_argument("--conf", type=float, default=0.25, help="confidence threshold in [0, 1] (default 0.25)")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold in [0, 1] (default 0.45)")
    p.add_argument(
        "--max-det", type=int, default=100, help="at most this many detections per frame (default 100)"
    )
    p.add_argument("--classes", nargs="+", default=None, help="keep only these class ids or names")
    p.add_argument("--agnostic", action="store_true", help="class-agnostic NMS")
    p.add_argument("--out", default="runs/detect", help="output folder (default runs/detect)")
    p.add_argument("--no-save", action="store_true", help="do not write annotated images/video (JSONL only)")
    p.add_argument(
        "--show", action="store_true", help="show annotated frames in a window (needs OpenCV with GUI)"
    )
    p.add_argument(
        "--backend", default="auto", choices=BACKEND_CHOICES, help="inference backend (default auto)"
    )
    p.add_argument(
        "--postprocess",
        default="auto",
        choices=("auto", "cpu", "gpu"),
        help="letterbox/decode/NMS as CUDA kernels (TensorRT engines) or in numpy (default auto)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="ONNX Runtime CPU threads (default: ORT's choice)"
    )
    p.add_argument(
        "--max-frames", type=int, default=None, help="stop after this many frames (videos, cameras)"
    )
    return p


# ----------------------------------------------------------------------------------------- outputs
class _StagedImages:
    """Annotated images encoded into temp files beside their targets and renamed into place together
    by :meth:`commit` (at the end of a run), so a run that fails half way replaces none of the files
    an earlier run wrote; :meth:`discard` removes the temp files."""

    def __init__(self) -> None:
        self.pending: List[AtomicOutput] = []

    def add(self, path: Path, image: np.ndarray) -> None:
        ext = path.suffix.lower() if path.suffix.lower() in IMAGE_EXTENSIONS else ".jpg"
        ok, buf = cv2.imencode(ext, image)
        if not ok:
            raise CommandError(f"could not encode the annotated image {path}")
        out = AtomicOutput(path, suffix=ext)
        self.pending.append(out)
        with open(out.tmp, "wb") as f:
            f.write(buf.tobytes())

    def commit(self) -> None:
        for out in self.pending:
            out.commit(fsync=False)  # one per frame: atomic, not flushed to disk
        self.pending = []

    def discard(self) -> None:
        for out in self.pending:
            out.discard()
        self.pending = []


class _Jsonl:
    """``detections.jsonl`` written to a temp file in the output folder, renamed into place on close."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.out = AtomicOutput(path)
        try:
            self.f: IO[str] = open(self.out.tmp, "w", encoding="utf-8")  # noqa: SIM115 - open until close()
        except BaseException:
            self.out.discard()
            raise

    def write(self, source: str, frame: int, dets: Any) -> None:
        self.f.write(json.dumps({"source": source, "frame": frame, "detections": dets.to_dicts()}) + "\n")

    def close(self) -> None:
        self.f.close()
        self.out.commit()

    def abort(self) -> None:
        self.f.close()
        self.out.discard()


class _VideoOut:
    """An MJPG ``.avi`` written under a temp name and renamed into place on close."""

    def __init__(self, path: Path, fps: float, size: Tuple[int, int]) -> None:
        self.path = path
        self.out = AtomicOutput(path, suffix=".avi")  # the extension picks OpenCV's AVI container
        fourcc = getattr(cv2, "VideoWriter_fourcc", None) or cv2.VideoWriter.fourcc  # OpenCV 4 / 5 spelling
        self.writer = cv2.VideoWriter(self.out.tmp, fourcc(*"MJPG"), fps, size)
        if not self.writer.isOpened():
            self.writer.release()
            self.out.discard()
            raise CommandError(f"cannot write video {path} (OpenCV has no MJPG writer?)")

    def write(self, frame: np.ndarray) -> None:
        self.writer.write(frame)

    def close(self) -> None:
        self.writer.release()
        self.out.commit()

    def abort(self) -> None:
        self.writer.release()
        self.out.discard()


def _check_no_overwrite(source: FrameSource, out: Path) -> None:
    """Refuse an --out where annotated outputs would replace the source files."""
    out_r = out.resolve()
    if isinstance(source, ImageFiles):
        if any(p.resolve().parent == out_r for p in source.paths):
            raise CommandError(
                f"--out {out} is where the source images are: annotated copies would overwrite them"
            )
    elif (
        source.kind == "video" and (out_r / f"{Path(source.label).stem}.avi") == Path(source.label).resolve()
    ):
        raise CommandError(
            f"--out {out} would overwrite the source video {source.label} with the annotated one"
        )


# ----------------------------------------------------------------------------------------- main
class _Stats:
    def __init__(self) -> None:
        self.frames = 0
        self.detections = 0
        self.skipped = 0
        self.ms: Dict[str, float] = {s: 0.0 for s in STAGES}

    def add(self, dets: Any) -> None:
        self.frames += 1
        self.detections += len(dets)
        for s in STAGES:
            self.ms[s] += dets.timings.get(s, 0.0)


def _check_gui() -> None:
    try:
        cv2.namedWindow(PROG, cv2.WINDOW_NORMAL)
    except cv2.error as e:
        raise CommandError(
            "--show needs OpenCV with GUI support and this OpenCV has none (opencv-python-headless?); "
            "install opencv-python, or drop --show and look at the files in --out"
        ) from e


def _show(image: np.ndarray) -> bool:
    """Show a frame; False when the user pressed q or Esc."""
    cv2.imshow(PROG, image)
    return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)


def _detect(det: Any, image: np.ndarray, label: str) -> Any:
    """``det(image)``; a failure inside the backend (ONNX Runtime raises its own exception types,
    TensorRT/pycuda RuntimeError) becomes one line, exit 3, instead of a traceback."""
    try:
        return det(image)
    except (ValueError, TypeError):  # our own checks (e.g. InvalidImageError): keep their types
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CommandError(
            f"inference failed on {label} ({det.backend.name}: {type(e).__name__}: {first}); "
            "out of memory, a GPU fault, or a model the backend cannot run",
            EXIT_UNAVAILABLE,
        ) from e


def run(args: argparse.Namespace) -> int:
    """Run nano-detect with parsed ``args``; raises CommandError and the named errors main() reports."""
    from yolo_nano.core.images import max_image_pixels

    max_pixels = max_image_pixels()  # a bad YOLO_NANO_MAX_IMAGE_PIXELS fails here, not once per image
    source = open_source(args.source, args.max_frames, max_pixels, warn=print_warning(PROG))
    try:
        return _run_source(args, source)
    finally:
        source.close()


def _run_source(args: argparse.Namespace, source: FrameSource) -> int:
    from tqdm import tqdm

    from .default_model import default_model_path
    from .detector import Detector

    if args.show:
        _check_gui()
    classes: Optional[List[Any]] = None
    if args.classes:
        classes = [int(c) if c.isdigit() else c for c in args.classes]
    model = args.model if args.model else default_model_path()
    det = Detector(
        model,
        backend=args.backend,
        conf_threshold=args.conf,
        iou_threshold=args.iou,
        max_detections=args.max_det,
        class_agnostic=args.agnostic,
        classes=classes,
        threads=args.threads,
        postprocess=args.postprocess,
    )
    out = Path(args.out)
    if not args.no_save:
        _check_no_overwrite(source, out)
    out.mkdir(parents=True, exist_ok=True)
    stats = _Stats()
    jsonl = _Jsonl(out / "detections.jsonl")
    staged = _StagedImages()
    video: Optional[_VideoOut] = None
    interrupted = False
    is_video = isinstance(source, VideoFrames)
    t_start = time.perf_counter()
    bar = tqdm(
        total=source.frame_count,
        desc=source.name if is_video else "images",
        unit="frame" if is_video else "img",
        disable=source.kind == "image",
        file=sys.stderr,
    )
    try:
        for frame in source:
            dets = _detect(det, frame.image, frame.label)
            stats.add(dets)
            jsonl.write(frame.label, frame.number, dets)
            bar.update(1)
            if args.no_save and not args.show:
                continue
            drawn = dets.draw(frame.image)
            if not args.no_save:
                if frame.path is not None:
                    staged.add(out / frame.path.name, drawn)
                else:
                    if video is None:
                        size = (frame.image.shape[1], frame.image.shape[0])
                        video = _VideoOut(out / f"{source.name}.avi", source.fps or 30.0, size)
                    video.write(drawn)
            if args.show and not _show(drawn):
                break
    except KeyboardInterrupt:  # keep what was done so far
        interrupted = True
    except BaseException:  # an error: leave earlier outputs in place, drop the partial ones
        jsonl.abort()
        staged.discard()
        if video is not None:
            video.abort()
        raise
    finally:
        bar.close()
        if args.show:
            cv2.destroyAllWindows()
    stats.skipped = source.skipped
    jsonl.close()
    staged.commit()
    if video is not None:
        video.close()
    wall = time.perf_counter() - t_start
    _summary(stats, wall, det, out, args.no_save)
    return EXIT_INTERRUPTED if interrupted and source.kind != "camera" else EXIT_OK


def _summary(stats: _Stats, wall: float, det: Any, out: Path, no_save: bool) -> None:
    n = max(stats.frames, 1)
    per = {s: stats.ms[s] / n for s in STAGES}
    pipeline = sum(per.values())
    print(
        f"{stats.frames} frames ({stats.skipped} skipped), {stats.detections} detections, "
        f"{stats.frames / wall if wall > 0 else 0.0:.1f} FPS end to end (with I/O), "
        f"{1000.0 / pipeline if pipeline > 0 else 0.0:.1f} FPS detector"
    )
    print(
        "per frame: "
        + ", ".join(f"{s} {per[s]:.2f} ms" for s in STAGES)
        + f"; backend {det.backend.name}, {det.postprocess_path} post-processing, model {det.metadata.arch} {det.input_size[1]}x{det.input_size[0]}"
    )
    print(f"results: {out / 'detections.jsonl'}" + ("" if no_save else f", annotated output in {out}"))


def _main(argv: Optional[Sequence[str]]) -> int:
    return run(_parser().parse_args(argv))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``nano-detect``; returns the exit status."""
    from yolo_nano.core.metadata import MetadataError
    from yolo_nano.core.preprocess import InvalidImageError

    from .backends import BackendUnavailableError, ModelLoadError
    from .default_model import DefaultModelError
    from .gpu_pipeline import GpuPipelineUnavailable
    from .sources import SourceError

    # Named errors are user mistakes (one line, exit 2); ValueError covers the Detector's option checks
    # (--conf 2), OSError an unwritable --out.
    expected = (
        SourceError,
        InvalidImageError,
        ModelLoadError,
        MetadataError,
        BackendUnavailableError,
        DefaultModelError,
        GpuPipelineUnavailable,
        ValueError,
        OSError,
    )
    return run_command(PROG, _main, argv, expected=expected)


if __name__ == "__main__":
    sys.exit(main())
