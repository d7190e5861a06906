"""rhythm = "model": the temporal model decides onsets, durations and loudness."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from streamsonic.config import load_config
from streamsonic.model.temporal import BEAT_GRID
from streamsonic.render import Series, render_notes

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
