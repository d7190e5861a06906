"""Broker URLs without paho: parsing and checking (``mqtt.url``, ``--mqtt``, an ``mqtt:``
output's own broker) and keeping the credentials in them out of every message; where the
password comes from (:func:`resolve_password`, which the daemon calls before the model
loads, so that a password file it cannot read is exit 78 at once).

Used by config validation (``streamsonic.config``, so ``check-config`` and start-up refuse
the same URLs, exit 78) and by ``--output`` parsing (``streamsonic.outputs``), neither of
which may import paho (the ``mqtt`` extra).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from streamsonic.errors import ConfigError, MqttError

if TYPE_CHECKING:  # (config imports this module)
    from collections.abc import Iterable

    from streamsonic.config import Config, MqttConfig

#: Environment variable that may hold the broker password.
PASSWORD_ENV = "STREAMSONIC_MQTT_PASSWORD"
#: File name looked up in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=mqtt-password:...``).
CREDENTIAL_NAME = "mqtt-password"

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}

#: Where a password belongs instead of a URL (said by every refusal).
PASSWORD_PLACES = (f"the config file's mqtt.password, mqtt.password_file, ${PASSWORD_ENV} or "
                   f"the systemd credential {CREDENTIAL_NAME!r}")

# ``scheme://`` then everything up to the last '@' on the line: a password may hold '@',
# '/', ':', '#', blanks or quotes unencoded, and none of it may show (what lies between two
# URLs on one line is hidden with it: more hidden, never less).
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://).*@")


def redact(text: str) -> str:
    """``text`` with the user information of every URL in it (``scheme://USER:PASSWORD@``)
    replaced by ``***``: for any message or log line that shows a URL or an output spec."""
    return _USERINFO.sub(r"\1***@", text)


def redact_url(url: str) -> str:
    """A broker URL as a message shows it, with or without its scheme (``--mqtt
    user:password@host`` is one too): everything before its last '@' after the scheme
    hidden."""
    text = url.strip()
    if "@" not in text:
        return text
    if "://" in text:
        return redact(text)
    return "***@" + text.rsplit("@", 1)[1]


@dataclass(frozen=True)
class BrokerUrl:
    """A parsed ``mqtt://[user@]host[:port][/path]`` or ``mqtts://`` URL."""

    scheme: str
    host: str
    port: int
    username: str = ""
    path: str = ""

    @property
    def tls(self) -> bool:
        """Whether the connection uses TLS."""
        return self.scheme == "mqtts"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def split_url(url: str) -> BrokerUrl:
    """Parse and check a broker URL; ValueError with a one-line message (the URL in it
    redacted) when it is not usable: another scheme, no host, a port outside 1..65535, a
    password in it (it would show in ``ps`` and in logs), a '#' (MQTT's wildcard; a URL
    would silently cut the topic there)."""
    text = url.strip()
    shown = repr(redact_url(text))
    if "://" not in text:
        text = "mqtt://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
        password = parts.password
        hostname = parts.hostname
    except ValueError as err:
        raise ValueError(
            f"MQTT URL {shown} is not valid ({redact(str(err))}); write mqtt://host[:port], "
            "the port 1..65535"
        ) from None
    if password is not None:
        raise ValueError(
            f"MQTT URL {shown} contains a password; passwords never go into a URL or on the "
            f"command line: put it in {PASSWORD_PLACES} (the user name may stay in the URL, "
            "or go in mqtt.username)"
        )
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(
            f"MQTT URL {shown} has scheme {parts.scheme!r}; use mqtt://host[:port] "
            "or mqtts://host[:port] for TLS"
        )
    if not hostname:
        raise ValueError(f"MQTT URL {shown} names no host; write mqtt://host[:port]")
    if port == 0:
        raise ValueError(f"MQTT URL {shown}: port 0 is not a broker's port; use 1..65535 "
                         "(or leave it out: 1883, mqtts 8883)")
    if parts.fragment or text.endswith("#") or parts.query or "?" in text:
        raise ValueError(
            f"MQTT URL {shown} holds '#' or '?'; a topic prefix is a plain topic (no "
            "wildcards), e.g. mqtt://host/notes"
        )
    return BrokerUrl(
        scheme=parts.scheme,
        host=hostname,
        port=port or DEFAULT_PORTS[parts.scheme],
        username=unquote(parts.username or ""),
        path=parts.path.strip("/"),
    )


def resolve_password(config: MqttConfig) -> tuple[str | None, str]:
    """The password and where it came from, first found of: ``mqtt.password``,
    ``$STREAMSONIC_MQTT_PASSWORD``, ``mqtt.password_file``,
    ``$CREDENTIALS_DIRECTORY/mqtt-password``; ``(None, "")`` when none is set.

    An empty file (or one holding only a line break) means no password: the unit's
    ``LoadCredential=`` needs the file to exist, and a broker without passwords gets an
    empty one. A missing credential file is no password either; a ``mqtt.password_file``
    that is missing or cannot be read is a :class:`ConfigError` (it was asked for; exit
    78)."""
    if config.password:
        return config.password, "mqtt.password"
    env = os.environ.get(PASSWORD_ENV)
    if env:
        return env, f"${PASSWORD_ENV}"
    if config.password_file:
        secret = _read_secret(Path(config.password_file), "mqtt.password_file", ConfigError)
        return (secret or None), (str(config.password_file) if secret else "")
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        path = Path(cred_dir) / CREDENTIAL_NAME
        if path.is_file():
            secret = _read_secret(path, "the systemd credential", MqttError)
            if secret:
                return secret, f"credential {CREDENTIAL_NAME}"
    return None, ""


def check_password_file(config: Config, output_kinds: Iterable[str]) -> None:
    """Where MQTT is used (the source: ``mqtt.url`` without ``nats.url``; or an ``mqtt``
    output among ``output_kinds``), read the password now: a ``mqtt.password_file`` that
    cannot be read is a :class:`ConfigError` before anything slow (the model) starts, and
    ``check-config`` says so too."""
    if (config.mqtt.url and not config.nats.url) or "mqtt" in output_kinds:
        resolve_password(config.mqtt)


def _read_secret(path: Path, what: str, error: type[MqttError | ConfigError]) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as err:
        raise error(
            f"cannot read the MQTT password from {path} ({what}): {err.strerror}; "
            f"check the path and its permissions (read as user id {os.getuid()})"
        ) from None
    except UnicodeDecodeError:
        raise error(f"cannot read the MQTT password from {path} ({what}): it is not "
                    "UTF-8 text; write the password in it as text") from None
