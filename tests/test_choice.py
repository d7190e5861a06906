"""The influence kernel: 1 follows the data, 0 follows the model, between trades off."""

from __future__ import annotations

import numpy as np
import pytest

from streamsonic.encoding import PitchEncoding
from streamsonic.model.choice import Chooser
from streamsonic.music import scale_pitches
from tests.conftest import CLASSES


def make(influence: float, temperature: float = 0.0, scale: str = "major") -> Chooser:
    return Chooser(PitchEncoding(CLASSES), scale_pitches(scale, "C", 50, 89), influence,
                   temperature=temperature)


def peaked_logits(pitch: int, strength: float = 6.0) -> np.ndarray:
    logits = np.zeros((1, len(CLASSES)))
    logits[0, CLASSES.index(pitch)] = strength
    return logits


def test_influence_one_plays_nearest_scale_pitch() -> None:
    c = make(1.0)
    for d in np.linspace(50, 89, 57):
        idx = c.choose(peaked_logits(60, 50.0), np.array([d]), [np.random.default_rng()])[0]
        assert c.candidates[idx] == c.candidates[np.argmin(np.abs(c.candidates - d))]


def test_influence_zero_plays_the_model() -> None:
    c = make(0.0)
    idx = c.choose(peaked_logits(76), np.array([52.0]), [np.random.default_rng()])[0]
    assert c.candidates[idx] == 76


def test_half_influence_moves_only_when_the_model_is_confident() -> None:
    c = make(0.5)
    near = c.choose(peaked_logits(64, 2.0), np.array([62.0]), [np.random.default_rng()])[0]
    far = c.choose(peaked_logits(84, 2.0), np.array([62.0]), [np.random.default_rng()])[0]
    assert c.candidates[near] == 64  # one scale step away, modest confidence: moves
    assert c.candidates[far] == 62  # 22 semitones away: the data wins


def test_out_of_scale_classes_are_never_chosen() -> None:
    c = make(0.0, scale="pentatonic")
    idx = c.choose(peaked_logits(61, 30.0), np.array([61.0]), [np.random.default_rng()])[0]
    assert c.candidates[idx] % 12 in (0, 2, 4, 7, 9)


def test_temperature_sampling_is_seeded() -> None:
    c = make(0.3, temperature=1.0)
    logits = np.random.default_rng(0).normal(size=(1, len(CLASSES)))
    draws_a = [c.choose(logits, np.array([70.0]), [g])[0]
               for g in [np.random.default_rng(5)] for _ in range(50)]
    draws_b = [c.choose(logits, np.array([70.0]), [g])[0]
               for g in [np.random.default_rng(5)] for _ in range(50)]
    assert draws_a == draws_b
    assert len(set(draws_a)) > 3


def test_range_wider_than_the_model_uses_octave_equivalent_logits() -> None:
    enc = PitchEncoding(CLASSES)
    c = Chooser(enc, scale_pitches("major", "C", 36, 100), 0.0)
    # C7 (96) is outside the model's range: it borrows the logit of the nearest C (84).
    mapped = dict(zip(c.candidates.tolist(), c._cand_class.tolist(), strict=True))
    assert CLASSES[mapped[96]] == 84
    assert CLASSES[mapped[36]] == 60 or CLASSES[mapped[36]] % 12 == 0


@pytest.mark.parametrize("value", [0.0, 0.25, 1.0])
def test_data_input_matches_encoding(value: float) -> None:
    c = make(1.0)
    d = c.data_pitch(np.array([value]))
    assert 0.0 <= c.data_input(d)[0] <= 1.0


def test_compiled_encode_matches_numpy() -> None:
    c = make(1.0)
    values = np.concatenate([np.linspace(-0.1, 1.1, 301), [0.0, 1.0, 0.5]])
    pitch, inputs = c.encode(values)
    np.testing.assert_allclose(pitch, c.data_pitch(values))
    np.testing.assert_allclose(inputs, c.data_input(c.data_pitch(values)), atol=1e-12)


@pytest.mark.parametrize("influence", [0.0, 0.3, 0.8, 1.0])
def test_compiled_choice_is_the_argmax_of_the_reference_scores(influence: float) -> None:
    c = make(influence)
    rng = np.random.default_rng(11)
    logits = rng.normal(scale=3.0, size=(64, len(CLASSES)))
    data = rng.uniform(48, 92, size=64)
    expected = c.scores(logits, data).argmax(axis=1)
    got = c.choose(logits, data, [np.random.default_rng(0)] * 64)
    assert list(got) == list(expected)


