"""JACK dummy-server fixtures: real timed audio callbacks and real MIDI ports without hardware.

``jack_server`` (session scope) starts ``jackd -d dummy`` under a server name no other test
run uses (``JACK_DEFAULT_SERVER``, exported to this process and so to every subprocess),
waits until it answers, and stops it by PID at the end. Tests that use it are skipped, with
the reason, only when jackd is not installed (``apt install --no-install-recommends jackd2``);
in CI they fail instead (``tests/components.py``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.components import missing

SAMPLE_RATE = 48000
#: Frames per JACK period. 1024 (21 ms) keeps the dummy driver free of xruns on a loaded
#: 2-core machine without real-time scheduling; 256 there gives several xruns a second.
PERIOD = int(os.environ.get("STREAMSONIC_TEST_JACK_PERIOD", "1024"))


@dataclass(frozen=True)
class JackServer:
    """A running JACK dummy server."""

    name: str
    pid: int
    sample_rate: int
    period: int
    log: Path

    def env(self) -> dict[str, str]:
        """Environment for a subprocess that should use this server."""
        return {**os.environ, "JACK_DEFAULT_SERVER": self.name, "JACK_NO_START_SERVER": "1"}

    def ports(self) -> list[str]:
        """Every port name (``jack_lsp``)."""
        out = subprocess.run(["jack_lsp"], env=self.env(), capture_output=True, text=True,
                             timeout=10, check=False)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]

    def wait_for_ports(self, prefix: str, count: int = 1, timeout: float = 20.0) -> list[str]:
        """Ports whose names start with ``prefix`` once at least ``count`` exist."""
        deadline = time.monotonic() + timeout
        found: list[str] = []
        while time.monotonic() < deadline:
            found = [p for p in self.ports() if p.startswith(prefix)]
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"JACK ports {prefix!r}* did not appear; have {self.ports()}")

    def connect(self, source: str, destination: str) -> None:
        """``jack_connect source destination``."""
        subprocess.run(["jack_connect", source, destination], env=self.env(), check=True,
                       capture_output=True, timeout=10)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _reinit_portaudio(stop: Callable[[], None] | None = None) -> None:
    """PortAudio looks for JACK servers when it initializes; re-scan if it already did.

    With ``stop``, PortAudio lets go of the server before ``stop()`` shuts it down (else
    PortAudio's JACK client aborts the interpreter when it terminates at exit).
    """
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        sd._terminate()
    if stop is not None:
        stop()
    if sd is not None:
        sd._initialize()


def start_failure(log: Path) -> str:
    """Why jackd did not start: its log's tail, and the fix for a full server registry."""
    text = log.read_text(errors="replace")[-2000:]
    if "Too many servers already active" in text:
        text += ("\nlibjack's server registry in /dev/shm is full of servers that were killed "
                 "without cleaning up (pytest or jackd killed with SIGKILL): stop every jackd "
                 "(pkill jackd), then remove /dev/shm/jack*")
    return f"jackd did not start: {text}"


@pytest.fixture(scope="session")
def jack_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JackServer]:
    """A JACK dummy server (48 kHz, ``PERIOD``-frame periods) for the whole test session."""
    jackd = shutil.which("jackd")
    if jackd is None or shutil.which("jack_wait") is None:
        missing("jackd is not installed (apt install --no-install-recommends jackd2)")
    name = f"streamsonic-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    log = tmp_path_factory.mktemp("jack") / "jackd.log"
    env = {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_AUDIO_RESERVATION": "1"}
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [jackd, "--no-realtime", "-d", "dummy", "-r", str(SAMPLE_RATE), "-p", str(PERIOD)],
            env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        ready = subprocess.run(["jack_wait", "-w", "-t", "10"], env=env, capture_output=True,
                               text=True, timeout=30, check=False)
        if ready.returncode != 0 or proc.poll() is not None:
            raise RuntimeError(start_failure(log))
        previous = os.environ.get("JACK_DEFAULT_SERVER")
        os.environ["JACK_DEFAULT_SERVER"] = name
        os.environ["JACK_NO_START_SERVER"] = "1"
        _reinit_portaudio()
        try:
            yield JackServer(name, proc.pid, SAMPLE_RATE, PERIOD, log)
        finally:
            if previous is None:
                os.environ.pop("JACK_DEFAULT_SERVER", None)
            else:
                os.environ["JACK_DEFAULT_SERVER"] = previous
            _reinit_portaudio(stop=lambda: _stop(proc))
    finally:
        _stop(proc)
