"""A stop does not play the backlog out, and does not lose it silently either: the samples
still waiting to play are counted (``dropped.at_stop``) in the final ``stopped:`` line."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

LINES = 60_000


@pytest.mark.parametrize("clock", ["event", "tick"])
def test_sigterm_counts_the_unplayed_backlog(clock: str, tmp_path: Path,
                                             random_pitch_checkpoint: Path) -> None:
    """60,000 samples of one stream, at most 20 notes a second, a backlog of 100,000: almost
    all of them still wait when SIGTERM comes. Before, the stop line said "60000 samples,
    2659 notes" and nothing of the rest."""
    err = tmp_path / "err"
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamsonic", "run", "-o", "events",
             "--weights", str(random_pitch_checkpoint), "--set", "clock.backlog=100000",
             "--set", f"clock.mode={clock}", "--set", "model.passing_notes=0",
             "--max-rate", "20"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            assert proc.stdin is not None
            proc.stdin.write(b"".join(f"{i % 97}.5\n".encode() for i in range(LINES)))
            proc.stdin.flush()  # kept open: the daemon waits for more, the backlog waiting
            deadline = time.monotonic() + 60
            while "ready:" not in err.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.5)  # the input is read (in well under that), the backlog waits
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdin is not None:
                proc.stdin.close()
    text = err.read_text()
    stopped = re.search(r"stopped: (\d+) samples, (\d+) notes; streams (\S+);", text)
    assert stopped is not None, text
    samples = int(stopped[1])
    counts = dict(kv.split("=") for kv in stopped[3].split(",") if "=" in kv)
    assert samples > 1000, text  # most of the input was read before the stop
    dropped = int(counts.get("dropped.at_stop", 0))
    assert dropped > samples // 2, text
    # one note per played sample (no passing notes); the rest are counted as dropped
    folded = int(counts.get("folded", 0))
    assert folded == 0, text
    assert int(stopped[2]) + dropped == samples, text


def test_a_stop_counts_what_waits_for_the_temporal_models_next_onset() -> None:
    """``rhythm = "model"``: samples that came after a stream's last note wait for its next
    onset; a stop drops them, counted as ``dropped.at_stop``."""
    from streamsonic.conductor import Conductor
    from streamsonic.config import load_config
    from streamsonic.engine import Engine
    from streamsonic.events import Sample
    from streamsonic.record import VirtualTimeLoop
    from streamsonic.rhythm import RhythmDriver, load_temporal_model
    from streamsonic.scheduler import Scheduler
    from tests.test_rhythm import NoteSink

    loop = VirtualTimeLoop()
    config = load_config(None, {"model.rhythm": "model", "model.seed": 3})
    stepper, encoding = load_temporal_model(config)
    conductor = Conductor(config, stepper, encoding)
    scheduler = Scheduler(loop, [NoteSink()])
    engine = Engine(conductor, scheduler, loop, rhythm=RhythmDriver(conductor, scheduler, loop))

    async def feed() -> None:
        for stream in ("a", "b"):
            for i in range(10):  # at once: the first plays, nine wait for the next onset
                engine.feed(Sample(stream, loop.time(), float(i % 3)))
        engine.cancel()

    try:
        loop.run_until_complete(feed())
    finally:
        scheduler.close()
        loop.close()
    assert engine.stats.get("dropped.at_stop") == 18


def _stopped_line(text: str) -> tuple[int, int, dict[str, int], dict[str, int]]:
    """samples, notes, the engine's counters and the input's, from the ``stopped:`` line."""
    stopped = re.search(r"stopped: (\d+) samples, (\d+) notes; streams (.+?); input (.+)$",
                        text, re.MULTILINE)
    assert stopped is not None, text

    def counts(part: str) -> dict[str, int]:
        return {k: int(v) for k, v in (kv.strip().split("=") for kv in part.split(",")
                                       if "=" in kv)}

    return int(stopped[1]), int(stopped[2]), counts(stopped[3]), counts(stopped[4])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_every_sample_read_is_accounted_for_at_a_stop(sig: signal.Signals, tmp_path: Path,
                                                      random_pitch_checkpoint: Path) -> None:
    """A firehose (millions of lines waiting on stdin) stopped by a signal: the samples
    read from the input = those the engine took + ``unread`` (read, never taken: the
    reader's buffer, the rest of the batch being handed over); the engine's = their notes
    + ``folded`` (into a note that played) + ``dropped.at_stop``. Before (a QA pass at
    36e50ff), about 19,000 of 175,031 samples read were in neither count, and samples
    folded into a note that never played counted twice (folded and dropped)."""
    data = tmp_path / "big.txt"
    data.write_text("".join(f"{i % 97}.5\n" for i in range(2_000_000)))
    err = tmp_path / "err"
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamsonic", "run", str(data), "-o", "events",
             "--weights", str(random_pitch_checkpoint), "--set", "model.passing_notes=0"],
            stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 60
            while "ready:" not in err.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.5)  # reading, folding, the reader's buffer full
            proc.send_signal(sig)
            assert proc.wait(timeout=30) == (0 if sig == signal.SIGTERM else 130)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    samples, notes, engine, source = _stopped_line(err.read_text())
    assert source.get("unread", 0) > 0, source  # the stop came while input waited
    assert source["samples"] == samples + source["unread"], (samples, source)
    assert source["samples"] < 2_000_000  # stopped, not ended
    dropped = sum(v for k, v in engine.items() if k.startswith("dropped."))
    assert engine.get("folded", 0) > 0 and dropped > 0, engine
    assert samples == notes + engine.get("folded", 0) + dropped, (samples, notes, engine)
