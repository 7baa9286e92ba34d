"""TensorRTBackend: refusals without TensorRT, and its CUDA lifecycle on stand-ins for pycuda and TensorRT
(testsupport.fake_pycuda / fake_tensorrt keep pycuda's context-stack semantics and count everything)."""

from __future__ import annotations

import gc
import sys
import threading

import numpy as np
import onnxruntime as ort
import pytest

from testsupport import fake_pycuda, fake_tensorrt, tiny_onnx
from yolo_nano.core.backend import BackendClosedError
from yolo_nano.engines.cuda_context import PrimaryContext
from yolo_nano.engines.device import TensorRTUnavailable, import_tensorrt, tensorrt_available
from yolo_nano.engines.identity import (
    EngineIdentity,
    EngineMismatchError,
    EngineRecordError,
    read_record,
    write_record,
)

no_tensorrt = pytest.mark.skipif(tensorrt_available(), reason="checks the behaviour without TensorRT")


def _engine_with_record(tmp_path):
    meta = tiny_onnx.tiny_metadata()
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    write_record(engine, EngineIdentity(
        tensorrt_version="8.5.2.2", gpu_name="Xavier", compute_capability="7.2", precision="fp16",
        onnx_path="m.onnx", onnx_sha256="0" * 64, input_shape=[1, 3, 64, 64], metadata=meta.to_dict(),
        preprocess=meta.preprocess_params(), build_command="nano-build m.onnx --precision fp16 -o m.engine",
    ))  # fmt: skip
    return str(engine)


def test_engine_without_record_is_refused_first(tmp_path):
    from yolo_nano.engines.trt_backend import TensorRTBackend

    (tmp_path / "x.engine").write_bytes(b"x")
    with pytest.raises(EngineRecordError, match="no identity record"):
        TensorRTBackend(str(tmp_path / "x.engine"))


@no_tensorrt
def test_missing_tensorrt_is_an_import_error_saying_what_to_install(tmp_path):
    from yolo_nano.engines.trt_backend import TensorRTBackend

    with pytest.raises(ImportError, match="TensorRT is required.*JetPack"):
        import_tensorrt()
    with pytest.raises(TensorRTUnavailable):
        TensorRTBackend(_engine_with_record(tmp_path))


@no_tensorrt
def test_detector_on_an_engine_says_tensorrt_is_needed(tmp_path):
    from yolo_nano.runtime import BackendUnavailableError, Detector

    with pytest.raises(BackendUnavailableError, match="TensorRT"):
        Detector(_engine_with_record(tmp_path))


def test_stub_only_tensorrt_counts_as_missing(tmp_path, monkeypatch):
    # tensorrt-stubs leaves a bare `tensorrt` folder: importable, no bindings
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.pyi").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "tensorrt", raising=False)
    if tensorrt_available():
        pytest.skip("a real TensorRT shadows the stub folder here")
    with pytest.raises(TensorRTUnavailable, match="no bindings"):
        import_tensorrt()


# --- the CUDA lifecycle on the stand-ins ----------------------------------------------------------------


@pytest.fixture(scope="module")
def dyn_onnx(tmp_path_factory):
    return tiny_onnx.save_tiny_model(str(tmp_path_factory.mktemp("m") / "tiny_dyn.onnx"), batch="dynamic")


@pytest.fixture
def fakes(monkeypatch):
    """fakes(integrated=True, gpus=1) -> (cuda DriverState, TrtState); nothing CUDA-ish is real here."""

    def install(integrated=True, gpus=1):
        cuda = fake_pycuda.install(monkeypatch, [fake_pycuda.FakeGpu(integrated=integrated)] * gpus)
        return cuda, fake_tensorrt.install(monkeypatch)

    return install


def _batch(n, seed=0):
    return np.random.default_rng(seed).random((n, 3, 64, 64), dtype=np.float32)


def _reference(onnx_path, batch):
    return ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]).run(None, {"images": batch})


