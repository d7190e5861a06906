"""The MIDI file sink: tempo, program changes, delta times, round trip through mido."""

from __future__ import annotations

from pathlib import Path

import mido
import pytest

from streamsonic.errors import OutputError
from streamsonic.events import NoteEvent
from streamsonic.scheduler import Scheduler, VirtualClock
from streamsonic.sinks.midifile import TICKS_PER_BEAT, MidiFileSink


def test_round_trip_times_tempo_and_programs(tmp_path: Path) -> None:
    path = tmp_path / "out.mid"
    clock = VirtualClock()
    sink = MidiFileSink(path, tempo=90.0)
    sched = Scheduler(clock, [sink])
    spb = 60.0 / 90.0
    plan = [(0.0, 60, 0.5), (1.0, 64, 0.25), (1.5, 67, 1.0), (4.0, 72, 2.0)]  # beats
    for start, pitch, length in plan:
        clock.run_until(start * spb)
        sched.play(NoteEvent("s", 0.0, 1.0, 0.5, pitch, 90, length * spb, 3, 73, start * spb))
    clock.run_all()
    sched.close()
    mid = mido.MidiFile(path)
    assert mid.ticks_per_beat == TICKS_PER_BEAT
    tempos = [m.tempo for m in mid.tracks[0] if m.type == "set_tempo"]
    assert tempos == [mido.bpm2tempo(90.0)]
    programs = [(m.channel, m.program) for m in mid.tracks[0] if m.type == "program_change"]
    assert programs == [(3, 73)]
    tick = 0
    events = []
    for msg in mid.tracks[0]:
        tick += msg.time
        if msg.type in ("note_on", "note_off"):
            events.append((tick, msg.type, msg.note))
    expected = []
    for start, pitch, length in plan:
        expected.append((round(start * TICKS_PER_BEAT), "note_on", pitch))
        expected.append((round((start + length) * TICKS_PER_BEAT), "note_off", pitch))
    assert sorted(events) == sorted(expected)
    # seconds as mido computes them from the tempo match the plan
    assert mid.length == pytest.approx(6.0 * spb, abs=1e-3)


def test_written_atomically_and_only_on_close(tmp_path: Path) -> None:
    path = tmp_path / "x.mid"
    sink = MidiFileSink(path)
    sink.send(mido.Message("note_on", note=60, velocity=64), 10.0)
    assert not path.exists()
    sink.close()  # panic adds the note_off for the sounding note
    notes = [m for m in mido.MidiFile(path) if m.type in ("note_on", "note_off")]
    assert [m.type for m in notes] == ["note_on", "note_off"]
    assert not list(tmp_path.glob("*.part"))


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        MidiFileSink(tmp_path / "nope" / "x.mid")


def test_a_deferred_live_file_checks_its_path_and_touches_nothing_until_started(
        tmp_path: Path) -> None:
    """A reload opens a file output with its file held back (``defer``): a bad path fails
    then, a good one creates and renames nothing, abandoning it leaves no file and no
    "wrote" line; ``start()`` opens it then as at startup (an earlier file set aside)."""
    from streamsonic.config import OutputConfig

    with pytest.raises(OutputError, match="does not exist"):
        MidiFileSink(tmp_path / "no" / "x.mid", live=OutputConfig(), defer=True)
    with pytest.raises(OutputError, match="is a folder"):
        MidiFileSink(tmp_path, live=OutputConfig(), defer=True)
    path = tmp_path / "x.mid"
    path.write_bytes(b"an earlier run's file")
    sink = MidiFileSink(path, live=OutputConfig(), defer=True)
    sink.abandon()
    assert sorted(tmp_path.iterdir()) == [path] and path.read_bytes() == b"an earlier run's file"

    sink = MidiFileSink(path, live=OutputConfig(), defer=True)
    sink.start()
    sink.send(mido.Message("note_on", note=60, velocity=90), 1.0)
    sink.close(2.0)
    assert (tmp_path / "x-1.mid").read_bytes() == b"an earlier run's file"
    assert [m.note for m in mido.MidiFile(path) if m.type == "note_on" and m.velocity] == [60]
