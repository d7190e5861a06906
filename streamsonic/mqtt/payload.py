"""MQTT payloads -> samples (or, for ``--play-notes``, NoteEvents).

Formats (``mqtt.payload``): ``number`` (a plain number), ``json`` (one field by dotted path
``mqtt.json_field``, else every numeric field is a stream named ``<stream>.<dotted.path>``),
``line`` (any stdin line format, through ``streamsonic.parse.LineParser``; several lines
per payload are fine), and ``auto`` (number, else JSON if it looks like JSON, else line).
``mqtt.timestamp_field`` names a JSON field (dotted path) holding the sample time (epoch
seconds, ms, µs or ISO 8601); without it a top-level ``time``/``timestamp``/``ts`` field is
used as the stdin JSON format does, else the arrival time.

Skip reasons are those of ``streamsonic.parse.REASONS`` (``not_numeric``, ``nan``,
``inf``, ``bad_json``, ``duplicate_name``: a JSON payload, or one line, that names a
stream twice keeps the first value, as on stdin) plus ``too_large``, ``no_field``
(``json_field`` absent), ``stream_name`` (the topic has too few levels for
``mqtt.stream_name``) and ``bad_note``.
Nothing here raises on bad input: ``decode`` returns the reasons a payload (or part of
it) was skipped, and the source counts and logs them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol

from streamsonic.config import Config
from streamsonic.events import NoteEvent, NoteFieldError, Sample, clean_name
from streamsonic.mqtt.naming import stream_name
from streamsonic.parse import (
    _NUMBER,
    BENIGN_REASONS,
    REPLACEMENT,
    TIME_KEYS,
    JsonReader,
    LineParser,
    parse_number,
    parse_time_value,
)

#: Payloads larger than this many times ``input.max_line_bytes`` are skipped unread.
PAYLOAD_LINES_LIMIT = 16
#: Topics whose stream names are remembered (the table is emptied when it is full).
NAME_CACHE = 65536

_NOTE_FIELDS = {f.name: f.type for f in fields(NoteEvent)}
_INT_FIELDS = {"pitch", "velocity", "channel", "program", "direction", "pan"}
#: Fields a note may leave out (older publishers): the NoteEvent defaults apply.
_OPTIONAL_FIELDS = {"start", "anomaly", "accent", "direction", "pan", "source"}


@dataclass
class Decoded:
    """What one payload gave: samples or notes, skip reasons (bad input), ignored reasons
    (not bad: header and comment lines), and ``detail``: what was wrong, where the decoder
    can say more than the reason (a bad note's field and value), for the warning."""

    items: list[Sample | NoteEvent] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    detail: str = ""


class PayloadSettings(Protocol):
    """How payloads are read: ``[mqtt]``'s keys, or ``[nats]``'s (the same meaning)."""

    @property
    def payload(self) -> Literal["auto", "number", "json", "line"]: ...

    @property
    def json_field(self) -> str: ...

    @property
    def timestamp_field(self) -> str: ...

    @property
    def stream_name(self) -> str: ...


class PayloadDecoder:
    """Decodes payloads per the ``[mqtt]`` config (or ``settings``, e.g. ``[nats]``); keeps
    one line parser per topic. ``name_of`` turns a topic (subject) into the stream name,
    raising LookupError or ValueError when it cannot; by default ``mqtt.stream_name``."""

    def __init__(self, config: Config, play_notes: bool = False,
                 settings: PayloadSettings | None = None,
                 name_of: Callable[[str], str] | None = None) -> None:
        self.config = config
        self.mqtt: PayloadSettings = config.mqtt if settings is None else settings
        self._name_of = name_of or self._topic_name
        self.play_notes = play_notes
        self.max_bytes = config.input.max_line_bytes * PAYLOAD_LINES_LIMIT
        self._line_parsers: dict[str, LineParser] = {}
        # one-line payloads of topics that never sent several lines: no header, no state
        self._plain = LineParser(dataclasses.replace(config.input, header="no"))
        # topic -> (stream name, the name cleaned for a sample of its own)
        self._names: dict[str, tuple[str, str]] = {}
        self._fast = not play_notes and self.mqtt.payload in ("auto", "number")
        self._json_reader = JsonReader()

    def fast(self, topic: str, payload: bytes | bytearray, now: float) -> Sample | None:
        """The sample of the commonest payload, a bare finite number on a topic whose
        stream name ``decode`` has already made, without ``decode``'s detection; None for
        anything else (then ``decode`` it). Where this gives a sample, ``decode`` gives
        exactly that one and nothing else (a test compares them)."""
        if not self._fast or len(payload) > self.max_bytes:
            return None
        names = self._names.get(topic)
        if names is None:
            return None
        text = bytes(payload).decode("utf-8", errors="replace").strip()
        if _NUMBER.fullmatch(text) is None:
            return None
        value = float(text)
        if not math.isfinite(value):
            return None
        return Sample(names[1], now, value)

    def decode(self, topic: str, payload: bytes | bytearray, now: float) -> Decoded:
        """Decode one message's payload received at ``now`` (epoch seconds)."""
        out = Decoded()
        if len(payload) > self.max_bytes:
            out.skipped.append("too_large")
            return out
        # As on stdin: undecodable bytes become U+FFFD, and only the fields holding one
        # are skipped (invalid_utf8); the payload's other fields still play.
        text = bytes(payload).decode("utf-8", errors="replace").strip()
        if not text:
            out.skipped.append("empty")
            return out
        if self.play_notes:
            self._decode_note(text, out)
            return out
        names = self._names.get(topic)
        if names is None:
            try:
                base = self._name_of(topic)
            except (LookupError, ValueError):
                out.skipped.append("stream_name")
                return out
            if len(self._names) >= NAME_CACHE:
                self._names.clear()
            self._names[topic] = names = (base, clean_name(base))
        base = names[0]
        kind = self.mqtt.payload
        if kind == "auto":
            kind = _sniff(text)
        if kind == "number":
            self._decode_number(base, text, now, out)
        elif kind == "json":
            self._decode_json(base, text, now, out)
        else:
            self._decode_lines(topic, base, text, now, out)
        return out

    def _topic_name(self, topic: str) -> str:
        return stream_name(self.mqtt.stream_name, topic)

    # -- formats ----------------------------------------------------------------------
    def _decode_number(self, base: str, text: str, now: float, out: Decoded) -> None:
        value = parse_number(text)
        if isinstance(value, str):
            out.skipped.append(value)
        else:
            _add(out, base, now, value)

    def _decode_json(self, base: str, text: str, now: float, out: Decoded) -> None:
        try:
            doc = self._json_reader.loads(text)  # (a key an object repeats: every value)
        except (ValueError, RecursionError):
            out.skipped.append("bad_json")
            return
        when = now
        ts_field = self.mqtt.timestamp_field
        if isinstance(doc, dict):
            if not ts_field:
                ts_field = next((k for k in doc if k in TIME_KEYS), "")
            raw = _lookup(doc, ts_field) if ts_field else _MISSING
            if raw is not _MISSING:
                parsed = parse_time_value(raw)
                if parsed is None:
                    out.skipped.append("bad_timestamp")
                    return
                when = parsed
        if self.mqtt.json_field:
            value = _lookup(doc, self.mqtt.json_field) if isinstance(doc, dict) else _MISSING
            if value is _MISSING:
                out.skipped.append("no_field")
                return
            number = parse_number(value) if isinstance(value, str) else _leaf(value)
            if isinstance(number, str):
                out.skipped.append(number)
            else:
                _add(out, base, when, number)
            return
        if not isinstance(doc, dict | list):  # a bare JSON number (or junk)
            number = _leaf(doc)
            if isinstance(number, str):
                out.skipped.append(number)
            else:
                _add(out, base, when, number)
            return
        found = False
        named: set[str] = set()  # a stream named twice (``a.b`` and ``{"a": {"b"}}``)
        for path, value in _leaves(doc):
            if ts_field and path == ts_field:
                continue
            if isinstance(value, str):
                out.skipped.append(value)
                continue
            if not math.isfinite(value):  # (skipped before it takes the name: the
                out.skipped.append("nan" if math.isnan(value) else "inf")  # next value
                continue  # of that name is no duplicate of it)
            name = clean_name(f"{base}.{path}")
            if name in named:
                out.skipped.append("duplicate_name")
                continue
            named.add(name)
            found = True
            _add(out, name, when, value)
        if not found and not out.skipped:
            out.skipped.append("no_value")

    def _decode_lines(self, topic: str, base: str, text: str, now: float, out: Decoded) -> None:
        """Lines as stdin reads them, with one difference: a payload of one line is never
        a header. A message is a value, not the start of a file: its text (``offline``,
        ``temp,hum``) is a bad payload (``not_numeric``), counted per topic and warned
        about. Only a payload of several lines may begin with a header naming the columns
        of the lines after it (kept for the topic's later payloads, as stdin keeps one)."""
        lines = [line for line in text.splitlines() if line.strip()]
        single = len(lines) == 1
        parser = self._line_parsers.get(topic)
        if parser is None:  # a headerless parser has no state to keep per topic
            parser = self._plain if single else self._line_parser(topic)
        default_name = self.config.input.stream
        for line in lines:
            parsed = parser.parse_line(line, now)  # never raises
            for sample in parsed.samples:
                name = base if sample.stream == default_name else f"{base}.{sample.stream}"
                _add(out, name, sample.time, sample.value)
            for reason in parsed.skipped:
                if reason == "header" and single:  # names nothing: text where a value goes
                    out.skipped.append("not_numeric")
                elif reason in BENIGN_REASONS:
                    out.ignored.append(reason)
                else:
                    out.skipped.append(reason)

    def _line_parser(self, topic: str) -> LineParser:
        parser = self._line_parsers.get(topic)
        if parser is None:
            if len(self._line_parsers) >= 10000:  # bound memory with huge topic trees
                self._line_parsers.clear()
            parser = self._line_parsers[topic] = LineParser(self.config.input)
        return parser

    def _decode_note(self, text: str, out: Decoded) -> None:
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            out.skipped.append("bad_note")
            out.detail = "not JSON"
            return
        note = read_note(doc)
        if isinstance(note, str):
            out.skipped.append("bad_note")
            out.detail = note
        else:
            out.items.append(note)


_MISSING: Any = object()


def _sniff(text: str) -> Literal["number", "json", "line"]:
    if text[0] in "{[":
        return "json"
    reason = parse_number(text)
    return "number" if not isinstance(reason, str) or reason in ("nan", "inf") else "line"


def _add(out: Decoded, stream: str, when: float, value: float) -> None:
    if math.isfinite(value):
        out.items.append(Sample(clean_name(stream), when, value))
    else:
        out.skipped.append("nan" if math.isnan(value) else "inf")


def _leaf(value: Any) -> float | str:
    """A JSON value as a float, or the skip reason."""
    if value is None:
        return "missing"
    if isinstance(value, str) and REPLACEMENT in value:
        return "invalid_utf8"
    number = _as_number(value)
    return "not_numeric" if number is None else number


def _as_number(value: Any) -> float | None:
    """A JSON number (not a boolean) as a float (inf when too large), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _lookup(doc: Any, dotted: str) -> Any:
    node = doc
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _leaves(node: Any) -> list[tuple[str, float | str]]:
    """Every leaf of a JSON document by dotted path: a float, or the skip reason."""
    out: list[tuple[str, float | str]] = []
    stack: list[tuple[str | None, Any]] = [(None, node)]  # None: the document itself
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            stack.extend((str(k) if path is None else f"{path}.{k}", v)
                         for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((str(i) if path is None else f"{path}.{i}", v)
                         for i, v in reversed(list(enumerate(item))))
        elif path is not None:  # a field named "" is a field too
            out.append((path, _leaf(item)))
    return out


def note_from_dict(doc: Any) -> NoteEvent | None:
    """A NoteEvent from the JSON the ``mqtt:`` output publishes, or None if it is not one
    (:func:`read_note` says why)."""
    note = read_note(doc)
    return None if isinstance(note, str) else note


#: How much of a bad field's value a message shows (as JSON), at most.
SHOWN_CHARS = 40
_JSON_KINDS = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
               float: "number", type(None): "null"}


def _shown(value: Any) -> str:
    """``value`` as JSON for a message, cut to ``SHOWN_CHARS`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def read_note(doc: Any) -> NoteEvent | str:
    """A NoteEvent from the JSON the ``mqtt:`` output publishes, or what is wrong with it:
    the first field that is missing or wrong, with its value (``field 'pitch' = 200:
    outside MIDI range 0..127``), for the warning about the skipped payload."""
    if not isinstance(doc, dict):
        return f"a JSON {_JSON_KINDS.get(type(doc), 'value')}, not an object with a note's fields"
    kwargs: dict[str, Any] = {}
    for name in _NOTE_FIELDS:
        if name not in doc:
            if name in _OPTIONAL_FIELDS:
                continue
            return f"field {name!r} is missing"
        value = doc[name]
        problem = None
        if name == "accent":
            if not isinstance(value, bool):
                problem = "not true or false"
        elif name == "stream":
            if not isinstance(value, str):
                problem = "not a string"
            else:
                value = clean_name(value)
        elif name == "source":
            if value not in ("data", "model"):
                problem = "neither 'data' nor 'model'"
        elif name in _INT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int):
                problem = "not an integer"
        else:
            number = _as_number(value)
            if number is None or not math.isfinite(number):
                problem = "not a finite number"
            else:
                value = number
        if problem is not None:
            return f"field {name!r} = {_shown(doc[name])}: {problem}"
        kwargs[name] = value
    try:
        return NoteEvent(**kwargs)
    except NoteFieldError as err:
        return f"field {err.field!r} = {_shown(kwargs.get(err.field))}: {err.problem}"
    except (TypeError, ValueError) as err:
        return f"not a note: {err}"
