"""Every TensorRT attribute our code uses exists in every release whose code path uses it.

The reference is the API surface recorded from the real bindings (tests/engines/trt_api/, made by
scripts/record-trt-api.py: 8.5.3.1, 10.3.0, 10.16.1.11, 11.4.0.106). The walk is static (AST) over
engines/, calibration/ and runtime/, and pragmatic:

* ``trt`` (a name, or ``self._trt``) is the tensorrt module: ``trt.X``, ``trt.X.Y``, ``trt.X.Y.Z`` must exist;
* variables get a TensorRT type from ``trt.X(...)``, from the recorded return type of a method or the type of
  a property of a typed value, or (in modules that use ``trt``) by the project's naming convention for
  parameters and ``self._x`` attributes (``builder``, ``config``, ``network``, ``parser``, ``profile``,
  ``engine``, ``context``, ``runtime``, ``inspector``); every attribute read or called on a typed value must
  exist, and calls must bind to a recorded signature (argument count and keyword names);
* classes deriving from a TensorRT class may only override members the base class has;
* code runs on all releases unless its function is marked ``@tensorrt_path(8, 10)`` (any enclosing one
  counts) or its module sets ``TENSORRT_MAJORS``.
"""

from __future__ import annotations

import ast
import os
from typing import Dict, List, Optional, Set, Tuple

import pytest

from testsupport import fake_tensorrt, trt_surface

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("engines", "calibration", "runtime")
ALL_MAJORS = (8, 10, 11)
NAME_HINTS = {"builder": "Builder", "config": "IBuilderConfig", "network": "INetworkDefinition",
              "parser": "OnnxParser", "profile": "IOptimizationProfile", "engine": "ICudaEngine",
              "context": "IExecutionContext", "runtime": "Runtime", "inspector": "EngineInspector"}  # fmt: skip
VERSIONS = trt_surface.recorded_versions()


def _major(version: str) -> int:
    return int(version.split(".")[0])


def _surfaces(majors) -> List[Tuple[str, dict]]:
    return [(v, trt_surface.load_surface(v)) for v in VERSIONS if _major(v) in majors]


def _class_member(surface: dict, cls: str, name: str) -> Optional[dict]:
    seen: Set[str] = set()
    todo = [cls]
    while todo:
        c = todo.pop()
        entry = surface["classes"].get(c)
        if entry is None or c in seen:
            continue
        seen.add(c)
        if name in entry["members"]:
            return entry["members"][name]
        todo += entry["bases"]
    return None


def _normalize_type(surface: dict, text: Optional[str]) -> Optional[str]:
    if not text:
        return None
    t = text.replace("nvinfer1::", "").replace("nvonnxparser::", "").strip()
    for cand in (t, t[1:] if t.startswith("I") else t):
        if cand in surface["classes"]:
            return cand
    return None


class Use:
    def __init__(self, where: str, majors: Tuple[int, ...], what: str, check) -> None:
        self.where, self.majors, self.what, self.check = where, majors, what, check


