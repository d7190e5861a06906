"""Fuzzing the daemon's inputs: arbitrary bytes and JSON through stdin and MQTT into the engine.

Hypothesis generates hostile input (arbitrary bytes, lone UTF-16 surrogates in JSON keys
and values, deep nesting, huge numbers, huge keys, every line format) and feeds it through
the code the daemon runs:

- stdin: :class:`StdinSource` reading a real file descriptor (as ``streamsonic < file``
  does: its reader thread, ``LineParser``, the counters);
- MQTT: :class:`MqttSource` subscribed on a real mosquitto, the payloads published to it
  (paho's network thread, ``PayloadDecoder``, the queue, acknowledgements, the counters);

and from either source into the live engine (``Engine.consume`` -> ``Conductor`` with the
shipped pitch weights -> ``Scheduler`` -> the ``events`` output writing strict UTF-8, as to
stdout). The engine and scheduler run on a :class:`VirtualClock` (as ``render`` does) so
that every queued note and note-off plays out without waiting.

Checked for every example: nothing raises and nothing is counted as ``internal_error``;
every input line (or MQTT message) gives samples or skip reasons, the source's counters
equal what the parser/decoder made of the input (samples + skipped-by-reason explain every
line and field), every sample reaches the engine, every note written is valid JSON and no
note hangs. For JSON documents the fields are counted independently of the parser: each
numeric leaf is one sample named by its dotted path, each other leaf one skip reason.

Budget: a short run by default; ``STREAMSONIC_FUZZ_EXAMPLES=100000`` (or any number)
runs that many examples per test.
"""

from __future__ import annotations

import asyncio
import collections
import io
import json
import math
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamsonic.conductor import Conductor
from streamsonic.config import Config, load_config
from streamsonic.encoding import PitchEncoding
from streamsonic.engine import Engine
from streamsonic.events import NoteEvent, Sample, clean_name
from streamsonic.model.loader import load_pitch_model
from streamsonic.model.stepper import PitchStepper
from streamsonic.mqtt.payload import PayloadDecoder
from streamsonic.parse import BENIGN_REASONS, REASONS, TIME_KEYS, LineParser, ParsedLine
from streamsonic.scheduler import Scheduler, VirtualClock
from streamsonic.sinks.events import EventsSink
from streamsonic.sources.mqtt import MqttSource
from streamsonic.sources.stdin import StdinSource
from tests.fixtures_mqtt import Broker

REPO = Path(__file__).resolve().parents[1]

#: Examples per test: ``STREAMSONIC_FUZZ_EXAMPLES`` when set, else a short run.
BUDGET = int(os.environ.get("STREAMSONIC_FUZZ_EXAMPLES") or 0)

#: Generous guard against a hang (the test fails with what it waited for); never a timing test.
WAIT = 60.0


def fuzz_settings(default: int) -> settings:
    return settings(
        max_examples=BUDGET or default,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.large_base_example,
                               HealthCheck.function_scoped_fixture],
    )


# -- strategies -------------------------------------------------------------------------

#: Any code point, lone surrogates included (Hypothesis leaves them out by default).
ANY_CHAR = st.characters(exclude_categories=())
NASTY_KEYS = ["\ud800", "\udfff", "a\ud800b", "\ud83d\ude00", "\ud83d", "", ".", "a.b",
              "\x00", "\ufeff", "\u2028", "col0", "value", "é" * 300]
KEYS = st.one_of(
    st.text(ANY_CHAR, max_size=12),
    st.sampled_from(NASTY_KEYS),
    st.integers(150, 70_000).map(lambda n: "k" * n),  # long; over 64 KiB the line is too long
)
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),  # beyond a float: "inf"
    st.floats(),  # NaN and infinities included
    st.sampled_from([10**308, 2**1024, -(10**400), 1e308, 5e-324, -0.0, 0]),
)
LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(ANY_CHAR, max_size=20))
JSON_VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=30,
)
#: Top-level objects without a time key (a time key is a timestamp, not a field).
JSON_DOCS = st.dictionaries(KEYS.filter(lambda k: k.lower() not in TIME_KEYS), JSON_VALUES,
                            max_size=8)
