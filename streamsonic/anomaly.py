"""A streaming anomaly score per stream: 0 (expected) .. 1 (alarming). Pure: no I/O.

The score combines two views of each new value, because a listener on watch needs both:

* **Surprise**: the residual against short-horizon robust forecasts, scaled by the robust
  spread of that forecast's recent residuals, on each side of their median (a skewed
  stream, one that jumps up more than down, is judged by each side's own spread). The
  forecasts follow trends and seasonality with a constant lag, and the residuals' own
  median absorbs that lag, so a steady trend or a smooth season scores low; a spike, the
  first samples of a dropout or of a level shift, and a burst of variance score high.
* **Level**: how far the value lies beyond the stream's ordinary range (the auto-ranging
  reference of :mod:`streamsonic.normalize`), in widths of that range: catches a value far
  outside what the stream has been doing even when its recent residuals are noisy.

**Counts, coarse readings, rain** (errors per second, mostly 0; a temperature read to a
tenth, mostly repeating; rain, 0 on dry days) have residuals that are mostly exactly 0:
quantiles alone give them no spread, every step would be an anomaly and, as one, would
never widen the spread. Once the stream changed ``QUANTUM_CHANGES`` times (its last
``history`` nonzero changes are kept, however many repeats lie between them: a gauge
polled faster than it is updated), a change by the smallest of those steps (the readings'
quantum) is at most ``QUANTUM_Z`` robust sigmas, and a stream with at least
``REPEAT_SHARE`` of its last ``history`` changes exactly 0 has a scale of at least the
median of its nonzero changes (:mod:`streamsonic.anomaly_kernel`). A count that ranges
from quiet hours into busy ones is judged on Anscombe's root when its steps' variance grows
as its level does (Poisson), on the logs of one more than its values when faster
(:class:`ScaleWatch`): its spread is then the same by night and by day.

Both become a z-like number; the larger, ``z``, maps to ``score = z^2 / (z^2 + z_ref^2)``,
which is 0.5 at ``z = z_ref``: the default accent threshold. Constant streams have no
spread: their first change scores 1. Cost per sample: O(n) in a compiled kernel
(:mod:`streamsonic.anomaly_kernel`: sorted windows of ``history`` residuals, a binary
search and a move of memory each), a few microseconds. Never NaN, always in 0..1.

**A season** (:mod:`streamsonic.season`): a change that comes back every period (found in
the stream's changes) at its time, to a level the period holds, is expected: it scores the
season's z instead; a change the season forecasts that does not come scores that z if
higher. A positive stream judged on logs that falls to 0 or below lies infinitely far
below on its own scale: it scores 1.

**Calibrated to the stream's own tail.** How unusual a given z is depends on the stream:
residuals close to Gaussian exceed 3 robust sigmas in about 1% of samples or fewer, those
of a stock index or an EEG in 4-8%. Each stream keeps the share of its samples whose
surprise lies above ``TAIL_Z`` while both it and the burst statistic stay below
``TAIL_CAP`` (moderately unusual; anomalies must not teach a stream that anomalies are
ordinary), decaying over ``TAIL_DECAY`` samples and starting from a prior; the
``EPISODE`` samples after one that scores near an accent (``EPISODE_Z`` times the
threshold's z) are not counted at all, so that the rest of a burst, a dropout or a new
level does not raise the share either. A light tail
(a share of at most ``RATE_LIGHT``) judges the surprise against ``Z_REF_LIGHT`` times
``z_ref``, a heavy one (``RATE_HEAVY`` or more) against ``Z_REF_HEAVY`` times, between them
on a log scale. So a shift or a spike of 4-5 sigmas is heard on a quiet stream, and a
volatile one does not accent its own ordinary swings; and a light-tailed stream's sample
from ``ANOMALY_Z_LIGHT`` robust sigmas on counts as an anomaly (its residuals do not widen
the spread that judges the next samples) where a heavy one's does from ``ANOMALY_Z`` on
(:mod:`streamsonic.anomaly_kernel`). The burst statistic keeps one gain:
a gain that also followed the tail bought bursts with false accents at the rate a higher
fixed gain does (measured in process, as bench/accents.py does; a burst raises the tail
share itself).
"""

