"""A synthetic detection data set in the Pascal VOC layout (torch-free).

``nano-data synth --out DIR --train N --val M --seed S`` writes::

    DIR/JPEGImages/<id>.jpg            RGB scenes, JPEG quality 90..95
    DIR/Annotations/<id>.xml           VOC XML (1-based inclusive pixel boxes, difficult, truncated)
    DIR/ImageSets/Main/train.txt       one image id a line
    DIR/ImageSets/Main/val.txt
    DIR/classes.txt                    the class names, one a line, in class-id order
    DIR/synth.json                     the generator's parameters (seed, counts, version)

so the VOC reader (:mod:`yolo_nano.data.voc`), training and evaluation treat it exactly like VOC.

Each scene has a textured background (smooth noise, stripes or a checkerboard, blended), 1..4 filled
shapes of :data:`SHAPE_CLASSES` with random size (about 18..55 % of the shorter image side), aspect
jitter, rotation and colour, drawn in order so later shapes occlude earlier ones, then Gaussian noise
and an optional blur. Boxes are the bounding boxes of each shape's *visible* pixels; a shape less than
half visible is marked ``difficult`` (VOC's convention: excluded from recall, never a false positive).
A shape less than 15 % visible gets no box; it is redrawn in a later position instead, so no
unannotated object is left in a picture.

Every image depends only on ``(seed, split, index)``: ``--train 0 --val 64`` writes the same first 64
validation images as ``--train 5000 --val 500`` with the same seed.

An interrupted run never leaves a folder that lies about itself. Before the first image the folder gets
``synth.incomplete.json`` (the new run's parameters) and loses ``synth.json`` and the split files; only
when every image is written do the split files and ``synth.json`` appear and the marker go. The VOC
reader refuses a folder with the marker, saying to run the command again. A rerun into a folder that an
earlier ``nano-data synth`` wrote (complete or not) writes the whole set again, deleting first the
generated images of other parameters (another seed), so every image present matches the marker. A
non-empty folder that nano-data did not write is refused (:class:`SynthFolderError`), never mixed into
(:mod:`yolo_nano.data.synth_folder`).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from yolo_nano.core.cli import EXIT_INTERRUPTED, CommandError, run_command, warn
from yolo_nano.core.fileio import atomic_write_bytes
from yolo_nano.data.synth_folder import (
    INFO_FILE,
    SynthFolderError,
    describe,
    finish_run,
    previous_run,
    same_images,
    start_run,
)
from yolo_nano.data.voc import INCOMPLETE_MARKER

__all__ = [
    "INFO_FILE",
    "SHAPE_CLASSES",
    "SynthConfig",
    "SynthFolderError",
    "SynthObject",
    "annotation_xml",
    "generate_sample",
    "image_id",
    "main",
    "previous_run",
    "run_params",
    "write_dataset",
]

SHAPE_CLASSES: Tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
GENERATOR_VERSION = 1
_SPLIT_CODES = {"train": 1, "val": 2, "test": 3}
_DIFFICULT_VISIBLE = 0.5
_MIN_VISIBLE = 0.15


@dataclass(frozen=True)
class SynthObject:
    """One annotated shape: class index, visible box in 0-based continuous pixels (x1, y1, x2, y2)."""

    class_id: int
    box: Tuple[float, float, float, float]
    difficult: bool
    truncated: bool


@dataclass(frozen=True)
class SynthConfig:
    """Scene parameters. Sizes are fractions of the shorter image side; sides are pixels."""

    min_side: int = 224
    max_side: int = 320
    min_objects: int = 1
    max_objects: int = 4
    min_size: float = 0.18
    max_size: float = 0.55
    max_noise_sigma: float = 8.0
    classes: Tuple[str, ...] = SHAPE_CLASSES


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in _SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(_SPLIT_CODES)}")
    return np.random.default_rng([int(seed), _SPLIT_CODES[split], int(index), GENERATOR_VERSION])


def image_id(split: str, index: int) -> str:
    """The VOC image id of image ``index`` of ``split`` (e.g. ``val_000012``)."""
    return f"{split}_{index:06d}"


# ---------------------------------------------------------------------------------------------- background
def _smooth_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    cells = int(rng.integers(2, 9))
    small = rng.random((cells, cells, 3)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _stripes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(8, 40)
    phase = (xx * math.cos(angle) + yy * math.sin(angle)) * (2 * math.pi / period)
    wave = (0.5 + 0.5 * np.sin(phase))[..., None]
    c1, c2 = rng.random(3).astype(np.float32), rng.random(3).astype(np.float32)
    return c1 * wave + c2 * (1 - wave)


def _checker(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    cell = int(rng.integers(6, 32))
    yy, xx = np.mgrid[0:h, 0:w]
    mask = (((yy // cell) + (xx // cell)) % 2).astype(np.float32)[..., None]
    c1, c2 = rng.random(3).astype(np.float32), rng.random(3).astype(np.float32)
    return c1 * mask + c2 * (1 - mask)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A float32 HxWx3 texture in [0, 1]."""
    base = _smooth_noise(rng, h, w)
    kind = int(rng.integers(0, 3))
    if kind == 1:
        base = base * 0.5 + _stripes(rng, h, w) * 0.5
    elif kind == 2:
        base = base * 0.5 + _checker(rng, h, w) * 0.5
    # fine grain so the background is never flat
    grain = cv2.GaussianBlur(rng.normal(0, 0.08, (h, w, 3)).astype(np.float32), (0, 0), 1.2)
    return np.clip(base * rng.uniform(0.5, 1.0) + grain, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------- shapes
def _polygon(class_name: str) -> Optional[np.ndarray]:
    """Unit-radius outline (K, 2) of a shape, centred at 0, or None for the circle."""
    if class_name == "circle":
        return None
    if class_name == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) / math.sqrt(2) * 1.2
    if class_name == "triangle":
        a = np.deg2rad([-90, 30, 150])
        return np.stack([np.cos(a), np.sin(a)], 1) * 1.15
    if class_name == "star":
        a = np.deg2rad(np.arange(10) * 36 - 90)
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return np.stack([np.cos(a) * r, np.sin(a) * r], 1)
    if class_name == "cross":
        t = 1.0 / 3.0
        return np.array(
            [
                [-t, -1],
                [t, -1],
                [t, -t],
                [1, -t],
                [1, t],
                [t, t],
                [t, 1],
                [-t, 1],
                [-t, t],
                [-1, t],
                [-1, -t],
                [-t, -t],
            ],
            np.float64,
        )
    raise ValueError(f"unknown shape class {class_name!r}; known: {SHAPE_CLASSES}")


