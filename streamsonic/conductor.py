"""Per-stream musical state: normalization, the LSTM state, voice, and note making.

The conductor turns (possibly aggregated) samples into :class:`NoteEvent`s. It owns one
:class:`StreamState` per stream (rolling window, the stepper's hidden state, a seeded
random generator, its voice) and steps all streams that play at the same moment as one
batch. It knows nothing about time or outputs: the engine (live) or the renderer
(offline) says when notes start; the scheduler sends them.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamsonic.config import Config
from streamsonic.encoding import PitchEncoding
from streamsonic.events import NoteEvent, Sample
from streamsonic.model.choice import Chooser
from streamsonic.model.stepper import PitchStepper
from streamsonic.music import VoiceAllocator, scale_pitches, seconds_per_beat, velocity_for
from streamsonic.normalize import RollingNormalizer

log = logging.getLogger(__name__)


@dataclass
class StreamState:
    """Everything streamsonic remembers about one stream."""

    name: str
    normalizer: RollingNormalizer
    model_state: Any
    rng: np.random.Generator
    notes: int = 0
    samples: int = 0


@dataclass(frozen=True, slots=True)
class Reading:
    """Where a value stood in its stream's rolling window when it was read."""

    normalized: float  # 0..1, the pitch position
    zscore: float  # deviation from the rolling mean in standard deviations (loudness)


@dataclass(frozen=True, slots=True)
class Cue:
    """A request to play one note: the sample that drives it and when it starts.

    ``reading`` is the sample's place in its window when it arrived (a sample that waited in
    a queue plays as it stood then, not against values that came after it); without one,
    the window as it is now decides. ``normalized`` overrides the pitch position only
    (``render`` normalizes over the whole file); ``duration``/``velocity`` override the
    configured ones (the temporal model decides them in rhythm = "model").
    """

    sample: Sample
    start: float
    normalized: float | None = None
    duration: float | None = None
    velocity: int | None = None
    reading: Reading | None = None


def stream_seed(seed: int, stream: str) -> int:
    """A per-stream seed: the same stream gets the same sequence whatever else plays."""
    return (seed * 1_000_003 + zlib.crc32(stream.encode("utf-8"))) & 0xFFFFFFFF


class Conductor:
    """Turns cues into notes for many streams, batching the LSTM steps."""

    def __init__(self, config: Config, stepper: PitchStepper, encoding: PitchEncoding) -> None:
        self.stepper = stepper
        self.encoding = encoding
        self.streams: dict[str, StreamState] = {}
        self.allocator = VoiceAllocator(
            rules=config.voices,
            default_program=config.music.program,
            overflow=config.music.overflow,
        )
        self.configure(config)

    def configure(self, config: Config) -> None:
        """Apply (or re-apply, on reload) the musical settings; stream state is kept."""
        self.config = config
        music = config.music
        candidates = scale_pitches(music.scale, music.key, music.low, music.high)
        self.chooser = Chooser(
            self.encoding,
            candidates,
            influence=config.model.influence,
            temperature=config.model.temperature,
            kernel_width=config.model.kernel_width,
        )
        self.note_seconds = music.note_length * seconds_per_beat(music.tempo)

    def state(self, stream: str) -> StreamState:
        """The stream's state, created on first sight."""
        st = self.streams.get(stream)
        if st is None:
            st = StreamState(
                name=stream,
                normalizer=RollingNormalizer.from_config(self.config.normalize),
                model_state=self.stepper.initial_state(1),
                rng=np.random.default_rng(stream_seed(self.config.model.seed, stream)),
            )
            self.streams[stream] = st
            self.allocator.voice(stream)
        return st

    def observe(self, sample: Sample) -> Reading:
        """Add a sample to its stream's rolling window (every sample, played or not) and
        return where its value stands in the window."""
        st = self.state(sample.stream)
        st.normalizer.push(sample.time, sample.value)
        st.samples += 1
        return Reading(st.normalizer.normalize(sample.value), st.normalizer.zscore(sample.value))

    def read(self, stream: str, value: float) -> Reading:
        """Where ``value`` stands in ``stream``'s current window (for aggregates)."""
        n = self.state(stream).normalizer
        return Reading(n.normalize(value), n.zscore(value))

    def play(self, cues: list[Cue]) -> list[NoteEvent]:
        """One LSTM timestep for each cue's stream (one cue per stream), as one batch.

        Returns the notes, in cue order, without those of muted voices (their model state
        still advances so unmuting continues the same melody).
        """
        if not cues:
            return []
        states = [self.state(c.sample.stream) for c in cues]
        readings = [c.reading or self.read(c.sample.stream, c.sample.value) for c in cues]
        normalized = np.array(
            [r.normalized if c.normalized is None else c.normalized
             for c, r in zip(cues, readings, strict=True)],
            dtype=np.float64,
        )
        data_pitch, data_input = self.chooser.encode(normalized)
        batch_state = self.stepper.stack([st.model_state for st in states])
        logits, pending = self.stepper.propose(data_input, batch_state)
        # A temporal model also predicts each note's duration and loudness.
        timings = getattr(self.stepper, "last_timings", None)
        chosen = self.chooser.choose(logits, data_pitch, [st.rng for st in states])
        new_state = self.stepper.commit(pending, self.chooser.candidate_input(chosen))
        for st, s in zip(states, self.stepper.split(new_state, len(states)), strict=True):
            st.model_state = s
        music = self.config.music
        notes: list[NoteEvent] = []
        for i, (cue, st, norm, idx, reading) in enumerate(
            zip(cues, states, normalized, chosen, readings, strict=True)
        ):
            st.notes += 1
            voice = self.allocator.voice(st.name)
            if voice.muted:
                continue
            velocity, duration = cue.velocity, cue.duration
            if timings:
                velocity = timings[i].velocity if velocity is None else velocity
                duration = timings[i].duration if duration is None else duration
            if velocity is None:
                velocity = velocity_for(reading.zscore, music.velocity_min, music.velocity_max,
                                        music.velocity_z)
            notes.append(
                NoteEvent(
                    stream=st.name,
                    time=cue.sample.time,
                    value=cue.sample.value,
                    normalized=float(norm),
                    pitch=int(self.chooser.candidates[idx]),
                    velocity=int(velocity),
                    duration=float(duration if duration is not None else self.note_seconds),
                    channel=voice.channel,
                    program=voice.program,
                    start=cue.start,
                )
            )
        return notes
