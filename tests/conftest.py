"""Shared fixtures. Real-component fixtures live in their own plugin modules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The tests run the daemon as a plain program. A service manager around the test run (CI
# started by systemd) would otherwise make every daemon they start behave as its service:
# refuse stdin /dev/null (exit 78), prefix journald priorities, notify a socket.
for _var in ("INVOCATION_ID", "NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC",
             "WATCHDOG_PID"):
    os.environ.pop(_var, None)

# Small models, batch 1: intra-op threads only add contention (measured 20x slower with
# 2 threads on a busy 2-core machine).
torch.set_num_threads(1)

pytest_plugins = ["tests.alone", "tests.components", "tests.fixtures_jack",
                  "tests.fixtures_mqtt", "tests.fixtures_nats"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

#: The Clementi corpus's pitch table: 50..89 without two pitches it never uses.
CLASSES = [p for p in range(50, 90) if p not in (51, 87)]


@pytest.fixture(scope="session")
def shipped() -> Path:
    """The shipped pitch weights (in git); their absence is a failure in CI."""
    from streamsonic.model.checkpoint import default_weights
    from tests.components import missing

    path = default_weights("pitch")
    if not path.is_file():
        missing(f"shipped weights {path} are missing (they are in git: git checkout weights/)")
    return path


@pytest.fixture(scope="session")
def random_pitch_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pitch checkpoint with random (seeded) weights, for tests of the pipeline."""
    import torch

    from streamsonic.model.checkpoint import Checkpoint, save_checkpoint
    from streamsonic.model.network import PitchLSTM

    torch.manual_seed(1234)
    net = PitchLSTM(n_classes=len(CLASSES))
    path = tmp_path_factory.mktemp("weights") / "random-pitch.pt"
    save_checkpoint(path, Checkpoint(kind="pitch", arch=net.arch(), classes=CLASSES,
                                     state_dict=net.state_dict(), meta={"note": "random"}))
    return path
