"""The event clock's batched step (``clock.batch_window``), through the real conductor.

Many streams, each sampled twice in quick succession per round (the second sample comes
while the first still waits for its batch), fed into a real ``Engine`` + ``Conductor`` +
``Scheduler`` on a real asyncio loop: the notes of every stream with the window at 0 (every
note stepped alone) and at 10 ms (stepped in batches) are the same notes, and the batches
are real (far fewer steps than notes). A stream evicted while its cue waits for the batch
is dropped and counted, its delivery settled; deliveries are settled only once the batch
has played.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from streamsonic.conductor import Conductor
from streamsonic.config import Config, load_config
from streamsonic.engine import MAX_BATCH, Engine
from streamsonic.events import NoteEvent, Sample
from streamsonic.model.loader import load_pitch_model
from streamsonic.scheduler import Scheduler
from streamsonic.sinks.base import Sink


class Notes(Sink):
    """Records the notes as they sound."""

    def __init__(self) -> None:
        super().__init__("notes")
        self.notes: list[NoteEvent] = []

    def note(self, event: NoteEvent) -> None:
        self.notes.append(event)

    def _send(self, msg: object, time: float) -> None:
        pass


class Recording(Scheduler):
    """The real scheduler, recording the notes in the order the engine schedules them (the
    order the conductor made them: a stream's notes in the order of its samples)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sinks: list[Sink]) -> None:
        super().__init__(loop, sinks)
        self.scheduled: list[NoteEvent] = []

    def play(self, note: NoteEvent) -> None:
        self.scheduled.append(note)
        super().play(note)


class Receipt:
    def __init__(self) -> None:
        self.settled = 0

    def done(self) -> None:
        self.settled += 1


def build(config: Config) -> tuple[Engine, Notes]:
    loop = asyncio.get_running_loop()
    stepper, encoding, _ = load_pitch_model(config.model)
    sink = Notes()
    return Engine(Conductor(config, stepper, encoding), Recording(loop, [sink]), loop), sink


def config(weights: Path, window: float, **more: object) -> Config:
    return load_config(None, {"model.weights": str(weights), "clock.batch_window": window,
                              "clock.max_rate": 1000.0, "clock.backlog": 100_000,
                              "music.note_length": 0.05, "model.temperature": 0.0,
                              "accent.earcon": False, **more})


async def play(weights: Path, window: float) -> tuple[dict[str, list[tuple]], Engine]:
    engine, sink = build(config(weights, window))
    rng = random.Random(7)
    level = {f"s{i}": rng.uniform(-5, 5) for i in range(60)}
    for _ in range(8):
        for _ in range(2):  # the second sample comes while the first waits for its batch
            for name, now in level.items():
                level[name] = now + rng.gauss(0, 1) + (25.0 if rng.random() < 0.02 else 0.0)
                engine.feed(Sample(name, 0.0, round(level[name], 3)))
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.02)
    await engine.drain()
    engine.cancel()
    assert isinstance(engine.scheduler, Recording)
    assert len(sink.notes) == len(engine.scheduler.scheduled)  # all of them sounded
    out: dict[str, list[tuple]] = {}
    for n in engine.scheduler.scheduled:
        out.setdefault(n.stream, []).append(
            (n.value, n.pitch, n.velocity, n.accent, n.normalized, n.anomaly,
             getattr(n, "source", "data")))  # model.passing_notes adds "model" notes
    return out, engine


async def test_batched_steps_play_the_notes_of_steps_alone(random_pitch_checkpoint: Path) -> None:
    alone, one_by_one = await play(random_pitch_checkpoint, 0.0)
    batched, engine = await play(random_pitch_checkpoint, 0.01)
    assert len(alone) == 60 and all(len(v) >= 16 for v in alone.values())
    assert batched == alone
    assert one_by_one.batches == one_by_one.samples == 60 * 16  # window 0: a step each
    assert engine.batches * 8 <= engine.samples, (engine.batches, engine.samples)
    # some notes differ in pitch between streams: the comparison is not vacuous
    assert len({v[0][1] for v in alone.values()} | {v[-1][1] for v in alone.values()}) > 3


