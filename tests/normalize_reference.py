"""The rolling normalizer as it was written before it was compiled (8b23216): plain Python
over deques and a sorted list. The oracle for tests/test_normalize_kernel.py, which checks
that the compiled normalizer the daemon runs gives the same positions, edges and statistics
to the bit."""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from collections.abc import Callable

from streamsonic.config import NormalizeConfig

MIDDLE = 0.5
#: The running sums take values clipped to this magnitude (their squares stay finite).
SUM_LIMIT = 1e150


def _clip(value: float) -> float:
    return min(max(value, -SUM_LIMIT), SUM_LIMIT)


#: Values are placed (pushed, mapped) clipped to this magnitude: their differences stay finite.
PLACE_LIMIT = 1e300


def _placed(value: float) -> float:
    return min(max(value, -PLACE_LIMIT), PLACE_LIMIT)


MODES = ("auto", "rank", "robust", "minmax", "zscore")
#: Quantile knots of the auto-ranging reference: from its lowest to its highest.
REF_LOW_Q, REF_HIGH_Q, REF_KNOTS = 0.02, 0.98, 17
#: Samples for which auto-ranging rebuilds its reference every time (the window is young).
WARMUP = 16
#: How many recent samples auto-ranging looks at to decide that its reference is stale.
RECENT = 32
#: When the last RECENT values span less than this share of the reference, it zooms in:
#: to the last 2 * RECENT values, ZOOM_WIDTH times as wide as they spread, if those
#: values changed at least ZOOM_MOVES times.
ZOOM, ZOOM_WIDTH = 0.15, 3.0
ZOOM_MOVES = 8
#: Where a trending signal lands after the reference moved (from the edge it came in by).
TREND_LAND = 0.15
#: ... and the reference is sized so that, at its recent rate, the trend crosses it in
#: about this many samples (a 30-sample stretch then rises through a few scale notes).
TREND_PERIOD = 100
#: A trend that crossed its reference faster than TREND_PERIOD (it accelerates) gets the
#: next one sized for the pace it kept, up to this many times its recent rate.
MAX_PACE = 8.0
#: A series that starts on a trend (its first and last 4 values apart by WARM_TREND_NET
#: of the window's range, Kendall's tau at least WARM_TREND_TAU) gets a reference sized
#: like a trend's from its 8th sample on, and its warm-up ends there; until RECENT samples,
#: a tau below WARM_TURN_TAU gives it up for the window's own reference.
WARM_TREND_NET, WARM_TREND_TAU, WARM_TURN_TAU = 0.3, 0.6, 0.5
#: After an exit to a new extreme at most EXPAND_MAX times as far from the far edge as
#: the window's range reaches, the reference widens to hold it, EXPAND_LAND in from the
#: edge it left by (a swing wider than before), instead of moving.
EXPAND_LAND, EXPAND_MAX = 0.75, 3.0
#: Another exit the same way is a trend unless the signal came back this far (a share of
#: the range) past where the last move put it: then it swings (a season, a cycle).
BACK = 0.35
#: ... and unless its last RECENT values go that way less than this (pairs in that order
#: minus pairs against it, over the untied pairs): a season's peak above last year's is a
#: wider swing, not a trend.
TREND_TAU = 0.7
#: After an exit, the window's own range is kept when it holds the signal's level at
#: least this far from its edges (an oscillation); otherwise the reference moves.
EDGE = 0.1
#: A first exit that drifts across the edge (the level at most DRIFT widths past it, at
#: least DRIFT_MOVES of the last DRIFT_SAMPLES values changed) widens the reference from
#: its other edge until the level sits DRIFT_LAND from there.
DRIFT, DRIFT_LAND, DRIFT_MOVES, DRIFT_SAMPLES = 0.25, 0.9, 6, 8


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
        self._seq = 0
        self._items: deque[tuple[int, float, float]] = deque()  # (seq, time, value)
        self._min: deque[tuple[int, float]] = deque()  # increasing values
        self._max: deque[tuple[int, float]] = deque()  # decreasing values
        self._sorted: list[float] = []
        self._shift = 0.0  # sums are kept of (v - shift) for numerical stability
        self._sum = 0.0
        self._sumsq = 0.0
        self._since_refresh = 0
        self._sorts = mode in ("robust", "rank", "auto")
        # auto-ranging: the reference's knots (values at equal quantile steps), how many
        # samples in a row lay outside it (signed: + above), samples since it was built,
        # and which of the last RECENT values lay outside it.
        self.exit_after = exit_after
        self._knots: list[float] = []
        self._run = 0
        self._since_snap = 0
        self._outside: deque[bool] = deque(maxlen=RECENT)
        self._last_exit = 0  # direction of the last exit that moved the reference
        self._crossing = False  # the reference was sized for a trend to cross it
        # 1: the warm-up ended early (the series started on a trend); 2: it turned soon
        self._warmed = 0
        self._pace = 1.0  # how much faster than its recent rate the trend crossed it
        self._low, self._high = math.inf, -math.inf  # the lowest/highest place since then
        self._land = 0.5  # where the last move put the level (from the edge it left by)
        self._recent: deque[float] = deque(maxlen=RECENT)  # their positions (clipped)

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
        return len(self._items)

    def remapped(self, fn: Callable[[float], float]) -> RollingNormalizer:
        """A new normalizer of the same settings whose window holds ``fn`` of this one's
        values (when a stream moves to or from a log scale)."""
        new = RollingNormalizer(self.mode, self.window, self.window_seconds,
                                self.lo_q * 100.0, self.hi_q * 100.0, self.zclip,
                                self.exit_after)
        for _, time, value in self._items:
            new.push(time, fn(value))
        return new

    def reconfigured(self, config: NormalizeConfig) -> RollingNormalizer:
        """A new normalizer of ``config``'s settings whose window holds this one's values,
        replayed in order (a reload): a shorter window keeps the newest of them; a longer
        one fills up from here, as a new stream's would."""
        new = RollingNormalizer.from_config(config)
        for _, time, value in self._items:
            new.push(time, value)
        return new

    # -- window maintenance --------------------------------------------------------------
    def push(self, time: float, value: float) -> None:
        """Add a sample (finite ``value``) and evict what fell out of the window."""
        value = _placed(value)
        if not self._items:
            self._shift = _clip(value)
        self._seq += 1
        seq = self._seq
        self._items.append((seq, time, value))
        while self._min and self._min[-1][1] >= value:
            self._min.pop()
        self._min.append((seq, value))
        while self._max and self._max[-1][1] <= value:
            self._max.pop()
        self._max.append((seq, value))
        if self._sorts:
            bisect.insort(self._sorted, value)
        d = _clip(value) - self._shift
        self._sum += d
        self._sumsq += d * d
        evicted = self._evict(seq, time)
        self._since_refresh += 1
        if self._since_refresh >= 4 * self.window or evicted > self._sumsq:
            self._refresh_sums()
        if self.mode == "auto":
            self._auto_range(value)

    def _evict(self, newest_seq: int, newest_time: float) -> float:
        """Drop what fell out of the window; the largest square that left the sums."""
        evicted = 0.0
        oldest_seq = newest_seq - self.window + 1
        oldest_time = newest_time - self.window_seconds if self.window_seconds > 0 else -math.inf
        items = self._items
        while items and (items[0][0] < oldest_seq or items[0][1] < oldest_time):
            seq, _, value = items.popleft()
            if self._min and self._min[0][0] <= seq:
                self._min.popleft()
            if self._max and self._max[0][0] <= seq:
                self._max.popleft()
            if self._sorts:
                del self._sorted[bisect.bisect_left(self._sorted, value)]
            d = _clip(value) - self._shift
            self._sum -= d
            self._sumsq -= d * d
            evicted = max(evicted, d * d)
        return evicted

    def _refresh_sums(self) -> None:
        values = [_clip(v) for _, _, v in self._items]
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
        value = _placed(value)
        if len(self._items) < 2:
            return 0.0
        sd = self.std
        diff = value - self.mean
        scale = max(abs(self.mean), 1.0) * 1e-12
        if sd <= scale:
            return 0.0 if abs(diff) <= scale else math.copysign(math.inf, diff)
        return diff / sd

    # -- auto-ranging --------------------------------------------------------------------
    def _auto_range(self, value: float) -> None:
        """Keep, move or rebuild the reference after ``value`` joined the window."""
        knots = self._knots
        n = len(self._sorted)
        if self._warmed == 1 and self._seq <= RECENT and not self._in_order(WARM_TURN_TAU):
            self._warmed = 2  # it turned within RECENT samples: the window's reference
            self._snap(value, centered=False)
            return
        if not knots or (n <= WARMUP and not self._warmed):
            self._snap(value, centered=False)
            self._warm_trend()
            return
        above, below = value > knots[-1], value < knots[0]
        self._run = (max(self._run, 0) + 1 if above else min(self._run, 0) - 1 if below
                     else 0)
        self._outside.append(above or below)
        self._since_snap += 1
        if abs(self._run) >= self.exit_after:
            # A level shift or a trend: follow it. The first exit re-centres the reference
            # on where the signal is now; another exit the same way soon after means a
            # trend, and the signal then lands near the far edge, with room to go on.
            direction = 1 if self._run > 0 else -1
            # it came back: since the last move it went BACK of the range past the level
            back = (self._low if direction > 0 else 1.0 - self._high) < self._land - BACK
            trend = (direction == self._last_exit and self._since_snap < self.window
                     and not back and self._going(RECENT, direction) >= TREND_TAU)
            land = 0.5 - direction * (0.5 - TREND_LAND) if trend else 0.5
            if not trend:
                self._pace = 1.0
            elif self._crossing:
                # The reference was sized for a TREND_PERIOD crossing and the trend crossed
                # it in ``crossed`` samples: it sped up. Size the next one for its pace.
                crossed = max(self._since_snap - self.exit_after, 1)
                self._pace = min(MAX_PACE, max(1.0, self._pace * TREND_PERIOD / crossed))
            self._crossing = trend
            level = self._recent_median(self.exit_after)
            if not trend and self._drift(level, direction):
                self._last_exit = direction
                return
            self._snap(level, centered=True, land=land, direction=direction,
                       widen=not trend)
            if trend:
                self._stretch_for_trend(level, land, direction)
            self._last_exit = direction
            return
        place = min(1.0, max(0.0, knot_position(knots, value)))
        self._recent.append(place)
        self._low, self._high = min(self._low, place), max(self._high, place)
        if self._since_snap < RECENT:
            return
        recent = self._recent
        if sum(self._outside) > RECENT // 2:
            self._snap(value, centered=False)  # the signal grew wilder: take the window's
            self._last_exit, self._crossing = 0, False
        elif max(recent) - min(recent) < ZOOM and self._moves(2 * RECENT) >= ZOOM_MOVES:
            self._zoom(value)  # the recent values sit in a sliver of the range: zoom in
            self._crossing = False

    def _in_order(self, tau: float) -> bool:
        """Whether the window's values go one way (Kendall's tau >= ``tau`` either way)."""
        values = [v for _, _, v in self._items]
        pairs = [(a, b) for i, a in enumerate(values) for b in values[i + 1:]]
        kendall = sum(b > a for a, b in pairs) - sum(b < a for a, b in pairs)
        return abs(kendall) >= tau * len(pairs)

    def _moves(self, count: int) -> int:
        """How many of the newest ``count`` values (at most) differ from the one before."""
        values = [v for _, _, v in self._items][-count:]
        return sum(b != a for a, b in itertools.pairwise(values))

    def _going(self, count: int, direction: int) -> float:
        """How the newest ``count`` values (at most) go ``direction``'s way: pairs in
        that order minus pairs against it, over the untied pairs (Goodman and Kruskal's
        gamma), 0 when all are tied."""
        values = [v for _, _, v in self._items][-count:]
        pairs = [(a, b) for i, a in enumerate(values) for b in values[i + 1:]]
        up, down = sum(b > a for a, b in pairs), sum(b < a for a, b in pairs)
        return direction * (up - down) / (up + down) if up + down else 0.0

    def _warm_trend(self) -> None:
        """During the warm-up, a series that starts on a trend (its first and last 4
        values apart by WARM_TREND_NET of the window's range or more, in order: Kendall's
        tau of WARM_TREND_TAU or more): widen the reference so that the trend, at the rate
        it came in with, crosses it in TREND_PERIOD samples, stretched from where it
        started, and end the warm-up."""
        items, knots = self._items, self._knots
        if len(items) < 8 or not knots:
            return
        newest = sorted(v for _, _, v in itertools.islice(items, len(items) - 4, None))[2]
        oldest = sorted(v for _, _, v in itertools.islice(items, 0, 4))[2]
        net = abs(newest - oldest)
        span = knots[-1] - knots[0]
        if net < WARM_TREND_NET * span or not self._in_order(WARM_TREND_TAU):
            return
        width = net / (len(items) - 4) * TREND_PERIOD
        if width <= span:
            return
        factor = width / span
        self._knots = [oldest + factor * (k - oldest) for k in knots]
        self._warmed = 1

    def _stretch_for_trend(self, level: float, land: float, direction: int) -> None:
        """Size the reference so that the trend, at its recent rate, takes about
        TREND_PERIOD samples to cross from ``land`` to the far edge."""
        if min(len(self._items), RECENT) < 8 or not self._knots:
            return
        rate = self._rate(RECENT) * self._pace
        knots = self._knots
        far = knots[-1] if direction > 0 else knots[0]
        span = abs(far - level)
        if rate <= 0.0 or span <= _tiny(far, level):
            return
        factor = rate * TREND_PERIOD / span
        self._knots = [level + factor * (k - level) for k in knots]

    def _rate(self, count: int) -> float:
        """The signal's recent rate of change per sample: the (upper) median of the newest
        4 values against that of 4 values ``count`` - 4 samples before them."""
        items = self._items
        n = min(len(items), count)
        newest = [v for _, _, v in itertools.islice(items, len(items) - 4, None)]
        oldest = [v for _, _, v in itertools.islice(items, len(items) - n, len(items) - n + 4)]
        return abs(sorted(newest)[2] - sorted(oldest)[2]) / (n - 4)

    def _recent_median(self, count: int) -> float:
        values = sorted(v for _, _, v in itertools.islice(
            self._items, max(0, len(self._items) - count), None))
        return values[len(values) // 2]

    def _drift(self, level: float, direction: int) -> bool:
        """After a first exit across the ``direction`` edge: a drift (``level`` at most
        DRIFT widths past it, the last DRIFT_SAMPLES values moving) widens the reference from its
        other edge until ``level`` sits DRIFT_LAND from there. Whether it did."""
        knots = self._knots
        edge, anchor = (knots[-1], knots[0]) if direction > 0 else (knots[0], knots[-1])
        if (abs(level - edge) > DRIFT * (knots[-1] - knots[0])
                or self._moves(DRIFT_SAMPLES) < DRIFT_MOVES):
            return False
        inner = knot_value(knots, 0.5 + direction * (DRIFT_LAND - 0.5))
        if inner == anchor:
            return False
        # the far edge no further out than the window's own values reach
        window = _quantile_knots(self._sorted)
        reach = window[0] if direction > 0 else window[-1]
        near = window[-1] if direction > 0 else window[0]
        far = anchor
        if (level - near) * direction > 0.0 and (reach - anchor) * direction > 0.0:
            far = reach  # a new extreme of the window: its values reach no further back
        factor = (far - level) / (anchor - inner)
        knots = [far + factor * (k - anchor) for k in knots]
        self._set_reference(knots)
        place = knot_position(knots, level)  # seen from the edge it left by
        self._land = place if direction >= 0 else 1.0 - place
        return True

    def _zoom(self, value: float) -> None:
        """Zoom the reference in to the last ``2 * RECENT`` values: their quantiles,
        ``ZOOM_WIDTH`` times as wide as they spread, with ``value`` kept where it was (a
        reference that moves under a held or slowly moving value would change its pitch).
        When their quantiles cannot keep it there (it is one of many equal values), the
        reference keeps its shape and shrinks around ``value``."""
        recent = sorted(v for _, _, v in itertools.islice(
            self._items, max(0, len(self._items) - 2 * RECENT), None))
        spread = _quantile_knots(recent)
        if spread[-1] - spread[0] <= _tiny(spread[0], spread[-1]):
            return  # the recent values are all equal: nothing to zoom into
        place = min(1.0, max(0.0, knot_position(self._knots, value)))
        mid = knot_value(spread, 0.5)
        knots = [ZOOM_WIDTH * (k - mid) for k in spread]
        shift = value - knot_value(knots, place)
        knots = [k + shift for k in knots]
        if knots[-1] - knots[0] >= self._knots[-1] - self._knots[0]:
            return  # three times the recent spread is no narrower: nothing to zoom into
        if abs(knot_position(knots, value) - place) > 0.5 / (REF_KNOTS - 1):
            old = self._knots
            factor = ZOOM_WIDTH * (spread[-1] - spread[0]) / (old[-1] - old[0])
            if factor >= 1.0:
                return
            knots = [value + factor * (k - value) for k in old]
        self._set_reference(knots)

    def _snap(self, value: float, centered: bool, land: float = 0.5, direction: int = 0,
              widen: bool = False) -> None:
        """Rebuild the reference from the window; ``centered`` moves it so that ``value``
        sits at position ``land`` (the middle by default), or, with ``widen``, when
        ``value`` left the window's range by its ``direction`` edge but not far, stretches
        it from its other edge until ``value`` sits at EXPAND_LAND from there."""
        knots = _quantile_knots(self._sorted)
        if knots[-1] - knots[0] <= _tiny(knots[0], knots[-1]):
            lo, hi = self.minimum, self.maximum  # mostly one value
            if hi - lo <= _tiny(lo, hi):
                self._knots = []  # a constant window: everything plays the middle
                return
            # that value in the middle, its farthest other value at an edge
            mid = knots[0]
            reach = max(hi - mid, mid - lo)
            knots = [mid + reach * ((2 * k - (REF_KNOTS - 1)) / (REF_KNOTS - 1))
                     for k in range(REF_KNOTS)]
        if centered and not EDGE <= knot_position(knots, value) <= 1.0 - EDGE:
            # The window's own range does not hold the signal's level well (it is at its
            # edge: a trend, a level shift): move the reference to the level, or (a new
            # extreme not far out: a swing wider than those before) widen it to hold it.
            anchor = knots[0] if direction > 0 else knots[-1]
            inner = knot_value(knots, 0.5 + direction * (EXPAND_LAND - 0.5))
            factor = ((value - anchor) / (inner - anchor)
                      if widen and direction and inner != anchor else 0.0)
            if 1.0 <= factor <= EXPAND_MAX:
                knots = [anchor + factor * (k - anchor) for k in knots]
            else:
                shift = value - knot_value(knots, land)
                knots = [k + shift for k in knots]
        self._set_reference(knots)
        place = knot_position(knots, value)  # seen from the edge it left by
        self._land = place if direction >= 0 else 1.0 - place

    def _set_reference(self, knots: list[float]) -> None:
        self._knots = knots
        self._low, self._high = math.inf, -math.inf
        self._run = 0
        self._since_snap = 0
        self._outside.clear()
        self._recent.clear()

    def edges(self) -> tuple[float, float] | None:
        """The auto-ranging reference's lowest and highest values (None: no reference)."""
        return (self._knots[0], self._knots[-1]) if self._knots else None

    def position(self, value: float) -> float:
        """Where ``value`` lies in the ordinary range: 0..1 inside it; beyond it (auto mode
        only), 1 + the excess in range widths above, minus the excess below."""
        value = _placed(value)
        if self.mode != "auto":
            return self.normalize(value)
        return knot_position(self._knots, value) if self._knots else MIDDLE

    # -- mapping -------------------------------------------------------------------------
    def normalize(self, value: float) -> float:
        """``value`` mapped into 0..1 relative to the current window."""
        value = _placed(value)
        if not self._items:
            return MIDDLE
        if self.mode == "auto":
            return min(1.0, max(0.0, self.position(value)))
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


def _quantile_knots(sorted_values: list[float]) -> list[float]:
    """REF_KNOTS values at equal quantile steps from REF_LOW_Q to REF_HIGH_Q (linear
    interpolation) of an ascending list."""
    n = len(sorted_values)
    out = []
    for k in range(REF_KNOTS):
        pos = (REF_LOW_Q + (REF_HIGH_Q - REF_LOW_Q) * k / (REF_KNOTS - 1)) * (n - 1)
        i = int(pos)
        j = min(i + 1, n - 1)
        out.append(sorted_values[i] + (sorted_values[j] - sorted_values[i]) * (pos - i))
    return out


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
    first = bisect.bisect_left(knots, value)
    if knots[i] == value and first < i:
        return 0.5 * (first + i) / last  # on knots that are all this value: their middle
    i = min(i, last - 1)
    a, b = knots[i], knots[i + 1]
    frac = (value - a) / (b - a) if b > a else 0.5
    return (i + frac) / last


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
