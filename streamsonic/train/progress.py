"""A small progress bar on stderr: epoch, loss, accuracy and time left.

On a terminal the bar redraws one line in place; otherwise (a log file, a pipe) only one
line per epoch is written, so logs stay readable.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    """``75`` -> ``"1:15"``; ``3725`` -> ``"1:02:05"``."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Progress of one training run over ``epochs`` epochs of ``batches`` batches each."""

    def __init__(self, epochs: int, batches: int, first_epoch: int = 1,
                 stream: TextIO | None = None, width: int = 24) -> None:
        self.epochs = epochs
        self.batches = max(batches, 1)
        self.first_epoch = first_epoch
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self._last_draw = 0.0

    def _left(self, epoch: int, batch: int) -> float:
        done = (epoch - self.first_epoch) * self.batches + batch
        total = (self.epochs - self.first_epoch + 1) * self.batches
        if done <= 0:
            return float("nan")
        return (time.monotonic() - self.start) / done * (total - done)

    def batch(self, epoch: int, batch: int, loss: float, accuracy: float) -> None:
        """After each batch (redraws at most 10 times a second, only on a terminal)."""
        now = time.monotonic()
        if not self.tty or (now - self._last_draw < 0.1 and batch < self.batches):
            return
        self._last_draw = now
        filled = int(self.width * batch / self.batches)
        bar = "#" * filled + "." * (self.width - filled)
        left = self._left(epoch, batch)
        eta = "?" if math.isnan(left) else format_seconds(left)
        self.stream.write(f"\repoch {epoch}/{self.epochs} [{bar}] loss {loss:.3f} "
                          f"acc {accuracy:6.1%}  {eta} left ")
        self.stream.flush()

    def epoch(self, epoch: int, line: str) -> None:
        """One line per finished epoch."""
        left = self._left(epoch, self.batches)
        eta = "?" if math.isnan(left) else format_seconds(left)
        prefix = "\r\033[K" if self.tty else ""
        self.stream.write(f"{prefix}epoch {epoch}/{self.epochs} {line}  ({eta} left at most)\n")
        self.stream.flush()

    def end_line(self) -> None:
        """Clear the bar's line on a terminal (before an error line is printed)."""
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def message(self, text: str) -> None:
        """A line of its own."""
        prefix = "\r\033[K" if self.tty else ""
        self.stream.write(f"{prefix}{text}\n")
        self.stream.flush()


class LoadProgress:
    """Rate-limited lines while the training data is read: nothing for a quick read, then
    one line every ``interval`` seconds ("reading training data: 2/6 files, 310 pieces,
    0:45 so far") and one at the end, so a music21 collection parsed for minutes is seen
    to move. (Once parsed, scores are cached and read at once.)"""

    def __init__(self, stream: TextIO | None = None, interval: float = 5.0) -> None:
        self.total = 0
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.start = time.monotonic()
        self._last = self.start
        self.printed = False
        self.files = 0
        self.pieces = 0

    def update(self, files: int, total: int, pieces: int) -> None:
        """Files finished (of ``total``) and pieces read so far."""
        self.files, self.total, self.pieces = files, total, pieces
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._line(f"{self.files}/{self.total} files, {self.pieces} pieces, "
                       f"{format_seconds(now - self.start)} so far")

    def done(self) -> None:
        """The closing line, when any line was written."""
        if self.printed:
            self._line(f"{self.files}/{self.total} files, {self.pieces} pieces in "
                       f"{format_seconds(time.monotonic() - self.start)}")

    def _line(self, text: str) -> None:
        self.printed = True
        self.stream.write(f"reading training data: {text}\n")
        self.stream.flush()
