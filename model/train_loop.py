"""The ``nano-train`` loop: device and DDP set-up, optimizer and schedule, one epoch, end-of-epoch
validation and checkpoints. :func:`train` runs a whole run as :func:`yolo_nano.model.train.parse_args`
configures it.

YOLOv3 loss (:mod:`yolo_nano.model.loss`), AdamW or SGD, linear warm-up then cosine decay (per
iteration), an EMA copy of the weights, mixed precision on CUDA, DDP when launched by ``torchrun``
(NCCL on CUDA, gloo on CPU). Only the main rank validates and writes files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from yolo_nano.core.metadata import ModelMetadata
from yolo_nano.data.augment import AugmentConfig
from yolo_nano.data.voc import VOCSet

from .loss import LossConfig, YoloLoss
from .registry import build_model
from .train_data import DetectionDataset, load_training_data, make_loader
from .train_eval import validate
from .train_state import (
    BEST_WEIGHTS,
    LAST_WEIGHTS,
    LOG_FILE,
    STATE_FILE,
    ModelEMA,
    TrainError,
    check_run_folder,
    load_state,
    read_log,
    save_state,
    start_run,
    write_log,
)
from .weights import load_state as load_weights_into
from .weights import save_weights

GRAD_CLIP_NORM = 10.0


def build_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    """Weight decay on convolution/linear weights only (not on BatchNorm or biases)."""
    decay: List[nn.Parameter] = []
    no_decay: List[nn.Parameter] = []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    raise TrainError(f"unknown optimizer {name!r}; choose adamw or sgd")


def lr_at(iteration: int, total: int, warmup: int, base: float, final_ratio: float) -> float:
    """Linear warm-up from 0 over ``warmup`` iterations, then cosine from ``base`` to ``base * final_ratio``."""
    if warmup > 0 and iteration < warmup:
        return base * (iteration + 1) / warmup
    progress = (iteration - warmup) / max(1, total - warmup)
    return base * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@dataclass
class Distributed:
    """This process's place in a ``torchrun`` launch (world 1, rank 0 without one) and its device."""

    world: int
    rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_arg: str) -> Distributed:
    """Read torchrun's environment, pick the device (``auto``: this rank's GPU, else the CPU) and join
    the process group (NCCL on CUDA, gloo on CPU) when there is more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg == "auto":
        device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(device_arg)
        if device.type == "cuda" and world > 1:
            device = torch.device(f"cuda:{local}")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return Distributed(world, rank, device)


@dataclass
class Run:
    """Everything one training run holds between epochs."""

    args: argparse.Namespace
    dist: Distributed
    class_names: Tuple[str, ...]
    meta: ModelMetadata
    val_set: VOCSet
    model: nn.Module  # the network itself (DDP wraps it in ``net``)
    net: nn.Module  # what the forward pass calls: ``model`` or its DDP wrapper
    ema: ModelEMA
    optimizer: torch.optim.Optimizer
    criterion: YoloLoss
    scaler: Any  # torch.amp.GradScaler, enabled on CUDA
    dataset: DetectionDataset
    loader: DataLoader
    sampler: Optional[DistributedSampler]
    generator: torch.Generator
    start_epoch: int = 0
    best_map: float = -1.0
    rows: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def show(self) -> bool:
        """Progress bars: main rank, unless ``--no-progress``."""
        return self.dist.main and not self.args.no_progress

    @property
    def iters_per_epoch(self) -> int:
        return len(self.loader)

    def path(self, name: str) -> str:
        return os.path.join(self.args.out, name)


def build_run(args: argparse.Namespace, d: Distributed) -> Run:
    """Data, network (optionally from ``--weights``), EMA, optimizer, loss and loader; resumed from
    ``--resume`` when given. Raises :class:`TrainError` before any file is written."""
    data = load_training_data(
        args.data, args.split, args.val_data, args.val_split, args.classes, args.max_val_images,
        check=not args.no_check_images, verbose=d.main, progress=d.main and not args.no_progress,
    )  # fmt: skip
    torch.manual_seed(args.seed)
    model = build_model(args.arch, len(data.class_names), args.size).to(d.device)
    meta = model.build_metadata(data.class_names)
    if args.weights:
        load_weights_into(model, args.weights)
    if d.device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    ema = ModelEMA(model, args.ema_decay, args.ema_tau)
    optimizer = build_optimizer(model, args.optimizer, args.lr, args.weight_decay, args.momentum)
    criterion = YoloLoss(meta, LossConfig(args.box_loss, args.ignore_iou, args.match_iou))
    aug = AugmentConfig(scale=args.scale, translate=args.translate, flip_lr=args.flip_lr, mosaic=args.mosaic)
    dataset = DetectionDataset(data.records, meta, aug, args.seed, args.use_difficult)
    loader, sampler, generator = make_loader(dataset, args.batch, args.workers, args.seed, d.world, d.rank)
    run = Run(
        args, d, data.class_names, meta, data.val_set, model, model, ema, optimizer, criterion,
        torch.amp.GradScaler("cuda", enabled=d.device.type == "cuda"), dataset, loader, sampler, generator,
    )  # fmt: skip
    if args.resume:
        resume(run)
    if d.world > 1:
        run.net = nn.parallel.DistributedDataParallel(
            model, device_ids=[d.device.index] if d.device.type == "cuda" else None
        )
    return run


def resume(run: Run) -> None:
    """Load ``--resume``'s state (OUT/state.safetensors for a bare ``--resume``) and the log rows up to it."""
    args = run.args
    path = run.path(STATE_FILE) if args.resume == "auto" else args.resume
    info = load_state(path, run.model, run.ema, run.optimizer)
    for key in ("arch", "size", "class_names"):
        if info.get(key) != (list(run.class_names) if key == "class_names" else getattr(args, key)):
            raise TrainError(
                f"--resume: {path} was trained with {key}={info.get(key)!r}; this run has another"
            )
    run.start_epoch, run.best_map = int(info["epoch"]), float(info.get("best_map", -1.0))
    run.rows = read_log(run.path(LOG_FILE))[: run.start_epoch]
    if run.dist.main:
        print(f"resumed from {path} at epoch {run.start_epoch} (best val mAP {run.best_map:.4f})")


