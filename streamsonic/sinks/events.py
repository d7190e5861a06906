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


class EventsSink(Sink):
    """JSON lines: stream, time, value, normalized, pitch, velocity, duration, channel,
    program, start, ... Flushed within ``flush_delay`` seconds of being written (see the
    module), so ``tail -f | streamsonic --output events`` streams."""

    def __init__(self, stream: TextIO | None = None, flush_delay: float = FLUSH_DELAY) -> None:
        super().__init__("events")
        self._out = stream if stream is not None else sys.stdout
        self.flush_delay = flush_delay
        self._flush_due: asyncio.TimerHandle | None = None
        self._encode = json.JSONEncoder(separators=(",", ":")).encode
        #: The reader of the output went away (EPIPE); nothing more is written.
        self.reader_gone = False

    def note(self, event: NoteEvent) -> None:
        """Write the note as one JSON line (flushed within ``flush_delay``)."""
        if self.reader_gone:
            return
        try:
            self._out.write(self._encode(event.to_dict()) + "\n")
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
