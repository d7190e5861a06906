"""StdinSource on real OS pipes, regular files and a pseudo-terminal."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import os
import pty
import subprocess
import sys
import termios
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamsonic.config import MAX_LINE_BYTES, Config, InputConfig
from streamsonic.errors import SourceError
from streamsonic.events import Sample, Source
from streamsonic.parse import BENIGN_REASONS, LineParser, ParsedLine
from streamsonic.sources import open_source
from streamsonic.sources.stdin import QUEUE_LINES, StdinSource

#: Guard against hangs only; nothing here asserts on speed.
HANG = 20.0


@pytest.fixture
def pipe() -> Iterator[tuple[BinaryIO, WriteEnd]]:
    """A real OS pipe: (read end as a binary stream, write end)."""
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "rb")
    writer = WriteEnd(write_fd)
    yield reader, writer
    writer.close()
    with contextlib.suppress(OSError):
        reader.close()


class WriteEnd:
    """The write end of a test pipe; ``close`` is idempotent, so the fixture never closes
    an fd number twice (a second close could hit a descriptor reused meanwhile, such as an
    event loop's self-pipe)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closed = False

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)


async def _next(it: AsyncIterator[Sample]) -> Sample:
    return await asyncio.wait_for(anext(it), HANG)


async def _all(source: StdinSource) -> list[Sample]:
    async def collect() -> list[Sample]:
        async with source:
            return [s async for s in source]

    return await asyncio.wait_for(collect(), HANG)


async def test_pipe_yields_each_line_before_eof(pipe: tuple[BinaryIO, WriteEnd]) -> None:
    reader, writer = pipe
    source = StdinSource(InputConfig(), stream=reader)
    async with source:
        it = aiter(source)
        for i in range(5):
            # The writer keeps the pipe open: a sample can only arrive if lines are
            # delivered as they come, not at EOF.
            writer.write(f"{i}.5\n".encode())
            sample = await _next(it)
            assert (sample.stream, sample.value) == ("value", i + 0.5)
        writer.write(b"a=1 b=2\n")
        assert [(s.stream, s.value) for s in (await _next(it), await _next(it))] == [
            ("a", 1.0), ("b", 2.0)]
        writer.write(b"7")  # a last line without a newline
        writer.close()
        assert (await _next(it)).value == 7.0
        with pytest.raises(StopAsyncIteration):
            await _next(it)
    assert source.stats == {"lines": 7, "samples": 8}


async def test_lines_end_at_lf_crlf_or_a_lone_cr(pipe: tuple[BinaryIO, WriteEnd]) -> None:
    """Universal newlines (as Python reads text files): a classic Mac file's lone CRs end
    lines (``7\\r8`` was one line of two columns, two streams), and a CRLF split between
    two reads is one line end, not an empty line. (A QA pass at 36e50ff.)"""
    reader, writer = pipe
    source = StdinSource(InputConfig(), stream=reader)
    async with source:
        it = aiter(source)
        writer.write(b"7\r8\n")
        assert [(s.stream, s.value) for s in (await _next(it), await _next(it))] == [
            ("value", 7.0), ("value", 8.0)]
        writer.write(b"1\r")  # the CR of a CRLF, its LF in the next read
        assert (await _next(it)).value == 1.0
        await asyncio.sleep(0.05)
        writer.write(b"\n2\r\n3\r")
        writer.close()
        assert [s.value async for s in it] == [2.0, 3.0]
    assert source.stats == {"lines": 5, "samples": 5}


async def test_pipe_partial_line_waits_for_its_newline(pipe: tuple[BinaryIO, WriteEnd]) -> None:
    reader, writer = pipe
    source = StdinSource(InputConfig(), stream=reader)
    async with source:
        it = aiter(source)
        writer.write(b"12")
        pending = asyncio.ensure_future(anext(it))
        await asyncio.sleep(0.05)
        assert not pending.done()  # "12" might still become "123"
        writer.write(b"3\n")
        assert (await asyncio.wait_for(pending, HANG)).value == 123.0
        writer.close()


async def test_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "series.csv"
    path.write_text("time,temp,hum\n"
                    "2024-01-02T03:04:05Z,21.5,40\n"
                    "2024-01-02T03:04:06Z,22,41\n")
    with path.open("rb") as stream:
        samples = await _all(source := StdinSource(InputConfig(), stream=stream))
    assert [(s.stream, s.value) for s in samples] == [
        ("temp", 21.5), ("hum", 40.0), ("temp", 22.0), ("hum", 41.0)]
    assert samples[2].time - samples[0].time == 1.0
    # a header is not bad input: ignored (as in MQTT payloads), not skipped (the metrics'
    # streamsonic_input_rejected_total, which an operator alerts on)
    assert source.stats == {"lines": 3, "samples": 4, "ignored.header": 1}


