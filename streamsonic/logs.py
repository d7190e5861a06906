"""Logging to stderr: one line per record, with journald priorities under systemd.

Outside systemd each line reads ``streamsonic: LEVEL: message``. When stderr is connected to
the journal (``$JOURNAL_STREAM`` holds the ``DEVICE:INODE`` of stderr, as systemd documents
for services whose output goes to the journal), each line starts with the ``<N>``
priority prefix that journald's stream transport understands (``sd-daemon(3)``: 3 error,
4 warning, 6 info, 7 debug), so ``journalctl -p warning`` shows warnings and errors only;
and the ``streamsonic:`` prefix is left out, since the journal names the program already
(``SyslogIdentifier``). A record that spans lines (a traceback) carries the prefix on
every line, so none of them falls back to the default priority.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

ENV_JOURNAL_STREAM = "JOURNAL_STREAM"

#: logging level -> syslog priority (``sd-daemon.h``: SD_ERR 3, SD_WARNING 4 ...).
PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
              (logging.INFO, 6))
DEBUG_PRIORITY = 7
ERROR_PRIORITY = 3


def priority(levelno: int) -> int:
    """The syslog priority of a logging level."""
    for level, prio in PRIORITIES:
        if levelno >= level:
            return prio
    return DEBUG_PRIORITY


def journal_stream(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: stderr) is the journal stream that ``$JOURNAL_STREAM``
    names (its device and inode match). A stderr redirected elsewhere (a file, a pipe to
    another program) by a wrapper keeps plain lines, as systemd advises."""
    value = os.environ.get(ENV_JOURNAL_STREAM, "")
    device, sep, inode = value.partition(":")
    if not sep:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError):  # closed, not a file, or not numbers
        return False


class JournalFormatter(logging.Formatter):
    """``<N>message`` on every line of the record (journald's stream priority prefix)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record, each line prefixed with its priority."""
        text = super().format(record)
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in text.split("\n"))


#: What every log line says after the level: "" for the daemon, "worker 2: " in a worker
#: process (``daemon.workers``), so that each line names who wrote it.
_tag = ""


def set_tag(tag: str) -> None:
    """Start every log line (after the level) with ``tag``; before :func:`setup_logging`."""
    global _tag  # noqa: PLW0603 - one process, one tag
    _tag = tag.replace("%", "%%")


def formatter(stream: TextIO | None = None) -> logging.Formatter:
    """The formatter for ``stream`` (default: stderr): journald's or the plain one."""
    if journal_stream(stream):
        return JournalFormatter(_tag + "%(message)s")
    return logging.Formatter(f"streamsonic: %(levelname)s: {_tag}%(message)s")


def error_line(message: str, stream: TextIO | None = None) -> str:
    """The CLI's last words (``streamsonic: error: ...``), as an error to journald."""
    if journal_stream(stream):
        return "\n".join(f"<{ERROR_PRIORITY}>error: {line}" for line in message.split("\n"))
    return f"streamsonic: error: {message}"


def setup_logging(level: str) -> None:
    """Log to stderr, one line per record, at ``level`` (debug, info, warning, error)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter())
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)


def set_level(level: str) -> None:
    """Change the level (a reload of ``daemon.log_level``)."""
    logging.getLogger().setLevel(getattr(logging, level.upper()))
