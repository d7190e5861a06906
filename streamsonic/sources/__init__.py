"""Sources: async iterators of samples. Each backend is imported only when used."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Protocol, runtime_checkable

from streamsonic.config import Config
from streamsonic.errors import ConfigError, NoSourceError
from streamsonic.events import Source
from streamsonic.extras import missing_extra


@runtime_checkable
class Connecting(Protocol):
    """A source with a connection (MQTT): the daemon shows its state (STATUS=, metrics) and
    hands it a reloaded configuration."""

    @property
    def connected(self) -> bool:
        """Whether it is connected now."""
        ...

    @property
    def waiting_for(self) -> str | None:
        """What it waits for while it cannot deliver, e.g. "the broker at host:1883" (it has
        not connected yet, or lost the connection); None while connected."""
        ...

    async def check_reconfigure(self, config: Config) -> None:
        """Before :meth:`reconfigure`: raise (a
        :class:`~streamsonic.errors.StreamsonicError` saying why) when ``config``'s
        settings for this source cannot work, e.g. a broker that refuses the new login; the
        running connection is left as it is either way."""
        ...

    def reconfigure(self, config: Config) -> list[str]:
        """Apply a reloaded configuration where it can (topics, payload decoding, backoff);
        returns the dotted keys that changed but need a restart."""
        ...


def waiting_for(source: object) -> str | None:
    """What ``source`` waits for (the broker), or None (connected, or not a network
    source): what STATUS= and the metrics show."""
    return source.waiting_for if isinstance(source, Connecting) else None


def connected(source: object) -> bool | None:
    """Whether a network ``source`` is connected now; None for another source."""
    return source.connected if isinstance(source, Connecting) else None


def open_source(config: Config, play_notes: bool = False) -> Source:
    """The configured source: NATS when ``nats.url`` is set, MQTT when ``mqtt.url`` is,
    else stdin.

    With ``play_notes`` the MQTT source yields the NoteEvents that another streamsonic
    published with ``--output mqtt:PREFIX`` instead of samples.
    """
    if config.nats.url:
        if config.mqtt.url:
            from streamsonic.mqtt.urls import redact_url  # noqa: PLC0415 - no paho

            raise ConfigError(f"both mqtt.url ({redact_url(config.mqtt.url)}) and nats.url "
                              f"({redact_url(config.nats.url)}) are set; a daemon reads one "
                              "source: leave one of them empty")
        try:
            from streamsonic.sources.nats import NatsSource  # noqa: PLC0415 - lazy backend
        except ModuleNotFoundError as err:  # the 'nats' extra is not installed
            error = missing_extra(err, "the NATS source")
            if error is None:
                raise
            raise error from None

        return NatsSource.from_config(config, play_notes=play_notes)
    if config.mqtt.url:
        try:
            from streamsonic.sources.mqtt import MqttSource  # noqa: PLC0415 - lazy backend
        except ModuleNotFoundError as err:  # the 'mqtt' extra is not installed
            error = missing_extra(err, "the MQTT source")
            if error is None:
                raise
            raise error from None

        return MqttSource.from_config(config, play_notes=play_notes)
    check_stdin()
    from streamsonic.sources.stdin import StdinSource  # noqa: PLC0415 - lazy backend

    return StdinSource.from_config(config)


def under_service_manager() -> bool:
    """Whether a service manager started us (systemd sets ``$INVOCATION_ID`` for every
    service, ``$NOTIFY_SOCKET`` for ``Type=notify``)."""
    return bool(os.environ.get("NOTIFY_SOCKET") or os.environ.get("INVOCATION_ID"))


def stdin_without_data() -> str | None:
    """How stdin is sure to give nothing ("/dev/null", "closed"), or None if it may."""
    if sys.stdin is None:
        # fd 0 was closed when Python started (it then leaves sys.stdin None); by now a
        # file opened since may have been given fd 0, so fstat cannot tell.
        return "closed"
    try:
        st = os.fstat(0)
    except OSError:
        return "closed"
    if stat.S_ISCHR(st.st_mode):
        try:
            null = Path(os.devnull).stat()
        except OSError:
            return None
        if st.st_rdev == null.st_rdev:
            return os.devnull
    return None


def check_stdin() -> None:
    """Refuse stdin as the source under a service manager when it is /dev/null or closed
    (NoSourceError, exit 78): the daemon would report READY and end at once, looking fine."""
    if not under_service_manager():
        return
    why = stdin_without_data()
    if why is not None:
        raise NoSourceError(
            f"nothing to read: no MQTT broker or NATS server is configured (mqtt.url and "
            f"nats.url are empty) and stdin is {why}, as a service's is; set mqtt.url and "
            "mqtt.topics (or nats.url and nats.subjects) in the config file, or give the "
            "service a socket or file on stdin with StandardInput=")
