"""LineParser: every input format, header handling, timestamps, skip reasons, properties."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamsonic.config import InputConfig
from streamsonic.events import Sample
from streamsonic.parse import (
    BENIGN_REASONS,
    REASONS,
    LineParser,
    parse_iso,
    parse_number,
    parse_time_value,
)
from tests.conftest import SHARED_DATA

NOW = 1000.0
T0 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()


def parse(*lines: str | bytes, **config: object) -> list[tuple[list[tuple], list[str]]]:
    """Parse ``lines`` with one parser; per line ``([(stream, time, value)...], skipped)``."""
    parser = LineParser(InputConfig(**config))  # type: ignore[arg-type]
    out = []
    for line in lines:
        got = parser.parse_line(line, NOW)
        out.append(([(s.stream, s.time, s.value) for s in got.samples], got.skipped))
    return out


def one(line: str | bytes, **config: object) -> tuple[list[tuple], list[str]]:
    return parse(line, **config)[0]


# -- single lines, auto-detected ---------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "samples", "skipped"),
    [
        # bare numbers
        ("3.5", [("value", NOW, 3.5)], []),
        ("-1e3", [("value", NOW, -1000.0)], []),
        ("+7", [("value", NOW, 7.0)], []),
        (".5", [("value", NOW, 0.5)], []),
        ("  42  \r\n", [("value", NOW, 42.0)], []),
        ("\ufeff12", [("value", NOW, 12.0)], []),
        # delimited columns, each a stream
        ("1,2,3", [("col0", NOW, 1.0), ("col1", NOW, 2.0), ("col2", NOW, 3.0)], []),
        ("1;2;3", [("col0", NOW, 1.0), ("col1", NOW, 2.0), ("col2", NOW, 3.0)], []),
        ("1\t2", [("col0", NOW, 1.0), ("col1", NOW, 2.0)], []),
        ("1  2   3", [("col0", NOW, 1.0), ("col1", NOW, 2.0), ("col2", NOW, 3.0)], []),
        ("1|2", [("col0", NOW, 1.0), ("col1", NOW, 2.0)], []),
        ("1, 2, 3", [("col0", NOW, 1.0), ("col1", NOW, 2.0), ("col2", NOW, 3.0)], []),
        ("1,5;2,5", [("col0", NOW, 1.5), ("col1", NOW, 2.5)], []),  # decimal commas
        # quoted CSV fields with delimiters inside; text fields skipped, numbers kept
        ('7502,"https://x/?q=51.1,-115.5",Banff', [("col0", NOW, 7502.0)],
         ["not_numeric", "not_numeric"]),
        ('"a;b",1,2', [("col1", NOW, 1.0), ("col2", NOW, 2.0)], ["not_numeric"]),
        ("1,,3", [("col0", NOW, 1.0), ("col2", NOW, 3.0)], ["missing"]),
        ("1,null,3", [("col0", NOW, 1.0), ("col2", NOW, 3.0)], ["missing"]),
        ("1,NaN,inf,-Infinity,4", [("col0", NOW, 1.0), ("col4", NOW, 4.0)],
         ["nan", "inf", "inf"]),
        ("1,1e999", [("col0", NOW, 1.0)], ["inf"]),
        ("1,12ms,0x10,1_000", [("col0", NOW, 1.0)], ["not_numeric"] * 3),
        # name=value and name: value pairs
        ("cpu=3.5", [("cpu", NOW, 3.5)], []),
        ("a=1 b=2; c: 3, d:4", [("a", NOW, 1.0), ("b", NOW, 2.0), ("c", NOW, 3.0),
                                ("d", NOW, 4.0)], []),
        ("cpu.load = 0.5", [("cpu.load", NOW, 0.5)], []),
        ('host="web1" cpu="3"', [("cpu", NOW, 3.0)], ["not_numeric"]),
        ("x=2 junk y=NaN z=", [("x", NOW, 2.0)], ["bad_pair", "nan", "missing"]),
        ("temp: 21.5", [("temp", NOW, 21.5)], []),
        ("a=1 ts=2024-01-02T03:04:05Z", [("a", T0, 1.0)], []),
        # Prometheus text lines
        ('http_requests_total{code="200"} 1.5', [('http_requests_total{code="200"}', NOW, 1.5)],
         []),
        ('http_requests_total{code="200",method="get"} 7 1704164645000',
         [('http_requests_total{code="200",method="get"}', T0, 7.0)], []),
        ('m{path="/a b{c}",q="x\\"y"} 2', [('m{path="/a b{c}",q="x\\"y"}', NOW, 2.0)], []),
        ("up 1", [("up", NOW, 1.0)], []),
        ('load{host="a"} 1.5 1704164645', [('load{host="a"}', T0, 1.5)], []),  # seconds
        ("job:rate5m 0.25", [("job:rate5m", NOW, 0.25)], []),
        ('le_bucket{le="+Inf"} 100', [('le_bucket{le="+Inf"}', NOW, 100.0)], []),
        ("go_gc{quantile=\"0.5\"} NaN", [], ["nan"]),
        ("m +Inf", [], ["inf"]),
        ("# HELP http_requests_total The total.", [], ["comment"]),
        ("# TYPE http_requests_total counter", [], ["comment"]),
        # JSON objects
        ('{"a": 1, "b": 2.5}', [("a", NOW, 1.0), ("b", NOW, 2.5)], []),
        ('{"a": {"b": {"c": 3}}, "l": [4, {"m": 5}]}',
         [("a.b.c", NOW, 3.0), ("l.0", NOW, 4.0), ("l.1.m", NOW, 5.0)], []),
        ('{"ok": true, "name": "x", "n": null, "v": 1}', [("v", NOW, 1.0)],
         ["not_numeric", "not_numeric", "missing"]),
        ('{"v": NaN, "w": Infinity, "x": 1}', [("x", NOW, 1.0)], ["nan", "inf"]),
        ('{"v": 1e400}', [], ["inf"]),
        ('{"time": "2024-01-02T03:04:05Z", "v": 1}', [("v", T0, 1.0)], []),
        ('{"timestamp": 1704164645, "v": 1}', [("v", T0, 1.0)], []),
        ('{"ts": 1704164645000, "v": 1}', [("v", T0, 1.0)], []),
        ('{"ts": "soon", "v": 1}', [("v", NOW, 1.0)], ["bad_timestamp"]),
        ("[1, 2]", [("col0", NOW, 1.0), ("col1", NOW, 2.0)], []),
        ("{}", [], ["no_value"]),
        ('{"a": 1', [], ["bad_json"]),
        ("{not json}", [], ["bad_json"]),
        ("[" * 5000 + "]" * 5000, [], ["bad_json"]),
        # leading timestamps
        ("2024-01-02T03:04:05Z 3.5", [("value", T0, 3.5)], []),
        ("2024-01-02T03:04:05+00:00,3.5", [("value", T0, 3.5)], []),
        ("2024-01-02T05:04:05+02:00 3.5", [("value", T0, 3.5)], []),
        ("2024-01-02 03:04:05 3.5", [("value", T0, 3.5)], []),
        ("2024-01-02T03:04:05.250Z 1", [("value", T0 + 0.25, 1.0)], []),
        ("2024-01-02T03:04:05 3.5", [("value", T0, 3.5)], []),  # naive = UTC
        ("[2024-01-02 03:04:05] 4", [("value", T0, 4.0)], []),
        ("2024-01-02 03:04:05,1,2", [("col0", T0, 1.0), ("col1", T0, 2.0)], []),
        ("2024-01-02T03:04:05Z cpu=3", [("cpu", T0, 3.0)], []),
        ('2024-01-02T03:04:05Z {"v": 2}', [("v", T0, 2.0)], []),
        ("1704164645 3.5", [("value", T0, 3.5)], []),
        ("1704164645.5,1,2", [("col0", T0 + 0.5, 1.0), ("col1", T0 + 0.5, 2.0)], []),
        ("1704164645", [("value", NOW, 1704164645.0)], []),  # alone: a value, not a time
        ("123 4", [("col0", NOW, 123.0), ("col1", NOW, 4.0)], []),  # implausible epoch
        ("2024-01-02T03:04:05Z", [], ["no_value"]),
        ("35457.16,2018-11-16", [("value", datetime(2018, 11, 16, tzinfo=UTC).timestamp(),
                                  35457.16)], []),
        # bad lines
        ("", [], ["empty"]),
        ("   \t ", [], ["empty"]),
        ("nan", [], ["nan"]),
        ("-inf", [], ["inf"]),
        ("a,b\x00c,1", [("col2", NOW, 1.0)], ["not_numeric", "not_numeric"]),
    ],
)
def test_formats(line: str, samples: list[tuple], skipped: list[str]) -> None:
    got_samples, got_skipped = parse("1", line)[1]  # after a data line: no header detection
    assert got_samples == samples
    assert got_skipped == skipped


@pytest.mark.parametrize(
    ("line", "samples", "skipped"),
    [
        (b"\xff\xfe3", [], ["invalid_utf8"]),
        (b"1,\xc3(", [("col0", NOW, 1.0)], ["invalid_utf8"]),  # the valid field is kept
        (b"a=1 b=\xff2", [("a", NOW, 1.0)], ["invalid_utf8"]),
        (b'{"a": 1, "b": "\xff"}', [("a", NOW, 1.0)], ["invalid_utf8"]),
        ("1\ud800", [], ["invalid_utf8"]),  # a lone surrogate in a str
        ("1,2\ud800,3", [("col0", NOW, 1.0), ("col2", NOW, 3.0)], ["invalid_utf8"]),
        (b"1" * 65537, [], ["too_long"]),
        ("1" * 65537, [], ["too_long"]),
    ],
)
def test_undecodable_and_long(line: str | bytes, samples: list[tuple],
                              skipped: list[str]) -> None:
    assert one(line) == (samples, skipped)


def test_invalid_utf8_field_keeps_the_other_200000() -> None:
    """One undecodable field no longer drops a whole line of valid numbers."""
    line = b",".join([b"1.5"] * 100_000 + [b"\xfe\xff"] + [b"2.5"] * 100_000)
    samples, skipped = one(line, max_line_bytes=len(line))
    assert len(samples) == 200_000 and skipped == ["invalid_utf8"]


def test_field_over_128_kib_is_a_field() -> None:
    """The csv module's 128 KiB field limit must not turn a long (allowed) line bad_csv."""
    line = '1,"' + "x" * 200_000 + '",3'
    assert one(line, max_line_bytes=300_000) == (
        [("col0", NOW, 1.0), ("col2", NOW, 3.0)], ["not_numeric"])


