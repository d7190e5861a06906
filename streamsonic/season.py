"""A stream's season: a period found in its changes, and whether it explains a value. Pure.

The anomaly score's forecasts look a few samples back (:mod:`streamsonic.anomaly`), so a
change that comes back at the same time every period (a machine that starts its work at
nine every morning and stops at five, an hourly job, a weekly report) is a surprise to them
every time. A listener who has heard it on three days expects it on the fourth; a day on
which it does not come is the news. This keeps the stream's last ``WINDOW`` values and,
every ``EVERY`` samples (``EVERY_FULL`` once they are all kept), looks for a period in their
changes: the lag (``PERIOD_MIN`` up to a third of the values kept) at which the first
differences correlate best with themselves, taken when that correlation is at least
``PERIOD_CORRELATION`` (the first peak within ``PERIOD_NEAR`` of the best, so a period's
multiples do not replace it). White noise, a
random walk, a trend or a single anomaly have none; a smooth oscillation and a pattern of
steps have one.

With a period ``P`` the season forecasts a value as the median of the values ``P``, ``2P``
and ``3P`` samples before it (an anomaly on one of those days is outvoted), allowing a
sample of jitter either way (``P - 1``, ``P + 1``: the closest of the three forecasts). Its
scale is the mean absolute residual, decaying over ``SCALE_SAMPLES`` (clipped at ``CLIP``
times itself), Gaussian-consistent; it is trusted once ``SCALE_SAMPLES // 4`` residuals
are in and while it is no wider than the residuals of the last value as a forecast (a
season that forecasts worse than "as before" explains nothing). Then, for a value ``u``
whose surprise is ``z`` (:meth:`Season.judge`):

* **An expected change is not a surprise.** When the season forecasts a change (a step of
  more than ``STEP_Z`` of its sigmas from the last value) to a level it holds for the next
  ``HOLD`` samples, and ``u`` makes it (its seasonal z at most ``EXPLAINED``), ``u`` scores
  its seasonal z; so do the next ``HOLD`` values while they stay where the season says and
  it forecasts no new change (the short forecasts catch up). A change that the season
  undoes within ``HOLD`` samples (a spike, a short dropout, at the same time every period)
  is not explained: an anomaly that recurs on a timetable is accented every time
  (``accent.schedule`` is the opt-in for those; see :mod:`streamsonic.conductor`).
* **An expected change that does not come is one.** When the season forecasts such a change
  and ``u`` stays where the stream was (not half way there, at none of the three lags),
  ``u`` scores its seasonal z if that is larger: the morning the machine did not start.
  Once: the values after it are judged as ever until one is again where the season says.
* **A value far from where the season says is one.** When the season forecasts no change
  and ``u`` lies further from its forecast, in seasonal sigmas judged against the stream's
  tail as the short forecasts' are (``tail``), than ``z`` says, ``u`` scores that: a spike
  on a weekly pattern whose own swings make every short forecast's residuals wide (a day's
  traffic of one and a half times the busiest day, 8 seasonal sigmas and 4 short-forecast
  sigmas, was not accented).

Cost per sample: a store into a ring and, with a period, a few medians of three (a few
microseconds); every ``EVERY_FULL`` samples one FFT of ``2 * WINDOW`` points (82 µs). Memory:
a few values for a stream of a few samples, ``WINDOW`` doubles (8 KiB) from its
``EVERY``-th (all at once, so that it does not grow for an hour on a slow stream). Values
are finite; a residual too large for a float (values near 1e308) disables the season
rather than giving NaN.
"""

from __future__ import annotations

import math
from array import array

import numpy as np

