"""How musical the played melody is, and how faithful to the data, series by series.

Plays each series through the real renderer (``streamsonic.render.render_notes``: the
conductor, scheduler and an events sink, exactly what ``streamsonic render`` runs), at the
default settings except ``normalize.render_scope = "rolling"`` (each value placed against
its rolling window, exactly as the daemon places it; ``--scope global`` for render's own
default), and prints one table. Per series:

* ``logP``: mean log-probability per note of the played melody under the shipped pitch
  model (``weights/pitch.pt``), each note predicted from the notes played before it (one
  persistent state over the whole melody, as the daemon steps; the first note is not
  scored); a pitch the model does not know counts as the nearest class of its pitch class;
* ``rep``: repeated notes (an interval of 0), ``step``: stepwise motion (1 or 2 semitones),
  ``leap>8ve``: leaps over an octave, in percent of the melody's intervals;
* ``pc H``: pitch-class entropy in bits (12 pitch classes: at most 3.58; a major scale
  used evenly: 2.81);
* ``model``: notes the model added between data notes (``"source": "model"``), in percent
  of all notes;
* fidelity, on the data notes alone: ``rho``, the median Spearman(value, pitch) over
  sliding 30-sample windows (``bench/listen.py``'s ``local_rho``, the measure of issue
  "Hear what matters"), and ``near``, the share of data notes within 2 semitones of the
  data's own pitch (the note influence 1 plays: the value quantized to the scale).

The last row is the reference: the shipped model's held-out Clementi pieces (the
validation split stored in the checkpoint), measured the same way. The targets of issue
"Make the model earn its place" follow the table (logP >= -2.6, rep <= 15%, step >= 45%,
leap>8ve <= 2%, rho >= 0.8 on every series), then the same means at influence 0, 0.5 and 1.
Usage (about a minute)::

    .venv/bin/python bench/musicality.py [--scope rolling|global] [--only TEXT]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.listen import local_rho, real_series, synthetic_series  # noqa: E402
from streamsonic.config import Config, apply_overrides, load_config  # noqa: E402
from streamsonic.encoding import PitchEncoding  # noqa: E402
from streamsonic.events import NoteEvent  # noqa: E402
from streamsonic.model.checkpoint import default_weights, load_checkpoint  # noqa: E402
from streamsonic.model.stepper import PitchStepper, make_stepper  # noqa: E402
from streamsonic.render import Series, render_notes  # noqa: E402

CLEMENTI = Path(__file__).resolve().parents[2] / "shared" / "data" / "clementi"
#: The targets at the default settings (issue "Make the model earn its place").
TARGETS = {"logp": -2.6, "rep": 15.0, "step": 45.0, "leap": 2.0, "rho": 0.8}


def extra_series(n: int = 600, seed: int = 9) -> dict[str, np.ndarray]:
    """Kinds ``bench/listen.py`` lacks: a clean sine, level steps (a status that holds a
    value for 40 samples, then another: the data is flat), a heavy (Student t) tail."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=float)
    levels = np.round(rng.normal(0, 5, n // 40 + 1)).repeat(40)[:n]
    return {
        "syn:sine": np.sin(2 * np.pi * t / 40),
        "syn:steps": levels,
        "syn:heavy tail (t2)": rng.standard_t(2, n),
    }


def all_series() -> dict[str, np.ndarray]:
    """Every series the benchmark plays: the shared ones, matplotlib's, synthetic kinds."""
    return {**real_series(), **synthetic_series(), **extra_series()}


# -- measures ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PitchModel:
    """The shipped pitch model, for scoring melodies."""

    stepper: PitchStepper
    encoding: PitchEncoding

    @classmethod
    def shipped(cls) -> PitchModel:
        ckpt = load_checkpoint(default_weights("pitch"), kind="pitch")
        return cls(make_stepper(ckpt.pitch_network(), "cpu"), PitchEncoding(ckpt.classes))

    def log_p(self, pitches: Sequence[int]) -> float:
        """Mean log-probability (nats) of each note after the first, given those before."""
        if len(pitches) < 2:
            return math.nan
        arr = np.asarray(pitches, dtype=np.int64)
        targets = self.encoding.nearest_class_for(arr)
        inputs = np.asarray(self.encoding.input_for_index(targets), dtype=np.float64)
        state = self.stepper.initial_state(1)
        total = 0.0
        for i in range(len(arr) - 1):
            logits, state = self.stepper.step(inputs[i:i + 1], state)
            row = logits[0].astype(np.float64)
            row = row - row.max()
            total += float(row[targets[i + 1]] - math.log(np.exp(row).sum()))
        return total / (len(arr) - 1)


@dataclass
class Shape:
    """A melody's shape and its fit to the model and the data."""

    notes: int
    logp: float
    rep: float  # % of intervals
    step: float
    leap: float
    entropy: float  # bits
    model_pct: float = 0.0
    rho: float = math.nan
    near: float = math.nan  # % of data notes within 2 semitones of influence 1's note


def shape(pitches: Sequence[int], model: PitchModel) -> Shape:
    """Interval shares and pitch-class entropy of a melody, and its logP under ``model``."""
    arr = np.asarray(pitches, dtype=np.int64)
    iv = np.abs(np.diff(arr))
    n = max(len(iv), 1)
    counts = np.bincount(arr % 12, minlength=12).astype(float)
    prob = counts[counts > 0] / counts.sum()
    return Shape(
        notes=len(arr),
        logp=model.log_p(arr.tolist()),
        rep=100.0 * float(np.sum(iv == 0)) / n,
        step=100.0 * float(np.sum((iv >= 1) & (iv <= 2))) / n,
        leap=100.0 * float(np.sum(iv > 12)) / n,
        entropy=float(-(prob * np.log2(prob)).sum()),
    )


def is_data(note: NoteEvent | dict[str, Any]) -> bool:
    """Whether a note is a data note (``"source": "data"``; older notes have no source)."""
    source = note.get("source", "data") if isinstance(note, dict) else getattr(
        note, "source", "data")
    return source == "data"


def play(config: Config, name: str, values: np.ndarray) -> list[NoteEvent]:
    """The notes ``streamsonic render`` plays for ``values`` (no output written)."""
    series = Series(name, np.asarray(values, dtype=np.float64), list(range(len(values))), {})
    return render_notes(config, series, [])


def measure(config: Config, reference: Config, name: str, values: np.ndarray,
            model: PitchModel) -> Shape:
    """Play ``values`` at ``config`` and judge it; ``reference`` is the same at influence 1."""
    notes = play(config, name, values)
    data = [n for n in notes if is_data(n)]
    if len(data) != len(values):
        raise SystemExit(f"{name}: {len(data)} data notes for {len(values)} values")
    quantized = np.array([n.pitch for n in play(reference, name, values) if is_data(n)])
    out = shape([n.pitch for n in notes], model)
    pitches = np.array([n.pitch for n in data])
    out.model_pct = 100.0 * (len(notes) - len(data)) / len(notes)
    out.rho = local_rho(np.asarray(values, dtype=float), pitches.astype(float))
    out.near = 100.0 * float(np.mean(np.abs(pitches - quantized) <= 2))
    return out


def clementi_reference(model: PitchModel) -> Shape | None:
    """The same measures on the held-out pieces of the shipped model's split (all of them
    as one melody each; shares and logP pooled over the pieces)."""
    if not CLEMENTI.is_dir():
        return None
    from streamsonic.train.dataset import load_corpus  # noqa: PLC0415 - mido, only here

    ckpt = load_checkpoint(default_weights("pitch"), kind="pitch")
    held_out = set(ckpt.meta["data"]["split"]["val"])
    pieces = [m for m in load_corpus(CLEMENTI).melodies if m.name in held_out]
    shapes = [shape(m.pitches.tolist(), model) for m in pieces]
    weights = np.array([s.notes - 1 for s in shapes], dtype=float)

    def pooled(attr: str) -> float:
        return float(np.average([getattr(s, attr) for s in shapes], weights=weights))

    all_pitches = np.concatenate([m.pitches for m in pieces])
    whole = shape(all_pitches.tolist(), model)
    return Shape(notes=int(weights.sum() + len(shapes)), logp=pooled("logp"), rep=pooled("rep"),
                 step=pooled("step"), leap=pooled("leap"), entropy=whole.entropy)


def settings(scope: str, influence: float | None = None) -> Config:
    """The default configuration, placed as the daemon places values (``scope``)."""
    overrides: dict[str, Any] = {"normalize.render_scope": scope}
    if influence is not None:
        overrides["model.influence"] = influence
    return apply_overrides(load_config(None), overrides)


def misses(s: Shape) -> list[str]:
    """The targets ``s`` misses."""
    out = []
    if not s.logp >= TARGETS["logp"]:
        out.append("logP")
    if not s.rep <= TARGETS["rep"]:
        out.append("rep")
    if not s.step >= TARGETS["step"]:
        out.append("step")
    if not s.leap <= TARGETS["leap"]:
        out.append("leap")
    if not s.rho >= TARGETS["rho"]:
        out.append("rho")
    return out


def fmt(name: str, s: Shape, check: bool = True) -> str:
    rho = "" if math.isnan(s.rho) else f"{s.rho:.2f}"
    near = "" if math.isnan(s.near) else f"{s.near:.0f}%"
    flag = (", ".join(misses(s)) or "all met") if check else ""
    return (f"| {name} | {s.notes} | {s.model_pct:.0f}% | {s.logp:.2f} | {s.rep:.0f}% | "
            f"{s.step:.0f}% | {s.leap:.1f}% | {s.entropy:.2f} | {rho} | {near} | {flag} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scope", choices=("rolling", "global"), default="rolling",
                        help="place values as the daemon does (rolling, default) or as "
                             "render does by default (global)")
    parser.add_argument("--only", metavar="TEXT", help="only series whose name contains TEXT")
    parser.add_argument("--no-sweep", action="store_true",
                        help="leave out the means at influence 0, 0.5 and 1")
    args = parser.parse_args()
    model = PitchModel.shipped()
    series = all_series()
    if args.only:
        series = {k: v for k, v in series.items() if args.only in k}
    default = settings(args.scope)
    reference = settings(args.scope, 1.0)
    print(f"influence {default.model.influence:g}, scale {default.music.key} "
          f"{default.music.scale}, range {default.music.low}..{default.music.high}, "
          f"placement {args.scope}\n")
    print("| series | notes | model | logP | rep | step | leap>8ve | pc H | rho (30) | near "
          "| targets missed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = {}
    for name, x in series.items():
        rows[name] = measure(default, reference, name, x, model)
        print(fmt(name, rows[name]), flush=True)
    ref = clementi_reference(model)
    if ref is not None:
        print(fmt("Clementi held-out (reference)", ref, check=False))
    met = sum(not misses(s) for s in rows.values())
    print(f"\ntargets (logP >= {TARGETS['logp']}, rep <= {TARGETS['rep']:g}%, step >= "
          f"{TARGETS['step']:g}%, leap>8ve <= {TARGETS['leap']:g}%, rho >= {TARGETS['rho']}) "
          f"met on {met}/{len(rows)} series")
    if args.no_sweep:
        return 0
    print("\n| influence | logP | rep | step | leap>8ve | pc H | model | rho min | near |")
    print("|---|---|---|---|---|---|---|---|---|")
    for influence in (0.0, 0.5, default.model.influence, 1.0):
        shapes = (list(rows.values()) if influence == default.model.influence else
                  [measure(settings(args.scope, influence), reference, k, v, model)
                   for k, v in series.items()])

        def mean(attr: str, shapes: list[Shape] = shapes) -> float:
            return float(np.mean([getattr(s, attr) for s in shapes]))

        print(f"| {influence:g} | {mean('logp'):.2f} | {mean('rep'):.0f}% | "
              f"{mean('step'):.0f}% | {mean('leap'):.1f}% | {mean('entropy'):.2f} | "
              f"{mean('model_pct'):.0f}% | {min(s.rho for s in shapes):.2f} | "
              f"{mean('near'):.0f}% |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