async def test_file_with_bad_lines_counts_reasons_and_warns_once_per_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "bad.txt"
    long_line = b"9" * 200_000  # over 64 KiB: dropped without holding it whole
    path.write_bytes(b"1\n\nnan\nNaN\ninf\n\xff\xfe\n" + long_line + b"\n2,x,3\n"
                     b'{"a": 4, "b": "x"}\n{broken\n# comment\n5\n' + long_line)
    caplog.set_level(logging.INFO, logger="streamsonic.sources.stdin")
    with path.open("rb") as stream:
        source = StdinSource(InputConfig(), stream=stream, warn_interval=3600)
        samples = await _all(source)
    assert [s.value for s in samples] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert source.stats == {
        "lines": 13, "samples": 5,
        "skipped.empty": 1, "skipped.nan": 2, "skipped.inf": 1, "skipped.invalid_utf8": 1,
        "skipped.too_long": 2, "skipped.not_numeric": 2, "skipped.bad_json": 1,
        "ignored.comment": 1,
    }
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 7  # one per bad reason (rate-limited), none for the comment
    assert any("line 3: skipped nan" in w for w in warnings)
    assert not any("line 4" in w for w in warnings)  # the second NaN was suppressed
    summary = [r.getMessage() for r in caplog.records if "skipped bad_json=1" in r.getMessage()]
    assert summary  # the closing summary names every reason


async def test_line_of_exactly_max_bytes_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "edge.txt"
    path.write_bytes(b"1" + b" " * 14 + b"2\n" + b"3" + b" " * 15 + b"4\n5\n")
    with path.open("rb") as stream:
        source = StdinSource(InputConfig(max_line_bytes=16), stream=stream)
        samples = await _all(source)
    assert [s.value for s in samples] == [1.0, 2.0, 5.0]
    assert source.stats["skipped.too_long"] == 1


async def test_more_lines_than_the_queue_holds_arrive_in_order(tmp_path: Path) -> None:
    n = QUEUE_LINES * 3
    path = tmp_path / "many.txt"
    path.write_text("".join(f"{i}\n" for i in range(n)))
    with path.open("rb") as stream:
        source = StdinSource(InputConfig(), stream=stream)
        async with source:
            values = []
            async for sample in source:
                values.append(sample.value)
                if len(values) % 500 == 0:
                    await asyncio.sleep(0.01)  # a slow consumer: the reader must wait
    assert values == [float(i) for i in range(n)]


