"""The MQTT audit's findings (e309ea4): secrets in output URLs and --set, bounded warning
tables, config validation of MQTT settings, one-line payloads that are text, an honest
mqtt.connect_timeout, wildcards in an output's topic prefix."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from streamsonic.config import load_config, parse_override
from streamsonic.errors import ConfigError, MqttError, UsageError
from streamsonic.model.kernels import numba_cache_dir
from streamsonic.mqtt.urls import redact
from streamsonic.outputs import parse_output
from streamsonic.sources.mqtt import MqttSource
from streamsonic.stats import RateLimitedLog
from tests.fixtures_mqtt import Broker
from tests.test_mqtt_source import make_source, subscribed, until

STREAMSONIC = [sys.executable, "-m", "streamsonic"]


def cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STREAMSONIC, *args], check=False, capture_output=True, text=True,
                          timeout=120,
                          stdin=subprocess.DEVNULL, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               "XDG_CONFIG_HOME": str(tmp_path)})


# -- 1. secrets --------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["mqtt:mqtt://u:s3cr3tpw@127.0.0.1:18883/n",
                                  "mqtt:mqtts://u:s3cr3tpw@h/n", "mqt:mqtt://u:s3cr3tpw@h/n"])
def test_a_password_in_an_output_url_is_refused_and_never_shown(spec: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_output(spec)
    assert "s3cr3tpw" not in str(err.value) and "\n" not in str(err.value)
    if spec.startswith("mqtt:"):
        assert "mqtt.password" in str(err.value)


def test_output_targets_with_a_password_are_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[output]\ntargets = ["mqtt:mqtt://u:s3cr3tpw@h/n"]\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "s3cr3tpw" not in str(err.value) and "password" in str(err.value)
    res = cli(["check-config", str(path)], tmp_path)
    assert res.returncode == 78 and "s3cr3tpw" not in res.stderr + res.stdout
    res = cli(["run", "--config", str(path)], tmp_path)
    assert res.returncode == 78 and "s3cr3tpw" not in res.stderr


def test_cli_output_with_a_password_is_64_and_not_echoed(tmp_path: Path) -> None:
    res = cli(["run", "--output", "mqtt:mqtt://u:s3cr3tpw@127.0.0.1:18883/n"], tmp_path)
    assert res.returncode == 64, res.stderr
    assert "s3cr3tpw" not in res.stderr and res.stderr.count("\n") == 1


def test_set_of_a_password_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="never comes from the command line") as err:
        parse_override('mqtt.password="hunter2"')
    assert "hunter2" not in str(err.value)
    res = cli(["run", "--set", 'mqtt.password="hunter2"'], tmp_path)
    assert res.returncode == 78 and "hunter2" not in res.stderr
    assert "mqtt.password" in res.stderr


def test_redact() -> None:
    assert redact("output mqtt:mqtt://u:pw@h:1/n") == "output mqtt:mqtt://***@h:1/n"
    assert "p@ss/w" not in redact("'mqtts://u:p@ss/w@h' and mqtt://x")
    assert redact("mqtt://h/notes") == "mqtt://h/notes"


@pytest.mark.parametrize(("where", "url"), [
    ("--mqtt", "bob:s3cret@localhost"),  # no scheme: the redaction needed one
    ("--mqtt", "mqtt://bob:s3 cret@localhost"),  # a blank in the password
    ("config", "bob:s3cret@localhost"),
    ("config", 'mqtt://bob:s3"cret@localhost'),  # a quote in it
    ("--output", "mqtt:mqtt://bob:s3 cret@localhost/notes"),
])
def test_a_password_never_shows_however_the_url_is_written(tmp_path: Path, where: str,
                                                            url: str) -> None:
    """Refused, and the password in none of the output (it showed twice in the error for a
    URL without a scheme, and past a blank or a quote)."""
    if where == "config":
        conf = tmp_path / "pw.toml"
        conf.write_text(f"[mqtt]\nurl = {url!r}\ntopics = [\"a\"]\n".replace("'", '"')
                        if '"' not in url else
                        f"[mqtt]\nurl = '{url}'\ntopics = [\"a\"]\n")
        runs = [cli(["check-config", str(conf)], tmp_path), cli(["run", "--config", str(conf)],
                                                                tmp_path)]
    else:
        runs = [cli(["run", where, url], tmp_path)]
    for res in runs:
        assert res.returncode in (64, 78), res.stderr
        assert "password" in res.stderr
        assert "s3" not in res.stderr + res.stdout, res.stderr


# -- 3. MQTT settings are validated with the config (exit 78) -----------------------------

@pytest.mark.parametrize(("mqtt", "words"), [
    ('url = "http://x"\ntopics = ["a"]', "scheme 'http'"),
    ('url = "mqtt://x:99999"\ntopics = ["a"]', "1..65535"),
    ('url = "mqtt://x:0"\ntopics = ["a"]', "port 0"),
    ('url = "mqtt://u:hunter2@x"\ntopics = ["a"]', "contains a password"),
    ('url = "mqtt://x"\ntopics = ["a/#/b"]', "whole level"),
    ('url = "mqtt://x"', "mqtt.topics is empty"),
])
def test_check_config_refuses_what_the_daemon_would(tmp_path: Path, mqtt: str,
                                                     words: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[mqtt]\n{mqtt}\n")
    res = cli(["check-config", str(path)], tmp_path)
    assert res.returncode == 78, res.stderr
    assert words in res.stderr and res.stderr.count("\n") == 1 and "hunter2" not in res.stderr


@pytest.mark.parametrize(("args", "words"), [
    (["--mqtt", "http://x", "--topic", "a"], "scheme 'http'"),
    (["--mqtt", "mqtt://x:99999", "--topic", "a"], "1..65535"),
    (["--mqtt", "mqtt://x"], "--topic"),
    (["--set", 'mqtt.url="mqtt://x:99999"', "--set", 'mqtt.topics=["a"]'], "1..65535"),
])
def test_the_daemon_refuses_bad_mqtt_settings_with_78_not_69(tmp_path: Path, args: list[str],
                                                              words: str) -> None:
    res = cli(["run", *args], tmp_path)
    assert res.returncode == 78, res.stderr
    assert words in res.stderr


def test_the_unit_does_not_restart_config_or_usage_errors() -> None:
    unit = (Path(__file__).parent.parent / "systemd" / "streamsonic.service").read_text()
    line = next(x for x in unit.splitlines() if x.startswith("RestartPreventExitStatus="))
    statuses = set(line.partition("=")[2].split())
    assert {"64", "78"} <= statuses
    assert "69" not in statuses  # a broker down at start: restarting may well help


# -- 6. wildcards in an output's topic prefix ---------------------------------------------

@pytest.mark.parametrize("spec", ["mqtt:mqtt://127.0.0.1:18883/no#tes", "mqtt:no#tes",
                                  "mqtt:mqtt://h/a/+/b", "mqtt:no+tes"])
def test_a_wildcard_in_the_prefix_is_refused(spec: str) -> None:
    with pytest.raises(UsageError, match="'#'"):
        parse_output(spec)


# -- 2. bounded tables, warnings per reason -------------------------------------------------

def test_rate_limited_log_remembers_a_bounded_number_of_keys() -> None:
    now = [0.0]
    warn = RateLimitedLog(logging.getLogger("t"), interval=10.0, clock=lambda: now[0],
                          max_keys=100)
    for i in range(5_000):  # 50 times the bound
        warn.warning(f"topic/{i}", "x")
        assert len(warn) <= 100
        now[0] += 0.0001  # all within one interval: only LRU frees room
    assert len(warn) <= 100
    warn.warning("a", "x")  # a key still remembered keeps suppressing
    assert not warn.warning("a", "x")
    now[0] += 11
    assert warn.warning("a", "x")


def test_rate_limited_log_forgets_expired_keys_first(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    warn = RateLimitedLog(logging.getLogger("t"), interval=1.0, clock=lambda: now[0],
                          max_keys=4)
    assert warn.warning("keep", "x")
    assert not warn.warning("keep", "x")  # suppressed once
    now[0] = 5.0
    for key in "abc":
        warn.warning(key, "x")
    assert not warn.warning("a", "x")
    with caplog.at_level(logging.WARNING, "t"):
        warn.warning("d", "x")  # full: "keep" (expired) goes, a, b, c stay
    assert not warn.warning("b", "x") and not warn.warning("c", "x")


async def test_bad_payloads_on_thousands_of_topics_warn_per_reason(
        mqtt_broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    n = 3000
    caplog.set_level(logging.WARNING, "streamsonic")
    async with make_source(mqtt_broker, ["flood/#"], qos=0) as source:
        await subscribed(source)

        def publish_all() -> None:
            client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
            client.connect("127.0.0.1", mqtt_broker.port)
            client.loop_start()
            try:
                infos = [client.publish(f"flood/{i}", "nan" if i % 2 else "offline", qos=1)
                         for i in range(n)]
                for info in infos:
                    info.wait_for_publish(10)
            finally:
                client.disconnect()
                client.loop_stop()

        await asyncio.to_thread(publish_all)
        await until(lambda: source.stats.get("received", 0) == n, f"{n} messages")
        stats = source.stats
        assert len(source._warn) <= 10  # keyed by reason, not by topic
    assert stats["skipped.nan"] == n // 2 and stats["skipped.not_numeric"] == n // 2  # exact
    assert "ignored.header" not in stats
    by_topic = {k: v for k, v in stats.items() if k.startswith("by_topic.")}
    assert sum(by_topic.values()) == n  # the first topics by name, the rest as "other"
    warnings = [r for r in caplog.records if "skipped a payload" in r.getMessage()]
    assert 2 <= len(warnings) <= 4, len(warnings)


# -- 4. a one-line text payload is a bad payload, not a header ------------------------------

@pytest.mark.parametrize("payload", ["offline", "temp,hum"])
async def test_a_first_text_payload_is_counted_and_warned(
        mqtt_broker: Broker, caplog: pytest.LogCaptureFixture, payload: str) -> None:
    caplog.set_level(logging.WARNING, "streamsonic")
    topic = f"first/{payload.replace(',', '_')}"
    async with make_source(mqtt_broker, ["first/#"]) as source:
        await subscribed(source)
        await asyncio.to_thread(_publish, mqtt_broker, topic, [payload, "3"])
        await until(lambda: source.stats.get("received", 0) == 2, "2 messages")
        stats = source.stats
    assert stats.get(f"by_topic.{topic}.not_numeric", 0) >= 1
    assert "ignored.header" not in stats
    assert any(topic in r.getMessage() and "not_numeric" in r.getMessage()
               for r in caplog.records)


def _publish(broker: Broker, topic: str, payloads: list[str]) -> None:
    from tests.fixtures_mqtt import publish
    publish(broker, topic, list(payloads))


# -- 5. mqtt.connect_timeout gives up in about its time -------------------------------------

@pytest.fixture
def silent_port() -> Iterator[tuple[int, str]]:
    """A port whose accept queue is full: the kernel drops new SYNs, so a TCP connect
    hangs (as to an address that does not answer), on loopback, offline too."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fill = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(("127.0.0.1", port))
        fill.append(c)
    time.sleep(0.2)
    yield port, "hang"
    for c in fill:
        c.close()
    srv.close()


