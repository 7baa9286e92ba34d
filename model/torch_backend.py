"""A PyTorch inference backend (a :class:`~yolo_nano.core.backend.Backend`), so ``Detector``,
``nano-eval`` and training's validation can run ``.safetensors`` weights or a live network without
exporting them first. ``yolo_nano.runtime.open_backend`` opens ``.safetensors`` files with it.

    backend = TorchBackend("model/yolo_nano_synth.safetensors")
    backend.infer(batch)   # float32 (N, 3, H, W) -> raw heads [(N, A*(5+C), S, S), ...] float32
"""

from __future__ import annotations

import dataclasses
import os
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from yolo_nano.core.backend import Backend, BackendClosedError
from yolo_nano.core.metadata import ModelMetadata


class TorchBackend(Backend):
    """Run a PyTorch YOLO model. ``model``: a ``.safetensors`` path written by ``save_weights`` or a
    built network (then ``class_names`` names its classes). ``input_size`` overrides the recorded size;
    ``device``: ``cpu``, ``cuda`` or ``auto``; ``threads``: torch CPU threads (None: unchanged)."""

    name = "torch"

    def __init__(
        self,
        model: Union[str, os.PathLike, nn.Module],
        *,
        class_names: Optional[Sequence[str]] = None,
        input_size: Optional[int] = None,
        device: str = "auto",
        threads: Optional[int] = None,
    ) -> None:
        from .weights import file_sha256, load_model

        if threads:
            torch.set_num_threads(int(threads))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        source = "in-memory"
        sha = None
        if isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
            model, names = load_model(path, input_size)
            class_names = class_names or names
            source, sha = path, file_sha256(path)
        net = model.eval().to(self.device)
        meta: ModelMetadata = model.build_metadata(class_names)  # type: ignore[operator]
        self.metadata = dataclasses.replace(meta, batch="dynamic", weights_source=source, weights_sha256=sha)
        self.batch_size = None
        self.max_batch = None
        if self.device.type == "cpu":
            net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model: Optional[nn.Module] = net

    @torch.no_grad()
    def infer(self, batch: np.ndarray) -> List[np.ndarray]:
        """``batch``: float32 (N, 3, H, W) preprocessed input -> raw heads in metadata order, float32 numpy."""
        model = self.model
        if model is None:
            raise BackendClosedError(f"{self!r} is closed")
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return [h.float().cpu().numpy() for h in model(x)]

    def close(self) -> None:
        """Drop the network (and its CUDA memory cache when on a GPU). Idempotent."""
        self._closed = True
        if self.model is not None:
            self.model = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def __repr__(self) -> str:
        return f"TorchBackend({self.metadata.arch}, {self.metadata.weights_source}, device={self.device})"
