#!/usr/bin/env python3
"""Record the API surface of real TensorRT Python bindings into tests/engines/trt_api/trt-<version>.json.

The recorded surfaces are what tests/engines/test_trt_api.py checks our TensorRT code against, and what
the TensorRT stand-in of the tests (tests/testsupport/trt_surface.py) is generated from, so a test can
never rely on a class, member, enum value or call signature the real bindings lack. Run by hand when a
TensorRT release is added (never in `make test`); the JSON files are committed.

Two sources:

* a ``tensorrt-cu12-bindings==<version>`` wheel (10.x, 11.x; about 1.2 MB, `pip download --no-deps`):
  unpacked into a temporary folder and imported with stand-in ``libnvinfer.so.N``,
  ``libnvinfer_plugin.so.N`` and ``libnvonnxparser.so.N`` that define the nine C symbols the bindings
  resolve (compiled here with gcc; every one returns null: nothing is ever created, only inspected)::

      pip download --no-deps tensorrt-cu12-bindings==10.3.0 -d /tmp/w
      scripts/record-trt-api.py --bindings-wheel /tmp/w/tensorrt_cu12_bindings-10.3.0-*.whl

* an interpreter where the full TensorRT imports (8.5.3.1: the cp38 ``tensorrt`` wheel plus the CUDA 11
  library wheels, about 2.7 GB; see tests/engines/trt_api/README.md)::

      scripts/record-trt-api.py --python /tmp/venv85/bin/python

What is recorded per class: its bases, whether it is an enum (and its values), and per member its kind
(method, static, property with settable flag and type, value, class) and the signatures the pybind11
docstrings state (module prefixes removed, so 8.5's ``tensorrt.tensorrt.X`` and 10's
``tensorrt_bindings.tensorrt.X`` both read ``X``).
"""

from __future__ import annotations

import argparse
import glob
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

FORMAT = 1
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "engines", "trt_api")

#: The C symbols the 10.x/11.x bindings resolve from the three TensorRT libraries.
STUB_C = """
void *createInferBuilder_INTERNAL(void *logger, int version) { return 0; }
void *createInferRuntime_INTERNAL(void *logger, int version) { return 0; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return 0; }
void *getPluginRegistry(void) { return 0; }
void *getBuilderPluginRegistry(int kind) { return 0; }
int initLibNvInferPlugins(void *logger, const char *ns) { return 0; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return 0; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return 0; }
int getNvOnnxParserVersion(void) { return 0; }
"""
STUB_LIBRARIES = ("nvinfer", "nvinfer_plugin", "nvonnxparser")

#: Dunder members worth recording (the rest come from ``object`` / pybind11's base for every class).
KEPT_DUNDERS = {"__init__", "__len__", "__getitem__", "__setitem__", "__iter__", "__enter__", "__exit__",
                "__int__", "__index__", "__bytes__", "__buffer__", "__call__"}  # fmt: skip
_PREFIX_RE = re.compile(r"\b(?:tensorrt_bindings|tensorrt)\.tensorrt\.|\btensorrt_bindings\.|\btensorrt\.")


# ------------------------------------------------------------------------------------------------
# the dump (runs in the child interpreter that imports the bindings; Python 3.8 compatible)


def _clean(text):
    return _PREFIX_RE.sub("", text)


def _doc_signatures(name, doc):
    """Signature lines ``name(...) -> T`` from a pybind11 docstring (overloads numbered ``1. name(...)``)."""
    if not doc:
        return []
    found = []
    pattern = re.compile(re.escape(name) + r"\((.*)\)(?:\s*->\s*(.+))?$")
    for line in doc.splitlines():
        line = re.sub(r"^\d+\.\s+", "", line.strip())
        m = pattern.match(line)
        if m and m.group(1) != "*args, **kwargs":
            found.append(_clean(line))
    return found


def _py_signature(name, fn):
    try:
        return [name + str(inspect.signature(fn))]
    except (TypeError, ValueError):
        return []


def _property_type(prop):
    doc = getattr(prop.fget, "__doc__", None) or ""
    m = re.match(r"^\s*\(.*\)\s*->\s*(.+)$", doc.splitlines()[0] if doc.strip() else "")
    return _clean(m.group(1).strip()) if m else None


def _member(cls, name):
    raw = None
    for klass in cls.__mro__:
        if name in klass.__dict__:
            raw = klass.__dict__[name]
            break
    if raw is None:
        return {"kind": "value", "type": type(getattr(cls, name, None)).__name__}
    if isinstance(raw, property):
        entry = {"kind": "property", "settable": raw.fset is not None}
        ptype = _property_type(raw)
        if ptype:
            entry["type"] = ptype
        return entry
    if isinstance(raw, staticmethod):
        fn = raw.__func__
        return {"kind": "static", "signatures": _doc_signatures(name, fn.__doc__) or _py_signature(name, fn)}
    if isinstance(raw, classmethod):
        return {"kind": "static", "signatures": _py_signature(name, raw.__func__)}
    if inspect.isclass(raw):
        return {"kind": "class", "class": _clean(raw.__qualname__)}
    if isinstance(raw, cls):
        return {"kind": "enum_value", "value": int(raw)}
    if callable(raw):
        sigs = _doc_signatures(name, getattr(raw, "__doc__", None))
        if not sigs and inspect.isfunction(raw):
            sigs = _py_signature(name, raw)
        return {"kind": "method", "signatures": sigs}
    return {"kind": "value", "type": _clean(type(raw).__name__)}


def _is_enum(cls):
    return isinstance(getattr(cls, "__members__", None), dict) and hasattr(cls, "__int__")


