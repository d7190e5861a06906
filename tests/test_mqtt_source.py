"""The MQTT source against a real mosquitto: mapping, payloads, garbage, queue, reconnects,
persistent sessions, TLS and auth, shared subscriptions."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from streamsonic.config import load_config
from streamsonic.errors import MqttError
from streamsonic.events import NoteEvent, Sample
from streamsonic.sinks import mqtt as mqtt_sink
from streamsonic.sinks.mqtt import open_sink
from streamsonic.sources import open_source
from streamsonic.sources.mqtt import MqttSource
from tests.fixtures_mqtt import Broker, free_port, mosquitto_pub, publish

pytestmark = pytest.mark.mqtt

#: Generous guard against hangs; tests never assert on speed.
WAIT = 20.0


def make_source(broker: Broker, topics: list[str], play_notes: bool = False,
                **mqtt: object) -> MqttSource:
    overrides = {"mqtt.url": broker.url, "mqtt.topics": topics, "mqtt.reconnect_min": 0.1,
                 "mqtt.reconnect_max": 0.5}
    overrides.update({f"mqtt.{k}": v for k, v in mqtt.items()})
    source = open_source(load_config(None, overrides), play_notes=play_notes)
    assert isinstance(source, MqttSource)
    return source


async def until(cond: Callable[[], bool], what: str) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.02)
    try:
        await asyncio.wait_for(poll(), WAIT)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


async def subscribed(source: MqttSource, times: int = 1) -> None:
    await until(lambda: source.stats.get("subscribed", 0) >= times, "SUBACK")


async def take(source: MqttSource, n: int) -> list[Sample | NoteEvent]:
    out: list[Sample | NoteEvent] = []

    async def collect() -> None:
        async for item in source:
            out.append(item)
            if len(out) == n:
                return
    try:
        await asyncio.wait_for(collect(), WAIT)
    except TimeoutError:
        pytest.fail(f"got {len(out)} of {n} items: {out[-5:]}; stats {source.stats}")
    return out


async def pub(*args: object, **kwargs: object) -> None:
    await asyncio.to_thread(publish, *args, **kwargs)  # type: ignore[arg-type]


async def test_wildcard_topics_become_streams(mqtt_broker: Broker) -> None:
    async with make_source(mqtt_broker, ["w1/+/temperature", "w1/+/pressure"]) as source:
        await subscribed(source)
        await pub(mqtt_broker, "w1/a/temperature", ["20.5"])
        await pub(mqtt_broker, "w1/a/humidity", ["99"])  # not subscribed
        await pub(mqtt_broker, "w1/b/pressure", ["1013"])
        await asyncio.to_thread(mosquitto_pub, mqtt_broker, "w1/c/temperature", "-4")
        got = await take(source, 3)
    assert [(s.stream, s.value) for s in got] == [
        ("w1/a/temperature", 20.5), ("w1/b/pressure", 1013.0), ("w1/c/temperature", -4.0)]
    assert source.stats["received"] == 3


async def test_stream_name_rule_shortens_and_groups(mqtt_broker: Broker) -> None:
    async with make_source(mqtt_broker, ["w2/#"], stream_name="{topic[1]}-{topic[-1]}") as source:
        await subscribed(source)
        await pub(mqtt_broker, "w2/p7/x/temp", ["1"])
        await pub(mqtt_broker, "w2/onlytwo", ["2"])
        got = await take(source, 2)
    assert [s.stream for s in got] == ["p7-temp", "onlytwo-onlytwo"]


async def test_payload_formats(mqtt_broker: Broker) -> None:
    async with make_source(mqtt_broker, ["fmt/#"], timestamp_field="meta.t") as source:
        await subscribed(source)
        await asyncio.to_thread(mosquitto_pub, mqtt_broker, "fmt/num", " 3.25\n")
        await pub(mqtt_broker, "fmt/json", ['{"a": 1, "b": {"c": 2.5}, "s": "x", "ok": true}'])
        await pub(mqtt_broker, "fmt/ts", ['{"v": 7, "meta": {"t": "2024-01-02T03:04:05Z"}}'])
        await pub(mqtt_broker, "fmt/ms", ['{"v": 8, "meta": {"t": 1700000000000}}'])
        await pub(mqtt_broker, "fmt/bare", ["42e0"])
        await pub(mqtt_broker, "fmt/csv", ["temp,hum\n20,50\n21,51"])
        await pub(mqtt_broker, "fmt/pairs", ["cpu=0.5 mem=0.25"])
        await pub(mqtt_broker, "fmt/prom", ['load{host="a"} 1.5'])
        got = await take(source, 13)
    assert (got[12].stream, got[12].value) == ('fmt/prom.load{host="a"}', 1.5)
    pairs = [(s.stream, s.value) for s in got[:12]]
    assert pairs == [
        ("fmt/num", 3.25),
        ("fmt/json.a", 1.0), ("fmt/json.b.c", 2.5),
        ("fmt/ts.v", 7.0),
        ("fmt/ms.v", 8.0),
        ("fmt/bare", 42.0),
        ("fmt/csv.temp", 20.0), ("fmt/csv.hum", 50.0),
        ("fmt/csv.temp", 21.0), ("fmt/csv.hum", 51.0),
        ("fmt/pairs.cpu", 0.5), ("fmt/pairs.mem", 0.25),
    ]
    assert got[3].time == 1704164645.0
    assert got[4].time == 1700000000.0
    stats = source.stats
    assert stats["skipped.not_numeric"] == 2  # "s" and "ok" in fmt/json
    assert stats["ignored.header"] == 1
    assert stats["received"] == 8


async def test_json_field_path(mqtt_broker: Broker) -> None:
    async with make_source(mqtt_broker, ["jf/+"], payload="json",
                           json_field="data.temp") as source:
        await subscribed(source)
        await pub(mqtt_broker, "jf/a", ['{"data": {"temp": 21.5, "hum": 3}}',
                                        '{"data": {"hum": 3}}', '{"data": {"temp": "22"}}'])
        got = await take(source, 2)
    assert [(s.stream, s.value) for s in got] == [("jf/a", 21.5), ("jf/a", 22.0)]
    assert source.stats["skipped.no_field"] == 1
    assert source.stats["by_topic.jf/a.no_field"] == 1


async def test_garbage_is_counted_and_never_fatal(mqtt_broker: Broker) -> None:
    rng = random.Random(5)
    junk = [bytes(rng.randrange(256) for _ in range(200)) for _ in range(20)]
    async with make_source(mqtt_broker, ["junk/#"]) as source:
        await subscribed(source)
        await pub(mqtt_broker, "junk/bytes", junk)
        await pub(mqtt_broker, "junk/huge", [b"1" * (2 * 1024 * 1024)])
        await pub(mqtt_broker, "junk/nan", ["NaN", "inf", '{"x": NaN}', "", "[[[[[[", "1e999",
                                            '{"x": 1' + "0" * 400 + "}", "nope"])
        await asyncio.to_thread(mosquitto_pub, mqtt_broker, "junk/bytes", b"\xff\xfe\x00")
        await pub(mqtt_broker, "junk/ok", ["5"])
        got = await take(source, 1)
    assert [(s.stream, s.value) for s in got] == [("junk/ok", 5.0)]
    stats = source.stats
    assert stats["received"] == 20 + 1 + 8 + 1 + 1
    # As on stdin, a payload that is not UTF-8 loses only its fields that hold such bytes
    # (here all of them: none of the random payloads gave a number).
    assert stats["skipped.not_numeric"] >= 1  # "nope": a one-line payload is never a header
    assert stats["by_topic.junk/nan.not_numeric"] == 1
    assert stats["skipped.invalid_utf8"] >= 21
    assert stats["skipped.too_large"] == 1
    assert stats["skipped.nan"] == 2
    assert stats["skipped.inf"] >= 2
    assert stats["by_topic.junk/nan.nan"] == 2
    assert all(math.isfinite(s.value) for s in got)


async def test_per_topic_counters_are_bounded(mqtt_broker: Broker,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad payloads on ever new topics: the first MAX_TOPIC_COUNTERS topics get counters
    of their own, every later one shares "(other topics)"."""
    monkeypatch.setattr("streamsonic.sources.mqtt.MAX_TOPIC_COUNTERS", 2)
    async with make_source(mqtt_broker, ["many/#"]) as source:
        await subscribed(source)
        for topic in ("many/a", "many/b", "many/c", "many/d", "many/a"):
            await pub(mqtt_broker, topic, ["NaN"])
        await until(lambda: source.stats.get("received", 0) == 5, "5 messages")
    by_topic = {k: v for k, v in source.stats.items() if k.startswith("by_topic.")}
    assert by_topic == {"by_topic.many/a.nan": 2, "by_topic.many/b.nan": 1,
                        "by_topic.(other topics).nan": 2}