def _shape_mask(
    class_name: str, h: int, w: int, cx: float, cy: float, radius: float, angle: float, aspect: float
) -> np.ndarray:
    """An anti-aliased uint8 HxW coverage mask (0..255) of one shape."""
    mask = np.zeros((h, w), np.uint8)
    shift = 4  # sub-pixel precision for cv2 drawing
    scale = 1 << shift
    poly = _polygon(class_name)
    if poly is None:
        axes = (max(1, int(round(radius * aspect * scale))), max(1, int(round(radius / aspect * scale))))
        centre = (int(round(cx * scale)), int(round(cy * scale)))
        cv2.ellipse(mask, centre, axes, math.degrees(angle), 0, 360, 255, -1, cv2.LINE_AA, shift)
        return mask
    pts = poly * np.array([aspect, 1.0 / aspect]) * radius
    c, s = math.cos(angle), math.sin(angle)
    pts = pts @ np.array([[c, s], [-s, c]]) + np.array([cx, cy])
    cv2.fillPoly(mask, [np.round(pts * scale).astype(np.int32)], 255, cv2.LINE_AA, shift)
    return mask


def _contrasting_colour(rng: np.random.Generator, avoid: Sequence[np.ndarray]) -> np.ndarray:
    """A random colour at least a fixed L1 distance from every colour in ``avoid`` (RGB in [0, 1])."""
    best, best_d = None, -1.0
    for _ in range(12):
        colour = rng.random(3).astype(np.float32)
        d = min(float(np.abs(colour - a).sum()) for a in avoid)
        if d > 0.6:
            return colour
        if d > best_d:
            best, best_d = colour, d
    assert best is not None
    return best


