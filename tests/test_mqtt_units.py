"""Pure parts of the MQTT support: URLs, credentials, naming, payloads, backoff, queue."""

from __future__ import annotations

import json
import random
import time

import paho.mqtt.client as paho
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamsonic.config import load_config
from streamsonic.errors import ConfigError, MqttError, OutputError
from streamsonic.events import NoteEvent, Sample
from streamsonic.mqtt.connection import build_client, parse_url, resolve_password
from streamsonic.mqtt.naming import check_filter, check_template, publish_topic, stream_name
from streamsonic.mqtt.payload import PayloadDecoder, note_from_dict
from streamsonic.sinks.mqtt import open_sink
from streamsonic.sources.mqtt import MqttSource, backoff_delay, takeover_delay


def cfg(**mqtt: object):
    return load_config(None, {f"mqtt.{k}": v for k, v in mqtt.items()})


# -- URLs and credentials -----------------------------------------------------------------

def test_parse_url() -> None:
    url = parse_url("mqtt://broker")
    assert (url.scheme, url.host, url.port, url.tls) == ("mqtt", "broker", 1883, False)
    url = parse_url("mqtts://u@10.0.0.1:9999/notes/")
    assert (url.host, url.port, url.tls, url.username, url.path) == (
        "10.0.0.1", 9999, True, "u", "notes")
    assert parse_url("localhost").port == 1883
    assert parse_url("mqtts://h").port == 8883


@pytest.mark.parametrize(("url", "message"), [
    ("mqtt://u:secret@h", "never go into a URL or on the command line"),
    ("mqtt://h:0", "port 0"),
    ("mqtt://u:p@ss/w#rd@h", "not valid|password|holds"),
    ("http://h", "use mqtt://"),
    ("mqtt://", "names no host"),
    ("mqtt://h:99999", "not valid"),
])
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(MqttError, match=message) as err:
        parse_url(url)
    assert "secret" not in str(err.value)


