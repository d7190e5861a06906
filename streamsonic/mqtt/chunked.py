"""A paho client that reads its socket in chunks.

paho reads every packet with three ``recv`` calls: the command byte, the length byte(s),
then the rest. Each call is a system call that releases and retakes the GIL, and a thread
that retakes the GIL while the event loop computes waits up to ``sys.getswitchinterval()``
(5 ms) for it: under load the network thread got about one packet per wait. This client
serves paho's small reads from one ``recv`` of up to ``READ_CHUNK`` bytes, so a loop turn
reads every packet that has arrived with one system call, and :meth:`buffered` tells the
caller's ``select()`` loop that data is waiting although the socket is not readable.

Only the source's own network loop uses it (it calls ``loop_read`` again while
:meth:`buffered`); paho's ``loop_start`` thread selects on the socket alone and would leave
buffered packets waiting.
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as paho

#: Bytes read from the socket at once (at most; one ``recv``).
READ_CHUNK = 65536


class ChunkedClient(paho.Client):
    """``paho.Client`` with chunked socket reads (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._chunk = b""
        self._chunk_pos = 0
        self._chunk_sock: object | None = None

    def buffered(self) -> int:
        """Bytes read from the socket that paho has not taken yet."""
        if self._chunk_sock is not self._sock:  # a new connection: the rest is stale
            return 0
        return len(self._chunk) - self._chunk_pos

    def _sock_recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` bytes: from the chunk read last, else from one new ``recv``
        of up to ``READ_CHUNK`` bytes (b"" at the end of the stream, as ``recv`` gives)."""
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

