"""How varied the temporal model's rhythm is, per ``model.rhythm_temperature``.

    .venv/bin/python bench/rhythm.py [--live RATE] [TEMPERATURE ...]   (default: 0 1 1.2 1.3 1.5)

Plays 300 samples with ``--rhythm model`` (the shipped temporal model, default settings
otherwise) for four series (the sine with five spikes of tests/test_rhythm.py, Gaussian
noise, a random walk, a staircase of ten steps) and seeds 0..3, snaps each gap to the beat
grid and prints, per run, the share of the most common gap and the number of distinct
gaps, then per temperature the min/median/max share, how many runs put one gap on more
than 60% of their notes (issue 9's bar) and the fewest distinct gaps.

By default each series is rendered (``streamsonic render``: one note per sample, every gap
the model's). ``--live RATE`` runs the daemon's live path instead (engine, rhythm driver,
scheduler, on a virtual-time loop: the same code and timers, without waiting), fed RATE
rows per second: a note plays what arrived since the last one, a gap that is no grid value
(a rest until the next sample, or an accent, which plays at once) is left out of the shares
and counted apart. Deterministic: no timing is measured.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamsonic.config import load_config
from streamsonic.events import NoteEvent
from streamsonic.render import Series, render_notes
from tests.test_rhythm import beats_of, live_rhythm, series_300


def series() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"sine+spikes": series_300(), "noise": rng.normal(0, 1, 300),
            "walk": np.cumsum(rng.normal(0, 1, 300)),
            "steps": np.repeat(rng.integers(0, 5, 10), 30).astype(float)}


def notes_of(name: str, values: np.ndarray, seed: int, temperature: float,
             live: float | None) -> list[NoteEvent]:
    """The data notes of one run (rendered, or live at ``live`` rows per second)."""
    overrides: dict[str, object] = {"model.seed": seed,
                                    "model.rhythm_temperature": temperature}
    if live is not None:
        return live_rhythm(values, live, seed, overrides)
    config = load_config(None, {"model.rhythm": "model", **overrides})
    return [n for n in render_notes(config, Series(name, values, list(range(len(values))), {}),
                                    []) if n.source == "data"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--live", type=float, metavar="RATE",
                        help="the live path, fed RATE rows per second (default: render)")
    parser.add_argument("temperatures", type=float, nargs="*",
                        default=[0.0, 1.0, 1.2, 1.3, 1.5],
                        help="model.rhythm_temperature values to compare, one summary "
                             "each (default: 0 1 1.2 1.3 1.5)")
    args = parser.parse_args()
    seconds_per_beat = 60.0 / load_config(None).music.tempo
    for temperature in args.temperatures:
        tops, distinct = [], []
        for name, values in series().items():
            for seed in range(4):
                notes = notes_of(name, values, seed, temperature, args.live)
                beats = beats_of(np.diff([n.start for n in notes]), seconds_per_beat)
                on_grid = beats[~np.isnan(beats)]
                gaps, counts = np.unique(on_grid, return_counts=True)
                tops.append(counts.max() / counts.sum())
                distinct.append(len(gaps))
                print(f"  T={temperature:g} {name:<12} seed {seed}: {len(notes)} notes, most "
                      f"common gap {gaps[counts.argmax()]:.3g} beats on {tops[-1]:.0%}, "
                      f"{len(gaps)} distinct, {beats.size - on_grid.size} off the grid",
                      flush=True)
        share = np.array(tops)
        print(f"T={temperature:g}: most common gap's share min/median/max {share.min():.2f}/"
              f"{np.median(share):.2f}/{share.max():.2f}; over 60% in "
              f"{int((share > 0.6).sum())} of {share.size}; fewest distinct gaps "
              f"{min(distinct)}", flush=True)


if __name__ == "__main__":
    main()
