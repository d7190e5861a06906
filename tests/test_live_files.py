"""``run``'s file outputs: written as they go, valid after SIGKILL, bounded memory, rotation,
never overwriting an earlier run's file, WAV from the first note.

The sink tests drive the real sinks through the scheduler on a virtual clock; the others run
the real CLI in a subprocess and kill it with SIGKILL.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import mido
import numpy as np
import pytest

from streamsonic.config import AudioConfig, Config, OutputConfig, load_config
from streamsonic.errors import ConfigError, OutputWriteError
from streamsonic.events import NoteEvent
from streamsonic.scheduler import Scheduler, VirtualClock
from streamsonic.sinks import wav
from streamsonic.sinks.midifile import FILLER, MidiFileSink
from streamsonic.sinks.outfile import FileSeries, OutputFile
from tests.components import SOUNDFONT
from tests.test_output_files import full_fs  # noqa: F401 - a fixture

EXE = [sys.executable, "-m", "streamsonic"]
#: Accents off: their earcons would add notes that no events line announces.
#: No earcons, and one note per sample (no notes the model adds between them: these tests
#: match each sample's note, read back from the events output, with what the files hold).
QUIET = ["--set", "accent.earcon=false", "--set", "output.flush_interval=0.5",
         "--set", "model.passing_notes=0"]


def live(**kw: float) -> OutputConfig:
    return OutputConfig(**kw)  # type: ignore[arg-type]


def midi_notes(path: Path) -> list[tuple[str, int, float]]:
    """(type, note, time in seconds) of every note message, note_on velocity 0 as note_off."""
    out, now = [], 0.0
    for msg in mido.MidiFile(path):
        now += msg.time
        if msg.type in ("note_on", "note_off"):
            kind = "note_on" if msg.type == "note_on" and msg.velocity > 0 else "note_off"
            out.append((kind, msg.note, now))
    return out


def onsets(path: Path) -> list[int]:
    return [n for k, n, _ in midi_notes(path) if k == "note_on"]


def note(pitch: int, start: float, duration: float = 0.4, stream: str = "s",
         channel: int = 0) -> NoteEvent:
    return NoteEvent(stream, 0.0, 1.0, 0.5, pitch, 90, duration, channel, 0, start)


def play(sink_list: list, plan: list[NoteEvent], clock: VirtualClock,
         tick_every: float = 0.25) -> Scheduler:
    """Play ``plan`` through a scheduler, ticking the sinks as the daemon does."""
    sched = Scheduler(clock, sink_list)
    end = max(n.start + n.duration for n in plan) + 1.0
    t = clock.time()
    notes = sorted(plan, key=lambda n: n.start)
    while t <= end:
        clock.run_until(t)
        while notes and notes[0].start <= t:
            sched.play(notes.pop(0))
        sched.tick()
        t += tick_every
    return sched


# -- MIDI written as it goes ----------------------------------------------------------------
def test_midi_file_is_valid_after_every_write(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever write a kill interrupts, the file on disk reads with mido, its track ends
    with End of Track, and the notes only ever grow: snapshot the file after every write."""
    path = tmp_path / "live.mid"
    snapshots: list[bytes] = []
    for method in ("append", "patch"):
        original = getattr(OutputFile, method)

        def wrapped(self: OutputFile, *args: object, _original: object = original) -> None:
            _original(self, *args)  # type: ignore[operator]
            snapshots.append(self.target.read_bytes())

        monkeypatch.setattr(OutputFile, method, wrapped)
    clock = VirtualClock(start=1000.0)  # a live clock: seconds since boot
    sink = MidiFileSink(path, live=live(flush_interval=1.0))
    plan = [note(60 + i % 12, 1000.5 + 0.7 * i) for i in range(20)]
    sched = play([sink], plan, clock)
    # before close: every note played more than a flush ago is on disk, with its note_off
    seen = midi_notes(path)
    assert [n for k, n, _ in seen if k == "note_on"] == [n.pitch for n in plan]
    assert sorted(n for k, n, _ in seen if k == "note_off") == sorted(n.pitch for n in plan)
    sched.close()
    assert len(snapshots) > 40
    counts = []
    for i, data in enumerate(snapshots):
        snap = tmp_path / f"snap{i}.mid"
        snap.write_bytes(data)
        mid = mido.MidiFile(snap)
        assert mid.tracks[0][-1].type == "end_of_track", i
        counts.append(len(onsets(snap)))
    assert counts == sorted(counts) and counts[-1] == len(plan)
    # a flush replaced each earlier End of Track by a 4-byte filler; nothing else is in there
    final = path.read_bytes()
    assert final.count(b"\xff\x2f\x00") == 1 and final.count(FILLER) >= 10
    # the file starts at the first note, not at the clock's zero (the uptime)
    assert midi_notes(path)[0][2] == 0.0
    assert midi_notes(path)[-1][2] == pytest.approx(0.7 * 19 + 0.4, abs=0.01)


