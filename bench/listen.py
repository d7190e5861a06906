"""What a listener on watch hears: contour, magnitude, accents, on real and synthetic series.

Runs the live path exactly as a user would (``streamsonic --output events`` on stdin, one
subprocess per series, every variant of a series as its own stream of JSON lines so that
all are played in one run) and prints one table, per series. Series: the research's four
(``../shared/data/seed-test-series``), four real series that matplotlib ships, eight
seeded synthetic kinds and sixteen public-domain real series shipped in
``bench/data/public`` (see its README.md; the last six, monthly US employment and daily
Seattle weather, were added after everything else was tuned, as series nobody tuned for).
Per series:

* ``rho``: median Spearman(value, pitch) over sliding 30-sample windows of the clean series
  (a window where the values vary and the pitch does not counts as 0);
* ``1.1x/10x``: pitch and velocity of a spike of 1.1x and of 10x the window's maximum
  (generalized to any sign: max + 0.1 or 9 times the window's range), and their difference;
* recall per injected anomaly kind (single spike, 3-sample dropout, sustained level shift,
  variance burst): the share of injections with an accent on one of their first 3 samples;
* ``false``: accented notes on the clean series, in percent of its notes;
* own steps >= spike: the share of the series' own steps at least as large as an injected
  spike (8 typical steps); where that is over 1%, a detector held to 1% false accents cannot
  accent every spike (the series makes such steps by itself more often), so the summary also
  gives recall over the series where it is at most 1%.

Magnitudes are relative to the series' own typical step (the median absolute first
difference): a spike of +8 steps, a dropout to 8 steps below the last 50 values' minimum,
a shift of 8 steps (alternating up and down), a burst of Gaussian noise of 5 steps for 15
samples. Then a fast feed: 16 spikes in a noisy stream sent at 20 rows/s (2.5x the default
rate cap), real time, default settings and ``--rhythm model``: how many spikes are accented.

``--before REV`` runs the same on another revision (a git worktree) for a before/after
table; revisions without accents are judged by their loudest 2% of notes (the best a
listener could do there). Usage::

    .venv/bin/python bench/listen.py [--before REV] [--skip-fast] [--only NAME]
                                     [--series CSV ...]

``--series CSV`` plays your own series instead (each numeric column of the file; the same
measures, seeds 100, 101, ... in the file's order): how streamsonic does on data like yours.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "seed-test-series"
PUBLIC = Path(__file__).resolve().parent / "data" / "public"
KINDS = ("spike", "dropout", "shift", "burst")
WINDOW = 30
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1"}
#: One note as ``--output events`` writes it (a JSON object: the fields of a NoteEvent).
Event = dict[str, Any]


# -- series -----------------------------------------------------------------------------------
def _csv_column(path: Path, column: str, reverse: bool = False) -> np.ndarray:
    with path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    vals = [float(r[column]) for r in rows if r.get(column) not in (None, "", "null")]
    return np.array(vals[::-1] if reverse else vals)


def _sample_data(name: str) -> Path:
    import matplotlib  # noqa: PLC0415

    return Path(matplotlib.get_data_path()) / "sample_data" / name


def _number(text: str) -> float:
    """A CSV cell's number; NaN for a missing one (empty, ``NA`` or ``nan``)."""
    return float(text) if text.strip() not in ("", "NA", "nan") else math.nan


def public_series() -> dict[str, np.ndarray]:
    """Public-domain real series shipped in bench/data/public (see its README.md)."""

    def rows(name: str) -> list[dict[str, str]]:
        with (PUBLIC / f"{name}.csv").open(encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    co2 = np.array([_number(r["co2"]) for r in rows("co2")])
    gaps = np.isnan(co2)  # missing weeks: interpolated linearly
    co2[gaps] = np.interp(np.flatnonzero(gaps), np.flatnonzero(~gaps), co2[~gaps])
    months = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV",
              "DEC")
    out = {"pub:sunspots": np.array([_number(r["SUNACTIVITY"]) for r in rows("sunspots")]),
           "pub:co2 weekly": co2,
           "pub:elnino": np.array([_number(r[m]) for r in rows("elnino") for m in months]),
           "pub:nile": np.array([_number(r["volume"]) for r in rows("nile")])}
    macro = rows("macrodata")
    for column in ("realgdp", "realcons", "realinv", "cpi", "unemp", "tbilrate"):
        out[f"pub:{column}"] = np.array([_number(r[column]) for r in macro])
    # Added after the rest was tuned, as series nobody tuned for: monthly US employment
    # 2006-2015 (slow trends that turn: the Great Recession), daily Seattle weather.
    jobs = rows("us-employment")
    for column in ("nonfarm", "manufacturing", "leisure_and_hospitality", "government"):
        out[f"pub:jobs {column}"] = np.array([_number(r[column]) for r in jobs])
    weather = rows("seattle-weather")
    for column in ("temp_max", "precipitation"):
        out[f"pub:seattle {column}"] = np.array([_number(r[column]) for r in weather])
    return out


