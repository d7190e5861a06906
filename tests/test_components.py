"""A missing real component skips its tests on a developer's machine and fails them in CI.

A probe test file that uses the real-component fixtures (``jack_server``, ``soundfont``,
``mqtt_broker``, ``nats_server``) runs in a pytest subprocess with each component made
unavailable: a PATH without jackd, the SoundFont and the mosquitto and nats-server binaries
pointed at files that do not exist.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROBE = '''
def test_jack(jack_server):
    pass


def test_soundfont(soundfont):
    pass


def test_mosquitto(mqtt_broker):
    pass


def test_nats(nats_server):
    pass
'''

#: The reason each probe test gives, in part.
REASONS = {
    "test_jack": "jackd is not installed",
    "test_soundfont": "missing.sf2 not found",
    "test_mosquitto": "mosquitto not found at",
    "test_nats": "nats-server not found at",
}


def run_probe(tmp_path: Path, ci: str | None) -> dict[str, tuple[str, str]]:
    """Run the probe with every component missing; per test ``(outcome, message)``."""
    (tmp_path / "test_probe.py").write_text(PROBE)
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir(exist_ok=True)
    report = tmp_path / "report.xml"
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env |= {
        "PATH": str(empty_bin),  # no jackd, no jack_wait
        "STREAMSONIC_TEST_SOUNDFONT": str(tmp_path / "missing.sf2"),
        "STREAMSONIC_TEST_MOSQUITTO": str(tmp_path / "missing-mosquitto"),
        "STREAMSONIC_TEST_NATS_SERVER": str(tmp_path / "missing-nats-server"),
        "PYTHONPATH": str(REPO),
    }
    if ci is not None:
        env["CI"] = ci
    plugins = ["-p", "tests.components", "-p", "tests.fixtures_jack",
               "-p", "tests.fixtures_mqtt", "-p", "tests.fixtures_nats",
               "-p", "no:cacheprovider"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *plugins, "-q", f"--junitxml={report}",
         "test_probe.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert report.is_file(), result.stdout + result.stderr
    outcomes: dict[str, tuple[str, str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        found = [(child.tag, child.get("message", "")) for child in case
                 if child.tag in ("skipped", "error", "failure")]
        outcomes[case.get("name", "")] = found[0] if found else ("passed", "")
    expected_rc = 1 if any(o == "error" for o, _ in outcomes.values()) else 0
    assert result.returncode == expected_rc, result.stdout + result.stderr
    return outcomes


@pytest.mark.parametrize("ci", [None, "false"])
def test_missing_components_skip_outside_ci(tmp_path: Path, ci: str | None) -> None:
    outcomes = run_probe(tmp_path, ci)
    assert set(outcomes) == set(REASONS)
    for name, (outcome, message) in outcomes.items():
        assert outcome == "skipped", (name, outcome, message)
        assert REASONS[name] in message


@pytest.mark.parametrize("ci", ["true"])
def test_missing_components_fail_in_ci(tmp_path: Path, ci: str) -> None:
    outcomes = run_probe(tmp_path, ci)
    assert set(outcomes) == set(REASONS)
    for name, (outcome, message) in outcomes.items():
        assert outcome == "error", (name, outcome, message)  # failed in fixture setup
        assert REASONS[name] in message and "CI is set" in message
