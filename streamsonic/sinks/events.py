"""The ``events`` output: one JSON object per note on stdout, written as the note starts.

Lines are held by the output and handed on together at the running loop's next turn
(the notes one batch step or one timer made go out in one write), so
``streamsonic ... | tail -f``-style readers see each note at once, well within
:data:`FLUSH_DELAY`, and a busy daemon writes its notes in a few large writes instead of one
system call per note, whether or not Python buffers stdout (``PYTHONUNBUFFERED``). At most
:data:`HOLD_CHARS` characters are held: more are handed on at once. Without a running loop
(``render``) lines go out when that many are held and at the end.

On a file descriptor (stdout as it is, not a Python stream put in its place) a writer thread
does the writing, so the event loop never waits on stdout: a reader that stops reading does
not stop the music, the other outputs or the signals. The lines go out in order with
``os.write`` in pieces of whole lines of at most :data:`WHOLE_WRITE` bytes (PIPE_BUF): the
kernel writes each such piece to a pipe in one go, so several writers on one pipe (the
worker processes of ``daemon.workers``, or ``a | ... & b | ...`` into one reader) never cut
into each other's lines, and a reader never sees half a line. (stdout is never made
non-blocking: that flag belongs to the open file, which other processes share.)

What waits for the writer is bounded: :data:`QUEUE_BYTES` (about 16,000 notes). While a
daemon's reader takes nothing and that much waits, newer lines are dropped, counted
(``dropped`` in the output's counters and metrics) and named in a rate-limited warning. At
the end of the input the daemon waits until the reader has taken every line, however long
that takes (:meth:`EventsSink.settle`); after a stop the lines still waiting are written as
long as the reader takes them; once it has taken nothing for :data:`CLOSE_STALL` seconds
they are given up, so SIGTERM and SIGINT stop
the daemon at once even when the reader never reads again, and the log says how many lines
were not written. ``render`` (no running loop) waits for a slow reader instead: nothing is
dropped.

What the lines of a note owed (a QoS 1 message's acknowledgement) is settled once they
are written (:meth:`EventsSink.when_written`), not when they are handed to the writer: a
daemon killed while lines wait leaves their messages to be delivered again, and a stop
(:meth:`EventsSink.settle_stopping`, while the source is still open) writes what the
reader takes within :data:`CLOSE_STALL` seconds, acknowledged, and gives up the rest,
still owed: nothing lost, nothing played twice. Notes that start later (a phrase's data
note, audio latency) are waited for too (:meth:`Scheduler.when_written`). Lines dropped
beyond :data:`QUEUE_BYTES` are settled with the lines after them (counted as dropped, not
kept owed: with QoS 1 the broker's window of unacknowledged messages keeps the queue far
below that bound), and so are the lines an output closed while the daemon runs on gives
up (a reload that removed it).

When stdout's reader goes away (``streamsonic --output events | head -1``), the output
behaves like ``head`` and ``yes`` do: no error. The rest of what would have gone to stdout is
thrown away, and a running daemon is asked to stop the way SIGTERM asks (every note
released, files written, exit 0). ``render`` (:attr:`EventsSink.when_gone`) is not stopped
by a signal: its other outputs (files, a plot) go on to the end and are written, exit 0; a
render that has no other output ends at the next note (:class:`ReaderGone`), exit 0.

Any other failed write (a full disk, an I/O error, stdout closed: ``>&-``) is an output write
error, as for the file outputs: one error line naming the output and the cause, nothing more
is written (a piece cut short in a regular file is cut back to its last whole line where no
one wrote after it), the other outputs play on, and the run exits 74.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import math
import os
import select
import signal
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TextIO

import mido

from streamsonic.config import Config
from streamsonic.errors import OutputWriteError
from streamsonic.events import NoteEvent
from streamsonic.sinks.base import Sink
from streamsonic.stats import Counters, RateLimitedLog

log = logging.getLogger(__name__)

#: Longest a written note waits in the buffer before it is flushed (seconds): a bound; the
#: lines go out at the loop's next turn.
FLUSH_DELAY = 0.05
#: Characters of lines held before they are handed to the writer regardless (about 250 notes).
HOLD_CHARS = 65536

#: The most bytes one write holds (POSIX PIPE_BUF on Linux: a pipe takes it whole, without
#: interleaving another writer's bytes); a single longer line is written alone.
WHOLE_WRITE = select.PIPE_BUF if hasattr(select, "PIPE_BUF") else 4096
#: The most bytes of lines waiting for the writer thread (about 16,000 notes); past that, a
#: daemon drops (and counts) newer lines until the reader takes some.
QUEUE_BYTES = 4 << 20
#: After a stop, seconds the reader may take nothing before the lines still waiting are
#: given up.
CLOSE_STALL = 0.5
#: The longest a stop waits for a reader that keeps reading (s): what is left then is given
#: up (a stop is answered at once, whatever the load).
STOP_MAX = 2.0
#: How often the end of the input looks whether the writer has written everything (s).
SETTLE_POLL = 0.02
#: How long the writer waits for room in the pipe before it looks whether to go on (s).
WRITABLE_POLL = 0.05

#: Stream names kept JSON-encoded (:func:`note_line`); the cache starts afresh when full.
NAME_CACHE = 65536

_encode = json.JSONEncoder(separators=(",", ":")).encode
_string = json.encoder.encode_basestring_ascii
_float = float.__repr__  # what the json module writes for a finite float (or subclass)
_names: dict[str, str] = {}


def note_line(event: NoteEvent) -> str:
    """The note as one JSON object (no newline): exactly ``json.dumps(event.to_dict(),
    separators=(",", ":"))``, written out field by field where the fields have their
    usual types (ints, a bool, finite floats), which costs half as much per note."""
    e = event
    if (type(e.pitch) is type(e.velocity) is type(e.channel) is type(e.program)
            is type(e.direction) is type(e.pan) is int and type(e.accent) is bool):
        try:
            floats: tuple[str, ...] = (_float(e.time), _float(e.value), _float(e.normalized),
                                       _float(e.duration), _float(e.start), _float(e.anomaly))
        except TypeError:  # a field that is not a float (an int time, say)
            floats = ("n",)
        if "n" not in "".join(floats):  # not nan or inf (json writes NaN, Infinity)
            name = _names.get(e.stream)
            if name is None:
                if len(_names) >= NAME_CACHE:
                    _names.clear()
                name = _names[e.stream] = _string(e.stream)
            t, v, n, d, s, a = floats
            return (f'{{"stream":{name},"time":{t},"value":{v},"normalized":{n},'
                    f'"pitch":{e.pitch},"velocity":{e.velocity},"duration":{d},'
                    f'"channel":{e.channel},"program":{e.program},"start":{s},'
                    f'"anomaly":{a},"accent":{"true" if e.accent else "false"},'
                    f'"direction":{e.direction},"pan":{e.pan},"source":{_string(e.source)}}}')
    return _encode(e.to_dict())


class ReaderGone(BaseException):
    """Raised by :meth:`EventsSink.note` after stdout's reader went away, where the sink's
    ``when_gone`` is ``"halt"`` (a render whose only output it is): the render ends there,
    exit 0 (not an Exception: the scheduler's ``except Exception`` for a failing output
    does not keep it)."""


class EventsSink(Sink):
    """JSON lines: stream, time, value, normalized, pitch, velocity, duration, channel,
    program, start, ... Written out at the loop's next turn (see the module), so
    ``tail -f | streamsonic --output events`` streams; ``flush_delay <= 0``: each note at
    once.

    ``stream``: a Python text stream to write to instead of stdout (tests), written in the
    caller's thread; ``fd``: a file descriptor instead of stdout's (tests), written by the
    writer thread like stdout's."""

    channel_messages = False  # only notes are printed

    def __init__(self, stream: TextIO | None = None, flush_delay: float = FLUSH_DELAY, *,
                 fd: int | None = None, queue_bytes: int = QUEUE_BYTES,
                 warn_interval: float = 10.0) -> None:
        super().__init__("events")
        #: What the output writes to, for messages: stdout, or the file stdout was pointed
        #: at (``contextlib.redirect_stdout`` to a file whose name is a path: the demo's log).
        self.target = "stdout"
        self.flush_delay = flush_delay
        self.counters = Counters()
        self._warn = RateLimitedLog(log, warn_interval)
        if fd is None and stream is None:
            stdout = sys.stdout  # None when stdout was closed (``>&-``): a write error
            name = getattr(stdout, "name", None)
            if stdout is not sys.__stdout__ and isinstance(name, str) \
                    and not name.startswith("<"):
                self.target = name
            fd = _fileno(stdout) if stdout is not None else None
            if fd is None:
                stream = stdout  # a Python stream without a descriptor in its place (tests)
            else:
                _flush_quietly(stdout)  # anything written to it some other way goes first
        self._stream = stream
        self._writer = _Writer(fd, queue_bytes, self._gone, self.counters) \
            if fd is not None else None
        self._flush_due: asyncio.Handle | None = None
        self._lines: list[str] = []  # held, not yet handed on
        self._held = 0  # their characters
        #: The reader of the output went away (EPIPE); nothing more is written.
        self.reader_gone = False
        #: What else the reader going away does: ``"stop"`` asks a running daemon to stop
        #: as SIGTERM does; ``"go_on"`` nothing (a render: its other outputs go on);
        #: ``"halt"`` the next note raises :class:`ReaderGone` (a render with no other
        #: output: nothing more to do).
        self.when_gone = "stop"
        #: Why writing failed (it is raised once, by ``note``, ``tick`` or ``close``), or None.
        self.failure: OutputWriteError | None = None
        self._raised = False
        self._given_up = 0  # lines given up at a stop (settle_stopping)

    @property
    def stats(self) -> dict[str, int]:
        """``written`` (lines), ``dropped`` (lines a stalled reader did not take)."""
        return self.counters.snapshot()

    def note(self, event: NoteEvent) -> None:
        """Write the note as one JSON line (out at the loop's next turn, see the module).
        Raises OutputWriteError once after a write failed."""
        if self.reader_gone:
            if self.when_gone == "halt":
                raise ReaderGone
            return
        if self.failure is not None:
            self._raise_failure()
            return
        line = note_line(event) + "\n"
        self._lines.append(line)
        self._held += len(line)
        if self._held >= HOLD_CHARS or self.flush_delay <= 0:
            self.flush()
            self._raise_failure()
        elif self._flush_due is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # offline (render): written as they fill, and at the end
                return
            self._flush_due = loop.call_soon(self.flush)

    def tick(self, now: float) -> None:
        """Raise OutputWriteError (once) when the writer has failed since the last call."""
        self._check_writer()
        self._raise_failure()

    def flush(self) -> None:
        """Hand what is held to the writer thread (or write it to the stream, and flush it).
        Never raises: a failure is kept in ``failure``."""
        if self._flush_due is not None:
            self._flush_due.cancel()
            self._flush_due = None
        lines, self._lines, self._held = self._lines, [], 0
        if self.reader_gone or self.failure is not None:
            return
        if self._writer is not None:
            if lines:
                self._hand_on(self._writer, lines)
            self._check_writer()
        elif self._stream is not None:
            try:
                if lines:
                    self._stream.write("".join(lines))
                self._stream.flush()
            except BrokenPipeError:
                self._gone()
            except (OSError, ValueError) as err:  # ValueError: a closed stream
                self._fail(err if isinstance(err, OSError) else OSError(errno.EBADF, str(err)))
            else:
                self.counters.add("written", len(lines))
        elif lines:  # stdout was closed before we started
            self._fail(OSError(errno.EBADF, "it is closed"))

    def _hand_on(self, writer: _Writer, lines: list[str]) -> None:
        running = _loop_running()
        if writer.put("".join(lines).encode("utf-8"), len(lines), block=not running):
            return
        self.counters.add("dropped", len(lines))
        self._warn.warning("dropped", "output events: stdout's reader is not taking the lines "
                           "(%d bytes wait); dropped %d lines, %d so far", writer.waiting,
                           len(lines), self.counters.get("dropped"))

    def _check_writer(self) -> None:
        writer = self._writer
        if writer is not None and writer.error is not None and self.failure is None:
            self._fail(writer.error)

    def _fail(self, err: OSError) -> None:
        self.failure = OutputWriteError(
            f"cannot write the events output to {self.target}: {err.strerror or err}")

    def _raise_failure(self) -> None:
        if self.failure is not None and not self._raised:
            self._raised = True
            raise self.failure

    def when_written(self, callback: Callable[[], None]) -> bool:
        """Run ``callback`` on the running loop once every line of the notes taken so far
        has been written to stdout (a QoS 1 message is acknowledged then, not while its
        line waits for a slow reader: a daemon killed meanwhile leaves it to be delivered
        again). False: nothing to wait for (written, no writer thread, or failed)."""
        writer = self._writer
        if writer is None or self.reader_gone or self.failure is not None:
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # offline: nothing is owed
            return False
        return writer.when_done(writer.handed + len(self._lines), loop, callback)

    async def settle_stopping(self, stall: float = CLOSE_STALL) -> None:
        """A stop: write what waits while the reader takes it; once it has taken nothing
        for ``stall`` seconds (or after STOP_MAX), give the rest up (counted, and what
        those lines owed stays owed: the source is still open, so what was written is
        acknowledged, and nothing is written that could not be)."""
        writer = await self._written(stall, STOP_MAX)
        if writer is not None and writer.waiting:
            self._given_up += writer.give_up()

    async def settle(self) -> None:
        """Wait until the writer has written every line (or failed, or the reader went
        away): at the end of the input the reader gets every line however long it takes to
        read them; only a stop signal, or a daemon without a running end (``close`` with
        its CLOSE_STALL), gives lines up."""
        await self._written(math.inf, math.inf)

    async def _written(self, stall: float, most: float) -> _Writer | None:
        """Hand on what is held and wait until the writer has written it, failed, or the
        reader went away or has taken nothing for ``stall`` seconds, at most ``most``
        seconds in all. The writer, where one is still writing."""
        self.flush()
        writer = self._writer
        start = time.monotonic()
        while (writer is not None and writer.waiting and self.failure is None
               and not self.reader_gone and writer.error is None):
            now = time.monotonic()
            if now - max(writer.progress, start) >= stall or now - start >= most:
                return writer
            await asyncio.sleep(SETTLE_POLL)
            self._check_writer()
        return None

    def _close(self) -> None:
        self.flush()
        writer = self._writer
        left = 0
        if writer is not None and self.failure is None:
            left = writer.finish(CLOSE_STALL if _loop_running() else None)
        dropped = self.counters.get("dropped")
        left += self._given_up
        self._given_up = 0
        if left:
            self.counters.add("dropped", left)
        if (left or dropped) and not self.reader_gone:
            why = ([f"{dropped} dropped while it was not reading"] if dropped else []) + (
                [f"{left} given up at the end, when it had taken nothing for "
                 f"{CLOSE_STALL:g} s"] if left else [])
            log.warning("output events: %d lines were not written, stdout's reader did not "
                        "take them (%s)", dropped + left, "; ".join(why))
        self._check_writer()
        self._raise_failure()

    def _gone(self) -> None:
        """EPIPE: stop writing, silence the stream's last flush, ask the daemon to stop.
        (Called in the writer thread, for stdout.)"""
        if self.reader_gone:
            return
        self.reader_gone = True
        log.info("events output: the reader of stdout went away; %s",
                 "the other outputs go on" if self.when_gone == "go_on" else "stopping")
        fd = self._writer.fd if self._writer is not None else _fileno(self._stream)
        if fd is not None:  # what is still buffered for the closed pipe goes nowhere, quietly
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fd)
                os.close(devnull)
            except OSError:
                pass
        if self.when_gone == "stop" and callable(signal.getsignal(signal.SIGTERM)):
            # a daemon is listening for SIGTERM
            signal.raise_signal(signal.SIGTERM)

    def _send(self, msg: mido.Message, time: float) -> None:
        """Channel messages are not printed; only notes are."""


