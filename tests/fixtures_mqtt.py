"""mosquitto broker fixtures: a session broker and a factory for special ones.

``mqtt_broker`` (session): mosquitto on a free loopback port, anonymous, persistence in a
temporary directory, stopped by PID at the end. ``mqtt_broker_factory`` (function): makes
brokers with TLS and/or a password file that tests may stop and start again on the same
port. ``mqtt_certs`` (session): a throwaway CA, a server certificate for 127.0.0.1/localhost
signed by it, and a second CA that signed nothing we use (made with the openssl CLI).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.components import missing

#: The broker binary (``STREAMSONIC_TEST_MOSQUITTO`` overrides; /usr/sbin is often off PATH).
MOSQUITTO = (os.environ.get("STREAMSONIC_TEST_MOSQUITTO") or shutil.which("mosquitto")
             or "/usr/sbin/mosquitto")


def require_mosquitto() -> None:
    """Skip the test when mosquitto is not installed (fail it in CI: ``tests/components.py``)."""
    if not (Path(MOSQUITTO).is_file() and os.access(MOSQUITTO, os.X_OK)):
        missing(f"mosquitto not found at {MOSQUITTO} (apt install mosquitto mosquitto-clients)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0,
              proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port (or ``proc`` exits)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise OSError(f"process exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@dataclass
class Certs:
    """Paths of the throwaway PKI."""

    ca: Path
    server_cert: Path
    server_key: Path
    other_ca: Path
    client_cert: Path
    client_key: Path


@dataclass
class Broker:
    """One mosquitto process with its own config; restartable on the same port."""

    workdir: Path
    port: int = field(default_factory=free_port)
    certs: Certs | None = None
    users: dict[str, str] | None = None
    require_client_cert: bool = False
    #: Save the persistence file after every change (subscription, queued message), so
    #: that a SIGKILL loses nothing the broker had accepted; else once a second.
    save_every_change: bool = False
    #: More lines for mosquitto.conf (e.g. ``max_inflight_messages 5``).
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL to give ``--mqtt``."""
        scheme = "mqtts" if self.certs else "mqtt"
        host = "localhost" if self.certs else "127.0.0.1"
        return f"{scheme}://{host}:{self.port}"

    @property
    def tls(self) -> Certs:
        """The certificates of a TLS broker (one started with ``certs``)."""
        if self.certs is None:
            raise AttributeError("this broker was started without TLS certificates")
        return self.certs

    def _write_config(self) -> Path:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        lines = [
            "per_listener_settings false",
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {data}/",
            "autosave_interval 1",
            f"autosave_on_changes {'true' if self.save_every_change else 'false'}",
            "max_queued_messages 100000",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if os.geteuid() == 0:  # mosquitto would drop to its own user and lose our files
            lines.append("user root")
        if self.users is not None:
            pwfile = self.workdir / "passwords"
            pwfile.write_text("")
            for user, password in self.users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pwfile), user, password],
                               check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        if self.certs is not None:
            lines += [
                f"cafile {self.certs.ca}",
                f"certfile {self.certs.server_cert}",
                f"keyfile {self.certs.server_key}",
            ]
            if self.require_client_cert:
                lines.append("require_certificate true")
        lines += self.extra
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> None:
        """Start mosquitto and wait until it accepts connections."""
        conf = self._write_config()
        log = (self.workdir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
        try:
            wait_port(self.port, proc=self.proc)
        except OSError:
            self.stop()
            text = (self.workdir / "mosquitto.log").read_text(errors="replace")
            raise RuntimeError(f"mosquitto did not start on port {self.port}:\n{text}") from None

    def stop(self) -> None:
        """Stop mosquitto (SIGTERM to its PID, then SIGKILL) and wait for it."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def kill(self) -> None:
        """Kill mosquitto abruptly (SIGKILL), as a crash would."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(cwd: Path, name: str) -> tuple[Path, Path]:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}", cwd=cwd)
    return cwd / f"{name}.crt", cwd / f"{name}.key"


def _make_leaf(cwd: Path, name: str, ca: str, san: str) -> tuple[Path, Path]:
    ext = cwd / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=cwd)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", "-extfile", ext.name,
             cwd=cwd)
    return cwd / f"{name}.crt", cwd / f"{name}.key"