def test_password_sources_in_order(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("STREAMSONIC_MQTT_PASSWORD", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert resolve_password(cfg().mqtt) == (None, "")
    (tmp_path / "mqtt-password").write_text("from-systemd\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert resolve_password(cfg().mqtt)[0] == "from-systemd"
    (tmp_path / "pw").write_text("from-file\r\n")
    assert resolve_password(cfg(password_file=str(tmp_path / "pw")).mqtt)[0] == "from-file"
    monkeypatch.setenv("STREAMSONIC_MQTT_PASSWORD", "from-env")
    assert resolve_password(cfg(password_file=str(tmp_path / "pw")).mqtt)[0] == "from-env"
    assert resolve_password(cfg(password="from-config").mqtt)[0] == "from-config"


def test_empty_or_missing_credential_is_no_password_and_quiet(tmp_path, monkeypatch,
                                                             caplog) -> None:
    """The unit's LoadCredential= needs the file to exist, so a broker without passwords gets
    an empty one (systemd/README): that is no password, and no warning at every start."""
    monkeypatch.delenv("STREAMSONIC_MQTT_PASSWORD", raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    url = parse_url("mqtt://h")
    assert resolve_password(cfg().mqtt) == (None, "")  # missing
    for empty in ("", "\n", "\r\n"):
        (tmp_path / "mqtt-password").write_text(empty)
        assert resolve_password(cfg().mqtt) == (None, "")
        (tmp_path / "pw").write_text(empty)
        assert resolve_password(cfg(password_file=str(tmp_path / "pw")).mqtt) == (None, "")
        with caplog.at_level("DEBUG"):
            caplog.clear()
            build_client(cfg().mqtt, url, "x")
        assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text
        client = build_client(cfg(username="bob").mqtt, url, "x")
        assert client._password is None  # a login without a password, not with ""
    (tmp_path / "mqtt-password").write_text("s3cret\n")
    with caplog.at_level("WARNING"):
        build_client(cfg().mqtt, url, "x")
    assert "ignored: no username" in caplog.text  # a real password without a user is odd


def test_unreadable_password_file_names_it(tmp_path, monkeypatch) -> None:
    """A configuration error (exit 78), wherever it is found: it was asked for."""
    monkeypatch.delenv("STREAMSONIC_MQTT_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match=r"cannot read the MQTT password from .*missing"):
        resolve_password(cfg(password_file=str(tmp_path / "missing")).mqtt)


def test_client_setup_errors(tmp_path) -> None:
    with pytest.raises(MqttError, match="needs a fixed client id"):
        build_client(cfg(clean_start=False).mqtt, parse_url("mqtt://h"), "x")
    with pytest.raises(MqttError, match="use mqtts://"):
        build_client(cfg(ca_file="/x").mqtt, parse_url("mqtt://h"), "x")
    with pytest.raises(MqttError, match=r"mqtt\.ca_file = ./nope. does not exist"):
        build_client(cfg(ca_file="/nope").mqtt, parse_url("mqtts://h"), "x")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(MqttError, match=r"TLS setup .* failed"):
        build_client(cfg(ca_file=str(bad)).mqtt, parse_url("mqtts://h"), "x")


def test_source_checks_topics_up_front() -> None:
    """No topics: a configuration error (exit 78), not an unavailable broker (69); bad
    filters and naming rules are refused by config validation itself."""
    with pytest.raises(ConfigError, match="--topic") as err:
        MqttSource.from_config(cfg(url="mqtt://h"))
    assert err.value.exit_status == 78
    with pytest.raises(ConfigError, match="'#' must be a whole level"):
        cfg(url="mqtt://h", topics=["a/#/b"])
    with pytest.raises(ConfigError, match="stream_name"):
        cfg(url="mqtt://h", topics=["a"], stream_name="{nope}")


def test_output_needs_a_broker() -> None:
    with pytest.raises(OutputError, match="needs a broker"):
        open_sink("notes", cfg())
    with pytest.raises(OutputError, match="prefix"):
        open_sink("mqtt://h", cfg())
    with pytest.raises(OutputError, match="must not contain '\\+' or '#'"):
        open_sink("no+tes", cfg(url="mqtt://h", topics=["a"]))


# -- naming -------------------------------------------------------------------------------

def test_stream_name_templates() -> None:
    topic = "plant/7/line-2/temperature"
    assert stream_name("{topic}", topic) == topic
    assert stream_name("{topic[1]}", topic) == "7"
    assert stream_name("{topic[-1]}", topic) == "temperature"
    assert stream_name("p{topic[1]}.{topic[-1]}", topic) == "p7.temperature"
    with pytest.raises(IndexError):
        stream_name("{topic[9]}", topic)


@pytest.mark.parametrize("template", [
    "{x}", "no fields", "{topic", "{0}",
    # attributes, conversions and formats (a QA pass at 36e50ff: accepted, then a stream
    # named after a Python class, every message failing, or every one skipped)
    "{topic.__class__}", "{topic.nosuch}", "{topic:d}", "{topic[0]!r}", "{topic[1][0]}",
    "{topic[x]}",
])
def test_bad_templates(template: str) -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.stream_name") as err:
        check_template(template)
    assert str(err.value).count("mqtt.stream_name") == 1
    with pytest.raises(ConfigError, match=r"mqtt\.stream_name"):
        load_config(None, {"mqtt.stream_name": template})
    with pytest.raises(ConfigError, match=r"nats\.stream_name"):
        load_config(None, {"nats.stream_name": template.replace("topic", "subject")})


@pytest.mark.parametrize("good", ["{topic}", "{topic[1]}", "p{topic[-1]}.{topic[0]}", "x{topic}"])
def test_good_templates(good: str) -> None:
    check_template(good)
    load_config(None, {"mqtt.stream_name": good})


@pytest.mark.parametrize("good", ["a", "a/+/b", "#", "a/#", "+", "$share/g/a/+/c", "/a"])
def test_good_filters(good: str) -> None:
    check_filter(good)


@pytest.mark.parametrize("bad", ["", "a/b#", "a/#/b", "a+/b", "$share/g", "$share//a",
                                 "$share/g+/a"])
def test_bad_filters(bad: str) -> None:
    with pytest.raises(ConfigError, match="topic filter"):
        check_filter(bad)


def test_publish_topic() -> None:
    assert publish_topic("notes/", "plant/1") == "notes/plant/1"
    assert publish_topic("notes", "a+b#") == "notes/a_b_"


# -- payloads -----------------------------------------------------------------------------

def decode(data_: bytes | str, topic: str = "t", play_notes: bool = False, **mqtt: object):
    data = data_.encode() if isinstance(data_, str) else data_
    return PayloadDecoder(cfg(**mqtt), play_notes=play_notes).decode(topic, data, 100.0)


def test_number_payloads() -> None:
    assert decode(" 1.5 ").items == [Sample("t", 100.0, 1.5)]
    assert decode("nan").skipped == ["nan"]
    assert decode("1e999").skipped == ["inf"]
    assert decode("12", payload="number").items == [Sample("t", 100.0, 12.0)]
    assert decode("x", payload="number").skipped == ["not_numeric"]


def test_json_payloads() -> None:
    out = decode('{"a": {"b": [1, 2]}, "c": "x", "ts": 1700000000}')
    assert out.items == [Sample("t.a.b.0", 1700000000.0, 1.0),
                         Sample("t.a.b.1", 1700000000.0, 2.0)]
    assert out.skipped == ["not_numeric"]
    out = decode('{"a": 1, "when": "2024-01-01T00:00:00+01:00"}', timestamp_field="when")
    assert out.items == [Sample("t.a", 1704063600.0, 1.0)]
    assert decode('{"a": 1, "when": "soon"}', timestamp_field="when").skipped == [
        "bad_timestamp"]
    assert decode('{"a": {"b": 3}}', json_field="a.b").items == [Sample("t", 100.0, 3.0)]
    assert decode('{"a": {"b": null}}', json_field="a.b").skipped == ["missing"]
    assert decode("[1, 2]", json_field="a").skipped == ["no_field"]
    assert decode("{}").skipped == ["no_value"]
    assert decode("{bad").skipped == ["bad_json"]
    assert decode("[" * 100000).skipped == ["bad_json"]


def test_line_payloads_keep_a_header_per_topic() -> None:
    """A header may begin a payload of several lines, and is kept for the topic; a payload
    of one line is never a header: its text is a bad payload (counted, warned about)."""
    decoder = PayloadDecoder(cfg(payload="line"))
    assert decoder.decode("a", b"x,y\n1,2", 1.0).ignored == ["header"]
    assert decoder.decode("b", b"1,2", 1.0).items == [Sample("b.col0", 1.0, 1.0),
                                                      Sample("b.col1", 1.0, 2.0)]
    assert decoder.decode("a", b"3,4", 1.0).items == [Sample("a.x", 1.0, 3.0),
                                                      Sample("a.y", 1.0, 4.0)]
    for payload in (b"x,y", b"offline", b"ERROR"):
        out = decoder.decode("c", payload, 1.0)
        assert out.ignored == [] and out.items == [] and "not_numeric" in out.skipped
    assert decoder.decode("c", b"3,4", 1.0).items == [Sample("c.col0", 1.0, 3.0),
                                                      Sample("c.col1", 1.0, 4.0)]


def test_a_json_payload_that_names_a_stream_twice_keeps_the_first_value() -> None:
    """As on stdin: ``{"a.b": 1, "a": {"b": 2}}`` flattens to t.a.b twice; the first value
    plays, the second is skipped as duplicate_name (counted per topic, warned)."""
    out = decode('{"a.b": 1, "a": {"b": 2}, "c": 3}')
    assert out.items == [Sample("t.a.b", 100.0, 1.0), Sample("t.c", 100.0, 3.0)]
    assert out.skipped == ["duplicate_name"]
    line = decode('x=1 x=2', payload="line")
    assert line.items == [Sample("t.x", 100.0, 1.0)] and line.skipped == ["duplicate_name"]
    two_lines = decode("x=1\nx=2", payload="line")  # two lines: two samples in time
    assert two_lines.items == [Sample("t.x", 100.0, 1.0), Sample("t.x", 100.0, 2.0)]
    assert two_lines.skipped == []
    # A value that is not finite is skipped before it takes the name (as on stdin): the
    # next value of that name plays (CI's fuzz run, two lone surrogates that clean to
    # U+FFFD, the first 1e999; 5b3ed48).
    out = decode('{"\\ud800": 1e999, "\\udc00": 2, "b": 3}')
    assert out.items == [Sample("t.\ufffd", 100.0, 2.0), Sample("t.b", 100.0, 3.0)]
    assert out.skipped == ["inf"]
    # A key one object repeats: its first value (json.loads kept the last, uncounted).
    out = decode('{"a": 1, "a": 2, "b": {"c": 1}, "b": {"d": 2}}')
    assert out.items == [Sample("t.a", 100.0, 1.0), Sample("t.b.c", 100.0, 1.0),
                         Sample("t.b.d", 100.0, 2.0)]
    assert out.skipped == ["duplicate_name"]


def test_limits_and_encoding() -> None:
    assert decode(b"1" * (65536 * 16 + 1)).skipped == ["too_large"]
    assert decode(b"\xff").skipped == ["invalid_utf8"]
    assert decode(b"  ").skipped == ["empty"]
    assert decode("1", topic="a", stream_name="{topic[3]}").skipped == ["stream_name"]


def test_notes() -> None:
    note = NoteEvent("s", 1.0, 2.0, 0.5, 60, 90, 0.5, 3, 4, start=9.0)
    assert note_from_dict(note.to_dict()) == note
    doc = note.to_dict()
    del doc["start"]
    assert note_from_dict(doc) == NoteEvent("s", 1.0, 2.0, 0.5, 60, 90, 0.5, 3, 4)
    for bad in ({**note.to_dict(), "pitch": 200}, {**note.to_dict(), "pitch": 60.5},
                {**note.to_dict(), "stream": 1}, {"pitch": 60}, [1], None,
                {**note.to_dict(), "duration": float("nan")}):
        assert note_from_dict(bad) is None
    assert decode("[]", play_notes=True).skipped == ["bad_note"]


def test_a_bad_note_says_which_field_and_what_value() -> None:
    """--play-notes: what is wrong with a note that is refused, by field and value (cut to
    40 characters), for the warning; the reason counted stays bad_note."""
    from streamsonic.mqtt.payload import read_note

    note = NoteEvent("s", 1.0, 2.0, 0.5, 60, 90, 0.5, 3, 4).to_dict()
    assert read_note(note) == NoteEvent("s", 1.0, 2.0, 0.5, 60, 90, 0.5, 3, 4)
    long = "x" * 1000
    for doc, problem in (
            ({**note, "pitch": 200}, "field 'pitch' = 200: outside MIDI range 0..127"),
            ({**note, "pitch": 60.5}, "field 'pitch' = 60.5: not an integer"),
            ({**note, "velocity": True}, "field 'velocity' = true: not an integer"),
            ({**note, "duration": 0}, "field 'duration' = 0.0: must be > 0 and at most "
                                      "600 seconds"),
            ({**note, "time": "soon"}, "field 'time' = \"soon\": not a finite number"),
            ({**note, "stream": 7}, "field 'stream' = 7: not a string"),
            ({**note, "accent": 1}, "field 'accent' = 1: not true or false"),
            ({**note, "source": long}, f"field 'source' = \"{'x' * 39}...: neither "
                                       "'data' nor 'model'"),
            ({k: v for k, v in note.items() if k != "pitch"}, "field 'pitch' is missing"),
            ([1], "a JSON array, not an object with a note's fields"),
            (None, "a JSON null, not an object with a note's fields")):
        assert read_note(doc) == problem, doc
    out = decode(json.dumps({**note, "pitch": 200}), play_notes=True)
    assert out.skipped == ["bad_note"]
    assert out.detail == "field 'pitch' = 200: outside MIDI range 0..127"
    out = decode("not json", play_notes=True)
    assert out.skipped == ["bad_note"] and out.detail == "not JSON"


# -- reconnect backoff and the queue ------------------------------------------------------

def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(1)
    for attempt in range(40):
        ceiling = min(30.0, 0.5 * 2 ** attempt)
        delays = [backoff_delay(attempt, 0.5, 30.0, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


class FakeLoop:
    """Unit-test stand-in for the event loop: records call_soon_threadsafe callbacks."""

    def __init__(self) -> None:
        self.calls: list[object] = []

    def call_soon_threadsafe(self, fn: object) -> None:
        self.calls.append(fn)


def test_hand_over_drops_oldest_and_wakes_once() -> None:
    source = MqttSource(cfg(url="mqtt://h", topics=["a"], queue_size=3))
    loop = FakeLoop()
    source._loop = loop  # type: ignore[assignment]
    source._batch = [(Sample("a", 0, float(i)), None) for i in range(5)]
    source._hand_over()
    source._batch = [(Sample("a", 0, 5.0), None)]
    source._hand_over()
    assert [s.value for s, _, _ in source._queue] == [3.0, 4.0, 5.0]
    stamps = [stamp for _, _, stamp in source._queue]  # when each was handed over
    assert stamps == sorted(stamps) and stamps[-1] <= time.monotonic()
    assert source.stats["dropped.queue_full"] == 3
    assert len(loop.calls) == 1  # one wake-up pending at a time


# -- session takeover (MQTT 5 reason 0x8E) ------------------------------------------------

def _disconnect_with(source: MqttSource, code: int) -> None:
    """Feed the source's on_disconnect what paho reports for a DISCONNECT from the broker
    (unit-level: mosquitto 2.0 closes the connection without a reason, see
    test_mqtt_source.py::test_session_takeover_is_named_and_not_fought)."""
    from paho.mqtt.client import DisconnectFlags
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    source._thread = object()  # type: ignore[assignment]  # running, not starting up
    source._session_start = 0.0
    source._on_disconnect(None, None, DisconnectFlags(True),  # type: ignore[arg-type]
                          ReasonCode(PacketTypes.DISCONNECT, identifier=code), None)


def test_reason_0x8e_is_a_takeover_at_once(caplog: pytest.LogCaptureFixture) -> None:
    source = MqttSource(cfg(url="mqtt://h", topics=["a"], client_id="twin"))
    _disconnect_with(source, 0x8E)
    assert source.stats["takeovers"] == 1
    assert source._takeover  # the next reconnect waits mqtt.takeover_retry
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "client id 'twin'" in errors[0] and "0x8E" in errors[0]
    assert "--client-id" in errors[0]
    _disconnect_with(source, 0x8E)  # again: counted, not another error
    assert source.stats["takeovers"] == 2
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1


def test_reason_0x8e_with_exit_policy_fails_the_source() -> None:
    source = MqttSource(cfg(url="mqtt://h", topics=["a"], client_id="twin",
                            on_takeover="exit"))
    _disconnect_with(source, 0x8E)
    assert source._failure is not None
    assert source._failure.exit_status == 69
    assert "client id 'twin'" in str(source._failure)


def test_other_disconnect_reasons_are_no_takeover() -> None:
    source = MqttSource(cfg(url="mqtt://h", topics=["a"], client_id="twin"))
    _disconnect_with(source, 0x8B)  # server shutting down
    assert "takeovers" not in source.stats
    assert not source._takeover


def test_takeover_delay_is_slow_and_jittered() -> None:
    rng = random.Random(2)
    delays = [takeover_delay(60.0, rng) for _ in range(50)]
    assert all(45.0 <= d <= 60.0 for d in delays)
    assert len(set(delays)) > 1


class FakeAckClient:
    """Unit-test stand-in for paho's client: records acknowledgements (the real flow is
    test_mqtt_source.py::test_qos1_is_acknowledged_only_once_taken)."""

    def __init__(self) -> None:
        self.acks: list[tuple[int, int]] = []
        self.connected = True

    def is_connected(self) -> bool:
        return self.connected

    def ack(self, mid: int, qos: int) -> None:
        self.acks.append((mid, qos))


def test_ack_goes_only_to_the_connection_that_received_the_message() -> None:
    from streamsonic.sources.mqtt import _Ack

    source = MqttSource(cfg(url="mqtt://h", topics=["a"]))
    client = FakeAckClient()
    source._generation = 2
    source._ack(client, _Ack(5, 1, 2))  # type: ignore[arg-type]
    source._ack(client, _Ack(6, 1, 1))  # type: ignore[arg-type]  # an earlier connection's
    client.connected = False
    source._ack(client, _Ack(7, 1, 2))  # type: ignore[arg-type]  # connection lost
    assert client.acks == [(5, 1)]
    assert source.stats["acked"] == 1
    assert source.stats["acks.stale"] == 2


# -- the fast path for bare numbers, and chunked reads ------------------------------------

_NUMBERISH = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**30, 10**30).map(str),
    st.from_regex(r"[+-]?[0-9]{0,4}(\.[0-9]{0,3})?([eE][+-]?[0-9]{1,4})?", fullmatch=True),
    st.sampled_from(["1_000", "0x10", "\u0661\u0662", "Infinity", "-inf", "NaN", "1e999",
                     "+.5", "5.", ".", "", "null", "1 2", "1,5", '{"a": 1}', "[1]", "a=1"]),
    st.text(max_size=12),
)
_SPACE = st.sampled_from(["", " ", "\t", "\n", "\r\n", "\xa0", "\u2003", "\0"])


@settings(max_examples=400, deadline=None)
@given(text=_NUMBERISH, before=_SPACE, after=_SPACE, raw=st.binary(max_size=8),
       use_raw=st.booleans(),
       topic=st.sampled_from(["t", "a/b/c", "x" * 300, "plant/7/temp", "é/ü"]),
       mqtt=st.sampled_from([{}, {"payload": "number"}, {"payload": "json"},
                             {"payload": "line"}, {"stream_name": "{topic[1]}"},
                             {"json_field": "a"}, {"timestamp_field": "ts"}]),
       play_notes=st.booleans())
def test_fast_path_gives_what_decode_gives(text: str, before: str, after: str, raw: bytes,
                                           use_raw: bool, topic: str, mqtt: dict[str, str],
                                           play_notes: bool) -> None:
    payload = raw if use_raw else (before + text + after).encode("utf-8", "surrogatepass")
    decoder = PayloadDecoder(cfg(**mqtt), play_notes=play_notes)
    assert decoder.fast(topic, payload, 5.0) is None  # the topic's name is not known yet
    decoder.decode(topic, b"0", 1.0)  # now it is (if the topic has one)
    fast = decoder.fast(topic, payload, 5.0)
    reference = PayloadDecoder(cfg(**mqtt), play_notes=play_notes).decode(topic, payload, 5.0)
    if fast is not None:
        assert reference.items == [fast]
        assert reference.skipped == reference.ignored == []
        assert decoder.decode(topic, payload, 5.0) == reference  # the cached name too


def test_fast_path_is_taken_for_bare_numbers() -> None:
    decoder = PayloadDecoder(cfg())
    long_topic = "x" * 300
    for topic in ("t", long_topic):
        assert decoder.decode(topic, b"1", 1.0).items
        sample = decoder.fast(topic, b" -2.5e1\n", 2.0)
        assert sample == Sample(decoder.decode(topic, b"0", 0).items[0].stream, 2.0, -25.0)
    cleaned = decoder.fast(long_topic, b"1", 0)
    assert cleaned is not None
    assert len(cleaned.stream) <= 200  # the cleaned name
    assert decoder.fast("t", b"nan", 0) is None
    assert PayloadDecoder(cfg(payload="json")).fast("t", b"1", 0) is None


class ChunkSocket:
    """A socket stand-in for ChunkedClient: records the reads, gives ``data`` in chunks."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self.data, self.chunk, self.reads = data, chunk, 0
        self.eof = False  # the peer closed: b"" once the data is read

    def recv(self, bufsize: int) -> bytes:
        self.reads += 1
        if not self.data:
            if self.eof:
                return b""
            raise BlockingIOError
        n = min(bufsize, self.chunk)
        out, self.data = self.data[:n], self.data[n:]
        return out

    def close(self) -> None:
        pass


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(1, 300), min_size=1, max_size=40),
       chunk=st.integers(1, 5000), seed=st.integers(0, 2**32 - 1))
def test_chunked_client_serves_the_stream_in_order(sizes: list[int], chunk: int,
                                                   seed: int) -> None:
    from streamsonic.mqtt.chunked import READ_CHUNK, ChunkedClient

    data = random.Random(seed).randbytes(sum(sizes))
    client = build_client(cfg().mqtt, parse_url("mqtt://h"), "x", chunked=True)
    assert isinstance(client, ChunkedClient)
    sock = ChunkSocket(data, chunk)
    client._sock = sock  # type: ignore[assignment]
    got = b""
    for size in sizes:  # as paho asks: a whole read, else the rest of it
        want = size
        while want:
            part = client._sock_recv(want)
            assert 0 < len(part) <= want
            got += part
            want -= len(part)
    assert got == data
    assert client.buffered() == 0
    # one recv per chunk the socket gave, not one per read asked for
    assert sock.reads == -(-len(data) // min(chunk, READ_CHUNK))
    client._sock = ChunkSocket(b"zz", 10)  # type: ignore[assignment]  # a new connection
    assert client.buffered() == 0
    assert client._sock_recv(1) == b"z"


@pytest.mark.parametrize("read_all", [False, True])
def test_chunked_client_read_all_uses_the_chunk_up(read_all: bool) -> None:
    """With ``read_all`` (the output's client, read by paho's own thread, whose select sees
    the socket alone) one ``loop_read`` handles every packet of the chunk it read; without
    it paho stops after its ``max_packets`` (the source's loop reads again while
    ``buffered``)."""
    from streamsonic.mqtt.chunked import ChunkedClient

    data = b"".join(_publish_packet(b"t", str(i).encode(), 0, False, 0, b"")
                    for i in range(25))
    client = build_client(cfg().mqtt, parse_url("mqtt://h"), "x", chunked=True)
    assert isinstance(client, ChunkedClient)
    client.read_all = read_all
    got: list[bytes] = []
    client.on_message = lambda _c, _u, msg: got.append(bytes(msg.payload))
    sock = ChunkSocket(data, 1 << 20)
    client._sock = sock  # type: ignore[assignment]
    assert client.loop_read() == paho.MQTT_ERR_SUCCESS
    if read_all:
        assert got == [str(i).encode() for i in range(25)]
        assert client.buffered() == 0
        assert sock.reads == 1  # one recv for all 25
    else:
        assert len(got) < 25 and client.buffered() > 0


def _publish_packet(topic: bytes, payload: bytes, qos: int, retain: bool, mid: int,
                    props: bytes | None) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += mid.to_bytes(2, "big")
    if props is not None:  # MQTT 5: the properties' length (one byte here), then them
        body += bytes([len(props)]) + props
    body += payload
    length, n = b"", len(body)
    while True:
        byte, n = n & 127, n >> 7
        length += bytes([byte | (128 if n else 0)])
        if not n:
            break
    return bytes([0x30 | qos << 1 | int(retain)]) + length + body


_TOPICS = st.sampled_from([b"t", b"a/b", b"\xc3\xa9", b"x" * 200, b"\xff\xfe", b""])
_PROPS = st.sampled_from([b"", b"\x01\x01", b"\x23\x00\x05"])  # none, format, topic alias


@settings(max_examples=150, deadline=None)
@given(messages=st.lists(st.tuples(_TOPICS, st.binary(max_size=300), st.sampled_from([0, 1]),
                                   st.booleans(), st.integers(1, 65535), _PROPS),
                         min_size=1, max_size=30),
       v5=st.booleans(), manual_ack=st.booleans(), chunk=st.integers(1, 2000))
def test_fast_publish_path_gives_what_paho_gives(
        messages: list[tuple[bytes, bytes, int, bool, int, bytes]], v5: bool,
        manual_ack: bool, chunk: int) -> None:
    """The same bytes through ChunkedClient with and without on_fast_publish, read the way
    the source's network loop reads them: the same messages, in the same order."""
    from streamsonic.mqtt.chunked import ChunkedClient

    data = b"".join(_publish_packet(topic, payload, qos, retain, mid, props if v5 else None)
                    for topic, payload, qos, retain, mid, props in messages
                    if v5 or topic)  # MQTT 3.1.1 has no empty topics
    seen: dict[bool, list[tuple[object, ...]]] = {}
    fast_taken = 0
    for fast in (False, True):
        got: list[tuple[object, ...]] = []
        config = cfg(protocol="5" if v5 else "3.1.1")
        client = build_client(config.mqtt, parse_url("mqtt://h"), "x", manual_ack=manual_ack,
                              chunked=True)
        assert isinstance(client, ChunkedClient)

        def on_message(_c: object, _u: object, msg: paho.MQTTMessage,
                       out: list[tuple[object, ...]] = got) -> None:
            out.append((msg._topic, bytes(msg.payload), msg.qos, msg.mid, msg.retain))

        def on_fast(_c: object, topic: str, payload: bytes, qos: int, mid: int,
                    retain: bool, out: list[tuple[object, ...]] = got) -> None:
            nonlocal fast_taken
            fast_taken += 1
            out.append((topic.encode(), payload, qos, mid, retain))

        client.on_message = on_message
        client.on_publish = None
        if fast:
            client.on_fast_publish = on_fast
        client._sock = ChunkSocket(data, chunk)  # type: ignore[assignment]
        def puback(mid: int, out: list[tuple[object, ...]] = got) -> paho.MQTTErrorCode:
            out.append(("PUBACK", mid))  # paho acknowledges on receipt without manual_ack
            return paho.MQTT_ERR_SUCCESS

        client._send_puback = puback  # type: ignore[method-assign]
        for _ in range(10 * len(messages) + 10):
            rc = client.loop_read()
            assert rc == paho.MQTT_ERR_SUCCESS
            if not client.buffered() and not client._sock.data:  # type: ignore[union-attr]
                break
        client._sock.eof = True  # type: ignore[union-attr]
        assert client.loop_read() == paho.MQTT_ERR_CONN_LOST  # the end reaches paho
        seen[fast] = got
    assert seen[True] == seen[False]
    assert len([m for m in seen[False] if m[0] != "PUBACK"]) == len(
        [m for m in messages if v5 or m[0]])
    if chunk >= len(data) and any(m[0] == b"t" and m[2] == 0 and not (v5 and m[5])
                             for m in messages):
        assert fast_taken  # the fast path is taken where it can be
