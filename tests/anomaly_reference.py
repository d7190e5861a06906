"""The anomaly scorer as it was written before it was compiled (090024d): plain Python
over deques and sorted lists. The oracle for tests/test_anomaly_kernel.py, which checks that
the compiled scorer the daemon runs gives the same scores to the bit."""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from collections.abc import Callable

from streamsonic.anomaly import LOG, LOG1P, RAW, ROOT, ScaleWatch, score_of
from streamsonic.season import Season

#: Robust z at which the score is 0.5 (the default accent threshold).
Z_REF = 5.0
#: A value one range-width beyond the ordinary range counts as this many robust sigmas.
LEVEL_Z_PER_WIDTH = 2.5
LEVEL_Z_PER_WIDTH_LOG = 1.0
#: Gaussian-consistent scale of the interquartile range.
IQR_TO_SIGMA = 1.0 / 1.349
#: The tail quantile used for each side's scale (10% and 90%), and its Gaussian-consistent
#: factor (the median to the 90th percentile).
TAIL_Q, SIDE_TO_SIGMA = 0.1, 1.0 / 1.2816
#: The momentum forecast: the last value plus this share of the last step (1: a straight
#: line through the last two values).
MOMENTUM = 1.0
#: Until a stream's scale is first decided (ScaleWatch), z_ref is this many times larger.
WARMUP_CAUTION = 1.5
#: Residuals enter the history clipped to this many robust sigmas from its median.
WINSOR = 3.0
#: Each scale's map from values (and back): raw, logs, logs of one more, Anscombe's root.
TO_SCALE: dict[int, Callable[[float], float]] = {RAW: float, LOG: math.log, LOG1P: math.log1p,
            ROOT: lambda v: 2.0 * math.sqrt(v + 0.375)}
FROM_SCALE: dict[int, Callable[[float], float]] = {RAW: float, LOG: math.exp, LOG1P: math.expm1,
              ROOT: lambda u: (u / 2.0) ** 2 - 0.375}
#: Values the forecast line is fitted through (trailing medians of 3).
FORECAST = 6
#: A burst: the median |z| of the last BURST_SAMPLES residuals, times BURST_GAIN.
BURST_SAMPLES, BURST_GAIN = 3, 1.5
#: The stream's tail: the share of its samples with TAIL_Z < z and a burst statistic (at
#: least z) below TAIL_CAP, decaying over TAIL_DECAY samples from a prior of TAIL_PRIOR
#: worth TAIL_PRIOR_SAMPLES samples; light at RATE_LIGHT and below, heavy at RATE_HEAVY and
#: above, log-linear between. The surprise is judged against z_ref times Z_REF_LIGHT ..
#: Z_REF_HEAVY.
TAIL_Z, TAIL_CAP, TAIL_DECAY = 3.0, 6.0, 256
TAIL_PRIOR, TAIL_PRIOR_SAMPLES = 0.03, 32.0
#: The EPISODE samples after a z of at least EPISODE_Z times z_ref are not counted at all.
EPISODE, EPISODE_Z = 8, 0.8
RATE_LIGHT, RATE_HEAVY = 0.02, 0.08
Z_REF_LIGHT, Z_REF_HEAVY = 0.8, 1.2
#: A sample whose z (or burst statistic) reaches ANOMALY_Z_LIGHT (a light-tailed stream)
#: .. ANOMALY_Z (a heavy one; between them by the heaviness) is an anomaly: its residuals
#: enter the windows as ordinary ones (their median) while anomalies are rare (a count of
#: them decaying over ``history`` samples at most ANOMALY_SHARE of it).
ANOMALY_Z_LIGHT, ANOMALY_Z, ANOMALY_SHARE = 5.0, 8.0, 0.2
#: Once the stream changed at least QUANTUM_CHANGES times (its last ``history`` nonzero
#: changes, however many repeats lie between them), a change by the smallest of those is at
#: most QUANTUM_Z robust sigmas.
QUANTUM_CHANGES, QUANTUM_Z = 8, 2.0
#: ... and when at least REPEAT_SHARE of its last ``history`` changes are exactly 0 (a
#: stream that mostly repeats itself), its scale is at least the median of those nonzero
#: changes.
REPEAT_SHARE = 0.3


