"""Frame sources shared by nano-detect and nano-bench: image files, folders, video files, cameras and
synthetic frames, all giving HxWx3 uint8 BGR frames (images through :func:`yolo_nano.core.images.read_image`).

For nano-detect (one pass over a source)::

    with open_source("clip.mp4", max_frames=None, warn=print_line) as source:   # or "0", "img.jpg", "dir"
        for frame in source:            # Frame(image, label, number, path)
            ...
    source.kind          # "image" | "folder" | "video" | "camera"
    source.skipped       # folder images skipped (unreadable or too large), one warning line each
    source.truncated     # a video that ended before CAP_PROP_FRAME_COUNT frames (warned)

For nano-bench (a frame on every call, cycling forever)::

    BENCH_SOURCES                                        # ("synthetic", "images", "video"): --source choices
    frames = LoopingFrames(kind, path=None, n_frames=16) # path: --input (folder / video); None: generated
    frames.next()  frames.description  frames.close()
    synthetic_frames(n=16, size=(480, 640), seed=0)      # in-memory scenes (List[HxWx3 uint8 BGR])

Bad sources raise :class:`SourceError` (a ``ValueError``: one line, exit 2), unreadable single images
raise :class:`yolo_nano.core.images.ImageReadError`; nothing leaks a ``cv2.error``. (A little over 450
lines: one module on purpose, so nano-detect and nano-bench cannot drift apart on how frames are read.)
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np

from yolo_nano.core.images import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image

__all__ = [
    "BENCH_SOURCES",
    "VIDEO_EXTENSIONS",
    "Frame",
    "FrameSource",
    "ImageFiles",
    "LoopingFrames",
    "SourceError",
    "SourceWarning",
    "VideoFrames",
    "open_source",
    "print_warning",
    "synthetic_frames",
]

BENCH_SOURCES = ("synthetic", "images", "video")
VIDEO_EXTENSIONS = (
    ".mp4",
    ".avi",
    ".mov",
    ".mkv",
    ".webm",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".mjpg",
    ".mjpeg",
)
_MAX_CAMERA_INDEX = 2**31 - 1  # OpenCV takes a C int


class SourceError(ValueError):
    """A frame source that cannot be used (missing, empty folder, undecodable video, no camera)."""


class SourceWarning(UserWarning):
    """Something in a source was skipped or ended early (the default ``warn`` of the sources)."""


def _default_warn(message: str) -> None:
    warnings.warn(message, SourceWarning, stacklevel=3)


class Frame(NamedTuple):
    """One frame: ``image`` HxWx3 uint8 BGR; ``label`` names the source in results (the image path,
    the video path, ``camera:0``); ``number`` counts frames within a video/camera from 0 (0 for
    images); ``path`` is the image file (None for video and camera frames)."""

    image: np.ndarray
    label: str
    number: int
    path: Optional[Path]


class FrameSource:
    """Base of the one-pass sources: iterate :class:`Frame`; use as a context manager or call close()."""

    kind = ""

    def __init__(self, label: str, warn: Optional[Callable[[str], None]] = None) -> None:
        self.label = label
        self.name = Path(label).stem or label  # for output file names (video stem, camera0)
        self.warn = warn or _default_warn
        self.skipped = 0
        self.truncated = False
        self.fps: Optional[float] = None
        self.frame_count: Optional[int] = None  # expected frames when known (images, video files)

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file (safe to call twice)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ImageFiles(FrameSource):
    """Image files decoded one at a time. ``kind`` "image" (one file: an unreadable file raises) or
    "folder" (an unreadable or too-large file is skipped with one warning line and counted in
    ``skipped``; a summary line at the end; :class:`SourceError` when none could be read)."""

    def __init__(
        self,
        paths: List[Path],
        kind: str,
        label: str,
        max_pixels: Optional[int] = None,
        warn: Optional[Callable[[str], None]] = None,
    ) -> None:
        super().__init__(label, warn)
        self.kind = kind
        self.paths = paths
        self.max_pixels = max_pixels
        self.frame_count = len(paths)

    def __iter__(self) -> Iterator[Frame]:
        self.skipped = 0
        read = 0
        for path in self.paths:
            try:
                image = read_image(path, self.max_pixels)
            except ImageReadError as e:
                if self.kind == "image":
                    raise
                self.warn(f"skipping {e}")
                self.skipped += 1
                continue
            read += 1
            yield Frame(image, str(path), 0, path)
        if self.kind == "folder" and self.skipped:
            if read == 0:
                raise SourceError(f"none of the {len(self.paths)} images in {self.label} could be read")
            self.warn(f"skipped {self.skipped} of {len(self.paths)} images in {self.label}")


def _quiet_capture(target: Any) -> Any:
    """cv2.VideoCapture(target) without OpenCV's backend-probing messages on stderr."""
    import cv2

    log = getattr(getattr(cv2, "utils", None), "logging", None)
    old = log.getLogLevel() if log is not None else None
    if log is not None:
        log.setLogLevel(log.LOG_LEVEL_ERROR)
    try:
        return cv2.VideoCapture(target)
    finally:
        if log is not None:
            log.setLogLevel(old)


