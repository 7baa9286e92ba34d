#!/usr/bin/env bash
# The torch-free suite on Python 3.8 with numpy 1.x: what JetPack 5.1 on AGX Xavier runs.
# Creates .venv38 with the base install (no torch, no TensorRT), then runs every test that does not
# need PyTorch (those skip with their reason).
set -euo pipefail
cd "$(dirname "$0")/.."
PY38=${PYTHON38:-}
if [ -z "$PY38" ]; then
  for c in python3.8 /root/.pyenv/versions/3.8*/bin/python3.8 /usr/bin/python3.8; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 8)' 2>/dev/null; then
      PY38=$c
      break
    fi
  done
fi
if [ -z "$PY38" ]; then
  # CI must check what a JetPack 5.1 board runs; a developer without a python3.8 gets one line and goes on.
  if [ "${CI:-}" = "true" ]; then
    echo "py38-check: no Python 3.8 found (set PYTHON38=/path/to/python3.8); CI=true requires the JetPack 5.1 suite" >&2
    exit 1
  fi
  echo "py38-check: SKIPPED: no python3.8 here, so the JetPack 5.1 (Python 3.8, numpy 1.x) suite did not run; set PYTHON38=/path/to/python3.8 to run it"
  exit 0
fi
VENV=.venv38
if [ ! -f "$VENV/.installed" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
  "$PY38" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # JetPack 5.1 ships OpenCV 4.5.4 and numpy 1.x: test against the same major versions.
  "$VENV/bin/python" -m pip install --quiet -e . "numpy<2" "opencv-python-headless<4.6" pytest hypothesis
  touch "$VENV/.installed"
fi
"$VENV/bin/python" -c 'import sys, numpy; print("py38-check: Python", sys.version.split()[0], "numpy", numpy.__version__)'
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
