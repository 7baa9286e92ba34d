"""One way for every command to report errors and warnings, and one set of exit codes.

    def main(argv=None) -> int:
        return run_command("nano-detect", _main, argv)   # _main raises CommandError or returns 0

An error is one line ``prog: error: message`` on stderr (never a traceback for a user mistake);
warnings are one ``prog: warning: message`` line each. Exit codes (docs/runtime.md lists them):

* 0 ok; 1 a check failed (a CI gate, an nano-doctor check); 2 bad input (usage, missing or malformed
  file); 3 the environment lacks something (TensorRT, a GPU, a compiler); 4 a malformed gate/config
  file (so CI can tell a typo from a regression); 130 interrupted (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Callable, List, Optional, Sequence, TextIO

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_BAD_CONFIG = 4
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A user-facing failure: ``message`` is printed as one line, ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def error_line(prog: str, message: object) -> str:
    """``prog: error: message`` on one line (newlines in the message folded)."""
    text = " ".join(str(message).split("\n")).strip()
    return f"{prog}: error: {text}"


def fail(prog: str, message: object, code: int = EXIT_BAD_INPUT, stream: Optional[TextIO] = None) -> int:
    """Print ``prog: error: message`` on stderr and return ``code`` (for ``return fail(...)``)."""
    print(error_line(prog, message), file=stream or sys.stderr)
    return code


def warn(prog: str, message: object, stream: Optional[TextIO] = None) -> None:
    """Print ``prog: warning: message`` on stderr."""
    text = " ".join(str(message).split("\n")).strip()
    print(f"{prog}: warning: {text}", file=stream or sys.stderr)


def show_warnings_plainly(prog: str = "") -> None:
    """Route Python ``warnings`` to one ``prog: warning: ...`` line each (no file/line noise)."""

    def show(
        message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        if prog:
            warn(prog, message, file)
        else:
            print(f"warning: {message}", file=file or sys.stderr)

    warnings.showwarning = show


def run_command(
    prog: str,
    body: Callable[[Optional[Sequence[str]]], Optional[int]],
    argv: Optional[Sequence[str]] = None,
    expected: Sequence[type] = (),
) -> int:
    """Run a command's body and turn the ways it can end into exit codes with one-line messages.

    :class:`CommandError` -> its code; exception types in ``expected`` (the command's own named errors,
    e.g. ``ModelLoadError``) -> :data:`EXIT_BAD_INPUT`; ``KeyboardInterrupt`` -> 130; a closed stdout
    pipe (``| head``) -> 0. Anything else is a bug and keeps its traceback.
    """
    show_warnings_plainly(prog)
    try:
        code = body(argv)
        return EXIT_OK if code is None else int(code)
    except CommandError as e:
        return fail(prog, e.message, e.code)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except tuple(expected) as e:  # type: ignore[misc]
        return fail(prog, e, EXIT_BAD_INPUT)


__all__: List[str] = [
    "EXIT_BAD_CONFIG",
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "CommandError",
    "error_line",
    "fail",
    "run_command",
    "show_warnings_plainly",
    "warn",
]