class Walker(ast.NodeVisitor):
    """Collects every TensorRT use with the majors its code path runs on."""

    def __init__(
        self, path: str, module_majors: Tuple[int, ...], reference: dict, hints: bool = True
    ) -> None:
        self.path = path
        self.hints = NAME_HINTS if hints else {}  # naming conventions hold only where TensorRT is used
        self.majors = [module_majors]
        self.types: List[Dict[str, str]] = [{}]
        self.ref = reference  # the newest surface: only to infer types (checks use every surface)
        self.uses: List[Use] = []

    # ---- scopes
    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:  # noqa: N802 - ast API
        majors = self.majors[-1]
        for dec in node.decorator_list:
            if (
                isinstance(dec, ast.Call)
                and getattr(dec.func, "id", getattr(dec.func, "attr", "")) == "tensorrt_path"
            ):
                majors = tuple(int(a.value) for a in dec.args)
        scope = {a.arg: self.hints[a.arg] for a in node.args.args if a.arg in self.hints}
        self.majors.append(majors)
        self.types.append(dict(self.types[-1], **scope))
        self.generic_visit(node)
        self.types.pop()
        self.majors.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815

    def visit_ClassDef(self, node: ast.ClassDef) -> None:  # noqa: N802
        for base in node.bases:
            chain = self._trt_chain(base)
            if chain and len(chain) == 1:
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and (
                        not item.name.startswith("_") or item.name == "__init__"
                    ):
                        self._use(item, f"{chain[0]}.{item.name} (override)", ("member", chain[0], item.name))
        self.generic_visit(node)

    # ---- types
    def _trt_chain(self, node: ast.AST) -> Optional[List[str]]:
        names: List[str] = []
        while isinstance(node, ast.Attribute):
            names.append(node.attr)
            node = node.value
            if isinstance(node, ast.Attribute) and node.attr == "_trt" and isinstance(node.value, ast.Name):
                return list(reversed(names))
        if isinstance(node, ast.Name) and node.id == "trt":
            return list(reversed(names))
        return None

    def _type_of(self, node: ast.AST) -> Optional[str]:
        if isinstance(node, ast.Name):
            return self.types[-1].get(node.id)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            return self.types[-1].get("self." + node.attr) or self.hints.get(node.attr.lstrip("_"))
        if isinstance(node, ast.Call):
            chain = self._trt_chain(node.func)
            if chain and len(chain) == 1 and chain[0] in self.ref["classes"]:
                return chain[0]
            if isinstance(node.func, ast.Attribute):
                owner = self._type_of(node.func.value)
                member = owner and _class_member(self.ref, owner, node.func.attr)
                if member and member.get("signatures"):
                    return _normalize_type(self.ref, trt_surface.parse_signature(member["signatures"][0])[1])
        if isinstance(node, ast.Attribute):
            owner = self._type_of(node.value)
            member = owner and _class_member(self.ref, owner, node.attr)
            if member and member["kind"] == "property":
                return _normalize_type(self.ref, member.get("type"))
        return None

    def visit_Assign(self, node: ast.Assign) -> None:  # noqa: N802
        self.generic_visit(node)
        t = self._type_of(node.value)
        for target in node.targets:
            if t and isinstance(target, ast.Name):
                self.types[-1][target.id] = t
            elif t and isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
                self.types[-1][f"{target.value.id}.{target.attr}"] = t

    # ---- uses
    def _use(self, node: ast.AST, what: str, check) -> None:
        self.uses.append(Use(f"{self.path}:{getattr(node, 'lineno', 0)}", self.majors[-1], what, check))

    def visit_Attribute(self, node: ast.Attribute) -> None:  # noqa: N802
        chain = self._trt_chain(node)
        if chain is not None:
            self._use(node, "trt." + ".".join(chain), ("chain", chain))
            return  # the chain is checked whole; its inner attributes are part of it
        owner = self._type_of(node.value)
        if owner:
            self._use(node, f"{owner}.{node.attr}", ("member", owner, node.attr))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:  # noqa: N802
        if not any(isinstance(a, ast.Starred) for a in node.args) and not any(
            k.arg is None for k in node.keywords
        ):
            shape = (len(node.args), tuple(k.arg for k in node.keywords))
            chain = self._trt_chain(node.func)
            if chain and len(chain) == 1:
                self._use(node, f"trt.{chain[0]}(...)", ("call", chain[0], None, shape))
            elif isinstance(node.func, ast.Attribute) and chain is None:
                owner = self._type_of(node.func.value)
                if owner:
                    self._use(node, f"{owner}.{node.func.attr}(...)", ("call", owner, node.func.attr, shape))
        self.generic_visit(node)


def _check(use: Use, surface: dict) -> Optional[str]:
    kind = use.check[0]
    if kind == "chain":
        head, rest = use.check[1][0], use.check[1][1:]
        if head in ("__version__",):
            return None
        if (
            head not in surface["classes"]
            and head not in surface["functions"]
            and head not in surface["values"]
        ):
            return f"tensorrt has no {head}"
        qual = head
        for name in rest:
            if f"{qual}.{name}" in surface["classes"]:
                qual = f"{qual}.{name}"
                continue
            if qual not in surface["classes"] or _class_member(surface, qual, name) is None:
                return f"{qual} has no {name}"
            qual = ""  # a value: nothing further is checked
        return None
    if kind == "member":
        _, owner, name = use.check
        if owner in surface["classes"] and _class_member(surface, owner, name) is None:
            return f"{owner} has no {name}"
        return None
    _, owner, name, (npos, keywords) = use.check
    if name is None:
        entry = surface["classes"].get(owner, {}).get("members", {}).get("__init__")
        sigs = entry.get("signatures") if entry else surface["functions"].get(owner, {}).get("signatures")
    else:
        member = _class_member(surface, owner, name) if owner in surface["classes"] else None
        sigs = member.get("signatures") if member else None
    if not sigs:
        return None
    for sig in sigs:
        params, _ = trt_surface.parse_signature(sig)
        if trt_surface._bind(params, (None,) * npos, {k: None for k in keywords}) is not None:
            return None
    return f"no recorded signature takes {npos} positional argument(s) and keywords {list(keywords)}: {sigs}"


def _module_majors(tree: ast.Module) -> Tuple[int, ...]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", "") == "TENSORRT_MAJORS" for t in node.targets
        ):
            return tuple(ast.literal_eval(node.value))
    return ALL_MAJORS


