"""The PyTorch layer: the three networks (one base class, :mod:`.detector_base`; one registry,
:mod:`.registry`), training (``train``: command line, ``train_data``, ``train_state``, ``train_eval``,
``train_loop``), weights, FLOPs, export and the PyTorch backend.

Every module here but this one imports torch (the ``train`` extra); nothing imports torch at package
import. The torch-free contract these build on lives in :mod:`yolo_nano.core` and :mod:`yolo_nano.data`.
"""
