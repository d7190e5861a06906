"""Pure music helpers: keys, scales, pitch candidates, velocity, channels and programs."""

from __future__ import annotations

import fnmatch
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from streamsonic.config import AccentConfig, VoiceRule

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


@dataclass(frozen=True, slots=True)
class Waypoint:
    """One note the model adds before a data note: where a plain path would put it (an
    index into the scale's ascending candidates)."""

    index: int


def lead_in(prev: int, target: int, limit: int) -> list[Waypoint]:
    """How many notes lead from candidate ``prev`` (the note played last) to candidate
    ``target`` (the next data note), indices into the scale's ascending candidates, and
    where a plain path of scale steps would put them (the model chooses the actual notes,
    see ``Conductor``).

    * the same note again: one neighbour note (a step above or below), so that a flat
      signal does not repeat one pitch;
    * a step: nothing to add;
    * further: one note per scale step in between, at most ``limit`` (then the path takes
      larger intervals, evenly spread), e.g. 60 -> [62, 64] -> 65 in C major.

    ``limit`` 0 adds nothing.
    """
    gap = target - prev
    size = abs(gap)
    if limit <= 0 or size == 1:
        return []
    if size == 0:
        return [Waypoint(prev + 1)]
    d = 1 if gap > 0 else -1
    n = min(limit + 1, size)  # intervals
    return [Waypoint(prev + d * round(size * j / n)) for j in range(1, n)]


def in_scale(pitch: int, scale: str, key: str) -> bool:
    """Whether ``pitch`` belongs to ``scale`` in ``key``."""
    return (pitch - parse_key(key)) % 12 in SCALES[scale]


def velocity_for(anomaly: float, vmin: int, vmax: int, threshold: float) -> int:
    """Loudness of an ordinary (unaccented) note from its anomaly score (0..1).

    Expected values play at ``vmin``; the closer the score comes to the accent
    ``threshold``, the louder, up to ``vmax`` (accented notes play at the accent velocity,
    above every ordinary note). NaN plays at ``vmin``.
    """
    if math.isnan(anomaly) or anomaly <= 0.0:
        return vmin
    frac = min(anomaly / threshold, 1.0)
    return round(vmin + (vmax - vmin) * frac)


#: An excess of this many widths of the ordinary range reaches the end of the headroom
#: band: 2 decades of excess over the band (an octave by default: 6 semitones a decade, so
#: that 10 times a value's excess plays at least 3 semitones beyond it after the scale's
#: rounding, even where both are far out: 4 a decade left 2 on a falling trend).
EXCESS_FULL = 100.0


def beyond_pitch(position: float, low: int, high: int, headroom: int) -> float:
    """The (fractional) pitch of a value beyond the ordinary range.

    Ordinary values (``position`` 0..1) play in ``low..high``; a value beyond them plays
    in a band of ``headroom`` semitones above ``high`` (or below ``low``), further out for
    a larger excess, on a log scale: a value 0.1 range-widths out plays a quarter of a
    semitone beyond the range, 1 width out 1.8 semitones, 10 widths out 6, 100 widths out
    (or more) at the band's end (with the default octave). Order is kept and one extreme
    value never squeezes the others.
    """
    excess = position - 1.0 if position > 1.0 else -position
    reach = headroom * min(math.log1p(max(excess, 0.0)) / math.log1p(EXCESS_FULL), 1.0)
    return high + reach if position > 1.0 else low - reach


def pan_for(index: int, spread: float) -> int:
    """MIDI pan (0..127) of the ``index``-th voice: the first in the centre, the next ones
    spread over the stereo field (-spread..+spread) so that neighbours stay apart."""
    # van der Corput sequence in base 2, from its second term: 1/2, 1/4, 3/4, 1/8, 5/8...
    k, x, denom = index + 1, 0.0, 1.0
    while k:
        denom *= 2.0
        x += (k & 1) / denom
        k >>= 1
    return max(0, min(127, round(64 + (2.0 * x - 1.0) * spread * 63)))


def seconds_per_beat(tempo: float) -> float:
    """Seconds per beat at ``tempo`` beats per minute."""
    return 60.0 / tempo


@dataclass(frozen=True, slots=True)
class Earcon:
    """The short sound that marks an accented note: its own timbre on its own channel
    (General MIDI percussion by default), just after the note so it does not mask it, a
    different sound for a value above what was expected than for one below."""

    channel: int  # 0-based
    program: int
    note_up: int
    note_down: int
    velocity: int
    delay: float  # seconds after the note starts
    length: float  # seconds
    # Earcons of accents close together (several streams at once) start at least `gap`
    # seconds apart, so that each can be heard and counted; one that would start more than
    # `max_lag` seconds late is left out (0: every earcon at its note's time).
    gap: float = 0.0
    max_lag: float = 0.0

    def note_for(self, direction: int) -> int:
        """The earcon's MIDI note for an anomaly in ``direction`` (+1 up, -1 down)."""
        return self.note_down if direction < 0 else self.note_up