class VideoFrames(FrameSource):
    """Frames of a video file (``kind`` "video") or a camera (``kind`` "camera", ``target`` an int index).

    Stops after ``max_frames`` when given. A video file that ends before its container's frame count
    (``CAP_PROP_FRAME_COUNT``) is warned about and marked ``truncated``; a camera that stops delivering
    is warned about. :class:`SourceError` when it cannot be opened or gives no frame at all.
    """

    def __init__(
        self,
        target: Any,
        kind: str,
        max_frames: Optional[int] = None,
        warn: Optional[Callable[[str], None]] = None,
    ) -> None:
        import cv2

        label = f"camera:{target}" if kind == "camera" else str(target)
        super().__init__(label, warn)
        self.kind = kind
        self.max_frames = max_frames
        self.name = f"camera{target}" if kind == "camera" else Path(str(target)).stem
        try:
            self.cap = _quiet_capture(target if kind == "camera" else str(target))
        except (cv2.error, OverflowError, SystemError, TypeError) as e:
            raise SourceError(f"{label}: OpenCV cannot open it ({str(e).strip().splitlines()[-1]})") from e
        if not self.cap.isOpened():
            self.cap.release()
            if kind == "camera":
                raise SourceError(
                    f"camera {target} could not be opened (is it connected? try another index; ls /dev/video*)"
                )
            raise SourceError(f"cannot open video {target} (corrupt file or a codec OpenCV lacks)")
        fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if np.isfinite(fps) and 0 < fps < 1000 else 30.0
        if kind == "video":
            count = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
            self.frame_count = int(count) if np.isfinite(count) and count > 0 else None
        self.frames_read = 0

    def __iter__(self) -> Iterator[Frame]:
        n = 0
        while self.max_frames is None or n < self.max_frames:
            try:
                ok, image = self.cap.read()
            except Exception as e:  # cv2.error from a broken stream: end it like a failed read
                self.warn(f"{self.label}: reading frame {n} failed ({str(e).strip().splitlines()[-1]})")
                ok, image = False, None
            if not ok or image is None:
                break
            n += 1
            self.frames_read = n
            yield Frame(image, self.label, n - 1, None)
        else:
            return  # stopped at max_frames: nothing ended early
        if n == 0:
            raise SourceError(f"no frame could be read from {self.label}")
        if self.kind == "video" and self.frame_count is not None and n < self.frame_count:
            self.truncated = True
            self.warn(
                f"{self.label}: video ended after {n} of its {self.frame_count} frames "
                "(truncated or corrupt file); the results cover only those frames"
            )
        elif self.kind == "camera":
            self.warn(f"{self.label}: camera stopped delivering frames after {n}")

    def close(self) -> None:
        self.cap.release()


def _camera_index(source: str) -> Optional[int]:
    """The camera index a SOURCE string names (all digits), else None; SourceError when out of range."""
    if not source.isdigit():
        return None
    index = int(source)
    if index > _MAX_CAMERA_INDEX:
        raise SourceError(
            f"camera index {source} is out of range (0 to {_MAX_CAMERA_INDEX}); cameras are 0, 1, ..."
        )
    return index


def open_source(
    source: str,
    max_frames: Optional[int] = None,
    max_pixels: Optional[int] = None,
    warn: Optional[Callable[[str], None]] = None,
) -> FrameSource:
    """The source nano-detect's SOURCE names: a camera index (``0``), a folder (its images, not
    recursive), an image file, or a video file. :class:`SourceError` for anything else."""
    index = _camera_index(source)
    if index is not None:
        return VideoFrames(index, "camera", max_frames, warn)
    path = Path(source)
    if not path.exists():
        raise SourceError(
            f"source not found: {source} (expected an image, a folder, a video file or a camera index)"
        )
    if path.is_dir():
        paths = [Path(p) for p in list_images(path)]
        if not paths:
            raise SourceError(f"folder {source} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        return ImageFiles(paths, "folder", source, max_pixels, warn)
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return ImageFiles([path], "image", source, max_pixels, warn)
    if ext in VIDEO_EXTENSIONS:
        if not path.is_file():
            raise SourceError(f"{source}: not a regular file (a pipe or device?); give a video file")
        return VideoFrames(path, "video", max_frames, warn)
    raise SourceError(
        f"{source}: unknown file type {ext or '(no extension)'}; images: {' '.join(IMAGE_EXTENSIONS)}; "
        f"videos: {' '.join(VIDEO_EXTENSIONS)}"
    )


# ------------------------------------------------------------------------------- nano-bench frames
def synthetic_frames(n: int = 16, size: Tuple[int, int] = (480, 640), seed: int = 0) -> List[np.ndarray]:
    """``n`` BGR uint8 scenes (H, W, 3) with shapes on textured backgrounds, resized to ``size`` (h, w)."""
    import cv2

    from yolo_nano.data.synth import generate_sample

    out = []
    for i in range(n):
        img, _ = generate_sample(seed, "test", i)
        out.append(cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LINEAR))
    return out


