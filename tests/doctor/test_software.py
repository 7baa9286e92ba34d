"""The TensorRT line against the recorded API of every supported release (testsupport.trt_surface: only
members that release has), an unsupported release, and the package version checks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from testsupport import trt_surface
from testsupport.board import jetson_root
from yolo_nano.doctor.checks.software import _package, tensorrt, version_tuple
from yolo_nano.doctor.result import Context, Options

CREATORS = ("EfficientNMS_TRT", "BatchedNMS_TRT", "ROIAlign_TRT")


def install_tensorrt(monkeypatch, version):
    """The recorded ``version`` as ``tensorrt``: a plugin registry with three creators, under the
    member that release lists them by (``plugin_creator_list`` in 8.x, ``all_creators`` from 10)."""
    probe = trt_surface.FakeTensorRT(version)
    member = next(
        m for m in ("IPluginRegistry.all_creators", "IPluginRegistry.plugin_creator_list") if probe.has(m)
    )
    holder = {}
    behaviour = {
        "init_libnvinfer_plugins": lambda logger, namespace: True,
        "get_plugin_registry": lambda: holder["fake"].new("IPluginRegistry"),
        member: lambda self: [SimpleNamespace(name=n) for n in CREATORS],
    }
    holder["fake"] = trt_surface.install(monkeypatch, version, behaviour)
    return holder["fake"].module


@pytest.mark.parametrize("version", trt_surface.recorded_versions())
def test_tensorrt_line_lists_the_plugins_of_each_release(tmp_path, monkeypatch, version):
    install_tensorrt(monkeypatch, version)
    result = tensorrt(Context(Options(sysfs_root=jetson_root(str(tmp_path / "root")))))
    assert (result.status, result.detail) == ("ok", f"{version}, 3 plugins (EfficientNMS_TRT)")
    assert result.data == {"version": version, "plugins": sorted(CREATORS)}


def test_an_unsupported_tensorrt_fails_on_a_jetson_with_the_jetpack_step(tmp_path, monkeypatch):
    trt = install_tensorrt(monkeypatch, "8.5.3.1")
    monkeypatch.setattr(trt, "__version__", "8.2.1.8", raising=False)  # JetPack 4.6's TensorRT
    result = tensorrt(Context(Options(sysfs_root=jetson_root(str(tmp_path / "root")))))
    assert result.status == "failed" and result.detail.startswith("TensorRT 8.2.1.8 is older than 8.5")
    assert "sudo apt install python3-libnvinfer" in result.fix


def test_package_versions_below_the_minimum_fail():
    assert version_tuple("4.5.4-dev") == (4, 5, 4) and version_tuple("2.0.0rc1") == (2, 0, 0)
    numpy_line = _package("numpy", "numpy", (99, 0), "pip install numpy")
    assert numpy_line.status == "failed" and numpy_line.detail.endswith("is older than 99.0")
    assert _package("absent", "no_such_module_here", (1,), "pip install it").status == "missing"
