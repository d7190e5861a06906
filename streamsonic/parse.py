"""One line of input text -> samples. Pure: no I/O, no asyncio, never raises on input.

Formats, detected per line (``input.format = "auto"``) or fixed by ``input.format``:

- a bare number: ``3.5``, ``-1e3``, ``+7`` (stream ``input.stream``, default ``value``);
- delimited columns (commas, semicolons, tabs, ``|`` or spaces; quoted CSV fields may hold
  delimiters): each column is a stream, named by a header line if the first line is one
  (``input.header``), else ``col0``, ``col1``... (``input.stream`` when there is one column);
- ``name=value`` / ``name: value`` pairs, several per line, separated by spaces, commas or
  semicolons;
- Prometheus text lines ``metric{label="a"} 1.5 [timestamp_ms]`` (stream = metric and labels
  as written; ``#`` lines are comments);
- one JSON object per line: each numeric field is a stream, nested fields as dotted names
  (``a.b.c``, ``a.0`` for arrays); a top-level ``time``/``timestamp``/``ts`` field is the
  sample time.

A line that names one stream twice (a JSON key ``"a.b"`` beside ``{"a": {"b": ...}}``, a
JSON key repeated in one object, a pair repeated, two header columns of one name) keeps the
first value in the line; each later one is skipped as ``duplicate_name`` (two values of one
stream at one time would mix two quantities into one melody); a key that one JSON object
repeats with an object both times names the streams under both (``{"a": {"b": 1}, "a":
{"c": 2}}``: ``a.b`` and ``a.c``).

Any non-JSON line may start with a timestamp, used as the sample time: ISO 8601
(``2024-01-02T03:04:05Z``, with an offset, a space for the ``T``, optionally in ``[...]``;
naive times are UTC) or epoch seconds (10 integer digits, only when more fields follow).
A column whose header is ``time``/``timestamp``/``ts``/``date``/``datetime``/``epoch``, or
whose field is an ISO 8601 date, is also read as the sample time rather than a stream.

Whatever is not a finite number is skipped with one reason per field or line (see
``REASONS``); valid fields on the same line are kept. Bytes that are not UTF-8 (and lone
surrogates in text) become U+FFFD: a field holding one is skipped as ``invalid_utf8``, a
name holding one keeps it (``render`` reads files the same way). A NUL in a name becomes
U+FFFD too (``streamsonic.events.clean_name``, as for every source).
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streamsonic.config import InputConfig
from streamsonic.events import Sample, clean_name

#: Every skip reason, with what it means and what to do about it (used in warnings).
REASONS: dict[str, str] = {
    "empty": "blank line",
    "too_long": "line longer than input.max_line_bytes",
    "invalid_utf8": "field is not valid UTF-8 (the line's other fields are kept)",
    "not_numeric": "field is not a number (text, boolean)",
    "missing": "field is empty or null/NA",
    "nan": "NaN is not a playable value",
    "inf": "infinite value (or too large for a float)",
    "bad_json": "line looks like JSON but does not parse as an object or array",
    "bad_pair": "text in a name=value line that is not a name=value pair",
    "bad_prometheus": "not a Prometheus text line (input.format is prometheus)",
    "bad_csv": "delimited line the csv module cannot split",
    "bad_timestamp": "a time field that is not ISO 8601 or epoch seconds",
    "no_value": "line holds no value (only a timestamp, or an empty JSON object)",
    "duplicate_name": "line names a stream twice (a JSON key 'a.b' beside a nested "
                      "{'a': {'b': ...}}, a key repeated in one JSON object, a repeated "
                      "pair or column name); the first value in the line is kept",
    "header": "header line naming the columns",
    "comment": "comment line (# ...)",
    "internal_error": "parser bug; please report the line",
}

#: What bytes that are not UTF-8 (and lone surrogates) become when a line is decoded.
REPLACEMENT = "\ufffd"

#: Reasons that are not bad input: counted, but not worth a warning.
BENIGN_REASONS = frozenset({"header", "comment"})

#: Top-level JSON fields (and pair names) that hold the sample time.
TIME_KEYS = frozenset({"time", "timestamp", "ts"})

#: Column names (case-insensitive) whose fields hold the sample time.
TIME_COLUMNS = TIME_KEYS | {"date", "datetime", "epoch"}

_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DECIMAL_COMMA = re.compile(r"[+-]?[0-9]+,[0-9]+")
_NAN = re.compile(r"[+-]?nan", re.IGNORECASE)
_INF = re.compile(r"[+-]?inf(?:inity)?", re.IGNORECASE)
_MISSING = frozenset({"", "null", "none", "na", "n/a", "nil", "-"})

_ISO_BODY = (
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:[T ](?P<clock>[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?))?"
    r"(?P<tz>[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)
_ISO = re.compile(_ISO_BODY)
# A leading timestamp ends at one delimiter (so an empty first column stays a column).
_FIELD_END = r"(?:\s*[,;|]\s*|\s+|$)"
_LEADING_ISO = re.compile(r"\[?" + _ISO_BODY + r"\]?" + _FIELD_END)
_LEADING_EPOCH = re.compile(r"\[?(?P<epoch>[0-9]{10}(?:\.[0-9]+)?)\]?(?:\s*[,;|]\s*|\s+)(?=\S)")

_PROMETHEUS = re.compile(
    r"(?P<name>[A-Za-z_:][A-Za-z0-9_:]*"
    r"(?:\{(?:[^\"{}]|\"(?:[^\"\\]|\\.)*\")*\})?)"
    r"[ \t]+(?P<value>\S+)"
    r"(?:[ \t]+(?P<ts>-?[0-9]+))?[ \t]*"
)
#: Epoch seconds below this (2001) are not plausible as a timestamp in auto-detection.
_MIN_EPOCH = 1e9

_PAIR = re.compile(
    r"(?P<name>[A-Za-z_][^\s=:,;\"'{}]*)\s*(?:=|:(?=[\s+\-.0-9]|$))\s*"
    r"(?P<value>\"[^\"]*\"|[^\s,;]*)"
)
# The commonest pairs line, one ``name=number`` (``k12=3.5``): parsed without the general
# path's detection (the same samples: tests/test_parse.py compares them).
_SIMPLE_PAIR = re.compile(
    r"([A-Za-z_][A-Za-z0-9_.\-/]*)=([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)")
_PAIR_SEPARATORS = re.compile(r"[\s,;]*")
# A line that names its values: a JSON object, or name=value pairs (``render``'s test).
_KEYED = re.compile(r"\{|[A-Za-z_][A-Za-z0-9_.\-/]*=")
_PAIR_JUNK = re.compile(r"[^\s,;]+")
_QUOTED = re.compile(r"\"(?:[^\"]|\"\")*\"")
_DELIMITERS = ("\t", ";", ",", "|")

# The csv module refuses fields over 128 KiB; input.max_line_bytes may allow longer lines.
csv.field_size_limit(max(csv.field_size_limit(), min(sys.maxsize, 2**31 - 1)))


@dataclass
class ParsedLine:
    """What one line gave: its valid samples, and one reason per skipped field or line."""

    samples: list[Sample] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def bad(self) -> list[str]:
        """The skip reasons that are bad input (not headers or comments)."""
        return [r for r in self.skipped if r not in BENIGN_REASONS]


def parse_number(text: str) -> float | str:
    """``text`` as a finite float, or the reason (a ``REASONS`` key) it is not one.

    Strict: plain decimal or scientific notation only (no ``_``, no hex, no units).
    """
    t = text.strip()
    if _NUMBER.fullmatch(t):
        value = float(t)
        return value if math.isfinite(value) else "inf"
    if t.lower() in _MISSING:
        return "missing"
    if _NAN.fullmatch(t):
        return "nan"
    if _INF.fullmatch(t):
        return "inf"
    if REPLACEMENT in t:
        return "invalid_utf8"
    return "not_numeric"


def parse_field(text: str, delimiter: str) -> float | str:
    """A field of a delimited line as :func:`parse_number` reads it, except that a decimal
    comma (``1,5``) is a number where the delimiter is ``;`` or a tab."""
    if delimiter in ";\t" and _DECIMAL_COMMA.fullmatch(text.strip()):
        return parse_number(text.replace(",", "."))
    return parse_number(text)


def decimal_comma(text: str) -> bool:
    """Whether ``text`` looks like a number written with a decimal comma (``-1,5``)."""
    return _DECIMAL_COMMA.fullmatch(text.strip()) is not None


def keyed(line: str) -> bool:
    """Whether ``line`` names its values (a JSON object, ``name=value`` pairs) rather than
    being a row of a table."""
    return _KEYED.match(line.strip()) is not None


def parse_iso(text: str) -> float | None:
    """An ISO 8601 date or date-time as epoch seconds (naive times are UTC), else None."""
    match = _ISO.fullmatch(text.strip())
    return _iso_from_match(match) if match else None


def _iso_from_match(match: re.Match[str]) -> float | None:
    date, clock, tz = match.group("date", "clock", "tz")
    iso = date
    if clock:
        head, sep, frac = clock.partition(".")
        iso += "T" + head + (sep + frac[:6] if frac else "")
    if tz:
        iso += "+00:00" if tz in "Zz" else tz
    try:
        stamp = datetime.fromisoformat(iso)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


#: The moments a time can name: years 1 to 9999, as ISO 8601 dates (epoch seconds).
EPOCH_MIN, EPOCH_MAX = -62_135_596_800.0, 253_402_300_799.0


def epoch_seconds(value: float) -> float | None:
    """An epoch number as seconds, guessing the unit by magnitude (s, ms, us, ns); None
    for one that names no moment of years 1..9999 even in nanoseconds (``1e30``: taken
    as 1e21 s before, a time some 3e13 years away)."""
    if not math.isfinite(value):
        return None
    magnitude = abs(value)
    if magnitude >= 1e17:
        value = value / 1e9
    elif magnitude >= 1e14:
        value = value / 1e6
    elif magnitude >= 1e11:
        value = value / 1e3
    return value if EPOCH_MIN <= value <= EPOCH_MAX else None


def parse_time_value(value: object) -> float | None:
    """A time field (epoch number in s/ms/us/ns, numeric string, or ISO 8601) as epoch s."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return epoch_seconds(float(value))
        except OverflowError:
            return None
    if isinstance(value, str):
        number = parse_number(value)
        if isinstance(number, float):
            return epoch_seconds(number)
        return parse_iso(value)
    return None


