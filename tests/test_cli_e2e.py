"""End to end: the real `streamsonic` CLI in a subprocess, stdin in, files and JSON out."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pytest

from streamsonic.music import in_scale

EXE = [sys.executable, "-m", "streamsonic"]


def run(args: list[str], stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*EXE, *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, check=False)


def notes_of(path: Path) -> list[tuple[str, int]]:
    mid = mido.MidiFile(path)
    return [(m.type, m.note) for m in mid if m.type in ("note_on", "note_off")]


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(x: list[float]) -> np.ndarray:
        arr = np.asarray(x, dtype=float)
        order = arr.argsort(kind="stable")
        r = np.empty(len(arr))
        r[order] = np.arange(len(arr))
        for v in np.unique(arr):  # average ties
            m = arr == v
            r[m] = r[m].mean()
        return r

    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def test_printf_numbers_to_midi_file(tmp_path: Path, random_pitch_checkpoint: Path) -> None:
    out = tmp_path / "out.mid"
    res = run(["--output", f"file:{out}", "--weights", str(random_pitch_checkpoint),
               "--influence", "1"], "1\n5\n3\n9\n")
    assert res.returncode == 0, res.stderr
    seq = notes_of(out)
    ons = [n for k, n in seq if k == "note_on"]
    offs = [n for k, n in seq if k == "note_off"]
    assert len(ons) == 4 and sorted(ons) == sorted(offs)
    # notes follow the numbers: 9 is the highest, 1 the lowest of the notes after the first
    assert ons[3] >= ons[1] > ons[2]


def test_events_stream_before_eof(random_pitch_checkpoint: Path) -> None:
    proc = subprocess.Popen([*EXE, "--output", "events", "--weights", str(random_pitch_checkpoint)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdin and proc.stdout
    try:
        proc.stdin.write("cpu=0.5 mem=3\n")
        proc.stdin.flush()
        got = [json.loads(proc.stdout.readline()) for _ in range(2)]  # before EOF
        assert {g["stream"] for g in got} == {"cpu", "mem"}
        for g in got:
            for key in ("stream", "time", "value", "normalized", "pitch", "velocity",
                        "duration", "channel"):
                assert key in g
        assert proc.poll() is None  # still running: stdin is open
        proc.stdin.write("cpu=0.7\n")
        proc.stdin.close()
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 0
        assert json.loads(rest.splitlines()[0])["stream"] == "cpu"
    finally:
        proc.kill()
        proc.wait()


def test_sine_follows_the_data_in_scale(tmp_path: Path, random_pitch_checkpoint: Path) -> None:
    """A sine in four phases (its start rising, at its top, falling, at its bottom: the
    first samples of a stream decide its first reference, so one phase alone says little
    about the mapping): every note in the scale and range, and the pitch follows the
    values (Spearman over the whole stream)."""
    rhos = []
    for phase in (0.0, 0.25, 0.5, 0.75):
        values = [math.sin(2 * math.pi * (i / 40 + phase)) * 50 + 100 for i in range(240)]
        res = run(["--output", "events", "--weights", str(random_pitch_checkpoint),
                   "--influence", "1", "--scale", "dorian", "--key", "D", "--max-rate",
                   "1000", "--note-length", "0.01", "--window", "80", "--set",
                   "clock.backlog=1000"], "".join(f"{v}\n" for v in values))
        assert res.returncode == 0, res.stderr
        events = [json.loads(line) for line in res.stdout.splitlines()]
        assert len(events) == len(values)
        assert [e["value"] for e in events] == pytest.approx(values)
        pitches = [e["pitch"] for e in events]
        assert all(in_scale(p, "dorian", "D") and 50 <= p <= 89 for p in pitches)
        rhos.append(spearman(values, pitches))
    assert min(rhos) >= 0.75 and sum(rhos) / len(rhos) >= 0.8, rhos


def test_render_sine_rolling_follows_the_data(tmp_path: Path,
                                              random_pitch_checkpoint: Path) -> None:
    csv = tmp_path / "sine.csv"
    values = [math.sin(2 * math.pi * i / 50) for i in range(300)]
    csv.write_text("t,wave\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
    res = run(["render", str(csv), "--column", "wave", "-o", "events", "--normalize", "rolling",
               "--influence", "1", "--scale", "pentatonic", "--weights",
               str(random_pitch_checkpoint)])
    assert res.returncode == 0, res.stderr
    pitches = [json.loads(line)["pitch"] for line in res.stdout.splitlines()]
    assert len(pitches) == 300
    assert all(p % 12 in (0, 2, 4, 7, 9) for p in pitches)
    assert spearman(values[60:], pitches[60:]) >= 0.8


def test_render_is_deterministic_per_seed(tmp_path: Path, random_pitch_checkpoint: Path) -> None:
    csv = tmp_path / "walk.csv"
    walk = np.cumsum(np.random.default_rng(0).normal(size=200))
    csv.write_text("".join(f"{v}\n" for v in walk))
    common = ["render", str(csv), "-o", "events", "--temperature", "1.0", "--influence", "0.3",
              "--weights", str(random_pitch_checkpoint)]
    a = run([*common, "--seed", "1"])
    b = run([*common, "--seed", "1"])
    c = run([*common, "--seed", "2"])
    assert a.returncode == b.returncode == c.returncode == 0, a.stderr
    assert a.stdout == b.stdout
    assert a.stdout != c.stdout


def test_render_heavy_tailed_data_stays_audible(tmp_path: Path,
                                                random_pitch_checkpoint: Path) -> None:
    rng = np.random.default_rng(3)
    pops = np.sort((rng.pareto(1.0, 300) + 1) * 5000)[::-1].astype(int)
    csv = tmp_path / "cities.csv"
    csv.write_text("population,location,name\n" + "".join(
        f'{p},"https://maps/?q={rng.random():.4f},-{rng.random():.4f}",City{i}\n'
        for i, p in enumerate(pops)))
    midi, png = tmp_path / "out.mid", tmp_path / "out.png"
    res = run(["render", str(csv), "--column", "population", "-o", str(midi), "--plot", str(png),
               "--influence", "1", "--weights", str(random_pitch_checkpoint)])
    assert res.returncode == 0, res.stderr
    # channel 10 (9) holds the accent earcons, not data notes
    ons = [m.note for m in mido.MidiFile(midi) if m.type == "note_on" and m.channel != 9]
    assert len(ons) == 300
    assert len(set(ons)) >= 15  # plain min-max would put nearly all on one pitch
    assert max(ons.count(p) for p in set(ons)) < 40
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_sigint_leaves_a_valid_file_with_every_note_off(tmp_path: Path,
                                                        random_pitch_checkpoint: Path) -> None:
    out = tmp_path / "live.mid"
    proc = subprocess.Popen([*EXE, "--output", f"file:{out}", "--output", "events",
                             "--weights", str(random_pitch_checkpoint), "--note-length", "16",
                             "--tempo", "30"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdin and proc.stdout
    proc.stdin.write("a=1 b=2\n")
    proc.stdin.flush()
    for _ in range(2):
        proc.stdout.readline()  # both notes are sounding now (32 s long)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    seq = notes_of(out)
    ons = sorted(n for k, n in seq if k == "note_on")
    offs = sorted(n for k, n in seq if k == "note_off")
    assert len(ons) == 2 and ons == offs
    proc.stdin.close()


def test_sigterm_exits_zero(random_pitch_checkpoint: Path) -> None:
    proc = subprocess.Popen([*EXE, "--output", "events", "--weights", str(random_pitch_checkpoint)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdin and proc.stdout
    proc.stdin.write("1\n")
    proc.stdin.flush()
    proc.stdout.readline()
    proc.terminate()
    assert proc.wait(timeout=30) == 0
    proc.stdin.close()


def test_clear_errors_and_exit_statuses(tmp_path: Path) -> None:
    res = run(["--weights", str(tmp_path / "missing.pt"), "--output", "events"], "1\n")
    assert res.returncode == 66
    assert res.stderr.strip().splitlines()[-1].startswith("streamsonic: error: weights file")
    assert "streamsonic train pitch" in res.stderr
    not_ckpt = tmp_path / "x.pt"
    not_ckpt.write_bytes(b"garbage")
    res = run(["--weights", str(not_ckpt), "--output", "events"], "1\n")
    assert res.returncode == 66 and "not a streamsonic checkpoint" in res.stderr
    res = run(["--output", "bogus:thing"], "1\n")
    assert res.returncode == 64 and "unknown output" in res.stderr
    res = run(["render", str(tmp_path / "nope.csv"), "-o", "events"])
    assert res.returncode == 66 and "does not exist" in res.stderr
    csv = tmp_path / "a.csv"
    csv.write_text("x,y\n1,2\n")
    res = run(["render", str(csv), "--column", "z", "-o", "events"])
    assert res.returncode == 64 and "columns are" in res.stderr
    res = run(["render", str(csv), "-o", "audio"])
    assert res.returncode == 64 and "live-only" in res.stderr
    res = run(["--key", "H"], "")
    assert res.returncode == 78 and "music.key" in res.stderr


def test_render_names_only_what_it_can_write(tmp_path: Path) -> None:
    """``render x.csv -o foo.txt`` suggested audio, midi and mqtt outputs, which render
    refuses (live-only); its errors name what it writes, a URL's user name redacted."""
    csv = tmp_path / "a.csv"
    csv.write_text("1\n2\n")
    for output in ("foo.txt", "audio", "midi:x", "mqtt:mqtt://bob@localhost/notes"):
        res = run(["render", str(csv), "-o", output])
        assert res.returncode == 64, res.stderr
        error = res.stderr.strip().splitlines()[-1]
        assert "OUT.mid, OUT.wav, file:PATH, wav:PATH or events" in error, error
        for live in ("audio[", "midi:NAME", "mqtt:PREFIX", "bob"):
            assert live not in error, error
    res = run(["run", "-o", "foo.txt"], "")  # run's error still names every output
    assert res.returncode == 64 and "audio[:DEVICE]" in res.stderr and "mqtt:PREFIX" in res.stderr


