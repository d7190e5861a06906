"""Counters for skipped input and other events, and a rate-limited warning logger.

Bad input is never fatal and never silent: every skip is counted by reason, and a
warning is logged at most once per interval per key, saying how many were suppressed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable


class Counters:
    """Thread-safe named counters (e.g. ``"skipped.nan"``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        with self._lock:
            self._counts[name] += n

    def get(self, name: str) -> int:
        """Current value of ``name`` (0 if never counted)."""
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter."""
        with self._lock:
            return dict(self._counts)

    def __repr__(self) -> str:
        return f"Counters({self.snapshot()})"


class BoundedKeys:
    """The first ``limit`` distinct keys (topics, subjects) are named in counters as
    themselves, any later one as ``other``: per-key counters stay bounded whatever the
    input sends."""

    def __init__(self, limit: int, other: str) -> None:
        self.limit = limit
        self.other = other
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        """``name``, or ``other`` once ``limit`` other names have been seen."""
        if name not in self._seen:
            if len(self._seen) >= self.limit:
                return self.other
            self._seen.add(name)
        return name


class RateLimitedLog:
    """Logs a warning per key at most once every ``interval`` seconds.

    The next warning for a key says how many were suppressed since the last one.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def warning(self, key: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless ``key`` was logged less than ``interval`` ago.

        Returns whether it was logged.
        """
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] += 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg += " (%d more like this suppressed)"
            args = (*args, suppressed)
        self.logger.warning(msg, *args)
        return True