class _Residuals:
    """A window of one forecaster's residuals, sorted, with its robust scale."""

    __slots__ = ("_abs_sum", "_order", "_sorted", "history")

    def __init__(self, history: int) -> None:
        self.history = history
        self._order: deque[float] = deque()
        self._sorted: list[float] = []
        self._abs_sum = 0.0  # sum of |residual| (a floor for the scale)

    def __len__(self) -> int:
        return len(self._sorted)

    def spread(self, least: float = 0.0) -> tuple[float, float, float]:
        """The median residual and a robust sigma above and below it: each side's the
        larger of its 10% tail's (heavy tails) and a floor, the largest of the IQR's, half
        the mean |residual| (a mostly constant stream) and ``least``. Needs a residual."""
        s = self._sorted
        n = len(s)
        k = max(1, round(TAIL_Q * (n - 1)))
        mid = s[n // 2]
        floor = max((s[(3 * n) // 4] - s[n // 4]) * IQR_TO_SIGMA, 0.5 * self._abs_sum / n,
                    least)
        return (mid, max(floor, (s[n - 1 - k] - mid) * SIDE_TO_SIGMA),
                max(floor, (mid - s[k]) * SIDE_TO_SIGMA))

    def add(self, residual: float, spread: tuple[float, float, float] | None,
            ordinary: bool = False) -> None:
        """Remember a residual, clipped to WINSOR robust sigmas of ``spread`` (this
        window's, before the residual; None: not clipped), or as the window's median if
        ``ordinary`` (an anomaly's): anomalies must not widen the scale that judges the
        next ones (a lasting change still widens it, step by step)."""
        if spread is not None:
            mid, up, down = spread
            if ordinary:
                residual = mid
            else:
                residual = min(max(residual, mid - WINSOR * down), mid + WINSOR * up)
        self._order.append(residual)
        bisect.insort(self._sorted, residual)
        self._abs_sum += abs(residual)
        if len(self._order) > self.history:
            old = self._order.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
            self._abs_sum = max(self._abs_sum - abs(old), 0.0)


class AnomalyScorer:
    """One stream's anomaly score, updated once per sample.

    Four short-horizon forecasts run side by side (the last value, the median of the last
    five, a line through the trailing medians of three, the last value plus the last
    step): a random walk is best predicted by its last value, noise by a median, a noisy
    trend by the line, a smooth curve (a slow oscillation, a temperature) by the momentum
    of its last step. Each sample is judged by the forecast whose recent residuals are the tightest.
    """

    __slots__ = ("_anomalies", "_changes", "_episode", "_hist", "_kind", "_last", "_moves",
                 "_recent_z", "_residuals", "_scale", "_season", "_tail", "_whole",
                 "history", "z_ref")

    def __init__(self, history: int = 128, z_ref: float = Z_REF) -> None:
        if history < 16:
            raise ValueError("need history >= 16")
        self.history = history
        self.z_ref = z_ref
        self._hist: deque[float] = deque(maxlen=FORECAST + 2)  # the last values
        # |value - previous value| of the last `history` values, and the last `history`
        # of them that were not 0 (the readings' quantum, a repeating stream's moves)
        self._changes: deque[float] = deque(maxlen=history)
        self._moves: deque[float] = deque(maxlen=history)
        self._residuals = [_Residuals(history) for _ in _FORECASTERS]
        self._recent_z: deque[float] = deque(maxlen=BURST_SAMPLES)
        self._anomalies = 0.0  # a count of anomalies, decaying over `history` samples
        self._tail = [0.0, 0.0]  # decaying counts: moderately unusual z, samples judged
        self._episode = 0  # samples left of an anomaly's episode (not counted in the tail)
        self._season = Season()
        # Whether the stream is judged on the log of its values, of one more, or on a
        # count's root (the daemon's own ScaleWatch, decided apart from the arithmetic this
        # file holds the kernel to).
        self._scale = ScaleWatch()
        self._kind = RAW
        self._whole = True  # every value so far a whole number >= 0
        self._last: deque[float] = deque(maxlen=history)  # the last values as they came

    @property
    def log_scale(self) -> bool:
        """Whether the stream is judged on the log of its values."""
        return self._kind == LOG

    @property
    def scale(self) -> int:
        """How the stream is judged (RAW, LOG, LOG1P, ROOT)."""
        return self._kind

    def update(self, value: float, overflow: float = 0.0) -> tuple[float, int]:
        """Score ``value`` (then remember it): ``(score 0..1, direction -1/0/+1)``.

        ``overflow`` is how far the value lies beyond the ordinary range, in range widths
        (0 inside it; negative below, positive above).
        """
        self._whole = self._whole and value >= 0.0 and value == math.floor(value)
        fell = self._kind == LOG and value <= 0.0 and not self._whole
        if self._kind == LOG and value <= 0.0:
            self._set_scale(LOG1P if self._whole else RAW)  # the log cannot take it
        elif self._kind in (LOG1P, ROOT) and not self._whole:
            self._set_scale(RAW)  # not a count: raw values for good
        u = TO_SCALE[self._kind](value)
        share = (self._tail[0] + TAIL_PRIOR_SAMPLES * TAIL_PRIOR) / (
            self._tail[1] + TAIL_PRIOR_SAMPLES)
        heavy = min(1.0, max(0.0, math.log(share / RATE_LIGHT)
                             / math.log(RATE_HEAVY / RATE_LIGHT)))
        self._last.append(value)
        z_res, burst, direction = self._step(
            u, ANOMALY_Z_LIGHT + heavy * (ANOMALY_Z - ANOMALY_Z_LIGHT))
        if self._episode:
            self._episode -= 1
        elif z_res > 0.0 or self._tail[1] > 0.0:
            decay = 1.0 - 1.0 / TAIL_DECAY
            self._tail[0] = self._tail[0] * decay + (
                1.0 if z_res > TAIL_Z and burst < TAIL_CAP else 0.0)
            self._tail[1] = self._tail[1] * decay + 1.0
        decided = self._scale.push(value, self._whole)
        if decided is not None and decided != self._kind:
            self._set_scale(decided)
            self._recent_z.clear()
            self._recent_z.append(z_res)  # the burst's memory starts afresh
            burst = z_res
        single = z_res
        tail = Z_REF_LIGHT + heavy * (Z_REF_HEAVY - Z_REF_LIGHT)
        z_res = single / tail
        if burst > single:
            z_res = max(z_res, burst)
        # A heavy-tailed (log-scale) stream strays further beyond its range by nature.
        z_level = abs(overflow) * (LEVEL_Z_PER_WIDTH_LOG if self._kind == LOG
                                   else LEVEL_Z_PER_WIDTH)
        if z_level > z_res:
            direction = 1 if overflow > 0 else -1
        z = max(z_res, z_level)
        if fell:  # infinitely far below on the logs it was judged on
            z, direction = math.inf, -1
        # Until the stream's scale is decided its history is short and maybe the wrong
        # kind (a heavy tail seen raw): judge it more cautiously.
        z_ref = self.z_ref * (WARMUP_CAUTION if self._scale.early else 1.0)
        if z >= EPISODE_Z * z_ref:
            self._episode = EPISODE  # the samples of an anomaly's episode, uncounted
        # The season (streamsonic.season, plain Python in both: not what the kernel
        # replaced), on the values of the scale the stream is judged on now.
        z, seasonal = self._season.judge(TO_SCALE[self._kind](value), z, tail)
        direction = seasonal or direction
        return score_of(z, z_ref), direction if z > 0 else 0

    def _step(self, u: float, anomaly_z: float = ANOMALY_Z) -> tuple[float, float, int]:
        """What the kernel's ``step`` does with ``u``: its z, the burst statistic and the
        direction; the residuals, changes and last values remembered; an anomaly from
        ``anomaly_z`` on."""
        z_res = 0.0
        direction = 0
        residuals: list[float] = []
        spreads = None
        if self._hist:
            residuals = [u - f(self._hist) for f in _FORECASTERS]
            moved = list(self._moves)
            least = 0.0
            if len(moved) >= QUANTUM_CHANGES:
                least = min(moved) / QUANTUM_Z
                repeats = sum(1 for c in self._changes if c == 0.0)
                if repeats >= REPEAT_SHARE * len(self._changes):
                    moved.sort()
                    m = len(moved)
                    typical = (moved[m // 2] if m % 2
                               else 0.5 * (moved[m // 2 - 1] + moved[m // 2]))
                    least = max(least, typical)
            spreads = ([w.spread(least) for w in self._residuals]
                       if len(self._residuals[0]) >= 8 else None)
            if spreads is not None:
                z_res, residual = _surprise(residuals, spreads)
                if residual:
                    direction = 1 if residual > 0 else -1
        if self._hist:
            change = abs(u - self._hist[-1])
            self._changes.append(change)
            if change > 0.0:
                self._moves.append(change)
        self._hist.append(u)
        # A burst of variance: most of the last few residuals are unusual, though none
        # alone may be extreme (the median of their |z| ignores one single spike).
        self._recent_z.append(z_res)
        burst = z_res
        if len(self._recent_z) == BURST_SAMPLES:
            burst = max(z_res, sorted(self._recent_z)[BURST_SAMPLES // 2] * BURST_GAIN)
        # An anomaly's residuals enter as ordinary ones while anomalies are rare.
        anomaly = burst >= anomaly_z
        self._anomalies = self._anomalies * (1.0 - 1.0 / self.history) + (
            1.0 if z_res >= anomaly_z else 0.0)  # (counted: those anomalous alone)
        ordinary = anomaly and self._anomalies <= ANOMALY_SHARE * self.history
        for i, (window, r) in enumerate(zip(self._residuals, residuals, strict=False)):
            window.add(r, None if spreads is None else spreads[i], ordinary)
        return z_res, burst, direction

    def _set_scale(self, kind: int) -> None:
        """Judge the stream on ``kind`` values from now on: the residuals learnt again from
        its last ``history`` values on that scale; the tail and the season afresh."""
        forward = TO_SCALE[kind]
        self._kind = kind
        if kind == RAW:
            self._scale.stop()
        self._hist.clear()
        self._residuals = [_Residuals(self.history) for _ in _FORECASTERS]
        self._changes.clear()
        self._moves.clear()
        self._recent_z.clear()
        self._anomalies = 0.0
        for value in self._last:
            try:
                u = forward(value)
            except ValueError:  # one the scale cannot take: left out
                continue
            self._step(u)
        self._tail = [0.0, 0.0]
        self._season.clear()


def _surprise(residuals: list[float], spreads: list[tuple[float, float, float]]
              ) -> tuple[float, float]:
    """The robust z of the residual of the tightest forecaster, and that residual."""
    best = min(range(len(spreads)), key=lambda i: spreads[i][1] + spreads[i][2])
    mid, up, down = spreads[best]
    residual = residuals[best]
    scale = up if residual >= mid else down
    diff = abs(residual - mid)
    tiny = max(abs(mid), abs(residual), 1.0) * 1e-12
    if scale <= tiny:
        return (0.0 if diff <= tiny else math.inf), residual
    return diff / scale, residual


def _last(values: deque[float]) -> float:
    return values[-1]


def _median5(values: deque[float]) -> float:
    v = sorted(itertools.islice(values, max(0, len(values) - 5), None))
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def _line(values: deque[float]) -> float:
    """The next value: a straight line through the trailing medians of 3 of the last
    values, extrapolated (a single spike in the history does not move it)."""
    v = list(values)
    n = len(v)
    if n < 3:
        return sorted(v)[(n - 1) // 2] if n == 2 else v[0]
    meds = [sorted(v[i - 2:i + 1])[1] for i in range(2, n)]  # m_j lags v by one sample
    m = len(meds)
    if m == 1:
        return meds[0]
    xbar = (m - 1) / 2.0
    ybar = sum(meds) / m
    sxx = sum((j - xbar) ** 2 for j in range(m))
    slope = sum((j - xbar) * (y - ybar) for j, y in enumerate(meds)) / sxx
    return ybar + slope * (m + 1 - xbar)


def _momentum(values: deque[float]) -> float:
    """The last value plus MOMENTUM times the last step: a smooth curve's next value."""
    if len(values) < 2:
        return values[-1]
    return values[-1] + MOMENTUM * (values[-1] - values[-2])


_FORECASTERS = (_last, _median5, _line, _momentum)