def test_help_does_not_import_heavy_modules() -> None:
    for args in (["--help"], ["run", "--help"], ["render", "--help"], ["train", "--help"]):
        res = subprocess.run([sys.executable, "-X", "importtime", "-m", "streamsonic", *args],
                             capture_output=True, text=True, check=False,
                             env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
        assert res.returncode == 0, res.stderr
        imported = {line.split("|")[-1].strip() for line in res.stderr.splitlines()}
        assert not {"torch", "numba", "rtmidi", "fluidsynth", "numpy"} & imported, args
    assert "--influence" in run(["run", "--help"]).stdout


LIVE_ONLY_FLAGS = ("--clock", "--max-rate", "--aggregate", "--midi-api")


@pytest.mark.parametrize("command", ["render", "demo"])
def test_render_offers_no_flag_it_would_ignore(command: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A render spaces its rows by --step and writes files: the live clock's flags and the
    MIDI port backend would do nothing there, so its --help does not offer them and a
    command line with one is refused (64) instead of silently ignoring it."""
    from streamsonic.cli import main

    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out
    assert "--step" in shown and "--influence" in shown
    for flag in LIVE_ONLY_FLAGS:
        assert flag not in shown, flag
        with pytest.raises(SystemExit) as done:
            main([command, "x.csv", flag, "1"] if command == "render" else [command, flag, "1"])
        assert done.value.code == 64, flag
    for live in ("run", "replay"):  # where they do something, they stay
        with pytest.raises(SystemExit):
            main([live, "--help"])
        shown = capsys.readouterr().out
        assert all(flag in shown for flag in LIVE_ONLY_FLAGS), live


def test_shipped_weights_are_the_default() -> None:
    res = run(["--output", "events", "--influence", "0.5"], "1\n2\n")
    assert res.returncode == 0, res.stderr
    # one data note per sample (the model may add notes between them: "source": "model")
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert [e["source"] for e in events].count("data") == 2
    assert Path(__file__).parents[1].joinpath("weights", "pitch.pt").is_file()


def test_events_stdout_stays_json_when_fluidsynth_loads(tmp_path: Path,
                                                        random_pitch_checkpoint: Path) -> None:
    """pyfluidsynth prints to stdout on import when $CI is set; events must stay clean."""
    csv = tmp_path / "x.csv"
    csv.write_text("1\n3\n2\n")
    res = subprocess.run([*EXE, "render", str(csv), "-o", "events", "-o", str(tmp_path / "x.wav"),
                          "--weights", str(random_pitch_checkpoint)],
                         capture_output=True, text=True, timeout=120, check=False,
                         env={**os.environ, "CI": "true"})
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert [e["value"] for e in events if e["source"] == "data"] == [1.0, 3.0, 2.0]
    assert (tmp_path / "x.wav").stat().st_size > 44


def test_a_spike_does_not_flatten_the_other_values(random_pitch_checkpoint: Path) -> None:
    wave = [1, 4, 7, 10, 8, 5, 2, 3, 6, 9]
    values = [*wave, *wave, 10**9, *[v + 0.5 for v in wave]]
    res = run(["--output", "events", "--weights", str(random_pitch_checkpoint), "--influence",
               "1", "--scale", "chromatic", "--set", "clock.backlog=100", "--max-rate", "200"],
              "".join(f"{v}\n" for v in values))
    assert res.returncode == 0, res.stderr
    pitches = {json.loads(line)["value"]: json.loads(line)["pitch"]
               for line in res.stdout.splitlines()}
    assert pitches[1e9] == 89 + 12  # far beyond the ordinary range: the headroom band's end
    after = [pitches[v + 0.5] for v in wave]
    assert len(set(after)) >= 8  # still the same melody after the spike, not one pitch
    assert spearman([float(v) for v in wave], after) >= 0.9


def test_a_far_value_does_not_stop_the_daemon(random_pitch_checkpoint: Path) -> None:
    """One value of 1e200 on stdin: 100 samples later the window's periodic re-summing
    squared it and raised OverflowError, a traceback that stopped the daemon (every
    normalization mode). It plays, far above, and so do the samples after it."""
    values = [50 + 10 * math.sin(i / 7) for i in range(1000)]
    values[700] = 1e200
    res = run(["--output", "events", "--weights", str(random_pitch_checkpoint),
               "--set", "clock.backlog=100000", "--max-rate", "1000",
               "--set", "model.passing_notes=0"],
              stdin="".join(f"{v!r}\n" for v in values))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    notes = [json.loads(line) for line in res.stdout.splitlines()]
    assert [n["value"] for n in notes] == values
    far = notes[700]
    assert far["pitch"] > max(n["pitch"] for n in notes[600:700]), far
