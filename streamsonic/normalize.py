"""Rolling-window normalizers: raw values -> 0..1, per stream. Pure: no I/O.

Every normalizer keeps a window of the last ``window`` samples (and/or the last
``window_seconds`` seconds) and maps a value into 0..1 relative to that window:

* ``minmax`` - (v - min) / (max - min); O(1) amortized with monotonic deques.
* ``robust`` - (v - p_lo) / (p_hi - p_lo), clipped; percentiles (default 5th and 95th)
  of the window, so a single spike does not squash the other values onto one pitch. Falls
  back to min/max when the percentiles coincide (a stream with mostly one value).
* ``rank``   - the fraction of the window below v (ties count half): a quantile transform,
  immune to outliers and heavy tails, ignores magnitudes.
* ``zscore`` - (v - mean) / std clipped to +-``zscore_clip``, mapped onto 0..1.
* ``auto``   - auto-ranging, like an oscilloscope (the live default). A *reference* (the
  window's quantile function, from its 2nd to its 98th percentile) stays fixed while the
  signal stays inside it, so the mapping does not move under the music and every local
  rise and fall is heard; inside the reference a value maps through that frozen quantile
  function (ordinary values use the whole range, heavy tails included, like ``rank``).
  When the signal leaves the reference for ``exit_after`` samples in a row, the
  reference is rebuilt from the window. If the window's own range holds the signal's
  level (an oscillation) it is kept as it is; if the level is a new extreme not far
  beyond it (a swing wider than before: a season on a slow trend) it is widened from its
  other edge to hold the level ``EXPAND_LAND`` of the way over; otherwise it is moved to
  the level, centred (a level shift). When the signal leaves again the same way soon
  after without having swung back (a trend), the level lands near the far edge with a
  reference sized so that the trend takes about ``TREND_PERIOD`` samples to cross it: a
  steady trend plays a rising (or falling) line that steps back every so often; one that
  crossed faster (it accelerates) gets the next reference sized for the pace it kept. A
  single far value does not move it: it maps beyond 0..1 (see
  :meth:`RollingNormalizer.position`), which the conductor plays above or below the
  ordinary pitch range, further for larger excursions. The reference is also rebuilt
  when half of the last ``RECENT`` values fell outside it (wilder), and
  zooms in when they span less than ``ZOOM`` of it (quieter), around the current value,
  which keeps its place: a held value keeps its pitch, a slowing trend does not jump.

Defined edge cases: the first sample and a constant window map to 0.5 (the middle of the
range); with two distinct values in the window they map to the two ends (not one pitch).

Separately, :meth:`RollingNormalizer.zscore` gives a value's deviation from the rolling
mean in standard deviations (``zscore`` mode). Loudness comes from
:mod:`streamsonic.anomaly`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

import numpy as np

from streamsonic import normalize_kernel as kernel
from streamsonic.config import NormalizeConfig
from streamsonic.normalize_kernel import (  # noqa: F401 - the constants are documented here
    BACK,
    EDGE,
    EXPAND_LAND,
    EXPAND_MAX,
    MAX_PACE,
    MIDDLE,
    RECENT,
    REF_HIGH_Q,
    REF_KNOTS,
    REF_LOW_Q,
    TREND_LAND,
    TREND_PERIOD,
    WARMUP,
    ZOOM,
    ZOOM_WIDTH,
)

MODES = ("auto", "rank", "robust", "minmax", "zscore")
#: Values are placed (pushed into a window, mapped) clipped to this magnitude, so that
#: every difference of two and its multiples stay finite: -1e308 and 1e308 in one window
#: spanned more than a float holds, and both played the middle of the range. A value this
#: far out plays at the edge of the headroom either way; events keep the value itself.
PLACE_LIMIT = 1e300


def _placed(value: float) -> float:
    return value if -PLACE_LIMIT <= value <= PLACE_LIMIT else math.copysign(PLACE_LIMIT, value)


class RollingNormalizer:
    """One stream's rolling window and the chosen mapping into 0..1.

    The window and the auto-ranging reference live in one preallocated float64 array
    (:mod:`streamsonic.normalize_kernel`, compiled); this class holds it and the settings.
    """

    __slots__ = ("_state", "exit_after", "hi_q", "lo_q", "mode", "window", "window_seconds",
                 "zclip")

    def __init__(
        self,
        mode: str = "robust",
        window: int = 200,
        window_seconds: float = 0.0,
        low_percentile: float = 5.0,
        high_percentile: float = 95.0,
        zscore_clip: float = 2.5,
        exit_after: int = 4,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown normalization mode {mode!r}")
        if window < 2:
            raise ValueError("a normalization window needs at least 2 samples")
        self.mode = mode
        self.window = window
        self.window_seconds = window_seconds
        self.lo_q = low_percentile / 100.0
        self.hi_q = high_percentile / 100.0
        self.zclip = zscore_clip
        self.exit_after = exit_after
        self._state = kernel.new_state(
            MODES.index(mode), window, window_seconds, self.lo_q, self.hi_q, zscore_clip,
            exit_after, sorts=mode in ("robust", "rank", "auto"))

    @classmethod
    def from_config(cls, config: NormalizeConfig, mode: str | None = None) -> RollingNormalizer:
        """A normalizer as configured (``mode`` overrides ``config.mode``)."""
        return cls(
            mode=mode or config.mode,
            window=config.window,
            window_seconds=config.window_seconds,
            low_percentile=config.low_percentile,
            high_percentile=config.high_percentile,
            zscore_clip=config.zscore_clip,
            exit_after=config.exit_after,
        )

    def __len__(self) -> int:
        return kernel.length(self._state)

    def _window_items(self) -> list[tuple[float, float]]:
        times, values = kernel.window_values(self._state)
        return list(zip(times, values, strict=True))

    def remapped(self, fn: Callable[[float], float]) -> RollingNormalizer:
        """A new normalizer of the same settings whose window holds ``fn`` of this one's
        values (when a stream moves to or from a log scale)."""
        new = RollingNormalizer(self.mode, self.window, self.window_seconds,
                                self.lo_q * 100.0, self.hi_q * 100.0, self.zclip,
                                self.exit_after)
        for time, value in self._window_items():
            new.push(time, fn(value))
        return new

    def reconfigured(self, config: NormalizeConfig) -> RollingNormalizer:
        """A new normalizer of ``config``'s settings whose window holds this one's values,
        replayed in order (a reload): a shorter window keeps the newest of them; a longer
        one fills up from here, as a new stream's would."""
        new = RollingNormalizer.from_config(config)
        for time, value in self._window_items():
            new.push(time, value)
        return new

    # -- window maintenance --------------------------------------------------------------
    def push(self, time: float, value: float) -> None:
        """Add a sample (finite ``value``), evict what fell out of the window and (auto
        mode) keep, move or rebuild the reference."""
        if kernel.push(self._state, time, _placed(value)):
            self._refresh_sums()

    def _refresh_sums(self) -> None:
        """Re-sum the window around its mean (every ``4 * window`` samples, and when a
        value that held most of its squares left it), so that the running sums do not
        drift (values clipped as the sums take them: ``kernel.SUM_LIMIT``)."""
        values = [kernel.clip(v) for v in kernel.window_values(self._state)[1]]
        shift = sum(values) / len(values) if values else 0.0
        kernel.set_sums(self._state, shift, sum(v - shift for v in values),
                        sum((v - shift) ** 2 for v in values))

    # -- statistics ----------------------------------------------------------------------
    @property
    def minimum(self) -> float:
        """Smallest value in the window."""
        return kernel.extremes(self._state)[0]

    @property
    def maximum(self) -> float:
        """Largest value in the window."""
        return kernel.extremes(self._state)[1]

    @property
    def mean(self) -> float:
        """Mean of the window."""
        n = len(self)
        shift, total, _ = kernel.sums(self._state)
        return shift + total / n if n else math.nan

    @property
    def std(self) -> float:
        """Population standard deviation of the window."""
        n = len(self)
        if n < 2:
            return 0.0
        _, total, sumsq = kernel.sums(self._state)
        m = total / n
        return math.sqrt(max(sumsq / n - m * m, 0.0))

    def percentile(self, q: float) -> float:
        """The ``q`` quantile (0..1) of the window, linear interpolation (robust/rank modes)."""
        s = kernel.sorted_values(self._state)
        pos = q * (len(s) - 1)
        i = int(pos)
        if i + 1 >= len(s):
            return float(s[-1])
        return float(s[i] + (s[i + 1] - s[i]) * (pos - i))

    def zscore(self, value: float) -> float:
        """Deviation of ``value`` from the rolling mean, in standard deviations.

        0 with fewer than two samples; +-inf for a departure from a constant window.
        """
        return float(kernel.zscore(self._state, _placed(value)))

    # -- auto-ranging --------------------------------------------------------------------
    def edges(self) -> tuple[float, float] | None:
        """The auto-ranging reference's lowest and highest values (None: no reference)."""
        return kernel.edges(self._state)

    def position(self, value: float) -> float:
        """Where ``value`` lies in the ordinary range: 0..1 inside it; beyond it (auto mode
        only), 1 + the excess in range widths above, minus the excess below."""
        return float(kernel.position(self._state, _placed(value)))

    # -- mapping -------------------------------------------------------------------------
    def normalize(self, value: float) -> float:
        """``value`` mapped into 0..1 relative to the current window."""
        return float(kernel.normalize(self._state, _placed(value)))

    def update(self, time: float, value: float) -> tuple[float, float]:
        """Push the sample, then return ``(normalized, zscore)`` of its value."""
        self.push(time, value)
        return self.normalize(value), self.zscore(value)