async def test_pseudo_terminal(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    tty = os.fdopen(slave, "rb", buffering=0)
    try:
        source = StdinSource(InputConfig(), stream=tty)
        async with source:
            it = aiter(source)
            os.write(master, b"3\n")
            assert (await _next(it)).value == 3.0
            os.write(master, b"x=4\n")
            assert (await _next(it)).stream == "x"
            os.write(master, b"\x04")  # Ctrl-D at the start of a line: EOF
            with pytest.raises(StopAsyncIteration):
                await _next(it)
    finally:
        tty.close()
        os.close(master)


async def test_closing_early_does_not_wait_for_eof(pipe: tuple[BinaryIO, WriteEnd]) -> None:
    reader, writer = pipe
    source = StdinSource(InputConfig(), stream=reader)
    async with source:
        writer.write(b"1\n")
        assert (await _next(aiter(source))).value == 1.0
    # Left the context with the writer still open; the reader thread is a daemon.
    writer.close()


async def test_a_stop_logs_the_counts_of_the_lines_being_parsed(
        pipe: tuple[BinaryIO, WriteEnd], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Stopped while the reader parses a chunk: the source's line waits for that chunk's
    counts, so it says what the daemon's stopped: line says (the stats); it used to be
    logged before them (1198 lines against 1200 after a SIGTERM)."""
    reader, writer = pipe
    source = StdinSource(InputConfig(), stream=reader)
    parse, parsing = source._parser.parse_line, threading.Event()

    def slow(line: bytes, now: float) -> ParsedLine:
        if line == b"abc":
            parsing.set()
            time.sleep(0.2)  # (within the 0.5 s a stop waits for the reader)
        return parse(line, now)

    monkeypatch.setattr(source._parser, "parse_line", slow)
    with caplog.at_level(logging.INFO, logger="streamsonic.sources.stdin"):
        async with source:
            writer.write(b"1\n")
            assert (await _next(aiter(source))).value == 1.0
            writer.write(b"2\nabc\n")
            assert await asyncio.to_thread(parsing.wait, HANG)
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stdin:")]
    assert source._thread is not None
    await asyncio.to_thread(source._thread.join, HANG)
    assert source.stats == {"lines": 3, "samples": 2, "skipped.not_numeric": 1, "unread": 1}
    assert lines == ["stdin: 3 lines, 2 samples; skipped not_numeric=1"]
    writer.close()


async def test_read_error_is_a_source_error() -> None:
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: object) -> int:
            raise OSError(5, "Input/output error")

    stream = io.BufferedReader(Broken())
    with pytest.raises(SourceError, match="reading stdin failed"):
        await _all(StdinSource(InputConfig(), stream=stream))


async def test_from_config_reads_sys_stdin(monkeypatch: pytest.MonkeyPatch,
                                           pipe: tuple[BinaryIO, WriteEnd]) -> None:
    reader, writer = pipe
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(reader))
    config = Config()
    source = open_source(config)
    assert isinstance(source, StdinSource) and isinstance(source, Source)
    writer.write(b"ts=1704164645 v=2\n")
    writer.close()
    samples = await _all(source)
    assert [(s.stream, s.time, s.value) for s in samples] == [("v", 1704164645.0, 2.0)]


async def test_closed_stdin_is_a_source_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", None)
    with pytest.raises(SourceError, match="stdin is closed"):
        async with StdinSource(InputConfig()):
            pass


async def test_nonblocking_empty_pipe_is_not_the_end(pipe: tuple[BinaryIO, WriteEnd]) -> None:
    """O_NONBLOCK stdin with no data yet reads EAGAIN: wait for data, do not end."""
    reader, writer = pipe
    os.set_blocking(reader.fileno(), False)
    source = StdinSource(InputConfig(), stream=reader)
    async with source:
        it = aiter(source)
        pending = asyncio.ensure_future(anext(it))
        await asyncio.sleep(0.3)
        assert not pending.done(), "an empty non-blocking pipe was taken for the end of input"
        writer.write(b"4\n")
        assert (await asyncio.wait_for(pending, HANG)).value == 4.0
        writer.write(b"1")  # half a line: EAGAIN in the middle must not cut it
        pending = asyncio.ensure_future(anext(it))
        await asyncio.sleep(0.3)
        assert not pending.done()
        writer.write(b"2\n")
        assert (await asyncio.wait_for(pending, HANG)).value == 12.0
        writer.close()
        with pytest.raises(StopAsyncIteration):
            await _next(it)
    assert source.stats == {"lines": 2, "samples": 2}


def test_cli_waits_on_nonblocking_empty_stdin(tmp_path: Path,
                                              random_pitch_checkpoint: Path) -> None:
    """`streamsonic` whose stdin is a pipe in O_NONBLOCK mode (as some parents leave it)
    plays what arrives later instead of exiting 0 at once."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamsonic", "run", "--output", "events",
             "--weights", str(random_pitch_checkpoint), "--set", "model.passing_notes=0"],
            stdin=read_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
    finally:
        os.close(read_fd)
    try:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=8)  # model loading, then the empty pipe: it must keep waiting
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        os.write(write_fd, b"1\n5\n")
        os.close(write_fd)
        write_fd = -1
        out, err = proc.communicate(timeout=60)
    finally:
        if write_fd >= 0:
            os.close(write_fd)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err.decode(errors="replace")
    assert len(out.decode().splitlines()) == 2


async def test_max_line_bytes_at_its_bound_reads(tmp_path: Path) -> None:
    """The largest allowed input.max_line_bytes works (2^63 - 1 made readline overflow)."""
    path = tmp_path / "lines.txt"
    path.write_bytes(b"1\n2\n")
    with path.open("rb") as stream:
        samples = await _all(StdinSource(InputConfig(max_line_bytes=MAX_LINE_BYTES),
                                         stream=stream))
    assert [s.value for s in samples] == [1.0, 2.0]


