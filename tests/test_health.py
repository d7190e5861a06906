"""Health you can see (issue 11 item 3) and never stopping while looking fine (item 4): the
real daemon in a subprocess, its Prometheus endpoint scraped and parsed with
prometheus-client's parser, its STATUS= lines read from a real NOTIFY_SOCKET, its stderr
read as journald would, and its refusal to start without a source under systemd."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamsonic.logs import JournalFormatter, error_line, journal_stream, priority

WAIT = 60.0  # guards against hangs only (the daemon imports torch on a slow CPU)


class Daemon:
    """``streamsonic run`` with stdin fed by the test, stdout (notes) and stderr collected."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None,
                 stderr: IO[bytes] | None = None, output: bool = True) -> None:
        """``output=False``: no --output (the config file's output.targets decide)."""
        base = {k: v for k, v in os.environ.items()
                if k not in ("STREAMSONIC_CONFIG", "NOTIFY_SOCKET", "INVOCATION_ID",
                             "JOURNAL_STREAM", "WATCHDOG_USEC")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamsonic", "run", *(["--output", "events"] * output),
             "--device", "cpu", "--max-rate", "1000", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=stderr if stderr is not None else subprocess.PIPE,
            env={**base, **(env or {})})
        self.notes: list[bytes] = []
        self.log: list[str] = []
        self._changed = threading.Condition()
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout, self.notes),
                         daemon=True).start()
        if stderr is None:
            assert self.proc.stderr is not None
            threading.Thread(target=self._read, args=(self.proc.stderr, self.log),
                             daemon=True).start()

    def _read(self, stream: IO[bytes], into: list) -> None:
        for line in stream:
            with self._changed:
                into.append(line if into is self.notes else line.decode(errors="replace"))
                self._changed.notify_all()

    def played(self) -> list[dict]:
        """The notes printed so far that play a sample (not those the model added)."""
        notes = [json.loads(line) for line in list(self.notes)]
        return [n for n in notes if n.get("source", "data") == "data"]

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def wait_until(self, what: str, cond) -> None:
        with self._changed:
            ok = self._changed.wait_for(lambda: cond() or self.proc.poll() is not None, WAIT)
        if not ok or not cond():
            pytest.fail(f"timed out waiting for {what}:\n{''.join(self.log)}")

    def wait_log(self, pattern: str) -> re.Match[str]:
        found: list[re.Match[str]] = []

        def search() -> bool:
            found[:] = [m for m in map(re.compile(pattern).search, self.log) if m]
            return bool(found)
        self.wait_until(repr(pattern), search)
        return found[0]

    def finish(self) -> int:
        """Close stdin (the input ends) and wait for the exit status."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=WAIT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)


def scrape(port: int) -> dict[str, float]:
    """Every sample of the endpoint, as ``name{label="v",...}`` -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def scrape_until(port: int, cond, what: str) -> dict[str, float]:
    """Scrape until ``cond(metrics)`` holds: a note is printed a moment before it is counted
    (both on the daemon's event loop; the scrape runs on another thread)."""
    deadline = time.monotonic() + WAIT
    while True:
        got = scrape(port)
        if cond(got):
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"metrics never showed {what}: {got}")
        time.sleep(0.05)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(WAIT)
    yield sock
    sock.close()


def next_datagram(sock: socket.socket, first: str) -> list[str]:
    """The next notification whose first line is ``first`` (others are skipped)."""
    while True:
        lines = sock.recv(4096).decode().split("\n")
        if lines[0] == first:
            return lines


def status_of(lines: list[str]) -> str:
    return next((line[7:] for line in lines if line.startswith("STATUS=")), "")


def wait_status(sock: socket.socket, text: str) -> str:
    """Read notifications until a STATUS= containing ``text``; that status."""
    seen: list[str] = []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        status = status_of(sock.recv(4096).decode().split("\n"))
        seen.append(status)
        if text in status:
            return status
    pytest.fail(f"no STATUS with {text!r}; saw {seen}")


# -- metrics --------------------------------------------------------------------------------

