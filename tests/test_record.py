"""Record and replay (issue 11 item 7): ``run --record`` and ``streamsonic replay``.

Golden: a run of fixed input is recorded, then replayed (in real time and with --fast); with
the same seed and config the events are the same, note for note. The real CLI in
subprocesses; the recorder and the virtual-time loop also directly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from streamsonic.config import ClockConfig, ModelConfig, OutputConfig
from streamsonic.events import Sample
from streamsonic.record import Recorder, ReplaySource, VirtualTimeLoop, read_record
from tests.fixtures_mqtt import Broker, publish
from tests.test_golden import golden_input

EXE = [sys.executable, "-m", "streamsonic"]
#: Every sample plays its own note, whatever the machine's speed (as in test_golden).
EVERY = ["--set", "clock.backlog=100000", "--max-rate", "1000"]
#: Fields of an event that depend on when the run happened, not on what it played.
CLOCK_FIELDS = ("start",)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The defaults (no user or /etc config), except notes that depend on the wall clock:
    notes a model adds between the data's (``model.passing_notes``, where that exists) fill
    the time until the stream's next note, which a real-time run measures with its timers'
    jitter; the replay of a run cannot repeat that jitter (``--fast`` repeats itself
    exactly, tested below)."""
    out = {k: v for k, v in os.environ.items() if k != "STREAMSONIC_CONFIG"}
    config = tmp_path / "config.toml"
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    config.write_text("[model]\npassing_notes = 0\n" if "passing_notes" in names else "")
    out["STREAMSONIC_CONFIG"] = str(config)
    return out


def cli(args: list[str], env: dict[str, str], stdin: str = "",
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EXE, *args, "--device", "cpu"], input=stdin, capture_output=True,
                          text=True, timeout=timeout, check=False, env=env)


def events(text: str, data_only: bool = True) -> list[dict[str, Any]]:
    """The events output without its clock fields; ``data_only``: the notes that samples
    played (not those a model plays between them on its own clock, if any)."""
    out = []
    for line in text.splitlines():
        event = json.loads(line)
        if data_only and event.get("source", "data") != "data":
            continue
        for key in CLOCK_FIELDS:
            event.pop(key)
        out.append(event)
    return out


