"""Stream names from untrusted input: lone surrogates, NUL characters and huge keys never
crash anything or reach an output as they are."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_a_nul_in_a_name_becomes_a_replacement_character_from_every_source(
        tmp_path: Path) -> None:
    """U+0000 in a stream name (a JSON key, a pair's or a Prometheus line's name, a CSV
    header, an MQTT/NATS payload's key, a recording, a published note) passed through into
    stream names and every output (a C string ends there: MIDI track names, FluidSynth, a
    file name). It becomes U+FFFD, as a lone surrogate does, the same way for each."""
    from streamsonic.config import InputConfig
    from streamsonic.mqtt.payload import note_from_dict
    from streamsonic.record import read_record
    from streamsonic.render import read_table

    assert clean_name("a\x00b") == "a\ufffdb"
    assert clean_name("\x00") == "\ufffd"
    parser = LineParser(InputConfig())
    for line, name in (('{"a\\u0000b": 1}', "a\ufffdb"), ("x\x00y=2", "x\ufffdy"),
                       ('cpu{l="a\x00"} 3', 'cpu{l="a\ufffd"}')):
        assert [s.stream for s in parser.parse_line(line, now=0.0).samples] == [name], line
    headed = LineParser(InputConfig())
    headed.parse_line("t\x00a,b", now=0.0)
    assert [s.stream for s in headed.parse_line("1,2", now=0.0).samples] == ["t\ufffda", "b"]
    decoder = PayloadDecoder(Config())
    out = decoder.decode("t", b'{"k\\u0000": 1}', now=0.0)
    assert [s.stream for s in out.items if isinstance(s, Sample)] == ["t.k\ufffd"]
    record = read_record(b'{"stream": "r\\u0000", "time": 1.0, "value": 2.0, "arrival": 1.0}')
    assert record is not None and record[0].stream == "r\ufffd"
    note = note_from_dict({"stream": "n\x00", "time": 1.0, "value": 2.0, "normalized": 0.5,
                           "pitch": 60, "velocity": 80, "duration": 0.25, "channel": 0,
                           "program": 0})
    assert note is not None and note.stream == "n\ufffd"
    csv_file = tmp_path / "t.csv"
    csv_file.write_text("time,p\x00q\n1,5\n2,6\n")
    assert [series.name for series in read_table(csv_file.read_text(), None,
                                                 str(csv_file))] == ["p\ufffdq"]


def test_a_nul_in_input_stream_is_a_config_error() -> None:
    from streamsonic.config import load_config
    from streamsonic.errors import ConfigError

    with pytest.raises(ConfigError, match=r"input\.stream"):
        load_config(None, {"input.stream": "a\x00b"})


def test_the_daemon_never_prints_a_nul_in_a_stream_name(random_pitch_checkpoint: Path) -> None:
    res = subprocess.run(
        [*EXE, "--output", "events", "--weights", str(random_pitch_checkpoint)],
        input='{"a\\u0000b": 1}\nx\x00y=2\n', capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "\\u0000" not in res.stdout and "\x00" not in res.stdout
    assert [json.loads(line)["stream"] for line in res.stdout.splitlines()] == [
        "a\ufffdb", "x\ufffdy"]
