"""SIGHUP reload, end to end: what the reloaded config changes in the notes of old and new
streams (the real daemon in a subprocess, its config file rewritten under it)."""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest

from streamsonic.music import in_scale
from streamsonic.normalize import RollingNormalizer

BEFORE = """\
[music]
scale = "major"
key = "C"
program = 5

[normalize]
mode = "auto"
window = 50
"""

AFTER = """\
[music]
scale = "pentatonic"
key = "C"
program = 40

[normalize]
mode = "rank"
window = 20

[[voices]]
match = "new-*"
program = 60
channel = 12
"""


class Daemon:
    """`streamsonic run` with its stdout (JSON events) and stderr read by threads."""

    def __init__(self, config: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "STREAMSONIC_CONFIG"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamsonic", "run", "--config", str(config),
             "--output", "events", "--set", "clock.backlog=100000", "--max-rate", "1000",
             "--device", "cpu", "--log-level", "info"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.log: list[str] = []
        self._log_changed = threading.Condition()
        assert self.proc.stdout and self.proc.stderr
        threading.Thread(target=self._read_events, args=(self.proc.stdout,), daemon=True).start()
        threading.Thread(target=self._read_log, args=(self.proc.stderr,), daemon=True).start()

    def _read_events(self, stream: IO[str]) -> None:
        for line in stream:
            self.events.put(json.loads(line))

    def _read_log(self, stream: IO[str]) -> None:
        for line in stream:
            with self._log_changed:
                self.log.append(line)
                self._log_changed.notify_all()

    def send(self, lines: list[str]) -> None:
        assert self.proc.stdin
        self.proc.stdin.write("".join(f"{line}\n" for line in lines))
        self.proc.stdin.flush()

    def take(self, count: int, timeout: float = 120.0) -> list[dict[str, Any]]:
        """The next ``count`` notes it plays."""
        deadline = time.monotonic() + timeout
        return [self.events.get(timeout=max(deadline - time.monotonic(), 0.01))
                for _ in range(count)]

    def wait_log(self, text: str, timeout: float = 60.0) -> None:
        with self._log_changed:
            ok = self._log_changed.wait_for(lambda: any(text in line for line in self.log),
                                            timeout)
        assert ok, f"no {text!r} in the log:\n{''.join(self.log)}"

    def stop(self) -> int:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)


