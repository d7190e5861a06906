"""A broker that is down when the daemon starts (issue 11 item 4), and MQTT settings on
reload (item 5): the real daemon against a real mosquitto, its STATUS= read from a real
NOTIFY_SOCKET and its metrics scraped."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamsonic.config import load_config
from streamsonic.errors import MqttError
from streamsonic.mqtt.connection import self_connected
from streamsonic.music import in_scale
from streamsonic.sources import mqtt as mqtt_source
from streamsonic.sources.mqtt import MqttSource
from tests.fixtures_mqtt import Broker, free_port, publish
from tests.test_health import Daemon, next_datagram, scrape, status_of, wait_status

pytestmark = [pytest.mark.mqtt]

WAIT = 60.0
#: Values that cross the whole pitch range, with few repeats.
WAVE = [round(10 * math.sin(0.7 * k) + 3 * math.sin(2.3 * k), 3) for k in range(40)]


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(WAIT)
    yield sock
    sock.close()


def config_text(broker: Broker, topics: list[str], extra: str = "") -> str:
    return (f'[mqtt]\nurl = "{broker.url}"\ntopics = {json.dumps(topics)}\n'
            f"reconnect_min = 0.1\nreconnect_max = 0.5\n{extra}"
            '[metrics]\nlisten = "127.0.0.1:0"\n')


@pytest.mark.slow
def test_broker_down_at_start_is_waited_for(mqtt_broker_factory, tmp_path: Path,
                                            notify_socket: socket.socket) -> None:
    """Not exit 69 (a unit with restart limits then fails for good): READY, STATUS says
    what it waits for, the metrics say the source is down; once the broker is up it
    subscribes and plays, and STATUS says so."""
    broker = mqtt_broker_factory()
    broker.stop()
    config = tmp_path / "config.toml"
    config.write_text(config_text(broker, ["up/#"]))
    daemon = Daemon(["--config", str(config)],
                    env={"NOTIFY_SOCKET": notify_socket.getsockname()})
    try:
        ready = next_datagram(notify_socket, "READY=1")
        assert status_of(ready) == f"waiting for the broker at 127.0.0.1:{broker.port}"
        port = int(daemon.wait_log(r"metrics: serving http://127\.0\.0\.1:(\d+)/metrics")[1])
        got = scrape(port)
        assert got["streamsonic_source_up"] == 0
        assert got["streamsonic_mqtt_connected"] == 0
        daemon.wait_log("MQTT broker .* refused the connection")  # a warning, not an exit
        assert daemon.proc.poll() is None

        broker.start()
        daemon.wait_log("subscribed to 'up/#'")
        publish(broker, "up/a", ["1", "2", "3"])
        daemon.wait_until("3 notes", lambda: len(daemon.played()) >= 3)
        assert wait_status(notify_socket, "playing 1 stream") == "playing 1 stream to events"
        got = scrape(port)
        assert got["streamsonic_source_up"] == 1
        assert got["streamsonic_mqtt_connected"] == 1
        assert got["streamsonic_mqtt_connects_total"] == 1
        assert got["streamsonic_mqtt_reconnects_total"] == 0
        assert got["streamsonic_mqtt_messages_total"] == 3

        broker.kill()  # a later outage: the same STATUS, and a reconnect counted
        assert "waiting for the broker" in wait_status(notify_socket, "waiting for")
        broker.start()
        assert wait_status(notify_socket, "playing") == "playing 1 stream to events"
        assert scrape(port)["streamsonic_mqtt_reconnects_total"] == 1
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.finish() == 0, "".join(daemon.log)
    finally:
        daemon.finish()


def test_connect_timeout_gives_up_with_69(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "streamsonic", "run", "--output", "events", "--device", "cpu",
         "--mqtt", f"mqtt://127.0.0.1:{port}", "--topic", "x",
         "--set", "mqtt.reconnect_min=0.1", "--set", "mqtt.reconnect_max=0.2",
         "--set", "mqtt.connect_timeout=1"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=WAIT, check=False,
        env={k: v for k, v in os.environ.items() if k != "STREAMSONIC_CONFIG"})
    lines = proc.stderr.decode().splitlines()
    errors = [line for line in lines if "error:" in line]
    assert proc.returncode == 69, lines
    assert len(errors) == 1, lines
    assert "mqtt.connect_timeout" in errors[0] and f"127.0.0.1:{port}" in errors[0]
    assert "refused the connection" in errors[0]  # the last error says why


async def test_source_waits_and_a_refused_login_is_still_final(mqtt_broker_factory) -> None:
    """The source starts without its broker and connects when it comes up; a login the
    broker refuses when it does come up is as final as at startup (exit 69)."""
    broker = mqtt_broker_factory(users={"alice": "right"})
    broker.stop()
    config = load_config(None, {"mqtt.url": broker.url, "mqtt.topics": ["x"],
                                "mqtt.username": "alice", "mqtt.password": "wrong",
                                "mqtt.reconnect_min": 0.1, "mqtt.reconnect_max": 0.2})
    source = MqttSource.from_config(config)
    async with source:
        assert not source.connected
        assert source.waiting_for == f"the broker at 127.0.0.1:{broker.port}"
        broker.start()
        with pytest.raises(MqttError, match=r"refused user 'alice'.*password"):
            async for _ in source:
                pass


def test_self_connected_tells_a_connection_that_reached_its_own_port() -> None:
    """A TCP connection to a port of this machine that nothing listens on can get that very
    port as its local one (a simultaneous open) and talk to itself; an ordinary one is
    not taken for that."""
    own = socket.socket()
    try:
        own.bind(("127.0.0.1", 0))
        own.connect(own.getsockname())  # the simultaneous open, on purpose
        assert self_connected(own)
    finally:
        own.close()
    assert not self_connected(socket.socket())  # not connected at all
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    try:
        assert not self_connected(client)
    finally:
        client.close()
        server.close()


async def test_a_first_connect_that_reaches_its_own_port_waits_for_the_broker(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The source's first connection reaches its own port (forced here: the client binds
    the broker's port before it connects, as the kernel can choose by itself when the
    broker's port is an ephemeral one; once seen in CI as "closed the connection before
    accepting it", final): the broker is not up yet, so the source waits for it instead
    of failing."""
    port = free_port()
    real = mqtt_source.connect_args

    def bound(config: Any, url: Any) -> Any:
        return {**real(config, url), "bind_address": "127.0.0.1", "bind_port": port}

    monkeypatch.setattr(mqtt_source, "connect_args", bound)
    config = load_config(None, {"mqtt.url": f"mqtt://127.0.0.1:{port}", "mqtt.topics": ["x"],
                                "mqtt.reconnect_min": 0.1, "mqtt.reconnect_max": 0.2})
    source = MqttSource.from_config(config)
    async with source:
        assert not source.connected
        assert source.waiting_for == f"the broker at 127.0.0.1:{port}"
    assert any("reached its own port" in r.getMessage() and "waiting for it" in r.getMessage()
               for r in caplog.records), caplog.text