def json_bytes(doc: object, ascii_only: bool) -> bytes:
    """``doc`` as JSON text; with ``ascii_only`` false a lone surrogate is written raw
    (invalid UTF-8, as a broken producer would)."""
    return json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def deep(n: int, kind: str) -> str:
    if kind == "list":
        return "[" * n + "1" + "]" * n
    return '{"a":' * n + "1" + "}" * n


#: Nesting depths: shallow enough to parse, or far too deep. In between the outcome is not
#: the input's alone: Python's json gives up at the recursion limit minus the caller's stack
#: depth, and Hypothesis raises the limit while a test runs, so a document nested 1000 to a
#: few thousand deep can parse in the source's thread and not in this test's (or not in the
#: daemon, whose limit is 1000: there it is ``bad_json``).
DEPTHS = st.one_of(st.integers(1, 500), st.integers(20_000, 200_000))
RAW_TEXT_LINES = st.one_of(
    st.builds(deep, DEPTHS, st.sampled_from(["list", "object"])),
    st.integers(1, 12_000).map(lambda n: "1" + "0" * n),  # over 4300 digits: not an int
    st.integers(1, 12_000).map(lambda n: '{"a": 1' + "0" * n + "}"),
    st.sampled_from([
        '{"\\ud800": 1}', '{"\\udfff": 2, "b": 3}', '{"\\ud800\\udc00": 1}', '["\\ud800"]',
        '{"a": "\\ud800"}', '{"a": 1, "a": 2}', "1e999", "-1e-999", '{"x": 1e999}',
        '{"x": NaN, "y": -Infinity}', "[]", "{}", '{"time": "\\ud800", "v": 1}',
        '{"ts": 1e400, "v": 1}', "nan", "inf", "-", "# comment", "a,b,c", "1,2,3", "x=1 y=2",
        'm{l="\\ud800"} 1', "2024-01-02T03:04:05Z 1 2", "1700000000 5", '"a,b",1',
        "\ufeff1", "\x00", "1;2,5;3", "a=", "=1",
    ]),
    st.lists(st.one_of(NUMBERS.map(repr), st.text(ANY_CHAR, max_size=8)), max_size=6).map(
        ",".join),
    st.lists(st.tuples(st.text(ANY_CHAR, max_size=6), NUMBERS.map(repr)), max_size=4).map(
        lambda pairs: " ".join(f"{k}={v}" for k, v in pairs)),
    st.text(ANY_CHAR, max_size=60),
)
LINES = st.one_of(
    RAW_TEXT_LINES.map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.builds(json_bytes, JSON_VALUES, st.booleans()),
    st.binary(max_size=120),
)
#: Whole inputs: lines (LF or CRLF, with or without a final newline), or any bytes at all.
INPUTS = st.one_of(
    st.builds(lambda lines, sep, end: sep.join(lines) + (sep if end else b""),
              st.lists(LINES, max_size=10), st.sampled_from([b"\n", b"\r\n"]), st.booleans()),
    st.binary(max_size=3000),
)

MQTT_PAYLOADS = st.one_of(
    LINES,
    st.lists(LINES, min_size=2, max_size=5).map(b"\n".join),  # several lines in one payload
    st.binary(max_size=500),
)
#: Topic levels: valid UTF-8 without wildcards, NUL or control characters (which MQTT
#: forbids, so a publisher cannot send them).
TOPIC_LEVELS = st.lists(
    st.text(st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="+#/"),
            max_size=10),
    min_size=1, max_size=3,
).map("/".join)


# -- the engine, as the daemon wires it ---------------------------------------------------

@pytest.fixture(scope="module")
def model() -> tuple[PitchStepper, PitchEncoding]:
    """The shipped pitch weights (the daemon's default), loaded once."""
    stepper, encoding, _ = load_pitch_model(load_config(None).model)
    return stepper, encoding


@dataclass
class Played:
    """What the engine did with a source's items."""

    samples: list[Sample] = field(default_factory=list)
    received_notes: list[NoteEvent] = field(default_factory=list)  # --play-notes
    fed: int = 0
    played: int = 0
    notes: list[dict[str, Any]] = field(default_factory=list)


