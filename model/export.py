"""ONNX export with everything the runtime needs in the file's metadata.

    nano-export --arch yolo-nano [--weights W.safetensors] [--size 416] [--classes 20]
                [--batch 1|dynamic] [--opset 13..17] -o model.onnx

Outputs are the raw head tensors, named ``head_s32``, ``head_s16``, ``head_s8`` (largest stride first;
Tiny YOLOv2: ``head_s32`` only): decode stays out of the graph so INT8 never touches box arithmetic and
the runtime can fuse decode with thresholding. BatchNorm is folded into the convolutions (eval mode).
The attention blocks are exported in their 4-D form (:class:`~yolo_nano.model.blocks.FCA4d`: global
average pool, 1x1 convolutions, Mul), so every activation is 4-D and a DLA engine is not split by them.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from yolo_nano.core.fileio import atomic_write_bytes, sha256_file
from yolo_nano.core.metadata import INPUT_NAME, ModelMetadata, write_onnx_metadata

from .blocks import with_4d_attention
from .registry import ARCHS, build_model
from .weights import WeightsError, load_model, read_config

OPSETS = range(13, 18)


def state_sha256(model: nn.Module) -> str:
    """A hash of the model's tensors (names, shapes, bytes): identifies randomly initialised weights."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def export_onnx(
    model: nn.Module,
    path: Union[str, os.PathLike],
    *,
    class_names: Optional[Sequence[str]] = None,
    batch: Union[int, str] = 1,
    opset: int = 13,
    weights_path: Optional[Union[str, os.PathLike]] = None,
) -> ModelMetadata:
    """Export ``model`` to ``path`` (written atomically) and return the metadata stored in it.

    ``batch`` is a fixed batch size or ``"dynamic"``. Checked with ``onnx.checker`` and shape inference.
    """
    import onnx

    if opset not in OPSETS:
        raise ValueError(f"opset must be in {OPSETS.start}..{OPSETS.stop - 1}, got {opset}")
    if batch != "dynamic" and (not isinstance(batch, int) or batch < 1):
        raise ValueError(f"batch must be a positive integer or 'dynamic', got {batch!r}")
    meta = model.build_metadata(class_names)  # type: ignore[operator]
    weights_sha = sha256_file(weights_path) if weights_path else state_sha256(model)
    source = Path(weights_path).name if weights_path else "random-init"
    meta = ModelMetadata.from_dict(
        dict(meta.to_dict(), batch=batch, opset=opset, weights_sha256=weights_sha, weights_source=source)
    )
    size_h, size_w = meta.input_size
    dummy = torch.zeros(1 if batch == "dynamic" else batch, 3, size_h, size_w)
    dynamic_axes = None
    if batch == "dynamic":
        dynamic_axes = {INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in meta.output_names}}
    model = with_4d_attention(model.eval())  # the same weights; every activation 4-D (DLA runs it whole)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            model,
            (dummy,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=meta.output_names,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buf.getvalue())
    proto.producer_name = "yolo-nano-edge"
    proto.doc_string = f"{meta.arch} {size_h}x{size_w}, {meta.num_classes} classes, weights {source}"
    write_onnx_metadata(proto, meta)
    onnx.checker.check_model(proto)
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    atomic_write_bytes(path, proto.SerializeToString())
    return meta


def export_weights_file(
    target: Union[str, os.PathLike],
    weights: Optional[Union[str, os.PathLike]] = None,
    *,
    input_size: Optional[int] = None,
    batch: Union[int, str] = "dynamic",
    seed: int = 0,
) -> ModelMetadata:
    """Export a ``.safetensors`` weights file (at its recorded size unless ``input_size``) to ``target``.

    Without ``weights``: a randomly initialised 20-class YOLO Nano from ``seed`` (reproducible), for the
    runtime's embedded default when the demo weights are absent.
    """
    if weights is not None:
        model, class_names = load_model(weights, input_size=input_size)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model("yolo-nano", 20, input_size or 416)
        class_names = None
    return export_onnx(model, target, class_names=class_names, batch=batch, weights_path=weights)