def _json_number(value: object) -> float | str:
    """A JSON leaf as a finite float, or the reason it is not one."""
    if isinstance(value, str) and REPLACEMENT in value:
        return "invalid_utf8"
    if isinstance(value, bool | str):
        return "not_numeric"
    if value is None:
        return "missing"
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            return "inf"
        if math.isnan(number):
            return "nan"
        return number if math.isfinite(number) else "inf"
    return "not_numeric"


def _prometheus_time(ts: str) -> float:
    """A Prometheus timestamp as epoch seconds: milliseconds, as the format says, unless it
    is plausible only as seconds (10 digits, as people often write by hand)."""
    value = float(ts)
    return value if _MIN_EPOCH <= value < 1e11 else value / 1000.0


def _is_time_name(name: str) -> bool:
    return name.strip().lower() in TIME_COLUMNS


class LineParser:
    """Parses lines into samples; remembers a header line across lines.

    One parser per input stream (stdin, or one MQTT topic): the header and the
    delimiter it used belong to that stream.
    """

    def __init__(self, config: InputConfig) -> None:
        self.config = config
        self._timestamps = config.timestamp != "none"
        self._json_reader = JsonReader()
        self.header: list[str] | None = None
        self._header_delimiter: str | None = None
        self._header_pending = config.header != "no"
        # A later line of names with another width (vmstat prints a banner line, then the
        # real column names): it replaces the header once data of its width arrives.
        self._next_header: tuple[list[str], str] | None = None

    def reset(self) -> None:
        """Forget the header (a new input begins)."""
        self.header = None
        self._header_delimiter = None
        self._header_pending = self.config.header != "no"
        self._next_header = None

    # -- entry point ----------------------------------------------------------------
    def parse_line(self, line: bytes | str, now: float) -> ParsedLine:
        """Parse one line received at ``now`` (epoch seconds). Never raises."""
        try:
            return self._parse(line, now)
        except Exception:  # the contract: never raises, whatever the input
            return ParsedLine(skipped=["internal_error"])

    def _parse(self, line: bytes | str, now: float) -> ParsedLine:
        if isinstance(line, bytes | bytearray | memoryview):
            raw = bytes(line).rstrip(b"\r\n")
            if len(raw) > self.config.max_line_bytes:
                return ParsedLine(skipped=["too_long"])
            text = raw.decode("utf-8", errors="replace")
        else:
            text = line.rstrip("\r\n")
            try:
                size = len(text.encode("utf-8"))
            except UnicodeEncodeError:  # lone surrogates: U+FFFD, as for undecodable bytes
                text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
                size = len(text.encode("utf-8"))
            if size > self.config.max_line_bytes:
                return ParsedLine(skipped=["too_long"])
        text = text.lstrip("\ufeff").strip()
        if not text:
            return ParsedLine(skipped=["empty"])
        if text.startswith("#"):
            return ParsedLine(skipped=["comment"])
        fmt = self.config.format
        if fmt in ("auto", "number") and _NUMBER.fullmatch(text) and not (
            self._header_pending and self.config.header == "yes"
        ):  # fast path for the commonest line: one bare number
            value = float(text)
            if not math.isfinite(value):
                return ParsedLine(skipped=["inf"])
            self._header_pending = False
            name = self.config.stream if fmt == "number" else self._column_name(self.header, 0, 1)
            return ParsedLine(samples=[Sample(name, now, value)])
        if (fmt in ("auto", "pairs") and (pair := _SIMPLE_PAIR.fullmatch(text))
                and not (self._header_pending and self.config.header == "yes")):
            # fast path for one name=number pair (a name that holds a time goes the long way)
            name, number = pair.groups()
            value = float(number)
            if math.isfinite(value) and name.lower() not in TIME_KEYS:
                return self._done(ParsedLine(samples=[Sample(name, now, value)]))
        if fmt == "json" or (fmt == "auto" and text.startswith("{")):
            return self._done(self._json(text, None, now))
        if self._header_pending and self.config.header == "yes":
            try:
                return self._take_header(self._split(text))
            except csv.Error:
                return ParsedLine(skipped=["bad_csv"])

        when, rest, bad_time = self._leading_time(text)
        if not rest:
            return ParsedLine(skipped=["bad_timestamp" if bad_time else "no_value"])
        if fmt == "auto":
            if rest[0] in "{[":
                return self._done(self._json(rest, when, now))
            if _PAIR.match(rest):
                fmt = "pairs"
            elif self.header is None and self._looks_prometheus(rest):  # header: columns
                fmt = "prometheus"
            else:
                fmt = "delimited"
        if fmt == "pairs":
            out = self._pairs(rest, when, now)
        elif fmt == "prometheus":
            out = self._prometheus(rest, when, now)
        elif fmt == "number":
            out = self._number(rest, when, now)
        else:
            out = self._delimited(rest, when is not None or bad_time, when, now)
        if bad_time:  # its values keep their streams, timed by their arrival
            out.skipped.append("bad_timestamp")
        return self._done(out)

    def _done(self, out: ParsedLine) -> ParsedLine:
        if out.samples:
            self._header_pending = False
            # Names from the input (JSON keys, headers, pairs) must be encodable and short.
            samples = [s if (name := clean_name(s.stream)) is s.stream
                       else Sample(name, s.time, s.value) for s in out.samples]
            if len(samples) > 1 and len({s.stream for s in samples}) < len(samples):
                samples = _first_of_each(samples, out.skipped)
            out.samples = samples
        elif not out.skipped:
            out.skipped.append("no_value")
        return out

    # -- timestamps -------------------------------------------------------------------
    def _leading_time(self, text: str) -> tuple[float | None, str, bool]:
        """Strip a leading ISO 8601 or epoch-seconds timestamp: ``(time or None, rest,
        bad)``; ``bad``: it has the shape of one but names no moment (``2024-13-45``, an
        offset of +25:00), stripped all the same, so that the values after it keep their
        columns (and streams) rather than the first of them becoming a second column."""
        if not self._timestamps:
            return None, text, False
        match = _LEADING_ISO.match(text)
        if match:
            when = _iso_from_match(match)
            return when, text[match.end():], when is None
        # A bare 10-digit number is a time only when no header says column 0 is a value.
        if self.header is None or _is_time_name(self.header[0]):
            match = _LEADING_EPOCH.match(text)
            if match:
                return float(match.group("epoch")), text[match.end():], False
        return None, text, False

    # -- formats ----------------------------------------------------------------------
    def _number(self, text: str, when: float | None, now: float) -> ParsedLine:
        value = parse_number(text)
        if isinstance(value, str):
            return ParsedLine(skipped=[value])
        stream = self.config.stream
        return ParsedLine(samples=[Sample(stream, now if when is None else when, value)])

    def _json(self, text: str, when: float | None, now: float) -> ParsedLine:
        try:
            doc = self._json_reader.loads(text)
        except (ValueError, RecursionError):
            return ParsedLine(skipped=["bad_json"])
        out = ParsedLine()
        if isinstance(doc, dict):
            top: list[tuple[str, Any]] = [(str(k), v) for k, v in doc.items()]
        elif isinstance(doc, list):
            top = [(f"col{i}", v) for i, v in enumerate(doc)]
        else:
            return ParsedLine(skipped=["bad_json"])
        leaves: list[tuple[str, Any]] = []
        for key, value in top:
            if self._timestamps and isinstance(doc, dict) and key.lower() in TIME_KEYS:
                stamp = parse_time_value(value)
                if stamp is None:
                    out.skipped.append("bad_timestamp")
                elif when is None:
                    when = stamp
                continue
            leaves.extend(_flatten(key, value))
        time = now if when is None else when
        for name, value in leaves:
            number = _json_number(value)
            if isinstance(number, str):
                out.skipped.append(number)
            else:
                out.samples.append(Sample(name, time, number))
        return out

    def _looks_prometheus(self, text: str) -> bool:
        match = _PROMETHEUS.fullmatch(text)
        if match is None:
            return False
        if parse_number(match.group("value")) in ("not_numeric", "missing"):
            return False
        ts = match.group("ts")
        return ts is None or _prometheus_time(ts) >= _MIN_EPOCH

    def _prometheus(self, text: str, when: float | None, now: float) -> ParsedLine:
        match = _PROMETHEUS.fullmatch(text)
        if match is None:
            return ParsedLine(skipped=["bad_prometheus"])
        value = parse_number(match.group("value"))
        if isinstance(value, str):
            return ParsedLine(skipped=[value])
        ts = match.group("ts")
        if ts is not None:
            when = _prometheus_time(ts)
        time = now if when is None else when
        return ParsedLine(samples=[Sample(match.group("name"), time, value)])

    def _pairs(self, text: str, when: float | None, now: float) -> ParsedLine:
        out = ParsedLine()
        values: list[tuple[str, float]] = []
        pos, end = 0, len(text)
        while True:
            sep = _PAIR_SEPARATORS.match(text, pos)
            pos = sep.end() if sep else pos
            if pos >= end:
                break
            match = _PAIR.match(text, pos)
            if match is None:
                junk = _PAIR_JUNK.match(text, pos)
                pos = junk.end() if junk else pos + 1
                out.skipped.append("bad_pair")
                continue
            pos = match.end()
            name, raw = match.group("name", "value")
            if self._timestamps and name.lower() in TIME_KEYS:
                stamp = parse_time_value(raw.strip('"'))
                if stamp is None:
                    out.skipped.append("bad_timestamp")
                elif when is None:
                    when = stamp
                continue
            value = parse_number(raw.strip('"'))
            if isinstance(value, str):
                out.skipped.append(value)
            else:
                values.append((name, value))
        if not values and not out.skipped:
            out.skipped.append("bad_pair")
        time = now if when is None else when
        out.samples = [Sample(name, time, value) for name, value in values]
        return out

    # -- delimited columns ------------------------------------------------------------
    def _delimiter(self, text: str) -> str:
        if self.config.delimiter != "auto":
            return self.config.delimiter
        bare = _QUOTED.sub("", text) if '"' in text else text
        if self._header_delimiter is not None and self._header_delimiter in bare:
            return self._header_delimiter
        for delimiter in _DELIMITERS:
            if delimiter in bare:
                return delimiter
        return " "

    def _split(self, text: str) -> tuple[list[str], str]:
        delimiter = self._delimiter(text)
        if delimiter == " " and '"' not in text:
            return text.split(), delimiter
        # (strict: a quote left open or closed mid-field is bad_csv, not a field of its own:
        # '"unterminated,3' read as the one field 'unterminated,3' passed for a new header)
        row = next(csv.reader([text], delimiter=delimiter, skipinitialspace=True,
                              strict=True), [])
        return [f.strip() for f in row], delimiter

    def _take_header(self, split: tuple[list[str], str]) -> ParsedLine:
        names, delimiter = split
        self.header = [clean_name(n) if n else f"col{i}" for i, n in enumerate(names)]
        self._header_delimiter = delimiter if delimiter != " " else None
        self._header_pending = False
        return ParsedLine(skipped=["header"])

    @staticmethod
    def _is_header(fields: list[str]) -> bool:
        return bool(fields) and all(
            any(c.isalpha() for c in f)
            and parse_number(f) == "not_numeric"
            and parse_iso(f) is None
            for f in fields
        )

    def _delimited(self, text: str, stripped: bool, when: float | None,
                   now: float) -> ParsedLine:
        try:
            fields, delimiter = self._split(text)
        except csv.Error:
            return ParsedLine(skipped=["bad_csv"])
        if self.header is not None and not stripped and fields == self.header:
            return ParsedLine(skipped=["header"])  # e.g. `cat a.csv b.csv`
        if self._header_pending and not stripped and self._is_header(fields):
            return self._take_header((fields, delimiter))
        if (self.header is not None and self.config.header != "no" and not stripped
                and len(fields) != len(self.header) and self._is_header(fields)):
            self._next_header = (fields, delimiter)
            return ParsedLine(skipped=["header"])
        if (self._next_header is not None and self.header is not None
                and len(fields) != len(self.header)
                and len(fields) == len(self._next_header[0])):
            self._take_header(self._next_header)
            self._next_header = None
        names = self.header
        if names is not None and stripped and (
            _is_time_name(names[0]) or len(names) == len(fields) + 1
        ):
            names = names[1:]  # the leading timestamp was the header's first column
        out = ParsedLine()
        values: list[tuple[int, float]] = []
        value_columns = 0
        for i, text_field in enumerate(fields):
            named = names[i] if names is not None and i < len(names) else None
            if self._timestamps and named is not None and _is_time_name(named):
                stamp = parse_time_value(text_field)
                if stamp is None:
                    out.skipped.append("bad_timestamp")
                elif when is None:
                    when = stamp
                continue
            if self._timestamps and when is None:
                stamp = parse_iso(text_field)
                if stamp is not None:
                    when = stamp
                    continue
            value_columns += 1
            value = parse_field(text_field, delimiter)
            if isinstance(value, str):
                out.skipped.append(value)
            else:
                values.append((i, value))
        time = now if when is None else when
        for i, value in values:
            out.samples.append(Sample(self._column_name(names, i, value_columns), time, value))
        return out

    def _column_name(self, names: list[str] | None, index: int, value_columns: int) -> str:
        if names is not None and index < len(names):
            return names[index]
        if names is None and value_columns == 1:
            return self.config.stream
        return f"col{index}"


