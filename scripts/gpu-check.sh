#!/usr/bin/env bash
# The CUDA kernels on a real NVIDIA GPU: the same runtime/kernels/*.cu the board runs, compiled for this
# GPU at first use, launched through the CUDA driver API exactly as the runtime does (no pycuda or CuPy
# needed: the launcher is ctypes over libcuda, so nothing has to be built), compared with the numpy
# reference on the cases of `make kernels-check` (letterbox 1x1..1920x1080 and a mixed batch; decode +
# sort on random logits, all 10647 candidates passing, ties, NaN/inf, none; NMS class-aware, agnostic,
# capped; a CUDA graph captured and replayed), then timed: each kernel and the whole post-process for
# 1, 100 and 10647 candidates against numpy, and letterbox at 1080p; plus the numpy NMS table.
#
#   scripts/gpu-check.sh [--dry-run] [OUT_DIR]      (default OUT_DIR: build/gpu-check)
#
# Writes OUT_DIR/kernels.{txt,json}, OUT_DIR/nms.{txt,json}, OUT_DIR/gpu.txt and OUT_DIR/benchmarks.md
# (rows to paste into docs/benchmarks.md), then runs scripts/gpu-check-trt.py (TensorRT engines through
# the Detector: OUT_DIR/trt.{txt,json}) where TensorRT is importable. Exit 0 when every kernel agrees with numpy, 1 when one does
# not, 2 when it cannot run here (no GPU, no CUDA compiler, no numpy/OpenCV). --dry-run checks the
# Python side imports and lists the compilers found, without a GPU.
# Compilers: the CUDA toolkit's NVRTC or nvcc (CUDA_HOME, /usr/local/cuda, PATH), or the PyPI
# nvidia-cuda-nvrtc-cu12 wheel; YOLO_NANO_NVRTC=/path/to/libnvrtc.so picks one.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
if [ "${1:-}" = "--dry-run" ]; then
  DRY=1
  shift
fi
OUT=$(realpath -m "${1:-build/gpu-check}")

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=$PWD/.venv/bin/python; else PY=python3; fi
fi

# Python runs from RUN_DIR: the checkout when the package is installed, else a folder that maps
# yolo_nano/<folder> to this checkout's <folder> (the checkout's own yolo_nano/ would shadow it).
RUN_DIR=$PWD
if ! "$PY" -c "import yolo_nano.runtime.kernel_check" >/dev/null 2>&1; then
  RUN_DIR=$(mktemp -d)
  trap 'rm -rf "$RUN_DIR"' EXIT
  mkdir "$RUN_DIR/yolo_nano"
  cp yolo_nano/__init__.py "$RUN_DIR/yolo_nano/"
  for pkg in core data model engines calibration runtime jetson benchmarks; do
    ln -s "$PWD/$pkg" "$RUN_DIR/yolo_nano/$pkg"
  done
fi
py() { (cd "$RUN_DIR" && "$PY" "$@"); }
if ! err=$(py -c "import yolo_nano.runtime.kernel_check, yolo_nano.benchmarks.bench_nms" 2>&1); then
  echo "gpu-check: cannot import the runtime with $PY ($(echo "$err" | tail -n 1)); install it: python3 -m venv .venv && .venv/bin/pip install -e ." >&2
  exit 2
fi

py - <<'EOF' || exit 2
import sys
from yolo_nano.runtime.kernel_build import INSTALL_HINT, find_compilers

found = find_compilers()
for c in found:
    archs = c.supported_archs()
    print(f"gpu-check: compiler {c.kind} {c.version[0]}.{c.version[1]} {c.path} (sm_{min(archs) if archs else '?'}..sm_{max(archs) if archs else '?'})")
if not found:
    print(f"gpu-check: {INSTALL_HINT}", file=sys.stderr)
    sys.exit(1)
EOF

if [ "$DRY" = 1 ]; then
  echo "gpu-check: dry run: the Python side imports; on a GPU machine this writes $OUT/"
  exit 0
fi

if ! py -c "import ctypes; ctypes.CDLL('libcuda.so.1')" >/dev/null 2>&1; then
  echo "gpu-check: no CUDA driver (libcuda.so.1) here: run this on a machine with an NVIDIA GPU" >&2
  exit 2
fi

mkdir -p "$OUT"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
fi
py -c "import platform, numpy, cv2; print('host:', platform.processor() or platform.machine(), '| numpy', numpy.__version__, '| OpenCV', cv2.__version__)" | tee -a "$OUT/gpu.txt"

status=0
py -m yolo_nano.runtime.kernel_check --gpu --time --compile --json "$OUT/kernels.json" | tee "$OUT/kernels.txt" || status=$?
if [ "$status" -ne 0 ] && [ ! -s "$OUT/kernels.json" ]; then
  echo "gpu-check: the kernel check could not run (see above)" >&2
  exit 2
fi
py -m yolo_nano.benchmarks.bench_nms --json "$OUT/nms.json" | tee "$OUT/nms.txt"

py - "$OUT" <<'EOF'
import json, os, sys

out = sys.argv[1]
doc = json.load(open(os.path.join(out, "kernels.json")))
gpu = open(os.path.join(out, "gpu.txt")).read().strip().splitlines()
lines = [f"GPU: {gpu[0] if gpu else doc['where']}", ""]
lines += ["| candidates | decode ms | sort ms | nms ms | copy-back ms | whole post-process ms (host wall) | numpy ms |", "|---|---|---|---|---|---|---|"]
for row in doc["timings"]:
    if "candidates" in row:
        lines.append(
            f"| {row['candidates']} | {row.get('decode', 0):.4f} | {row.get('sort', 0):.4f} | {row.get('nms', 0):.4f} | "
            f"{row.get('download', 0):.4f} | {row['gpu_postprocess_ms']:.3f} | {row['numpy_ms']:.3f} |"
        )
    elif "letterbox_1080p_ms" in row:
        lines += ["", f"letterbox 1920x1080 -> 416x416: {row['letterbox_1080p_ms']:.4f} ms"]
lines += ["", "checks: " + ", ".join(f"{c['kernel']} {'ok' if c['ok'] else 'FAIL'}" for c in doc["checks"])]
open(os.path.join(out, "benchmarks.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

# TensorRT engines (FP32/FP16/INT8, DLA where present) through the Detector, where TensorRT is importable;
# elsewhere it prints one SKIPPED line and exits 0.
TRT_SCRIPT=$PWD/scripts/gpu-check-trt.py
py "$TRT_SCRIPT" "$OUT" || status=1
exit "$status"
