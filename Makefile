# Two commands for a fresh machine: `make bench` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Code that runs on a Jetson (JetPack 5.1: Python 3.8): everything but model/ (torch).
PY38_PATHS := core data jetson engines calibration runtime benchmarks doctor

.PHONY: install bench test lint typecheck py38 clean kernels-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[train,dev]'
	touch $(STAMP)

install: $(STAMP)

bench: $(STAMP)
	$(BIN)/nano-bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	scripts/check-imports.sh
	$(BIN)/vermin -t=3.8- --no-tips --violations --eval-annotations --backport dataclasses $(PY38_PATHS)

# The TensorRT code against the real TensorRT API (tensorrt-stubs, kept outside the venv: see typings/).
typecheck: $(STAMP)
	test -d build/trt-stubs/tensorrt || $(PY) typings/install-trt-stubs.py
	$(BIN)/mypy --config-file typings/mypy-trt.ini

test: lint typecheck
	$(BIN)/pytest -q
	scripts/py38-check.sh

# The torch-free suite under Python 3.8 with numpy 1.x, as on JetPack 5.1 (part of `make test`).
py38:
	scripts/py38-check.sh

# The CUDA kernels (runtime/kernels/*.cu): compiled for sm_72 (AGX Xavier: NVRTC 11.8 + ptxas from the dev
# extra) and sm_87 (Orin: nvcc), executed on the CPU emulation against numpy; one summary line per kernel.
# On a machine with a GPU: scripts/gpu-check.sh.
kernels-check: $(STAMP)
	$(BIN)/pytest -q tests/runtime/test_kernels_compile.py tests/runtime/test_kernels_emulated.py tests/runtime/test_kernels_pipeline.py
	$(PY) -m yolo_nano.runtime.kernel_check --compile

clean:
	rm -rf $(VENV) .venv38 build *.egg-info