def generate_sample(
    seed: int, split: str, index: int, config: SynthConfig = SynthConfig()
) -> Tuple[np.ndarray, List[SynthObject]]:
    """Render image ``index`` of ``split``: a BGR uint8 HxWx3 image and its visible-shape annotations."""
    rng = _rng(seed, split, index)
    h = int(rng.integers(config.min_side, config.max_side + 1))
    w = int(rng.integers(config.min_side, config.max_side + 1))
    image = _background(rng, h, w)
    side = min(h, w)
    n_obj = int(rng.integers(config.min_objects, config.max_objects + 1))

    placed: List[Tuple[int, np.ndarray, float]] = []  # (class_id, coverage mask in [0, 1], full area)
    colours: List[np.ndarray] = []
    attempts = 0
    while len(placed) < n_obj and attempts < n_obj * 6:
        attempts += 1
        cls = int(rng.integers(0, len(config.classes)))
        size = rng.uniform(config.min_size, config.max_size) * side  # box side, roughly
        radius = size / 2
        aspect = math.sqrt(rng.uniform(0.8, 1.25))
        angle = rng.uniform(0, 2 * math.pi)
        # centres may sit slightly outside so some shapes are truncated by the border
        cx = rng.uniform(radius * 0.7, w - radius * 0.7)
        cy = rng.uniform(radius * 0.7, h - radius * 0.7)
        mask = (
            _shape_mask(config.classes[cls], h, w, cx, cy, radius, angle, aspect).astype(np.float32) / 255.0
        )
        area = float(mask.sum())
        if area < 16:
            continue
        # would this shape hide an earlier one almost entirely? then place it elsewhere
        too_hidden = False
        for _, prev, prev_area in placed:
            if float((prev * (1 - mask)).sum()) < _MIN_VISIBLE * prev_area:
                too_hidden = True
                break
        if too_hidden:
            continue
        ys, xs = np.nonzero(mask > 0.5)
        avoid = [image[ys, xs].mean(0) if len(ys) else image.mean((0, 1))]
        avoid += [col for (_, prev, _), col in zip(placed, colours) if float((prev * mask).sum()) > 0]
        colour = _contrasting_colour(rng, avoid)
        colours.append(colour)
        shade = 1.0 + rng.normal(0, 0.05, (h, w, 1)).astype(np.float32)  # mild texture on the shape
        image = image * (1 - mask[..., None]) + np.clip(colour * shade, 0, 1) * mask[..., None]
        # earlier masks lose what this one covers
        placed = [(c, m * (1 - mask), a) for c, m, a in placed]
        placed.append((cls, mask, area))

    noise = rng.uniform(0, config.max_noise_sigma) / 255.0
    image = image + rng.normal(0, noise, image.shape).astype(np.float32)
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.0))
    rgb = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)

    objects: List[SynthObject] = []
    for cls, mask, full_area in placed:
        visible = mask > 0.5
        ys, xs = np.nonzero(visible)
        if len(ys) < 9:
            continue
        frac = float(mask.sum()) / full_area
        x1, y1, x2, y2 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
        truncated = x1 <= 0 or y1 <= 0 or x2 >= w or y2 >= h
        objects.append(SynthObject(cls, (x1, y1, x2, y2), frac < _DIFFICULT_VISIBLE, truncated))
    return rgb[..., ::-1].copy(), objects


# ---------------------------------------------------------------------------------------------- writing
def annotation_xml(
    image_id_: str, width: int, height: int, objects: Sequence[SynthObject], classes: Sequence[str]
) -> str:
    """VOC XML for one image; boxes written as 1-based inclusive integer pixels like the real set."""
    lines = [
        "<annotation>",
        "  <folder>synth</folder>",
        f"  <filename>{image_id_}.jpg</filename>",
        "  <source><database>yolo-nano-edge synthetic shapes</database></source>",
        f"  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
        "  <segmented>0</segmented>",
    ]
    for o in objects:
        x1, y1, x2, y2 = o.box
        xmin, ymin = int(round(x1)) + 1, int(round(y1)) + 1
        xmax, ymax = max(xmin, int(round(x2))), max(ymin, int(round(y2)))
        lines += [
            "  <object>",
            f"    <name>{classes[o.class_id]}</name>",
            "    <pose>Unspecified</pose>",
            f"    <truncated>{int(o.truncated)}</truncated>",
            f"    <difficult>{int(o.difficult)}</difficult>",
            f"    <bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>",
            "  </object>",
        ]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def _iter_jobs(n_train: int, n_val: int) -> Iterator[Tuple[str, int]]:
    for i in range(n_train):
        yield "train", i
    for i in range(n_val):
        yield "val", i


