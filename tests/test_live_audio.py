"""The daemon plays through its audio sink on JACK; a capture client checks pitch and timing.

The daemon's ports (``streamsonic:out_0/1``) are looped into this test's own capture stream
with ``jack_connect``. Each note in the daemon's events output is found in the capture by
correlating with the same note rendered alone (its onset sample), its pitch checked by HPS,
and its onset compared with the scheduled time (``start``, monotonic clock).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from streamsonic.sinks import fluid
from tests.jackaudio import Capture
from tests.pitchdetect import SOUNDFONT, cents, fundamental, locate, midi_to_hz, reference_note

pytestmark = [
    pytest.mark.jack,
    pytest.mark.slow,
    pytest.mark.usefixtures("soundfont"),  # skipped without it, failed in CI
]


def wait_for_line(stream, pattern: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        if re.search(pattern, line):
            return line
    raise AssertionError(f"daemon never logged {pattern!r}")


def test_daemon_audio_pitches_in_order_and_onset_jitter(jack_server,
                                                        random_pitch_checkpoint) -> None:
    sd = fluid._import_sounddevice()
    rate = jack_server.sample_rate
    before = set(jack_server.ports())
    capture = Capture(sd, rate, jack_server.period)
    capture.stream.start()
    ours = sorted(p for p in set(jack_server.ports()) - before if re.search(r":in_\d+$", p))
    before = set(jack_server.ports())
    cmd = [sys.executable, "-m", "streamsonic", "run", "--weights", str(random_pitch_checkpoint),
           "--device", "cpu", "--output", "audio", "--output", "events",
           "--soundfont", str(SOUNDFONT), "--set", f"audio.block_size={jack_server.period}",
           "--log-level", "info",
           "--set", "model.passing_notes=0"]  # each sample's note alone: pitches by FFT
    proc = subprocess.Popen(cmd, env=jack_server.env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdin is not None and proc.stderr is not None
        wait_for_line(proc.stderr, r"ready: outputs", 90)
        # the model's first steps are slow (lazy initialization): warm up unheard
        for value in (5, 1):
            proc.stdin.write(f"{value}\n")
            proc.stdin.flush()
            time.sleep(1.0)
        theirs = sorted(p for p in set(jack_server.ports()) - before
                        if re.search(r"^streamsonic.*:out_\d+$", p))
        assert len(ours) == 2 and len(theirs) == 2, (ours, theirs)
        for src, dst in zip(theirs, ours, strict=True):
            jack_server.connect(src, dst)
        listening = time.monotonic() + 0.1
        for value in [9, 3, 7, 2, 8, 4, 6, 0, 10, 5]:
            proc.stdin.write(f"{value}\n")
            proc.stdin.flush()
            time.sleep(0.45)
        out, err = proc.communicate(timeout=30)
        time.sleep(0.1)
        capture.stream.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        capture.stream.close()
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    events = [e for e in events if e["start"] > listening]
    assert len(events) >= 8
    audio = capture.audio().astype(np.float64)
    errors = []
    found_pitches = []
    for event in events:
        around = capture.frame_of(event["start"])
        reference = reference_note(event["pitch"], event["velocity"], event["program"], rate)
        found, score = locate(audio, reference, around, rate // 40)
        assert score > 0.8, (event, score)
        segment = audio[found + rate // 50: found + rate // 5].mean(axis=1)
        f0 = fundamental(segment, rate)
        found_pitches.append(round(69 + 12 * np.log2(f0 / 440.0)))
        assert abs(cents(f0, midi_to_hz(event["pitch"]))) < 25, (event, f0)
        errors.append((found - around) / rate)
    assert found_pitches == [e["pitch"] for e in events]  # the expected pitches, in order
    spread = max(errors) - min(errors)
    print(f"onset error ms: mean {np.mean(errors) * 1000:.3f}, std {np.std(errors) * 1000:.3f},"
          f" spread {spread * 1000:.3f} over {len(errors)} notes")
    assert spread < 0.002
