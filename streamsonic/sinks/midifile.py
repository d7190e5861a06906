"""The ``file:PATH`` output: a Standard MIDI File (type 0, one track), written as it goes.

Messages wait in a small buffer (at most ``MAX_PENDING``) and are written in time order; the
file starts at the first message. Memory stays bounded however long the run.

* ``render`` (offline): written to a temporary file renamed over ``PATH`` at the end
  (:class:`~streamsonic.sinks.outfile.OutputFile`): all or nothing, atomic.
* ``run`` (live, ``open_live_sink``): written to ``PATH`` itself, which is a valid MIDI file
  from the start and after every flush (``output.flush_interval`` seconds): the new messages
  and an End of Track are appended, then the track's length in the header is patched, then the
  previous End of Track is overwritten with an empty sequencer-specific event (4 bytes, ignored
  by players). A process killed at any point leaves a file that mido reads, with every message
  up to the last flush. Rotation (``output.rotate_seconds``, ``output.rotate_bytes``) ends the
  file (note-offs for the notes still sounding) and starts the next one with each channel's
  program and controllers and those notes struck again. Names and never overwriting an earlier
  run's file: :class:`~streamsonic.sinks.outfile.FileSeries`.

A device such as ``/dev/stdout`` is written in place, never replaced. Every write failure
raises ``OutputWriteError`` (exit 74) naming the file.
"""

from __future__ import annotations

import errno
import logging
import struct
from collections import deque
from datetime import datetime
from pathlib import Path

import mido

from streamsonic import __version__
from streamsonic.config import Config, OutputConfig
from streamsonic.sinks.base import Sink
from streamsonic.sinks.outfile import FileSeries, OutputFile, SeriesOutput, wall_time

log = logging.getLogger(__name__)

TICKS_PER_BEAT = 480
#: Messages buffered before they are written even if no flush is due.
MAX_PENDING = 4096
#: Bytes of events written (and, in ``run``, made readable) at a time.
WRITE_CHUNK = 4096
#: The largest track a MIDI file can describe (a 32-bit length); a file is ended before it.
MAX_TRACK_BYTES = 0xFFFF_0000

_TRACK_LENGTH_AT = 18  # MThd(4) + 6(4) + format, ntracks, division(6) + MTrk(4)
_TRACK_DATA_AT = 22
END_OF_TRACK = b"\x00\xff\x2f\x00"
#: Overwrites an End of Track that is no longer the last event: delta 0, sequencer-specific
#: meta event with no data (same length, ignored by players and by mido's timing).
FILLER = b"\x00\xff\x7f\x00"
#: The one-byte quantities (most deltas), made once.
_ONE_BYTE = tuple(bytes((i,)) for i in range(0x80))


def _vlq(value: int) -> bytes:
    """A MIDI variable-length quantity."""
    if value < 0x80:  # most deltas
        return _ONE_BYTE[value]
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