# -- reload ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_reload_resubscribes_in_place(mqtt_broker: Broker, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(config_text(mqtt_broker, ["old/#"]))
    daemon = Daemon(["--config", str(config)])
    try:
        daemon.wait_log("subscribed to 'old/#'")
        publish(mqtt_broker, "old/a", ["1"])
        daemon.wait_until("1 note", lambda: len(daemon.played()) >= 1)

        # A filter the broker would refuse fails the reload, and nothing changes: not the
        # subscription, and not the scale that came with it.
        config.write_text(config_text(mqtt_broker, ["new/#/x"],
                                      '[music]\nscale = "whole-tone"\n'))
        daemon.proc.send_signal(signal.SIGHUP)
        assert "new/#/x" in daemon.wait_log("reload failed.*").group(0)
        publish(mqtt_broker, "old/a", [str(WAVE[k]) for k in range(12)])  # < clock.backlog
        daemon.wait_until("13 notes", lambda: len(daemon.played()) >= 13)
        pitches = [n["pitch"] for n in daemon.played()[1:]]
        assert all(in_scale(p, "major", "C") for p in pitches), pitches
        assert not all(in_scale(p, "whole-tone", "C") for p in pitches), pitches

        config.write_text(config_text(mqtt_broker, ["new/#"]))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("reloaded configuration")
        daemon.wait_log("subscribed to 'new/#'")
        publish(mqtt_broker, "old/a", ["2"])  # no longer subscribed
        publish(mqtt_broker, "new/b", ["3", "4"])
        daemon.wait_until("15 notes", lambda: len(daemon.played()) >= 15)
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.finish() == 0, "".join(daemon.log)
    finally:
        daemon.finish()
    assert [(n["stream"], n["value"]) for n in daemon.played()] == [
        ("old/a", 1.0), *[("old/a", WAVE[k]) for k in range(12)], ("new/b", 3.0), ("new/b", 4.0)]
    assert sum("connected as" in line for line in daemon.log) == 1  # the same connection
    assert not any("need a restart" in line for line in daemon.log)


