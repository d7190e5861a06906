"""The scheduler with sinks that take no channel messages (events, MQTT): each note once, in
order, nothing queued for them; ``idle``/``end_time`` still count a note until its end; a
sink that takes messages, added while notes sound, gets a note-off for exactly the notes it
got a note-on for."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import mido
import pytest

from streamsonic.conductor import Conductor
from streamsonic.config import load_config
from streamsonic.engine import Engine
from streamsonic.errors import OutputError
from streamsonic.events import NoteEvent, Sample
from streamsonic.model.loader import load_pitch_model
from streamsonic.music import Earcon
from streamsonic.scheduler import SOUNDING_SLACK, Scheduler, VirtualClock
from streamsonic.sinks.base import Sink
from streamsonic.sinks.events import EventsSink, note_line
from streamsonic.sinks.mqtt import MqttSink


class Recorder(Sink):
    """Takes channel messages: records (clock time, message time, message)."""

    def __init__(self, clock: VirtualClock, name: str = "recorder",
                 lookahead: float = 0.0) -> None:
        super().__init__(name)
        self.clock = clock
        self.lookahead = lookahead
        self.log: list[tuple[float, float, mido.Message]] = []

    def _send(self, msg: mido.Message, time: float) -> None:
        self.log.append((self.clock.time(), time, msg))

    def notes(self) -> list[tuple[float, str, int]]:
        return [(t, m.type, m.note) for _, t, m in self.log if m.type in ("note_on", "note_off")]


class NotesOnly(Sink):
    """Takes no channel messages: records (clock time, note); one is a failure."""

    channel_messages = False

    def __init__(self, clock: VirtualClock | asyncio.AbstractEventLoop,
                 fail_at: int = -1) -> None:
        super().__init__("notes")
        self.clock = clock
        self.got: list[tuple[float, NoteEvent]] = []
        self.fail_at = fail_at

    def note(self, event: NoteEvent) -> None:
        if len(self.got) == self.fail_at:
            raise OutputError("boom")
        self.got.append((self.clock.time(), event))

    def _send(self, msg: mido.Message, time: float) -> None:
        raise AssertionError(f"a notes-only sink was sent {msg}")


def note(stream: str, start: float, pitch: int = 60, duration: float = 0.5, channel: int = 0,
         program: int = 0, accent: bool = False) -> NoteEvent:
    return NoteEvent(stream, 0.0, 1.0, 0.5, pitch, 80, duration, channel, program, start,
                     accent=accent, direction=1 if accent else 0)


def test_the_events_and_mqtt_outputs_take_no_channel_messages() -> None:
    assert EventsSink.channel_messages is False and MqttSink.channel_messages is False
    assert Sink.channel_messages is True


def test_events_output_alone_writes_every_note_once_in_order() -> None:
    clock = VirtualClock()
    out = io.StringIO()
    sched = Scheduler(clock, [EventsSink(out)])
    played = []
    for i in range(40):  # cut off by the stream's next note, or ending by themselves
        clock.run_until(i * 0.1)
        n = note(f"s{i % 3}", i * 0.1 + (0.05 if i % 4 == 0 else 0.0), pitch=50 + i,
                 duration=0.05 + (i % 5) * 0.1)
        sched.play(n)
        played.append(n)
    clock.run_all()
    sched.close()
    lines = out.getvalue().splitlines()
    expected = sorted(played, key=lambda n: n.start)  # a note waits for its start
    assert lines == [note_line(n) for n in expected]
    assert [json.loads(line)["pitch"] for line in lines] == [n.pitch for n in expected]
    assert sched.notes_out["events"] == 40


def test_a_notes_only_sink_gets_each_note_at_its_start_and_no_message() -> None:
    clock = VirtualClock()
    early = Recorder(clock, lookahead=0.1)  # the engine starts notes at now + latency
    notes = NotesOnly(clock)
    sched = Scheduler(clock, [early, notes])
    sched.play(note("a", 1.0, duration=2.0))
    sched.play(note("b", 1.2, pitch=70, duration=0.3, channel=1))
    clock.run_until(1.1)
    sched.play(note("a", 1.5, pitch=62))
    clock.run_all()
    sched.close()
    assert [(t, n.stream, n.pitch) for t, n in notes.got] == [
        (1.0, "a", 60), (1.2, "b", 70), (1.5, "a", 62)]
    assert early.notes() == [(1.0, "note_on", 60), (1.2, "note_on", 70),
                             (1.5, "note_off", 70), (1.5, "note_off", 60), (1.5, "note_on", 62),
                             (2.0, "note_off", 62)]
    assert not early.sounding


def test_idle_and_end_time_count_a_note_until_its_end_without_message_sinks() -> None:
    clock = VirtualClock()
    notes = NotesOnly(clock)
    sched = Scheduler(clock, [notes])
    assert sched.idle and sched.end_time == 0.0
    sched.play(note("a", 0.0, duration=2.0))
    sched.play(note("b", 0.5, duration=1.0))  # waits for its start
    assert not sched.idle and sched.end_time == 2.0
    clock.run_until(1.0)
    assert len(notes.got) == 2
    sched.play(note("a", 1.0, duration=0.25))  # cuts a's note: ends at 1.25
    assert not sched.idle and sched.end_time == 1.5
    clock.run_until(1.5)
    assert sched.idle and sched.end_time == 1.5
    sched.play(note("c", 1.5, duration=3.0))
    clock.run_until(2.0)
    assert sched.release("c") and sched.idle  # released: it ends now
    assert not sched.release("c")
    assert sched.end_time == 2.0


async def test_engine_drain_waits_for_the_last_note_with_a_notes_only_output(
        random_pitch_checkpoint: Path) -> None:
    """Engine.drain (after the input ends) with only a notes output: it returns once the
    last note has ended, not at its start."""
    loop = asyncio.get_running_loop()
    config = load_config(None, {"model.weights": str(random_pitch_checkpoint),
                                "music.note_length": 2.0, "model.passing_notes": 0,
                                "clock.max_rate": 50.0})
    stepper, encoding, _ = load_pitch_model(config.model)
    notes = NotesOnly(loop)
    engine = Engine(Conductor(config, stepper, encoding), Scheduler(loop, [notes]), loop)
    for v in [1.0, 4.0, 2.0]:
        engine.feed(Sample("s", 0.0, v))
    engine.feed(Sample("t", 0.0, 3.0))
    await engine.drain()
    assert len(notes.got) == 4
    last = max(n.start + n.duration for _, n in notes.got)
    assert last - notes.got[-1][1].start > 0.2  # the notes last: the test tells them apart
    assert loop.time() >= last
    assert engine.scheduler.idle


@pytest.mark.parametrize("before", ["none", "recorder"])
def test_a_sink_added_while_notes_sound_gets_note_offs_only_for_its_notes(before: str) -> None:
    clock = VirtualClock()
    notes = NotesOnly(clock)
    first = Recorder(clock, "first")
    sched = Scheduler(clock, [notes] + ([first] if before == "recorder" else []))
    sched.play(note("a", 0.0, pitch=60, duration=2.0, program=5))  # cut by a's next note
    sched.play(note("b", 0.0, pitch=61, duration=2.0, channel=1))  # released
    sched.play(note("c", 0.0, pitch=62, duration=0.75, channel=2))  # ends by itself
    clock.run_until(0.5)
    added = Recorder(clock, "added")
    sched.add_sink(added)
    assert [(m.channel, m.program) for _, _, m in added.log if m.type == "program_change"] == [
        (0, 5), (1, 0), (2, 0)]
    sched.play(note("d", 0.5, pitch=63, duration=2.0, channel=3))  # the added sink's: cut
    sched.play(note("e", 0.5, pitch=64, duration=5.0, channel=4))  # released
    sched.play(note("f", 0.5, pitch=65, duration=0.5, channel=5))  # ends by itself
    clock.run_until(1.0)
    sched.play(note("a", 1.0, pitch=66, duration=0.5, program=5))
    sched.play(note("d", 1.0, pitch=67, duration=0.5, channel=3))
    assert sched.release("b") and sched.release("e")
    clock.run_until(3.0)
    assert sched.idle
    assert added.notes() == [
        (0.5, "note_on", 63), (0.5, "note_on", 64), (0.5, "note_on", 65),
        (1.0, "note_off", 65), (1.0, "note_on", 66), (1.0, "note_off", 63),
        (1.0, "note_on", 67), (1.0, "note_off", 64), (1.5, "note_off", 66),
        (1.5, "note_off", 67)]
    assert not added.sounding
    if before == "recorder":  # the sink there from the start: every note, every note-off
        ons = [(t, n) for t, k, n in first.notes() if k == "note_on"]
        offs = [(t, n) for t, k, n in first.notes() if k == "note_off"]
        assert sorted(n for _, n in ons) == sorted(n for _, n in offs) == list(range(60, 68))
        assert (0.75, 62) in offs and (1.0, 60) in offs and (1.0, 61) in offs
        assert not first.sounding
    assert len(notes.got) == 8
    sched.close()


def test_a_sink_added_while_notes_sound_is_silenced_at_close() -> None:
    clock = VirtualClock()
    sched = Scheduler(clock, [NotesOnly(clock)])
    sched.play(note("a", 0.0, duration=10.0))
    clock.run_until(1.0)
    added = Recorder(clock, "added")
    sched.add_sink(added)
    sched.play(note("b", 1.0, pitch=70, duration=10.0, channel=1))
    clock.run_until(2.0)
    sched.close()
    sent = [(m.type, getattr(m, "note", None), getattr(m, "control", None))
            for _, _, m in added.log]
    assert ("note_off", 70, None) in sent and ("note_off", 60, None) not in sent
    assert ("control_change", None, 123) in sent and ("control_change", None, 120) in sent
    assert added.closed and not added.sounding


def test_earcons_go_to_message_sinks_only_and_their_program_to_a_sink_added_later() -> None:
    clock = VirtualClock()
    notes = NotesOnly(clock)
    earcon = Earcon(channel=9, program=3, note_up=76, note_down=77, velocity=90, delay=0.05,
                    length=0.1)
    sched = Scheduler(clock, [notes], earcon=earcon)
    sched.play(note("a", 0.0, accent=True))
    clock.run_until(0.5)
    assert sched.earcons == 1
    added = Recorder(clock, "added")
    sched.add_sink(added)
    assert (9, 3) in [(m.channel, m.program) for _, _, m in added.log
                      if m.type == "program_change"]
    sched.play(note("a", 1.0, accent=True))
    clock.run_all()
    assert [x for x in added.notes() if x[2] == 76] == [
        (pytest.approx(1.05), "note_on", 76), (pytest.approx(1.15), "note_off", 76)]
    assert len(notes.got) == 2 and sched.earcons == 2


def test_a_failing_notes_only_sink_is_closed_and_the_others_play_on() -> None:
    clock = VirtualClock()
    bad, good = NotesOnly(clock, fail_at=1), Recorder(clock)
    sched = Scheduler(clock, [bad, good])
    for i in range(3):
        clock.run_until(float(i))
        sched.play(note("a", float(i), pitch=60 + i))
    clock.run_all()
    assert bad.closed and bad not in sched.sinks and sched.failed[0][0] is bad
    assert [n for _, k, n in good.notes() if k == "note_on"] == [60, 61, 62]
    assert not good.sounding


def test_notes_that_ended_without_a_note_off_are_forgotten() -> None:
    """Streams that come and go (each its own name) with only notes outputs: what the
    scheduler remembers of their notes stays bounded."""
    clock = VirtualClock()
    sched = Scheduler(clock, [NotesOnly(clock)])
    for i in range(10 * SOUNDING_SLACK):
        clock.run_until(i * 0.001)
        sched.play(note(f"s{i}", i * 0.001, duration=0.1))
    assert len(sched._sounding) <= 2 * SOUNDING_SLACK + 1
    assert not sched.idle and sched.end_time == pytest.approx((10 * SOUNDING_SLACK - 1) * 0.001
                                                              + 0.1)
    clock.run_until(100.0)
    assert sched.idle and sched.end_time == 100.0


def test_a_notes_only_sink_added_while_notes_sound_gets_the_notes_from_then_on() -> None:
    clock = VirtualClock()
    first = Recorder(clock)
    sched = Scheduler(clock, [first])
    sched.play(note("a", 0.0, duration=2.0, program=7))
    clock.run_until(0.5)
    added = NotesOnly(clock)
    sched.add_sink(added)  # no program change for it: it takes no channel messages
    sched.play(note("a", 0.5, pitch=62, program=7))
    sched.release("a")
    clock.run_all()
    assert [(t, n.pitch) for t, n in added.got] == [(0.5, 62)]
    assert not sched.failed and added in sched.sinks
    assert [(t, k, n) for t, k, n in first.notes()] == [
        (0.0, "note_on", 60), (0.5, "note_off", 60), (0.5, "note_on", 62), (0.5, "note_off", 62)]
    sched.close()


def test_earcons_of_simultaneous_accents_follow_one_another_up_to_the_max_lag() -> None:
    """Eight streams accent at the same moment: their earcons start 0.3 s apart (each can be
    counted) until one would wait more than 1.2 s; the other three are left out, counted.
    With no gap they all sound at once."""
    for gap, want_at, dropped in ((0.3, [1.05, 1.35, 1.65, 1.95, 2.25], 3),
                                  (0.0, [1.05] * 8, 0)):
        clock = VirtualClock()
        rec = Recorder(clock)
        earcon = Earcon(channel=9, program=0, note_up=81, note_down=76, velocity=110,
                        delay=0.05, length=0.1, gap=gap, max_lag=1.2)
        sched = Scheduler(clock, [rec], earcon=earcon)
        for s in range(8):
            sched.play(note(f"s{s}", 1.0, accent=True))
        clock.run_all()
        ons = [t for t, kind, pitch in rec.notes() if kind == "note_on" and pitch == 81]
        assert ons == [pytest.approx(t) for t in want_at]
        assert (sched.earcons, sched.earcons_dropped) == (len(want_at), dropped)
        # a later accent, once the earcons are past, sounds at its own time again
        sched.play(note("s0", 5.0, accent=True))
        clock.run_all()
        ons = [t for t, kind, pitch in rec.notes() if kind == "note_on" and pitch == 81]
        assert ons[-1] == pytest.approx(5.05)
