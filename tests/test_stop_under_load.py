"""SIGTERM stops the daemon at any load: exit 0, every note released, the file written."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mido
import pytest

#: Guards against a hang only; the stop normally takes well under a second plus the
#: interpreter's exit.
STOP_TIMEOUT = 15.0


def feed(stdin: object, header: bytes, row: bytes) -> None:
    """Write the header, then the same row as fast as the pipe takes it, until closed."""
    try:
        stdin.write(header)  # type: ignore[attr-defined]
        while True:
            stdin.write(row)  # type: ignore[attr-defined]
    except (BrokenPipeError, ValueError, OSError):
        pass


def end(proc: subprocess.Popen[bytes]) -> None:
    """Kill the daemon if a failed assertion left it running; close its stdin."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()


def sounding_at_end(path: Path) -> set[tuple[int, int]]:
    """(channel, note) keys still sounding at the end of a MIDI file: a note-off releases
    its key, All Notes Off (123) or All Sound Off (120) every key of its channel."""
    sounding: set[tuple[int, int]] = set()
    for msg in mido.MidiFile(path):
        if msg.type == "note_on" and msg.velocity > 0:
            sounding.add((msg.channel, msg.note))
        elif msg.type in ("note_off", "note_on"):
            sounding.discard((msg.channel, msg.note))
        elif msg.type == "control_change" and msg.control in (120, 123):
            sounding = {key for key in sounding if key[0] != msg.channel}
    return sounding


@pytest.mark.slow
def test_sigterm_stops_a_firehose_of_thousands_of_streams(
    tmp_path: Path, random_pitch_checkpoint: Path
) -> None:
    """2,000 streams per line, lines as fast as the pipe goes, at most one note per stream
    every 10 s: the event loop always has more input. Before the source handed control back
    to the loop, SIGTERM was never served and the daemon ran on."""
    streams = 2000
    header = (",".join(f"s{i}" for i in range(streams)) + "\n").encode()
    row = (",".join(f"{i % 97}.5" for i in range(streams)) + "\n").encode()
    midi = tmp_path / "out.mid"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamsonic", "run", "--output", "events",
         "--output", f"file:{midi}", "--weights", str(random_pitch_checkpoint),
         "--max-rate", "0.1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
    )
    writer = threading.Thread(target=feed, args=(proc.stdin, header, row), daemon=True)
    writer.start()
    notes: list[bytes] = []
    started = threading.Event()

    def read_notes() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            notes.append(line)
            if len(notes) >= 100:
                started.set()

    reader = threading.Thread(target=read_notes, daemon=True)
    reader.start()
    try:
        assert started.wait(120), "the daemon played nothing"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"SIGTERM under load: still running {STOP_TIMEOUT:.0f} s later")
        took = time.monotonic() - sent
    finally:
        end(proc)
    reader.join(10)
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    print(f"stopped {took:.2f} s after SIGTERM, {len(notes)} notes played")
    assert not sounding_at_end(midi), "notes left sounding after SIGTERM"
    assert len(notes) >= 100


@pytest.mark.slow
def test_sighup_is_answered_under_a_firehose_and_the_new_scale_plays(
    tmp_path: Path, random_pitch_checkpoint: Path
) -> None:
    """The same firehose (2,000 streams per line, lines as fast as the pipe goes): SIGHUP
    re-reads the config file while the loop always has more input. The reload is logged
    (the signal was served), the next notes are in the new scale, and SIGTERM still stops
    the daemon afterwards. Before the loop got its turns, neither signal was served."""
    streams = 2000
    header = (",".join(f"s{i}" for i in range(streams)) + "\n").encode()
    row = (",".join(f"{i % 97}.5" for i in range(streams)) + "\n").encode()
    config = tmp_path / "config.toml"
    config.write_text('[music]\nscale = "chromatic"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamsonic", "run", "--config", str(config), "--output",
         "events", "--weights", str(random_pitch_checkpoint), "--max-rate", "0.5"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
    )
    writer = threading.Thread(target=feed, args=(proc.stdin, header, row), daemon=True)
    writer.start()
    notes: list[tuple[float, bytes]] = []
    log: list[tuple[float, str]] = []
    started, reloaded = threading.Event(), threading.Event()

    def read_notes() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            notes.append((time.monotonic(), line))
            if len(notes) >= 100:
                started.set()

    def read_log() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace")
            log.append((time.monotonic(), line))
            if "reloaded configuration" in line:
                reloaded.set()

    threading.Thread(target=read_notes, daemon=True).start()
    threading.Thread(target=read_log, daemon=True).start()
    try:
        assert started.wait(120), "the daemon played nothing"
        config.write_text('[music]\nscale = "whole-tone"\nkey = "C"\n')
        sent = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        if not reloaded.wait(STOP_TIMEOUT):
            pytest.fail(f"SIGHUP under load: no reload {STOP_TIMEOUT:.0f} s later:\n"
                        + "".join(line for _, line in log[-10:]))
        took = next(t for t, line in log if "reloaded configuration" in line) - sent
        # notes that started after the reload was logged are in C whole-tone
        deadline = time.monotonic() + STOP_TIMEOUT
        after: list[int] = []
        while len(after) < 50 and time.monotonic() < deadline:
            time.sleep(0.1)
            done = next(t for t, line in log if "reloaded configuration" in line)
            after = [json.loads(line)["pitch"] for t, line in list(notes) if t > done + 0.2]
        assert len(after) >= 50, f"{len(after)} notes after the reload"
        assert all(p % 2 == 0 for p in after), sorted(set(after))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=STOP_TIMEOUT)
    finally:
        end(proc)
    print(f"reload logged {took:.2f} s after SIGHUP")
    assert proc.returncode == 0


#: Run as ``python -c``: the CLI, with a SIGTERM and a SIGHUP to itself while the daemon
#: exits (from the metrics' close, after the notes are released and the outputs closed),
#: or the router (before it kills what is left of its workers).
_LATE_SIGNAL = """
import os, signal, sys
from streamsonic import daemon, workers
def signals():
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGHUP)
close, kill_all = daemon.Daemon._close_metrics, workers.Router._kill_all
def late(self):
    signals()
    close(self)
async def late_router(self):
    signals()
    await kill_all(self)
daemon.Daemon._close_metrics = late
workers.Router._kill_all = late_router
from streamsonic.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_a_signal_while_the_daemon_exits_changes_nothing(random_pitch_checkpoint: Path,
                                                         workers: int) -> None:
    """A SIGTERM (and a SIGHUP) that comes while the daemon (or the router of its worker
    processes) exits, after its run: it is already stopping, so it exits 0 with every note
    played. Its handlers used to be gone by then and the signal's default action ended it
    at once (-15: seen in CI, a test's stop coming as the daemon exited)."""
    done = subprocess.run(
        [sys.executable, "-c", _LATE_SIGNAL, "run", "--output", "events", "--weights",
         str(random_pitch_checkpoint), "--set", "model.passing_notes=0",
         "--set", f"daemon.workers={workers}"],
        input=b"1\n5\n3\n", capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert len(done.stdout.decode().splitlines()) == 3
    assert b"stopped:" in done.stderr
