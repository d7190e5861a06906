"""nats-server fixtures: a server on a free loopback port with partitioning mappings.

``nats_server`` (function): nats-server with ``mappings = { "sensors.*":
"sensors.{{wildcard(1)}}.{{partition(3,1)}}" }`` (three partitions by the stream token),
stopped by PID at the end. A missing nats-server skips the test (fails it in CI).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.components import NATS_SERVER, require_nats_server
from tests.fixtures_mqtt import free_port, wait_port

#: Partitions the test server's mapping makes.
PARTITIONS = 3
#: The mapping: publishers send sensors.NAME; subscribers get sensors.NAME.<partition>.
MAPPING = f'"sensors.*": "sensors.{{{{wildcard(1)}}}}.{{{{partition({PARTITIONS},1)}}}}"'


@dataclass
class NatsServer:
    """One nats-server process with its own config file."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    #: More of the server's config file (e.g. an ``authorization`` block).
    extra: str = ""

    @property
    def url(self) -> str:
        """The URL to give ``--nats``."""
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start nats-server and wait until it accepts connections."""
        conf = self.workdir / "nats-server.conf"
        conf.write_text(f"listen: 127.0.0.1:{self.port}\nmappings = {{\n  {MAPPING}\n}}\n"
                        + self.extra)
        log = (self.workdir / "nats-server.log").open("ab")
        self.proc = subprocess.Popen([NATS_SERVER, "-c", str(conf)], stdout=log, stderr=log)
        try:
            wait_port(self.port, proc=self.proc)
        except OSError:
            self.stop()
            text = (self.workdir / "nats-server.log").read_text(errors="replace")
            raise RuntimeError(f"nats-server did not start on port {self.port}:\n{text}") from None

    def stop(self) -> None:
        """Stop nats-server (SIGTERM to its PID, then SIGKILL) and wait for it."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """nats-server on a free loopback port, partitioning ``sensors.*`` three ways."""
    require_nats_server()
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()
