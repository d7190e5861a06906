"""The live engine's clock policies, on a real asyncio loop with a recording sink."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import mido
import pytest

from streamsonic.conductor import Conductor, Reading
from streamsonic.config import Config, load_config
from streamsonic.engine import Aggregate, Engine, fold
from streamsonic.events import NoteEvent, Sample
from streamsonic.model.loader import load_pitch_model
from streamsonic.scheduler import Scheduler, VirtualClock
from streamsonic.sinks.base import Sink


class Recorder(Sink):
    """Unit-test sink: records (loop time when sent, message time, message) and notes."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__("recorder")
        self.loop = loop
        self.log: list[tuple[float, float, mido.Message]] = []
        self.notes: list[NoteEvent] = []

    def note(self, event: NoteEvent) -> None:
        self.notes.append(event)

    def _send(self, msg: mido.Message, time: float) -> None:
        self.log.append((self.loop.time(), time, msg))


def build(config: Config, loop: asyncio.AbstractEventLoop) -> tuple[Engine, Recorder]:
    stepper, encoding, _ = load_pitch_model(config.model)
    rec = Recorder(loop)
    engine = Engine(Conductor(config, stepper, encoding), Scheduler(loop, [rec]), loop)
    return engine, rec


def cfg(weights: Path, **overrides: object) -> Config:
    # One note per sample (no notes added by the model, tested in test_phrases.py): these
    # tests follow the clock's handling of samples.
    return load_config(None, {"model.weights": str(weights), "music.note_length": 0.1,
                              "model.passing_notes": 0, **overrides})


def balanced(rec: Recorder) -> bool:
    ons = sorted((m.channel, m.note) for _, _, m in rec.log if m.type == "note_on")
    offs = sorted((m.channel, m.note) for _, _, m in rec.log if m.type == "note_off")
    return ons == offs and not rec.sounding


async def test_event_clock_caps_rate_and_queues_a_burst(random_pitch_checkpoint: Path) -> None:
    loop = asyncio.get_running_loop()
    engine, rec = build(cfg(random_pitch_checkpoint, **{"clock.max_rate": 20.0}), loop)
    for v in [1.0, 5.0, 3.0, 9.0]:
        engine.feed(Sample("s", 0.0, v))
    await engine.drain()
    assert [n.value for n in rec.notes] == [1.0, 5.0, 3.0, 9.0]
    assert balanced(rec)
    # (the spacing, without a loaded machine's timer jitter: the next test)


def test_event_clock_spaces_a_burst_at_the_rate_cap(random_pitch_checkpoint: Path) -> None:
    """The same burst on a virtual clock (as render and tests/test_fuzz.py run the engine):
    the cap's arithmetic alone decides when each note starts, 1 / max_rate apart. On a
    real loop a machine under load fires the flush timers late, and a late first step
    leaves less than that before the next (seen beside two busy loops on 2 cores)."""
    clock = VirtualClock()
    config = cfg(random_pitch_checkpoint, **{"clock.max_rate": 20.0})
    stepper, encoding, _ = load_pitch_model(config.model)
    rec = Recorder(clock)  # type: ignore[arg-type]  # time() is all it uses
    engine = Engine(Conductor(config, stepper, encoding), Scheduler(clock, [rec]),
                    clock)  # type: ignore[arg-type]  # time, call_at, call_soon: all it uses
    for v in [1.0, 5.0, 3.0, 9.0]:
        engine.feed(Sample("s", 0.0, v))
    clock.run_all()
    assert [n.value for n in rec.notes] == [1.0, 5.0, 3.0, 9.0]
    starts = [n.start for n in rec.notes]
    assert [round(b - a, 9) for a, b in itertools.pairwise(starts)] == [1 / 20] * 3
    assert balanced(rec)


@pytest.mark.parametrize(("how", "expected"), [("last", 7.0), ("mean", 5.0), ("min", 1.0),
                                               ("max", 9.0)])
async def test_overflow_beyond_backlog_is_aggregated(random_pitch_checkpoint: Path, how: str,
                                                     expected: float) -> None:
    loop = asyncio.get_running_loop()
    config = cfg(random_pitch_checkpoint, **{"clock.max_rate": 50.0, "clock.backlog": 1,
                                             "clock.aggregate": how})
    engine, rec = build(config, loop)
    engine.feed(Sample("s", 0.0, 100.0))  # plays at once
    for v in [1.0, 9.0, 3.0, 7.0]:  # faster than the cap, backlog 1: one aggregate
        engine.feed(Sample("s", 0.0, v))
    await engine.drain()
    assert [n.value for n in rec.notes] == [100.0, expected]
    assert engine.aggregated == 3
    assert balanced(rec)


async def test_streams_have_independent_caps(random_pitch_checkpoint: Path) -> None:
    loop = asyncio.get_running_loop()
    engine, rec = build(cfg(random_pitch_checkpoint, **{"clock.max_rate": 2.0}), loop)
    engine.feed(Sample("a", 0.0, 1.0))
    engine.feed(Sample("b", 0.0, 2.0))
    await asyncio.sleep(0.05)
    assert {n.stream for n in rec.notes} == {"a", "b"}  # both at once, no waiting
    assert len({n.channel for n in rec.notes}) == 2
    await engine.drain()


