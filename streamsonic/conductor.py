"""Per-stream musical state: normalization, the LSTM state, voice, and note making.

The conductor turns (possibly aggregated) samples into :class:`NoteEvent`s. It owns one
:class:`StreamState` per stream (rolling window, the stepper's hidden state, a seeded
random generator, its voice) and steps all streams that play at the same moment as one
batch. It knows nothing about time or outputs: the engine (live) or the renderer
(offline) says when notes start; the scheduler sends them.
"""

from __future__ import annotations

import bisect
import logging
import math
import sys
import time
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from streamsonic.accent import Accents
from streamsonic.anomaly import AnomalyScorer
from streamsonic.config import Config
from streamsonic.encoding import PitchEncoding
from streamsonic.events import NoteEvent, Sample
from streamsonic.model.choice import Chooser
from streamsonic.model.stepper import NumpyPitchStepper, PhraseSetup, PitchStepper
from streamsonic.music import (
    PERCUSSION_CHANNEL,
    SCALES,
    Voice,
    VoiceAllocator,
    Waypoint,
    beyond_pitch,
    earcon_for,
    lead_in,
    scale_pitches,
    seconds_per_beat,
    velocity_for,
)
from streamsonic.normalize import RollingNormalizer
from streamsonic.stats import RateLimitedLog

if TYPE_CHECKING:  # the temporal model needs torch; the pitch model's CPU path does not
    from typing_extensions import TypeIs

    from streamsonic.model.temporal import TemporalStepper, Timing

log = logging.getLogger(__name__)

#: The loudness of a note the model adds, as a share of ``music.velocity_min``: below every
#: note of the data, so the data's notes stand out of the phrase.
MODEL_VELOCITY = 0.8
#: The shortest note the model adds (seconds): a cue's span holds at most span / MIN_NOTE
#: notes, so a fast feed (``--max-rate 1000``) gets none and plays one note per sample.
MIN_NOTE = 0.02
#: Paths per stream that the search for the model's notes keeps (see Conductor._search).
BEAM = 8


@dataclass
class StreamState:
    """Everything streamsonic remembers about one stream."""

    name: str
    normalizer: RollingNormalizer
    scorer: AnomalyScorer
    model_state: Any
    rng: np.random.Generator
    notes: int = 0
    samples: int = 0
    log: bool = False  # placed and judged on the log of its values (positive, skewed)
    accents: Accents = field(default_factory=Accents)  # its last accent and what followed
    seen: float = 0.0  # the conductor's clock at its last sample (LRU order, idle eviction)
    # Phrases (model.passing_notes > 0): the candidate index of the last note played (-1:
    # none, or beyond the range), and the model's logits for the note after it.
    last: int = -1
    next_logits: np.ndarray | None = None
    held: float = math.nan  # the data's pitch at the last data note
    anchor: int = -1  # and the candidate that note played


@dataclass(frozen=True, slots=True)
class Reading:
    """Where a value stood in its stream when it was read, and how surprising it was."""

    normalized: float  # 0..1, the place in the ordinary range (music.low..high)
    anomaly: float = 0.0  # 0..1, the stream's anomaly score for the value
    direction: int = 0  # +1 above what was expected, -1 below, 0 neither
    accent: bool = False  # the score crossed the threshold here (the onset of an anomaly)
    beyond: float | None = None  # beyond the ordinary range: the pitch it plays (headroom)
    back: bool = False  # on its way back from an accent: plays at ordinary loudness


@dataclass(frozen=True, slots=True)
class Cue:
    """A request to play one note: the sample that drives it and when it starts.

    ``reading`` is the sample's place in its window when it arrived (a sample that waited in
    a queue plays as it stood then, not against values that came after it); without one,
    the window as it is now decides. ``normalized`` overrides the place in the ordinary
    range only (``render`` normalizes over the whole file; beyond 0..1 plays in the
    headroom, like a live value far out); ``duration``/``velocity`` override the
    configured ones (the temporal model decides them in rhythm = "model"). ``span`` is the
    least time until the stream's next cue can start (the notes the model adds before the
    data's note fit in it); None: what the clock allows (``1 / clock.max_rate`` in event
    mode, ``clock.step`` beats in tick mode).
    """

    sample: Sample
    start: float
    normalized: float | None = None
    duration: float | None = None
    velocity: int | None = None
    reading: Reading | None = None
    span: float | None = None


#: What a conductor steps: a pitch model, or the temporal model (pitch and timing).
Stepper: TypeAlias = "PitchStepper | TemporalStepper"


def is_temporal(stepper: object) -> TypeIs[TemporalStepper]:
    """Whether ``stepper`` is the temporal model's. Without importing it: the CPU run path
    of the pitch model stays torch-free, and where nothing imported the temporal module
    no stepper can be one of its."""
    module = sys.modules.get("streamsonic.model.temporal")
    return module is not None and isinstance(stepper, module.TemporalStepper)


@dataclass(frozen=True, slots=True)
class _Proposal:
    """A stepper's proposal for a batch of streams (:meth:`Conductor._propose`)."""

    logits: np.ndarray  # (N, n_classes), with the data in the input slot
    timings: list[Timing] | None  # the temporal model's timing of each note; None without one
    commit: Callable[[np.ndarray], Sequence[object]]  # chosen inputs -> each stream's new state


@dataclass(frozen=True, slots=True)
class _Beam:
    """A stream's paths in the search for the model's notes (:meth:`Conductor._search`),
    one row per path: its score (the log-probability of its notes), its notes (the note
    played before them first), the model state after them and the logits for the next."""

    scores: np.ndarray  # (k,)
    paths: np.ndarray  # (k, 1 + notes) candidate indices
    state: Any  # the stepper's batched state, k rows
    logits: np.ndarray  # (k, n_classes) float64


@dataclass(frozen=True, slots=True)
class StepResult:
    """One timestep of N streams (:meth:`Conductor.play`): one entry per cue, in cue order."""

    pitches: np.ndarray  # (N,) int64: the pitch each stream plays (beyond the range: the data's)
    inputs: np.ndarray  # (N,) the network input each stream now remembers: its chosen candidate
    timings: list[Timing] | None  # the temporal model's timing of each note; None without one
    notes: list[NoteEvent]  # the notes to schedule, without those of muted voices


def stream_seed(seed: int, stream: str) -> int:
    """A per-stream seed: the same stream gets the same sequence whatever else plays."""
    return (seed * 1_000_003 + zlib.crc32(stream.encode("utf-8"))) & 0xFFFFFFFF


#: Values a warm-up stream plays (:func:`warm_up`): a rise, a leap, a spike and a drop, so
#: that the normalizer, the anomaly scorer, the phrase search and the choice all run.
WARM_UP_VALUES = (1.0, 2.0, 3.0, 2.5, 9.0, 2.0, 40.0, 1.0, -30.0, 2.0)


