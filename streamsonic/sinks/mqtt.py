"""The ``mqtt:PREFIX`` output: each note as JSON on ``PREFIX/<stream>``.

Another streamsonic can play them with ``--mqtt URL --topic 'PREFIX/#' --play-notes``
(compute on one host, sound on another). The broker is ``mqtt.url`` (with its TLS and
credential settings), or a URL given in the spec itself: ``mqtt:mqtts://host:8883/notes``,
which lets a daemon that reads stdin publish its notes. Publishing never blocks the
engine: paho's own thread sends, and reconnects after a lost connection; at QoS 1 and 2
paho holds up to MAX_QUEUED notes (while disconnected too: they go out once reconnected);
notes that cannot be queued (QoS 0 while disconnected, or a full queue) are dropped and
counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import ssl
import threading

import mido
import paho.mqtt.client as paho

from streamsonic.config import Config, MqttConfig
from streamsonic.errors import MqttError, OutputError, UsageError
from streamsonic.events import NoteEvent
from streamsonic.mqtt.chunked import ChunkedClient
from streamsonic.mqtt.connection import (
    BrokerUrl,
    build_client,
    client_id_for,
    connect_args,
    explain_refusal,
    explain_socket_error,
    parse_url,
)
from streamsonic.mqtt.naming import publish_topic
from streamsonic.mqtt.urls import redact
from streamsonic.outputs import check_mqtt_output
from streamsonic.sinks.base import Sink
from streamsonic.stats import Counters, RateLimitedLog

log = logging.getLogger(__name__)

#: Seconds to wait for the broker's CONNACK when opening, and for QoS>0 notes on close.
CONNECT_TIMEOUT = 10.0
FLUSH_TIMEOUT = 3.0
#: Notes paho may hold while the broker is unreachable (QoS 1/2).
MAX_QUEUED = 10000
#: QoS 1 and 2 notes that may await the broker's acknowledgement at once (paho's default
#: is 20). MQTT 3.1.1 sets no limit of its own; an MQTT 5 broker states one in its CONNACK
#: (Receive Maximum; mosquitto's ``max_inflight_messages``, 20 by default), which is taken
#: where lower: paho itself does not look at it.
INFLIGHT = 100


class MqttSink(Sink):
    """Publishes NoteEvents as JSON; ignores raw channel messages."""

    channel_messages = False  # only notes are published

    def __init__(self, prefix: str, url: BrokerUrl, config: Config) -> None:
        super().__init__(f"mqtt:{prefix}")
        self.prefix = prefix
        self.url = url
        self.qos = config.mqtt.qos
        self._v5 = config.mqtt.protocol == "5"
        self.counters = Counters()
        self._warn = RateLimitedLog(log, config.daemon.warn_interval)
        self._encode = json.JSONEncoder(separators=(",", ":")).encode
        # The output needs no persistent session; its id must differ from the source's.
        mqtt = dataclasses.replace(config.mqtt, clean_start=True)
        try:
            client = build_client(mqtt, url, client_id_for(config.mqtt, "-notes"),
                                  paho_reconnects=True, chunked=True)
        except MqttError as err:
            raise OutputError(f"output {self.name}: {err}") from None
        # The broker's acknowledgements (QoS 1 and 2) read in chunks, each chunk used up in
        # one turn of paho's thread (its three reads of each, every one retaking the GIL
        # from a busy engine, held them back), and more notes in flight than paho's 20 (a
        # round trip is as long as the engine keeps the GIL): 1,000 streams at 10 Hz
        # dropped 13% of their notes at QoS 1, the queue full.
        assert isinstance(client, ChunkedClient)
        client.read_all = True
        client.max_inflight_messages_set(INFLIGHT)
        self._client = client
        self._client.max_queued_messages_set(MAX_QUEUED)
        # paho annotates these delays as int, but they are seconds in float arithmetic
        # (monotonic time + delay): a 0.5 s minimum works, rounded to 0 it would not back off.
        self._client.reconnect_delay_set(config.mqtt.reconnect_min,  # type: ignore[arg-type]
                                         config.mqtt.reconnect_max)  # type: ignore[arg-type]
        self._connack = threading.Event()
        self._refusal: object | None = None
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._sent = 0  # notes that left (QoS 0: written; 1 and 2: acknowledged)
        self._last: paho.MQTTMessageInfo | None = None
        self._open(mqtt)

    def _open(self, mqtt: MqttConfig) -> None:
        try:
            self._client.connect(**connect_args(mqtt, self.url))
        except (OSError, ssl.SSLError) as err:
            reason = explain_socket_error(err, self.url)
            raise OutputError(f"output {self.name}: {reason}") from None
        self._client.loop_start()
        if not self._connack.wait(CONNECT_TIMEOUT) or self._refusal is not None:
            self._client.loop_stop()
            self._client.disconnect()
            if self._refusal is None:
                raise OutputError(f"output {self.name}: MQTT broker {self.url} did not accept "
                                  f"the connection within {CONNECT_TIMEOUT:.0f} s")
            refusal = explain_refusal(self._refusal, self.url, self._client.username or "")
            raise OutputError(f"output {self.name}: {refusal}")

    def _on_connect(self, _client: paho.Client, _userdata: object, _flags: object,
                    reason: paho.ReasonCode, props: object) -> None:
        if not reason.is_failure:
            # (MQTT 5; 65,535 where not stated). Called before paho sends what it held, so
            # what it sends after a reconnect is within it; the public setter refuses an
            # open connection, but paho reads this field anew for every note it sends.
            most = getattr(props, "ReceiveMaximum", 65535) if self._v5 else INFLIGHT
            limit = max(1, min(INFLIGHT, int(most)))
            if limit < INFLIGHT and self.qos > 0 and not self._connack.is_set():
                log.info("output %s: the broker takes %d unacknowledged notes at once (its "
                         "Receive Maximum); a busy daemon publishing thousands of notes a "
                         "second at QoS %d may fill its queue and drop some: raise it "
                         "(mosquitto: max_inflight_messages %d), or use QoS 0 or "
                         "mqtt.protocol = \"3.1.1\"", self.name, limit, self.qos, INFLIGHT)
            self._client._max_inflight_messages = limit
        if reason.is_failure and not self._connack.is_set():
            self._refusal = reason
        elif reason.is_failure:
            log.error("output %s: %s", self.name,
                      explain_refusal(reason, self.url, self._client.username or ""))
        else:
            log.info("output %s: connected to MQTT broker %s", self.name, self.url)
        self._connack.set()

    def _on_disconnect(self, _client: paho.Client, _userdata: object, _flags: object,
                       reason: paho.ReasonCode, _props: object) -> None:
        if not self.closed:
            log.warning("output %s: disconnected from %s (%s); reconnecting", self.name,
                        self.url, reason)

    def _on_publish(self, _client: paho.Client, _userdata: object, _mid: int,
                    _reason: paho.ReasonCode, _props: object) -> None:
        self._sent += 1  # (paho's thread; read at close, after it has stopped)

    @property
    def inflight_limit(self) -> int:
        """QoS 1 and 2 notes that may await acknowledgement at once (see INFLIGHT)."""
        return self._client.max_inflight_messages

    @property
    def lost(self) -> str | None:
        """While the broker is not connected: where the notes are (``output_up`` 0 and the
        daemon's STATUS= say so; a QA pass at 36e50ff found it 1 through an outage)."""
        if self.closed or self._client.is_connected():
            return None
        held = (f"held for it, up to {MAX_QUEUED}" if self.qos > 0
                else "dropped (QoS 0)")
        return f"not connected to the MQTT broker {self.url}: notes are {held}"

    @property
    def stats(self) -> dict[str, int]:
        """Counters: published (handed to the MQTT client: sent, or held for the broker),
        sent (QoS 0: written to the socket; QoS 1 and 2: acknowledged by the broker),
        dropped.<reason>."""
        counts = self.counters.snapshot()
        if self._sent:
            counts["sent"] = self._sent
        return counts

    def note(self, event: NoteEvent) -> None:
        """Publish ``event`` to ``PREFIX/<stream>`` (never blocks)."""
        if self.closed:
            return
        payload = self._encode(event.to_dict())
        try:
            info = self._client.publish(publish_topic(self.prefix, event.stream), payload,
                                        qos=self.qos)
        except ValueError as err:  # e.g. a topic the broker cannot take
            self._drop("bad_topic", str(err))
            return
        # QoS 1 and 2 while disconnected: paho holds the note (up to MAX_QUEUED) and sends
        # it once reconnected; QoS 0 has nowhere to go.
        if info.rc == paho.MQTT_ERR_SUCCESS or (info.rc == paho.MQTT_ERR_NO_CONN
                                                 and self.qos > 0):
            info.rc = paho.MQTT_ERR_SUCCESS  # (so that waiting for it waits, not raises)
            self.counters.add("published")
            self._last = info
        else:
            self._drop(paho.error_string(info.rc).replace(" ", "_").lower(), "not queued")

    def _drop(self, reason: str, detail: str) -> None:
        self.counters.add(f"dropped.{reason}")
        self._warn.warning(f"drop\0{reason}", "output %s: dropped a note (%s: %s)",
                           self.name, reason, detail)

    def _send(self, msg: mido.Message, time: float) -> None:
        """Channel messages (note on/off, panic) are not published; notes are."""

    def drain(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (default FLUSH_TIMEOUT) until every note published
        so far has left (QoS 0: written to the socket; QoS 1 and 2: acknowledged by the
        broker); whether it did. Paho sends in order, so the last note published stands
        for all before it."""
        last = self._last
        if last is None or last.is_published():
            return True
        with contextlib.suppress(RuntimeError, ValueError):
            last.wait_for_publish(FLUSH_TIMEOUT if timeout is None else timeout)
        return last.is_published()

    def _close(self) -> None:
        # QoS 1 and 2: up to FLUSH_TIMEOUT for the acknowledgements, while connected (with
        # the broker gone the stop does not wait for it); QoS 0: paho writes what it holds
        # before the DISCONNECT.
        connected = self._client.is_connected()
        if self.qos > 0 and connected:
            self.drain()
        self._client.disconnect()
        self._client.loop_stop()
        lost = self.counters.get("published") - self._sent
        if lost > 0:  # held for a broker that did not come back in time
            self.counters.add("dropped.at_close", lost)
            why = (f"the broker {self.url} did not take them within {FLUSH_TIMEOUT:g} s"
                   if connected else f"the broker {self.url} was not connected at the stop")
            log.warning("output %s: %d notes not delivered by the stop (%s)", self.name, lost,
                        why)


def open_sink(arg: str, config: Config) -> MqttSink:
    """``--output mqtt:PREFIX`` (broker: mqtt.url) or ``mqtt:mqtt[s]://host[:port]/PREFIX``.

    No message shows the credentials of a URL (:func:`streamsonic.mqtt.urls.redact`)."""
    shown = redact(f"mqtt:{arg}")
    try:
        check_mqtt_output(arg)  # parse_output has done it; a direct caller may not have
    except UsageError as err:
        raise OutputError(str(err)) from None
    if arg.startswith(("mqtt://", "mqtts://")):
        try:
            url = parse_url(arg)
        except MqttError as err:
            raise OutputError(f"output {shown}: {err}") from None
        prefix = url.path
    elif config.mqtt.url:
        try:
            url = parse_url(config.mqtt.url)
        except MqttError as err:
            raise OutputError(f"output {shown}: {err}") from None
        prefix = arg
    else:
        raise OutputError(
            f"output {shown} needs a broker: pass --mqtt URL (or set mqtt.url), or write "
            f"the broker into the output: mqtt:mqtt://HOST[:PORT]/{arg.strip('/')}"
        )
    return MqttSink(prefix.strip("/"), url, config)
