"""NAB: the live mapping and the accents on real, labelled series nobody here tuned for.

    .venv/bin/python bench/nab.py --nab PATH [--rev REV] [--only TEXT] [--set KEY=VALUE]

The Numenta Anomaly Benchmark (https://github.com/numenta/NAB, MIT licence; not shipped
here: ``git clone https://github.com/numenta/NAB`` and pass its folder, or set ``NAB``) holds
58 series of server metrics (AWS CloudWatch CPU, network, disk), traffic, ad exchange,
tweet volumes, machine temperatures and a few artificial ones, 1,127 to 22,695 samples
each, with labelled anomalies and a window around each label. Every series plays through
the code the daemon runs (``render`` with ``normalize.render_scope = "rolling"``: the
rolling normalizer, the scorer, the conductor, one data note per sample at the defaults).
Per series:

* ``rho``: the median Spearman correlation of value and data-note pitch over sliding
  30-sample windows (issue 8's local contour; ``bench/listen.py``'s measure);
* ``false``: accented samples outside the labelled windows, after each series' first 200
  samples, as a share of those samples (an accent there may be a real event nobody
  labelled: NAB labels few);
* ``windows``: labelled windows with at least one accent; ``labels``: labelled points with
  an accent within 3 samples of them.

``--rev REV`` measures REV too, in a git worktree, with this file's code, and prints the
two side by side. Prints one table, then a summary line per revision.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from bench import listen
else:  # this checkout's bench/listen.py (local_rho, worktree), also in a revision's run
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import listen

REPO = Path(__file__).resolve().parents[1]
#: Samples at the start of each series left out of the false-accent share (warm-up).
SETTLE = 200
#: An accent this many samples either side of a labelled point counts for it.
NEAR = 3


@dataclass
class Labelled:
    """One NAB series: its values, its labelled windows and points (sample indexes)."""

    key: str
    values: np.ndarray
    windows: list[tuple[int, int]]
    labels: list[int]


def load(nab: Path, only: str = "") -> list[Labelled]:
    """The labelled series of the NAB checkout at ``nab`` (keys containing ``only``)."""
    windows = json.loads((nab / "labels" / "combined_windows.json").read_text())
    labels = json.loads((nab / "labels" / "combined_labels.json").read_text())
    out = []
    for key in sorted(windows):
        if only not in key:
            continue
        with (nab / "data" / key).open(newline="") as f:
            rows = list(csv.DictReader(f))
        stamps = [r["timestamp"] for r in rows]
        values = np.array([float(r["value"]) for r in rows])

        def index(stamp: str, stamps: list[str] = stamps) -> int:
            # labels carry microseconds ("2014-02-19 10:50:00.000000"), the data not
            return int(np.searchsorted(stamps, stamp.split(".", maxsplit=1)[0]))

        out.append(Labelled(key, values, [(index(a), index(b)) for a, b in windows[key]],
                            [index(t) for t in labels[key]]))
    return out


def measure(nab: Path, only: str, settings: list[str] | None = None
            ) -> dict[str, dict[str, Any]]:
    """Per series: rho, false accents (count, samples), windows and labels caught
    (``settings``: ``KEY=VALUE`` config overrides, as ``--set`` takes them)."""
    from streamsonic.config import load_config, parse_override  # noqa: PLC0415
    from streamsonic.render import Series, render_notes  # noqa: PLC0415

    config = load_config(None, {"model.device": "cpu", "daemon.log_level": "warning",
                                "normalize.render_scope": "rolling",
                                **dict(parse_override(t) for t in settings or [])})
    out: dict[str, dict[str, Any]] = {}
    for s in load(nab, only):
        notes = render_notes(config, Series(s.key, s.values, list(range(len(s.values))), {}),
                             [])
        data = [n for n in notes if n.source == "data"]
        pitch = np.array([n.pitch for n in data], dtype=float)
        accent = np.array([n.accent for n in data])
        inside = np.zeros(len(s.values), dtype=bool)
        for a, b in s.windows:
            inside[a:b + 1] = True
        outside = ~inside
        outside[:SETTLE] = False
        out[s.key] = {
            "rho": listen.local_rho(s.values, pitch),
            "false": int(accent[outside].sum()), "samples": int(outside.sum()),
            "windows": [sum(bool(accent[a:b + 1].any()) for a, b in s.windows),
                        len(s.windows)],
            "labels": [sum(bool(accent[max(0, p - NEAR):p + NEAR + 1].any())
                           for p in s.labels), len(s.labels)],
        }
    return out


def summary(result: dict[str, dict[str, Any]]) -> str:
    """One line: contour, false accents, windows and labels caught."""
    rho = np.array([r["rho"] for r in result.values()], dtype=float)
    rho = rho[~np.isnan(rho)]  # (a flat series has no contour)
    false = np.array([100.0 * r["false"] / max(r["samples"], 1) for r in result.values()])
    windows = [sum(r["windows"][j] for r in result.values()) for j in (0, 1)]
    labels = [sum(r["labels"][j] for r in result.values()) for j in (0, 1)]
    return (f"{len(result)} series: rho >= 0.8 on {int((rho >= 0.8).sum())} of {len(rho)} "
            f"(mean {rho.mean():.3f}, min {rho.min():.2f}); false accents {false.mean():.2f}% "
            f"mean, {int((false > 1.0).sum())} series over 1%; windows with an accent "
            f"{windows[0]}/{windows[1]}; labels accented within {NEAR} samples "
            f"{labels[0]}/{labels[1]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nab", type=Path, default=os.environ.get("NAB"),
                        help="a checkout of github.com/numenta/NAB (default: $NAB)")
    parser.add_argument("--rev", metavar="REV", help="also measure this git revision")
    parser.add_argument("--only", default="", metavar="TEXT",
                        help="only series whose path contains TEXT")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run (as streamsonic --set takes "
                             "it), e.g. accent.schedule=4")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.nab is None or not (args.nab / "labels" / "combined_windows.json").is_file():
        parser.error("--nab must name a checkout of https://github.com/numenta/NAB (its "
                     "data/ and labels/ folders); clone it and pass its path or set NAB")
    if args.json:  # (a revision's run, in a subprocess)
        print(json.dumps(measure(args.nab, args.only, args.set)))
        return 0
    results: list[tuple[str, dict[str, dict[str, Any]]]] = []
    if args.rev:
        sets = [a for t in args.set for a in ("--set", t)]
        results.append((args.rev, listen.json_at(
            args.rev, __file__, ["--nab", str(args.nab), "--only", args.only, *sets])))
    results.append(("now", measure(args.nab, args.only, args.set)))
    print("| series | rev | rho | false accents | windows | labels +-3 |")
    print("|---|---|---|---|---|---|")
    for key in results[-1][1]:
        for rev, result in results:
            r = result.get(key)
            if r is None:
                continue
            print(f"| {key} | {rev} | {r['rho']:.2f} | "
                  f"{100.0 * r['false'] / max(r['samples'], 1):.2f}% | "
                  f"{r['windows'][0]}/{r['windows'][1]} | {r['labels'][0]}/{r['labels'][1]} |")
    print()
    for rev, result in results:
        print(f"{rev}: {summary(result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
