"""Which surprising samples are accented (streamsonic.accent), on scores given by hand.

The conductor-level tests in tests/test_anomaly.py drive the same rules through real
series and the real scorer; these pin each rule alone, on the scores it sees."""

from __future__ import annotations

import pytest

from streamsonic.accent import ACCENT_RENEW, RETURN_SAMPLES, Accents, renews
from streamsonic.anomaly import score_of, strength
from streamsonic.config import AccentConfig

CONFIG = AccentConfig()  # threshold 0.5, refractory 4, schedule 0


def _run(accents: Accents, steps: list[tuple[float, float, int]],
         config: AccentConfig = CONFIG, start: int = 1) -> list[tuple[bool, bool]]:
    """(accented, back) for each (value, score, direction), samples counted from start."""
    return [accents.judge(start + i, value, score, direction, config)
            for i, (value, score, direction) in enumerate(steps)]


def _quiet(n: int, value: float = 0.0) -> list[tuple[float, float, int]]:
    return [(value, 0.1, 0)] * n


def test_an_isolated_anomaly_is_accented_once_and_its_way_back_is_not() -> None:
    """A spike: its sample is accented; the value back at the level it left (over half
    the move back) is the way back: not accented, marked back, though it scores high."""
    out = _run(Accents(), [*_quiet(10), (10.0, 0.9, 1), (0.0, 0.8, -1), *_quiet(3)])
    assert out[10] == (True, False)
    assert out[11] == (False, True)
    assert [a for a, _ in out[12:]] == [False] * 3


def test_an_anomaly_that_goes_on_is_one_accent() -> None:
    """Every sample of a long excursion scores at the threshold: one accent, at its
    onset, however long it lasts (past the refractory too)."""
    steps = [*_quiet(10), *[(10.0 + i, 0.8, 1) for i in range(20)]]
    out = _run(Accents(), steps)
    assert [i for i, (a, _) in enumerate(out) if a] == [10]


def test_within_the_refractory_only_a_clearly_larger_anomaly_accents_again() -> None:
    """Two samples after an accent, after an ordinary sample between them: a score of
    about the same z is not accented, one of ACCENT_RENEW times its z is."""
    first = 0.6
    same = score_of(strength(first) * 1.2, 1.0)
    larger = score_of(strength(first) * ACCENT_RENEW * 1.05, 1.0)
    for score, expected in ((same, False), (larger, True)):
        accents = Accents()
        out = _run(accents, [*_quiet(10), (5.0, first, 1), (5.0, 0.1, 0), (9.0, score, 1)])
        assert out[10][0] is True
        assert out[12][0] is expected, score
    assert renews(larger, first) and not renews(same, first)


def test_after_the_refractory_a_new_onset_is_accented() -> None:
    steps = [*_quiet(10), (5.0, 0.7, 1), *_quiet(CONFIG.refractory, 0.0), (5.0, 0.7, 1)]
    out = _run(Accents(), steps)
    assert out[10][0] and out[-1][0]


def test_the_way_back_is_only_followed_for_return_samples() -> None:
    """A value back at the old level long after the accent is judged as any other: a
    high score there is a new onset."""
    accents = Accents()
    out = _run(accents, [*_quiet(10), (10.0, 0.9, 1), *_quiet(RETURN_SAMPLES, 10.0),
                         (0.0, 0.9, -1)])
    assert out[10] == (True, False)
    assert out[-1] == (True, False)
    early = Accents()  # the same return within RETURN_SAMPLES: the way back
    out = _run(early, [*_quiet(10), (10.0, 0.9, 1), *_quiet(RETURN_SAMPLES - 2, 10.0),
                       (0.0, 0.9, -1)])
    assert out[-1] == (False, True)


def test_an_excursion_that_grows_counts_its_way_back_from_its_peak() -> None:
    """A rise accented at 10 that goes on to 30: a value at 12 (past half of the first
    move, not of the whole) is not yet the way back; one at 14 is."""
    accents = Accents()
    _run(accents, [*_quiet(10), (10.0, 0.9, 1), (30.0, 0.9, 1)])
    assert accents.value == 30.0
    assert accents.judge(13, 16.0, 0.9, -1, CONFIG)[1] is False
    assert accents.judge(14, 14.0, 0.9, -1, CONFIG)[1] is True


def test_an_onset_that_keeps_a_schedule_is_expected() -> None:
    """accent.schedule = 3: after 3 onsets 10 samples apart, the 4th on time plays
    without the accent; one off the schedule is accented (and starts it over)."""
    config = AccentConfig(schedule=3)
    accents = Accents()
    onsets = []
    for n in range(1, 80):
        on_time = n % 10 == 0 and n < 60
        off = n == 65
        score = 0.9 if on_time or off else 0.1
        accented, _ = accents.judge(n, 10.0 if score > 0.5 else 0.0, score, 1, config)
        if score > 0.5:
            onsets.append((n, accented))
    assert onsets[:3] == [(10, True), (20, True), (30, True)]
    assert onsets[3:5] == [(40, False), (50, False)]
    assert (65, True) in onsets


@pytest.mark.parametrize("enabled,refractory", [(False, 4), (True, 0)])
def test_off_and_without_refractory(enabled: bool, refractory: int) -> None:
    """accent.enabled = false: nothing is accented. accent.refractory = 0: every sample
    at the threshold is, and nothing is taken for the way back."""
    config = AccentConfig(enabled=enabled, refractory=refractory)
    out = _run(Accents(), [*_quiet(5), (10.0, 0.9, 1), (10.0, 0.9, 1), (0.0, 0.9, -1)],
               config)
    if not enabled:
        assert not any(a for a, _ in out)
    else:
        assert [a for a, _ in out[5:]] == [True, True, True]
        assert not any(b for _, b in out)
