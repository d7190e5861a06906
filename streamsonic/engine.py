"""The live engine: samples in, notes scheduled, on the asyncio loop.

    source --> Engine.feed(sample) --> clock policy --> Conductor.play --> Scheduler.play

Clock policies:

* ``event``: a note per sample as it arrives, at most ``clock.max_rate`` notes per second
  per stream. Notes due within ``clock.batch_window`` seconds of each other (a few ms) are
  stepped together, one :meth:`Conductor.play` call for all their streams (one cue per
  stream per batch; a stream's next sample that may play closes the batch), so thousands
  of streams cost a few batched steps instead of one step each; the notes are those
  stepping each alone gives, up to ``batch_window`` later. The window is waited for only
  while samples flow (a batch was stepped within it): a sample on a quiet clock (a sparse
  feed, the first after a pause) is stepped at the loop's next turn, with whatever that
  turn fed. A sample that comes sooner waits in its stream's queue and plays as soon as
  the stream may play again. Up to ``clock.backlog`` samples wait one by one, so a short
  burst (``printf '1\n5\n3\n9\n' | streamsonic``) is heard note by note; beyond that,
  samples fold into the last waiting note, which plays their aggregate (``clock.aggregate``:
  by default ``anomalous``, the most anomalous of them, so that no spike is lost; or last,
  mean, min, max), so a stream faster than the cap is aggregated with a latency of at most
  ``backlog / max_rate`` seconds. Whatever the mode, the note carries the highest anomaly
  score of the samples it folds, so an accent is never aggregated away.
* ``tick``: every ``clock.step`` beats, one note for each stream with waiting samples (the
  head of its queue, filled the same way), all streams stepped as one batch.
* ``rhythm = "model"`` (with a temporal checkpoint): the temporal model decides when each
  stream's next note starts, how long it lasts and how loud it is; the newest data (the
  aggregate since the stream's previous note) chooses its pitch.

Every sample enters its stream's rolling window, played or not. When the input ends, the
queues play out and the daemon waits for the last note-off.

Under overload the model's passing notes go first (:mod:`streamsonic.shedding`): when a
batched step cannot make its cues' notes within ``batch_window`` + ``SHED_AFTER`` seconds of
their coming (the wait so far, and the step's cost as measured on recent steps), its first
cues play their data notes alone; the tick clock does so with the cues of a tick due more
than ``SHED_AFTER`` ago. Data notes and accents are never shed; ``shed.phrases`` in
:meth:`Engine.stats` counts the cues played without their passing notes.

At most ``streams.max_streams`` streams are live (:meth:`Conductor.admit`); an evicted
stream's waiting samples are dropped (counted as ``dropped.evicted``), its timers cancelled
and its sounding note released (``released.evicted``); :meth:`Engine.stats` counts it all.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from streamsonic.conductor import MIN_NOTE, Conductor, Cue, Reading, is_temporal
from streamsonic.config import Config
from streamsonic.events import Arrival, Holding, NoteEvent, Receipt, Sample
from streamsonic.music import seconds_per_beat
from streamsonic.scheduler import Handle, Scheduler
from streamsonic.shedding import SHED_AFTER, Shedding

if TYPE_CHECKING:  # streamsonic.rhythm imports this module
    from streamsonic.rhythm import RhythmDriver

log = logging.getLogger(__name__)

#: Seconds of uninterrupted feeding after which the event loop gets a turn.
YIELD_EVERY = 0.02
#: The most cues one batched step takes: a fuller batch is stepped at once (a bounded slice
#: of work, so that the loop gets its turns under any load).
MAX_BATCH = 1024


@dataclass
class Aggregate:
    """Samples of one stream that will play as one note, and the reading of their
    aggregate value taken when the last of them arrived."""

    reading: Reading | None = None
    count: int = 0
    last: float = math.nan
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    time: float = 0.0
    peak: Reading | None = None  # the reading of the most anomalous sample
    peak_value: float = math.nan
    accent: bool = False  # one of the samples was accented
    receipts: list[Receipt] | None = None  # deliveries settled once the note is scheduled

    def hold(self, receipt: Receipt | None) -> None:
        """Keep ``receipt`` until the aggregate's note is scheduled (or dropped)."""
        if receipt is not None:
            if self.receipts is None:
                self.receipts = []
            self.receipts.append(receipt)

    def settle(self) -> None:
        """The aggregate's note is scheduled (or dropped): settle its deliveries."""
        receipts, self.receipts = self.receipts, None
        for receipt in receipts or ():
            receipt.done()

    @classmethod
    def of(cls, sample: Sample, reading: Reading) -> Aggregate:
        """An aggregate holding one sample."""
        agg = cls()
        agg.add(sample, reading)
        agg.reading = reading
        return agg

    def add(self, sample: Sample, reading: Reading) -> None:
        """Fold one sample (and how it read when it arrived) in."""
        self.count += 1
        self.last = sample.value
        self.total += sample.value
        self.low = min(self.low, sample.value)
        self.high = max(self.high, sample.value)
        self.time = sample.time
        self.accent = self.accent or reading.accent
        # The most anomalous sample, an accented one before any that is not (a higher
        # score inside accent.refractory is no accent; the note must carry the accent's),
        # and any before one on the way back from an accent (no new surprise).
        peak = self.peak
        if (peak is None or (reading.accent, not reading.back, reading.anomaly)
                > (peak.accent, not peak.back, peak.anomaly)):
            self.peak = reading
            self.peak_value = sample.value

    def value(self, how: str) -> float:
        """The aggregate value: anomalous (the most anomalous sample's), last, mean, min
        or max."""
        if how == "anomalous":
            return self.peak_value
        if how == "mean":
            return self.total / self.count
        if how == "min":
            return self.low
        if how == "max":
            return self.high
        return self.last


