"""The compiled anomaly scorer gives the same scores, to the bit, as the plain-Python one
it replaced (tests/anomaly_reference.py), on every kind of stream."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamsonic import anomaly_kernel
from streamsonic.anomaly import AnomalyScorer
from tests import anomaly_reference as reference


def same_scores(values: list[float], overflow: list[float], history: int = 128) -> None:
    compiled, plain = AnomalyScorer(history), reference.AnomalyScorer(history)
    for i, (v, o) in enumerate(zip(values, overflow, strict=True)):
        got, want = compiled.update(v, o), plain.update(v, o)
        assert got == want, f"sample {i} ({v!r}): {got} != {want}"
        assert compiled.log_scale == plain.log_scale
        assert compiled.scale == plain.scale


def _series() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    t = np.arange(1500, dtype=float)
    return {
        "noise": rng.normal(0, 1, 1500),
        "random walk": np.cumsum(rng.normal(0, 1, 1500)) + 100,
        "trend": 0.5 * t + rng.normal(0, 2, 1500),
        "smooth": 10 * np.sin(t / 6) + rng.normal(0, 0.05, 1500),
        "lognormal (log scale)": rng.lognormal(0, 1, 800),
        "log scale, then a value <= 0": np.concatenate(
            [rng.lognormal(0, 1, 300), [0.0], rng.lognormal(0, 1, 300)]),
        "a day of steps (the season)": np.tile(
            np.repeat([20.0, 68.0, 80.0, 32.0, 20.0], [18, 6, 12, 6, 6]), 30)
        + rng.normal(0, 0.5, 1440),
        "counts": rng.poisson(3, 800).astype(float),
        "sparse counts (mostly 0: the quantum's floor)": rng.poisson(0.1, 1500).astype(float),
        "readings in tenths": np.round(20 + np.cumsum(rng.normal(0, 0.05, 800)), 1),
        "constant, then a change": np.concatenate([np.full(100, 5.0), [6.0], np.full(99, 5.0)]),
        "two values": rng.integers(0, 2, 500).astype(float),
        "counter": np.cumsum(rng.exponential(1.0, 800)),
        "narrow, then growing by multiples (log scale later)": np.concatenate(
            [100 + rng.normal(0, 3, 100), 100 * 1.01 ** np.arange(1, 501)]),
        "huge": rng.uniform(-1e300, 1e300, 300),
        "a gauge held between updates": np.repeat(np.cumsum(rng.normal(0, 1, 40)), 40) + 100,
        "counts over a day (root)": rng.poisson(_daily(1, 100)).astype(float),
        "bursty counts over a day, zeros (logs of one more)": rng.negative_binomial(
            5, 5 / (5 + _daily(1, 100))).astype(float),
        "counts over a day, then a decimal (raw)": np.concatenate(
            [rng.poisson(_daily(1, 100)[:900]), [2.5], rng.poisson(_daily(1, 100)[:300])]),
        "positive counts on logs, then a 0 (logs of one more)": np.concatenate(
            [np.round(rng.lognormal(3, 1, 300)) + 1, [0.0], np.round(rng.lognormal(3, 1, 300))]),
    }


def _daily(low: float, high: float) -> np.ndarray:
    """A rate from ``low`` to ``high`` and back every 288 samples (5 minutes a sample),
    1,500 samples."""
    return low * (high / low) ** (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1500) / 288))


@pytest.mark.parametrize("name", list(_series()))
@pytest.mark.parametrize("history", [16, 128])
def test_the_compiled_scorer_matches_the_plain_one(name: str, history: int) -> None:
    x = _series()[name]
    rng = np.random.default_rng(7)
    overflow = np.where(rng.random(len(x)) < 0.1, rng.normal(0, 0.5, len(x)), 0.0)
    same_scores([float(v) for v in x], [float(o) for o in overflow], history)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300),
    st.floats(min_value=0.001, max_value=1000.0),
    st.sampled_from([0.0, 1.0, -1.0, 5.0])), min_size=1, max_size=300))
def test_the_compiled_scorer_matches_on_any_stream(values: list[float]) -> None:
    same_scores(values, [0.0] * len(values), history=16)


def test_the_window_stays_sorted_and_bounded() -> None:
    """A full window: the ring drops its oldest residual as the sorted copy does."""
    state = anomaly_kernel.new_state(16)
    tail = anomaly_kernel.tail_index(16)
    rng = np.random.default_rng(1)
    for v in rng.normal(0, 1, 200):
        anomaly_kernel.step(state, float(v), 16, tail, anomaly_kernel.ANOMALY_Z)
    start = anomaly_kernel._BLOCKS
    block = state[start:start + 2 * 16 + 3]
    ring, ordered, n = block[:16], block[16:32], int(block[32])
    assert n == 16
    assert list(ordered) == sorted(ring)
    assert block[34] == pytest.approx(float(np.abs(ring).sum()))
    # the rings of the last changes and of the last nonzero ones: full, never more
    assert state[anomaly_kernel._DN] == state[anomaly_kernel._MN] == 16
    assert len(state) == start + anomaly_kernel.FORECASTERS * (2 * 16 + 3) + 2 * 16
