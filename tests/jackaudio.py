"""An audio capture stream on JACK with per-block timestamps, for the live audio tests."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np


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
