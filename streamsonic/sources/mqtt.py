"""The MQTT source: subscribed topics -> samples (or notes, with ``--play-notes``).

paho-mqtt 2.x is used directly rather than through aiomqtt: we need a network thread that
never blocks, a drop-oldest queue with exact counts, and our own jittered reconnect loop,
and with aiomqtt each of those would sit behind another layer (its queue is unbounded, and
it leaves reconnecting to the caller anyway). The shape:

    network thread (ours, driving ``client.loop()``)
      on_message -> decode payload -> deque (bounded: when full the OLDEST item is dropped
      and counted) -> ``loop.call_soon_threadsafe(wake)`` (at most one pending)
    asyncio side: ``async for item in source`` drains the deque.

The network thread is the only one that appends or drops, so the deque never exceeds
``mqtt.queue_size`` and needs no lock; the consumer only pops. Startup connects once and
raises a one-line ``MqttError`` if the broker cannot be reached, refuses the TLS
certificate or the login. After that, a lost connection is retried with jittered
exponential backoff (``mqtt.reconnect_min`` .. ``mqtt.reconnect_max``), and the topics are
subscribed again on every connect. With ``mqtt.clean_start = false``, a fixed client id and
``mqtt.session_expiry`` the broker keeps the session while we are away and delivers what
was published meanwhile (QoS >= 1). QoS 1/2 messages are acknowledged by paho once they are
in the queue; a crash can lose what was queued but not yet played.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import ssl
import threading
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.subscribeoptions import SubscribeOptions

from streamsonic.config import Config
from streamsonic.errors import MqttError
from streamsonic.events import NoteEvent, Sample
from streamsonic.mqtt.connection import (
    BrokerUrl,
    build_client,
    client_id_for,
    connect_args,
    explain_refusal,
    explain_socket_error,
    parse_url,
)
from streamsonic.mqtt.naming import check_filter, check_template
from streamsonic.mqtt.payload import PayloadDecoder
from streamsonic.stats import Counters, RateLimitedLog

log = logging.getLogger(__name__)

#: Seconds one ``client.loop()`` call waits for network activity (bounds shutdown time).
LOOP_TIMEOUT = 0.1
#: Seconds to wait for the broker's CONNACK at startup.
CONNECT_TIMEOUT = 10.0
#: Distinct topics that get their own ``by_topic.*`` skip counters; later ones share one.
MAX_TOPIC_COUNTERS = 1000

Item = Sample | NoteEvent


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Delay before reconnect attempt ``attempt`` (0-based): ``low * 2**attempt`` capped at
    ``high``, then jittered uniformly into its upper half so that a fleet of daemons does
    not reconnect in lockstep."""
    ceiling = min(high, low * (2.0 ** min(attempt, 32)))
    return rng.uniform(ceiling / 2, ceiling)