def collect_uses(source: str, path: str = "<src>") -> List[Use]:
    tree = ast.parse(source)
    uses_trt = any(isinstance(n, ast.Name) and n.id == "trt" for n in ast.walk(tree))
    walker = Walker(path, _module_majors(tree), trt_surface.load_surface(VERSIONS[-1]), hints=uses_trt)
    walker.visit(tree)
    return walker.uses


def problems(uses: List[Use]) -> List[str]:
    found = []
    for use in uses:
        for version, surface in _surfaces(use.majors):
            why = _check(use, surface)
            if why:
                found.append(
                    f"{use.where}: {use.what}: {why} in TensorRT {version} (path runs on {use.majors})"
                )
    return found


def _project_uses() -> List[Use]:
    uses: List[Use] = []
    for pkg in PACKAGES:
        folder = os.path.join(ROOT, pkg)
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    uses += collect_uses(f.read(), f"{pkg}/{name}")
    return uses


def test_every_tensorrt_use_exists_where_it_runs():
    uses = _project_uses()
    assert problems(uses) == []
    seen = {u.what for u in uses}
    # the walk sees the calls that matter (so an empty walk cannot pass)
    for expected in ("IBuilderConfig.set_flag(...)", "Builder.build_serialized_network(...)", "trt.BuilderFlag.FP16",
                     "trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED", "IBuilderConfig.set_calibration_profile(...)",
                     "IProgressMonitor.step_complete (override)", "ILogger.log (override)",
                     "IExecutionContext.execute_async_v3(...)", "OnnxParser.parse_from_file(...)",
                     "trt.IInt8EntropyCalibrator2"):  # fmt: skip
        assert expected in seen, expected
    fp16 = [u for u in uses if u.what == "trt.BuilderFlag.FP16"]
    assert fp16 and all(u.majors == (8, 10) for u in fp16)


def test_the_checker_catches_a_missing_member_and_respects_marks():
    src = """
import tensorrt as trt
def everywhere(config):
    config.set_flag(trt.BuilderFlag.FP16)
@tensorrt_path(8, 10)
def weak_only(config):
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_flag(trt.BuilderFlag.FP16, True)
def typo(builder):
    network = builder.create_network(0)
    network.get_inputs(0)
    trt.Logger.SEVERE
"""
    found = problems(collect_uses(src))
    assert any(
        "src>:4: trt.BuilderFlag.FP16: BuilderFlag has no FP16 in TensorRT 11.4.0.106" in p for p in found
    )
    assert not any(":7:" in p for p in found)  # marked 8/10: fine there
    assert any(":8:" in p and "no recorded signature takes 2" in p for p in found)
    assert any(":11:" in p and "INetworkDefinition has no get_inputs" in p for p in found)
    assert any(":12:" in p and "Logger has no SEVERE" in p for p in found)


def test_every_version_has_a_surface():
    assert {_major(v) for v in VERSIONS} == set(ALL_MAJORS)
    for v in VERSIONS:
        s = trt_surface.load_surface(v)
        assert s["tensorrt_version"] == v and s["format"] == 1 and len(s["classes"]) > 100


@pytest.mark.parametrize("version", [v for v in VERSIONS if _major(v) in (8, 10)])
def test_the_runtime_fake_promises_only_what_the_bindings_have(version):
    """testsupport/fake_tensorrt.py (the runtime's stand-in) claims TensorRT 8.5 and 10.x members."""
    surface = trt_surface.load_surface(version)
    fake_mod = fake_tensorrt._make_module(version, fake_tensorrt.TrtState())
    for name in fake_tensorrt.TRT_MEMBERS:
        assert name == "__version__" or name in surface["classes"] or name in surface["functions"], name
        obj = getattr(fake_mod, name)
        if not isinstance(obj, type) or name not in surface["classes"]:
            continue
        entry = surface["classes"][name]
        for attr, value in vars(obj).items():
            if attr.startswith("_") and attr != "__init__":
                continue
            if entry["enum"]:
                assert attr in entry["values"] and entry["values"][attr] == int(value), (name, attr)
                continue
            assert _class_member(surface, name, attr) is not None, (
                f"{name}.{attr} is not in TensorRT {version}"
            )
            member = _class_member(surface, name, attr)
            if callable(value) and member.get("signatures"):
                import inspect

                params = [p for p in inspect.signature(value).parameters][1:]
                recorded = [[p.name for p in trt_surface.parse_signature(s)[0]] for s in member["signatures"]]
                assert any(r[: len(params)] == params for r in recorded), (name, attr, params, recorded)
