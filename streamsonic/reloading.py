"""SIGHUP's reload as a task of its own, one at a time (the daemon's and the router's).

Trying a new broker's login takes a moment, and the streams play on meanwhile; a SIGHUP
that comes during a reload is answered by one more after it (the file may have changed
again), not by a second reload beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


class Reloader:
    """Runs ``reload`` (one pass: read the file, apply it) on :meth:`request`."""

    def __init__(self, reload: Callable[[], Awaitable[None]]) -> None:
        self._reload = reload
        self._task: asyncio.Task[None] | None = None  # the reload running
        self._again = False  # a request came during it: once more after it

    def request(self) -> None:
        """A SIGHUP: reload now, or once more after the reload running."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        again = True
        while again:
            self._again = False
            await self._reload()
            again = self._again

    async def cancel(self) -> None:
        """Stopping: a reload still running (trying a broker) is given up."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
