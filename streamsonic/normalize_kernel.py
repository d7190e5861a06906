"""The per-sample arithmetic of :class:`streamsonic.normalize.RollingNormalizer`, compiled.

One stream's normalizer state is one float64 array (:func:`new_state`), preallocated for
its window: a header of scalars (settings, counters, the sums, the auto-ranging state),
the auto-ranging reference's knots, the rings of its last RECENT places and exits, the
window's times and values (a ring in arrival order), the monotonic min/max deques (rings of
sequence number and value) and the window's values sorted. :func:`push` adds a sample,
evicts what fell out of the window and keeps, moves or rebuilds the reference;
:func:`position` and :func:`normalize` map a value. The functions are plain Python over
arrays, compiled by numba (``STREAMSONIC_NO_JIT=1`` runs them as they are); every step is
the one the plain-Python normalizer took, in the same order (the same deques, insertion
and deletion points, sorts that keep equal values in arrival order), without fastmath, so
the positions are the same to the bit as the reference implementation in the tests. The
periodic re-summing of the window (every ``4 * window`` samples, and when a value that
leaves the window held most of its squares) is left to the caller: :func:`push` says when
(Python's ``sum``, which the caller runs, is the reference's).
"""

# The explicit comparisons are Python's min/max (the first of equals, NaN kept where Python
# keeps it), which numba's min/max do not promise.
# ruff: noqa: PLR1730

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

MIDDLE = 0.5
#: The window's running sums (its mean and standard deviation: the zscore mode) take values
#: clipped to this magnitude: their squares, a window of them and their differences stay
#: finite (a value of 1e200 overflowed them: the window's statistics were lost for good, and
#: the re-summing raised OverflowError, which stopped the daemon).
SUM_LIMIT = 1e150
#: Quantile knots of the auto-ranging reference: from its lowest to its highest.
REF_LOW_Q, REF_HIGH_Q, REF_KNOTS = 0.02, 0.98, 17
#: Samples for which auto-ranging rebuilds its reference every time (the window is young).
WARMUP = 16
#: How many recent samples auto-ranging looks at to decide that its reference is stale.
RECENT = 32
#: When the last RECENT values span less than this share of the reference, it zooms in:
#: to the last 2 * RECENT values, ZOOM_WIDTH times as wide as they spread ...
ZOOM, ZOOM_WIDTH = 0.15, 3.0
#: ... if those values changed at least ZOOM_MOVES times: how a signal that holds each
#: value for a while (a gauge sampled faster than it is updated) spreads is not seen in
#: one or two of its steps (a zoom to three times its last step put its next ordinary
#: step far beyond the range, loud and accented).
ZOOM_MOVES = 8
#: Where a trending signal lands after the reference moved (from the edge it came in by).
TREND_LAND = 0.15
#: ... and the reference is sized so that, at its recent rate, the trend crosses it in
#: about this many samples.
TREND_PERIOD = 100
#: A trend that crossed its reference faster than TREND_PERIOD gets the next one sized for
#: the pace it kept, up to this many times its recent rate.
MAX_PACE = 8.0
#: A series that starts on a trend: from its 8th sample, a window whose values moved by at
#: least WARM_TREND_NET of their range between its first and last 4 samples, and in order
#: (Kendall's tau of at least WARM_TREND_TAU), gets a reference sized like a trend's
#: (TREND_PERIOD samples to cross it at the rate it came in with, stretched from where it
#: started) and the warm-up ends there: its samples then climb (or fall) through it instead
#: of all playing at the top (or bottom) of a reference rebuilt around each of them. If the
#: window's values stop going one way (tau below WARM_TURN_TAU) within RECENT samples (the
#: first rise of a season), the window's own reference takes over once.
WARM_TREND_NET, WARM_TREND_TAU, WARM_TURN_TAU = 0.3, 0.6, 0.5
#: After an exit to a new extreme at most EXPAND_MAX times as far from the far edge as
#: the window's range reaches, the reference widens to hold it, EXPAND_LAND in from the
#: edge it left by, instead of moving.
EXPAND_LAND, EXPAND_MAX = 0.75, 3.0
#: Another exit the same way is a trend unless the signal came back this far past where
#: the last move put it.
BACK = 0.35
#: ... and unless its last RECENT values go that way less than this (pairs in that order
#: minus pairs against it, over the untied pairs): a season's peak above last year's (air
#: passengers) is a wider swing, not a trend.
TREND_TAU = 0.7
#: After an exit, the window's own range is kept when it holds the signal's level at
#: least this far from its edges.
EDGE = 0.1
#: A first exit that drifts across the edge (the level at most DRIFT widths of the
#: reference past it, and at least DRIFT_MOVES of the last DRIFT_SAMPLES values changed:
#: not a held gauge's step) widens the reference from its other edge (from as far as the
#: window's values reach, when the level is a new extreme of the window) until the level
#: sits DRIFT_LAND from there, instead of rebuilding it from the window: a slow rise that
#: leaves its range goes on near the top, not from the middle of a range rebuilt around it
#: (a jump against the values, which a short series that trends and turns met at every
#: exit). If it goes on the same way, the next exit is a trend's.
DRIFT, DRIFT_LAND, DRIFT_MOVES, DRIFT_SAMPLES = 0.25, 0.9, 6, 8