async def test_retained_ignored_by_default_and_optional(mqtt_broker: Broker) -> None:
    await pub(mqtt_broker, "ret/a", ["11"], retain=True)
    async with make_source(mqtt_broker, ["ret/#"]) as source:
        await subscribed(source)
        await until(lambda: source.stats.get("skipped.retained", 0) == 1, "retained count")
        await pub(mqtt_broker, "ret/a", ["12"])
        got = await take(source, 1)
    assert [s.value for s in got] == [12.0]
    async with make_source(mqtt_broker, ["ret/#"], retained=True) as source:
        got = await take(source, 1)
    assert [s.value for s in got] == [11.0]
    await pub(mqtt_broker, "ret/a", [""], retain=True)  # clear it


async def test_full_queue_drops_oldest_and_counts(mqtt_broker: Broker) -> None:
    async with make_source(mqtt_broker, ["q/x"], queue_size=10) as source:
        await subscribed(source)
        await pub(mqtt_broker, "q/x", [str(i) for i in range(50)])
        await until(lambda: source.stats.get("received", 0) == 50, "50 messages")
        assert source.queued == 10
        got = await take(source, 10)
    assert [s.value for s in got] == [float(i) for i in range(40, 50)]
    assert source.stats["dropped.queue_full"] == 40


async def test_what_a_stop_leaves_in_the_queue_is_counted(mqtt_broker: Broker) -> None:
    """Items received and never taken are counted as ``unread`` when the source closes:
    samples + unread + dropped = what the messages gave (a QA pass at 36e50ff: 65 of 5,579
    messages received before a SIGTERM were in no count)."""
    # (QoS 0: at QoS 1 the broker stops at 20 messages unacknowledged, which these stay)
    async with make_source(mqtt_broker, ["u/x"], queue_size=30, qos=0) as source:
        await subscribed(source)
        await pub(mqtt_broker, "u/x", [str(i) for i in range(50)])
        await until(lambda: source.stats.get("received", 0) == 50, "50 messages")
        await take(source, 12)
    stats = source.stats
    assert (stats["samples"], stats["unread"], stats["dropped.queue_full"]) == (12, 18, 20)