@pytest.fixture(scope="session")
def mqtt_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A throwaway CA, a server certificate signed by it, a client certificate, another CA."""
    cwd = tmp_path_factory.mktemp("pki")
    ca, _ = _make_ca(cwd, "test-ca")
    other_ca, _ = _make_ca(cwd, "other-ca")
    server_cert, server_key = _make_leaf(cwd, "server", "test-ca",
                                         "DNS:localhost,IP:127.0.0.1")
    client_cert, client_key = _make_leaf(cwd, "client", "test-ca", "DNS:client")
    return Certs(ca, server_cert, server_key, other_ca, client_cert, client_key)


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """An anonymous mosquitto on a free loopback port for the whole session."""
    require_mosquitto()
    broker = Broker(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def mqtt_broker_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        type[Broker]]:
    """Make (and start) extra brokers: ``factory(certs=..., users={...},
    save_every_change=True, extra=[conf lines])``; all are stopped when the test ends."""
    require_mosquitto()
    made: list[Broker] = []

    def factory(certs: Certs | None = None, users: dict[str, str] | None = None,
                require_client_cert: bool = False, save_every_change: bool = False,
                extra: list[str] | None = None) -> Broker:
        broker = Broker(tmp_path_factory.mktemp("mosquitto"), certs=certs, users=users,
                        require_client_cert=require_client_cert,
                        save_every_change=save_every_change, extra=extra or [])
        broker.start()
        made.append(broker)
        return broker

    yield factory  # type: ignore[misc]
    for broker in made:
        broker.stop()


# -- publishing helpers -------------------------------------------------------------------

def publish(broker: Broker, topic: str, payloads: list[str | bytes], qos: int = 1,
            retain: bool = False, **auth: str) -> None:
    """Publish ``payloads`` in order with a paho client and wait until all are sent."""
    import paho.mqtt.client as paho

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    if auth:
        client.username_pw_set(auth["username"], auth["password"])
    if broker.certs is not None:
        client.tls_set(ca_certs=str(broker.certs.ca))
    client.connect("localhost" if broker.certs else "127.0.0.1", broker.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, p, qos=qos, retain=retain) for p in payloads]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def mosquitto_pub(broker: Broker, topic: str, message: str | bytes, qos: int = 1,
                  retain: bool = False) -> None:
    """Publish one message with the ``mosquitto_pub`` command-line client."""
    args = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", topic,
            "-q", str(qos)]
    if retain:
        args.append("-r")
    if isinstance(message, bytes):
        args.append("-s")  # message from stdin, as bytes
        subprocess.run(args, input=message, check=True, capture_output=True, timeout=10)
    else:
        subprocess.run([*args, "-m", message], check=True, capture_output=True, timeout=10)


class QueuingPublisher:
    """A paho publisher that outlives a broker restart: QoS 1 messages published while the
    broker is away wait in paho and go out once its own thread has reconnected."""

    def __init__(self, broker: Broker) -> None:
        import threading

        import paho.mqtt.client as paho

        self.connected = threading.Event()
        self.gone = threading.Event()
        self._acked = 0
        self._acked_cond = threading.Condition()
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        client.reconnect_delay_set(1, 1)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = lambda *_: self._count_ack()
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        self.client = client
        if not self.connected.wait(10):
            self.close()
            raise RuntimeError(f"publisher cannot connect to port {broker.port}")

    def _on_connect(self, *_: object) -> None:
        self.gone.clear()
        self.connected.set()

    def _on_disconnect(self, *_: object) -> None:
        self.connected.clear()
        self.gone.set()

    def _count_ack(self) -> None:
        with self._acked_cond:
            self._acked += 1
            self._acked_cond.notify_all()

    def publish(self, topic: str, payloads: list[str | bytes], qos: int = 1) -> None:
        """Publish (or, while the broker is away, queue) ``payloads`` in order."""
        for payload in payloads:
            self.client.publish(topic, payload, qos=qos)

    def wait_acked(self, count: int, timeout: float) -> bool:
        """Wait until the broker has acknowledged ``count`` QoS 1 messages in all."""
        with self._acked_cond:
            return self._acked_cond.wait_for(lambda: self._acked >= count, timeout)

    def close(self) -> None:
        """Disconnect and stop paho's thread."""
        self.client.disconnect()
        self.client.loop_stop()
