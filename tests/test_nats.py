"""The NATS source and scale-out with stream affinity.

Units: subjects with a ``{partition}`` token, the stream names they give, the errors for
bad settings. End to end, against a real nats-server whose mapping partitions
``sensors.*`` three ways: three ``streamsonic run --nats ... --output events`` instances,
one per partition, and a fourth that plays all three partitions (the single instance);
30 streams published. Every stream plays on exactly one instance, and its notes there are
the notes the single instance plays for it. Then one instance stops: its streams go silent
(no other instance takes them over, nothing is played twice) while the others play on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from streamsonic.config import load_config, parse_override
from streamsonic.errors import ConfigError, NatsError
from streamsonic.sources.nats import NatsSource, subscriptions
from streamsonic.sources.nats_url import PASSWORD_ENV, parse_url, server_url
from tests.fixtures_nats import PARTITIONS, NatsServer

WAIT = 90.0  # guard against hangs only
STREAMS = [f"s{i:02d}" for i in range(30)]


# -- units ------------------------------------------------------------------------------

def test_partitioned_subjects_expand_per_partition_and_name_streams_without_it() -> None:
    config = load_config(None, {"nats.subjects": ["sensors.*.{partition}", "plant.{partition}.>"],
                                "nats.partitions": [0, 2]})
    subs = subscriptions(config.nats)
    assert [s.filter for s in subs] == ["sensors.*.0", "sensors.*.2", "plant.0.>", "plant.2.>"]
    assert subs[0].stream_subject("sensors.boiler.0") == "sensors.boiler"
    assert subs[2].stream_subject("plant.0.7.temp") == "plant.7.temp"
    plain = subscriptions(load_config(None, {"nats.subjects": ["sensors.>"]}).nats)
    assert [(s.filter, s.stream_subject("sensors.a.b")) for s in plain] == [
        ("sensors.>", "sensors.a.b")]


@pytest.mark.parametrize(("nats", "says"), [
    ({"subjects": []}, "pass --subject"),
    ({"subjects": ["sensors.*"], "partitions": [1]}, "has no {partition} token"),
    ({"subjects": ["sensors.*.{partition}"]}, "set nats.partitions"),
    ({"subjects": ["sensors..x"]}, "empty token"),
    ({"subjects": ["sensors.>.x"]}, "'>' must be the last token"),
    ({"subjects": ["sens*rs"]}, "must be whole tokens"),
    ({"subjects": ["a.{partition}.{partition}"], "partitions": [0]}, "more than once"),
    ({"subjects": ["a b"]}, "white space"),
])
def test_bad_subjects_are_config_errors_that_say_why(nats: dict[str, object], says: str) -> None:
    config = load_config(None, {"nats.url": "nats://127.0.0.1:4222",
                                **{f"nats.{k}": v for k, v in nats.items()}})
    with pytest.raises(ConfigError, match=r"nats\.") as err:
        NatsSource(config)
    assert says in str(err.value)


def test_urls_and_settings() -> None:
    assert str(parse_url("nats://user@example.org")) == "nats://example.org:4222"
    assert parse_url("nats://user@example.org").username == "user"
    for bad in ("mqtt://host", "tls://host:4222", "nats://host/subject", "nats://:4222"):
        with pytest.raises(ConfigError, match="nats://host"):
            parse_url(bad)
    with pytest.raises(ConfigError, match=r"nats\.partitions"):
        load_config(None, {"nats.partitions": [1, 1]})
    with pytest.raises(ConfigError, match=r"only \{subject\}"):
        NatsSource(load_config(None, {"nats.url": "nats://h", "nats.subjects": ["a.*"],
                                      "nats.stream_name": "{topic}"}))


def test_both_network_sources_is_a_config_error() -> None:
    from streamsonic.sources import open_source

    config = load_config(None, {"nats.url": "nats://127.0.0.1:4222", "nats.subjects": ["a"],
                                "mqtt.url": "mqtt://127.0.0.1:1883", "mqtt.topics": ["a"]})
    with pytest.raises(ConfigError, match="leave one of them empty"):
        open_source(config)


async def test_unreachable_server_is_one_line_after_connect_timeout() -> None:
    config = load_config(None, {"nats.url": "nats://127.0.0.1:9", "nats.subjects": ["a.*"],
                                "nats.connect_timeout": 0.5, "nats.reconnect_min": 0.1,
                                "nats.reconnect_max": 0.2})
    began = time.monotonic()
    with pytest.raises(NatsError, match=r"nats://127.0.0.1:9: cannot connect .*nats-server"
                                        r".*waited 0.5 s: nats.connect_timeout"):
        async with NatsSource(config):
            pass
    assert time.monotonic() - began >= 0.5


@pytest.mark.nats
async def test_a_server_down_at_start_is_waited_for(tmp_path: Path) -> None:
    """As an MQTT broker is (a QA pass at 36e50ff: the daemon exited 69 at once, so a
    replacement started before its server could not take over)."""
    import nats

    server = NatsServer(tmp_path)
    config = load_config(None, {"nats.url": server.url, "nats.subjects": ["in.*"],
                                "nats.reconnect_min": 0.1, "nats.reconnect_max": 0.3})
    async with NatsSource(config) as source:
        assert not source.connected
        assert source.waiting_for == f"the NATS server at 127.0.0.1:{server.port}"
        server.start()
        try:
            deadline = time.monotonic() + WAIT
            while not source.connected:
                assert time.monotonic() < deadline, source.stats
                await asyncio.sleep(0.05)
            client = await nats.connect(server.url)
            await client.publish("in.a", b"2.5")
            await client.flush()
            await client.close()
            got = await asyncio.wait_for(anext(source), WAIT)
            assert (got.stream, got.value) == ("in.a", 2.5)
        finally:
            server.stop()


def test_a_password_never_comes_from_the_command_line(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """As for MQTT: a password in nats.url (``--nats nats://bob:pw@host``, seen in ``ps``)
    or ``--set nats.password`` is refused, the password never shown; it comes from the
    config file's nats.password, $STREAMSONIC_NATS_PASSWORD or nats.password_file. (A QA
    pass at 36e50ff: the URL's password was taken, and the error advised putting it there.)"""
    with pytest.raises(ConfigError, match="contains a password") as err:
        load_config(None, {"nats.url": "nats://bob:pw123@example.org"})
    assert "pw123" not in str(err.value)
    # one key = value, not "nats.url = : nats.url = ..." (a QA pass, 2026-12-06)
    assert str(err.value).count("nats.url =") == 1, err.value
    with pytest.raises(ConfigError, match="never comes from the command line"):
        parse_override("nats.password=pw123")
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    base = {"nats.url": "nats://bob@example.org", "nats.password_file": str(secret)}
    assert server_url(load_config(None, base).nats).connect_url == "nats://bob:from-file@example.org:4222"
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    assert server_url(load_config(None, base).nats).password == "from-env"
    assert server_url(load_config(None, {**base, "nats.password": "from-config"}).nats).password \
        == "from-config"
    named = load_config(None, {"nats.url": "nats://example.org", "nats.username": "al"})
    assert server_url(named.nats).connect_url == "nats://al:from-env@example.org:4222"
    assert server_url(load_config(None, {"nats.url": "nats://example.org"}).nats).password == ""


@pytest.mark.nats
async def test_a_login_with_the_password_from_a_file(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    server = NatsServer(tmp_path, extra='authorization { user: bob, password: "s3cret" }\n')
    server.start()
    try:
        secret = tmp_path / "secret"
        secret.write_text("s3cret\n")
        url = f"nats://bob@127.0.0.1:{server.port}"
        config = load_config(None, {"nats.url": url, "nats.subjects": ["in.*"],
                                    "nats.password_file": str(secret)})
        import nats

        async with NatsSource(config) as source:
            client = await nats.connect(f"nats://bob:s3cret@127.0.0.1:{server.port}")
            await client.publish("in.a", b"4.5")
            await client.flush()
            await client.close()
            got = await asyncio.wait_for(anext(source), WAIT)
            assert (got.stream, got.value) == ("in.a", 4.5)
        secret.write_text("wrong\n")
        with pytest.raises(NatsError, match=r"nats\.password_file") as err:
            async with NatsSource(config):
                pass
        assert "wrong" not in str(err.value)
    finally:
        server.stop()



@pytest.mark.parametrize("command", ["run", "check-config"])
@pytest.mark.parametrize("problem", ["missing", "a folder"])
def test_a_password_file_that_cannot_be_read_is_exit_78_before_the_model_loads(
        tmp_path: Path, problem: str, command: str) -> None:
    """nats.password_file is read when the daemon starts (and by check-config), before the
    model loads: a file that is missing or cannot be read is one line naming the key, the
    path and why, and the configuration error status (before: the model loaded first, then
    the connection failed with exit 69). No server is needed to find that out."""
    secret = tmp_path / "nats-password"
    if problem == "a folder":
        secret.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(f'[nats]\nurl = "nats://bob@127.0.0.1:1"\nsubjects = ["in.*"]\n'
                      f'password_file = "{secret}"\n')
    env = {k: v for k, v in os.environ.items()
           if k not in ("STREAMSONIC_CONFIG", PASSWORD_ENV)}
    args = (["run", "--config", str(config), "--output", "events", "--device", "cpu"]
            if command == "run" else ["check-config", str(config)])
    proc = subprocess.run([sys.executable, "-m", "streamsonic", *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, check=False, env=env)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 78, lines
    assert len(lines) == 1, lines  # one line, and no "pitch model ... on cpu" before it
    assert "nats.password_file" in lines[0] and str(secret) in lines[0], lines
    assert ("No such file or directory" if problem == "missing" else "Is a directory") \
        in lines[0], lines

# -- against a real nats-server -----------------------------------------------------------

async def publish(server: NatsServer, messages: list[tuple[str, bytes]]) -> None:
    import nats

    client = await nats.connect(server.url)
    try:
        for subject, payload in messages:
            await client.publish(subject, payload)
        await client.flush()
    finally:
        await client.close()


@pytest.mark.nats
async def test_source_decodes_like_mqtt_counts_bad_input_and_reconnects(
        nats_server: NatsServer) -> None:
    config = load_config(None, {"nats.url": nats_server.url,
                                "nats.subjects": ["sensors.*.{partition}"],
                                "nats.partitions": list(range(PARTITIONS)),
                                "nats.reconnect_min": 0.1, "nats.reconnect_max": 0.2})
    async with NatsSource(config) as source:
        await publish(nats_server, [("sensors.a", b"1.5"), ("sensors.b", b'{"x": 2, "y": 3}'),
                                    ("sensors.a", b"nan"), ("sensors.c", b"cpu=4 mem=5")])
        got = [await asyncio.wait_for(anext(source), WAIT) for _ in range(5)]
        assert sorted((s.stream, s.value) for s in got) == [
            ("sensors.a", 1.5), ("sensors.b.x", 2.0), ("sensors.b.y", 3.0),
            ("sensors.c.cpu", 4.0), ("sensors.c.mem", 5.0)]
        assert source.stats["skipped.nan"] == 1
        assert source.stats["by_subject.sensors.a.nan"] == 1
        # the server goes away and comes back: the source reconnects and subscribes again
        nats_server.stop()
        await asyncio.sleep(0.3)
        assert not source.connected
        assert source.waiting_for == f"the NATS server at 127.0.0.1:{nats_server.port}"
        nats_server.start()
        deadline = time.monotonic() + WAIT
        while source.stats.get("connects", 0) < 2:
            assert time.monotonic() < deadline, source.stats
            await asyncio.sleep(0.05)
        await publish(nats_server, [("sensors.a", b"7")])
        again = await asyncio.wait_for(anext(source), WAIT)
        assert (again.stream, again.value) == ("sensors.a", 7.0)
        assert source.connected and source.waiting_for is None


@pytest.mark.nats
async def test_bad_payloads_on_many_subjects_are_warned_per_reason_and_all_counted(
        nats_server: NatsServer, caplog: pytest.LogCaptureFixture) -> None:
    """500 subjects, each with a payload that is no number: every one counted, the log
    warned once per reason (it was once per subject and reason: a flood of warnings, and
    a table of them that grew with the subjects)."""
    config = load_config(None, {"nats.url": nats_server.url, "nats.subjects": ["bad.*"]})
    caplog.set_level(logging.WARNING, logger="streamsonic.sources.nats")
    async with NatsSource(config) as source:
        await publish(nats_server, [(f"bad.s{i}", b"nan") for i in range(500)])
        deadline = time.monotonic() + WAIT
        while source.stats.get("skipped.nan", 0) < 500:
            assert time.monotonic() < deadline, source.stats
            await asyncio.sleep(0.02)
    warned = [r for r in caplog.records if "skipped a payload" in r.getMessage()]
    assert 1 <= len(warned) <= 2, len(warned)


@pytest.mark.nats
async def test_full_queue_drops_the_oldest_and_counts(nats_server: NatsServer) -> None:
    config = load_config(None, {"nats.url": nats_server.url, "nats.subjects": ["sensors.*.*"],
                                "nats.queue_size": 5})
    async with NatsSource(config) as source:
        await publish(nats_server, [("sensors.a", str(i).encode()) for i in range(20)])
        deadline = time.monotonic() + WAIT
        while source.stats.get("received", 0) < 20:
            assert time.monotonic() < deadline, source.stats
            await asyncio.sleep(0.02)
        assert source.queued == 5
        assert source.stats["dropped.queue_full"] == 15
        queued = time.monotonic()
        await asyncio.sleep(0.3)  # they wait in the queue
        kept = []
        for _ in range(3):
            kept.append((await anext(source)).value)
            came = source.arrived()  # when it was queued, not when taken (Arrival)
            assert came is not None and came <= queued
        assert kept == [15.0, 16.0, 17.0]
    # the two never taken are counted when the source closes (a stop leaves them)
    assert (source.stats["samples"], source.stats["unread"]) == (3, 2)


class Daemon:
    """``streamsonic run --nats ... --output events``; notes (JSON lines) and stderr kept."""

    def __init__(self, server: NatsServer, weights: Path, partitions: list[int]) -> None:
        args = [sys.executable, "-m", "streamsonic", "run", "--nats", server.url,
                "--subject", "sensors.*.{partition}", "--output", "events",
                "--weights", str(weights), "--max-rate", "1000",
                "--set", "clock.backlog=100000", "--log-level", "info"]
        for part in partitions:
            args += ["--partition", str(part)]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
        self.notes: list[dict] = []
        self.log: list[str] = []
        self.ready = threading.Event()
        self._out = threading.Thread(target=self._read_out, daemon=True)
        self._out.start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.notes.append(json.loads(line))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))
            if "ready:" in line:
                self.ready.set()

    def wait_ready(self) -> None:
        if not self.ready.wait(WAIT):
            pytest.fail("daemon not ready:\n" + "\n".join(self.log))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        status = self.proc.wait(timeout=WAIT)
        self._out.join(WAIT)
        return status


def per_stream(notes: list[dict]) -> dict[str, list[tuple]]:
    """Each stream's notes, in the order of its samples (and of their start), as (value,
    pitch, velocity, accent, normalized, source): what the stream's own history decides
    (channel and program depend on which streams an instance met first)."""
    out: dict[str, list[tuple]] = {}
    for n in sorted(notes, key=lambda n: (n["time"], n["start"])):
        out.setdefault(n["stream"], []).append(
            (n["value"], n["pitch"], n["velocity"], n["accent"], round(n["normalized"], 9),
             n.get("source", "data")))
    return out


def data_notes(notes: list[dict]) -> list[dict]:
    """The notes of samples (not those the model adds between them)."""
    return [n for n in notes if n.get("source", "data") == "data"]


def series(round_: int, index: int) -> float:
    """A varied value per stream and round (a spike now and then, for accents)."""
    spike = 40.0 if (round_ * 7 + index) % 23 == 0 else 0.0
    return round(10 * math.sin(round_ / 3 + index) + index + spike, 3)


def wait_for(what: str, ok: object, daemons: list[Daemon]) -> None:
    deadline = time.monotonic() + WAIT
    while not ok():  # type: ignore[operator]
        if time.monotonic() > deadline:
            logs = "\n\n".join("\n".join(d.log[-10:]) for d in daemons)
            pytest.fail(f"timed out waiting for {what}:\n{logs}")
        time.sleep(0.1)


@pytest.mark.nats
@pytest.mark.slow
def test_three_instances_each_play_their_streams_as_one_instance_would(
        nats_server: NatsServer, random_pitch_checkpoint: Path) -> None:
    single = Daemon(nats_server, random_pitch_checkpoint, list(range(PARTITIONS)))
    parts = [Daemon(nats_server, random_pitch_checkpoint, [p]) for p in range(PARTITIONS)]
    everyone = [single, *parts]
    try:
        for daemon in everyone:
            daemon.wait_ready()
        rounds, later = 12, 8

        def send(first: int, count: int) -> None:
            asyncio.run(publish(nats_server, [
                (f"sensors.{name}", str(series(r, i)).encode())
                for r in range(first, first + count) for i, name in enumerate(STREAMS)]))

        send(0, rounds)
        total = len(STREAMS) * rounds
        wait_for("every note", lambda: len(data_notes(single.notes)) >= total
                 and sum(len(data_notes(d.notes)) for d in parts) >= total, everyone)
        reference = per_stream(single.notes)
        owned = [set(per_stream(d.notes)) for d in parts]
        # every stream on exactly one instance, each instance some of them
        assert set(reference) == {f"sensors.{n}" for n in STREAMS}
        assert all(owned), [len(o) for o in owned]
        assert sum(len(o) for o in owned) == len(STREAMS)
        assert set().union(*owned) == set(reference)
        for daemon in parts:
            for stream, notes in per_stream(daemon.notes).items():
                assert notes == reference[stream], stream

        # one instance stops: its streams go silent, nobody else takes them over
        gone = parts[1]
        assert gone.stop() == 0
        before = {id(d): len(data_notes(d.notes)) for d in parts}
        send(rounds, later)
        survivors = [parts[0], parts[2]]
        expected = sum(len(owned[i]) for i in (0, 2)) * later
        wait_for("the survivors' notes", lambda: len(data_notes(single.notes)) >= total + len(
            STREAMS) * later and sum(len(data_notes(d.notes)) - before[id(d)]
                                     for d in survivors) >= expected, everyone)
        time.sleep(0.5)  # anything wrongly delivered would show up by now
        reference = per_stream(single.notes)
        assert all(len(per_stream(data_notes(single.notes))[s]) == rounds + later
                   for s in reference)
        for i, daemon in ((0, parts[0]), (2, parts[2])):
            mine = per_stream(daemon.notes)
            assert set(mine) == owned[i]  # no stream of the stopped instance moved here
            for stream, notes in mine.items():
                assert notes == reference[stream], stream
        silent = per_stream(data_notes(gone.notes))
        assert set(silent) == owned[1]
        assert all(len(v) == rounds for v in silent.values())  # played up to the stop
        # nothing played twice: every sample's note once, on one instance
        played = [(n["stream"], n["value"]) for d in parts for n in data_notes(d.notes)]
        assert len(played) == len(set(played)) == len(STREAMS) * rounds + expected
    finally:
        for daemon in everyone:
            daemon.stop()
