"""Bounded fuzzing of the parsers of untrusted input (``testsupport.fuzz``), with Hypothesis.

Every parser's fuzz test asserts one property: the parser returns a valid result or raises its own
named error, never another exception and never hangs. Runs are bounded and repeatable (a fixed number
of examples, ``derandomize=True``: the same inputs every run, no example database), so ``make test``
stays a few seconds per parser. :func:`tried` counts the inputs each parser saw in this process;
``scripts/fuzz-count.py`` prints the counts (docs/benchmarks.md, "Fuzzing").

    @fuzz(200)
    @given(data=mutated_bytes([VALID]))
    def test_x(data):
        tried("x parser")
        with no_hang():
            ...
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import threading
from collections import Counter
from typing import Any, Callable, Iterator, List, Sequence

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: Inputs tried per parser in this process (explicit corpus examples included).
COUNTS: Counter = Counter()

#: Values that broke or nearly broke parsers before (issue 11): as text tokens inside any format.
NASTY_TOKENS = (
    "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "-Infinity", "1e400", "-1e400", "1e308", "3e38",
    "-1", "0", "-0", "0x10", "1_000", "1.5", "4294967296", "18446744073709551616", "9" * 5000, "",
    " ", "\t", "\x00", "\ufeff", "\u0661\u0662", "é", "\udcff", "<", ">", "=", "#", '"', "'", "&", ";",
    "[", "]", "{", "}", ",", ":", "true", "null", "\n", "\r\n",
)  # fmt: skip
#: The same values as JSON: every type where a number, string, list or object may be expected.
NASTY_JSON: List[Any] = [
    None, True, False, 0, -1, 1, 2**31, 2**63, 2**64 + 1, 10**400, -(10**400), 1.5, -0.0, 1e308, -1e308,
    float("nan"), float("inf"), float("-inf"), "", "x", "nan", "1", "\x00", "é", "a" * 5000,
    [], [1], [None], ["x"], [1, 2, 3, 4], [[1, 2]], {}, {"a": 1}, {"": None},
]  # fmt: skip


#: ``YOLO_NANO_FUZZ_SCALE=20 pytest tests/*/test_fuzz_*.py``: 20x the inputs, for a longer soak by hand.
SCALE_ENV = "YOLO_NANO_FUZZ_SCALE"


def fuzz(max_examples: int) -> settings:
    """Settings for one parser's fuzz test: ``max_examples`` repeatable inputs (times ``$YOLO_NANO_FUZZ_SCALE``),
    no per-example deadline (the machine is shared; :func:`no_hang` catches real hangs), nothing stored
    between runs."""
    scale = float(os.environ.get(SCALE_ENV, "1") or 1)
    return settings(
        max_examples=max(1, int(max_examples * scale)),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def tried(parser: str) -> None:
    """Count one input given to ``parser``."""
    COUNTS[parser] += 1


@contextlib.contextmanager
def no_hang(seconds: float = 10.0) -> Iterator[None]:
    """Fail (TimeoutError) when the body runs longer than ``seconds``: a parse that hangs is a bug.
    Generous on purpose: a loaded machine must not make it flaky. Main thread only (SIGALRM)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def timeout(signum: int, frame: Any) -> None:
        raise TimeoutError(f"parser still running after {seconds:g} s: a hang")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------------------------ strategies
@st.composite
def mutated_bytes(draw: Callable[..., Any], seeds: Sequence[bytes], max_ops: int = 8) -> bytes:
    """One of ``seeds`` with up to ``max_ops`` edits: bit flips, byte sets, deletions, insertions of
    random bytes or :data:`NASTY_TOKENS`, duplicated spans, truncation. Mostly near-valid input, which
    reaches deeper into a parser than random bytes."""
    data = bytearray(draw(st.sampled_from(list(seeds))))
    for _ in range(draw(st.integers(0, max_ops))):
        op = draw(st.sampled_from(("flip", "set", "delete", "insert", "token", "dup", "truncate")))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and pos < len(data):
            data[pos] = draw(st.sampled_from((0x00, 0x01, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255)))))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "token":
            data[pos:pos] = draw(st.sampled_from(NASTY_TOKENS)).encode("utf-8", "surrogatepass")
        elif op == "dup" and data:
            start = draw(st.integers(0, len(data) - 1))
            data[pos:pos] = data[start : start + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


def mutated_text(seeds: Sequence[str], max_ops: int = 8) -> st.SearchStrategy[str]:
    """:func:`mutated_bytes` of UTF-8 ``seeds``, decoded with surrogateescape (any bytes survive)."""
    return mutated_bytes([s.encode("utf-8") for s in seeds], max_ops).map(
        lambda b: b.decode("utf-8", "surrogateescape")
    )


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(NASTY_JSON),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(doc: Any, prefix: tuple = ()) -> List[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def mutated_json(draw: Callable[..., Any], seeds: Sequence[Any], max_ops: int = 4) -> str:
    """JSON text of one of ``seeds`` (JSON-able documents) with up to ``max_ops`` structural edits at
    random places (a value replaced by any JSON value or a :data:`NASTY_JSON` one, a key deleted or
    added, a value wrapped in a list), then sometimes byte-level edits or a deep-nesting wrapper."""
    doc = json.loads(json.dumps(draw(st.sampled_from(list(seeds)))))  # a private copy
    for _ in range(draw(st.integers(0, max_ops))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(("replace", "nasty", "delete", "add", "wrap")))
        # a copy: the NASTY_JSON lists and dicts are shared, and a later edit must not change them
        new = copy.deepcopy(draw(json_values) if op == "replace" else draw(st.sampled_from(NASTY_JSON)))
        if not path:
            if op in ("replace", "nasty", "wrap"):
                doc = [doc] if op == "wrap" else new
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        if op == "delete":
            del parent[key]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = new
        elif op == "wrap":
            parent[key] = [parent[key]]
        else:
            parent[key] = new
    text = json.dumps(doc)  # NaN/inf as NaN/Infinity, as Python writes them
    tail = draw(st.integers(0, 9))
    if tail == 0:
        depth = draw(st.sampled_from((100, 1000, 100_000)))
        text = "[" * depth + text + "]" * depth
    elif tail == 1:
        text = draw(mutated_text([text], max_ops=4))
    return text
