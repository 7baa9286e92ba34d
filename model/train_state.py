"""What a ``nano-train`` run keeps and leaves on disk: the EMA weights, the resumable state, the log, the
run folder's files. Every file is written atomically with the usual mode (:mod:`yolo_nano.core.fileio`).

* ``state.safetensors``: weights, EMA, optimizer state and epoch (tensors + JSON metadata; no pickle);
* ``log.csv``: one row per epoch (:data:`LOG_FIELDS`);
* ``args.json``: the resolved arguments, written when the run really starts (all start-up checks passed);
* ``best.safetensors`` / ``last.safetensors``: written by the loop with :func:`yolo_nano.model.weights.save_weights`.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
from typing import Any, Dict, List

import torch
from torch import nn

from yolo_nano.core.fileio import atomic_write_bytes, atomic_write_text

from .weights import write_safetensors

LOG_FIELDS = ("epoch", "iterations", "lr", "box", "obj", "cls", "total", "img_per_s", "seconds", "val_map")
STATE_FILE = "state.safetensors"
LOG_FILE = "log.csv"
ARGS_FILE = "args.json"
BEST_WEIGHTS = "best.safetensors"
LAST_WEIGHTS = "last.safetensors"
# The files that make a folder hold a run: a new run into it would mix its args with these.
RUN_OUTPUTS = (BEST_WEIGHTS, LAST_WEIGHTS, STATE_FILE, LOG_FILE)


class TrainError(ValueError):
    """Bad training input (arguments, data, resume state, run folder); the CLI prints it and exits 2."""


# ---------------------------------------------------------------------------------------------- EMA
class ModelEMA:
    """Exponential moving average of a model's floating-point state; ``decay`` ramps up as
    ``decay * (1 - exp(-updates / tau))`` so early, still-random weights fade quickly."""

    def __init__(self, model: nn.Module, decay: float = 0.9998, tau: float = 2000.0) -> None:
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        src = unwrap(model).state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src[k].detach(), alpha=1 - d)
            else:
                v.copy_(src[k])


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a ``DistributedDataParallel`` wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ---------------------------------------------------------------------------------------------- state
def save_state(
    path: str, model: nn.Module, ema: ModelEMA, optimizer: torch.optim.Optimizer, info: Dict[str, Any]
) -> None:
    """Write the resumable training state as safetensors (tensors) + JSON metadata (the rest)."""
    tensors: Dict[str, torch.Tensor] = {}
    for k, v in unwrap(model).state_dict().items():
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
    write_safetensors(path, tensors, meta)


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
    try:
        unwrap(model).load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
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


# ---------------------------------------------------------------------------------------------- log
def write_log(path: str, rows: List[Dict[str, Any]]) -> None:
    """Write the per-epoch ``rows`` as CSV with the :data:`LOG_FIELDS` columns (missing ones empty)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(LOG_FIELDS))
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in LOG_FIELDS})
    atomic_write_bytes(path, buf.getvalue().encode())


def read_log(path: str) -> List[Dict[str, Any]]:
    """The rows of a :func:`write_log` file (none when it does not exist)."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------- run folder
def check_run_folder(out: str, resume: bool, force: bool) -> None:
    """Refuse to start a new run in a folder that holds an earlier run's weights or log (its
    ``args.json`` would then describe weights it did not produce). Read-only: every DDP rank calls it."""
    if resume or force or not os.path.isdir(out):
        return
    found = [name for name in RUN_OUTPUTS if os.path.exists(os.path.join(out, name))]
    if found:
        raise TrainError(
            f"{out} already holds a training run ({', '.join(found)}): continue it with --resume, "
            "replace it with --force, or choose another --out"
        )


def start_run(out: str, args: Dict[str, Any], replace: bool) -> None:
    """Mark the run as started (main rank, once every start-up check has passed): with ``replace``
    (``--force`` without ``--resume``) remove the earlier run's outputs first, then write ``args.json``."""
    os.makedirs(out, exist_ok=True)
    if replace:
        for name in RUN_OUTPUTS:
            path = os.path.join(out, name)
            if os.path.isfile(path):
                os.remove(path)
    atomic_write_text(os.path.join(out, ARGS_FILE), json.dumps(args, indent=2) + "\n")