def run_params(n_train: int, n_val: int, seed: int, config: SynthConfig) -> Dict[str, Any]:
    """What ``synth.json`` (and the incomplete marker) records about a run; equal params, equal files."""
    return {
        "generator": "yolo_nano.data.synth",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "train": n_train,
        "val": n_val,
        "classes": list(config.classes),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
    }


def write_dataset(
    out: str,
    n_train: int,
    n_val: int,
    seed: int = 0,
    config: SynthConfig = SynthConfig(),
    progress: bool = True,
) -> str:
    """Write a synthetic VOC-layout set to ``out`` (see the module docstring); returns ``out``.

    :class:`SynthFolderError` when ``out`` holds files nano-data synth did not write.
    """
    if n_train < 0 or n_val < 0 or n_train + n_val == 0:
        raise ValueError(f"need a positive number of images (got --train {n_train} --val {n_val})")
    params = run_params(n_train, n_val, seed, config)
    start_run(out, params)
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    ids = {"train": [], "val": []}  # type: dict
    jobs = list(_iter_jobs(n_train, n_val))
    iterator = jobs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(jobs, desc="synth", unit="img", leave=False)
    for split, i in iterator:
        img, objects = generate_sample(seed, split, i, config)
        iid = image_id(split, i)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {iid}")
        atomic_write_bytes(os.path.join(out, "JPEGImages", iid + ".jpg"), buf.tobytes(), fsync=False)
        xml = annotation_xml(iid, img.shape[1], img.shape[0], objects, config.classes)
        atomic_write_bytes(os.path.join(out, "Annotations", iid + ".xml"), xml.encode("utf-8"), fsync=False)
        ids[split].append(iid)
    for split, lst in ids.items():
        if lst:
            atomic_write_bytes(
                os.path.join(out, "ImageSets", "Main", split + ".txt"), ("\n".join(lst) + "\n").encode()
            )
    atomic_write_bytes(os.path.join(out, "classes.txt"), ("\n".join(config.classes) + "\n").encode())
    finish_run(out, params)
    return out


# ---------------------------------------------------------------------------------------------- CLI
def _main(argv: Optional[Sequence[str]]) -> int:
    parser = argparse.ArgumentParser(prog="nano-data", description="Data set tools for yolo-nano-edge.")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("synth", help="write a synthetic shapes detection set in the Pascal VOC layout")
    p.add_argument(
        "--out",
        required=True,
        help="output folder: new, empty, or one nano-data synth wrote before (then written again)",
    )
    p.add_argument("--train", type=int, default=2000, help="training images (default 2000)")
    p.add_argument("--val", type=int, default=200, help="validation images (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same images")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.command != "synth":
        parser.print_usage(sys.stderr)
        raise CommandError("choose a command (synth)")
    if args.train < 0 or args.val < 0 or args.train + args.val == 0:
        raise CommandError(f"--train and --val must be >= 0 and not both 0 (got {args.train}, {args.val})")
    params = run_params(args.train, args.val, args.seed, SynthConfig())
    try:
        state, before = previous_run(args.out)
    except SynthFolderError as e:
        raise CommandError(str(e)) from e
    if state == "incomplete":
        warn(
            "nano-data",
            f"{args.out}: an earlier nano-data synth ({describe(before)}) was interrupted; writing the set again",
        )
    elif state == "complete" and not same_images(before, params):
        warn("nano-data", f"{args.out}: replacing the synthetic set there ({describe(before)})")
    try:
        write_dataset(args.out, args.train, args.val, args.seed, progress=not args.no_progress)
    except OSError as e:
        marked = os.path.lexists(os.path.join(args.out, INCOMPLETE_MARKER))
        raise CommandError(
            f"cannot write {args.out}: {e}"
            + (f"; it stays marked incomplete ({INCOMPLETE_MARKER}) until a run finishes" if marked else "")
        ) from e
    except KeyboardInterrupt:
        raise CommandError(
            f"interrupted: {args.out} is incomplete ({INCOMPLETE_MARKER}); run the same command again to finish it",
            EXIT_INTERRUPTED,
        ) from None
    print(f"wrote {args.train} train + {args.val} val images to {args.out}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``nano-data synth --out DIR --train N --val M --seed S``; exit 0, 2 bad input, 130 interrupted."""
    return run_command("nano-data", _main, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
