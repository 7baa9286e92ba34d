"""A ``tensorrt`` module generated from a recorded API surface (tests/engines/trt_api/trt-<version>.json,
written by scripts/record-trt-api.py from the real bindings), so a test cannot use what that release
lacks.

Every recorded class, enum (with its real values), method, property and module function exists, and
nothing else: a member missing in 11.x (``BuilderFlag.FP16``, ``IInt8EntropyCalibrator2``) raises
AttributeError exactly as the real module would. Calls are bound against the recorded docstring
signatures (parameter names, defaults, overloads) and arguments of a recorded class type are type
checked, as pybind11 does (``TypeError: incompatible function arguments``). Python subclasses of
binding classes (loggers, calibrators, progress monitors) must call the base ``__init__``, as with
pybind11. Setting a read-only property or an unknown attribute on a binding object fails.

Behaviour exists only where a test gives it: ``behaviour`` maps ``"Class.member"`` (or a module
function name) to a Python function; calling anything else raises ``NotImplementedError`` naming the
member. Registering behaviour for a member the surface lacks is an error, so behaviour cannot promise
what the real bindings do not have. :mod:`testsupport.fake_trt_build` provides the behaviour of a build.
Buffer-protocol objects (``IHostMemory``) get ``__bytes__`` from their behaviour: the real objects
support ``bytes(x)`` through the C buffer protocol, which no recorded member shows.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import re
import types
from typing import Any, Callable, Dict, List, Optional, Tuple

SURFACE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "engines", "trt_api")
#: Module-level DataType aliases of the real module (``trt.float32`` is ``DataType.FLOAT``).
_DTYPE_ALIASES = {"float32": "FLOAT", "float16": "HALF", "int8": "INT8", "int32": "INT32", "bool": "BOOL",
                  "uint8": "UINT8", "int64": "INT64", "bfloat16": "BF16", "fp8": "FP8", "int4": "INT4",
                  "fp4": "FP4", "e8m0": "E8M0"}  # fmt: skip
_INTERNAL = ("_fake_",)
_ENUM_OWN = ("name", "value", "__init__", "__int__", "__index__")


def recorded_versions() -> List[str]:
    """Versions with a recorded surface, oldest first."""
    found = [os.path.basename(p)[4:-5] for p in glob.glob(os.path.join(SURFACE_DIR, "trt-*.json"))]
    return sorted(found, key=lambda v: tuple(int(x) for x in re.findall(r"\d+", v)))


@functools.lru_cache(maxsize=None)
def load_surface(version: str) -> Dict[str, Any]:
    with open(os.path.join(SURFACE_DIR, f"trt-{version}.json"), encoding="utf-8") as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------------
# signatures


class Param:
    def __init__(self, name: str, type_: Optional[str], has_default: bool) -> None:
        self.name, self.type, self.has_default = name, type_, has_default


def _split_top(text: str) -> List[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(<{":
            depth += 1
        elif ch in "])>}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


@functools.lru_cache(maxsize=None)
def parse_signature(sig: str) -> Tuple[Tuple[Param, ...], Optional[str]]:
    """``"f(self: X, a: int = 0) -> R"`` -> (params without self, return type)."""
    m = re.match(r"^[\w.]+\((.*)\)(?:\s*->\s*(.+))?$", sig)
    if not m:
        raise ValueError(f"unparsable recorded signature {sig!r}")
    params = []
    for raw in _split_top(m.group(1)):
        head, _, default = raw.partition(" = ")
        name, _, type_ = head.partition(": ")
        params.append(Param(name.strip(), type_.strip() or None, bool(default)))
    if params and params[0].name in ("self", "this", "arg0") and not params[0].has_default:
        params = params[1:]
    return tuple(params), (m.group(2).strip() if m.group(2) else None)


# ------------------------------------------------------------------------------------------------
# the module


class FakeObject:
    """Root of every generated binding class (pybind11_object)."""

    _fake_qualname = "pybind11_object"
    _fake_members: Dict[str, Dict[str, Any]] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        cls = type(self)
        if cls.__dict__.get("_fake_generated") and not name.startswith(_INTERNAL):
            member = _find_member(cls, name)
            if member is None:
                raise AttributeError(f"'{cls._fake_qualname}' object has no attribute '{name}'")
        object.__setattr__(self, name, value)


def _find_member(cls: type, name: str) -> Optional[Dict[str, Any]]:
    for klass in cls.__mro__:
        members = klass.__dict__.get("_fake_members")
        if members and name in members:
            return members[name]
    return None


class FakeTensorRT:
    """Builds the module for ``version``; ``behaviour`` maps ``"Class.member"`` / ``"function"`` to code."""

    def __init__(self, version: str, behaviour: Optional[Dict[str, Callable[..., Any]]] = None) -> None:
        self.version = version
        self.surface = load_surface(version)
        self.behaviour = dict(behaviour or {})
        self.classes: Dict[str, type] = {}
        for key in self.behaviour:
            if not self.has(key):
                raise KeyError(f"behaviour for {key!r}, which TensorRT {version} does not have")
        self.module = self._make_module()

    # ---- queries
    def has(self, key: str) -> bool:
        """Whether ``"Class.member"``, ``"Class"`` or a module-level name exists in this release."""
        s = self.surface
        if key in s["functions"] or key in s["values"] or key in s["classes"]:
            return True
        cls, _, member = key.rpartition(".")
        return cls in s["classes"] and member in s["classes"][cls]["members"] or key.endswith(".__bytes__")

    def new(self, class_name: str, **state: Any) -> Any:
        """An instance of a binding class made "on the C++ side" (no constructor), with fake state."""
        obj = object.__new__(self.classes[class_name])
        object.__setattr__(obj, "_fake_initialized", True)
        for k, v in state.items():
            object.__setattr__(obj, "_fake_" + k, v)
        return obj

    def enum(self, qualname: str, name: str) -> Any:
        return getattr(self.classes[qualname], name)

    # ---- type checks
    def _resolve_class(self, type_: Optional[str]) -> Optional[type]:
        if not type_:
            return None
        t = re.sub(r"^(nvinfer1|nvonnxparser)::", "", type_.strip())
        for cand in (t, t.replace("::", "."), t[1:] if t.startswith("I") else t):
            if cand in self.classes:
                return self.classes[cand]
        return None

    def accepts(self, type_: Optional[str], value: Any) -> bool:
        if type_ is None:
            return True
        t = type_.replace("typing.", "")
        if t in ("int", "SupportsInt"):
            return (isinstance(value, int) and not isinstance(value, float)) or hasattr(value, "__index__")
        if t == "str":
            return isinstance(value, str)
        if t == "bool":
            return isinstance(value, bool)
        if t in ("float", "SupportsFloat"):
            return isinstance(value, (int, float))
        cls = self._resolve_class(t)
        if cls is None or value is None:
            return True  # containers, buffers, capsules: not checked
        if cls.__name__ == "Dims" and isinstance(value, (list, tuple)):
            return True  # pybind11's implicit conversion
        if not isinstance(value, cls):
            return False
        if not getattr(value, "_fake_initialized", False):
            raise TypeError(f"{type(value).__name__}.__init__() must be called when overriding __init__")
        return True

    def bind(
        self, qual: str, sigs: List[str], args: Tuple[Any, ...], kwargs: Dict[str, Any]
    ) -> Dict[str, Any]:
        """Bind a call to the first recorded overload it fits (raises TypeError like pybind11)."""
        for sig in sigs:
            params, _ = parse_signature(sig)
            bound = _bind(params, args, kwargs)
            if bound is not None and all(
                self.accepts(p.type, bound[p.name]) for p in params if p.name in bound
            ):
                return bound
        raise TypeError(
            f"{qual}(): incompatible function arguments. The following argument types are supported: "
            + "; ".join(sigs)
            + f". Invoked with: {args!r}, {kwargs!r}"
        )

    # ---- generation
    def _make_module(self) -> types.ModuleType:
        s = self.surface
        aliases = {}  # "Logger.Severity" -> "ILogger.Severity": one class object under two names
        for qual, entry in s["classes"].items():
            for name, member in entry["members"].items():
                target = member.get("class")
                if member["kind"] == "class" and target != f"{qual}.{name}" and target in s["classes"]:
                    aliases[f"{qual}.{name}"] = target
        for qual in sorted(s["classes"], key=lambda q: q.count(".")):
            if qual not in aliases:
                self._make_class(qual)
        for alias, target in aliases.items():
            self.classes[alias] = self.classes[target]
        enums_first = sorted(self.classes.items(), key=lambda qc: not s["classes"][qc[0]]["enum"])
        for qual, cls in enums_first:
            if qual not in aliases:
                self._fill_class(qual, cls)
        mod = types.ModuleType("tensorrt")
        mod.__version__ = self.version  # type: ignore[attr-defined]
        for qual, cls in self.classes.items():
            if "." not in qual:
                setattr(mod, qual, cls)
        for name, entry in s["functions"].items():
            setattr(mod, name, self._function(name, entry["signatures"], name))
        dtype = self.classes.get("DataType")
        for name, type_ in s["values"].items():
            if type_ == "DataType" and dtype is not None and _DTYPE_ALIASES.get(name) in dtype._fake_values:
                setattr(mod, name, getattr(dtype, _DTYPE_ALIASES[name]))
        mod._fake = self  # type: ignore[attr-defined]
        return mod

    def _make_class(self, qual: str) -> None:
        entry = self.surface["classes"][qual]
        bases = tuple(self.classes[b] for b in entry["bases"] if b in self.classes) or (FakeObject,)
        ns: Dict[str, Any] = {"_fake_qualname": qual, "_fake_members": entry["members"], "_fake_generated": True,
                              "__module__": "tensorrt", "__qualname__": qual}  # fmt: skip
        cls = type(qual.rpartition(".")[2], bases, ns)
        self.classes[qual] = cls

    def _fill_class(self, qual: str, cls: type) -> None:
        entry = self.surface["classes"][qual]
        if entry["enum"]:
            _make_enum(cls, entry["values"])
        for name, member in entry["members"].items():
            kind = member["kind"]
            key = f"{qual}.{name}"
            if kind == "enum_value" or (
                entry["enum"] and (name in entry.get("values", {}) or name in _ENUM_OWN)
            ):
                continue
            if kind == "method" or kind == "static":
                if name in ("__init__",):
                    setattr(cls, name, self._init(qual, member.get("signatures") or []))
                elif name in ("__int__", "__index__") and entry["enum"]:
                    continue
                else:
                    fn = self._function(key, member.get("signatures") or [], name, method=kind == "method")
                    setattr(cls, name, fn if kind == "method" else staticmethod(fn))
            elif kind == "property":
                setattr(cls, name, self._property(key, name, member))
            elif kind == "class":
                target = self.classes.get(member["class"]) or self.classes.get(f"{qual}.{name}")
                if target is not None:
                    setattr(cls, name, target)
            elif kind == "value":
                value = self._enum_value(member.get("type"), name)
                if value is not None:
                    setattr(cls, name, value)
        to_bytes = self.behaviour.get(f"{qual}.__bytes__")
        if to_bytes is not None:
            cls.__bytes__ = to_bytes  # type: ignore[attr-defined]

    def _enum_value(self, type_: Optional[str], name: str) -> Any:
        for qual, cls in self.classes.items():
            if qual.rpartition(".")[2] == type_ and name in getattr(cls, "_fake_values", {}):
                return getattr(cls, name)
        return None

    def _init(self, qual: str, sigs: List[str]) -> Callable[..., None]:
        fake = self

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            if not sigs:
                raise TypeError(f"tensorrt.{qual}: No constructor defined!")
            bound = fake.bind(f"{qual}.__init__", sigs, args, kwargs)
            object.__setattr__(self, "_fake_initialized", True)
            impl = fake.behaviour.get(f"{qual}.__init__")
            if impl is not None:
                impl(self, **bound)

        return __init__

    def _function(self, key: str, sigs: List[str], name: str, method: bool = False) -> Callable[..., Any]:
        fake = self

        def call(*args: Any, **kwargs: Any) -> Any:
            self_args = args[1:] if method else args
            bound = fake.bind(key, sigs, self_args, kwargs) if sigs else dict(kwargs)
            impl = fake.behaviour.get(key)
            if impl is None:
                raise NotImplementedError(
                    f"fake TensorRT {fake.version}: {key} has no behaviour in this test"
                )
            return impl(args[0], **bound) if method else impl(**bound)

        call.__name__ = name
        return call

    def _property(self, key: str, name: str, member: Dict[str, Any]) -> property:
        fake = self

        def get(obj: Any) -> Any:
            impl = fake.behaviour.get(key)
            if impl is not None:
                return impl(obj)
            return obj.__dict__.get("_fake_prop_" + name)

        def set_(obj: Any, value: Any) -> None:
            if not fake.accepts(member.get("type"), value):
                raise TypeError(f"{key}: incompatible value {value!r} (expects {member.get('type')})")
            object.__setattr__(obj, "_fake_prop_" + name, value)

        return property(get, set_ if member.get("settable") else None)


def _make_enum(cls: type, values: Dict[str, int]) -> None:
    def __init__(self: Any, value: int) -> None:
        object.__setattr__(self, "_fake_value", int(value))
        object.__setattr__(self, "_fake_initialized", True)

    cls.__init__ = __init__  # type: ignore[misc]
    cls.__int__ = lambda self: self._fake_value  # type: ignore[attr-defined]
    cls.__index__ = lambda self: self._fake_value  # type: ignore[attr-defined]
    cls.__eq__ = lambda self, o: type(o) is type(self) and o._fake_value == self._fake_value  # type: ignore
    cls.__hash__ = lambda self: hash((type(self).__name__, self._fake_value))  # type: ignore
    cls.__repr__ = lambda self: f"<{type(self).__name__}.{self.name}: {self._fake_value}>"  # type: ignore
    cls.name = property(lambda self: next((k for k, v in values.items() if v == self._fake_value), "???"))
    cls.value = property(lambda self: self._fake_value)
    cls._fake_values = dict(values)
    members = {}
    for k, v in values.items():
        inst = object.__new__(cls)
        object.__setattr__(inst, "_fake_value", int(v))
        object.__setattr__(inst, "_fake_initialized", True)
        type.__setattr__(cls, k, inst)
        members[k] = inst
    cls.__members__ = members


def _bind(
    params: Tuple[Param, ...], args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> Optional[Dict[str, Any]]:
    if any(p.name.startswith("*") for p in params):
        return dict({f"arg{i}": a for i, a in enumerate(args)}, **kwargs)
    if len(args) > len(params):
        return None
    bound: Dict[str, Any] = {}
    for p, a in zip(params, args):
        bound[p.name] = a
    for k, v in kwargs.items():
        if k in bound or k not in {p.name for p in params}:
            return None
        bound[k] = v
    if any(p.name not in bound and not p.has_default for p in params):
        return None
    return bound


def install(monkeypatch: Any, version: str, behaviour: Optional[Dict[str, Callable[..., Any]]] = None) -> Any:
    """Put the generated module into ``sys.modules["tensorrt"]``; returns the :class:`FakeTensorRT`."""
    import sys

    fake = FakeTensorRT(version, behaviour)
    monkeypatch.setitem(sys.modules, "tensorrt", fake.module)
    return fake