def test_line_of_exactly_max_bytes_is_kept() -> None:
    line = b"1" + b" " * 65534 + b"2\n"  # 65536 bytes before the newline
    assert one(line) == ([("col0", NOW, 1.0), ("col1", NOW, 2.0)], [])


def test_a_name_twice_on_a_line_keeps_its_first_value_and_counts_the_others() -> None:
    """Nested JSON keys are joined with '.', so ``{"a.b": 1, "a": {"b": 2}}`` names stream
    a.b twice; before, both values went on as two samples of one stream (two quantities
    mixed into one melody and one normalizer), uncounted. The first value in the line is
    kept, each later one skipped as duplicate_name; the same for repeated pairs and header
    columns."""
    parser = LineParser(InputConfig())
    out = parser.parse_line('{"a.b": 1, "a": {"b": 2}, "c": 3}', NOW)
    assert [(s.stream, s.value) for s in out.samples] == [("a.b", 1.0), ("c", 3.0)]
    assert out.skipped == ["duplicate_name"]
    out = parser.parse_line('{"a": {"b": 2}, "a.b": 1}', NOW)
    assert [(s.stream, s.value) for s in out.samples] == [("a.b", 2.0)]
    assert out.skipped == ["duplicate_name"]
    out = parser.parse_line("x=1 y=2 x=3 x=4", NOW)
    assert [(s.stream, s.value) for s in out.samples] == [("x", 1.0), ("y", 2.0)]
    assert out.skipped == ["duplicate_name", "duplicate_name"]
    headed = LineParser(InputConfig())
    assert headed.parse_line("t,t,u", NOW).skipped == ["header"]
    out = headed.parse_line("1,2,3", NOW)
    assert [(s.stream, s.value) for s in out.samples] == [("t", 1.0), ("u", 3.0)]
    assert out.skipped == ["duplicate_name"]
    assert "duplicate_name" in REASONS


