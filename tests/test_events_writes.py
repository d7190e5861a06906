"""The events output never blocks the daemon on stdout, and a write that fails is an output
write error (one error line, the other outputs play on, exit 74), never a traceback.

The real CLI in a subprocess, real pipes: a stalled reader is a pipe nobody reads, a full disk
is /dev/full or a file size limit (RLIMIT_FSIZE: a write past it fails with EFBIG, as a full
disk fails one, without root or a mount), a closed stdout is ``>&-``.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import functools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mido
import pytest

from streamsonic.events import NoteEvent
from streamsonic.scheduler import Scheduler
from streamsonic.sinks import events
from streamsonic.sinks.events import EventsSink

REPO = Path(__file__).resolve().parents[1]
EXE = [sys.executable, "-m", "streamsonic"]
FAST = ["--device", "cpu", "--set", "clock.max_rate=1000", "--set", "clock.backlog=100000"]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "STREAMSONIC_CONFIG"}


def three_streams(n: int) -> str:
    """``n`` lines of three streams, a varying value each (every sample a note)."""
    return "".join(f"a={i % 13} b={(i * 7) % 11} c={(i * 5) % 17}\n" for i in range(n))


def limited_writes(size: int) -> None:
    """In the child (preexec_fn): no file grows past ``size`` bytes; a write past it fails
    with EFBIG instead of killing the process."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def pipe_bytes(fd: int) -> int:
    """Bytes waiting in the pipe whose read end is ``fd``."""
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


