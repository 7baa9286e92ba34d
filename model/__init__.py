"""YOLO Nano and the Table 1 baselines.

This package is the base layer. Its torch-free modules (``metadata``, ``preprocess``, ``postprocess``, ``fileio``,
``voc``, ``metrics``, ``synth``) are importable on a Jetson without PyTorch; the modules that build or
train networks import torch and need the ``train`` extra. Nothing here imports torch at package import.
"""
