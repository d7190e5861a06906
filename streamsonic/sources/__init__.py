"""Sources: async iterators of samples. Each backend is imported only when used."""

from __future__ import annotations

from streamsonic.config import Config
from streamsonic.errors import ConfigError
from streamsonic.events import Source
from streamsonic.extras import missing_extra


def open_source(config: Config, play_notes: bool = False) -> Source:
    """The configured source: NATS when ``nats.url`` is set, MQTT when ``mqtt.url`` is,
    else stdin.

    With ``play_notes`` the MQTT source yields the NoteEvents that another streamsonic
    published with ``--output mqtt:PREFIX`` instead of samples.
    """
    if config.nats.url:
        if config.mqtt.url:
            raise ConfigError(f"both mqtt.url ({config.mqtt.url}) and nats.url "
                              f"({config.nats.url}) are set; a daemon reads one source: "
                              "leave one of them empty")
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
    from streamsonic.sources.stdin import StdinSource  # noqa: PLC0415 - lazy backend

    return StdinSource.from_config(config)