def test_midi_memory_is_bounded_by_the_flush(tmp_path: Path) -> None:
    clock = VirtualClock(start=50.0)
    sink = MidiFileSink(tmp_path / "x.mid", live=live(flush_interval=1.0))
    plan = [note(60 + i % 7, 50.0 + 0.05 * i, 0.04) for i in range(2000)]
    sched = Scheduler(clock, [sink])
    most = 0
    for n in plan:
        clock.run_until(n.start)
        sched.play(n)
        sched.tick()
        most = max(most, len(sink._pending))
    clock.run_all()
    sched.close()
    assert most <= 2 * 21 + 2  # one second of messages (20 notes, on and off), not 4000
    assert len(onsets(tmp_path / "x.mid")) == 2000


# -- rotation -----------------------------------------------------------------------------
def test_rotation_by_time_splits_at_the_boundary(tmp_path: Path) -> None:
    clock = VirtualClock(start=200.0)
    sink = MidiFileSink(tmp_path / "part-{n}.mid", tempo=120.0,
                        live=live(rotate_seconds=10.0, flush_interval=2.0))
    # 1.5 s notes every second: some sound across each boundary
    plan = [note(60 + i % 5, 200.0 + i + (0.3 if i else 0.0), 1.5) for i in range(34)]
    sched = play([sink], plan, clock)
    sched.close()
    files = [tmp_path / f"part-{i}.mid" for i in range(1, 5)]
    assert list(sink.files) == files
    assert sorted(tmp_path.iterdir()) == files
    firsts = []
    for path in files:
        seq = midi_notes(path)
        ons = sorted(n for k, n, _ in seq if k == "note_on")
        assert ons == sorted(n for k, n, _ in seq if k == "note_off")  # nothing left hanging
        assert max(t for _, _, t in seq) <= 10.0 + 1e-6  # each file covers 10 s
        firsts.append(seq[0])
        programs = [m for m in mido.MidiFile(path) if m.type == "program_change"]
        assert programs and programs[0].time == 0  # each file sets its channel up
    # the note sounding at 10 s ends in part-1 and is struck again at 0 in part-2
    assert firsts[1] == ("note_on", plan[9].pitch, 0.0)
    assert (("note_off", plan[9].pitch, 10.0) in midi_notes(files[0]))
    # every note of the plan, in order, once (re-strikes at 0 are the carried ones)
    played = [n for path in files for k, n, t in midi_notes(path)
              if k == "note_on" and (t > 0 or path == files[0])]
    assert played == [n.pitch for n in plan]


