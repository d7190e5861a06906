"""Counters for skipped input and other events, and a rate-limited warning logger.

Bad input is never fatal and never silent: every skip is counted by reason, and a
warning is logged at most once per interval per key, saying how many were suppressed.
"""

from __future__ import annotations

import itertools
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

    The next warning for a key says how many were suppressed since the last one. At most
    ``max_keys`` keys are remembered (callers may key by topic, and topics are endless):
    past that, keys whose interval has passed are forgotten first (the next warning for one
    is logged anyway), then the least recently logged ones; memory stays bounded whatever
    the keys. The counters, not this, are the exact counts.
    """

    #: Keys remembered at most (each a few hundred bytes).
    MAX_KEYS = 4096

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.max_keys = max(1, max_keys)
        self._clock = clock
        # key -> when it was last logged, least recently logged first
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Keys remembered now (at most ``max_keys``)."""
        with self._lock:
            return len(self._last)

    def warning(self, key: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless ``key`` was logged less than ``interval`` ago.

        Returns whether it was logged.
        """
        return self.log(logging.WARNING, key, msg, *args)

    def error(self, key: str, msg: str, *args: object) -> bool:
        """As :meth:`warning`, at ERROR level (a failure that repeats while it lasts)."""
        return self.log(logging.ERROR, key, msg, *args)

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """As :meth:`warning`, at ``level``."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] += 1
                return False
            if last is not None:
                del self._last[key]  # re-inserted last: the dict stays in logging order
            elif len(self._last) >= self.max_keys:
                self._prune(now)
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg += " (%d more like this suppressed)"
            args = (*args, suppressed)
        self.logger.log(level, msg, *args)
        return True

    def _prune(self, now: float) -> None:
        """Make room for a new key (under the lock): forget the keys whose interval has
        passed; if that frees less than a quarter, the least recently logged as well."""
        expired = [k for k, t in self._last.items() if now - t >= self.interval]
        for k in expired:
            del self._last[k]
            self._suppressed.pop(k, None)
        excess = len(self._last) - (self.max_keys * 3) // 4
        if excess > 0:
            for k in list(itertools.islice(self._last, excess)):
                del self._last[k]
                self._suppressed.pop(k, None)