async def test_each_item_says_when_it_was_handed_over(mqtt_broker: Broker) -> None:
    """``arrived()`` (streamsonic.events.Arrival) is when the network thread queued the item,
    not when the consumer took it: items that waited 0.3 s in the queue say so."""
    async with make_source(mqtt_broker, ["arr/x"]) as source:
        await subscribed(source)
        before = time.monotonic()
        await pub(mqtt_broker, "arr/x", ["1", "2", "3"])
        await until(lambda: source.stats.get("received", 0) == 3, "3 messages")
        queued = time.monotonic()
        await asyncio.sleep(0.3)
        for _ in range(3):
            await anext(source)
            came = source.arrived()
            assert came is not None and before <= came <= queued


async def test_play_notes_roundtrip_through_mqtt_output(
        mqtt_broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    """Notes published by the mqtt: output play as they are; a bad one is counted and the
    warning names the field that was wrong and its value (it said only bad_note)."""
    config = load_config(None, {"mqtt.url": mqtt_broker.url})
    notes = [NoteEvent(stream="plant/1/t", time=1.5 + i, value=i, normalized=0.5, pitch=60 + i,
                       velocity=90, duration=0.25, channel=1, program=5, start=2.0)
             for i in range(3)]
    async with make_source(mqtt_broker, ["notes/#"], play_notes=True) as source:
        await subscribed(source)
        sink = open_sink("notes/", config)
        for note in notes:
            sink.note(note)
        sink.close()
        assert sink.stats["published"] == 3
        await pub(mqtt_broker, "notes/bad", [json.dumps({**notes[0].to_dict(), "pitch": 999}),
                                             "not json"])
        got = await take(source, 3)
        await until(lambda: source.stats.get("skipped.bad_note", 0) == 2, "bad notes counted")
    assert got == notes
    warned = [r.getMessage() for r in caplog.records if "bad_note" in r.getMessage()]
    assert len(warned) == 1, warned  # (rate-limited: one per reason and interval)
    assert "notes/bad" in warned[0]
    assert "field 'pitch' = 999: outside MIDI range 0..127" in warned[0], warned


def test_output_drain_waits_for_the_broker(mqtt_broker_factory: Callable[[], Broker],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """``drain``: True once every note published so far has been acknowledged (QoS 1),
    False while the broker that should acknowledge them is gone (bench/render.py relies on
    it to measure the output without dropping notes). A note published while the broker
    is down is held and sent once it is back, not counted as dropped; one still held at
    a stop while the broker is gone is counted (``dropped.at_close``), without waiting."""
    monkeypatch.setattr(mqtt_sink, "FLUSH_TIMEOUT", 0.3)
    broker = mqtt_broker_factory()
    config = load_config(None, {"mqtt.url": broker.url, "mqtt.qos": 1,
                                "mqtt.reconnect_min": 0.1, "mqtt.reconnect_max": 0.2})
    notes = [NoteEvent(stream=f"s{i % 7}", time=float(i), value=i, normalized=0.5,
                       pitch=60, velocity=90, duration=0.25, channel=1, program=5, start=0.0)
             for i in range(2000)]
    sink = open_sink("drained/", config)
    try:
        for note in notes:
            sink.note(note)
        assert sink.drain(WAIT)
        assert sink.stats == {"published": 2000, "sent": 2000}
        assert sink.lost is None
        broker.stop()
        sink.note(notes[0])  # held by paho until it reconnects: not acknowledged yet
        assert not sink.drain(0.5)
        # away: output_up 0 (it stayed 1 through an outage), the held note not sent
        assert sink.lost is not None and "held" in sink.lost
        assert sink.stats == {"published": 2001, "sent": 2000}
        broker.start()  # the held note goes out once paho has reconnected: not dropped
        assert sink.drain(WAIT)
        assert sink.stats == {"published": 2001, "sent": 2001}
        assert sink.lost is None
        broker.stop()
        deadline = time.monotonic() + WAIT
        while sink._client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)  # paho saw the broker go
        sink.note(notes[1])
        waited: list[object] = []  # with the broker gone the stop does not wait for it

        def drain(*args: object) -> bool:
            waited.append(args)
            return False

        monkeypatch.setattr(sink, "drain", drain)
    finally:
        sink.close()
    assert waited == []
    assert sink.stats == {"published": 2002, "sent": 2001, "dropped.at_close": 1}


def test_output_qos0_close_counts_nothing_lost(mqtt_broker: Broker) -> None:
    """At QoS 0 the stop does not wait for acknowledgements, and what paho held is written
    before it disconnects: nothing is counted as lost (``dropped.at_close``)."""
    config = load_config(None, {"mqtt.url": mqtt_broker.url, "mqtt.qos": 0})
    sink = open_sink("qos0/", config)
    for i in range(500):
        sink.note(NoteEvent(stream="s", time=float(i), value=i, normalized=0.5, pitch=60,
                            velocity=90, duration=0.25, channel=1, program=5, start=0.0))
    sink.close()
    assert sink.stats == {"published": 500, "sent": 500}


def test_output_keeps_within_the_brokers_receive_maximum(
        mqtt_broker_factory: Callable[..., Broker]) -> None:
    """QoS 1 notes in flight at once: an MQTT 5 broker's Receive Maximum (from mosquitto's
    max_inflight_messages) where it is below the output's INFLIGHT, else INFLIGHT (MQTT
    3.1.1 states none); every note still arrives."""
    broker = mqtt_broker_factory(extra=["max_inflight_messages 5"])
    for protocol, limit in (("5", 5), ("3.1.1", mqtt_sink.INFLIGHT)):
        config = load_config(None, {"mqtt.url": broker.url, "mqtt.qos": 1,
                                    "mqtt.protocol": protocol})
        sink = open_sink("limited/", config)
        try:
            assert sink.inflight_limit == limit
            for i in range(300):
                sink.note(NoteEvent(stream="s", time=float(i), value=i, normalized=0.5,
                                    pitch=60, velocity=90, duration=0.25, channel=1,
                                    program=5, start=0.0))
            assert sink.drain(WAIT)
        finally:
            sink.close()
        assert sink.stats == {"published": 300, "sent": 300}
    assert mqtt_sink.INFLIGHT > 20  # more than paho's default, where the broker allows it


async def test_mqtt_311_protocol(mqtt_broker: Broker) -> None:
    async with make_source(mqtt_broker, ["v3/#"], protocol="3.1.1") as source:
        await subscribed(source)
        await pub(mqtt_broker, "v3/a", ["1", "2"])
        got = await take(source, 2)
    assert [s.value for s in got] == [1.0, 2.0]


async def test_unreachable_broker_is_a_clear_error() -> None:
    """A broker that is down at start is waited for (see test_mqtt_startup.py); with
    mqtt.connect_timeout the wait ends in one clear error naming the last failure."""
    config = load_config(None, {"mqtt.url": f"mqtt://127.0.0.1:{free_port()}",
                                "mqtt.topics": ["a"], "mqtt.connect_timeout": 0.5,
                                "mqtt.reconnect_min": 0.1, "mqtt.reconnect_max": 0.2})
    with pytest.raises(MqttError, match=r"mqtt.connect_timeout.*refused the connection.*"
                                        r"broker is running") as err:
        async with MqttSource.from_config(config) as source:
            assert source.waiting_for is not None
            await asyncio.wait_for(take(source, 1), WAIT)
    assert "\n" not in str(err.value)


async def test_broker_restart_reconnects_and_resubscribes(mqtt_broker_factory) -> None:
    broker = mqtt_broker_factory()
    async with make_source(broker, ["rs/#"]) as source:
        await subscribed(source)
        await pub(broker, "rs/a", ["1"])
        assert [s.value for s in await take(source, 1)] == [1.0]
        broker.kill()
        await until(lambda: source.stats.get("disconnects", 0) >= 1, "the disconnect")
        await asyncio.sleep(0.5)  # a few failed reconnect attempts
        await asyncio.to_thread(broker.start)
        await subscribed(source, times=2)
        await pub(broker, "rs/a", [str(i) for i in range(2, 52)])
        got = await take(source, 50)
    assert [s.value for s in got] == [float(i) for i in range(2, 52)]
    assert source.stats["connects"] == 2


async def test_persistent_session_delivers_what_was_published_while_away(
        mqtt_broker: Broker) -> None:
    opts: dict[str, Any] = {"client_id": f"persist-{os.getpid()}", "clean_start": False,
                            "session_expiry": 300, "qos": 1}
    async with make_source(mqtt_broker, ["ps/x"], **opts) as source:
        await subscribed(source)
    await pub(mqtt_broker, "ps/x", [str(i) for i in range(100)], qos=1)
    async with make_source(mqtt_broker, ["ps/x"], **opts) as source:
        got = await take(source, 100)
        await subscribed(source)
        await pub(mqtt_broker, "ps/x", ["100"])
        got += await take(source, 1)
    assert [s.value for s in got] == [float(i) for i in range(101)]


async def test_qos1_is_acknowledged_only_once_taken(mqtt_broker: Broker) -> None:
    """A QoS 1 message is acknowledged when the consumer asks for the next item (it has
    played the previous one); what is still queued at close is not, and a persistent session
    delivers exactly that again."""
    opts: dict[str, Any] = {"client_id": f"ack-{os.getpid()}", "clean_start": False,
                            "session_expiry": 300, "qos": 1}
    async with make_source(mqtt_broker, ["ack/x"], **opts) as source:
        await subscribed(source)
        await pub(mqtt_broker, "ack/x", [str(i) for i in range(5)], qos=1)
        got = await take(source, 2)
        await until(lambda: source.stats.get("received", 0) == 5, "5 messages")
        await until(lambda: source.stats.get("acked", 0) >= 1, "the first acknowledgement")
        assert source.stats["acked"] == 1  # "0" only: "1" is still being played
    assert source.stats["acked"] == 2  # closing acknowledges "1", not the queued 2..4
    async with make_source(mqtt_broker, ["ack/x"], **opts) as source:
        got += await take(source, 3)
    assert [s.value for s in got] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert source.stats["acked"] == 3


async def test_messages_with_nothing_to_play_are_acknowledged_at_once(
        mqtt_broker: Broker) -> None:
    async with make_source(mqtt_broker, ["ack2/x"], qos=1) as source:
        await subscribed(source)
        await pub(mqtt_broker, "ack2/x", ["NaN", "header", "", "[[["], qos=1)
        await until(lambda: source.stats.get("acked", 0) == 4, "4 acknowledgements")
        assert source.queued == 0


async def test_qos0_needs_no_acknowledgement(mqtt_broker: Broker) -> None:
    async with make_source(mqtt_broker, ["ack0/x"], qos=0) as source:
        await subscribed(source)
        await pub(mqtt_broker, "ack0/x", ["1", "2"], qos=0)
        got = await take(source, 2)
    assert [s.value for s in got] == [1.0, 2.0]
    assert "acked" not in source.stats


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.ERROR and r.name.startswith("streamsonic")]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_session_takeover_is_named_and_not_fought(
        mqtt_broker: Broker, caplog: pytest.LogCaptureFixture, protocol: str) -> None:
    """Two clients with one id: the broker closes the older connection each time the other
    connects. mosquitto 2.0 sends no reason (MQTT 5 would allow 0x8E, see the unit test),
    so connections closed right after they were accepted, three in a row, are taken as a
    takeover: the one that sees it logs one error naming the id and the fix and backs off;
    the other keeps the session and plays."""
    caplog.set_level(logging.INFO, logger="streamsonic.sources.mqtt")
    client_id = f"twin{protocol}-{os.getpid()}"
    opts: dict[str, Any] = {"client_id": client_id, "protocol": protocol, "takeover_retry": 600.0}
    async with make_source(mqtt_broker, ["tw/x"], **opts) as one, \
            make_source(mqtt_broker, ["tw/x"], **opts) as two:
        def takeovers() -> int:
            return one.stats.get("takeovers", 0) + two.stats.get("takeovers", 0)

        def backed_off() -> bool:  # "reconnecting in 450..600 s"
            delays = [float(m.group(1)) for r in caplog.records
                      if (m := re.search(r"reconnecting in ([\d.]+) s", r.getMessage()))]
            return any(d >= 450 for d in delays)

        await until(lambda: takeovers() >= 1, "the takeover")
        await until(backed_off, "a reconnect only after about mqtt.takeover_retry")
        holder = two if one.stats.get("takeovers", 0) else one
        await subscribed(holder, times=holder.stats["connects"])
        await pub(mqtt_broker, "tw/x", ["5"])
        assert [s.value for s in await take(holder, 1)] == [5.0]
        assert takeovers() == 1
    connects = one.stats["connects"] + two.stats["connects"]
    assert connects <= 2 + 2 * 3  # each: the first, then at most three short sessions
    errors = _errors(caplog)
    assert len(errors) == 1, errors
    assert f"client id {client_id!r}" in errors[0]
    assert "taking the session over" in errors[0]
    assert "--client-id" in errors[0]
    assert "every 600 s" in errors[0]


