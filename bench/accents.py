"""Accents in process: recall per anomaly kind and false accents, over several seeds, now
and at an earlier commit in the same run.

    .venv/bin/python bench/accents.py [--seeds 6] [--rev REV]

``bench/listen.py`` runs the live CLI on one seed per series; this runs the conductor's
``observe`` (what gives every note its ``anomaly`` and ``accent``, the code the daemon runs)
on more seeds, fast enough to judge a change to the score. Series: ``bench/listen.py``'s 32
(the research's four, matplotlib's four, eight synthetic kinds, sixteen public-domain series
shipped in ``bench/data/public``: sunspots, weekly CO2, El Nino, the Nile, six US quarterly
macro series, four monthly US employment series, daily Seattle temperature and rain).
Anomalies are injected as ``bench/listen.py`` does (a
spike of 8 typical steps, a 3-sample dropout, a shift of 8 steps, a 15-sample burst of
noise of 5 steps; 8 per kind and series, positions drawn per seed, the 8 into one copy of
the series); recall: the share with an accent on one of their first 3 samples. False
accents: accented samples of the clean series. ``--alone`` injects each anomaly by itself
and scores the series up to 3 samples after it: the 8 bursts of a series together put
clipped burst residuals into a quarter of a 128-sample window, which widens the spread
that judges the next (a stream's anomalies are rarely that close together).
"Separable": the series whose own steps reach an injected spike's size at most 1% of the
time (see ``bench/listen.py``).

``--rev REV`` measures REV too, in a git worktree, with this file's code (its
``streamsonic`` on the path first) and prints the two side by side. Prints one table.

``--reference`` adds what a reference detector catches of the bursts injected into the two
Gaussian synthetic series, where the truth is known: it knows each series' kind and true
noise (white noise: the residual is the value; the random walk: the step) and tests the
sum of the squares of the last 3 residuals, the most powerful test of a variance increase
for independent Gaussian residuals, its threshold set for a share of false alarms on a
long clean series. It shows how much of the 90% burst target the injection allows at all
within 3 samples, at a given false-accent rate.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from bench import listen
else:  # this checkout's bench/listen.py (the series, the injections), also in a revision's
    # run, whose streamsonic comes first on the path (PYTHONPATH)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import listen

REPO = Path(__file__).resolve().parents[1]
KINDS = listen.KINDS


def measure(seeds: int, alone: bool = False) -> dict[str, Any]:
    """Per series: false accents on the clean series, hits per kind, separability.
    ``alone``: each anomaly injected by itself, the series scored up to 3 samples after
    it (else the 8 of a kind together)."""
    from streamsonic.conductor import Conductor  # noqa: PLC0415
    from streamsonic.config import load_config  # noqa: PLC0415
    from streamsonic.events import Sample  # noqa: PLC0415
    from streamsonic.model.loader import load_pitch_model  # noqa: PLC0415

    config = load_config(None, {"model.device": "cpu", "daemon.log_level": "warning"})
    stepper, encoding, _ = load_pitch_model(config.model)

    def accents(values: np.ndarray) -> list[bool]:
        conductor = Conductor(config, stepper, encoding)
        return [conductor.observe(Sample("s", float(i), float(v))).accent
                for i, v in enumerate(values)]

    series = listen.all_series()
    out: dict[str, Any] = {}
    for name, x in series.items():
        own = float(np.mean(np.abs(np.diff(x)) >= 8 * listen.typical_step(x)))
        clean = accents(x)
        hits = {k: [0, 0] for k in KINDS}
        for seed in range(100, 100 + seeds):
            rng = np.random.default_rng(seed)
            at = {k: [a for a in listen.onsets(len(x), rng) if a < len(x) - 3] for k in KINDS}
            for k in KINDS:
                if alone:
                    for a in at[k]:
                        acc = accents(listen.inject(x, k, [a], rng)[:a + 3])
                        hits[k][0] += any(acc[a:a + 3])
                        hits[k][1] += 1
                elif at[k]:
                    acc = accents(listen.inject(x, k, at[k], rng))
                    hits[k][0] += sum(any(acc[a:a + 3]) for a in at[k])
                    hits[k][1] += len(at[k])
        out[name] = {"false": sum(clean), "notes": len(clean), "hits": hits,
                     "separable": own <= 0.01}
    return out


def summary(result: dict[str, Any], separable: bool = False) -> list[str]:
    """Recall per kind, false accents mean / max / series above 1%."""
    rows = [r for r in result.values() if r["separable"] or not separable]
    cells = []
    for k in KINDS:
        hit, total = (sum(r["hits"][k][j] for r in rows) for j in (0, 1))
        cells.append(f"{100.0 * hit / max(total, 1):.1f}%")
    false = [100.0 * r["false"] / r["notes"] for r in rows]
    cells.append(f"{np.mean(false):.2f}% / {max(false):.1f}% / "
                 f"{sum(f > 1.0 for f in false)} of {len(rows)}")
    return cells


def reference_bursts(seeds: int, rates: tuple[float, ...] = (0.001, 0.01),
                     ) -> dict[str, dict[float, tuple[int, int]]]:
    """Bursts (as the bench injects them) caught within their first 3 samples by the
    reference detector (see the module), per Gaussian series and false-alarm rate."""
    series = listen.synthetic_series()
    rng = np.random.default_rng(12345)
    clean = rng.standard_normal(1_000_000)
    null = np.convolve(clean * clean, np.ones(3), "valid")  # the statistic, clean
    thresholds = {rate: float(np.quantile(null, 1.0 - rate)) for rate in rates}
    out: dict[str, dict[float, tuple[int, int]]] = {}
    for name, residual in (("syn:noise", lambda y: y),
                           ("syn:random walk", lambda y: np.diff(y, prepend=y[0]))):
        x = series[name]
        caught = dict.fromkeys(rates, 0)
        total = 0
        for seed in range(100, 100 + seeds):
            rng = np.random.default_rng(seed)
            # the same draws as measure(): onsets of every kind, then each kind's injection
            at = {k: [a for a in listen.onsets(len(x), rng) if a < len(x) - 3] for k in KINDS}
            for k in KINDS:
                y = listen.inject(x, k, at[k], rng)
                if k != "burst":
                    continue
                r = residual(y)
                stat = np.convolve(r * r, np.ones(3), "full")[:len(r)]  # the last 3
                total += len(at[k])
                for rate, threshold in thresholds.items():
                    caught[rate] += sum(bool((stat[a:a + 3] >= threshold).any())
                                        for a in at[k])
        out[name] = {rate: (caught[rate], total) for rate in rates}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=6, help="seeds per series (default 6)")
    parser.add_argument("--rev", metavar="REV", help="also measure this git revision")
    parser.add_argument("--reference", action="store_true",
                        help="also print what a reference detector catches of the bursts "
                             "on the Gaussian series (see above)")
    parser.add_argument("--alone", action="store_true",
                        help="inject each anomaly by itself (the series scored up to 3 "
                             "samples after it) instead of the 8 of a kind into one copy")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.json:  # (a revision's run, in a subprocess)
        print(json.dumps(measure(args.seeds, args.alone)))
        return 0
    results: list[tuple[str, dict[str, Any]]] = []
    if args.rev:
        results.append((args.rev, listen.json_at(
            args.rev, __file__, ["--seeds", str(args.seeds)] + ["--alone"] * args.alone)))
    results.append(("now", measure(args.seeds, args.alone)))
    count = len(results[-1][1])
    how = ("each alone in its series, scored up to 3 samples after it" if args.alone
           else "together in one copy of the series")
    print(f"accents in process ({count} series, {args.seeds} seeds, 8 anomalies of each kind "
          f"per series and seed, {how})")
    print(f"| series | rev | {' | '.join(KINDS)} | false accents mean / max / series > 1% |")
    print("|---|---|" + "---|" * (len(KINDS) + 1))
    for label, separable in (("all", False), ("separable", True)):
        for rev, result in results:
            print(f"| {label} | {rev} | {' | '.join(summary(result, separable))} |")
    print()
    print("false accents per series (accented samples of the clean series):")
    for name in results[-1][1]:
        print(f"  {name:22s} " + "  ".join(
            f"{rev}: {r[name]['false']}/{r[name]['notes']}" for rev, r in results
            if name in r))
    if args.reference:
        print()
        print("bursts caught within 3 samples: streamsonic (now) against the reference "
              "detector (the sum of squares of the last 3 true residuals) at a false-alarm "
              "rate per sample")
        now = results[-1][1]
        for name, by_rate in reference_bursts(args.seeds).items():
            hit, total = now[name]["hits"]["burst"]
            cells = [f"streamsonic {hit}/{total} ({100.0 * hit / total:.0f}%, "
                     f"{100.0 * now[name]['false'] / now[name]['notes']:.2f}% false)"]
            cells += [f"reference at {100.0 * rate:g}% false: {h}/{t} ({100.0 * h / t:.0f}%)"
                      for rate, (h, t) in by_rate.items()]
            print(f"  {name:16s} " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