def test_a_key_one_json_object_repeats_keeps_its_first_value() -> None:
    """json.loads keeps the last value of a repeated key and says nothing: ``{"a": 1,
    "a": 2}`` played a=2 uncounted, ``{"a": {"b": 1}, "a": {"c": 2}}`` lost a.b without a
    word (a QA pass, 2026-12-06). Every value of a repeated key is flattened as any other:
    the first of a name plays, each later one is duplicate_name, one that is no number is
    skipped for its own reason first (it takes no name), at any depth."""
    parser = LineParser(InputConfig())
    out = parser.parse_line('{"a": 1, "a": 2}', NOW)
    assert [(s.stream, s.value) for s in out.samples] == [("a", 1.0)]
    assert out.skipped == ["duplicate_name"]
    out = parser.parse_line('{"a": {"b": 1}, "a": {"c": 2, "b": 5}}', NOW)
    assert [(s.stream, s.value) for s in out.samples] == [("a.b", 1.0), ("a.c", 2.0)]
    assert out.skipped == ["duplicate_name"]
    out = parser.parse_line('{"a": null, "a": 2}', NOW)
    assert [(s.stream, s.value) for s in out.samples] == [("a", 2.0)]
    assert out.skipped == ["missing"]
    out = parser.parse_line('{"x": 1, "x": {"y": 2}, "w": {"v": {"u": 1}, "v": {"u": 9, '
                            '"t": 8}}, "x": 7}', NOW)
    assert [(s.stream, s.value) for s in out.samples] == [("x", 1.0), ("x.y", 2.0),
                                                          ("w.v.u", 1.0), ("w.v.t", 8.0)]
    assert out.skipped == ["duplicate_name", "duplicate_name"]


