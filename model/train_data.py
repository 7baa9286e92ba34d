"""Training data for ``nano-train``: the VOC splits, the start-up decode check, the augmented dataset and
its loader (reproducible for any number of workers and processes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from yolo_nano.core.images import ImageReadError, read_image
from yolo_nano.core.metadata import ModelMetadata
from yolo_nano.core.preprocess import normalize_into
from yolo_nano.data.augment import AugmentConfig, augment, hsv_jitter, mosaic
from yolo_nano.data.voc import VOCError, VOCRecord, VOCSet, load_split, read_names_file

from .train_state import TrainError


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
    """Drop records whose image the one image reader refuses (missing, corrupt, over the pixel limit:
    :func:`yolo_nano.core.images.read_image`, the same call the dataset makes), so training never stops
    on one later; returns (good records, one message per dropped image)."""
    good, bad = [], []
    it: Any = records
    if progress:
        from tqdm import tqdm

        it = tqdm(records, desc="checking images", unit="img", leave=False)
    for r in it:
        try:
            read_image(r.image_path)
        except ImageReadError as e:
            bad.append(str(e))
        else:
            good.append(r)
    return good, bad


@dataclass
class TrainingData:
    """The records to train on (decodable ones), the val set (capped) and the class names."""

    records: List[VOCRecord]
    val_set: VOCSet
    class_names: Tuple[str, ...]


def load_training_data(
    data: str,
    split: str,
    val_data: Optional[str],
    val_split: str,
    classes_file: Optional[str],
    max_val_images: int = 0,
    check: bool = True,
    verbose: bool = True,
    progress: bool = False,
) -> TrainingData:
    """Read the train and val splits (the val split with the train split's classes), print their data
    problems (``verbose``: the main rank) and drop training images that cannot be read (``check``)."""
    class_names = read_names_file(classes_file) if classes_file else None
    try:
        train_set = load_split(data, split, class_names)
        val_set = load_split(val_data or data, val_split, train_set.class_names)
    except VOCError as e:
        raise TrainError(str(e)) from e
    if max_val_images:
        val_set.records = val_set.records[:max_val_images]
    if verbose:
        for name, s in (("train", train_set), ("val", val_set)):
            if s.report.summary():
                print(
                    f"[{name}] data problems (skipped or clipped, see yolo_nano.data.voc):\n{s.report.summary()}"
                )
    records = train_set.records
    if check:
        records, bad = check_images(records, progress=progress)
        if bad and verbose:
            print(f"[train] {len(bad)} images cannot be read and are left out (e.g. {bad[0]})")
        if not records:
            raise TrainError(f"no training image can be read (e.g. {bad[0]})")
    return TrainingData(list(records), val_set, tuple(train_set.class_names))


def make_loader(
    dataset: DetectionDataset, batch: int, workers: int, seed: int, world: int, rank: int
) -> Tuple[DataLoader, Optional[DistributedSampler], torch.Generator]:
    """The training loader (shuffled by ``generator``, or by a :class:`DistributedSampler` under DDP);
    full batches only when there are enough images for one per process."""
    sampler = DistributedSampler(dataset, world, rank, seed=seed) if world > 1 else None
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        drop_last=len(dataset) >= batch * world,
        generator=generator,
        persistent_workers=False,
    )
    return loader, sampler, generator