async def test_tick_clock_one_note_per_stream_per_tick(random_pitch_checkpoint: Path) -> None:
    loop = asyncio.get_running_loop()
    config = cfg(random_pitch_checkpoint, **{"clock.mode": "tick", "clock.step": 0.1,
                                             "music.tempo": 120.0, "clock.backlog": 0})
    engine, rec = build(config, loop)
    period = engine.tick_period()
    assert period == pytest.approx(0.05)
    for i in range(3):  # three samples of a, one of b, before the first tick
        engine.feed(Sample("a", 0.0, float(i)))
        if i == 0:
            engine.feed(Sample("b", 0.0, 10.0))
    await asyncio.sleep(period * 0.5)
    engine.feed(Sample("a", 0.0, 42.0))
    await engine.drain()
    by_stream = {s: [n for n in rec.notes if n.stream == s] for s in ("a", "b")}
    assert len(by_stream["b"]) == 1
    # a: the first sample opened the tick; the next two and 42 folded into the next tick
    assert [n.value for n in by_stream["a"]] == [0.0, 42.0]
    starts = sorted({n.start for n in rec.notes})
    assert starts[1] - starts[0] == pytest.approx(period, abs=0.02)
    assert balanced(rec)


async def test_every_note_on_has_its_note_off_under_load(random_pitch_checkpoint: Path) -> None:
    loop = asyncio.get_running_loop()
    config = cfg(random_pitch_checkpoint, **{"clock.max_rate": 200.0, "music.note_length": 2.0})
    engine, rec = build(config, loop)
    for i in range(60):
        engine.feed(Sample(f"s{i % 4}", 0.0, float(i % 7)))
        await asyncio.sleep(0.002)
    await engine.drain()
    assert len(rec.notes) > 20
    assert balanced(rec)


async def test_queued_samples_play_as_they_stood_on_arrival(random_pitch_checkpoint: Path) -> None:
    loop = asyncio.get_running_loop()
    config = cfg(random_pitch_checkpoint, **{"clock.max_rate": 100.0, "model.influence": 1.0,
                                             "music.scale": "chromatic"})
    engine, rec = build(config, loop)
    for v in [1.0, 2.0, 3.0, 1e9]:  # 2 and 3 wait in the queue while 1e9 arrives
        engine.feed(Sample("s", 0.0, v))
    await engine.drain()
    by_value = {n.value: n for n in rec.notes}
    assert by_value[2.0].normalized == 1.0  # a new high when it arrived
    assert by_value[3.0].normalized == 1.0
    assert by_value[3.0].pitch == by_value[1e9].pitch == 89


@pytest.mark.parametrize("window", [0.0, 0.005])
async def test_a_busy_loop_does_not_fold_what_the_cap_lets_play(random_pitch_checkpoint: Path,
                                                                  window: float) -> None:
    """A firehose fed without a loop turn (as a fast source is, for YIELD_EVERY): a burst
    of three rows leaves two samples per stream waiting, then one row per cap interval.
    A stream's waiting sample plays as soon as its next sample finds the cap passed (its
    flush timer is late only because the loop is busy), so the queue does not grow and
    nothing folds; with the batch window and without it alike."""
    loop = asyncio.get_running_loop()
    config = cfg(random_pitch_checkpoint, **{"clock.max_rate": 1000.0, "clock.backlog": 2,
                                             "clock.batch_window": window})
    engine, rec = build(config, loop)
    streams, rows = ["a", "b", "c"], 40
    for k in range(rows):
        for name in streams:
            engine.feed(Sample(name, float(k), float(k % 7)))
        if k >= 2:  # after the burst: the cap's 1 ms passes, the loop gets no turn
            deadline = time.monotonic() + 0.0015
            while time.monotonic() < deadline:
                pass
    await engine.drain()
    assert engine.aggregated == 0
    assert len(rec.notes) == engine.samples == rows * len(streams)
    assert [n.value for n in rec.notes if n.stream == "a"] == [float(k % 7) for k in range(rows)]
    assert balanced(rec)


def test_an_aggregate_plays_a_new_surprise_before_a_way_back() -> None:
    """Samples folded into one note: the note plays the most anomalous, but a sample on
    the way back from an accent (scored high, no new surprise) comes after any that is
    not, and an accented one before both."""
    back = Reading(0.5, anomaly=0.99, direction=1, back=True)
    new = Reading(0.9, anomaly=0.6, direction=1)
    agg = Aggregate.of(Sample("s", 0.0, 40.0), back)
    agg.add(Sample("s", 1.0, 70.0), new)
    assert agg.peak is new and agg.value("anomalous") == 70.0
    accented = Reading(0.1, anomaly=0.55, direction=-1, accent=True)
    agg.add(Sample("s", 2.0, 5.0), accented)
    assert agg.peak is accented and agg.value("anomalous") == 5.0


@pytest.mark.parametrize("how", ["anomalous", "last", "mean"])
def test_a_folded_note_of_way_back_samples_plays_as_the_way_back(
        random_pitch_checkpoint: Path, how: str) -> None:
    """Every aggregation keeps whether its peak was on the way back from an accent, so a
    note folded only from such samples plays at ordinary loudness too; one that also
    holds a new surprise does not."""
    config = load_config(None, {"model.weights": str(random_pitch_checkpoint),
                                "model.device": "cpu"})
    stepper, encoding, _ = load_pitch_model(config.model)
    conductor = Conductor(config, stepper, encoding)
    conductor.observe(Sample("s", 0.0, 1.0))
    back = Reading(0.5, anomaly=0.99, direction=1, back=True)
    agg = Aggregate.of(Sample("s", 1.0, 40.0), back)
    fold(agg, Sample("s", 2.0, 41.0), back, conductor, how)
    assert agg.reading is not None and agg.reading.back
    # a new surprise, then the way back (the last): the note plays the surprise's
    agg = Aggregate.of(Sample("s", 1.0, 70.0), Reading(0.9, anomaly=0.6, direction=1))
    fold(agg, Sample("s", 2.0, 41.0), back, conductor, how)
    assert agg.reading is not None and not agg.reading.back
