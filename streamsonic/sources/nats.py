"""The NATS source: subscribed subjects -> samples (or notes, with ``--play-notes``).

Why NATS: it is how several daemons share the streams without splitting any stream's
melody. The server's subject mapping partitions subjects deterministically by their
tokens (nats-server 2.8+), e.g. in ``nats-server.conf``::

    mappings = {
      "sensors.*": "sensors.{{wildcard(1)}}.{{partition(3,1)}}"
    }

A publisher sends ``sensors.boiler``; the server delivers it as ``sensors.boiler.2`` (the
partition of the token ``boiler``, always the same one). Each daemon subscribes to its
partitions: ``nats.subjects = ["sensors.*.{partition}"]`` with ``nats.partitions = [2]``
subscribes to ``sensors.*.2``. So every stream's samples reach exactly one daemon, in
order. The partition token is removed before naming: the stream is ``sensors.boiler``
whichever instance plays it, and ``nats.stream_name`` (``{subject}``, ``{subject[1]}``)
names it as ``mqtt.stream_name`` does for topics. Payloads are decoded exactly as MQTT
payloads are (:class:`streamsonic.mqtt.payload.PayloadDecoder`, with ``nats.payload``,
``nats.json_field`` and ``nats.timestamp_field``).

Core NATS delivers at most once: what is published while no daemon consumes a partition
is lost (the partition's streams go silent; nothing moves to another daemon).

The shape (all on the asyncio loop; nats-py is asyncio-native):

    nats-py reader task -> subscription callback: decode -> deque (bounded: when full
    the OLDEST item is dropped and counted) -> wake the consumer
    ``async for item in source`` drains the deque

A server that cannot be reached at start is waited for, as an MQTT broker is (the daemon
shows it in STATUS=), or for at most ``nats.connect_timeout`` seconds; one that refuses the
login raises a one-line :class:`NatsError` at once. A lost connection is retried with
jittered exponential backoff (``nats.reconnect_min`` .. ``nats.reconnect_max``) and the
subjects are subscribed again on every connect (nats-py's own reconnection is off: one
loop, ours, with the same behaviour as the MQTT source's).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass, fields
from functools import partial

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from streamsonic.config import Config, NatsConfig
from streamsonic.errors import ConfigError, NatsError
from streamsonic.events import NoteEvent, Sample
from streamsonic.mqtt.naming import Subject, check_template, stream_name
from streamsonic.mqtt.payload import PayloadDecoder
from streamsonic.sinks.reconnect import Backoff
from streamsonic.sources.nats_url import ServerUrl, server_url
from streamsonic.stats import BoundedKeys, Counters, RateLimitedLog

log = logging.getLogger(__name__)

#: Seconds to wait for the server to accept a connection (TCP and the INFO/CONNECT exchange).
CONNECT_TIMEOUT = 5
#: Seconds a clean stop waits for the connection to close.
CLOSE_TIMEOUT = 2.0
#: nats-py's buffer between its reader and our callback (messages, bytes). It holds what one
#: socket read parsed until the callback, which never waits, moves it into our queue; the
#: bound that matters (drop the oldest, counted) is ``nats.queue_size``. Overflowing this
#: one drops the newest (counted as ``dropped.slow_consumer``).
PENDING_MESSAGES = 65_536
PENDING_BYTES = 64 * 1024 * 1024
#: The token in ``nats.subjects`` that stands for this instance's partition numbers.
PARTITION = "{partition}"
#: Distinct subjects that get their own ``by_subject.*`` skip counters; later ones share one.
MAX_SUBJECT_COUNTERS = 1000

Item = Sample | NoteEvent


@dataclass(frozen=True)
class Subscription:
    """One subject filter to subscribe to, and where its partition token is (None: none)."""

    filter: str
    partition_token: int | None

    def stream_subject(self, subject: str) -> str:
        """The subject as its publisher sent it: the partition token removed."""
        if self.partition_token is None:
            return subject
        tokens = subject.split(".")
        if self.partition_token < len(tokens):
            del tokens[self.partition_token]
        return ".".join(tokens)


def check_subject(subject: str) -> None:
    """Raise ConfigError unless ``subject`` is a valid subscription subject (``*`` and ``>``
    wildcards, one ``{partition}`` token at most)."""
    where = f"nats.subjects: {subject!r}"
    if not subject or any(c.isspace() for c in subject):
        raise ConfigError(f"{where} is empty or contains white space; write e.g. 'sensors.*'")
    tokens = subject.split(".")
    for i, token in enumerate(tokens):
        if not token:
            raise ConfigError(f"{where} has an empty token (two dots, or a dot at an end)")
        if token == ">" and i != len(tokens) - 1:
            raise ConfigError(f"{where}: '>' must be the last token")
        if token not in ("*", ">", PARTITION) and any(c in token for c in "*>{}"):
            raise ConfigError(f"{where}: '*', '>' and {PARTITION} must be whole tokens")
    if tokens.count(PARTITION) > 1:
        raise ConfigError(f"{where} has {PARTITION} more than once")


def subscriptions(nats_config: NatsConfig) -> list[Subscription]:
    """The filters this instance subscribes to: each subject once per partition."""
    if not nats_config.subjects:
        raise ConfigError("no NATS subjects to subscribe to; pass --subject SUBJECT "
                        "(repeatable) or set nats.subjects, e.g. 'sensors.*'")
    out: list[Subscription] = []
    for subject in nats_config.subjects:
        check_subject(subject)
        tokens = subject.split(".")
        if PARTITION not in tokens:
            if nats_config.partitions:
                raise ConfigError(
                    f"nats.subjects: {subject!r} has no {PARTITION} token, but "
                    f"nats.partitions = {list(nats_config.partitions)}; write the subject as "
                    "the server's mapping delivers it, e.g. 'sensors.*.{partition}' for "
                    'mappings = { "sensors.*": "sensors.{{wildcard(1)}}.{{partition(3,1)}}" }')
            out.append(Subscription(subject, None))
            continue
        if not nats_config.partitions:
            raise ConfigError(f"nats.subjects: {subject!r} has a {PARTITION} token; set "
                            "nats.partitions (--partition N, repeatable) to the partitions "
                            "this instance plays")
        index = tokens.index(PARTITION)
        if ">" in tokens[:index]:  # pragma: no cover - check_subject refuses it
            raise ConfigError(f"nats.subjects: {subject!r}: '>' must be the last token")
        for part in nats_config.partitions:
            filt = ".".join(str(part) if i == index else t for i, t in enumerate(tokens))
            out.append(Subscription(filt, index))
    return out


class NatsSource:
    """Samples (or notes) from NATS subjects; an async context manager and async iterator."""

    def __init__(self, config: Config, play_notes: bool = False) -> None:
        settings = config.nats
        self.config = config
        self.settings = settings
        self.url: ServerUrl = server_url(settings)
        self.subscriptions = subscriptions(settings)
        check_template(settings.stream_name, "nats.stream_name", "subject")
        template = settings.stream_name
        self._decoder = PayloadDecoder(config, play_notes=play_notes, settings=settings,
                                       name_of=lambda subject: stream_name(template, subject,
                                                                           Subject))
        self._counters = Counters()
        self._warn = RateLimitedLog(log, config.daemon.warn_interval)
        self._subject_keys = BoundedKeys(MAX_SUBJECT_COUNTERS, "(other subjects)")
        # (item, when its message was handed to us: time.monotonic)
        self._queue: collections.deque[tuple[Item, float]] = collections.deque()
        self._arrived: float | None = None  # when the item yielded last came
        self._max_queue = settings.queue_size
        self._client: Client | None = None
        self._wake_event: asyncio.Event | None = None
        self._lost: asyncio.Event | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False
        self._last_error: BaseException | None = None
        self._unreachable = True  # the last failed connect: waiting may help

    @classmethod
    def from_config(cls, config: Config, play_notes: bool = False) -> NatsSource:
        """The source for ``config.nats``; checks URL, subjects and naming rule up front."""
        return cls(config, play_notes=play_notes)

    # -- Source protocol ----------------------------------------------------------------
    @property
    def stats(self) -> dict[str, int]:
        """Counters: received, samples/notes (yielded), dropped.queue_full (our queue was
        full: the oldest went), dropped.slow_consumer (nats-py's buffer overflowed),
        skipped.<reason> (bad input), by_subject.<subject>.<reason>, ignored.<reason>
        (header and comment lines), connects, disconnects, subscribed, errors; once
        closed, unread (items received and never taken)."""
        return self._counters.snapshot()

    @property
    def queued(self) -> int:
        """Items waiting in the queue."""
        return len(self._queue)

    @property
    def connected(self) -> bool:
        """Whether it is connected now."""
        client = self._client
        return client is not None and client.is_connected

    @property
    def waiting_for(self) -> str | None:
        """What it waits for while it cannot deliver; None while connected."""
        return None if self.connected else f"the NATS server at {self.url.host}:{self.url.port}"

    async def check_reconfigure(self, config: Config) -> None:
        """Nothing to try before a reload: :meth:`reconfigure` applies nothing."""

    def reconfigure(self, config: Config) -> list[str]:
        """A reload changes nothing here: every ``[nats]`` key that changed is returned
        (they need a restart)."""
        old, new = self.settings, config.nats
        return [f"nats.{f.name}" for f in fields(old)
                if getattr(old, f.name) != getattr(new, f.name)]

    async def __aenter__(self) -> NatsSource:
        self._wake_event = asyncio.Event()
        self._lost = asyncio.Event()
        try:
            await self._connect()
        except NatsError as err:
            if not self._unreachable:  # a refused login: retrying cannot fix it
                raise
            limit = self.settings.connect_timeout
            if limit:
                await self._connect_within(limit, err)
            else:  # as MQTT: a server down at start is waited for, not an exit
                log.warning("%s; waiting for it (nats.connect_timeout gives up after a "
                            "while instead)", err)
                self._lost.set()
        self._supervisor = asyncio.create_task(self._reconnect_loop())
        return self

    async def _connect_within(self, limit: float, first: NatsError) -> None:
        """Retry the first connect with backoff for ``limit`` seconds; a NatsError saying
        how long it waited, or the one of a refused login, when it did not connect."""
        deadline = time.monotonic() + limit
        backoff = Backoff(self.settings.reconnect_min, self.settings.reconnect_max)
        err = first
        log.warning("%s; waiting for it, for at most %g s (nats.connect_timeout)", err, limit)
        while time.monotonic() < deadline:
            await asyncio.sleep(min(backoff.next(), max(deadline - time.monotonic(), 0.0)))
            try:
                await self._connect()
                return
            except NatsError as again:
                if not self._unreachable:
                    raise
                err = again
        raise NatsError(f"{err} (waited {limit:g} s: nats.connect_timeout)")

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection; iteration ends. Safe to call twice. Items still queued are
        not played (core NATS does not deliver them again)."""
        if self._closed:
            return
        self._closed = True
        if self._wake_event is not None:
            self._wake_event.set()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
        await self._close_client()
        if self._queue:  # received, never taken: counted, not lost unseen
            self._counters.add("unread", len(self._queue))

    def __aiter__(self) -> NatsSource:
        return self

    async def __anext__(self) -> Item:
        event = self._wake_event
        if event is None:
            raise RuntimeError("use 'async with NatsSource(...)' before iterating")
        while True:
            try:
                item, self._arrived = self._queue.popleft()
            except IndexError:
                pass
            else:
                self._counters.add("notes" if isinstance(item, NoteEvent) else "samples")
                return item
            if self._closed:
                raise StopAsyncIteration
            event.clear()
            if self._queue or self._closed:
                continue
            await event.wait()

    def arrived(self) -> float | None:
        """When the item yielded last was handed to the source (``time.monotonic``,
        :class:`streamsonic.events.Arrival`): its wait in the queue counts against its
        deadline."""
        return self._arrived

    # -- connecting ---------------------------------------------------------------------
    async def _connect(self) -> None:
        """Connect and subscribe; a NatsError says why not."""
        self._last_error = None
        try:
            client = await asyncio.wait_for(nats.connect(
                self.url.connect_url,
                name="streamsonic",
                allow_reconnect=False,  # our loop reconnects (see the module docstring)
                max_reconnect_attempts=1,  # nats-py: try the server twice, then give up
                reconnect_time_wait=0,
                connect_timeout=CONNECT_TIMEOUT,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                closed_cb=self._on_closed,
            ), CONNECT_TIMEOUT * 3)
        except (OSError, TimeoutError, nats.errors.Error) as err:
            raise self._explain(err) from None
        self._client = client
        self._counters.add("connects")
        try:
            for sub in self.subscriptions:
                await client.subscribe(sub.filter, cb=partial(self._on_message, sub),
                                       pending_msgs_limit=PENDING_MESSAGES,
                                       pending_bytes_limit=PENDING_BYTES)
            await client.flush(CONNECT_TIMEOUT)
        except (OSError, TimeoutError, nats.errors.Error) as err:
            await self._close_client()
            raise self._explain(err) from None
        self._counters.add("subscribed")
        log.info("NATS server %s: connected, subscribed to %s", self.url,
                 ", ".join(repr(s.filter) for s in self.subscriptions))

    def _explain(self, err: BaseException) -> NatsError:
        """A one-line error for a failed connect (nats-py reports the cause to error_cb);
        ``_unreachable`` says whether waiting may help (no server there, no answer), not a
        refused login."""
        cause = self._last_error or err
        text = str(cause) or type(cause).__name__
        self._unreachable = not (isinstance(cause, nats.errors.AuthorizationError)
                                 or "uthoriz" in text)
        if isinstance(cause, ConnectionRefusedError):
            fix = "is nats-server running there? (apt install nats-server)"
        elif isinstance(cause, nats.errors.AuthorizationError) or "uthoriz" in text:
            fix = ("check the user (nats.url's nats://user@host, or nats.username) and the "
                   "password (nats.password, nats.password_file or $STREAMSONIC_NATS_PASSWORD)")
        elif isinstance(cause, TimeoutError | asyncio.TimeoutError):
            text = f"no answer within {CONNECT_TIMEOUT:g} s"
            fix = "check the host and port, and that it is a NATS server"
        else:
            fix = "check nats.url (--nats) and that the server is healthy"
        return NatsError(f"NATS server {self.url}: cannot connect ({text}); {fix}")

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is None or client.is_closed:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), CLOSE_TIMEOUT)

    async def _reconnect_loop(self) -> None:
        """Reconnect after a lost connection, with jittered exponential backoff."""
        lost = self._lost
        assert lost is not None
        backoff = Backoff(self.settings.reconnect_min, self.settings.reconnect_max)
        attempt = 0
        while not self._closed:
            await lost.wait()
            if self._closed:
                return
            lost.clear()
            delay = backoff.next()
            attempt += 1
            log.info("NATS server %s: reconnecting in %.1f s (attempt %d)", self.url, delay,
                     attempt)
            await asyncio.sleep(delay)
            if self._closed:
                return
            await self._close_client()
            try:
                await self._connect()
            except NatsError as err:
                self._warn.warning("reconnect", "%s", err)
                lost.set()
                continue
            backoff.reset()
            attempt = 0

    # -- nats-py callbacks (on the loop) ------------------------------------------------
    async def _on_error(self, err: Exception) -> None:
        self._last_error = err
        if isinstance(err, nats.errors.SlowConsumerError):
            self._counters.add("dropped.slow_consumer")
            self._warn.warning("slow_consumer", "NATS: the subscription's buffer is full "
                               "(%d messages): dropping; the engine is not keeping up",
                               self._max_queue)
            return
        self._counters.add("errors")
        if self._client is not None:  # while connecting, _explain reports it
            self._warn.warning(f"error\0{type(err).__name__}", "NATS server %s: %s", self.url,
                               err or type(err).__name__)

    async def _on_disconnected(self) -> None:
        self._counters.add("disconnects")
        if not self._closed and self._client is not None:
            log.warning("NATS server %s: disconnected; will reconnect", self.url)

    async def _on_closed(self) -> None:
        if not self._closed and self._lost is not None:
            self._lost.set()

    async def _on_message(self, sub: Subscription, msg: Msg) -> None:
        try:
            self._handle(sub, msg.subject, msg.data)
        except Exception:  # never let one message end the subscription
            self._counters.add("skipped.internal_error")
            if self._warn.warning("internal_error", "NATS subject %s: failed to handle a "
                                  "message", msg.subject):
                log.debug("the failure", exc_info=True)

    def _handle(self, sub: Subscription, subject: str, data: bytes) -> None:
        self._counters.add("received")
        subject = sub.stream_subject(subject)
        decoded = self._decoder.decode(subject, data, time.time())
        for reason in decoded.skipped:
            self._skip(subject, reason, data, decoded.detail)
        for reason in decoded.ignored:
            self._counters.add(f"ignored.{reason}")
        if decoded.items:
            self._push(decoded.items)

    def _skip(self, subject: str, reason: str, payload: bytes, detail: str = "") -> None:
        self._counters.add(f"skipped.{reason}")
        self._counters.add(f"by_subject.{self._subject_keys.key(subject)}.{reason}")
        self._warn.warning(f"skip\0{reason}", "NATS subject %s: skipped a payload (%s%s): "
                           "%r", subject, reason, f": {detail}" if detail else "",
                           payload[:60])

    def _push(self, items: list[Item]) -> None:
        queue = self._queue
        dropped = 0
        stamp = time.monotonic()
        for item in items:
            if len(queue) >= self._max_queue:
                queue.popleft()
                dropped += 1
            queue.append((item, stamp))
        if dropped:
            self._counters.add("dropped.queue_full", dropped)
            self._warn.warning("queue_full", "NATS queue full (%d items): dropped the %d "
                               "oldest; the engine is not keeping up", self._max_queue,
                               dropped)
        if self._wake_event is not None:
            self._wake_event.set()

