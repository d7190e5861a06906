"""rhythm = "model": the temporal model decides onsets, durations and loudness."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import mido
import numpy as np
import pytest

from streamsonic.conductor import Conductor
from streamsonic.config import load_config
from streamsonic.engine import Engine
from streamsonic.events import NoteEvent, Sample
from streamsonic.model.temporal import BEAT_GRID
from streamsonic.record import VirtualTimeLoop
from streamsonic.render import Series, render_notes
from streamsonic.rhythm import RhythmDriver, load_temporal_model
from streamsonic.scheduler import Scheduler
from streamsonic.sinks.base import Sink

REPO = Path(__file__).resolve().parents[1]


def test_render_with_model_rhythm_uses_predicted_gaps() -> None:
    config = load_config(None, {"model.rhythm": "model", "model.influence": 1.0,
                                "music.tempo": 120.0})
    values = np.sin(np.linspace(0, 12, 120)) * 10
    notes = render_notes(config, Series("wave", values, list(range(120)), {}), [])
    assert len(notes) == 120
    gaps = np.diff([n.start for n in notes])
    beats = gaps / 0.5  # 120 bpm
    grid = np.array(BEAT_GRID)
    assert np.all(np.min(np.abs(beats[:, None] - grid[None, :]), axis=1) < 1e-9)
    assert np.all(gaps > 0)
    durations = {round(n.duration / 0.5, 6) for n in notes}
    assert durations <= {round(g, 6) for g in BEAT_GRID}
    # the data still drives the pitch at influence 1: rising data, rising notes
    pitches = np.array([n.pitch for n in notes])
    assert np.corrcoef(values, pitches)[0, 1] > 0.8


def test_live_model_rhythm_plays_every_sample_or_its_aggregate(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "streamsonic", "--rhythm", "model", "--output", "events",
         "--output", f"file:{tmp_path / 'r.mid'}", "--log-level", "warning"],
        input="a=1\n", capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(events) == 1 and events[0]["stream"] == "a"
    assert (tmp_path / "r.mid").stat().st_size > 0


class NoteSink(Sink):
    """Keeps the notes it is sent."""

    def __init__(self) -> None:
        super().__init__("notes")
        self.notes: list[NoteEvent] = []

    def note(self, event: NoteEvent) -> None:
        self.notes.append(event)

    def _send(self, msg: mido.Message, time: float) -> None:
        pass


def live_rhythm(values: np.ndarray, rate: float, seed: int,
                overrides: dict[str, object] | None = None) -> list[NoteEvent]:
    """The daemon's live path with ``--rhythm model`` (engine, rhythm driver, shipped
    temporal model, scheduler), fed ``rate`` rows per second on a virtual-time loop; the
    data notes it plays."""
    loop = VirtualTimeLoop()
    config = load_config(None, {"model.rhythm": "model", "model.seed": seed,
                                **(overrides or {})})
    stepper, encoding = load_temporal_model(config)
    conductor = Conductor(config, stepper, encoding)
    sink = NoteSink()
    scheduler = Scheduler(loop, [sink])
    engine = Engine(conductor, scheduler, loop,
                    rhythm=RhythmDriver(conductor, scheduler, loop))

    async def feed() -> None:
        origin = loop.time()
        for i, v in enumerate(values):
            await asyncio.sleep(max(0.0, origin + i / rate - loop.time()))
            engine.feed(Sample("feed", loop.time(), float(v)))
        await engine.drain()
        engine.cancel()

    try:
        loop.run_until_complete(feed())
    finally:
        loop.close()
    return [n for n in sink.notes if n.source == "data"]


@pytest.mark.parametrize("seed", [3, 8, 10])
def test_live_model_rhythm_never_hides_an_accent(seed: int) -> None:
    """16 spikes in noise at 20 rows/s (bench/listen.py's fast feed): the temporal model's
    long gaps fold many samples into one note, yet every spike is heard accented, at the
    accent velocity, as its own note (seeds whose gaps once folded two spikes into one)."""
    rng = np.random.default_rng(11)
    x = rng.normal(0, 1, 400)
    spikes = [int(a) for a in np.linspace(40, 390, 16)]
    for a in spikes:
        x[a] = 12.0 + rng.random()
    notes = live_rhythm(x, 20.0, seed)
    assert len(notes) < 0.5 * len(x)  # the model's gaps folded samples
    accented = {n.value: n for n in notes if n.accent}
    assert {float(x[a]) for a in spikes} <= set(accented)
    assert all(n.velocity == 127 for n in accented.values())


# -- the shipped temporal model plays varied rhythm (issue 9 item 3) -----------------------

#: Spikes injected into the 300-sample series: they must still be accented.
SPIKES = (60, 110, 160, 210, 260)


def series_300() -> np.ndarray:
    """A slow sine with noise and five spikes, 300 samples."""
    rng = np.random.default_rng(9)
    t = np.arange(300, dtype=float)
    x = 10 * np.sin(2 * np.pi * t / 100) + rng.normal(0, 0.3, 300)
    for a in SPIKES:
        x[a] += 40.0
    return x


def beats_of(gaps: np.ndarray, seconds_per_beat: float) -> np.ndarray:
    """Gaps in seconds -> the grid values (beats) they are, NaN where none is (a rest)."""
    grid = np.array(BEAT_GRID)
    beats = np.asarray(gaps) / seconds_per_beat
    nearest = grid[np.abs(beats[:, None] - grid[None, :]).argmin(axis=1)]
    return np.where(np.abs(beats - nearest) < 1e-3, nearest, np.nan)


def check_varied(beats: np.ndarray) -> None:
    """At least 3 distinct gaps, none on more than 60% of the notes."""
    values, counts = np.unique(beats, return_counts=True)
    assert len(values) >= 3, dict(zip(values.tolist(), counts.tolist(), strict=True))
    assert counts.max() <= 0.6 * beats.size, dict(zip(values.tolist(), counts.tolist(),
                                                       strict=True))


def test_render_with_the_shipped_model_plays_varied_rhythm_the_data_its_pitch() -> None:
    """Default settings but rhythm = model: 300 samples, 300 notes; varied gaps, the data
    still sets the pitch (the model moves some notes, the contour stays) and the spikes
    are accented at the accent velocity."""
    config = load_config(None, {"model.rhythm": "model"})
    values = series_300()
    notes = [n for n in render_notes(config, Series("s", values, list(range(300)), {}), [])
             if getattr(n, "source", "data") == "data"]
    assert len(notes) == 300
    beats = beats_of(np.diff([n.start for n in notes]), 0.5)
    assert not np.isnan(beats).any()  # render: every gap is the model's
    check_varied(beats)
    durations = np.array([n.duration for n in notes])
    assert len(set(durations.round(6).tolist())) >= 3
    clean = np.array([i for i in range(300) if i not in SPIKES])
    pitches = np.array([n.pitch for n in notes], dtype=float)
    assert np.corrcoef(values[clean], pitches[clean])[0, 1] > 0.8
    accented = [i for i, n in enumerate(notes) if n.accent]
    assert set(SPIKES) <= set(accented)
    assert all(notes[i].velocity == config.accent.velocity for i in SPIKES)
    assert len(accented) <= len(SPIKES) + 3


@pytest.mark.slow
@pytest.mark.alone  # fed at its pace: a neighbour's load makes rests of late samples
def test_live_daemon_with_the_shipped_model_plays_varied_rhythm() -> None:
    """The real daemon, --rhythm model, the 300-sample series fed at up to 25 rows/s (faster
    than most of the model's onsets at 240 bpm): each note plays what arrived since the
    last, its onset where the model's gap put it (varied); the data sets the pitch; the
    spikes are accented."""
    tempo, interval = 240.0, 0.04
    values = series_300()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamsonic", "--rhythm", "model", "--output", "events",
         "--set", f"music.tempo={tempo}", "--log-level", "info"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stderr is not None
    try:
        while "ready" not in proc.stderr.readline():  # the model loads before it reads
            assert proc.poll() is None
        for v in values:
            proc.stdin.write(f"{v}\n")
            proc.stdin.flush()
            time.sleep(interval)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    events = [e for e in map(json.loads, out.splitlines()) if e.get("source", "data") == "data"]
    assert len(events) >= 50  # about 2 rows a note: most onsets find a sample waiting
    beats = beats_of(np.diff([float(e["start"]) for e in events]), 60.0 / tempo)
    on_grid = beats[~np.isnan(beats)]  # the others follow a rest (no sample had arrived)
    assert on_grid.size >= 0.8 * beats.size
    check_varied(on_grid)
    # the daemon counts the temporal model's notes (its stats line and notes_played)
    assert f"stopped: 300 samples, {len(out.splitlines())} notes" in err
    # the pitch follows the data as the daemon places it (its rolling window decides where
    # a value sits, so the raw values correlate less: about 0.6 to 0.97 from run to run)
    pitch = np.array([int(e["pitch"]) for e in events], dtype=float)
    placed = np.array([float(e["normalized"]) for e in events])
    assert np.corrcoef(placed, pitch)[0, 1] > 0.9
    spike_values = {float(values[a]) for a in SPIKES}
    accented = {float(e["value"]) for e in events if e["accent"]}
    assert len(accented & spike_values) >= 4


def test_live_model_rhythm_counts_the_samples_it_folds() -> None:
    """The stop line adds up with ``--rhythm model`` too: samples = notes + folded (the
    temporal model's gaps fold the samples that arrive meanwhile into its next note; they
    had been in no count)."""
    res = subprocess.run(
        [sys.executable, "-m", "streamsonic", "run", "--rhythm", "model", "--output",
         "events", "--device", "cpu"],
        input="".join(f"{i}\n" for i in range(1, 41)), capture_output=True, text=True,
        timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    notes = len(res.stdout.splitlines())
    stop = next(line for line in res.stderr.splitlines() if "stopped:" in line)
    assert "40 samples" in stop, stop
    counts = dict(kv.split("=") for kv in stop.split("streams ")[1].split(";")[0].split(", ")
                  if "=" in kv)
    assert notes < 40  # (the model's gaps folded samples)
    assert notes + int(counts.get("folded", 0)) + sum(
        int(v) for k, v in counts.items() if k.startswith("dropped.")) == 40, stop
