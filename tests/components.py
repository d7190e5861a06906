"""Real components the integration tests need, and what a missing one does to the run.

On a developer's machine a test whose real component is missing (jackd, mosquitto,
nats-server, the TimGM6mb SoundFont, the shipped weights) is skipped with the reason and the
package that provides it. In CI (``CI`` set to anything but ``""``, ``0``, ``false``,
``no`` or ``off``, as GitHub Actions, GitLab and most others set it) the same test fails
instead: a CI run that skipped its integration tests would report green while testing
nothing real.

Loaded as a pytest plugin by ``tests/conftest.py``; provides the ``soundfont`` fixture.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

#: Values of ``CI`` that mean "not in CI".
NOT_CI = frozenset({"", "0", "false", "no", "off"})

#: The General MIDI SoundFont the audio tests render with (``STREAMSONIC_TEST_SOUNDFONT``
#: points them at another file).
SOUNDFONT = Path(os.environ.get("STREAMSONIC_TEST_SOUNDFONT")
                 or "/usr/share/sounds/sf2/TimGM6mb.sf2")


#: The NATS server binary (``STREAMSONIC_TEST_NATS_SERVER`` overrides; Debian installs it in
#: /usr/bin, from the ``nats-server`` package).
NATS_SERVER = (os.environ.get("STREAMSONIC_TEST_NATS_SERVER") or shutil.which("nats-server")
               or "/usr/bin/nats-server")


def in_ci() -> bool:
    """Whether this run is a CI run (``CI`` is set to a true value)."""
    return os.environ.get("CI", "").strip().lower() not in NOT_CI


def missing(reason: str) -> NoReturn:
    """A real component is missing: skip the test, or fail it in CI.

    ``reason`` names the component and how to install it.
    """
    if in_ci():
        pytest.fail(f"{reason} [CI is set, so a missing real component fails the run "
                    "instead of skipping]", pytrace=False)
    pytest.skip(reason)


def require_nats_server() -> None:
    """Skip the test when nats-server is not installed (fail it in CI)."""
    if not (Path(NATS_SERVER).is_file() and os.access(NATS_SERVER, os.X_OK)):
        missing(f"nats-server not found at {NATS_SERVER} (apt install nats-server, or set "
                "STREAMSONIC_TEST_NATS_SERVER)")


@pytest.fixture(scope="session")
def soundfont() -> Path:
    """The TimGM6mb SoundFont (``apt install timgm6mb-soundfont``)."""
    if not SOUNDFONT.is_file():
        missing(f"SoundFont {SOUNDFONT} not found "
                "(apt install timgm6mb-soundfont, or set STREAMSONIC_TEST_SOUNDFONT)")
    return SOUNDFONT
