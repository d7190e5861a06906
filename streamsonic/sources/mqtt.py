"""The MQTT source: subscribed topics -> samples (or notes, with ``--play-notes``).

paho-mqtt 2.x is used directly rather than through aiomqtt: we need a network thread that
never blocks, a drop-oldest queue with exact counts, acknowledgements sent only once a
message's note is scheduled, and our own jittered reconnect loop; with aiomqtt each of those
would sit behind another layer (its queue is unbounded, and it leaves reconnecting to the
caller anyway). The shape:

    network thread (ours: select() on paho's socket and a wake-up socket, then paho's
    loop_read/loop_write/loop_misc; paho reads from one recv of up to 64 KiB per turn,
    ``streamsonic.mqtt.chunked``, and every packet that recv gave is handled in the turn)
      on_message -> decode payload (a bare number on a known topic: ``PayloadDecoder.fast``)
      -> the turn's batch; at the turn's end the batch goes into the deque in one step
      (bounded: when full the OLDEST items are dropped and counted) ->
      ``loop.call_soon_threadsafe(wake)`` (at most one pending)
    asyncio side: ``async for item in source`` drains the deque; asking for the next item
      settles the previous item, unless the engine took over its receipt (``hold``).

The network thread is the only one that appends, drops or touches the paho client, so the
deque never exceeds ``mqtt.queue_size`` and needs no lock; the consumer only pops.

Acknowledgement (QoS 1): paho runs with ``manual_ack``; each item of a message carries the
message's receipt, and the message is acknowledged (PUBACK) once every item is settled. The
engine holds an item's receipt (``hold``) and settles it when the note that plays the item
is scheduled: at once, or later if it waits in its stream's backlog, or folded into an
aggregate note; an item dropped for good (an evicted stream, a full stream table) is
settled when it is dropped. A consumer that does not hold settles each item when it asks
for the next. Messages that give nothing to play (bad payloads, retained values, items
dropped from a full queue) are acknowledged at once. Until then the broker keeps the
message: with a persistent
session (fixed client id, ``mqtt.clean_start = false``) it delivers it again after a crash
or a SIGKILL, so a message is played at least once (one played just before a crash may
play twice); a clean stop acknowledges what was played and no more, then waits for the
broker to close the connection (see ``_disconnect``). An acknowledgement is only sent on
the connection that received the message (its packet id may be reused on the next one).
QoS 2 messages are acknowledged by paho on receipt (PUBREC comes
before the message is handed over, and paho keeps no state across restarts), so only
QoS 1 is crash-safe; QoS 0 is never acknowledged. The broker sends at most its inflight
window of unacknowledged QoS 1 messages (mosquitto's ``max_inflight_messages``, 20 by
default): messages waiting in backlogs use it up, so QoS 1 streams faster than
``clock.max_rate`` need a larger window on the broker.

Startup connects once. A broker that refuses the TLS certificate or the login, or a port
that does not speak MQTT, is a one-line ``MqttError`` at once (exit 69: a restart cannot fix
it). A broker that cannot be reached (refused, unreachable, no CONNACK in time) is retried
in the network thread like a lost connection, and the source starts meanwhile: ``waiting_for``
names the broker (the daemon shows it in STATUS=) until it connects; ``mqtt.connect_timeout``
(0: never) bounds the wait, after which iteration raises an ``MqttError``. After that, a
lost connection is retried with jittered exponential backoff (``mqtt.reconnect_min`` ..
``mqtt.reconnect_max``; the backoff restarts only after a session that lasted), and the
topics are subscribed again on every connect. A reload (``reconfigure``) subscribes and
unsubscribes topics on the running connection, and replaces the connection when the broker
settings changed, once ``check_reconfigure`` has tried them: a broker that refuses the new
login, TLS or protocol (or, while connected, cannot be reached) fails the reload, and the
running connection stays. With ``mqtt.clean_start = false``, a fixed
client id and ``mqtt.session_expiry`` the broker keeps the session while we are away and
delivers what was published meanwhile (QoS >= 1).

Session takeover: a second client connecting with our client id takes the session over.
MQTT 5 brokers say so (DISCONNECT reason 0x8E); with 3.1.1 the broker just closes the
connection, so ``SHORT_SESSIONS_FOR_TAKEOVER`` sessions in a row that the broker ended
right after accepting them are taken as a takeover. Either way one error names the client
id and the fix, and then ``mqtt.on_takeover`` decides: ``retry`` reconnects only about
every ``mqtt.takeover_retry`` seconds (instead of taking the session back at once, which is
how two daemons with one id used to fight many times a second), ``exit`` makes iteration
raise an ``MqttError`` (the daemon exits 69).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import random
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.subscribeoptions import SubscribeOptions

from streamsonic.config import Config, MqttConfig
from streamsonic.errors import ConfigError, MqttError
from streamsonic.events import NoteEvent, Sample
from streamsonic.mqtt.chunked import ChunkedClient
from streamsonic.mqtt.connection import (
    BrokerUrl,
    build_client,
    client_id_for,
    connect_args,
    explain_refusal,
    explain_socket_error,
    parse_url,
    self_connected,
)
from streamsonic.mqtt.naming import check_filter, check_template
from streamsonic.mqtt.payload import PayloadDecoder
from streamsonic.stats import BoundedKeys, Counters, RateLimitedLog

log = logging.getLogger(__name__)

#: Seconds one network-loop ``select()`` waits for activity (bounds shutdown time).
LOOP_TIMEOUT = 0.1
#: Packets one network-loop turn reads at most before it sends acknowledgements and hands
#: what it decoded over (a turn reads what one ``recv`` gave, up to 64 KiB).
READ_PACKETS = 2000
#: Seconds to wait for the broker's CONNACK at startup.
CONNECT_TIMEOUT = 10.0
#: paho's own limit on one TCP connect (seconds); ``mqtt.connect_timeout`` may cut it.
PAHO_CONNECT_TIMEOUT = 5.0
#: mqtt.* settings that need a new connection when a reload changes them.
BROKER_KEYS = ("url", "client_id", "protocol", "username", "password", "password_file",
               "ca_file", "cert_file", "key_file", "keepalive", "clean_start",
               "session_expiry", "qos")
#: Seconds the network thread spends sending the last acknowledgements and DISCONNECT.
FLUSH_TIMEOUT = 2.0
#: Distinct topics that get their own ``by_topic.*`` skip counters; later ones share one.
MAX_TOPIC_COUNTERS = 1000
#: MQTT 5 DISCONNECT reason code "Session taken over".
SESSION_TAKEN_OVER = 0x8E
#: A session the broker ends sooner than this many seconds (or ``2 * reconnect_min`` if
#: longer) after accepting it is "short"; a longer one restarts the reconnect backoff.
SHORT_SESSION = 5.0
#: Short sessions in a row taken as a session takeover (MQTT 3.1.1 gives no reason code).
SHORT_SESSIONS_FOR_TAKEOVER = 3

Item = Sample | NoteEvent


@dataclass(frozen=True, slots=True)
class _Ack:
    """How to acknowledge one QoS 1 message, and the connection that received it."""

    mid: int
    qos: int
    generation: int


class _Receipt:
    """One QoS 1 message whose items are being played: acknowledged once each of them is
    done (scheduled as a note, or dropped for good). The consumer settles items on the
    event loop, the network thread those it drops from a full queue: hence the lock."""

    __slots__ = ("_ack", "_pending", "_source")

    def __init__(self, source: MqttSource, ack: _Ack, pending: int) -> None:
        self._source = source
        self._ack = ack
        self._pending = pending

    def done(self) -> None:
        """One of the message's items is settled; the last one acknowledges it."""
        with self._source._receipt_lock:
            self._pending -= 1
            if self._pending != 0:
                return
        self._source._release(self._ack)


