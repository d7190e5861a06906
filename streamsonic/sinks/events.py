"""The ``events`` output: one JSON object per note on stdout, written as the note starts."""

from __future__ import annotations

import json
import sys
from typing import TextIO

import mido

from streamsonic.config import Config
from streamsonic.errors import OutputError
from streamsonic.events import NoteEvent
from streamsonic.sinks.base import Sink


class EventsSink(Sink):
    """JSON lines: stream, time, value, normalized, pitch, velocity, duration, channel,
    program, start. Flushed per line so ``tail -f | streamsonic --output events`` streams."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__("events")
        self._out = stream if stream is not None else sys.stdout

    def note(self, event: NoteEvent) -> None:
        """Write the note as one JSON line."""
        try:
            self._out.write(json.dumps(event.to_dict(), separators=(",", ":")) + "\n")
            self._out.flush()
        except BrokenPipeError:
            raise OutputError("events output: the reader of stdout went away") from None

    def _send(self, msg: mido.Message, time: float) -> None:
        """Channel messages are not printed; only notes are."""


def open_sink(arg: str, config: Config) -> EventsSink:
    """``--output events``."""
    return EventsSink()