def onnx_parity(model: nn.Module, path: Union[str, os.PathLike], batch: int = 1, seed: int = 0) -> float:
    """Max abs difference between ONNX Runtime and PyTorch outputs on one random input, relative to the
    outputs' magnitude when that exceeds 1 (trained heads emit logits in the tens: float32 rounding of the
    BN-folded graph grows with them).
    """
    import onnxruntime as ort

    size = model.input_size  # type: ignore[attr-defined]
    x = np.random.default_rng(seed).random((batch, 3, size, size), dtype=np.float32)
    with torch.no_grad():
        ref: List[np.ndarray] = [t.numpy() for t in model.eval()(torch.from_numpy(x))]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {INPUT_NAME: x})
    scale = max(1.0, max(float(np.abs(a).max()) for a in ref))
    return max(float(np.abs(a - b).max()) for a, b in zip(ref, got)) / scale


def _batch_arg(text: str) -> Union[int, str]:
    if text == "dynamic":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"batch must be a positive integer or 'dynamic', got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"batch must be >= 1, got {value}")
    return value


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nano-export", description="Export a network to ONNX with runtime metadata."
    )
    parser.add_argument(
        "--arch", default=None, help=f"one of {', '.join(ARCHS)} (default: from --weights, else yolo-nano)"
    )
    parser.add_argument("--weights", help="a .safetensors file written by nano-train (default: random init)")
    parser.add_argument(
        "--size", type=int, default=None, help="input size, a multiple of 32 (default: 416 or the weights')"
    )
    parser.add_argument(
        "--classes", type=int, default=None, help="number of classes (default: 20 or the weights')"
    )
    parser.add_argument(
        "--batch", type=_batch_arg, default=1, help="fixed batch size or 'dynamic' (default 1)"
    )
    parser.add_argument(
        "--opset", type=int, default=13, help="ONNX opset 13..17 (default 13: TensorRT 8.5 parses it)"
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch parity check"
    )
    parser.add_argument("-o", "--output", required=True, help="output .onnx path")
    args = parser.parse_args(argv)

    def fail(msg: str) -> int:
        print(f"nano-export: error: {msg}", file=sys.stderr)
        return 2

    if args.arch is not None and args.arch not in ARCHS:
        return fail(f"unknown arch {args.arch!r}; choose one of: {', '.join(ARCHS)}")
    if args.size is not None and (args.size < 32 or args.size % 32):
        return fail(f"--size must be a positive multiple of 32 (e.g. 416), got {args.size}")
    if args.classes is not None and args.classes < 1:
        return fail(f"--classes must be >= 1, got {args.classes}")
    if args.opset not in OPSETS:
        return fail(f"--opset must be in 13..17, got {args.opset}")
    try:
        if args.weights:
            cfg = read_config(args.weights)
            if args.arch and cfg.get("arch") and args.arch != cfg["arch"]:
                return fail(f"--arch {args.arch} but {args.weights} holds {cfg['arch']} weights")
            if args.classes and cfg.get("num_classes") and args.classes != int(cfg["num_classes"]):
                return fail(
                    f"--classes {args.classes} but {args.weights} was trained for {cfg['num_classes']} classes"
                )
            model, class_names = load_model(args.weights, input_size=args.size)
        else:
            model = build_model(args.arch or "yolo-nano", args.classes or 20, args.size or 416)
            class_names = None
            print(
                "nano-export: no --weights given: exporting RANDOMLY INITIALISED weights (detections will be meaningless)"
            )
        meta = export_onnx(
            model,
            args.output,
            class_names=class_names,
            batch=args.batch,
            opset=args.opset,
            weights_path=args.weights,
        )
    except (WeightsError, ValueError) as e:
        return fail(str(e))
    except OSError as e:  # -o below a file, in a read-only or missing folder: nothing was written
        where = e.filename or args.output
        return fail(f"cannot write {args.output} ({e.strerror or e}: {where}); choose a writable -o path")
    line = f"wrote {args.output}: {meta.arch} {meta.input_size[0]}x{meta.input_size[1]}, {meta.num_classes} classes, batch {meta.batch}, opset {meta.opset}"
    if not args.no_verify:
        diff = onnx_parity(model, args.output, batch=2 if args.batch == "dynamic" else args.batch)
        line += f"; ONNX Runtime vs PyTorch max abs diff {diff:.2e} (relative to outputs above 1)"
        if diff > 1e-4:
            print(line)
            return fail(f"ONNX Runtime output differs from PyTorch by {diff:.2e} (> 1e-4)")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