async def test_reader_bug_ends_the_input_instead_of_hanging() -> None:
    class Buggy(io.RawIOBase):  # a unit-level fake: an unexpected exception in the reader
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: object) -> int:
            raise RuntimeError("boom")

    with pytest.raises(SourceError, match="RuntimeError: boom"):
        await _all(StdinSource(InputConfig(), stream=io.BufferedReader(Buggy())))


class _Chunks(io.RawIOBase):
    """A raw stream that hands out the given chunks, one per read (as a pipe would)."""

    def __init__(self, chunks: list[bytes]) -> None:
        super().__init__()
        self._chunks = list(chunks)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._chunks:
            return 0
        chunk = self._chunks.pop(0)
        view = memoryview(buffer).cast("B")
        if len(chunk) > len(view):
            self._chunks.insert(0, chunk[len(view):])
            chunk = chunk[:len(view)]
        view[:len(chunk)] = chunk
        return len(chunk)


class _Lines:
    """A stream with only ``readline`` (no ``read1``): the reader takes it line by line."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)

    def readline(self, size: int = -1) -> bytes:
        return self._stream.readline(size)

    def isatty(self) -> bool:
        return False


@settings(max_examples=300, deadline=None)
@given(data=st.lists(st.sampled_from([b"1", b"k=2", b"\r", b"\n", b"x", b"99999999",
                                      b"a=3\n", b" ", b"nan", b"7\n",
                                      b"1234567890123456789012345"]), max_size=40),
       cuts=st.lists(st.integers(0, 300), max_size=12), limit=st.integers(16, 24))
def test_reading_in_chunks_gives_what_reading_line_by_line_gives(
        data: list[bytes], cuts: list[int], limit: int) -> None:
    """Wherever the reads end (in a line, in an over-long line, between a CR and its LF),
    the reader yields the samples and counts the lines and reasons that the whole input
    read at once gives (:func:`_whole_lines`), from chunks as from a readline-only
    stream."""
    raw = b"".join(data)
    bounds = sorted({min(c, len(raw)) for c in cuts} | {0, len(raw)})
    chunks = [raw[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    config = InputConfig(max_line_bytes=limit)

    def run(stream: Any) -> tuple[list[tuple[str, float]], dict[str, int]]:
        source = StdinSource(config, stream=stream, warn_interval=3600)
        samples = asyncio.run(_all(source))
        return [(s.stream, s.value) for s in samples], source.stats

    expected = _whole_lines(raw, config)
    assert run(io.BufferedReader(_Chunks(chunks))) == expected
    assert run(_Lines(raw)) == expected


def _whole_lines(raw: bytes, config: InputConfig
                 ) -> tuple[list[tuple[str, float]], dict[str, int]]:
    """What reading ``raw`` must give, from the whole of it at once: lines end at LF, CRLF
    or a lone CR; a line longer than ``max_line_bytes`` is ``too_long``; the last line
    counts without its newline too; each line parsed as run parses it."""
    parser = LineParser(config)
    lines = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if not lines[-1]:
        lines.pop()
    samples: list[tuple[str, float]] = []
    stats = {"lines": len(lines), "samples": 0}
    for line in lines:
        parsed = (ParsedLine(skipped=["too_long"]) if len(line) > config.max_line_bytes
                  else parser.parse_line(line, 0.0))
        samples += [(s.stream, s.value) for s in parsed.samples]
        stats["samples"] += len(parsed.samples)
        for reason in parsed.skipped:
            kind = "ignored" if reason in BENIGN_REASONS else "skipped"
            stats[f"{kind}.{reason}"] = stats.get(f"{kind}.{reason}", 0) + 1
    return samples, stats


async def test_a_name_twice_on_a_line_is_counted_and_warned(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The collision of a dotted JSON key with a nested one reaches the source's counters
    (and from there the stats lines and metrics) and one rate-limited warning."""
    path = tmp_path / "collide.jsonl"
    path.write_bytes(b'{"a.b": 1, "a": {"b": 2}}\n{"a.b": 3, "a": {"b": 4}}\n')
    caplog.set_level(logging.WARNING, logger="streamsonic.sources.stdin")
    with path.open("rb") as stream:
        source = StdinSource(InputConfig(), stream=stream, warn_interval=3600)
        samples = await _all(source)
    assert [(s.stream, s.value) for s in samples] == [("a.b", 1.0), ("a.b", 3.0)]
    assert source.stats == {"lines": 2, "samples": 2, "skipped.duplicate_name": 2}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "line 1: skipped duplicate_name" in warnings[0], warnings
