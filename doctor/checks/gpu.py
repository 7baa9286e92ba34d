"""GPU: name, compute capability, integrated, can map host memory (CUDA driver API, no pycuda needed);
DLA cores (TensorRT's builder)."""

from __future__ import annotations

from ..result import Check, Context, check, failed, not_here, ok

GPU_FIX_JETSON = (
    "the CUDA driver does not answer: check that this user is in the video group (sudo usermod -aG video "
    "$USER, then log in again) and that JetPack's CUDA is installed (sudo apt install nvidia-jetpack); in "
    "a container, run it with --runtime nvidia"
)


@check("GPU")
def gpu(ctx: Context) -> Check:
    info, why = ctx.gpu()
    if info is None:
        if ctx.on_jetson:
            return failed("GPU", why, GPU_FIX_JETSON)
        return not_here("GPU", f"no GPU ({why})")
    traits = [
        f"compute {info.compute_capability}",
        "integrated" if info.integrated else "discrete",
        "maps host memory" if info.can_map_host_memory else "cannot map host memory",
    ]
    data = {
        "name": info.name,
        "compute_capability": info.compute_capability,
        "integrated": info.integrated,
        "can_map_host_memory": info.can_map_host_memory,
    }
    if ctx.on_jetson and not (info.integrated and info.can_map_host_memory):
        return failed(
            "GPU",
            f"{info.name}, {', '.join(traits)}: a Jetson GPU is integrated and maps host memory",
            "attach the report to an issue (the zero-copy pipeline needs mapped host memory)",
            **data,
        )
    return ok("GPU", f"{info.name}, {', '.join(traits)}", **data)


@check("DLA cores")
def dla(ctx: Context) -> Check:
    if not ctx.has_gpu:
        return not_here("DLA cores", "no GPU" if not ctx.on_jetson else "the GPU did not answer (above)")
    trt, why, _ = ctx.tensorrt()
    if trt is None:
        return not_here("DLA cores", "TensorRT is needed to count them (see its line above)")
    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    cores = int(builder.num_DLA_cores)
    ctx.found["dla_cores"] = cores
    return ok("DLA cores", str(cores) + ("" if cores else " (this GPU has none)"), count=cores)


GPU_CHECKS = [gpu, dla]