async def test_batches_are_bounded_slices_stepped_at_the_next_turn(
        random_pitch_checkpoint: Path) -> None:
    """More than MAX_BATCH cues: slices of MAX_BATCH, one per loop turn, without waiting
    for the window; the rest (fewer) after the window."""
    engine, sink = build(config(random_pitch_checkpoint, 0.1))
    for i in range(2 * MAX_BATCH + 10):
        engine.feed(Sample(f"s{i}", 0.0, float(i % 7)))
    assert engine.batches == 0 and engine.waiting == 2 * MAX_BATCH + 10  # feeding only
    await asyncio.sleep(0)
    assert engine.batches == 1 and len(sink.notes) == MAX_BATCH
    await asyncio.sleep(0)
    assert engine.batches == 2 and len(sink.notes) == 2 * MAX_BATCH
    assert engine.waiting == 10  # fewer than MAX_BATCH: they wait for the window
    await engine.drain()
    assert engine.batches == 3 and len(sink.notes) == 2 * MAX_BATCH + 10


async def test_a_quiet_clock_steps_at_the_next_turn_and_a_flow_waits_for_the_window(
        random_pitch_checkpoint: Path) -> None:
    """A sample that comes when no batch was stepped within the window (a sparse feed: the
    latency benchmark's one line every 20 ms) is stepped at the loop's next turn with what
    that turn fed, not after the window (which added its 5 ms to every such note); one that
    comes within the window after a step waits for the window, with the others that come."""
    loop = asyncio.get_running_loop()
    engine, sink = build(config(random_pitch_checkpoint, 0.1))
    engine.feed(Sample("a", 0.0, 1.0))
    engine.feed(Sample("b", 0.0, 2.0))  # the same turn: the same batch
    began = loop.time()
    await asyncio.sleep(0)
    assert engine.batches == 1 and sorted(n.stream for n in sink.notes) == ["a", "b"]
    assert loop.time() - began < 0.05  # not the window's 0.1 s
    engine.feed(Sample("c", 0.0, 3.0))  # within the window after that step: samples flow
    await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    assert engine.batches == 1 and engine.waiting == 1
    engine.feed(Sample("d", 0.0, 4.0))
    await asyncio.sleep(0.15)
    assert engine.batches == 2 and [n.stream for n in sink.notes][2:] == ["c", "d"]
    await asyncio.sleep(0.12)  # quiet again
    engine.feed(Sample("e", 0.0, 5.0))
    await asyncio.sleep(0)
    assert engine.batches == 3 and sink.notes[-1].stream == "e"
    engine.cancel()


async def test_receipts_settle_after_the_batch_and_eviction_drops_a_batched_cue(
        random_pitch_checkpoint: Path) -> None:
    engine, sink = build(config(random_pitch_checkpoint, 0.05, **{"streams.max_streams": 1}))
    old, new = Receipt(), Receipt()
    engine.feed(Sample("old", 0.0, 1.0), old)
    assert engine.waiting == 1 and not sink.notes and old.settled == 0  # waits for the batch
    engine.feed(Sample("new", 0.0, 2.0), new)  # the table is full: "old" goes, batched cue too
    assert old.settled == 1 and new.settled == 0
    assert engine.stats["dropped.evicted"] == 1 and engine.waiting == 1
    await engine.drain()
    assert [n.stream for n in sink.notes] == ["new"] and new.settled == 1
    engine.cancel()


async def test_a_tick_of_thousands_of_streams_plays_in_bounded_slices(
        random_pitch_checkpoint: Path) -> None:
    """Tick clock: every stream with waiting samples plays at the tick, in steps of at most
    MAX_BATCH cues, one per loop turn; every stream gets its note."""
    engine, sink = build(config(random_pitch_checkpoint, 0.0, **{
        "clock.mode": "tick", "clock.step": 0.1, "music.tempo": 120.0}))
    sizes: list[int] = []
    play = engine._play

    def counting(cues: list) -> None:
        sizes.append(len(cues))
        play(cues)

    engine._play = counting  # type: ignore[method-assign]
    streams = 2 * MAX_BATCH + 5
    for i in range(streams):  # the first sample starts the clock (a tick of its own)
        engine.feed(Sample(f"s{i}", 0.0, float(i % 11)))
    await engine.drain()
    engine.cancel()
    assert sizes == [1, MAX_BATCH, MAX_BATCH, 4]
    assert sorted(n.stream for n in sink.notes) == sorted(f"s{i}" for i in range(streams))
