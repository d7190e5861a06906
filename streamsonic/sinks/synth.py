"""A FluidSynth synthesizer without an audio driver: MIDI messages in, float samples out.

Shared by the live audio sink (rendered inside the sounddevice callback) and the offline WAV
sink. pyfluidsynth and libfluidsynth are imported only when a synth is created, and their
absence becomes an AudioError that names the package to install.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import mido
import numpy as np

from streamsonic.errors import AudioError, SoundFontError

log = logging.getLogger(__name__)

DRUM_CHANNEL = 9
MIDI_CHANNELS = 16
#: FluidSynth renders in blocks of 64 frames (FLUID_BUFSIZE): a message takes effect at the
#: next 64-frame boundary of the synth's output, so placing it there is as exact as it gets.
GRAIN = 64


def _import_fluidsynth() -> ModuleType:
    try:
        # pyfluidsynth prints where it found the library when $CI is set; stdout may be
        # carrying our JSON events, so keep its print off it.
        with contextlib.redirect_stdout(sys.stderr):
            import fluidsynth  # noqa: PLC0415 - heavy, optional at import time
    except ImportError as err:  # raised by pyfluidsynth when libfluidsynth is missing too
        raise AudioError(
            f"FluidSynth is not available ({err}); install the library (Debian/Ubuntu: apt "
            "install libfluidsynth3; Fedora: dnf install fluidsynth-libs; macOS: brew install "
            "fluid-synth) and the Python binding (pip install pyfluidsynth), or use "
            "--output midi:NAME"
        ) from None
    return fluidsynth


def _write_float(module: ModuleType) -> Any:
    """``fluid_synth_write_float`` (pyfluidsynth only declares the s16 variant)."""
    func = module._fl.fluid_synth_write_float
    func.restype = ctypes.c_int
    func.argtypes = [
        ctypes.c_void_p, ctypes.c_int,
        ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
        ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
    ]
    return func


class FluidSynth:
    """One FluidSynth instance with a General MIDI SoundFont loaded.

    ``apply(msg)`` plays one mido channel message now; ``render(out)`` writes
    ``len(out)`` stereo float32 frames into a C-contiguous ``(n, 2)`` array slice. A message
    applied when ``frames`` (the output position) is a multiple of ``GRAIN`` starts exactly
    there; otherwise at the next multiple.
    Not thread-safe: one thread (the audio callback or the WAV writer) drives it.
    """

    def __init__(self, soundfont: Path, sample_rate: int, gain: float, program: int = 0) -> None:
        module = _import_fluidsynth()
        self.sample_rate = sample_rate
        self.frames = 0  # frames rendered so far
        self._synth = module.Synth(gain=float(gain), samplerate=float(sample_rate),
                                   channels=MIDI_CHANNELS)
        self._write = _write_float(module)
        self._handle = self._synth.synth
        sfid = self._synth.sfload(str(soundfont), update_midi_preset=1)
        if sfid is None or sfid < 0:
            self._synth.delete()
            raise SoundFontError(
                f"FluidSynth cannot load SoundFont {str(soundfont)!r} (not a valid .sf2?); "
                "pass another one with --soundfont PATH"
            )
        self.soundfont = soundfont
        self.sfid = sfid
        if program > 0:  # -1: per-stream programs come as program changes
            for channel in range(MIDI_CHANNELS):
                if channel != DRUM_CHANNEL:
                    self._synth.program_change(channel, program)

    def apply(self, msg: mido.Message) -> None:
        """Play one channel message (others are ignored)."""
        synth = self._synth
        kind = msg.type
        if kind == "note_on":
            if msg.velocity > 0:
                synth.noteon(msg.channel, msg.note, msg.velocity)
            else:
                synth.noteoff(msg.channel, msg.note)
        elif kind == "note_off":
            synth.noteoff(msg.channel, msg.note)
        elif kind == "control_change":
            synth.cc(msg.channel, msg.control, msg.value)
        elif kind == "program_change":
            synth.program_change(msg.channel, msg.program)
        elif kind == "pitchwheel":
            synth.pitch_bend(msg.channel, msg.pitch)

    def render(self, out: np.ndarray) -> None:
        """Fill ``out`` (float32, shape (n, 2), C-contiguous) with the next n frames."""
        frames = out.shape[0]
        if frames == 0:
            return
        ptr = out.ctypes.data
        self._write(self._handle, frames, ptr, 0, 2, ptr, 1, 2)
        self.frames += frames

    def active_voices(self) -> int:
        """Voices sounding now (0 once every note has fully released)."""
        return int(self._synth.get_active_voice_count())

    def delete(self) -> None:
        """Free the synth."""
        if self._synth is not None:
            self._synth.delete()
            self._synth = None
