"""The JSON report (``--report doctor.json``): every check with its status, detail, fix, numbers and
error, scrubbed of what identifies the machine or its user before it is written.

Scrubbed in every string (keys too): paths under the home directory (``$HOME``, its real path, any
``/home/NAME`` or ``/Users/NAME``) become ``~``; this machine's host names (short and qualified) become
``<host>``; the user's names (login, ``$USER``/``$LOGNAME``/``$SUDO_USER``) become ``<user>`` as whole
words (except ``root``, which names no one and appears in permission messages); IPv4 and IPv6 addresses
become ``<ip>``, except dotted numbers that are versions (TensorRT's ``8.5.2.2`` has the shape of an
address): those the report records under a ``version`` key, and those written as one (``==10.16.1.11``,
``TensorRT 8.6.1.6``, ``version 1.2.3.4``).
"""

from __future__ import annotations

import contextlib
import getpass
import ipaddress
import json
import os
import platform
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Match, Optional, Pattern, Sequence

import yolo_nano
from yolo_nano.core.fileio import atomic_write_text

from .result import STATUSES, Check, Options

SCHEMA = "nano-doctor/1"
#: Names that identify no one (kept: they appear in ordinary messages).
GENERIC_NAMES = frozenset({"root", "localhost", "localhost.localdomain", ""})

_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w.]*\d)")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:.])")
_VERSION_BEFORE = re.compile(r"(?:[=<>!~]=|\bv|version:?\s*|tensorrt[\w-]*\s+|cuda\s+)$", re.IGNORECASE)
_HOME_LIKE = re.compile(r"/(?:home|Users)/[^/\s'\"]+")


@dataclass
class Identity:
    """What identifies this machine and its user: ``homes`` (paths), ``users``, ``hosts``."""

    homes: List[str] = field(default_factory=list)
    users: List[str] = field(default_factory=list)
    hosts: List[str] = field(default_factory=list)


def local_identity() -> Identity:
    """This machine's home directory, user names and host names (whatever can be found)."""
    homes = []
    home = os.path.expanduser("~")
    for h in (home, os.path.realpath(home)):
        if h and h != "/" and h not in homes:
            homes.append(h.rstrip("/"))
    users = {os.environ.get(k, "") for k in ("USER", "LOGNAME", "USERNAME", "SUDO_USER")}
    with contextlib.suppress(KeyError, OSError):  # no passwd entry (containers)
        users.add(getpass.getuser())
    hosts = {socket.gethostname(), platform.node()}
    with contextlib.suppress(OSError):
        hosts.add(socket.getfqdn())
    hosts |= {h.split(".")[0] for h in hosts}
    return Identity(
        homes=homes,
        users=sorted(u for u in users if u not in GENERIC_NAMES),
        hosts=sorted(h for h in hosts if h.lower() not in GENERIC_NAMES),
    )


def _word(name: str) -> Pattern[str]:
    return re.compile(r"(?<![A-Za-z0-9_])" + re.escape(name) + r"(?![A-Za-z0-9_])")


def _is_ipv6(token: str) -> bool:
    if token.count(":") < 2 or not token.strip(":"):
        return False
    try:
        ipaddress.IPv6Address(token)
    except ValueError:
        return False
    return True


def _is_ipv4(token: str) -> bool:
    try:
        ipaddress.IPv4Address(token)
    except ValueError:
        return False
    return True


class Scrubber:
    """Replaces what :class:`Identity` names, and every IP address, in strings. ``versions``: dotted
    numbers to keep (software versions the report records)."""

    def __init__(self, identity: Identity, versions: Iterable[str] = ()) -> None:
        self.identity = identity
        # a version keeps its dotted numbers, also inside "8.5.2.2-1+cuda11.4"
        self.versions = {m.group(0) for v in versions for m in _IPV4.finditer(str(v))}
        self._homes = [
            re.compile(re.escape(h) + r"(?=/|\b|$)") for h in sorted(identity.homes, key=len, reverse=True)
        ]
        self._users = [_word(u) for u in identity.users]
        self._hosts = [_word(h) for h in sorted(identity.hosts, key=len, reverse=True)]  # FQDN first

    def text(self, s: str) -> str:
        for pattern in self._homes:
            s = pattern.sub("~", s)
        s = _HOME_LIKE.sub("~", s)
        s = _IPV6.sub(lambda m: "<ip>" if _is_ipv6(m.group(0)) else m.group(0), s)
        s = _IPV4.sub(lambda m: m.group(0) if self._version_like(m) else "<ip>", s)
        for pattern in self._hosts:
            s = pattern.sub("<host>", s)
        for pattern in self._users:
            s = pattern.sub("<user>", s)
        return s

    def _version_like(self, m: Match[str]) -> bool:
        """A dotted quad that is a version: not an address, recorded as one, or written as one
        (``==10.16.1.11``, ``TensorRT 8.6.1.6``, ``version 1.2.3.4``)."""
        token = m.group(0)
        before = m.string[max(0, m.start() - 24) : m.start()]
        return not _is_ipv4(token) or token in self.versions or bool(_VERSION_BEFORE.search(before))

    def __call__(self, value: Any) -> Any:
        """``value`` with every string in it scrubbed (dicts, lists and tuples walked)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self(k): self(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self(v) for v in value]
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return self.text(str(value))  # paths and other objects: as JSON will write them


def _versions(checks: Sequence[Check]) -> List[str]:
    """Every value the checks record under a ``version`` key (at any depth)."""
    found: List[str] = []

    def walk(v: Any, key: str = "") -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, str(k))
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x, key)
        elif v is not None and "version" in key:
            found.append(str(v))

    for c in checks:
        walk(c.data)
    return found


def summary(checks: Sequence[Check]) -> Dict[str, int]:
    """How many checks ended in each status."""
    return {s: sum(1 for c in checks if c.status == s) for s in STATUSES}


def build_report(
    checks: Sequence[Check],
    options: Options,
    exit_code: int,
    seconds: float,
    environment: Dict[str, Any],
    identity: Optional[Identity] = None,
) -> Dict[str, Any]:
    """The report as a JSON-ready dict, scrubbed (``identity``: default :func:`local_identity`)."""
    report = {
        "schema": SCHEMA,
        "tool": {"name": "nano-doctor", "version": yolo_nano.__version__},
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "options": {
            "model": options.model,
            "quick": options.quick,
            "sysfs_root": options.sysfs_root,
            "nvpmodel_conf": options.nvpmodel_conf,
        },
        "environment": environment,
        "summary": dict(summary(checks), exit_code=exit_code, seconds=round(seconds, 2)),
        "checks": [
            {
                "section": c.section,
                "name": c.name,
                "status": c.status,
                "detail": c.detail,
                "fix": c.fix,
                "data": c.data,
                "seconds": c.seconds,
                "error": c.error,
            }
            for c in checks
        ],
    }
    scrub = Scrubber(identity or local_identity(), _versions(checks))
    return scrub(report)


def write_report(path: str, report: Dict[str, Any]) -> None:
    """Write ``report`` to ``path`` atomically (values that JSON lacks, e.g. paths, as strings)."""
    atomic_write_text(path, json.dumps(report, indent=2, default=str) + "\n")