class Pipe:
    """A pipe of one page (4096 bytes: full after some 16 lines) that the test does not
    read until it wants to."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        with contextlib.suppress(OSError):  # else the default 64 KiB: it fills a little later
            fcntl.fcntl(self.w, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)
        self._open = [self.r, self.w]

    def close(self, fd: int) -> None:
        if fd in self._open:
            self._open.remove(fd)
            os.close(fd)

    def close_all(self) -> None:
        for fd in list(self._open):
            self.close(fd)


@pytest.fixture
def stalled_pipe() -> Iterator[Pipe]:
    pipe = Pipe()
    try:
        yield pipe
    finally:
        pipe.close_all()


def parse_lines(data: bytes) -> list[dict[str, object]]:
    assert data.endswith(b"\n") or not data, data[-200:]
    return [json.loads(line) for line in data.splitlines()]


def drain(fd: int) -> bytes:
    """What the pipe holds now (it is not waited on)."""
    os.set_blocking(fd, False)
    out = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            out += chunk
    return out


# -- a reader that stops reading ---------------------------------------------------------------

def test_sigterm_stops_the_daemon_while_stdout_is_not_read(stalled_pipe: Pipe,
                                                            tmp_path: Path) -> None:
    """The audit's hang: with stdout a pipe nobody reads, the daemon sat in write() and
    ignored SIGTERM for good (its MIDI file kept its bare header). Now the music and the
    other outputs go on while the reader stalls, SIGTERM stops it, and the log says how
    many lines were not written."""
    r, w = stalled_pipe.r, stalled_pipe.w
    data = tmp_path / "abc.txt"
    data.write_text(three_streams(3000))
    mid = tmp_path / "sl.mid"
    err = tmp_path / "err.txt"
    with err.open("wb") as err_file:
        proc = subprocess.Popen([*EXE, "run", str(data), "--output", "events", "--output",
                                 f"file:{mid}", *FAST], stdout=w, stderr=err_file,
                                stdin=subprocess.DEVNULL, env=env(), cwd=REPO)
    stalled_pipe.close(w)
    try:
        deadline = time.monotonic() + 120
        while pipe_bytes(r) < 2048 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, err.read_text()
        time.sleep(1.0)  # meanwhile the notes go on: far more than the pipe holds
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=10)  # hung forever before
        except subprocess.TimeoutExpired:
            pytest.fail("the daemon did not exit within 10 s of SIGTERM with stdout unread")
        log = err.read_text()
        assert code == 0, log
        assert "Traceback" not in log and "ERROR" not in log, log
        assert "lines were not written, stdout's reader did not take them" in log, log
        written = parse_lines(drain(r))  # whole lines only
        notes = [m for m in mido.MidiFile(mid) if m.type == "note_on" and m.velocity > 0]
        assert len(notes) > len(written) > 0  # the file went on past what stdout took
        assert len(notes) > 50
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_at_the_end_of_the_input_a_slow_reader_gets_every_line(stalled_pipe: Pipe,
                                                                 tmp_path: Path) -> None:
    """The input ends while stdout's reader takes nothing for seconds (a pager, a consumer
    that takes its time): the daemon waits for it, however long, and the reader gets every
    line, then exit 0 (the lines still waiting were given up 0.5 s after the last note)."""
    r, w = stalled_pipe.r, stalled_pipe.w
    n = 400
    err = tmp_path / "err.txt"
    with err.open("wb") as err_file:
        proc = subprocess.Popen([*EXE, "run", "--output", "events", *FAST,
                                 "--set", "model.passing_notes=0"], stdin=subprocess.PIPE,
                                stdout=w, stderr=err_file, env=env(), cwd=REPO)
    stalled_pipe.close(w)
    try:
        assert proc.stdin is not None
        proc.stdin.write("".join(f"{i % 17}\n" for i in range(n)).encode())
        proc.stdin.close()
        deadline = time.monotonic() + 120
        while "input ended" not in err.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(6.0)  # every note played (about 2.5 s), then some 3 s more unread
        assert proc.poll() is None, err.read_text()  # it waits for the reader
        got = bytearray()
        os.set_blocking(r, True)
        while chunk := os.read(r, 65536):
            got.extend(chunk)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = err.read_text()
    assert code == 0, log
    assert len(parse_lines(bytes(got))) == n, log
    assert "not written" not in log, log


def note(i: int) -> NoteEvent:
    return NoteEvent("s", float(i), 1.0, 0.5, 60 + i % 12, 90, 0.25, 0, 0, start=float(i))


def test_a_stalled_reader_gets_lines_dropped_counted_and_warned(
        stalled_pipe: Pipe, caplog: pytest.LogCaptureFixture) -> None:
    """What waits for the reader is bounded: past it, lines are dropped, counted and warned
    about (rate-limited); the loop is never held up, close gives up on a reader that takes
    nothing, and what the reader gets is whole lines, in order, from the first."""
    r, w = stalled_pipe.r, stalled_pipe.w
    sink = EventsSink(fd=w, queue_bytes=20_000)
    total = 2000

    async def play() -> float:
        slowest = 0.0
        for i in range(0, total, 50):
            began = time.monotonic()
            for j in range(i, i + 50):
                sink.note(note(j))
            await asyncio.sleep(0.001)  # the loop's turn: the lines go to the writer
            slowest = max(slowest, time.monotonic() - began)
        sink.close()
        return slowest

    caplog.set_level(logging.INFO, logger=events.__name__)
    asyncio.run(play())
    stats = sink.stats
    assert stats["dropped"] > 0
    assert stats["written"] + stats["dropped"] == total
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("stdout's reader is not taking the lines" in m for m in warnings), warnings
    assert sum("is not taking the lines" in m for m in warnings) == 1  # rate-limited
    assert any(f"{stats['dropped']} lines were not written" in m for m in warnings), warnings
    got = parse_lines(drain(r))  # (drained: a write the writer had begun may end now)
    assert len(got) >= stats["written"]
    assert [line["time"] for line in got] == [float(i) for i in range(len(got))]


def test_render_waits_for_a_slow_reader_and_drops_nothing(stalled_pipe: Pipe) -> None:
    """Without a running loop (render) a full queue is waited on, as a blocking write was."""
    r, w = stalled_pipe.r, stalled_pipe.w
    sink = EventsSink(fd=w, queue_bytes=4096)
    got = bytearray()

    def reader() -> None:
        while chunk := os.read(r, 1000):
            got.extend(chunk)
            time.sleep(0.001)

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(3000):
        sink.note(note(i))
    sink.close()
    stalled_pipe.close(w)
    thread.join(60)
    assert sink.stats == {"written": 3000}
    assert [line["time"] for line in parse_lines(bytes(got))] == [float(i) for i in range(3000)]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_reader_that_goes_away_is_still_a_quiet_stop(workers: int) -> None:
    """``| head -1``: EPIPE in the writer thread still stops the daemon as SIGTERM does,
    exit 0, no error, also with worker processes."""
    script = (f"set -o pipefail; seq 1 5000 | {sys.executable} -m streamsonic --output events "
              f"--device cpu --workers {workers} 2>&3 | head -1")
    res = subprocess.run(["bash", "-c", f"{{ {script}; }} 3>&2"], capture_output=True,
                         text=True, timeout=120, check=False, env=env(), cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("\n") == 1 and json.loads(res.stdout)["value"] == 1.0
    assert "ERROR" not in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert "Exception ignored" not in res.stderr
    assert "lines were not written" not in res.stderr  # thrown away, as head and yes do


# -- a write that fails --------------------------------------------------------------------------

def played(stderr: str) -> int:
    """The notes the daemon played, from its last log line (``stopped: 3 samples, 6 notes``)."""
    match = re.search(r"stopped: \d+ samples, (\d+) notes", stderr)
    assert match, stderr
    return int(match.group(1))


def assert_one_write_error(stderr: str, cause: str) -> None:
    assert "Traceback" not in stderr and "Exception in callback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "ERROR" in line or "error:" in line]
    # one when it fails (the output is closed, the others play on), one for the exit status
    assert len(errors) == 2, stderr
    assert all("cannot write the events output to stdout" in e and cause in e for e in errors)


def test_a_full_stdout_is_one_error_and_exit_74(tmp_path: Path) -> None:
    """``> /dev/full``: was a traceback per flush and exit 0."""
    mid = tmp_path / "out.mid"
    with Path("/dev/full").open("wb") as full:
        res = subprocess.run([*EXE, "--output", "events", "--output", f"file:{mid}",
                              "--device", "cpu"], input=b"1\n2\n3\n", stdout=full,
                             stderr=subprocess.PIPE, timeout=120, check=False, env=env(),
                             cwd=REPO)
    stderr = res.stderr.decode()
    assert res.returncode == 74, stderr
    assert_one_write_error(stderr, "No space left on device")
    notes = [m for m in mido.MidiFile(mid) if m.type == "note_on" and m.velocity > 0]
    assert len(notes) == played(stderr) >= 3  # the other output played every note


def test_a_closed_stdout_is_one_error_and_exit_74(tmp_path: Path) -> None:
    """``>&-``: was an AttributeError traceback per flush and exit 0."""
    mid = tmp_path / "out.mid"
    command = " ".join([*EXE, "--output", "events", "--output", f"file:{mid}", "--device",
                        "cpu"])
    res = subprocess.run(["sh", "-c", f"exec {command} >&-"], input=b"1\n2\n3\n",
                         capture_output=True, timeout=120, check=False, env=env(), cwd=REPO)
    stderr = res.stderr.decode()
    assert res.returncode == 74, stderr
    assert_one_write_error(stderr, "it is closed")
    notes = [m for m in mido.MidiFile(mid) if m.type == "note_on" and m.velocity > 0]
    assert len(notes) == played(stderr) >= 3


def test_render_to_a_full_stdout_is_one_error_and_exit_74(tmp_path: Path) -> None:
    data = tmp_path / "series.csv"
    data.write_text("x\n" + "".join(f"{i % 7}\n" for i in range(20)))
    with Path("/dev/full").open("wb") as full:
        res = subprocess.run([*EXE, "render", str(data), "-o", "events"], stdout=full,
                             stderr=subprocess.PIPE, timeout=120, check=False, env=env(),
                             cwd=REPO)
    stderr = res.stderr.decode()
    assert res.returncode == 74, stderr
    assert_one_write_error(stderr, "No space left on device")


@pytest.mark.parametrize("command", ["run", "render"])
def test_a_file_that_fills_up_ends_in_a_whole_line(tmp_path: Path, command: str) -> None:
    """stdout a file on a disk that fills (a file size limit): the write that fails is
    taken back to the last whole line, nothing is written after it, exit 74. Was: a
    traceback per flush, exit 0, the last line cut."""
    data = tmp_path / "series.txt"
    data.write_text("".join(f"{i % 13}\n" for i in range(300)))
    out = tmp_path / "events.jsonl"
    # (run: with a MIDI file too; with no output left the daemon stops, "every output
    # failed", exit 69)
    args = ([command, str(data), "--output", "events", "--output",
             f"file:{tmp_path / 'out.mid'}", *FAST] if command == "run"
            else [command, str(data), "-o", "events", "--device", "cpu"])
    with out.open("wb") as stdout:
        res = subprocess.run([*EXE, *args], stdout=stdout, stderr=subprocess.PIPE,
                             timeout=300, check=False, env=env(), cwd=REPO,
                             preexec_fn=lambda: limited_writes(10_000))
    stderr = res.stderr.decode()
    assert res.returncode == 74, stderr
    assert_one_write_error(stderr, "File too large")
    lines = parse_lines(out.read_bytes())  # ends in a newline; every line whole JSON
    assert 0 < len(lines) < 300


def test_events_alone_failing_for_good_exits_74_not_69(tmp_path: Path) -> None:
    """The events output the only one, stdout /dev/full, the input still coming after the
    daemon's once-a-second check found every output failed: it stops, and the exit is 74
    (an output that could not be written), not 69 ("every output failed"), with the cause
    on the last line."""
    with Path("/dev/full").open("wb") as full:
        proc = subprocess.Popen([*EXE, "run", "--output", "events", *FAST],
                                stdin=subprocess.PIPE, stdout=full, stderr=subprocess.PIPE,
                                env=env(), cwd=REPO)
    assert proc.stdin is not None and proc.stderr is not None
    try:
        for i in range(40):
            try:
                proc.stdin.write(f"{i % 5}\n".encode())
                proc.stdin.flush()
            except BrokenPipeError:  # it stopped reading: done
                break
            time.sleep(0.1)
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        code = proc.wait(timeout=60)
        log = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 74, log
    assert log.strip().splitlines()[-1].endswith("No space left on device"), log
    assert "Traceback" not in log


# -- what the notes owed (a QoS 1 message) is settled once their lines are written -------------

def _note_at(start: float, i: int = 0) -> NoteEvent:
    return NoteEvent("s", float(i), 1.0, 0.5, 60, 90, 0.1, 0, 0, start=start)


def test_what_a_note_owed_is_settled_once_its_line_is_written_even_when_it_starts_later(
) -> None:
    """A phrase's data note starts after the model's notes (audio latency puts every start
    ahead): the callback of the notes played so far comes once the later note's line is in
    the pipe, not at the next turn (0.001 s, the line written 0.3 s later: a SIGKILL
    between lost the message, a SIGTERM cancelled its note after it was acknowledged)."""
    r, w = os.pipe()  # (the default 64 KiB: a one-page pipe takes a second piece only
    # once it is read, when select says it has room)

    async def run() -> tuple[float, int]:
        loop = asyncio.get_running_loop()
        sink = EventsSink(fd=w)
        scheduler = Scheduler(loop, [sink])
        began = loop.time()
        settled: asyncio.Future[tuple[float, int]] = loop.create_future()
        scheduler.play(_note_at(began, 0))
        scheduler.play(_note_at(began + 0.3, 1))
        scheduler.when_written(lambda: settled.set_result((loop.time() - began,
                                                           pipe_bytes(r))))
        got = await asyncio.wait_for(settled, 10)
        scheduler.close()
        return got

    try:
        after, in_pipe = asyncio.run(run())
        data = drain(r)
    finally:
        os.close(r)
        os.close(w)
    assert after >= 0.3
    lines = parse_lines(data)
    assert [line["time"] for line in lines] == [0.0, 1.0]
    assert in_pipe == sum(len(json.dumps(x, separators=(",", ":"))) + 1 for x in lines)


def test_an_events_output_closed_while_the_daemon_runs_settles_what_it_held(
        stalled_pipe: Pipe) -> None:
    """A reload that removes the events output while its reader takes nothing: the lines it
    held are given up, and what their notes owed is settled all the same (it waited for
    good before: a QoS 1 broker stops sending once 20 messages wait)."""
    w = stalled_pipe.w

    async def run() -> bool:
        loop = asyncio.get_running_loop()
        sink = EventsSink(fd=w)
        scheduler = Scheduler(loop, [sink])
        settled = loop.create_future()
        for i in range(400):  # far more than the one-page pipe takes
            scheduler.play(_note_at(loop.time(), i))
        scheduler.when_written(lambda: settled.set_result(True))
        await asyncio.sleep(0.2)
        assert not settled.done()  # the reader takes nothing: still owed
        scheduler.remove_sink(sink)  # (close: 0.5 s without progress, then given up)
        return bool(await asyncio.wait_for(settled, 5))

    assert asyncio.run(run())


def test_a_stop_gives_up_what_waits_and_nothing_is_written_after_it(stalled_pipe: Pipe) -> None:
    """A stop with the reader taking nothing: settle_stopping gives the lines up after 0.5 s,
    the close that follows does not wait for the writer (it waited a second more), and no
    line goes out afterwards (a piece the writer was blocked in went out once the reader
    read again: a line whose message was never acknowledged, played twice later)."""
    r, w = stalled_pipe.r, stalled_pipe.w

    async def run() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        sink = EventsSink(fd=w)
        scheduler = Scheduler(loop, [sink])
        for i in range(400):
            scheduler.play(_note_at(loop.time(), i))
        await asyncio.sleep(0.2)
        began = time.monotonic()
        await scheduler.settle_stopping()
        stopping = time.monotonic() - began
        began = time.monotonic()
        scheduler.close()
        return stopping, time.monotonic() - began

    stopping, closing = asyncio.run(run())
    assert 0.4 <= stopping < 3.0
    assert closing < 0.5
    first = drain(r)  # the reader reads again
    time.sleep(0.3)
    assert drain(r) == b""  # nothing more came
    assert first.endswith(b"\n")


def test_acknowledgements_due_while_the_loop_is_busy_leave_room_for_a_signal(
        stalled_pipe: Pipe) -> None:
    """2,000 notes, each with its acknowledgement waiting for its line (QoS 1): the reader
    takes them all while the event loop is busy. Their callbacks come due on the loop
    in one wake-up, not one each: each call_soon_threadsafe writes a byte to the loop's
    self-pipe, where signals wake it too; a few hundred fill it, and a SIGTERM that found it
    full was lost ("Exception ignored when trying to write to the signal wakeup fd"; a
    daemon of test_sigkill_with_messages_in_flight_loses_nothing ran on after SIGTERM)."""
    r, w = stalled_pipe.r, stalled_pipe.w
    n = 2000

    def read_lines() -> None:
        os.set_blocking(r, True)
        got = 0
        while got < n and (chunk := os.read(r, 65536)):
            got += chunk.count(b"\n")

    async def run() -> tuple[bool, list[int]]:
        loop = asyncio.get_running_loop()
        sink = EventsSink(fd=w)
        scheduler = Scheduler(loop, [sink])
        signalled = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR1, signalled.set)
        order: list[int] = []
        try:
            for i in range(n):
                scheduler.play(_note_at(loop.time(), i))
                scheduler.when_written(functools.partial(order.append, i))
            await asyncio.sleep(0.3)  # handed over; the writer waits on the full pipe
            assert not order
            reader = threading.Thread(target=read_lines, daemon=True)
            reader.start()
            reader.join(20)  # (the loop is busy meanwhile: every callback comes due)
            assert not reader.is_alive()
            time.sleep(0.2)  # (the writer's last callbacks)
            os.kill(os.getpid(), signal.SIGUSR1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signalled.wait(), 2.0)
            await asyncio.sleep(0.1)
            return signalled.is_set(), order
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)
            scheduler.close()

    heard, order = asyncio.run(run())
    assert heard, "the signal was lost"
    assert order == list(range(n))  # every acknowledgement, in the order of the lines