async def test_session_takeover_can_stop_the_source(mqtt_broker: Broker) -> None:
    client_id = f"twin-exit-{os.getpid()}"
    opts: dict[str, Any] = {"client_id": client_id, "on_takeover": "exit"}
    async with make_source(mqtt_broker, ["twx/x"], **opts) as one, \
            make_source(mqtt_broker, ["twx/x"], **opts) as two:
        async def first_to_fail() -> MqttError:
            tasks = [asyncio.create_task(take(s, 1)) for s in (one, two)]
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in pending:
                task.cancel()
            error = next(iter(done)).exception()
            assert isinstance(error, MqttError), error
            return error
        error = await asyncio.wait_for(first_to_fail(), WAIT)
    assert re.search(rf"client id '{client_id}'.*--client-id", str(error))
    assert "\n" not in str(error)
    assert error.exit_status == 69


async def test_shared_subscription_splits_the_stream(mqtt_broker: Broker) -> None:
    topic = "$share/grp/sh/+"
    async with make_source(mqtt_broker, [topic]) as one, make_source(mqtt_broker, [topic]) as two:
        await subscribed(one)
        await subscribed(two)
        first: list[Sample | NoteEvent] = []
        second: list[Sample | NoteEvent] = []

        async def drain(source: MqttSource, into: list[Sample | NoteEvent]) -> None:
            async for item in source:  # unacknowledged QoS 1 messages wait at the broker
                into.append(item)

        tasks = [asyncio.create_task(drain(one, first)), asyncio.create_task(drain(two, second))]
        await pub(mqtt_broker, "sh/a", [str(i) for i in range(200)])
        await until(lambda: len(first) + len(second) >= 200, "200 messages between the two")
        for task in tasks:
            task.cancel()
    a = {s.value for s in first}
    b = {s.value for s in second}
    assert a and b, "both members should get a share"
    assert not a & b
    assert a | b == {float(i) for i in range(200)}
    assert len(first) + len(second) == 200
    assert {s.stream for s in first + second} == {"sh/a"}


