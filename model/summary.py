"""``nano-model``: weights, FLOPs and sizes of the networks, and the paper's Table 1 beside ours.

nano-model summary [--arch yolo-nano|tiny-yolov2|tiny-yolov3] [--size 416] [--classes 20] [--layers] [--json]
nano-model compare [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, Optional, Sequence

from yolo_nano.core.cli import CommandError, run_command

from .flops import count_model
from .registry import ARCHS, build_model

# The paper's Table 1 (VOC 2007 test; sizes as printed, "MB" = MiB, YOLO Nano's at 8-bit weights).
PAPER_TABLE1 = {
    "tiny-yolov2": {"name": "Tiny YOLOv2", "size_mib": 60.5, "map": 57.1, "flops_b": 6.97},
    "tiny-yolov3": {"name": "Tiny YOLOv3", "size_mib": 33.4, "map": 58.4, "flops_b": 5.52},
    "yolo-nano": {"name": "YOLO Nano", "size_mib": 4.0, "map": 69.1, "flops_b": 4.57},
}
MIB = float(1 << 20)


def summarize(arch: str = "yolo-nano", size: int = 416, classes: int = 20, layers: bool = False) -> Dict:
    """Counts for one network: conv+linear weights, FLOPs (2 x MACs), and weights size in MiB at fp32/fp16/int8."""
    model = build_model(arch, classes, size)
    c = count_model(model, size)
    out = {
        "arch": arch,
        "size": size,
        "classes": classes,
        "params": c.weights,
        "params_total": c.params_total,
        "flops": c.flops,
        # MiB, as the paper's Table 1 (Tiny YOLOv2: 15.86 M weights x 4 B = 60.5 MiB).
        "size_mib": {"fp32": c.weights * 4 / MIB, "fp16": c.weights * 2 / MIB, "int8": c.weights / MIB},
    }
    if layers:
        out["layers"] = [
            {
                "name": la.name,
                "kind": la.kind,
                "out_shape": list(la.out_shape),
                "weights": la.weights,
                "flops": la.flops,
            }
            for la in c.layers
        ]
    return out


def compare() -> Dict[str, Dict]:
    """The paper's Table 1 and our three networks at 416x416, 20 classes, measured."""
    rows = {}
    for arch in ARCHS:
        s = summarize(arch)
        paper = PAPER_TABLE1[arch]
        rows[arch] = {
            "paper": paper,
            "ours": {"params": s["params"], "flops": s["flops"], "size_mib": s["size_mib"]},
            "flops_delta": s["flops"] / (paper["flops_b"] * 1e9) - 1,
        }
    return rows


def _print_summary(s: Dict) -> None:
    print(f"{s['arch']} at {s['size']}x{s['size']}, {s['classes']} classes")
    if "layers" in s:
        print(f"{'layer':34s} {'kind':8s} {'output':>16s} {'weights':>10s} {'MFLOPs':>9s}")
        for la in s["layers"]:
            shape = "x".join(str(d) for d in la["out_shape"])
            print(
                f"{la['name']:34s} {la['kind']:8s} {shape:>16s} {la['weights']:>10,d} {la['flops'] / 1e6:>9.1f}"
            )
    print(
        f"conv+linear weights: {s['params']:,} ({s['params'] / 1e6:.3f} M); all parameters: {s['params_total']:,}"
    )
    print(f"FLOPs (2 x MACs):    {s['flops'] / 1e9:.3f} B")
    mb = s["size_mib"]
    print(
        f"weights size:        {mb['fp32']:.2f} MiB fp32, {mb['fp16']:.2f} MiB fp16, {mb['int8']:.2f} MiB int8"
    )


def _print_compare(rows: Dict[str, Dict]) -> None:
    print("Table 1 of the paper beside our networks (416x416, 20 classes; ours measured by our counter)")
    head = f"{'model':12s} | {'paper size':>10s} {'paper mAP':>9s} {'paper FLOPs':>11s} | {'our weights':>11s} {'fp32 MiB':>8s} {'int8 MiB':>8s} {'our FLOPs':>9s} {'FLOPs vs paper':>14s}"
    print(head)
    print("-" * len(head))
    for r in rows.values():
        p, o = r["paper"], r["ours"]
        print(
            f"{p['name']:12s} | {p['size_mib']:>8.1f}MB {p['map']:>8.1f}% {p['flops_b']:>10.2f}B | "
            f"{o['params'] / 1e6:>10.3f}M {o['size_mib']['fp32']:>8.2f} {o['size_mib']['int8']:>8.2f} "
            f"{o['flops'] / 1e9:>8.3f}B {r['flops_delta']:>+13.2%}"
        )
    print(
        "paper sizes: Tiny YOLOv2/v3 at fp32, YOLO Nano at 8-bit weights; mAP is the paper's (VOC 2007 test), not ours."
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``nano-model`` entry point: 0 on success, 2 on bad input (one line on stderr)."""
    return run_command("nano-model", _main, argv)


def _main(argv: Optional[Sequence[str]]) -> int:
    parser = argparse.ArgumentParser(
        prog="nano-model", description="Model summaries and the paper's Table 1."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_sum = sub.add_parser("summary", help="weights, FLOPs and size of one network")
    p_sum.add_argument("--arch", default="yolo-nano", help=f"one of {', '.join(ARCHS)}")
    p_sum.add_argument("--size", type=int, default=416, help="input size, a multiple of 32")
    p_sum.add_argument("--classes", type=int, default=20)
    p_sum.add_argument("--layers", action="store_true", help="per-layer table")
    p_sum.add_argument("--json", action="store_true", help="print one JSON object")
    p_cmp = sub.add_parser("compare", help="the paper's Table 1 beside our three networks")
    p_cmp.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "summary":
        try:
            s = summarize(args.arch, args.size, args.classes, args.layers)
        except ValueError as e:  # unknown arch, size not a multiple of 32, classes < 1
            raise CommandError(str(e)) from e
        if args.json:
            print(json.dumps(s))
        else:
            _print_summary(s)
        return 0
    rows = compare()
    if args.json:
        print(json.dumps(rows))
    else:
        _print_compare(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
