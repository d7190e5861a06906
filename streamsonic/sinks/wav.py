"""``wav:PATH``: audio through FluidSynth into a 16-bit stereo WAV file, written as it goes.

Messages arrive in time order. The synth is rendered up to each message's frame, the message
is applied there, and rendering continues; ``close`` renders a release tail (until every voice
has died away, at most ``TAIL_MAX`` seconds) and finishes the file. Memory is one block of
``CHUNK`` frames, however long the file.

* ``render`` (offline): times are seconds from 0 on a virtual clock, rendered faster than real
  time into a temporary file renamed over ``PATH`` at the end (atomic).
* ``run`` (live, ``open_live_sink``): the file starts at the first note (frame 0 is its time on
  the daemon's clock, whatever the uptime) and then follows real time: about once a second the
  daemon's clock (``tick``) renders up to ``MARGIN`` seconds ago, silences included, so a
  position in the file is a time of day (the file's ``{start}`` plus the offset). Every
  ``output.flush_interval`` seconds the RIFF and data sizes in the header are patched, so a
  killed process leaves a valid WAV holding everything up to the last flush. Files rotate on
  ``output.rotate_seconds`` / ``output.rotate_bytes`` at an exact frame (the pieces join into
  the whole), and always before the 4 GiB a WAV header can describe.

A write that fails (a full disk) gives the file up (``OutputWriteError``: one error line and
exit 74 from the scheduler; ``run`` keeps what was readable at the last flush, ``render``
leaves the old file): from then on nothing is rendered, the close's note-offs included.
"""

from __future__ import annotations

import errno
import logging
import struct
from collections import deque
from datetime import datetime
from pathlib import Path

import mido
import numpy as np

from streamsonic.config import Config, OutputConfig
from streamsonic.errors import OutputError
from streamsonic.sinks.base import CC_ALL_SOUND_OFF, Sink
from streamsonic.sinks.outfile import FileSeries, OutputFile, SeriesOutput, wall_time
from streamsonic.sinks.synth import GRAIN, FluidSynth
from streamsonic.soundfont import find_soundfont

log = logging.getLogger(__name__)

CHUNK = 8192  # frames rendered per synth call
TAIL_MIN = 0.25  # seconds always rendered after the last message
TAIL_MAX = 2.0  # release tail limit (seconds)
#: ``run``: the clock's tick renders up to this many seconds before now, so that a message
#: delivered a little late (a busy event loop) still lands at its own frame.
MARGIN = 0.5
CHANNELS = 2
SAMPLE_BYTES = 2
FRAME_BYTES = CHANNELS * SAMPLE_BYTES
HEADER_BYTES = 44
#: The most audio one WAV file holds: its sizes are 32-bit (RIFF size = 36 + data bytes).
MAX_DATA_BYTES = (0xFFFF_FFFF - 36) // FRAME_BYTES * FRAME_BYTES


def wav_header(sample_rate: int, data_bytes: int) -> bytes:
    """The 44-byte header of a 16-bit stereo PCM WAV file holding ``data_bytes`` of audio."""
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16,
                       1, CHANNELS, sample_rate, sample_rate * FRAME_BYTES, FRAME_BYTES,
                       8 * SAMPLE_BYTES, b"data", data_bytes)


