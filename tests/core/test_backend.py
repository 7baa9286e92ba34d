"""The Backend base class contract: abstract infer, idempotent close, context manager, closed-state errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from testsupport.tiny_onnx import tiny_metadata
from yolo_nano.core.backend import Backend, BackendClosedError, DeviceIO


class _Doubling(Backend):
    """A host-only backend: the heads are the input doubled (enough to see calls go through)."""

    name = "doubling"

    def __init__(self) -> None:
        self.metadata = tiny_metadata()
        self.closes = 0

    def infer(self, batch: np.ndarray):
        self._check_open()
        return [batch * 2]

    def close(self) -> None:
        if not self.closed:
            self.closes += 1
        super().close()


def test_infer_is_abstract():
    class NoInfer(Backend):
        pass

    with pytest.raises(TypeError, match="abstract"):
        NoInfer()  # type: ignore[abstract]


def test_defaults_host_only_and_dynamic():
    be = _Doubling()
    assert be.device_io() is None and be.batch_size is None and be.max_batch is None
    assert not be.closed


def test_close_is_idempotent_and_closed_backends_refuse_work():
    be = _Doubling()
    x = np.ones((1, 3, 64, 64), np.float32)
    np.testing.assert_array_equal(be.infer(x)[0], x * 2)
    be.close()
    be.close()
    assert be.closed and be.closes == 1
    with pytest.raises(BackendClosedError, match="closed"):
        be.infer(x)


def test_context_manager_closes_also_on_error():
    with _Doubling() as be:
        assert not be.closed
    assert be.closed
    with pytest.raises(KeyError), _Doubling() as be2:
        raise KeyError("boom")
    assert be2.closed


def test_close_from_another_thread():
    be = _Doubling()
    t = threading.Thread(target=be.close)
    t.start()
    t.join()
    assert be.closed and be.closes == 1


def test_device_io_fields_and_defaults():
    calls = []
    io = DeviceIO(
        stream=7, input_ptr=0x1000, output_ptrs={"a": 0x2000}, output_shapes={"a": (2, 14, 2, 2)},
        output_dtypes={"a": np.float32}, max_batch=2, fixed_batch=True, execute=calls.append,
    )  # fmt: skip
    io.execute(2)
    assert calls == [2]
    assert io.input_host is None and io.context is None and io.lock is None
    assert "context" not in repr(io) and "input_ptr=4096" in repr(io)
