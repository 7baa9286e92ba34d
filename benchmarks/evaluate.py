"""``nano-eval``: detection accuracy of any backend, or of saved detections, on a VOC-layout split.

Run a model (ONNX FP32, Q/DQ INT8 ONNX, TensorRT engine, or PyTorch ``.safetensors`` weights) through
:class:`yolo_nano.runtime.Detector` at a low confidence threshold (0.001) over every image of a split
and score it with :mod:`yolo_nano.data.metrics`::

    nano-eval --model model.onnx --data VOCdevkit/VOC2007 --split test [--metric voc07|voc12|coco] [--json]

Or score detections saved by any tool, in the COCO results format (``image_id``: the VOC image id
string; ``category_id``: index into the class list, VOC's 20 in standard order unless the data has a
``classes.txt`` or ``--classes FILE`` is given; ``bbox``: [x, y, w, h] in original-image pixels;
``score``)::

    nano-eval --detections results.json --data DIR --split test

``--json`` prints ``{"map": float, "per_class": {name: ap or null}, ...}`` instead of the table.
Exit status: 0 on success, 2 on bad input (one-line error).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from yolo_nano.core.backend import Backend, BackendUnavailableError, ModelLoadError
from yolo_nano.core.fileio import atomic_write_text
from yolo_nano.core.images import ImageReadError, read_image
from yolo_nano.data.metrics import (
    METRICS,
    EvalResult,
    ImageDetections,
    ResultsFormatError,
    evaluate,
    format_table,
    read_coco_results,
)
from yolo_nano.data.voc import VOCError, VOCSet, load_split, read_class_names, read_names_file
from yolo_nano.runtime.backends import BACKEND_CHOICES, open_backend

BACKENDS = BACKEND_CHOICES


class EvalInputError(ValueError):
    """Bad command-line input; printed as one line, exit status 2."""


def run_model(
    backend: Backend,
    data: VOCSet,
    batch_size: int = 8,
    conf_threshold: float = 0.001,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    progress: bool = True,
    postprocess: str = "auto",
    paths: Optional[List[str]] = None,
) -> Tuple[Dict[str, ImageDetections], float]:
    """Detections of ``backend`` on every image of ``data``; returns (image id -> detections, seconds).
    ``postprocess``: the Detector's ``auto``/``cpu``/``gpu``; ``paths``: gets the path that ran appended."""
    from yolo_nano.runtime import Detector

    detector = Detector(
        backend,
        conf_threshold=conf_threshold,
        iou_threshold=iou_threshold,
        max_detections=max_detections,
        postprocess=postprocess,
    )
    if paths is not None:
        paths.append(detector.postprocess_path)
    out: Dict[str, ImageDetections] = {}
    starts: Any = range(0, len(data.records), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="eval", unit="batch", leave=False)
    t0 = time.perf_counter()
    for s in starts:
        chunk = data.records[s : s + batch_size]
        images = [read_image(r.image_path) for r in chunk]
        for r, d in zip(chunk, detector.detect_batch(images)):
            out[r.image_id] = (d.boxes, d.scores, d.class_ids)
    return out, time.perf_counter() - t0


def load_results_json(
    path: str, class_names: Sequence[str], image_ids: Sequence[str]
) -> Dict[str, ImageDetections]:
    """Read COCO-format results (a JSON list of {image_id, category_id, bbox [x, y, w, h], score});
    validated field by field by :func:`yolo_nano.data.metrics.read_coco_results`."""
    try:
        return read_coco_results(path, class_names, image_ids)
    except ResultsFormatError as e:
        raise EvalInputError(str(e)) from e


def detections_to_results(dets: Dict[str, ImageDetections]) -> List[Dict[str, Any]]:
    """Detections -> the COCO results list that ``--detections`` reads back."""
    out = []
    for iid, (boxes, scores, cls) in dets.items():
        for b, s, c in zip(np.asarray(boxes, np.float64), scores, cls):
            out.append(
                {
                    "image_id": iid,
                    "category_id": int(c),
                    "bbox": [round(float(v), 3) for v in (b[0], b[1], b[2] - b[0], b[3] - b[1])],
                    "score": float(s),
                }
            )
    return out