def fold(agg: Aggregate, sample: Sample, reading: Reading, conductor: Conductor,
         how: str) -> None:
    """Fold ``sample`` into ``agg``. The aggregate plays the reading of its value (for
    ``anomalous`` and ``last`` as it was when that sample arrived, for the others as of
    now) with the anomaly score of its most anomalous sample."""
    agg.add(sample, reading)
    peak = agg.peak or reading
    if how == "anomalous":
        agg.reading = replace(peak, accent=agg.accent)
    elif how == "last":
        agg.reading = replace(reading, anomaly=peak.anomaly, direction=peak.direction,
                              accent=agg.accent, back=peak.back)
    else:
        agg.reading = conductor.read(sample.stream, agg.value(how), peak.anomaly,
                                     peak.direction, agg.accent, peak.back)


def _settle(owed: Aggregate | Receipt | None) -> None:
    """Settle what a played (or dropped) cue owed: an aggregate's receipts, or a receipt."""
    if isinstance(owed, Aggregate):
        owed.settle()
    elif owed is not None:
        owed.done()


def _settle_all(owed: list[Aggregate | Receipt | None]) -> None:
    for item in owed:
        _settle(item)


class Engine:
    """Applies the clock policy and feeds the scheduler."""

    def __init__(
        self,
        conductor: Conductor,
        scheduler: Scheduler,
        loop: asyncio.AbstractEventLoop,
        rhythm: RhythmDriver | None = None,
    ) -> None:
        self.conductor = conductor
        self.scheduler = scheduler
        self.loop = loop
        self.rhythm = rhythm
        self._queues: dict[str, deque[Aggregate]] = {}
        self._next_allowed: dict[str, float] = {}
        # per stream: the earliest moment its next sample could play, on the clock of its
        # samples' arrival (its last cue's ``came`` + 1 / clock.max_rate): a sample that
        # arrived while its stream was held back by the rate cap is late from then only
        self._playable_from: dict[str, float] = {}
        self._flush: dict[str, Handle] = {}
        # event clock: the samples waiting for the batch step (at most one per stream), each
        # with its reading and what it settles once played (an aggregate, a receipt, or
        # None), and the step's timer; each becomes a cue when the batch is stepped
        # (and the loop time it came)
        self._batch: list[tuple[Sample, Reading | None, Aggregate | Receipt | None, float]] = []
        self._batched: set[str] = set()
        self._batch_handle: asyncio.Handle | None = None
        self._batch_soon = False  # the batch step is due at the loop's next turn
        # when the last batch was stepped (loop time): a sample that comes later than the
        # window after it finds the clock quiet and does not wait for the window
        self._stepped_at = -math.inf
        self.batches = 0  # batched steps taken (event clock)
        self.aggregated = 0
        self._tick_handle: Handle | None = None
        # tick clock: the cues of a tick still to play (in slices, with the time their tick
        # was due), and the next slice's turn
        self._slices: list[tuple[Cue, Aggregate, float]] = []
        self._slice_handle: asyncio.Handle | None = None
        self._tick_index = 0
        self._tick_origin = 0.0
        self.samples = 0
        self.played = 0
        if rhythm is not None:  # the temporal model's notes count as played too, and
            rhythm.on_play.append(self._count_played)  # the samples folded into them
            rhythm.on_folded.append(self._count_folded)
        self.dropped_evicted = 0  # waiting samples of evicted streams
        self.dropped_at_stop = 0  # samples still waiting to play when the daemon stopped
        self.released = 0  # notes of evicted streams ended early
        self.shedding = Shedding(conductor.config.daemon.warn_interval)
        conductor.clock = loop.time
        conductor.on_evict.append(self._forget)

    @property
    def config(self) -> Config:
        """The current configuration (changes on reload)."""
        return self.conductor.config

    # -- input -----------------------------------------------------------------------------
    async def consume(self, items: AsyncIterator[Sample | NoteEvent],
                      holding: Holding | None = None, arrival: Arrival | None = None) -> None:
        """Feed everything the source yields until it ends.

        With ``holding`` (a source whose deliveries can be settled later, such as MQTT at
        QoS 1), each sample's receipt is settled only once its note is scheduled; a stop
        leaves the receipts of waiting samples unsettled, so the sender delivers them again.

        A source that always has data ready (a firehose) never lets the event loop run
        its signal handlers and timers; every YIELD_EVERY seconds of feeding, the loop
        gets a turn, so SIGTERM is answered at any load, whatever the source.

        With ``arrival`` (an MQTT or NATS source, a worker's pipe), a sample played at once
        counts its wait from when it reached the daemon rather than from now (from when its
        stream could next play, if the rate cap held it back until later).
        """
        turn = self.loop.time() + YIELD_EVERY
        async for item in items:
            if isinstance(item, NoteEvent):
                receipt = holding.hold() if holding is not None else None
                self.play_note(item)
                self._settle_soon([receipt])
            else:
                self.feed(item, holding.hold() if holding is not None else None,
                          arrival.arrived() if arrival is not None else None)
            if self.loop.time() >= turn:
                await asyncio.sleep(0)
                turn = self.loop.time() + YIELD_EVERY

    def _count_played(self, _note: NoteEvent) -> None:
        self.played += 1

    def feed(self, sample: Sample, receipt: Receipt | None = None,
             arrived: float | None = None) -> None:
        """One sample arrives. ``receipt`` (its delivery, if still owed) is settled once
        the note that plays the sample is scheduled, or the sample is dropped. ``arrived``:
        when it reached the daemon (``time.monotonic``, the loop's clock), if the source
        knows (:class:`streamsonic.events.Arrival`)."""
        self.samples += 1
        stream = sample.stream
        if not self.conductor.admit(stream):
            # the stream table is full (streams.when_full = "drop"); counted there
            if receipt is not None:
                receipt.done()
            return
        reading = self.conductor.observe(sample)
        if self.rhythm is not None:
            self.rhythm.feed(sample, reading)
            if receipt is not None:  # the temporal model keeps no receipts: settled now
                receipt.done()
            return
        clock = self.config.clock
        if clock.mode == "tick":
            self._enqueue(sample, reading, receipt)
            self._ensure_ticking()
            return
        now = self.loop.time()
        allowed = now >= self._next_allowed.get(stream, -math.inf)
        if allowed and stream in self._batched:
            # The stream's next sample may play, and its previous one still waits for the
            # batch: the batch closes now (under a firehose the loop turns that run the
            # window's timer come only every YIELD_EVERY; waiting for them would fold
            # samples that stepping each alone plays one by one).
            self._step_batch()
        if allowed and stream not in self._batched and self._queues.get(stream):
            # Its waiting samples' flush is due, and late for the same reason (the loop is
            # busy feeding): the head of its queue plays now, as the timer would have.
            handle = self._flush.pop(stream, None)
            if handle is not None:
                handle.cancel()
            self._flush_stream(stream)
        if (not self._queues.get(stream) and stream not in self._batched and allowed):
            self._next_allowed[stream] = now + 1.0 / clock.max_rate
            came = now
            if arrived is not None:  # it waited before the engine saw it: late from then
                came = min(max(arrived, self._playable_from.get(stream, -math.inf)), now)
            self._playable_from[stream] = came + 1.0 / clock.max_rate
            self._submit(sample, reading, receipt, came=came)
            return
        self._enqueue(sample, reading, receipt)
        if stream not in self._flush and stream not in self._batched:
            when = self._next_allowed.get(stream, now)
            self._flush[stream] = self.loop.call_at(when, lambda: self._flush_stream(stream))

    def play_note(self, note: NoteEvent) -> None:
        """A finished note (``--play-notes``): play it now, as it is."""
        now = self.loop.time() + self.scheduler.latency
        self.scheduler.play(replace(note, start=now))
        self.played += 1

    # -- policies --------------------------------------------------------------------------
    def _enqueue(self, sample: Sample, reading: Reading, receipt: Receipt | None) -> None:
        queue = self._queues.setdefault(sample.stream, deque())
        if len(queue) < max(self.config.clock.backlog, 1):
            agg = Aggregate.of(sample, reading)
            queue.append(agg)
        else:
            agg = queue[-1]
            fold(agg, sample, reading, self.conductor, self.config.clock.aggregate)
        agg.hold(receipt)

    def _take(self, stream: str) -> tuple[Sample, Reading | None, Aggregate] | None:
        """The head of the stream's queue: the sample it plays (its aggregate value), its
        reading, and the aggregate it came from (to settle once played)."""
        queue = self._queues.get(stream)
        if not queue:
            return None
        agg = queue.popleft()
        if not queue:
            del self._queues[stream]  # the table holds only streams with waiting samples
        sample = Sample(stream, agg.time, agg.value(self.config.clock.aggregate))
        return sample, agg.reading, agg

    def _forget(self, stream: str) -> None:
        """``stream`` was evicted: drop its waiting samples, cancel its flush, end its note."""
        queue = self._queues.pop(stream, None)
        if queue:
            self.dropped_evicted += sum(agg.count for agg in queue)
            for agg in queue:
                agg.settle()  # dropped for good: nothing will play them
        handle = self._flush.pop(stream, None)
        if handle is not None:
            handle.cancel()
        if stream in self._batched:  # its cue waits for the batch step: dropped with it
            self._batched.discard(stream)
            kept = []
            for waiting in self._batch:
                if waiting[0].stream == stream:
                    owed = waiting[2]
                    self.dropped_evicted += owed.count if isinstance(owed, Aggregate) else 1
                    _settle(owed)
                else:
                    kept.append(waiting)
            self._batch = kept
        self._next_allowed.pop(stream, None)
        self._playable_from.pop(stream, None)
        if self.rhythm is not None:
            self.dropped_evicted += self.rhythm.forget(stream)
        if self.scheduler.release(stream):
            self.released += 1

    def sweep(self) -> int:
        """Evict the streams idle for ``streams.idle_evict`` seconds (the daemon calls this
        every second); returns how many went."""
        return self.conductor.evict_idle()

    @property
    def stats(self) -> dict[str, int]:
        """The stream table's counters (those not zero): evictions by reason, samples
        dropped with an evicted stream, refused by a full table or left unplayed by a stop
        (``dropped.at_stop``, once :meth:`cancel` ran), notes released early, cues
        played late without the model's passing notes, samples folded into another's note
        that played (more than ``clock.backlog`` waited): so the log explains fewer notes
        than samples; and the notes counted as played that had not started when a stop
        closed the outputs (``unsent.at_stop``: no output got them)."""
        counts = {
            "folded": self.aggregated,
            "evicted.idle": self.conductor.evictions["idle"],
            "evicted.full": self.conductor.evictions["full"],
            "dropped.evicted": self.dropped_evicted,
            "dropped.at_stop": self.dropped_at_stop,
            "dropped.streams_full": self.conductor.refused,
            "released.evicted": self.released,
            "shed.phrases": self.shedding.shed,
            "unsent.at_stop": self.scheduler.unsent,
        }
        return {k: v for k, v in counts.items() if v}

    @property
    def waiting(self) -> int:
        """Notes waiting in the queues and for the batch step (or a tick's next slice)."""
        return (sum(len(q) for q in self._queues.values()) + len(self._batch)
                + len(self._slices))

    def _flush_stream(self, stream: str) -> None:
        self._flush.pop(stream, None)
        if stream in self._batched:
            return  # its previous cue still waits for the batch step, which re-arms this
        taken = self._take(stream)
        if taken is None:
            return
        now = self.loop.time()
        due = min(self._next_allowed.get(stream, now), now)  # when the timer was due
        self._next_allowed[stream] = now + 1.0 / self.config.clock.max_rate
        self._playable_from[stream] = due + 1.0 / self.config.clock.max_rate
        self._submit(*taken, came=due)
        self._arm(stream)

    def _arm(self, stream: str) -> None:
        """Schedule the stream's next flush if it has samples waiting (and none is due)."""
        if self._queues.get(stream) and stream not in self._flush and stream not in self._batched:
            when = self._next_allowed.get(stream, self.loop.time())
            self._flush[stream] = self.loop.call_at(when, lambda: self._flush_stream(stream))

    def _submit(self, sample: Sample, reading: Reading | None,
                owed: Aggregate | Receipt | None, came: float | None = None) -> None:
        """Event clock: step ``sample`` (as it read: ``reading``) with the others due within
        ``clock.batch_window`` (at once when the window is 0; at the loop's next turn when
        ``MAX_BATCH`` wait, or when no batch was stepped within the window: a quiet clock
        adds no wait); ``owed`` is settled once played. ``came``: when it was due to
        play (a waiting sample's flush; a sample that waited before the engine saw it: when
        it reached the daemon, or when its stream could next play if that was later; by
        default now)."""
        self._batch.append((sample, reading, owed, self.loop.time() if came is None else came))
        self._batched.add(sample.stream)
        window = self.config.clock.batch_window
        if window <= 0:
            self._step_batch()
        elif len(self._batch) >= MAX_BATCH:
            self._step_soon()
        elif self._batch_handle is None:
            now = self.loop.time()
            if now - self._stepped_at >= window:
                # Quiet: nothing was stepped within the window (a sparse feed, the first
                # sample after a pause). Waiting would only delay its note: it is stepped
                # at the loop's next turn, with whatever the same turn feeds (one input
                # line's streams, one read's lines, one hand-over of messages).
                self._step_soon()
            else:  # samples are flowing: those of the next `window` seconds join it
                self._batch_handle = self.loop.call_at(now + window, self._step_batch)

    def _step_soon(self) -> None:
        """Step the batch at the loop's next turn (signals and I/O are served first)."""
        if not self._batch_soon:
            if self._batch_handle is not None:
                self._batch_handle.cancel()
            self._batch_handle = self.loop.call_soon(self._step_batch)
            self._batch_soon = True

    def _step_batch(self) -> None:
        """Step the first ``MAX_BATCH`` cues waiting for the batch as one
        :meth:`Conductor.play` call (a bounded slice of work); the rest follow at the loop's
        next turn, or after the window if fewer than ``MAX_BATCH`` wait."""
        if self._batch_handle is not None:
            self._batch_handle.cancel()
            self._batch_handle = None
        self._batch_soon = False
        batch, self._batch = self._batch[:MAX_BATCH], self._batch[MAX_BATCH:]
        if not batch:
            return
        # in the batch's order, not a set's (whose order follows the hash seed): the
        # streams' next flushes are armed in a reproducible order
        streams = list(dict.fromkeys(sample.stream for sample, _, _, _ in batch))
        self._batched.difference_update(streams)
        now = self.loop.time()
        start = now + self.scheduler.latency
        self.batches += 1
        cues = [Cue(sample, start, reading=reading) for sample, reading, _, _ in batch]
        if self._phrases():
            # the notes are due batch_window + SHED_AFTER after the oldest cue came
            oldest = min(came for _, _, _, came in batch)
            budget = oldest + self.config.clock.batch_window + SHED_AFTER - now
            self._play_phrases(cues, self.shedding.keep(len(cues), budget), now - oldest)
        else:
            self._play(cues)
        self._played_folded([owed for _, _, owed, _ in batch])
        self._settle_soon([owed for _, _, owed, _ in batch])
        self._stepped_at = self.loop.time()
        for stream in streams:
            self._arm(stream)
        if len(self._batch) >= MAX_BATCH or self.config.clock.batch_window <= 0:
            self._step_soon()
        elif self._batch:
            self._batch_handle = self.loop.call_at(
                self.loop.time() + self.config.clock.batch_window, self._step_batch)

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
        taken = [t for t in (self._take(n) for n in list(self._queues)) if t is not None]
        if not taken:
            return  # idle: ticking restarts with the next sample
        # Thousands of streams: the tick plays in slices of MAX_BATCH, one per loop turn.
        due = self._tick_origin + self._tick_index * self.tick_period()
        self._slices.extend((Cue(sample, start, reading=reading), agg, due)
                            for sample, reading, agg in taken)
        self._play_slice()
        self._tick_index += 1
        when = self._tick_origin + self._tick_index * self.tick_period()
        self._tick_handle = self.loop.call_at(when, self._tick)

    def _play_slice(self) -> None:
        """Tick clock: play the first ``MAX_BATCH`` cues of the tick (one batched step, a
        bounded slice of work); the rest follow at the loop's next turn."""
        self._slice_handle = None
        chunk, self._slices = self._slices[:MAX_BATCH], self._slices[MAX_BATCH:]
        if not chunk:
            return
        cues = [cue for cue, _, _ in chunk]
        if self._phrases():  # the cues of a tick due more than SHED_AFTER ago (a prefix) shed
            now = self.loop.time()
            late = sum(due < now - SHED_AFTER for _, _, due in chunk)
            self._play_phrases(cues, len(cues) - late, now - chunk[0][2])
        else:
            self._play(cues)
        self._played_folded([agg for _, agg, _ in chunk])
        self._settle_soon([agg for _, agg, _ in chunk])
        if self._slices:
            self._slice_handle = self.loop.call_soon(self._play_slice)

    def _played_folded(self, owed: list[Aggregate | Receipt | None]) -> None:
        """Count the samples that just-played aggregates folded into their note (``folded``:
        counted once played, so that one dropped unplayed counts only as dropped and
        samples = their own notes + folded + dropped + waiting)."""
        self.aggregated += sum(o.count - 1 for o in owed if isinstance(o, Aggregate))

    def _count_folded(self, count: int) -> None:
        self.aggregated += count

    def _settle_soon(self, owed: list[Aggregate | Receipt | None]) -> None:
        """Settle what just-played cues owed once the outputs have written their notes
        (:meth:`Scheduler.when_written`: the events output's writer thread has written
        their lines; the others write as they take), so a message is not acknowledged
        while its note is still held in memory: a reader that does not read holds the
        acknowledgements back too (and with them, at QoS 1, the broker's next messages),
        and a daemon killed meanwhile leaves the message to be delivered again."""
        owed = [o for o in owed if o is not None]
        if owed:
            self.scheduler.when_written(functools.partial(_settle_all, owed))

    def _phrases(self) -> bool:
        """Whether cues have passing notes to shed: the conductor plays phrases
        (``model.passing_notes``, influence below 1, the pitch model) and the clock's span
        holds at least one of them (see ``Conductor._phrase``)."""
        clock, model = self.config.clock, self.config.model
        span = 1.0 / clock.max_rate if clock.mode == "event" else self.tick_period()
        return (model.passing_notes > 0 and model.influence < 1.0
                and int(span / MIN_NOTE) > 1 and not is_temporal(self.conductor.stepper))

    def _play_phrases(self, cues: list[Cue], keep: int, waited: float) -> None:
        """Play ``cues``, all but the last ``keep`` without their passing notes (a span with
        room for none: the data's note alone, chosen as ever), in one step each; the oldest
        came ``waited`` seconds ago. :class:`Shedding` learns what the last ``keep`` cost
        (on the loop's clock: nothing, on virtual time)."""
        shed = len(cues) - keep
        if shed:
            self.shedding.count(shed, waited)
            self._play([replace(cue, span=MIN_NOTE) for cue in cues[:shed]])
        if keep:
            began = self.loop.time()
            self._play(cues[shed:])
            self.shedding.measured(keep, self.loop.time() - began)

    def _play(self, cues: list[Cue]) -> None:
        for note in self.conductor.play(cues).notes:
            self.scheduler.play(note)
            self.played += 1

    # -- shutdown --------------------------------------------------------------------------
    async def drain(self) -> None:
        """After the input ended: let the queues play out, then wait for the last note-off."""
        if self.rhythm is not None:
            await self.rhythm.drain()
        while self.waiting or not self.scheduler.idle:
            if self.waiting and self.config.clock.mode == "tick":
                self._ensure_ticking()
            end = self.scheduler.end_time if not self.waiting else self.loop.time() + 0.05
            await asyncio.sleep(min(max(end - self.loop.time(), 0.0) + 0.005, 0.25))

    def cancel(self) -> None:
        """Stop scheduling anything new (the daemon then closes the scheduler). What still
        waits to play (in the queues, for the batch step, in a tick's next slices, for the
        temporal model's next onset) is dropped unplayed, counted as ``dropped.at_stop``;
        its receipts stay unsettled (the sender delivers those messages again)."""
        self.dropped_at_stop += (sum(agg.count for queue in self._queues.values()
                                     for agg in queue)
                                 + sum(owed.count if isinstance(owed, Aggregate) else 1
                                       for _, _, owed, _ in self._batch)
                                 + sum(agg.count for _, agg, _ in self._slices))
        self._queues.clear()
        self._batch.clear()
        self._batched.clear()
        self._slices.clear()
        for handle in self._flush.values():
            handle.cancel()
        self._flush.clear()
        if self._batch_handle is not None:  # what waits for the batch stays unsettled
            self._batch_handle.cancel()
            self._batch_handle = None
            self._batch_soon = False
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        if self._slice_handle is not None:  # the tick's unplayed cues stay unsettled
            self._slice_handle.cancel()
            self._slice_handle = None
        if self.rhythm is not None:
            self.dropped_at_stop += self.rhythm.cancel()