def test_every_reason_is_documented() -> None:
    assert BENIGN_REASONS.issubset(REASONS)


# -- headers ----------------------------------------------------------------------------
def test_data_csv_header_and_quoted_rows() -> None:
    path = SHARED_DATA / "seed-test-series" / "data.csv"
    if not path.exists():
        pytest.skip("shared data not present")
    lines = path.read_bytes().splitlines()
    parser = LineParser(InputConfig())
    first = parser.parse_line(lines[0], NOW)
    assert first.skipped == ["header"] and first.samples == []
    assert parser.header == ["population", "location", "asciiname"]
    rows = [parser.parse_line(line, NOW) for line in lines[1:]]
    assert all(len(r.samples) == 1 and r.samples[0].stream == "population" for r in rows)
    assert all(r.skipped == ["not_numeric", "not_numeric"] for r in rows)
    assert rows[0].samples[0].value == 2600000.0


def test_data_csv_row_from_the_brief() -> None:
    got = parse("population,location,asciiname", '7502,"https://x/?q=51.1,-115.5",Banff')
    assert got[1] == ([("population", NOW, 7502.0)], ["not_numeric", "not_numeric"])


def test_header_names_columns_and_extra_columns_get_indices() -> None:
    got = parse("cpu;mem", "1;2", "3;4;5", "6")
    assert got[0] == ([], ["header"])
    assert got[1][0] == [("cpu", NOW, 1.0), ("mem", NOW, 2.0)]
    assert got[2][0] == [("cpu", NOW, 3.0), ("mem", NOW, 4.0), ("col2", NOW, 5.0)]
    assert got[3][0] == [("cpu", NOW, 6.0)]


def test_single_column_header_names_bare_numbers() -> None:
    got = parse("temperature", "21.5", "22")
    assert got[1][0] == [("temperature", NOW, 21.5)]
    assert got[2][0] == [("temperature", NOW, 22.0)]


def test_header_only_on_the_first_line() -> None:
    got = parse("1,2", "a,b", "3,4")
    assert got[1] == ([], ["not_numeric", "not_numeric"])
    assert got[2][0] == [("col0", NOW, 3.0), ("col1", NOW, 4.0)]


def test_header_after_blank_and_comment_lines() -> None:
    got = parse("", "# exported by x", "a,b", "1,2")
    assert got[2] == ([], ["header"])
    assert got[3][0] == [("a", NOW, 1.0), ("b", NOW, 2.0)]