def train_one_epoch(run: Run, epoch: int) -> Dict[str, Any]:
    """One pass over the loader; returns the epoch's log row (``val_map`` empty)."""
    args = run.args
    run.net.train()
    run.dataset.set_epoch(epoch)
    if run.sampler is not None:
        run.sampler.set_epoch(epoch)
    run.generator.manual_seed(args.seed * 1000003 + epoch)
    total_iters = run.iters_per_epoch * args.epochs
    warmup_iters = int(round(args.warmup_epochs * run.iters_per_epoch))
    sums = {"box": 0.0, "obj": 0.0, "cls": 0.0, "total": 0.0}
    t0, n_img, lr = time.time(), 0, args.lr
    batches: Any = run.loader
    if run.show:
        from tqdm import tqdm

        batches = tqdm(run.loader, desc=f"epoch {epoch + 1}/{args.epochs}", unit="it", leave=False)
    for i, (images, targets) in enumerate(batches):
        lr = lr_at(epoch * run.iters_per_epoch + i, total_iters, warmup_iters, args.lr, args.final_lr_ratio)
        loss, parts = train_step(run, images, targets, lr)
        if not torch.isfinite(loss):
            raise TrainError(f"loss became {float(loss)} at epoch {epoch + 1}, iteration {i}; lower --lr")
        n_img += images.shape[0]
        for k in ("box", "obj", "cls"):
            sums[k] += parts[k]
        sums["total"] += float(loss.detach())
        if run.show:
            batches.set_postfix(loss=f"{float(loss):.2f}", lr=f"{lr:.2e}")
    seconds = time.time() - t0
    steps = max(1, run.iters_per_epoch)
    return {
        "epoch": epoch + 1,
        "iterations": (epoch + 1) * run.iters_per_epoch,
        "lr": f"{lr:.6g}",
        **{k: f"{v / steps:.5f}" for k, v in sums.items()},
        "img_per_s": f"{n_img * run.dist.world / max(seconds, 1e-9):.2f}",
        "seconds": f"{seconds:.1f}",
        "val_map": "",
    }


