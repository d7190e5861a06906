"""The per-sample arithmetic of :class:`streamsonic.anomaly.AnomalyScorer`, compiled.

One stream's scorer state is one float64 array (:func:`new_state`): the last values, the
last few z, and per forecaster a window of residuals kept both in arrival order (a ring)
and sorted. :func:`step` forecasts the next value four ways, judges the new one by the
forecaster whose recent residuals are the tightest, remembers the residuals (clipped; an
anomaly's as an ordinary one) and the value, and returns the robust z before and after the
burst statistic. The functions are plain Python over arrays, compiled by numba
(``STREAMSONIC_NO_JIT=1`` runs them as they are); the arithmetic is done in the same order
as Python's, without fastmath, so the scores are the same to the bit as the reference
implementation in the tests.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

#: Gaussian-consistent scale of the interquartile range.
IQR_TO_SIGMA = 1.0 / 1.349
#: The tail quantile used for each side's scale (10% and 90%), and its Gaussian-consistent
#: factor (the median to the 90th percentile).
TAIL_Q, SIDE_TO_SIGMA = 0.1, 1.0 / 1.2816
#: The momentum forecast: the last value plus this share of the last step (1: a straight
#: line through the last two values).
MOMENTUM = 1.0
#: Residuals enter the history clipped to this many robust sigmas from its median.
WINSOR = 3.0
#: Values the forecast line is fitted through (trailing medians of 3).
FORECAST = 6
#: A burst: the median |z| of the last BURST_SAMPLES residuals, times BURST_GAIN.
BURST_SAMPLES, BURST_GAIN = 3, 1.5
#: A sample whose z (or burst statistic) reaches the caller's ``anomaly_z`` is an anomaly:
#: its residuals enter the windows as ordinary ones (each window's median), so anomalies
#: do not widen the spread that judges the next ones ... unless anomalies have been common
#: lately (a count of the samples whose own z reaches it, decaying over ``history``
#: samples, above ANOMALY_SHARE of it): then they enter clipped like any other, and a
#: lasting change is learned step by step. (A burst's quieter samples, and the one after
#: a dropout's return, are kept out of the spread but not counted: 3-sample dropouts every
#: 30 samples counted 5 each and came to be learnt as the stream's own.) The scorer
#: passes ANOMALY_Z_LIGHT for a light-tailed stream (a residual of 5 robust sigmas is no
#: ordinary value of near-Gaussian noise: the 15 samples of a burst, entered clipped at
#: WINSOR sigmas, widened the 10% tail that judges the next burst), ANOMALY_Z for a
#: heavy-tailed one (whose ordinary swings reach 5-8 sigmas and must widen it), between
#: them by its heaviness.
ANOMALY_Z_LIGHT, ANOMALY_Z, ANOMALY_SHARE = 5.0, 8.0, 0.2
#: The forecasters: the last value, the median of the last five, a line through the
#: trailing medians of three, the last value plus MOMENTUM times the last step.
FORECASTERS = 4
#: Counts and coarse readings: once the stream has changed at least QUANTUM_CHANGES times
#: (its last ``history`` nonzero changes are kept, however many repeats lie between them),
#: a change by the smallest of those steps (the readings' quantum: one count, one tenth of
#: a degree) is at most QUANTUM_Z robust sigmas, however many residuals are exactly zero
#: (a count that is mostly 0 has no spread in its quantiles).
QUANTUM_CHANGES, QUANTUM_Z = 8, 2.0
#: A stream that mostly repeats itself (at least REPEAT_SHARE of its last ``history``
#: changes exactly 0: rain that is 0 on dry days, errors per minute, a reading that rarely
#: moves, a gauge sampled faster than it is updated) departs from its repeated value as its
#: ordinary way to vary: its scale is at least the median of its last nonzero changes
#: (about one Gaussian sigma of the departures: the median |change| of Gaussian values is
#: 0.95 of theirs), so an ordinary rainy day is not an anomaly, a downpour still is. (Kept
#: apart from the last ``history`` changes: a gauge held for 24 samples or more changed
#: fewer than QUANTUM_CHANGES times in them, so every update was judged against no spread
#: and accented.)
REPEAT_SHARE = 0.3

# The state array's layout: the last values and their count, the last z and their count,
# the decaying count of anomalies, the oldest slot and count of the ring of changes and of
# the ring of nonzero changes, then per forecaster a block: the ring of residuals, the same
# sorted, their count, the ring's oldest slot and the sum of their |values|; last the ring
# of the last ``history`` changes (|value - previous value|), then the ring of the last
# ``history`` nonzero ones.
_HIST = FORECAST + 2
_HN = _HIST
_RZ = _HN + 1
_RZN = _RZ + BURST_SAMPLES
_ANOMALIES = _RZN + 1
_DHEAD = _ANOMALIES + 1  # the ring of the last |changes| (after the blocks): oldest slot
_DN = _DHEAD + 1  # ... and count
_MHEAD = _DN + 1  # the ring of the last nonzero |changes| (after that one): oldest slot
_MN = _MHEAD + 1  # ... and count
_BLOCKS = 18


def _block_size(history: int) -> int:
    return 2 * history + 3


def new_state(history: int) -> np.ndarray:
    """A fresh scorer state for a residual window of ``history`` values."""
    return np.zeros(_BLOCKS + FORECASTERS * _block_size(history) + 2 * history)


def tail_index(history: int) -> np.ndarray:
    """``k[n]``: the 10% tail's index in a sorted window of ``n`` residuals, rounded as
    Python rounds (half to even), at least 1."""
    return np.array([max(1, round(TAIL_Q * (n - 1))) for n in range(history + 1)],
                    dtype=np.int64)


def remember_z(state: np.ndarray, z: float) -> None:
    """Make ``z`` the only one the burst statistic remembers."""
    state[_RZ] = z
    state[_RZN] = 1.0


def _median_last_py(s: np.ndarray, hn: int, count: int) -> float:
    """The median of the last ``count`` values (the mean of the middle two if even)."""
    m = min(count, hn)
    buf = np.empty(m)
    for i in range(m):  # insertion sort: at most five values
        v = s[hn - m + i]
        j = i
        while j > 0 and buf[j - 1] > v:
            buf[j] = buf[j - 1]
            j -= 1
        buf[j] = v
    if m % 2:
        return buf[m // 2]
    return 0.5 * (buf[m // 2 - 1] + buf[m // 2])


def _line_py(s: np.ndarray, hn: int) -> float:
    """A least-squares line through the trailing medians of 3 of the last values (each
    lags its newest value by one sample), extrapolated to the next value."""
    if hn < 3:
        return min(s[0], s[1]) if hn == 2 else s[0]
    m = hn - 2
    meds = np.empty(m)
    for i in range(m):
        a, b, c = s[i], s[i + 1], s[i + 2]
        meds[i] = max(min(a, b), min(max(a, b), c))
    if m == 1:
        return meds[0]
    xbar = (m - 1) / 2.0
    total = 0.0
    for j in range(m):
        total += meds[j]
    ybar = total / m
    sxx = 0.0
    sxy = 0.0
    for j in range(m):
        sxx += (j - xbar) * (j - xbar)
    for j in range(m):
        sxy += (j - xbar) * (meds[j] - ybar)
    return ybar + (sxy / sxx) * (m + 1 - xbar)


def _spread_py(s: np.ndarray, base: int, history: int, ktab: np.ndarray, least: float
               ) -> tuple[float, float, float]:
    """The median residual and a robust sigma above and below it: each side's the larger
    of its 10% tail's (heavy tails) and a floor, the largest of the IQR's, half the mean
    |residual| (a mostly constant stream) and ``least`` (the readings' quantum's share, see
    QUANTUM_Z). Needs a residual."""
    srt = base + history
    n = int(s[base + 2 * history])
    k = ktab[n]
    mid = s[srt + n // 2]
    iqr = (s[srt + (3 * n) // 4] - s[srt + n // 4]) * IQR_TO_SIGMA
    mean = 0.5 * s[base + 2 * history + 2] / n
    floor = mean if mean > iqr else iqr
    floor = least if least > floor else floor
    up = (s[srt + n - 1 - k] - mid) * SIDE_TO_SIGMA
    down = (mid - s[srt + k]) * SIDE_TO_SIGMA
    return mid, up if up > floor else floor, down if down > floor else floor


def _add_py(s: np.ndarray, base: int, history: int, residual: float) -> None:
    """Remember a residual: into the ring and the sorted window (the oldest one leaves
    a full window), and into the sum of |residuals|."""
    srt = base + history
    n = int(s[base + 2 * history])
    head = int(s[base + 2 * history + 1])
    total = s[base + 2 * history + 2] + abs(residual)
    if n == history:  # the oldest leaves first, so the window never holds more
        old = s[base + head]
        s[base + head] = residual
        s[base + 2 * history + 1] = (head + 1) % history
        i = np.searchsorted(s[srt:srt + n], old, "left")
        s[srt + i:srt + n - 1] = s[srt + i + 1:srt + n].copy()
        n -= 1
        total -= abs(old)
        total = max(total, 0.0)
    else:
        s[base + (head + n) % history] = residual
    i = np.searchsorted(s[srt:srt + n], residual, "right")
    s[srt + i + 1:srt + n + 1] = s[srt + i:srt + n].copy()
    s[srt + i] = residual
    s[base + 2 * history] = n + 1
    s[base + 2 * history + 2] = total


def _ring_push_py(s: np.ndarray, ring: int, head_slot: int, count_slot: int, size: int,
                  value: float) -> None:
    """Append ``value`` to the ring of ``size`` slots at ``ring`` (its oldest slot and count
    in ``s[head_slot]``, ``s[count_slot]``), over its oldest value once full."""
    n = int(s[count_slot])
    if n == size:
        head = int(s[head_slot])
        s[ring + head] = value
        s[head_slot] = (head + 1) % size
    else:
        s[ring + n] = value
        s[count_slot] = n + 1


def _median_moved_py(s: np.ndarray, moves: int, count: int) -> float:
    """The median of the ``count`` nonzero changes in their ring (the mean of the middle
    two if even)."""
    moved = s[moves:moves + count].copy()
    moved.sort()
    if count % 2:
        return moved[count // 2]
    return 0.5 * (moved[count // 2 - 1] + moved[count // 2])


def _step_py(s: np.ndarray, u: float, history: int, ktab: np.ndarray, anomaly_z: float
             ) -> tuple[float, float, int]:
    """Judge the value ``u`` (then remember it): ``(z, z with the burst statistic,
    direction of the residual -1/0/+1)``; from ``anomaly_z`` on, the sample is an anomaly
    whose residuals enter as ordinary ones while anomalies are rare (see ANOMALY_Z)."""
    size = 2 * history + 3
    hn = int(s[_HN])
    z = 0.0
    direction = 0
    # per forecaster: the residual, its window's median and the clipping bounds
    residuals = np.empty(FORECASTERS)
    mids = np.empty(FORECASTERS)
    lows = np.empty(FORECASTERS)
    highs = np.empty(FORECASTERS)
    judged = False
    changes = _BLOCKS + FORECASTERS * size
    moves = changes + history
    least = 0.0  # the quantum's floor for the scale
    if hn:
        mn = int(s[_MN])
        if mn >= QUANTUM_CHANGES:
            quantum = math.inf
            for i in range(mn):
                quantum = min(quantum, s[moves + i])
            least = quantum / QUANTUM_Z
            dn = int(s[_DN])
            repeats = 0
            for i in range(dn):
                if s[changes + i] == 0.0:
                    repeats += 1
            if repeats >= REPEAT_SHARE * dn:  # mostly repeating
                typical = _median_moved(s, moves, mn)
                least = typical if typical > least else least
        last = s[hn - 1]
        forecasts = (last, _median_last(s, hn, 5), _line(s, hn),
                     last + MOMENTUM * (last - s[hn - 2]) if hn >= 2 else last)
        judged = s[_BLOCKS + 2 * history] >= 8  # enough residuals to judge by
        best = -1
        width = 0.0
        for f in range(FORECASTERS):
            residual = u - forecasts[f]
            residuals[f] = residual
            if judged:
                mid, up, down = _spread(s, _BLOCKS + f * size, history, ktab, least)
                if best < 0 or up + down < width:  # the tightest forecaster judges
                    best, width = f, up + down
                    scale = up if residual >= mid else down
                    diff = abs(residual - mid)
                    tiny = max(abs(mid), abs(residual), 1.0) * 1e-12
                    z = (0.0 if diff <= tiny else math.inf) if scale <= tiny else diff / scale
                    direction = 0 if residual == 0.0 else (1 if residual > 0.0 else -1)
                mids[f] = mid
                lows[f], highs[f] = mid - WINSOR * down, mid + WINSOR * up
    if hn:  # the change, into the ring of the last `history` (and of the nonzero ones)
        change = abs(u - s[hn - 1])
        _ring_push(s, changes, _DHEAD, _DN, history, change)
        if change > 0.0:  # (NaN never comes: values are finite)
            _ring_push(s, moves, _MHEAD, _MN, history, change)
    if hn < _HIST:
        s[hn] = u
        s[_HN] = hn + 1
    else:
        s[:_HIST - 1] = s[1:_HIST].copy()
        s[_HIST - 1] = u
    # A burst of variance: most of the last few residuals are unusual, though none alone
    # may be extreme (the median of their |z| ignores one single spike).
    rzn = int(s[_RZN])
    if rzn == BURST_SAMPLES:
        s[_RZ:_RZ + BURST_SAMPLES - 1] = s[_RZ + 1:_RZ + BURST_SAMPLES].copy()
        s[_RZ + BURST_SAMPLES - 1] = z
    else:
        s[_RZ + rzn] = z
        rzn += 1
        s[_RZN] = rzn
    burst = z
    if rzn == BURST_SAMPLES:
        a, b, c = s[_RZ], s[_RZ + 1], s[_RZ + 2]
        median = max(min(a, b), min(max(a, b), c)) * BURST_GAIN
        burst = median if median > z else z
    # Anomalies must not widen the spread that judges the next ones (else each burst
    # hides the next); while they are rare, an anomaly's residuals enter as ordinary ones.
    anomaly = burst >= anomaly_z
    count = s[_ANOMALIES] * (1.0 - 1.0 / history) + (1.0 if z >= anomaly_z else 0.0)
    s[_ANOMALIES] = count
    ordinary = anomaly and count <= ANOMALY_SHARE * history
    if hn:
        for f in range(FORECASTERS):
            residual = residuals[f]
            if judged:
                if ordinary:
                    residual = mids[f]
                else:  # outliers clipped (a lasting change still widens it, step by step)
                    residual = lows[f] if lows[f] > residual else residual
                    residual = highs[f] if highs[f] < residual else residual
            _add(s, _BLOCKS + f * size, history, residual)
    return z, burst, direction


if os.environ.get("STREAMSONIC_NO_JIT"):  # for debugging: the plain Python
    _median_last, _line, _spread, _add = _median_last_py, _line_py, _spread_py, _add_py
    _median_moved, _ring_push = _median_moved_py, _ring_push_py
    step: Any = _step_py
else:
    from streamsonic.model.kernels import jit  # numba: compiled at first use, or cached

    _median_last = jit(_median_last_py, fastmath=False, inline="always")
    _line = jit(_line_py, fastmath=False, inline="always")
    _spread = jit(_spread_py, fastmath=False, inline="always")
    _add = jit(_add_py, fastmath=False, inline="always")
    _median_moved = jit(_median_moved_py, fastmath=False)
    _ring_push = jit(_ring_push_py, fastmath=False, inline="always")
    step = jit(_step_py, fastmath=False)