def test_rotation_by_size(tmp_path: Path) -> None:
    clock = VirtualClock(start=10.0)
    sink = MidiFileSink(tmp_path / "big.mid",
                        live=live(rotate_bytes=65_536, flush_interval=5.0))
    plan = [note(40 + i % 40, 10.0 + 0.005 * i, 0.004, channel=i % 16) for i in range(30_000)]
    sched = play([sink], plan, clock, tick_every=0.5)
    sched.close()
    # a plain path: the newest part is big.mid, the earlier ones big-1.mid, big-2.mid, ...
    assert sink.file_count >= 3 and set(sink.files) == {tmp_path / "big.mid"}
    parts = [tmp_path / f"big-{i}.mid" for i in range(1, sink.file_count)] + [
        tmp_path / "big.mid"]
    assert sorted(tmp_path.iterdir()) == sorted(parts)
    total = 0
    for path in parts:
        assert path.stat().st_size <= 65_536 + 64
        total += len([t for k, n, t in midi_notes(path) if k == "note_on" and t > 0])
    assert total >= len(plan) - len(parts)  # only the first note of each part is at 0


def test_a_file_that_cannot_start_mid_run_is_a_write_error(tmp_path: Path) -> None:
    folder = tmp_path / "gone"
    folder.mkdir()
    clock = VirtualClock(start=0.0)
    sink = MidiFileSink(folder / "r-{n}.mid", live=live(rotate_seconds=5.0))
    sched = Scheduler(clock, [sink])
    sched.play(note(60, 1.0))
    for t in (1.0, 3.0):
        clock.run_until(t)
        sched.tick()
    assert onsets(folder / "r-1.mid") == [60]  # flushed
    (folder / "r-1.mid").rename(tmp_path / "r-1.mid")
    folder.rmdir()
    clock.run_until(7.0)
    sched.tick()  # the boundary at 6 s: r-2.mid cannot be made
    assert [type(err) for _, err in sched.failed] == [OutputWriteError]
    assert "does not exist" in str(sched.failed[0][1])
    assert sched.sinks == [] and sink.closed
    assert onsets(tmp_path / "r-1.mid") == [60]  # what was written stays
    with pytest.raises(OutputWriteError):
        sched.check_written()


def test_config_keys_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    for bad in ("flush_interval = 0.0", "rotate_seconds = 0.5", "rotate_bytes = 100",
                "rotate_bytes = 5_000_000_000", "rotate_seconds = nan"):
        path.write_text(f"[output]\n{bad}\n")
        with pytest.raises(ConfigError, match=f"output.{bad.split()[0]}"):
            load_config(path)
    path.write_text("[output]\nrotate_seconds = 3600\nrotate_bytes = 1_000_000\n")
    assert load_config(path).output == live(rotate_seconds=3600.0, rotate_bytes=1_000_000)


# -- names ----------------------------------------------------------------------------------
def test_series_names_and_keeps_earlier_files(tmp_path: Path) -> None:
    series = FileSeries(tmp_path / "s-{start}-{n}.mid", "MIDI file")
    assert series.name(datetime(2025, 3, 14, 9, 30, tzinfo=UTC), 2) == \
        tmp_path / "s-20250314T093000Z-2.mid"
    plain = tmp_path / "out.mid"
    plain.write_bytes(b"first run")
    (tmp_path / "out-1.mid").write_bytes(b"another")
    out = OutputFile(plain, live=True)
    out.append(b"second run")
    out.commit()
    assert plain.read_bytes() == b"second run"
    assert out.kept == tmp_path / "out-2.mid"
    assert (tmp_path / "out-2.mid").read_bytes() == b"first run"
    assert (tmp_path / "out-1.mid").read_bytes() == b"another"
    empty = tmp_path / "empty.mid"
    empty.touch()  # nothing to keep: used as it is
    out = OutputFile(empty, live=True)
    out.append(b"x")
    out.commit()
    assert out.kept is None and empty.read_bytes() == b"x"


