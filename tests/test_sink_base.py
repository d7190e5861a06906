"""Sink.close: an output error while silencing the notes is raised once the output is
released (one error line from whoever closes it, and exit 74 for a file that could not be
written), not logged as a traceback and forgotten."""

from __future__ import annotations

import logging

import mido
import pytest

from streamsonic.errors import OutputWriteError
from streamsonic.sinks.base import Sink


class FillingSink(Sink):
    """Its note-offs fail to be written, as a WAV file's do when the disk fills during the
    close's release tail."""

    def __init__(self) -> None:
        super().__init__("filling")
        self.released = False

    def _send(self, msg: mido.Message, time: float) -> None:
        if msg.type == "note_off":
            raise OutputWriteError("cannot write WAV file x.wav: No space left on device")

    def _close(self) -> None:
        self.released = True


def test_a_write_error_while_silencing_is_raised_after_release(
        caplog: pytest.LogCaptureFixture) -> None:
    sink = FillingSink()
    sink.send(mido.Message("note_on", note=60, velocity=90), 0.0)
    with pytest.raises(OutputWriteError, match="No space left"):
        sink.close()
    assert sink.closed and sink.released
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback
    sink.close()  # once: closing again does nothing


def test_another_failure_while_silencing_is_logged_and_the_sink_released(
        caplog: pytest.LogCaptureFixture) -> None:
    class Broken(FillingSink):
        def _send(self, msg: mido.Message, time: float) -> None:
            raise RuntimeError("a bug")

    sink = Broken()
    sink._sounding[(0, 60)] = 1  # a note sounds (its note_on failed too)
    sink.close()
    assert sink.closed and sink.released
    assert any("silencing notes failed" in r.getMessage() for r in caplog.records)
