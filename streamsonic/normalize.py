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

Defined edge cases: the first sample and a constant window map to 0.5 (the middle of the
range); with two distinct values in the window they map to the two ends (not one pitch).

Separately, :meth:`RollingNormalizer.zscore` gives a value's deviation from the rolling
mean in standard deviations, which drives velocity (anomalies are louder).
"""

from __future__ import annotations

import bisect
import math
from collections import deque

import numpy as np

from streamsonic.config import NormalizeConfig

MIDDLE = 0.5


class RollingNormalizer:
    """One stream's rolling window and the chosen mapping into 0..1."""

    def __init__(
        self,
        mode: str = "robust",
        window: int = 200,
        window_seconds: float = 0.0,
        low_percentile: float = 5.0,
        high_percentile: float = 95.0,
        zscore_clip: float = 2.5,
    ) -> None:
        if mode not in ("robust", "minmax", "zscore", "rank"):
            raise ValueError(f"unknown normalization mode {mode!r}")
        if window < 2:
            raise ValueError("a normalization window needs at least 2 samples")
        self.mode = mode
        self.window = window
        self.window_seconds = window_seconds
        self.lo_q = low_percentile / 100.0
        self.hi_q = high_percentile / 100.0
        self.zclip = zscore_clip
        self._seq = 0
        self._items: deque[tuple[int, float, float]] = deque()  # (seq, time, value)
        self._min: deque[tuple[int, float]] = deque()  # increasing values
        self._max: deque[tuple[int, float]] = deque()  # decreasing values
        self._sorted: list[float] = []
        self._shift = 0.0  # sums are kept of (v - shift) for numerical stability
        self._sum = 0.0
        self._sumsq = 0.0
        self._since_refresh = 0

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
        )

    def __len__(self) -> int:
        return len(self._items)

    # -- window maintenance --------------------------------------------------------------
    def push(self, time: float, value: float) -> None:
        """Add a sample (finite ``value``) and evict what fell out of the window."""
        if not self._items:
            self._shift = value
        self._seq += 1
        seq = self._seq
        self._items.append((seq, time, value))
        while self._min and self._min[-1][1] >= value:
            self._min.pop()
        self._min.append((seq, value))
        while self._max and self._max[-1][1] <= value:
            self._max.pop()
        self._max.append((seq, value))
        if self.mode in ("robust", "rank"):
            bisect.insort(self._sorted, value)
        d = value - self._shift
        self._sum += d
        self._sumsq += d * d
        self._evict(seq, time)
        self._since_refresh += 1
        if self._since_refresh >= 4 * self.window:
            self._refresh_sums()

    def _evict(self, newest_seq: int, newest_time: float) -> None:
        oldest_seq = newest_seq - self.window + 1
        oldest_time = newest_time - self.window_seconds if self.window_seconds > 0 else -math.inf
        items = self._items
        while items and (items[0][0] < oldest_seq or items[0][1] < oldest_time):
            seq, _, value = items.popleft()
            if self._min and self._min[0][0] <= seq:
                self._min.popleft()
            if self._max and self._max[0][0] <= seq:
                self._max.popleft()
            if self.mode in ("robust", "rank"):
                del self._sorted[bisect.bisect_left(self._sorted, value)]
            d = value - self._shift
            self._sum -= d
            self._sumsq -= d * d

    def _refresh_sums(self) -> None:
        values = [v for _, _, v in self._items]
        self._shift = sum(values) / len(values) if values else 0.0
        self._sum = sum(v - self._shift for v in values)
        self._sumsq = sum((v - self._shift) ** 2 for v in values)
        self._since_refresh = 0

    # -- statistics ----------------------------------------------------------------------
    @property
    def minimum(self) -> float:
        """Smallest value in the window."""
        return self._min[0][1]

    @property
    def maximum(self) -> float:
        """Largest value in the window."""
        return self._max[0][1]

    @property
    def mean(self) -> float:
        """Mean of the window."""
        n = len(self._items)
        return self._shift + self._sum / n if n else math.nan

    @property
    def std(self) -> float:
        """Population standard deviation of the window."""
        n = len(self._items)
        if n < 2:
            return 0.0
        m = self._sum / n
        return math.sqrt(max(self._sumsq / n - m * m, 0.0))

    def percentile(self, q: float) -> float:
        """The ``q`` quantile (0..1) of the window, linear interpolation (robust/rank modes)."""
        s = self._sorted
        pos = q * (len(s) - 1)
        i = int(pos)
        if i + 1 >= len(s):
            return s[-1]
        return s[i] + (s[i + 1] - s[i]) * (pos - i)

    def zscore(self, value: float) -> float:
        """Deviation of ``value`` from the rolling mean, in standard deviations.

        0 with fewer than two samples; +-inf for a departure from a constant window.
        """
        if len(self._items) < 2:
            return 0.0
        sd = self.std
        diff = value - self.mean
        scale = max(abs(self.mean), 1.0) * 1e-12
        if sd <= scale:
            return 0.0 if abs(diff) <= scale else math.copysign(math.inf, diff)
        return diff / sd

    # -- mapping -------------------------------------------------------------------------
    def normalize(self, value: float) -> float:
        """``value`` mapped into 0..1 relative to the current window."""
        if not self._items:
            return MIDDLE
        if self.mode == "rank":
            return _rank(self._sorted, value)
        if self.mode == "zscore":
            z = self.zscore(value)
            if math.isnan(z):
                return MIDDLE
            z = max(-self.zclip, min(self.zclip, z))
            return (z + self.zclip) / (2 * self.zclip)
        lo, hi = self.minimum, self.maximum
        if self.mode == "robust" and len(self._sorted) >= 3:
            p_lo, p_hi = self.percentile(self.lo_q), self.percentile(self.hi_q)
            if p_hi - p_lo > _tiny(p_lo, p_hi):
                lo, hi = p_lo, p_hi
        return _scale(value, lo, hi)

    def update(self, time: float, value: float) -> tuple[float, float]:
        """Push the sample, then return ``(normalized, zscore)`` of its value."""
        self.push(time, value)
        return self.normalize(value), self.zscore(value)


def _tiny(a: float, b: float) -> float:
    return max(abs(a), abs(b), 1.0) * 1e-12


def _scale(value: float, lo: float, hi: float) -> float:
    if hi - lo <= _tiny(lo, hi):
        return MIDDLE
    return min(1.0, max(0.0, (value - lo) / (hi - lo)))


def _rank(sorted_values: list[float], value: float) -> float:
    n = len(sorted_values)
    if n < 2:
        return MIDDLE
    below = bisect.bisect_left(sorted_values, value)
    equal = bisect.bisect_right(sorted_values, value) - below
    if equal == n:
        return MIDDLE
    # Position of the value among the window, 0 (lowest) .. 1 (highest), ties averaged.
    return min(1.0, max(0.0, (below + (equal - 1) / 2) / (n - 1)))


def normalize_global(values: np.ndarray, mode: str, config: NormalizeConfig) -> np.ndarray:
    """Normalize a whole series at once (``render``'s default): 0..1 per value."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return v
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