@pytest.mark.slow
def test_metrics_endpoint_counts_what_the_daemon_did(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[metrics]\nlisten = "127.0.0.1:0"\n')
    daemon = Daemon(["--config", str(config)])
    try:
        port = int(daemon.wait_log(r"metrics: serving http://127\.0\.0\.1:(\d+)/metrics")[1])
        before = scrape(port)
        assert before["streamsonic_input_samples_total"] == 0
        assert before["streamsonic_reload_failed"] == 0
        # 6 good samples of 2 streams, 2 lines that are not numbers, 1 non-finite value and
        # a comment line (not bad input: ignored, not rejected)
        daemon.send("a=1 b=2\na=5 b=1\nhello\n# a comment\na=3 b=7\nworld\na=nan\n")
        daemon.wait_until("6 notes", lambda: len(daemon.played()) >= 6)
        got = scrape_until(port, lambda m: m['streamsonic_notes_total{output="events"}']
                           == m["streamsonic_notes_played_total"] == len(daemon.notes),
                           "every printed note counted")
        assert got["streamsonic_input_samples_total"] == 6
        assert got['streamsonic_input_rejected_total{reason="not_numeric"}'] == 2
        assert sum(v for k, v in got.items()
                   if k.startswith("streamsonic_input_rejected_total")) == 3
        assert got['streamsonic_input_ignored_total{reason="comment"}'] == 1
        assert got['streamsonic_notes_total{output="events"}'] == len(daemon.notes) >= 6
        assert got["streamsonic_notes_played_total"] == len(daemon.notes)
        assert got["streamsonic_streams"] == 2
        assert got["streamsonic_queue_depth"] == 0
        assert got["streamsonic_phrases_shed_total"] == 0  # a loop that keeps up sheds none
        assert got['streamsonic_output_up{output="events"}'] == 1
        assert got["streamsonic_source_up"] == 1
        assert got["streamsonic_step_seconds_count"] >= 3  # batched: at most one per sample
        assert got["streamsonic_step_streams_total"] == 6
        assert got['streamsonic_step_seconds_bucket{le="+Inf"}'] == \
            got["streamsonic_step_seconds_count"]
        assert got["process_resident_memory_bytes"] > 0
        for name in ("process_virtual_memory_bytes", "process_cpu_seconds_total",
                     "process_open_fds", "process_max_fds", "process_start_time_seconds"):
            assert got[name] > 0, name
        assert not any(k.startswith("streamsonic_mqtt_") for k in got)  # stdin: no broker

        # A reload that fails is counted and flagged until one succeeds.
        config.write_text('[metrics]\nlisten = "127.0.0.1:0"\n[music]\nscale = "nope"\n')
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("reload failed")
        got = scrape(port)
        assert got['streamsonic_reloads_total{result="failed"}'] == 1
        assert got['streamsonic_reloads_total{result="ok"}'] == 0
        assert got["streamsonic_reload_failed"] == 1
        config.write_text('[metrics]\nlisten = "127.0.0.1:0"\n[music]\nscale = "minor"\n')
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("reloaded configuration")
        got = scrape(port)
        assert got['streamsonic_reloads_total{result="ok"}'] == 1
        assert got["streamsonic_reload_failed"] == 0
        assert daemon.finish() == 0, "".join(daemon.log)
    finally:
        daemon.finish()


def test_metrics_listen_is_validated() -> None:
    from streamsonic.config import load_config
    from streamsonic.errors import ConfigError

    assert load_config(None, {"metrics.listen": "[::1]:9464"}).metrics.listen == "[::1]:9464"
    for bad in ("9464", "localhost", "127.0.0.1:http", "127.0.0.1:70000", ":9464"):
        with pytest.raises(ConfigError, match=r"metrics\.listen"):
            load_config(None, {"metrics.listen": bad})


def test_metrics_port_in_use_is_one_line_and_69(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "streamsonic", "run", "--output", "events", "--device",
             "cpu", "--set", f'metrics.listen="127.0.0.1:{port}"'],
            input=b"1\n", capture_output=True, timeout=WAIT, check=False,
            env={k: v for k, v in os.environ.items() if k != "STREAMSONIC_CONFIG"})
    errors = [line for line in proc.stderr.decode().splitlines() if "error" in line.lower()]
    assert proc.returncode == 69, proc.stderr.decode()
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and "metrics.listen" in errors[0]