def _assert_all_released(cuda, trt, *threads):
    """Every retain released, every allocation freed (none skipped), every stack as found (empty)."""
    c = cuda.counts
    assert cuda.leaks() == [] and c["cleanup_skipped"] == 0
    assert c["retain"] == c["release"] >= 1
    assert c["mem_alloc"] == c["mem_free"] and c["host_alloc"] == c["host_free"] >= 1
    assert c["stream_create"] == c["stream_destroy"]
    assert c["driver_push"] == c["driver_pop"]
    for t in (None,) + threads:
        assert cuda.driver_stack(t) == [] and cuda.pycuda_stack(t) == []
    assert trt.live == {} and trt.destroyed_without_context == 0


def _trt_backend(path):
    from yolo_nano.engines.trt_backend import TensorRTBackend

    return TensorRTBackend(path)


def test_fake_tensorrt_offers_only_the_listed_members(fakes):
    fakes()
    import tensorrt

    public = {n for n in vars(tensorrt) if not n.startswith("_")} | {"__version__"}
    assert public == set(fake_tensorrt.TRT_MEMBERS)


def test_pycuda_detach_of_a_primary_context_leaves_it_on_the_stack(fakes):
    """The semantics the release works around (pycuda's cuda.hpp): detach = push + release, no pop."""
    cuda, _ = fakes()
    import pycuda.driver as drv

    drv.init()
    ctx = drv.Device(0).retain_primary_context()
    ctx.detach()
    assert cuda.driver_stack() == [ctx.handle] and cuda.counts["release"] == 1
    with pytest.raises(drv.LogicError, match="cannot pop non-current context"):
        drv.Context.pop()  # and pycuda cannot pop it


@pytest.mark.parametrize("where", ["same thread", "other thread", "under another context"])
def test_primary_context_release_leaves_the_stack_as_found(fakes, where):
    cuda, _ = fakes(gpus=2)
    import pycuda.driver as drv

    drv.init()
    other = drv.Device(1).retain_primary_context()
    if where == "under another context":
        other.push()
    before = (cuda.driver_stack(), cuda.pycuda_stack())
    ctx = PrimaryContext(0)
    with ctx:
        assert cuda.driver_stack()[-1] == ctx.handle
        buf = drv.mem_alloc(16)
        buf.free()
    if where == "other thread":
        t = threading.Thread(target=ctx.release)
        t.start()
        t.join()
        assert cuda.driver_stack(t.ident) == [] and cuda.pycuda_stack(t.ident) == []
    else:
        ctx.release()
    ctx.release()  # idempotent
    assert (cuda.driver_stack(), cuda.pycuda_stack()) == before
    assert cuda.refcount[0] == 0 and cuda.counts["retain"] == 2 and cuda.counts["release"] == 1
    with pytest.raises(RuntimeError, match="released"), ctx:
        pass


@pytest.mark.parametrize("integrated", [True, False], ids=["mapped", "device-memory"])
@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic", "static"])
def test_infer_matches_onnxruntime_and_close_releases_everything(
    fakes, dyn_onnx, tmp_path, integrated, dynamic
):
    cuda, trt = fakes(integrated=integrated)
    path = fake_tensorrt.make_engine(str(tmp_path / "m.engine"), dyn_onnx, 4, dynamic)
    with _trt_backend(path) as be:
        assert (be.batch_size, be.max_batch) == ((None, 4) if dynamic else (4, 4))
        n = 3 if dynamic else 4
        for got, ref in zip(be.infer(_batch(n)), _reference(dyn_onnx, _batch(n))):
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
        assert cuda.driver_stack() == []  # popped after each call
        with pytest.raises(ValueError, match="1..4"):
            be.infer(_batch(5))  # no chunking in the backend: that is the Detector's job
        assert (cuda.counts["mem_alloc"] > 0) != integrated  # mapped memory needs no device copies
    assert trt.executions == [n]
    _assert_all_released(cuda, trt)


