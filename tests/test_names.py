"""Stream names from untrusted input: lone surrogates and huge keys never crash anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from streamsonic.config import Config
from streamsonic.events import MAX_NAME_CHARS, Sample, clean_name
from streamsonic.mqtt.payload import PayloadDecoder
from streamsonic.parse import LineParser

EXE = [sys.executable, "-m", "streamsonic"]


def test_clean_name_replaces_lone_surrogates_and_keeps_pairs() -> None:
    assert clean_name("\ud800") == "\ufffd"
    assert clean_name("a\udc00b\U0001f600") == "a\ufffdb\U0001f600"
    name = "cpu.user"
    assert clean_name(name) is name  # the common case allocates nothing


def test_clean_name_caps_length_and_keeps_long_names_apart() -> None:
    a, b = "x" * 70_000, "x" * 69_999 + "y"
    ca, cb = clean_name(a), clean_name(b)
    assert len(ca) == len(cb) == MAX_NAME_CHARS
    assert ca != cb
    assert clean_name(a) == ca  # stable: the same stream stays the same stream


def test_parser_names_are_encodable() -> None:
    parser = LineParser(Config().input)
    out = parser.parse_line(b'{"\\ud800": 1, "ok": 2}', now=0.0)
    assert [s.stream for s in out.samples] == ["\ufffd", "ok"]
    for s in out.samples:
        s.stream.encode("utf-8")
    header = LineParser(Config().input)
    header.parse_line("k" * 1000 + ",b", now=0.0)
    got = header.parse_line("1,2", now=0.0).samples
    assert len(got[0].stream) == MAX_NAME_CHARS and got[1].stream == "b"


def test_mqtt_payload_names_are_encodable() -> None:
    decoder = PayloadDecoder(Config())
    out = decoder.decode("t", b'{"\\ud800": 1}', now=0.0)
    assert len(out.items) == 1
    item = out.items[0]
    assert isinstance(item, Sample)
    item.stream.encode("utf-8")


def test_daemon_survives_surrogate_key(tmp_path: Path, random_pitch_checkpoint: Path) -> None:
    """The reproduction from the issue: one JSON line with a lone surrogate as key."""
    res = subprocess.run(
        [*EXE, "--output", "events", "--weights", str(random_pitch_checkpoint)],
        input='{"\\ud800":1}\n{"cpu": 2}\n', capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    streams = [json.loads(line)["stream"] for line in res.stdout.splitlines()]
    assert streams == ["\ufffd", "cpu"]


def test_published_notes_with_absurd_values_are_refused() -> None:
    """--play-notes: a publisher must not be able to make a note hang (duration 1e308)."""
    from streamsonic.mqtt.payload import note_from_dict

    good = {"stream": "a", "time": 1.0, "value": 2.0, "normalized": 0.5, "pitch": 60,
            "velocity": 80, "duration": 0.25, "channel": 0, "program": 0}
    assert note_from_dict(good) is not None
    for key, bad in (("duration", 1e308), ("duration", 0.0), ("normalized", 1e300),
                     ("pitch", 200), ("velocity", 0), ("accent", 1), ("pan", 300)):
        assert note_from_dict({**good, key: bad}) is None, (key, bad)


def test_mqtt_keeps_the_valid_fields_of_a_payload_with_bad_utf8() -> None:
    """MQTT agrees with stdin: invalid UTF-8 costs only the fields that hold it."""
    decoder = PayloadDecoder(Config())
    out = decoder.decode("t", b'{"a": 1, "b": "\xff", "c": 2}', now=0.0)
    assert [(s.stream, s.value) for s in out.items if isinstance(s, Sample)] == [
        ("t.a", 1.0), ("t.c", 2.0)]
    assert out.skipped == ["invalid_utf8"]
    assert decoder.decode("t", b"\xff\xfe", now=0.0).skipped == ["invalid_utf8"]
    line = LineParser(Config().input).parse_line(b'{"a": 1, "b": "\xff", "c": 2}', now=0.0)
    assert [s.value for s in line.samples] == [1.0, 2.0] and line.skipped == ["invalid_utf8"]
