"""Baselines on the same split: "repeat the previous note" and "most frequent note".

Both are evaluated on exactly the transitions the model is validated on (every
``note i -> note i+1`` of each validation piece), with what they know counted on the
training pieces only. For the temporal model each part (pitch, gap, duration, velocity)
gets the same two baselines; velocity's "most frequent" is the training median.

Top-1 is the share of transitions a baseline gets right. Log-loss (mean negative log
probability of the true class, nats, the measure the model is trained on) needs a
distribution, so each baseline is made a probabilistic predictor fitted on the training
pieces, with add-one smoothing so no class has probability 0:

* **most frequent**: the training unigram ``u`` (its top-1 is the most frequent class);
* **repeat previous**: the previous class with the training repeat rate ``r`` (how often a
  note's class equals the one before), the other classes sharing ``1 - r`` in proportion
  to ``u`` (its top-1 is the previous class whenever ``r`` beats every other share).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Targets = dict[str, np.ndarray]

#: Part -> (top-1 metric name, log-loss metric name), as the model's metrics call them.
CLASS_PARTS = {"pitch": ("accuracy", "pitch_loss"), "gap": ("gap_accuracy", "gap_loss"),
               "duration": ("duration_accuracy", "duration_loss")}


def _class_baselines(train: Sequence[np.ndarray], val: Sequence[np.ndarray],
                     n_classes: int) -> tuple[dict[str, float], dict[str, float]]:
    """(repeat previous, most frequent): top-1 and log-loss of one part's classes."""
    prev = np.concatenate([v[:-1] for v in val]).astype(np.int64)
    nxt = np.concatenate([v[1:] for v in val]).astype(np.int64)
    if not nxt.size:
        return ({"top1": 0.0, "loss": 0.0}, {"top1": 0.0, "loss": 0.0})
    counts = np.bincount(np.concatenate([t[1:] for t in train]).astype(np.int64),
                         minlength=n_classes).astype(np.float64)
    unigram = (counts + 1.0) / (counts.sum() + n_classes)
    same = sum(int(np.sum(t[1:] == t[:-1])) for t in train)
    pairs = sum(max(t.size - 1, 0) for t in train)
    rate = (same + 1.0) / (pairs + 2.0)
    p_repeat = np.where(prev == nxt, rate, (1.0 - rate) * unigram[nxt]
                        / np.maximum(1.0 - unigram[prev], 1e-12))
    repeat = {"top1": float(np.mean(prev == nxt)), "loss": float(-np.mean(np.log(p_repeat)))}
    frequent = {"top1": float(np.mean(nxt == counts.argmax())),
                "loss": float(-np.mean(np.log(unigram[nxt])))}
    return repeat, frequent


def baselines(train: Sequence[Targets], val: Sequence[Targets],
              n_classes: dict[str, int] | None = None) -> dict[str, dict[str, float]]:
    """``{"repeat_previous": {...}, "most_frequent": {...}}`` with the model's metric names.

    ``n_classes`` gives each part's number of classes (for the smoothing); by default the
    largest class seen plus one.
    """
    repeat: dict[str, float] = {}
    frequent: dict[str, float] = {}
    for part, (top1, loss) in CLASS_PARTS.items():
        if part not in val[0]:
            continue
        seen = [t[part] for t in (*train, *val) if t[part].size]
        n = (n_classes or {}).get(part) or int(max(int(s.max()) for s in seen)) + 1
        r, f = _class_baselines([t[part] for t in train], [t[part] for t in val], n)
        repeat[top1], repeat[loss] = r["top1"], r["loss"]
        frequent[top1], frequent[loss] = f["top1"], f["loss"]
    if "velocity" in val[0]:
        prev = np.concatenate([t["velocity"][:-1] for t in val]) * 127
        nxt = np.concatenate([t["velocity"][1:] for t in val]) * 127
        median = float(np.median(np.concatenate([t["velocity"][1:] for t in train]) * 127))
        repeat["velocity_mae"] = float(np.mean(np.abs(prev - nxt))) if nxt.size else 0.0
        frequent["velocity_mae"] = float(np.mean(np.abs(median - nxt))) if nxt.size else 0.0
    return {"repeat_previous": repeat, "most_frequent": frequent}
