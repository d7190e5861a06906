"""The live engine: samples in, notes scheduled, on the asyncio loop.

    source --> Engine.feed(sample) --> clock policy --> Conductor.play --> Scheduler.play

Clock policies:

* ``event``: a note per sample as it arrives, at most ``clock.max_rate`` notes per second
  per stream; samples that come faster are aggregated (last, mean, min or max) and the
  aggregate plays as soon as the stream may play again.
* ``tick``: every ``clock.step`` beats, one note for each stream that received data since
  the previous tick (the aggregate of those samples), all streams stepped as one batch.
* ``rhythm = "model"`` (with a temporal checkpoint): the temporal model decides when each
  stream's next note starts, how long it lasts and how loud it is; the newest data (the
  aggregate since the stream's previous note) chooses its pitch.

Every sample enters its stream's rolling window, played or not.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from streamsonic.conductor import Conductor, Cue
from streamsonic.events import NoteEvent, Sample
from streamsonic.music import seconds_per_beat
from streamsonic.scheduler import Handle, Scheduler

log = logging.getLogger(__name__)


@dataclass
class Aggregate:
    """Samples of one stream waiting to be played as one note."""

    count: int = 0
    last: float = math.nan
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    time: float = 0.0

    def add(self, sample: Sample) -> None:
        """Fold one sample in."""
        self.count += 1
        self.last = sample.value
        self.total += sample.value
        self.low = min(self.low, sample.value)
        self.high = max(self.high, sample.value)
        self.time = sample.time

    def value(self, how: str) -> float:
        """The aggregate value: last, mean, min or max."""
        if how == "mean":
            return self.total / self.count
        if how == "min":
            return self.low
        if how == "max":
            return self.high
        return self.last


class Engine:
    """Applies the clock policy and feeds the scheduler."""

    def __init__(
        self,
        conductor: Conductor,
        scheduler: Scheduler,
        loop: asyncio.AbstractEventLoop,
        rhythm: object | None = None,
    ) -> None:
        self.conductor = conductor
        self.scheduler = scheduler
        self.loop = loop
        self.rhythm = rhythm
        self._pending: dict[str, tuple[Aggregate, str]] = {}
        self._next_allowed: dict[str, float] = {}
        self._flush: dict[str, Handle] = {}
        self._tick_handle: Handle | None = None
        self._tick_index = 0
        self._tick_origin = 0.0
        self.samples = 0
        self.played = 0

    @property
    def config(self):  # noqa: ANN201 - the conductor's current Config
        """The current configuration (changes on reload)."""
        return self.conductor.config

    # -- input -----------------------------------------------------------------------------
    async def consume(self, items: AsyncIterator[Sample | NoteEvent]) -> None:
        """Feed everything the source yields until it ends."""
        async for item in items:
            if isinstance(item, NoteEvent):
                self.play_note(item)
            else:
                self.feed(item)

    def feed(self, sample: Sample) -> None:
        """One sample arrives."""
        self.samples += 1
        self.conductor.observe(sample)
        stream = sample.stream
        if self.rhythm is not None:
            self.rhythm.feed(sample)  # type: ignore[attr-defined]
            return
        clock = self.config.clock
        if clock.mode == "tick":
            self._aggregate(sample)
            self._ensure_ticking()
            return
        now = self.loop.time()
        if stream not in self._pending and now >= self._next_allowed.get(stream, -math.inf):
            self._next_allowed[stream] = now + 1.0 / clock.max_rate
            self._play([Cue(sample, now + self.scheduler.latency)])
            return
        self._aggregate(sample)
        if stream not in self._flush:
            when = self._next_allowed.get(stream, now)
            self._flush[stream] = self.loop.call_at(when, lambda: self._flush_stream(stream))

    def play_note(self, note: NoteEvent) -> None:
        """A finished note (``--play-notes``): play it now, as it is."""
        now = self.loop.time() + self.scheduler.latency
        self.scheduler.play(replace(note, start=now))
        self.played += 1

    # -- policies --------------------------------------------------------------------------
    def _aggregate(self, sample: Sample) -> None:
        entry = self._pending.get(sample.stream)
        if entry is None:
            entry = (Aggregate(), sample.stream)
            self._pending[sample.stream] = entry
        entry[0].add(sample)

    def _take(self, stream: str) -> Sample | None:
        entry = self._pending.pop(stream, None)
        if entry is None:
            return None
        agg = entry[0]
        return Sample(stream, agg.time, agg.value(self.config.clock.aggregate))

    def _flush_stream(self, stream: str) -> None:
        self._flush.pop(stream, None)
        sample = self._take(stream)
        if sample is None:
            return
        now = self.loop.time()
        self._next_allowed[stream] = now + 1.0 / self.config.clock.max_rate
        self._play([Cue(sample, now + self.scheduler.latency)])

    def tick_period(self) -> float:
        """Seconds between ticks."""
        return self.config.clock.step * seconds_per_beat(self.config.music.tempo)

    def _ensure_ticking(self) -> None:
        if self._tick_handle is None:
            self._tick_origin = self.loop.time()
            self._tick_index = 0
            self._tick()

    def _tick(self) -> None:
        self._tick_handle = None
        start = self.loop.time() + self.scheduler.latency
        cues = [Cue(s, start) for s in (self._take(n) for n in list(self._pending)) if s]
        if not cues:
            return  # idle: ticking restarts with the next sample
        self._play(cues)
        self._tick_index += 1
        when = self._tick_origin + self._tick_index * self.tick_period()
        self._tick_handle = self.loop.call_at(when, self._tick)

    def _play(self, cues: list[Cue]) -> None:
        for note in self.conductor.play(cues):
            self.scheduler.play(note)
            self.played += 1

    # -- shutdown --------------------------------------------------------------------------
    async def drain(self) -> None:
        """After the input ended: play what is pending, then wait for the last note-off."""
        for handle in self._flush.values():
            handle.cancel()
        self._flush.clear()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        if self.rhythm is not None:
            await self.rhythm.drain()  # type: ignore[attr-defined]
        start = self.loop.time() + self.scheduler.latency
        leftovers = [s for s in (self._take(n) for n in list(self._pending)) if s]
        if leftovers:
            self._play([Cue(s, start) for s in leftovers])
        while not self.scheduler.idle:
            wait = max(self.scheduler.end_time - self.loop.time(), 0.0) + 0.005
            await asyncio.sleep(min(wait, 0.25))

    def cancel(self) -> None:
        """Stop scheduling anything new (the daemon then closes the scheduler)."""
        for handle in self._flush.values():
            handle.cancel()
        self._flush.clear()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        if self.rhythm is not None:
            self.rhythm.cancel()  # type: ignore[attr-defined]
