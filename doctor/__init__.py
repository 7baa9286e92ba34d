"""yolo_nano.doctor: ``nano-doctor``, one command that checks the whole stack on this machine.

It runs every check that applies here (board, software, GPU, power, disk) and the self-tests (TensorRT
FP16 against ONNX Runtime, the CUDA kernels against numpy, the Detector, power sampling), prints one
line per check with the fix for each failure, and writes a scrubbed JSON report to attach to an issue.
A top layer like benchmarks: it may import every layer and jetson/. docs/doctor.md lists the checks.

- :mod:`.result`: a check's outcome (:class:`~.result.Check`) and what every check may ask of this
  machine (:class:`~.result.Context`);
- :mod:`.checks`: board and software, GPU, power, disk;
- :mod:`.selftests`: the self-tests;
- :mod:`.report`: the JSON report and its scrubbing;
- :mod:`.cli`: the command.
"""
