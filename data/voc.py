"""Pascal VOC reader (torch-free, Python 3.8).

Reads the ``VOCdevkit/VOC2007`` / ``VOC2012`` layout (and anything written in it, such as the
synthetic set of :mod:`yolo_nano.data.synth`)::

    ROOT/Annotations/<id>.xml   ROOT/JPEGImages/<id>.jpg   ROOT/ImageSets/Main/<split>.txt

``data`` may be one such ROOT or a ``VOCdevkit`` folder holding several (``VOC2007``, ``VOC2012``):
then the split is read from every year that has it, so ``VOCdevkit`` + ``trainval`` is VOC07+12.
Class names come from ``ROOT/classes.txt`` (one a line) when present, else VOC's standard 20.

XML is parsed with defusedxml (no entity expansion, no external entities). Boxes are converted from
VOC's 1-based inclusive integers to 0-based continuous pixels ``(xmin - 1, ymin - 1, xmax, ymax)``,
which makes plain IoU equal to the devkit's ``+1`` IoU. ``difficult`` flags are kept.

Bad input never skews the data silently: each problem is counted in :class:`VOCReport` (with a
few examples) and the caller prints :meth:`VOCReport.summary`; with ``strict=True`` the first problem
raises :class:`VOCError` instead.

* object of an unknown class -> object skipped (``unknown_class``)
* box with a missing, non-numeric or non-finite coordinate (``nan``, ``inf``, ``1e999``), with
  xmax < xmin or ymax < ymin, or entirely outside the image -> object skipped (``broken_box``)
* box partly outside the image -> clipped to it (``clipped_box``)
* annotation file empty, malformed or unsafe XML -> image skipped (``bad_annotation``)
* annotation or image file missing -> image skipped (``missing_file``)
* annotation with no objects -> image kept as a negative (``no_objects``, informational)
* a folder holding ``synth.incomplete.json`` (an interrupted ``nano-data synth``) -> :class:`VOCError`
* images are decoded by the one image reader, :func:`yolo_nano.core.images.read_image` (EXIF orientation
  applied; an unreadable, corrupt or oversized image raises its ``ImageReadError``, a ``ValueError``)
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from yolo_nano.core.metadata import VOC_CLASSES

PROBLEM_KINDS = ("unknown_class", "broken_box", "clipped_box", "bad_annotation", "missing_file", "no_objects")
_WARNING_KINDS = PROBLEM_KINDS[:-1]
_EXAMPLES = 5
#: Present in a folder that ``nano-data synth`` is writing (or was interrupted writing): not a usable set.
INCOMPLETE_MARKER = "synth.incomplete.json"
_MAX_SIDE = 1 << 20  # pixels: a size or coordinate beyond this is corrupt, not a photo


class VOCError(ValueError):
    """The VOC data is missing or malformed; the message says which file and what to do."""


@dataclass(frozen=True)
class VOCRecord:
    """One image: ``boxes`` (K, 4) float32 xyxy in 0-based continuous pixels, ``labels`` (K,) int64
    class indices, ``difficult`` (K,) bool; ``width``/``height`` in pixels from the XML (0 if absent)."""

    image_id: str
    image_path: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray


@dataclass
class VOCReport:
    """Counts (and a few examples) of the problems met while reading a split."""

    counts: Dict[str, int] = field(default_factory=lambda: OrderedDict((k, 0) for k in PROBLEM_KINDS))
    examples: Dict[str, List[str]] = field(default_factory=dict)

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        ex = self.examples.setdefault(kind, [])
        if len(ex) < _EXAMPLES:
            ex.append(message)

    @property
    def num_warnings(self) -> int:
        return sum(self.counts.get(k, 0) for k in _WARNING_KINDS)

    def summary(self) -> str:
        """One line per kind that occurred, with the first example; '' when all was clean."""
        lines = []
        for kind, n in self.counts.items():
            if n:
                lines.append(f"{kind}: {n} (e.g. {self.examples[kind][0]})")
        return "\n".join(lines)


@dataclass
class VOCSet:
    """A loaded split: its records, the class names their labels index, the problems met."""

    records: List[VOCRecord]
    class_names: Tuple[str, ...]
    report: VOCReport
    roots: List[str]

    def __len__(self) -> int:
        return len(self.records)


def _is_voc_root(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "Annotations")) and os.path.isdir(
        os.path.join(path, "ImageSets", "Main")
    )


def find_voc_roots(data: str) -> List[str]:
    """The VOC year folders under ``data`` (``data`` itself if it is one), sorted."""
    if not os.path.isdir(data):
        raise VOCError(
            f"{data}: no such folder; pass a VOC folder (with Annotations/, JPEGImages/, ImageSets/Main/) or a VOCdevkit"
        )
    if _is_voc_root(data):
        return [data]
    roots = sorted(os.path.join(data, d) for d in os.listdir(data) if _is_voc_root(os.path.join(data, d)))
    if not roots:
        raise VOCError(
            f"{data}: not a VOC data set: expected Annotations/, JPEGImages/ and ImageSets/Main/ in it, or in "
            f"sub-folders such as VOCdevkit/VOC2007 (generate a test set with `nano-data synth --out DIR`)"
        )
    return roots


def read_class_names(data: str) -> Tuple[str, ...]:
    """Class names of ``data``: its (first root's) ``classes.txt`` if present, else :data:`VOC_CLASSES`."""
    candidates = [os.path.join(data, "classes.txt")]
    if os.path.isdir(data):
        candidates += [os.path.join(r, "classes.txt") for r in find_voc_roots(data)]
    for path in candidates:
        if os.path.isfile(path):
            return read_names_file(path)
    return VOC_CLASSES


def read_names_file(path: str) -> Tuple[str, ...]:
    """Class names from a text file, one a line (blank lines ignored); duplicates are an error."""
    try:
        with open(path, encoding="utf-8") as f:
            names = tuple(line.strip() for line in f if line.strip())
    except (OSError, UnicodeDecodeError) as e:
        raise VOCError(f"{path}: cannot read class names: {e}") from e
    if not names:
        raise VOCError(f"{path}: no class names in it (expected one name a line)")
    if len(set(names)) != len(names):
        raise VOCError(f"{path}: duplicate class names")
    return names


def read_split_ids(root: str, split: str) -> List[str]:
    """Image ids listed in ``root/ImageSets/Main/<split>.txt``."""
    path = os.path.join(root, "ImageSets", "Main", split + ".txt")
    if not os.path.isfile(path):
        have = sorted(
            f[:-4]
            for f in os.listdir(os.path.join(root, "ImageSets", "Main"))
            if f.endswith(".txt") and "_" not in f
        )
        raise VOCError(f"{path}: no such split file; splits here: {', '.join(have) or 'none'}")
    try:
        with open(path, encoding="utf-8") as f:
            return [line.split()[0] for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise VOCError(
            f"{path}: cannot read split file ({type(e).__name__}: {e}); write it again as UTF-8 text"
        ) from e


def _text(node, tag: str) -> Optional[str]:  # noqa: ANN001 - an ElementTree element
    child = node.find(tag)
    return child.text.strip() if child is not None and child.text is not None else None


def _number(node, tag: str) -> float:  # noqa: ANN001
    """The number in ``<tag>``; ValueError naming the tag when it is missing, not a number, NaN/inf or
    beyond :data:`_MAX_SIDE` (``float`` accepts "nan" and "1e999", which would otherwise enter the
    ground truth, and 1e300 would become inf in the float32 boxes)."""
    value = _text(node, tag)
    if value is None:
        raise ValueError(f"<{tag}> missing")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"<{tag}> is {value[:40]!r}, not a number") from None
    if not math.isfinite(number) or abs(number) > _MAX_SIDE:
        raise ValueError(f"<{tag}> is {value[:40]!r}, not a finite pixel coordinate (|v| <= {_MAX_SIDE})")
    return number


def _image_side(size, tag: str) -> int:  # noqa: ANN001
    """``<size><tag>`` as whole pixels, 0 when absent or unusable (then boxes are not clipped)."""
    try:
        side = _number(size, tag) if size is not None else 0.0
    except ValueError:
        return 0
    return int(side) if side > 0 else 0


def parse_annotation(
    path: str, class_names: Sequence[str], report: Optional[VOCReport] = None, strict: bool = False
) -> Optional[Tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]:
    """Parse one VOC XML file -> (width, height, boxes, labels, difficult), or None when the file is
    unusable (counted in ``report``). See the module docstring for what counts as a problem."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import ParseError
    from defusedxml.ElementTree import parse as safe_parse

    report = report if report is not None else VOCReport()
    index = {name: i for i, name in enumerate(class_names)}

    def problem(kind: str, message: str) -> None:
        if strict:
            raise VOCError(f"{message} ({kind}; fix the file or drop strict mode to skip and count it)")
        report.add(kind, message)

    try:
        if os.path.getsize(path) == 0:
            problem("bad_annotation", f"{path}: empty annotation file")
            return None
        root = safe_parse(path).getroot()
    except FileNotFoundError:
        problem("missing_file", f"{path}: annotation file missing")
        return None
    except (ParseError, DefusedXmlException, OSError, LookupError, ValueError) as e:
        # LookupError/ValueError: an <?xml encoding=...?> Python has no decoder for (rot13, utf-32, idna)
        problem("bad_annotation", f"{path}: unreadable XML ({type(e).__name__}: {str(e)[:200]})")
        return None
    size = root.find("size")
    width, height = _image_side(size, "width"), _image_side(size, "height")
    if not (width and height):
        width = height = 0
    boxes: List[List[float]] = []
    labels: List[int] = []
    difficult: List[bool] = []
    for obj in root.iter("object"):
        name = _text(obj, "name")
        if name is None or name not in index:
            problem(
                "unknown_class",
                f"{path}: object of unknown class {name!r} (known: {len(class_names)} classes)",
            )
            continue
        bb = obj.find("bndbox")
        try:
            if bb is None:
                raise ValueError("<bndbox> missing")
            x1, y1 = _number(bb, "xmin") - 1.0, _number(bb, "ymin") - 1.0
            x2, y2 = _number(bb, "xmax"), _number(bb, "ymax")
        except ValueError as e:
            problem("broken_box", f"{path}: object {name!r}: {e}")
            continue
        if x2 <= x1 or y2 <= y1:
            problem(
                "broken_box",
                f"{path}: object {name!r}: box ({x1 + 1:g},{y1 + 1:g},{x2:g},{y2:g}) has max < min",
            )
            continue
        if width > 0 and height > 0:
            cx1, cy1, cx2, cy2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
            if cx2 <= cx1 or cy2 <= cy1:
                problem("broken_box", f"{path}: object {name!r}: box lies outside the {width}x{height} image")
                continue
            if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
                problem(
                    "clipped_box", f"{path}: object {name!r}: box extends outside the {width}x{height} image"
                )
                x1, y1, x2, y2 = cx1, cy1, cx2, cy2
        diff = _text(obj, "difficult")
        boxes.append([x1, y1, x2, y2])
        labels.append(index[name])
        difficult.append(diff is not None and diff not in ("0", ""))
    if not boxes:
        report.add("no_objects", f"{path}: no objects")
    return (
        width,
        height,
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(labels, np.int64),
        np.asarray(difficult, bool),
    )


def load_split(
    data: str, split: str, class_names: Optional[Sequence[str]] = None, strict: bool = False
) -> VOCSet:
    """Read split ``split`` of every VOC root under ``data`` (see :func:`find_voc_roots`)."""
    roots = find_voc_roots(data)
    for root in roots:
        if os.path.lexists(os.path.join(root, INCOMPLETE_MARKER)):
            raise VOCError(
                f"{root}: incomplete data set: a `nano-data synth` writing it was interrupted ({INCOMPLETE_MARKER} "
                "is there); run the same nano-data synth command again to finish it, or delete the folder"
            )
    names = tuple(class_names) if class_names is not None else read_class_names(data)
    usable = [r for r in roots if os.path.isfile(os.path.join(r, "ImageSets", "Main", split + ".txt"))]
    if not usable:
        # let read_split_ids produce the message that lists the splits that do exist
        read_split_ids(roots[0], split)
    report = VOCReport()
    records: List[VOCRecord] = []
    for root in usable:
        for iid in read_split_ids(root, split):
            ann = os.path.join(root, "Annotations", iid + ".xml")
            img = os.path.join(root, "JPEGImages", iid + ".jpg")
            if not os.path.isfile(img):
                alt = [os.path.join(root, "JPEGImages", iid + e) for e in (".jpeg", ".png", ".JPG")]
                found = [a for a in alt if os.path.isfile(a)]
                if not found:
                    if strict:
                        raise VOCError(f"{img}: image missing (listed in {split}.txt)")
                    report.add("missing_file", f"{img}: image missing")
                    continue
                img = found[0]
            parsed = parse_annotation(ann, names, report, strict)
            if parsed is None:
                continue
            w, h, boxes, labels, diff = parsed
            records.append(VOCRecord(iid, img, w, h, boxes, labels, diff))
    if not records:
        raise VOCError(f"{data}: split {split!r} has no usable images\n{report.summary()}")
    return VOCSet(records, names, report, usable)