# -- STATUS= --------------------------------------------------------------------------------

@pytest.mark.slow
def test_status_tells_streams_and_a_failed_reload(tmp_path: Path,
                                                  notify_socket: socket.socket) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[music]\nscale = \"major\"\n")
    daemon = Daemon(["--config", str(config)],
                    env={"NOTIFY_SOCKET": notify_socket.getsockname()})
    try:
        ready = next_datagram(notify_socket, "READY=1")
        assert status_of(ready) == "playing 0 streams to events"
        daemon.send("cpu=1 mem=2\n")
        assert wait_status(notify_socket, "playing 2 streams") == "playing 2 streams to events"

        config.write_text("[music]\nscale = \"nope\"\n")
        daemon.proc.send_signal(signal.SIGHUP)
        next_datagram(notify_socket, "RELOADING=1")
        status = status_of(next_datagram(notify_socket, "READY=1"))
        assert status.startswith("reload failed: ")
        assert "music.scale" in status and "previous configuration" in status
        assert status.endswith("playing 2 streams to events")
        assert "\n" not in status

        config.write_text("[music]\nscale = \"minor\"\n")
        daemon.proc.send_signal(signal.SIGHUP)
        next_datagram(notify_socket, "RELOADING=1")
        assert status_of(next_datagram(notify_socket, "READY=1")) == \
            "playing 2 streams to events"
        assert daemon.finish() == 0, "".join(daemon.log)
    finally:
        daemon.finish()


# -- journald priorities --------------------------------------------------------------------

def test_priorities_and_formatter() -> None:
    assert [priority(level) for level in (logging.DEBUG, logging.INFO, logging.WARNING,
                                          logging.ERROR, logging.CRITICAL)] == [7, 6, 4, 3, 2]
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "one\ntwo", (), None)
    assert JournalFormatter("%(message)s").format(record) == "<4>one\n<4>two"


