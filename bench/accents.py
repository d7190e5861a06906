"""Accents in process: recall per anomaly kind and false accents, over several seeds, now
and at an earlier commit in the same run.

    .venv/bin/python bench/accents.py [--seeds 6] [--rev REV]

``bench/listen.py`` runs the live CLI on one seed per series; this runs the conductor's
``observe`` (what gives every note its ``anomaly`` and ``accent``, the code the daemon runs)
on more seeds, fast enough to judge a change to the score. Series: ``bench/listen.py``'s 26
(the research's four, matplotlib's four, eight synthetic kinds, ten public-domain series
shipped in ``bench/data/public``: sunspots, weekly CO2, El Nino, the Nile, six US quarterly
macro series). Anomalies are injected as ``bench/listen.py`` does (a
spike of 8 typical steps, a 3-sample dropout, a shift of 8 steps, a 15-sample burst of
noise of 5 steps; 8 per kind and series, positions drawn per seed); recall: the share with an
accent on one of their first 3 samples. False accents: accented samples of the clean series.
"Separable": the series whose own steps reach an injected spike's size at most 1% of the
time (see ``bench/listen.py``).

``--rev REV`` measures REV too, in a git worktree, with this file's code (its
``streamsonic`` on the path first) and prints the two side by side. Prints one table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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


def measure(seeds: int) -> dict[str, Any]:
    """Per series: false accents on the clean series, hits per kind, separability."""
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
                if at[k]:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=6, help="seeds per series (default 6)")
    parser.add_argument("--rev", metavar="REV", help="also measure this git revision")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.json:  # (a revision's run, in a subprocess)
        print(json.dumps(measure(args.seeds)))
        return 0
    results: list[tuple[str, dict[str, Any]]] = []
    if args.rev:
        tree = Path(tempfile.mkdtemp(prefix="accents-")) / "rev"
        listen.worktree(args.rev, tree)
        try:
            command = [sys.executable, __file__, "--json", "--seeds", str(args.seeds)]
            env = {**os.environ, "PYTHONPATH": str(tree)}
            done = subprocess.run(command, env=env, capture_output=True, text=True,
                                  check=True)
            results.append((args.rev, json.loads(done.stdout)))
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(tree)], check=False, capture_output=True)
    results.append(("now", measure(args.seeds)))
    count = len(results[-1][1])
    print(f"accents in process ({count} series, {args.seeds} seeds, 8 anomalies of each kind "
          "per series and seed)")
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
