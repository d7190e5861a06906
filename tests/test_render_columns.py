"""render plays several columns as several streams, each column's rows stepped in runs
(``Conductor.start_run``, as one column alone), a row's notes scheduled together, with the
notes each column plays alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pytest

from streamsonic import render
from streamsonic.conductor import Conductor, Cue, Run, StepResult
from streamsonic.config import Config, load_config
from streamsonic.errors import InputDataError, UsageError
from streamsonic.music import seconds_per_beat
from streamsonic.render import Series, read_table, render_notes

REPO = Path(__file__).resolve().parents[1]
FIELDS = ("pitch", "velocity", "duration", "start", "accent")


def columns() -> list[Series]:
    rng = np.random.default_rng(4)
    walk = np.cumsum(rng.standard_normal(150))
    wave = np.sin(np.arange(150) / 6) + 0.1 * rng.standard_normal(150)
    spiky = rng.standard_normal(150)
    spiky[90] = 25.0
    return [Series(name, values, list(range(2, 152)), {})
            for name, values in (("walk", walk), ("wave", wave), ("spiky", spiky))]


def by_stream(notes: list) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for n in notes:
        out.setdefault(n.stream, []).append(tuple(getattr(n, f) for f in FIELDS))
    return out


def row_step(config: Config) -> float:
    """Seconds between rows (``clock.step`` beats)."""
    return config.clock.step * seconds_per_beat(config.music.tempo)


def counting(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[list[str]]]:
    """Patch the conductor: the size of each :meth:`Conductor.play` batch, and the streams
    of each run's cues (:meth:`Conductor.start_run`), as they come."""
    batches: list[int] = []
    runs: list[list[str]] = []
    real_play, real_start = Conductor.play, Conductor.start_run

    def play(self: Conductor, cues: list[Cue]) -> StepResult:
        batches.append(len(cues))
        return real_play(self, cues)

    def start_run(self: Conductor, cues: list[Cue], after: Run | None = None) -> Run:
        runs.append([c.sample.stream for c in cues])
        return real_start(self, cues, after)

    monkeypatch.setattr(Conductor, "play", play)
    monkeypatch.setattr(Conductor, "start_run", start_run)
    return batches, runs


@pytest.mark.parametrize(("settings", "width"), [
    ({"model.influence": 0.5}, 3),  # phrases
    ({"model.passing_notes": 0}, 6),  # one note per row; more columns than FEW_ROWS
])
def test_columns_step_in_runs_and_play_what_each_plays_alone(
    monkeypatch: pytest.MonkeyPatch, settings: dict[str, object], width: int,
) -> None:
    monkeypatch.setattr(render, "RUN", 64)
    config = load_config(None, {"model.device": "cpu", **settings})
    table = (columns() * 2)[:width]
    table = [Series(f"{s.name}{i}", s.values, s.lines, {}) for i, s in enumerate(table)]
    alone: dict[str, list[tuple]] = {}
    for series in table:
        alone.update(by_stream(render_notes(config, series, [])))
    batches, runs = counting(monkeypatch)
    played = render_notes(config, table, [])
    together = by_stream(played)
    # 150 rows in blocks of 64: a run of each column in each block, in column order
    assert runs == [[s.name] * size for size in (64, 64, 22) for s in table]
    assert batches == []  # no row stepped as a batch of its own
    assert together == alone
    assert len({p for notes in together.values() for p, *_ in notes}) > 10  # they play
    # a row's notes together: each row's data notes within the row's step, in column order
    data = [n for n in played if n.source == "data"]
    assert [n.stream for n in data] == [s.name for _ in range(150) for s in table]
    step = row_step(config)
    assert [int(n.start / step + 1e-9) for n in data] == [r for r in range(150) for _ in table]


def test_a_column_with_gaps_plays_only_on_its_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "a,b\n1,10\n2,x\n3,12\n4,\n5,15\n"
    table = read_table(text, ["a", "b"], "t.csv")
    assert [s.lines for s in table] == [[2, 3, 4, 5, 6], [2, 4, 6]]
    _, runs = counting(monkeypatch)
    config = load_config(None, {"model.device": "cpu", "model.passing_notes": 0})
    notes = render_notes(config, table, [])
    assert runs == [["a"] * 5, ["b"] * 3]
    step = row_step(config)
    assert [(n.stream, round(n.start / step, 9)) for n in notes] == [
        ("a", 0), ("b", 0), ("a", 1), ("a", 2), ("b", 2), ("a", 3), ("a", 4), ("b", 4)]


