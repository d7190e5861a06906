"""The compiled rolling normalizer gives the same positions, references and statistics, to
the bit, as the plain-Python one it replaced (tests/normalize_reference.py), in every mode,
with and without a time window, on every kind of stream."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamsonic import normalize_kernel as kernel
from streamsonic.config import NormalizeConfig
from streamsonic.normalize import MODES, RollingNormalizer
from tests import normalize_reference as reference

ROOT = Path(__file__).resolve().parent.parent


def _same(a: object, b: object) -> bool:
    """Equal to the bit: the sign of zero counts, NaN equals NaN."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return type(a) is type(b) and a == b


def _look(norm: RollingNormalizer | reference.RollingNormalizer, value: float,
          probe: float) -> tuple[object, ...]:
    """Everything the daemon and the tests read after a push."""
    return (norm.position(value), norm.position(probe), norm.normalize(probe),
            norm.zscore(value), norm.edges(), len(norm), norm.minimum, norm.maximum,
            norm.mean, norm.std,
            norm.percentile(0.05) if norm.mode in ("robust", "rank", "auto") else None)


def same_positions(times: list[float], values: list[float], mode: str, **settings_: object
                   ) -> None:
    compiled = RollingNormalizer(mode=mode, **settings_)  # type: ignore[arg-type]
    plain = reference.RollingNormalizer(mode=mode, **settings_)  # type: ignore[arg-type]
    for i, (t, v) in enumerate(zip(times, values, strict=True)):
        compiled.push(t, v)
        plain.push(t, v)
        probe = v * 1.5 + 0.25
        got, want = _look(compiled, v, probe), _look(plain, v, probe)
        assert _same(got, want), f"sample {i} ({v!r}), {mode} {settings_}: {got} != {want}"


def _series() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    n = 1200
    t = np.arange(n, dtype=float)
    return {
        "noise": rng.normal(0, 1, n),
        "random walk": np.cumsum(rng.normal(0, 1, n)) + 100,
        "trend": 0.5 * t + rng.normal(0, 2, n),
        "accelerating trend": (t / 60) ** 3 + rng.normal(0, 0.01, n),
        "falling trend": -0.02 * t + rng.normal(0, 0.001, n),
        "season on a trend": 10 * np.sin(t / 25) * (1 + t / 300) + 0.05 * t,
        "level shifts": np.repeat(rng.normal(0, 100, 12), 100) + rng.normal(0, 1, n),
        "spikes": np.where(rng.random(n) < 0.02, 1e6, 0.0) + rng.normal(0, 1, n),
        "heavy tails": rng.standard_cauchy(n),
        "lognormal": rng.lognormal(0, 2, n),
        "constant": np.full(300, 3.0),
        "constant, then a change": np.concatenate([np.full(150, 5.0), [6.0], np.full(99, 5.0)]),
        "two values": rng.integers(0, 2, 600).astype(float),
        "signed zeros": rng.choice([0.0, -0.0, 1.0, -1.0], 600),
        "quiet, then wild": np.concatenate([rng.normal(0, 1e-4, 400), rng.normal(0, 1e3, 400)]),
        "large offset": 1e12 + rng.integers(0, 5, 800).astype(float),
        "tiny": rng.normal(0, 1e-200, 500),
        "a gauge held between updates": np.repeat(np.cumsum(rng.normal(0, 1, 40)), 40) + 100,
        # far values: a window spanning more than a float holds, squares that overflow
        "far values": np.where(rng.random(n) < 0.01, rng.choice([1e200, -1e308, 1e308], n),
                               rng.normal(50, 10, n)),
    }


@pytest.mark.parametrize("name", list(_series()))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("window", [(200, 0.0), (17, 0.0), (1000, 25.0)],
                         ids=["window 200", "window 17", "25 seconds"])
def test_the_compiled_normalizer_matches_the_plain_one(
        name: str, mode: str, window: tuple[int, float]) -> None:
    x = [float(v) for v in _series()[name]]
    rng = np.random.default_rng(3)
    times = [float(t) for t in np.cumsum(rng.choice([0.0, 0.1, 1.0, 2.5], len(x)))]
    same_positions(times, x, mode, window=window[0], window_seconds=window[1])


def _adversarial(seed: int, n: int) -> list[float]:
    """Regimes one after another: held values, jumps, noise, ramps, signed zeros, heavy
    tails, a few values at many scales, single far values."""
    rng = np.random.default_rng(seed)
    out: list[float] = []
    level = 0.0
    while len(out) < n:
        kind, m = int(rng.integers(0, 8)), int(rng.integers(1, 80))
        if kind == 0:
            out += [level] * m
        elif kind == 1:
            level += float(rng.normal(0, 10 ** rng.uniform(-3, 6)))
            out.append(level)
        elif kind == 2:
            out += list(level + rng.normal(0, 1, m))
        elif kind == 3:
            out += list(level + np.arange(m) * rng.normal(0, 1))
        elif kind == 4:
            out += list(rng.choice([0.0, -0.0, 1.0, -1.0], m))
        elif kind == 5:
            out += list(level + rng.standard_cauchy(m))
        elif kind == 6:
            out += list(rng.integers(0, 3, m).astype(float) * 10 ** rng.uniform(-5, 5))
        else:
            out.append(level + 1e6 * float(rng.normal()))
    return [float(v) for v in out[:n]]