def _write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nano-eval", description="Detection mAP on a VOC-layout split.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a .onnx, .engine or .safetensors model to run")
    src.add_argument("--detections", help="COCO-format results JSON to score without running a model")
    p.add_argument(
        "--data",
        required=True,
        help="VOC folder (or VOCdevkit) with Annotations/, JPEGImages/, ImageSets/Main/",
    )
    p.add_argument("--split", default="test", help="split name under ImageSets/Main (default test)")
    p.add_argument("--metric", default="voc07", choices=METRICS)
    p.add_argument(
        "--classes",
        default=None,
        help="class names file for --detections (default: data's classes.txt or VOC's 20)",
    )
    p.add_argument("--backend", default="auto", choices=BACKENDS)
    p.add_argument(
        "--postprocess",
        default="auto",
        choices=("auto", "cpu", "gpu"),
        help="letterbox/decode/NMS on the GPU (CUDA kernels, TensorRT engines) or in numpy (default auto)",
    )
    p.add_argument("--conf", type=float, default=0.001, help="confidence threshold (default 0.001)")
    p.add_argument("--iou", type=float, default=0.5, help="NMS IoU threshold (default 0.5)")
    p.add_argument("--max-det", type=int, default=100, help="detections per image (default 100)")
    p.add_argument(
        "--batch", type=int, default=8, help="images per inference call (fixed-batch models use their own)"
    )
    p.add_argument("--limit", type=int, default=0, help="evaluate the first N images of the split only")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for ONNX Runtime / PyTorch")
    p.add_argument("--save-detections", default=None, help="also write the detections as COCO results JSON")
    p.add_argument(
        "--strict", action="store_true", help="fail on the first data problem instead of counting it"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> Dict[str, Any]:
    """Evaluate as configured; returns the JSON-able result."""
    if args.batch < 1 or args.max_det < 1 or not 0 <= args.conf <= 1 or not 0 <= args.iou <= 1:
        raise EvalInputError("--batch and --max-det must be >= 1, --conf and --iou in [0, 1]")
    backend = open_backend(args.model, args.backend, args.threads) if args.model else None
    try:
        return _evaluate(args, backend)
    finally:
        if backend is not None:
            backend.close()


def _evaluate(args: argparse.Namespace, backend: Optional[Backend]) -> Dict[str, Any]:
    if backend is not None:
        class_names: Sequence[str] = backend.metadata.class_names
        data_names = read_class_names(args.data) if os.path.isdir(args.data) else None
        if data_names is not None and tuple(data_names) != tuple(class_names):
            raise EvalInputError(
                f"the model's {len(class_names)} classes ({', '.join(class_names[:4])}, ...) differ from the data's "
                f"{len(data_names)} ({', '.join(data_names[:4])}, ...): evaluate on data labelled with the model's classes"
            )
    else:
        class_names = read_names_file(args.classes) if args.classes else read_class_names(args.data)
    data = load_split(args.data, args.split, class_names, strict=args.strict)
    if args.limit:
        data.records = data.records[: args.limit]
    problems = data.report.summary()
    if problems and not args.json:
        print(f"data problems (skipped or clipped):\n{problems}", file=sys.stderr)
    seconds = None
    paths: List[str] = []
    if backend is not None:
        dets, seconds = run_model(
            backend,
            data,
            args.batch,
            args.conf,
            args.iou,
            args.max_det,
            progress=not args.no_progress,
            postprocess=args.postprocess,
            paths=paths,
        )
        if args.save_detections:
            _write_json(args.save_detections, detections_to_results(dets))
    else:
        dets = load_results_json(args.detections, class_names, [r.image_id for r in data.records])
    res: EvalResult = evaluate(data.records, dets, class_names, args.metric)
    out = res.to_json_dict()
    out.update(
        {
            "images": len(data.records),
            "split": args.split,
            "source": args.model or args.detections,
            "backend": getattr(backend, "name", None),
            "postprocess": paths[0] if paths else None,
            "data_warnings": data.report.num_warnings,
        }
    )
    if seconds is not None:
        out["seconds"] = round(seconds, 3)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(format_table(res))
        where = f"{len(data.records)} images of {args.data}:{args.split}"
        how = f"{out['backend']}, {out['postprocess']} post-processing" if backend else "saved detections"
        print(f"{out['source']} ({how}) on {where}")
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``nano-eval`` entry point."""
    args = parse_args(argv)
    try:
        run(args)
    except (EvalInputError, VOCError, ModelLoadError, BackendUnavailableError, ImageReadError) as e:
        print(f"nano-eval: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, ImportError, RuntimeError) as e:
        # anything else the backends raise on a bad model (MetadataError, EngineMismatchError, ...)
        print(
            f"nano-eval: error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else e}",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
