"""The audio sink: sample-exact placement (unit, real FluidSynth) and live on a JACK server."""

from __future__ import annotations

import random
import subprocess
import sys
import time

import mido
import numpy as np
import pytest

from streamsonic.config import AudioConfig, Config
from streamsonic.errors import AudioError
from streamsonic.sinks import fluid
from streamsonic.sinks.blocks import BlockRenderer, StreamClock
from streamsonic.sinks.synth import GRAIN, FluidSynth
from tests.jackaudio import Capture
from tests.pitchdetect import SOUNDFONT, cents, fundamental, locate, midi_to_hz, reference_note

needs_soundfont = pytest.mark.usefixtures("soundfont")  # skipped without it, failed in CI
RATE = 48000
BLOCK = 256


# -- StreamClock ---------------------------------------------------------------------------
def test_late_wakeups_do_not_move_the_block_times() -> None:
    clock = StreamClock(RATE, window=32)
    rng = random.Random(1)
    for i in range(200):
        due = 100.0 + i * BLOCK / RATE
        start = clock.block_start(due + rng.uniform(0, 0.004), i * BLOCK)
        if i >= 1:
            assert abs(start - due) < 0.004
    assert clock.origin is not None
    assert abs(clock.origin - 100.0) < 1e-4  # the least-late callback wins


def test_a_timeline_shift_is_followed() -> None:
    clock = StreamClock(RATE, window=16)
    for i in range(50):
        clock.block_start(10.0 + i * BLOCK / RATE, i * BLOCK)
    # an underrun: the next callbacks are due 3 ms later than the old timeline says
    for i in range(50, 80):
        start = clock.block_start(10.003 + i * BLOCK / RATE, i * BLOCK)
    assert abs(start - (10.003 + 79 * BLOCK / RATE)) < 1e-9
    clock.reset()  # ... and at once when the underrun is reported
    start = clock.block_start(10.009 + 80 * BLOCK / RATE, 80 * BLOCK)
    assert abs(start - (10.009 + 80 * BLOCK / RATE)) < 1e-9


# -- BlockRenderer with the real synth -----------------------------------------------------
@needs_soundfont
def test_events_land_on_the_nearest_synth_grain_despite_callback_jitter() -> None:
    synth = FluidSynth(SOUNDFONT, RATE, 0.5)
    renderer = BlockRenderer(synth, RATE, GRAIN)
    clock = StreamClock(RATE)
    notes = [60, 67, 64, 72, 55]
    t0 = 50.0
    starts = [t0 + 0.2 + 0.3 * i + 0.00037 * i for i in range(len(notes))]  # off the grid
    for seq, (note, start) in enumerate(zip(notes, starts, strict=True)):
        renderer.push(start, 2 * seq, mido.Message("note_on", note=note, velocity=100))
        renderer.push(start + 0.2, 2 * seq + 1, mido.Message("note_off", note=note))
    rng = random.Random(7)
    blocks = int(1.9 * RATE / BLOCK)
    out = np.zeros((blocks * BLOCK, 2), dtype=np.float32)
    for b in range(blocks):
        late = rng.uniform(0, 0.003) if rng.random() < 0.7 else 0.0  # late wake-ups
        now = t0 + b * BLOCK / RATE + late
        renderer.render(out[b * BLOCK:(b + 1) * BLOCK], clock.block_start(now, b * BLOCK))
    synth.delete()
    assert renderer.late == 0
    assert renderer.pending == 0
    for note, start in zip(notes, starts, strict=True):
        expected = round((start - t0) * RATE)
        found, score = locate(out, reference_note(note, 100, 0, RATE), expected + 200, 1000)
        assert score > 0.95
        assert abs(found - expected) <= GRAIN // 2, (note, found - expected)


@needs_soundfont
def test_late_messages_are_counted_and_played_at_block_start() -> None:
    synth = FluidSynth(SOUNDFONT, RATE, 0.5)
    renderer = BlockRenderer(synth, RATE, GRAIN)
    out = np.zeros((BLOCK, 2), dtype=np.float32)
    renderer.push(0.99, 0, mido.Message("note_on", note=69, velocity=100))
    renderer.render(out, 1.0)
    synth.delete()
    assert renderer.late == 1
    assert renderer.max_late == pytest.approx(0.01, abs=GRAIN / RATE)


# -- errors ------------------------------------------------------------------------------
def test_no_audio_device_is_one_clear_line(tmp_path) -> None:
    """With no JACK server and no sound card there is no output device at all."""
    code = (
        "from streamsonic.config import Config\n"
        "from streamsonic.sinks import fluid\n"
        "fluid.open_sink('', Config())\n"
    )
    env = {"JACK_DEFAULT_SERVER": f"absent-{time.time_ns()}", "JACK_NO_START_SERVER": "1",
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    if "AudioError" not in proc.stderr:
        pytest.skip("this machine has an audio output device")
    last = proc.stderr.strip().splitlines()[-1]
    assert "no audio output device found" in last
    assert "--output midi:NAME" in last


@pytest.mark.jack
def test_unknown_device_lists_the_outputs(jack_server) -> None:
    with pytest.raises(AudioError, match=r"'no-such-card'.*output devices: .*system"):
        fluid.open_sink("no-such-card", Config())


# -- live on JACK --------------------------------------------------------------------------
@pytest.mark.jack
@needs_soundfont
def test_live_audio_sink_on_jack(jack_server) -> None:
    period = jack_server.period
    cfg = Config(audio=AudioConfig(soundfont=str(SOUNDFONT), block_size=period))
    sink = fluid.open_sink("", cfg)
    sd = fluid._import_sounddevice()
    capture = Capture(sd, jack_server.sample_rate, period)
    try:
        assert sink.rate == jack_server.sample_rate
        out_ports = jack_server.wait_for_ports("streamsonic:out_", 2)
        in_ports = [p for p in jack_server.wait_for_ports("streamsonic", 4)  # the capture's
                    if p.split(":")[1].startswith("in_")]  # (PortAudio's streamsonic-01)
        capture.stream.start()
        for src, dst in zip(sorted(out_ports), sorted(in_ports), strict=True):
            jack_server.connect(src, dst)
        notes = [60, 64, 67, 72, 69, 62]
        t0 = time.monotonic() + 0.3
        starts = [t0 + 0.35 * i for i in range(len(notes))]
        for note, start in zip(notes, starts, strict=True):
            # hand each message over "lookahead" early, as the scheduler does
            time.sleep(max(0.0, start - sink.lookahead - time.monotonic()))
            sink.send(mido.Message("note_on", note=note, velocity=100), start)
            sink.send(mido.Message("note_off", note=note), start + 0.25)
        time.sleep(max(0.0, starts[-1] + 0.4 - time.monotonic()))
        sink.close()
        time.sleep(0.05)
        capture.stream.stop()
    finally:
        sink.close()
        capture.stream.close()
    audio = capture.audio().astype(np.float64)
    rate = capture.rate
    errors = []
    for note, start in zip(notes, starts, strict=True):
        around = capture.frame_of(start)
        found, score = locate(audio, reference_note(note, 100, 0, rate), around, rate // 50)
        assert score > 0.9, (note, score)
        segment = audio[found + rate // 50: found + rate // 5].mean(axis=1)
        assert abs(cents(fundamental(segment, rate), midi_to_hz(note))) < 25
        errors.append((found - around) / rate)
    spread = max(errors) - min(errors)
    print(f"onset error ms: {[round(e * 1000, 3) for e in errors]}, spread {spread * 1000:.3f}"
          f" ms, stats {sink.stats}")
    assert spread < 0.002
    assert sink.stats["late"] == 0