async def play(items: AsyncIterator[Sample | NoteEvent], config: Config,
               model: tuple[PitchStepper, PitchEncoding]) -> Played:
    """Run ``items`` through the engine into the events output; play everything out."""
    stepper, encoding = model
    clock = VirtualClock()
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", newline="\n",
                           write_through=True)  # what the events output gets as stdout
    sink = EventsSink(out)
    scheduler = Scheduler(clock, [sink])
    engine = Engine(Conductor(config, stepper, encoding), scheduler,
                    clock)  # type: ignore[arg-type]  # time, call_at, call_soon: all it uses
    result = Played()

    async def tap() -> AsyncIterator[Sample | NoteEvent]:
        async for item in items:
            if isinstance(item, Sample):
                result.samples.append(item)
            else:
                result.received_notes.append(item)
            yield item

    await engine.consume(tap())
    clock.run_all()  # the queued notes and every note-off, at their (virtual) times
    assert engine.waiting == 0 and scheduler.idle
    assert not sink.sounding, f"hanging notes {sink.sounding}"
    scheduler.close()
    result.fed, result.played = engine.samples, engine.played
    text = out.buffer.getvalue().decode("utf-8")
    result.notes = [json.loads(line) for line in text.splitlines()]
    return result


def check_played(result: Played) -> None:
    """Every sample reached the engine; every note it wrote is a valid note of a stream;
    every note received (``--play-notes``) was written."""
    assert result.fed == len(result.samples)
    received = len(result.received_notes)
    # a sample plays at most one note of its own ("source": "data"); the notes the model
    # adds between them ("source": "model") come on top
    added = (sum(n.get("source") == "model" for n in result.notes)
             - sum(n.source == "model" for n in result.received_notes))
    assert len(result.notes) == result.played
    assert result.played - added <= result.fed + received
    streams = {s.stream for s in result.samples} | {n.stream for n in result.received_notes}
    for sample in result.samples:
        assert math.isfinite(sample.value) and math.isfinite(sample.time)
        assert sample.stream == clean_name(sample.stream)  # encodable, bounded
    for note in result.notes:
        assert note["stream"] in streams and note["stream"] == clean_name(note["stream"])
        assert 0 <= note["pitch"] <= 127 and 1 <= note["velocity"] <= 127
    if result.samples or received:  # every stream's first sample plays at once
        assert {n["stream"] for n in result.notes} == streams
    if received:  # finished notes play as they are, in order
        assert not result.samples
        assert [(n["stream"], n["pitch"], n["duration"]) for n in result.notes] == [
            (r.stream, r.pitch, r.duration) for r in result.received_notes]


def check_reasons(stats: dict[str, int]) -> None:
    for key in stats:
        if key.startswith(("skipped.", "ignored.")):
            reason = key.split(".", 1)[1]
            assert reason in REASONS or reason in DECODER_REASONS, key
    assert "skipped.internal_error" not in stats, stats


#: Skip reasons of the MQTT decoder and source on top of the parser's.
DECODER_REASONS = frozenset({"too_large", "no_field", "stream_name", "bad_note", "retained"})


# -- stdin --------------------------------------------------------------------------------

def stdin_lines(data: bytes) -> list[bytes]:
    """The lines the stdin reader sees (without their line ends: LF, CRLF or a lone CR)."""
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def expected_stdin(data: bytes, config: Config) -> tuple[collections.Counter[str],
                                                         list[ParsedLine]]:
    """What the source should count for ``data``: a fresh parser over the same lines (an
    over-long line is skipped whole by the reader before parsing). Each line must give
    samples or reasons."""
    parser = LineParser(config.input)
    limit = config.input.max_line_bytes
    counts: collections.Counter[str] = collections.Counter()
    parsed_lines = []
    for line in stdin_lines(data):
        if len(line) > limit:
            parsed = ParsedLine(skipped=["too_long"])
        else:
            parsed = parser.parse_line(line + b"\n", 0.0)
        assert parsed.samples or parsed.skipped, f"line {line[:80]!r} gave nothing"
        counts["lines"] += 1
        counts["samples"] += len(parsed.samples)
        # a header or comment line is not bad input: ignored, as in MQTT payloads
        counts.update(f"{'ignored' if r in BENIGN_REASONS else 'skipped'}.{r}"
                      for r in parsed.skipped)
        parsed_lines.append(parsed)
    return counts, parsed_lines


def run_stdin(data: bytes, path: Path, config: Config,
              model: tuple[PitchStepper, PitchEncoding]) -> tuple[dict[str, int], Played]:
    """``streamsonic < path`` with ``data`` in the file, through the engine."""
    path.write_bytes(data)

    async def main() -> tuple[dict[str, int], Played]:
        with path.open("rb") as fh:
            source = StdinSource(config.input, stream=fh)
            async with source:
                played = await play(aiter(source), config, model)
            return source.stats, played

    return asyncio.run(main())