class TestTls:
    """mosquitto with TLS and a password file."""

    @pytest.fixture
    def broker(self, mqtt_broker_factory, mqtt_certs) -> Broker:
        return mqtt_broker_factory(certs=mqtt_certs, users={"alice": "s3cret"})

    async def test_good_ca_and_password_connect(self, broker: Broker, tmp_path,
                                                monkeypatch) -> None:
        pw = tmp_path / "pw"
        pw.write_text("s3cret\n")
        monkeypatch.delenv("STREAMSONIC_MQTT_PASSWORD", raising=False)
        async with make_source(broker, ["tls/#"], ca_file=str(broker.tls.ca),
                               username="alice", password_file=str(pw)) as source:
            await subscribed(source)
            await pub(broker, "tls/a", ["3"], username="alice", password="s3cret")
            got = await take(source, 1)
        assert [s.value for s in got] == [3.0]

    async def test_password_from_env_and_systemd_credentials(self, broker: Broker, tmp_path,
                                                             monkeypatch) -> None:
        monkeypatch.setenv("STREAMSONIC_MQTT_PASSWORD", "s3cret")
        async with make_source(broker, ["tls/#"], ca_file=str(broker.tls.ca),
                               username="alice") as source:
            await subscribed(source)
        monkeypatch.delenv("STREAMSONIC_MQTT_PASSWORD")
        (tmp_path / "mqtt-password").write_text("s3cret")
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
        async with make_source(broker, ["tls/#"], ca_file=str(broker.tls.ca),
                               username="alice") as source:
            await subscribed(source)

    async def test_wrong_ca_is_refused_clearly(self, broker: Broker, monkeypatch) -> None:
        monkeypatch.setenv("STREAMSONIC_MQTT_PASSWORD", "s3cret")
        source = make_source(broker, ["tls/#"], ca_file=str(broker.tls.other_ca),
                             username="alice")
        with pytest.raises(MqttError, match=r"certificate verification failed.*mqtt.ca_file"):
            async with source:
                pass

    async def test_wrong_password_is_refused_clearly(self, broker: Broker, monkeypatch) -> None:
        monkeypatch.setenv("STREAMSONIC_MQTT_PASSWORD", "wrong")
        source = make_source(broker, ["tls/#"], ca_file=str(broker.tls.ca), username="alice")
        with pytest.raises(MqttError, match=r"refused user 'alice'.*password") as err:
            async with source:
                pass
        assert "\n" not in str(err.value)
        assert "wrong" not in str(err.value)

    async def test_plain_mqtt_to_tls_port_fails_clearly(self, broker: Broker) -> None:
        source = make_source(broker, ["x"])
        source.url = source.url.__class__("mqtt", "127.0.0.1", broker.port)
        with pytest.raises(MqttError, match=r"MQTT broker.*mqtts://"):
            async with source:
                pass


async def test_client_certificate(mqtt_broker_factory, mqtt_certs) -> None:
    broker = mqtt_broker_factory(certs=mqtt_certs, require_client_cert=True)
    async with make_source(broker, ["cc/#"], ca_file=str(mqtt_certs.ca),
                           cert_file=str(mqtt_certs.client_cert),
                           key_file=str(mqtt_certs.client_key)) as source:
        await subscribed(source)
    with pytest.raises(MqttError, match=r"mqtts://localhost.*set mqtt\.cert_file") as err:
        async with make_source(broker, ["cc/#"], ca_file=str(mqtt_certs.ca)):
            pass
    assert "\n" not in str(err.value)
