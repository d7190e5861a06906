"""Every number in the configuration has finite bounds, and unusable config files (not UTF-8,
nested too deeply, too large) are one line and exit status 78, at start-up and on SIGHUP."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamsonic.config import MAX_CONFIG_BYTES, MAX_LINE_BYTES, Config, load_config
from streamsonic.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def numeric_keys() -> list[tuple[str, type]]:
    """Every int and float key of every section (and of a [[voices]] rule), dotted."""
    keys = []
    for section in dataclasses.fields(Config):
        if section.name == "voices":
            cls: Any = typing.get_args(typing.get_type_hints(Config)["voices"])[0]
        else:
            cls = section.default_factory
        for name, tp in typing.get_type_hints(cls).items():
            if tp in (int, float):
                keys.append((f"{section.name}.{name}", tp))
    return keys


def set_key(dotted: str, value: object, tmp_path: Path) -> Config:
    section, _, key = dotted.partition(".")
    if section == "voices":
        path = tmp_path / "voices.toml"
        path.write_text(f'[[voices]]\nmatch = "*"\n{key} = {toml(value)}\n')
        return load_config(path)
    return load_config(None, {dotted: value})


def toml(value: object) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)


def huge_values(tp: type) -> list[object]:
    if tp is int:
        return [2**63 - 1, -(2**63), 10**18]
    return [math.nan, math.inf, -math.inf, 1e18, -1e18]


@pytest.mark.parametrize(("key", "tp"), numeric_keys(), ids=[k for k, _ in numeric_keys()])
def test_every_number_has_finite_bounds(key: str, tp: type, tmp_path: Path) -> None:
    """NaN, infinities and absurd magnitudes are refused for each numeric key, by name and
    with the allowed range. A key added without bounds fails here."""
    for value in huge_values(tp):
        with pytest.raises(ConfigError) as info:
            set_key(key, value, tmp_path)
        message = str(info.value)
        assert key.rsplit(".", 1)[-1] in message, message
        assert "\n" not in message


def test_bounds_accept_the_documented_limits(tmp_path: Path) -> None:
    assert load_config(None, {"input.max_line_bytes": MAX_LINE_BYTES}).input.max_line_bytes \
        == MAX_LINE_BYTES
    assert load_config(None, {"model.seed": 2**32 - 1}).model.seed == 2**32 - 1
    assert load_config(None, {"model.temperature": 100.0}).model.temperature == 100.0
    assert load_config(None, {"normalize.window": 100_000}).normalize.window == 100_000


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("STREAMSONIC_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "streamsonic", *args], cwd=REPO,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["--set", "input.max_line_bytes=9223372036854775807"],
         ["input.max_line_bytes", "9223372036854775807", "16..16_777_216", "--set"]),
        (["--set", "normalize.window=1000000000000000000"],
         ["normalize.window", "1000000000000000000", "2..100_000", "--set"]),
        (["--temperature", "inf"], ["model.temperature", "inf", "0..100", "--temperature"]),
        (["--set", "model.kernel_width=nan"], ["model.kernel_width", "nan", "128", "--set"]),
    ],
    ids=["max_line_bytes", "window", "temperature", "kernel_width"],
)
def test_out_of_range_on_the_command_line_is_one_line_and_78(args: list[str],
                                                             shown: list[str]) -> None:
    """Before the bounds, the first of these killed the stdin thread (OverflowError) and
    the daemon hung forever."""
    result = run_cli("run", "--output", "events", *args)
    assert result.returncode == 78, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in shown:
        assert text in lines[0], lines[0]


def test_out_of_range_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[model]\ntemperature = inf\n")
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 78, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert str(path) in line and "model.temperature" in line and "0..100" in line


# -- unusable files ------------------------------------------------------------------------

NOT_UTF8 = b'[music]\nscale = "minor"\n# caf\xe9 (Latin-1)\n'
DEEP = ("a = " + "[" * 5000 + "]" * 5000 + "\n").encode()
DEEP_TABLES = ("a = " + "{b = " * 3000 + "1" + "}" * 3000 + "\n").encode()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (NOT_UTF8, "not UTF-8 text (byte 0xe9 on line 3)"),
        (DEEP, "nests arrays or tables too deeply"),
        (DEEP_TABLES, "nests arrays or tables too deeply"),
        (b"# " + b"x" * MAX_CONFIG_BYTES + b"\n", "is larger than"),
    ],
    ids=["not-utf8", "deep-arrays", "deep-tables", "too-large"],
)
def test_unusable_file_at_start_up_is_one_line_and_78(tmp_path: Path, content: bytes,
                                                       reason: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=re.escape(reason)):
        load_config(path)
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 78, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert str(path) in line and reason in line, line


def test_deep_set_value_is_a_config_error() -> None:
    result = run_cli("run", "--set", "music.scale=" + "[" * 5000)
    assert result.returncode == 78, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "music.scale" in line


# -- SIGHUP with an unusable file: one error line, old config kept, READY=1 follows ------

@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound at a path, to pass as $NOTIFY_SOCKET."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(60)  # guards against a hang; the first READY waits for torch
    yield sock, str(path)
    sock.close()


def next_state(sock: socket.socket) -> str:
    """The first line of the next datagram that is not a watchdog ping or a status line."""
    while True:
        first = sock.recv(4096).decode().split("\n")[0]
        if first != "WATCHDOG=1" and not first.startswith("STATUS="):
            return first


@pytest.mark.slow
def test_sighup_with_unusable_file_keeps_running(
    notify_socket: tuple[socket.socket, str], tmp_path: Path, random_pitch_checkpoint: Path
) -> None:
    sock, address = notify_socket
    config = tmp_path / "live.toml"
    config.write_text('[music]\nscale = "minor"\n')
    env = {**os.environ, "NOTIFY_SOCKET": address}
    env.pop("STREAMSONIC_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamsonic", "run", "--output", "events", "--config",
         str(config), "--weights", str(random_pitch_checkpoint), "--set", "clock.backlog=1000",
         "--set", "model.passing_notes=0"],  # one note per sample: counted below
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    try:
        assert next_state(sock) == "READY=1"
        for bad in (NOT_UTF8, DEEP, DEEP_TABLES, b"[music]\ntempo = nan\n"):
            config.write_bytes(bad)
            proc.send_signal(signal.SIGHUP)
            assert next_state(sock) == "RELOADING=1"
            assert next_state(sock) == "READY=1"  # never left waiting
        assert proc.poll() is None, "the daemon died on a bad reload"
        # Three numbers, then the end of input: the daemon plays them and exits.
        out, err = proc.communicate(b"1\n5\n3\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    errors = err.decode(errors="replace")
    assert proc.returncode == 0, errors
    assert "Traceback" not in errors
    failed = [line for line in errors.splitlines() if "reload failed" in line]
    assert len(failed) == 4, errors
    assert "not UTF-8" in failed[0] and "too deeply" in failed[1] and "too deeply" in failed[2]
    assert "music.tempo" in failed[3]
    notes = [json.loads(line) for line in out.decode().splitlines()]
    assert len(notes) == 3, "the daemon stopped playing"
    c_minor = {0, 2, 3, 5, 7, 8, 10}
    assert all(n["pitch"] % 12 in c_minor for n in notes), "the old configuration was lost"


class _FailingConductor:
    """A unit-level fake: the first ``configure`` fails as a bug in it would."""

    def __init__(self) -> None:
        self.configured: list[Config] = []
        self.streams: dict[str, object] = {}
        self.earcon = None

    def configure(self, config: Config) -> None:
        self.configured.append(config)
        if len(self.configured) == 1:
            raise RuntimeError("conductor bug")


def test_reload_failure_of_any_kind_keeps_config_and_sends_ready(
    notify_socket: tuple[socket.socket, str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """Beside the subprocess test above: an unexpected exception while applying the new
    configuration is one error line, the old configuration is put back, READY=1 follows."""
    from streamsonic.daemon import Daemon

    sock, address = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    path = tmp_path / "c.toml"
    path.write_text('[music]\nscale = "minor"\n')
    old = Config()
    daemon = Daemon(old, [], False, str(path), {}, fixed_outputs=True)
    engine = type("FakeEngine", (), {"conductor": _FailingConductor()})()
    daemon.engine = engine
    daemon.scheduler = type("FakeScheduler", (), {"sinks": [], "earcon": None})()
    asyncio.run(daemon._reload_now())  # (what a SIGHUP starts, as a task of its own)
    assert next_state(sock) == "RELOADING=1"
    assert next_state(sock) == "READY=1"
    assert daemon.config is old
    assert [c.music.scale for c in engine.conductor.configured] == ["minor", "major"]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == ["reload failed, keeping the running configuration: RuntimeError: "
                      "conductor bug"]
