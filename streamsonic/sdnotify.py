"""A tiny, dependency-free ``sd_notify(3)`` client.

Under systemd with ``Type=notify`` the service manager passes ``$NOTIFY_SOCKET``, an
``AF_UNIX`` datagram socket (a path, or an abstract name written with a leading ``@``).
The daemon tells it when it is ready, when it reloads or stops, and pets the watchdog.
Outside systemd (``$NOTIFY_SOCKET`` unset) every call does nothing, so the daemon code
never needs to ask where it runs.

    notifier = Notifier()
    notifier.ready("listening on mqtt://broker")
    interval = watchdog_interval()          # None when WatchdogSec= is not set
    ...
    notifier.watchdog()                     # every interval / 2
    notifier.reloading(); ...; notifier.ready()
    notifier.stopping()

Sending never raises: a notification that cannot be delivered is logged once and the
daemon goes on (systemd will notice a missing READY=1 or WATCHDOG=1 by itself).
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)

ENV_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"


def socket_address(value: str) -> str | None:
    """The ``AF_UNIX`` address for a ``$NOTIFY_SOCKET`` value, or None if unusable.

    ``@name`` is an abstract socket (Linux): the address starts with a NUL byte. Only
    absolute paths and abstract names are valid, as in systemd's own client.
    """
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds that systemd expects pings within, or None.

    Read from ``$WATCHDOG_USEC``; when ``$WATCHDOG_PID`` is set it must be this process
    (otherwise the watchdog belongs to another process, e.g. a wrapper). Ping at half this
    interval or more often.
    """
    usec = os.environ.get(ENV_WATCHDOG_USEC, "")
    if not usec:
        return None
    pid = os.environ.get(ENV_WATCHDOG_PID, "")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            log.warning("ignoring %s=%r: not a process id", ENV_WATCHDOG_PID, pid)
            return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring %s=%r: not a number of microseconds", ENV_WATCHDOG_USEC, usec)
        return None
    if value <= 0:
        return None
    return value / 1_000_000


def monotonic_usec() -> int:
    """``CLOCK_MONOTONIC`` in microseconds, as ``RELOADING=1`` wants it."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends state changes to systemd; a no-op when ``$NOTIFY_SOCKET`` is not set."""

    def __init__(self, address: str | None = None) -> None:
        """Use ``address`` (a ``$NOTIFY_SOCKET``-style value), else the environment."""
        raw = os.environ.get(ENV_SOCKET, "") if address is None else address
        self._address = socket_address(raw) if raw else None
        if raw and self._address is None:
            log.warning("ignoring %s=%r: only absolute paths and @abstract names are "
                        "supported", ENV_SOCKET, raw)
        self._sock: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        """Whether notifications go anywhere (we run under systemd with Type=notify)."""
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``VAR=value`` lines in one datagram; True if it was delivered."""
        if self._address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(payload, self._address)
        except OSError as err:
            if not self._failed:
                log.warning("cannot notify systemd at %s=%s: %s (state changes are not "
                            "reported)", ENV_SOCKET, self._address.replace("\0", "@"), err)
                self._failed = True
            return False
        self._failed = False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Startup (or a reload) is complete: ``READY=1``, with an optional status line."""
        return self.notify("READY=1", *self._status(status))

    def reloading(self, status: str | None = None) -> bool:
        """A reload starts: ``RELOADING=1`` with ``MONOTONIC_USEC``; send ``ready()`` after."""
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}",
                           *self._status(status))

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun: ``STOPPING=1``."""
        return self.notify("STOPPING=1", *self._status(status))

    def watchdog(self) -> bool:
        """Keep-alive ping for ``WatchdogSec=``: ``WATCHDOG=1``."""
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status``: ``STATUS=...``."""
        return self.notify(*self._status(text))

    def close(self) -> None:
        """Release the socket; later calls open a new one. Safe to call more than once."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @staticmethod
    def _status(text: str | None) -> tuple[str, ...]:
        if text is None:
            return ()
        return ("STATUS=" + " ".join(text.split()),)