class WavSink(SeriesOutput, Sink):
    """Renders timed messages through FluidSynth into a WAV file (``live``: the ``[output]``
    settings of ``run``; None: ``render``'s atomic file)."""

    def __init__(self, path: Path, synth: FluidSynth, live: OutputConfig | None = None,
                 defer: bool = False) -> None:
        super().__init__(f"wav:{path}")
        self.path = path
        self.synth = synth
        self.live = live
        self.sample_rate = synth.sample_rate
        self.frames = 0  # frames rendered so far, over every file
        #: The names of the files this output started (the last 100; ``file_count`` all)
        self.files: deque[Path] = deque(maxlen=100)
        self.file_count = 0
        self._file_frames = 0  # frames in the current file
        self._buffer = np.zeros((CHUNK, CHANNELS), dtype=np.float32)
        self._deferred: list[mido.Message] = []
        self._t0: float | None = None if live is not None else 0.0  # the time of frame 0
        self._last_flush: float | None = None
        self.peak = 0.0
        self.clipped = 0
        self._series = FileSeries(path, "WAV file") if live is not None else None
        self._file: OutputFile | None = None
        try:
            if defer and self._series is not None:  # a reload: checked now, opened by start()
                self._series.check()
            else:
                self.start()
        except OutputError:
            synth.delete()
            raise
        self._max_frames = self._file_limit()

    def _limits_changed(self) -> None:
        self._max_frames = self._file_limit()

    # -- the file ---------------------------------------------------------------------
    def _open_file(self, started: datetime | None = None) -> OutputFile:
        out = (self._series.open(started) if self._series is not None
               else OutputFile(self.path, "WAV file"))
        self.files.append(out.path)
        self.file_count += 1
        self._file_frames = 0
        out.append(wav_header(self.sample_rate, 0))
        out.readable()
        return out

    def _file_limit(self) -> int:
        """Frames one file may hold."""
        limit = MAX_DATA_BYTES
        if self._series is not None and self.live is not None:
            if self.live.rotate_bytes:
                limit = min(limit, self.live.rotate_bytes - HEADER_BYTES)
            if self.live.rotate_seconds:
                limit = min(limit, round(self.live.rotate_seconds * self.sample_rate)
                            * FRAME_BYTES)
        return max(limit // FRAME_BYTES, GRAIN)

    def _patch_sizes(self) -> None:
        data = self._file_frames * FRAME_BYTES
        self._out.patch(4, struct.pack("<I", 36 + data))
        self._out.patch(40, struct.pack("<I", data))
        self._out.readable()

    def _rotate(self) -> None:
        """The current file is full: finish it and go on in the next one."""
        if self._series is None:
            raise self._out.fail(OSError(errno.EFBIG, "a WAV file holds at most 4 GiB; "
                                         "render less data"))
        self._patch_sizes()
        self._out.commit()
        log.info("%s: wrote %s, next file from here", self.name, self.files[-1])
        assert self._t0 is not None
        self._out = self._open_file(wall_time(self._t0 + self.frames / self.sample_rate))

    # -- audio ------------------------------------------------------------------------
    def _render(self, frames: int) -> None:
        while frames > 0:
            if self._file_frames >= self._max_frames:
                self._rotate()
            n = min(frames, CHUNK, self._max_frames - self._file_frames)
            block = self._buffer[:n]
            self.synth.render(block)
            peak = float(np.abs(block).max(initial=0.0))
            self.peak = max(self.peak, peak)
            if peak > 1.0:
                self.clipped += int(np.count_nonzero(np.abs(block) > 1.0))
            pcm = (np.clip(block, -1.0, 1.0) * 32767.0).astype("<i2")
            self._out.append(pcm.tobytes())
            self.frames += n
            self._file_frames += n
            frames -= n

    def _frame_of(self, time: float) -> int:
        """The frame of clock time ``time``: FluidSynth starts notes on its 64-frame grid,
        so the nearest grid point."""
        assert self._t0 is not None
        return round(max(time - self._t0, 0.0) * self.sample_rate / GRAIN) * GRAIN

    def _send(self, msg: mido.Message, time: float) -> None:
        if self._out.done:  # given up after a write error (reported then): nothing to write
            return
        if self._t0 is None:
            self._t0 = time  # run: the file starts at the first note
            log.info("%s: audio starts at %s (the first note)", self.name,
                     wall_time(time).isoformat(timespec="milliseconds"))
        target = self._frame_of(time)
        if target > self.frames:
            self._render(target - self.frames)
        if msg.type == "control_change" and msg.control == CC_ALL_SOUND_OFF:
            # All Sound Off would cut the release tail; apply it after the tail (in _close).
            self._deferred.append(msg)
            return
        self.synth.apply(msg)

    def tick(self, now: float) -> None:
        """``run``: render up to ``MARGIN`` before now; patch the header every
        ``flush_interval``."""
        if self.live is None or self.closed or self._t0 is None or self._out.done:
            return
        target = self._frame_of(now - MARGIN)
        if target > self.frames:
            self._render(target - self.frames)
        if self._last_flush is None:
            self._last_flush = now
        elif now - self._last_flush >= self.live.flush_interval:
            self._last_flush = now
            self._patch_sizes()

    def _discard_unfinished(self) -> bool:
        """``render``: the file is left as it was (the temporary one removed); ``run``:
        closed as usual (what is written is kept, the file valid)."""
        if self._file is None:  # a reload that failed opened it: it never wrote a file
            self.closed = True
            self.synth.delete()
            return True
        if self.live is not None:
            return False
        try:
            self._out.discard()
        finally:
            self.synth.delete()
        return True

    def _close(self) -> None:
        if self._file is None:  # never started (a reload that failed): no file to write
            self.synth.delete()
            return
        if self._out.done:  # given up after a write error: what was readable stays
            self.synth.delete()
            return
        try:
            if self._t0 is not None:  # no note, no tail: an empty file
                rendered = 0
                step = self.sample_rate // 20
                tail_min = int(TAIL_MIN * self.sample_rate)
                tail_max = int(TAIL_MAX * self.sample_rate)
                while rendered < tail_max and (rendered < tail_min
                                               or self.synth.active_voices()):
                    self._render(step)
                    rendered += step
            for msg in self._deferred:
                self.synth.apply(msg)
            if self.clipped:
                log.warning("%s: %d samples clipped (peak %.2f); lower audio.gain",
                            self.name, self.clipped, self.peak)
            self._patch_sizes()
            self._out.commit()
        except BaseException:
            self._out.discard()
            raise
        finally:
            self.synth.delete()
        log.info("%s: wrote %s (%.1f s of audio%s)", self.name, self._out.final_path(),
                 self.frames / self.sample_rate,
                 f" in {self.file_count} files" if self.file_count > 1 else "")


def _synth(config: Config) -> FluidSynth:
    soundfont = find_soundfont(config.audio.soundfont)
    return FluidSynth(soundfont, config.audio.sample_rate, config.audio.gain,
                      config.music.program)


def open_sink(path: str, config: Config) -> WavSink:
    """``wav:PATH`` in ``render``: one file, written atomically at the end."""
    return WavSink(Path(path), _synth(config))


def open_live_sink(path: str, config: Config, defer: bool = False) -> WavSink:
    """``wav:PATH`` in ``run``: from the first note, in real time, flushed, rotated
    (``defer``: the path checked, the file opened by ``start()``)."""
    return WavSink(Path(path), _synth(config), live=config.output, defer=defer)
