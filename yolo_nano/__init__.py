"""yolo-nano-edge: YOLO Nano from PyTorch to TensorRT on NVIDIA Jetson.

Subpackages: ``model`` (PyTorch network, training, export; the only one that imports torch, and only
in its torch modules), ``engines`` and ``calibration`` (TensorRT), ``runtime`` (the ``Detector``),
``benchmarks`` (``nano-bench``, ``nano-eval``).
"""

__version__ = "0.1.0"
