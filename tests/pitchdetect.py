"""Pitch and onset analysis of rendered or captured audio, for the audio tests and bench."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import mido
import numpy as np

from streamsonic.sinks.synth import FluidSynth
from tests.components import SOUNDFONT  # the audio tests and bench import it from here


def midi_to_hz(note: float) -> float:
    """Equal-tempered frequency of a MIDI note (A4 = 69 = 440 Hz)."""
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


def cents(f: float, ref: float) -> float:
    """Signed distance from ``ref`` to ``f`` in cents."""
    return 1200.0 * math.log2(f / ref)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A 16-bit WAV as float (frames, channels) and its sample rate."""
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        channels = w.getnchannels()
        assert w.getsampwidth() == 2
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return data.reshape(-1, channels).astype(np.float64) / 32768.0, rate


def fundamental(x: np.ndarray, rate: int, fmin: float = 50.0, fmax: float = 2000.0,
                harmonics: int = 4) -> float:
    """Fundamental frequency of a mono segment by harmonic product spectrum.

    The HPS picks the fundamental's region; the exact frequency is the interpolated peak of
    the plain spectrum there (parabolic interpolation on log magnitude).
    """
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean()
    n = 1 << 17  # zero padding: 0.37 Hz bins at 48 kHz
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n))
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    hps = np.log(spectrum + 1e-12)
    limit = len(spectrum) // harmonics
    product = hps[:limit].copy()
    for h in range(2, harmonics + 1):
        product += hps[::h][:limit]
    band = (freqs[:limit] >= fmin) & (freqs[:limit] <= fmax)
    idx = np.flatnonzero(band)
    guess = int(idx[np.argmax(product[idx])])
    k = _peak_near(spectrum, guess)
    # HPS can land below a high note (on a spurious low region): move up an octave while
    # the spectrum there is much stronger than at the guess
    while 2 * k < len(spectrum) - 2:
        up = _peak_near(spectrum, 2 * k)
        if spectrum[up] < 5.0 * spectrum[k]:
            break
        k = up
    a, b, c = (math.log(spectrum[k + d] + 1e-12) for d in (-1, 0, 1))
    denom = a - 2 * b + c
    shift = 0.5 * (a - c) / denom if denom else 0.0
    return float((k + shift) * rate / n)


def _peak_near(spectrum: np.ndarray, k: int, width: float = 0.03) -> int:
    """Index of the largest bin within ±``width`` (relative) of bin ``k``."""
    lo = max(1, int(k * (1 - width)))
    hi = min(len(spectrum) - 2, int(k * (1 + width)) + 1)
    return lo + int(np.argmax(spectrum[lo:hi + 1]))


def reference_note(note: int, velocity: int, program: int, rate: int, gain: float = 0.5,
                   seconds: float = 0.03, channel: int = 0) -> np.ndarray:
    """The first ``seconds`` of one note rendered alone by FluidSynth, onset at sample 0."""
    synth = FluidSynth(SOUNDFONT, rate, gain)
    try:
        synth.apply(mido.Message("program_change", channel=channel, program=program))
        synth.apply(mido.Message("note_on", channel=channel, note=note, velocity=velocity))
        out = np.zeros((int(seconds * rate), 2), dtype=np.float32)
        synth.render(out)
    finally:
        synth.delete()
    return out.mean(axis=1).astype(np.float64)


def locate(x: np.ndarray, reference: np.ndarray, around: int, search: int) -> tuple[int, float]:
    """Sample index in ``x`` near ``around`` (± ``search``) where ``reference`` best matches.

    Returns (index, normalized correlation 0..1). Used to time note onsets exactly: the
    reference is the same note rendered alone, so the match is at its onset sample.
    """
    mono = np.asarray(x, dtype=np.float64)
    if mono.ndim == 2:
        mono = mono.mean(axis=1)
    m = len(reference)
    lo = max(0, around - search)
    hi = min(len(mono) - m, around + search)
    if hi <= lo:
        return around, 0.0
    window = mono[lo: hi + m]
    corr = np.correlate(window, reference, mode="valid")
    csum = np.concatenate([[0.0], np.cumsum(window**2)])
    norms = np.sqrt((csum[m:] - csum[:-m]) * float(reference @ reference)) + 1e-12
    ncc = corr / norms
    best = int(np.argmax(ncc))
    return lo + best, float(ncc[best])
