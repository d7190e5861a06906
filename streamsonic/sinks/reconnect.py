"""Jittered exponential backoff for the outputs' reconnection threads."""

from __future__ import annotations

import random


class Backoff:
    """Delays ``first, 2*first, 4*first, ...`` up to ``limit``, each with +-20% jitter.

    ``reset()`` after a success starts again from ``first``.
    """

    def __init__(self, first: float, limit: float) -> None:
        self.first = min(first, limit)
        self.limit = limit
        self._next = self.first

    def reset(self) -> None:
        """Back to the first delay."""
        self._next = self.first

    def next(self) -> float:
        """The delay before the next attempt."""
        delay = self._next
        self._next = min(self.limit, self._next * 2)
        return delay * random.uniform(0.8, 1.2)  # jitter, not cryptography
