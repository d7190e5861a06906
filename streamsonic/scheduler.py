"""The scheduler: notes -> timed MIDI messages for every sink, note-offs included.

Each stream is monophonic: a new note of a stream ends the stream's sounding note first.
Every note_on gets its note_off (at ``start + duration``, or earlier when the stream's next
note starts). A channel gets a program change before its first note.

Sinks with ``lookahead > 0`` receive each message that much before its time (they place it
themselves, sample-exactly); the engine starts live notes at ``now + latency`` (the
largest lookahead), so a message already handed to a sink never needs to be taken back.

The scheduler runs on a :class:`Clock`: the asyncio loop for live runs, a
:class:`VirtualClock` for offline renders (same code, no waiting). It keeps its own queue of
the messages it owes (a heap by time, then by the order they were scheduled) and holds one
timer of the clock, for the earliest of them: a message costs a heap entry, not a timer, and a
note-off cancelled by the stream's next note is only forgotten. Messages due together go out
in the order they were scheduled (a stream's note_off before its next note_on at the same
time). The same note_on/note_off messages are reused (sinks only read them).

Sinks that take no channel messages (``Sink.channel_messages`` False: the events and MQTT
outputs, which log notes) get only ``Sink.note`` at each note's start. A note's messages go
to the sinks that take them at the time it is played, and its note-off (at its end, or
earlier when the stream's next note starts or the stream is released) to those same sinks
only: a sink added while the note sounds gets neither. When no sink takes channel messages,
a note queues nothing: the scheduler only remembers when it ends (``idle`` and ``end_time``
count it until then, as if its note-off were owed; one more clock timer, for the last of
those ends, runs the clock through them as through note-offs).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Protocol

import mido

from streamsonic.errors import OutputWriteError, StreamsonicError
from streamsonic.events import NoteEvent
from streamsonic.music import Earcon
from streamsonic.sinks.base import CC_PAN, Sink

log = logging.getLogger(__name__)


class Handle(Protocol):
    """A scheduled callback that can be cancelled."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """What the scheduler needs from a clock (``asyncio.AbstractEventLoop`` fits)."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object]) -> Handle: ...