def test_repeated_header_is_skipped_as_header() -> None:
    got = parse("a,b", "1,2", "a,b", "3,4")  # cat a.csv b.csv
    assert got[2] == ([], ["header"])
    assert got[3][0] == [("a", NOW, 3.0), ("b", NOW, 4.0)]


def test_header_no_treats_names_as_bad_fields() -> None:
    got = parse("a,b", "1,2", header="no")
    assert got[0] == ([], ["not_numeric", "not_numeric"])
    assert got[1][0] == [("col0", NOW, 1.0), ("col1", NOW, 2.0)]


def test_header_yes_takes_any_first_line() -> None:
    got = parse("x,2024", "1,2", header="yes")
    assert got[0] == ([], ["header"])
    assert got[1][0] == [("x", NOW, 1.0), ("2024", NOW, 2.0)]


def test_header_with_time_column_iso_and_epoch() -> None:
    got = parse("time,value", "2024-01-02T03:04:05Z,3.5", "1704164645,4.5",
                "1704164645000,5.5", "soon,6.5")
    assert got[1][0] == [("value", T0, 3.5)]
    assert got[2][0] == [("value", T0, 4.5)]
    assert got[3][0] == [("value", T0, 5.5)]
    assert got[4] == ([("value", NOW, 6.5)], ["bad_timestamp"])


def test_a_leading_timestamp_that_names_no_moment_keeps_the_values_streams() -> None:
    """``2024-13-45T99:99:99Z 4`` has a timestamp's shape but no date: it is stripped and
    counted as ``bad_timestamp``, the value timed by its arrival on the stream it would
    have had (a QA pass at 36e50ff: it became ``col1`` and the stamp a ``not_numeric``
    field, splitting one series into two streams)."""
    got = parse("2024-01-02T03:04:05Z 3.5", "2024-13-45T99:99:99Z 4",
                "2024-01-02T03:04:05+25:00 9", "2024-13-45,1,2", "2024-13-45")
    assert got[0] == ([("value", T0, 3.5)], [])
    assert got[1] == ([("value", NOW, 4.0)], ["bad_timestamp"])
    assert got[2] == ([("value", NOW, 9.0)], ["bad_timestamp"])
    assert got[3] == ([("col0", NOW, 1.0), ("col1", NOW, 2.0)], ["bad_timestamp"])
    assert got[4] == ([], ["bad_timestamp"])


@pytest.mark.parametrize(("stamp", "seconds"), [
    (1700000000, 1700000000.0), (1700000000123, 1700000000.123),
    (1700000000123456, 1700000000.123456), (1700000000123456789, 1700000000.123456789),
    (-5, -5.0), (1e30, None), (-1e30, None), (9e18 * 1e9, None), ("1e30", None),
])
def test_epoch_times_name_a_moment_of_years_1_to_9999(stamp: object,
                                                       seconds: float | None) -> None:
    """A time field of 1e30 was taken as nanoseconds, 1e21 s: a time 3e13 years away (a
    QA pass at 36e50ff); now a bad_timestamp, as text that is no time is."""
    got = parse_time_value(stamp)
    assert got == pytest.approx(seconds) if seconds is not None else got is None
    line = parse(json.dumps({"ts": stamp, "v": 1}))[0]
    assert line[1] == ([] if seconds is not None else ["bad_timestamp"])


def test_trading_csv_date_column_is_the_time() -> None:
    got = parse("Adj Close,Date", "35457.16016,2018-11-16", "null,2019-01-01")
    assert got[0] == ([], ["header"])
    day = datetime(2018, 11, 16, tzinfo=UTC).timestamp()
    assert got[1] == ([("Adj Close", day, 35457.16016)], [])
    assert got[2] == ([], ["missing"])


def test_header_without_time_column_keeps_epoch_like_values() -> None:
    got = parse("bytes,errors", "1704164645,3")
    assert got[1][0] == [("bytes", NOW, 1704164645.0), ("errors", NOW, 3.0)]


def test_header_with_leading_iso_timestamp_not_in_header() -> None:
    got = parse("cpu mem", "2024-01-02 03:04:05 1 2")
    assert got[1][0] == [("cpu", T0, 1.0), ("mem", T0, 2.0)]