def warm_up(config: Config, stepper: Stepper, encoding: PitchEncoding) -> None:
    """Play a few samples on a scratch conductor sharing ``stepper``, one stream alone and
    two together, so that the compiled kernels a stream's first samples call (normalizer,
    anomaly scorer, phrases of one stream and of several, choice) are loaded before the
    first real one: the first call of each reads it from numba's cache (about 35 ms in all
    for one stream, measured), or compiles it where nothing is cached yet, which would
    delay the first note."""
    scratch = Conductor(config, stepper, encoding)
    for i, value in enumerate(WARM_UP_VALUES):
        cues = []
        for name in ("warm-up", "warm-up 2", "warm-up 3"):
            sample = Sample(name, float(i), value)
            cues.append(Cue(sample, float(i), reading=scratch.observe(sample)))
        scratch.play(cues[:1])
        scratch.play(cues[1:])


#: The spread of a stream's values that :func:`_widths_out` measures excess in: between
#: these quantiles of its window (a spike in it moves them little).
SPREAD_Q = (0.02, 0.98)


def _widths_out(norm: RollingNormalizer, position: float,
                unit: Callable[[float], float] | None) -> float:
    """A place beyond the auto-ranging reference (``position`` outside 0..1, its excess in
    the reference's widths), its excess counted in widths of what the stream's values
    spread over instead (``SPREAD_Q`` of the window) where those are narrower: a reference
    sized for a trend to cross, or widened for a swing, is wider than the values, and a
    spike of 10 times their range must sound far beyond one of 1.1 times (not 2 semitones
    above it). A place inside 0..1 (or NaN) is returned as it is. ``unit``: the map from
    the normalizer's values to the position's units (``math.exp`` for the raw excess of a
    stream on logs)."""
    if 0.0 <= position <= 1.0 or math.isnan(position):
        return position
    edges = norm.edges()
    if edges is None or len(norm) < 2:
        return position
    lo, hi = (norm.percentile(q) for q in SPREAD_Q)
    e_lo, e_hi = edges
    if unit is not None:
        lo, hi, e_lo, e_hi = unit(lo), unit(hi), unit(e_lo), unit(e_hi)
    spread, width = hi - lo, e_hi - e_lo
    if not 0.0 < spread < width:
        return position
    if position > 1.0:
        return 1.0 + (position - 1.0) * (width / spread)
    return position * (width / spread)


@dataclass
class _RunJob:
    """What a compiled run of one stream's cues steps (:meth:`Conductor.start_run`): each
    cue's reading, data pitch, nearest candidate, whether it adds no notes (an accent),
    whether it lies beyond the range, how many it may add; where it starts (``begin``: the
    stream's state, logits, held pitch, anchor and last note; or the end of ``after``,
    the stream's run before it) and where it ends (``end``: :meth:`NumpyPitchStepper.run`'s
    result)."""

    cues: list[Cue]
    readings: list[Reading]
    data_pitch: np.ndarray
    pitch_list: list[float]
    targets: np.ndarray
    plain: np.ndarray
    beyond: np.ndarray
    limits: np.ndarray
    begin: tuple[Any, np.ndarray, float, int, int] | None = None
    after: _RunJob | None = None
    end: tuple[np.ndarray, np.ndarray, np.ndarray, Any, np.ndarray] | None = None


@dataclass
class _PlainJob:
    """What a compiled run of one stream's cues at one note per sample steps
    (:meth:`Conductor.start_run` without phrases): each cue's reading, the data's network
    input and pitch, its draw for the choice; where it starts (``begin``: the stream's
    state; or the end of ``after``, the stream's run before it) and where it ends (``end``:
    :meth:`NumpyPitchStepper.plain_run`'s result)."""

    cues: list[Cue]
    readings: list[Reading]
    data_input: np.ndarray
    data_pitch: np.ndarray
    uniform: np.ndarray
    begin: Any = None
    after: _PlainJob | None = None
    end: tuple[np.ndarray, Any] | None = None

    def step(self, stepper: NumpyPitchStepper, chooser: Chooser) -> None:
        if self.begin is None:  # where the run before it ended
            before = self.after
            assert before is not None and before.end is not None, "steps in order"
            self.begin = before.end[1]
        self.end = stepper.plain_run(chooser, self.data_input, self.data_pitch, self.uniform,
                                     self.begin)
        self.after = None  # (the run before it may go)


class Run:
    """One stream's run of cues between :meth:`Conductor.start_run` and its results:
    :meth:`step` (any thread; the compiled part, which releases the GIL), then
    :meth:`results` (the conductor's thread), each once, runs of a stream in order."""

    def __init__(self, conductor: Conductor, head: list[StepResult],
                 st: StreamState | None = None, job: _RunJob | _PlainJob | None = None,
                 ) -> None:
        self._conductor = conductor
        self._head = head  # the results played at the start (a stream's first phrase)
        self._st = st
        self.job = job

    def step(self) -> None:
        """Step the model through the run's compiled part (nothing to do without one)."""
        job = self.job
        if job is None:
            return
        conductor = self._conductor
        if isinstance(job, _PlainJob):
            stepper = conductor.stepper
            assert isinstance(stepper, NumpyPitchStepper)
            job.step(stepper, conductor.chooser)
            return
        if job.begin is None:  # where the run before it ended
            before = job.after
            assert before is not None and before.end is not None, "steps in order"
            chosen, _, _, state, logits = before.end
            last = int(chosen[-1])  # (its data note: the anchor and the last note)
            job.begin = (state, logits, before.pitch_list[-1], last, last)
        stepper, setup = conductor.stepper, conductor._phrase_setup
        assert isinstance(stepper, NumpyPitchStepper) and setup is not None
        state, logits, held, anchor, last = job.begin
        job.end = stepper.run(setup, job.data_pitch, job.targets, job.plain, job.beyond,
                              job.limits, state, logits, held, anchor, last)
        job.after = None  # (the run before it may go)

    def results(self) -> list[StepResult]:
        """Each cue's result, as :meth:`Conductor.play` of it alone gives (after
        :meth:`step`); the stream keeps the state after the run."""
        if self.job is None or self._st is None:
            return self._head
        if isinstance(self.job, _PlainJob):
            return self._head + self._conductor._plain_results(self._st, self.job)
        return self._head + self._conductor._run_results(self._st, self.job)


