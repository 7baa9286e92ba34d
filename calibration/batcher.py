"""The one calibration batcher: images from a folder, a list file or VOC ImageSets, preprocessed by the
runtime's own :func:`yolo_nano.core.preprocess.preprocess` (letterbox, channel order, scale, NCHW).

Calibrating through a copy of the preprocessing is the most common cause of collapsed INT8 accuracy
in public TensorRT YOLO projects (stretch instead of letterbox, a missing /255), so there is no copy:
both TensorRT calibrators and the ONNX Runtime Q/DQ quantizer read their batches from here.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Iterator, List, Optional

import numpy as np

from yolo_nano.core.fileio import PathLike
from yolo_nano.core.images import IMAGE_EXTENSIONS, ImageReadError, is_image_file, read_image
from yolo_nano.core.metadata import ModelMetadata

#: NVIDIA suggests about 500 images to calibrate a detector.
RECOMMENDED_IMAGES = 500


class CalibrationDataError(ValueError):
    """The calibration image source is missing, empty or unreadable."""


class FewCalibrationImagesWarning(UserWarning):
    """Fewer calibration images than recommended: INT8 ranges may not cover real inputs."""


def _voc_jpeg_dir(list_file: str) -> Optional[str]:
    """The ``JPEGImages`` folder of the VOC year folder that holds ``list_file`` (ImageSets/Main/x.txt)."""
    folder = os.path.dirname(os.path.abspath(list_file))
    for _ in range(4):
        candidate = os.path.join(folder, "JPEGImages")
        if os.path.isdir(candidate):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return None


def _from_folder(folder: str) -> List[str]:
    voc = os.path.join(folder, "JPEGImages")
    if os.path.isdir(voc):
        folder = voc
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files) if is_image_file(f)]
    return found


def _from_list(list_file: str) -> List[str]:
    base = os.path.dirname(os.path.abspath(list_file))
    try:
        with open(list_file, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CalibrationDataError(f"{list_file}: cannot read the image list ({e})") from e
    paths: List[str] = []
    jpeg_dir: Optional[str] = None
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if is_image_file(line):  # a path (may contain spaces), relative to the list file's folder
            paths.append(line if os.path.isabs(line) else os.path.join(base, line))
            continue
        token = line.split()[0]  # VOC ImageSets: "000005" or "000005  1" (class lists); -1 rows are negatives
        if jpeg_dir is None:
            jpeg_dir = _voc_jpeg_dir(list_file)
            if jpeg_dir is None:
                raise CalibrationDataError(
                    f"{list_file}:{number}: {token!r} is neither an image path nor a VOC image id with a "
                    "JPEGImages folder above the list (expected VOCdevkit/VOC2007/ImageSets/Main/<split>.txt)"
                )
        paths.append(os.path.join(jpeg_dir, token + ".jpg"))
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise CalibrationDataError(
            f"{list_file}: {len(missing)} listed image(s) do not exist, e.g. {missing[0]}; fix the list or its paths"
        )
    return paths


def list_calibration_images(source: PathLike) -> List[str]:
    """Image paths from ``source``: a folder (recursive; a VOC year folder uses its ``JPEGImages``), a
    list file of image paths (relative to the list's folder), or a VOC ``ImageSets/Main/<split>.txt``.

    Raises :class:`CalibrationDataError` when the source does not exist or holds no images.
    """
    src = os.fspath(source)
    if os.path.isdir(src):
        paths = _from_folder(src)
    elif os.path.isfile(src):
        paths = _from_list(src)
    else:
        raise CalibrationDataError(
            f"calibration source {src} does not exist (give a folder of images or a list file)"
        )
    if not paths:
        raise CalibrationDataError(
            f"no calibration images in {src} (looked for {', '.join(IMAGE_EXTENSIONS)}); "
            f"use about {RECOMMENDED_IMAGES} images like the ones the model will see"
        )
    return paths


def subsample(paths: List[str], max_images: Optional[int]) -> List[str]:
    """At most ``max_images`` paths spread evenly over ``paths`` (deterministic; order kept)."""
    if max_images is None or max_images >= len(paths):
        return list(paths)
    if max_images <= 0:
        raise CalibrationDataError(f"max_images must be positive, got {max_images}")
    idx = np.linspace(0, len(paths) - 1, num=max_images).round().astype(np.int64)
    return [paths[int(i)] for i in idx]


class CalibrationBatcher:
    """Iterate float32 batches ``(batch_size, 3, H, W)`` of preprocessed calibration images.

    ``meta`` defines the preprocessing (through :func:`yolo_nano.core.preprocess.preprocess`). A last
    partial batch is dropped (TensorRT calibrates with a fixed batch). Images are decoded by the one
    image reader (:func:`yolo_nano.core.images.read_image`: EXIF orientation applied, as nano-detect
    sees them); unreadable, corrupt or oversized images are skipped and counted, with one warning. ``len(batcher)`` is the number of full batches. Warns
    (:class:`FewCalibrationImagesWarning`) below :data:`RECOMMENDED_IMAGES` images.
    """

    def __init__(
        self,
        source: PathLike,
        meta: ModelMetadata,
        batch_size: int = 1,
        max_images: Optional[int] = None,
        progress: bool = True,
    ) -> None:
        if batch_size < 1:
            raise CalibrationDataError(f"calibration batch size must be >= 1, got {batch_size}")
        self.source = os.fspath(source)
        self.meta = meta
        self.batch_size = int(batch_size)
        self.progress = progress
        self.paths = subsample(list_calibration_images(source), max_images)
        self.skipped: List[str] = []
        self.skip_reasons: List[str] = []  # the reader's one-line message for each skipped image
        if len(self.paths) < self.batch_size:
            raise CalibrationDataError(
                f"{self.source}: {len(self.paths)} image(s) cannot fill one calibration batch of {self.batch_size}"
            )
        if len(self.paths) < RECOMMENDED_IMAGES:
            warnings.warn(
                f"only {len(self.paths)} calibration images in {self.source}; about {RECOMMENDED_IMAGES} "
                "representative images are recommended for a detector (INT8 ranges may clip real inputs)",
                FewCalibrationImagesWarning,
                stacklevel=2,
            )

    @property
    def num_images(self) -> int:
        """Images the batcher will use (full batches only)."""
        return len(self) * self.batch_size

    def __len__(self) -> int:
        return len(self.paths) // self.batch_size

    def __iter__(self) -> Iterator[np.ndarray]:
        from tqdm import tqdm

        from yolo_nano.core.preprocess import preprocess

        self.skipped = []
        self.skip_reasons = []
        pending: List[np.ndarray] = []
        produced = 0
        bar = tqdm(
            self.paths,
            desc="calibration images",
            unit="img",
            disable=not self.progress,
            file=sys.stderr,
            leave=False,
        )
        try:
            for path in bar:
                try:
                    image = read_image(path)
                except ImageReadError as e:
                    self.skipped.append(path)
                    self.skip_reasons.append(str(e))
                    continue
                pending.append(image)
                if len(pending) == self.batch_size:
                    batch, _ = preprocess(pending, self.meta)
                    pending = []
                    produced += 1
                    yield np.ascontiguousarray(batch, dtype=np.float32)
        finally:
            bar.close()
        if self.skipped:
            warnings.warn(
                f"skipped {len(self.skipped)} unreadable calibration image(s), e.g. {self.skip_reasons[0]}",
                stacklevel=2,
            )
        if produced == 0:
            raise CalibrationDataError(
                f"{self.source}: none of the {len(self.paths)} calibration images could be read as an image "
                f"(e.g. {self.paths[0]})"
            )