class _Writer:
    """The thread that writes the lines to ``fd``, in order, and the bounded queue of what
    waits for it (see the module)."""

    def __init__(self, fd: int, limit: int, on_gone: Callable[[], None],
                 counters: Counters) -> None:
        self.fd = fd
        self.limit = limit
        self._on_gone = on_gone
        self._counters = counters
        self._cond = threading.Condition()
        self._queue: deque[tuple[bytes, int]] = deque()  # (lines, how many); the first is
        # being written
        #: Bytes waiting (the batch being written included).
        self.waiting = 0
        self._head_done = 0  # bytes of the first batch written so far
        #: Why a write failed (not EPIPE); nothing more is written.
        self.error: OSError | None = None
        self._stopped = False  # failed, the reader went away, or given up
        self._closing = False
        self.progress = time.monotonic()  # when a piece was last written
        self._thread: threading.Thread | None = None
        #: Lines queued so far, and of them those written (or failed: see ``when_done``).
        self.handed = 0
        self.done = 0
        # (lines handed when asked, the loop, the callback): run on the loop once written
        self._waiters: deque[tuple[int, asyncio.AbstractEventLoop, Callable[[], None]]] = (
            deque())
        # Callbacks due, per loop, that one pending call_soon_threadsafe runs (_run_ready).
        self._ready: dict[asyncio.AbstractEventLoop, list[Callable[[], None]]] = {}

    def when_done(self, lines: int, loop: asyncio.AbstractEventLoop,
                  callback: Callable[[], None]) -> bool:
        """Run ``callback`` on ``loop`` once the first ``lines`` lines queued are written
        (or the writer failed: an output that failed for good holds nothing back). False:
        they are already (nothing to wait for). Lines given up at a stop, or left when the
        reader went away, never call back: what they owed stays owed."""
        with self._cond:
            if self.done >= lines or self.error is not None:
                return False
            self._waiters.append((lines, loop, callback))
            return True

    def _call_back(self, everything: bool = False) -> None:
        """(Holding the lock.) Call back the waiters whose lines are written: on their
        loop, all that are due at once in one call (:meth:`_run_ready`), at most one
        waiting per loop. Each ``call_soon_threadsafe`` writes a byte to the loop's
        self-pipe, which is also where signals wake it: one byte per acknowledgement filled
        it while the loop was busy (a few hundred bytes fill a socket pair), and a SIGTERM
        that found it full was lost ("Exception ignored when trying to write to the signal
        wakeup fd"), the daemon running on."""
        waiters = self._waiters
        while waiters and (everything or waiters[0][0] <= self.done):
            _, loop, callback = waiters.popleft()
            ready = self._ready.get(loop)
            if ready is None:
                try:
                    loop.call_soon_threadsafe(self._run_ready, loop)
                except RuntimeError:  # its loop closed: nobody waits
                    continue
                ready = self._ready[loop] = []
            ready.append(callback)

    def _run_ready(self, loop: asyncio.AbstractEventLoop) -> None:
        """(On ``loop``.) Run the callbacks due on it, in the order their lines were
        written."""
        with self._cond:
            callbacks = self._ready.pop(loop, [])
        for callback in callbacks:
            try:
                callback()
            except Exception:  # (as the loop does with a handle's: the others still run)
                log.exception("output events: a callback after a write failed")

    def put(self, data: bytes, lines: int, block: bool) -> bool:
        """Queue ``data`` (``lines`` whole lines). False: it does not fit and ``block`` is
        False (the reader is not taking the lines); with ``block`` wait for room. Once the
        writer has stopped, it is thrown away (True: the failure is reported on its own)."""
        with self._cond:
            while self.waiting and self.waiting + len(data) > self.limit and not self._stopped:
                if not block:
                    return False
                self._cond.wait()
            if self._stopped:
                return True
            self._queue.append((data, lines))
            self.handed += lines
            self.waiting += len(data)
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="streamsonic-events",
                                                daemon=True)
                self._thread.start()
        return True

    def give_up(self, call_back: bool = False) -> int:
        """Stop writing: the lines still waiting are given up. Their waiters are called
        back with ``call_back`` (an output closed while the daemon runs on, a reload that
        removed it: what they owed must not wait for good), else not (a stop: it stays owed,
        to be delivered again). Returns how many lines."""
        with self._cond:
            if self._stopped or not self._queue:
                return 0
            self._stopped = True
            done = self._queue[0][0].count(b"\n", 0, self._head_done)
            self._counters.add("written", done)
            lines = sum(n for _, n in self._queue) - done
            self._queue.clear()
            if call_back:
                self._call_back(everything=True)
            self._waiters.clear()
            self.waiting = 0
            self._cond.notify_all()
            return lines

    def finish(self, stall: float | None) -> int:
        """Wait until what waits is written, then end the thread; with ``stall``, give up
        when the reader has taken nothing for that long. Returns the lines given up."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            start = time.monotonic()
            while self._queue and not self._stopped:
                if stall is None:
                    self._cond.wait()
                    continue
                left = max(self.progress, start) + stall - time.monotonic()
                if left <= 0:  # the reader took nothing for ``stall`` s: give the rest up
                    return self.give_up(call_back=True)  # (the lock is re-entrant)
                self._cond.wait(left)
            thread = self._thread if not self._stopped else None  # (it ends on its own)
        if thread is not None:
            thread.join(1.0)
        return 0

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._queue and not self._closing and not self._stopped:
                    cond.wait()
                if not self._queue or self._stopped:
                    return
                data, lines = self._queue[0]
                self._head_done = 0
            try:
                self._write(data)
            except BrokenPipeError:
                self._stop()
                self._on_gone()
                return
            except OSError as err:
                self._counters.add("written", data.count(b"\n", 0, self._head_done))
                with cond:
                    self.error = err
                    self._call_back(everything=True)  # failed for good: nothing waits on it
                self._stop()
                return
            with cond:
                if self._stopped:  # given up meanwhile
                    return
                self._queue.popleft()
                self.waiting -= len(data)
                self._head_done = 0
                self.done += lines
                self._call_back()
                cond.notify_all()
            self._counters.add("written", lines)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        for at, cut in whole_pieces(data):
            # Each piece waits until the pipe has room (a piece of at most PIPE_BUF then
            # goes in whole, without blocking), looking every WRITABLE_POLL s whether the
            # lines were given up meanwhile: a piece is never written after that (its
            # notes' messages, still owed, would play twice).
            while not _writable(self.fd):
                if self._stopped:
                    return
            if self._stopped:
                return
            write_piece(self.fd, view[at:cut])
            self._head_done = cut
            self.progress = time.monotonic()

    def _stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._queue.clear()
            self.waiting = 0
            self._cond.notify_all()


def _writable(fd: int) -> bool:
    """Whether ``fd`` takes a write now, waiting at most WRITABLE_POLL seconds (a
    descriptor select cannot watch counts as writable: its write says what is wrong)."""
    try:
        return bool(select.select([], [fd], [], WRITABLE_POLL)[1])
    except (OSError, ValueError):
        return True


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _fileno(stream: TextIO | None) -> int | None:
    try:
        return stream.fileno()  # type: ignore[union-attr]
    except (OSError, ValueError, AttributeError):  # a stream without a descriptor (tests)
        return None


def _flush_quietly(stream: TextIO) -> None:
    with contextlib.suppress(OSError, ValueError):  # reported when the events are written
        stream.flush()


def whole_pieces(data: bytes) -> Iterator[tuple[int, int]]:
    """The pieces (start, end) of ``data`` (lines, each ending in a newline) to write: whole
    lines, at most :data:`WHOLE_WRITE` bytes each (a single longer line alone)."""
    at, end = 0, len(data)
    while at < end:
        cut = end
        if end - at > WHOLE_WRITE:
            last = data.rfind(b"\n", at, at + WHOLE_WRITE)
            if last < 0:  # one line longer than a whole write: that line alone
                last = data.find(b"\n", at)
            cut = end if last < 0 else last + 1
        yield at, cut
        at = cut


def write_piece(fd: int, piece: memoryview) -> None:
    """Write all of ``piece`` to ``fd`` (one ``write`` unless the kernel takes less: a full
    file system, a signal); a descriptor in non-blocking mode is waited on. Raises OSError;
    a piece cut short by the error in a regular file is cut back off it where the file ends
    with it (no one wrote after it), so the file ends in a whole line."""
    at, end = 0, len(piece)
    while at < end:
        try:
            at += os.write(fd, piece[at:])
        except BlockingIOError:  # O_NONBLOCK set by whoever gave us stdout
            select.select([], [fd], [])
        except OSError:
            if at:
                _cut_back(fd, at)
            raise


def _cut_back(fd: int, partial: int) -> None:
    """Take the last ``partial`` bytes written back off the regular file ``fd``, if it ends
    where they were written."""
    try:
        info = os.fstat(fd)
        here = os.lseek(fd, 0, os.SEEK_CUR)
        if stat.S_ISREG(info.st_mode) and here == info.st_size and here >= partial:
            os.ftruncate(fd, here - partial)
            os.lseek(fd, here - partial, os.SEEK_SET)
    except OSError:  # not a file that can be cut: the line stays cut
        pass


def write_lines(fd: int, data: bytes) -> None:
    """Write ``data`` (lines, each ending in a newline) to ``fd`` in pieces of whole lines
    of at most :data:`WHOLE_WRITE` bytes (:func:`whole_pieces`, :func:`write_piece`), in the
    caller's thread."""
    view = memoryview(data)
    for at, cut in whole_pieces(data):
        write_piece(fd, view[at:cut])


def open_sink(arg: str, config: Config) -> EventsSink:
    """``--output events``."""
    return EventsSink(warn_interval=config.daemon.warn_interval)
