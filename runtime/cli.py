"""``nano-detect``: run the Detector on an image, a folder of images, a video file or a camera.

    nano-detect SOURCE [-m model.onnx|model.engine] [--conf 0.25] [--iou 0.45] [--max-det 100]
                [--out runs/detect] [--show] [--backend auto] [--threads N] [--classes ...]
                [--max-frames N] [--no-save]

SOURCE: an image file, a folder (its images, not recursive), a video file, or a camera index (``0``).
Writes into ``--out``: annotated images (same file names) or an annotated ``<name>.avi`` (MJPG) for videos
and cameras, and ``detections.jsonl``, one JSON line per frame::

    {"source": "img.jpg", "frame": 0, "detections": [{"box": [x1, y1, x2, y2], "score": 0.9,
     "class_id": 14, "label": "person"}]}

with boxes in original image pixels. Every file is written atomically (temp file + rename). Without
``-m`` the embedded default model is used (exported on first use into a cache directory). Exit status:
0 done, 2 bad input (one-line error on stderr), 130 interrupted (outputs so far are kept).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from yolo_nano.core.fileio import IMAGE_EXTENSIONS, AtomicOutput, atomic_write_bytes, list_images

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".mjpg", ".mjpeg")
STAGES = ("preprocess", "inference", "postprocess")


class UsageError(Exception):
    """Bad input from the command line: reported as one line, exit status 2."""


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
        "--threads", type=int, default=None, help="ONNX Runtime CPU threads (default: ORT's choice)"
    )
    p.add_argument(
        "--max-frames", type=int, default=None, help="stop after this many frames (videos, cameras)"
    )
    return p


# ----------------------------------------------------------------------------------------- outputs
def _write_image_atomic(path: Path, image: np.ndarray) -> None:
    ext = path.suffix.lower() if path.suffix.lower() in IMAGE_EXTENSIONS else ".jpg"
    ok, buf = cv2.imencode(ext, image)
    if not ok:
        raise OSError(f"could not encode {path}")
    atomic_write_bytes(path, buf.tobytes(), fsync=False)  # one per frame: atomic, not flushed to disk


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
            raise OSError(f"cannot write video {path} (OpenCV has no MJPG writer?)")

    def write(self, frame: np.ndarray) -> None:
        self.writer.write(frame)

    def close(self) -> None:
        self.writer.release()
        self.out.commit()

    def abort(self) -> None:
        self.writer.release()
        self.out.discard()


# ----------------------------------------------------------------------------------------- sources
def _classify(source: str) -> Tuple[str, Any]:
    """('camera', index) | ('folder', [paths]) | ('image', path) | ('video', path)."""
    if source.isdigit():
        return "camera", int(source)
    path = Path(source)
    if not path.exists():
        raise UsageError(
            f"source not found: {source} (expected an image, a folder, a video file or a camera index)"
        )
    if path.is_dir():
        images = [Path(p) for p in list_images(path)]
        if not images:
            raise UsageError(f"folder {source} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        return "folder", images
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image", path
    if ext in VIDEO_EXTS:
        return "video", path
    raise UsageError(
        f"{source}: unknown file type {ext or '(no extension)'}; images: {' '.join(IMAGE_EXTENSIONS)}; "
        f"videos: {' '.join(VIDEO_EXTS)}"
    )


def _check_no_overwrite(kind: str, src: Any, out: Path) -> None:
    """Refuse an --out where annotated outputs would replace the source files."""
    out_r = out.resolve()
    if kind in ("image", "folder"):
        paths = [src] if kind == "image" else src
        if any(p.resolve().parent == out_r for p in paths):
            raise UsageError(
                f"--out {out} is where the source images are: annotated copies would overwrite them"
            )
    elif kind == "video" and (out_r / f"{Path(src).stem}.avi") == Path(src).resolve():
        raise UsageError(f"--out {out} would overwrite the source video {src} with the annotated one")


def _read_image(path: Path) -> Optional[np.ndarray]:
    """cv2.imread that also reads non-ASCII paths; None when the file is not a readable image."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


def _open_camera(index: int) -> Any:
    """cv2.VideoCapture(index) without OpenCV's backend-probing warnings on stderr."""
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    old = log.getLogLevel() if log is not None else None
    if log is not None:
        log.setLogLevel(log.LOG_LEVEL_ERROR)
    try:
        return cv2.VideoCapture(index)
    finally:
        if log is not None:
            log.setLogLevel(old)


def _frames(cap: Any, max_frames: Optional[int]) -> Iterator[np.ndarray]:
    n = 0
    while max_frames is None or n < max_frames:
        ok, frame = cap.read()
        if not ok or frame is None:
            return
        n += 1
        yield frame


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
        cv2.namedWindow("nano-detect", cv2.WINDOW_NORMAL)
    except cv2.error as e:
        raise UsageError(
            "--show needs OpenCV with GUI support and this OpenCV has none (opencv-python-headless?); "
            "install opencv-python, or drop --show and look at the files in --out"
        ) from e


