"""``daemon.workers``: one daemon's streams on several worker processes.

Each stream's samples reach one worker (a hash of its name), so each stream plays exactly
what one process plays; the workers' note lines share stdout without cutting into each
other; signals reach every worker; a worker that dies stops the daemon; receipts (MQTT
QoS 1) are settled only once a worker has played the sample. Real processes, real pipes,
a real mosquitto."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamsonic.workers import worker_of
from tests.fixtures_mqtt import Broker, publish
from tests.test_mqtt_daemon import Daemon, fill_stdout_pipe, play_until_all, run_args

pytestmark = pytest.mark.slow

WAIT = 60.0  # guards against hangs only
STREAMS = 30
ROWS = 40
#: The note fields that depend on the stream's samples alone (not on the arrival time or on
#: which voice the process gave the stream).
PLAYED = ("value", "normalized", "pitch", "velocity", "anomaly", "accent", "source")


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in task.read_text().split()]
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start(args: list[str], **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "streamsonic", "run", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)  # type: ignore[call-overload]


def wait_stderr(proc: subprocess.Popen[bytes], text: str, log: list[str]) -> None:
    """Read stderr lines into ``log`` until one holds ``text``."""
    assert proc.stderr is not None
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode()
        if not line:
            break
        log.append(line)
        if text in line:
            return
    pytest.fail(f"never logged {text!r}:\n" + "".join(log))


@contextlib.contextmanager
def two_workers(args: list[str]) -> Iterator[tuple[subprocess.Popen[bytes], list[str]]]:
    """The daemon with ``args`` and 2 workers, once it says it is ready; its stderr lines so
    far; killed on the way out if the test left it running."""
    proc = start([*args, "--workers", "2"])
    log: list[str] = []
    try:
        wait_stderr(proc, "ready: 2 workers", log)
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT)


def test_streams_are_split_by_name_alone() -> None:
    names = [f"s{i}" for i in range(1000)]
    split = [worker_of(n, 3) for n in names]
    assert split == [worker_of(n, 3) for n in names]  # the same name, the same worker
    assert {split.count(k) for k in range(3)} <= set(range(280, 390))  # spread evenly
    assert all(worker_of(n, 1) == 0 for n in names)


def paced_rows(proc: subprocess.Popen[bytes]) -> bool:
    """A header of STREAMS columns, then ROWS rows, ten a second (below the rate cap)."""
    assert proc.stdin is not None
    proc.stdin.write((",".join(f"c{i}" for i in range(STREAMS)) + "\n").encode())
    for k in range(ROWS):
        row = ",".join(f"{(i + 1) * (k % 7) + (9 * i if k == 25 else 0)}"
                       for i in range(STREAMS))
        proc.stdin.write((row + "\n").encode())
        proc.stdin.flush()
        time.sleep(0.1)
    proc.stdin.close()
    return True


def test_each_stream_plays_what_one_process_plays(random_pitch_checkpoint: Path) -> None:
    """30 streams, 40 rows at 10 rows/s, with 3 workers and with none: every stream plays
    the same notes (pitch, velocity, anomaly, accent) both ways, and the 3 workers share
    the streams as their names say."""
    args = ["--output", "events", "--weights", str(random_pitch_checkpoint),
            "--set", "model.passing_notes=0"]
    runs = {n: start([*args, "--workers", str(n)]) for n in (1, 3)}
    out: dict[int, tuple[bytes, bytes]] = {}

    def play(n: int, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        err: list[bytes] = []
        ready = threading.Event()

        def read_err() -> None:
            for line in proc.stderr:  # type: ignore[union-attr]
                err.append(line)
                if b"INFO: ready: " in line:  # the daemon's, not a worker's
                    ready.set()
            ready.set()

        reader = threading.Thread(target=read_err)
        reader.start()
        feeder = threading.Thread(target=lambda: paced_rows(proc) if ready.wait(WAIT)
                                  else proc.stdin.close())  # type: ignore[union-attr]
        feeder.start()
        stdout = proc.stdout.read()
        feeder.join()
        reader.join()
        proc.wait(timeout=WAIT)
        out[n] = (stdout, b"".join(err))

    players = [threading.Thread(target=play, args=item) for item in runs.items()]
    for t in players:
        t.start()
    for t in players:
        t.join(WAIT)
    for n, p in runs.items():
        assert p.returncode == 0, out[n][1].decode()
    played: dict[int, dict[str, list[tuple[object, ...]]]] = {}
    for n, (stdout, _) in out.items():
        per: dict[str, list[tuple[object, ...]]] = {}
        for line in stdout.decode().splitlines():
            note = json.loads(line)
            per.setdefault(note["stream"], []).append(tuple(note[k] for k in PLAYED))
        played[n] = per
    assert sorted(played[1]) == sorted(f"c{i}" for i in range(STREAMS))
    assert all(len(notes) == ROWS for notes in played[1].values())
    assert played[3] == played[1]
    assert any(note[5] for notes in played[3].values() for note in notes)  # accents too
    log = out[3][1].decode()
    for k in range(3):
        mine = sum(worker_of(f"c{i}", 3) == k for i in range(STREAMS))
        assert f"worker {k + 1}/3: stopped: {mine * ROWS} samples" in log, log


def test_lines_from_several_workers_never_cut_into_each_other(
        random_pitch_checkpoint: Path) -> None:
    """Two workers writing thousands of notes into one pipe that is read slowly (so their
    writes often find it full): every line read is one whole JSON note."""
    streams = 400
    proc = start(["--output", "events", "--weights", str(random_pitch_checkpoint),
                  "--workers", "2", "--max-rate", "1000"])
    assert proc.stdin is not None and proc.stdout is not None
    data = (",".join(f"stream-with-a-long-name-{i}" for i in range(streams)) + "\n"
            + "".join(",".join(str((i * k) % 17) for i in range(streams)) + "\n"
                      for k in range(30)))
    threading.Thread(target=lambda: (proc.stdin.write(data.encode()),  # type: ignore[union-attr]
                                     proc.stdin.close()), daemon=True).start()  # type: ignore[union-attr]
    chunks = []
    while True:
        chunk = proc.stdout.read1(3000)  # type: ignore[attr-defined]
        if not chunk:
            break
        chunks.append(chunk)
        time.sleep(0.0005)
    assert proc.wait(timeout=WAIT) == 0, proc.stderr.read().decode()  # type: ignore[union-attr]
    lines = b"".join(chunks).decode().splitlines()
    assert len(lines) >= streams * 10
    for line in lines:
        json.loads(line)  # raises on a line cut by another worker's write
    assert len({json.loads(line)["stream"] for line in lines}) == streams


def test_sigterm_stops_every_worker(random_pitch_checkpoint: Path) -> None:
    with two_workers(["--output", "events", "--weights", str(random_pitch_checkpoint)]) as (
            proc, log):
        workers = children(proc.pid)
        assert len(workers) == 2 and all(alive(p) for p in workers)
        assert proc.stdin is not None
        proc.stdin.write(b"a,b,c,d\n1,2,3,4\n5,6,7,8\n")
        proc.stdin.flush()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, "".join(log) + err.decode()
    assert not any(alive(p) for p in workers)
    assert err.decode().count("stopped:") == 3, "".join(log) + err.decode()  # workers, daemon


@pytest.mark.parametrize(("sig", "says"), [
    (signal.SIGKILL, "worker 1 was ended by SIGKILL"),
    (signal.SIGTERM, "worker 1 exited with status 0"),
])
def test_a_worker_that_dies_stops_the_daemon(random_pitch_checkpoint: Path,
                                             sig: signal.Signals, says: str) -> None:
    """A worker that ends while the input goes on (killed, or a SIGTERM to it alone, which
    it takes as a stop, exit 0): its streams go unplayed, so the daemon stops, exit 70,
    one error line. (A QA pass at 36e50ff: SIGTERM to a worker ended the daemon with exit
    0 and no word; the error line of a killed one came three times.)"""
    with two_workers(["--output", "events", "--weights", str(random_pitch_checkpoint)]) as (
            proc, log):
        workers = children(proc.pid)
        os.kill(workers[0], sig)
        proc.wait(timeout=WAIT)  # (stdin kept open: the input goes on)
        assert proc.stderr is not None
        err = proc.stderr.read()
    text = "".join(log) + err.decode()
    assert proc.returncode == 70, text
    errors = [line for line in text.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and says in errors[0], text
    assert not any(alive(p) for p in workers)


def test_a_worker_killed_while_the_workers_start_fails_the_daemon(
        random_pitch_checkpoint: Path) -> None:
    """A worker ended by a SIGTERM of someone else's while it loads its model (before it
    handles signals: -15): the daemon cannot play its streams, so it stops the other one and
    exits 70, with one error line naming the worker. (Before, the two predicates that judge
    a worker's end disagreed here: the error line said the worker failed, the exit status was
    0.) Killed as soon as it exists, it is killed while loading; were it ever later, the
    daemon must answer the same."""
    proc = start(["--output", "events", "--weights", str(random_pitch_checkpoint),
                  "--workers", "2"])
    try:
        deadline = time.monotonic() + WAIT
        while not (workers := children(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert workers, "no worker started"
        os.kill(workers[0], signal.SIGTERM)
        _, err = proc.communicate(timeout=WAIT)  # (stdin kept open: the input goes on)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT)
    text = err.decode()
    assert "ready: 2 workers" not in text, text  # (it was killed while loading)
    errors = [line for line in text.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "was ended by SIGTERM" in errors[0], text
    assert proc.returncode == 70, text


def test_outputs_of_one_process_are_refused_with_workers(tmp_path: Path) -> None:
    proc = start(["--output", f"file:{tmp_path / 'x.mid'}", "--workers", "2"])
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 78
    assert "daemon.workers = 2" in err.decode() and "file:" in err.decode()
    assert not (tmp_path / "x.mid").exists()


def test_what_a_reload_cannot_change_is_said_once(tmp_path: Path,
                                                   random_pitch_checkpoint: Path) -> None:
    """daemon.workers and the input's parsing (input.*) changed in the file: the daemon's
    own process says once that they need a restart (the daemon and each worker said so,
    three lines for two workers: a QA pass, 2026-12-06); the workers apply the rest."""
    config = tmp_path / "config.toml"
    config.write_text('[daemon]\nworkers = 2\n[music]\nscale = "major"\n')
    proc = start(["--config", str(config), "--output", "events", "--weights",
                  str(random_pitch_checkpoint)])
    log: list[str] = []
    try:
        wait_stderr(proc, "ready: 2 workers", log)
        config.write_text('[daemon]\nworkers = 3\n[music]\nscale = "minor"\n'
                          '[input]\nstream = "x"\n')
        proc.send_signal(signal.SIGHUP)
        wait_stderr(proc, "reloaded configuration (music.scale)", log)
        wait_stderr(proc, "reloaded configuration (music.scale)", log)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT)
    log += err.decode().splitlines(keepends=True)
    restart = [line for line in log if "need a restart" in line]
    assert len(restart) == 1, "".join(log)
    assert "daemon.workers" in restart[0] and "input.stream" in restart[0], restart
    assert "worker" not in restart[0].split(":")[2], restart
    reloaded = [line for line in log if "reloaded configuration" in line]
    assert len(reloaded) == 2 and all("(music.scale)" in line for line in reloaded), reloaded
    assert proc.returncode == 0


def test_sighup_reaches_every_worker(tmp_path: Path, random_pitch_checkpoint: Path) -> None:
    """Each worker reloads and says what it applied; the daemon's own process says once
    that it took the reload (or, for a file it refuses, that the reload failed: then no
    worker is asked to reload, and none logs a line of its own)."""
    config = tmp_path / "config.toml"
    config.write_text('[music]\nscale = "major"\n')
    with two_workers(["--config", str(config), "--output", "events", "--weights",
                      str(random_pitch_checkpoint)]) as (proc, log):
        config.write_text('[music]\nscale = "minor"\n')
        proc.send_signal(signal.SIGHUP)
        wait_stderr(proc, "reloaded configuration (music.scale)", log)
        wait_stderr(proc, "reloaded configuration (music.scale)", log)
        config.write_text('[music]\nscale = "nope"\n')
        proc.send_signal(signal.SIGHUP)
        wait_stderr(proc, "reload failed", log)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=WAIT)
    log += err.decode().splitlines(keepends=True)
    reloaded = [line for line in log if "reloaded configuration" in line]
    assert sorted(line.split(":")[2].strip() for line in reloaded) == ["worker 1/2",
                                                                       "worker 2/2"]
    own = [line for line in log if "reload" in line and "worker" not in line.split(":")[2]]
    assert len(own) == 2, "".join(log)
    assert own[0].startswith("streamsonic: INFO: reload taken: asked the 2 workers to "
                             "reload"), own
    assert own[1].startswith("streamsonic: ERROR: reload failed, keeping the running "
                             "configuration: "), own
    assert "music.scale" in own[1]
    assert not any("worker" in line and "reload failed" in line for line in log), "".join(log)
    assert proc.returncode == 0


@pytest.mark.mqtt
def test_qos1_through_workers_loses_nothing_and_plays_nothing_twice(
        mqtt_broker: Broker, random_pitch_checkpoint: Path) -> None:
    """QoS 1, a persistent session, 2 workers, 8 topics: SIGTERM while the workers hold
    samples they have not played (stdout left unread): the router acknowledged only what
    its workers played, so the next daemon plays exactly the rest."""
    client = f"workers-{os.getpid()}"
    args = run_args(mqtt_broker, random_pitch_checkpoint, "wk/#",
                    extra=("--client-id", client, "--qos", "1", "--workers", "2",
                           "--set", "mqtt.clean_start=false", "--set", "mqtt.session_expiry=600",
                           "--set", "model.passing_notes=0", "--set", "clock.backlog=100000",
                           "--set", "accent.enabled=false"))
    per_topic = 250
    first = Daemon(args, read_stdout=False)
    try:
        first.wait_log("ready: 2 workers")
        first.wait_log("subscribed to")
        for t in range(8):
            publish(mqtt_broker, f"wk/t{t}", [str(t * 1000 + i) for i in range(per_topic)])
        fill_stdout_pipe(first)
        first.proc.send_signal(signal.SIGTERM)
    finally:
        first.resume_stdout()
        assert first.stop() == 0
    played = [n for n in first.rest() if n["source"] == "data"]
    wanted = {float(t * 1000 + i) for t in range(8) for i in range(per_topic)}
    assert 0 < len(played) < len(wanted), f"{len(played)} notes before SIGTERM"
    second = Daemon(args)
    try:
        play_until_all(second, wanted, played)
    finally:
        assert second.stop() == 0
    values = [n["value"] for n in played + second.rest() if n["source"] == "data"]
    twice = sorted({v for v in values if values.count(v) > 1})
    assert not twice, f"played twice: {twice[:20]}\n" + "\n".join(first.log + second.log)
    assert sorted(values) == sorted(wanted)


def test_metrics_of_the_workers_add_up(tmp_path: Path) -> None:
    """metrics.listen with 2 workers: the daemon serves their sums (samples, notes, streams,
    steps, memory) with its own source (input rejected, source up) and reloads, once."""
    from tests.test_health import Daemon as Health
    from tests.test_health import scrape_until

    one = next(f"s{i}" for i in range(100) if worker_of(f"s{i}", 2) == 0)
    two = next(f"s{i}" for i in range(100) if worker_of(f"s{i}", 2) == 1)
    config = tmp_path / "config.toml"
    config.write_text('[metrics]\nlisten = "127.0.0.1:0"\n')
    daemon = Health(["--config", str(config), "--workers", "2"])
    try:
        port = int(daemon.wait_log(r"INFO: metrics: serving http://127\.0\.0\.1:(\d+)/")[1])
        daemon.wait_log("INFO: ready: 2 workers")
        # 6 good samples of 2 streams (one on each worker), 2 lines that are not numbers
        daemon.send(f"{one}=1 {two}=2\n{one}=5 {two}=1\nhello\n{one}=3 {two}=7\nworld\n")
        daemon.wait_until("6 notes", lambda: len(daemon.played()) >= 6)
        got = scrape_until(port, lambda m: m.get('streamsonic_notes_total{output="events"}')
                           == m.get("streamsonic_notes_played_total") == len(daemon.notes)
                           and m.get("streamsonic_step_streams_total") == 6,
                           "every worker's notes counted")
        assert got["streamsonic_input_samples_total"] == 6
        assert got['streamsonic_input_rejected_total{reason="not_numeric"}'] == 2
        assert got["streamsonic_streams"] == 2
        assert got["streamsonic_source_up"] == 1  # the daemon's source, not one per worker
        assert got['streamsonic_step_seconds_bucket{le="+Inf"}'] == \
            got["streamsonic_step_seconds_count"] >= 2
        assert got["process_resident_memory_bytes"] > 2 * 100e6  # two models loaded
        config.write_text('[metrics]\nlisten = "127.0.0.1:0"\n[music]\nscale = "nope"\n')
        daemon.proc.send_signal(signal.SIGHUP)
        got = scrape_until(port, lambda m: m["streamsonic_reload_failed"] == 1, "the failure")
        assert got['streamsonic_reloads_total{result="failed"}'] == 1  # once, not per worker
        assert daemon.finish() == 0, "".join(daemon.log)
    finally:
        daemon.finish()


def test_check_config_refuses_what_workers_cannot_do(tmp_path: Path) -> None:
    """check-config says at once what the daemon would refuse at start (exit 78)."""
    bad, good = tmp_path / "bad.toml", tmp_path / "good.toml"
    bad.write_text('[daemon]\nworkers = 2\n[output]\ntargets = ["events", "file:x.mid"]\n')
    good.write_text('[daemon]\nworkers = 2\n[output]\ntargets = ["events"]\n')
    run = [sys.executable, "-m", "streamsonic", "check-config"]
    refused = subprocess.run([*run, str(bad)], check=False, capture_output=True, text=True,
                             timeout=WAIT)
    assert refused.returncode == 78
    assert f"{bad}: daemon.workers = 2" in refused.stderr and "file:x.mid" in refused.stderr
    passed = subprocess.run([*run, str(good)], check=False, capture_output=True, timeout=WAIT)
    assert passed.returncode == 0


def test_a_failed_source_stops_the_workers_cleanly() -> None:
    """The broker cannot be reached within mqtt.connect_timeout: the daemon exits 69 with one
    error line, and each worker stops as on SIGTERM (its stop line), not killed."""
    proc = start(["--output", "events", "--workers", "2", "--mqtt", "mqtt://127.0.0.1:1",
                  "--topic", "x", "--set", "mqtt.connect_timeout=1"])
    _, err = proc.communicate(timeout=WAIT)
    text = err.decode()
    assert proc.returncode == 69, text
    assert "worker 1/2: stopped:" in text and "worker 2/2: stopped:" in text
    assert "killed" not in text
    assert text.count("streamsonic: error:") == 1


def test_a_sample_that_waited_for_its_worker_plays_without_passing_notes() -> None:
    """The router stamps each sample when it reads it; a worker counts the sample's wait
    from then. Both workers are stopped (SIGSTOP) while one row waits in their pipes: that
    row comes 0.6 s late, beyond any deadline, so its cues play their data notes without
    the model's passing notes (shed), while the rows before and after play phrases (the
    shipped model at the defaults, values that leap between the ends of their range)."""
    streams, rows, stale = 4, 12, 6

    def value(i: int, r: int) -> float:
        return (r % 2) * 10.0 + i * 0.01 + r * 0.0001  # unique: each note tells its row

    def row(r: int) -> bytes:
        return (",".join(str(value(i, r)) for i in range(streams)) + "\n").encode()

    with two_workers(["--output", "events", "--set", "accent.earcon=false"]) as (proc, log):
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write((",".join(f"s{i}" for i in range(streams)) + "\n").encode())
        workers = children(proc.pid)
        assert len(workers) == 2
        for r in range(rows):
            if r == stale:
                for pid in workers:
                    os.kill(pid, signal.SIGSTOP)
            proc.stdin.write(row(r))
            proc.stdin.flush()
            if r == stale:
                time.sleep(0.6)
                for pid in workers:
                    os.kill(pid, signal.SIGCONT)
            time.sleep(0.25)
        stdout, err = proc.communicate(timeout=WAIT)  # stdin closed: the input ends
    text = "".join(log) + err.decode()
    assert proc.returncode == 0, text
    round_of = {value(i, r): r for i in range(streams) for r in range(rows)}
    sources: dict[int, list[str]] = {}
    for line in stdout.decode().splitlines():
        note = json.loads(line)
        sources.setdefault(round_of[note["value"]], []).append(note["source"])
    assert sources[stale] == ["data"] * streams, sources
    assert any("model" in sources[r] for r in range(1, stale)), sources
    assert any("model" in sources[r] for r in range(stale + 1, rows)), sources
    assert "shed.phrases" in text, text