def knot_value(knots: list[float], position: float) -> float:
    """The value at ``position`` (0..1) of a reference: the inverse of knot_position."""
    pos = position * (len(knots) - 1)
    i = min(int(pos), len(knots) - 2)
    return knots[i] + (knots[i + 1] - knots[i]) * (pos - i)


def knot_position(knots: list[float], value: float) -> float:
    """``value`` through a reference given by its quantile knots (ascending, equal quantile
    steps): 0..1 inside (piecewise linear), affine beyond, in widths of the reference; a
    value that several knots equal (a value the stream repeats: the 0 of a mostly idle
    count) at the middle of those knots, as ranks average ties."""
    lo, hi = knots[0], knots[-1]
    if value > hi:
        return 1.0 + (value - hi) / (hi - lo)
    if value < lo:
        return (value - lo) / (hi - lo)
    last = len(knots) - 1
    i = bisect.bisect_right(knots, value) - 1
    if knots[i] == value:
        first = bisect.bisect_left(knots, value)
        if first < i:  # on knots that are all this value: their middle
            return 0.5 * (first + i) / last
    i = min(i, last - 1)
    a, b = knots[i], knots[i + 1]
    frac = (value - a) / (b - a) if b > a else 0.5
    return (i + frac) / last


def _tiny(a: float, b: float) -> float:
    return max(abs(a), abs(b), 1.0) * 1e-12