@pytest.mark.slow
def test_reload_reconnects_for_broker_settings(mqtt_broker_factory, tmp_path: Path) -> None:
    """Another broker and client id: the old connection is closed, the new one made, and
    the streams play on with their state (the same stream keeps its voice)."""
    first, second = mqtt_broker_factory(), mqtt_broker_factory()
    config = tmp_path / "config.toml"
    config.write_text(config_text(first, ["t/#"], 'client_id = "before"\n'))
    daemon = Daemon(["--config", str(config)])
    try:
        daemon.wait_log("subscribed to 't/#'")
        publish(first, "t/a", ["1", "2"])
        daemon.wait_until("2 notes", lambda: len(daemon.played()) >= 2)

        config.write_text(config_text(second, ["t/#"], 'client_id = "after"\nkeepalive = 45\n'))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("reloaded configuration")
        daemon.wait_log(f"MQTT broker mqtt://127.0.0.1:{second.port}: connected as 'after'")
        daemon.wait_until("resubscribed", lambda: sum("subscribed to 't/#'" in line
                                                      for line in daemon.log) >= 2)
        publish(first, "t/a", ["100"])  # the old broker is no longer read
        publish(second, "t/a", ["3"])
        daemon.wait_until("3 notes", lambda: len(daemon.played()) >= 3)
        port = int(daemon.wait_log(r"metrics: serving http://127\.0\.0\.1:(\d+)/metrics")[1])
        got = scrape(port)
        assert got["streamsonic_mqtt_connected"] == 1
        assert got["streamsonic_mqtt_connects_total"] == 2
        assert got["streamsonic_mqtt_disconnects_total"] == 0  # a switch, not an outage
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.finish() == 0, "".join(daemon.log)
    finally:
        daemon.finish()
    played = daemon.played()
    assert [n["value"] for n in played] == [1.0, 2.0, 3.0]
    assert len({(n["channel"], n["program"]) for n in played}) == 1
    assert not any("need a restart" in line for line in daemon.log)
    assert not any("WARNING" in line for line in daemon.log), "".join(daemon.log)


@pytest.mark.slow
def test_reload_to_a_broker_that_refuses_the_login_fails_and_keeps_the_connection(
        mqtt_broker_factory, tmp_path: Path, notify_socket: socket.socket) -> None:
    """A reload that points the source at a broker refusing its login: before the fix the
    reload was logged as done, the working connection closed and the source left retrying a
    login that could never work. Now the new settings are tried first: the reload fails with
    the broker's reason (log, STATUS=, metrics), the old connection is never dropped and plays
    on; once the password is right the same reload takes."""
    first, second = mqtt_broker_factory(), mqtt_broker_factory(users={"alice": "right"})
    config = tmp_path / "config.toml"
    config.write_text(config_text(first, ["t/#"]))
    daemon = Daemon(["--config", str(config)],
                    env={"NOTIFY_SOCKET": notify_socket.getsockname()})
    try:
        next_datagram(notify_socket, "READY=1")
        daemon.wait_log("subscribed to 't/#'")
        port = int(daemon.wait_log(r"metrics: serving http://127\.0\.0\.1:(\d+)/metrics")[1])
        publish(first, "t/a", ["1"])
        daemon.wait_until("1 note", lambda: len(daemon.played()) >= 1)

        config.write_text(config_text(second, ["t/#"],
                                      'username = "alice"\npassword = "wrong"\n'))
        daemon.proc.send_signal(signal.SIGHUP)
        next_datagram(notify_socket, "RELOADING=1")
        ready = next_datagram(notify_socket, "READY=1")
        failed = daemon.wait_log("ERROR: reload failed.*").group(0)
        assert "refused user 'alice'" in failed and f":{second.port}" in failed, failed
        assert status_of(ready).startswith("reload failed: MQTT broker"), ready
        publish(first, "t/a", ["2"])  # the first broker is still read
        daemon.wait_until("2 notes", lambda: len(daemon.played()) >= 2)
        got = scrape(port)
        assert got["streamsonic_reload_failed"] == 1
        assert got['streamsonic_reloads_total{result="failed"}'] == 1
        assert got["streamsonic_mqtt_connected"] == 1
        assert got["streamsonic_mqtt_connects_total"] == 1  # never dropped, never remade
        assert not any("reloaded configuration" in line for line in daemon.log)
        assert not any("closing the connection" in line for line in daemon.log)

        config.write_text(config_text(second, ["t/#"],
                                      'username = "alice"\npassword = "right"\n'))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("reloaded configuration")
        daemon.wait_log(f"MQTT broker mqtt://127.0.0.1:{second.port}: connected as")
        daemon.wait_until("resubscribed", lambda: sum("subscribed to 't/#'" in line
                                                      for line in daemon.log) >= 2)
        publish(second, "t/a", ["3"], username="alice", password="right")
        daemon.wait_until("3 notes", lambda: len(daemon.played()) >= 3)
        assert scrape(port)["streamsonic_reload_failed"] == 0
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.finish() == 0, "".join(daemon.log)
    finally:
        daemon.finish()
    assert [n["value"] for n in daemon.played()] == [1.0, 2.0, 3.0]


