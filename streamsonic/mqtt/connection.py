"""Broker URL, credentials and TLS -> a configured paho-mqtt 2.x client.

Everything that can go wrong before the first CONNACK is turned into one-line
``MqttError``s that name the broker, the reason and the fix.
"""

from __future__ import annotations

import logging
import socket
import ssl
import uuid
from pathlib import Path
from typing import NotRequired, TypedDict

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from streamsonic.config import MqttConfig
from streamsonic.errors import MqttError
from streamsonic.mqtt.chunked import ChunkedClient
from streamsonic.mqtt.urls import (
    CREDENTIAL_NAME,
    DEFAULT_PORTS,
    PASSWORD_ENV,
    BrokerUrl,
    resolve_password,
    split_url,
)

__all__ = ["CREDENTIAL_NAME", "DEFAULT_PORTS", "PASSWORD_ENV", "BrokerUrl", "build_client",
           "client_id_for", "connect_args", "explain_refusal", "explain_socket_error",
           "parse_url", "resolve_password", "self_connected"]

log = logging.getLogger(__name__)


def parse_url(url: str) -> BrokerUrl:
    """Parse a broker URL (:func:`streamsonic.mqtt.urls.split_url`); MqttError when it is
    not usable. Config validation refuses the same URLs first (exit 78)."""
    try:
        return split_url(url)
    except ValueError as err:
        raise MqttError(str(err)) from None


def _check_file(path: str, key: str) -> str:
    if path and not Path(path).is_file():
        raise MqttError(f"{key} = {path!r} does not exist; give the path of a PEM file")
    return path


def client_id_for(config: MqttConfig, suffix: str = "") -> str:
    """The configured client id (plus ``suffix``), or a random one."""
    if config.client_id:
        return config.client_id + suffix
    return f"streamsonic-{uuid.uuid4().hex[:12]}{suffix}"


def build_client(config: MqttConfig, url: BrokerUrl, client_id: str,
                 paho_reconnects: bool = False, manual_ack: bool = False,
                 chunked: bool = False) -> paho.Client:
    """A paho client with protocol, credentials and TLS set; not connected yet.

    ``paho_reconnects``: let paho's own thread (``loop_start``) reconnect (the output does);
    the source runs its own jittered reconnect loop instead. ``manual_ack``: QoS 1/2
    messages are acknowledged only by ``client.ack(mid, qos)`` (the source acknowledges a
    message once the engine has taken it). ``chunked``: a :class:`ChunkedClient`, which
    reads the socket in chunks (for a network loop that calls ``loop_read`` again while
    ``buffered()``: the source's)."""
    v5 = config.protocol == "5"
    protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
    if not config.clean_start and not config.client_id:
        raise MqttError(
            "mqtt.clean_start = false (persistent session) needs a fixed client id; "
            "set mqtt.client_id or pass --client-id"
        )
    client = (ChunkedClient if chunked else paho.Client)(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        # MQTT 5 has no clean session flag (clean start is a connect argument instead)
        clean_session=None if v5 else config.clean_start,
        protocol=protocol,
        reconnect_on_failure=paho_reconnects,
        manual_ack=manual_ack,
    )
    username = config.username or url.username
    password, origin = resolve_password(config)
    if username:
        client.username_pw_set(username, password)
    elif password is not None:
        log.warning("MQTT password from %s ignored: no username (set mqtt.username)", origin)
    if url.tls:
        ca = _check_file(config.ca_file, "mqtt.ca_file") or None
        cert = _check_file(config.cert_file, "mqtt.cert_file") or None
        key = _check_file(config.key_file, "mqtt.key_file") or None
        if key and not cert:
            raise MqttError("mqtt.key_file is set without mqtt.cert_file; set both or neither")
        try:
            client.tls_set(ca_certs=ca, certfile=cert, keyfile=key,
                           cert_reqs=ssl.CERT_REQUIRED)
        except (ssl.SSLError, OSError) as err:
            raise MqttError(
                f"TLS setup for {url} failed: {err}; check mqtt.ca_file, mqtt.cert_file "
                "and mqtt.key_file are PEM files (and the key matches the certificate)"
            ) from None
    elif config.ca_file or config.cert_file:
        raise MqttError(
            f"mqtt.ca_file/cert_file are set but the URL {url} is not TLS; use mqtts://"
        )
    return client


