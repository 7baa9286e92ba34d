"""Shared test helpers, importable from every test folder as ``testsupport`` (pytest's ``pythonpath``).

- ``tiny_onnx``: a tiny detector ONNX with our metadata and small calibration image folders.
- ``square_model``: a detector that finds red/blue squares exactly (known answers for the runtime).
- ``board``: a fake Jetson: fake nvpmodel/jetson_clocks on PATH, recorded INA3221 sysfs trees.
- ``fixtures/``: the nvpmodel confs and fake board programs.
"""
