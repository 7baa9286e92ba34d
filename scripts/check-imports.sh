#!/usr/bin/env bash
# import-linter on the layers in .importlinter. Our subpackages live in top-level folders that setuptools
# maps into yolo_nano.*; import-linter reads a package from disk, so build that tree from symlinks first.
set -euo pipefail
cd "$(dirname "$0")/.."
LINT=build/import-tree
rm -rf "$LINT" && mkdir -p "$LINT/yolo_nano"
cp yolo_nano/__init__.py "$LINT/yolo_nano/"
for d in core data model calibration engines runtime jetson benchmarks doctor; do
  ln -s "$PWD/$d" "$LINT/yolo_nano/$d"
done
ROOT=$PWD
# Run from inside the tree: the current directory comes first on sys.path, and ./yolo_nano is the bare one.
cd "$LINT" && PYTHONPATH="$PWD" "$ROOT/${VENV:-.venv}/bin/lint-imports" "$ROOT/.importlinter" --no-cache "$@"
