"""Audio capture on JACK for the live audio tests: a PortAudio stream with per-block
timestamps, and a libjack client that records levels and survives a server kill."""

from __future__ import annotations

import ctypes
import threading
import time
from typing import Any

import numpy as np

from streamsonic.sinks.jackclient import JackClient


class Capture:
    """A capture stream in this process; records audio and (monotonic, frame) per block."""

    def __init__(self, sd: Any, rate: int, block: int) -> None:
        self.rate = rate
        self.chunks: list[np.ndarray] = []
        self.stamps: list[tuple[float, int, bool]] = []
        self.frames = 0
        self.lock = threading.Lock()
        self.stream = sd.InputStream(samplerate=rate, blocksize=block, channels=2,
                                     dtype="float32", callback=self._callback)

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        self.stamps.append((time.monotonic(), self.frames, bool(status.input_overflow)))
        self.chunks.append(indata.copy())
        self.frames += frames

    def audio(self) -> np.ndarray:
        """Everything captured, (frames, 2) float32."""
        return np.concatenate(self.chunks)

    def frame_of(self, t: float, window: int = 16) -> int:
        """The captured frame that was at clock time ``t``.

        Each block's start time is its callback time less the wake-up delay; the delay is
        estimated by the least-late callback among this block and the next ``window`` (a
        dropout only ever moves later blocks later, so looking forward is safe).
        """
        stamps = np.array([(s[0], s[1]) for s in self.stamps])
        observed = stamps[:, 0] - stamps[:, 1] / self.rate
        i = max(0, int(np.searchsorted(stamps[:, 0], t)) - 1)
        return round((t - observed[i:i + window].min()) * self.rate)


class JackCapture:
    """A JACK client ``name`` with inputs ``in_0``/``in_1`` that records each period's peak.

    It talks to libjack through streamsonic's own binding, so, unlike a PortAudio stream,
    it can be dropped after its server was killed (a new one is opened on the restarted
    server; the dead one is freed first).
    """

    def __init__(self, name: str = "capture") -> None:
        self.client = JackClient(name)
        self.name = self.client.name
        self.peaks: list[tuple[float, float]] = []  # (monotonic time, peak of the period)
        self._ports = [self.client.register_input(f"in_{i}") for i in range(2)]
        self.client.set_process_callback(self._process)
        self.client.activate()

    def _process(self, frames: int) -> int:
        peak = 0.0
        for port in self._ports:
            buffer = (ctypes.c_float * frames).from_address(self.client.port_buffer(port, frames))
            peak = max(peak, float(np.abs(np.ctypeslib.as_array(buffer)).max()))
        self.peaks.append((time.monotonic(), peak))
        return 0

    def connect_from(self, sources: list[str]) -> None:
        """Connect output ports (e.g. ``streamsonic:out_0/1``) to our inputs, in order."""
        for i, source in enumerate(sorted(sources)[:2]):
            self.client.connect(source, f"{self.name}:in_{i}")

    def wait_sound(self, after: float, level: float = 0.01, timeout: float = 30.0) -> float:
        """Time of the first period after ``after`` louder than ``level``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, peak in list(self.peaks):
                if t > after and peak > level:
                    return t
            time.sleep(0.05)
        raise AssertionError(f"no sound above {level} after {after:.2f} within {timeout} s")

    def wait_silence(self, after: float, hold: float, level: float = 1e-4,
                     timeout: float = 30.0) -> float:
        """Time at which ``hold`` seconds of periods quieter than ``level`` have passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            quiet_since = after
            for t, peak in list(self.peaks):
                if t <= after:
                    continue
                if peak > level:
                    quiet_since = t
                elif t - quiet_since >= hold:
                    return t
            time.sleep(0.05)
        raise AssertionError(f"still sound above {level} after {after:.2f} within {timeout} s")

    def close(self) -> None:
        """Remove the client."""
        self.client.close()
