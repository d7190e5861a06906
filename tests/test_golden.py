"""Golden tests: fixed seed and input -> stored notes, through the real CLI with the shipped
weights; and end-to-end checks that the shipped model has a say at the default influence.

The notes each case played are stored in ``tests/golden/notes.json`` (pitch, velocity,
channel, program and accent of every note, per stream; never wall-clock fields). When a
change to the music is intended, regenerate the file and review its diff::

    STREAMSONIC_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py

(the tests then write the file instead of comparing, and pass). See tests/golden/README.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamsonic.model.checkpoint import default_weights
from streamsonic.music import scale_pitches
from tests.components import missing

GOLDEN = Path(__file__).resolve().parent / "golden" / "notes.json"
UPDATE = os.environ.get("STREAMSONIC_UPDATE_GOLDEN") == "1"
#: What each stored note holds, in this order.
FIELDS = ("pitch", "velocity", "channel", "program", "accent", "source")
#: Every sample plays its own note, in order, whatever the machine's speed: a backlog no
#: input here fills (nothing is aggregated) and a rate cap that never makes one wait long.
LIVE = ["--output", "events", "--set", "clock.backlog=100000", "--max-rate", "1000"]


def golden_input() -> list[str]:
    """Three streams, 160 lines: a sine with noise and one spike (accents), a positive
    random walk varying by multiples (played on a log scale), a noisy level shift."""
    rng = np.random.default_rng(2024)
    t = np.arange(160)
    cpu = 0.5 + 0.3 * np.sin(t / 7) + 0.05 * rng.standard_normal(t.size)
    cpu[110] = 5.0
    mem = 100 * np.exp(np.cumsum(0.05 * rng.standard_normal(t.size)))
    temp = 20 + 0.5 * rng.standard_normal(t.size)
    temp[80:] += 6
    return [f"cpu={a:.6g} mem={b:.6g} temp={c:.6g}" for a, b, c in zip(cpu, mem, temp,
                                                                       strict=True)]


@pytest.fixture(scope="module")
def no_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty config file: the defaults, whatever the user's or /etc's config says."""
    path = tmp_path_factory.mktemp("config") / "config.toml"
    path.write_text("")
    return path


def play(args: list[str], lines: list[str], config: Path) -> dict[str, list[list[Any]]]:
    """``streamsonic ARGS`` (on the CPU) with ``lines`` on stdin -> each stream's notes."""
    env = {k: v for k, v in os.environ.items() if k != "STREAMSONIC_CONFIG"}
    res = subprocess.run(
        [sys.executable, "-m", "streamsonic", *args, "--config", str(config), "--device", "cpu",
         "--log-level", "warning"],
        input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=300,
        check=False, env=env,
    )
    assert res.returncode == 0, res.stderr
    notes: dict[str, list[list[Any]]] = {}
    for line in res.stdout.splitlines():
        event = json.loads(line)
        notes.setdefault(event["stream"], []).append([event[f] for f in FIELDS])
    return notes


def _dump(cases: dict[str, dict[str, object]]) -> str:
    """The golden file, one note per line (reviewable diffs)."""
    out = ["{", f'  "fields": {json.dumps(list(FIELDS))},', '  "cases": {']
    for i, (name, case) in enumerate(cases.items()):
        out.append(f"    {json.dumps(name)}: {{")
        out.append(f'      "input": {json.dumps(case["input"], indent=8)[:-1]}      ],')
        out.append('      "notes": {')
        streams = case["notes"]
        assert isinstance(streams, dict)
        for j, (stream, notes) in enumerate(streams.items()):
            rows = ",\n".join(f"          {json.dumps(n)}" for n in notes)
            out.append(f"        {json.dumps(stream)}: [\n{rows}\n        ]"
                       + ("," if j < len(streams) - 1 else ""))
        out.append("      }")
        out.append("    }" + ("," if i < len(cases) - 1 else ""))
    out += ["  }", "}"]
    return "\n".join(out) + "\n"