def _show(image: np.ndarray) -> bool:
    """Show a frame; False when the user pressed q or Esc."""
    cv2.imshow("nano-detect", image)
    return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .default_model import default_model_path
    from .detector import Detector

    kind, src = _classify(args.source)
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
    )
    out = Path(args.out)
    if not args.no_save:
        _check_no_overwrite(kind, src, out)
    out.mkdir(parents=True, exist_ok=True)
    stats = _Stats()
    jsonl = _Jsonl(out / "detections.jsonl")
    video: Optional[_VideoOut] = None
    interrupted = False
    t_start = time.perf_counter()
    try:
        if kind in ("image", "folder"):
            paths: List[Path] = [src] if kind == "image" else src
            bar = tqdm(paths, desc="images", unit="img", disable=kind == "image", file=sys.stderr)
            for path in bar:
                image = _read_image(path)
                if image is None:
                    if kind == "image":
                        raise UsageError(f"cannot read image {path} (not an image file, or corrupt)")
                    tqdm.write(f"warning: skipping {path}: not a readable image", file=sys.stderr)
                    stats.skipped += 1
                    continue
                try:
                    dets = det(image)
                except ValueError as e:  # e.g. a 16-bit image: say which file and go on
                    if kind == "image":
                        raise UsageError(f"{path}: {e}") from e
                    tqdm.write(f"warning: skipping {path}: {e}", file=sys.stderr)
                    stats.skipped += 1
                    continue
                stats.add(dets)
                jsonl.write(str(path), 0, dets)
                if not args.no_save or args.show:
                    drawn = dets.draw(image)
                    if not args.no_save:
                        _write_image_atomic(out / path.name, drawn)
                    if args.show and not _show(drawn):
                        break
            if stats.frames == 0:
                raise UsageError(f"none of the {len(paths)} images in {args.source} could be read")
        else:
            if kind == "camera":
                cap = _open_camera(src)
                if not cap.isOpened():
                    raise UsageError(f"camera {src} could not be opened (is it connected? try another index)")
                name, label = f"camera{src}", f"camera:{src}"
            else:
                cap = cv2.VideoCapture(str(src))
                if not cap.isOpened():
                    raise UsageError(f"cannot open video {src} (corrupt file or a codec OpenCV lacks)")
                name, label = Path(src).stem, str(src)
            fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
            total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if kind == "video" else 0
            if args.max_frames is not None and total > 0:
                total = min(total, args.max_frames)
            bar = tqdm(total=total if total > 0 else None, desc=name, unit="frame", file=sys.stderr)
            try:
                for i, frame in enumerate(_frames(cap, args.max_frames)):
                    dets = det(frame)
                    stats.add(dets)
                    jsonl.write(label, i, dets)
                    drawn = dets.draw(frame) if (not args.no_save or args.show) else frame
                    if not args.no_save:
                        if video is None:
                            video = _VideoOut(
                                out / f"{name}.avi",
                                fps if fps > 0 else 30.0,
                                (frame.shape[1], frame.shape[0]),
                            )
                        video.write(drawn)
                    bar.update(1)
                    if args.show and not _show(drawn):
                        break
            finally:
                bar.close()
                cap.release()
            if stats.frames == 0:
                raise UsageError(f"no frame could be read from {label}")
    except KeyboardInterrupt:  # keep what was done so far
        interrupted = True
    except BaseException:  # an error: leave earlier outputs in place, drop the partial ones
        jsonl.abort()
        if video is not None:
            video.abort()
        raise
    finally:
        if args.show:
            cv2.destroyAllWindows()
    jsonl.close()
    if video is not None:
        video.close()
    wall = time.perf_counter() - t_start
    _summary(stats, wall, det, out, args.no_save)
    return 130 if interrupted and kind != "camera" else 0


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
        + f"; backend {det.backend.name}, model {det.metadata.arch} {det.input_size[1]}x{det.input_size[0]}"
    )
    print(f"results: {out / 'detections.jsonl'}" + ("" if no_save else f", annotated output in {out}"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``nano-detect``; returns the exit status."""
    from yolo_nano.core.metadata import MetadataError

    from .backends import BackendUnavailableError, ModelLoadError
    from .default_model import DefaultModelError

    args = _parser().parse_args(argv)
    try:
        return run(args)
    except (
        UsageError,
        ModelLoadError,
        MetadataError,
        BackendUnavailableError,
        DefaultModelError,
        ValueError,
        OSError,
    ) as e:
        print(f"nano-detect: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
