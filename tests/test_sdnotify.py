"""sd_notify client against a real AF_UNIX datagram socket bound as NOTIFY_SOCKET."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamsonic.sdnotify import Notifier, socket_address, watchdog_interval


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket bound at a path and exported as $NOTIFY_SOCKET."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def receive(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_status_watchdog_stopping(notify_socket: socket.socket) -> None:
    notifier = Notifier()
    assert notifier.enabled
    assert notifier.ready("playing 3 streams")
    assert receive(notify_socket) == ["READY=1", "STATUS=playing 3 streams"]
    assert notifier.watchdog()
    assert receive(notify_socket) == ["WATCHDOG=1"]
    assert notifier.status("line one\nline two")
    assert receive(notify_socket) == ["STATUS=line one line two"]
    assert notifier.stopping()
    assert receive(notify_socket) == ["STOPPING=1"]
    notifier.close()
    notifier.close()


def test_reloading_carries_monotonic_usec(notify_socket: socket.socket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert Notifier().reloading()
    lines = receive(notify_socket)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"streamsonic-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert Notifier().ready()
        assert receive(sock) == ["READY=1"]


def test_nothing_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert not notifier.stopping()


def test_missing_socket_does_not_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    notifier = Notifier()
    assert notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()
    warnings = [r for r in caplog.records if "cannot notify systemd" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not per call


def test_invalid_socket_values() -> None:
    assert socket_address("@x") == "\0x"
    assert socket_address("/run/x") == "/run/x"
    assert socket_address("relative/path") is None
    assert socket_address("@") is None
    assert not Notifier("vsock:2:1234").enabled


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval() is None  # the watchdog belongs to another process
    monkeypatch.setenv("WATCHDOG_PID", "nope")
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "0")
    assert watchdog_interval() is None


# -- the daemon under a (simulated) systemd -----------------------------------------------

def wait_for(sock: socket.socket, first_line: str, seen: list[list[str]]) -> list[str]:
    """Read datagrams (collected in ``seen``) until one starts with ``first_line``."""
    while True:
        lines = receive(sock)  # the socket's timeout ends a wait that never succeeds
        seen.append(lines)
        if lines[0] == first_line:
            return lines


@pytest.mark.slow
def test_daemon_reports_ready_watchdog_reload_stopping(
    notify_socket: socket.socket, tmp_path: Path, random_pitch_checkpoint: Path
) -> None:
    """`streamsonic run` in a subprocess, with NOTIFY_SOCKET and WATCHDOG_USEC as systemd
    sets them for Type=notify with WatchdogSec=2s: READY, pings, SIGHUP reload, SIGTERM."""
    notify_socket.settimeout(60)  # first READY waits for torch and the model to load
    env = {**os.environ, "WATCHDOG_USEC": "2000000", "XDG_CONFIG_HOME": str(tmp_path)}
    env.pop("STREAMSONIC_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamsonic", "run", "--output", "events",
         "--weights", str(random_pitch_checkpoint)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    seen: list[list[str]] = []
    try:
        ready = wait_for(notify_socket, "READY=1", seen)
        assert any(line.startswith("STATUS=") and "events" in line for line in ready)
        assert proc.stdin is not None
        proc.stdin.write(b"1\n5\n3\n")
        proc.stdin.flush()
        notify_socket.settimeout(10)
        wait_for(notify_socket, "WATCHDOG=1", seen)
        proc.send_signal(signal.SIGHUP)
        reloading = wait_for(notify_socket, "RELOADING=1", seen)
        assert reloading[1].startswith("MONOTONIC_USEC=")
        wait_for(notify_socket, "READY=1", seen)
        proc.send_signal(signal.SIGTERM)
        wait_for(notify_socket, "STOPPING=1", seen)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err.decode(errors="replace")
    assert out.decode().splitlines(), "the daemon played no note"  # it ran, not just started
    firsts = [lines[0] for lines in seen]
    assert firsts.index("READY=1") < firsts.index("RELOADING=1") < firsts.index("STOPPING=1")
