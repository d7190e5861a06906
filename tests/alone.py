"""Tests that must not share the machine with another test (``@pytest.mark.alone``).

``scripts/test.sh`` runs pytest in two worker processes (pytest-xdist). Most tests wait on
a daemon or a broker and do not mind a neighbour; a few judge timing that a neighbour's
load upsets: JACK's dummy driver runs its period on the clock (a busy core makes it miss
its deadline), the live rhythm test feeds samples at their pace. Each such test takes an
exclusive lock on a file that every worker's other tests hold shared, so it runs while no
other test does and no other test starts until it ends. Tests marked ``jack`` are alone
too. Without workers (``-n 0``) there is no lock: every test is alone already.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("jack") is not None:
            item.add_marker(pytest.mark.alone)


def lock_path(factory: pytest.TempPathFactory) -> Path | None:
    """The lock file every worker of this run shares (None without workers): in the run's
    temporary folder, above each worker's own (pytest removes old runs' folders); its gate
    is the same path with ``.gate`` added."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return None
    return factory.getbasetemp().parent / "alone.lock"


@pytest.fixture(autouse=True)
def _alone_when_marked(request: pytest.FixtureRequest,
                       tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    path = lock_path(tmp_path_factory)
    if path is None:
        yield
        return
    alone = request.node.get_closest_marker("alone") is not None
    with path.open("a") as lock, path.with_name(path.name + ".gate").open("a") as gate:
        # Through the gate one at a time: a test that waits to be alone holds the gate
        # until it is, so the other worker's next tests wait behind it instead of taking
        # the shared lock one after another for ever (flock does not queue fairly).
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