def earcon_for(accent: AccentConfig) -> Earcon | None:
    """The earcon ``accent`` asks for, or None when accents or earcons are off."""
    if not (accent.enabled and accent.earcon):
        return None
    return Earcon(accent.earcon_channel - 1, accent.earcon_program, accent.earcon_note_up,
                  accent.earcon_note_down, accent.earcon_velocity, accent.earcon_delay,
                  accent.earcon_length, accent.earcon_gap, accent.earcon_max_lag)


@dataclass(frozen=True, slots=True)
class Voice:
    """The sound of one stream."""

    channel: int  # 0-based MIDI channel
    program: int
    muted: bool = False
    pan: int = 64  # MIDI pan of the channel: 0 left, 64 centre, 127 right


@dataclass
class VoiceAllocator:
    """Gives each stream a MIDI channel and General MIDI program.

    Rules (``[[voices]]`` in the config) are matched in order by fnmatch glob on the stream
    name; the first match decides the program, an explicit channel, and muting. Streams
    without an explicit channel get the free melodic channels (1-9, 11-16) in order of first
    appearance; channel 10 stays for percussion (and the accent earcon; ``reserved``).
    Without a rule's or a fixed ``default_program`` (-1), each channel takes the next
    program of ``palette``; each channel gets its own place in the stereo field
    (:func:`pan_for`). When there are more streams than channels,
    ``overflow = "share"`` gives the extra streams the channel with the fewest streams
    (they then share its program: the first stream's), and ``"drop"`` mutes them; a warning
    is logged once either way. :meth:`release` gives an evicted stream's share back; a
    channel no stream uses any more is free, and the next stream on it sets its program.
    """

    rules: tuple[VoiceRule, ...] = ()
    default_program: int = 0
    overflow: str = "share"
    palette: tuple[int, ...] = (0,)
    pan_spread: float = 0.0
    reserved: frozenset[int] = frozenset({PERCUSSION_CHANNEL})
    _voices: dict[str, Voice] = field(default_factory=dict)
    _load: dict[int, int] = field(default_factory=dict)
    _program: dict[int, int] = field(default_factory=dict)
    _pan: dict[int, int] = field(default_factory=dict)
    _warned: bool = False
    _claims: int = 0  # channels given a program so far (the palette's next index)
    #: The rules (by match) warned of: a program that their channel cannot play
    _unplayable: set[str] = field(default_factory=set)

    def voice(self, stream: str) -> Voice:
        """The voice of ``stream``, allocating one on first use."""
        found = self._voices.get(stream)
        if found is not None:
            return found
        rule = next((r for r in self.rules if fnmatch.fnmatchcase(stream, r.match)), None)
        program = self.default_program
        if program < 0:  # each channel its own timbre, from the palette
            program = self.palette[self._claims % len(self.palette)]
        if rule is not None and rule.program >= 0:
            program = rule.program
        muted = bool(rule and rule.mute)
        if rule is not None and rule.channel > 0:
            channel = rule.channel - 1
        else:
            channel, muted_by_overflow = self._free_channel(stream)
            muted = muted or muted_by_overflow
        # A channel plays one program: the first stream that claims it sets it.
        if channel not in self._program:
            self._program[channel] = program
            self._claims += 1
        elif (rule is not None and rule.program >= 0 and self._program[channel] != rule.program
              and rule.match not in self._unplayable):  # (said once a rule: not silently)
            self._unplayable.add(rule.match)
            log.warning("stream %r: its [[voices]] rule (match = %r) gives program %d on "
                        "channel %d, but that channel already plays program %d (a channel "
                        "plays one program: its first stream's); it plays program %d: give "
                        "the rule a channel of its own", stream, rule.match, rule.program,
                        channel + 1, self._program[channel], self._program[channel])
        program = self._program[channel]
        pan = self._pan.setdefault(channel, pan_for(len(self._pan), self.pan_spread))
        self._load[channel] = self._load.get(channel, 0) + 1
        voice = Voice(channel=channel, program=program, muted=muted, pan=pan)
        self._voices[stream] = voice
        return voice

    def _free_channel(self, stream: str) -> tuple[int, bool]:
        melodic = [c for c in range(16) if c not in self.reserved]
        for c in melodic:
            if self._load.get(c, 0) == 0:
                return c, False
        if not self._warned:
            log.warning(
                "more streams than the %d melodic MIDI channels; from stream %r on, %s "
                "(music.overflow)",
                len(melodic),
                stream,
                "streams share channels" if self.overflow == "share" else "extra streams are muted",
            )
            self._warned = True
        channel = min(melodic, key=lambda c: (self._load.get(c, 0), c))
        return channel, self.overflow == "drop"

    def release(self, stream: str) -> Voice | None:
        """Forget ``stream``'s voice (an evicted stream): its channel carries one stream
        fewer. Returns the voice it had, or None if it had none."""
        voice = self._voices.pop(stream, None)
        if voice is None:
            return None
        load = self._load.get(voice.channel, 0) - 1
        if load > 0:
            self._load[voice.channel] = load
        else:  # free again: the next stream on it chooses its program
            self._load.pop(voice.channel, None)
            self._program.pop(voice.channel, None)
        return voice

    @property
    def voices(self) -> dict[str, Voice]:
        """Every stream's voice so far."""
        return dict(self._voices)
