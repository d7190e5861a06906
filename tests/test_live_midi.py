"""The daemon plays to a virtual JACK MIDI port; a real JACK client receives the notes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import mido
import pytest

from tests.jackmidi import Receiver

pytestmark = [pytest.mark.jack, pytest.mark.slow]


def start_daemon(jack_server, checkpoint: Path, port: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "streamsonic", "run", "--weights", str(checkpoint),
           "--device", "cpu", "--output", f"midi-virtual:{port}", "--midi-api", "jack",
           "--output", "events", *extra]
    return subprocess.Popen(cmd, env=jack_server.env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def feed(proc: subprocess.Popen, values: Sequence[float], interval: float) -> None:
    assert proc.stdin is not None
    for value in values:
        proc.stdin.write(f"{value}\n")
        proc.stdin.flush()
        time.sleep(interval)


def unmatched_note_ons(messages: list[mido.Message]) -> list[tuple[int, int]]:
    """(channel, note) of note_ons never followed by their note_off."""
    sounding: dict[tuple[int, int], int] = {}
    for m in messages:
        if m.type == "note_on" and m.velocity > 0:
            sounding[(m.channel, m.note)] = sounding.get((m.channel, m.note), 0) + 1
        elif m.type in ("note_on", "note_off") and sounding.get((m.channel, m.note)):
            sounding[(m.channel, m.note)] -= 1
    return sorted(k for k, n in sounding.items() if n > 0)


def test_daemon_notes_arrive_with_their_note_offs(jack_server, random_pitch_checkpoint) -> None:
    rx = Receiver("live-rx")
    proc = start_daemon(jack_server, random_pitch_checkpoint, "ss-live")
    try:
        rx.connect_from("ss-live:out", timeout=60)
        values = [3, 7, 1, 9, 4, 6, 2, 8, 5, 10, 0, 7]
        feed(proc, values, 0.35)  # notes (0.25 s) do not overlap
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    received = [m for _, m in rx.drain(0.5)]
    rx.close()
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(events) >= 8
    note_ons = [m for m in received if m.type == "note_on" and m.velocity > 0]
    assert [m.note for m in note_ons] == [e["pitch"] for e in events]
    assert [m.velocity for m in note_ons] == [e["velocity"] for e in events]
    assert unmatched_note_ons(received) == []


def test_sigterm_mid_note_releases_every_note(jack_server, random_pitch_checkpoint) -> None:
    rx = Receiver("term-rx")
    # long notes, so they are sounding when the signal comes
    proc = start_daemon(jack_server, random_pitch_checkpoint, "ss-term", "--note-length", "16",
                        "--tempo", "60")
    try:
        rx.connect_from("ss-term:out", timeout=60)
        feed(proc, [1, 5], 0.3)
        first = rx.take(1, timeout=20)
        assert first and first[0][1].type in ("note_on", "program_change")
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    received = [m for _, m in first] + [m for _, m in rx.drain(0.5)]
    rx.close()
    assert proc.returncode == 0, err
    assert any(m.type == "note_on" for m in received)
    assert unmatched_note_ons(received) == []
    ccs = {(m.channel, m.control) for m in received if m.type == "control_change"}
    assert {(0, 123), (0, 120)} <= ccs
