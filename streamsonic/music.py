"""Pure music helpers: keys, scales, pitch candidates, velocity, channels and programs."""

from __future__ import annotations

import fnmatch
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from streamsonic.config import VoiceRule

log = logging.getLogger(__name__)

#: Semitone offsets of each scale from its tonic.
SCALES: dict[str, tuple[int, ...]] = {
    "chromatic": tuple(range(12)),
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "pentatonic": (0, 2, 4, 7, 9),
    "minor-pentatonic": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "harmonic-minor": (0, 2, 3, 5, 7, 8, 11),
    "whole-tone": (0, 2, 4, 6, 8, 10),
}

_NOTE_INDEX = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}

PERCUSSION_CHANNEL = 9  # "channel 10" in General MIDI's 1-based numbering


def parse_key(name: str) -> int:
    """``"C"``, ``"F#"``, ``"Bb"``, ``"c#"`` -> pitch class 0..11."""
    text = name.strip()
    if not text or text[0].upper() not in _NOTE_INDEX:
        raise ValueError(f"{name!r} is not a key; write a note name such as C, F#, Bb")
    pc = _NOTE_INDEX[text[0].upper()]
    for accidental in text[1:]:
        if accidental in ("#", "♯"):
            pc += 1
        elif accidental in ("b", "♭"):
            pc -= 1
        else:
            raise ValueError(f"{name!r} is not a key; write a note name such as C, F#, Bb")
    return pc % 12


def scale_pitches(scale: str, key: str, low: int, high: int) -> np.ndarray:
    """All MIDI pitches of ``scale`` in ``key`` within ``low..high`` (inclusive), ascending."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    tonic = parse_key(key)
    allowed = {(tonic + step) % 12 for step in SCALES[scale]}
    pitches = [p for p in range(low, high + 1) if p % 12 in allowed]
    if not pitches:
        raise ValueError(f"no pitch of {key} {scale} lies in {low}..{high}")
    return np.asarray(pitches, dtype=np.int64)


def in_scale(pitch: int, scale: str, key: str) -> bool:
    """Whether ``pitch`` belongs to ``scale`` in ``key``."""
    return (pitch - parse_key(key)) % 12 in SCALES[scale]


def velocity_for(z: float, vmin: int, vmax: int, z_full: float) -> int:
    """Loudness from how far the value lies from its rolling mean, in standard deviations.

    Ordinary values (|z| near 0) play at ``vmin``; anomalies reach ``vmax`` at ``|z| >=
    z_full``. NaN (no spread yet) plays at ``vmin``.
    """
    if math.isnan(z):
        return vmin
    frac = min(abs(z) / z_full, 1.0)
    return round(vmin + (vmax - vmin) * frac)


def seconds_per_beat(tempo: float) -> float:
    """Seconds per beat at ``tempo`` beats per minute."""
    return 60.0 / tempo


@dataclass(frozen=True, slots=True)
class Voice:
    """The sound of one stream."""

    channel: int  # 0-based MIDI channel
    program: int
    muted: bool = False


@dataclass
class VoiceAllocator:
    """Gives each stream a MIDI channel and General MIDI program.

    Rules (``[[voices]]`` in the config) are matched in order by fnmatch glob on the stream
    name; the first match decides the program, an explicit channel, and muting. Streams
    without an explicit channel get the free melodic channels (1-9, 11-16) in order of first
    appearance; channel 10 stays for percussion. When there are more streams than channels,
    ``overflow = "share"`` gives the extra streams the channel with the fewest streams
    (they then share its program: the first stream's), and ``"drop"`` mutes them; a warning
    is logged once either way.
    """

    rules: tuple[VoiceRule, ...] = ()
    default_program: int = 0
    overflow: str = "share"
    _voices: dict[str, Voice] = field(default_factory=dict)
    _load: dict[int, int] = field(default_factory=dict)
    _program: dict[int, int] = field(default_factory=dict)
    _warned: bool = False

    def voice(self, stream: str) -> Voice:
        """The voice of ``stream``, allocating one on first use."""
        found = self._voices.get(stream)
        if found is not None:
            return found
        rule = next((r for r in self.rules if fnmatch.fnmatchcase(stream, r.match)), None)
        program = self.default_program
        if rule is not None and rule.program >= 0:
            program = rule.program
        muted = bool(rule and rule.mute)
        if rule is not None and rule.channel > 0:
            channel = rule.channel - 1
        else:
            channel, muted_by_overflow = self._free_channel(stream)
            muted = muted or muted_by_overflow
        # A channel plays one program: the first stream that claims it sets it.
        program = self._program.setdefault(channel, program)
        self._load[channel] = self._load.get(channel, 0) + 1
        voice = Voice(channel=channel, program=program, muted=muted)
        self._voices[stream] = voice
        return voice

    def _free_channel(self, stream: str) -> tuple[int, bool]:
        melodic = [c for c in range(16) if c != PERCUSSION_CHANNEL]
        for c in melodic:
            if self._load.get(c, 0) == 0:
                return c, False
        if not self._warned:
            log.warning(
                "more streams than the 15 melodic MIDI channels; from stream %r on, %s "
                "(music.overflow)",
                stream,
                "streams share channels" if self.overflow == "share" else "extra streams are muted",
            )
            self._warned = True
        channel = min(melodic, key=lambda c: (self._load.get(c, 0), c))
        return channel, self.overflow == "drop"

    @property
    def voices(self) -> dict[str, Voice]:
        """Every stream's voice so far."""
        return dict(self._voices)