def check_stdin(data: bytes, path: Path, config: Config,
                model: tuple[PitchStepper, PitchEncoding]) -> tuple[dict[str, int], Played]:
    stats, played = run_stdin(data, path, config, model)
    expected, _ = expected_stdin(data, config)
    check_reasons(stats)
    assert {k: v for k, v in stats.items() if v} == {k: v for k, v in expected.items() if v}
    assert played.fed == stats["samples"]
    check_played(played)
    return stats, played


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(None)


@fuzz_settings(default=60)
@given(data=INPUTS)
def test_stdin_any_bytes_are_played_or_counted(data: bytes, tmp_path: Path, config: Config,
                                               model: tuple[PitchStepper, PitchEncoding]
                                               ) -> None:
    check_stdin(data, tmp_path / "input", config, model)


class JsonPairs(list[tuple[str, Any]]):
    """A JSON object as its key-value pairs, a repeated key's included (json.loads would
    keep its last value only): ``object_pairs_hook=JsonPairs``."""


def load_pairs(text: str) -> object:
    """The JSON document in ``text``, its objects as :class:`JsonPairs`."""
    return json.loads(text, object_pairs_hook=JsonPairs)


def json_leaves(prefix: str | None, node: object) -> Iterator[tuple[str, object]]:
    """The leaves of a JSON document (objects as :class:`JsonPairs`: every value of a key
    an object repeats) by dotted path, in document order (independent of the parser); the
    document itself has the prefix None."""
    if isinstance(node, JsonPairs):
        for key, value in node:
            yield from json_leaves(key if prefix is None else f"{prefix}.{key}", value)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from json_leaves(str(i) if prefix is None else f"{prefix}.{i}", value)
    elif prefix is not None:
        yield prefix, node


def skip_reason(leaf: object, replacement: str) -> str | None:
    """Why a JSON leaf is skipped (None: it is a finite number, a sample); a string holding
    U+FFFD (from bytes that were not UTF-8) is skipped as ``replacement``."""
    if leaf is None:
        return "missing"
    if isinstance(leaf, str):
        return replacement if "\ufffd" in leaf else "not_numeric"
    if isinstance(leaf, bool) or not isinstance(leaf, int | float):
        return "not_numeric"
    try:
        value = float(leaf)
    except OverflowError:
        return "inf"
    if math.isnan(value):
        return "nan"
    return None if math.isfinite(value) else "inf"


def expect_leaves(leaves: list[tuple[str, Any]], prefix: str, names: list[str],
                  skipped: collections.Counter[str]) -> None:
    """What one line's (or payload's) JSON leaves should give: the first value of each
    cleaned name plays (appended to ``names``), every other leaf is counted in
    ``skipped`` (its skip reason; ``duplicate_name`` for two keys that clean to one name)."""
    named: set[str] = set()
    for path, leaf in leaves:
        reason = skip_reason(leaf, replacement="invalid_utf8")
        name = clean_name(prefix + path)
        if reason is None and name in named:
            reason = "duplicate_name"
        if reason is None:
            named.add(name)
            names.append(name)
        else:
            skipped[reason] += 1


@fuzz_settings(default=40)
@given(docs=st.lists(st.tuples(JSON_DOCS, st.booleans()), min_size=1, max_size=6))
def test_stdin_json_fields_are_each_played_or_counted(
        docs: list[tuple[dict[str, Any], bool]], tmp_path: Path, config: Config,
        model: tuple[PitchStepper, PitchEncoding]) -> None:
    lines = [json_bytes(doc, ascii_only) for doc, ascii_only in docs]
    stats, played = check_stdin(b"\n".join(lines) + b"\n", tmp_path / "input", config, model)
    limit = config.input.max_line_bytes
    names: list[str] = []
    skipped = collections.Counter[str]()
    for line in lines:
        if len(line) > limit:
            skipped["too_long"] += 1
            continue
        # as the daemon reads the line: bytes that are not UTF-8 (a raw lone surrogate)
        # become U+FFFD, in names and values alike
        leaves = list(json_leaves(None, load_pairs(line.decode("utf-8", "replace"))))
        if not leaves:
            skipped["no_value"] += 1
        expect_leaves(leaves, "", names, skipped)
    assert [s.stream for s in played.samples] == names
    got = {k[8:]: v for k, v in stats.items() if k.startswith("skipped.") and v}
    assert got == {k: v for k, v in skipped.items() if v}