def test_after_a_header_rows_are_columns_not_prometheus() -> None:
    got = parse("host value", "web1 3.5", "x=1 y=2")
    assert got[1] == ([("value", NOW, 3.5)], ["not_numeric"])
    assert got[2] == ([("x", NOW, 1.0), ("y", NOW, 2.0)], [])  # pairs still name themselves


def test_header_delimiter_is_sticky() -> None:
    got = parse("a;b", "1,5;2")
    assert got[1][0] == [("a", NOW, 1.5), ("b", NOW, 2.0)]


def test_reset_forgets_the_header() -> None:
    parser = LineParser(InputConfig())
    parser.parse_line("a,b", NOW)
    parser.reset()
    assert parser.header is None
    assert parser.parse_line("c,d", NOW).skipped == ["header"]
    assert parser.header == ["c", "d"]


# -- fixed formats and options ------------------------------------------------------------
def test_format_number_rejects_columns() -> None:
    assert one("1,2", format="number") == ([], ["not_numeric"])
    assert one("2.5", format="number", stream="load") == ([("load", NOW, 2.5)], [])


def test_format_delimited_reads_pairs_as_bad_fields() -> None:
    assert one("a=1,2", format="delimited") == ([("col1", NOW, 2.0)], ["not_numeric"])


def test_format_prometheus() -> None:
    assert one("x 1 5", format="prometheus") == ([("x", 0.005, 1.0)], [])
    assert one("1,2", format="prometheus") == ([], ["bad_prometheus"])
    assert one("# TYPE x gauge", format="prometheus") == ([], ["comment"])


def test_format_pairs_and_json() -> None:
    assert one("1 2", format="pairs") == ([], ["bad_pair", "bad_pair"])
    assert one("3", format="json") == ([], ["bad_json"])


def test_fixed_delimiter() -> None:
    assert one("1,5 2", delimiter=" ") == ([("col1", NOW, 2.0)], ["not_numeric"])
    assert one("1|2,5", delimiter="|") == ([("col0", NOW, 1.0)], ["not_numeric"])


def test_timestamps_off() -> None:
    got = one("2024-01-02T03:04:05Z 3.5", timestamp="none")
    assert got == ([("col1", NOW, 3.5)], ["not_numeric"])
    got = one('{"time": 1704164645, "v": 1}', timestamp="none")
    assert got == ([("time", NOW, 1704164645.0), ("v", NOW, 1.0)], [])


# -- helpers ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", 1.0), ("-0", -0.0), ("1.", 1.0), ("1e5", 1e5), (" 2 ", 2.0), ("", "missing"),
     ("N/A", "missing"), ("NaN", "nan"), ("-inf", "inf"), ("Infinity", "inf"),
     ("1e309", "inf"), ("1_0", "not_numeric"), ("٣", "not_numeric"), ("e5", "not_numeric"),
     ("0x1", "not_numeric"), ("true", "not_numeric")],
)
def test_parse_number(text: str, expected: float | str) -> None:
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1704164645, T0), (1704164645000, T0), (1704164645000000, T0),
     (1704164645000000000, T0), ("1704164645", T0), ("2024-01-02T03:04:05Z", T0),
     (True, None), ("x", None), (None, None), (float("nan"), None), (10**400, None)],
)
def test_parse_time_value(value: object, expected: float | None) -> None:
    got = parse_time_value(value)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_parse_iso_rejects_impossible_dates() -> None:
    assert parse_iso("2024-13-02") is None
    assert parse_iso("2024-01-02T25:00") is None
    assert parse_iso("2024-01-02T03:04:05.123456789Z") == pytest.approx(T0 + 0.123456)


# -- properties ---------------------------------------------------------------------------
CONFIGS = [
    InputConfig(),
    InputConfig(header="yes"),
    InputConfig(header="no", timestamp="none"),
    InputConfig(format="delimited", delimiter=";"),
    InputConfig(format="pairs"),
    InputConfig(format="prometheus"),
    InputConfig(format="json"),
    InputConfig(format="number", max_line_bytes=64),
]