def _class_entry(cls, baseline):
    entry = {
        "bases": [_clean(b.__qualname__) for b in cls.__bases__],
        "enum": _is_enum(cls),
        "members": {},
    }
    if entry["enum"]:
        entry["values"] = {k: int(v) for k, v in cls.__members__.items()}
    for name in sorted(dir(cls)):
        if name.startswith("_") and name not in KEPT_DUNDERS:
            continue
        if name in baseline and name not in cls.__dict__:
            continue
        entry["members"][name] = _member(cls, name)
    return entry


def dump(module_name):
    """The surface of ``module_name`` as a JSON-able dict."""
    import importlib
    import platform

    mod = importlib.import_module(module_name)
    baseline = set(dir(object))
    classes = {}
    functions = {}
    values = {}

    def visit_class(qualname, cls):
        if qualname in classes:
            return
        classes[qualname] = _class_entry(cls, baseline)
        for name, raw in sorted(cls.__dict__.items()):
            if inspect.isclass(raw) and not name.startswith("_") and raw.__module__ == cls.__module__:
                visit_class(qualname + "." + name, raw)

    for name in sorted(dir(mod)):
        if name.startswith("_") and name != "__version__":
            continue
        obj = getattr(mod, name)
        if inspect.ismodule(obj):
            continue
        if inspect.isclass(obj):
            visit_class(name, obj)
        elif callable(obj):
            functions[name] = {"signatures": _doc_signatures(name, obj.__doc__) or _py_signature(name, obj)}
        else:
            values[name] = _clean(type(obj).__name__)
    return {
        "format": FORMAT,
        "tensorrt_version": str(mod.__version__),
        "module": module_name,
        "python": platform.python_version(),
        "functions": functions,
        "values": values,
        "classes": classes,
    }


# ------------------------------------------------------------------------------------------------
# the driver


def _major(version):
    return version.split(".")[0]


def _build_stub_libraries(folder, major):
    src = os.path.join(folder, "stub.c")
    with open(src, "w") as f:
        f.write(STUB_C)
    for lib in STUB_LIBRARIES:
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-o", os.path.join(folder, f"lib{lib}.so.{major}"), src], check=True
        )


def _run_dump(python, module, env):
    code = f"import json, sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
    code += "import importlib.util as u; "
    code += (
        f"s = u.spec_from_file_location('rec', {os.path.abspath(__file__)!r}); m = u.module_from_spec(s); "
    )
    code += f"s.loader.exec_module(m); print(json.dumps(m.dump({module!r})))"
    out = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"record-trt-api: importing {module} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def from_bindings_wheel(wheel, python):
    name = os.path.basename(wheel)
    m = re.match(r"tensorrt_cu\d+_bindings-([0-9][0-9.]*[0-9])(?:\.post\d+)?-", name)
    if not m:
        raise SystemExit(f"record-trt-api: {name} is not a tensorrt-cuXX-bindings wheel")
    version = m.group(1)
    tmp = tempfile.mkdtemp(prefix="trt-api-")
    try:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(tmp)
        libs = os.path.join(tmp, "stub-libs")
        os.makedirs(libs)
        _build_stub_libraries(libs, _major(version))
        env = dict(os.environ, PYTHONPATH=tmp, LD_LIBRARY_PATH=libs)
        surface = _run_dump(python, "tensorrt_bindings", env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    surface["recorded_from"] = (
        f"{name} (pip download --no-deps), imported with stand-in libnvinfer/libnvinfer_plugin/"
        f"libnvonnxparser.so.{_major(version)} defining the nine symbols the bindings resolve"
    )
    return surface


def from_interpreter(python):
    surface = _run_dump(python, "tensorrt", dict(os.environ))
    surface["recorded_from"] = f"the full tensorrt=={surface['tensorrt_version']} wheel imported by {python}"
    return surface


def format_surface(surface):
    """JSON with one line per class and per function (small, and a diff names the class that changed)."""

    def block(mapping):
        rows = [f" {json.dumps(k)}: {json.dumps(v, sort_keys=True, separators=(',', ':'))}"
                for k, v in sorted(mapping.items())]  # fmt: skip
        return "{\n" + ",\n".join(rows) + "\n}"

    head = {k: v for k, v in surface.items() if k not in ("classes", "functions")}
    text = json.dumps(head, indent=1, sort_keys=True)[:-2]
    return (
        text
        + f',\n "functions": {block(surface["functions"])},\n "classes": {block(surface["classes"])}\n}}\n'
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bindings-wheel", metavar="WHL", help="a tensorrt-cuXX-bindings wheel (10.x, 11.x)")
    src.add_argument("--python", metavar="PY", help="an interpreter where `import tensorrt` works (8.5)")
    p.add_argument("--child-python", default=sys.executable, help="interpreter that imports a bindings wheel")
    p.add_argument("-o", "--output", help="output JSON (default: tests/engines/trt_api/trt-<version>.json)")
    args = p.parse_args(argv)
    if args.bindings_wheel:
        wheels = glob.glob(args.bindings_wheel)
        if len(wheels) != 1:
            raise SystemExit(f"record-trt-api: {args.bindings_wheel} matches {len(wheels)} files")
        surface = from_bindings_wheel(wheels[0], args.child_python)
    else:
        surface = from_interpreter(args.python)
    out = args.output or os.path.join(OUT_DIR, f"trt-{surface['tensorrt_version']}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.write(format_surface(surface))
    n_members = sum(len(c["members"]) for c in surface["classes"].values())
    print(f"wrote {out}: TensorRT {surface['tensorrt_version']}, {len(surface['classes'])} classes, "
          f"{n_members} members, {len(surface['functions'])} functions")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
