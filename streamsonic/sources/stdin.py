"""The stdin source: lines of text in, samples out, as the lines arrive.

A daemon reader thread reads stdin (pipe, regular file or terminal alike: asyncio's
``connect_read_pipe`` cannot read regular files) in chunks of what has arrived (at most
``READ_BYTES``), splits them into lines, parses each line with
``streamsonic.parse.LineParser`` and hands a chunk's samples to the event loop at once
through a bounded buffer (the lines of one read share their arrival time). The consumer
takes everything buffered at once, so a fast reader hands over big batches (few thread
switches) while a line that arrives alone (``tail -f``) is handed over alone, at once. A
full buffer makes the thread wait (stdin is never dropped: ``< big.csv`` plays every row);
the event loop is woken only when it is waiting. Lines over ``input.max_line_bytes`` are
discarded as they come, never held whole. Iteration ends at EOF; a non-blocking stdin
(``O_NONBLOCK``, set by some parent processes) that has no data yet is waited on, not
taken for the end (EAGAIN is not EOF).

However fast lines arrive, the consumer hands control back to the event loop at least every
``YIELD_SECONDS``, so signals (SIGTERM), timers and note-offs are served at any load.

``streamsonic run FILE`` reads FILE the same way (:meth:`StdinSource.open_file`); ``-`` is
stdin. A file that cannot be opened is a :class:`~streamsonic.errors.NoInputError` (exit 66).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import select
import sys
import threading
import time
import typing
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO

from streamsonic.config import Config, InputConfig
from streamsonic.errors import NoInputError, SourceError
from streamsonic.events import Sample
from streamsonic.parse import BENIGN_REASONS, REASONS, LineParser, ParsedLine
from streamsonic.stats import Counters, RateLimitedLog

if typing.TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger(__name__)

#: Lines the reader may run ahead of the consumer.
QUEUE_LINES = 1024

#: Chunk size for discarding the rest of an over-long line.
_DISCARD_CHUNK = 65536

#: The most bytes one read takes (whatever has arrived, up to this).
READ_BYTES = 65536

#: Longest time the consumer keeps the event loop busy taking samples in a row.
YIELD_SECONDS = 0.02

#: Seconds between checks for a stop request while the reader waits for input.
_POLL_SECONDS = 0.2

#: Stream names shown when a header line is logged.
_HEADER_NAMES_SHOWN = 20


class _End:
    """End of input (EOF)."""


_END = _End()


class StdinSource:
    """Samples from lines on stdin (or any binary stream); an async context manager."""

    def __init__(
        self,
        config: InputConfig,
        stream: BinaryIO | None = None,
        warn_interval: float = 10.0,
    ) -> None:
        self.config = config
        self._stream = stream
        self._parser = LineParser(config)
        self._counters = Counters()
        self._warn = RateLimitedLog(log, warn_interval)
        # Guarded by _cond: samples read but not yet taken, how many lines they came
        # from, how reading ended (None: not yet), and whether the consumer sleeps.
        self._cond = threading.Condition()
        self._pending: list[Sample] = []
        self._pending_lines = 0
        self._end: _End | OSError | None = None
        self._waiting = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._header_logged = False
        self._owned: BinaryIO | None = None  # a file opened for ``run FILE``
        #: What the log calls the input: "stdin", or the file of ``run FILE``.
        self.name = "stdin"
        # Samples of the batch being yielded that are still to come (the loop's thread).
        self._left = 0
        self._putting = False  # the reader waits in _put (guarded by _cond)
        self._busy = False  # the reader parses and counts what it read (guarded by _cond)

    @classmethod
    def from_config(cls, config: Config) -> StdinSource:
        """The stdin source for a full configuration."""
        return cls(config.input)

    @classmethod
    def open_file(cls, config: Config, path: str) -> StdinSource:
        """A source reading the file at ``path`` (``-``: stdin) instead of stdin, line by
        line as stdin is read: a FIFO or a growing file is read as it comes, up to its end.
        Raises NoInputError (exit 66) when it cannot be opened; ``-`` is stdin as without
        FILE, refused the same way under a service manager when it is /dev/null or closed
        (NoSourceError, exit 78)."""
        if path == "-":
            from streamsonic.sources import check_stdin  # noqa: PLC0415 - the package imports us

            check_stdin()
            return cls.from_config(config)
        try:
            if Path(path).is_dir():
                raise IsADirectoryError(21, "it is a folder")
            stream = Path(path).open("rb")  # noqa: SIM115 - the source owns and closes it
        except OSError as err:
            raise NoInputError(f"cannot read input file {path}: "
                               f"{err.strerror or err}; name an existing, readable file "
                               "(or - for stdin)") from None
        source = cls(config.input, stream=stream)
        source._owned = stream
        source.name = path
        return source

    @property
    def stats(self) -> dict[str, int]:
        """``lines``, ``samples``, ``skipped.<reason>`` (bad input) and ``ignored.<reason>``
        (header and comment lines) counters; after a stop, ``unread``: samples read and
        counted that the daemon never took (``samples`` = what the engine took + ``unread``)."""
        counts = {"lines": 0, "samples": 0}
        counts.update(self._counters.snapshot())
        return counts

    # -- context manager and iteration ------------------------------------------------
    async def __aenter__(self) -> StdinSource:
        self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading. A thread blocked in ``read`` is a daemon and ends with the process.
        Samples read but not taken are counted as ``unread``."""
        with self._cond:
            self._stop.set()
            self._cond.notify_all()
            # a reader waiting for room counts its samples as unread now, not after the
            # stop's last line (it wakes at once; the wait is bounded all the same)
            # (and one parsing what it had read counts it first: the counts logged below
            # and in the daemon's stopped: line are then the same, final ones)
            self._cond.wait_for(lambda: not (self._putting or self._busy), timeout=0.5)
            unread = len(self._pending) + self._left
            self._pending, self._pending_lines, self._left = [], 0, 0
        if unread:
            self._counters.add("unread", unread)
        if self._owned is not None:  # the reader thread reads a duplicate descriptor
            self._owned.close()
            self._owned = None
        skipped = {k: v for k, v in self.stats.items() if k.startswith("skipped.")}
        if skipped:
            log.info("%s: %d lines, %d samples; skipped %s", self.name, self.stats["lines"],
                     self.stats["samples"], ", ".join(f"{k[8:]}={v}" for k, v in
                                                      sorted(skipped.items())))

    def __aiter__(self) -> AsyncIterator[Sample]:
        return self._samples()

    async def _samples(self) -> AsyncIterator[Sample]:
        self._start()
        wakeup = self._wakeup
        assert wakeup is not None
        last_yield = time.monotonic()
        while True:
            with self._cond:
                batch, self._pending, self._pending_lines = self._pending, [], 0
                end = self._end
                if batch:
                    self._cond.notify()
                elif end is None:
                    wakeup.clear()
                    self._waiting = True
            if batch:
                for i, sample in enumerate(batch):
                    self._left = len(batch) - i - 1  # (if the daemon stops at this yield)
                    yield sample
                    if time.monotonic() - last_yield >= YIELD_SECONDS:
                        # The reader may always have more: without this, a firehose keeps
                        # the loop from ever running a signal handler or a timer.
                        await asyncio.sleep(0)
                        last_yield = time.monotonic()
            elif isinstance(end, OSError):
                raise SourceError(f"reading stdin failed: {end}; check what feeds stdin") \
                    from end
            elif end is not None:
                return
            else:
                await wakeup.wait()
                last_yield = time.monotonic()

    def _start(self) -> None:
        if self._thread is not None:
            return
        stream = self._stream
        if stream is None:
            if sys.stdin is None:
                raise SourceError("stdin is closed; pipe numbers in, or set mqtt.url to read "
                                  "from MQTT")
            # A private reader on a duplicate of fd 0 (_reader): the reader thread may be
            # blocked in read() when the process exits, and if it held sys.stdin.buffer's lock
            # then, interpreter shutdown would abort ("could not acquire lock ... daemon
            # threads").
            reader = self._reader(sys.stdin)
            stream = reader if reader is not None else sys.stdin.buffer
        else:
            stream = self._reader(stream) or stream
        try:
            if stream.isatty():
                log.info("reading numbers from the terminal: one line each, Ctrl-D ends")
        except (OSError, ValueError):
            pass
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._thread = threading.Thread(target=self._read_loop, args=(stream,),
                                        name="streamsonic-stdin", daemon=True)
        self._thread.start()

    def _reader(self, stream: typing.IO[Any]) -> BinaryIO | None:
        """A private buffered reader of a duplicate of ``stream``'s file descriptor, through
        :class:`_WaitingRaw`; None when ``stream`` has no descriptor (in-memory streams)."""
        try:
            raw = _WaitingRaw(os.dup(stream.fileno()), self._stop)
        except (OSError, ValueError, io.UnsupportedOperation, AttributeError):
            return None
        return io.BufferedReader(raw, buffer_size=_DISCARD_CHUNK)

    # -- reader thread ----------------------------------------------------------------
    def _read_loop(self, stream: BinaryIO) -> None:
        try:
            self._read_lines(stream)
        except Exception as err:  # a bug here must end the input, never hang the daemon
            log.error("stdin reader failed: %s: %s", type(err).__name__, err)
            self._finish(OSError(f"{type(err).__name__}: {err}"))
        finally:
            if isinstance(stream, io.BufferedReader) and isinstance(stream.raw, _WaitingRaw):
                stream.close()

    def _read_lines(self, stream: BinaryIO) -> None:
        read = getattr(stream, "read1", None)
        try:
            if read is None:
                if not self._read_line_by_line(stream):
                    return
            elif not self._read_chunks(read):
                return
        except (OSError, ValueError) as err:  # ValueError: the stream was closed under us
            self._finish(err if isinstance(err, OSError) else OSError(str(err)))
            return
        self._finish(_END)

    def _read_chunks(self, read: Callable[[int], bytes]) -> bool:
        """Read what has arrived (up to READ_BYTES at a time) until the end; each chunk's
        whole lines are parsed and handed over together. A line longer than
        ``input.max_line_bytes`` is counted once, as soon as it is known to be, and its
        bytes are dropped up to its newline. Lines end at LF, CRLF or a lone CR (universal
        newlines, as Python reads text files: a classic Mac CSV file, a progress bar's
        carriage returns). False: the source was closed meanwhile."""
        limit = self.config.max_line_bytes
        parse = self._parser.parse_line
        lineno = 0
        partial: list[bytes] = []  # the line read so far, without its newline
        held = 0  # its length
        discarding = False  # inside an over-long line: dropped up to its newline
        after_cr = False  # the last chunk ended with CR: an LF first in this one is its CRLF
        while not self._stop.is_set():
            data = read(READ_BYTES)
            if not data:
                break
            if not self._begin_chunk():
                return False
            try:
                now = time.time()
                if after_cr and data.startswith(b"\n"):
                    data = data[1:]
                after_cr = data.endswith(b"\r")
                if b"\r" in data:
                    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                pieces = data.split(b"\n")
                tail = pieces.pop()
                lines = pieces
                if pieces:  # the partial line ends here
                    if discarding:
                        discarding = False
                        lines = pieces[1:]
                    elif partial:
                        partial.append(pieces[0])
                        pieces[0] = b"".join(partial)
                    partial, held = [], 0
                samples: list[Sample] = []
                for line in lines:
                    lineno += 1
                    if len(line) > limit:
                        parsed = ParsedLine(skipped=["too_long"])
                    else:
                        parsed = parse(line, now)
                        if parsed.samples:
                            samples.extend(parsed.samples)
                            if not parsed.skipped:
                                continue
                    self._account(parsed, lineno, line)
                if not discarding and tail:
                    held += len(tail)
                    if held > limit:
                        lineno += 1
                        self._counters.add("lines")
                        head = b"".join(partial)[:60] + tail[:60]
                        self._account(ParsedLine(skipped=["too_long"]), lineno, head)
                        partial, held, discarding = [], 0, True
                    else:
                        partial.append(tail)
                self._counters.add("lines", len(lines))
                if samples and not self._put(samples, len(lines)):
                    return False
            finally:
                self._end_chunk()
        if partial and not discarding:  # the last line, without a newline
            if not self._begin_chunk():
                return False
            try:
                line = b"".join(partial)
                parsed = parse(line, time.time())
                self._counters.add("lines")
                self._account(parsed, lineno + 1, line)
                if parsed.samples and not self._put(parsed.samples):
                    return False
            finally:
                self._end_chunk()
        return True

    def _begin_chunk(self) -> bool:
        """The reader starts on what it has read (parsing, counting, handing over): marked,
        so that a stop waits for it and the counts it logs are final. False when the source
        was closed meanwhile: what was read is dropped, not parsed nor counted."""
        with self._cond:
            if self._stop.is_set():
                return False
            self._busy = True
            return True

    def _end_chunk(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()

    def _read_line_by_line(self, stream: BinaryIO) -> bool:
        """A stream without ``read1``: its bounded ``readline`` is the read (what has
        arrived, up to a newline), the lines then cut as any chunks are. False: the source
        was closed meanwhile."""
        return self._read_chunks(stream.readline)

    def _account(self, parsed: ParsedLine, lineno: int, line: bytes) -> None:
        """Count a line's skipped fields (and warn); lines and samples are counted by the
        caller. Header and comment lines are not bad input: they count as
        ``ignored.<reason>``, as in MQTT and NATS payloads (the metrics'
        ``streamsonic_input_ignored_total``, not ``..._rejected_total``)."""
        counters = self._counters
        for reason in parsed.skipped:
            if reason not in BENIGN_REASONS:
                counters.add(f"skipped.{reason}")
                self._warn.warning(reason, "%s line %d: skipped %s (%s): %.60r", self.name,
                                   lineno, reason, REASONS.get(reason, reason), line[:60])
                continue
            counters.add(f"ignored.{reason}")
            if reason == "header" and not self._header_logged and self._parser.header:
                self._header_logged = True
                names = self._parser.header
                more = len(names) - _HEADER_NAMES_SHOWN
                log.info("%s: header line names %d columns: %s%s", self.name, len(names),
                         ", ".join(names[:_HEADER_NAMES_SHOWN]),
                         f" and {more} more" if more > 0 else "")

    def _put(self, samples: list[Sample], lines: int = 1) -> bool:
        """Hand the samples of ``lines`` lines over, waiting while the buffer is full (it
        holds QUEUE_LINES lines, and one chunk's more at most).

        Returns False when the source was closed meanwhile.
        """
        with self._cond:
            # (counted here, under the lock aclose takes: samples = taken + unread)
            self._counters.add("samples", len(samples))
            self._putting = True
            try:
                while not self._stop.is_set() and self._pending_lines >= QUEUE_LINES:
                    self._cond.wait(0.1)
                if self._stop.is_set():  # read, never to be taken
                    self._counters.add("unread", len(samples))
                    return False
            finally:
                self._putting = False
                self._cond.notify_all()
            self._pending.extend(samples)
            self._pending_lines += lines
            wake, self._waiting = self._waiting, False
        return not wake or self._wake()

    def _finish(self, end: _End | OSError) -> None:
        """Record how reading ended and wake the consumer."""
        with self._cond:
            self._end = end
            self._waiting = False
        self._wake()

    def _wake(self) -> bool:
        """Wake the consumer; False when its event loop is gone."""
        if self._loop is None or self._wakeup is None:
            return False
        try:
            self._loop.call_soon_threadsafe(self._wakeup.set)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return False
        return True


class _WaitingRaw(io.RawIOBase):
    """A file descriptor read for the reader thread: it waits for data in ``poll``.

    On a descriptor in non-blocking mode ``read`` fails with EAGAIN while no data is there;
    a plain reader takes that for the end of input. Here that only means waiting. The wait
    wakes up now and then to notice ``stop`` (the source was closed), so the thread ends
    and closes its descriptor (a duplicate: closing it does not close the caller's).
    """

    def __init__(self, fd: int, stop: threading.Event) -> None:
        super().__init__()
        self._fd = fd
        self._stop = stop
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN | select.POLLPRI)

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def readinto(self, buffer: WriteableBuffer) -> int:
        while not self._stop.is_set():
            if not self._poll.poll(int(_POLL_SECONDS * 1000)):
                continue  # nothing yet (and no hang-up): check for a stop, wait again
            try:
                return os.readv(self._fd, [buffer])
            except BlockingIOError:
                continue  # EAGAIN: readiness without data (another reader took it)
        return 0  # closed meanwhile: end the reader thread as if at the end of input

    def close(self) -> None:
        if not self.closed:
            try:
                os.close(self._fd)
            finally:
                super().close()
