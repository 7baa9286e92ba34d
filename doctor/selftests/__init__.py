"""The self-tests, each a few seconds, skipped with ``--quick`` or where they do not apply."""

from .detector import detector
from .kernels import kernels
from .power_sampling import power_sampling
from .tensorrt_fp16 import tensorrt_fp16

SELFTESTS = [tensorrt_fp16, kernels, detector, power_sampling]

__all__ = ["SELFTESTS"]
