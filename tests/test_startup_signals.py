"""Stop and reload signals while the daemon starts (before its loop handles them).

The daemon runs as a program, under a simulated systemd: a datagram socket at
$NOTIFY_SOCKET tells the test when start-up has reached the model's loading, and the
signal is sent then (it ended the process by the signal's default action: -15, -1).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(120)  # a first start compiles the kernels
    (tmp_path / "empty.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("INVOCATION_ID", "WATCHDOG_USEC")}
    env.update(NOTIFY_SOCKET=str(path), STREAMSONIC_CONFIG=str(tmp_path / "empty.toml"))
    yield sock, env
    sock.close()


def _until(sock: socket.socket, first: str) -> list[str]:
    """The datagrams' lines up to and including the one that starts with ``first``."""
    seen: list[str] = []
    while True:
        lines = sock.recv(4096).decode().split("\n")
        seen += lines
        if any(line.startswith(first) for line in lines):
            return seen


def _start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "streamsonic", "run", "--output", "events",
                             *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)


def test_sigterm_while_the_model_loads_stops_it_cleanly(
        notify: tuple[socket.socket, dict[str, str]]) -> None:
    """SIGTERM as the model starts loading (the temporal model: torch's import alone takes
    a second): exit 0 and one line, no traceback (-15 before). Its input stays open: the
    stop, not the input's end, ends it."""
    sock, env = notify
    proc = _start(env, "--rhythm", "model")
    try:
        _until(sock, "STATUS=loading the model")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert proc.stderr is not None
        text = proc.stderr.read().decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, text
    assert "Traceback" not in text
    assert "SIGTERM while starting: stopped before playing anything" in text, text


def test_sighup_while_the_model_loads_reloads_once_running(
        notify: tuple[socket.socket, dict[str, str]]) -> None:
    """SIGHUP as the model starts loading: the daemon starts, then reloads (the file may
    have changed after it was read), and plays on: every note, exit 0 (-1 before)."""
    sock, env = notify
    proc = _start(env)
    try:
        _until(sock, "STATUS=loading the model")
        proc.send_signal(signal.SIGHUP)
        after = _until(sock, "READY=1")
        after += _until(sock, "RELOADING=1")
        _until(sock, "READY=1")
        out, err = proc.communicate(b"1\n2\n3\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")
    assert len(out.decode().splitlines()) >= 3


#: A daemon whose input, at its 50th sample, holds the event loop while another thread
#: fills the loop's self-pipe with wake-ups and then sends the process a signal (argv[1]; a
#: signal reaches the loop as one more byte on that pipe: full, it is lost); the input goes
#: on for argv[2] samples 10 ms apart after that.
FLOODED = """
import asyncio, logging, os, signal, sys, threading, time
from streamsonic.config import load_config
from streamsonic.daemon import run_daemon
from streamsonic.events import Sample

SIG, AFTER = getattr(signal, sys.argv[1]), int(sys.argv[2])
logging.basicConfig(level=logging.INFO)

class Flooded:
    def __init__(self, config):
        self.n = 0
    async def __aenter__(self):
        return self
    async def __aexit__(self, *exc):
        pass
    def __aiter__(self):
        return self
    async def __anext__(self):
        self.n += 1
        if self.n == 50:
            loop = asyncio.get_running_loop()
            def flood():
                for _ in range(5000):
                    loop.call_soon_threadsafe(lambda: None)
                os.kill(os.getpid(), SIG)
            thread = threading.Thread(target=flood)
            thread.start()
            thread.join()
            print("SENT", time.monotonic(), file=sys.stderr, flush=True)
        if self.n > 50 + AFTER:
            raise StopAsyncIteration
        await asyncio.sleep(0.01)
        return Sample("s", time.time(), float(self.n % 7))
    @property
    def stats(self):
        return {}

status = run_daemon(load_config(None, {"daemon.log_level": "info"}), ["events"],
                    open_input=Flooded)
print("EXIT", status, time.monotonic(), file=sys.stderr, flush=True)
"""


def _flooded(tmp_path: Path, sig: str, after: int) -> str:
    """Run FLOODED with ``sig``; its stderr (exit 0 asserted)."""
    config = tmp_path / "streamsonic.toml"
    config.write_text("")
    env = {**os.environ, "STREAMSONIC_CONFIG": str(config)}
    proc = subprocess.run([sys.executable, "-c", FLOODED, sig, str(after)],
                          capture_output=True, text=True, env=env, timeout=120, check=False,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "signal wakeup fd" in proc.stderr  # (the way the signal was lost)
    return proc.stderr


def _at(err: str, word: str) -> float:
    """The time printed after ``word`` (the last number on its line)."""
    return float(err.split(f"{word} ", 1)[1].split("\n", 1)[0].rsplit(maxsplit=1)[-1])


def test_sigterm_lost_on_a_full_wake_up_pipe_still_stops_the_daemon(tmp_path: Path) -> None:
    """The loop never hears the SIGTERM (its self-pipe was full: "Exception ignored when
    trying to write to the signal wakeup fd"); Python's own handler saw it, and the daemon
    stops half a second later (it played on to the end of its input before: 23 s)."""
    err = _flooded(tmp_path, "SIGTERM", 2000)
    assert "SIGTERM came while the event loop's wake-up pipe was full" in err
    assert "stopped:" in err
    assert _at(err, "EXIT") - _at(err, "SENT") < 5.0, err[-2000:]


def test_sighup_lost_on_a_full_wake_up_pipe_still_reloads(tmp_path: Path) -> None:
    """The same with SIGHUP: the configuration is reloaded half a second later, once (it
    was not reloaded at all before)."""
    err = _flooded(tmp_path, "SIGHUP", 300)
    assert "SIGHUP came while the event loop's wake-up pipe was full" in err
    assert err.count("reloaded configuration") == 1, err[-2000:]