@pytest.fixture
def mute_broker() -> Iterator[tuple[int, str]]:
    """Accepts TCP connections and never answers MQTT's CONNECT."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    yield srv.getsockname()[1], "mute"
    srv.close()


@pytest.mark.parametrize("server", ["silent_port", "mute_broker"])
async def test_connect_timeout_gives_up_in_about_its_time(
        request: pytest.FixtureRequest, server: str) -> None:
    port, _ = request.getfixturevalue(server)
    config = load_config(None, {"mqtt.url": f"mqtt://127.0.0.1:{port}", "mqtt.topics": ["a"],
                                "mqtt.connect_timeout": 2.0})
    started = time.monotonic()
    with pytest.raises(MqttError, match=r"mqtt\.connect_timeout") as err:
        async with MqttSource.from_config(config) as source:
            async for _ in source:
                pass
    took = time.monotonic() - started
    assert took < 2.8, took  # HEAD: 5 s (a hanging connect), 10 s (no CONNACK)
    said = float(str(err.value).split("could not be reached for ")[1].split(" s")[0])
    assert 2.0 <= said <= took + 0.05


# -- a user name in an output URL: never in a log or status line -----------------------------

@pytest.mark.parametrize("workers", [1, 2])
def test_an_output_urls_user_name_is_shown_redacted(tmp_path: Path, mqtt_broker_factory: Any,
                                                    workers: int) -> None:
    """``-o mqtt:mqtt://USER@host/prefix`` (the password in the config file): the "ready:
    outputs" line and STATUS= showed USER (audit at e309ea4). Now they show ``***``; the
    spec itself is kept whole: the broker takes only that user (a redacted spec passed to
    the worker processes would be refused, exit 69)."""
    broker = mqtt_broker_factory(users={"bobuser": "hunter22"})
    config = tmp_path / "c.toml"
    config.write_text('[mqtt]\npassword = "hunter22"\n')
    config.chmod(0o600)
    spec = f"mqtt:mqtt://bobuser@127.0.0.1:{broker.port}/notes"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(0.1)
    with contextlib.closing(notify):
        res = subprocess.run(
            [*STREAMSONIC, "run", "--config", str(config), "-o", "events", "-o", spec,
             "--workers", str(workers)],
            check=False, capture_output=True, text=True, timeout=180, input="1\n2\n3\n",
            cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               "XDG_CONFIG_HOME": str(tmp_path),
                               "NOTIFY_SOCKET": str(tmp_path / "notify"),
                               # the kernels compiled already (a new HOME compiled them
                               # again: 26 s a run)
                               "NUMBA_CACHE_DIR": numba_cache_dir() or ""})
        messages = []
        with contextlib.suppress(TimeoutError):
            while True:
                messages.append(notify.recv(65536).decode())
    assert res.returncode == 0, res.stderr
    assert len([line for line in res.stdout.splitlines() if '"source":"data"' in line]) == 3
    shown = f"mqtt:mqtt://***@127.0.0.1:{broker.port}/notes"
    ready = [line for line in res.stderr.splitlines() if "ready:" in line]
    assert ready and all(shown in line for line in ready), res.stderr
    statuses = [m for m in messages if "STATUS=" in m and "to " in m]
    assert statuses and any(shown in m for m in statuses), messages
    assert "bobuser" not in res.stderr and not any("bobuser" in m for m in messages)