def test_close_is_idempotent_and_infer_after_close_errors(fakes, dyn_onnx, tmp_path):
    cuda, trt = fakes()
    be = _trt_backend(fake_tensorrt.make_engine(str(tmp_path / "m.engine"), dyn_onnx, 2, True))
    io = be.device_io()
    be.close()
    be.close()
    assert be.closed
    for call in (lambda: be.infer(_batch(1)), be.device_io, lambda: io.execute(1)):
        with pytest.raises(BackendClosedError, match="closed"):
            call()
    _assert_all_released(cuda, trt)
    assert cuda.counts["release"] == 1


def test_close_from_another_thread(fakes, dyn_onnx, tmp_path):
    cuda, trt = fakes(integrated=False)
    be = _trt_backend(fake_tensorrt.make_engine(str(tmp_path / "m.engine"), dyn_onnx, 2, True))
    be.infer(_batch(2))
    errors = []

    def work():
        try:
            be.infer(_batch(1))  # usable from any thread
            be.close()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert errors == []
    _assert_all_released(cuda, trt, t.ident)


@pytest.mark.parametrize("with_device_io", [False, True], ids=["plain", "device_io-cycle"])
def test_garbage_collected_in_another_thread_without_close(
    fakes, dyn_onnx, tmp_path, monkeypatch, with_device_io
):
    """Dropped without close() and collected in another thread: no exception, nothing leaked (pycuda
    alone would skip every free there: "cannot activate out-of-thread context")."""
    cuda, trt = fakes(integrated=False)
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    holder = [_trt_backend(fake_tensorrt.make_engine(str(tmp_path / "m.engine"), dyn_onnx, 2, True))]
    if with_device_io:
        holder[0].device_io()  # DeviceIO.execute refers back to the backend: only the cycle GC frees it

    def drop():
        holder.pop()
        gc.collect()

    t = threading.Thread(target=drop)
    t.start()
    t.join()
    assert unraisable == []
    _assert_all_released(cuda, trt, t.ident)


def _break(step):
    """Make one construction step fail; returns the error expected."""

    def bad_engine(cuda, path):
        with open(path, "wb") as f:
            f.write(b"not an engine")
        return EngineMismatchError, "could not deserialize"

    def bad_io(cuda, path):
        ident = read_record(path)
        ident.metadata["input_name"] = "pixels"
        write_record(path, ident)
        return EngineMismatchError, "does not match its record"

    def fail(what, k):
        def f(cuda, path):
            cuda.fail_on[what] = k
            return fake_pycuda.CudaMemoryError, "out of memory"

        return f

    return {
        "engine": bad_engine,
        "io": bad_io,
        "stream": fail("Stream", 1),
        "host-1": fail("pagelocked_empty", 1),
        "host-3": fail("pagelocked_empty", 3),
        "device-2": fail("mem_alloc", 2),
    }[step]


@pytest.mark.parametrize("step", ["engine", "io", "stream", "host-1", "host-3", "device-2"])
def test_construction_is_all_or_nothing(fakes, dyn_onnx, tmp_path, monkeypatch, step):
    cuda, trt = fakes(integrated=False)
    path = fake_tensorrt.make_engine(str(tmp_path / "m.engine"), dyn_onnx, 2, True)
    error, match = _break(step)(cuda, path)
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(error, match=match):
        _trt_backend(path)
    gc.collect()  # the half-built object's __del__ must not do anything more
    assert unraisable == []
    c = cuda.counts
    assert cuda.leaks() == [] and c["cleanup_skipped"] == 0 and c["retain"] == c["release"] == 1
    assert c["mem_alloc"] == c["mem_free"] and c["host_alloc"] == c["host_free"]
    assert c["stream_create"] == c["stream_destroy"]
    assert cuda.driver_stack() == [] and cuda.pycuda_stack() == []
    assert trt.live == {} and trt.destroyed_without_context == 0