@pytest.mark.parametrize("line", [b'{"\\ud800": 1}', b'{"a": {"\\udfff": 2}}',
                                  b'{"\\ud800" : 1, "\\udc00": 2}'])
def test_stdin_lone_surrogate_keys_play(line: bytes, tmp_path: Path, config: Config,
                                        model: tuple[PitchStepper, PitchEncoding]) -> None:
    """Defect 1 of issue 12: the daemon died on this line with UnicodeEncodeError."""
    stats, played = check_stdin(line + b"\n", tmp_path / "input", config, model)
    data = [n for n in played.notes if n["source"] == "data"]  # and notes the model adds
    assert stats["samples"] == len(data) >= 1
    assert all("\ufffd" in n["stream"] for n in played.notes)


# -- MQTT ---------------------------------------------------------------------------------

@dataclass
class MqttRig:
    """One subscribed MqttSource and one publisher on a real broker, for many examples."""

    broker: Broker
    config: Config
    prefix: str
    loop: asyncio.AbstractEventLoop
    source: MqttSource
    publisher: Any
    play_notes: bool = False
    examples: int = 0

    def publish(self, topic: str, payloads: list[bytes]) -> None:
        infos = [self.publisher.publish(topic, p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(WAIT)
            assert info.is_published(), f"publishing to {topic!r} failed"


@pytest.fixture(scope="module")
def mqtt_rig(mqtt_broker: Broker) -> Iterator[MqttRig]:
    yield from make_rig(mqtt_broker, play_notes=False)


@pytest.fixture(scope="module")
def mqtt_notes_rig(mqtt_broker: Broker) -> Iterator[MqttRig]:
    """The source of ``streamsonic --play-notes``: payloads are finished notes."""
    yield from make_rig(mqtt_broker, play_notes=True)


def make_rig(mqtt_broker: Broker, play_notes: bool) -> Iterator[MqttRig]:
    import paho.mqtt.client as paho

    prefix = f"fuzz/{uuid.uuid4().hex[:8]}"
    config = load_config(None, {"mqtt.url": mqtt_broker.url, "mqtt.topics": [f"{prefix}/#"]})
    loop = asyncio.new_event_loop()
    source = MqttSource(config, play_notes=play_notes)
    loop.run_until_complete(source.__aenter__())
    publisher = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    publisher.connect("127.0.0.1", mqtt_broker.port)
    publisher.loop_start()
    try:
        rig = MqttRig(mqtt_broker, config, prefix, loop, source, publisher, play_notes)
        loop.run_until_complete(until(lambda: source.stats.get("subscribed", 0) >= 1,
                                      "the subscription"))
        yield rig
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        loop.run_until_complete(source.aclose())
        loop.close()


async def until(cond: Callable[[], bool], what: str) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.01)
    try:
        await asyncio.wait_for(poll(), WAIT)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


def expected_mqtt(rig: MqttRig, messages: list[tuple[str, bytes]]) -> collections.Counter[str]:
    """What the source should count: a fresh decoder over the same messages (the topics
    are new, so per-topic line parsers start fresh in the source's decoder too)."""
    decoder = PayloadDecoder(rig.config, play_notes=rig.play_notes)
    counts: collections.Counter[str] = collections.Counter()
    for topic, payload in messages:
        decoded = decoder.decode(topic, payload, 0.0)
        assert decoded.items or decoded.skipped or decoded.ignored, \
            f"payload {payload[:80]!r} gave nothing"
        counts["received"] += 1
        counts["items"] += len(decoded.items)
        counts.update(f"skipped.{r}" for r in decoded.skipped)
        counts.update(f"ignored.{r}" for r in decoded.ignored)
    return counts


def run_mqtt(rig: MqttRig, messages: list[tuple[str, bytes]],
             model: tuple[PitchStepper, PitchEncoding]) -> tuple[dict[str, int], Played]:
    """Publish ``messages`` (topic suffix, payload) under a fresh topic, then an end marker;
    the engine plays what the source yields until the marker. Returns the counter deltas."""
    rig.examples += 1
    base = f"{rig.prefix}/{rig.examples}"
    end_topic, end_value = f"{base}/end", 424242.0
    end_payload = repr(end_value).encode()
    if rig.play_notes:
        end_payload = json.dumps(END_NOTE | {"stream": end_topic, "value": end_value}).encode()
    published = [(f"{base}/m/{suffix}", payload) for suffix, payload in messages]
    source = rig.source
    before = source.stats

    async def until_end() -> AsyncIterator[Sample | NoteEvent]:
        async for item in source:
            if item.stream == end_topic and item.value == end_value:
                return  # the marker was published last: everything before it is in
            yield item

    async def main() -> Played:
        for topic, payload in published:
            rig.publish(topic, [payload])
        rig.publish(end_topic, [end_payload])
        return await asyncio.wait_for(play(until_end(), rig.config, model), WAIT)

    played = rig.loop.run_until_complete(main())
    after = source.stats
    delta = {k: v - before.get(k, 0) for k, v in after.items()
             if v != before.get(k, 0) and not k.startswith("by_topic.") and k != "acked"}
    kind = "notes" if rig.play_notes else "samples"
    delta["received"] -= 1  # the end marker
    delta[kind] -= 1
    expected = expected_mqtt(rig, published)
    check_reasons(delta)
    items = expected.pop("items", 0)
    counted = dict(delta)
    assert counted.pop(kind, 0) + counted.pop("dropped.queue_full", 0) == items
    assert {k: v for k, v in counted.items() if v} == {k: v for k, v in expected.items() if v}
    assert len(played.received_notes if rig.play_notes else played.samples) == delta[kind]
    check_played(played)
    return delta, played



@pytest.mark.mqtt
@fuzz_settings(default=25)
@given(messages=st.lists(st.tuples(TOPIC_LEVELS, MQTT_PAYLOADS), min_size=1, max_size=5))
def test_mqtt_any_payloads_are_played_or_counted(
        messages: list[tuple[str, bytes]], mqtt_rig: MqttRig,
        model: tuple[PitchStepper, PitchEncoding]) -> None:
    run_mqtt(mqtt_rig, messages, model)


@pytest.mark.mqtt
@fuzz_settings(default=20)
@given(docs=st.lists(st.tuples(JSON_DOCS, st.booleans()), min_size=1, max_size=4))
def test_mqtt_json_fields_are_each_played_or_counted(
        docs: list[tuple[dict[str, Any], bool]], mqtt_rig: MqttRig,
        model: tuple[PitchStepper, PitchEncoding]) -> None:
    payloads = [json_bytes(doc, ascii_only) for doc, ascii_only in docs]
    delta, played = run_mqtt(mqtt_rig, [("j", p) for p in payloads], model)
    base = f"{mqtt_rig.prefix}/{mqtt_rig.examples}/m/j"
    names: list[str] = []
    skipped = collections.Counter[str]()
    max_bytes = PayloadDecoder(mqtt_rig.config).max_bytes
    for payload in payloads:
        # as on stdin: bytes that are not UTF-8 become U+FFFD, in names and values alike
        leaves = list(json_leaves(None, load_pairs(payload.decode("utf-8", "replace"))))
        if len(payload) > max_bytes:
            skipped["too_large"] += 1
        elif not leaves:
            skipped["no_value"] += 1
        else:
            expect_leaves(leaves, f"{base}.", names, skipped)
    assert [s.stream for s in played.samples] == names
    got = {k[8:]: v for k, v in delta.items() if k.startswith("skipped.") and v}
    assert got == {k: v for k, v in skipped.items() if v}


#: A valid note, as ``--output mqtt:PREFIX`` publishes it.
END_NOTE: dict[str, Any] = {"stream": "s", "time": 0.0, "value": 1.0, "normalized": 0.5,
                            "pitch": 60, "velocity": 90, "duration": 0.25, "channel": 0,
                            "program": 0, "start": 0.0, "anomaly": 0.0, "accent": False,
                            "direction": 0, "pan": 64}
#: Hostile notes: each field left out, of another JSON type, or out of range.
NOTE_VALUES = st.one_of(LEAVES, st.sampled_from([-1, 128, 16, 10**400, 1e308, -0.0, "60"]))
NOTE_DOCS = st.builds(
    lambda base, changes, drop: {k: v for k, v in (base | changes).items() if k not in drop},
    st.just(END_NOTE),
    st.dictionaries(st.sampled_from([*END_NOTE, "extra", "\ud800"]), NOTE_VALUES, max_size=3),
    st.sets(st.sampled_from(list(END_NOTE)), max_size=2),
)
NOTE_PAYLOADS = st.one_of(
    st.builds(json_bytes, NOTE_DOCS, st.booleans()),
    st.builds(json_bytes, JSON_VALUES, st.booleans()),
    MQTT_PAYLOADS,
)


@pytest.mark.mqtt
@fuzz_settings(default=20)
@given(messages=st.lists(st.tuples(TOPIC_LEVELS, NOTE_PAYLOADS), min_size=1, max_size=5))
def test_mqtt_play_notes_payloads_are_played_or_counted(
        messages: list[tuple[str, bytes]], mqtt_notes_rig: MqttRig,
        model: tuple[PitchStepper, PitchEncoding]) -> None:
    """``--play-notes``: each payload is a finished note, played as it is, or ``bad_note``."""
    run_mqtt(mqtt_notes_rig, messages, model)


@pytest.mark.mqtt
def test_mqtt_empty_top_level_key_is_a_field(mqtt_rig: MqttRig,
                                             model: tuple[PitchStepper, PitchEncoding]) -> None:
    """A field named "" is a field (stdin plays ``{"": 1}`` as stream ""): it must give a
    sample, or at least a skip reason of its own, not vanish into ``no_value``."""
    delta, played = run_mqtt(mqtt_rig, [("e", b'{"": 1}')], model)
    assert delta.get("samples") == len(played.notes) == 1


@pytest.mark.mqtt
@pytest.mark.parametrize("payload", [b'{"\\ud800": 1}', b'[{"\\udfff": 2}]'])
def test_mqtt_lone_surrogate_keys_play(payload: bytes, mqtt_rig: MqttRig,
                                       model: tuple[PitchStepper, PitchEncoding]) -> None:
    """Defect 1 of issue 12: this 13-byte payload killed the daemon."""
    delta, played = run_mqtt(mqtt_rig, [("s", payload)], model)
    assert delta["samples"] == len(played.notes) == 1
    assert "\ufffd" in played.notes[0]["stream"]


# -- the real daemon --------------------------------------------------------------------

def corpus() -> bytes:
    """Hostile lines of every kind, fixed (not random): one run of the real command."""
    lines = [
        b'{"\\ud800": 1}', b'{"\\udfff": 2, "b": 3}', b'{"a": "\\ud800"}', b"\xed\xa0\x80=1",
        b'{"' + b"k" * 70_000 + b'": 1}', b'{"' + b"k" * 60_000 + b'": 1}',
        deep(100_000, "list").encode(), deep(100_000, "object").encode(),
        b"1" + b"0" * 5000, b'{"a": 1' + b"0" * 5000 + b"}", b"1e999", b'{"x": NaN}',
        b"\xff\xfe", b"\x00", b"", b"# c", b"a,b", b"1,2", b"x=1 y=\xff", b"m{l=\"\"} 1",
        b"\xef\xbb\xbf7", b"2024-01-02T03:04:05Z 1", b"\r", b'{"' + "é".encode() * 300 + b'": 5}',
    ]
    return b"\n".join(lines) + b"\n"


@pytest.mark.slow
def test_the_daemon_survives_the_corpus_on_stdin(tmp_path: Path) -> None:
    """``streamsonic --output events`` itself, in a subprocess: exit 0, no traceback, every
    line counted in its final statistics line."""
    data = corpus()
    result = subprocess.run(
        [sys.executable, "-m", "streamsonic", "--output", "events", "--log-level", "info"],
        input=data, capture_output=True, timeout=300, check=False, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    notes = [json.loads(line) for line in result.stdout.decode("utf-8").splitlines()]
    assert notes and all(n["stream"] == clean_name(n["stream"]) for n in notes)
    expected, _ = expected_stdin(data, load_config(None))
    stopped = next(line for line in err.splitlines() if "stopped:" in line)
    assert f"{expected['samples']} samples" in stopped, stopped
    for key, count in expected.items():
        if key.startswith("skipped."):
            assert f"{key[8:]}={count}" in stopped, (key, count, stopped)
