"""Detection results of one image: boxes in the original image's pixels, scores, classes, labels."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, NamedTuple, Sequence, Tuple

import cv2
import numpy as np


class Detection(NamedTuple):
    """One detection: ``box`` (x1, y1, x2, y2) in original pixels, ``score`` in [0, 1], class id and label."""

    box: Tuple[float, float, float, float]
    score: float
    class_id: int
    label: str


def _color(class_id: int) -> Tuple[int, int, int]:
    """A stable, distinct BGR colour per class id."""
    r, g, b = colorsys.hsv_to_rgb((class_id * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


@dataclass(eq=False)
class Detections:
    """Detections of one image, by descending score.

    ``boxes``: float32 (K, 4) x1, y1, x2, y2 in the ORIGINAL image's pixels (clipped to it);
    ``scores``: float32 (K,); ``class_ids``: int64 (K,); ``class_names``: all the model's class names;
    ``image_shape``: (height, width) of the original image; ``timings``: milliseconds spent per stage,
    ``"preprocess"``, ``"inference"``, ``"postprocess"`` (for a batch call: this image's share, the
    batch's time divided by the images in it).
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    class_names: Tuple[str, ...] = ()
    image_shape: Tuple[int, int] = (0, 0)
    timings: Dict[str, float] = field(default_factory=dict)

    @property
    def labels(self) -> List[str]:
        """Class names of the detections (``str(class_id)`` for ids outside ``class_names``)."""
        n = len(self.class_names)
        return [self.class_names[c] if 0 <= c < n else str(c) for c in self.class_ids.tolist()]

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __iter__(self) -> Iterator[Detection]:
        for box, score, cid, label in zip(
            self.boxes.tolist(), self.scores.tolist(), self.class_ids.tolist(), self.labels
        ):
            yield Detection((box[0], box[1], box[2], box[3]), float(score), int(cid), label)

    def __repr__(self) -> str:
        return f"Detections({len(self)} boxes, image {self.image_shape[1]}x{self.image_shape[0]})"

    def to_dicts(self) -> List[Dict[str, Any]]:
        """JSON-ready list: ``{"box": [x1, y1, x2, y2], "score", "class_id", "label"}`` per detection."""
        return [
            {
                "box": [round(v, 2) for v in d.box],
                "score": round(d.score, 5),
                "class_id": d.class_id,
                "label": d.label,
            }
            for d in self
        ]

    def to_coco(self, image_id: Any, category_ids: Sequence[int] = ()) -> List[Dict[str, Any]]:
        """COCO results format: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` per detection.

        ``category_ids[class_id]`` gives the dataset's category id; without it the class id is used.
        """
        out = []
        for (x1, y1, x2, y2), score, cid, _ in self:
            cat = int(category_ids[cid]) if category_ids else cid
            out.append(
                {"image_id": image_id, "category_id": cat, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
            )
        return out

    def to_supervision(self) -> Any:
        """A ``supervision.Detections`` (needs ``pip install supervision``); labels in ``data["class_name"]``."""
        try:
            import supervision as sv
        except ImportError as e:
            raise ImportError(
                "to_supervision() needs the supervision package: pip install supervision"
            ) from e
        return sv.Detections(
            xyxy=self.boxes.astype(np.float32).reshape(-1, 4),
            confidence=self.scores.astype(np.float32),
            class_id=self.class_ids.astype(int),
            data={"class_name": np.array(self.labels, dtype=str)},
        )

    def draw(self, image: np.ndarray, thickness: int = 2) -> np.ndarray:
        """Return a copy of ``image`` (HxWx3 uint8 BGR, the image these detections came from) with boxes and
        ``label score`` captions drawn."""
        out = np.ascontiguousarray(image).copy()
        if out.ndim == 2:
            out = cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)
        elif out.shape[2] == 4:
            out = cv2.cvtColor(out, cv2.COLOR_BGRA2BGR)
        font = cv2.FONT_HERSHEY_SIMPLEX
        fs = max(0.4, min(out.shape[:2]) / 1000.0)
        for (x1, y1, x2, y2), score, cid, label in self:
            color = _color(cid)
            p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
            cv2.rectangle(out, p1, p2, color, thickness, cv2.LINE_AA)
            text = f"{label} {score:.2f}"
            (tw, th), base = cv2.getTextSize(text, font, fs, 1)
            ty = p1[1] - th - base if p1[1] - th - base >= 0 else p1[1]
            cv2.rectangle(out, (p1[0], ty), (p1[0] + tw, ty + th + base), color, -1)
            cv2.putText(out, text, (p1[0], ty + th), font, fs, (0, 0, 0), 1, cv2.LINE_AA)
        return out