class MqttSource:
    """Samples (or notes) from MQTT topics; an async context manager and async iterator."""

    def __init__(self, config: Config, play_notes: bool = False) -> None:
        mqtt = config.mqtt
        self.config = config
        self.play_notes = play_notes
        self.url: BrokerUrl = parse_url(mqtt.url)
        if not mqtt.topics:
            raise MqttError(
                f"no MQTT topics to subscribe to on {self.url}; pass --topic FILTER "
                "(repeatable) or set mqtt.topics"
            )
        for topic_filter in mqtt.topics:
            check_filter(topic_filter)
        check_template(mqtt.stream_name)
        self.topics = tuple(mqtt.topics)
        self.client_id = client_id_for(mqtt)
        self._decoder = PayloadDecoder(config, play_notes=play_notes)
        self._counters = Counters()
        self._warn = RateLimitedLog(log, config.daemon.warn_interval)
        self._topic_counters: set[str] = set()
        self._queue: collections.deque[Item] = collections.deque()
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

    @classmethod
    def from_config(cls, config: Config, play_notes: bool = False) -> MqttSource:
        """The source for ``config.mqtt``; checks URL, topics and naming rule up front."""
        return cls(config, play_notes=play_notes)

    # -- Source protocol ----------------------------------------------------------------
    @property
    def stats(self) -> dict[str, int]:
        """Counters: received, samples/notes (yielded), dropped.queue_full,
        skipped.<reason> (bad input), by_topic.<topic>.<reason> (the same per topic),
        ignored.<reason> (header/comment lines), skipped.retained, connects, disconnects,
        subscribed."""
        return self._counters.snapshot()

    @property
    def queued(self) -> int:
        """Items waiting in the queue."""
        return len(self._queue)

    async def __aenter__(self) -> MqttSource:
        self._loop = asyncio.get_running_loop()
        self._wake_event = asyncio.Event()
        self._client = build_client(self.config.mqtt, self.url, self.client_id)
        self._install_callbacks(self._client)
        await asyncio.to_thread(self._first_connect)
        self._thread = threading.Thread(
            target=self._network_loop, name=f"mqtt-{self.url.host}", daemon=True
        )
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Disconnect and stop the network thread; iteration ends. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._wake_event is not None:
            self._wake_event.set()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, 5.0)

    def __aiter__(self) -> MqttSource:
        return self

    async def __anext__(self) -> Item:
        event = self._wake_event
        if event is None:
            raise RuntimeError("use 'async with MqttSource(...)' before iterating")
        while True:
            if self._queue:
                item = self._queue.popleft()
                self._counters.add("notes" if isinstance(item, NoteEvent) else "samples")
                return item
            if self._closed:
                raise StopAsyncIteration
            event.clear()
            if self._queue or self._closed:
                continue
            await event.wait()

    # -- connecting (worker threads) --------------------------------------------------------
    def _first_connect(self) -> None:
        client = self._client
        assert client is not None
        try:
            client.connect(**connect_args(self.config.mqtt, self.url))  # type: ignore[arg-type]
        except (OSError, ssl.SSLError) as err:
            raise explain_socket_error(err, self.url) from None
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while not self._connack.is_set():
            rc = client.loop(timeout=LOOP_TIMEOUT)
            if rc != paho.MQTT_ERR_SUCCESS and not self._connack.is_set():
                if self.url.tls:
                    fix = ("if the broker requires a client certificate, set mqtt.cert_file "
                           "and mqtt.key_file; else check the port speaks MQTT over TLS")
                else:
                    fix = "check the port speaks plain MQTT (a TLS port needs mqtts://)"
                raise MqttError(
                    f"MQTT broker {self.url} closed the connection before accepting it "
                    f"({paho.error_string(rc).rstrip('.')}); {fix}"
                )
            if time.monotonic() > deadline:
                client.disconnect()
                raise MqttError(
                    f"MQTT broker {self.url} did not accept the connection within "
                    f"{CONNECT_TIMEOUT:.0f} s; check the URL and that the broker is healthy"
                )
        if self._refusal is not None:
            client.disconnect()
            raise explain_refusal(self._refusal, self.url, self._username())

    def _username(self) -> str:
        return self.config.mqtt.username or self.url.username

    def _network_loop(self) -> None:
        client = self._client
        assert client is not None
        while not self._stop.is_set():
            try:
                rc = client.loop(timeout=LOOP_TIMEOUT)
            except Exception:  # a bug must not end the network thread silently
                log.exception("MQTT broker %s: network loop failed; reconnecting", self.url)
                self._counters.add("errors.network_loop")
                rc = paho.MQTT_ERR_UNKNOWN
            if rc == paho.MQTT_ERR_SUCCESS or self._stop.is_set():
                continue
            delay = backoff_delay(self._attempt, self.config.mqtt.reconnect_min,
                                  self.config.mqtt.reconnect_max, self._rng)
            self._attempt += 1
            log.info("MQTT broker %s: reconnecting in %.1f s (attempt %d)",
                     self.url, delay, self._attempt)
            if self._stop.wait(delay):
                break
            try:
                client.reconnect()
            except (OSError, ssl.SSLError) as err:
                log.warning("%s", explain_socket_error(err, self.url))
        if client.is_connected():
            client.disconnect()
        log.info("MQTT broker %s: closed", self.url)

    # -- paho callbacks (network thread) --------------------------------------------------
    def _install_callbacks(self, client: paho.Client) -> None:
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message

    def _on_connect(self, client: paho.Client, _userdata: Any, flags: Any,
                    reason: Any, _props: Any) -> None:
        if reason.is_failure:
            if not self._connack.is_set():
                self._refusal = reason
            else:
                log.error("%s", explain_refusal(reason, self.url, self._username()))
            self._connack.set()
            return
        self._connack.set()
        self._attempt = 0
        self._counters.add("connects")
        log.info("MQTT broker %s: connected as %r (session present: %s)",
                 self.url, self.client_id, bool(getattr(flags, "session_present", False)))
        if self.config.mqtt.protocol == "5":
            # retain_handling 1: retained messages only for a subscription that is new, so
            # a resubscribe after reconnecting does not replay them.
            opts = SubscribeOptions(qos=self.config.mqtt.qos, retainHandling=1)
            subs: list[tuple[str, Any]] = [(t, opts) for t in self.topics]
        else:
            subs = [(t, self.config.mqtt.qos) for t in self.topics]
        _rc, mid = client.subscribe(subs)
        if mid is not None:
            self._sub_mids[mid] = self.topics

    def _on_disconnect(self, _client: paho.Client, _userdata: Any, _flags: Any,
                       reason: Any, _props: Any) -> None:
        self._counters.add("disconnects")
        if self._stop.is_set() or self._thread is None:  # stopping, or startup (it raises)
            return
        log.warning("MQTT broker %s: disconnected (%s); will reconnect", self.url, reason)

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

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            self._handle_message(msg)
        except Exception:  # never let one message end the network thread
            self._counters.add("skipped.internal_error")
            if self._warn.warning("internal_error", "MQTT topic %s: failed to handle a message",
                                  msg.topic):
                log.debug("the failure", exc_info=True)

    def _handle_message(self, msg: paho.MQTTMessage) -> None:
        now = time.time()
        self._counters.add("received")
        topic = msg.topic
        if msg.retain and not self.config.mqtt.retained:
            self._counters.add("skipped.retained")
            if not self._retained_logged:
                self._retained_logged = True
                log.info("MQTT topic %s: ignoring retained messages (old values); set "
                         "mqtt.retained = true to use them", topic)
            return
        decoded = self._decoder.decode(topic, msg.payload, now)
        for reason in decoded.skipped:
            self._skip(topic, reason, msg.payload)
        for reason in decoded.ignored:
            self._counters.add(f"ignored.{reason}")
        if decoded.items:
            self._push(decoded.items)

    def _skip(self, topic: str, reason: str, payload: bytes) -> None:
        self._counters.add(f"skipped.{reason}")
        key = topic
        if topic not in self._topic_counters:
            if len(self._topic_counters) < MAX_TOPIC_COUNTERS:
                self._topic_counters.add(topic)
            else:
                key = "(other topics)"
        self._counters.add(f"by_topic.{key}.{reason}")
        self._warn.warning(f"{topic}\0{reason}", "MQTT topic %s: skipped a payload (%s): %r",
                           topic, reason, payload[:60])

    def _push(self, items: list[Item]) -> None:
        queue = self._queue
        dropped = 0
        for item in items:
            if len(queue) >= self._max_queue:
                try:
                    queue.popleft()
                    dropped += 1
                except IndexError:  # the consumer emptied it meanwhile
                    pass
            queue.append(item)
        if dropped:
            self._counters.add("dropped.queue_full", dropped)
            self._warn.warning("queue_full", "MQTT queue full (%d items): dropped the %d oldest; "
                               "the engine is not keeping up", self._max_queue, dropped)
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
