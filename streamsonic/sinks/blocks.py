"""Sample-exact event placement for block-based audio callbacks (pure; no audio I/O).

:class:`StreamClock` maps the audio stream's frame counter to the scheduler's clock
(``time.monotonic()``), and :class:`BlockRenderer` renders one block through a synth,
splitting the render at each event's frame so onsets do not jitter by a whole buffer.
Both run inside the audio callback: no locks, no allocation beyond a heap push/pop.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Protocol

import mido
import numpy as np


class Synth(Protocol):
    """What the renderer needs from a synthesizer (``streamsonic.sinks.synth.FluidSynth``)."""

    frames: int  # frames rendered so far

    def apply(self, msg: mido.Message) -> None: ...

    def render(self, out: np.ndarray) -> None: ...


class StreamClock:
    """Estimates the clock time at which each audio block starts.

    Every callback observes ``now - frames / rate``: the clock time of stream frame 0 if
    the callback had run the instant its block was due. Callbacks only ever run late
    (scheduling delay, waiting for the GIL), so the smallest recent observation is the best
    estimate. The minimum is taken over the last ``window`` callbacks: one late wake-up never
    moves the onsets, while a real shift of the timeline (frames lost in an underrun, or the
    drift between the audio clock and the system clock) is followed within ``window``
    blocks, at once after an underrun (``reset``).
    """

    def __init__(self, rate: int, window: int = 32) -> None:
        self.rate = rate
        self.window = window
        self._count = 0
        self._mins: deque[tuple[int, float]] = deque()  # (callback number, observation)

    @property
    def origin(self) -> float | None:
        """Estimated clock time of stream frame 0 (None before the first block)."""
        return self._mins[0][1] if self._mins else None

    def reset(self) -> None:
        """Forget the history (the timeline jumped: an underrun lost frames)."""
        self._mins.clear()

    def block_start(self, now: float, frames: int) -> float:
        """Clock time of the block that starts at stream frame ``frames``, seen at ``now``."""
        observed = now - frames / self.rate
        mins = self._mins
        count = self._count
        while mins and mins[-1][1] >= observed:
            mins.pop()
        mins.append((count, observed))
        while mins[0][0] <= count - self.window:
            mins.popleft()
        self._count = count + 1
        return mins[0][1] + frames / self.rate


class BlockRenderer:
    """Holds timed messages and renders blocks with each message at its exact frame.

    "Exact" is up to the synth's ``grain``: FluidSynth starts notes on 64-frame boundaries
    of its output, so each message is applied at the boundary nearest its time (error at
    most half a grain: 0.67 ms at 48 kHz) rather than at the next one.
    """

    def __init__(self, synth: Synth, rate: int, grain: int = 1) -> None:
        self.synth = synth
        self.rate = rate
        self.grain = grain
        self._heap: list[tuple[float, int, mido.Message]] = []
        self.late = 0  # messages whose frame had already been rendered
        self.max_late = 0.0  # seconds

    def push(self, time: float, seq: int, msg: mido.Message) -> None:
        """Queue ``msg`` for clock time ``time`` (``seq`` keeps equal times in order)."""
        heapq.heappush(self._heap, (time, seq, msg))

    def clear(self) -> None:
        """Forget every queued message."""
        self._heap.clear()

    @property
    def pending(self) -> int:
        """Messages not yet applied."""
        return len(self._heap)

    @property
    def last_time(self) -> float | None:
        """Time of the latest pending message."""
        return max((t for t, _, _ in self._heap), default=None)

    def render(self, out: np.ndarray, start: float) -> None:
        """Fill ``out`` (frames, 2) with the block starting at clock time ``start``."""
        frames = out.shape[0]
        heap = self._heap
        rate = self.rate
        grain = self.grain
        base = self.synth.frames
        pos = 0
        while heap:
            t = heap[0][0]
            k = round((t - start) * rate)
            if grain > 1:
                k = round((base + k) / grain) * grain - base
            if k >= frames:
                break
            _, _, msg = heapq.heappop(heap)
            if k < pos:
                if k < pos - 1:
                    self.late += 1
                    self.max_late = max(self.max_late, (pos - k) / rate)
                k = pos
            if k > pos:
                self.synth.render(out[pos:k])
                pos = k
            self.synth.apply(msg)
        if pos < frames:
            self.synth.render(out[pos:])