def test_failure_before_any_cuda_state_retains_nothing(fakes, dyn_onnx, tmp_path):
    cuda, trt = fakes()
    path = fake_tensorrt.make_engine(str(tmp_path / "m.engine"), dyn_onnx, 2, True, version="10.3.0")
    with pytest.raises(EngineMismatchError, match="rebuild it here"):
        _trt_backend(path)
    assert cuda.counts["retain"] == 0 and trt.deserialized == 0


@pytest.mark.parametrize("integrated", [True, False], ids=["mapped", "device-memory"])
def test_device_io_runs_in_place(fakes, dyn_onnx, tmp_path, integrated):
    cuda, trt = fakes(integrated=integrated)
    import pycuda.driver as drv

    with _trt_backend(fake_tensorrt.make_engine(str(tmp_path / "m.engine"), dyn_onnx, 4, True)) as be:
        io = be.device_io()
        assert io is be.device_io() and io.max_batch == 4 and not io.fixed_batch
        assert io.stream == be._stream.handle
        # the pointers are the addresses TensorRT was given, the shapes the full-capacity buffers
        assert be._context._addresses == {"images": io.input_ptr, **io.output_ptrs}
        meta = be.metadata
        assert list(io.output_ptrs) == meta.output_names
        assert io.output_shapes == {h.name: meta.head_shape(h, 4) for h in meta.heads}
        assert all(np.dtype(d) == np.float32 for d in io.output_dtypes.values())
        x = _batch(3, seed=4)
        with io.lock, io.context:
            if integrated:
                assert io.input_host.shape == (4, 3, 64, 64)
                io.input_host[:3] = x  # mapped: the host view is the device buffer
            else:
                assert io.input_host is None
                drv.memcpy_htod_async(io.input_ptr, x)
            io.execute(3)
            heads = []
            for h in meta.heads:
                out = np.empty(meta.head_shape(h, 3), np.float32)
                drv.memcpy_dtoh_async(out, io.output_ptrs[h.name])
                heads.append(out)
        for got, ref in zip(heads, _reference(dyn_onnx, x)):
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
        assert trt.executions == [3] and cuda.driver_stack() == []
        copies = cuda.counts["driver_push"]
        io.execute(2)  # from outside any `with io.context`: execute makes the context current itself
        assert cuda.counts["driver_push"] > copies and cuda.driver_stack() == []
        with pytest.raises(ValueError, match="1..4"):
            io.execute(0)
    _assert_all_released(cuda, trt)


def test_static_engine_device_io_needs_the_full_batch(fakes, dyn_onnx, tmp_path):
    cuda, trt = fakes()
    with _trt_backend(
        fake_tensorrt.make_engine(str(tmp_path / "m.engine"), dyn_onnx, 2, False, dla_core=0)
    ) as be:
        io = be.device_io()
        assert io.fixed_batch and io.max_batch == 2
        with pytest.raises(ValueError, match="exactly 2"):
            io.execute(1)
        io.execute(2)
    assert trt.executions == [2]
    _assert_all_released(cuda, trt)


def test_dla_engine_from_a_dynamic_onnx_runs_its_static_batch(fakes, dyn_onnx, tmp_path):
    """A -1 batch dimension with a static profile (DLA) is a fixed batch: the Detector pads to it."""
    from yolo_nano.runtime import Detector

    cuda, trt = fakes()
    path = fake_tensorrt.make_engine(
        str(tmp_path / "dla.engine"), dyn_onnx, 2, False, dla_core=0, static_profile=True
    )
    with _trt_backend(path) as be:
        assert be.batch_size == 2 and be.max_batch == 2
        with pytest.raises(ValueError, match="exactly 2"):
            be.infer(_batch(1))
        got = be.infer(_batch(2))
        want = _reference(dyn_onnx, _batch(2))
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
        with Detector(be) as det:
            img = np.full((50, 70, 3), 90, np.uint8)
            assert len(det([img, img, img])) == 3  # chunks of 2, the last padded
    assert trt.executions == [2, 2, 2]
    _assert_all_released(cuda, trt)