def real_series() -> dict[str, np.ndarray]:
    """The research's example series and real series that matplotlib ships."""
    out: dict[str, np.ndarray] = {}
    if SHARED.is_dir():
        for name in ("data", "dataasc", "new_data"):
            out[f"seed:{name}"] = _csv_column(SHARED / f"{name}.csv", "population")
        out["seed:trading"] = _csv_column(SHARED / "trading.csv", "Adj Close")
    out["mpl:S&P500 monthly"] = _csv_column(_sample_data("Stocks.csv"), "^GSPC")
    out["mpl:msft daily"] = _csv_column(_sample_data("msft.csv"), "Close", reverse=True)
    eeg = np.fromfile(_sample_data("eeg.dat"), dtype=float).reshape(800, 4)
    out["mpl:eeg"] = eeg[:, 0]
    membrane = np.fromfile(_sample_data("membrane.dat"), dtype=np.float32).astype(float)
    out["mpl:membrane"] = membrane[:4000:5]
    return out


def all_series() -> dict[str, np.ndarray]:
    """Every series the benchmark plays, in its order (each series' seed is 100 + its
    place: the public series come last, so the first 16 keep the seeds they had before
    those were added)."""
    return {**real_series(), **synthetic_series(), **public_series()}


def file_series(path: Path, min_samples: int = 60) -> dict[str, np.ndarray]:
    """Series of the user's own: each column of a CSV file with a header row whose cells
    are numbers (empty, ``NA`` or ``nan`` cells are left out of that column; a column with
    any other text, or fewer than ``min_samples`` numbers, is not a series), named
    ``STEM:COLUMN``. Raises SystemExit naming the file when it has no such column."""
    with path.open(encoding="utf-8", newline="") as fh:
        table = list(csv.DictReader(fh))
    out: dict[str, np.ndarray] = {}
    for column in (table[0].keys() if table else ()):
        try:
            cells = np.array([_number(r.get(column) or "") for r in table])
        except ValueError:
            continue  # a column of dates or names
        values = cells[~np.isnan(cells)]
        if len(values) >= min_samples and np.all(np.isfinite(values)):
            out[f"{path.stem}:{column}"] = values
    if not out:
        raise SystemExit(f"{path}: no column of at least {min_samples} numbers under a header")
    return out


