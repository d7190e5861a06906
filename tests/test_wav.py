"""The WAV sink renders real FluidSynth audio with the TimGM6mb SoundFont; pitches by HPS."""

from __future__ import annotations

import wave
from pathlib import Path

import mido
import numpy as np
import pytest

from streamsonic.config import AudioConfig, Config, MusicConfig
from streamsonic.errors import OutputError, SoundFontError
from streamsonic.sinks import wav
from streamsonic.sinks.synth import GRAIN
from tests.pitchdetect import (
    SOUNDFONT,
    cents,
    fundamental,
    locate,
    midi_to_hz,
    read_wav,
    reference_note,
)

pytestmark = pytest.mark.usefixtures("soundfont")  # skipped without it, failed in CI

NOTES = [60, 64, 67, 72, 57, 69, 62]
STEP = 0.5
LENGTH = 0.4


def config(program: int = 0, sample_rate: int = 48000) -> Config:
    return Config(audio=AudioConfig(soundfont=str(SOUNDFONT), sample_rate=sample_rate),
                  music=MusicConfig(program=program))


def render(path: Path, notes: list[int], program: int, channel: int = 0,
           sample_rate: int = 48000) -> None:
    sink = wav.open_sink(str(path), config(sample_rate=sample_rate))
    with sink:
        sink.send(mido.Message("program_change", channel=channel, program=program), 0.0)
        for i, note in enumerate(notes):
            start = 0.1 + i * STEP
            sink.send(mido.Message("note_on", channel=channel, note=note, velocity=100), start)
            sink.send(mido.Message("note_off", channel=channel, note=note), start + LENGTH)


@pytest.mark.parametrize("program", [0, 73], ids=["piano", "flute"])
def test_rendered_pitches_within_25_cents(tmp_path: Path, program: int) -> None:
    path = tmp_path / "notes.wav"
    render(path, NOTES, program)
    audio, rate = read_wav(path)
    assert rate == 48000
    assert audio.shape[1] == 2
    for i, note in enumerate(NOTES):
        start = int((0.1 + i * STEP + 0.03) * rate)
        segment = audio[start: start + int(0.3 * rate)].mean(axis=1)
        f0 = fundamental(segment, rate)
        assert abs(cents(f0, midi_to_hz(note))) < 25, (note, f0)


def test_onsets_on_the_nearest_synth_grain(tmp_path: Path) -> None:
    path = tmp_path / "onsets.wav"
    sink = wav.open_sink(str(path), config())
    starts = [0.1 + i * (STEP + 0.00013) for i in range(len(NOTES))]  # off FluidSynth's grid
    with sink:
        for note, start in zip(NOTES, starts, strict=True):
            sink.send(mido.Message("note_on", note=note, velocity=100), start)
            sink.send(mido.Message("note_off", note=note), start + LENGTH)
    audio, rate = read_wav(path)
    for note, start in zip(NOTES, starts, strict=True):
        exact = start * rate
        found, score = locate(audio, reference_note(note, 100, 0, rate), round(exact) + 300,
                              1200)
        assert score > 0.95
        assert found % GRAIN == 0  # FluidSynth starts notes on its 64-frame grid ...
        assert abs(found - exact) <= GRAIN / 2  # ... and we pick the nearest grid point


def test_release_tail_and_silence_at_end(tmp_path: Path) -> None:
    path = tmp_path / "tail.wav"
    sink = wav.open_sink(str(path), config())
    sink.send(mido.Message("note_on", note=60, velocity=110), 0.0)
    sink.send(mido.Message("note_on", note=67, velocity=110), 0.5)  # never released by caller
    sink.close()
    audio, rate = read_wav(path)
    duration = len(audio) / rate
    assert 0.5 + wav.TAIL_MIN <= duration <= 0.5 + wav.TAIL_MAX + 0.06
    assert np.abs(audio[-rate // 50:]).max() < 1e-3  # faded out: no stuck note at the end
    assert sink.sounding == set()


def test_wav_header_is_16_bit_stereo(tmp_path: Path) -> None:
    path = tmp_path / "h.wav"
    render(path, [69], 0, sample_rate=44100)
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 44100)


def test_unwritable_path_is_an_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="cannot write WAV file"):
        wav.open_sink(str(tmp_path / "missing" / "x.wav"), config())


def test_missing_soundfont_names_the_fix(tmp_path: Path) -> None:
    cfg = Config(audio=AudioConfig(soundfont=str(tmp_path / "nope.sf2")))
    with pytest.raises(SoundFontError, match="does not exist"):
        wav.open_sink(str(tmp_path / "x.wav"), cfg)


def test_invalid_soundfont_file(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.sf2"
    bogus.write_bytes(b"not a soundfont")
    cfg = Config(audio=AudioConfig(soundfont=str(bogus)))
    with pytest.raises(SoundFontError, match="cannot load SoundFont"):
        wav.open_sink(str(tmp_path / "x.wav"), cfg)


# -- a write that fails: one error line, no traceback ----------------------------------------

def limited_writes(size: int) -> None:
    """In the child (preexec_fn): no file grows past ``size`` bytes; a write past it fails
    with EFBIG ("File too large"), as a full disk fails one, without root or a mount."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


@pytest.mark.parametrize("command", ["run", "render"])
def test_a_wav_file_that_fills_up_is_one_error_line(tmp_path: Path, command: str) -> None:
    """The WAV output fails mid-file: one error line when it fails and one for exit 74, no
    traceback. Was: the close's note-offs rendered into the given-up file, "silencing notes
    failed during close" and a chained traceback (ValueError: I/O operation on closed file)."""
    import os
    import subprocess
    import sys

    data = tmp_path / "series.txt"
    data.write_text("".join(f"{i % 13}\n" for i in range(40)))
    out = tmp_path / "out.wav"
    args = (["run", str(data), "--output", f"wav:{out}", "--output", "events", "--set",
             "clock.max_rate=1000", "--set", "clock.backlog=100000"] if command == "run"
            else ["render", str(data), "-o", str(out)])
    env = {k: v for k, v in os.environ.items() if k != "STREAMSONIC_CONFIG"}
    res = subprocess.run([sys.executable, "-m", "streamsonic", *args, "--soundfont",
                          str(SOUNDFONT), "--device", "cpu"], capture_output=True, text=True,
                         timeout=300, check=False, env=env, cwd=tmp_path,
                         preexec_fn=lambda: limited_writes(100_000))
    assert res.returncode == 74, res.stderr
    assert "Traceback" not in res.stderr and "silencing notes failed" not in res.stderr, \
        res.stderr
    errors = [line for line in res.stderr.splitlines() if "ERROR" in line or "error:" in line]
    assert len(errors) == 2, res.stderr
    assert all(f"cannot write WAV file {out}: File too large" in e for e in errors)
    if command == "run":  # the file keeps, valid, what was written up to its last flush
        with wave.open(str(out)) as f:
            assert f.getnchannels() == 2
