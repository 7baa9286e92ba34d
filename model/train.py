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
* ``args.json``: the resolved arguments.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from yolo_nano.core.fileio import atomic_output, atomic_write_bytes
from yolo_nano.core.metadata import ModelMetadata
from yolo_nano.core.postprocess import batched_nms, decode, scale_boxes
from yolo_nano.core.preprocess import normalize_into, preprocess
from yolo_nano.data.augment import AugmentConfig, augment, hsv_jitter, mosaic
from yolo_nano.data.metrics import METRICS, EvalResult, evaluate
from yolo_nano.data.voc import VOCError, VOCRecord, VOCSet, load_split, read_image, read_names_file

from .loss import LossConfig, YoloLoss
from .network import ARCHS, build_model
from .weights import WeightsError, save_weights

LOG_FIELDS = ("epoch", "iterations", "lr", "box", "obj", "cls", "total", "img_per_s", "seconds", "val_map")
STATE_FILE = "state.safetensors"


class TrainError(ValueError):
    """Bad training input (arguments, data, resume state); the CLI prints it and exits 2."""


# ---------------------------------------------------------------------------------------------- data
class DetectionDataset(Dataset):
    """VOC records -> (image (3, H, W) float32 as the model wants it, targets (K, 5) [cls, cx, cy, w, h]
    in input pixels). Randomness depends only on (seed, epoch, index): runs are reproducible with any
    number of loader workers."""

    def __init__(
        self,
        records: Sequence[VOCRecord],
        meta: ModelMetadata,
        cfg: AugmentConfig,
        seed: int = 0,
        use_difficult: bool = False,
    ) -> None:
        self.records = list(records)
        self.meta = meta
        self.cfg = cfg
        self.seed = seed
        self.use_difficult = use_difficult
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def _raw(self, index: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        r = self.records[index]
        image = read_image(r.image_path)
        keep = np.ones(len(r.labels), bool) if self.use_difficult else ~r.difficult
        return image, r.boxes[keep], r.labels[keep]

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        size = self.meta.input_size
        if self.cfg.mosaic and rng.random() < self.cfg.mosaic:
            others = rng.integers(0, len(self.records), 3)
            parts = []
            for j in [index] + [int(o) for o in others]:
                img, b, lab = self._raw(j)
                parts.append((hsv_jitter(img, rng, self.cfg.hsv_h, self.cfg.hsv_s, self.cfg.hsv_v), b, lab))
            img, boxes, labels = mosaic(parts, size, rng, self.meta.pad_value)
            flip_only = AugmentConfig(
                0.0, 0.0, 0.0, 0.0, 0.0, self.cfg.flip_lr, self.cfg.flip_ud, 0.0, 0.0, 1.0
            )
            img, boxes, labels = augment(img, boxes, labels, size, rng, flip_only, self.meta.pad_value)
        else:
            img, boxes, labels = self._raw(index)
            img, boxes, labels = augment(img, boxes, labels, size, rng, self.cfg, self.meta.pad_value)
        chw = np.empty((3,) + tuple(size), np.float32)
        normalize_into(img, chw, self.meta)
        cxcywh = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)
        targets = np.concatenate([labels[:, None].astype(np.float32), cxcywh.astype(np.float32)], 1)
        return torch.from_numpy(chw), torch.from_numpy(targets.reshape(-1, 5))