def _first_of_each(samples: list[Sample], skipped: list[str]) -> list[Sample]:
    """The first sample of each stream name, in order; one ``duplicate_name`` in
    ``skipped`` for each later one."""
    seen: set[str] = set()
    kept: list[Sample] = []
    for sample in samples:
        if sample.stream in seen:
            skipped.append("duplicate_name")
        else:
            seen.add(sample.stream)
            kept.append(sample)
    return kept


class JsonReader:
    """``json.loads`` for one JSON document at a time that keeps every value of a key an
    object repeats (``json.loads`` keeps the last, and says nothing): a repeated key is a
    :class:`_Again`, a key of its own that reads as the key, so its leaves are flattened
    like any others and a name met twice is ``duplicate_name`` (``{"a": 1, "a": 2}``: a=1
    plays) while objects under one key name their own leaves (``{"a": {"b": 1}, "a":
    {"c": 2}}``: a.b and a.c). One decoder, made once (a new one per line costs more than
    the parse)."""

    def __init__(self) -> None:
        self._decoder = json.JSONDecoder(object_pairs_hook=_object)

    def loads(self, text: str) -> Any:
        """The document in ``text`` (ValueError or RecursionError if it is not JSON)."""
        return self._decoder.decode(text)


class _Again(str):
    """A key that its object repeats: equal only to itself (a dict key beside the first),
    read and formatted as the key."""

    __slots__ = ()
    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        out[_Again(key) if key in out else key] = value
    return out


def _flatten(prefix: str, value: object) -> list[tuple[str, Any]]:
    """JSON leaves under ``prefix`` as ``(dotted.name, leaf)``, in document order."""
    leaves: list[tuple[str, Any]] = []
    stack: list[tuple[str, Any]] = [(prefix, value)]
    while stack:
        name, node = stack.pop()
        if isinstance(node, dict):
            stack.extend(reversed([(f"{name}.{k}", v) for k, v in node.items()]))
        elif isinstance(node, list):
            stack.extend(reversed([(f"{name}.{i}", v) for i, v in enumerate(node)]))
        else:
            leaves.append((name, node))
    return leaves
