"""A paho client that reads its socket in chunks.

paho reads every packet with three ``recv`` calls: the command byte, the length byte(s),
then the rest. Each call is a system call that releases and retakes the GIL, and a thread
that retakes the GIL while the event loop computes waits up to ``sys.getswitchinterval()``
(5 ms) for it: under load the network thread got about one packet per wait. This client
serves paho's small reads from one ``recv`` of up to ``READ_CHUNK`` bytes, so a loop turn
reads every packet that has arrived with one system call, and :meth:`buffered` tells the
caller's ``select()`` loop that data is waiting although the socket is not readable.

The source's own network loop calls ``loop_read`` again while :meth:`buffered`; paho's
``loop_start`` thread (the output's) selects on the socket alone and would leave buffered
packets waiting, so there :attr:`ChunkedClient.read_all` makes ``loop_read`` go on until
the chunk is used up.

With :attr:`ChunkedClient.on_fast_publish` set, the commonest packet skips paho's handling
(its packet dict, ``struct`` formats, an MQTT 5 ``Properties`` object, an ``MQTTMessage``,
the filtered-callback matcher, about 20 us each): a PUBLISH that lies whole in the chunk,
at QoS 0 (or QoS 1 when acknowledgements are manual: paho then does nothing for it but call
back), with a valid UTF-8 topic and no MQTT 5 properties, goes straight to the callback as
``(client, topic, payload, qos, mid, retain)``. Any other packet (or a PUBLISH split across
reads) goes through paho as before; a test compares the two on the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion

#: ``(client, topic, payload, qos, mid, retain)`` of one PUBLISH (see the module docstring).
FastPublish = Callable[["ChunkedClient", str, bytes, int, int, bool], None]

#: Bytes read from the socket at once (at most; one ``recv``).
READ_CHUNK = 65536


class ChunkedClient(paho.Client):
    """``paho.Client`` with chunked socket reads (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._chunk = b""
        self._chunk_pos = 0
        self._chunk_sock: object | None = None
        #: Where the commonest PUBLISH packets go instead of ``on_message`` (None: paho's way).
        self.on_fast_publish: FastPublish | None = None
        # what a read ahead for the fast path met (an error, or b"": the end), and on which
        # socket: paho's next read gets it, as it would have from the socket
        self._deferred: tuple[object, BaseException | bytes] | None = None

    #: Whether :meth:`loop_read` goes on while :meth:`buffered` (for a caller whose
    #: ``select()`` sees the socket alone: paho's ``loop_start`` thread).
    read_all = False

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho's; with :attr:`read_all`, again while packets wait in the chunk (each
        call takes at least a byte of it, so this ends)."""
        rc = super().loop_read(max_packets)
        while self.read_all and rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self.buffered():
            rc = super().loop_read(max_packets)
        return rc

    def buffered(self) -> int:
        """Bytes read from the socket that paho has not taken yet."""
        if self._chunk_sock is not self._sock:  # a new connection: the rest is stale
            return 0
        return len(self._chunk) - self._chunk_pos

    def _sock_recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` bytes: from the chunk read last, else from one new ``recv``
        of up to ``READ_CHUNK`` bytes (b"" at the end of the stream, as ``recv`` gives)."""
        deferred, self._deferred = self._deferred, None
        if deferred is not None and deferred[0] is self._sock:
            if isinstance(deferred[1], BaseException):
                raise deferred[1]
            return deferred[1]
        chunk, pos = self._chunk, self._chunk_pos
        if pos >= len(chunk) or self._chunk_sock is not self._sock:
            chunk = super()._sock_recv(max(bufsize, READ_CHUNK))  # raises as paho's does
            if not chunk:
                return chunk
            self._chunk, self._chunk_sock, pos = chunk, self._sock, 0
        end = pos + bufsize
        self._chunk_pos = end
        if pos == 0 and end >= len(chunk):
            return chunk
        return chunk[pos:end]


    def _packet_read(self) -> MQTTErrorCode:
        """paho's, except that a PUBLISH the fast path takes goes to ``on_fast_publish``."""
        handler = self.on_fast_publish
        if (handler is not None and self._in_packet["command"] == 0 and self._read_ahead()
                and self._fast_publish(handler, self._chunk, self._chunk_pos)):
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._packet_read()

    def _read_ahead(self) -> bool:
        """A chunk to look at for the fast path, read now if none is left; whether there
        is one. What the read met instead (nothing yet, an error, the end) is kept for
        paho's own read, which follows."""
        if self.buffered():
            return True
        if self._sock is None or self._deferred is not None:
            return False
        try:
            chunk = super()._sock_recv(READ_CHUNK)
        except Exception as err:  # paho's read gets it next, as from recv
            self._deferred = (self._sock, err)
            return False
        if not chunk:
            self._deferred = (self._sock, chunk)
            return False
        self._chunk, self._chunk_sock, self._chunk_pos = chunk, self._sock, 0
        with self._msgtime_mutex:  # for the keepalive, as paho's read keeps it
            self._last_bytes_received = paho.time_func()
        return True

    def _fast_publish(self, handler: FastPublish, chunk: bytes, pos: int) -> bool:
        """Hand the PUBLISH at ``chunk[pos:]`` to ``handler`` if the fast path takes it;
        whether it did (else nothing was consumed)."""
        end = len(chunk)
        if pos >= end:
            return False
        cmd = chunk[pos]
        qos = (cmd >> 1) & 3
        if cmd & 0xF0 != 0x30 or not (qos == 0 or (qos == 1 and self._manual_ack)):
            return False
        length = 0
        shift = 0
        i = pos + 1
        while True:  # the remaining length: 1..4 bytes of 7 bits, least significant first
            if i >= end or i > pos + 4:
                return False  # not all here (or malformed: paho says so)
            byte = chunk[i]
            i += 1
            length |= (byte & 127) << shift
            shift += 7
            if not byte & 128:
                break
        body_end = i + length
        if body_end > end or length < 2:
            return False
        topic_end = i + 2 + ((chunk[i] << 8) | chunk[i + 1])
        if topic_end == i + 2 or topic_end > body_end:
            return False  # empty (an MQTT 5 alias) or malformed: paho's way
        p = topic_end
        mid = 0
        if qos:
            if p + 2 > body_end:
                return False
            mid = (chunk[p] << 8) | chunk[p + 1]
            p += 2
        if self._protocol == MQTTProtocolVersion.MQTTv5:
            if p >= body_end or chunk[p] != 0:
                return False  # properties: paho's way
            p += 1
        try:
            topic = chunk[i + 2:topic_end].decode("utf-8")
        except UnicodeDecodeError:
            return False
        self._chunk_pos = body_end  # its bytes' arrival time was kept by _read_ahead
        handler(self, topic, chunk[p:body_end], qos, mid, bool(cmd & 1))
        return True