class Conductor:
    """Turns cues into notes for many streams, batching the LSTM steps."""

    config: Config  # set by ``configure``
    #: Whether one cue steps through the one-stream paths (:meth:`_step_one` with one note
    #: per sample, :meth:`_search_one` with phrases: the same notes as the general path,
    #: with less overhead; tests turn it off to compare).
    one_path: bool = True

    def __init__(self, config: Config, stepper: Stepper,
                 encoding: PitchEncoding) -> None:
        self.stepper = stepper
        self.encoding = encoding
        # Least recently sampled first (``admit`` moves a stream to the end); at most
        # ``streams.max_streams`` of them (see ``evict``).
        self.streams: OrderedDict[str, StreamState] = OrderedDict()
        self.allocator = VoiceAllocator()
        self.clock: Callable[[], float] = time.monotonic  # the engine gives its loop's
        self.on_evict: list[Callable[[str], object]] = []  # told each evicted stream's name
        # told each step's batch size and its duration in seconds (the daemon's metrics)
        self.on_step: list[Callable[[int, float], object]] = []
        self.evictions: Counter[str] = Counter()  # by reason: idle, full
        self.refused = 0  # samples of new streams refused (streams.when_full = "drop")
        self.configure(config)
        self._warn = RateLimitedLog(log, config.daemon.warn_interval)

    def configure(self, config: Config) -> None:
        """Apply (or re-apply, on reload) the musical settings; stream state is kept.

        Streams old and new then play alike: the scale, range, influence and accents apply
        to every stream at once; new normalization settings too, each stream's window
        replayed into a normalizer of the new settings (its values are kept). Voices
        (``music.program``, ``[[voices]]``, the palette) apply to streams that appear
        from now on: a stream keeps its channel and program, and so does a channel that
        already sounds. ``model.seed`` seeds the streams that appear from now on.
        """
        if self.streams and config.normalize != self.config.normalize:
            for st in self.streams.values():
                st.normalizer = st.normalizer.reconfigured(config.normalize)
        self.config = config
        music = config.music
        accent = config.accent
        reserved = {PERCUSSION_CHANNEL}
        if accent.enabled and accent.earcon:
            reserved.add(accent.earcon_channel - 1)
        self.allocator.rules = config.voices
        self.allocator.default_program = music.program
        self.allocator.overflow = music.overflow
        self.allocator.palette = music.palette
        self.allocator.pan_spread = music.pan_spread
        self.allocator.reserved = frozenset(reserved)
        self.earcon = earcon_for(accent)
        candidates = scale_pitches(music.scale, music.key, music.low, music.high)
        # The scale's pitches in the headroom bands, for values beyond the ordinary range.
        self.beyond = scale_pitches(music.scale, music.key, music.low - music.headroom,
                                    music.high + music.headroom)
        self.chooser = Chooser(
            self.encoding,
            candidates,
            influence=config.model.influence,
            temperature=config.model.temperature,
            kernel_width=config.model.kernel_width,
        )
        self.note_seconds = music.note_length * seconds_per_beat(music.tempo)
        # the loudness of the notes the model adds (MODEL_VELOCITY)
        self._model_velocity = max(1, round(MODEL_VELOCITY * music.velocity_min))
        # The candidates' pitches as ints (a model's note names its candidate's index).
        self._candidates: list[int] = self.chooser.candidates.tolist()
        self._octave = len(SCALES[music.scale])  # candidates per octave (phrases' leaps)
        # Phrases in compiled calls (the CPU stepper, greedy choice): what they need that
        # stays the same from note to note.
        chooser, stepper = self.chooser, self.stepper
        self._phrase_setup = (
            PhraseSetup(self._octave, max(chooser.window, 1.0), chooser.window,
                        chooser.influence, chooser.kernel_scale, chooser.cand_class,
                        chooser.cand_pitch, chooser.cand_inputs.astype(stepper.dtype), BEAM)
            if isinstance(stepper, NumpyPitchStepper) and config.model.temperature <= 0.0
            else None)
        # the candidates' pitches, for the nearest one to a pitch (bisect)
        self._cand_list = chooser.cand_pitch.tolist()
        self._phrasing = (config.model.passing_notes > 0 and chooser.influence < 1.0
                          and not is_temporal(self.stepper))
        if is_temporal(self.stepper):  # how the temporal model's gaps are drawn
            self.stepper.temperature = config.model.rhythm_temperature

    def state(self, stream: str) -> StreamState:
        """The stream's state, created on first sight (evicting the least recently sampled
        stream if ``streams.max_streams`` are live)."""
        st = self.streams.get(stream)
        if st is None:
            self._make_room(stream, refuse=False)
            st = StreamState(
                name=stream,
                normalizer=RollingNormalizer.from_config(self.config.normalize),
                scorer=AnomalyScorer(),
                model_state=self.stepper.initial_state(1),
                rng=np.random.default_rng(stream_seed(self.config.model.seed, stream)),
                seen=self.clock(),
            )
            self.streams[stream] = st
            self.allocator.voice(stream)
        return st

    def admit(self, stream: str) -> bool:
        """A sample of ``stream`` arrives: make it the most recently used stream, creating
        it if new. When ``streams.max_streams`` are live, streams idle for
        ``streams.idle_evict`` seconds are evicted first; if none is, ``when_full = "evict"``
        evicts the least recently sampled one and ``"drop"`` refuses the new stream
        (returns False; the caller drops the sample)."""
        st = self.streams.get(stream)
        if st is None:
            if not self._make_room(stream, refuse=self.config.streams.when_full == "drop"):
                self.refused += 1
                return False
            st = self.state(stream)
        else:
            self.streams.move_to_end(stream)
        st.seen = self.clock()
        return True

    def evict(self, stream: str, reason: str = "idle") -> bool:
        """Forget ``stream``: its state, its voice (its share of a MIDI channel) and, through
        ``on_evict``, what the engine keeps for it (waiting samples, timers, the note it
        sounds). If it comes back it starts afresh. Returns whether it was live."""
        if self.streams.pop(stream, None) is None:
            return False
        self.allocator.release(stream)
        self.evictions[reason] += 1
        for listener in self.on_evict:
            listener(stream)
        return True

    def evict_idle(self, now: float | None = None) -> int:
        """Evict every stream without a sample for ``streams.idle_evict`` seconds (and, after
        a reload that lowered ``streams.max_streams``, the least recently sampled ones
        beyond it); returns how many went."""
        cfg = self.config.streams
        now = self.clock() if now is None else now
        count = 0
        while self.streams:
            name, st = next(iter(self.streams.items()))
            if len(self.streams) > cfg.max_streams:
                self.evict(name, "full")
            elif cfg.idle_evict > 0 and now - st.seen >= cfg.idle_evict:
                self.evict(name, "idle")
            else:
                break
            count += 1
        if count:
            log.debug("evicted %d streams idle for %g s or more", count, cfg.idle_evict)
        return count

    def _make_room(self, stream: str, refuse: bool) -> bool:
        """Room for one more stream: idle ones go first; then, unless ``refuse``, the least
        recently sampled. False: full, and ``refuse`` said not to evict a live stream."""
        cfg = self.config.streams
        if len(self.streams) < cfg.max_streams:
            return True
        self.evict_idle()
        while len(self.streams) >= cfg.max_streams:
            if refuse:
                self._warn.warning(
                    "streams.full", "%d streams are live (streams.max_streams) and none has "
                    "been idle for %g s (streams.idle_evict): samples of new stream %r are "
                    "dropped (streams.when_full = \"drop\")", len(self.streams),
                    cfg.idle_evict, stream)
                return False
            name, st = next(iter(self.streams.items()))
            self._warn.warning(
                "streams.evict", "%d streams are live (streams.max_streams): evicting %r, "
                "the least recently sampled (%.1f s ago), to make room for %r "
                "(streams.when_full = \"evict\")", len(self.streams), name,
                self.clock() - st.seen, stream)
            self.evict(name, "full")
        return True

    def observe(self, sample: Sample, place: float | None = None) -> Reading:
        """Add a sample to its stream's rolling window (every sample, played or not) and
        return where its value stands in the window; ``place``: where it stands in the
        ordinary range instead (``render``'s whole-file normalization; the window still
        decides its anomaly score), the reading a cue with ``normalized=place`` would
        play (:meth:`_readings`), made once."""
        st = self.state(sample.stream)
        value = sample.value
        if st.log and value <= 0.0:  # the log cannot take it: back to raw values for good
            st.normalizer, st.log = st.normalizer.remapped(math.exp), False
        st.normalizer.push(sample.time, math.log(value) if st.log else value)
        st.samples += 1
        position = self._position(st, value)
        beyond = position - 1.0 if position > 1.0 else min(position, 0.0)
        anomaly, direction = st.scorer.update(value, beyond, self.config.accent.season)
        if st.scorer.log_scale and not st.log:
            # A positive stream that varies by multiples (the scorer decided): its pitch
            # follows the log too, so a geometric decline plays as a steady line.
            st.normalizer, st.log = st.normalizer.remapped(math.log), True
        # An accent marks the onset of an anomaly, heard once (streamsonic.accent)
        accent, back = st.accents.judge(st.samples, value, anomaly, direction,
                                        self.config.accent)
        return self._reading(position if place is None else place, anomaly, direction,
                             accent, back)

    def read(self, stream: str, value: float, anomaly: float = 0.0, direction: int = 0,
             accent: bool = False, back: bool = False) -> Reading:
        """Where ``value`` stands in ``stream``'s current window (for aggregates: their
        value's place, with the anomaly score and accent of their samples)."""
        return self._reading(self._position(self.state(stream), value), anomaly, direction,
                             accent, back)

    @staticmethod
    def _position(st: StreamState, value: float) -> float:
        """``value``'s place in the stream's ordinary range (beyond 0..1: how far out, in
        widths of what the stream's values spread over: see :func:`_widths_out`)."""
        norm = st.normalizer
        if not st.log:
            return _widths_out(norm, norm.position(value), None)
        if value <= 0.0:
            return -math.inf
        position = norm.position(math.log(value))
        edges = norm.edges()
        if position > 1.0 and edges is not None:
            # Above the range, how far out counts in widths of the range's own values:
            # 10x a stream's maximum plays far above 1.1x it, on a log scale too.
            lo, hi = math.exp(edges[0]), math.exp(edges[1])
            return _widths_out(norm, 1.0 + (value - hi) / (hi - lo), math.exp)
        return _widths_out(norm, position, None)

    def _reading(self, position: float, anomaly: float, direction: int,
                 accent: bool, back: bool = False) -> Reading:
        music = self.config.music
        if math.isnan(position):
            position = 0.5
        beyond = (None if 0.0 <= position <= 1.0 else
                  beyond_pitch(position, music.low, music.high, music.headroom))
        return Reading(min(1.0, max(0.0, position)), anomaly, direction, accent, beyond,
                       back)

    def play(self, cues: list[Cue]) -> StepResult:
        """Step N streams: one LSTM timestep for each cue's stream (one cue per stream), as
        one batch. The engine, the rhythm driver and ``render`` all play through here.

        Each stream's note comes from the model's logits with the data in the input slot,
        weighted by the data (the chooser); what the network remembers is the chosen note
        (its new state is kept in the stream's state). A value beyond the ordinary range
        plays the headroom pitch the data alone decides, after the choice: the network still
        remembers the candidate it chose. The result has each stream's pitch, remembered
        input and (temporal model) timing, and the notes, in cue order, without those of
        muted voices (their model state still advances so unmuting continues the melody).
        """
        if not self.on_step:
            return self._step(cues)
        began = time.perf_counter()
        result = self._step(cues)
        elapsed = time.perf_counter() - began
        for observer in self.on_step:
            observer(len(cues), elapsed)
        return result

    def play_run(self, cues: list[Cue]) -> list[StepResult]:
        """:meth:`play` of each of ``cues`` alone, in order, all of one stream (a column
        rendered alone): with phrases on the CPU stepper with the greedy choice, the
        phrases of the whole run in one compiled call (:meth:`NumpyPitchStepper.run`);
        at one note per sample on the CPU stepper, the run's steps and choices in one
        (:meth:`NumpyPitchStepper.plain_run`): the notes, model state and logits that
        playing them one by one gives (tests/test_fast_paths.py); else one :meth:`play`
        each. A stream's first phrase takes the general path, alone. :meth:`start_run` in
        three steps."""
        run = self.start_run(cues)
        run.step()
        return run.results()

    def start_run(self, cues: list[Cue], after: Run | None = None) -> Run:
        """:meth:`play_run` of ``cues`` in three steps: this one reads them (and plays a
        stream's first phrase, or every cue where the run cannot be compiled), the run's
        :meth:`Run.step` steps the model (compiled, without the GIL: another thread may
        run it while this one reads the next run), its :meth:`Run.results` makes the
        notes (in this thread). ``after``: the stream's run started before this one, not
        finished yet: this one starts from where that one's step ends (steps in the
        order of their runs, results too)."""
        if (not self.on_step and self.one_path and not self._phrases() and cues
                and isinstance(self.stepper, NumpyPitchStepper)):
            return self._start_plain(cues, after)
        if self.on_step or not (self.one_path and self._phrases()
                                and self._phrase_setup is not None):
            return Run(self, [self.play([cue]) for cue in cues])
        head = []
        at = 0
        while at < len(cues) and self.state(cues[at].sample.stream).next_logits is None:
            head.append(self._step_one(cues[at]))
            at += 1
        if at == len(cues):
            return Run(self, head)
        cues = cues[at:]
        st = self.state(cues[0].sample.stream)
        readings = self._readings(cues)
        data_pitch, _ = self.chooser.encode(np.array([r.normalized for r in readings]))
        pitch_list = data_pitch.tolist()
        job = _RunJob(
            cues, readings, data_pitch, pitch_list,
            np.array([self._nearest(p) for p in pitch_list], np.int64),
            np.array([r.accent for r in readings], np.bool_),
            np.array([r.beyond is not None for r in readings], np.bool_),
            np.array([self._limit(c.span or self._span()) for c in cues], np.int64))
        if after is None or not isinstance(after.job, _RunJob):  # the stream as it is now
            job.begin = (st.model_state, self._logits(st), st.held, st.anchor, st.last)
        else:
            job.after = after.job
        return Run(self, head, st, job)

    def _start_plain(self, cues: list[Cue], after: Run | None) -> Run:
        """:meth:`start_run` at one note per sample (the CPU stepper): what
        :meth:`_step_one` does cue by cue, the model's part in one compiled call
        (:meth:`NumpyPitchStepper.plain_run`). The draws of a sampling choice are taken
        from the stream's generator now, as many and in the order the cues would take
        them."""
        st = self.state(cues[0].sample.stream)
        readings = self._readings(cues)
        data_pitch, data_input = self.chooser.encode(np.array([r.normalized for r in readings]))
        uniform = (st.rng.random(len(cues)) if self.chooser.temperature > 0.0
                   else np.zeros(len(cues)))
        job = _PlainJob(cues, readings, data_input, data_pitch, uniform)
        if after is None or not isinstance(after.job, _PlainJob):  # the stream as it is now
            job.begin = st.model_state
        else:
            job.after = after.job
        return Run(self, [], st, job)

    def _plain_results(self, st: StreamState, job: _PlainJob) -> list[StepResult]:
        """:meth:`Run.results` of a compiled run at one note per sample: the stream keeps
        the state after it."""
        assert job.end is not None, "Run.step first"
        chosen, st.model_state = job.end
        return self._results_of_run(st, job.cues, job.readings, chosen, [[]] * len(job.cues))

    def _readings(self, cues: list[Cue]) -> list[Reading]:
        """Each cue's reading (the window as it is now where it has none), its place the
        cue's own where it has one (render's whole-file normalization)."""
        readings = []
        for cue in cues:
            r = cue.reading or self.read(cue.sample.stream, cue.sample.value)
            if cue.normalized is not None:
                r = self._reading(cue.normalized, r.anomaly, r.direction, r.accent, r.back)
            readings.append(r)
        return readings

    def _run_results(self, st: StreamState, job: _RunJob) -> list[StepResult]:
        """:meth:`Run.results` of a compiled run: the stream keeps its state after it."""
        assert job.end is not None, "Run.step first"
        chosen, leads, starts, state, logits = job.end
        st.model_state, st.next_logits = state, logits
        st.held, st.anchor = job.pitch_list[-1], int(chosen[-1])
        st.last = st.anchor
        starts_list, leads_list = starts.tolist(), leads.tolist()
        return self._results_of_run(
            st, job.cues, job.readings, chosen,
            [leads_list[starts_list[i]:starts_list[i + 1]] for i in range(len(job.cues))])

    def _results_of_run(self, st: StreamState, cues: list[Cue], readings: list[Reading],
                        chosen: np.ndarray, leads: list[list[int]]) -> list[StepResult]:
        """Each cue's result after a compiled run of one stream: its data note the
        candidate ``chosen[i]`` (or the headroom pitch beyond the range), the model's added
        notes ``leads[i]`` before it."""
        chooser = self.chooser
        pitches, inputs = chooser.candidates[chosen], chooser.cand_inputs[chosen]
        voice = self.allocator.voice(st.name)
        results = []
        for i, (cue, r) in enumerate(zip(cues, readings, strict=True)):
            pitch = pitches[i:i + 1]
            if r.beyond is not None:  # the data alone decides (see _step_batch)
                pitch[0] = self.beyond[np.abs(self.beyond - r.beyond).argmin()]
            st.notes += 1
            notes = [] if voice.muted else self._notes(
                cue, st, voice, r, r.normalized, int(pitch[0]), leads[i], None)
            results.append(StepResult(pitch, inputs[i:i + 1], None, notes))
        return results

    def _step(self, cues: list[Cue]) -> StepResult:
        """The body of :meth:`play`: one cue alone through :meth:`_step_one` where it
        can (the pitch model: one note per sample, or phrases on the CPU stepper with the
        greedy choice), several cues with such phrases through :meth:`_step_phrases`; else
        :meth:`_step_batch`."""
        if len(cues) == 1 and self.one_path and not is_temporal(self.stepper) and (
                not self._phrases() or self._phrase_setup is not None):
            return self._step_one(cues[0])
        if len(cues) > 1 and self.one_path and self._phrase_setup is not None and (
                self._phrases()):
            return self._step_phrases(cues)
        return self._step_batch(cues)

    def _step_batch(self, cues: list[Cue]) -> StepResult:
        """Step N streams as one batch (the general path)."""
        temporal = is_temporal(self.stepper)
        if not cues:
            return StepResult(np.empty(0, np.int64), np.empty(0), [] if temporal else None, [])
        states = [self.state(c.sample.stream) for c in cues]
        readings = [c.reading or self.read(c.sample.stream, c.sample.value) for c in cues]
        # A cue's own position (render's whole-file normalization) replaces the reading's.
        readings = [r if c.normalized is None else
                    self._reading(c.normalized, r.anomaly, r.direction, r.accent, r.back)
                    for c, r in zip(cues, readings, strict=True)]
        normalized = np.array([r.normalized for r in readings], dtype=np.float64)
        data_pitch, data_input = self.chooser.encode(normalized)
        leads: list[list[int]] = [[] for _ in cues]
        timings: list[Timing] | None = None
        if not self._phrases():
            # One note per sample: the logits with the data as the network's input.
            proposal = self._propose(states, data_input)
            timings = proposal.timings
            chosen = self.chooser.choose(proposal.logits, data_pitch,
                                         [st.rng for st in states])
            for st, s in zip(states, proposal.commit(self.chooser.candidate_input(chosen)),
                             strict=True):
                st.model_state = s
        else:
            spans = [c.span or self._span() for c in cues]
            chosen, leads = self._phrase(states, readings, data_pitch, spans)
        pitches = self.chooser.candidates[chosen]
        inputs = self.chooser.candidate_input(chosen)
        for i, reading in enumerate(readings):
            if reading.beyond is not None:
                # Beyond the ordinary range the data alone decides: how far out it plays
                # is the message, and the model must not pull it back in.
                pitches[i] = self.beyond[np.abs(self.beyond - reading.beyond).argmin()]
        notes: list[NoteEvent] = []
        for i, (cue, st, norm, pitch, reading) in enumerate(
            zip(cues, states, normalized, pitches, readings, strict=True)
        ):
            st.notes += 1
            voice = self.allocator.voice(st.name)
            if not voice.muted:
                notes += self._notes(cue, st, voice, reading, float(norm), int(pitch),
                                     leads[i], None if timings is None else timings[i])
        return StepResult(pitches, inputs, timings, notes)

    def _step_one(self, cue: Cue) -> StepResult:
        """:meth:`_step` of one cue with the pitch model (a column rendered alone, a stream
        stepped alone), one note per sample or a phrase through the compiled phrase step
        (:meth:`_phrase_one`): the same calls on the same numbers, without a batch's lists,
        stacking and splitting (tests/test_fast_paths.py holds it to the general path). A
        stream's first phrase (nothing to lead from yet) takes the general path."""
        sample = cue.sample
        st = self.state(sample.stream)
        phrases = self._phrases()
        if phrases and st.next_logits is None:
            return self._step_batch([cue])
        reading = cue.reading or self.read(sample.stream, sample.value)
        if cue.normalized is not None:
            reading = self._reading(cue.normalized, reading.anomaly, reading.direction,
                                    reading.accent, reading.back)
        chooser = self.chooser
        norm = reading.normalized
        data_pitch, data_input = chooser.encode_one(norm)
        span = cue.span or self._span()
        leads: list[int] = []
        if phrases:
            pitch = float(data_pitch[0])
            chosen, leads = self._phrase_one(st, reading, pitch, self._nearest(pitch), span)
            # (slices copied: cheaper than indexing with an array of one)
            pitches = chooser.candidates[chosen:chosen + 1].copy()
            inputs = chooser.cand_inputs[chosen:chosen + 1].copy()
        else:
            stepper = self._pitch_stepper()
            logits, pending = stepper.propose(data_input, st.model_state)
            index = np.array([chooser.choose_one(logits, data_pitch, st.rng)], dtype=np.int64)
            inputs = chooser.candidate_input(index)
            st.model_state = stepper.commit(pending, inputs)
            pitches = chooser.candidates[index]
        if reading.beyond is not None:  # the data alone decides (see _step_batch)
            pitches[0] = self.beyond[np.abs(self.beyond - reading.beyond).argmin()]
        st.notes += 1
        voice = self.allocator.voice(st.name)
        if voice.muted:
            return StepResult(pitches, inputs, None, [])
        return StepResult(pitches, inputs, None,
                          self._notes(cue, st, voice, reading, float(norm), int(pitches[0]),
                                      leads, None))

    def _step_phrases(self, cues: list[Cue]) -> StepResult:
        """:meth:`_step_batch` of several cues with phrases on the CPU stepper with the
        greedy choice: their phrases in one compiled call (:meth:`NumpyPitchStepper.
        phrases`), each stream's notes, model state and logits those it gets stepped alone
        (tests/test_fast_paths.py); a stream's first phrase (nothing to lead from yet)
        takes the general path, alone."""
        states = [self.state(c.sample.stream) for c in cues]
        fresh = [i for i, st in enumerate(states) if st.next_logits is None]
        if fresh:
            alone = {i: self._step_batch([cues[i]]) for i in fresh}
            rest = [i for i in range(len(cues)) if i not in alone]
            stepped = dict(zip(rest, self._step_phrases_ready([cues[i] for i in rest],
                                                              [states[i] for i in rest]),
                               strict=True))
            results = [alone[i] if i in alone else stepped[i] for i in range(len(cues))]
        else:
            results = self._step_phrases_ready(cues, states)
        return StepResult(np.concatenate([r.pitches for r in results]),
                          np.concatenate([r.inputs for r in results]), None,
                          [note for r in results for note in r.notes])

    def _step_phrases_ready(self, cues: list[Cue], states: list[StreamState],
                            ) -> list[StepResult]:
        """:meth:`_step_phrases` of streams that have played before: each cue's result."""
        if not cues:
            return []
        stepper, setup, chooser = self.stepper, self._phrase_setup, self.chooser
        assert isinstance(stepper, NumpyPitchStepper) and setup is not None
        readings = self._readings(cues)
        normalized = np.array([r.normalized for r in readings], dtype=np.float64)
        data_pitch, _ = chooser.encode(normalized)
        pitch_list = data_pitch.tolist()
        targets = [self._nearest(p) for p in pitch_list]
        plans = [self._plan(st, r, t, c.span or self._span())
                 for c, r, st, t in zip(cues, readings, states, targets, strict=True)]
        starts = np.zeros(len(cues) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in plans], out=starts[1:])
        chosen, leads, new, logits = stepper.phrases(
            setup, np.array([w.index for p in plans for w in p], dtype=np.int64), starts,
            stepper.stack([st.model_state for st in states]),
            np.concatenate([self._logits(st) for st in states]),
            np.array(targets, dtype=np.int64), data_pitch,
            np.array([st.held for st in states], dtype=np.float64),
            np.array([st.anchor for st in states], dtype=np.int64),
            np.array([r.beyond is not None for r in readings], dtype=np.bool_),
            np.array([st.last for st in states], dtype=np.int64))
        pitches = chooser.candidates[chosen]
        inputs = chooser.candidate_input(chosen)
        results = []
        for i, (cue, st, r, s) in enumerate(zip(cues, states, readings,
                                                stepper.split(new, len(cues)), strict=True)):
            c = int(chosen[i])
            st.model_state, st.next_logits = s, logits[i:i + 1].copy()
            st.held, st.anchor, st.last = pitch_list[i], c, c
            pitch = pitches[i:i + 1]
            if r.beyond is not None:  # the data alone decides (see _step_batch)
                pitch[0] = self.beyond[np.abs(self.beyond - r.beyond).argmin()]
            st.notes += 1
            voice = self.allocator.voice(st.name)
            notes = [] if voice.muted else self._notes(
                cue, st, voice, r, float(normalized[i]), int(pitch[0]),
                leads[starts[i]:starts[i + 1]].tolist(), None)
            results.append(StepResult(pitch, inputs[i:i + 1], None, notes))
        return results

    def _notes(self, cue: Cue, st: StreamState, voice: Voice, reading: Reading, norm: float,
               pitch: int, leads: list[int], timing: Timing | None) -> list[NoteEvent]:
        """A cue's notes: the model's added ones (``leads``, candidate indices), evenly
        spaced over the cue's span from its start, then the data's note, which carries the
        reading's anomaly and accent."""
        music = self.config.music
        accent_cfg = self.config.accent
        velocity, duration = cue.velocity, cue.duration
        if timing is not None:
            velocity = timing.velocity if velocity is None else velocity
            duration = timing.duration if duration is None else duration
        if velocity is None:  # (the way back from an accent is no new surprise)
            velocity = velocity_for(0.0 if reading.back else reading.anomaly,
                                    music.velocity_min, music.velocity_max,
                                    accent_cfg.threshold)
        accent = reading.accent and accent_cfg.enabled
        if accent:  # nothing (not the temporal model either) plays an accent softly
            velocity = accent_cfg.velocity
        # Phrases: the model's notes lead in from the cue's start, evenly spaced over its
        # span (at least MIN_NOTE each), and the data's note ends the figure. (Positional
        # arguments, in NoteEvent's field order: the hot path of every render.)
        unit = (cue.span or self._span()) / (len(leads) + 1)
        sample = cue.sample
        name, time, value, start = st.name, sample.time, sample.value, cue.start
        channel, program, pan = voice.channel, voice.program, voice.pan
        notes = []
        if leads:
            candidates, soft = self._candidates, self._model_velocity
            notes = [NoteEvent(name, time, value, norm, candidates[lead], soft, unit, channel,
                               program, start + j * unit, 0.0, False, 0, pan, "model")
                     for j, lead in enumerate(leads)]
        notes.append(NoteEvent(
            name, time, value, norm, pitch, int(velocity),
            float(duration if duration is not None else self.note_seconds),
            channel, program, start + len(leads) * unit, reading.anomaly, accent,
            reading.direction if accent else 0, pan))
        return notes

    def _phrases(self) -> bool:
        """Whether a cue plays a phrase (the pitch model, room for added notes, influence
        below 1) rather than one note (decided by :meth:`configure`)."""
        return self._phrasing

    def _nearest(self, pitch: float) -> int:
        """:meth:`Chooser.nearest` of one pitch (the first of two equally near), by bisection
        of the ascending candidates."""
        cands = self._cand_list
        i = bisect.bisect_left(cands, pitch)
        if i == 0:
            return 0
        if i == len(cands) or pitch - cands[i - 1] <= cands[i] - pitch:
            return i - 1
        return i

    def _span(self) -> float:
        """The least time between two cues of one stream that the clock allows."""
        clock = self.config.clock
        if clock.mode == "event":
            return 1.0 / clock.max_rate
        return clock.step * seconds_per_beat(self.config.music.tempo)

    def _phrase(self, states: list[StreamState], readings: list[Reading],
                data_pitch: np.ndarray, spans: list[float],
                ) -> tuple[np.ndarray, list[list[int]]]:
        """Phrases: the model writes the notes that lead from each stream's last note to
        the data's next one, then chooses the data's note near the data's pitch.

        :func:`~streamsonic.music.lead_in` says how many notes (a neighbour note when the
        data stays on one note, one per scale step in between, at most
        ``model.passing_notes`` and what the cue's span holds at MIN_NOTE each); the model
        chooses them (:meth:`_search`). None is added before a stream's first note or an
        accent (an anomaly jumps in at once). The data's note is then chosen near the
        data's pitch (:meth:`Chooser.choose_near`); while the data stays exactly where it
        was, it stays on the same note (the model's notes move around it). Returns each
        stream's data note (a candidate index) and the candidates added before it; each
        stream's model state and logits have stepped through both.
        """
        chooser = self.chooser
        target = chooser.nearest(data_pitch)
        plans = [self._plan(st, r, int(q), span)
                 for st, r, q, span in zip(states, readings, target, spans, strict=True)]
        if len(states) == 1 and self.one_path:  # (a column alone, a stream stepped alone)
            leads = [self._search_one(states[0], plans[0], int(target[0]),
                                      float(data_pitch[0])) if plans[0] else []]
        else:
            leads = self._search(states, plans, target, data_pitch)
        prev = np.array([path[-1] if path else st.last for st, path in zip(states, leads,
                                                                          strict=True)])
        fresh = [st.next_logits is None for st in states]
        logits = np.concatenate([np.full((1, self.stepper.n_classes), np.nan) if new
                                 else self._logits(st) for st, new in zip(states, fresh,
                                                                           strict=True)])
        # After added notes, the data's note never repeats the last of them.
        avoid = np.where([bool(path) for path in leads], prev, -1)
        chosen = chooser.choose_near(logits, data_pitch, avoid, [st.rng for st in states])
        for i, (st, r, new) in enumerate(zip(states, readings, fresh, strict=True)):
            if new or r.beyond is not None:  # the data alone: nothing to hear from yet
                chosen[i] = target[i]
            elif st.held == data_pitch[i] and st.anchor not in (-1, avoid[i]):
                chosen[i] = st.anchor  # flat data: the same note
            st.held, st.anchor = float(data_pitch[i]), int(chosen[i])
        self._advance(states, chosen)
        for st, c in zip(states, chosen, strict=True):
            st.last = int(c)
        return chosen, leads

    def _plan(self, st: StreamState, reading: Reading, target: int,
              span: float) -> list[Waypoint]:
        """The notes the model adds before the data's note (:func:`~streamsonic.music.
        lead_in`): none before a stream's first note or an accent, at most
        ``model.passing_notes`` and what ``span`` holds at MIN_NOTE each."""
        if reading.accent or st.last < 0 or st.next_logits is None:
            return []
        return lead_in(st.last, target, self._limit(span))

    def _limit(self, span: float) -> int:
        """How many notes the model may add in ``span``: at most ``model.passing_notes``
        and what it holds at MIN_NOTE each (0: none)."""
        return max(0, min(self.config.model.passing_notes, int(span / MIN_NOTE) - 1))

    def _phrase_one(self, st: StreamState, reading: Reading, data_pitch: float, target: int,
                    span: float) -> tuple[int, list[int]]:
        """:meth:`_phrase` of one stream that has played before, on the CPU stepper with
        the greedy choice, in one compiled call (:meth:`NumpyPitchStepper.phrase`): the
        same pieces on the same numbers (tests/test_fast_paths.py holds it to the general
        path). Returns the data's note (a candidate index) and the added ones."""
        stepper, setup = self.stepper, self._phrase_setup
        assert isinstance(stepper, NumpyPitchStepper) and setup is not None
        plan = self._plan(st, reading, target, span)
        chosen, leads, st.model_state, st.next_logits = stepper.phrase(
            setup, np.array([w.index for w in plan], dtype=np.int64), st.model_state,
            self._logits(st), target, data_pitch, st.held, st.anchor,
            reading.beyond is not None, st.last)
        st.held, st.anchor, st.last = data_pitch, chosen, chosen
        return chosen, leads.tolist()

    def _search(self, states: list[StreamState], plans: list[list[Waypoint]],
                target: np.ndarray, data_pitch: np.ndarray) -> list[list[int]]:
        """The lead-in each stream's plan asks for (as many notes), chosen by a beam search
        (BEAM paths per stream) for the path the model finds most likely, the data's note
        after it included; each stream's model state and logits step through it.

        Each stream's paths are arrays (:class:`_Beam`: one row per path), and each level
        steps every stream's grown paths as one batch, in stream order."""
        chooser, stepper = self.chooser, self._pitch_stepper()
        beams = {i: self._first_beam(states[i]) for i in range(len(states)) if plans[i]}
        for j in range(max((len(p) for p in plans), default=0)):
            grown = [(i, *self._grow(beam, plans[i], j, int(target[i])))
                     for i, beam in beams.items() if j < len(plans[i])]
            if not grown:
                break
            # every grown path steps from the state of the path it grew from
            if len(grown) == 1:
                _, rows, notes, _ = grown[0]
                parents = beams[grown[0][0]].state
            else:
                notes = np.concatenate([g[2] for g in grown])
                parents = stepper.stack([beams[i].state for i, _, _, _ in grown])
                offsets = [0]
                for i, _, _, _ in grown[:-1]:
                    offsets.append(offsets[-1] + len(beams[i].scores))
                rows = np.concatenate([g[1] + at for g, at in zip(grown, offsets, strict=True)])
            logits, state = stepper.step_rows(chooser.candidate_input(notes), parents, rows)
            logits = np.asarray(logits, dtype=np.float64)
            at = 0
            for i, entry, note, score in grown:
                mine = slice(at, at + len(entry))
                at += len(entry)
                paths = np.concatenate([beams[i].paths[entry], note[:, None]], axis=1)
                beams[i] = _Beam(score, paths, tuple(s[mine] for s in state), logits[mine])
        leads: list[list[int]] = [[] for _ in states]
        for i, beam in beams.items():
            leads[i] = self._end(states[i], beam, int(target[i]), float(data_pitch[i]))
        return leads

    def _search_one(self, st: StreamState, plan: list[Waypoint], target: int,
                    data_pitch: float) -> list[int]:
        """:meth:`_search` of one stream's plan: the same calls on the same numbers, without
        the batch's bookkeeping (tests/test_fast_paths.py holds it to the general path)."""
        stepper = self._pitch_stepper()
        beam = self._first_beam(st)
        for j in range(len(plan)):
            entry, note, score = self._grow(beam, plan, j, target)
            logits, state = stepper.step_rows(self.chooser.candidate_input(note), beam.state,
                                              entry)
            paths = np.concatenate([beam.paths[entry], note[:, None]], axis=1)
            beam = _Beam(score, paths, state, np.asarray(logits, dtype=np.float64))
        return self._end(st, beam, target, data_pitch)

    def _first_beam(self, st: StreamState) -> _Beam:
        """A stream's search before its first added note: one path, the note played last."""
        return _Beam(np.zeros(1), np.full((1, 1), st.last, np.int64), st.model_state,
                     self._logits(st))

    def _grow(self, beam: _Beam, plan: list[Waypoint], j: int,
              target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Level ``j`` of a stream's search: the best BEAM (path, note) pairs of the notes
        allowed (leaps of at most an octave, never the same note twice, the target still in
        reach, the last a step from it); ties in path order, then lower note. Returns each
        pick's path (row of ``beam``), note and score."""
        from streamsonic.model import kernels  # noqa: PLC0415 - numba, loaded on first use

        scores = beam.scores[:, None] + self.chooser.log_p(beam.logits)
        entry, note = np.empty(BEAM, np.int64), np.empty(BEAM, np.int64)
        best = np.empty(BEAM, np.float64)
        picks = kernels.beam_level(
            scores, beam.paths[:, -1], target, len(plan) - j, self._octave,
            min(max(plan[j].index, 0), scores.shape[1] - 1), entry, note, best)
        return entry[:picks], note[:picks], best[:picks]

    def _end(self, st: StreamState, beam: _Beam, target: int, data_pitch: float) -> list[int]:
        """The end of a stream's search: the path whose score plus the best log-probability
        of a data note near the data is highest (ties to the earlier path) becomes the
        stream's lead-in; the stream keeps its model state and logits."""
        from streamsonic.model import kernels  # noqa: PLC0415 - numba, loaded on first use

        chooser = self.chooser
        k = kernels.beam_best(beam.scores, chooser.log_p(beam.logits), chooser.candidates,
                              data_pitch, max(chooser.window, 1.0), target)
        st.model_state = self._pitch_stepper().take(beam.state, np.array([k]))
        st.next_logits = beam.logits[k:k + 1].copy()
        return [int(x) for x in beam.paths[k, 1:]]

    def _pitch_stepper(self) -> PitchStepper:
        """The stepper, which phrases only use when it is the pitch model's."""
        stepper = self.stepper
        assert not is_temporal(stepper)
        return stepper

    @staticmethod
    def _logits(st: StreamState) -> np.ndarray:
        assert st.next_logits is not None
        return st.next_logits

    def _advance(self, states: list[StreamState], chosen: np.ndarray) -> None:
        """One batched LSTM step of ``states``' streams with the chosen notes as input:
        each keeps its new state and the logits for its next note."""
        stepper, batch = self._pitch_stepper(), len(states)
        logits, state = stepper.step(self.chooser.candidate_input(chosen),
                                     stepper.stack([st.model_state for st in states]))
        for i, (st, s) in enumerate(zip(states, stepper.split(state, batch), strict=True)):
            st.model_state = s
            st.next_logits = np.array(logits[i:i + 1], dtype=np.float64)

    def _propose(self, states: list[StreamState], data_input: np.ndarray) -> _Proposal:
        """One timestep of ``states``' streams as one batch, from their saved model states,
        with the data as input; the proposal's ``commit`` re-evaluates it with the chosen
        inputs and returns each stream's new state (``play`` keeps them)."""
        stepper, batch = self.stepper, len(states)
        saved = [st.model_state for st in states]
        if is_temporal(stepper):
            # A temporal model also predicts each note's onset gap, duration and loudness
            # (gap and duration drawn with each stream's generator: model.rhythm_temperature).
            logits, timings, pending = stepper.propose(data_input, stepper.stack(saved),
                                                       [st.rng for st in states])
            return _Proposal(logits, timings,
                             lambda inputs: stepper.split(stepper.commit(pending, inputs), batch))
        logits, p_pending = stepper.propose(data_input, stepper.stack(saved))
        return _Proposal(logits, None,
                         lambda inputs: stepper.split(stepper.commit(p_pending, inputs), batch))