def test_a_column_first_seen_later_takes_its_voice_then() -> None:
    """Voices are claimed in the order in which the columns' first values come (as row by
    row did), not in the order the columns are named."""
    text = "a,b,c\n,1,\n,2,2\n3,3,3\n4,4,4\n"  # b first, then c, then a
    table = read_table(text, ["a", "b", "c"], "t.csv")
    config = load_config(None, {"model.device": "cpu", "music.program": -1})
    notes = render_notes(config, table, [])
    channels = {n.stream: n.channel for n in notes}
    assert channels["b"] < channels["c"] < channels["a"], channels


def test_more_columns_than_streams_are_refused() -> None:
    config = load_config(None, {"model.device": "cpu", "streams.max_streams": 2})
    with pytest.raises(UsageError, match="max_streams=3"):
        render_notes(config, columns(), [])


def test_column_choices() -> None:
    text = "t,name,a,b\n1,x,2,3\n2,y,4,5\n"
    assert [s.name for s in read_table(text, None, "f", every=True)] == ["t", "a", "b"]
    assert [s.name for s in read_table(text, ["b", "2"], "f")] == ["b", "a"]
    with pytest.raises(UsageError, match="named twice"):
        read_table(text, ["a", "2"], "f")
    # a time column (as run reads it: the sample time) plays only when named
    timed = "ts,cpu\n1733300000,5\n1733300010,7\n1733300020,\n"
    assert [s.name for s in read_table(timed, None, "f")] == ["cpu"]
    assert [s.name for s in read_table(timed, None, "f", every=True)] == ["cpu"]
    assert [s.name for s in read_table(timed, ["ts"], "f")] == ["ts"]
    with pytest.raises(InputDataError, match="no numeric column besides its time column"):
        read_table("Time,host\n1,a\n2,b\n", None, "f")
    assert [s.name for s in read_table("1,5\n2,6\n", None, "f")] == ["col0"]  # no header
    config = load_config(None, {"model.rhythm": "model", "model.device": "cpu"})
    with pytest.raises(UsageError, match="one column"):
        render_notes(config, read_table(text, ["a", "b"], "f"), [])


def test_cli_renders_several_columns() -> None:
    env = {k: v for k, v in os.environ.items() if k != "STREAMSONIC_CONFIG"}
    rows = "".join(f"{i},{(i * 7) % 11},{(i * 3) % 5}\n" for i in range(40))
    res = subprocess.run([sys.executable, "-m", "streamsonic", "render", "-", "--column", "cpu",
                          "--column", "mem", "-o", "events", "--device", "cpu"],
                         input="t,cpu,mem\n" + rows, capture_output=True, text=True,
                         timeout=120, check=False, cwd=REPO, env=env)
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    data = [e for e in events if e.get("source", "data") == "data"]
    assert sorted({e["stream"] for e in events}) == ["cpu", "mem"]
    assert sum(e["stream"] == "cpu" for e in data) == 40
    assert len({e["channel"] for e in events}) == 2  # a voice each
    both = subprocess.run([sys.executable, "-m", "streamsonic", "render", "-", "--column", "cpu",
                           "--all-columns", "-o", "events"], input="t,cpu\n1,2\n",
                          capture_output=True, text=True, timeout=120, check=False, cwd=REPO,
                          env=env)
    assert both.returncode == 64 and "one or the other" in both.stderr


def test_cli_spaces_the_earcons_of_columns_that_accent_together(tmp_path: Path) -> None:
    """Four columns jump at the same row: in the MIDI file each accent's earcon (channel
    10) follows the previous one by accent.earcon_gap (0.3 s), and at gap 0 they coincide."""
    env = {k: v for k, v in os.environ.items() if k != "STREAMSONIC_CONFIG"}
    rng = np.random.default_rng(11)
    table = rng.normal(0.0, 1.0, (120, 4))
    table[100:] += 40.0  # one incident, seen by all four
    text = "a,b,c,d\n" + "".join(",".join(f"{v:.4f}" for v in row) + "\n" for row in table)
    starts = {}
    for gap in ("0.3", "0"):
        out = tmp_path / f"gap{gap}.mid"
        res = subprocess.run([sys.executable, "-m", "streamsonic", "render", "-", "--all-columns",
                              "-o", str(out), "--device", "cpu", "--set",
                              f"accent.earcon_gap={gap}"],
                             input=text, capture_output=True, text=True, timeout=120,
                             check=False, cwd=REPO, env=env)
        assert res.returncode == 0, res.stderr
        now, ons = 0.0, []
        for msg in mido.MidiFile(str(out)):
            now += msg.time
            if msg.type == "note_on" and msg.velocity > 0 and msg.channel == 9:
                ons.append(now)
        starts[gap] = ons
    spaced, together = starts["0.3"], starts["0"]
    assert len(spaced) == len(together) >= 4
    first = together[0]
    assert together[:4] == [pytest.approx(first, abs=0.002)] * 4
    assert spaced[:4] == [pytest.approx(first + 0.3 * i, abs=0.002) for i in range(4)]
