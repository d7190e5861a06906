"""``nats://[user@]host[:port]`` URLs and the NATS password, without nats-py (the config
checks them at load time)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from streamsonic.config import NatsConfig
from streamsonic.errors import ConfigError, NatsError
from streamsonic.mqtt.urls import redact_url

DEFAULT_PORT = 4222
#: The environment variable a NATS password may come from (never the command line).
PASSWORD_ENV = "STREAMSONIC_NATS_PASSWORD"
PASSWORD_PLACES = f"the config file's nats.password, nats.password_file or ${PASSWORD_ENV}"


@dataclass(frozen=True)
class ServerUrl:
    """A parsed ``nats://`` URL (credentials kept apart, never printed)."""

    host: str
    port: int
    username: str = ""
    password: str = ""

    def __str__(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def connect_url(self) -> str:
        """The URL nats-py connects to (with the credentials)."""
        auth = f"{self.username}:{self.password}@" if self.username else ""
        return f"nats://{auth}{self.host}:{self.port}"


def parse_url(url: str) -> ServerUrl:
    """``nats://[user@]host[:port]``, or a ConfigError naming the fix; a password in the URL
    is refused (it would show in ``ps`` and the shell's history: see :func:`password`)."""
    shown = repr(redact_url(url))
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise ConfigError(f"nats.url = {shown} is not a valid URL "
                          f"({redact_url(str(err))}); write nats://host[:port]") from None
    if parts.password is not None:
        raise ConfigError(f"nats.url = {shown} contains a password; passwords never go into "
                          f"a URL or on the command line: put it in {PASSWORD_PLACES} (the "
                          "user name may stay in the URL, or go in nats.username)")
    if parts.scheme != "nats" or not parts.hostname:
        raise ConfigError(f"nats.url = {shown}: write nats://host[:port] (e.g. "
                          "nats://127.0.0.1:4222); TLS (tls://) is not supported yet")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"nats.url = {shown}: a NATS URL has no path or query; write "
                          "nats://host[:port] and name the subjects in nats.subjects "
                          "(--subject)")
    return ServerUrl(parts.hostname, port or DEFAULT_PORT, parts.username or "")


def server_url(settings: NatsConfig) -> ServerUrl:
    """``nats.url`` with its login: the user from the URL or ``nats.username``, the
    password from :func:`password`."""
    url = parse_url(settings.url)
    user = url.username or settings.username
    secret = password(settings) if user else ""
    return ServerUrl(url.host, url.port, user, secret)


def password(settings: NatsConfig, error: type[NatsError | ConfigError] = NatsError) -> str:
    """The first found of ``nats.password`` (the config file: ``--set`` refuses it),
    ``$STREAMSONIC_NATS_PASSWORD``, ``nats.password_file`` (its first line; a file that
    cannot be read raises ``error``: :func:`check_password_file` reads it at start, as a
    configuration error); "" for none."""
    if settings.password:
        return settings.password
    env = os.environ.get(PASSWORD_ENV)
    if env:
        return env
    if settings.password_file:
        path = settings.password_file
        try:
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as err:
            raise error(f"cannot read the NATS password from {path} (nats.password_file): "
                        f"{err.strerror}; check the path and its permissions (read as user "
                        f"id {os.getuid()})") from None
        except UnicodeDecodeError:
            raise error(f"cannot read the NATS password from {path} (nats.password_file): "
                        "it is not UTF-8 text; write the password in it as text") from None
    return ""


def check_password_file(settings: NatsConfig) -> None:
    """Where the NATS source logs in (``nats.url`` with a user), read its password now: a
    ``nats.password_file`` that cannot be read is a :class:`ConfigError` (exit 78) before
    anything slow (the model) starts, not a failed connection after it; ``check-config``
    says so too."""
    if settings.url and (parse_url(settings.url).username or settings.username):
        password(settings, ConfigError)