def _check(parser: LineParser, line: str | bytes) -> None:
    got = parser.parse_line(line, NOW)
    assert "internal_error" not in got.skipped
    assert got.samples or got.skipped
    for sample in got.samples:
        assert isinstance(sample, Sample) and isinstance(sample.stream, str)
        assert math.isfinite(sample.value) and math.isfinite(sample.time)
    assert all(reason in REASONS for reason in got.skipped)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(CONFIGS), st.lists(st.binary(max_size=200), min_size=1, max_size=4))
def test_arbitrary_bytes_never_raise(config: InputConfig, lines: list[bytes]) -> None:
    parser = LineParser(config)
    for line in lines:
        _check(parser, line)


_TOKENS = st.sampled_from(
    ["1", "-2.5e3", "nan", "inf", "NaN", "null", "x", ",", ";", "\t", " ", "=", ":", "{", "}",
     "[", "]", '"', "\\", "#", "2024-01-02T03:04:05Z", "1704164645", "a", "b.c", "{\"a\":",
     "1e999", "\x00", "le=\"+Inf\"", "\ud800", "\u00e9", "\n"])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(CONFIGS),
       st.lists(st.one_of(st.text(max_size=60), st.lists(_TOKENS, max_size=12).map("".join)),
                min_size=1, max_size=4))
def test_arbitrary_text_never_raises(config: InputConfig, lines: list[str]) -> None:
    parser = LineParser(config)
    for line in lines:
        _check(parser, line)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=6),
       st.sampled_from([",", ";", "\t", " ", "|"]))
def test_rows_of_floats_round_trip(values: list[float], delimiter: str) -> None:
    row = delimiter.join(repr(v) for v in values)
    names = [f"n{i}" for i in range(len(values))]
    # With a header, every column is a value (a 10-digit first column is not a time).
    got, skipped = parse(delimiter.join(names), row)[1]
    assert skipped == []
    assert got == [(n, NOW, v) for n, v in zip(names, values, strict=True)]
    # Without one, only timestamps="none" promises that.
    got, skipped = parse("0", row, timestamp="none")[1]
    assert skipped == []
    assert [v for _, _, v in got] == values


def test_adversarial_long_lines_are_fast_enough_to_finish() -> None:
    # Patterns that could make a backtracking regex explode; each must just finish.
    parser = LineParser(InputConfig())
    for line in ['m{a="' + "\\\\" * 30000, "m{" + 'a="b",' * 9000, "a=" * 30000,
                 "1," * 30000, "2024-01-02" * 6000, " " * 60000 + "x", '"' * 65000]:
        _check(parser, line)


def test_config_replace_keeps_validation() -> None:
    # The parser reads only InputConfig; make sure the fields it uses exist.
    config = replace(InputConfig(), stream="s")
    assert one("1", stream="s") == ([("s", NOW, 1.0)], [])
    assert config.stream == "s"


def test_shared_data_files_parse_without_internal_errors() -> None:
    directory = SHARED_DATA / "seed-test-series"
    if not directory.exists():
        pytest.skip("shared data not present")
    for path in sorted(Path(directory).glob("*.csv")):
        parser = LineParser(InputConfig())
        results = [parser.parse_line(line, NOW) for line in path.read_bytes().splitlines()]
        assert sum(len(r.samples) for r in results) >= len(results) - 2, path.name


def test_a_later_header_of_the_data_width_replaces_a_banner() -> None:
    """vmstat: a banner line of group names, then the real column names, then data."""
    parser = LineParser(InputConfig())
    lines = [
        "procs -----------memory---------- ---swap-- -----io---- -system-- ------cpu-----",
        " r  b   swpd   free   buff  cache   si   so    bi    bo   in   cs us sy id wa st",
        " 1  0      0 2000000  1000 50000    0    0     1     2   10   20  1  1 98  0  0",
    ]
    results = [parser.parse_line(line, 0.0) for line in lines]
    assert results[0].skipped == ["header"] and results[1].skipped == ["header"]
    names = [s.stream for s in results[2].samples]
    assert names[:4] == ["r", "b", "swpd", "free"] and names[-1] == "st"
    assert not results[2].skipped
    # the header printed again later (vmstat repeats it) is still a header
    assert parser.parse_line(lines[1], 0.0).skipped == ["header"]


