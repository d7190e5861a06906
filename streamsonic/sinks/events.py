"""The ``events`` output: one JSON object per note on stdout, written as the note starts.

When stdout's reader goes away (``streamsonic --output events | head -1``), the output
behaves like ``head`` and ``yes`` do: no error. The rest of what would have gone to stdout is
thrown away, and a running daemon is asked to stop the way SIGTERM asks (every note
released, files written, exit 0); without a daemon (``render``) the other outputs go on.
"""

from __future__ import annotations

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


class EventsSink(Sink):
    """JSON lines: stream, time, value, normalized, pitch, velocity, duration, channel,
    program, start. Flushed per line so ``tail -f | streamsonic --output events`` streams."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__("events")
        self._out = stream if stream is not None else sys.stdout
        #: The reader of the output went away (EPIPE); nothing more is written.
        self.reader_gone = False

    def note(self, event: NoteEvent) -> None:
        """Write the note as one JSON line."""
        if self.reader_gone:
            return
        try:
            self._out.write(json.dumps(event.to_dict(), separators=(",", ":")) + "\n")
            self._out.flush()
        except BrokenPipeError:
            self._gone()

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
