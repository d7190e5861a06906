"""End to end, the real CLI: what a listener hears (issue "Hear what matters").

Injected anomalies must be accented, clean stretches must not, a 10x spike must play
clearly higher than a 1.1x one, 8 streams must get distinct timbres and places, and a feed
faster than the rate cap must keep its spikes' accents (aggregation keeps the anomalous).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamsonic.config import load_config
from streamsonic.outputs import parse_output
from streamsonic.render import Series, render_notes
from tests.test_season import CHANGES, PERIOD, days

EXE = [sys.executable, "-m", "streamsonic", "--output", "events"]
ALL_NOTES = ["--set", "clock.backlog=100000", "--max-rate", "1000"]
#: One note as ``--output events`` writes it (a JSON object: the fields of a NoteEvent).
Event = dict[str, Any]


def run_rows(rows: list[dict[str, float]], args: list[str]) -> list[Event]:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    res = subprocess.run([*EXE, *args], input=text, capture_output=True, text=True,
                         timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def by_stream(events: list[Event]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = {}
    for e in events:
        out.setdefault(str(e["stream"]), []).append(e)
    return out


def test_injected_anomalies_are_accented_clean_notes_are_not() -> None:
    rng = np.random.default_rng(5)
    n = 480
    t = np.arange(n, dtype=float)
    clean = 20 + 0.05 * t + 3 * np.sin(2 * np.pi * t / 40) + rng.normal(0, 0.5, n)
    at = [80, 140, 200, 260, 320, 380, 440]
    spike, dropout, shift = clean.copy(), clean.copy(), clean.copy()
    for j, a in enumerate(at):
        spike[a] += 6.0
        dropout[a:a + 3] = 0.0
        shift[a:] += 6.0 if j % 2 == 0 else -6.0
    rows = [{"clean": clean[i], "spike": spike[i], "dropout": dropout[i], "shift": shift[i]}
            for i in range(n)]
    notes = by_stream(run_rows(rows, ALL_NOTES))
    for name in ("spike", "dropout", "shift"):
        acc = [bool(e["accent"]) for e in notes[name]]
        caught = sum(any(acc[a:a + 3]) for a in at)
        assert caught >= 6, (name, caught)
        for a in at:  # accented notes are the loudest and carry their score
            for e in notes[name][a:a + 3]:
                assert 0.0 <= float(e["anomaly"]) <= 1.0
                if e["accent"]:
                    assert e["velocity"] == 127
    clean_acc = [bool(e["accent"]) for e in notes["clean"]]
    assert sum(clean_acc) <= 0.01 * n
    assert max(int(e["velocity"]) for e in notes["clean"]) <= 100


def test_a_10x_spike_plays_clearly_higher_than_a_1_1x_spike() -> None:
    rng = np.random.default_rng(6)
    base = 100 + rng.normal(0, 5, 300)
    window = base[100:250]
    hi, lo = float(window.max()), float(window.min())
    small, big = base.copy(), base.copy()
    small[250] = hi + 0.1 * (hi - lo)
    big[250] = hi + 9.0 * (hi - lo)
    rows = [{"small": small[i], "big": big[i]} for i in range(300)]
    notes = by_stream(run_rows(rows, ALL_NOTES))
    p_small, p_big = int(notes["small"][250]["pitch"]), int(notes["big"][250]["pitch"])
    assert p_big - p_small >= 3
    assert p_small >= 89  # beyond the ordinary range (the model's 50..89)
    # the extreme value does not flatten the others: they still use the range
    after = [int(e["pitch"]) for e in notes["big"][260:]]
    assert max(after) - min(after) >= 12


def test_a_10x_spike_plays_clearly_higher_on_a_falling_trend() -> None:
    """On a falling trend (and a geometric decline, played on logs) the window's maximum is
    far above the present values, so 1.1x it already plays beyond the range; 10x it must
    still play at least 3 semitones higher (4 semitones a decade of excess gave 2 here,
    after the scale's rounding, at 3 of these 4 places)."""
    rng = np.random.default_rng(11)
    t = np.arange(800, dtype=float)
    kinds = {"fall": 100 - 0.05 * t + rng.normal(0, 0.3, 800),
             "decline": 1000 * 0.997 ** t * np.exp(rng.normal(0, 0.02, 800))}
    streams: dict[str, np.ndarray] = {}
    for kind, base in kinds.items():
        for at in (300, 700):
            window = base[at - 200:at]
            hi, lo = float(window.max()), float(window.min())
            for label, factor in (("small", 0.1), ("big", 9.0)):
                x = base.copy()
                x[at] = hi + factor * (hi - lo)
                streams[f"{kind}{at}{label}"] = x
    rows = [{k: float(v[i]) for k, v in streams.items()} for i in range(800)]
    notes = by_stream(run_rows(rows, ALL_NOTES))
    for kind in kinds:
        for at in (300, 700):
            p_small = int(notes[f"{kind}{at}small"][at]["pitch"])
            p_big = int(notes[f"{kind}{at}big"][at]["pitch"])
            assert p_small >= 89, (kind, at, p_small)  # 1.1x: at or beyond the top
            assert p_big - p_small >= 3, (kind, at, p_small, p_big)


def test_magnitude_on_a_heavy_tailed_positive_stream() -> None:
    """Latency-like data (lognormal) is placed and judged on a log scale; 10x its maximum
    still plays clearly above 1.1x it, and is accented."""
    rng = np.random.default_rng(8)
    base = rng.lognormal(0.0, 1.0, 300)
    hi = float(base[100:250].max())
    small, big = base.copy(), base.copy()
    small[250], big[250] = 1.1 * hi, 10.0 * hi
    rows = [{"small": small[i], "big": big[i]} for i in range(300)]
    notes = by_stream(run_rows(rows, ALL_NOTES))
    assert int(notes["big"][250]["pitch"]) - int(notes["small"][250]["pitch"]) >= 3
    assert notes["big"][250]["accent"]
    clean = [bool(e["accent"]) for e in notes["small"][:250]]
    assert sum(clean) <= 3  # its own tail is not an anomaly


def test_the_way_back_from_a_dropout_plays_at_ordinary_loudness() -> None:
    """A 5-sample dropout of a CPU reading: its onset is accented and the samples while it
    lasts play loud; the values back at the usual level still score high (the forecasts
    need a few samples to forget the dropout) and carry that score, but they are the way
    back, no new surprise, and play at ordinary loudness (they played as loud as the
    dropout, so it sounded twice as long as it was)."""
    rng = np.random.default_rng(12)
    x = np.concatenate([45 + rng.normal(0, 3, 240), 2.0 + rng.normal(0, 0.2, 5),
                        45 + rng.normal(0, 3, 40)])
    notes = by_stream(run_rows([{"cpu": float(v)} for v in x], ALL_NOTES))["cpu"]
    assert notes[240]["accent"] and notes[240]["velocity"] == 127
    assert all(int(e["velocity"]) >= 90 for e in notes[241:244])  # it lasts: loud
    back = notes[245:249]
    assert all(float(e["anomaly"]) >= 0.5 and not e["accent"] for e in back)
    assert all(int(e["velocity"]) <= 60 for e in back)  # velocity_min is 56


def test_the_way_back_plays_at_ordinary_loudness_in_a_render_too(tmp_path: Path) -> None:
    """The same through ``render`` (its whole-file normalization gives each note its
    place, so the reading is made again from the sample's: the way back must survive it)."""
    rng = np.random.default_rng(12)
    x = np.concatenate([45 + rng.normal(0, 3, 240), 2.0 + rng.normal(0, 0.2, 5),
                        45 + rng.normal(0, 3, 40)])
    config = load_config(None, {"model.device": "cpu", "daemon.log_level": "warning"})
    notes = [n for n in render_notes(config, Series("cpu", x, list(range(len(x))), {}),
                                     [parse_output(f"file:{tmp_path}/out.mid")])
             if n.source == "data"]
    assert notes[240].accent and notes[240].velocity == 127
    assert all(n.anomaly >= 0.5 and n.velocity <= 60 for n in notes[245:249])


def test_eight_streams_get_distinct_programs_and_pans() -> None:
    rows = [{f"s{k}": float(np.sin(i / 5 + k)) for k in range(8)} for i in range(20)]
    notes = by_stream(run_rows(rows, ALL_NOTES))
    programs = {int(n[0]["program"]) for n in notes.values()}
    pans = {int(n[0]["pan"]) for n in notes.values()}
    assert len(programs) >= 6
    assert len(pans) == 8


def test_fast_feed_keeps_spike_accents_through_aggregation() -> None:
    """Rows at 2.5x the rate cap: notes fold samples, the most anomalous one plays."""
    rng = np.random.default_rng(11)
    n = 400
    x = rng.normal(0, 1, n)
    spikes = [int(a) for a in np.linspace(60, n - 10, 16)]
    for a in spikes:
        x[a] = 12.0 + rng.random()
    proc = subprocess.Popen([*EXE, "--max-rate", "40"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stderr is not None
    while "ready" not in proc.stderr.readline():  # the model loads before it reads
        assert proc.poll() is None
    for v in x:
        proc.stdin.write(f"{v}\n")
        proc.stdin.flush()
        time.sleep(0.01)  # 100 rows/s against 40 notes/s
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert len(events) < n  # samples were folded
    spike_values = {float(x[a]) for a in spikes}
    accented = {float(e["value"]) for e in events if e["accent"]} & spike_values
    assert len(accented) >= 15


def test_a_machines_day_is_expected_and_the_day_it_does_not_start_is_heard() -> None:
    """The real CLI, a machine's day 12 times (tests/test_season.py's pattern): once the
    season has it, its daily changes are not accented (they are with `accent.season =
    false`); a second stream whose machine does not start on day 10 is accented below what
    was expected, within 3 samples of the time it should have."""
    day = days(12)
    skipped = days(12, seed=4)
    idle = 9 * PERIOD
    skipped[idle:idle + PERIOD] = 20.0 + np.random.default_rng(5).normal(0.0, 0.5, PERIOD)
    rows = [{"day": day[i], "skipped": skipped[i]} for i in range(len(day))]
    settled = 6 * PERIOD

    def data_notes(args: list[str]) -> dict[str, list[Event]]:
        notes = by_stream(run_rows(rows, [*ALL_NOTES, "--set", "model.passing_notes=0",
                                          *args]))
        assert all(len(v) == len(day) for v in notes.values())
        return notes

    heard = data_notes([])
    assert [i for i in range(settled, len(day)) if heard["day"][i]["accent"]] == []
    start = idle + CHANGES[0]
    assert any(e["accent"] and e["direction"] == -1 for e in heard["skipped"][start:start + 3])
    without = data_notes(["--set", "accent.season=false"])
    assert sum(bool(e["accent"]) for e in without["day"][settled:]) >= 2 * 6