class _VirtualHandle:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """A clock that jumps from one scheduled callback to the next (offline rendering)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._queue: list[tuple[float, int, Callable[[], object], _VirtualHandle]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        """Current virtual time."""
        return self.now

    def call_at(self, when: float, callback: Callable[[], object]) -> _VirtualHandle:
        """Schedule ``callback`` at virtual time ``when``."""
        handle = _VirtualHandle()
        heapq.heappush(self._queue, (when, next(self._seq), callback, handle))
        return handle

    def call_soon(self, callback: Callable[[], object]) -> _VirtualHandle:
        """Schedule ``callback`` now, after what is already due now (as a loop's next turn:
        the engine steps a batch so)."""
        return self.call_at(self.now, callback)

    def run_until(self, when: float) -> None:
        """Run every callback due at or before ``when``, in time order; time becomes ``when``."""
        while self._queue and self._queue[0][0] <= when:
            t, _, callback, handle = heapq.heappop(self._queue)
            self.now = max(self.now, t)
            if not handle.cancelled:
                callback()
        self.now = max(self.now, when)

    def run_all(self) -> None:
        """Run everything that is scheduled."""
        while self._queue:
            self.run_until(self._queue[0][0])


#: Distinct note_on messages kept for reuse (channel, pitch, velocity); the cache starts
#: afresh when it holds more.
MESSAGE_CACHE = 4096
#: The queue is rebuilt without its cancelled entries when it holds this many more than
#: the live ones (and more than twice as many).
COMPACT_SLACK = 4096

#: Notes remembered past their end (when no sink took their note-off) before the ended ones
#: are forgotten; then again when twice as many as are left.
SOUNDING_SLACK = 4096

# A message owed to a sink: (sink, message (None: only the note, for a sink that takes no
# channel messages), its time, the note it starts, the stream whose note it ends).
_Owed = tuple[Sink, mido.Message | None, float, NoteEvent | None, str | None]

_NO_KEYS: tuple[int, ...] = ()


class _Sounding:
    __slots__ = ("channel", "keys", "off_time", "pitch", "sinks", "start")

    def __init__(self, channel: int, pitch: int, off_time: float, start: float,
                 sinks: tuple[Sink, ...], keys: Sequence[int]) -> None:
        self.channel = channel
        self.pitch = pitch
        self.off_time = off_time
        self.start = start
        self.sinks = sinks  # the sinks that got its note_on (and owe its note_off)
        self.keys = keys  # its note_off's entries in the scheduler's queue


class Scheduler:
    """Sends notes to sinks at their times, with note-offs and program changes."""

    def __init__(
        self,
        clock: Clock,
        sinks: list[Sink],
        on_idle: Callable[[], None] | None = None,
        earcon: Earcon | None = None,
    ) -> None:
        self.clock = clock
        self.sinks = sinks
        self.earcon = earcon  # played after each accented note (None: no earcons)
        self.earcons = 0
        self.earcons_dropped = 0  # left out: they would have waited past earcon.max_lag
        self._earcon_free = -math.inf  # when the next earcon may start (earcon.gap)
        self._on_idle = on_idle
        self._sounding: dict[str, _Sounding] = {}
        # The latest end of a note no sink owes a note-off (a bound: release shortens notes),
        # and the clock's timer for it (the clock runs through the notes' ends as through
        # their note-offs)
        self._unowed_end = -math.inf
        self._logged_until = -math.inf  # the latest time a logging sink is owed a note
        # when_written's callbacks waiting for notes still to be handed over: (then, call)
        self._owed_calls: deque[tuple[float, Callable[[], None]]] = deque()
        self._quiet: Handle | None = None
        self._forget_at = SOUNDING_SLACK  # len(_sounding) that has the ended ones forgotten
        self._programs: dict[int, int] = {}
        self._pans: dict[int, int] = {}
        # What is owed, by key; the queue holds (time to hand over, key), cancelled keys
        # included (skipped when they come up); one clock timer for the earliest.
        self._pending: dict[int, _Owed] = {}
        self._queue: list[tuple[float, int]] = []
        #: Notes scheduled (``play``) that had not started when the scheduler closed: no
        #: output got them (a stop; the engine counted them as played).
        self.unsent = 0
        self._timer: Handle | None = None
        self._timer_at = math.inf
        self._ids = itertools.count()
        self._ons: dict[int, mido.Message] = {}
        self._offs: dict[int, mido.Message] = {}
        self.failed: list[tuple[Sink, BaseException]] = []
        #: Notes handed to each output, by its name (kept when an output is closed).
        self.notes_out: Counter[str] = Counter()

    @property
    def sinks(self) -> list[Sink]:
        """The outputs played to, in order."""
        return self._sinks

    @sinks.setter
    def sinks(self, sinks: list[Sink]) -> None:
        self._sinks = list(sinks)
        self._senders = tuple(s for s in self._sinks if s.channel_messages)
        self._loggers = tuple(s for s in self._sinks if not s.channel_messages)
        self.latency = max((s.lookahead for s in self._sinks), default=0.0)

    @property
    def idle(self) -> bool:
        """No message is waiting to be sent, and no note that no sink owes a note-off (no
        sink takes channel messages) is sounding."""
        if self._pending:
            return False
        now = self.clock.time()
        return self._unowed_until(now) <= now

    @property
    def end_time(self) -> float:
        """When the last scheduled note-off happens (the clock's now if none)."""
        now = self.clock.time()
        return max((s.off_time for s in self._sounding.values() if s.keys or s.off_time > now),
                   default=now)

    def play(self, note: NoteEvent) -> None:
        """Schedule ``note`` at ``note.start`` (clock time)."""
        start = note.start
        stream = note.stream
        now = self.clock.time()
        sounding = self._sounding
        previous = sounding.pop(stream, None)
        if previous is not None and previous.off_time > start:
            for key in previous.keys:
                self._pending.pop(key, None)
            if previous.sinks:
                self._dispatch(self._off(previous.channel, previous.pitch), start, now,
                               previous.sinks)
        channel, pitch = note.channel, note.pitch
        if self._programs.get(channel) != note.program or (
                note.pan is not None and self._pans.get(channel) != note.pan):
            self._setup_channel(channel, note.program, note.pan, start)
        off_time = start + note.duration
        senders = self._senders
        keys: Sequence[int]
        if senders:
            self._dispatch(self._on(channel, pitch, note.velocity), start, now, senders, note)
            keys = self._dispatch(self._off(channel, pitch), off_time, now, senders,
                                  stream=stream)
        else:
            keys = _NO_KEYS
            if off_time > self._unowed_end:
                self._unowed_end = off_time
                if self._quiet is None:
                    self._quiet = self.clock.call_at(off_time, self._quiet_down)
        for sink in self._loggers:
            if start - sink.lookahead <= now:
                self._deliver(sink, None, start, note, None)
            else:
                self._queue_owed(start - sink.lookahead, (sink, None, start, note, None))
                self._logged_until = max(self._logged_until, start - sink.lookahead)
        sounding[stream] = _Sounding(channel, pitch, off_time, start, senders, keys)
        if len(sounding) > self._forget_at:
            self._unowed_until(now)
        if note.accent and self.earcon is not None:
            self._play_earcon(self.earcon, note, start)

    def release(self, stream: str) -> bool:
        """End ``stream``'s sounding note now (an evicted stream): its note_off moves to the
        earliest time every output can still take it in order (``latency`` from now, and
        never before the note's start). Returns whether a note was sounding."""
        sounding = self._sounding.pop(stream, None)
        if sounding is None:
            return False
        at = max(self.clock.time() + self.latency, sounding.start)
        if at >= sounding.off_time:  # it ends sooner by itself
            self._sounding[stream] = sounding
            return False
        for key in sounding.keys:
            self._pending.pop(key, None)
        if sounding.sinks:
            self._dispatch(self._off(sounding.channel, sounding.pitch), at, self.clock.time(),
                           sounding.sinks)
        else:  # no sink owes its note-off: it ends at ``at``
            sounding.off_time = at
            self._sounding[stream] = sounding
        return True

    def _quiet_down(self) -> None:
        """The timer for the end of the notes no sink owes a note-off: again for a later
        end, else they have all ended."""
        self._quiet = None
        now = self.clock.time()
        if self._unowed_end > now:
            self._quiet = self.clock.call_at(self._unowed_end, self._quiet_down)
        elif not self._pending and self._on_idle is not None:
            self._on_idle()

    def _unowed_until(self, now: float) -> float:
        """When the last note that no sink owes a note-off ends (-inf if none); forgets the
        notes that ended with no note-off queued (their sinks had them at once, or none
        owed them)."""
        if self._unowed_end <= now and len(self._sounding) <= self._forget_at:
            return self._unowed_end
        end = -math.inf
        ended = []
        for stream, s in self._sounding.items():
            if s.off_time <= now:
                if not s.keys:  # nothing queued that would forget it
                    ended.append(stream)
            elif not s.sinks:
                end = max(end, s.off_time)
        for stream in ended:
            del self._sounding[stream]
        self._unowed_end = end
        self._forget_at = max(2 * len(self._sounding), SOUNDING_SLACK)
        return end

    def _on(self, channel: int, pitch: int, velocity: int) -> mido.Message:
        """The note_on message (reused; NoteEvent checked its fields when it was made, so
        no second validation per message)."""
        code = (channel << 14) | (pitch << 7) | velocity
        msg = self._ons.get(code)
        if msg is None:
            if len(self._ons) >= MESSAGE_CACHE:
                self._ons.clear()
            msg = self._ons[code] = mido.Message("note_on", skip_checks=True, channel=channel,
                                                 note=pitch, velocity=velocity)
        return msg

    def _off(self, channel: int, pitch: int) -> mido.Message:
        """The note_off message (reused)."""
        code = (channel << 7) | pitch
        msg = self._offs.get(code)
        if msg is None:
            msg = self._offs[code] = _off(channel, pitch)
        return msg

    def _setup_channel(self, channel: int, program: int, pan: int | None, when: float) -> None:
        """Program change and pan (CC 10) for ``channel``, when they differ from the last
        (remembered without a sink that takes them, for a sink added later)."""
        now = self.clock.time()
        if self._programs.get(channel) != program:
            self._programs[channel] = program
            self._dispatch(mido.Message("program_change", skip_checks=True, channel=channel,
                                        program=program), when, now, self._senders)
        if pan is not None and self._pans.get(channel) != pan:
            self._pans[channel] = pan
            self._dispatch(mido.Message("control_change", skip_checks=True, channel=channel,
                                        control=CC_PAN, value=pan), when, now, self._senders)

    def _play_earcon(self, earcon: Earcon, note: NoteEvent, start: float) -> None:
        at = start + earcon.delay
        if earcon.gap > 0.0:  # several at once: one after another, `gap` apart
            later = max(at, self._earcon_free)
            if later - at > earcon.max_lag + 1e-9:  # (sums of gaps round)
                self.earcons_dropped += 1
                return
            at = later
            self._earcon_free = at + earcon.gap
        pitch = earcon.note_for(note.direction)
        self._setup_channel(earcon.channel, earcon.program, None, at)
        if self._senders:
            now = self.clock.time()
            self._dispatch(mido.Message("note_on", channel=earcon.channel, note=pitch,
                                        velocity=earcon.velocity), at, now, self._senders)
            self._dispatch(self._off(earcon.channel, pitch), at + earcon.length, now,
                           self._senders)
        self.earcons += 1

    def _dispatch(
        self,
        msg: mido.Message,
        when: float,
        now: float,
        sinks: tuple[Sink, ...],
        note: NoteEvent | None = None,
        stream: str | None = None,
    ) -> list[int]:
        """Hand ``msg`` (due at ``when``) to each of ``sinks`` now, or queue it for the time
        each sink takes it (``when - lookahead``); returns the keys of the queued entries.
        ``stream``: the stream whose note the note_off ``msg`` ends."""
        keys: list[int] = []
        for sink in sinks:
            at = when - sink.lookahead
            if at <= now:
                self._deliver(sink, msg, when, note, stream)
            else:
                keys.append(self._queue_owed(at, (sink, msg, when, note, stream)))
        return keys

    def _queue_owed(self, at: float, owed: _Owed) -> int:
        """Queue ``owed`` for handing over at ``at``; returns its key."""
        key = next(self._ids)
        self._pending[key] = owed
        heapq.heappush(self._queue, (at, key))
        if at < self._timer_at:
            self._arm(at)
        return key

    def _arm(self, at: float) -> None:
        """The clock's timer for the queue's earliest entry, due at ``at``."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.clock.call_at(at, self._run_due)
        self._timer_at = at

    def _run_due(self) -> None:
        """Hand over every queued message that is due, in order; re-arm for the next."""
        self._timer = None
        limit = max(self.clock.time(), self._timer_at)
        self._timer_at = math.inf
        queue, pending = self._queue, self._pending
        while queue and queue[0][0] <= limit:
            _, key = heapq.heappop(queue)
            owed = pending.pop(key, None)
            if owed is not None:
                self._deliver(*owed)
        if self._owed_calls:
            self._owed_calls_due(limit)
        if len(queue) > max(2 * len(pending), COMPACT_SLACK):
            # mostly cancelled note-offs: rebuild the queue from what is still owed
            queue[:] = [entry for entry in queue if entry[1] in pending]
            heapq.heapify(queue)
        while queue and queue[0][1] not in pending:
            heapq.heappop(queue)
        calls = self._owed_calls
        if queue:
            self._arm(min(queue[0][0], calls[0][0]) if calls else queue[0][0])
        elif calls:
            self._arm(calls[0][0])
        elif not pending and self._quiet is None and self._on_idle is not None:
            self._on_idle()

    def _deliver(
        self, sink: Sink, msg: mido.Message | None, when: float, note: NoteEvent | None,
        stream: str | None,
    ) -> None:
        if sink.closed:
            return
        try:
            if msg is not None:
                sink.send(msg, when)
            if note is not None:
                sink.note(note)
                self.notes_out[sink.name] += 1
        except Exception as err:  # one failing output must not take the others down
            self._drop(sink, err)
        if stream is not None:  # the note_off of the stream's note
            current = self._sounding.get(stream)
            if current is not None and current.off_time <= when:
                del self._sounding[stream]

    def _drop(self, sink: Sink, err: Exception) -> None:
        """``sink`` failed: log one line, remember why, close it; the others play on."""
        log.error("output %s failed (%s); closing it", sink.name, err)
        self.failed.append((sink, err))
        self.sinks = [s for s in self.sinks if s is not sink]
        try:
            sink.close()
        except Exception:  # it failed already; its error was logged above
            log.debug("closing failed output %s", sink.name, exc_info=True)

    def add_sink(self, sink: Sink) -> None:
        """Start sending to ``sink`` too (a reload opened it): it gets every channel's
        program and pan first, then the notes that start from now on."""
        self.sinks = [*self.sinks, sink]
        if not sink.channel_messages:
            return
        when = self.clock.time() + sink.lookahead
        for channel, program in sorted(self._programs.items()):
            self._deliver(sink, mido.Message("program_change", channel=channel,
                                             program=program), when, None, None)
        for channel, pan in sorted(self._pans.items()):
            self._deliver(sink, mido.Message("control_change", channel=channel,
                                             control=CC_PAN, value=pan), when, None, None)

    def remove_sink(self, sink: Sink) -> None:
        """Stop sending to ``sink`` and close it (its sounding notes are released); what
        was scheduled for it is skipped. A failure to close is logged and remembered."""
        self.sinks = [s for s in self.sinks if s is not sink]
        self._close_sink(sink)

    def tick(self) -> None:
        """Give every sink its periodic turn (:meth:`Sink.tick`) at the clock's time; one that
        fails is closed as in ``send``."""
        now = self.clock.time()
        for sink in list(self.sinks):
            try:
                sink.tick(now)
            except Exception as err:
                self._drop(sink, err)

    def when_written(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once every note played so far has reached the sinks that log
        notes (the events output takes a note at its start: a phrase's data note comes
        after the model's, audio latency puts every start ahead) and every sink has
        written what it took: as a timer due then, after what that turn has queued
        already, or, where a sink holds lines back (the events output's writer thread),
        once the last one has written them. A stop before then leaves it unrun: what
        the notes owed stays owed, as the notes are not played."""
        if self._logged_until > self.clock.time():
            # (run by _run_due once it has handed over the notes due by then)
            self._owed_calls.append((self._logged_until, callback))
            if self._logged_until < self._timer_at:
                self._arm(self._logged_until)
            return
        self._when_taken_written(callback)

    def _owed_calls_due(self, limit: float) -> None:
        """The :meth:`when_written` callbacks whose notes have all been handed over."""
        calls = self._owed_calls
        while calls and calls[0][0] <= limit:
            self._when_taken_written(calls.popleft()[1])

    def _when_taken_written(self, callback: Callable[[], None]) -> None:
        waiting = 0

        def one_written() -> None:
            nonlocal waiting
            waiting -= 1
            if waiting == 0:
                callback()

        for sink in list(self.sinks):
            if sink.when_written(one_written):
                waiting += 1
        if waiting == 0:
            callback()

    async def settle_stopping(self) -> None:
        """A stop: each sink hands on what it holds while its reader takes it, briefly
        (:meth:`Sink.settle_stopping`); then what the notes handed over by now owed is
        settled where their lines were written (the rest stays owed)."""
        for sink in list(self.sinks):
            await sink.settle_stopping()
        self._owed_calls_due(self.clock.time())
        for _ in range(2):  # the writer's callbacks, already on the loop, run
            await asyncio.sleep(0)

    async def settle(self) -> None:
        """Wait until every sink has handed on what it holds (:meth:`Sink.settle`)."""
        for sink in list(self.sinks):
            await sink.settle()

    def close(self, abandon: bool = False) -> None:
        """Cancel what is still scheduled, silence every sink and close it (``abandon``:
        give each up unfinished, :meth:`Sink.abandon`: a render that did not finish leaves
        its files as they were)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        if self._quiet is not None:
            self._quiet.cancel()
            self._quiet = None
        # notes scheduled to start later, which no output will now get (counted)
        self.unsent += len({id(owed[3]) for owed in self._pending.values()
                            if owed[3] is not None})
        self._pending.clear()
        self._queue.clear()
        self._owed_calls.clear()  # (what they owed stays owed: their notes were not played)
        self._sounding.clear()
        for sink in self.sinks:
            if abandon:
                sink.abandon()
            else:
                self._close_sink(sink)

    def _close_sink(self, sink: Sink) -> None:
        """Close ``sink``; a failure is logged and remembered in ``failed``, never raised."""
        try:
            sink.close()
        except StreamsonicError as err:
            log.error("%s", err)
            self.failed.append((sink, err))
        except Exception as err:
            log.exception("closing output %s failed", sink.name)
            self.failed.append((sink, err))

    def check_written(self) -> None:
        """Raise :class:`OutputWriteError` if an output lost data it should have written
        (a file that could not be written); call after :meth:`close`."""
        lost = [str(err) for _, err in self.failed if isinstance(err, OutputWriteError)]
        if lost:
            raise OutputWriteError("; ".join(lost))


def _off(channel: int, pitch: int) -> mido.Message:
    """A note_off, unchecked: its channel and pitch come from a checked note or earcon."""
    return mido.Message("note_off", skip_checks=True, channel=channel, note=pitch, velocity=0)