_PAIRISH = st.text(alphabet="ab_Z09.-/+=eE: \t,;\"Ttime", min_size=1, max_size=24)


@settings(max_examples=400, deadline=None)
@given(lines=st.lists(st.one_of(
    _PAIRISH,
    st.builds(lambda n, v: f"{n}={v}",
              st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-/]{0,8}", fullmatch=True),
              st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                        st.from_regex(r"[+-]?[0-9]{0,4}\.?[0-9]{0,3}(e[+-]?[0-9]{1,3})?",
                                      fullmatch=True))),
    st.sampled_from(["time=5", "TS=1700000000", "ts=2024-01-02", "a=1e999", "x=-0", "a,b",
                     "1700000000 k=3", "k=3 j=4", "a", "2"])), min_size=1, max_size=6),
       fmt=st.sampled_from(["auto", "pairs"]), header=st.sampled_from(["auto", "yes", "no"]))
def test_simple_pair_fast_path_gives_the_general_paths_samples(
        lines: list[str], fmt: str, header: str) -> None:
    """One ``name=number`` per line takes a fast path; line for line it gives what the
    general path (the fast path switched off) gives, header state included."""
    from streamsonic import parse as module

    config = InputConfig(format=fmt, header=header)  # type: ignore[arg-type]
    fast, slow = LineParser(config), LineParser(config)
    for line in lines:
        got = fast.parse_line(line, NOW)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(module, "_SIMPLE_PAIR", re.compile(r"(?!)"))
            want = slow.parse_line(line, NOW)
        assert (got.samples, got.skipped) == (want.samples, want.skipped), line
        assert fast.header == slow.header


def _readme_skip_reasons() -> set[str]:
    """The reasons the README's "Bad input never stops the daemon" paragraph names."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index("Bad input never stops the daemon")
    paragraph = text[start:text.index("with one rate-limited warning per reason", start)]
    return set(re.findall(r"`([a-z0-9_]+)`", paragraph))


def test_the_readme_names_every_skip_reason() -> None:
    """Every reason the parser and the MQTT/NATS payload decoder count is in the README's
    list (it lacked too_large and no_field, bad_csv, bad_prometheus, internal_error...), and
    the list names no reason the code does not count."""
    from streamsonic.config import load_config
    from streamsonic.mqtt.payload import PayloadDecoder

    seen: set[str] = set()
    for line, config in ((b"", {}), (b"9" * 70000, {}), (b"1,\xff,2", {}), (b"1,abc", {}),
                         (b"null", {}), (b"nan", {}), (b"1e999", {}), (b'{"a":', {}),
                         (b"a=1 b", {}), (b"a 1 2 3", {"format": "prometheus"}),
                         (b'{"a": 1, "ts": "then"}', {}), (b"2024-01-02T03:04:05Z", {})):
        seen.update(LineParser(InputConfig(**config)).parse_line(line, NOW).skipped)  # type: ignore[arg-type]

    def payload(data: bytes, overrides: dict[str, object], topic: str = "t",
                notes: bool = False) -> list[str]:
        decoder = PayloadDecoder(load_config(None, overrides), play_notes=notes)
        return decoder.decode(topic, data, NOW).skipped

    seen.update(payload(b"1" * 2_000_000, {}))
    seen.update(payload(b'{"b": 1}', {"mqtt.json_field": "a"}))
    seen.update(payload(b"1", {"mqtt.stream_name": "{topic[3]}"}, topic="a/b"))
    seen.update(payload(b"not a note", {}, notes=True))
    seen.update(payload(b'{"a.b": 1, "a": {"b": 2}}', {}))
    assert {"too_large", "no_field", "stream_name", "bad_note", "bad_prometheus",
            "bad_timestamp", "no_value", "too_long", "invalid_utf8", "not_numeric",
            "duplicate_name"} <= seen
    documented = _readme_skip_reasons()
    assert seen - BENIGN_REASONS - documented == set()
    # every reason the parser has, and the MQTT source's own (retained)
    counted = (set(REASONS) | seen | {"retained"}) - BENIGN_REASONS
    assert documented == counted