from __future__ import annotations

import functools
import math
from array import array

from streamsonic import anomaly_kernel as kernel
from streamsonic.season import Season

#: Robust z at which the score is 0.5 (the default accent threshold).
Z_REF = 5.0
#: A value one range-width beyond the ordinary range counts as this many robust sigmas.
LEVEL_Z_PER_WIDTH = 2.5
LEVEL_Z_PER_WIDTH_LOG = 1.0
#: Samples after which a stream's scale is first decided (then again every DECIDE // 2 of
#: an even sample of all its values: ScaleWatch), and the ratio of its 90th to its 10th
#: percentile from which a positive stream is judged on log values.
DECIDE, LOG_RATIO = 64, 4.0
#: ... if it is also right-skewed: its upper decile this many times further from the median
#: than its lower one (a lognormal's is 2.6 times, a uniform's 1).
SKEW = 1.8
#: ... and until then, z_ref is this many times larger.
WARMUP_CAUTION = 1.5
#: How a stream's values are judged: as they are; on their logs (positive, varying by
#: multiples); on the logs of one more than them (counts: whole numbers, 0 among them, one
#: more than them varying by multiples: requests or errors per interval over a day).
#: Or on Anscombe's root (counts whose spread grows as the root of their level, as a
#: Poisson count's does: the slope of the log of their steps' variance on the log of their
#: level below TAYLOR_ROOT; at or above it, as a count with bursts of its own, the logs).
RAW, LOG, LOG1P, ROOT = 0, 1, 2, 3
TAYLOR_ROOT = 1.5
#: A count decided on its steps is watched on: the slope, fitted again on more of them,
#: moves it to the other side once it lies TAYLOR_BAND beyond TAYLOR_ROOT (a bursty count
#: looks like a Poisson one at low levels).
TAYLOR_BAND = 0.2
#: Level bins (one octave of 1 + the level each) of a count's steps; the slope is fitted
#: over the bins from the second on (a level of 1 or more) with TAYLOR_STEPS steps or
#: more, once they span TAYLOR_OCTAVES octaves of level.
_BINS, TAYLOR_STEPS, TAYLOR_OCTAVES = 48, 16, 2.5


def _root(value: float) -> float:
    return 2.0 * math.sqrt(value + 0.375)


_FORWARD = (float, math.log, math.log1p, _root)
#: The stream's tail: the share of its samples with z above TAIL_Z and both z and the burst
#: statistic below TAIL_CAP, decaying over TAIL_DECAY samples, starting from TAIL_PRIOR as
#: if seen over TAIL_PRIOR_SAMPLES samples.
TAIL_Z, TAIL_CAP, TAIL_DECAY = 3.0, 6.0, 256
TAIL_PRIOR, TAIL_PRIOR_SAMPLES = 0.03, 32.0
#: The EPISODE samples after one whose z reaches EPISODE_Z times z_ref (an anomaly's
#: episode: the rest of a burst, a dropout) do not count towards the tail share.
EPISODE, EPISODE_Z = 8, 0.8
#: A tail share at most RATE_LIGHT is light (Gaussian z exceed 3 in 0.27% of samples); at
#: least RATE_HEAVY heavy. The surprise is judged against z_ref times Z_REF_LIGHT ..
#: Z_REF_HEAVY (log-linear between).
RATE_LIGHT, RATE_HEAVY = 0.02, 0.08
Z_REF_LIGHT, Z_REF_HEAVY = 0.8, 1.2
_PRIOR_COUNT = TAIL_PRIOR_SAMPLES * TAIL_PRIOR
_ANOMALY_Z_LIGHT = kernel.ANOMALY_Z_LIGHT
_ANOMALY_Z_SPAN = kernel.ANOMALY_Z - kernel.ANOMALY_Z_LIGHT
_LOG_SPAN = math.log(RATE_HEAVY / RATE_LIGHT)


