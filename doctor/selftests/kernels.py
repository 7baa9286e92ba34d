"""Self-test: every CUDA kernel against the numpy reference on the fixed cases of
:mod:`yolo_nano.runtime.kernel_check` (the ones the tests use): on the GPU through the CUDA driver, or
where there is no GPU, on the CPU emulation of the same sources when g++ is present. One line per kernel."""

from __future__ import annotations

import contextlib
from typing import Any, List

from ..result import Check, Context, check, failed, missing, not_here, ok, skipped

NAME = "CUDA kernels"
FIX = "attach the report to an issue; meanwhile use the numpy post-processing (the Detector's default path)"


def _lines(results: List[Any], where: str) -> List[Check]:
    out = []
    for r in results:
        name = f"kernel {r.kernel}"
        text = f"{where}: {r.detail}"
        out.append(ok(name, text, where=where) if r.ok else failed(name, text, FIX, where=where))
    return out


@check(NAME)
def kernels(ctx: Context) -> List[Check]:
    if ctx.options.quick:
        return [skipped(NAME)]
    from yolo_nano.runtime.gpu_pipeline import GpuPipelineError, GpuPipelineUnavailable
    from yolo_nano.runtime.kernel_build import INSTALL_HINT, KernelBuildError
    from yolo_nano.runtime.kernel_check import run_checks
    from yolo_nano.runtime.kernel_launch import LaunchError

    launcher: Any
    if ctx.has_gpu:
        from yolo_nano.runtime.cuda_driver import CudaDriverLauncher, CudaUnavailable

        try:
            launcher = CudaDriverLauncher.standalone()
        except (CudaUnavailable, LaunchError) as e:
            return [failed(NAME, f"the CUDA driver refused: {e}", FIX)]
        where, scope = f"GPU {launcher.arch}", launcher.context()
        try:
            with scope:
                launcher.load_kernels()
        except KernelBuildError as e:
            launcher.close()
            return [missing(NAME, str(e).split("\n")[0][:300], INSTALL_HINT)]
    elif ctx.on_jetson:
        return [not_here(NAME, "the GPU did not answer (above)")]
    else:
        from yolo_nano.runtime.kernel_emu import EmulatedLauncher, EmulationUnavailable

        try:
            launcher = EmulatedLauncher()
        except EmulationUnavailable as e:
            return [not_here(NAME, f"no GPU, and no CPU emulation: {str(e).splitlines()[0]}")]
        where, scope = "CPU emulation (no GPU)", contextlib.nullcontext()
    try:
        with scope:
            results = run_checks(launcher)
    except (LaunchError, KernelBuildError, GpuPipelineError, GpuPipelineUnavailable) as e:
        return [failed(NAME, f"{where}: {str(e).splitlines()[0]}", FIX)]
    finally:
        launcher.close()
    return _lines(results, where)
