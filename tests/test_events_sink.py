"""The events output writes its notes in a few large writes and still flushes each one
within its delay: a reader of a running daemon's stdout sees a note while the daemon goes
on waiting for input."""

from __future__ import annotations

import asyncio
import io
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from streamsonic.events import NoteEvent
from streamsonic.sinks.events import FLUSH_DELAY, EventsSink, note_line

REPO = Path(__file__).resolve().parents[1]


class CountingStream(io.StringIO):
    """A text stream that remembers what was flushed, and how often."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0
        self.flushed = ""

    def flush(self) -> None:
        self.flushes += 1
        self.flushed = self.getvalue()


def note(i: int) -> NoteEvent:
    return NoteEvent("s", float(i), 1.0, 0.5, 60 + i % 12, 90, 0.25, 0, 0, start=float(i))


def test_notes_are_batched_and_flushed_within_the_delay() -> None:
    out = CountingStream()
    sink = EventsSink(out, flush_delay=0.02)

    async def play() -> tuple[int, str, int, str]:
        for i in range(100):
            sink.note(note(i))
        before = (out.flushes, out.flushed)
        await asyncio.sleep(0.2)  # the timer's delay has passed: a turn of the loop later
        return (*before, out.flushes, out.flushed)

    flushes_before, flushed_before, flushes_after, flushed_after = asyncio.run(play())
    assert flushes_before == 0 and flushed_before == ""  # not one write per note
    assert flushes_after == 1  # one flush for the hundred
    lines = flushed_after.splitlines()
    assert [json.loads(line)["pitch"] for line in lines] == [60 + i % 12 for i in range(100)]
    assert json.loads(lines[0]) == note(0).to_dict()
    sink.close()


def test_without_a_loop_lines_are_written_at_close() -> None:
    """render: no timer, the notes go out with the buffer and at the end."""
    out = CountingStream()
    sink = EventsSink(out)
    sink.note(note(1))
    assert out.flushes == 0
    sink.close()
    assert out.flushes == 1 and json.loads(out.flushed)["start"] == 1.0


def test_to_dict_is_every_field_in_order() -> None:
    event = note(3)
    assert list(event.to_dict()) == list(event.__dataclass_fields__)
    assert event.to_dict() == {name: getattr(event, name) for name in event.__dataclass_fields__}


BASE = {"stream": "cpu", "time": 1733300000.123456, "value": -3.25, "normalized": 0.4567,
        "pitch": 64, "velocity": 80, "duration": 0.25, "channel": 3, "program": 0,
        "start": 1234.56789, "anomaly": 0.01, "accent": False, "direction": 0, "pan": 64,
        "source": "data"}


@pytest.mark.parametrize("changes", [
    {}, {"accent": True, "direction": -1, "source": "model"},
    {"stream": 'h\u00e9 "q" \\ \n\u2603'}, {"stream": "nan inf"},
    {"time": 0}, {"value": 7}, {"time": float("nan")}, {"value": float("inf")},
    {"value": -0.0}, {"value": 1e300}, {"value": 1e-7}, {"time": np.float64(2.5)},
    {"anomaly": np.float64(0.75)}, {"direction": np.int64(1)}, {"pitch": np.int64(60)},
    {"normalized": 1}, {"duration": 2}, {"start": -1e17},
])
def test_note_line_is_the_json_of_to_dict(changes: dict[str, object]) -> None:
    """The events output's hand-written line is exactly the json module's, whatever the
    fields hold (odd types take the json module's path, and fail as it does)."""
    event = NoteEvent(**{**BASE, **changes})  # type: ignore[arg-type]

    def outcome(encode: Callable[[], str]) -> str:
        try:
            return encode()
        except TypeError as err:
            return f"TypeError: {err}"

    assert outcome(lambda: note_line(event)) == outcome(
        lambda: json.dumps(event.to_dict(), separators=(",", ":")))


def test_note_line_writes_usual_notes_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """A note of the usual types (the conductor's) never goes through the json module."""
    from streamsonic.sinks import events

    def refuse(_obj: object) -> str:
        raise AssertionError("the json module was used for a note of the usual types")

    monkeypatch.setattr(events, "_encode", refuse)
    for changes in ({}, {"accent": True, "direction": 1, "source": "model", "stream": "n\u00e9"},
                    {"anomaly": np.float64(0.5)}):
        event = NoteEvent(**{**BASE, **changes})  # type: ignore[arg-type]
        assert json.loads(note_line(event)) == json.loads(json.dumps(event.to_dict()))


def test_a_running_daemon_shows_a_note_before_its_input_ends() -> None:
    """One sample in, stdin left open: the note's line arrives while the daemon keeps
    running (a buffer without its flush timer would hold it until exit). No timed assert:
    the deadline only bounds a hang."""
    env = {k: v for k, v in os.environ.items() if k != "STREAMSONIC_CONFIG"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamsonic", "--output", "events", "--device", "cpu",
         "--log-level", "warning"],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b"42\n")
        proc.stdin.flush()
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 60 + FLUSH_DELAY
        line = b""
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            if selector.select(timeout=1.0):
                chunk = os.read(proc.stdout.fileno(), 4096)
                assert chunk, proc.stderr.read() if proc.stderr else "stdout closed"
                line += chunk
        assert line.endswith(b"\n"), "no note while the daemon ran"
        assert proc.poll() is None  # still running, its input still open
        assert json.loads(line.splitlines()[0])["value"] == 42.0
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
