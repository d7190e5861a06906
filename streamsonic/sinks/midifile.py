"""The ``file:PATH`` output: a Standard MIDI File (type 0) written with mido.

Messages are collected with their times and written on ``close()`` through
:class:`~streamsonic.sinks.outfile.OutputFile` (a temporary file renamed over a regular
target; a device such as ``/dev/stdout`` is written in place, never replaced), so the file
is complete and valid after a normal exit, EOF, SIGINT or SIGTERM: the daemon closes every
sink on each of those paths. A failed write raises ``OutputWriteError`` and leaves the old
file as it was.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mido

from streamsonic import __version__
from streamsonic.config import Config
from streamsonic.sinks.base import Sink
from streamsonic.sinks.outfile import OutputFile

log = logging.getLogger(__name__)

TICKS_PER_BEAT = 480


class MidiFileSink(Sink):
    """Collects timed messages and writes them as one track at ``tempo``."""

    def __init__(self, path: str | Path, tempo: float = 120.0) -> None:
        super().__init__(f"file:{path}")
        self.path = Path(path)
        self.tempo = tempo
        self._events: list[tuple[float, int, mido.Message]] = []
        self._t0: float | None = None
        self._out = OutputFile(self.path, "MIDI file")  # fails now, not after the music

    def _send(self, msg: mido.Message, time: float) -> None:
        if self._t0 is None:
            self._t0 = time
        # Kept in send order: at equal times the scheduler already sends a stream's
        # note_off before its next note_on, and panic's note_offs after the note_ons.
        self._events.append((time, len(self._events), msg))

    def to_midifile(self) -> mido.MidiFile:
        """The MIDI file as it would be written now."""
        mid = mido.MidiFile(type=0, ticks_per_beat=TICKS_PER_BEAT)
        track = mido.MidiTrack()
        mid.tracks.append(track)
        track.append(mido.MetaMessage("track_name", name="streamsonic", time=0))
        track.append(mido.MetaMessage("text", text=f"made by streamsonic {__version__}", time=0))
        track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(self.tempo), time=0))
        t0 = self._t0 or 0.0
        ticks_per_second = TICKS_PER_BEAT * self.tempo / 60.0
        last_tick = 0
        for time, _, msg in sorted(self._events, key=lambda e: (e[0], e[1])):  # stable
            tick = max(round((time - t0) * ticks_per_second), last_tick)
            track.append(msg.copy(time=tick - last_tick))
            last_tick = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        return mid

    def _close(self) -> None:
        try:
            self.to_midifile().save(file=self._out.file)
        except OSError as err:
            raise self._out.fail(err) from None
        except BaseException:
            self._out.discard()
            raise
        self._out.commit()
        log.info("wrote %s (%d messages)", self.path, len(self._events))


def open_sink(arg: str, config: Config) -> MidiFileSink:
    """``--output file:PATH``."""
    return MidiFileSink(arg, tempo=config.music.tempo)