#: Mode codes (the order of :data:`streamsonic.normalize.MODES`).
AUTO, RANK, ROBUST, MINMAX, ZSCORE = 0, 1, 2, 3, 4

# The header: settings, then the window's counters and sums, then auto-ranging's state.
_MODE, _WINDOW, _WSECONDS, _EXIT, _LO_Q, _HI_Q, _ZCLIP, _SORTS = range(8)
_SEQ, _HEAD, _N = 8, 9, 10  # newest sequence number; the window ring's oldest slot, count
_MINH, _MINN, _MAXH, _MAXN = 11, 12, 13, 14  # the min/max deques' oldest slot, count
_SHIFT, _SUM, _SUMSQ, _SINCE_REFRESH = 15, 16, 17, 18
_HAS_KNOTS, _RUN, _SINCE_SNAP, _LAST_EXIT, _CROSSING = 19, 20, 21, 22, 23
_PACE, _LOW, _HIGH, _LAND = 24, 25, 26, 27
_OUTH, _OUTN, _RECH, _RECN = 28, 29, 30, 31  # the rings of exits and places: slot, count
_WARMED = 32  # 1: the warm-up ended early, the series started on a trend (_warm_trend); 2: it
# turned within RECENT samples after all
_HEADER = 33
_KNOTS = _HEADER
_OUTSIDE = _KNOTS + REF_KNOTS
_RECENT = _OUTSIDE + RECENT
_RINGS = _RECENT + RECENT


def _layout(window: int) -> tuple[int, int, int, int, int, int, int, int]:
    """Offsets of the times, values, min deque (seqs, values), max deque (seqs, values)
    and sorted values, each ``window + 1`` long, and the state's length."""
    c = window + 1
    return (_RINGS, _RINGS + c, _RINGS + 2 * c, _RINGS + 3 * c, _RINGS + 4 * c,
            _RINGS + 5 * c, _RINGS + 6 * c, _RINGS + 7 * c)


def new_state(mode: int, window: int, window_seconds: float, lo_q: float, hi_q: float,
              zclip: float, exit_after: int, sorts: bool) -> np.ndarray:
    """A fresh normalizer state for a window of ``window`` samples."""
    s = np.zeros(_layout(window)[-1])
    s[_MODE], s[_WINDOW], s[_WSECONDS], s[_EXIT] = mode, window, window_seconds, exit_after
    s[_LO_Q], s[_HI_Q], s[_ZCLIP], s[_SORTS] = lo_q, hi_q, zclip, float(sorts)
    s[_PACE], s[_LOW], s[_HIGH], s[_LAND] = 1.0, math.inf, -math.inf, 0.5
    return s


def window_values(state: np.ndarray) -> tuple[list[float], list[float]]:
    """The window's times and values, oldest first."""
    window = int(state[_WINDOW])
    times, values = _layout(window)[:2]
    c, head, n = window + 1, int(state[_HEAD]), int(state[_N])
    slots = [(head + j) % c for j in range(n)]
    return ([float(state[times + i]) for i in slots], [float(state[values + i]) for i in slots])


def length(state: np.ndarray) -> int:
    """How many samples the window holds."""
    return int(state[_N])


def extremes(state: np.ndarray) -> tuple[float, float]:
    """The window's smallest and largest values (the fronts of the min/max deques)."""
    _, _, _, minval, _, maxval, _, _ = _layout(int(state[_WINDOW]))
    return float(state[minval + int(state[_MINH])]), float(state[maxval + int(state[_MAXH])])


def sums(state: np.ndarray) -> tuple[float, float, float]:
    """The shift and the sums of (v - shift) and of its square over the window."""
    return float(state[_SHIFT]), float(state[_SUM]), float(state[_SUMSQ])


def set_sums(state: np.ndarray, shift: float, total: float, sumsq: float) -> None:
    """Replace the sums (a re-summing of the window) and restart the count to the next."""
    state[_SHIFT], state[_SUM], state[_SUMSQ], state[_SINCE_REFRESH] = shift, total, sumsq, 0.0


def clip(value: float) -> float:
    """``value`` as the running sums take it (within +-SUM_LIMIT)."""
    return _clip_py(value)


def sorted_values(state: np.ndarray) -> np.ndarray:
    """The window's values in ascending order (a view; robust, rank and auto modes)."""
    srt = _layout(int(state[_WINDOW]))[6]
    return state[srt:srt + int(state[_N])]