def test_journal_stream_must_be_our_stderr(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with (tmp_path / "a").open("w") as ours, (tmp_path / "b").open("w") as other:
        st = os.fstat(ours.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert journal_stream(ours)
        assert not journal_stream(other)  # stderr redirected elsewhere: plain lines
        assert error_line("bad\nthing", ours) == "<3>error: bad\n<3>error: thing"
        assert error_line("bad", other) == "streamsonic: error: bad"
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert not journal_stream(ours)


@pytest.mark.slow
def test_daemon_logs_with_journald_priorities(tmp_path: Path) -> None:
    """stderr is a file whose device:inode is in $JOURNAL_STREAM, as systemd sets it up:
    every line carries its priority and no 'streamsonic:' (the journal names us)."""
    journal = tmp_path / "journal"
    with journal.open("wb") as err:
        st = os.fstat(err.fileno())
        daemon = Daemon([], env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stderr=err)
        daemon.send("1\nnot a number\n2\n")
        assert daemon.finish() == 0
    lines = journal.read_text().splitlines()
    assert lines, "nothing logged"
    assert all(re.match(r"<[2-7]>", line) for line in lines), lines
    assert not any("streamsonic:" in line for line in lines), lines
    assert any(line.startswith("<6>ready:") for line in lines), lines
    assert any(line.startswith("<4>") and "not_numeric" in line for line in lines), lines

    # The command's last words, an error, are priority 3 too.
    with journal.open("wb") as err:
        st = os.fstat(err.fileno())
        daemon = Daemon(["--set", "music.tempo=0"],
                        env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stderr=err)
        assert daemon.finish() == 78
    lines = journal.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("<3>error: ") and "music.tempo" in lines[0]

    # The same daemon with stderr elsewhere (a wrapper redirected it): plain lines.
    with journal.open("wb") as err:
        daemon = Daemon([], env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"},
                        stderr=err)
        daemon.send("1\n")
        assert daemon.finish() == 0
    lines = journal.read_text().splitlines()
    assert lines and all(line.startswith("streamsonic: ") for line in lines), lines


# -- no source under systemd ----------------------------------------------------------------

def _close_stdin() -> None:
    os.close(0)


@pytest.mark.parametrize("stdin", ["/dev/null", "closed"])
@pytest.mark.parametrize("file", [[], ["-"]])
@pytest.mark.parametrize("env", [{"INVOCATION_ID": "0123456789abcdef"},
                                 {"NOTIFY_SOCKET": "/run/nothing-listens-here"}])
def test_refuses_to_start_under_systemd_without_a_source(env: dict[str, str],
                                                         file: list[str], stdin: str) -> None:
    """No FILE, or ``-`` (stdin named): the same refusal, stdin /dev/null or closed. ``run
    - < /dev/null`` under systemd went on, READY, and ended at once with exit 0 (audit at
    e309ea4); a closed stdin ended with exit 69, which the unit restarts (fd 0 was reused
    by a file the daemon opened before it looked)."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("STREAMSONIC_CONFIG", "NOTIFY_SOCKET", "INVOCATION_ID")}
    proc = subprocess.run([sys.executable, "-m", "streamsonic", "run", *file, "--output",
                           "events"],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=WAIT,
                          check=False, env={**base, **env},
                          preexec_fn=_close_stdin if stdin == "closed" else None)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 78, lines
    errors = [line for line in lines if "error" in line]
    assert len(errors) == 1, lines
    assert "nothing to read" in errors[0] and "mqtt.url" in errors[0]
    assert "nats.url" in errors[0]
    assert stdin in errors[0]
    assert not any("pitch model" in line for line in lines)  # refused before loading it


def test_stdin_dev_null_outside_systemd_still_ends_normally() -> None:
    base = {k: v for k, v in os.environ.items()
            if k not in ("STREAMSONIC_CONFIG", "NOTIFY_SOCKET", "INVOCATION_ID")}
    proc = subprocess.run([sys.executable, "-m", "streamsonic", "run", "--output", "events",
                           "--device", "cpu"],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=WAIT,
                          check=False, env=base)
    assert proc.returncode == 0, proc.stderr.decode()


def test_collector_exports_each_outputs_counters() -> None:
    """The audio output's underruns (and any output's own counters) come from its ``stats``;
    a device that is away is output_up 0. A unit-level daemon: real sinks' classes are
    exercised by the subprocess tests, this pins the mapping."""
    from collections import Counter

    from prometheus_client import CollectorRegistry, generate_latest

    from streamsonic.metrics import DaemonCollector
    from streamsonic.scheduler import Scheduler, VirtualClock
    from streamsonic.sinks.base import Sink

    class Audio(Sink):
        def _send(self, msg: object, time: float) -> None:
            pass

        @property
        def stats(self) -> dict[str, int]:
            return {"underruns": 3, "dropped": 2}

        @property
        def lost(self) -> str | None:
            return "JACK server gone"

    class Observed:
        def __init__(self) -> None:
            self.engine = None
            self.source = None
            self.scheduler = Scheduler(VirtualClock(), [Audio("audio")])
            self.reloads: Counter[str] = Counter(ok=2)
            self.reload_error = None
            self.source_waiting_for = None
            self.mqtt_connected = None

    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(Observed()))
    got: dict[str, float] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            got[f"{sample.name}{{{labels}}}"] = sample.value
    assert got["streamsonic_audio_underruns_total{output=audio}"] == 3
    assert got["streamsonic_output_events_total{event=dropped,output=audio}"] == 2
    assert got["streamsonic_output_up{output=audio}"] == 0
    assert got["streamsonic_reloads_total{result=ok}"] == 2
    assert got["streamsonic_streams{}"] == 0


def test_a_failed_outputs_series_stay_and_read_up_0() -> None:
    """An output that failed (a full disk: the scheduler closed it and went on) keeps its
    series: output_up reads 0 and its counters stay, until the daemon stops; they vanished
    before. An output a reload opened again under the same name reads its new self, once."""
    from collections import Counter

    from streamsonic.errors import OutputWriteError
    from streamsonic.metrics import DaemonCollector
    from streamsonic.scheduler import Scheduler, VirtualClock
    from streamsonic.sinks.base import Sink

    class Disk(Sink):
        def _send(self, msg: object, time: float) -> None:
            pass

        def tick(self, now: float) -> None:
            raise OutputWriteError("cannot write WAV file x.wav: No space left on device")

        @property
        def stats(self) -> dict[str, int]:
            return {"dropped": 4}

    class Events(Sink):
        def _send(self, msg: object, time: float) -> None:
            pass

    scheduler = Scheduler(VirtualClock(), [Events("events"), Disk("wav:x.wav")])

    class Observed:
        def __init__(self) -> None:
            self.engine = None
            self.source = None
            self.scheduler = scheduler
            self.reloads: Counter[str] = Counter()
            self.reload_error = None
            self.source_waiting_for = None
            self.mqtt_connected = None

    def scrape() -> dict[str, float]:
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(DaemonCollector(Observed()))
        got: dict[str, float] = {}
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                key = f"{sample.name}{{{labels}}}"
                assert key not in got, f"{key} twice"
                got[key] = sample.value
        return got

    assert scrape()["streamsonic_output_up{output=wav:x.wav}"] == 1
    scheduler.tick()  # the disk is full
    assert [sink.name for sink in scheduler.sinks] == ["events"]
    got = scrape()
    assert got["streamsonic_output_up{output=wav:x.wav}"] == 0
    assert got["streamsonic_output_events_total{event=dropped,output=wav:x.wav}"] == 4
    assert got["streamsonic_output_up{output=events}"] == 1
    scheduler.add_sink(Events("wav:x.wav"))  # a reload opened it again
    assert scrape()["streamsonic_output_up{output=wav:x.wav}"] == 1


def test_process_metrics_without_proc_stat(tmp_path: Path) -> None:
    """The systemd unit's ProcSubset=pid hides /proc/stat: prometheus-client's
    ProcessCollector then exports no process_* metric at all (it needs the boot time).
    Ours reads this process's own files only: a /proc with self/stat and self/fd and no
    stat gives every one, the start time the same as read with /proc/stat."""
    from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

    from streamsonic.metrics import ProcessMetrics

    proc = tmp_path / "proc"
    (proc / "self" / "fd").mkdir(parents=True)
    (proc / "self" / "stat").write_bytes(Path("/proc/self/stat").read_bytes())
    for fd in range(3):
        (proc / "self" / "fd" / str(fd)).touch()

    def scrape(collector: object) -> dict[str, float]:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)  # type: ignore[arg-type]
        return {sample.name: sample.value
                for family in text_string_to_metric_families(generate_latest(registry).decode())
                for sample in family.samples}

    assert scrape(ProcessCollector(proc=str(proc), registry=None)) == {}  # the cause
    got = scrape(ProcessMetrics(proc))
    real = scrape(ProcessCollector(registry=None))  # with /proc/stat
    assert set(got) == {"process_resident_memory_bytes", "process_virtual_memory_bytes",
                        "process_cpu_seconds_total", "process_open_fds", "process_max_fds",
                        "process_start_time_seconds"}
    assert got["process_open_fds"] == 3
    assert got["process_max_fds"] == real["process_max_fds"]
    assert got["process_resident_memory_bytes"] > 0
    assert abs(got["process_start_time_seconds"] - real["process_start_time_seconds"]) < 2
    assert scrape(ProcessMetrics())["process_start_time_seconds"] == \
        real["process_start_time_seconds"]


def test_the_endpoint_serves_metrics_at_metrics_and_nothing_elsewhere() -> None:
    """/metrics answers the metrics; / a small page that links to them (as node_exporter's
    does); any other path 404 (before, every path answered the metrics). The real server,
    on a real socket, for a unit-level daemon."""
    import urllib.error
    from collections import Counter

    from streamsonic.metrics import MetricsServer

    class Observed:
        engine = None
        source = None
        scheduler = None
        reloads: Counter[str] = Counter()  # noqa: RUF012 - a test double
        reload_error = None
        source_waiting_for = None
        mqtt_connected = None

    server = MetricsServer(Observed())
    server.start("127.0.0.1:0")
    try:
        assert server.address is not None
        port = server.address[1]
        assert scrape(port)["streamsonic_reload_failed"] == 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/html")
            assert '<a href="/metrics">' in resp.read().decode()
        for path in ("/foo", "/metrics/", "/metricsx", "/favicon.ico", "/index.html"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10)
            assert err.value.code == 404, path
            assert "/metrics" in err.value.read().decode()
    finally:
        server.close()