def _write_mjpg(path: str, frames: List[np.ndarray], fps: float = 30.0) -> None:
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))  # type: ignore[attr-defined]
    if not writer.isOpened():
        raise SourceError("OpenCV cannot write an MJPG video here; use --source images or synthetic")
    for f in frames:
        writer.write(f)
    writer.release()


class LoopingFrames:
    """nano-bench's end-to-end frames: :meth:`next` returns one HxWx3 uint8 BGR frame, cycling forever.

    ``synthetic``: ``n_frames`` scenes held in memory (no I/O). ``images``: files decoded with
    :func:`read_image` on every call (``path`` a folder; default: the synthetic scenes written as JPEG to
    a temp folder); each file is decoded once up front and unreadable ones are left out with one warning
    line each, so the measured loop never meets a bad file. ``video``: frames decoded from a video file
    (default: the synthetic scenes as an MJPG AVI), rewound at the end. :class:`SourceError` for a bad
    ``path`` (one line for the CLI).
    """

    def __init__(
        self,
        kind: str,
        path: Optional[str] = None,
        n_frames: int = 16,
        warn: Optional[Callable[[str], None]] = None,
    ) -> None:
        self.kind = kind
        self.warn = warn or _default_warn
        self._tmp: Optional[tempfile.TemporaryDirectory] = None
        self._i = 0
        self._cap: Any = None
        self.skipped = 0
        self.description = kind
        if kind not in BENCH_SOURCES:
            raise SourceError(f"unknown --source {kind!r}; choose one of {', '.join(BENCH_SOURCES)}")
        if kind == "synthetic":
            if path is not None:
                raise SourceError("--input is for --source images|video; synthetic frames are generated")
            self.frames = synthetic_frames(n_frames)
            return
        if path is None:
            path = self._generate(kind, n_frames)
            self.description = f"{kind} (generated: {n_frames} synthetic scenes)"
        else:
            self.description = f"{kind}: {path}"
        try:
            if kind == "images":
                self._open_images(path)
            else:
                self._open_video(path)
        except BaseException:
            self.close()
            raise

    def _generate(self, kind: str, n_frames: int) -> str:
        import cv2

        self._tmp = tempfile.TemporaryDirectory(prefix="nano-bench-")
        frames = synthetic_frames(n_frames)
        if kind == "images":
            for i, f in enumerate(frames):
                cv2.imwrite(os.path.join(self._tmp.name, f"{i:04d}.jpg"), f, [cv2.IMWRITE_JPEG_QUALITY, 90])
            return self._tmp.name
        path = os.path.join(self._tmp.name, "synthetic.avi")
        _write_mjpg(path, frames)
        return path

    def _open_images(self, path: str) -> None:
        if not os.path.isdir(path):
            raise SourceError(f"--input {path}: not a folder of images")
        listed = list_images(path)
        if not listed:
            raise SourceError(f"--input {path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
        self.files: List[str] = []
        for p in listed:
            try:
                read_image(p)
            except ImageReadError as e:
                self.warn(f"skipping {e}")
                self.skipped += 1
                continue
            self.files.append(p)
        if not self.files:
            raise SourceError(f"--input {path}: none of the {len(listed)} images could be read")
        if self.skipped:
            self.warn(f"skipped {self.skipped} of {len(listed)} images in {path}")

    def _open_video(self, path: str) -> None:
        if not os.path.isfile(path):
            raise SourceError(f"--input {path}: video file not found (or not a regular file)")
        self._path = path
        self._cap = self._capture()

    def _capture(self) -> Any:
        import cv2

        try:
            cap = _quiet_capture(self._path)
            ok, _ = cap.read() if cap.isOpened() else (False, None)
        except cv2.error:
            ok, cap = False, None
        if not ok:
            if cap is not None:
                cap.release()
            raise SourceError(f"--input {self._path}: OpenCV cannot decode this video")
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        return cap

    def next(self) -> np.ndarray:
        """The next frame (HxWx3 uint8 BGR)."""
        if self.kind == "synthetic":
            f = self.frames[self._i % len(self.frames)]
            self._i += 1
            return f
        if self.kind == "images":
            p = self.files[self._i % len(self.files)]
            self._i += 1
            try:
                return read_image(p)
            except ImageReadError as e:  # changed since it was checked
                raise SourceError(str(e)) from e
        ok, frame = self._cap.read()
        if not ok or frame is None:
            self._cap.release()
            self._cap = self._capture()  # rewind by reopening: seeking is unreliable in some containers
            ok, frame = self._cap.read()
            if not ok or frame is None:
                raise SourceError(f"cannot decode video {self._path}")
        return frame

    def close(self) -> None:
        """Release the video and remove generated files (safe to call twice)."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def print_warning(prog: str) -> Callable[[str], None]:
    """A ``warn`` callback printing ``prog: warning: message`` lines on stderr (through tqdm when a
    progress bar may be on screen, so the bar is redrawn below the line)."""

    def emit(message: str) -> None:
        line = f"{prog}: warning: {' '.join(message.split())}"
        try:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)
        except ImportError:
            print(line, file=sys.stderr)

    return emit
