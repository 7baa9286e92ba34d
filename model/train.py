"""``nano-train``: train YOLO Nano (or a Table 1 baseline) on a Pascal VOC-layout data set.

    nano-train --data DIR [--arch yolo-nano] [--size 416] [--epochs 100] [--batch 16] [--resume]

What it does, in order: reads the train and val splits (:mod:`yolo_nano.data.voc`, problems counted
and printed), checks every training image decodes, builds the network, and trains with the YOLOv3 loss
(:mod:`yolo_nano.model.loss`), AdamW or SGD, linear warm-up then cosine decay (per iteration), an EMA
copy of the weights, mixed precision on CUDA, and DDP when launched by ``torchrun`` (NCCL on CUDA, gloo
on CPU). Every ``--eval-interval`` epochs the EMA weights are scored on the val split with the same
preprocessing and decoding as the runtime (:mod:`yolo_nano.core.preprocess`,
:mod:`yolo_nano.core.postprocess`) at confidence 0.001 (VOC07 mAP@0.5 unless ``--metric``).

Outputs under ``--out`` (default ``runs/train``), each written atomically:

* ``log.csv``: per epoch: lr, mean box/obj/cls/total loss, images/s, val mAP (empty when not evaluated);
* ``best.safetensors`` / ``last.safetensors``: EMA weights with their config (``load_model`` reads them;
  ``extra``: epoch, val mAP, the training command's arguments as JSON);
* ``state.safetensors``: everything ``--resume`` needs (weights, EMA, optimizer state, epoch), no pickle;
* ``args.json``: the resolved arguments, written when the run really starts (every start-up check passed).

Every file gets the usual mode (0644 under umask 022). A folder that already holds a run's weights or log
is refused unless ``--resume`` continues that run or ``--force`` replaces it (its old weights, state and
log are removed when the new run starts), so ``args.json`` always describes the weights beside it.

Modules: :mod:`~yolo_nano.model.train_data` (splits, dataset, loader), :mod:`~yolo_nano.model.train_state`
(EMA, state, log, run folder), :mod:`~yolo_nano.model.train_eval` (validation through the runtime's
post-process), :mod:`~yolo_nano.model.train_loop` (the loop); this module is the command line.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from yolo_nano.core.cli import EXIT_INTERRUPTED, EXIT_OK, run_command
from yolo_nano.core.images import ImageReadError
from yolo_nano.data.metrics import METRICS

from .registry import ARCHS
from .train_loop import train
from .train_state import TrainError
from .weights import WeightsError

__all__ = ["TrainError", "main", "parse_args", "train"]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="nano-train", description="Train a YOLO Nano detector on a VOC-layout data set."
    )
    p.add_argument(
        "--data", required=True, help="VOC folder (Annotations/, JPEGImages/, ImageSets/Main/) or a VOCdevkit"
    )
    p.add_argument(
        "--split", default="train", help="training split (VOC07+12 recipe: trainval on a VOCdevkit)"
    )
    p.add_argument("--val-data", default=None, help="validation data folder (default: --data)")
    p.add_argument("--val-split", default="val", help="validation split (default val; VOC recipe: test)")
    p.add_argument(
        "--classes",
        default=None,
        help="class names file, one a line (default: the data's classes.txt or VOC's 20)",
    )
    p.add_argument("--arch", default="yolo-nano", choices=ARCHS)
    p.add_argument("--size", type=int, default=416, help="square input size, a multiple of 32")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch", type=int, default=16, help="images per step (per process under torchrun)")
    p.add_argument("--optimizer", default="adamw", choices=("adamw", "sgd"))
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-3 adamw, 1e-2 sgd)")
    p.add_argument("--weight-decay", type=float, default=None, help="default 0.05 adamw, 5e-4 sgd")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum / AdamW beta1")
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--final-lr-ratio", type=float, default=0.05, help="cosine ends at lr x this")
    p.add_argument("--ema-decay", type=float, default=0.9998)
    p.add_argument("--ema-tau", type=float, default=2000.0, help="EMA warm-up in iterations")
    p.add_argument("--box-loss", default="giou", choices=("giou", "classic"))
    p.add_argument("--ignore-iou", type=float, default=0.5)
    p.add_argument(
        "--match-iou",
        type=float,
        default=0.5,
        help="extra positive anchors above this shape IoU (1 = strict YOLOv3)",
    )
    p.add_argument("--scale", type=float, default=0.4, help="random scale +- fraction")
    p.add_argument("--translate", type=float, default=0.15)
    p.add_argument("--mosaic", type=float, default=0.0, help="probability of a 4-image mosaic")
    p.add_argument("--flip-lr", type=float, default=0.5)
    p.add_argument("--use-difficult", action="store_true", help="train on difficult boxes too")
    p.add_argument("--metric", default="voc07", choices=METRICS)
    p.add_argument(
        "--eval-interval", type=int, default=1, help="validate every N epochs (and after the last)"
    )
    p.add_argument(
        "--max-val-images", type=int, default=0, help="validate on the first N val images (0: all)"
    )
    p.add_argument("--out", default="runs/train", help="output folder")
    p.add_argument(
        "--resume", nargs="?", const="auto", default=None, help="resume from OUT/state.safetensors or PATH"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="start a new run in an --out that holds an earlier run (its weights, state and log are removed)",
    )
    p.add_argument("--weights", default=None, help="initialise from these .safetensors weights (fine-tuning)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--no-check-images", action="store_true", help="skip the start-up decode check")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.lr is None:
        args.lr = 1e-3 if args.optimizer == "adamw" else 1e-2
    if args.weight_decay is None:
        args.weight_decay = 0.05 if args.optimizer == "adamw" else 5e-4
    if args.size < 32 or args.size % 32:
        raise TrainError(f"--size must be a positive multiple of 32, got {args.size}")
    for name in ("epochs", "batch", "eval_interval"):
        if getattr(args, name) < 1:
            raise TrainError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``nano-train`` entry point: 0 on success, 2 on bad input (one-line error), 130 when interrupted.
    An image that became unreadable after the start-up check stops the run with one line too."""
    return run_command("nano-train", _main, argv, expected=(TrainError, WeightsError, ImageReadError))


def _main(argv: Optional[Sequence[str]]) -> int:
    args = parse_args(argv)
    try:
        summary = train(args)
    except KeyboardInterrupt:
        print("nano-train: interrupted; continue with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    if summary["best_map"] >= 0:
        print(f"best val mAP {summary['best_map']:.4f}; weights in {summary['out']}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
