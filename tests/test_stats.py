"""The bounded per-key naming shared by the MQTT and NATS sources' counters."""

from __future__ import annotations

from streamsonic.stats import BoundedKeys


def test_bounded_keys_name_the_first_ones_and_pool_the_rest() -> None:
    keys = BoundedKeys(2, "(other)")
    assert [keys.key(k) for k in ("a", "b", "c", "a", "d", "b")] == \
        ["a", "b", "(other)", "a", "(other)", "b"]