def strength(score: float) -> float:
    """The inverse of :func:`score_of`, in units of ``z_ref``: ``z / z_ref`` (inf at 1)."""
    if score >= 1.0:
        return math.inf
    return math.sqrt(max(score, 0.0) / (1.0 - score))


def score_of(z: float, z_ref: float = Z_REF) -> float:
    """Map a non-negative z onto 0..1 (0.5 at ``z_ref``); inf -> 1, NaN -> 0."""
    if math.isnan(z) or z <= 0.0:
        return 0.0
    r = z / z_ref
    if r > 1e150:  # (inf, or a square that would overflow)
        return 1.0
    q = r * r
    return q / (1.0 + q)


class AnomalyScorer:
    """One stream's anomaly score, updated once per sample.

    Four short-horizon forecasts run side by side (the last value, the median of the last
    five, a line through the trailing medians of three, the last value plus the last
    step): a random walk is best predicted by its last value, noise by a median, a noisy
    trend by the line, a smooth curve (a slow oscillation, a temperature) by the momentum
    of its last step. Each sample is judged by the forecast whose recent residuals are the tightest.
    """

    __slots__ = ("_episode", "_kind", "_last", "_last_at", "_scale", "_season", "_state",
                 "_tail", "_tail_n", "_tail_seen", "_whole", "history", "z_ref")

    def __init__(self, history: int = 128, z_ref: float = Z_REF) -> None:
        if history < 16:
            raise ValueError("need history >= 16")
        self.history = history
        self.z_ref = z_ref
        self._state = kernel.new_state(history)
        self._tail = _tail_index(history)
        # Whether the stream is judged on the log of its values, or of one more (ScaleWatch).
        self._scale = ScaleWatch()
        self._kind = RAW
        self._whole = True  # every value so far a whole number >= 0 (a count)
        # The stream's tail: decaying counts of samples with a moderately unusual z, and
        # of samples judged (from the first z above 0).
        self._tail_n = 0.0
        self._tail_seen = 0.0
        # Samples left of the current anomaly's episode (not counted in the tail).
        self._episode = 0
        # The stream's season (a period in its changes: what it explains is expected).
        self._season = Season()
        # Its last ``history`` values as they came (a ring, the oldest at _last_at once
        # full): a new scale's residuals are learnt again from them (_set_scale). None once
        # the stream is raw for good (no scale to change to: nothing kept).
        self._last: array[float] | None = array("d")
        self._last_at = 0

    @property
    def log_scale(self) -> bool:
        """Whether the stream is judged on the log of its values (positive, varying by
        multiples: its pitch follows the log too)."""
        return self._kind == LOG

    @property
    def scale(self) -> int:
        """How the stream is judged: RAW, LOG, LOG1P or ROOT (counts, see ScaleWatch)."""
        return self._kind

    @property
    def heaviness(self) -> float:
        """How heavy the stream's tail is: 0 (light, Gaussian-like) .. 1 (heavy)."""
        rate = (self._tail_n + _PRIOR_COUNT) / (self._tail_seen + TAIL_PRIOR_SAMPLES)
        if rate <= RATE_LIGHT:  # (the log below would give 0 or less: no log to take)
            return 0.0
        if rate >= RATE_HEAVY:
            return 1.0
        return min(1.0, max(0.0, math.log(rate / RATE_LIGHT) / _LOG_SPAN))

    def update(self, value: float, overflow: float = 0.0, season: bool = True
               ) -> tuple[float, int]:
        """Score ``value`` (then remember it): ``(score 0..1, direction -1/0/+1)``.

        ``overflow`` is how far the value lies beyond the ordinary range, in range widths
        (0 inside it; negative below, positive above). ``season``: whether the stream's
        season judges too (:mod:`streamsonic.season`; it learns either way, so that turning
        it on takes effect at once).
        """
        whole = self._whole = self._whole and _is_count(value)
        fell = False  # a positive stream, judged on logs, fell to 0 or below
        if self._kind == LOG and value <= 0.0:
            # a value the log cannot take: a count's 0 on the logs of one more, else raw
            # values for good (residuals learnt again on that scale; this one is judged on
            # the logs, where it lies infinitely far below)
            fell = not whole
            self._set_scale(LOG1P if whole else RAW)
        elif self._kind >= LOG1P and not whole:
            self._set_scale(RAW)  # not a count: raw values for good
        u = _FORWARD[self._kind](value)
        if self._last is not None:
            self._keep(self._last, value)
        decided = self._scale.push(value, whole)
        if decided == self._kind:
            decided = None
        if decided is None and self._kind == RAW and not self._scale.deciding:
            self._last = None
        heavy = self.heaviness
        tail = Z_REF_LIGHT + heavy * (Z_REF_HEAVY - Z_REF_LIGHT)
        # (a light-tailed stream's anomaly from ANOMALY_Z_LIGHT robust sigmas on, so that
        # a burst's samples do not widen the spread that judges the next burst)
        anomaly_z = _ANOMALY_Z_LIGHT + heavy * _ANOMALY_Z_SPAN
        z_res, z_burst, direction = kernel.step(self._state, u, self.history, self._tail,
                                                anomaly_z)
        single = z_res
        if self._episode > 0:
            self._episode -= 1
        elif single > 0.0 or self._tail_seen > 0.0:
            keep = 1.0 - 1.0 / TAIL_DECAY
            usual = single > TAIL_Z and z_burst < TAIL_CAP  # moderately unusual
            self._tail_n = self._tail_n * keep + (1.0 if usual else 0.0)
            self._tail_seen = self._tail_seen * keep + 1.0
        if decided is not None:  # residuals learnt again on its values; the burst afresh
            self._set_scale(decided)
            kernel.remember_z(self._state, z_res)
            z_burst = z_res
        # The surprise judged against the stream's own tail; the burst statistic where it
        # is what stands out.
        z_res = z_res / tail
        if z_burst > single:
            z_res = max(z_res, z_burst)
        # A heavy-tailed (log-scale) stream strays further beyond its range by nature.
        z_level = abs(overflow) * (LEVEL_Z_PER_WIDTH_LOG if self._kind == LOG
                                   else LEVEL_Z_PER_WIDTH)
        if z_level > z_res:
            direction = 1 if overflow > 0 else -1
        z = max(z_res, z_level)
        if fell:
            z, direction = math.inf, -1
        # Until the stream's scale is decided its history is short and maybe the wrong
        # kind (a heavy tail seen raw): judge it more cautiously.
        z_ref = self.z_ref * (WARMUP_CAUTION if self._scale.early else 1.0)
        if z >= EPISODE_Z * z_ref:  # (the forecasts' surprise: an expected change's
            self._episode = EPISODE  # aftermath is no more the stream's tail than any)
        # A change that comes back every period is expected; one that does not come is news.
        if decided is not None:
            u = _FORWARD[self._kind](value)  # (on the new scale: its season starts over)
        judged, seasonal = self._season.judge(u, z, tail)
        if season:
            z, direction = judged, seasonal or direction
        return score_of(z, z_ref), direction if z > 0 else 0

    def _keep(self, last: array[float], value: float) -> None:
        """Remember ``value`` among the last ``history`` in ``last`` (the ring for
        :meth:`_set_scale`)."""
        if len(last) < self.history:
            last.append(value)
        else:
            last[self._last_at] = value
            self._last_at = (self._last_at + 1) % self.history

    def _set_scale(self, kind: int) -> None:
        """Judge the stream on ``kind`` values from now on (RAW, LOG, LOG1P, ROOT): the
        forecasts' residuals learnt again from its last ``history`` values on that scale,
        as if it had always been judged on it (so an anomaly just after the change is
        judged against them, not against none: the first anomaly of a positive stream
        near its 64th sample, where the scale is first decided, went unheard; their
        anomalies taken as a heavy-tailed stream's, ANOMALY_Z: its tail is not known on
        the new scale); its tail and season start afresh."""
        forward = _FORWARD[kind]
        self._kind = kind
        if kind == RAW:  # (raw for good)
            self._scale.stop()
        self._tail_n = self._tail_seen = 0.0
        self._season.clear()
        at, last = self._last_at, self._last if self._last is not None else array("d")
        state = kernel.new_state(self.history)
        for value in (*last[at:], *last[:at]):
            try:
                u = forward(value)
            except ValueError:  # (one the scale cannot take: left out)
                continue
            kernel.step(state, u, self.history, self._tail, kernel.ANOMALY_Z)
        self._state = state