@pytest.mark.parametrize("seed", range(25))
def test_the_compiled_normalizer_matches_on_adversarial_streams(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    values = _adversarial(seed, 1000)
    times = [float(t) for t in np.cumsum(rng.choice([0.0, 0.1, 1.0, 2.5], len(values)))]
    window = int(rng.choice([2, 3, 5, 17, 64, 200]))
    seconds = float(rng.choice([0.0, 0.0, 0.5, 3.0, 20.0]))
    exit_after = int(rng.choice([1, 2, 4, 7]))
    same_positions(times, values, MODES[seed % len(MODES)], window=window,
                   window_seconds=seconds, exit_after=exit_after)


@pytest.mark.parametrize("seed", range(48))
def test_the_compiled_normalizer_matches_on_noisy_trends_in_short_windows(seed: int) -> None:
    """Trends exit the reference again and again; in a short window one may exit exactly
    ``window`` samples after the last move (the trend/level-shift boundary)."""
    rng = np.random.default_rng(seed)
    window, exit_after = int(rng.integers(17, 40)), int(rng.integers(1, 5))
    slope, noise = 10 ** rng.uniform(-2, 1), 10 ** rng.uniform(-3, 0.5)
    values = [float(slope * i + rng.normal(0, noise)) for i in range(600)]
    same_positions([float(i) for i in range(600)], values, "auto", window=window,
                   exit_after=exit_after)


@settings(max_examples=120, deadline=None)
@given(st.lists(st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
    st.floats(min_value=-1.0, max_value=1.0),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 5.0])), min_size=1, max_size=300),
    st.sampled_from(MODES), st.sampled_from([2, 3, 17, 64]), st.sampled_from([0.0, 2.5]),
    st.sampled_from([1, 4]))
def test_the_compiled_normalizer_matches_on_any_stream(
        values: list[float], mode: str, window: int, seconds: float, exit_after: int) -> None:
    times = [0.5 * (i // 3) for i in range(len(values))]  # several samples share a time
    same_positions(times, values, mode, window=window, window_seconds=seconds,
                   exit_after=exit_after)


def test_a_log_remap_and_a_reload_replay_the_same_window() -> None:
    """``remapped`` (a stream to or from a log scale) and ``reconfigured`` (a reload) replay
    the window's values in order, as the plain one does."""
    rng = np.random.default_rng(8)
    compiled, plain = RollingNormalizer(mode="auto"), reference.RollingNormalizer(mode="auto")
    for i, v in enumerate(rng.lognormal(0, 1, 500)):
        compiled.push(float(i), float(v))
        plain.push(float(i), float(v))
    compiled, plain = compiled.remapped(math.log), plain.remapped(math.log)
    config = NormalizeConfig(mode="rank", window=50)
    compiled, plain = compiled.reconfigured(config), plain.reconfigured(config)
    for i, v in enumerate(rng.normal(0, 1, 100)):
        compiled.push(500.0 + i, float(v))
        plain.push(500.0 + i, float(v))
        assert _same(_look(compiled, float(v), 0.3), _look(plain, float(v), 0.3))


def test_the_state_is_preallocated_and_bounded_by_the_window() -> None:
    """One array per stream, sized by the window when the stream starts; pushes never
    grow it, and the window ring, the deques and the sorted copy agree."""
    norm = RollingNormalizer(mode="auto", window=17)
    state = norm._state
    size = state.size
    rng = np.random.default_rng(4)
    for i, v in enumerate(rng.normal(0, 1, 2000)):
        norm.push(float(i), float(v))
        assert norm._state is state
    assert state.size == size <= 150 + 7 * (17 + 1)  # a header, then rings of the window
    _, values = kernel.window_values(state)
    assert len(values) == len(norm) == 17
    assert list(kernel.sorted_values(state)) == sorted(values)
    assert kernel.extremes(state) == (min(values), max(values))


def test_the_plain_python_fallback_matches_too() -> None:
    """``STREAMSONIC_NO_JIT=1`` runs the kernel's functions as Python: same results."""
    code = (
        "from tests.test_normalize_kernel import _adversarial, same_positions\n"
        "v = _adversarial(3, 400)\n"
        "for mode in ('auto', 'rank', 'robust', 'minmax', 'zscore'):\n"
        "    same_positions([float(i) for i in range(400)], v, mode, window=64)\n"
        "from streamsonic import normalize_kernel\n"
        "assert normalize_kernel.push is normalize_kernel._push_py\n")
    env = {**os.environ, "STREAMSONIC_NO_JIT": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
