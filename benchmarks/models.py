"""Which models a nano-bench run measures, opened as Detectors: the files given, the embedded default
model at the paper's 416x416, or (``--compare``) YOLO Nano, Tiny YOLOv2 and Tiny YOLOv3 exported once."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from yolo_nano.core.cli import CommandError

PAPER_INPUT_SIZE = 416  # the paper benchmarks YOLO Nano at 416x416
COMPARE_ARCHS = ("yolo-nano", "tiny-yolov2", "tiny-yolov3")


def resolve_models(models: Sequence[str], compare: bool, log: Callable[[str], None]) -> List[str]:
    """The model files to measure: ``models`` when given, else the comparison set or the default."""
    if models:
        return list(models)
    if compare:
        return compare_models(log)
    from yolo_nano.runtime import DefaultModelError, default_model_path

    try:
        # The paper's measurement is at 416x416: benchmark the demo weights at that size
        # (speed does not depend on what the weights were trained at).
        return [default_model_path(input_size=PAPER_INPUT_SIZE)]
    except DefaultModelError as e:
        raise CommandError(str(e)) from e


def compare_models(log: Callable[[str], None]) -> List[str]:
    """Exported YOLO Nano / Tiny YOLOv2 / Tiny YOLOv3 (random init, 416, dynamic batch), cached."""
    from yolo_nano.runtime.default_model import cache_dir

    paths = []
    for arch in COMPARE_ARCHS:
        target = os.path.join(str(cache_dir()), f"bench-{arch}-random-416.onnx")
        if not os.path.isfile(target):
            try:
                from yolo_nano.core.metadata import VOC_CLASSES
                from yolo_nano.model.export import export_onnx
                from yolo_nano.model.registry import build_model
            except ImportError as e:
                raise CommandError(f"--compare without MODELs exports the three networks and needs PyTorch ({e}); "
                                   "pass exported models instead: nano-bench a.onnx b.onnx c.onnx") from e  # fmt: skip
            log(f"exporting {arch} (random weights, speed only) to {target}")
            # export_onnx writes atomically (temp file + rename): concurrent runs never see a partial file
            export_onnx(build_model(arch, num_classes=20, input_size=PAPER_INPUT_SIZE), target,
                        class_names=list(VOC_CLASSES), batch="dynamic")  # fmt: skip
        paths.append(target)
    return paths


def open_detectors(
    models: Sequence[str], backend: str, batches: Sequence[int], threads: Sequence[Optional[int]] = (None,)
) -> Dict[Tuple[str, Optional[int]], Any]:
    """A Detector per (model, ONNX Runtime threads): ``{(path, threads): Detector}``. A model that cannot
    be opened, or whose fixed batch is not every one of ``batches``, is a :class:`CommandError` (exit 2),
    and the detectors opened so far are closed."""
    from yolo_nano.runtime import Detector, open_backend
    from yolo_nano.runtime.backends import BackendUnavailableError, ModelLoadError

    out: Dict[Tuple[str, Optional[int]], Any] = {}
    try:
        for m in models:
            for t in threads:
                try:
                    opened = open_backend(m, backend, threads=t)
                except (ModelLoadError, BackendUnavailableError, ValueError) as e:
                    raise CommandError(str(e)) from e
                fixed = opened.batch_size
                if fixed and any(b != fixed for b in batches):
                    opened.close()
                    raise CommandError(
                        f"{m} has a fixed batch of {fixed}: pass --batch {fixed} or export with a dynamic batch"
                    )
                out[(m, t)] = Detector(opened)
    except BaseException:
        close_detectors(out.values())
        raise
    return out


def close_detectors(detectors: Iterable[Any]) -> None:
    """Close every detector (their backends free sessions, engines and device buffers)."""
    for det in detectors:
        close = getattr(det, "close", None)
        if close is not None:
            close()
