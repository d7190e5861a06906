"""When a stream's note is accented: the onset of an anomaly, heard once.

The anomaly scorer (:mod:`streamsonic.anomaly`) says how surprising each sample is; this
module decides which of the surprising samples are *accented* (top velocity and an earcon):
the onset of an anomaly, not every sample of it. One :class:`Accents` per stream remembers
its last accent and follows what comes after it:

* an anomaly that goes on (every sample since its accent at the threshold), however long,
  is one accent, heard as loudness after it; and within ``accent.refractory`` samples of
  an accent only a clearly larger anomaly (ACCENT_RENEW times its z) accents again, or one
  the other way, or one after the excursion ended;
* an excursion that goes on growing the same way is one anomaly: its way back counts from
  its peak;
* the way back (within RETURN_SAMPLES samples: the first value back over half the accent's
  move, and the values after it until one scores below the threshold) is no new surprise:
  not accented, played at ordinary loudness (a job done, an idle machine idle again, a
  reading back after a dropout);
* with ``accent.schedule = N`` (off by default), an onset that keeps the interval of the
  last N onsets (within SCHEDULE_SLACK samples) is expected: not accented (a cron job).

Pure bookkeeping: no I/O, no time, the caller counts the stream's samples.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from streamsonic.anomaly import strength
from streamsonic.config import AccentConfig

#: Within ``accent.refractory`` samples of an accent, another needs this many times its z.
ACCENT_RENEW = 2.0
#: The anomaly's end is no new one: within RETURN_SAMPLES samples of an accent, the first
#: value that comes back over half the accent's move (no further than RETURN_OVERSHOOT times
#: that move past the value before the accent), and the values after it until one scores
#: below the accent threshold (the forecasts catching up), are not accented (a job done, an
#: idle machine idle again; they play at ordinary loudness, carrying their score, since the
#: end of an anomaly is no new surprise). Once the stream is
#: ordinary again, an anomaly either way is accented.
RETURN_SAMPLES, RETURN_OVERSHOOT = 32, 0.5
#: Onsets keep a schedule when their intervals are equal within this many samples (and
#: longer than one: ``accent.schedule``).
SCHEDULE_SLACK = 2


def renews(anomaly: float, accented: float) -> bool:
    """Whether a score of ``anomaly`` is clearly larger than the ``accented`` one (its z
    at least ACCENT_RENEW times as large). Nothing is clearly larger than a score of 1 (a
    z beyond measure: a stream that had not moved at all, now moving), so a stream whose
    scale is 0 does not accent each of its next samples as a new onset."""
    before = strength(accented)
    return math.isfinite(before) and strength(anomaly) >= ACCENT_RENEW * before


@dataclass(slots=True)
class Accents:
    """One stream's memory of its last accent, and what followed it."""

    at: int = -(2**31)  # the stream's sample count at its last accent
    score: float = 0.0  # and that accent's score
    direction: int = 0  # and its direction (+1 above what was expected, -1 below)
    value: float = math.nan  # and its value (the excursion's peak, as it grows)
    before: float = math.nan  # and the value of the sample before it
    away: bool = False  # not back from the last accent yet (see RETURN_SAMPLES)
    returning: bool = False  # back, and not yet ordinary again
    previous: float = math.nan  # the value of the stream's last sample
    unusual: bool = False  # and whether it scored at or above the accent threshold
    # every sample since the last accent scored at or above the threshold: that anomaly
    # goes on (one anomaly, however long: not accented again)
    ongoing: bool = False
    onsets: list[int] = field(default_factory=list)  # the last onsets' sample counts

    def judge(self, sample: int, value: float, anomaly: float, direction: int,
              config: AccentConfig) -> tuple[bool, bool]:
        """The stream's ``sample``-th sample (counted from 1), its ``value``, scored
        ``anomaly`` (0..1) in ``direction``: ``(accented, on the way back from the last
        accent)``. Call once per sample, in order (every sample, played or not: the way
        back and the refractory count samples)."""
        unusual = anomaly >= config.threshold
        # (every sample: it follows the way back; accent.refractory = 0 accents them all)
        back = self._comes_back(sample, value, unusual) and config.refractory > 0
        ongoing = self.ongoing and unusual and config.refractory > 0
        accent = config.enabled and unusual and not back and (
            (sample - self.at > config.refractory and not ongoing)
            or ((direction != self.direction or not self.unusual)
                and renews(anomaly, self.score)))
        self.ongoing = ongoing
        if accent:
            self.ongoing = True
            self.at, self.score, self.direction = sample, anomaly, direction
            self.value, self.before = value, self.previous
            self.away = direction != 0 and not math.isnan(self.previous)
            self.returning = False
            # (an expected onset starts the refractory and the way back as an accent does)
            accent = not self._on_schedule(sample, config.schedule)
        elif (unusual and self.unusual and self.away and direction == self.direction
              and (value - self.value) * direction > 0.0):
            # The accented excursion goes on, further out: one anomaly, heard as loudness;
            # its way back counts from here (a new one the same way, clearly larger than
            # its onset, still renews the accent).
            self.value = value
        self.previous, self.unusual = value, unusual
        return accent, back

    def _on_schedule(self, sample: int, schedule: int) -> bool:
        """Whether the onset at ``sample`` keeps the stream's schedule: its last
        ``schedule`` onsets and this one at intervals equal within SCHEDULE_SLACK samples
        (a cron job). Remembers it."""
        if schedule <= 0:
            return False
        onsets = self.onsets
        onsets.append(sample)
        del onsets[:-schedule - 1]  # (at most schedule + 1 kept)
        if len(onsets) <= schedule:
            return False
        gaps = [b - a for a, b in itertools.pairwise(onsets)]
        return min(gaps) > 1 and max(gaps) - min(gaps) <= SCHEDULE_SLACK

    def _comes_back(self, sample: int, value: float, unusual: bool) -> bool:
        """Whether ``value`` is part of the way back from the last accent (see
        RETURN_SAMPLES): the first value back over half the accent's move, or one after it
        that still scores ``unusual`` (at the accent threshold) on the way back."""
        if not (self.away or self.returning):
            return False
        if sample - self.at > RETURN_SAMPLES:
            self.away = self.returning = False
            return False
        move = self.value - self.before
        if (value - (self.before + 0.5 * move)) * self.direction > 0.0:
            if self.returning:  # away again: a new excursion
                self.returning = False
            return False
        if (value - (self.before - RETURN_OVERSHOOT * move)) * self.direction < 0.0:
            self.away = self.returning = False  # far past where it was: a new anomaly
            return False
        if self.away:
            self.away, self.returning = False, True
            return True
        if not unusual:
            self.returning = False  # ordinary again
        return self.returning
