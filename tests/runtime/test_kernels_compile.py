"""Every CUDA kernel source compiles for the boards: sm_87 (Orin) with this machine's nvcc, sm_72 (AGX
Xavier) with NVRTC 11.8 + ptxas 11.8 from PyPI (CUDA 13 has no sm_72); and the runtime's compile-at-first-
use path (compiler choice, cubin cache, error messages)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from yolo_nano.runtime import kernel_build as kb


def _nvrtc():
    found = [c for c in kb.find_compilers() if c.kind == "nvrtc" and 72 in c.supported_archs()]
    if not found:
        pytest.skip("no NVRTC with sm_72 here: pip install 'nvidia-cuda-nvrtc-cu11==11.8.89' (the dev extra)")
    return found[0]


def _nvcc_87():
    found = [c for c in kb.find_compilers() if c.kind == "nvcc" and 87 in c.supported_archs()]
    if not found:
        pytest.skip("no nvcc that targets sm_87 on this machine (the CUDA toolkit)")
    return found[0]


def _kernels_in(source: str):
    return [k.name for k in kb.KERNELS.values() if k.source == source]


@pytest.mark.parametrize("source", kb.SOURCES)
def test_compiles_for_orin_sm87_with_nvcc(source):
    cubin = _nvcc_87().compile(kb.read_source(source), source, "sm_87")
    assert cubin.startswith(b"\x7fELF")
    for name in _kernels_in(source):
        assert name.encode() in cubin  # extern "C": the unmangled name cuModuleGetFunction looks up


@pytest.mark.parametrize("source", kb.SOURCES)
def test_compiles_for_xavier_sm72_with_nvrtc_and_ptxas(source):
    nvrtc = _nvrtc()
    ptxas = kb.ptxas_path()
    if ptxas is None:
        pytest.skip("no ptxas here: pip install 'nvidia-cuda-nvcc-cu11==11.8.89' (the dev extra)")
    ptx = nvrtc.compile(kb.read_source(source), source, "compute_72")
    text = ptx.decode()
    assert ".target sm_72" in text
    # CUDA 11.8 writes PTX ISA 7.8, which JetPack 5.1's 11.4 driver cannot JIT: why only cubins built on
    # the board itself are ever loaded.
    assert re.search(r"^\.version 7\.8$", text, re.M)
    for name in _kernels_in(source):
        assert f".entry {name}(" in text
    cubin = kb.ptx_to_cubin(ptx, "sm_72", ptxas)
    assert cubin.startswith(b"\x7fELF")
    # and NVRTC's own cubin path, the one the runtime uses on the board
    assert nvrtc.compile(kb.read_source(source), source, "sm_72").startswith(b"\x7fELF")


def test_no_fused_multiply_add_in_the_nms_iou():
    # the IoU test must round like numpy (one rounding per operation): --fmad=false keeps fma out
    ptx = _nvrtc().compile(kb.read_source("nms.cu"), "nms.cu", "compute_72").decode()
    assert "fma.rn.f32" not in ptx
    assert "div.rn.f32" in ptx  # IEEE division, not the approximate one


class _CountingCompiler:
    kind = "nvrtc"
    version = (11, 4)

    def __init__(self) -> None:
        self.calls = 0

    def supported_archs(self):
        return [72, 87]

    def compile(self, source, name, arch, options=()):
        self.calls += 1
        return b"\x7fELF" + f"{name}:{arch}".encode()


def test_cubins_are_cached_by_source_arch_and_compiler(tmp_path):
    comp = _CountingCompiler()
    first = kb.build_cubins("sm_72", compiler=comp, cache=tmp_path)
    assert set(first) == set(kb.SOURCES) and comp.calls == len(kb.SOURCES)
    assert kb.build_cubins("sm_72", compiler=comp, cache=tmp_path) == first
    assert comp.calls == len(kb.SOURCES)  # all from the cache
    names = sorted(p.name for p in tmp_path.iterdir())
    assert all(re.match(r"\w+-sm_72-nvrtc11\.4-[0-9a-f]{20}\.cubin$", n) for n in names), names
    kb.build_cubins("sm_87", compiler=comp, cache=tmp_path)  # another arch: compiled again
    assert comp.calls == 2 * len(kb.SOURCES)
    comp.version = (12, 2)  # another CUDA: compiled again
    kb.build_cubins("sm_72", compiler=comp, cache=tmp_path)
    assert comp.calls == 3 * len(kb.SOURCES)
    # a damaged cache entry (not a cubin) is rebuilt, not loaded
    victim = next(tmp_path.glob("nms-sm_72-nvrtc11.4-*.cubin"))
    victim.write_bytes(b"garbage")
    comp.version = (11, 4)
    assert kb.build_cubins("sm_72", compiler=comp, cache=tmp_path)["nms.cu"].startswith(b"\x7fELF")
    assert victim.read_bytes().startswith(b"\x7fELF")


def test_unwritable_cache_still_builds(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    comp = _CountingCompiler()
    out = kb.build_cubins("sm_72", compiler=comp, cache=blocker / "kernels")
    assert set(out) == set(kb.SOURCES) and comp.calls == len(kb.SOURCES)


def test_source_change_changes_the_key(tmp_path, monkeypatch):
    comp = _CountingCompiler()
    kb.build_cubins("sm_72", compiler=comp, cache=tmp_path)
    real = kb.read_source
    monkeypatch.setattr(
        kb, "read_source", lambda name: real(name) + ("\n// edited\n" if name == "decode.cu" else "")
    )
    kb.build_cubins("sm_72", compiler=comp, cache=tmp_path)
    assert comp.calls == len(kb.SOURCES) + 1


def test_no_compiler_names_the_install_step_and_the_fallback(monkeypatch):
    monkeypatch.setattr(kb, "find_compilers", lambda: [])
    with pytest.raises(kb.KernelBuildError) as e:
        kb.choose_compiler("sm_72")
    msg = str(e.value)
    assert "sm_72" in msg and "cuda-nvrtc" in msg and "postprocess='cpu'" in msg


def test_compiler_choice_respects_the_driver(monkeypatch):
    class C(_CountingCompiler):
        def __init__(self, kind, version, archs):
            super().__init__()
            self.kind, self.version, self._archs = kind, version, archs

        def supported_archs(self):
            return self._archs

    cuda13 = C("nvcc", (13, 0), [75, 87])
    cuda118 = C("nvrtc", (11, 8), [72, 87])
    cuda114 = C("nvrtc", (11, 4), [72, 87])
    monkeypatch.setattr(kb, "find_compilers", lambda: [cuda13, cuda118, cuda114])
    assert kb.choose_compiler("sm_72") is cuda118  # newest that has sm_72
    assert kb.choose_compiler("sm_87") is cuda13
    assert kb.choose_compiler("sm_87", driver_version=(11, 4)) is cuda114  # not newer than the driver
    assert kb.choose_compiler("sm_87", driver_version=(12, 2)) is cuda118
    with pytest.raises(kb.KernelBuildError, match="sm_53"):
        kb.choose_compiler("sm_53")


def test_compile_error_shows_the_compiler_log():
    nvrtc = _nvrtc()
    with pytest.raises(kb.KernelBuildError) as e:
        nvrtc.compile('extern "C" __global__ void k(int* p) { undefined_thing(p); }', "bad.cu", "sm_72")
    assert "bad.cu" in str(e.value) and "undefined_thing" in str(e.value)


def test_kernel_sources_ship_with_the_package():
    # the sources and the emulation header are package data next to this module
    folder = Path(kb.KERNEL_DIR)
    assert {p.name for p in folder.glob("*.cu")} == set(kb.SOURCES)
    assert (folder / "cuda_emu.h").is_file()
    assert {k.source for k in kb.KERNELS.values()} == set(kb.SOURCES)