def test_two_writers_of_one_name_never_share_a_file(tmp_path: Path) -> None:
    """Two daemons that start a file of the same name at once (``{start}`` in the same
    second): the second finds the first one's new file still empty, and keeps it aside like
    one that holds data; it used to write into it too, both from offset 0 (data lost)."""
    started = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)
    pattern = tmp_path / "st-{start}.jsonl"
    first = FileSeries(pattern, "record file").open(started)
    second = FileSeries(pattern, "record file").open(started)
    first.append(b"1\n2\n")
    first.readable()
    second.append(b"3\n")
    second.readable()
    first.commit()
    second.commit()
    path = tmp_path / "st-20250314T093000Z.jsonl"
    assert second.final_path() == path and path.read_bytes() == b"3\n"
    assert first.final_path() == tmp_path / "st-20250314T093000Z-1.jsonl"
    assert first.final_path().read_bytes() == b"1\n2\n"
    assert sorted(tmp_path.iterdir()) == [first.final_path(), path]
    # an empty file that no writer holds is still simply used
    (tmp_path / "free.jsonl").touch()
    fourth = OutputFile(tmp_path / "free.jsonl", live=True)
    assert fourth.kept is None and fourth.final_path() == tmp_path / "free.jsonl"
    fourth.commit()


def test_live_write_error_keeps_what_was_readable(full_fs: Path) -> None:  # noqa: F811
    path = full_fs / "x.mid"
    out = OutputFile(path, "MIDI file", live=True)
    out.append(b"valid part")
    out.readable()
    out.append(b" half")
    with pytest.raises(OutputWriteError, match=f"No space left on device; {path} keeps what "
                       "was written before"):
        out.append(b"\0" * 64 * 1024)
    assert path.read_bytes() == b"valid part"  # cut back to the last flush
    assert list(full_fs.iterdir()) == [path]