def check_golden(case: str, lines: list[str], got: dict[str, list[list[Any]]]) -> None:
    """Compare with the stored notes, or (STREAMSONIC_UPDATE_GOLDEN=1) store these."""
    stored = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {"cases": {}}
    if UPDATE:
        stored["cases"][case] = {"input": lines, "notes": got}
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(_dump(dict(sorted(stored["cases"].items()))))
        return
    assert case in stored["cases"], f"no golden notes for {case!r}: {__doc__}"
    want = stored["cases"][case]
    assert stored["fields"] == list(FIELDS)
    assert want["input"] == lines, f"the input changed; regenerate the golden file: {__doc__}"
    assert sorted(got) == sorted(want["notes"])
    for stream, notes in want["notes"].items():
        differ = [i for i, (a, b) in enumerate(zip(notes, got[stream], strict=False)) if a != b]
        assert len(got[stream]) == len(notes) and not differ, (
            f"{case}: stream {stream!r} played other notes than the stored ones (first at note "
            f"{differ[0] if differ else min(len(notes), len(got[stream]))}: stored "
            f"{notes[differ[0]] if differ else len(notes)}, played "
            f"{got[stream][differ[0]] if differ else len(got[stream])}; fields {FIELDS}). "
            f"If the change is intended: {__doc__}")


@pytest.mark.slow
def test_live_daemon_plays_the_stored_notes(shipped: Path, no_config: Path) -> None:
    """`streamsonic --output events` at the defaults (influence 0.8, the shipped model,
    auto-ranging, accents): every note of three streams as stored."""
    lines = golden_input()
    got = play(LIVE, lines, no_config)
    assert {s: len(n) for s, n in got.items()} == {"cpu": 160, "mem": 160, "temp": 160}
    assert any(n[4] for n in got["cpu"])  # the spike is accented
    check_golden("run", lines, got)


@pytest.mark.slow
def test_render_with_model_rhythm_plays_the_stored_notes(no_config: Path,
                                                         tmp_path: Path) -> None:
    """`streamsonic render --rhythm model`: the temporal model's pitches and loudness
    through the renderer's path (durations and onsets are checked in test_rhythm.py)."""
    path = default_weights("temporal")
    if not path.is_file():
        missing(f"shipped weights {path} are missing (they are in git: git checkout weights/)")
    lines = ["value", *(line.split()[0].partition("=")[2] for line in golden_input()[:100])]
    csv = tmp_path / "series.csv"
    csv.write_text("\n".join(lines) + "\n")
    got = play(["render", str(csv), "-o", "events", "--rhythm", "model"], [], no_config)
    assert len(got["value"]) == 100
    check_golden("render-rhythm", lines, got)


@pytest.mark.slow
def test_render_plays_the_stored_phrases(shipped: Path, no_config: Path,
                                         tmp_path: Path) -> None:
    """`streamsonic render` at the defaults: the data's notes and the notes the shipped
    model adds between them (``"source": "model"``), as stored."""
    lines = ["value", *(line.split()[0].partition("=")[2] for line in golden_input()[:100])]
    csv = tmp_path / "series.csv"
    csv.write_text("\n".join(lines) + "\n")
    got = play(["render", str(csv), "-o", "events"], [], no_config)
    sources = [n[5] for n in got["value"]]
    assert sources.count("data") == 100 and "model" in sources
    check_golden("render", lines, got)


# -- the shipped model has a say at the default influence --------------------------------

@pytest.fixture(scope="module")
def default_and_data_only(shipped: Path, no_config: Path,
                          ) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Each stream's pitches at the default influence (0.8) and at influence 1 (the
    data quantized to the scale, the model bypassed)."""
    lines = golden_input()
    runs = [play(LIVE + extra, lines, no_config) for extra in ([], ["--influence", "1"])]
    default, data_only = ({s: [int(n[0]) for n in notes] for s, notes in run.items()}
                          for run in runs)
    return default, data_only


@pytest.mark.slow
def test_default_influence_lets_the_model_move_notes(
    default_and_data_only: tuple[dict[str, list[int]], dict[str, list[int]]],
) -> None:
    """At influence 0.8 the shipped model moves some notes (about one in six with these
    weights) off the data's own pitch, to a neighbouring scale note; a bypassed model
    (logits ignored, influence forced to 1) moves none."""
    default, data_only = default_and_data_only
    scale = scale_pitches("major", "C", 38, 101).tolist()  # the range and its headroom
    total = moved = 0
    for stream, pitches in default.items():
        assert len(pitches) == len(data_only[stream]) == 160
        for got, data in zip(pitches, data_only[stream], strict=True):
            total += 1
            if got != data:
                moved += 1
                # Never far: the Gaussian kernel around the data keeps it within two steps.
                assert abs(scale.index(got) - scale.index(data)) <= 2, (stream, got, data)
        # The melody still follows the data.
        assert np.corrcoef(pitches, data_only[stream])[0, 1] > 0.9
    assert 0.08 * total <= moved <= 0.35 * total, f"the model moved {moved} of {total} notes"

