"""Printing a command's result on stdout, where a failed write is a write failure (exit 74).

``streamsonic info --default-config > /dev/full`` must not end in a traceback: a write to
stdout that fails (disk full, I/O error) is one :class:`OutputWriteError` line and exit 74,
like any output file. A closed pipe (``| head -1``) stays BrokenPipeError, which the CLI
treats as the quiet end it is.
"""

from __future__ import annotations

import contextlib
import os
import sys

from streamsonic.errors import OutputWriteError


def write_stdout(text: str) -> None:
    """Write ``text`` to stdout and flush it; OutputWriteError if that fails (or stdout was
    closed before the start, ``>&-``: Python has no stdout then)."""
    if sys.stdout is None:
        raise OutputWriteError("cannot write to standard output: it is closed")
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as err:
        _discard_stdout()
        raise OutputWriteError("cannot write to standard output: "
                               f"{err.strerror or type(err).__name__}") from None


def _discard_stdout() -> None:
    """Point stdout's descriptor at /dev/null, so that what Python still holds for it is
    dropped quietly at exit (a second failing flush would print its own complaint and turn
    the exit status into 120)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