def normalize_global(values: np.ndarray, mode: str, config: NormalizeConfig) -> np.ndarray:
    """Normalize a whole series at once (``render``'s default): 0..1 per value."""
    v = np.clip(np.asarray(values, dtype=np.float64), -PLACE_LIMIT, PLACE_LIMIT)
    if v.size == 0:
        return v
    if mode == "auto":
        # The live reference over the whole file: ordinary values spread like ranks,
        # the few beyond the 2nd/98th percentiles placed by how far out they are.
        qs = np.linspace(REF_LOW_Q, REF_HIGH_Q, REF_KNOTS)
        knots = [float(k) for k in np.quantile(v, qs)]
        if knots[-1] - knots[0] <= _tiny(knots[0], knots[-1]):
            return normalize_global(v, "minmax", config)
        return np.array([knot_position(knots, float(x)) for x in v])
    if mode == "rank":
        order = np.argsort(v, kind="stable")
        ranks = np.empty(v.size)
        ranks[order] = np.arange(v.size, dtype=np.float64)
        # Average the ranks of ties so equal values get equal positions.
        uniq, inverse = np.unique(v, return_inverse=True)
        if uniq.size == 1:
            return np.full(v.size, MIDDLE)
        sums = np.bincount(inverse, weights=ranks)
        counts = np.bincount(inverse)
        return (sums / counts)[inverse] / (v.size - 1)
    if mode == "zscore":
        v = np.clip(v, -kernel.SUM_LIMIT, kernel.SUM_LIMIT)  # (squares that stay finite)
        sd = v.std()
        if sd <= _tiny(v.mean(), v.mean()):
            return np.full(v.size, MIDDLE)
        z = np.clip((v - v.mean()) / sd, -config.zscore_clip, config.zscore_clip)
        return (z + config.zscore_clip) / (2 * config.zscore_clip)
    lo, hi = float(v.min()), float(v.max())
    if mode == "robust":
        p_lo, p_hi = np.percentile(v, [config.low_percentile, config.high_percentile])
        if p_hi - p_lo > _tiny(p_lo, p_hi):
            lo, hi = float(p_lo), float(p_hi)
    if hi - lo <= _tiny(lo, hi):
        return np.full(v.size, MIDDLE)
    return np.clip((v - lo) / (hi - lo), 0.0, 1.0)