class ConnectArgs(TypedDict):
    """Keyword arguments of ``paho.Client.connect`` (:func:`connect_args`)."""

    host: str
    port: int
    keepalive: int
    clean_start: NotRequired[bool]
    properties: NotRequired[Properties]


def connect_args(config: MqttConfig, url: BrokerUrl) -> ConnectArgs:
    """Keyword arguments for ``client.connect``: keepalive, clean start, session expiry."""
    args = ConnectArgs(host=url.host, port=url.port, keepalive=config.keepalive)
    if config.protocol == "5":
        args["clean_start"] = config.clean_start
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0 if config.clean_start else config.session_expiry
        args["properties"] = props
    return args


def self_connected(sock: socket.socket) -> bool:
    """Whether a TCP connection reached its own port: connecting to a port of this machine
    that nothing listens on, in the ephemeral port range, now and then gets that very port
    as its local one (a simultaneous open), and then talks to itself. It means, as a
    refused connection would, that no broker is up there yet."""
    try:
        return bool(sock.getsockname() == sock.getpeername())
    except OSError:  # not connected (any more)
        return False


def explain_socket_error(err: BaseException, url: BrokerUrl) -> MqttError:
    """A one-line MqttError for a failure to open the connection to ``url``."""
    where = f"MQTT broker {url}"
    if isinstance(err, ssl.SSLCertVerificationError):
        reason = err.verify_message or str(err)
        return MqttError(
            f"{where}: TLS certificate verification failed ({reason}); set mqtt.ca_file to "
            "the CA that signed the broker's certificate, and connect by the name in it"
        )
    if isinstance(err, ssl.SSLError):
        return MqttError(
            f"{where}: TLS handshake failed ({err.reason or err}); check that the port speaks "
            "TLS and that mqtt.cert_file/key_file are what the broker expects"
        )
    if isinstance(err, ConnectionRefusedError):
        return MqttError(
            f"{where} refused the connection (nothing listening); check the host and port "
            "in --mqtt / mqtt.url and that the broker is running"
        )
    if isinstance(err, socket.gaierror):
        return MqttError(f"{where}: host name {url.host!r} cannot be resolved; check mqtt.url")
    if isinstance(err, TimeoutError | socket.timeout):
        return MqttError(
            f"{where} did not answer in time; check the address and any firewall in between"
        )
    if isinstance(err, ConnectionError | OSError):
        detail = getattr(err, "strerror", None) or str(err) or type(err).__name__
        return MqttError(f"{where} cannot be reached ({detail}); check mqtt.url and the network")
    return MqttError(f"{where}: connection failed ({err}); check mqtt.url")


def explain_refusal(reason: object, url: BrokerUrl, username: str) -> MqttError:
    """A one-line MqttError for a CONNACK that refused us."""
    text = str(reason)
    who = f"user {username!r}" if username else "an anonymous client"
    lower = text.lower()
    if "password" in lower or "not authori" in lower or "bad user" in lower:
        return MqttError(
            f"MQTT broker {url} refused {who}: {text}; check mqtt.username and the password "
            f"(mqtt.password_file, ${PASSWORD_ENV} or the systemd credential {CREDENTIAL_NAME!r})"
        )
    if "identifier" in lower:
        return MqttError(
            f"MQTT broker {url} refused the client id: {text}; set another mqtt.client_id"
        )
    if "protocol" in lower:
        return MqttError(
            f"MQTT broker {url} refused the protocol: {text}; try mqtt.protocol = \"3.1.1\""
        )
    return MqttError(f"MQTT broker {url} refused the connection: {text}")