def edges(state: np.ndarray) -> tuple[float, float] | None:
    """The auto-ranging reference's lowest and highest values (None: no reference)."""
    if state[_HAS_KNOTS] == 0.0:
        return None
    return float(state[_KNOTS]), float(state[_KNOTS + REF_KNOTS - 1])


# -- small pieces, each as Python computes it -----------------------------------------------

def _tiny_py(a: float, b: float) -> float:
    """``max(abs(a), abs(b), 1.0) * 1e-12`` (Python's max: the first of the largest)."""
    m = abs(a)
    if abs(b) > m:
        m = abs(b)
    if m < 1.0:
        m = 1.0
    return m * 1e-12


def _clip01_py(x: float) -> float:
    """``min(1.0, max(0.0, x))``."""
    y = x if x > 0.0 else 0.0
    return y if y < 1.0 else 1.0


def _bisect_right_py(s: np.ndarray, start: int, n: int, value: float) -> int:
    """``bisect.bisect_right`` in ``s[start:start + n]`` (sorted): past equal values."""
    a, b = 0, n
    while a < b:
        mid = (a + b) // 2
        if value < s[start + mid]:
            b = mid
        else:
            a = mid + 1
    return a


def _bisect_left_py(s: np.ndarray, start: int, n: int, value: float) -> int:
    """``bisect.bisect_left`` in ``s[start:start + n]`` (sorted): before equal values."""
    a, b = 0, n
    while a < b:
        mid = (a + b) // 2
        if s[start + mid] < value:
            a = mid + 1
        else:
            b = mid
    return a


def _knot_position_py(s: np.ndarray, k: int, value: float) -> float:
    """``value`` through the reference whose REF_KNOTS knots start at ``s[k]`` (a value
    that several knots equal: the middle of them)."""
    lo, hi = s[k], s[k + REF_KNOTS - 1]
    if value > hi:
        return 1.0 + (value - hi) / (hi - lo)
    if value < lo:
        return (value - lo) / (hi - lo)
    last = REF_KNOTS - 1
    i = _bisect_right(s, k, REF_KNOTS, value) - 1
    if s[k + i] == value:
        first = _bisect_left(s, k, REF_KNOTS, value)
        if first < i:  # on knots that are all this value: the middle of them (ties)
            return 0.5 * (first + i) / last
    if i > last - 1:
        i = last - 1
    x, y = s[k + i], s[k + i + 1]
    frac = (value - x) / (y - x) if y > x else 0.5
    return (i + frac) / last


def _knot_value_py(s: np.ndarray, k: int, position: float) -> float:
    """The value at ``position`` of the reference whose knots start at ``s[k]``."""
    pos = position * (REF_KNOTS - 1)
    i = int(pos)
    if i > REF_KNOTS - 2:
        i = REF_KNOTS - 2
    return s[k + i] + (s[k + i + 1] - s[k + i]) * (pos - i)


def _quantile_knots_py(src: np.ndarray, start: int, n: int, out: np.ndarray) -> None:
    """REF_KNOTS values at equal quantile steps from REF_LOW_Q to REF_HIGH_Q of the ``n``
    ascending values from ``src[start]``, into ``out``."""
    for k in range(REF_KNOTS):
        pos = (REF_LOW_Q + (REF_HIGH_Q - REF_LOW_Q) * k / (REF_KNOTS - 1)) * (n - 1)
        i = int(pos)
        j = i + 1 if i + 1 < n - 1 else n - 1
        out[k] = src[start + i] + (src[start + j] - src[start + i]) * (pos - i)


def _last_sorted_py(s: np.ndarray, count: int) -> np.ndarray:
    """The window's last ``count`` values (fewer if it holds fewer), sorted stably (equal
    values in arrival order, as Python's ``sorted`` leaves them)."""
    window = int(s[_WINDOW])
    c = window + 1
    values = _RINGS + c
    n = int(s[_N])
    m = count if count < n else n
    return _ring_sorted(s, values, c, int(s[_HEAD]) + n - m, m)


def _ring_sorted_py(s: np.ndarray, values: int, c: int, first: int, m: int) -> np.ndarray:
    """The ``m`` ring values from slot ``first`` on (ring of ``c`` slots at ``values``),
    sorted stably by insertion (equal values in arrival order)."""
    buf = np.empty(m)
    for t in range(m):
        v = s[values + (first + t) % c]
        j = t
        while j > 0 and buf[j - 1] > v:
            buf[j] = buf[j - 1]
            j -= 1
        buf[j] = v
    return buf


def _sorted4_third_py(s: np.ndarray, values: int, c: int, first: int) -> float:
    """``sorted(four values from ring slot first)[2]``."""
    return _ring_sorted(s, values, c, first, 4)[2]


def _set_reference_py(s: np.ndarray, knots: np.ndarray) -> None:
    s[_KNOTS:_KNOTS + REF_KNOTS] = knots
    s[_HAS_KNOTS] = 1.0
    s[_LOW], s[_HIGH] = math.inf, -math.inf
    s[_RUN] = 0.0
    s[_SINCE_SNAP] = 0.0
    s[_OUTH], s[_OUTN] = 0.0, 0.0
    s[_RECH], s[_RECN] = 0.0, 0.0