class ScaleWatch:
    """Whether a stream is judged on the log of its values: a positive stream that spans a
    wide ratio and leans right (latencies, counts of people, prices over years) varies by
    multiples. A count (whole numbers >= 0) whose values plus one span a wide ratio and
    lean right (requests or errors per minute over a day: 0 or 1 at night, hundreds by
    day) is judged by how its steps' variance grows with its level, once it has been at
    levels TAYLOR_OCTAVES octaves apart: as the level itself (Taylor's slope below
    TAYLOR_ROOT: a Poisson count) on Anscombe's root, faster (a count with bursts of its
    own) on the logs (of one more than its values if 0 is among them), fitted again at
    each decision after that (TAYLOR_BAND: a bursty count looks like a Poisson one at low
    levels). Until then a positive count goes on logs as any positive stream does, one
    with zeros stays raw.

    Decided on the first ``DECIDE`` values, then again every ``DECIDE // 2`` values of an
    even sample of all the values so far (every ``stride``-th; at most ``2 * DECIDE`` kept,
    the stride doubling), for as long as the stream stays positive, or a count, and raw
    (a count: until its scale is decided on the evidence of its steps): a stream that
    starts within a narrow ratio and later comes to span multiples (a growing count, a
    sorted heavy tail, a count from its quiet hours into its busy ones) moves then.
    """

    __slots__ = ("_count", "_last", "_logs", "_skip", "_steps", "_stride", "_values",
                 "_zero", "early")

    def __init__(self) -> None:
        # (an array of doubles: 1 KiB at most per stream, a quarter of a list of floats)
        self._values: array[float] | None = array("d")
        self._stride = 1
        self._skip = 0
        # A count's steps by the octave of 1 + their level: how many, the sum of their
        # squares, the sum of their levels (_BINS each; 1.1 KiB while it is watched).
        self._steps: array[float] | None = None
        self._last = math.nan
        self._logs = False  # moved to logs, still watched as a count
        self._count: int | None = None  # a count's scale decided on its steps
        self._zero = False  # a value <= 0 seen (a count's 0)
        #: The first decision is still to come (the scorer judges more cautiously).
        self.early = True

    def push(self, value: float, whole: bool = False) -> int | None:
        """Take the stream's next value (``whole``: it and every value before it whole
        numbers >= 0); the scale the stream is to be judged on from now on (LOG, LOG1P or
        ROOT), None when that is not decided now."""
        values = self._values
        if values is None:
            return None
        self._zero = self._zero or value <= 0.0  # (every value: the sample may miss it)
        if not whole and (self._logs or (self._zero and not self.early)):
            self.stop()  # (early: the first decision sees it and says raw)
            return None
        if whole:
            self._step(value)
        self._skip += 1
        if self._skip < self._stride:
            return None
        self._skip = 0
        values.append(value)
        if self.early:
            if len(values) < DECIDE:
                return None
            self.early = False
            if self._zero and not whole:
                self.stop()
                return None
        elif len(values) % (DECIDE // 2):
            return None
        if len(values) >= 2 * DECIDE:
            del values[::2]
            self._stride *= 2
        ordered = sorted(values)
        if whole:
            slope = self._taylor()
            if not math.isnan(slope) and _varies_by_multiples([v + 1.0 for v in ordered]):
                # a count, judged by its steps (and watched on: more of them may move it)
                heavy = LOG1P if self._zero else LOG
                if self._count is None and not self._logs:
                    self._count = ROOT if slope < TAYLOR_ROOT else heavy
                elif self._count is None:  # on logs already: as if decided so
                    self._count = ROOT if slope < TAYLOR_ROOT - TAYLOR_BAND else heavy
                elif self._count == ROOT:
                    self._count = heavy if slope >= TAYLOR_ROOT + TAYLOR_BAND else ROOT
                else:
                    self._count = ROOT if slope < TAYLOR_ROOT - TAYLOR_BAND else heavy
                return self._count
            if self._logs or self._count is not None:
                return None
        if not self._zero and _varies_by_multiples(ordered):
            if whole:  # on logs, and watched until its steps decide
                self._logs = True
            else:
                self.stop()
            return LOG
        return None

    @property
    def deciding(self) -> bool:
        """Whether a decision may still come (False once :meth:`stop` was called)."""
        return self._values is not None

    def stop(self) -> None:
        """No more decisions (the stream's scale is decided, or raw for good)."""
        self._values = None
        self._steps = None
        self.early = False

    def _step(self, value: float) -> None:
        """Count a count's step from its last value to ``value`` at their level."""
        last, self._last = self._last, value
        if math.isnan(last):
            return
        steps = self._steps
        if steps is None:
            steps = self._steps = array("d", bytes(8 * 3 * _BINS))
        level = 1.0 + 0.5 * (last + value)
        b = min(int(math.log2(level)), _BINS - 1)
        step = value - last
        steps[b] += 1.0
        steps[_BINS + b] += step * step
        steps[2 * _BINS + b] += level

    def _taylor(self) -> float:
        """The slope of the log of a count's steps' variance on the log of its level
        (Taylor's power law: 1 for a Poisson count, 2 for one that varies by multiples),
        over the octaves of its level from 1 up with TAYLOR_STEPS steps or more, not all
        0; NaN until those span TAYLOR_OCTAVES octaves."""
        steps = self._steps
        if steps is None:
            return math.nan
        xs, ys, ws = [], [], []
        for b in range(1, _BINS):
            n = steps[b]
            if n >= TAYLOR_STEPS and steps[_BINS + b] > 0.0:
                xs.append(math.log(steps[2 * _BINS + b] / n))
                ys.append(math.log(steps[_BINS + b] / n))
                ws.append(n)
        if len(xs) < 2 or max(xs) - min(xs) < TAYLOR_OCTAVES * math.log(2.0):
            return math.nan
        total = sum(ws)
        mx = sum(w * x for w, x in zip(ws, xs, strict=True)) / total
        my = sum(w * y for w, y in zip(ws, ys, strict=True)) / total
        sxx = sum(w * (x - mx) ** 2 for w, x in zip(ws, xs, strict=True))
        sxy = sum(w * (x - mx) * (y - my) for w, x, y in zip(ws, xs, ys, strict=True))
        return sxy / sxx


def _is_count(value: float) -> bool:
    """Whether ``value`` is a whole number >= 0 (below 2**53, where floats still are)."""
    return 0.0 <= value < 9007199254740992.0 and value == math.floor(value)


def _varies_by_multiples(values: list[float]) -> bool:
    """Whether sorted positive ``values`` span a wide ratio and lean right."""
    n = len(values)
    lo, mid, hi = values[n // 10], values[n // 2], values[n - 1 - n // 10]
    return hi >= LOG_RATIO * lo and hi - mid >= SKEW * (mid - lo)


_tail_index = functools.cache(kernel.tail_index)
