"""How varied the temporal model's rhythm is, per ``model.rhythm_temperature``.

    .venv/bin/python bench/rhythm.py [TEMPERATURE ...]     (default: 0 1 1.2 1.3 1.5)

Renders 300 samples with ``--rhythm model`` (one note each, the shipped temporal model,
default settings otherwise) for four series (the sine with five spikes of
tests/test_rhythm.py, Gaussian noise, a random walk, a staircase of ten steps) and seeds
0..3, snaps each gap to the beat grid and prints, per render, the share of the most common
gap and the number of distinct gaps, then per temperature the min/median/max share, how
many renders put one gap on more than 60% of their notes (issue 9's bar) and the fewest
distinct gaps. Deterministic: no timing is measured.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamsonic.config import load_config
from streamsonic.render import Series, render_notes
from tests.test_rhythm import beats_of, series_300


def series() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"sine+spikes": series_300(), "noise": rng.normal(0, 1, 300),
            "walk": np.cumsum(rng.normal(0, 1, 300)),
            "steps": np.repeat(rng.integers(0, 5, 10), 30).astype(float)}


def main() -> None:
    temperatures = [float(t) for t in sys.argv[1:]] or [0.0, 1.0, 1.2, 1.3, 1.5]
    for temperature in temperatures:
        tops, distinct = [], []
        for name, values in series().items():
            for seed in range(4):
                config = load_config(None, {"model.rhythm": "model", "model.seed": seed,
                                            "model.rhythm_temperature": temperature})
                notes = [n for n in render_notes(config, Series(name, values,
                                                                list(range(300)), {}), [])
                         if getattr(n, "source", "data") == "data"]
                beats = beats_of(np.diff([n.start for n in notes]), 0.5)
                gaps, counts = np.unique(beats, return_counts=True)
                tops.append(counts.max() / counts.sum())
                distinct.append(len(gaps))
                print(f"  T={temperature:g} {name:<12} seed {seed}: most common gap "
                      f"{gaps[counts.argmax()]:.3g} beats on {tops[-1]:.0%}, "
                      f"{len(gaps)} distinct", flush=True)
        share = np.array(tops)
        print(f"T={temperature:g}: most common gap's share min/median/max {share.min():.2f}/"
              f"{np.median(share):.2f}/{share.max():.2f}; over 60% in "
              f"{int((share > 0.6).sum())} of {share.size}; fewest distinct gaps "
              f"{min(distinct)}", flush=True)


if __name__ == "__main__":
    main()