def _ring_append_py(s: np.ndarray, base: int, hi: int, ni: int, value: float) -> None:
    """Append to a ring of RECENT slots at ``s[base]`` (a ``deque(maxlen=RECENT)``)."""
    head, n = int(s[hi]), int(s[ni])
    if n == RECENT:
        s[base + head] = value
        s[hi] = (head + 1) % RECENT
    else:
        s[base + (head + n) % RECENT] = value
        s[ni] = n + 1


# -- the reference -------------------------------------------------------------------------

def _snap_py(s: np.ndarray, value: float, centered: bool, land: float, direction: int,
             widen: bool) -> None:
    """Rebuild the reference from the window (``_snap`` in tests/normalize_reference.py)."""
    window = int(s[_WINDOW])
    c = window + 1
    n = int(s[_N])
    knots = np.empty(REF_KNOTS)
    _quantile_knots(s, _RINGS + 6 * c, n, knots)
    if knots[REF_KNOTS - 1] - knots[0] <= _tiny(knots[0], knots[REF_KNOTS - 1]):
        lo = s[_RINGS + 3 * c + int(s[_MINH])]
        hi = s[_RINGS + 5 * c + int(s[_MAXH])]
        if hi - lo <= _tiny(lo, hi):
            s[_HAS_KNOTS] = 0.0  # a constant window: everything plays the middle
            return
        # Mostly one value (its few others beyond the quantiles): that value stays in the
        # middle, where a constant plays, and the farthest other one reaches an edge.
        mid = knots[0]
        reach = hi - mid if hi - mid > mid - lo else mid - lo
        for k in range(REF_KNOTS):
            knots[k] = mid + reach * ((2 * k - (REF_KNOTS - 1)) / (REF_KNOTS - 1))
    if centered:
        p = _knot_position(knots, 0, value)
        if not (p >= EDGE and p <= 1.0 - EDGE):
            anchor = knots[0] if direction > 0 else knots[REF_KNOTS - 1]
            inner = _knot_value(knots, 0, 0.5 + direction * (EXPAND_LAND - 0.5))
            factor = ((value - anchor) / (inner - anchor)
                      if widen and direction != 0 and inner != anchor else 0.0)
            if factor >= 1.0 and factor <= EXPAND_MAX:
                for k in range(REF_KNOTS):
                    knots[k] = anchor + factor * (knots[k] - anchor)
            else:
                shift = value - _knot_value(knots, 0, land)
                for k in range(REF_KNOTS):
                    knots[k] = knots[k] + shift
    _set_reference(s, knots)
    place = _knot_position(knots, 0, value)  # seen from the edge it left by
    s[_LAND] = place if direction >= 0 else 1.0 - place


def _stretch_for_trend_py(s: np.ndarray, level: float, direction: int) -> None:
    """Size the reference so that the trend, at its recent rate, takes about
    TREND_PERIOD samples to cross it (``_stretch_for_trend`` in tests/normalize_reference.py)."""
    total = int(s[_N])
    if (total if total < RECENT else RECENT) < 8 or s[_HAS_KNOTS] == 0.0:
        return
    # the recent rate: the (upper) median of the newest 4 values against that of 4
    # values RECENT - 4 samples before them
    c = int(s[_WINDOW]) + 1
    values = _RINGS + c
    head = int(s[_HEAD])
    n = total if total < RECENT else RECENT
    newest = _sorted4_third(s, values, c, head + total - 4)
    oldest = _sorted4_third(s, values, c, head + total - n)
    rate = abs(newest - oldest) / (n - 4) * s[_PACE]
    far = s[_KNOTS + REF_KNOTS - 1] if direction > 0 else s[_KNOTS]
    span = abs(far - level)
    if rate <= 0.0 or span <= _tiny(far, level):
        return
    factor = rate * TREND_PERIOD / span
    for k in range(REF_KNOTS):
        s[_KNOTS + k] = level + factor * (s[_KNOTS + k] - level)


def _pairs_py(s: np.ndarray, count: int) -> tuple[int, int]:
    """Among the newest ``count`` values of the window (at most), the pairs (earlier,
    later) that go up and those that go down."""
    total = int(s[_N])
    n = total if total < count else count
    c = int(s[_WINDOW]) + 1
    values = _RINGS + c
    first = int(s[_HEAD]) + total - n
    up = down = 0
    for i in range(n - 1):
        a = s[values + (first + i) % c]
        for j in range(i + 1, n):
            b = s[values + (first + j) % c]
            if b > a:
                up += 1
            elif b < a:
                down += 1
    return up, down