def _beam_level_reference(scores: np.ndarray, prev: np.ndarray, target: int, left: int,
                          octave: int, fallback: int, beam: int,
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The phrases' search level in NumPy, as the conductor wrote it before the kernel."""
    cand = np.arange(scores.shape[1])[None, :]
    p = prev[:, None]
    reach = 1 + (left - 1) * octave
    allowed = ((cand != p) & (np.abs(cand - p) <= octave)
               & (np.abs(target - cand) <= reach) & ((left > 1) | (cand != target)))
    allowed[~allowed.any(axis=1), fallback] = True
    flat = np.where(allowed, scores, -np.inf).ravel()
    best = np.argsort(-flat, kind="stable")[:min(beam, int(allowed.sum()))]
    entry, note = np.divmod(best, scores.shape[1])
    return entry, note, flat[best]


@pytest.mark.parametrize("seed", range(40))
def test_compiled_beam_level_picks_what_the_reference_picks(seed: int) -> None:
    """The search's level kernel: the same paths, notes and scores, in the same order, as a
    stable sort of the allowed scores; ties (rounded scores) and -inf scores included, and
    paths with no allowed note (a target out of reach) taking the plan's note."""
    from streamsonic.model import kernels

    rng = np.random.default_rng(seed)
    k, n = int(rng.integers(1, 9)), int(rng.integers(3, 40))
    scores = rng.standard_normal((k, n)) * 3
    if seed % 3 == 0:
        scores = np.round(scores)  # many ties
    if seed % 5 == 0:
        scores[rng.random((k, n)) < 0.2] = -np.inf
    prev = rng.integers(0, n, k)
    target, left = int(rng.integers(0, n)), int(rng.integers(1, 5))
    octave = int(rng.choice([5, 7, 12]))
    if seed % 7 == 0:  # out of reach: no note allowed
        left, target, prev = 1, n - 1, np.zeros(k, np.int64)
        octave = 1
    fallback = int(rng.integers(0, n))
    beam = 8
    entry, note, score = (np.empty(beam, np.int64), np.empty(beam, np.int64),
                          np.empty(beam, np.float64))
    picks = kernels.beam_level(scores, prev.astype(np.int64), target, left, octave, fallback,
                               entry, note, score)
    want = _beam_level_reference(scores, prev, target, left, octave, fallback, beam)
    assert picks == len(want[0])
    np.testing.assert_array_equal(entry[:picks], want[0])
    np.testing.assert_array_equal(note[:picks], want[1])
    np.testing.assert_array_equal(score[:picks], want[2])


@pytest.mark.parametrize("seed", range(20))
def test_compiled_beam_best_is_the_reference_path(seed: int) -> None:
    """The search's end: the path whose score plus its best log-probability near the data
    is highest, the first on ties (rounded scores make many)."""
    from streamsonic.model import kernels

    rng = np.random.default_rng(seed)
    k, n = int(rng.integers(1, 9)), int(rng.integers(3, 40))
    scores, log_p = rng.standard_normal(k) * 2, rng.standard_normal((k, n)) * 2
    if seed % 2:
        scores, log_p = np.round(scores), np.round(log_p)
    if seed % 4 == 1:  # every path as good: the first
        scores, log_p = np.zeros(k), np.tile(log_p[:1], (k, 1))
    candidates = np.sort(rng.choice(np.arange(40, 90), n, replace=False)).astype(np.int64)
    data, reach, target = float(rng.uniform(35, 95)), float(rng.choice([1.0, 2.0, 5.0])), \
        int(rng.integers(0, n))
    near = np.abs(candidates - data) <= reach
    near[target] = True
    totals = scores + log_p[:, near].max(axis=1)
    want = int(np.argmax(totals))  # the first of the best
    assert kernels.beam_best(scores, log_p, candidates, data, reach, target) == want


def _choose_near_reference(c: Chooser, logits: np.ndarray, data: np.ndarray,
                           avoid: np.ndarray) -> np.ndarray:
    """Chooser.choose_near at temperature 0 in NumPy, as it was before the kernel."""
    nearest = c.nearest(data)
    dist = c._cand_f[None, :] - data[:, None]
    kernel = -(dist * dist) * c._kernel_scale
    scores = (1.0 - c.influence) * c.log_p(logits) + c.influence * kernel
    out = np.empty(len(data), dtype=np.int64)
    for i in range(len(data)):
        reach = np.abs(dist[i]) <= c.window
        reach[nearest[i]] = True
        if avoid[i] >= 0 and reach.sum() > 1:
            reach[avoid[i]] = False
        out[i] = int(np.argmax(np.where(reach, scores[i], -np.inf)))
    return out


@pytest.mark.parametrize("influence", [0.0, 0.3, 0.8, 0.95])
def test_compiled_choose_near_is_the_reference(influence: float) -> None:
    """The data note of a phrase, greedy: the compiled choice is the NumPy one, to the
    index, for data between and on the candidates (ties), with and without a note to avoid
    (in reach, out of it, the only one in reach)."""
    rng = np.random.default_rng(int(influence * 100))
    for scale in ("major", "chromatic"):
        c = make(influence, scale=scale)
        n = len(CLASSES)
        data = np.concatenate([rng.uniform(45, 95, 300), c.candidates[::3].astype(float),
                               c.candidates[:-1] + 0.5 * np.diff(c.candidates)])
        logits = rng.standard_normal((len(data), n)) * rng.choice([0.1, 3.0], (len(data), 1))
        logits[::7] = np.round(logits[::7])  # ties
        avoid = np.where(rng.random(len(data)) < 0.5,
                         rng.integers(0, len(c.candidates), len(data)), -1)
        avoid[::5] = c.nearest(data[::5])  # the nearest (alone in reach at high influence)
        got = c.choose_near(logits, data, avoid, [np.random.default_rng()] * len(data))
        np.testing.assert_array_equal(got, _choose_near_reference(c, logits, data, avoid))


def test_log_p_is_each_row_alone() -> None:
    """The search compares paths by their log-probabilities as single rows, whatever the
    batch they were computed in: to the bit; and they are NumPy's log-softmax over the
    candidates' classes, to rounding."""
    c = make(0.5, scale="chromatic")
    logits = np.random.default_rng(5).standard_normal((8, len(CLASSES))) * 4
    alone = np.concatenate([c.log_p(logits[i : i + 1]) for i in range(8)])
    np.testing.assert_array_equal(c.log_p(logits), alone)
    sub = logits[:, c._cand_class] - logits[:, c._cand_class].max(axis=1, keepdims=True)
    want = sub - np.log(np.exp(sub).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(c.log_p(logits), want, rtol=0, atol=1e-12)
    assert np.isnan(c.log_p(np.full((1, len(CLASSES)), np.nan))).all()
