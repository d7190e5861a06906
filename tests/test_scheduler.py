"""The scheduler: note-offs, monophony per stream, program changes, lookahead, failures."""

from __future__ import annotations

import mido
import pytest

from streamsonic.errors import OutputError
from streamsonic.events import NoteEvent
from streamsonic.scheduler import Scheduler, VirtualClock
from streamsonic.sinks.base import Sink


class Recorder(Sink):
    """A unit-test sink that records (time sent, message time, message)."""

    def __init__(self, clock: VirtualClock, lookahead: float = 0.0, fail_after: int = -1) -> None:
        super().__init__("recorder")
        self.clock = clock
        self.lookahead = lookahead
        self.log: list[tuple[float, float, mido.Message]] = []
        self.fail_after = fail_after
        self.closed_at: float | None = None

    def _send(self, msg: mido.Message, time: float) -> None:
        if self.fail_after == 0:
            raise OutputError("boom")
        self.fail_after -= 1
        self.log.append((self.clock.time(), time, msg))

    def _close(self) -> None:
        self.closed_at = self.clock.time()


def note(stream: str, start: float, pitch: int = 60, duration: float = 0.5,
         channel: int = 0, program: int = 0) -> NoteEvent:
    return NoteEvent(stream, 0.0, 1.0, 0.5, pitch, 80, duration, channel, program, start)


def types(rec: Recorder) -> list[tuple[float, str, int]]:
    return [(t, m.type, getattr(m, "note", getattr(m, "program", -1))) for _, t, m in rec.log]


def test_every_note_on_gets_its_note_off_at_start_plus_duration() -> None:
    clock = VirtualClock()
    rec = Recorder(clock)
    sched = Scheduler(clock, [rec])
    for i in range(5):
        clock.run_until(i * 1.0)
        sched.play(note("a", i * 1.0, pitch=60 + i))
    clock.run_all()
    ons = [(t, n) for t, k, n in types(rec) if k == "note_on"]
    offs = [(t, n) for t, k, n in types(rec) if k == "note_off"]
    assert [n for _, n in ons] == [n for _, n in offs]
    assert [t + 0.5 for t, _ in ons] == [t for t, _ in offs]
    assert sched.idle


def test_stream_is_monophonic_next_note_ends_previous() -> None:
    clock = VirtualClock()
    rec = Recorder(clock)
    sched = Scheduler(clock, [rec])
    sched.play(note("a", 0.0, pitch=60, duration=2.0))
    clock.run_until(0.5)
    sched.play(note("a", 0.5, pitch=62, duration=2.0))
    sched.play(note("b", 0.5, pitch=60, duration=2.0, channel=1))
    clock.run_all()
    seq = types(rec)
    assert (0.5, "note_off", 60) in seq
    assert seq.index((0.5, "note_off", 60)) < seq.index((0.5, "note_on", 62))
    # the cancelled note-off at 2.0 was never sent; the other stream is untouched
    assert [x for x in seq if x == (2.0, "note_off", 60)] == []
    assert (2.5, "note_off", 62) in seq
    assert not rec.sounding


def test_program_change_once_per_channel_before_first_note() -> None:
    clock = VirtualClock()
    rec = Recorder(clock)
    sched = Scheduler(clock, [rec])
    sched.play(note("a", 0.0, channel=2, program=40))
    sched.play(note("a", 1.0, channel=2, program=40))
    clock.run_all()
    kinds = [m.type for _, _, m in rec.log]
    assert kinds.count("program_change") == 1
    assert kinds[0] == "program_change"
    assert rec.log[0][2].program == 40


def test_lookahead_sink_gets_messages_early_with_their_time() -> None:
    clock = VirtualClock()
    early = Recorder(clock, lookahead=0.1)
    late = Recorder(clock)
    sched = Scheduler(clock, [early, late])
    assert sched.latency == 0.1
    sched.play(note("a", 1.0))
    clock.run_all()
    on_early = next(x for x in early.log if x[2].type == "note_on")
    on_late = next(x for x in late.log if x[2].type == "note_on")
    assert on_early[0] == pytest.approx(0.9) and on_early[1] == 1.0
    assert on_late[0] == 1.0


def test_failing_sink_is_closed_and_others_continue() -> None:
    clock = VirtualClock()
    bad = Recorder(clock, fail_after=1)
    good = Recorder(clock)
    sched = Scheduler(clock, [bad, good])
    for i in range(3):
        clock.run_until(float(i))
        sched.play(note("a", float(i), pitch=60 + i))
    clock.run_all()
    assert bad.closed and sched.failed and bad not in sched.sinks
    assert len([m for _, _, m in good.log if m.type == "note_on"]) == 3


def test_close_silences_sounding_notes() -> None:
    clock = VirtualClock()
    rec = Recorder(clock)
    sched = Scheduler(clock, [rec])
    sched.play(note("a", 0.0, duration=10.0))
    sched.play(note("b", 0.0, pitch=70, duration=10.0, channel=1))
    clock.run_until(1.0)
    sched.close()
    sent = [(m.type, getattr(m, "note", None), getattr(m, "control", None)) for _, _, m in rec.log]
    assert ("note_off", 60, None) in sent and ("note_off", 70, None) in sent
    assert ("control_change", None, 123) in sent and ("control_change", None, 120) in sent
    assert rec.closed and not rec.sounding
    rec.close()  # idempotent


def test_close_counts_the_notes_no_output_got() -> None:
    """A note scheduled to start after the close reaches no output: counted as ``unsent``
    (the engine had counted it as played: a stopped replay's events output had 1-2 lines
    fewer than its stop line's notes). One note is one, whatever the sinks and messages."""
    clock = VirtualClock()
    recs = [Recorder(clock), Recorder(clock)]
    sched = Scheduler(clock, list[Sink](recs))
    sched.play(note("a", 0.0))
    sched.play(note("b", 5.0, pitch=62, channel=1))
    sched.play(note("c", 6.0, pitch=64, channel=2))
    clock.run_until(1.0)
    sched.close()
    assert sched.unsent == 2
    for rec in recs:
        assert [n for _, k, n in types(rec) if k == "note_on"] == [60]