def _in_order_py(s: np.ndarray, tau: float) -> bool:
    """Whether the window's values go one way: Kendall's tau (pairs in order minus pairs
    out of order, over all pairs) of at least ``tau`` either way."""
    n = int(s[_N])
    up, down = _pairs(s, n)
    return abs(up - down) >= tau * (n * (n - 1) // 2)


def _moves_py(s: np.ndarray, count: int) -> int:
    """How many of the window's newest ``count`` values (at most) differ from the value
    before them (``_moves`` in tests/normalize_reference.py)."""
    c = int(s[_WINDOW]) + 1
    values = _RINGS + c
    n = int(s[_N])
    m = count if count < n else n
    first = int(s[_HEAD]) + n - m
    moved = 0
    for t in range(1, m):
        if s[values + (first + t) % c] != s[values + (first + t - 1) % c]:
            moved += 1
    return moved


def _going_py(s: np.ndarray, count: int, direction: int) -> float:
    """How the newest ``count`` values of the window (at most) go ``direction``'s way:
    pairs in that order minus pairs against it, over the pairs that are not tied
    (Goodman and Kruskal's gamma: a trend read in coarse steps, with many equal values,
    is as much in order as a fine one)."""
    up, down = _pairs(s, count)
    if up + down == 0:
        return 0.0
    return direction * (up - down) / (up + down)


def _warm_trend_py(s: np.ndarray) -> None:
    """During the warm-up: for a series that starts on a trend, widen the window's
    reference and end the warm-up (``_warm_trend`` in tests/normalize_reference.py; see
    WARM_TREND_NET)."""
    n = int(s[_N])
    if n < 8 or s[_HAS_KNOTS] == 0.0:
        return
    c = int(s[_WINDOW]) + 1
    values = _RINGS + c
    head = int(s[_HEAD])
    # the rate as _stretch_for_trend takes it: the (upper) median of the newest 4 values
    # against that of the first 4
    newest = _sorted4_third(s, values, c, head + n - 4)
    oldest = _sorted4_third(s, values, c, head)
    net = abs(newest - oldest)
    span = s[_KNOTS + REF_KNOTS - 1] - s[_KNOTS]
    if net < WARM_TREND_NET * span or not _in_order(s, WARM_TREND_TAU):
        return
    width = net / (n - 4) * TREND_PERIOD
    if width <= span:
        return
    factor = width / span
    for k in range(REF_KNOTS):
        s[_KNOTS + k] = oldest + factor * (s[_KNOTS + k] - oldest)
    s[_WARMED] = 1.0


def _drift_py(s: np.ndarray, level: float, direction: int) -> bool:
    """After a first exit: widen the reference for a drift across its ``direction``
    edge (see DRIFT); whether it did (``_drift`` in tests/normalize_reference.py)."""
    lo, hi = s[_KNOTS], s[_KNOTS + REF_KNOTS - 1]
    edge = hi if direction > 0 else lo
    anchor = lo if direction > 0 else hi
    if abs(level - edge) > DRIFT * (hi - lo) or _moves(s, DRIFT_SAMPLES) < DRIFT_MOVES:
        return False
    inner = _knot_value(s, _KNOTS, 0.5 + direction * (DRIFT_LAND - 0.5))
    if inner == anchor:
        return False
    # the far edge no further out than the window's own values reach (a slow decline's
    # reference must not keep its old top: a spike above the window's values plays
    # beyond the range)
    window = np.empty(REF_KNOTS)
    _quantile_knots(s, _RINGS + 6 * (int(s[_WINDOW]) + 1), int(s[_N]), window)
    reach = window[0] if direction > 0 else window[REF_KNOTS - 1]
    near = window[REF_KNOTS - 1] if direction > 0 else window[0]
    far = anchor
    if (level - near) * direction > 0.0 and (reach - anchor) * direction > 0.0:
        far = reach  # a new extreme of the window: its values reach no further back
    factor = (far - level) / (anchor - inner)
    knots = np.empty(REF_KNOTS)
    for k in range(REF_KNOTS):
        knots[k] = far + factor * (s[_KNOTS + k] - anchor)
    _set_reference(s, knots)
    place = _knot_position(knots, 0, level)  # seen from the edge it left by
    s[_LAND] = place if direction >= 0 else 1.0 - place
    return True


def _zoom_py(s: np.ndarray, value: float) -> None:
    """Zoom the reference in to the last ``2 * RECENT`` values (``_zoom`` in
    tests/normalize_reference.py)."""
    recent = _last_sorted(s, 2 * RECENT)
    spread = np.empty(REF_KNOTS)
    _quantile_knots(recent, 0, len(recent), spread)
    if spread[REF_KNOTS - 1] - spread[0] <= _tiny(spread[0], spread[REF_KNOTS - 1]):
        return  # the recent values are all equal: nothing to zoom into
    place = _clip01(_knot_position(s, _KNOTS, value))
    mid = _knot_value(spread, 0, 0.5)
    knots = np.empty(REF_KNOTS)
    for k in range(REF_KNOTS):
        knots[k] = ZOOM_WIDTH * (spread[k] - mid)
    shift = value - _knot_value(knots, 0, place)
    for k in range(REF_KNOTS):
        knots[k] = knots[k] + shift
    if knots[REF_KNOTS - 1] - knots[0] >= s[_KNOTS + REF_KNOTS - 1] - s[_KNOTS]:
        return  # three times the recent spread is no narrower: nothing to zoom into
    if abs(_knot_position(knots, 0, value) - place) > 0.5 / (REF_KNOTS - 1):
        lo, hi = s[_KNOTS], s[_KNOTS + REF_KNOTS - 1]
        factor = ZOOM_WIDTH * (spread[REF_KNOTS - 1] - spread[0]) / (hi - lo)
        if factor >= 1.0:
            return
        for k in range(REF_KNOTS):
            knots[k] = value + factor * (s[_KNOTS + k] - value)
    _set_reference(s, knots)


def _auto_range_py(s: np.ndarray, value: float) -> None:
    """Keep, move or rebuild the reference after ``value`` joined the window (``_auto_range``
    in tests/normalize_reference.py)."""
    if s[_WARMED] == 1.0 and s[_SEQ] <= RECENT and not _in_order(s, WARM_TURN_TAU):
        # The start looked like a trend and turned within the stream's first RECENT
        # samples (the first rise of a season): the window's own reference, once, and on
        # as usual.
        s[_WARMED] = 2.0
        _snap(s, value, False, 0.5, 0, False)
        return
    if s[_HAS_KNOTS] == 0.0 or (int(s[_N]) <= WARMUP and s[_WARMED] == 0.0):
        _snap(s, value, False, 0.5, 0, False)
        _warm_trend(s)
        return
    above = value > s[_KNOTS + REF_KNOTS - 1]
    below = value < s[_KNOTS]
    run = int(s[_RUN])
    if above:
        run = (run if run > 0 else 0) + 1
    elif below:
        run = (run if run < 0 else 0) - 1
    else:
        run = 0
    s[_RUN] = run
    _ring_append(s, _OUTSIDE, _OUTH, _OUTN, 1.0 if above or below else 0.0)
    since_snap = int(s[_SINCE_SNAP]) + 1
    s[_SINCE_SNAP] = since_snap
    exit_after = int(s[_EXIT])
    if abs(run) >= exit_after:
        direction = 1 if run > 0 else -1
        back = (s[_LOW] if direction > 0 else 1.0 - s[_HIGH]) < s[_LAND] - BACK
        trend = (direction == int(s[_LAST_EXIT]) and since_snap < int(s[_WINDOW])
                 and not back and _going(s, RECENT, direction) >= TREND_TAU)
        land = 0.5 - direction * (0.5 - TREND_LAND) if trend else 0.5
        if not trend:
            s[_PACE] = 1.0
        elif s[_CROSSING] != 0.0:
            crossed = since_snap - exit_after
            if crossed < 1:
                crossed = 1
            pace = s[_PACE] * TREND_PERIOD / crossed
            pace = pace if pace > 1.0 else 1.0
            s[_PACE] = pace if pace < MAX_PACE else MAX_PACE
        s[_CROSSING] = 1.0 if trend else 0.0
        last = _last_sorted(s, exit_after)
        level = last[len(last) // 2]
        if not trend and _drift(s, level, direction):
            s[_LAST_EXIT] = direction
            return
        _snap(s, level, True, land, direction, not trend)
        if trend:
            _stretch_for_trend(s, level, direction)
        s[_LAST_EXIT] = direction
        return
    place = _clip01(_knot_position(s, _KNOTS, value))
    _ring_append(s, _RECENT, _RECH, _RECN, place)
    if place < s[_LOW]:
        s[_LOW] = place
    if place > s[_HIGH]:
        s[_HIGH] = place
    if since_snap < RECENT:
        return
    outside = 0.0
    for j in range(int(s[_OUTN])):
        outside += s[_OUTSIDE + j]
    rh, rn = int(s[_RECH]), int(s[_RECN])
    top = bottom = s[_RECENT + rh]
    for j in range(1, rn):
        x = s[_RECENT + (rh + j) % RECENT]
        if x > top:
            top = x
        if x < bottom:
            bottom = x
    if outside > RECENT // 2:
        _snap(s, value, False, 0.5, 0, False)  # the signal grew wilder: take the window's
        s[_LAST_EXIT], s[_CROSSING] = 0.0, 0.0
    elif top - bottom < ZOOM and _moves(s, 2 * RECENT) >= ZOOM_MOVES:
        _zoom(s, value)  # the recent values sit in a sliver of the range: zoom in
        s[_CROSSING] = 0.0


# -- the window ----------------------------------------------------------------------------

def _push_py(s: np.ndarray, time: float, value: float) -> bool:
    """Add a sample (finite ``value``), evict what fell out of the window, keep the
    reference (auto mode). True when the caller should re-sum the window now."""
    window = int(s[_WINDOW])
    c = window + 1
    times, values = _RINGS, _RINGS + c
    minseq, minval, maxseq, maxval = _RINGS + 2 * c, _RINGS + 3 * c, _RINGS + 4 * c, _RINGS + 5 * c
    srt = _RINGS + 6 * c
    sorts = s[_SORTS] != 0.0
    head, n = int(s[_HEAD]), int(s[_N])
    if n == 0:
        s[_SHIFT] = _clip(value)
    seq = s[_SEQ] + 1.0
    s[_SEQ] = seq
    slot = (head + n) % c
    s[times + slot] = time
    s[values + slot] = value
    n += 1
    # the min deque (increasing values) and the max deque (decreasing values)
    mh, mn = int(s[_MINH]), int(s[_MINN])
    while mn > 0 and s[minval + (mh + mn - 1) % c] >= value:
        mn -= 1
    s[minseq + (mh + mn) % c] = seq
    s[minval + (mh + mn) % c] = value
    mn += 1
    xh, xn = int(s[_MAXH]), int(s[_MAXN])
    while xn > 0 and s[maxval + (xh + xn - 1) % c] <= value:
        xn -= 1
    s[maxseq + (xh + xn) % c] = seq
    s[maxval + (xh + xn) % c] = value
    xn += 1
    count = n - 1  # sorted values before this one
    if sorts:  # bisect.insort (to the right of equal values)
        a = _bisect_right(s, srt, count, value)
        for j in range(count, a, -1):
            s[srt + j] = s[srt + j - 1]
        s[srt + a] = value
        count += 1
    shift = s[_SHIFT]
    d = _clip(value) - shift
    total = s[_SUM] + d
    sumsq = s[_SUMSQ] + d * d
    evicted = 0.0  # the largest square that left the sums
    # evict what fell out of the window: by count, and by age when window_seconds is set
    oldest_seq = seq - window + 1
    wseconds = s[_WSECONDS]
    oldest_time = time - wseconds if wseconds > 0 else -math.inf
    while n > 0 and (seq - n + 1 < oldest_seq or s[times + head] < oldest_time):
        old_seq = seq - n + 1
        old = s[values + head]
        head = (head + 1) % c
        n -= 1
        if mn > 0 and s[minseq + mh] <= old_seq:
            mh = (mh + 1) % c
            mn -= 1
        if xn > 0 and s[maxseq + xh] <= old_seq:
            xh = (xh + 1) % c
            xn -= 1
        if sorts:  # del sorted[bisect.bisect_left(sorted, old)]
            a = _bisect_left(s, srt, count, old)
            for j in range(a, count - 1):
                s[srt + j] = s[srt + j + 1]
            count -= 1
        d = _clip(old) - shift
        total -= d
        sumsq -= d * d
        if d * d > evicted:
            evicted = d * d
    s[_HEAD], s[_N] = head, n
    s[_MINH], s[_MINN], s[_MAXH], s[_MAXN] = mh, mn, xh, xn
    s[_SUM], s[_SUMSQ] = total, sumsq
    since = s[_SINCE_REFRESH] + 1.0
    s[_SINCE_REFRESH] = since
    if int(s[_MODE]) == AUTO:
        _auto_range(s, value)
    # (a value that held most of the squares left: what remains lost its digits to it)
    return since >= 4 * window or evicted > sumsq


def _clip_py(value: float) -> float:
    """``value`` as the running sums take it: within +-SUM_LIMIT."""
    if value > SUM_LIMIT:
        return SUM_LIMIT
    if value < -SUM_LIMIT:
        return -SUM_LIMIT
    return value


# -- mapping -------------------------------------------------------------------------------

def _zscore_py(s: np.ndarray, value: float) -> float:
    """Deviation of ``value`` from the rolling mean, in standard deviations."""
    n = int(s[_N])
    if n < 2:
        return 0.0
    m = s[_SUM] / n
    var = s[_SUMSQ] / n - m * m
    sd = math.sqrt(0.0 if var < 0.0 else var)  # Python's max(var, 0.0)
    mean = s[_SHIFT] + s[_SUM] / n
    diff = value - mean
    a = abs(mean)
    scale = (1.0 if a < 1.0 else a) * 1e-12
    if sd <= scale:
        return 0.0 if abs(diff) <= scale else math.copysign(math.inf, diff)
    return diff / sd


def _percentile_py(s: np.ndarray, srt: int, n: int, q: float) -> float:
    pos = q * (n - 1)
    i = int(pos)
    if i + 1 >= n:
        return s[srt + n - 1]
    return s[srt + i] + (s[srt + i + 1] - s[srt + i]) * (pos - i)


def _normalize_py(s: np.ndarray, value: float) -> float:
    """``value`` mapped into 0..1 relative to the current window."""
    n = int(s[_N])
    if n == 0:
        return MIDDLE
    mode = int(s[_MODE])
    if mode == AUTO:
        return _clip01(_knot_position(s, _KNOTS, value)) if s[_HAS_KNOTS] != 0.0 else MIDDLE
    c = int(s[_WINDOW]) + 1
    srt = _RINGS + 6 * c
    if mode == RANK:
        if n < 2:
            return MIDDLE
        below = _bisect_left(s, srt, n, value)
        equal = _bisect_right(s, srt, n, value) - below
        if equal == n:
            return MIDDLE
        return _clip01((below + (equal - 1) / 2) / (n - 1))
    if mode == ZSCORE:
        z = _zscore(s, value)
        if math.isnan(z):
            return MIDDLE
        zclip = s[_ZCLIP]
        z = z if z < zclip else zclip
        z = z if z > -zclip else -zclip
        return (z + zclip) / (2 * zclip)
    lo = s[_RINGS + 3 * c + int(s[_MINH])]
    hi = s[_RINGS + 5 * c + int(s[_MAXH])]
    if mode == ROBUST and n >= 3:
        p_lo = _percentile(s, srt, n, s[_LO_Q])
        p_hi = _percentile(s, srt, n, s[_HI_Q])
        if p_hi - p_lo > _tiny(p_lo, p_hi):
            lo, hi = p_lo, p_hi
    if hi - lo <= _tiny(lo, hi):
        return MIDDLE
    return _clip01((value - lo) / (hi - lo))


def _position_py(s: np.ndarray, value: float) -> float:
    """Where ``value`` lies in the ordinary range (auto: beyond 0..1 outside it)."""
    if int(s[_MODE]) != AUTO:
        return _normalize(s, value)
    return _knot_position(s, _KNOTS, value) if s[_HAS_KNOTS] != 0.0 else MIDDLE


if os.environ.get("STREAMSONIC_NO_JIT"):  # for debugging: the plain Python
    _tiny, _clip01, _clip, _knot_position, _knot_value = (
        _tiny_py, _clip01_py, _clip_py, _knot_position_py, _knot_value_py)
    _bisect_left, _bisect_right = _bisect_left_py, _bisect_right_py
    _quantile_knots, _ring_sorted, _last_sorted, _sorted4_third = (
        _quantile_knots_py, _ring_sorted_py, _last_sorted_py, _sorted4_third_py)
    _set_reference, _ring_append, _snap, _stretch_for_trend, _zoom, _auto_range = (
        _set_reference_py, _ring_append_py, _snap_py, _stretch_for_trend_py, _zoom_py,
        _auto_range_py)
    _warm_trend, _in_order, _going, _pairs, _moves, _drift = (
        _warm_trend_py, _in_order_py, _going_py, _pairs_py, _moves_py, _drift_py)
    _zscore, _percentile, _normalize = _zscore_py, _percentile_py, _normalize_py
    push: Any = _push_py
    position: Any = _position_py
    normalize: Any = _normalize_py
    zscore: Any = _zscore_py
else:
    from streamsonic.model.kernels import jit  # numba: compiled at first use, or cached

    # Each piece is its own compiled function (inlined by LLVM where it pays; numba's
    # inline="always" ran no faster here and compiled push 0.6 s slower, without a cache).
    _tiny, _clip01 = jit(_tiny_py, fastmath=False), jit(_clip01_py, fastmath=False)
    _clip = jit(_clip_py, fastmath=False)
    _bisect_left = jit(_bisect_left_py, fastmath=False)
    _bisect_right = jit(_bisect_right_py, fastmath=False)
    _knot_position = jit(_knot_position_py, fastmath=False)
    _knot_value = jit(_knot_value_py, fastmath=False)
    _quantile_knots = jit(_quantile_knots_py, fastmath=False)
    _ring_append = jit(_ring_append_py, fastmath=False)
    _set_reference = jit(_set_reference_py, fastmath=False)
    _percentile = jit(_percentile_py, fastmath=False)
    _ring_sorted = jit(_ring_sorted_py, fastmath=False)
    _last_sorted = jit(_last_sorted_py, fastmath=False)
    _sorted4_third = jit(_sorted4_third_py, fastmath=False)
    _snap = jit(_snap_py, fastmath=False)
    _stretch_for_trend = jit(_stretch_for_trend_py, fastmath=False)
    _pairs = jit(_pairs_py, fastmath=False)
    _in_order = jit(_in_order_py, fastmath=False)
    _going = jit(_going_py, fastmath=False)
    _moves = jit(_moves_py, fastmath=False)
    _drift = jit(_drift_py, fastmath=False)
    _warm_trend = jit(_warm_trend_py, fastmath=False)
    _zoom = jit(_zoom_py, fastmath=False)
    _auto_range = jit(_auto_range_py, fastmath=False)
    _zscore = jit(_zscore_py, fastmath=False)
    _normalize = jit(_normalize_py, fastmath=False)
    push = jit(_push_py, fastmath=False)
    position = jit(_position_py, fastmath=False)
    normalize = _normalize
    zscore = _zscore
