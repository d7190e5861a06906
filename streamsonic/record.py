"""Record what the daemon took in, and play it again (``run --record``, ``replay``).

A recording is JSON lines, one per sample the source handed to the engine, in arrival order::

    {"stream":"cpu","time":1700000000.25,"value":41.5,"arrival":1700000000.251}

``time`` and ``value`` are the sample's own (its timestamp or arrival time, and its value, as
parsed); ``arrival`` is when the engine took it, in epoch seconds on a clock that never jumps
back (the event loop's monotonic clock, anchored to the wall clock once per run), so the
gaps between arrivals are the gaps the engine saw. Floats are written exactly (``repr``), so
a replay feeds the very same numbers.

:class:`Recorder` writes the lines as they come through a buffer that is written out at most
``output.flush_interval`` seconds after its first line (or at 64 KiB), into files named,
rotated and never overwritten like the ``file:`` output's
(:class:`~streamsonic.sinks.outfile.FileSeries`: ``{start}`` and ``{n}`` in the path,
``output.rotate_seconds`` and ``output.rotate_bytes``; an earlier file at the name is kept as
``NAME-1.jsonl``). A killed daemon leaves whole lines up to the last flush. A write that fails
stops the recording with one error line; the music plays on and the run ends with exit 74.

:class:`ReplaySource` reads recordings back as a source: with the original gaps between
arrivals (divided by ``speed``), or, under :class:`VirtualTimeLoop` (``replay --fast``), on a
virtual clock that jumps ahead whenever nothing is due, so the engine sees exactly the
original timing and the replay takes only the time to compute it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import math
import selectors
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from streamsonic.config import Config, OutputConfig
from streamsonic.errors import InputDataError, NoInputError, OutputWriteError
from streamsonic.events import NoteEvent, Sample, Source, clean_name
from streamsonic.sinks.outfile import FileSeries, OutputFile
from streamsonic.stats import Counters, RateLimitedLog

log = logging.getLogger(__name__)

#: Bytes buffered before they are written even if the flush delay has not passed.
FLUSH_BYTES = 65536
#: The keys of one recorded sample.
KEYS = ("stream", "time", "value", "arrival")
#: Longest recording line read back (a stream name is at most 200 characters).
MAX_LINE = 65536
#: Samples that arrived at once that a replay feeds in a row before it gives the event loop
#: a turn (a count, not a time: a --fast replay must not depend on the machine's speed).
YIELD_EVERY = 256
#: A gap between two arrivals longer than this (seconds: a week) is no pause the daemon saw
#: but a break (recordings of separate runs replayed together, or a corrupt arrival such as
#: 1e308): it is left out, the replay going on at once (the clock's timers, the stats line
#: each ``daemon.stats_interval``, would otherwise run through it: a week of them under
#: ``--fast`` took 13 s, 1e308 seconds never ended).
MAX_GAP = 7 * 86400.0


class Recorder:
    """Writes samples with their arrival times to rotating JSON-lines files."""

    def __init__(self, pattern: str, output: OutputConfig) -> None:
        self.pattern = pattern
        self.output = output
        self.samples = 0  # samples recorded: their lines written to the file
        self.lost = 0  # samples not recorded: their lines lost to a write that failed
        self.failed: OutputWriteError | None = None
        self._outs: list[OutputFile] = []  # the files started, in order
        self._series = FileSeries(pattern, "record file")
        self._file: OutputFile | None = self._series.open()  # fails now (exit 69), not later
        self._outs.append(self._file)
        if self._file.in_place:  # a device or FIFO: one file, never rotated
            self._series_rotates = False
        else:
            self._series_rotates = bool(output.rotate_seconds or output.rotate_bytes)
        self._buffer: list[str] = []
        self._buffered = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self._anchor: tuple[float, float] | None = None  # (wall clock, loop clock) at start
        self._file_start: float | None = None  # arrival of the current file's first line

    @property
    def files(self) -> list[Path]:
        """The files written, in order, under their names now (one kept aside since, by the
        next file at its name or by another process, as ``NAME-N.jsonl``)."""
        return [out.final_path() for out in self._outs]

    def arrival(self) -> float:
        """Now, as an arrival time: epoch seconds that advance with the loop's clock."""
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        if self._anchor is None:
            self._anchor = (time.time(), loop.time())
        wall, mono = self._anchor
        return wall + (loop.time() - mono)

    def record(self, sample: Sample) -> None:
        """Record ``sample`` as arriving now."""
        if self.failed is not None or self._file is None:
            self.lost += 1
            return
        arrival = round(self.arrival(), 6)
        line = json.dumps({"stream": sample.stream, "time": sample.time,
                           "value": sample.value, "arrival": arrival},
                          separators=(",", ":"), ensure_ascii=False) + "\n"
        if self._file_start is None:
            self._file_start = arrival
        rotate = self.output.rotate_seconds
        if self._series_rotates and rotate and arrival >= self._file_start + rotate:
            periods = math.floor((arrival - self._file_start) / rotate)
            self._rotate(self._file_start + periods * rotate)
            if self.failed is not None or self._file is None:
                self.lost += 1
                return
        self._buffer.append(line)
        self._buffered += len(line.encode("utf-8"))
        if self._buffered >= FLUSH_BYTES:
            self.flush()
        elif self._flush_handle is None and self._loop is not None:
            self._flush_handle = self._loop.call_later(self.output.flush_interval, self.flush)

    def flush(self) -> None:
        """Write what is buffered (whole lines) and mark it readable; the lines written
        count as recorded (``samples``), those a failed write lost as ``lost``."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._buffer or self._file is None or self.failed is not None:
            return
        lines, self._buffer, self._buffered = self._buffer, [], 0
        before = self.samples
        limit = self.output.rotate_bytes if self._series_rotates else 0
        chunk = bytearray()
        pending = 0  # lines in ``chunk``
        try:
            for line in lines:
                raw = line.encode("utf-8")
                if limit and self._file.size + len(chunk) + len(raw) > limit \
                        and self._file.size + len(chunk) > 0:
                    self._write(chunk)  # whole lines: the file ends at or under the limit
                    self.samples += pending
                    chunk, pending = bytearray(), 0
                    self._rotate(None)
                    if self._file is None:
                        return
                chunk += raw
                pending += 1
            self._write(chunk)
            self.samples += pending
        except OutputWriteError as err:
            self._fail(err)
        finally:
            # a failed write is cut back to the last whole flush: its lines are not in the
            # file, nor are those after it
            self.lost += len(lines) - (self.samples - before)

    def _write(self, chunk: bytearray) -> None:
        assert self._file is not None
        if chunk:
            self._file.append(chunk)
            self._file.readable()

    def _rotate(self, start: float | None) -> None:
        """End the current file (after writing what is buffered for it); start the next."""
        assert self._file is not None
        if start is not None:  # by time: what is buffered belongs to the old file
            self.flush()
            if self._file is None or self.failed is not None:
                return
        try:
            self._file.commit()
            log.info("record: wrote %s, next file from here", self._file.path)
            started = datetime.fromtimestamp(start, UTC) if start is not None else None
            self._file = self._series.open(started)
            self._outs.append(self._file)
        except OutputWriteError as err:
            self._fail(err)
            return
        self._file_start = start if start is not None else self._file_start

    def _fail(self, err: OutputWriteError) -> None:
        self.failed = err
        self._file = None
        self.lost += len(self._buffer)
        self._buffer.clear()
        log.error("recording stopped (the music plays on): %s", err)

    def close(self) -> None:
        """Write what is left and end the file. Idempotent; a failure is kept in ``failed``."""
        self.flush()
        if self._file is not None:
            try:
                self._file.commit()
            except OutputWriteError as err:
                self._fail(err)
                return
            log.info("recorded %d samples to %s", self.samples, _names(self.files))
            self._file = None


#: Files named one by one in the log line that ends a recording; more are counted, with the
#: first and the last named.
_NAMED_FILES = 4


def _names(files: list[Path]) -> str:
    if len(files) <= _NAMED_FILES:
        return ", ".join(str(path) for path in files)
    return f"{len(files)} files, {files[0]} ... {files[-1]}"


#: The members of a source that the daemon finds through ``isinstance`` with a protocol
#: (:class:`streamsonic.events.Holding`, :class:`streamsonic.events.Arrival`,
#: :class:`streamsonic.sources.Connecting`): a recording source offers those its source does.
_PROTOCOL_MEMBERS = ("hold", "arrived", "connected", "waiting_for", "check_reconfigure",
                     "reconfigure")
_ABSENT = object()


def _forward_property(name: str) -> property:
    return property(lambda self: getattr(self.source, name))


def _forward_method(name: str) -> Callable[..., Any]:
    def method(self: RecordingSource, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.source, name)(*args, **kwargs)

    method.__name__ = name
    return method


@functools.cache
def _recording_class(kind: type) -> type[RecordingSource]:
    """RecordingSource with the protocol members that sources of ``kind`` have."""
    members: dict[str, Any] = {}
    for name in _PROTOCOL_MEMBERS:
        found = inspect.getattr_static(kind, name, _ABSENT)
        if found is _ABSENT:
            continue
        members[name] = (_forward_method(name) if callable(found)
                         and not isinstance(found, property) else _forward_property(name))
    return type(f"Recording{kind.__name__}", (RecordingSource,), members)


class RecordingSource:
    """A source that records every sample it passes on (``run --record``).

    Everything else is the wrapped source's: its items, stats, and whatever else it offers
    (attributes are looked up on it: the receipts of MQTT deliveries, ``hold``, so
    acknowledgements wait for the engine as without recording; the connection state and
    ``reconfigure`` of a network source), so the daemon treats it as the source it wraps.
    """

    def __new__(cls, source: Source, recorder: Recorder) -> RecordingSource:
        # A class of its own per kind of wrapped source, with that kind's protocol members
        # (receipts, arrival times, the connection): ``isinstance`` checks against the
        # protocols (Holding, Arrival, Connecting) see them on the class, as they must from
        # Python 3.12 on (they no longer ask ``__getattr__``).
        kind = _recording_class(type(source)) if cls is RecordingSource else cls
        return super().__new__(kind)

    def __init__(self, source: Source, recorder: Recorder) -> None:
        self.source = source
        self.recorder = recorder

    @property
    def stats(self) -> dict[str, int]:
        """The wrapped source's counters, ``recorded`` (samples whose lines are written)
        and, after a write failed, ``record_lost`` (samples whose lines are not)."""
        stats = {**self.source.stats, "recorded": self.recorder.samples}
        if self.recorder.lost:
            stats["record_lost"] = self.recorder.lost
        return stats

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)


    async def __aenter__(self) -> RecordingSource:
        await self.source.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.source.__aexit__(*exc)
        finally:
            self.recorder.close()

    def __aiter__(self) -> AsyncIterator[Sample | NoteEvent]:
        return self._items()

    async def _items(self) -> AsyncIterator[Sample | NoteEvent]:
        async for item in self.source:
            if isinstance(item, Sample):
                self.recorder.record(item)
            yield item


# -- replay ------------------------------------------------------------------------------

def check_recordings(paths: list[str]) -> None:
    """Fail now (NoInputError, exit 66) when a recording cannot be opened."""
    for path in paths:
        try:
            if Path(path).is_dir():
                raise IsADirectoryError(21, "it is a folder")
            with Path(path).open("rb"):
                pass
        except OSError as err:
            raise NoInputError(f"cannot read recording {path}: {err.strerror or err}; name "
                               "a file written by 'streamsonic run --record'") from None


def read_record(line: bytes) -> tuple[Sample, float] | None:
    """One recording line -> (sample, arrival); None when it is not one."""
    try:
        data: Any = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or any(k not in data for k in KEYS):
        return None
    stream, when, value, arrival = (data[k] for k in KEYS)
    if not isinstance(stream, str):  # ("" is a name: a JSON key "" is a stream run records)
        return None
    numbers = (when, value, arrival)
    if any(isinstance(x, bool) or not isinstance(x, int | float) for x in numbers):
        return None
    if not all(math.isfinite(float(x)) for x in numbers):
        return None
    return Sample(clean_name(stream), float(when), float(value)), float(arrival)


class ReplaySource:
    """Samples from recordings, fed with their original gaps (divided by ``speed``)."""

    def __init__(self, paths: list[str], speed: float = 1.0, warn_interval: float = 10.0) -> None:
        if not speed > 0:
            raise ValueError("speed must be > 0")
        self.paths = list(paths)
        self.speed = speed
        self._counters = Counters()
        self._warn = RateLimitedLog(log, warn_interval)
        self._file: IO[bytes] | None = None

    @classmethod
    def open(cls, paths: list[str], speed: float = 1.0) -> ReplaySource:
        """A replay of ``paths`` (checked now: NoInputError when one cannot be read)."""
        check_recordings(paths)
        return cls(paths, speed)

    @property
    def stats(self) -> dict[str, int]:
        """``records`` read, ``samples`` fed, ``skipped.malformed`` lines, ``gaps`` left out
        (longer than MAX_GAP, or backwards: an arrival before the one before it), and after
        a stop ``unread``: the record read that was waiting for its moment."""
        counts = {"records": 0, "samples": 0}
        counts.update(self._counters.snapshot())
        return counts

    async def __aenter__(self) -> ReplaySource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __aiter__(self) -> AsyncIterator[Sample]:
        return self._samples()

    def _in_time_order(self) -> list[str]:
        """The recordings by the arrival of their first sample (a stable sort: a file with
        none comes last, files that start together keep their order), so rotated files
        play in the order they were written whatever order they are named in (a shell sorts
        ``NAME-10`` before ``NAME-2``, and the newest, ``NAME``, after both); logged when it
        is not the order given. Raises NoInputError."""
        firsts = [self._first_arrival(path) for path in self.paths]
        order = sorted(range(len(self.paths)), key=lambda i: firsts[i])
        paths = [self.paths[i] for i in order]
        if paths != self.paths:
            log.info("replay: playing the recordings in the order of their first arrivals, "
                     "not as given: %s", ", ".join(paths))
        return paths

    def _first_arrival(self, path: str) -> float:
        """The arrival of ``path``'s first recorded sample; infinity when it holds none."""
        try:
            with Path(path).open("rb") as file:
                for line in self._lines(file):
                    if (record := read_record(line)) is not None:
                        return record[1]
        except OSError as err:
            raise NoInputError(f"cannot read recording {path}: {err.strerror}") from None
        return math.inf

    def _records(self) -> Iterator[tuple[Sample, float]]:
        for path in self._in_time_order():
            try:
                self._file = Path(path).open("rb")  # noqa: SIM115 - closed below or at exit
            except OSError as err:
                raise NoInputError(f"cannot read recording {path}: {err.strerror}") from None
            with self._file:
                for lineno, line in enumerate(self._lines(self._file), 1):
                    self._counters.add("records")
                    record = read_record(line)
                    if record is None:
                        self._counters.add("skipped.malformed")
                        self._warn.warning("malformed", "%s line %d: not a recorded sample "
                                           "(skipped): %.60r", path, lineno, line[:60])
                        continue
                    yield record
            self._file = None

    @staticmethod
    def _lines(file: IO[bytes]) -> Iterator[bytes]:
        while line := file.readline(MAX_LINE + 1):
            if len(line) > MAX_LINE and not line.endswith(b"\n"):
                while (rest := file.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                    pass
                yield b"(too long)"
                continue
            yield line

    async def _samples(self) -> AsyncIterator[Sample]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        burst = 0
        # Where the replay is (seconds of the recording's time from its first arrival): the
        # arrival it counts from and the position there, moved at a break so that what
        # follows keeps its own gaps (the differences of arrivals, exact: no running sum).
        anchor: float | None = None
        at_anchor = elapsed = 0.0
        previous = math.nan
        for sample, arrival in self._records():
            if anchor is None:
                anchor = previous = arrival
            gap = arrival - previous
            if gap > MAX_GAP or gap < 0.0:
                self._counters.add("gaps")
                if gap > MAX_GAP:
                    self._warn.warning("gap", "a gap of %.6g s between two arrivals (more "
                                       "than %g s: a break, not a pause) is left out of the "
                                       "replay", gap, MAX_GAP)
                else:  # a clock set back, or a corrupt arrival before it
                    self._warn.warning("back", "an arrival %.6g s before the one before it "
                                       "(a clock set back, or a corrupt record): the replay "
                                       "goes on from there with no gap", -gap)
                anchor, at_anchor = arrival, elapsed
            previous = arrival
            elapsed = at_anchor + (arrival - anchor)
            delay = start + elapsed / self.speed - loop.time()
            if delay > 0:
                try:
                    await asyncio.sleep(delay)
                except (asyncio.CancelledError, GeneratorExit):
                    self._counters.add("unread")  # read, waiting for its moment: a stop
                    raise
                burst = 0
            else:
                burst += 1
                if burst >= YIELD_EVERY:  # a long burst: let signals and timers in
                    await asyncio.sleep(0)
                    burst = 0
            self._counters.add("samples")
            yield sample
        if anchor is None:
            raise InputDataError(f"{', '.join(self.paths)}: no recorded samples; is it a file "
                                 "written by 'streamsonic run --record'?")


# -- virtual time ------------------------------------------------------------------------

class _SkippingSelector:
    """The loop's selector, except that waiting for a timer takes no time: the virtual
    clock jumps to it. Real I/O (signals, other threads' wake-ups) is still seen first."""

    def __init__(self, selector: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        self._selector = selector
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._selector.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # nothing scheduled: only real I/O can wake us
            return self._selector.select(None)
        self._loop.advance_to_next_timer(timeout)
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._selector, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer instead of waiting for it.

    Everything scheduled on the loop happens in the same order and at the same loop times as
    on a real loop, as fast as it can be computed: ``replay --fast``. Outputs that play in
    real time (audio, MIDI ports) make no sense on it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._now = time.monotonic()
        real: selectors.BaseSelector = getattr(self, "_selector")  # noqa: B009 - private
        setattr(self, "_selector", _SkippingSelector(real, self))  # noqa: B010

    def time(self) -> float:
        return self._now

    def advance_to_next_timer(self, timeout: float) -> None:
        """Move the clock to the first scheduled timer (exactly its time: adding the
        timeout to the clock would leave it a rounding error short), or ``timeout`` ahead
        when that comes first (asyncio caps a wait at a day)."""
        scheduled = getattr(self, "_scheduled", None)  # asyncio's heap of TimerHandles
        when = scheduled[0].when() if scheduled else math.inf
        self._now = max(self._now, min(when, self._now + max(timeout, 0.0)))


def open_recording_source(config: Config, inner: Source, pattern: str) -> RecordingSource:
    """``inner`` wrapped to record into ``pattern`` (the ``[output]`` rotation settings)."""
    return RecordingSource(inner, Recorder(pattern, config.output))