def collate(batch: Sequence[Tuple[torch.Tensor, torch.Tensor]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stack images (N, 3, H, W); targets (M, 6) ``[image_index, cls, cx, cy, w, h]``."""
    images = torch.stack([b[0] for b in batch])
    targets = [torch.cat([torch.full((len(t), 1), float(i)), t], 1) for i, (_, t) in enumerate(batch)]
    return images, torch.cat(targets) if targets else torch.zeros(0, 6)


def check_images(records: Sequence[VOCRecord], progress: bool = True) -> Tuple[List[VOCRecord], List[str]]:
    """Drop records whose image does not decode (at 1/8 scale: fast); returns (good, messages)."""
    import cv2

    good, bad = [], []
    it: Any = records
    if progress:
        from tqdm import tqdm

        it = tqdm(records, desc="checking images", unit="img", leave=False)
    for r in it:
        try:
            data = np.fromfile(r.image_path, dtype=np.uint8)
            ok = data.size > 0 and cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_8) is not None
        except OSError:
            ok = False
        if ok:
            good.append(r)
        else:
            bad.append(f"{r.image_path}: does not decode")
    return good, bad


# ---------------------------------------------------------------------------------------------- EMA
class ModelEMA:
    """Exponential moving average of a model's floating-point state; ``decay`` ramps up as
    ``decay * (1 - exp(-updates / tau))`` so early, still-random weights fade quickly."""

    def __init__(self, model: nn.Module, decay: float = 0.9998, tau: float = 2000.0) -> None:
        self.module = copy.deepcopy(_unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        src = _unwrap(model).state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src[k].detach(), alpha=1 - d)
            else:
                v.copy_(src[k])


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ---------------------------------------------------------------------------------------------- eval
@torch.no_grad()
def predict(
    model: nn.Module,
    meta: ModelMetadata,
    records: Sequence[VOCRecord],
    device: torch.device,
    batch_size: int = 16,
    conf_threshold: float = 0.001,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    progress: bool = False,
) -> Dict[str, Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Run ``model`` over the images of ``records`` exactly as the runtime would (letterbox, decode,
    per-class NMS, boxes back to original pixels). Returns image id -> (boxes, scores, class ids)."""
    model.eval()
    out: Dict[str, Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    starts: Any = range(0, len(records), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="val", unit="batch", leave=False)
    for s in starts:
        chunk = records[s : s + batch_size]
        batch, infos = preprocess([read_image(r.image_path) for r in chunk], meta)
        x = torch.from_numpy(batch).to(device)
        if device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        heads = [h.float().cpu().numpy() for h in model(x)]
        for r, info, (boxes, scores, cls) in zip(chunk, infos, decode(heads, meta, conf_threshold)):
            keep = batched_nms(boxes, scores, cls, iou_threshold, max_output=max_detections)
            out[r.image_id] = (scale_boxes(boxes[keep], info), scores[keep], cls[keep])
    return out


def validate(
    model: nn.Module,
    meta: ModelMetadata,
    val: VOCSet,
    device: torch.device,
    metric: str,
    progress: bool = False,
) -> EvalResult:
    dets = predict(model, meta, val.records, device, progress=progress)
    return evaluate(val.records, dets, meta.class_names, metric)


# ---------------------------------------------------------------------------------------------- state I/O
def save_state(
    path: str, model: nn.Module, ema: ModelEMA, optimizer: torch.optim.Optimizer, info: Dict[str, Any]
) -> None:
    """Write the resumable training state as safetensors (tensors) + JSON metadata (the rest)."""
    from safetensors.torch import save_file

    tensors: Dict[str, torch.Tensor] = {}
    for k, v in _unwrap(model).state_dict().items():
        tensors["model." + k] = v.detach().cpu().contiguous()
    for k, v in ema.module.state_dict().items():
        tensors["ema." + k] = v.detach().cpu().contiguous()
    opt = optimizer.state_dict()
    scalars: Dict[str, Dict[str, Any]] = {}
    for idx, st in opt["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[k] = v
    meta = {
        "info": json.dumps(info),
        "param_groups": json.dumps(opt["param_groups"]),
        "optim_scalars": json.dumps(scalars),
        "ema_updates": str(ema.updates),
    }
    with atomic_output(path, suffix=".safetensors") as tmp:
        save_file(tensors, tmp, metadata=meta)


def load_state(
    path: str, model: nn.Module, ema: ModelEMA, optimizer: torch.optim.Optimizer
) -> Dict[str, Any]:
    """Restore :func:`save_state`'s file into ``model``, ``ema`` and ``optimizer``; returns its info."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise TrainError(f"--resume: no training state at {path} (it is written to --out as {STATE_FILE})")
    try:
        with safe_open(path, framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
        info = json.loads(meta["info"])
        groups = json.loads(meta["param_groups"])
        scalars = json.loads(meta["optim_scalars"])
    except (KeyError, ValueError, OSError) as e:
        raise TrainError(f"--resume: {path} is not a nano-train state file ({e})") from e
    except Exception as e:  # safetensors' own errors
        raise TrainError(f"--resume: cannot read {path}: {e}") from e
    own = _unwrap(model)
    try:
        own.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        ema.module.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    except RuntimeError as e:
        raise TrainError(f"--resume: {path} does not fit this network ({str(e).splitlines()[0]})") from e
    ema.updates = int(meta.get("ema_updates", 0))
    state: Dict[int, Dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for idx, d in scalars.items():
        state.setdefault(int(idx), {}).update(d)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return info


def write_log(path: str, rows: List[Dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(LOG_FIELDS))
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in LOG_FIELDS})
    atomic_write_bytes(path, buf.getvalue().encode())


def read_log(path: str) -> List[Dict[str, Any]]:
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------- training
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


def _dist_info() -> Tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


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


def train(args: argparse.Namespace) -> Dict[str, Any]:
    """Run training as configured by :func:`parse_args`; returns a summary (best mAP, paths)."""
    world, rank, local = _dist_info()
    main_rank = rank == 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and world > 1:
            device = torch.device(f"cuda:{local}")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    show = main_rank and not args.no_progress

    class_names = read_names_file(args.classes) if args.classes else None
    try:
        train_set = load_split(args.data, args.split, class_names)
        class_names = train_set.class_names
        val_set = load_split(args.val_data or args.data, args.val_split, class_names)
    except VOCError as e:
        raise TrainError(str(e)) from e
    if args.max_val_images:
        val_set.records = val_set.records[: args.max_val_images]
    records = train_set.records
    if main_rank:
        for name, s in (("train", train_set), ("val", val_set)):
            if s.report.summary():
                print(
                    f"[{name}] data problems (skipped or clipped, see yolo_nano.data.voc):\n{s.report.summary()}"
                )
    if not args.no_check_images:
        records, bad = check_images(records, progress=show)
        if bad and main_rank:
            print(f"[train] {len(bad)} images do not decode and are left out (e.g. {bad[0]})")
        if not records:
            raise TrainError("no training image decodes")

    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    model = build_model(args.arch, len(class_names), args.size).to(device)
    meta: ModelMetadata = model.build_metadata(class_names)  # type: ignore[operator]
    if args.weights:
        from .weights import load_state as load_weights_into

        load_weights_into(model, args.weights)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    ema = ModelEMA(model, args.ema_decay, args.ema_tau)
    optimizer = build_optimizer(model, args.optimizer, args.lr, args.weight_decay, args.momentum)
    criterion = YoloLoss(meta, LossConfig(args.box_loss, args.ignore_iou, args.match_iou))
    aug = AugmentConfig(scale=args.scale, translate=args.translate, flip_lr=args.flip_lr, mosaic=args.mosaic)
    dataset = DetectionDataset(records, meta, aug, args.seed, args.use_difficult)
    sampler: Optional[torch.utils.data.DistributedSampler] = (
        torch.utils.data.DistributedSampler(dataset, world, rank, seed=args.seed) if world > 1 else None
    )
    generator = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(
        dataset,
        batch_size=args.batch,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=args.workers,
        collate_fn=collate,
        drop_last=len(dataset) >= args.batch * world,
        generator=generator,
        persistent_workers=False,
    )
    iters_per_epoch = len(loader)
    total_iters = iters_per_epoch * args.epochs
    warmup_iters = int(round(args.warmup_epochs * iters_per_epoch))

    start_epoch, best_map = 0, -1.0
    log_path = os.path.join(args.out, "log.csv")
    rows: List[Dict[str, Any]] = []
    if args.resume:
        path = os.path.join(args.out, STATE_FILE) if args.resume == "auto" else args.resume
        info = load_state(path, model, ema, optimizer)
        for key in ("arch", "size", "class_names"):
            if info.get(key) != (list(class_names) if key == "class_names" else getattr(args, key)):
                raise TrainError(
                    f"--resume: {path} was trained with {key}={info.get(key)!r}; this run has another"
                )
        start_epoch, best_map = int(info["epoch"]), float(info.get("best_map", -1.0))
        rows = read_log(log_path)[:start_epoch]
        if main_rank:
            print(f"resumed from {path} at epoch {start_epoch} (best val mAP {best_map:.4f})")

    ddp_model: nn.Module = model
    if world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if main_rank:
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"{args.arch} {n_params / 1e6:.2f} M params, {len(class_names)} classes, {args.size}px, "
            f"{len(records)} train / {len(val_set)} val images, {iters_per_epoch} it/epoch x {args.epochs} "
            f"epochs, {world} process(es) on {device}"
        )
        atomic_write_bytes(
            os.path.join(args.out, "args.json"), (json.dumps(vars(args), indent=2) + "\n").encode()
        )

    train_cfg = json.dumps({k: v for k, v in vars(args).items() if k not in ("resume",)}, sort_keys=True)
    result: Dict[str, Any] = {"best_map": best_map, "out": args.out}
    for epoch in range(start_epoch, args.epochs):
        ddp_model.train()
        dataset.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        generator.manual_seed(args.seed * 1000003 + epoch)
        sums = {"box": 0.0, "obj": 0.0, "cls": 0.0, "total": 0.0}
        t0 = time.time()
        n_img = 0
        batches: Any = loader
        if show:
            from tqdm import tqdm

            batches = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", unit="it", leave=False)
        lr = args.lr
        for i, (images, targets) in enumerate(batches):
            it = epoch * iters_per_epoch + i
            lr = lr_at(it, total_iters, warmup_iters, args.lr, args.final_lr_ratio)
            for g in optimizer.param_groups:
                g["lr"] = lr
            images = images.to(device, non_blocking=True)
            if device.type == "cpu":
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                heads = ddp_model(images)
            loss, parts = criterion([h.float() for h in heads], targets.to(device))
            if not torch.isfinite(loss):
                raise TrainError(f"loss became {float(loss)} at epoch {epoch + 1}, iteration {i}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            scaler.step(optimizer)
            scaler.update()
            ema.update(model)
            n_img += images.shape[0]
            for k in ("box", "obj", "cls"):
                sums[k] += parts[k]
            sums["total"] += float(loss.detach())
            if show:
                batches.set_postfix(loss=f"{float(loss):.2f}", lr=f"{lr:.2e}")
        seconds = time.time() - t0
        steps = max(1, iters_per_epoch)
        row: Dict[str, Any] = {
            "epoch": epoch + 1,
            "iterations": (epoch + 1) * iters_per_epoch,
            "lr": f"{lr:.6g}",
            **{k: f"{v / steps:.5f}" for k, v in sums.items()},
            "img_per_s": f"{n_img * world / max(seconds, 1e-9):.2f}",
            "seconds": f"{seconds:.1f}",
            "val_map": "",
        }
        last = epoch + 1 == args.epochs
        if main_rank:
            if (epoch + 1) % args.eval_interval == 0 or last:
                res = validate(ema.module, meta, val_set, device, args.metric, progress=show)
                row["val_map"] = f"{res.map:.5f}"
                extra = {
                    "epoch": str(epoch + 1),
                    "val_map": f"{res.map:.5f}",
                    "metric": args.metric,
                    "train_args": train_cfg,
                }
                if res.map > best_map:
                    best_map = res.map
                    save_weights(
                        ema.module,
                        os.path.join(args.out, "best.safetensors"),
                        class_names=class_names,
                        extra=extra,
                    )
            rows.append(row)
            write_log(log_path, rows)
            extra = {
                "epoch": str(epoch + 1),
                "val_map": row["val_map"],
                "metric": args.metric,
                "train_args": train_cfg,
            }
            save_weights(
                ema.module, os.path.join(args.out, "last.safetensors"), class_names=class_names, extra=extra
            )
            info = {
                "epoch": epoch + 1,
                "best_map": best_map,
                "arch": args.arch,
                "size": args.size,
                "class_names": list(class_names),
            }
            save_state(os.path.join(args.out, STATE_FILE), model, ema, optimizer, info)
            print(
                f"epoch {epoch + 1}/{args.epochs}  loss {row['total']} (box {row['box']} obj {row['obj']} "
                f"cls {row['cls']})  lr {row['lr']}  {row['img_per_s']} img/s"
                + (f"  val {args.metric} mAP {float(row['val_map']):.4f}" if row["val_map"] else ""),
                flush=True,
            )
        if world > 1:
            dist.barrier()
    result["best_map"] = best_map
    if world > 1:
        dist.destroy_process_group()
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``nano-train`` entry point: 0 on success, 2 on bad input (one-line error)."""
    try:
        args = parse_args(argv)
        summary = train(args)
    except (TrainError, WeightsError) as e:
        print(f"nano-train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nano-train: interrupted; continue with --resume", file=sys.stderr)
        return 130
    if summary["best_map"] >= 0:
        print(f"best val mAP {summary['best_map']:.4f}; weights in {summary['out']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
