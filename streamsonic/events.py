"""The values that flow through the pipeline, and the Source protocol.

    Source -> Sample -> (normalize, step, map) -> NoteEvent -> Scheduler -> Sink

Everything here is plain data: no I/O, no torch.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from typing import Any, Literal, Protocol, runtime_checkable

#: Longest note (seconds): 16 beats at 10 bpm is 96 s; a note from elsewhere (``--play-notes``)
#: that claims more is refused rather than left sounding.
MAX_NOTE_SECONDS = 600.0

#: Longest stream name kept as it is; longer names are cut and given a checksum suffix.
MAX_NAME_CHARS = 200


def clean_name(name: str) -> str:
    """A stream name that every output can encode: valid Unicode without NUL, at most
    ``MAX_NAME_CHARS``.

    JSON can spell lone UTF-16 surrogates (``{"\\ud800": 1}``), which no UTF-8 encoder
    accepts; they become U+FFFD. So does NUL (U+0000: ``{"a\\u0000b": 1}``, a byte in a
    pair's name), which ends a C string (MIDI track names, FluidSynth, file names) and which
    MQTT forbids in topics. Over-long names (a 64 KiB JSON key) are cut, with a CRC-32 of
    the whole name appended so that distinct long names stay distinct streams.
    """
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        name = name.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        raw = name.encode("utf-8")
    if "\0" in name:
        name = name.replace("\0", "\ufffd")
        raw = name.encode("utf-8")
    if len(name) > MAX_NAME_CHARS:
        name = f"{name[: MAX_NAME_CHARS - 9]}~{zlib.crc32(raw):08x}"
    return name


@dataclass(frozen=True, slots=True)
class Sample:
    """One numeric observation of one stream.

    ``time`` is the sample's own time in seconds since the epoch: the timestamp the input
    carried, or the arrival time when it carried none.
    """

    stream: str
    time: float
    value: float


class NoteFieldError(ValueError):
    """A NoteEvent field out of its range: ``field``, its ``value`` and the ``problem``
    (the message, as before, is "FIELD VALUE PROBLEM")."""

    def __init__(self, field: str, value: object, problem: str) -> None:
        super().__init__(f"{field} {value} {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class NoteEvent:
    """One note that a stream played.

    ``time`` is the sample time (epoch seconds) of the data that made the note; ``start`` is
    when the note sounds on the scheduler's clock (seconds; monotonic for live runs, from 0
    for offline renders); ``duration`` is in seconds. ``anomaly`` is the sample's anomaly
    score (0..1), ``accent`` whether it crossed the accent threshold, ``direction`` which
    way it deviated (+1 above what was expected, -1 below, 0 neither), ``pan`` the voice's
    stereo position (MIDI 0..127). ``source`` says who chose the note: ``"data"`` for the
    note a sample plays, ``"model"`` for a note the model added before it (a passing or
    neighbour note, see ``model.passing_notes``; it shares the sample's ``time``, ``value``
    and ``normalized``).
    """

    stream: str
    time: float
    value: float
    normalized: float
    pitch: int
    velocity: int
    duration: float
    channel: int
    program: int
    start: float = 0.0
    anomaly: float = 0.0
    accent: bool = False
    direction: int = 0
    pan: int = 64
    source: Literal["data", "model"] = "data"

    def __post_init__(self) -> None:
        if not 0 <= self.pitch <= 127:
            raise NoteFieldError("pitch", self.pitch, "outside MIDI range 0..127")
        if not 1 <= self.velocity <= 127:
            raise NoteFieldError("velocity", self.velocity, "outside 1..127")
        if not 0 <= self.channel <= 15:
            raise NoteFieldError("channel", self.channel, "outside 0..15")
        if not 0 <= self.program <= 127:
            raise NoteFieldError("program", self.program, "outside 0..127")
        if not 0 < self.duration <= MAX_NOTE_SECONDS:
            raise NoteFieldError("duration", self.duration,
                                 f"must be > 0 and at most {MAX_NOTE_SECONDS:g} seconds")
        if not 0.0 <= self.normalized <= 1.0:
            raise NoteFieldError("normalized", self.normalized, "outside 0..1")
        if not 0.0 <= self.anomaly <= 1.0:
            raise NoteFieldError("anomaly", self.anomaly, "outside 0..1")
        if not 0 <= self.pan <= 127:
            raise NoteFieldError("pan", self.pan, "outside 0..127")
        if self.source not in ("data", "model"):
            raise NoteFieldError("source", repr(self.source), "is neither 'data' nor 'model'")

    def to_dict(self) -> dict[str, Any]:
        """The note as a JSON-ready dict (the ``events`` output format), fields in order.
        Built directly: ``dataclasses.asdict`` deep-copies every value, per note."""
        return {name: getattr(self, name) for name in _NOTE_FIELDS}


#: NoteEvent's fields, in order (``NoteEvent.to_dict``).
_NOTE_FIELDS = tuple(f.name for f in fields(NoteEvent))


class Receipt(Protocol):
    """The delivery of one taken item, still owed to its sender (an MQTT QoS 1
    acknowledgement). The engine calls :meth:`done` once the item's note is scheduled, or
    once the item is dropped for good; a stop before that leaves it owed, so a persistent
    session delivers it again."""

    def done(self) -> None: ...


@runtime_checkable
class Holding(Protocol):
    """A source whose deliveries can be settled later: :meth:`hold` takes over the receipt
    of the item yielded last (``None`` when nothing is owed for it). Without a call to
    ``hold`` the source settles an item when the next one is asked for."""

    def hold(self) -> Receipt | None: ...


@runtime_checkable
class Arrival(Protocol):
    """A source that knows when the item yielded last reached the daemon, earlier than the
    engine sees it (a worker's pipe: when the router read it): :meth:`arrived` is that
    moment on ``time.monotonic`` (the event loop's clock, the same in every process of the
    machine), or ``None``. The engine counts a sample's wait from then, so the time it
    spent in a queue, the router or a pipe counts against its deadline (shedding). Only for
    a loop on ``time.monotonic``: a source on virtual time (``replay --fast``) must not
    offer it."""

    def arrived(self) -> float | None: ...


@runtime_checkable
class Source(Protocol):
    """A source of samples: an async context manager and an async iterator.

    It yields :class:`Sample`s, or, for ``run --play-notes`` (the MQTT source reading what
    ``--output mqtt:PREFIX`` published), :class:`NoteEvent`s to play as they are. Iteration
    ends when the source is exhausted (EOF on stdin); network sources iterate until they
    are closed. Bad input is counted in ``stats`` and never raised.
    """

    async def __aenter__(self) -> Source: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def __aiter__(self) -> AsyncIterator[Sample | NoteEvent]: ...

    @property
    def stats(self) -> dict[str, int]:
        """Counters, e.g. ``{"samples": 120, "skipped.nan": 2}``."""
        ...