class MidiFileSink(SeriesOutput, Sink):
    """Timed messages -> one MIDI track at ``tempo``; ``live`` (the ``[output]`` settings)
    makes it ``run``'s incremental, rotating file, else ``render``'s atomic one."""

    def __init__(self, path: str | Path, tempo: float = 120.0,
                 live: OutputConfig | None = None, defer: bool = False) -> None:
        super().__init__(f"file:{path}")
        self.path = Path(path)
        self.tempo = tempo
        self.live = live
        self.messages = 0  # messages written, over every file
        #: The names of the files this output started (the last 100; ``file_count`` all)
        self.files: deque[Path] = deque(maxlen=100)
        self.file_count = 0
        self._ticks_per_second = TICKS_PER_BEAT * tempo / 60.0
        self._pending: list[tuple[float, int, mido.Message]] = []
        self._seq = 0
        self._t0: float | None = None  # time of tick 0 in the current file
        self._last_tick = 0
        self._last_flush: float | None = None
        # What the written part of the current file has set up, to carry into the next one
        self._programs: dict[int, int] = {}
        self._controls: dict[tuple[int, int], int] = {}
        self._on: dict[tuple[int, int], int] = {}  # (channel, note) -> velocity
        self._series = FileSeries(path, "MIDI file") if live is not None else None
        self._file: OutputFile | None = None
        if defer and self._series is not None:  # a reload: checked now, opened by start()
            self._series.check()
        else:
            self.start()  # fails now, not after the music

    # -- the file ---------------------------------------------------------------------
    def _open_file(self, started: datetime | None = None) -> OutputFile:
        out = (self._series.open(started) if self._series is not None
               else OutputFile(self.path, "MIDI file"))
        self.files.append(out.path)
        self.file_count += 1
        metas = b"".join(
            b"\x00" + bytes(m.bytes()) for m in (
                mido.MetaMessage("track_name", name="streamsonic"),
                mido.MetaMessage("text", text=f"made by streamsonic {__version__}"),
                mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(self.tempo)),
            )
        )
        self._track_len = len(metas)
        self._running: int | None = None
        self._eot_at: int | None = None  # where the current End of Track is, if any
        self._stamp = self.live is not None  # run: say at tick 0 what time of day it is
        self._last_tick = 0
        header = struct.pack(">4sIHHH", b"MThd", 6, 0, 1, TICKS_PER_BEAT)
        if self.live is None:  # render: the length is written at the end
            out.append(header + b"MTrk" + struct.pack(">I", 0) + metas)
        else:
            self._track_len += len(END_OF_TRACK)
            out.append(header + b"MTrk" + struct.pack(">I", self._track_len) + metas
                       + END_OF_TRACK)
            self._eot_at = out.size - len(END_OF_TRACK)
            out.readable()
        return out

    def _commit(self, data: bytearray) -> None:
        """Append ``data`` (whole events) to the track; in ``run`` make the file valid again."""
        if not data:
            return
        self._running = None  # an event that follows may come after a meta event
        if self.live is None:
            self._out.append(data)
            self._track_len += len(data)
            return
        data += END_OF_TRACK
        self._out.append(data)
        self._track_len += len(data)
        self._out.patch(_TRACK_LENGTH_AT, struct.pack(">I", self._track_len))
        if self._eot_at is not None:
            self._out.patch(self._eot_at, FILLER)
        self._eot_at = self._out.size - len(END_OF_TRACK)
        self._out.readable()

    def _finish_file(self) -> None:
        if self.live is None:
            self._out.append(END_OF_TRACK)
            self._track_len += len(END_OF_TRACK)
            self._out.patch(_TRACK_LENGTH_AT, struct.pack(">I", self._track_len))
        self._out.commit()

    # -- messages ---------------------------------------------------------------------
    def _send(self, msg: mido.Message, time: float) -> None:
        if self._t0 is None:
            self._t0 = time
        # Kept in send order: at equal times the scheduler already sends a stream's
        # note_off before its next note_on, and panic's note_offs after the note_ons.
        self._pending.append((time, self._seq, msg))
        self._seq += 1
        if len(self._pending) >= MAX_PENDING:
            self._write_pending()

    def _encode(self, msg: mido.Message, tick: int, out: bytearray) -> None:
        raw = _raw(msg)
        status = raw[0]
        delta = tick - self._last_tick
        out += _ONE_BYTE[delta] if delta < 0x80 else _vlq(delta)  # (most: one byte, no call)
        self._last_tick = tick
        if status == self._running:
            out += raw[1:]
        else:
            out += raw
            self._running = status if status < 0xF0 else None
        if self._series is None:  # one file: nothing is carried into a next one
            return
        channel = status & 0x0F
        kind = msg.type
        if kind == "note_on" and msg.velocity > 0:
            self._on[(channel, msg.note)] = msg.velocity
        elif kind in ("note_on", "note_off"):
            self._on.pop((channel, msg.note), None)
        elif kind == "program_change":
            self._programs[channel] = msg.program
        elif kind == "control_change" and msg.control < 120:  # not the channel-mode ones
            self._controls[(channel, msg.control)] = msg.value

    def _stamp_time(self, out: bytearray) -> None:
        """A text event at tick 0 of a ``run`` file: the UTC time of day of tick 0."""
        assert self._t0 is not None and self._last_tick == 0
        text = f"tick 0 = {wall_time(self._t0).isoformat(timespec='milliseconds')}"
        raw = text.replace("+00:00", "Z").encode()
        out += b"\x00\xff\x01" + _vlq(len(raw)) + raw
        self._running = None  # a meta event cancels running status
        self._stamp = False

    def _tick_of(self, time: float) -> int:
        assert self._t0 is not None
        return max(round((time - self._t0) * self._ticks_per_second), self._last_tick)

    def _write_pending(self) -> None:
        """Write every buffered message (time order), ending files where rotation says."""
        events = sorted(self._pending)  # by time, then send order (seq is unique)
        self._pending.clear()
        data = bytearray()
        rotate_bytes = self._rotate_bytes()
        room = 2 * len(END_OF_TRACK) + 64
        boundary = self._boundary()  # changes only when a file ends
        # The buffer's size at which the file would outgrow rotate_bytes (the file's size
        # changes only where the buffer is written: taken then, not once per message)
        full = rotate_bytes - room - self._out.size
        for time, _, msg in events:
            if boundary is not None and time >= boundary:
                self._commit(data)
                data = bytearray()
                self._rotate(self._next_start(boundary, time))
                boundary = self._boundary()
                full = rotate_bytes - room - self._out.size
            if self._stamp:
                self._stamp_time(data)
            self._encode(msg, self._tick_of(time), data)
            self.messages += 1
            if len(data) >= full:
                self._commit(data)
                data = bytearray()
                self._rotate(time)
                boundary = self._boundary()
                full = rotate_bytes - room - self._out.size
            elif len(data) >= WRITE_CHUNK:  # what fits goes in, even if the disk fills up
                self._commit(data)
                data = bytearray()
                full = rotate_bytes - room - self._out.size
        self._commit(data)

    # -- rotation ---------------------------------------------------------------------
    def _rotate_bytes(self) -> int:
        limit = MAX_TRACK_BYTES
        if self._series is not None and self.live is not None and self.live.rotate_bytes:
            limit = min(limit, self.live.rotate_bytes)
        return limit

    def _boundary(self) -> float | None:
        """When the current file ends (rotation by time), or None."""
        if self._series is None or self.live is None or not self.live.rotate_seconds \
                or self._t0 is None:
            return None
        return self._t0 + self.live.rotate_seconds

    def _next_start(self, boundary: float, now: float) -> float:
        """The boundary at or before ``now`` (after a suspend, one file for the gap)."""
        assert self.live is not None
        period = self.live.rotate_seconds
        return boundary + max(0, int((now - boundary) // period)) * period

    def _rotate(self, at: float) -> None:
        """End the current file at ``at`` and start the next one from there."""
        if self._series is None:  # no rotation: only the size limit of the format
            raise self._out.fail(OSError(errno.EFBIG, "a MIDI track holds at most "
                                         f"{MAX_TRACK_BYTES} bytes; render less data"))
        data = bytearray()
        tick = self._tick_of(at)
        sounding = dict(self._on)
        for channel, note in sorted(sounding):
            self._encode(mido.Message("note_off", channel=channel, note=note), tick, data)
        self._commit(data)
        self._finish_file()
        log.info("%s: wrote %s, next file from here", self.name, self.files[-1])
        self._out = self._open_file(wall_time(at))
        self._t0 = at
        data = bytearray()
        self._stamp_time(data)
        for channel, program in sorted(self._programs.items()):
            self._encode(mido.Message("program_change", channel=channel, program=program), 0,
                         data)
        for (channel, control), value in sorted(self._controls.items()):
            self._encode(mido.Message("control_change", channel=channel, control=control,
                                      value=value), 0, data)
        for (channel, note), velocity in sorted(sounding.items()):
            self._encode(mido.Message("note_on", channel=channel, note=note,
                                      velocity=velocity), 0, data)
        self._commit(data)

    # -- the daemon's clock -----------------------------------------------------------
    def tick(self, now: float) -> None:
        """``run``: write what is buffered every ``flush_interval``; rotate on time."""
        if self.live is None or self.closed:
            return
        if self._last_flush is None:
            self._last_flush = now
        boundary = self._boundary()
        due = boundary is not None and now >= boundary
        if due or now - self._last_flush >= self.live.flush_interval:
            self._last_flush = now
            self._write_pending()
            boundary = self._boundary()
            if boundary is not None and now >= boundary:  # nothing played across it
                self._rotate(self._next_start(boundary, now))

    def _discard_unfinished(self) -> bool:
        """``render``: the file is left as it was (the temporary one removed); ``run``:
        closed as usual (what is written is kept, the file valid)."""
        if self._file is None:  # a reload that failed opened it: it never wrote a file
            self.closed = True
            return True
        if self.live is not None:
            return False
        self._pending.clear()
        self._out.discard()
        return True

    def _close(self) -> None:
        if self._file is None:  # never started (a reload that failed): no file to write
            return
        if self._out.done:  # given up after a write error: what was readable stays
            return
        try:
            self._write_pending()
            self._finish_file()
        except BaseException:
            self._out.discard()
            raise
        log.info("wrote %s (%d messages%s)", self._out.final_path(), self.messages,
                 f" in {self.file_count} files" if self.file_count > 1 else "")


#: Status byte (without the channel) of the messages the scheduler sends most.
_STATUS = {"note_off": 0x80, "note_on": 0x90, "control_change": 0xB0, "program_change": 0xC0}


def _raw(msg: mido.Message) -> bytes:
    """The message's bytes; the common channel messages without mido's generic encoder
    (a dict walk per message: 14% of a render went there)."""
    kind = msg.type
    status = _STATUS.get(kind)
    if status is None:
        return bytes(msg.bytes())
    if kind == "program_change":
        return bytes((status | msg.channel, msg.program))
    if kind == "control_change":
        return bytes((status | msg.channel, msg.control, msg.value))
    return bytes((status | msg.channel, msg.note, msg.velocity))


def open_sink(arg: str, config: Config) -> MidiFileSink:
    """``--output file:PATH`` in ``render``: one file, written atomically at the end."""
    return MidiFileSink(arg, tempo=config.music.tempo)


def open_live_sink(arg: str, config: Config, defer: bool = False) -> MidiFileSink:
    """``--output file:PATH`` in ``run``: written as it goes, flushed, rotated (``defer``:
    the path checked, the file opened by ``start()``)."""
    return MidiFileSink(arg, tempo=config.music.tempo, live=config.output, defer=defer)
