"""Baselines on the same split: "repeat the previous note" and "most frequent note".

Both are evaluated on exactly the transitions the model is validated on (every
``note i -> note i+1`` of each validation piece); "most frequent" is counted on the
training pieces only. For the temporal model each part (pitch, gap, duration, velocity)
gets the same two baselines; velocity's "most frequent" is the training median.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Targets = dict[str, np.ndarray]

_CLASS_PARTS = {"pitch": "accuracy", "gap": "gap_accuracy", "duration": "duration_accuracy"}


def baselines(train: Sequence[Targets], val: Sequence[Targets]) -> dict[str, dict[str, float]]:
    """``{"repeat_previous": {...}, "most_frequent": {...}}`` with the model's metric names."""
    repeat: dict[str, float] = {}
    frequent: dict[str, float] = {}
    for part, metric in _CLASS_PARTS.items():
        if part not in val[0]:
            continue
        prev = np.concatenate([t[part][:-1] for t in val])
        nxt = np.concatenate([t[part][1:] for t in val])
        counts = np.bincount(np.concatenate([t[part][1:] for t in train]))
        repeat[metric] = float(np.mean(prev == nxt)) if nxt.size else 0.0
        frequent[metric] = float(np.mean(nxt == counts.argmax())) if nxt.size else 0.0
    if "velocity" in val[0]:
        prev = np.concatenate([t["velocity"][:-1] for t in val]) * 127
        nxt = np.concatenate([t["velocity"][1:] for t in val]) * 127
        median = float(np.median(np.concatenate([t["velocity"][1:] for t in train]) * 127))
        repeat["velocity_mae"] = float(np.mean(np.abs(prev - nxt))) if nxt.size else 0.0
        frequent["velocity_mae"] = float(np.mean(np.abs(median - nxt))) if nxt.size else 0.0
    return {"repeat_previous": repeat, "most_frequent": frequent}