def train_step(
    run: Run, images: torch.Tensor, targets: torch.Tensor, lr: float
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Forward (mixed precision on CUDA), loss, backward and update at ``lr``; then the EMA.
    Returns the loss and its parts. A non-finite loss is returned before any update."""
    device = run.dist.device
    for g in run.optimizer.param_groups:
        g["lr"] = lr
    images = images.to(device, non_blocking=True)
    if device.type == "cpu":
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        heads = run.net(images)
    loss, parts = run.criterion([h.float() for h in heads], targets.to(device))
    if not torch.isfinite(loss):
        return loss, parts
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.unscale_(run.optimizer)
    nn.utils.clip_grad_norm_(run.model.parameters(), GRAD_CLIP_NORM)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.ema.update(run.model)
    return loss, parts


def finish_epoch(run: Run, epoch: int, row: Dict[str, Any]) -> None:
    """Main rank: validate when due (a new best is saved as best.safetensors), then the log, the last
    weights and the resumable state, and one progress line."""
    args = run.args
    if (epoch + 1) % args.eval_interval == 0 or epoch + 1 == args.epochs:
        res = validate(run.ema.module, run.val_set, run.dist.device, args.metric, progress=run.show)
        row["val_map"] = f"{res.map:.5f}"
        if res.map > run.best_map:
            run.best_map = res.map
            save_checkpoint(run, BEST_WEIGHTS, epoch, row["val_map"])
    run.rows.append(row)
    write_log(run.path(LOG_FILE), run.rows)
    save_checkpoint(run, LAST_WEIGHTS, epoch, row["val_map"])
    info = {
        "epoch": epoch + 1,
        "best_map": run.best_map,
        "arch": args.arch,
        "size": args.size,
        "class_names": list(run.class_names),
    }
    save_state(run.path(STATE_FILE), run.model, run.ema, run.optimizer, info)
    print(
        f"epoch {epoch + 1}/{args.epochs}  loss {row['total']} (box {row['box']} obj {row['obj']} "
        f"cls {row['cls']})  lr {row['lr']}  {row['img_per_s']} img/s"
        + (f"  val {args.metric} mAP {float(row['val_map']):.4f}" if row["val_map"] else ""),
        flush=True,
    )


def save_checkpoint(run: Run, name: str, epoch: int, val_map: str) -> None:
    """The EMA weights with their config and, in ``extra``, the epoch, val mAP and training arguments."""
    train_args = {k: v for k, v in vars(run.args).items() if k not in ("resume", "force")}
    extra = {
        "epoch": str(epoch + 1),
        "val_map": val_map,
        "metric": run.args.metric,
        "train_args": json.dumps(train_args, sort_keys=True),
    }
    save_weights(run.ema.module, run.path(name), class_names=run.class_names, extra=extra)


def train(args: argparse.Namespace) -> Dict[str, Any]:
    """Run training as configured by :func:`yolo_nano.model.train.parse_args`; returns a summary
    (``best_map``: -1 when never validated, ``out``: the run folder)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    d = setup_distributed(args.device)
    check_run_folder(args.out, resume=bool(args.resume), force=args.force)
    run = build_run(args, d)
    if d.main:
        n_params = sum(p.numel() for p in run.model.parameters())
        print(
            f"{args.arch} {n_params / 1e6:.2f} M params, {len(run.class_names)} classes, {args.size}px, "
            f"{len(run.dataset)} train / {len(run.val_set)} val images, {run.iters_per_epoch} it/epoch x "
            f"{args.epochs} epochs, {d.world} process(es) on {d.device}"
        )
        start_run(args.out, vars(args), replace=args.force and not args.resume)
    for epoch in range(run.start_epoch, args.epochs):
        row = train_one_epoch(run, epoch)
        if d.main:
            finish_epoch(run, epoch, row)
        if d.world > 1:
            dist.barrier()
    if d.world > 1:
        dist.destroy_process_group()
    return {"best_map": run.best_map, "out": args.out}