def synthetic_series(n: int = 600, seed: int = 7) -> dict[str, np.ndarray]:
    """Seeded synthetic kinds: trend, random walk, seasonal, noise, heavy tail, counts."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=float)
    return {
        "syn:trend+noise": 0.5 * t + rng.normal(0, 2, n),
        "syn:random walk": np.cumsum(rng.normal(0, 1, n)) + 100,
        "syn:seasonal": 10 * np.sin(2 * np.pi * t / 50) + rng.normal(0, 1, n),
        "syn:co2-like": 300 + 0.05 * t + 3 * np.sin(2 * np.pi * t / 52) + rng.normal(0, .1, n),
        "syn:noise": rng.normal(0, 1, n),
        "syn:lognormal": rng.lognormal(0, 1, n),
        "syn:counts": rng.poisson(4, n).astype(float),
        "syn:uniform 1..100": rng.uniform(1, 100, n),
    }


# -- anomalies ---------------------------------------------------------------------------------
def typical_step(x: np.ndarray) -> float:
    d = np.abs(np.diff(x))
    return float(max(np.median(d), 0.1 * d.std(), 1e-9 * max(1.0, float(np.abs(x).max()))))


def onsets(n: int, rng: np.random.Generator, gap: int = 30, start: int = 60) -> list[int]:
    count = max(1, min(8, (n - start - gap) // gap))
    slots = np.linspace(start, n - gap, count).astype(int)
    return [int(s + rng.integers(0, gap // 3)) for s in slots]


def inject(x: np.ndarray, kind: str, at: list[int], rng: np.random.Generator) -> np.ndarray:
    y = x.copy()
    step = typical_step(x)
    for j, a in enumerate(at):
        if kind == "spike":
            y[a] += 8 * step
        elif kind == "dropout":
            y[a:a + 3] = y[max(0, a - 50):a].min() - 8 * step
        elif kind == "shift":
            y[a:] += (8 if j % 2 == 0 else -8) * step
        elif kind == "burst":
            y[a:a + 15] += rng.normal(0, 5 * step, len(y[a:a + 15]))
    return y


def spike_value(x: np.ndarray, at: int, factor: float, window: int = 200) -> float:
    w = x[max(0, at - window):at]
    return float(w.max() + (factor - 1.0) * (w.max() - w.min()))


# -- running the live path ---------------------------------------------------------------------
@dataclass
class Revision:
    """A checkout to run: this one, or a worktree of an older revision."""

    root: Path
    label: str

    def command(self, args: list[str]) -> list[str]:
        return [sys.executable, "-m", "streamsonic", "--output", "events", *args]

    def env(self) -> dict[str, str]:
        return {**ENV, "PYTHONPATH": str(self.root)}


def run_streams(rev: Revision, streams: dict[str, np.ndarray], args: list[str],
                rate: float | None = None) -> dict[str, list[Event]]:
    """Feed the streams as JSON lines (all at once, or ``rate`` rows per second)."""
    n = max(len(v) for v in streams.values())
    lines = []
    for i in range(n):
        row = {k: float(v[i]) for k, v in streams.items() if i < len(v)}
        lines.append(json.dumps(row) + "\n")
    proc = subprocess.Popen(rev.command(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=rev.root, env=rev.env())
    assert proc.stdin is not None
    if rate is None:
        out, err = proc.communicate("".join(lines), timeout=600)
    else:
        assert proc.stderr is not None and proc.stdout is not None
        while "ready" not in proc.stderr.readline():  # feed in real time once it listens
            if proc.poll() is not None:
                raise SystemExit(f"{rev.label}: streamsonic exited before it was ready")
        # Read the notes as they come: an unread stdout pipe fills after some 280 notes and
        # then blocks the daemon's writes (and with them its event loop) until the end.
        chunks: list[str] = []
        reader = threading.Thread(target=lambda: chunks.extend(proc.stdout or ()), daemon=True)
        reader.start()
        for line in lines:
            proc.stdin.write(line)
            proc.stdin.flush()
            time.sleep(1.0 / rate)
        proc.stdin.close()
        proc.wait(timeout=600)
        reader.join(timeout=60)
        out, err = "".join(chunks), proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"{rev.label}: streamsonic exited {proc.returncode}: {err[-2000:]}")
    events: dict[str, list[Event]] = {k: [] for k in streams}
    for line in out.splitlines():
        ev = json.loads(line)
        if ev.get("source", "data") != "data":
            continue  # a note the model added between data notes: not the data's
        events.setdefault(str(ev["stream"]), []).append(ev)
    return events


def accented(events: list[Event], loudest: float | None) -> list[bool]:
    """Which notes a listener hears as accents: the ``accent`` flag, or (older revisions
    without one) a velocity at or above ``loudest``."""
    if events and "accent" in events[0]:
        return [bool(e["accent"]) for e in events]
    assert loudest is not None
    return [float(e["velocity"]) >= loudest for e in events]


def loudest_2pct(all_events: dict[str, list[Event]]) -> float:
    vel = [float(e["velocity"]) for ev in all_events.values() for e in ev]
    return float(np.percentile(vel, 98)) if vel else math.inf


# -- measures ----------------------------------------------------------------------------------
def spearman(a: np.ndarray, b: np.ndarray) -> float:
    def ranks(x: np.ndarray) -> np.ndarray:
        order = x.argsort(kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):
            m = x == v
            r[m] = r[m].mean()
        return r

    if np.ptp(a) == 0:
        return math.nan
    if np.ptp(b) == 0:
        return 0.0
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def local_rho(values: np.ndarray, pitches: np.ndarray) -> float:
    rhos = [spearman(values[i:i + WINDOW], pitches[i:i + WINDOW])
            for i in range(len(values) - WINDOW + 1)]
    finite = [r for r in rhos if not math.isnan(r)]
    return float(np.median(finite)) if finite else math.nan


@dataclass
class Row:
    name: str
    rho: float = math.nan
    spike11: tuple[int, int] = (0, 0)
    spike10: tuple[int, int] = (0, 0)
    recall: dict[str, tuple[int, int]] = field(default_factory=dict)
    false_pct: float = math.nan
    top_pitch_pct: float = math.nan
    own_pct: float = math.nan  # the series' own steps at least as large as an injected spike

    @property
    def separable(self) -> bool:
        """Whether a spike (or a shift's onset) of 8 typical steps is rarer than 1% among
        the series' own steps: if not, no detector within 1% false accents can accent
        every one of them (the series does the same by itself more often than that)."""
        return self.own_pct <= 1.0


def measure(rev: Revision, name: str, x: np.ndarray, seed: int) -> Row:
    rng = np.random.default_rng(seed)
    at = {k: onsets(len(x), rng) for k in KINDS}
    big = int(len(x) * 0.75)
    s11, s10 = x.copy(), x.copy()
    s11[big] = spike_value(x, big, 1.1)
    s10[big] = spike_value(x, big, 10.0)
    streams = {"clean": x, "s11": s11, "s10": s10}
    for k in KINDS:
        streams[k] = inject(x, k, at[k], rng)
    events = run_streams(rev, streams, ["--set", "clock.backlog=100000", "--max-rate", "1000"])
    for k, ev in events.items():
        if len(ev) != len(streams[k]):
            raise SystemExit(f"{name}/{k}: {len(ev)} notes for {len(streams[k])} samples")
    loud = loudest_2pct(events)
    row = Row(name)
    row.own_pct = 100.0 * float(np.mean(np.abs(np.diff(x)) >= 8 * typical_step(x)))
    pitches = np.array([e["pitch"] for e in events["clean"]], dtype=float)
    row.rho = local_rho(x, pitches)
    row.top_pitch_pct = 100.0 * float(np.mean(pitches == np.bincount(
        pitches.astype(int)).argmax()))
    row.spike11 = (int(events["s11"][big]["pitch"]), int(events["s11"][big]["velocity"]))
    row.spike10 = (int(events["s10"][big]["pitch"]), int(events["s10"][big]["velocity"]))
    for k in KINDS:
        acc = accented(events[k], loud)
        hit = sum(any(acc[a:a + 3]) for a in at[k])
        row.recall[k] = (hit, len(at[k]))
    clean_acc = accented(events["clean"], loud)
    row.false_pct = 100.0 * sum(clean_acc) / len(clean_acc)
    return row


def fast_feed(rev: Revision, rhythm: bool) -> tuple[int, int]:
    """16 spikes in a noisy stream at 20 rows/s: how many are accented."""
    rng = np.random.default_rng(11)
    n = 400
    x = rng.normal(0, 1, n)
    spikes = [int(a) for a in np.linspace(40, n - 10, 16)]
    for a in spikes:
        x[a] = 12.0 + rng.random()
    args = ["--rhythm", "model"] if rhythm else []
    events = run_streams(rev, {"feed": x}, args, rate=20.0)["feed"]
    loud = loudest_2pct({"feed": events})
    acc = accented(events, loud)
    spike_values = {float(x[a]) for a in spikes}
    hit = {float(e["value"]) for e, a in zip(events, acc, strict=True)
           if a and float(e["value"]) in spike_values}
    return len(hit), len(spikes)


# -- table -------------------------------------------------------------------------------------
def fmt_row(label: str, r: Row) -> str:
    rec = " | ".join(f"{r.recall[k][0]}/{r.recall[k][1]}" for k in KINDS)
    d_pitch = r.spike10[0] - r.spike11[0]
    d_vel = r.spike10[1] - r.spike11[1]
    return (f"| {r.name} | {label} | {r.rho:.2f} | {r.top_pitch_pct:.0f}% | "
            f"{r.spike11[0]}/{r.spike11[1]} | {r.spike10[0]}/{r.spike10[1]} | "
            f"{d_pitch:+d} st, {d_vel:+d} vel | {rec} | {r.false_pct:.1f}% | "
            f"{r.own_pct:.1f}% |")


def worktree(rev: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(into), rev],
                   check=True, capture_output=True)
    return into


def json_at(rev: str, script: str, args: list[str]) -> Any:
    """Run ``script --json ARGS`` (this checkout's file) on revision ``rev``'s streamsonic (a
    git worktree, first on the path) and return what it printed, parsed (the ``--rev`` of
    bench/accents.py and bench/nab.py)."""
    tree = Path(tempfile.mkdtemp(prefix="rev-")) / "rev"
    worktree(rev, tree)
    try:
        done = subprocess.run([sys.executable, script, "--json", *args],
                              env={**os.environ, "PYTHONPATH": str(tree)},
                              capture_output=True, text=True, check=True)
        return json.loads(done.stdout)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                       check=False, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", metavar="REV", help="also measure this git revision")
    parser.add_argument("--skip-fast", action="store_true", help="skip the real-time feeds")
    parser.add_argument("--only", metavar="TEXT", help="only series whose name contains TEXT")
    parser.add_argument("--series", metavar="CSV", type=Path, action="append",
                        help="play these series instead of the benchmark's: each numeric "
                        "column of the CSV file (a header row, at least 60 numbers); "
                        "repeatable")
    args = parser.parse_args()
    revs = [Revision(REPO, "after")]
    tmp = Path(tempfile.mkdtemp(prefix="listen-"))
    if args.before:
        revs.insert(0, Revision(worktree(args.before, tmp / "before"), "before"))
    series = ({k: v for path in args.series for k, v in file_series(path).items()}
              if args.series else all_series())
    if args.only:
        series = {k: v for k, v in series.items() if args.only in k}
    print("| series | rev | rho (30) | top pitch | 1.1x pitch/vel | 10x pitch/vel | 10x - 1.1x "
          f"| {' | '.join(KINDS)} | false | own steps >= spike |")
    print("|---|---|---|---|---|---|---|" + "---|" * len(KINDS) + "---|---|")
    summary: dict[str, list[Row]] = {r.label: [] for r in revs}
    try:
        for i, (name, x) in enumerate(series.items()):
            for rev in revs:
                row = measure(rev, name, x, seed=100 + i)
                summary[rev.label].append(row)
                print(fmt_row(rev.label, row), flush=True)
        print()
        for rev in revs:
            rows = summary[rev.label]
            tot = {k: [sum(r.recall[k][j] for r in rows) for j in (0, 1)] for k in KINDS}
            print(f"{rev.label}: rho >= 0.8 on {sum(r.rho >= 0.8 for r in rows)}/{len(rows)} "
                  f"series (min {min(r.rho for r in rows):.2f}); recall "
                  + ", ".join(f"{k} {t[0]}/{t[1]} ({100 * t[0] / t[1]:.0f}%)"
                              for k, t in tot.items())
                  + f"; false accents max {max(r.false_pct for r in rows):.1f}%, "
                  f"mean {np.mean([r.false_pct for r in rows]):.2f}%; 10x-1.1x pitch min "
                  f"{min(r.spike10[0] - r.spike11[0] for r in rows):+d} st")
            apart = [r for r in rows if r.separable]
            tot = {k: [sum(r.recall[k][j] for r in apart) for j in (0, 1)] for k in KINDS}
            print(f"{rev.label}, the {len(apart)} series whose own steps reach an injected "
                  "spike's size less than 1% of the time: recall "
                  + ", ".join(f"{k} {t[0]}/{t[1]} ({100 * t[0] / max(t[1], 1):.0f}%)"
                              for k, t in tot.items())
                  + f"; false accents max {max(r.false_pct for r in apart):.1f}%, "
                  f"mean {np.mean([r.false_pct for r in apart]):.2f}%")
        if not args.skip_fast:
            print()
            print("| fast feed (20 rows/s, default cap 16/s, 16 spikes) | rev | spikes accented |")
            print("|---|---|---|")
            for rhythm in (False, True):
                for rev in revs:
                    hit, total = fast_feed(rev, rhythm)
                    label = "--rhythm model" if rhythm else "default"
                    print(f"| {label} | {rev.label} | {hit}/{total} |", flush=True)
    finally:
        if args.before:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(tmp / "before")], check=False, capture_output=True)
    return 0

if __name__ == "__main__":
    sys.exit(main())
