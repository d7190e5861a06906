"""``wav:PATH``: offline audio through FluidSynth, faster than real time.

Messages arrive in time order with virtual times (seconds from 0). The synth is rendered up to
each message's frame, the message is applied there, and rendering continues; ``close`` renders
a release tail (until every voice has died away, at most ``TAIL_MAX`` seconds) and finishes
a 16-bit stereo WAV file written with the standard library's ``wave``.
"""

from __future__ import annotations

import logging
import wave
from pathlib import Path

import mido
import numpy as np

from streamsonic.config import Config
from streamsonic.errors import OutputError
from streamsonic.sinks.base import CC_ALL_SOUND_OFF, Sink
from streamsonic.sinks.outfile import OutputFile
from streamsonic.sinks.synth import GRAIN, FluidSynth
from streamsonic.soundfont import find_soundfont

log = logging.getLogger(__name__)

CHUNK = 8192  # frames rendered per synth call
TAIL_MIN = 0.25  # seconds always rendered after the last message
TAIL_MAX = 2.0  # release tail limit (seconds)


class WavSink(Sink):
    """Renders timed messages through FluidSynth into a WAV file."""

    def __init__(self, path: Path, synth: FluidSynth) -> None:
        super().__init__(f"wav:{path}")
        self.path = path
        self.synth = synth
        self.sample_rate = synth.sample_rate
        self.frames = 0  # frames written so far
        self._buffer = np.zeros((CHUNK, 2), dtype=np.float32)
        self._deferred: list[mido.Message] = []
        self.peak = 0.0
        self.clipped = 0
        try:
            self._out = OutputFile(path, "WAV file")
        except OutputError:
            synth.delete()
            raise
        self._wav = wave.open(self._out.file, "wb")  # noqa: SIM115 - closed in _close
        self._wav.setnchannels(2)
        self._wav.setsampwidth(2)
        self._wav.setframerate(self.sample_rate)

    def _render(self, frames: int) -> None:
        while frames > 0:
            n = min(frames, CHUNK)
            block = self._buffer[:n]
            self.synth.render(block)
            peak = float(np.abs(block).max(initial=0.0))
            self.peak = max(self.peak, peak)
            if peak > 1.0:
                self.clipped += int(np.count_nonzero(np.abs(block) > 1.0))
            pcm = (np.clip(block, -1.0, 1.0) * 32767.0).astype("<i2")
            try:
                self._wav.writeframesraw(pcm.tobytes())
            except OSError as err:
                raise self._out.fail(err) from None
            self.frames += n
            frames -= n

    def _send(self, msg: mido.Message, time: float) -> None:
        # FluidSynth starts notes on its 64-frame grid: apply at the nearest grid point
        target = round(max(time, 0.0) * self.sample_rate / GRAIN) * GRAIN
        if target > self.frames:
            self._render(target - self.frames)
        if msg.type == "control_change" and msg.control == CC_ALL_SOUND_OFF:
            # All Sound Off would cut the release tail; apply it after the tail (in _close).
            self._deferred.append(msg)
            return
        self.synth.apply(msg)

    def _close(self) -> None:
        try:
            rendered = 0
            step = self.sample_rate // 20
            tail_min = int(TAIL_MIN * self.sample_rate)
            tail_max = int(TAIL_MAX * self.sample_rate)
            while rendered < tail_max and (rendered < tail_min or self.synth.active_voices()):
                self._render(step)
                rendered += step
            for msg in self._deferred:
                self.synth.apply(msg)
            if self.clipped:
                log.warning("%s: %d samples clipped (peak %.2f); lower audio.gain",
                            self.name, self.clipped, self.peak)
            self._wav.close()
        except OSError as err:
            raise self._out.fail(err) from None
        except BaseException:
            self._out.discard()
            raise
        finally:
            self.synth.delete()
        self._out.commit()
        log.info("%s: wrote %.1f s of audio", self.name, self.frames / self.sample_rate)


def open_sink(path: str, config: Config) -> WavSink:
    """Factory for ``wav:PATH`` (looked up by streamsonic.outputs)."""
    soundfont = find_soundfont(config.audio.soundfont)
    synth = FluidSynth(soundfont, config.audio.sample_rate, config.audio.gain,
                       config.music.program)
    return WavSink(Path(path), synth)
