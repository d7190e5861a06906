"""``rhythm = "model"``: the temporal model decides when notes start, how long, how loud.

The :class:`~streamsonic.conductor.Conductor` plays the
:class:`~streamsonic.model.temporal.TemporalStepper` as it plays the pitch stepper (data in
the pitch slot, the chooser picks the pitch, the chosen note is what the network remembers);
its :class:`~streamsonic.conductor.StepResult` carries the timing the model predicted for
each note. :class:`RhythmDriver` runs each stream on its own clock: a stream's next
note starts ``delay`` seconds after its previous one, as the model predicted, and plays
the aggregate of the samples that arrived since (``clock.aggregate``). A stream that
received nothing by then falls silent; its next sample plays at once and restarts it. An
accented sample plays at once too: the model sets timing and ordinary loudness, never
whether (or how late, or how softly) an accent is heard.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from streamsonic.conductor import Conductor, Cue, Reading
from streamsonic.config import Config
from streamsonic.encoding import PitchEncoding
from streamsonic.engine import Aggregate, fold
from streamsonic.events import NoteEvent, Sample
from streamsonic.model.checkpoint import default_weights, load_weights
from streamsonic.model.stepper import resolve_device
from streamsonic.model.temporal import TemporalStepper
from streamsonic.scheduler import Handle, Scheduler

log = logging.getLogger(__name__)


def load_temporal_model(config: Config) -> tuple[TemporalStepper, PitchEncoding]:
    """The temporal model (``model.temporal_weights``: a ``.pt`` checkpoint or its ``.npz``;
    default shipped) as a stepper (torch, either way)."""
    path = config.model.temporal_weights or default_weights("temporal")
    ckpt = load_weights(path, kind="temporal")
    device = resolve_device(config.model.device)
    stepper = TemporalStepper.from_checkpoint(ckpt, device, tempo=config.music.tempo,
                                              temperature=config.model.rhythm_temperature)
    log.info("temporal model %s on %s decides the rhythm", path, device)
    return stepper, stepper.encoding


class RhythmDriver:
    """Per-stream note clocks driven by the temporal model's predicted gaps."""

    def __init__(self, conductor: Conductor, scheduler: Scheduler,
                 loop: asyncio.AbstractEventLoop) -> None:
        if not isinstance(conductor.stepper, TemporalStepper):
            raise TypeError("rhythm = 'model' needs a conductor built on the temporal model")
        self.conductor = conductor
        self.scheduler = scheduler
        self.loop = loop
        self._waiting: dict[str, Aggregate] = {}
        self._timers: dict[str, Handle] = {}
        self.played = 0
        #: told each note as it is scheduled (the engine counts them with its own)
        self.on_play: list[Callable[[NoteEvent], object]] = []
        #: told how many samples a note that played folded in besides its own (the
        #: engine's ``folded``: samples = notes + folded + dropped)
        self.on_folded: list[Callable[[int], object]] = []

    def feed(self, sample: Sample, reading: Reading) -> None:
        """A sample arrives: it waits for its stream's next onset, or plays now if idle.

        An accented sample never waits: it plays at once (with what waited for the next
        onset folded in) and the stream's clock restarts from it. Waiting, it could share
        a long gap's note with the next accent and one of the two would never be heard;
        and a listener on watch should not hear an alarm up to a bar late.
        """
        stream = sample.stream
        agg = self._waiting.get(stream)
        if agg is None:
            self._waiting[stream] = Aggregate.of(sample, reading)
        else:
            fold(agg, sample, reading, self.conductor, self.conductor.config.clock.aggregate)
        timer = self._timers.get(stream)
        if timer is not None and reading.accent:
            timer.cancel()
            del self._timers[stream]
        if stream not in self._timers:
            self._play(stream, self.loop.time() + self.scheduler.latency)

    def _play(self, stream: str, start: float) -> None:
        agg = self._waiting.pop(stream, None)
        if agg is None:
            self._timers.pop(stream, None)  # nothing new: the stream rests until data comes
            return
        sample = Sample(stream, agg.time, agg.value(self.conductor.config.clock.aggregate))
        played = self.conductor.play([Cue(sample, start, reading=agg.reading)])
        for note in played.notes:
            self.scheduler.play(note)
            self.played += 1
            for listener in self.on_play:
                listener(note)
        if agg.count > 1:
            for folded in self.on_folded:
                folded(agg.count - 1)
        if not played.timings:  # __init__ made sure of the temporal model
            raise TypeError("rhythm = 'model' needs a conductor built on the temporal model")
        nxt = start + played.timings[0].delay
        self._timers[stream] = self.loop.call_at(nxt - self.scheduler.latency,
                                                 lambda: self._play(stream, nxt))

    def forget(self, stream: str) -> int:
        """Stop ``stream``'s clock and drop what waits for its next onset (an evicted
        stream); returns how many samples were dropped."""
        handle = self._timers.pop(stream, None)
        if handle is not None:
            handle.cancel()
        agg = self._waiting.pop(stream, None)
        return agg.count if agg is not None else 0

    async def drain(self) -> None:
        """Wait until every waiting sample has played."""
        while self._waiting:
            await asyncio.sleep(0.05)

    def cancel(self) -> int:
        """Stop every stream's clock and drop what waits for the next onsets; returns how
        many samples were dropped."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        dropped = sum(agg.count for agg in self._waiting.values())
        self._waiting.clear()
        return dropped