async def test_reload_check_of_a_broker_that_cannot_be_reached(
        mqtt_broker_factory, caplog: pytest.LogCaptureFixture) -> None:
    """A reload to a broker nobody answers at: while the running connection is up it is
    kept and the reload fails (saying so); while it is down too, the new settings are no
    worse: a warning, and the reload may go on."""
    broker = mqtt_broker_factory()
    nowhere = {"mqtt.url": f"mqtt://127.0.0.1:{free_port()}", "mqtt.topics": ["x"]}
    config = load_config(None, {"mqtt.url": broker.url, "mqtt.topics": ["x"],
                                "mqtt.reconnect_min": 0.1, "mqtt.reconnect_max": 0.2})
    source = MqttSource.from_config(config)
    async with source:
        assert source.connected
        with pytest.raises(MqttError, match=r"refused the connection .*; the new settings are "
                                            rf"not applied, and the connection to {broker.url} "
                                            "stays"):
            await source.check_reconfigure(load_config(None, nowhere))
        assert source.connected
        broker.stop()
        while source.connected:
            await asyncio.sleep(0.05)
        await source.check_reconfigure(load_config(None, nowhere))  # no raise: a warning
    assert any("applying the new settings anyway" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("problem", ["missing", "a folder"])
@pytest.mark.parametrize("use", ["source", "output"])
def test_a_password_file_that_cannot_be_read_is_exit_78_before_the_model_loads(
        tmp_path: Path, problem: str, use: str) -> None:
    """mqtt.password_file is read when the daemon starts, before the model loads: a file
    that is missing or cannot be read is one line naming the key, the path and why, and
    the configuration error status (before: the model loaded first, then the connection
    failed with exit 69)."""
    secret = tmp_path / "mqtt-password"
    if problem == "a folder":
        secret.mkdir()
    url = f"mqtt://127.0.0.1:{free_port()}"
    config = tmp_path / "config.toml"
    config.write_text(f'[mqtt]\nusername = "alice"\npassword_file = "{secret}"\n'
                      + (f'url = "{url}"\ntopics = ["x"]\n' if use == "source" else ""))
    output = "events" if use == "source" else f"mqtt:{url}/notes"
    env = {k: v for k, v in os.environ.items()
           if k not in ("STREAMSONIC_CONFIG", "STREAMSONIC_MQTT_PASSWORD")}
    proc = subprocess.run(
        [sys.executable, "-m", "streamsonic", "run", "--config", str(config), "--output",
         output, "--device", "cpu"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=WAIT, check=False,
        env=env)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 78, lines
    assert len(lines) == 1, lines  # one line, and no "pitch model ... on cpu" before it
    assert "mqtt.password_file" in lines[0] and str(secret) in lines[0], lines
    assert ("No such file or directory" if problem == "missing" else "Is a directory") \
        in lines[0], lines


def test_check_config_refuses_a_password_file_that_cannot_be_read(tmp_path: Path) -> None:
    """check-config (which `systemctl reload` runs first) says what start-up would refuse."""
    secret = tmp_path / "nope"
    config = tmp_path / "config.toml"
    config.write_text(f'[mqtt]\nurl = "mqtt://127.0.0.1:1"\ntopics = ["x"]\n'
                      f'username = "alice"\npassword_file = "{secret}"\n')
    env = {k: v for k, v in os.environ.items() if k != "STREAMSONIC_MQTT_PASSWORD"}
    proc = subprocess.run([sys.executable, "-m", "streamsonic", "check-config", str(config)],
                          capture_output=True, text=True, timeout=WAIT, check=False, env=env)
    assert proc.returncode == 78, proc.stderr
    assert f"{config}: cannot read the MQTT password from {secret} (mqtt.password_file)" \
        in proc.stderr
    secret.write_text("s3cret\n")
    proc = subprocess.run([sys.executable, "-m", "streamsonic", "check-config", "-q",
                           str(config)], capture_output=True, text=True, timeout=WAIT,
                          check=False, env=env)
    assert proc.returncode == 0, proc.stderr
