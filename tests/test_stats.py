"""The bounded per-key naming shared by the MQTT and NATS sources' counters, and the
rate-limited log."""

from __future__ import annotations

import logging

import pytest

from streamsonic.stats import BoundedKeys, RateLimitedLog


def test_bounded_keys_name_the_first_ones_and_pool_the_rest() -> None:
    keys = BoundedKeys(2, "(other)")
    assert [keys.key(k) for k in ("a", "b", "c", "a", "d", "b")] == \
        ["a", "b", "(other)", "a", "(other)", "b"]


def test_rate_limited_errors_keep_their_level(caplog: pytest.LogCaptureFixture) -> None:
    """A refused login repeated at every reconnect was an ERROR line per retry (a QA pass at
    36e50ff: 4 in 3 s after a reload); rate-limited, it stays an ERROR."""
    now = [0.0]
    warn = RateLimitedLog(logging.getLogger("t"), interval=10.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="t")
    for step in range(4):
        now[0] = step * 0.75
        warn.error("refused", "broker refused us")
    now[0] = 11.0
    warn.error("refused", "broker refused us")
    records = [r for r in caplog.records if r.name == "t"]
    assert [r.levelno for r in records] == [logging.ERROR, logging.ERROR]
    assert records[1].getMessage() == "broker refused us (3 more like this suppressed)"
