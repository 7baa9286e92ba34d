"""Which TensorRT releases nano-build and the runtime support, and which API each code path needs.

One builder serves three API generations (the recorded surfaces in tests/engines/trt_api/ are the
reference for each):

* **8.5-8.6** (JetPack 5.1 on AGX Xavier; 8.6 on JetPack 6.0): weakly typed networks; precision from
  ``BuilderFlag.FP16``/``INT8``; INT8 from the implicit calibrator or a Q/DQ ONNX; no build progress
  monitor; DLA has no explicit (Q/DQ) quantization.
* **10.x** (JetPack 6.1+ on Orin, x86): weakly typed by default (the calibrator is deprecated from 10.1
  but works); strongly typed on request (``--strongly-typed``); a progress monitor can cancel a build.
* **11.x** (x86 ``pip install tensorrt``, JetPack 7): strongly typed only: ``BuilderFlag.FP16``/``INT8``,
  the calibrators and ``platform_has_fast_*`` are gone; FP16 needs an FP16 ONNX, INT8 a Q/DQ ONNX.

Code that runs only on some of these is marked ``@tensorrt_path(8, 10)``; tests/engines/test_trt_api.py
reads the marks and checks every TensorRT attribute such code uses against the surfaces of exactly
those versions. Nothing here imports TensorRT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple, TypeVar

#: Oldest supported release and the newest minor we know per major (checked against its recorded API).
OLDEST_SUPPORTED = (8, 5)
NEWEST_KNOWN: Dict[int, Tuple[int, int]] = {8: (8, 6), 10: (10, 16), 11: (11, 4)}
SUPPORTED_TEXT = (
    "TensorRT 8.5-8.6 (JetPack 5.1/6.0), 10.0-10.16 (JetPack 6.1+, x86) and 11.0-11.4 (x86, JetPack 7)"
)
#: What to install on an x86 GPU machine (versions whose API surface is recorded and tested).
PIP_HINT = "pip install 'tensorrt-cu12==10.16.1.11' (or 'tensorrt-cu12==11.4.0.106')"

F = TypeVar("F", bound=Callable[..., Any])


class TensorRTUnavailable(ImportError):
    """TensorRT (or pycuda) is not importable here (re-exported by :mod:`yolo_nano.engines.device`)."""


class UnsupportedTensorRT(TensorRTUnavailable):
    """The importable TensorRT is older than 8.5, a 9.x early-access release, or newer than we know."""


def tensorrt_path(*majors: int) -> Callable[[F], F]:
    """Mark a function as used only with TensorRT ``majors`` (read by the API test; no runtime effect)."""

    def mark(fn: F) -> F:
        fn.__tensorrt_majors__ = tuple(majors)  # type: ignore[attr-defined]
        return fn

    return mark


def version_tuple(version: str) -> Tuple[int, int, int]:
    """``"10.3.0.26"`` -> ``(10, 3, 0)``; non-digit suffixes (``"8.6.1.post1"``) are ignored."""
    parts = [int(m) for m in re.findall(r"\d+", version)[:3]]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True)
class TensorRTApi:
    """What the running TensorRT release offers, from its version (no TensorRT calls)."""

    version: str

    @property
    def major(self) -> int:
        return version_tuple(self.version)[0]

    @property
    def weak_typing(self) -> bool:
        """Builder flags FP16/INT8 and the implicit INT8 calibrator exist (8.x, 10.x)."""
        return self.major in (8, 10)

    @property
    def strong_typing(self) -> bool:
        """``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` exists (10.x; the only mode on 11.x)."""
        return self.major >= 10

    @property
    def progress_monitor(self) -> bool:
        """``IBuilderConfig.progress_monitor`` can cancel a running build (10.0+)."""
        return self.major >= 10

    @property
    def dla_explicit_quantization(self) -> bool:
        """DLA runs Q/DQ (explicitly quantized) networks: not on 8.x."""
        return self.major >= 10


def check_version(version: str) -> TensorRTApi:
    """The :class:`TensorRTApi` of ``version``, or :class:`UnsupportedTensorRT` saying what is supported."""
    major, minor, _ = version_tuple(version)
    if (major, minor) < OLDEST_SUPPORTED:
        raise UnsupportedTensorRT(
            f"TensorRT {version} is older than 8.5, the oldest this yolo-nano-edge supports (supported: {SUPPORTED_TEXT}); "
            "on a Jetson install JetPack 5.1 or newer, on x86: " + PIP_HINT
        )
    newest = NEWEST_KNOWN.get(major)
    if newest is None:
        raise UnsupportedTensorRT(
            f"TensorRT {version} is not supported ({'9.x were early-access releases; ' if major == 9 else ''}"
            f"supported: {SUPPORTED_TEXT}); on x86: {PIP_HINT}"
        )
    if (major, minor) > newest:
        raise UnsupportedTensorRT(
            f"TensorRT {version} is newer than the newest {major}.x this yolo-nano-edge knows "
            f"({newest[0]}.{newest[1]}; supported: {SUPPORTED_TEXT}): upgrade yolo-nano-edge, or install a "
            f"supported release ({PIP_HINT})"
        )
    return TensorRTApi(version)