def by_stream(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        out.setdefault(e["stream"], []).append(e)
    return out


def wave(start: int, count: int) -> list[float]:
    """A signal that crosses zero (never played on a log scale), with few repeats."""
    return [round(10 * math.sin(0.7 * k) + 3 * math.sin(2.3 * k), 4)
            for k in range(start, start + count)]


def ranks(values: list[float], window: int) -> list[float]:
    """Where each value stands in a rank normalizer of ``window`` fed all of them."""
    norm = RollingNormalizer(mode="rank", window=window)
    out = []
    for i, v in enumerate(values):
        norm.push(float(i), v)
        out.append(norm.position(v))
    return out


@pytest.mark.slow
def test_sighup_applies_scale_normalizer_program_and_voices(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(BEFORE)
    daemon = Daemon(config)
    try:
        early = wave(0, 60)
        daemon.send([f"old={v}" for v in early])
        before = daemon.take(60)
        assert {e["stream"] for e in before} == {"old"}
        assert {e["program"] for e in before} == {5}
        # The major scale: F and B too, which the pentatonic scale has not.
        assert all(in_scale(e["pitch"], "major", "C") for e in before)
        assert any(not in_scale(e["pitch"], "pentatonic", "C") for e in before)

        config.write_text(AFTER)
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("reloaded configuration")

        late = wave(60, 40)
        daemon.send([f"old={v} new-a={v} other={v}" for v in late])
        after = by_stream(daemon.take(3 * 40))
        assert daemon.stop() == 0, "".join(daemon.log)
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(timeout=10)

    # The new scale, for old and new streams alike.
    for stream, notes in after.items():
        assert len(notes) == 40
        off = [e["pitch"] for e in notes if not in_scale(e["pitch"], "pentatonic", "C")]
        assert not off, f"{stream} played {off} outside C pentatonic after the reload"
    # Voices: a new stream that a new [[voices]] rule matches gets its program and channel;
    # another new stream music.program; the old stream keeps the voice it had.
    assert {(e["program"], e["channel"]) for e in after["new-a"]} == {(60, 11)}
    assert {e["program"] for e in after["other"]} == {40}
    assert {(e["program"], e["channel"]) for e in after["old"]} == {
        (5, before[0]["channel"])}
    # One normalizer setting for all: the old stream's window (its values kept, the newest
    # 20 of them) and a new stream's are ranked alike by the new settings.
    assert [e["normalized"] for e in after["old"]] == ranks(early + late, 20)[60:]
    assert [e["normalized"] for e in after["other"]] == ranks(late, 20)
    assert [e["normalized"] for e in after["old"]][19:] == \
        [e["normalized"] for e in after["other"]][19:]


OUTPUTS_BEFORE = """\
[output]
targets = ["events"]
"""


@pytest.mark.slow
def test_sighup_opens_new_outputs_and_names_what_needs_a_restart(tmp_path: Path) -> None:
    """output.targets from the file: a reload opens the new output (the running one plays
    on, every stream keeps its state), a setting it cannot apply is named in a WARNING, and
    an output that cannot be opened fails the reload and changes nothing."""
    import mido

    from tests.test_health import Daemon as Run

    config = tmp_path / "config.toml"
    config.write_text(OUTPUTS_BEFORE)
    midi = tmp_path / "after.mid"
    daemon = Run(["--config", str(config), "--set", "clock.backlog=100000"], output=False)
    try:
        daemon.send("".join(f"s={v}\n" for v in wave(0, 30)))
        daemon.wait_until("30 notes", lambda: len(daemon.played()) >= 30)
        first = len(daemon.notes)

        config.write_text(f'[output]\ntargets = ["events", "wav:{tmp_path}/x.wav"]\n'
                          '[audio]\nsoundfont = "/nonexistent/none.sf2"\n')
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("reload failed, keeping the running configuration")

        config.write_text(f'[output]\ntargets = ["events", "file:{midi}"]\n'
                          f'[model]\nweights = "{tmp_path}/other.pt"\n')
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("reloaded configuration")
        warning = daemon.wait_log("need a restart.*").group(0)
        assert "model.weights" in warning and "output" not in warning
        daemon.send("".join(f"s={v}\n" for v in wave(30, 20)))
        daemon.wait_until("50 notes", lambda: len(daemon.played()) >= 50)
        assert daemon.finish() == 0, "".join(daemon.log)
    finally:
        daemon.finish()
    events = [json.loads(line) for line in daemon.notes]
    assert len(daemon.played()) == 50  # the events output was kept, not opened twice
    # The new output got exactly the notes played after the reload, with their program.
    ons = [m for m in mido.MidiFile(midi) if m.type == "note_on" and m.velocity > 0]
    assert [m.note for m in ons] == [e["pitch"] for e in events[first:]]
    programs = [m.program for m in mido.MidiFile(midi) if m.type == "program_change"]
    assert programs[:1] == [events[first]["program"]]
    assert {(e["stream"], e["channel"]) for e in events} == {("s", events[0]["channel"])}


def test_a_setting_back_to_what_runs_needs_no_restart(tmp_path: Path) -> None:
    """What needs a restart is what differs from what runs, not from the last file read:
    a file that named other weights (warned), then the running ones again, was warned about
    a second time (a QA pass, 2026-12-06)."""
    from tests.test_health import Daemon as Run

    config = tmp_path / "config.toml"
    config.write_text('[music]\nscale = "major"\n')
    daemon = Run(["--config", str(config)])
    try:
        daemon.wait_log("ready")
        config.write_text(f'[music]\nscale = "minor"\n[model]\nweights = "{tmp_path}/o.pt"\n')
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log(r"reloaded configuration \(music.scale\)")
        daemon.wait_log("need a restart.*model.weights")
        config.write_text('[music]\nscale = "major"\n')
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_until("two reloads", lambda: sum(
            "reloaded configuration (music.scale)" in line for line in daemon.log) == 2)
        assert daemon.finish() == 0, "".join(daemon.log)
    finally:
        daemon.finish()
    assert sum("need a restart" in line for line in daemon.log) == 1, "".join(daemon.log)


@pytest.mark.slow
def test_failed_reload_changes_no_file_and_a_retuned_file_output_keeps_its_file(
        tmp_path: Path) -> None:
    """A reload that fails (an output that cannot be opened) leaves every file as it was: the
    running file output is not set aside, an added one creates nothing and renames nothing
    (an earlier run's file at its name stays). A reload that changes only the flush and
    rotation settings keeps the running file open: one file holds the whole session and the
    exit line names it."""
    import mido

    from tests.test_health import Daemon as Run

    session = tmp_path / "s.mid"
    added = tmp_path / "g.mid"
    earlier = b"an earlier run's file"
    added.write_bytes(earlier)
    config = tmp_path / "config.toml"
    config.write_text(f'[output]\ntargets = ["events", "file:{session}"]\n')
    daemon = Run(["--config", str(config), "--set", "clock.backlog=100000", "--log-level",
                  "info"], output=False)
    try:
        daemon.send("".join(f"s={v}\n" for v in wave(0, 30)))
        daemon.wait_until("30 notes", lambda: len(daemon.played()) >= 30)
        files = sorted(p.name for p in tmp_path.iterdir())

        config.write_text(f'[output]\ntargets = ["events", "file:{session}", "file:{added}", '
                          '"midi:doesnotexist"]\nrotate_seconds = 3600\n')
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("reload failed, keeping the running configuration")
        assert sorted(p.name for p in tmp_path.iterdir()) == files
        assert added.read_bytes() == earlier

        config.write_text(f'[output]\ntargets = ["events", "file:{session}"]\n'
                          'rotate_seconds = 3600\n')
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("reloaded configuration")
        daemon.send("".join(f"s={v}\n" for v in wave(30, 20)))
        daemon.wait_until("50 notes", lambda: len(daemon.played()) >= 50)
        assert daemon.finish() == 0, "".join(daemon.log)
    finally:
        daemon.finish()
    log = "".join(daemon.log)
    assert sorted(p.name for p in tmp_path.iterdir()) == files, log
    assert "kept the earlier file" not in log and "0 messages" not in log, log
    assert f"wrote {session} (" in log, log
    ons = [m for m in mido.MidiFile(session) if m.type == "note_on" and m.velocity > 0]
    assert len(ons) == len(daemon.played()) == 50


@pytest.mark.slow
def test_reload_that_reopens_a_wav_output_names_the_files_it_wrote(tmp_path: Path) -> None:
    """A reload that changes a wav: output's audio settings opens it anew: the running one
    finishes its file first (its line names it), then the new one sets it aside (a line
    names where) and writes the path again; both files are valid and hold audio."""
    import wave as wavefile

    from tests.test_health import Daemon as Run

    out = tmp_path / "a.wav"
    config = tmp_path / "config.toml"
    config.write_text(f'[output]\ntargets = ["events", "wav:{out}"]\n')
    daemon = Run(["--config", str(config), "--set", "clock.backlog=100000", "--log-level",
                  "info"], output=False)
    try:
        daemon.send("".join(f"s={v}\n" for v in wave(0, 10)))
        daemon.wait_until("10 notes", lambda: len(daemon.played()) >= 10)
        config.write_text(f'[output]\ntargets = ["events", "wav:{out}"]\n[audio]\ngain = 0.3\n')
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("reloaded configuration")
        daemon.send("".join(f"s={v}\n" for v in wave(10, 10)))
        daemon.wait_until("20 notes", lambda: len(daemon.played()) >= 20)
        assert daemon.finish() == 0, "".join(daemon.log)
    finally:
        daemon.finish()
    log = "".join(daemon.log)
    aside = tmp_path / "a-1.wav"
    first = log.index(f"wrote {out} (")
    assert first < log.index(f"kept the earlier file as {aside}") < log.rindex(
        f"wrote {out} ("), log
    for path in (aside, out):
        with wavefile.open(str(path)) as wav:
            assert wav.getnframes() > 0
