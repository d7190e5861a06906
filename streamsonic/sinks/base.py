"""The small abstract sink every output implements.

Modelled on mido's ports: public ``send``/``panic``/``close``, context-manager use, an
idempotent ``close``; subclasses fill in ``_send`` and ``_close``. The base class tracks the
notes that are sounding, so ``panic()`` (and therefore ``close()``) can silence each one
and then send All Notes Off / All Sound Off on every channel the sink used. An output error
raised while silencing (a file that could not be written) is raised by ``close`` once the
output is released, for its closer to report as one line (exit 74 for a write error).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

import mido

from streamsonic.errors import OutputError, StreamsonicError
from streamsonic.events import NoteEvent

if TYPE_CHECKING:
    from streamsonic.config import OutputConfig

log = logging.getLogger(__name__)

CC_ALL_SOUND_OFF = 120
CC_ALL_NOTES_OFF = 123
CC_PAN = 10


class Sink(ABC):
    """An output for timed MIDI messages.

    ``send(msg, time)`` is called by the scheduler in time order (for a sink with
    ``channel_messages`` True; every sink gets ``note``). ``time`` is in seconds on
    the scheduler's clock (``time.monotonic()`` for live runs, seconds from 0 for offline
    renders). A sink with ``lookahead > 0`` receives each message up to that many seconds
    before its time and must place it at ``time`` itself (audio sinks do this to render
    onsets at the exact sample); sinks with ``lookahead == 0`` get messages at their time.
    """

    #: Seconds before its time that the scheduler hands a message to this sink.
    lookahead: float = 0.0
    #: Whether this sink takes channel messages (``send``: note_on/note_off, program and
    #: control changes). A sink that only logs notes (:meth:`note`) sets it False: the
    #: scheduler then calls only its ``note``, at the note's start, and owes it no note-offs
    #: (when no sink takes them, a note costs no message scheduling at all).
    channel_messages: bool = True

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False
        self._sounding: dict[tuple[int, int], int] = {}
        self._channels: set[int] = set()
        self._last_time = 0.0

    # -- public API -------------------------------------------------------------------
    @property
    def lost(self) -> str | None:
        """Why this output's device is away (it drops messages until it returns), or None.

        Live outputs whose device can vanish (a JACK server, a MIDI port) override it.
        """
        return None

    @property
    def stats(self) -> dict[str, int]:
        """Counters of what went wrong or was done (e.g. ``underruns``, ``dropped``); the
        daemon's metrics export them. None by default."""
        return {}

    def note(self, event: NoteEvent) -> None:  # noqa: B027 - optional hook
        """Called once per note at its start (right after its note_on, for a sink that takes
        channel messages); sinks that log notes override it."""

    def tick(self, now: float) -> None:  # noqa: B027 - optional hook
        """Called about once a second by the live daemon with the scheduler clock's time, in
        the loop's thread (file outputs flush, rotate, render up to ``now``). Raise
        OutputError (or a subclass) when it fails."""

    def send(self, msg: mido.Message, time: float) -> None:
        """Send one channel message at ``time``; tracks sounding notes for ``panic``."""
        if self.closed:
            raise OutputError(f"output {self.name!r} is closed; cannot send {msg.type}")
        kind = msg.type
        if kind in {"note_on", "note_off"}:
            key = (msg.channel, msg.note)
            self._channels.add(key[0])
            sounding = self._sounding
            if kind == "note_on" and msg.velocity > 0:
                sounding[key] = sounding.get(key, 0) + 1
            else:
                left = sounding.pop(key, 0) - 1
                if left > 0:
                    sounding[key] = left
        elif hasattr(msg, "channel"):
            self._channels.add(msg.channel)
        if time > self._last_time:  # noqa: PLR1730 - a call of max() costs a third of send
            self._last_time = time
        self._send(msg, time)

    @property
    def sounding(self) -> set[tuple[int, int]]:
        """The (channel, note) pairs that are sounding now."""
        return set(self._sounding)

    def panic(self, time: float | None = None) -> None:
        """Silence everything: note_off for each sounding note, then All Notes Off and
        All Sound Off on every channel this sink used."""
        if self.closed:
            return
        when = self._last_time if time is None else time
        for channel, note in sorted(self._sounding):
            self._send(mido.Message("note_off", channel=channel, note=note, velocity=0), when)
        self._sounding.clear()
        for channel in sorted(self._channels):
            for control in (CC_ALL_NOTES_OFF, CC_ALL_SOUND_OFF):
                self._send(
                    mido.Message("control_change", channel=channel, control=control, value=0),
                    when,
                )

    def when_written(self, callback: Callable[[], None]) -> bool:
        """Run ``callback`` on the running loop once what this output has taken is
        written, and return True; False when that is so already (most outputs write as
        they take: nothing to wait for)."""
        return False

    async def settle_stopping(self) -> None:
        """A stop: hand on what this output holds while its reader takes it, briefly;
        give the rest up. Most outputs hold nothing."""
        return

    async def settle(self) -> None:
        """Wait until what this output holds has been handed on (at the end of the input,
        before it closes; a stop signal cuts the wait short). Most outputs hand everything
        on as they take it: nothing to wait for."""
        return

    def close(self, time: float | None = None) -> None:
        """Panic, then release the output. Safe to call more than once. An output error
        while silencing (a file that could not be written) is raised once the output is
        released; any other failure there is logged."""
        if self.closed:
            return
        failure: StreamsonicError | None = None
        try:
            self.panic(time)
        except StreamsonicError as err:  # one line, from whoever closes it
            failure = err
        except Exception:  # a failing output must still be released
            log.exception("output %s: silencing notes failed during close", self.name)
        finally:
            self.closed = True
            self._close()
        if failure is not None:
            raise failure

    def abandon(self) -> None:
        """Give the output up unfinished (a render that was interrupted or failed): an
        output that writes a file at the end (``render``'s) leaves the file as it was and
        removes what it wrote; any other closes as :meth:`close` does. Never raises: a
        failure is logged."""
        if self.closed:
            return
        if self._discard_unfinished():
            self.closed = True
            return
        try:
            self.close()
        except Exception:  # the render's own error is the one to report
            log.exception("output %s: closing it failed", self.name)

    def start(self) -> None:  # noqa: B027 - optional hook
        """Begin writing: an output opened with its file held back (a reload opens it so,
        and starts it only once the reload cannot fail any more) opens its file now.
        Raises OutputError as opening would have."""

    def retune(self, output: OutputConfig) -> None:  # noqa: B027 - optional hook
        """A reload changed the ``[output]`` settings (flush and rotation): apply them to
        this running output in place. Outputs that write no file ignore them."""

    def _discard_unfinished(self) -> bool:
        """:meth:`abandon`'s hook: give up what this output has written, if it writes a
        file only at the end (``render``'s); whether it did (else it is closed as usual)."""
        return False

    def __enter__(self) -> Sink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<{type(self).__name__} {self.name!r} ({state})>"

    # -- for subclasses ---------------------------------------------------------------
    @abstractmethod
    def _send(self, msg: mido.Message, time: float) -> None:
        """Deliver one message. Raise OutputError (or a subclass) when delivery fails."""

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release the backend's resources (called once, after panic)."""
