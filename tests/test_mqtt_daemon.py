"""End to end: ``streamsonic run --mqtt ... --output events`` in a subprocess against a real
mosquitto, reading the JSON note lines it prints."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.fixtures_mqtt import Broker, mosquitto_pub, publish

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

WAIT = 60.0  # guard against hangs only (the daemon imports torch on a slow CPU)


class Daemon:
    """A ``streamsonic run`` subprocess; stdout lines parsed as JSON, stderr kept."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamsonic", "run", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**os.environ, **(env or {})},
        )
        self.notes: queue.Queue[dict] = queue.Queue()
        self.log: list[str] = []
        self._log_event = threading.Condition()
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.notes.put(json.loads(line))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._log_event:
                self.log.append(line.rstrip("\n"))
                self._log_event.notify_all()
        with self._log_event:
            self.log.append("<EOF>")
            self._log_event.notify_all()

    def wait_log(self, text: str, count: int = 1) -> None:
        """Wait until ``text`` appeared in ``count`` stderr lines."""
        with self._log_event:
            ok = self._log_event.wait_for(
                lambda: sum(text in line for line in self.log) >= count or "<EOF>" in self.log,
                WAIT)
            if not ok or sum(text in line for line in self.log) < count:
                pytest.fail(f"daemon never logged {text!r}:\n" + "\n".join(self.log))

    def take(self, n: int) -> list[dict]:
        out = []
        for _ in range(n):
            try:
                out.append(self.notes.get(timeout=WAIT))
            except queue.Empty:
                pytest.fail(f"got {len(out)} of {n} notes:\n" + "\n".join(self.log))
        return out

    def stop(self) -> int:
        """SIGTERM, wait; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=WAIT)

    def rest(self) -> list[dict]:
        """Notes printed after what was taken (call after stop)."""
        out = []
        while not self.notes.empty():
            out.append(self.notes.get_nowait())
        return out


def run_args(broker: Broker, weights: Path, *topics: str, play_notes: bool = False,
             extra: tuple[str, ...] = ()) -> list[str]:
    args = ["--mqtt", broker.url, "--output", "events", "--weights", str(weights),
            "--set", "mqtt.reconnect_min=0.1", "--set", "mqtt.reconnect_max=0.5",
            "--max-rate", "1000", *extra]
    for topic in topics:
        args += ["--topic", topic]
    if play_notes:
        args.append("--play-notes")
    return args


def note_json(i: int, stream: str = "remote") -> str:
    return json.dumps({"stream": stream, "time": 1000.0 + i, "value": float(i),
                       "normalized": 0.5, "pitch": 60 + i % 12, "velocity": 80,
                       "duration": 0.05, "channel": 0, "program": 0, "start": 0.0})


@pytest.fixture
def weights(random_pitch_checkpoint: Path) -> Path:
    return random_pitch_checkpoint


def test_topics_become_voices(mqtt_broker: Broker, weights: Path) -> None:
    daemon = Daemon(run_args(mqtt_broker, weights, "e2e/+/temp", "e2e/+/pressure"))
    try:
        daemon.wait_log("subscribed to")
        mosquitto_pub(mqtt_broker, "e2e/a/temp", "20")
        mosquitto_pub(mqtt_broker, "e2e/b/pressure", '{"hpa": 1013}')
        mosquitto_pub(mqtt_broker, "e2e/a/humidity", "77")  # not subscribed
        mosquitto_pub(mqtt_broker, "e2e/b/temp", "NaN")
        notes = daemon.take(2)
    finally:
        status = daemon.stop()
    assert status == 0
    assert [(n["stream"], n["value"]) for n in notes] == [
        ("e2e/a/temp", 20.0), ("e2e/b/pressure.hpa", 1013.0)]
    assert notes[0]["channel"] != notes[1]["channel"]  # each stream is its own voice
    stopped = next(line for line in daemon.log if "stopped:" in line)
    assert "received=3" in stopped
    assert "skipped.nan=1" in stopped


def test_broker_restart_plays_everything_after_it_is_back(mqtt_broker_factory,
                                                          weights: Path) -> None:
    broker = mqtt_broker_factory()
    daemon = Daemon(run_args(broker, weights, "rst/#", play_notes=True))
    try:
        daemon.wait_log("subscribed to")
        publish(broker, "rst/x", [note_json(0)])
        assert [n["value"] for n in daemon.take(1)] == [0.0]
        broker.kill()
        daemon.wait_log("disconnected")
        broker.start()
        daemon.wait_log("subscribed to", count=2)
        publish(broker, "rst/x", [note_json(i) for i in range(1, 51)])
        notes = daemon.take(50)
    finally:
        status = daemon.stop()
    assert status == 0
    assert [n["value"] for n in notes] == [float(i) for i in range(1, 51)]
    assert daemon.rest() == []


def test_daemon_restart_with_persistent_session_loses_nothing(mqtt_broker: Broker,
                                                              weights: Path) -> None:
    args = run_args(mqtt_broker, weights, "sess/x", play_notes=True,
                    extra=("--client-id", f"e2e-persist-{os.getpid()}", "--qos", "1",
                           "--set", "mqtt.clean_start=false",
                           "--set", "mqtt.session_expiry=600"))
    first = Daemon(args)
    first.wait_log("subscribed to")
    assert first.stop() == 0
    assert first.rest() == []
    publish(mqtt_broker, "sess/x", [note_json(i) for i in range(100)], qos=1)
    second = Daemon(args)
    try:
        notes = second.take(100)
        second.wait_log("subscribed to")
    finally:
        status = second.stop()
    assert status == 0
    assert [n["value"] for n in notes] == [float(i) for i in range(100)]
    assert second.rest() == []  # none twice


def test_shared_subscription_splits_between_daemons(mqtt_broker: Broker,
                                                   weights: Path) -> None:
    args = run_args(mqtt_broker, weights, "$share/e2e/shared/#", play_notes=True)
    one, two = Daemon(args), Daemon(args)
    try:
        one.wait_log("subscribed to")
        two.wait_log("subscribed to")
        publish(mqtt_broker, "shared/x", [note_json(i) for i in range(100)])
        got: list[dict] = []
        while len(got) < 100:
            for daemon in (one, two):
                with contextlib.suppress(queue.Empty):
                    got.append(daemon.notes.get(timeout=0.05))
            if one.proc.poll() is not None or two.proc.poll() is not None:
                pytest.fail("a daemon died:\n" + "\n".join(one.log + two.log))
    finally:
        assert one.stop() == 0
        assert two.stop() == 0
    got += one.rest() + two.rest()
    values = sorted(n["value"] for n in got)
    assert values == [float(i) for i in range(100)]  # none lost, none twice
    assert any("received=" in line and "received=100" not in line
               for line in one.log if "stopped:" in line)


def test_wrong_password_is_one_line_and_exit_69(mqtt_broker_factory, mqtt_certs,
                                                weights: Path) -> None:
    broker = mqtt_broker_factory(certs=mqtt_certs, users={"bob": "right"})
    args = run_args(broker, weights, "x", extra=("--set", f"mqtt.ca_file={mqtt_certs.ca}",
                                                 "--set", "mqtt.username=bob"))
    daemon = Daemon(args, env={"STREAMSONIC_MQTT_PASSWORD": "wrong"})
    status = daemon.proc.wait(timeout=WAIT)
    daemon.wait_log("<EOF>")
    errors = [line for line in daemon.log if "error" in line.lower()]
    assert status == 69
    assert len(errors) == 1, daemon.log
    assert "refused user 'bob'" in errors[0] and "password" in errors[0]


def test_compute_here_play_there(mqtt_broker: Broker, weights: Path) -> None:
    """stdin -> daemon A --output mqtt:URL/PREFIX -> broker -> daemon B --play-notes."""
    player = Daemon(run_args(mqtt_broker, weights, "far/#", play_notes=True))
    try:
        player.wait_log("subscribed to")
        computer = subprocess.Popen(
            [sys.executable, "-X", "faulthandler", "-m", "streamsonic", "run",
             "--weights", str(weights), "--max-rate", "1000", "--output", "events",
             "--output", f"mqtt:{mqtt_broker.url}/far/notes"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = computer.communicate("1\n5\n3\n9\n", timeout=WAIT)
        except subprocess.TimeoutExpired:
            computer.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            out, err = computer.communicate()
            pytest.fail(f"the stdin daemon did not exit:\n{err}")
        assert computer.returncode == 0, err
        sent = [json.loads(line) for line in out.splitlines()]
        played = player.take(len(sent))
    finally:
        assert player.stop() == 0
    assert len(sent) >= 1
    keys = ("stream", "value", "pitch", "velocity", "duration", "channel", "program")
    assert [{k: n[k] for k in keys} for n in played] == [{k: n[k] for k in keys} for n in sent]
