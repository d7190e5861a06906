"""The ``events`` output: one JSON object per note on stdout, written as the note starts.

Lines are held by the output and written out together at the running loop's next turn
(the notes one batch step or one timer made go out in one write), so
``streamsonic ... | tail -f``-style readers see each note at once, well within
:data:`FLUSH_DELAY`, and a busy daemon writes its notes in a few large writes instead of one
system call per note, whether or not Python buffers stdout (``PYTHONUNBUFFERED``). At most
:data:`HOLD_CHARS` characters are held: more are written at once. Without a running loop
(``render``) lines go out when that many are held and at the end.

On a file descriptor (stdout as it is, not a Python stream put in its place) the lines go
out with ``os.write`` in pieces of whole lines of at most :data:`WHOLE_WRITE` bytes (PIPE_BUF):
the kernel writes each such piece to a pipe in one go, so several writers on one pipe (the
worker processes of ``daemon.workers``, or ``a | ... & b | ...`` into one reader) never
cut into each other's lines, and a reader never sees half a line.

When stdout's reader goes away (``streamsonic --output events | head -1``), the output
behaves like ``head`` and ``yes`` do: no error. The rest of what would have gone to stdout is
thrown away, and a running daemon is asked to stop the way SIGTERM asks (every note
released, files written, exit 0); without a daemon (``render``) the other outputs go on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import signal
import sys
from typing import TextIO

import mido

from streamsonic.config import Config
from streamsonic.events import NoteEvent
from streamsonic.sinks.base import Sink

log = logging.getLogger(__name__)

#: Longest a written note waits in the buffer before it is flushed (seconds): a bound; the
#: lines go out at the loop's next turn.
FLUSH_DELAY = 0.05
#: Characters of lines held before they are written out regardless (about 250 notes).
HOLD_CHARS = 65536

#: The most bytes one write holds (POSIX PIPE_BUF on Linux: a pipe takes it whole, without
#: interleaving another writer's bytes); a single longer line is written alone.
WHOLE_WRITE = select.PIPE_BUF if hasattr(select, "PIPE_BUF") else 4096

#: Stream names kept JSON-encoded (:func:`note_line`); the cache starts afresh when full.
NAME_CACHE = 65536

_encode = json.JSONEncoder(separators=(",", ":")).encode
_string = json.encoder.encode_basestring_ascii
_float = float.__repr__  # what the json module writes for a finite float (or subclass)
_names: dict[str, str] = {}


def note_line(event: NoteEvent) -> str:
    """The note as one JSON object (no newline): exactly ``json.dumps(event.to_dict(),
    separators=(",", ":"))``, written out field by field where the fields have their
    usual types (ints, a bool, finite floats), which costs half as much per note."""
    e = event
    if (type(e.pitch) is type(e.velocity) is type(e.channel) is type(e.program)
            is type(e.direction) is type(e.pan) is int and type(e.accent) is bool):
        try:
            floats: tuple[str, ...] = (_float(e.time), _float(e.value), _float(e.normalized),
                                       _float(e.duration), _float(e.start), _float(e.anomaly))
        except TypeError:  # a field that is not a float (an int time, say)
            floats = ("n",)
        if "n" not in "".join(floats):  # not nan or inf (json writes NaN, Infinity)
            name = _names.get(e.stream)
            if name is None:
                if len(_names) >= NAME_CACHE:
                    _names.clear()
                name = _names[e.stream] = _string(e.stream)
            t, v, n, d, s, a = floats
            return (f'{{"stream":{name},"time":{t},"value":{v},"normalized":{n},'
                    f'"pitch":{e.pitch},"velocity":{e.velocity},"duration":{d},'
                    f'"channel":{e.channel},"program":{e.program},"start":{s},'
                    f'"anomaly":{a},"accent":{"true" if e.accent else "false"},'
                    f'"direction":{e.direction},"pan":{e.pan},"source":{_string(e.source)}}}')
    return _encode(e.to_dict())


class EventsSink(Sink):
    """JSON lines: stream, time, value, normalized, pitch, velocity, duration, channel,
    program, start, ... Written out at the loop's next turn (see the module), so
    ``tail -f | streamsonic --output events`` streams; ``flush_delay <= 0``: each note at
    once."""

    channel_messages = False  # only notes are printed

    def __init__(self, stream: TextIO | None = None, flush_delay: float = FLUSH_DELAY) -> None:
        super().__init__("events")
        self._out = stream if stream is not None else sys.stdout
        self._fd = _fileno(self._out) if stream is None else None  # whole-line writes
        self.flush_delay = flush_delay
        self._flush_due: asyncio.Handle | None = None
        self._lines: list[str] = []  # held, not yet written
        self._held = 0  # their characters
        #: The reader of the output went away (EPIPE); nothing more is written.
        self.reader_gone = False

    def note(self, event: NoteEvent) -> None:
        """Write the note as one JSON line (out at the loop's next turn, see the module)."""
        if self.reader_gone:
            return
        line = note_line(event) + "\n"
        self._lines.append(line)
        self._held += len(line)
        if self._held >= HOLD_CHARS or self.flush_delay <= 0:
            self.flush()
        elif self._flush_due is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # offline (render): written as they fill, and at the end
                return
            self._flush_due = loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write out what is held, and flush the stream."""
        if self._flush_due is not None:
            self._flush_due.cancel()
            self._flush_due = None
        lines, self._lines, self._held = self._lines, [], 0
        if self.reader_gone:
            return
        try:
            if self._fd is not None:
                self._out.flush()  # anything written to it some other way goes first
                if lines:
                    write_lines(self._fd, "".join(lines).encode("utf-8"))
                return
            if lines:
                self._out.write("".join(lines))
            self._out.flush()
        except BrokenPipeError:
            self._gone()

    def _close(self) -> None:
        self.flush()

    def _gone(self) -> None:
        """EPIPE: stop writing, silence the stream's last flush, ask the daemon to stop."""
        self.reader_gone = True
        log.info("events output: the reader of stdout went away; stopping")
        try:  # what is still buffered for the closed pipe goes nowhere, quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._out.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # not a file descriptor (tests)
            pass
        if callable(signal.getsignal(signal.SIGTERM)):  # a daemon is listening for SIGTERM
            signal.raise_signal(signal.SIGTERM)

    def _send(self, msg: mido.Message, time: float) -> None:
        """Channel messages are not printed; only notes are."""


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError):  # a stream without a descriptor (tests)
        return None


def write_lines(fd: int, data: bytes) -> None:
    """Write ``data`` (lines, each ending in a newline) to ``fd`` in pieces of whole lines
    of at most :data:`WHOLE_WRITE` bytes, each piece one ``write`` unless the kernel takes
    less (a full file system, a signal); a descriptor in non-blocking mode is waited on."""
    view = memoryview(data)
    at, end = 0, len(data)
    while at < end:
        cut = end
        if end - at > WHOLE_WRITE:
            last = data.rfind(b"\n", at, at + WHOLE_WRITE)
            if last < 0:  # one line longer than a whole write: that line alone
                last = data.find(b"\n", at)
            cut = end if last < 0 else last + 1
        while at < cut:
            try:
                at += os.write(fd, view[at:cut])
            except BlockingIOError:  # O_NONBLOCK set by whoever gave us stdout
                select.select([], [fd], [])


def open_sink(arg: str, config: Config) -> EventsSink:
    """``--output events``."""
    return EventsSink()