@dataclass(frozen=True, slots=True)
class _Reconfigured:
    """A reloaded configuration for the network thread to take over; ``client`` (with
    ``url`` and ``client_id``) when the broker settings changed: connect anew."""

    config: Config
    decoder: PayloadDecoder
    client: paho.Client | None = None
    url: BrokerUrl | None = None
    client_id: str = ""


class _BrokerDown(MqttError):
    """The broker cannot be reached at startup (retried: it may come up later)."""


def _closed_early(url: BrokerUrl, rc: int) -> MqttError:
    """The broker closed the connection before it answered the login (paho's ``rc``)."""
    if url.tls:
        fix = ("if the broker requires a client certificate, set mqtt.cert_file and "
               "mqtt.key_file; else check the port speaks MQTT over TLS")
    else:
        fix = "check the port speaks plain MQTT (a TLS port needs mqtts://)"
    return MqttError(f"MQTT broker {url} closed the connection before accepting it "
                     f"({paho.error_string(rc).rstrip('.')}); {fix}")


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Delay before reconnect attempt ``attempt`` (0-based): ``low * 2**attempt`` capped at
    ``high``, then jittered uniformly into its upper half so that a fleet of daemons does
    not reconnect in lockstep."""
    ceiling = min(high, low * (2.0 ** min(attempt, 32)))
    return rng.uniform(ceiling / 2, ceiling)


def takeover_delay(retry: float, rng: random.Random) -> float:
    """Delay before reconnecting after a session takeover: ``retry`` seconds, jittered down
    by up to a quarter (two daemons that share an id then do not return in lockstep)."""
    return rng.uniform(0.75 * retry, retry)


class MqttSource:
    """Samples (or notes) from MQTT topics; an async context manager and async iterator."""

    def __init__(self, config: Config, play_notes: bool = False) -> None:
        mqtt = config.mqtt
        self.config = config
        self.play_notes = play_notes
        self.url: BrokerUrl = parse_url(mqtt.url)
        if not mqtt.topics:  # a configuration error (exit 78), as check-config says
            raise ConfigError(
                f"no MQTT topics to subscribe to on {self.url}; pass --topic FILTER "
                "(repeatable) or set mqtt.topics"
            )
        for topic_filter in mqtt.topics:
            check_filter(topic_filter)
        check_template(mqtt.stream_name)
        self.topics = tuple(mqtt.topics)
        self.client_id = client_id_for(mqtt)
        #: QoS 1 messages are acknowledged by us, once taken (see the module docstring).
        self.manual_ack = mqtt.qos == 1
        self._decoder = PayloadDecoder(config, play_notes=play_notes)
        self._counters = Counters()
        self._warn = RateLimitedLog(log, config.daemon.warn_interval)
        self._topic_keys = BoundedKeys(MAX_TOPIC_COUNTERS, "(other topics)")
        # (item, its receipt, when the network thread handed it over: time.monotonic)
        self._queue: collections.deque[tuple[Item, _Receipt | None, float]] = collections.deque()
        # what the network thread decoded in this loop turn, handed over at its end
        self._batch: list[tuple[Item, _Receipt | None]] = []
        self._received = 0  # messages of this turn, counted at its end
        self._yielded = {"samples": 0, "notes": 0}  # the consumer's, read by ``stats``
        self._max_queue = mqtt.queue_size
        self._rng = random.Random()
        self._stop = threading.Event()
        self._connack = threading.Event()
        self._refusal: object | None = None
        self._attempt = 0
        self._sub_mids: dict[int, tuple[str, ...]] = {}
        self._retained_logged = False
        self._client: paho.Client | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_event: asyncio.Event | None = None
        self._wake_pending = False
        self._closed = False
        # acknowledgements: the consumer appends, the network thread sends
        self._acks: collections.deque[_Ack] = collections.deque()
        self._taken: _Receipt | None = None
        self._arrived: float | None = None  # when the item yielded last was handed over
        self._receipt_lock = threading.Lock()
        self._ack_wake_pending = False
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        # connections and takeovers (network thread)
        self._generation = 0
        self._session_start: float | None = None
        self._short_sessions = 0
        self._takeover = False
        self._takeover_logged = False
        self._failure: MqttError | None = None
        # startup while the broker is down (network thread), and reloads
        self._started = time.monotonic()
        self._last_error = ""
        self._reconfigured: _Reconfigured | None = None

    @classmethod
    def from_config(cls, config: Config, play_notes: bool = False) -> MqttSource:
        """The source for ``config.mqtt``; checks URL, topics and naming rule up front."""
        return cls(config, play_notes=play_notes)

    # -- Source protocol ----------------------------------------------------------------
    @property
    def stats(self) -> dict[str, int]:
        """Counters: received, samples/notes (yielded), acked (QoS 1 acknowledgements
        sent), acks.stale (not sent: the message came on an earlier connection),
        dropped.queue_full, skipped.<reason> (bad input), by_topic.<topic>.<reason> (the
        same per topic), ignored.<reason> (header/comment lines), skipped.retained,
        connects, disconnects, subscribed, takeovers; once closed, unread (items received
        and never taken)."""
        counts = self._counters.snapshot()
        for name, n in self._yielded.items():
            if n:
                counts[name] = n
        return counts

    @property
    def queued(self) -> int:
        """Items waiting in the queue."""
        return len(self._queue)

    @property
    def connected(self) -> bool:
        """Whether a connection to the broker is up (the broker accepted it)."""
        return self._session_start is not None

    @property
    def waiting_for(self) -> str | None:
        """``"the broker at HOST:PORT"`` while not connected (not yet, or lost), else None."""
        if self.connected or self._closed:
            return None
        return f"the broker at {self.url.host}:{self.url.port}"

    async def check_reconfigure(self, config: Config) -> None:
        """Before a reload applies ``config``: changed broker settings (address,
        credentials, TLS, protocol...) are tried with a connection of their own, which
        logs in and leaves at once, while the running connection goes on. A broker that
        refuses the login, the TLS handshake or the protocol raises that refusal (an
        :class:`MqttError`, as at startup), and so does one that cannot be reached while
        the running connection is up: the reload then fails and nothing changes. One that
        cannot be reached while the running connection is down too is no reason to keep
        the old settings: a warning, and the reload goes on (the new broker is retried).

        The trial uses a client id of its own (the configured one with ``-check``, or a
        random one), a clean session and no session expiry, so it neither takes over nor
        leaves behind a persistent session."""
        old, new = self.config.mqtt, config.mqtt
        if config == self.config or all(getattr(new, key) == getattr(old, key)
                                        for key in BROKER_KEYS):
            return
        url = parse_url(new.url)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[BaseException | None] = loop.create_future()

        def settle(outcome: BaseException | None) -> None:
            if not answer.done():
                answer.set_result(outcome)

        def trial() -> None:
            try:
                self._try_broker(new, url)
                outcome: BaseException | None = None
            except BaseException as err:  # handed to the event loop, raised there
                outcome = err
            with contextlib.suppress(RuntimeError):  # the loop closed: the daemon is gone
                loop.call_soon_threadsafe(settle, outcome)

        # A daemon thread, not the loop's executor: a stop during the trial need not wait
        # for it (it ends within CONNECT_TIMEOUT, or at once once the source is closed).
        threading.Thread(target=trial, name=f"mqtt-check-{url.host}", daemon=True).start()
        failure = await answer
        if isinstance(failure, _BrokerDown):
            if self.connected:
                raise MqttError(f"{failure}; the new settings are not applied, and the "
                                f"connection to {self.url} stays") from None
            log.warning("%s; applying the new settings anyway (the broker at %s is not "
                        "connected either): retrying the new one", failure, self.url)
        elif failure is not None:
            raise failure

    def _try_broker(self, mqtt: MqttConfig, url: BrokerUrl) -> None:
        """Log in to ``url`` with ``mqtt``'s settings once and leave (a worker thread):
        :class:`_BrokerDown` when it cannot be reached, an :class:`MqttError` saying why
        when it refuses us, nothing when it accepts us."""
        trial = dataclasses.replace(mqtt, clean_start=True, session_expiry=0)
        client = build_client(trial, url, client_id_for(trial, "-check"))
        answers: list[Any] = []
        client.on_connect = lambda _c, _u, _f, reason, _p: answers.append(reason)
        try:
            client.connect(**connect_args(trial, url))
        except ssl.SSLError as err:
            raise explain_socket_error(err, url) from None
        except OSError as err:
            raise _BrokerDown(str(explain_socket_error(err, url))) from None
        try:
            sock = client.socket()
            if isinstance(sock, socket.socket) and self_connected(sock):
                raise _BrokerDown(f"MQTT broker {url}: nothing listens on its port (the "
                                  "connection reached its own port)")
            deadline = time.monotonic() + CONNECT_TIMEOUT
            while not answers and not self._stop.is_set():
                rc = client.loop(timeout=LOOP_TIMEOUT)
                if rc != paho.MQTT_ERR_SUCCESS and not answers:
                    raise _closed_early(url, rc)
                if time.monotonic() > deadline:
                    raise _BrokerDown(f"MQTT broker {url} did not accept the connection "
                                      f"within {CONNECT_TIMEOUT:g} s")
        finally:
            with contextlib.suppress(Exception):  # leaving: nothing more to learn from it
                client.disconnect()
                client.loop_write()
        if answers and answers[0].is_failure:
            raise explain_refusal(answers[0], url, mqtt.username or url.username)

    def reconfigure(self, config: Config) -> list[str]:
        """A reload, applied in the network thread: new topics are subscribed and old ones
        unsubscribed on the running connection; payload decoding, stream names, queue size
        and backoff apply to what arrives next; changed broker settings (address, client id,
        credentials, TLS, keepalive, session, QoS) make a new client that replaces the
        running connection (closed cleanly first, so a persistent session is not taken
        over by ourselves; :meth:`check_reconfigure` has tried them first). A bad topic
        filter, stream name rule, URL, TLS file or password file raises here and changes
        nothing. Returns the settings that need a restart: none."""
        old, new = self.config.mqtt, config.mqtt
        for topic_filter in new.topics:
            check_filter(topic_filter)
        check_template(new.stream_name)
        if not new.topics:
            raise MqttError(f"no MQTT topics to subscribe to on {self.url}; mqtt.topics is "
                            "empty in the reloaded configuration")
        if config == self.config:
            return []
        decoder = PayloadDecoder(config, play_notes=self.play_notes)
        if all(getattr(new, key) == getattr(old, key) for key in BROKER_KEYS):
            self._reconfigured = _Reconfigured(config, decoder)
        else:
            url = parse_url(new.url)
            client_id = (self.client_id if new.client_id == old.client_id
                         else client_id_for(new))
            client = build_client(new, url, client_id, manual_ack=new.qos == 1, chunked=True)
            self._install_callbacks(client)
            self._reconfigured = _Reconfigured(config, decoder, client, url, client_id)
        self._poke_network()
        return []

    async def __aenter__(self) -> MqttSource:
        self._loop = asyncio.get_running_loop()
        self._wake_event = asyncio.Event()
        self._client = build_client(self.config.mqtt, self.url, self.client_id,
                                    manual_ack=self.manual_ack, chunked=True)
        self._install_callbacks(self._client)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        try:
            await asyncio.to_thread(self._first_connect)
        except _BrokerDown as err:  # the network thread keeps trying (see _network_loop)
            self._last_error = str(err)
            limit = self.config.mqtt.connect_timeout
            log.warning("%s; waiting for it (retrying with backoff up to %.0f s%s)", err,
                        self.config.mqtt.reconnect_max,
                        f", for at most {limit:g} s (mqtt.connect_timeout)" if limit else "")
        except BaseException:
            self._close_wake_sockets()
            raise
        self._thread = threading.Thread(
            target=self._network_loop, name=f"mqtt-{self.url.host}", daemon=True
        )
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Disconnect and stop the network thread; iteration ends. Safe to call twice.

        The item taken last counts as played: its message is acknowledged. Messages still
        queued are not: with a persistent session the broker delivers them again."""
        if self._closed:
            return
        self._closed = True
        self._release_taken()
        self._stop.set()
        self._poke_network()
        if self._wake_event is not None:
            self._wake_event.set()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, 5.0)
        if thread is None or not thread.is_alive():
            self._close_wake_sockets()
            # What was received and never taken: counted (``unread``), not lost unseen (at
            # QoS 1 with a persistent session the broker delivers it again)
            self._count_received()
            unread = len(self._queue) + len(self._batch)
            if unread:
                self._counters.add("unread", unread)

    def __aiter__(self) -> MqttSource:
        return self

    async def __anext__(self) -> Item:
        event = self._wake_event
        if event is None:
            raise RuntimeError("use 'async with MqttSource(...)' before iterating")
        # Asked for the next item: the engine is done with the previous one.
        self._release_taken()
        while True:
            if self._failure is not None:
                raise self._failure
            try:
                item, receipt, self._arrived = self._queue.popleft()
            except IndexError:
                pass
            else:
                self._taken = receipt
                self._yielded["notes" if isinstance(item, NoteEvent) else "samples"] += 1
                return item
            if self._closed:
                raise StopAsyncIteration
            event.clear()
            if self._queue or self._closed or self._failure is not None:
                continue
            await event.wait()

    # -- acknowledgements (consumer side) -----------------------------------------------
    def hold(self) -> _Receipt | None:
        """Take over the receipt of the item yielded last: the engine settles it once the
        item's note is scheduled (:class:`streamsonic.events.Holding`)."""
        receipt, self._taken = self._taken, None
        return receipt

    def arrived(self) -> float | None:
        """When the network thread handed the item yielded last over (``time.monotonic``,
        :class:`streamsonic.events.Arrival`): its wait in the queue counts against its
        deadline."""
        return self._arrived

    def _release_taken(self) -> None:
        """The consumer asked for the next item without holding the last one: settle it."""
        receipt, self._taken = self._taken, None
        if receipt is not None:
            receipt.done()

    def _release(self, ack: _Ack) -> None:
        """Hand one acknowledgement to the network thread (any thread)."""
        self._acks.append(ack)
        if not self._ack_wake_pending:
            self._ack_wake_pending = True
            self._poke_network()

    def _poke_network(self) -> None:
        """Wake the network thread out of ``select()`` (never blocks)."""
        wake = self._wake_w
        if wake is not None:
            with contextlib.suppress(OSError):  # full (a wake-up is pending) or closed
                wake.send(b"\0")

    def _close_wake_sockets(self) -> None:
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._wake_r = self._wake_w = None

    # -- connecting (worker threads) --------------------------------------------------------
    def _first_connect(self) -> None:
        client = self._client
        assert client is not None
        self._bound_attempt(client)
        try:
            client.connect(**connect_args(self.config.mqtt, self.url))
        except ssl.SSLError as err:  # TLS: a restart cannot fix it
            raise explain_socket_error(err, self.url) from None
        except OSError as err:  # refused, unreachable, no name yet: it may come up
            raise _BrokerDown(str(explain_socket_error(err, self.url))) from None
        sock = client.socket()
        if isinstance(sock, socket.socket) and self_connected(sock):
            sock.close()  # (not MQTT's DISCONNECT: there is no broker to say it to)
            raise _BrokerDown(f"MQTT broker {self.url}: nothing listens on its port yet "
                              "(the connection reached its own port)")
        left = self._remaining()
        started = time.monotonic()
        deadline = started + (CONNECT_TIMEOUT if left is None
                                       else max(0.0, min(CONNECT_TIMEOUT, left)))
        while not self._connack.is_set():
            rc = client.loop(timeout=LOOP_TIMEOUT)
            if rc != paho.MQTT_ERR_SUCCESS and not self._connack.is_set():
                raise _closed_early(self.url, rc)
            if time.monotonic() > deadline:
                client.disconnect()
                raise _BrokerDown(
                    f"MQTT broker {self.url} did not accept the connection within "
                    f"{time.monotonic() - started:.1f} s; check the URL and that the broker "
                    "is healthy"
                )
        if self._refusal is not None:
            client.disconnect()
            raise explain_refusal(self._refusal, self.url, self._username())

    def _switch(self, old: paho.Client, new: paho.Client, url: BrokerUrl,
                client_id: str) -> None:
        """Replace the connection (network thread): the old one is closed cleanly (its
        last acknowledgements sent; what it delivered and was not yet acknowledged is
        delivered again by its session, if it has one), then the new client connects; if it
        cannot, the usual backoff retries it."""
        log.info("MQTT: broker settings changed; closing the connection to %s, connecting to "
                 "%s as %r", self.url, url, client_id)
        self._client = new  # first: the old client's on_disconnect is then ignored
        self._send_acks(old)
        if old.is_connected():
            self._disconnect(old)
        self._session_start = None
        self.url, self.client_id = url, client_id
        self.manual_ack = self.config.mqtt.qos == 1
        self._attempt = self._short_sessions = 0
        self._takeover = self._takeover_logged = False
        try:
            new.connect_async(**connect_args(self.config.mqtt, url))
            new.reconnect()
        except (OSError, ssl.SSLError) as err:
            self._last_error = str(explain_socket_error(err, url))
            log.warning("%s", self._last_error)

    def _username(self) -> str:
        return self.config.mqtt.username or self.url.username

    def _remaining(self) -> float | None:
        """Seconds left of ``mqtt.connect_timeout`` while never connected (None: no
        limit, or connected once). Every wait at start-up (the TCP connect, the CONNACK,
        the backoff) is cut to it, so giving up comes within about the configured time."""
        limit = self.config.mqtt.connect_timeout
        if not limit or self._generation:
            return None
        return limit - (time.monotonic() - self._started)

    def _bound_attempt(self, client: paho.Client) -> None:
        """Let the next TCP connect take at most what is left of ``mqtt.connect_timeout``
        (paho's own limit is 5 s)."""
        left = self._remaining()
        if left is None:
            return
        with contextlib.suppress(RuntimeError, ValueError):  # a connection is up after all
            client.connect_timeout = min(PAHO_CONNECT_TIMEOUT, max(left, 0.05))

    def _give_up_if_late(self) -> bool:
        """Past ``mqtt.connect_timeout`` without ever connecting: the failure is set (the
        elapsed time in it is the true one) and True."""
        left = self._remaining()
        if left is None or left > 0:
            return False
        waited = time.monotonic() - self._started
        self._failure = MqttError(
            f"MQTT broker {self.url} could not be reached for {waited:.1f} s "
            f"(mqtt.connect_timeout = {self.config.mqtt.connect_timeout:g}); last error: "
            f"{self._last_error or 'no answer'}")
        return True

    def _network_loop(self) -> None:
        client = self._client
        assert client is not None
        self._hand_over()  # what the first connect's reads decoded, if anything
        while not self._stop.is_set() and self._failure is None:
            client = self._client  # a reload may have replaced it
            assert client is not None
            try:
                rc = self._loop_once(client)
            except Exception:  # a bug must not end the network thread silently
                log.exception("MQTT broker %s: network loop failed; reconnecting", self.url)
                self._counters.add("errors.network_loop")
                rc = paho.MQTT_ERR_UNKNOWN
            if self._failure is None and self._give_up_if_late():
                break  # (also a connection the broker took but never answered)
            if rc == paho.MQTT_ERR_SUCCESS or self._stop.is_set() or self._failure is not None:
                continue
            mqtt = self.config.mqtt
            if self._takeover:
                delay = takeover_delay(mqtt.takeover_retry, self._rng)
            else:
                delay = backoff_delay(self._attempt, mqtt.reconnect_min, mqtt.reconnect_max,
                                      self._rng)
                self._attempt += 1
            left = self._remaining()
            if left is not None:
                delay = min(delay, max(left, 0.0))
            log.info("MQTT broker %s: reconnecting in %.1f s (attempt %d)",
                     self.url, delay, self._attempt)
            if self._stop.wait(delay):
                break
            if self._give_up_if_late():
                break
            self._bound_attempt(client)
            try:
                client.reconnect()
            except (OSError, ssl.SSLError) as err:
                self._last_error = str(explain_socket_error(err, self.url))
                log.warning("%s", self._last_error)
        self._send_acks(client)
        if client.is_connected():
            self._disconnect(client)
        if self._failure is not None:
            self._wake_consumer()
        log.info("MQTT broker %s: closed", self.url)

    def _loop_once(self, client: paho.Client) -> int:
        """One round of network work: select on the broker socket and the wake-up socket,
        then read, send acknowledgements, write, keep alive. Returns a paho error code."""
        self._send_acks(client)
        if self._reconfigured is not None:
            self._apply_reconfigured(client)
            if self._client is not client:
                return paho.MQTT_ERR_SUCCESS  # the next round runs the new connection
        sock = client.socket()
        if sock is None:
            return paho.MQTT_ERR_NO_CONN
        pending = sock.pending() if isinstance(sock, ssl.SSLSocket) else 0
        if isinstance(client, ChunkedClient):
            pending = pending or client.buffered()
        wake = self._wake_r
        rlist: list[Any] = [sock] if wake is None else [sock, wake]
        wlist: list[Any] = [sock] if client.want_write() else []
        try:
            readable, _, _ = select.select(rlist, wlist, [], 0.0 if pending else LOOP_TIMEOUT)
        except (OSError, ValueError):  # the socket went away under us
            return paho.MQTT_ERR_CONN_LOST
        if wake is not None and wake in readable:
            with contextlib.suppress(OSError):
                wake.recv(4096)
        if sock in readable or pending:
            rc = self._read(client)
            if rc != paho.MQTT_ERR_SUCCESS:
                return rc
        self._send_acks(client)
        if client.want_write():
            rc = client.loop_write()
            if rc != paho.MQTT_ERR_SUCCESS:
                return rc
        return client.loop_misc()

    def _read(self, client: paho.Client) -> int:
        """Read and handle what has arrived: with a :class:`ChunkedClient` every packet of
        the chunk one ``recv`` gave (up to ``READ_PACKETS``), then hand what they gave over
        in one step. Returns a paho error code."""
        try:
            rc = client.loop_read()
            if isinstance(client, ChunkedClient):
                budget = READ_PACKETS
                while rc == paho.MQTT_ERR_SUCCESS and budget and client.buffered():
                    rc = client.loop_read()
                    budget -= 1
        finally:
            self._hand_over()
        return rc

    def _send_acks(self, client: paho.Client) -> None:
        """Acknowledge what the consumer has taken (network thread only)."""
        self._ack_wake_pending = False  # before draining: a later append wakes us again
        acks = self._acks
        while acks:
            self._ack(client, acks.popleft())

    def _ack(self, client: paho.Client, ack: _Ack) -> None:
        if ack.generation != self._generation or not client.is_connected():
            # Received on an earlier connection: its packet id may now name another
            # message. A persistent session delivers it again (it may play twice).
            self._counters.add("acks.stale")
            return
        client.ack(ack.mid, ack.qos)
        self._counters.add("acked")

    def _disconnect(self, client: paho.Client) -> None:
        """Send the last acknowledgements and DISCONNECT, then wait for the broker to close.

        paho closes its socket right after writing DISCONNECT. Closing a socket that still
        has unread data (messages the broker kept sending) makes the kernel reset the
        connection, and the broker then loses what it had not read yet: our last
        acknowledgements, whose messages would play again. So a duplicate of the socket
        keeps the connection open until the broker has closed it, reading and discarding
        (those messages are not acknowledged: the session delivers them again)."""
        keep: socket.socket | None = None
        sock = client.socket()
        if sock is not None:
            with contextlib.suppress(OSError, ValueError):
                keep = socket.socket(fileno=os.dup(sock.fileno()))
        client.disconnect()
        self._flush(client)
        if keep is None:
            return
        with keep:
            keep.setblocking(False)
            deadline = time.monotonic() + FLUSH_TIMEOUT
            while time.monotonic() < deadline:
                try:
                    readable, _, _ = select.select([keep], [], [], LOOP_TIMEOUT)
                    if readable and not keep.recv(65536):
                        return  # the broker closed the connection
                except BlockingIOError:
                    continue
                except OSError:
                    return

    def _flush(self, client: paho.Client) -> None:
        """Give the last acknowledgements and the DISCONNECT a moment to go out."""
        deadline = time.monotonic() + FLUSH_TIMEOUT
        while client.want_write() and time.monotonic() < deadline:
            sock = client.socket()
            if sock is None:
                return
            try:
                select.select([], [sock], [], LOOP_TIMEOUT)
            except (OSError, ValueError):
                return
            if client.loop_write() != paho.MQTT_ERR_SUCCESS:
                return

    # -- paho callbacks (network thread) --------------------------------------------------
    def _install_callbacks(self, client: paho.Client) -> None:
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        if isinstance(client, ChunkedClient):
            client.on_fast_publish = self._on_publish

    def _on_connect(self, client: paho.Client, _userdata: Any, flags: Any,
                    reason: Any, _props: Any) -> None:
        if reason.is_failure:
            if self._thread is None:  # the first connect raises it
                self._refusal = reason
            elif self._generation == 0:  # never connected: as final as at startup
                self._failure = explain_refusal(reason, self.url, self._username())
                self._wake_consumer()
            else:  # (each retry is refused the same way while it lasts: once per interval)
                self._warn.error("refused", "%s",
                                 explain_refusal(reason, self.url, self._username()))
            self._connack.set()
            return
        self._connack.set()
        self._generation += 1
        self._session_start = time.monotonic()
        self._counters.add("connects")
        log.info("MQTT broker %s: connected as %r (session present: %s)",
                 self.url, self.client_id, bool(getattr(flags, "session_present", False)))
        self._subscribe(client, self.topics)

    def _subscribe(self, client: paho.Client, topics: tuple[str, ...]) -> None:
        if self.config.mqtt.protocol == "5":
            # retain_handling 1: retained messages only for a subscription that is new, so
            # a resubscribe after reconnecting does not replay them.
            opts = SubscribeOptions(qos=self.config.mqtt.qos, retainHandling=1)
            subs: list[tuple[str, Any]] = [(t, opts) for t in topics]
        else:
            subs = [(t, self.config.mqtt.qos) for t in topics]
        _rc, mid = client.subscribe(subs)
        if mid is not None:
            self._sub_mids[mid] = topics

    def _apply_reconfigured(self, client: paho.Client) -> None:
        """Take over a reloaded configuration (network thread): topics, decoding, queue."""
        pending, self._reconfigured = self._reconfigured, None
        if pending is None:
            return
        old = self.topics
        self.config, self._decoder = pending.config, pending.decoder
        config = pending.config
        self._max_queue = config.mqtt.queue_size
        self.topics = tuple(config.mqtt.topics)
        if pending.client is not None and pending.url is not None:
            self._switch(client, pending.client, pending.url, pending.client_id)
            return
        added = tuple(t for t in self.topics if t not in old)
        removed = [t for t in old if t not in self.topics]
        if client.is_connected():  # else the next connect subscribes to self.topics
            if removed:
                client.unsubscribe(removed)
            if added:
                self._subscribe(client, added)
        if added or removed:
            log.info("MQTT broker %s: topics now %s (subscribed %s; unsubscribed %s)",
                     self.url, ", ".join(map(repr, self.topics)),
                     ", ".join(map(repr, added)) or "none",
                     ", ".join(map(repr, removed)) or "none")

    def _on_disconnect(self, client: paho.Client, _userdata: Any, flags: Any,
                       reason: Any, _props: Any) -> None:
        if client is not self._client:  # a connection a reload replaced
            return
        self._counters.add("disconnects")
        started, self._session_start = self._session_start, None
        if self._stop.is_set() or self._thread is None:  # stopping, or startup (it raises)
            return
        if getattr(reason, "value", reason) == SESSION_TAKEN_OVER:
            self._taken_over(confirmed=True)
            return
        if started is not None:
            if time.monotonic() - started < max(SHORT_SESSION,
                                                2 * self.config.mqtt.reconnect_min):
                self._short_sessions += 1
                if self._short_sessions >= SHORT_SESSIONS_FOR_TAKEOVER or self._takeover:
                    self._taken_over(confirmed=False)
                    return
            else:  # a session that lasted: start the backoff over, forget suspicions
                self._short_sessions = 0
                self._attempt = 0
                self._takeover = False
        from_broker = getattr(flags, "is_disconnect_packet_from_server", False)
        log.warning("MQTT broker %s: disconnected (%s); will reconnect", self.url,
                    reason if from_broker else "connection lost")

    def _taken_over(self, confirmed: bool) -> None:
        """Another client with our id took the session: say so once, then back off or stop."""
        self._counters.add("takeovers")
        mqtt = self.config.mqtt
        if confirmed:
            what = (f"another client connected with the same client id {self.client_id!r} "
                    "and took the session over (MQTT reason 0x8E)")
        else:
            what = (f"the broker closed {max(self._short_sessions, 1)} connections in a row "
                    "right after accepting them; another client is probably connecting with "
                    f"the same client id {self.client_id!r} and taking the session over")
        self._short_sessions = 0
        fix = ("give every daemon its own --client-id (mqtt.client_id); two clients with "
               "one id steal the session from each other and lose messages")
        if mqtt.on_takeover == "exit":
            self._failure = MqttError(
                f"MQTT broker {self.url}: {what}; {fix} (mqtt.on_takeover = \"exit\")")
            self._wake_consumer()
            return
        self._takeover = True
        if not self._takeover_logged:
            self._takeover_logged = True
            log.error("MQTT broker %s: %s; %s. Reconnecting only every %.0f s instead of "
                      "taking it back at once (mqtt.takeover_retry; mqtt.on_takeover = "
                      "\"exit\" stops instead)", self.url, what, fix, mqtt.takeover_retry)
        else:
            self._warn.warning("takeover", "MQTT broker %s: session taken over again by "
                               "another client with client id %r; reconnecting in about "
                               "%.0f s", self.url, self.client_id, mqtt.takeover_retry)

    def _on_subscribe(self, _client: paho.Client, _userdata: Any, mid: int,
                      reasons: list[Any], _props: Any) -> None:
        topics = self._sub_mids.pop(mid, self.topics)
        failed = [t for t, r in zip(topics, reasons, strict=False) if r.is_failure]
        for topic_filter, reason in zip(topics, reasons, strict=False):
            if reason.is_failure:
                log.error("MQTT broker %s refused the subscription to %r (%s); check the "
                          "filter and the broker's ACL", self.url, topic_filter, reason)
        if len(failed) < len(topics):
            self._counters.add("subscribed")
            log.info("MQTT broker %s: subscribed to %s", self.url,
                     ", ".join(repr(t) for t in topics if t not in failed))

    def _on_message(self, client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # paho hands such a topic over and raises on reading it
            topic = None
        self._on_publish(client, topic, msg.payload, msg.qos, msg.mid, msg.retain)

    def _on_publish(self, client: paho.Client, topic: str | None, payload: bytes | bytearray,
                    qos: int, mid: int, retain: bool) -> None:
        """One message, from ``on_message`` or paho's fast path (``ChunkedClient``)."""
        ack = _Ack(mid, qos, self._generation) if self.manual_ack and qos == 1 else None
        try:
            if topic is None:  # counted as received, then skipped (internal_error)
                self._received += 1
                raise ValueError("a topic that is not UTF-8")
            queued = self._handle_message(topic, payload, retain, ack)
        except Exception:  # never let one message end the network thread
            queued = False
            self._counters.add("skipped.internal_error")
            if self._warn.warning("internal_error", "MQTT topic %s: failed to handle a message",
                                  topic):
                log.debug("the failure", exc_info=True)
        if ack is not None and not queued:  # nothing to play: done with it now
            self._ack(client, ack)

    def _handle_message(self, topic: str, payload: bytes | bytearray, retain: bool,
                        ack: _Ack | None) -> bool:
        """Decode one message into this loop turn's batch (queued at the turn's end);
        whether it gave anything to play (its items then carry ``ack``'s receipt)."""
        now = time.time()
        self._received += 1
        if retain and not self.config.mqtt.retained:
            self._counters.add("skipped.retained")
            if not self._retained_logged:
                self._retained_logged = True
                log.info("MQTT topic %s: ignoring retained messages (old values); set "
                         "mqtt.retained = true to use them", topic)
            return False
        sample = self._decoder.fast(topic, payload, now)
        if sample is not None:  # a bare number: what decode would give, sooner
            self._batch.append((sample, _Receipt(self, ack, 1) if ack is not None else None))
            return True
        decoded = self._decoder.decode(topic, payload, now)
        for reason in decoded.skipped:
            self._skip(topic, reason, payload, decoded.detail)
        for reason in decoded.ignored:
            self._counters.add(f"ignored.{reason}")
        if not decoded.items:
            return False
        receipt = _Receipt(self, ack, len(decoded.items)) if ack is not None else None
        batch = self._batch
        for item in decoded.items:
            batch.append((item, receipt))
        return True

    def _skip(self, topic: str, reason: str, payload: bytes | bytearray,
              detail: str = "") -> None:
        """Count a bad payload (per reason exactly, per topic for the first
        ``MAX_TOPIC_COUNTERS`` topics) and warn, rate-limited per reason over all topics:
        thousands of topics sending bad payloads give one warning per reason and interval
        (naming one of them and how many more were suppressed), not one per topic.
        ``detail`` says what was wrong where the decoder could tell (a bad note's field)."""
        self._counters.add(f"skipped.{reason}")
        self._counters.add(f"by_topic.{self._topic_keys.key(topic)}.{reason}")
        self._warn.warning(f"skip\0{reason}", "MQTT topic %s: skipped a payload (%s%s): %r",
                           topic, reason, f": {detail}" if detail else "", payload[:60])

    def _count_received(self) -> None:
        """Add this turn's messages to ``received`` (network thread, or once it stopped)."""
        if self._received:
            self._counters.add("received", self._received)
            self._received = 0

    def _hand_over(self) -> None:
        """Queue what this loop turn decoded, in one step: one count, one wake-up. Each
        item carries its message's receipt, which acknowledges the message once every one
        of its items is settled. A full queue drops its oldest items (counted)."""
        self._count_received()
        batch = self._batch
        if not batch:
            return
        self._batch = []
        queue = self._queue
        dropped = 0
        if len(batch) > self._max_queue:  # more than fits at all: only the newest stay
            extra, batch = batch[:-self._max_queue], batch[-self._max_queue:]
            dropped = self._drop_oldest(len(queue)) + self._drop(extra)
        room = self._max_queue - len(queue)
        if len(batch) > room:
            dropped += self._drop_oldest(len(batch) - room)
        stamp = time.monotonic()
        queue.extend([(item, receipt, stamp) for item, receipt in batch])
        if dropped:
            self._warn.warning("queue_full", "MQTT queue full (%d items): dropped the %d oldest; "
                               "the engine is not keeping up", self._max_queue, dropped)
        self._wake_consumer()

    def _drop_oldest(self, n: int) -> int:
        """Drop up to ``n`` of the oldest queued items (the consumer may pop meanwhile);
        returns how many were dropped, counted."""
        queue = self._queue
        dropped: list[tuple[Item, _Receipt | None]] = []
        for _ in range(n):
            try:
                item, receipt, _ = queue.popleft()
            except IndexError:  # the consumer emptied it meanwhile
                break
            dropped.append((item, receipt))
        return self._drop(dropped)

    def _drop(self, items: list[tuple[Item, _Receipt | None]]) -> int:
        """Items dropped for good: counted, their receipts settled."""
        for _, receipt in items:
            if receipt is not None:
                receipt.done()  # dropped: nothing left to play for it
        if items:
            self._counters.add("dropped.queue_full", len(items))
        return len(items)

    def _wake_consumer(self) -> None:
        if not self._wake_pending and self._loop is not None:
            self._wake_pending = True
            try:
                self._loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the event loop is closed: we are shutting down
                self._wake_pending = False

    def _wake(self) -> None:
        self._wake_pending = False
        if self._wake_event is not None:
            self._wake_event.set()