# -- WAV ------------------------------------------------------------------------------------
@pytest.mark.usefixtures("soundfont")
def test_wav_starts_at_the_first_note_and_is_valid_before_close(tmp_path: Path) -> None:
    path = tmp_path / "live.wav"
    config = Config(audio=AudioConfig(soundfont=str(SOUNDFONT)),
                    output=live(flush_interval=1.0))
    sink = wav.open_live_sink(str(path), config)
    clock = VirtualClock(start=3340.0)  # the uptime that once became 3340 s of silence
    plan = [note(60 + 4 * i, 3340.0 + 5.0 + 0.5 * i) for i in range(6)]
    sched = play([sink], plan, clock)
    mid_run = clock.time() - plan[0].start - wav.MARGIN
    with wave.open(str(path)) as w:  # readable while the daemon still runs
        assert w.getnframes() / w.getframerate() == pytest.approx(mid_run, abs=1.05)
    sched.close()
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    seconds = len(audio) / rate
    played = plan[-1].start + plan[-1].duration - plan[0].start
    assert played < seconds < played + wav.TAIL_MAX + 1.5  # not 3345 s
    assert np.abs(audio[: rate // 20]).max() > 100  # the first note is at the start


def test_wav_rotates_at_exact_frames(tmp_path: Path) -> None:
    if not SOUNDFONT.is_file():
        pytest.skip("no SoundFont")
    config = Config(audio=AudioConfig(soundfont=str(SOUNDFONT), sample_rate=8000),
                    output=live(rotate_seconds=1.0, flush_interval=1.0))
    sink = wav.open_live_sink(str(tmp_path / "w-{n}.wav"), config)
    clock = VirtualClock(start=77.0)
    sched = play([sink], [note(60 + i, 78.0 + 0.6 * i) for i in range(5)], clock)
    sched.close()
    frames = []
    for path in sink.files:
        with wave.open(str(path)) as w:
            frames.append(w.getnframes())
    assert sink.file_count == len(frames) >= 4 and frames[:-1] == [8000] * (len(frames) - 1)
    assert sum(frames) == sink.frames


def test_a_retuned_wav_output_rotates_by_its_new_settings(tmp_path: Path) -> None:
    """A reload's rotate_seconds reaches a running WAV output from its current file on
    (retune: the file's frame limit follows the new settings)."""
    if not SOUNDFONT.is_file():
        pytest.skip("no SoundFont")
    config = Config(audio=AudioConfig(soundfont=str(SOUNDFONT), sample_rate=8000),
                    output=live(flush_interval=1.0))
    sink = wav.open_live_sink(str(tmp_path / "r-{n}.wav"), config)
    sink.retune(live(rotate_seconds=1.0, flush_interval=1.0))
    clock = VirtualClock(start=77.0)
    sched = play([sink], [note(60 + i, 78.0 + 0.6 * i) for i in range(5)], clock)
    sched.close()
    frames = []
    for path in sink.files:
        with wave.open(str(path)) as w:
            frames.append(w.getnframes())
    assert len(frames) >= 4 and frames[:-1] == [8000] * (len(frames) - 1)


# -- the real daemon ------------------------------------------------------------------------
class Daemon:
    """The CLI in a subprocess: lines in, events out; stderr kept in a file."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._stderr: IO[bytes] = log.open("wb")
        self.proc = subprocess.Popen([*EXE, *args, "--output", "events", *QUIET],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, text=True, bufsize=1)
        deadline = time.monotonic() + 120
        while "ready:" not in log.read_text():
            assert self.proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)

    def note(self, line: str) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def stop(self, sig: int | None = None) -> int:
        assert self.proc.stdin
        if sig is None:
            self.proc.stdin.close()
        else:
            self.proc.send_signal(sig)
        status = self.proc.wait(timeout=120)
        self._stderr.close()
        return status


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def test_two_daemons_on_one_file_name_write_two_files(tmp_path: Path,
                                                      daemons: list[Daemon]) -> None:
    """A second daemon writing the name of a running one's file keeps that file aside, as
    NAME-1, and each daemon names the file it really wrote (the first one named PATH,
    where the second one's file is). A MIDI file holds its header from the start: the
    moment it is still empty is the two-writer test's above."""
    mid = tmp_path / "same.mid"
    slow = ["--output", f"file:{mid}", "--set", "output.flush_interval=60"]
    first = Daemon(slow, tmp_path / "first.log")
    daemons.append(first)
    first.note("1")  # the file starts at the first note
    deadline = time.monotonic() + 60
    while not mid.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    second = Daemon(slow, tmp_path / "second.log")
    daemons.append(second)
    second.note("9")
    assert second.stop() == 0
    first.note("5")
    assert first.stop() == 0
    aside = tmp_path / "same-1.mid"
    assert sorted(tmp_path.glob("*.mid")) == [aside, mid]
    assert len(onsets(mid)) == 1 and len(onsets(aside)) == 2
    assert f"wrote {aside} (" in first.log.read_text()
    assert f"wrote {mid} (" in second.log.read_text()


def test_sigkill_leaves_valid_midi_and_wav(tmp_path: Path, daemons: list[Daemon]) -> None:
    mid, wavf = tmp_path / "live.mid", tmp_path / "live.wav"
    d = Daemon(["--output", f"file:{mid}", "--output", f"wav:{wavf}",
                "--soundfont", str(SOUNDFONT)], tmp_path / "log")
    daemons.append(d)
    time.sleep(3.0)  # uptime before the first note: not in the WAV
    seen = []
    first_note_at = time.time()
    for i in range(12):
        seen.append(d.note(str([3, 9, 1, 7, 5][i % 5] + i)))
        time.sleep(0.15)
    time.sleep(3.0)  # a flush (every 0.5 s, on the daemon's 1 s tick) has passed
    killed_at = time.monotonic()  # the daemon's clock too: notes' "start" are on it
    d.proc.kill()  # SIGKILL: no clean-up at all
    d.proc.wait()
    seq = midi_notes(mid)
    assert [n for k, n, _ in seq if k == "note_on"] == [e["pitch"] for e in seen]
    stamp = next(m.text for m in mido.MidiFile(mid) if m.type == "text" and "tick 0" in m.text)
    tick0 = datetime.fromisoformat(stamp.removeprefix("tick 0 = ")).timestamp()
    assert tick0 == pytest.approx(first_note_at, abs=1.0)  # the time of day of the first note
    assert sorted(n for k, n, _ in seq if k == "note_off") == sorted(e["pitch"] for e in seen)
    starts = [e["start"] for e in seen]
    for (_, _, t), start in zip([s for s in seq if s[0] == "note_on"], starts, strict=True):
        assert t == pytest.approx(start - starts[0], abs=0.01)
    with wave.open(str(wavf)) as w:
        rate = w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    seconds = len(audio) / rate
    # from the first note up to a flush after the last one, never beyond the kill
    assert starts[-1] - starts[0] < seconds < killed_at - starts[0], (seconds, starts)
    assert np.abs(audio[: rate // 20]).max() > 100  # the first note is at the start


def test_run_wav_lasts_the_played_time_not_the_uptime(tmp_path: Path,
                                                      daemons: list[Daemon]) -> None:
    out = tmp_path / "played.wav"
    d = Daemon(["--output", f"wav:{out}", "--soundfont", str(SOUNDFONT)], tmp_path / "log")
    daemons.append(d)
    time.sleep(4.0)
    seen = [d.note(str(v)) for v in (1, 5, 3, 8)]
    assert d.stop() == 0
    with wave.open(str(out)) as w:
        seconds = w.getnframes() / w.getframerate()
    played = seen[-1]["start"] + seen[-1]["duration"] - seen[0]["start"]
    assert played <= seconds <= played + wav.TAIL_MAX + 1.5, (seconds, played)


def test_no_run_overwrites_an_earlier_runs_file(tmp_path: Path) -> None:
    plain, pattern = tmp_path / "out.mid", tmp_path / "s-{start}.mid"
    runs = []
    for values in ("1\n5\n3\n", "9\n2\n", "4\n"):
        res = subprocess.run([*EXE, "--output", f"file:{plain}", "--output", f"file:{pattern}",
                              "--output", "events", *QUIET], input=values, text=True,
                             capture_output=True, timeout=120, check=False)
        assert res.returncode == 0, res.stderr
        runs.append([json.loads(line)["pitch"] for line in res.stdout.splitlines()])
    # out.mid is the newest run; the earlier ones were kept as out-1.mid, out-2.mid
    assert onsets(plain) == runs[2]
    assert onsets(tmp_path / "out-1.mid") == runs[0]
    assert onsets(tmp_path / "out-2.mid") == runs[1]
    stamped = sorted(tmp_path.glob("s-*.mid"))  # the same second: kept aside as well
    assert len(stamped) == 3
    assert sorted(map(onsets, stamped)) == sorted(runs)


def test_rotation_in_a_real_run(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(["--output", f"file:{tmp_path}/m-{{n}}.mid", "--output",
                f"wav:{tmp_path}/a-{{start}}-{{n}}.wav", "--soundfont", str(SOUNDFONT),
                "--set", "output.rotate_seconds=1.5"], tmp_path / "log")
    daemons.append(d)
    seen = []
    for i in range(16):
        seen.append(d.note(str(i % 6)))
        time.sleep(0.25)
    time.sleep(2.0)
    d.proc.kill()
    d.proc.wait()
    mids = sorted(tmp_path.glob("m-*.mid"), key=lambda p: int(p.stem[2:]))
    assert len(mids) >= 3
    played = [n for i, p in enumerate(mids) for k, n, t in midi_notes(p)
              if k == "note_on" and (t > 0 or i == 0)]
    assert played == [e["pitch"] for e in seen]
    wavs = sorted(tmp_path.glob("a-*.wav"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    assert len(wavs) >= 3
    for path in wavs[:-1]:
        with wave.open(str(path)) as w:
            assert w.getnframes() == round(1.5 * w.getframerate())


@pytest.mark.slow
def test_memory_stays_flat_over_a_long_run(tmp_path: Path, daemons: list[Daemon]) -> None:
    """80,000 notes through file: and wav: (each used to keep ~370 bytes per message, ~60 MB
    here): the child's RSS, read from /proc, must not follow the number of notes."""
    d = Daemon(["--output", f"file:{tmp_path}/m.mid", "--output", f"wav:{tmp_path}/a.wav",
                "--soundfont", str(SOUNDFONT), "--max-rate", "1000",
                "--set", "clock.backlog=100"], tmp_path / "log")
    daemons.append(d)
    streams, lines = 40, 2000
    rng = random.Random(7)

    notes = [0]  # notes read so far (the reading loop below)

    def feed() -> None:
        """About 200 lines a second, 4 at a time (8,000 samples a second, which the daemon
        keeps up with; each stream well under its --max-rate, a row's samples waiting in
        its backlog): every sample becomes a note. Unpaced, the reader takes 64 KiB at a
        time, some 200 samples of each stream at once, and the rate cap folds them. On a
        loaded machine the daemon falls behind that pace and sheds (58,392 notes with two
        busy loops on 2 cores), so the feed also waits while more than 50 lines are out."""
        assert d.proc.stdin
        for i in range(lines):
            d.proc.stdin.write(" ".join(f"s{k}={rng.random():.3f}" for k in range(streams))
                               + "\n")
            if i % 4 == 3:
                d.proc.stdin.flush()
                time.sleep(0.02)
                deadline = time.monotonic() + 10
                while (i + 1 - 50) * streams > notes[0] and time.monotonic() < deadline:
                    time.sleep(0.01)
        d.proc.stdin.close()

    threading.Thread(target=feed, daemon=True).start()
    assert d.proc.stdout
    rss: list[tuple[int, int]] = []
    count = 0
    for _ in d.proc.stdout:
        count += 1
        notes[0] = count
        if count % 10_000 == 0:
            rss.append((count, d.rss()))
    assert d.proc.wait(timeout=120) == 0
    assert count >= 60_000
    settled = [r for n, r in rss if n >= 20_000]
    growth = max(settled) - settled[0]
    print(f"RSS (MB) every 10000 notes: {[round(r / 2**20) for _, r in rss]}")
    assert growth < 12 * 2**20, growth  # the old sink: ~40 MB between 20,000 and 80,000
    mid = mido.MidiFile(tmp_path / "m.mid")
    assert sum(1 for m in mid if m.type == "note_on" and m.velocity > 0) == count


@pytest.mark.parametrize(("first", "second"), [
    ("file:a{n}.mid", "file:a1.mid"), ("wav:w{n}.wav", "wav:w1.wav"),
    ("file:a1.mid", "file:./a{n}.mid"), ("file:a{n}.mid", "file:a1{n}.mid"),
    ("file:s-{start}.mid", "file:s-{start}.mid")])
def test_a_name_template_that_can_become_another_outputs_file_is_refused(
        tmp_path: Path, first: str, second: str) -> None:
    """``-o 'file:a{n}.mid' -o file:a1.mid``: the template's first file is the other output's
    file; one output's data ended up in a1-1.mid. Refused with 64 and one line, as two
    outputs on one named file are; nothing is written. Names that cannot meet are not."""
    import os

    (tmp_path / "c.toml").write_text("")
    cwd = tmp_path / "out"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "STREAMSONIC_CONFIG"}
    res = subprocess.run([sys.executable, "-m", "streamsonic", "run", "-o", first, "-o",
                          second], input="1\n2\n", capture_output=True, text=True, cwd=cwd,
                         env={**env, "STREAMSONIC_CONFIG": str(tmp_path / "c.toml")},
                         timeout=120, check=False)
    assert res.returncode == 64, res.stderr
    assert "write the same file" in res.stderr and res.stderr.strip().count("\n") == 0
    assert not list(cwd.iterdir())


@pytest.mark.parametrize("outputs", [
    ["midi-virtual:dup", "events", "midi-virtual:dup"], ["audio", "audio"],
    ["midi:X", "midi:X"], ["mqtt:notes", "mqtt:notes"]])
def test_a_device_port_or_topic_given_twice_is_refused(tmp_path: Path,
                                                       outputs: list[str]) -> None:
    """``-o midi-virtual:dup -o midi-virtual:dup`` (or ``audio`` twice, ``midi:X`` twice)
    made two clients on one port or device and played every note twice, with duplicate
    series on the metrics page. Refused with 64 and one line before anything opens, as
    ``events`` twice is; from output.targets with 78."""
    import os

    (tmp_path / "c.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "STREAMSONIC_CONFIG"}
    env["STREAMSONIC_CONFIG"] = str(tmp_path / "c.toml")
    args = [a for o in outputs for a in ("-o", o)]
    res = subprocess.run([sys.executable, "-m", "streamsonic", "run", *args],
                         input="1\n2\n", capture_output=True, text=True, env=env,
                         timeout=120, check=False)
    assert res.returncode == 64, res.stderr
    assert "is given twice" in res.stderr and res.stderr.strip().count("\n") == 0

    targets = ", ".join(f'"{o}"' for o in outputs)
    (tmp_path / "c.toml").write_text(f"[output]\ntargets = [{targets}]\n")
    res = subprocess.run([sys.executable, "-m", "streamsonic", "run"], input="1\n",
                         capture_output=True, text=True, env=env, timeout=120, check=False)
    assert res.returncode == 78, res.stderr
    assert "is given twice" in res.stderr


def test_name_templates_that_cannot_meet_are_accepted() -> None:
    from streamsonic.outputs import check_distinct_files, parse_output

    check_distinct_files([parse_output(o) for o in (
        "file:a{n}.mid", "file:b1.mid", "file:x-{start}.mid", "file:x-{n}.mid",
        "wav:a{n}.wav", "file:a.mid", "audio", "audio:hw:1", "midi:X", "midi-virtual:X",
        "mqtt:a", "mqtt:b")])
    # render writes a name as it is given: a{n}.mid is that file, not a1.mid
    check_distinct_files([parse_output(o) for o in ("a{n}.mid", "a1.mid")], templates=False)


@pytest.mark.parametrize("command", ["run", "render", "config"])
def test_two_outputs_on_one_file_are_refused(tmp_path: Path, command: str) -> None:
    """``-o file:d.mid -o d.mid`` (or the same twice in output.targets): the second output
    set the first one's open file aside as d-1.mid while the first went on calling it d.mid
    (its "wrote" line named the wrong file). Refused before anything is written: 64 from
    the command line, 78 from the config file, one line."""
    out = tmp_path / "d.mid"
    env = {"STREAMSONIC_CONFIG": str(tmp_path / "c.toml"), "PATH": "/usr/bin:/bin"}
    (tmp_path / "c.toml").write_text("")
    (tmp_path / "x.csv").write_text("v\n" + "".join(f"{i % 7}\n" for i in range(40)))
    exe = [sys.executable, "-m", "streamsonic"]
    if command == "config":
        (tmp_path / "c.toml").write_text(f'[output]\ntargets = ["file:{out}", "{out}"]\n')
        args, status = ["run"], 78
    elif command == "run":
        args, status = ["run", "-o", f"file:{out}", "-o", str(tmp_path / "." / "d.mid")], 64
    else:
        args, status = ["render", str(tmp_path / "x.csv"), "-o", str(out), "-o",
                        f"file:{out}"], 64
    res = subprocess.run([*exe, *args], input="1\n2\n", capture_output=True, text=True,
                         env=env, timeout=120, check=False)
    assert res.returncode == status, res.stderr
    assert "write the same file" in res.stderr and res.stderr.strip().count("\n") == 0
    assert not list(tmp_path.glob("d*.mid"))
