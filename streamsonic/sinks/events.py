"""The ``events`` output: one JSON object per note on stdout, written as the note starts.

Lines are buffered and flushed at most :data:`FLUSH_DELAY` after the first one that waits
(a timer on the running loop), so ``streamsonic ... | tail -f``-style readers see each note
within that delay, and a busy daemon writes its notes in a few large writes instead of one
system call per note. Without a running loop (``render``) lines go out when the buffer
fills and at the end.

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
import signal
import sys
from typing import TextIO

import mido

from streamsonic.config import Config
from streamsonic.events import NoteEvent
from streamsonic.sinks.base import Sink

log = logging.getLogger(__name__)

#: Longest a written note waits in the buffer before it is flushed (seconds).
FLUSH_DELAY = 0.05

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
            nums = (f'"time":{_float(e.time)},"value":{_float(e.value)},'
                    f'"normalized":{_float(e.normalized)},"pitch":{e.pitch},'
                    f'"velocity":{e.velocity},"duration":{_float(e.duration)},'
                    f'"channel":{e.channel},"program":{e.program},'
                    f'"start":{_float(e.start)},"anomaly":{_float(e.anomaly)}')
        except TypeError:  # a field that is not a float (an int time, say)
            nums = "n"
        if "n" not in nums:  # not nan or inf (the json module writes NaN, Infinity)
            name = _names.get(e.stream)
            if name is None:
                if len(_names) >= NAME_CACHE:
                    _names.clear()
                name = _names[e.stream] = _string(e.stream)
            return (f'{{"stream":{name},{nums},"accent":{"true" if e.accent else "false"},'
                    f'"direction":{e.direction},"pan":{e.pan},"source":{_string(e.source)}}}')
    return _encode(e.to_dict())


class EventsSink(Sink):
    """JSON lines: stream, time, value, normalized, pitch, velocity, duration, channel,
    program, start, ... Flushed within ``flush_delay`` seconds of being written (see the
    module), so ``tail -f | streamsonic --output events`` streams."""

    def __init__(self, stream: TextIO | None = None, flush_delay: float = FLUSH_DELAY) -> None:
        super().__init__("events")
        self._out = stream if stream is not None else sys.stdout
        self.flush_delay = flush_delay
        self._flush_due: asyncio.TimerHandle | None = None
        #: The reader of the output went away (EPIPE); nothing more is written.
        self.reader_gone = False

    def note(self, event: NoteEvent) -> None:
        """Write the note as one JSON line (flushed within ``flush_delay``)."""
        if self.reader_gone:
            return
        try:
            self._out.write(note_line(event) + "\n")
        except BrokenPipeError:
            self._gone()
            return
        if self._flush_due is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # offline (render): flushed as the buffer fills, and at the end
                return
            if self.flush_delay <= 0:
                self.flush()
            else:
                self._flush_due = loop.call_later(self.flush_delay, self.flush)

    def flush(self) -> None:
        """Write out what is buffered now."""
        if self._flush_due is not None:
            self._flush_due.cancel()
            self._flush_due = None
        if self.reader_gone:
            return
        try:
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


def open_sink(arg: str, config: Config) -> EventsSink:
    """``--output events``."""
    return EventsSink()