def by_stream(notes: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each stream's notes in order (streams interleave as their timers fire)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for note in notes:
        out.setdefault(note["stream"], []).append(note)
    return out


def timeline(text: str) -> list[tuple[Any, ...]]:
    """Every note, with its start relative to the first note's."""
    notes = [json.loads(line) for line in text.splitlines()]
    t0 = notes[0]["start"] if notes else 0.0
    return [(round(n.pop("start") - t0, 9), *sorted(n.items())) for n in notes]


def starts(text: str) -> list[float]:
    return [json.loads(line)["start"] for line in text.splitlines()]


def write_recording(path: Path, rows: list[tuple[str, float, float]]) -> None:
    """A recording by hand: (stream, value, arrival) with time = arrival."""
    path.write_text("".join(json.dumps({"stream": s, "time": a, "value": v, "arrival": a}) + "\n"
                            for s, v, a in rows))


# -- golden: record, replay, same notes ----------------------------------------------------

def test_replay_plays_the_recorded_notes_note_for_note(tmp_path: Path, env: dict[str, str],
                                                       random_pitch_checkpoint: Path) -> None:
    lines = golden_input()
    rec = tmp_path / "session.jsonl"
    common = ["--output", "events", *EVERY, "--weights", str(random_pitch_checkpoint),
              "--seed", "7", "--temperature", "0.8"]  # sampling: the seed matters too
    original = cli(["run", *common, "--record", str(rec)], env, "\n".join(lines) + "\n")
    assert original.returncode == 0, original.stderr
    played = events(original.stdout)
    assert len(played) == 3 * len(lines)  # three streams a line, a note each
    recorded = [json.loads(line) for line in rec.read_text().splitlines()]
    assert len(recorded) == 3 * len(lines)  # every sample, in the order taken in
    assert [r["stream"] for r in recorded[:3]] == ["cpu", "mem", "temp"]
    first = lines[0].split()
    assert [r["value"] for r in recorded[:3]] == [float(f.split("=")[1]) for f in first]
    assert all(set(r) == {"stream", "time", "value", "arrival"} for r in recorded)
    arrivals = [r["arrival"] for r in recorded]
    assert arrivals == sorted(arrivals)

    again = cli(["replay", str(rec), *common], env)
    assert again.returncode == 0, again.stderr
    assert by_stream(events(again.stdout)) == by_stream(played)

    fast = cli(["replay", str(rec), "--fast", *common], env)
    assert fast.returncode == 0, fast.stderr
    assert by_stream(events(fast.stdout)) == by_stream(played)
    # on the virtual clock a replay is exactly repeatable: every note, and when it starts,
    # with the config's defaults (notes the model adds included)
    # (one PYTHONHASHSEED for both: the order in which notes of different streams due at
    # the same moment are sent is not something a recording can fix)
    defaults = {**env, "STREAMSONIC_CONFIG": str(tmp_path / "empty.toml"),
                "PYTHONHASHSEED": "0"}
    (tmp_path / "empty.toml").write_text("")
    fast1, fast2 = (cli(["replay", str(rec), "--fast", *common], defaults) for _ in range(2))
    assert fast1.returncode == 0, fast1.stderr
    assert len(fast1.stdout.splitlines()) >= len(lines)
    assert timeline(fast2.stdout) == timeline(fast1.stdout)

    other_seed = cli(["replay", str(rec), "--fast", *common, "--seed", "8"], env)
    # the comparison can tell runs apart
    assert by_stream(events(other_seed.stdout)) != by_stream(played)


def test_fast_replay_keeps_the_original_timing(tmp_path: Path, env: dict[str, str],
                                               random_pitch_checkpoint: Path) -> None:
    """Twenty minutes of recording at the default rate cap: --fast takes seconds, and the
    notes start exactly as far apart as the samples arrived (the engine's clock is the
    recording's); samples closer than the cap wait their turn as they would have."""
    rows = [("a", float(i % 5), 1000.0 + 60.0 * i) for i in range(20)]
    rows += [("b", 1.0, 3000.0), ("b", 2.0, 3000.01), ("b", 3.0, 3000.02)]
    rec = tmp_path / "rec.jsonl"
    write_recording(rec, sorted(rows, key=lambda r: r[2]))
    res = cli(["replay", str(rec), "--fast", "--output", "events", "--weights",
               str(random_pitch_checkpoint)], env, timeout=120)
    assert res.returncode == 0, res.stderr
    notes = [json.loads(line) for line in res.stdout.splitlines()]
    a = [n["start"] for n in notes if n["stream"] == "a" and n.get("source", "data") == "data"]
    assert len(a) == 20
    assert all(abs((y - x) - 60.0) < 1e-6 for x, y in itertools.pairwise(a))
    b = [n for n in notes if n["stream"] == "b" and n.get("source", "data") == "data"]
    assert len(b) == 3  # at the default cap: 1 / max_rate apart, not 0.01
    cap = 1.0 / ClockConfig().max_rate
    assert all(abs((y - x) - cap) < 1e-6
               for x, y in itertools.pairwise(n["start"] for n in b))
    assert [n["time"] for n in b] == [3000.0, 3000.01, 3000.02]


def test_speed_divides_the_gaps(tmp_path: Path, env: dict[str, str],
                                random_pitch_checkpoint: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    write_recording(rec, [("a", 1.0, 10.0), ("a", 2.0, 11.2), ("a", 3.0, 12.4)])
    res = cli(["replay", str(rec), "--speed", "4", "--output", "events", "--weights",
               str(random_pitch_checkpoint)], env)
    assert res.returncode == 0, res.stderr
    gaps = [y - x for x, y in itertools.pairwise(starts(res.stdout))]
    assert len(gaps) == 2
    # 1.2 s recorded -> 0.3 s at speed 4: never sooner; well under the recorded gap
    assert all(0.29 <= g < 1.0 for g in gaps), gaps


# -- the recording's files ---------------------------------------------------------------

def test_recording_rotates_never_overwrites_and_replays_across_files(
        tmp_path: Path, env: dict[str, str], random_pitch_checkpoint: Path) -> None:
    earlier = tmp_path / "rec-1.jsonl"
    earlier.write_text("an earlier file\n")
    lines = [f"s{i % 50}={i}" for i in range(1500)]
    common = ["--output", "events", *EVERY, "--weights", str(random_pitch_checkpoint)]
    original = cli(["run", *common, "--record", str(tmp_path / "rec-{n}.jsonl"),
                    "--set", "output.rotate_bytes=65536"], env, "\n".join(lines) + "\n")
    assert original.returncode == 0, original.stderr
    files = sorted(tmp_path.glob("rec-*.jsonl"))
    kept = [p for p in files if p.read_text() == "an earlier file\n"]
    assert len(kept) == 1 and kept[0] != earlier  # kept aside, not overwritten
    ours = [p for p in files if p not in kept]
    assert len(ours) >= 2  # ~110 kB of lines, 64 kB a file
    assert all(p.stat().st_size <= 65536 for p in ours)
    ordered = sorted(ours, key=lambda p: json.loads(p.read_text().splitlines()[0])["arrival"])
    replay = cli(["replay", *map(str, ordered), *common, "--fast"], env)
    assert replay.returncode == 0, replay.stderr
    assert by_stream(events(replay.stdout)) == by_stream(events(original.stdout))


def test_sigkill_leaves_whole_lines_up_to_the_last_flush(tmp_path: Path, env: dict[str, str],
                                                         random_pitch_checkpoint: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    proc = subprocess.Popen(
        [*EXE, "run", "--output", "events", "--weights", str(random_pitch_checkpoint),
         "--device", "cpu", "--record", str(rec), "--set", "output.flush_interval=0.2"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.stdin is not None
    try:
        for i in range(200):
            proc.stdin.write(f"x={i}\n".encode())
        proc.stdin.flush()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the flush delay is bounded: all 200 appear
            if rec.exists() and rec.read_bytes().count(b"\n") >= 200:
                break
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    data = rec.read_bytes()
    assert data.endswith(b"\n")
    values = [json.loads(line)["value"] for line in data.splitlines()]
    assert values == [float(i) for i in range(200)]


def test_two_runs_recording_one_name_never_share_a_file(
        tmp_path: Path, env: dict[str, str], random_pitch_checkpoint: Path) -> None:
    """A second run recording to the name a running one has just started (its file still
    empty: nothing flushed yet) keeps that file aside; it used to write into it too, and the
    first run's lines then overwrote its line (a sample lost, both exiting 0)."""
    rec = tmp_path / "same.jsonl"
    args = [*EXE, "run", "--output", "events", "--weights", str(random_pitch_checkpoint),
            "--device", "cpu", "--record", str(rec), "--set", "output.flush_interval=60"]
    first = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        while not rec.exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = subprocess.run(args, input=b"3\n", capture_output=True, timeout=180,
                                check=False, env=env)
        assert second.returncode == 0, second.stderr
        _, err = first.communicate(b"1\n2\n", timeout=180)
        assert first.returncode == 0, err
    finally:
        first.kill()
        first.wait()
    aside = tmp_path / "same-1.jsonl"
    assert sorted(tmp_path.glob("same*.jsonl")) == [aside, rec]
    assert [json.loads(line)["value"] for line in rec.read_text().splitlines()] == [3.0]
    assert [json.loads(line)["value"] for line in aside.read_text().splitlines()] == [1.0, 2.0]
    assert f"recorded 1 samples to {rec}\n" in second.stderr.decode()
    assert f"recorded 2 samples to {aside}\n" in err.decode()


# -- bad input -----------------------------------------------------------------------------

def test_replay_skips_malformed_lines_and_refuses_missing_files(
        tmp_path: Path, env: dict[str, str], random_pitch_checkpoint: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    good = [json.dumps({"stream": "a", "time": 1.0, "value": v, "arrival": 1.0 + v})
            for v in (1.0, 2.0)]
    rec.write_text("\n".join([good[0], "not json", '{"stream": "a"}', "[1, 2]",
                              '{"stream": "a", "time": 1, "value": "x", "arrival": 2}',
                              '{"stream": 5, "time": 1, "value": 1, "arrival": 2}',
                              good[1], '{"stream": "a", "time": 1, "val']))  # cut by a kill
    res = cli(["replay", str(rec), "--fast", "--output", "events", "--weights",
               str(random_pitch_checkpoint)], env)
    assert res.returncode == 0, res.stderr
    assert [json.loads(line)["value"] for line in res.stdout.splitlines()] == [1.0, 2.0]
    assert "skipped.malformed=6" in res.stderr
    assert "Traceback" not in res.stderr

    missing = cli(["replay", str(tmp_path / "nope.jsonl"), "--fast", "-o", "events"], env)
    assert missing.returncode == 66
    assert missing.stderr.strip().count("\n") == 0 and "nope.jsonl" in missing.stderr

    empty = tmp_path / "empty.jsonl"
    empty.write_text("nothing here\n")
    res = cli(["replay", str(empty), "--fast", "-o", "events", "--weights",
               str(random_pitch_checkpoint)], env)
    assert res.returncode == 65 and "no recorded samples" in res.stderr


def test_fast_refuses_real_time_outputs_and_record_refuses_a_bad_path(
        tmp_path: Path, env: dict[str, str]) -> None:
    rec = tmp_path / "rec.jsonl"
    write_recording(rec, [("a", 1.0, 1.0)])
    res = cli(["replay", str(rec), "--fast", "--output", "audio"], env)
    assert res.returncode == 64 and "real time" in res.stderr
    res = cli(["replay", str(rec), "--speed", "0"], env)
    assert res.returncode == 64
    res = cli(["run", "--output", "events", "--record", str(tmp_path / "no" / "r.jsonl")], env,
              "1\n")
    assert res.returncode == 69 and "does not exist" in res.stderr


@pytest.mark.parametrize("output", ["file:{}.mid", "{}.mid", "wav:{}.wav"])
def test_record_refuses_the_path_an_output_writes(tmp_path: Path, env: dict[str, str],
                                                  output: str) -> None:
    """``--record`` onto the file an output writes: both wrote it, each over the other's
    bytes (exit 0, a file neither mido nor replay could read). Refused before anything
    starts: exit 64, one line, nothing written."""
    target = output.format(tmp_path / "same")
    path = target.partition(":")[2] or target
    res = cli(["run", "--output", target, "--record", path], env, "1\n2\n")
    assert res.returncode == 64, res.stderr
    assert "same file" in res.stderr and res.stderr.strip().count("\n") == 0
    assert not list(tmp_path.glob("same*"))


def test_fast_replay_leaves_out_a_break_in_the_arrivals(
        tmp_path: Path, env: dict[str, str], random_pitch_checkpoint: Path) -> None:
    """An arrival far beyond the last one (a corrupt 1e308, or separate runs' recordings
    replayed together, 8 days apart) is a break, not a pause: left out, counted and warned,
    the replay playing on at once (under --fast, the 1e308 one never ended: the stats
    timer ran through the gap; the 8 days took seconds of stats lines)."""
    rec = tmp_path / "rec.jsonl"
    lines: list[dict[str, Any]] = [
        {"stream": "a", "time": float(i), "value": float(i % 5), "arrival": 100.0 + i}
        for i in range(6)]
    lines.append({"stream": "a", "time": 6.0, "value": 2.0, "arrival": 8 * 86400.0})
    lines.append({"stream": "a", "time": 7.0, "value": 3.0, "arrival": 8 * 86400.0 + 1})
    lines.append({"stream": "a", "time": 8.0, "value": 4.0, "arrival": 1e308})
    rec.write_text("".join(json.dumps(line) + "\n" for line in lines))
    res = cli(["replay", str(rec), "--fast", "--output", "events", "--weights",
               str(random_pitch_checkpoint)], env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert [json.loads(x)["value"] for x in res.stdout.splitlines()] == [
        float(line["value"]) for line in lines]
    assert "gaps=2" in res.stderr and "left out of the replay" in res.stderr
    assert res.stderr.count("stats:") <= 1


def test_fast_replay_logs_stats_on_the_wall_clock(
        tmp_path: Path, env: dict[str, str], random_pitch_checkpoint: Path) -> None:
    """The stats line comes every daemon.stats_interval seconds of real time: a fast
    replay of 10 hours of arrivals (a sample every 30 minutes) took a second and logged a
    stats line for every virtual minute (600) before 2026-12-06."""
    rec = tmp_path / "rec.jsonl"
    rec.write_text("".join(json.dumps({"stream": "a", "time": 1800.0 * i, "value": i % 7,
                                       "arrival": 1e9 + 1800.0 * i}) + "\n"
                           for i in range(21)))
    res = cli(["replay", str(rec), "--fast", "--output", "events", "--weights",
               str(random_pitch_checkpoint), "--set", "daemon.stats_interval=60"],
              env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert len(events(res.stdout)) == 21
    assert res.stderr.count("stats:") <= 1, res.stderr


@pytest.mark.parametrize(("at", "how", "gaps"), [
    (5, "corrupt", 2), (5, "back", 1), (5, "back a month", 1)])
def test_a_break_keeps_the_gaps_that_follow(tmp_path: Path, env: dict[str, str],
                                            random_pitch_checkpoint: Path, at: int, how: str,
                                            gaps: int) -> None:
    """After a corrupt arrival (1e300: a break, then the next arrival is before it) or a
    clock set back, the samples that follow keep their recorded gaps (0.5 s here). A QA
    pass at 36e50ff: every later sample was taken as already due and played at once,
    aggregated (66 data notes became 34), a backward jump without a word."""
    rec = tmp_path / "rec.jsonl"
    arrivals = [1_700_000_000.0 + 0.5 * i for i in range(12)]
    if how == "corrupt":
        arrivals[at] = 1e300
    else:
        shift = 100.0 if how == "back" else 30 * 86400.0
        arrivals[at:] = [a - shift for a in arrivals[at:]]
    rec.write_text("".join(json.dumps({"stream": "a", "time": float(i), "value": float(i % 4),
                                       "arrival": arrival}) + "\n"
                           for i, arrival in enumerate(arrivals)))
    res = cli(["replay", str(rec), "--fast", "--output", "events", "--weights",
               str(random_pitch_checkpoint), "--set", "model.passing_notes=0"], env,
              timeout=60)
    assert res.returncode == 0, res.stderr
    notes = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(notes) == 12, res.stdout  # none folded into another
    spacing = [round(b["start"] - a["start"], 3) for a, b in itertools.pairwise(notes)]
    # (the one or two without a gap wait for the rate cap; from the next on, the recording's)
    assert spacing[at + 2:] == [0.5] * (11 - at - 2), spacing
    assert f"gaps={gaps}" in res.stderr, res.stderr
    if how != "corrupt":
        assert "before the one before it" in res.stderr


@pytest.mark.parametrize("limit", [0, 150_000])
def test_recorded_counts_only_the_lines_written(tmp_path: Path, env: dict[str, str],
                                               random_pitch_checkpoint: Path,
                                               limit: int) -> None:
    """A record file that cannot take every line (a full disk: here a file size limit,
    RLIMIT_FSIZE; 0: not a byte): ``recorded=N`` is the lines the file holds, and the lines
    lost are counted as ``record_lost``. Before, on a full tmpfs: recorded=772, 0 bytes."""
    import resource

    rec = tmp_path / "rec.jsonl"
    lines = 3000

    def cap() -> None:  # Python ignores SIGXFSZ: a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    res = subprocess.run(
        [*EXE, "run", "--output", "events", "--record", str(rec), "--weights",
         str(random_pitch_checkpoint), "--device", "cpu"],
        input="".join(f"a={i % 7}.5\n" for i in range(lines)), capture_output=True,
        text=True, timeout=180, check=False, env=env, preexec_fn=cap)
    assert res.returncode == 74, res.stderr
    assert "recording stopped" in res.stderr
    stopped = next(x for x in res.stderr.splitlines() if "stopped:" in x)
    stats = dict(kv.split("=") for kv in stopped.rpartition("input ")[2].split(", "))
    held = len(rec.read_bytes().splitlines())
    assert 0 < rec.stat().st_size <= limit if limit else rec.stat().st_size == 0
    assert int(stats["recorded"]) == held, res.stderr
    assert int(stats["recorded"]) + int(stats["record_lost"]) == lines, res.stderr


# -- the pieces ----------------------------------------------------------------------------

def test_every_stream_name_run_records_replays(tmp_path: Path, env: dict[str, str],
                                               random_pitch_checkpoint: Path) -> None:
    """The empty name (a JSON key "") is a stream that run plays and records; the replay
    used to skip its lines as not recorded samples."""
    rec = tmp_path / "w.jsonl"
    common = ["--output", "events", *EVERY, "--weights", str(random_pitch_checkpoint)]
    original = cli(["run", *common, "--record", str(rec)], env, '{"":1,"a":2}\n{"":3}\n')
    assert original.returncode == 0, original.stderr
    assert [json.loads(line)["stream"] for line in rec.read_text().splitlines()] == \
        ["", "a", ""]
    replay = cli(["replay", str(rec), *common, "--fast"], env)
    assert replay.returncode == 0, replay.stderr
    assert "skipped" not in replay.stderr and "malformed" not in replay.stderr
    assert by_stream(events(replay.stdout)) == by_stream(events(original.stdout))
    assert read_record(b'{"stream":"","time":1,"value":2,"arrival":3}') == \
        (Sample("", 1.0, 2.0), 3.0)


def test_read_record_round_trips_exact_floats() -> None:
    line = json.dumps({"stream": "é", "time": 0.1 + 0.2, "value": 1e-300, "arrival": 5})
    record = read_record(line.encode())
    assert record == (Sample("é", 0.1 + 0.2, 1e-300), 5.0)
    assert read_record(b'{"stream":"a","time":1,"value":NaN,"arrival":1}') is None
    assert read_record(b'{"stream":"a","time":true,"value":1,"arrival":1}') is None


def test_recorder_flush_delay_is_bounded(tmp_path: Path) -> None:
    """A line waits in the buffer at most output.flush_interval (virtual) seconds."""
    path = tmp_path / "r.jsonl"
    loop = VirtualTimeLoop()
    try:
        async def go() -> list[int]:
            recorder = Recorder(str(path), OutputConfig(flush_interval=2.0))
            recorder.record(Sample("a", 1.0, 1.0))
            sizes = [path.stat().st_size]
            await asyncio.sleep(1.9)
            sizes.append(path.stat().st_size)
            await asyncio.sleep(0.2)
            sizes.append(path.stat().st_size)
            recorder.close()
            return sizes

        sizes = loop.run_until_complete(go())
    finally:
        loop.close()
    assert sizes[0] == 0 and sizes[1] == 0 and sizes[2] > 0


def _record_every_tenth_second(pattern: Path, count: int,
                               caplog: pytest.LogCaptureFixture) -> tuple[list[Path], str]:
    """Record ``count`` samples 0.1 s apart with files of 1 s: the files, and the log line
    that ends the recording."""
    loop = VirtualTimeLoop()
    try:
        async def go() -> list[Path]:
            recorder = Recorder(str(pattern), OutputConfig(rotate_seconds=1.0))
            for i in range(count):
                recorder.record(Sample("a", float(i), float(i)))
                await asyncio.sleep(0.1)
            recorder.close()
            return recorder.files

        with caplog.at_level("INFO", logger="streamsonic.record"):
            files = loop.run_until_complete(go())
    finally:
        loop.close()
    ended = [r.getMessage() for r in caplog.records if r.getMessage().startswith("recorded")]
    caplog.clear()
    return files, ended[-1]


def test_the_last_log_line_names_the_files_as_they_are_named_now(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Every file (or, when many, their count and the first and the last), under its final
    name: a plain name's earlier parts are kept aside as NAME-N; it used to name only the
    last three files, by their names before that."""
    files, line = _record_every_tenth_second(tmp_path / "rot-{n}.jsonl", 40, caplog)
    names = [tmp_path / f"rot-{n}.jsonl" for n in (1, 2, 3, 4)]
    assert files == names and sorted(tmp_path.iterdir()) == names
    assert line == f"recorded 40 samples to {', '.join(map(str, names))}"
    plain = tmp_path / "plain" / "plainrot.jsonl"
    plain.parent.mkdir()
    files, line = _record_every_tenth_second(plain, 60, caplog)
    names = [plain.with_name(f"plainrot-{n}.jsonl") for n in (1, 2, 3, 4, 5)] + [plain]
    assert files == names and sorted(plain.parent.iterdir()) == sorted(names)
    assert [json.loads(f.read_text().splitlines()[0])["value"] for f in files] == \
        [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    assert line == f"recorded 60 samples to 6 files, {names[0]} ... {plain}"


def _note(seen: list[tuple[str, float]], name: str, loop: asyncio.AbstractEventLoop,
          start: float) -> None:
    seen.append((name, loop.time() - start))


def test_virtual_loop_jumps_to_timers_in_order() -> None:
    loop = VirtualTimeLoop()
    seen: list[tuple[str, float]] = []
    try:
        start = loop.time()
        wall = time.monotonic()
        for name, delay in (("c", 3600.0), ("a", 1.0), ("b", 60.0)):
            loop.call_later(delay, _note, seen, name, loop, start)
        loop.run_until_complete(asyncio.sleep(7200))
        assert time.monotonic() - wall < 60  # two hours of timers, no waiting for them
    finally:
        loop.close()
    assert [name for name, _ in seen] == ["a", "b", "c"]
    assert [when for _, when in seen] == pytest.approx([1.0, 60.0, 3600.0], abs=1e-9)


def test_replay_source_counts(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    write_recording(rec, [("a", 1.0, 0.0), ("b", 2.0, 0.5)])
    source = ReplaySource.open([str(rec)])
    loop = VirtualTimeLoop()
    try:
        async def go() -> list[Sample]:
            async with source:
                return [s async for s in source]

        got = loop.run_until_complete(go())
    finally:
        loop.close()
    assert got == [Sample("a", 0.0, 1.0), Sample("b", 0.5, 2.0)]
    assert source.stats == {"records": 2, "samples": 2}


def test_replay_plays_rotated_files_in_time_order_whatever_the_order_given(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A plain name rotated 12 times leaves rb-1 .. rb-11 and the newest at rb.jsonl; the
    shell's rb*.jsonl gives rb-1, rb-10, rb-11, rb-2, ... rb.jsonl. The replay orders them by
    their first arrivals (one line says so): every sample in order, no backward arrival;
    it used to play them as given, each jump back a break without its gap."""
    names = [f"rb-{n}.jsonl" for n in range(1, 12)] + ["rb.jsonl"]
    for part, name in enumerate(names):
        (tmp_path / name).write_text("not a sample\n")  # (the first valid line counts)
        with (tmp_path / name).open("a") as file:
            file.write("".join(json.dumps({"stream": "a", "time": t, "value": t,
                                           "arrival": t}) + "\n"
                               for t in (part * 10.0, part * 10.0 + 5.0)))
    given = sorted(str(p) for p in tmp_path.glob("rb*.jsonl"))
    assert given[1].endswith("rb-10.jsonl")
    source = ReplaySource.open(given)
    loop = VirtualTimeLoop()
    try:
        async def go() -> tuple[list[Sample], float]:
            start = asyncio.get_running_loop().time()
            async with source:
                got = [s async for s in source]
            return got, asyncio.get_running_loop().time() - start

        with caplog.at_level("INFO", logger="streamsonic.record"):
            got, took = loop.run_until_complete(go())
    finally:
        loop.close()
    assert [s.value for s in got] == [t for part in range(12) for t in (part * 10.0,
                                                                         part * 10.0 + 5.0)]
    assert "gaps" not in source.stats and took == pytest.approx(115.0)
    ordered = ", ".join(str(tmp_path / name) for name in names)
    assert f"playing the recordings in the order of their first arrivals, not as given: " \
        f"{ordered}" in caplog.text
    caplog.clear()
    in_order = ReplaySource.open([str(tmp_path / name) for name in names])
    assert in_order._in_time_order() == in_order.paths and not caplog.text


def test_recording_source_is_the_source_it_wraps(tmp_path: Path) -> None:
    """The daemon asks the source for receipts (MQTT acknowledgements), its connection and
    reconfiguration; through the recorder it gets the wrapped source's answers."""
    from streamsonic.events import Arrival, Holding
    from streamsonic.record import RecordingSource
    from streamsonic.sources import Connecting

    class Network:
        stats: dict[str, int] = {"samples": 1}  # noqa: RUF012 - a test double
        connected = True
        waiting_for = None

        def hold(self) -> str:
            return "receipt"

        def arrived(self) -> float:
            return 12.5

        async def check_reconfigure(self, config: object) -> None:
            return None

        def reconfigure(self, config: object) -> list[str]:
            return ["mqtt.url"]

    class Plain:
        stats: dict[str, int] = {}  # noqa: RUF012 - a test double

    recorder = Recorder(str(tmp_path / "r.jsonl"), OutputConfig())
    wrapped: Any = RecordingSource(Network(), recorder)  # type: ignore[arg-type]
    kinds = [isinstance(wrapped, kind) for kind in (Holding, Arrival, Connecting)]
    assert kinds == [True, True, True]
    assert wrapped.hold() == "receipt" and wrapped.reconfigure(None) == ["mqtt.url"]
    assert wrapped.arrived() == 12.5 and wrapped.connected and wrapped.waiting_for is None
    assert wrapped.stats == {"samples": 1, "recorded": 0}
    # on the class itself, as isinstance with a protocol looks from Python 3.12 on
    for name in ("hold", "arrived", "connected", "waiting_for", "check_reconfigure",
                 "reconfigure"):
        inspect.getattr_static(wrapped, name)
    plain: Any = RecordingSource(Plain(), recorder)  # type: ignore[arg-type]
    assert [isinstance(plain, kind) for kind in (Holding, Arrival, Connecting)] == [False] * 3
    assert isinstance(plain, RecordingSource) and isinstance(wrapped, RecordingSource)
    recorder.close()


@pytest.mark.mqtt
def test_record_an_mqtt_run(tmp_path: Path, env: dict[str, str], mqtt_broker: Broker,
                            random_pitch_checkpoint: Path) -> None:
    rec = tmp_path / "mqtt.jsonl"
    proc = subprocess.Popen(
        [*EXE, "run", "--mqtt", mqtt_broker.url, "--topic", "rec/#", "--output", "events",
         "--weights", str(random_pitch_checkpoint), "--device", "cpu", "--max-rate", "1000",
         "--record", str(rec)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        while "ready: outputs" not in proc.stderr.readline():
            pass
        publish(mqtt_broker, "rec/a", ["1", "2", "3"])
        values: set[float] = set()
        while not values >= {1.0, 2.0, 3.0}:
            values.add(json.loads(proc.stdout.readline())["value"])
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    recorded = [json.loads(line) for line in rec.read_text().splitlines()]
    assert [(r["stream"], r["value"]) for r in recorded] == [("rec/a", 1.0), ("rec/a", 2.0),
                                                             ("rec/a", 3.0)]


def test_a_stopped_replay_counts_the_record_it_was_waiting_on(
        tmp_path: Path, env: dict[str, str], random_pitch_checkpoint: Path) -> None:
    """SIGTERM while the replay waits for a record's moment: that record is ``unread``, so
    records = samples + unread (a QA pass at 36e50ff: records was always one more); the
    notes the events output wrote = the notes played less those a stop left unsent."""
    rec = tmp_path / "rec.jsonl"
    rec.write_text("".join(json.dumps({"stream": s, "time": i * 0.05, "value": float(i % 7),
                                       "arrival": 1.7e9 + i * 0.05}) + "\n"
                           for i in range(400) for s in ("a", "b")))
    err, out = tmp_path / "err", tmp_path / "out"
    with err.open("w") as stderr, out.open("w") as stdout:
        proc = subprocess.Popen([*EXE, "replay", str(rec), "--output", "events", "--weights",
                                 str(random_pitch_checkpoint), "--device", "cpu"],
                                stdout=stdout, stderr=stderr, env=env)
        deadline = time.monotonic() + 60
        while "ready:" not in err.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    stopped = re.search(r"stopped: (\d+) samples.*input records=(\d+), samples=(\d+)"
                        r"(?:, unread=(\d+))?", err.read_text())
    assert stopped is not None, err.read_text()
    engine, records, samples, unread = (int(g or 0) for g in stopped.groups())
    assert engine == samples and records == samples + unread, stopped.group(0)
    assert 0 < samples < 800
    # notes scheduled to start after the stop reach no output: counted as unsent.at_stop
    # (they were counted as played and missing from the outputs: 124 notes, 122 lines)
    notes = re.search(r"stopped: \d+ samples, (\d+) notes", err.read_text())
    unsent = re.search(r"unsent\.at_stop=(\d+)", err.read_text())
    assert notes is not None
    lines = len(out.read_text().splitlines())
    assert lines == int(notes[1]) - (int(unsent[1]) if unsent else 0), err.read_text()