#: Values kept (the longest period found is about a third of them: 340 samples, more than
#: a day of five-minute samples), and how often the period is looked for: every EVERY
#: samples while they fill up, then every EVERY_FULL.
WINDOW, EVERY, EVERY_FULL = 1024, 64, 256
#: The shortest period, the least correlation of the changes at it, and how close to the
#: best lag's correlation an earlier peak must come to be taken instead.
PERIOD_MIN, PERIOD_CORRELATION, PERIOD_NEAR = 4, 0.5, 0.9
#: The season's scale: the mean |residual| over about SCALE_SAMPLES (each clipped at CLIP
#: times it), times MEAN_TO_SIGMA (a Gaussian's sigma from its mean absolute value).
SCALE_SAMPLES, CLIP, MEAN_TO_SIGMA = 64, 4.0, 1.2533
#: A forecast change of more than STEP_Z seasonal sigmas is a step; it must hold for HOLD
#: samples (not come back within RETURN of its size towards where it started); a value
#: within EXPLAINED seasonal sigmas of the forecast is explained by it.
STEP_Z, HOLD, RETURN, EXPLAINED = 3.0, 4, 0.5, 3.0


class Season:
    """One stream's season (see the module): :meth:`judge` each value in turn."""

    __slots__ = ("_follow", "_missed", "_n", "_plain", "_ring", "_spread", "_trusted",
                 "period")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget the values and the period (the stream's scale changed)."""
        self._ring: array[float] = array("d")
        self._n = 0  # values seen (the newest at (_n - 1) % WINDOW once the ring is full)
        #: The period found (samples), 0 for none.
        self.period = 0
        self._spread = 0.0  # decaying mean |seasonal residual| ...
        self._plain = 0.0  # ... and |last value's residual|, over the same samples
        self._trusted = 0  # residuals in them since the period was found
        self._follow = 0  # samples left that an explained change's level still explains
        self._missed = False  # an expected change did not come, and the stream is still off

    def judge(self, u: float, z: float, tail: float = 1.0) -> tuple[float, int]:
        """``u``'s surprise ``z`` as the season sees it, and its direction (-1/+1 where the
        season changed it, else 0); then remember ``u``. ``tail``: what the stream's tail
        divides a z by (:data:`streamsonic.anomaly.Z_REF_LIGHT` .. ``Z_REF_HEAVY``), for
        the seasonal z of a value the season does not expect."""
        out, direction = z, 0
        if self._follow:
            self._follow -= 1
        period = self.period
        if period and self._n >= 3 * period + 3:
            last = self._at(1)
            own = self._median_at(period, period)  # the forecast at the period itself
            if self._trusted >= SCALE_SAMPLES // 4 and self._spread <= self._plain:
                sigma = MEAN_TO_SIGMA * self._spread
                forecast, lag = self._forecast(u, own, period, sigma)
                residual = abs(u - forecast)
                if residual <= 1e-12 * max(1.0, abs(u)):  # (the same value, rounded)
                    zs = 0.0
                elif sigma > 0.0 and math.isfinite(sigma):
                    zs = residual / sigma
                else:
                    zs = math.inf
                step = abs(forecast - last)
                big = step > STEP_Z * sigma  # the season forecasts a change here
                if zs <= EXPLAINED:
                    self._missed = False  # (back where the season says)
                    # an expected change, or the level it went to (not a new change: a
                    # spike the season also forecasts comes back at once, never explained)
                    if zs < z and (big or self._follow):
                        stepped = big and self._holds(forecast, last, lag)
                        if stepped or not big:
                            out = zs
                        if stepped:
                            self._follow = HOLD + 1
                elif (big and zs > z and abs(u - last) < RETURN * step and not self._missed
                      and self._holds(forecast, last, lag)):
                    out = zs  # the change did not come (once, until the stream is back)
                    direction = 1 if u > forecast else -1
                    self._missed = True
                elif not big and zs / tail > z:  # far from where the season says
                    out = zs / tail
                    direction = 1 if u > forecast else -1
            self._learn(abs(u - own), abs(u - last))
        self._remember(u)
        return out, direction

    def _at(self, k: int) -> float:
        """The value ``k`` samples before the one being judged (1: the last)."""
        return self._ring[(self._n - k) % WINDOW]

    def _median_at(self, k: int, period: int) -> float:
        """The median of the values ``k``, ``k + period`` and ``k + 2 period`` back."""
        ring, n = self._ring, self._n
        a = ring[(n - k) % WINDOW]
        b = ring[(n - k - period) % WINDOW]
        c = ring[(n - k - 2 * period) % WINDOW]
        return max(min(a, b), min(max(a, b), c))

    def _forecast(self, u: float, own: float, period: int, sigma: float
                  ) -> tuple[float, int]:
        """The season's forecast of ``u`` at the lag of the three (the period, ``own`` its
        forecast, and a sample either way) whose forecast is closest, and that lag; the
        period's own if it explains ``u`` (within EXPLAINED ``sigma``)."""
        best, lag = own, period
        if abs(u - own) <= EXPLAINED * sigma:
            return best, lag
        for other in (period - 1, period + 1):
            guess = self._median_at(other, other)
            if abs(u - guess) < abs(u - best):
                best, lag = guess, other
        return best, lag

    def _holds(self, forecast: float, last: float, lag: int) -> bool:
        """Whether the season holds the forecast level for the next HOLD samples (does not
        come back within RETURN of the step towards ``last``)."""
        near = RETURN * abs(forecast - last)
        return all(abs(self._median_at(lag - j, lag) - last) >= near
                   for j in range(1, HOLD + 1))

    def _learn(self, seasonal: float, plain: float) -> None:
        """Take the residuals of the season's forecast (at the period itself) and of the
        last value into their decaying means."""
        if not (math.isfinite(seasonal) and math.isfinite(plain)):
            return
        if self._trusted >= SCALE_SAMPLES // 4:
            seasonal = min(seasonal, CLIP * self._spread) if self._spread else seasonal
            plain = min(plain, CLIP * self._plain) if self._plain else plain
        self._trusted += 1
        weight = 1.0 / min(self._trusted, SCALE_SAMPLES)
        self._spread += weight * (seasonal - self._spread)
        self._plain += weight * (plain - self._plain)

    def _remember(self, u: float) -> None:
        ring, n = self._ring, self._n
        if len(ring) == WINDOW:
            ring[n % WINDOW] = u
        elif len(ring) < EVERY - 1:  # (a stream of a few samples keeps a few)
            ring.append(u)
        else:  # all of it at once, at the first search: its memory does not grow after
            full = array("d", bytes(8 * WINDOW))
            full[:n] = ring
            full[n] = u
            self._ring = full
        n = self._n = n + 1
        if n % (EVERY if n <= WINDOW else EVERY_FULL) == 0 and n >= 6 * PERIOD_MIN:
            self._find_period()

    def _find_period(self) -> None:
        """Look for the period in the changes of the values kept (see the module)."""
        kept = np.frombuffer(self._ring, dtype=np.float64)
        seen = self._n
        values = kept[:seen] if seen < WINDOW else np.roll(kept, -(seen % WINDOW))  # oldest first
        found = 0
        with np.errstate(over="ignore", invalid="ignore"):  # (values near 1e308: none)
            changes = np.diff(values)
            if np.isfinite(changes).all():
                changes -= changes.mean()
                largest = float(np.abs(changes).max())
                if largest > 0.0:  # (to 1: the products cannot overflow, whatever the values)
                    changes /= largest
                n = len(changes)
                size = 1 << (2 * n - 1).bit_length()
                spectrum = np.fft.rfft(changes, size)
                acf = np.fft.irfft(spectrum * np.conj(spectrum), size)[:n]
                longest = (len(values) - 3) // 3  # (3 periods and a sample kept)
                if acf[0] > 0.0 and math.isfinite(acf[0]) and longest > PERIOD_MIN:
                    lags = np.arange(PERIOD_MIN, longest + 1)
                    corr = acf[lags] / acf[0] * n / (n - lags)  # (unbiased at each lag)
                    best = float(corr.max())
                    if best >= PERIOD_CORRELATION:
                        # the first peak (a lag at least as good as its neighbours) near the best
                        peak = corr >= PERIOD_NEAR * best
                        peak[1:] &= corr[1:] >= corr[:-1]
                        peak[:-1] &= corr[:-1] >= corr[1:]
                        found = int(lags[np.argmax(peak)])
        if found != self.period:
            self.period = found
            self._spread = self._plain = 0.0
            self._trusted = self._follow = 0
