"""The fast paths give the bits of the general ones.

One cue steps through ``Conductor._step_one`` (one note per sample) or, with phrases,
``Conductor._phrase_one`` (the CPU stepper's compiled phrase step, greedy choice) or
``Conductor._search_one`` (otherwise): a column rendered alone, a stream stepped alone. The
same notes, pitches, remembered inputs, model states and logits, to the bit, as the general
(batched) path stepping the same single cue. The stepper's few-row step gives each row the
bits of its stream stepped alone. Several cues with phrases (CPU, greedy) step through
``Conductor._step_phrases``: each stream the bits it gets stepped alone."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from streamsonic.conductor import Conductor, Cue, StepResult
from streamsonic.config import load_config
from streamsonic.events import Sample
from streamsonic.model.loader import load_pitch_model
from streamsonic.model.stepper import FEW_ROWS, NumpyPitchStepper

#: A walk with a flat stretch, spikes far out of range (headroom, accents) and a drop.
VALUES = [*np.cumsum(np.random.default_rng(7).standard_normal(120)).tolist(),
          *[3.0] * 6, 80.0, 2.0, -60.0, 1.0, *np.random.default_rng(8).normal(0, 5, 60).tolist()]


def _play(one_path: bool, overrides: dict[str, Any], given: bool,
          make: Callable[[], NumpyPitchStepper] | None = None,
          ) -> tuple[Conductor, list[StepResult], int]:
    """The conductor (its stepper the shipped model's, or ``make()``), each cue's result,
    and how many compiled phrase steps it took."""
    config = load_config(None, {"model.device": "cpu", "model.passing_notes": 0, **overrides})
    stepper, encoding, _ = load_pitch_model(config.model)
    if make is not None:
        stepper = make()
    assert isinstance(stepper, NumpyPitchStepper)
    compiled = 0
    phrase = stepper.phrase

    def counted(*args: Any) -> Any:
        nonlocal compiled
        compiled += 1
        return phrase(*args)

    stepper.phrase = counted  # type: ignore[method-assign,assignment]
    conductor = Conductor(config, stepper, encoding)
    conductor.one_path = one_path
    results = []
    for n, value in enumerate(VALUES):
        sample = Sample("s", float(n), value)
        reading = conductor.observe(sample)
        # given: render's whole-file place (here: the reading's, moved); else the reading's
        normalized = (n % 13) / 12.0 if given else None
        results.append(conductor.play([Cue(sample, 0.25 * n, normalized, reading=reading,
                                           span=0.25 if n % 2 else None)]))
    return conductor, results, compiled


@pytest.mark.parametrize(("overrides", "given"), [
    ({}, False),
    ({}, True),
    ({"model.temperature": 0.7}, False),
    ({"model.influence": 1.0, "model.passing_notes": 3}, False),
    ({"model.influence": 0.3, "accent.enabled": False}, False),
    ({"music.note_length": 0.5, "music.velocity_min": 30}, True),
    ({"model.passing_notes": 5}, False),
    ({"model.passing_notes": 5}, True),
    ({"model.passing_notes": 2, "model.influence": 0.5}, False),
    ({"model.passing_notes": 3, "model.temperature": 0.7}, False),
])
def test_one_cue_path_plays_what_the_general_path_plays(shipped: Any,
                                                         overrides: dict[str, Any],
                                                         given: bool) -> None:
    fast, fast_results, compiled = _play(True, overrides, given)
    slow, slow_results, none = _play(False, overrides, given)
    phrases = (overrides.get("model.passing_notes", 0) > 0
               and overrides.get("model.influence", 0.8) < 1.0)
    # every cue after the first through the compiled phrase step (greedy), none in general
    greedy = overrides.get("model.temperature", 0.0) == 0.0
    assert (compiled, none) == ((len(VALUES) - 1 if phrases and greedy else 0), 0)
    notes = [note for r in fast_results for note in r.notes]
    assert notes == [note for r in slow_results for note in r.notes]
    assert len([note for note in notes if note.source == "data"]) == len(VALUES)
    if phrases:
        assert sum(note.source == "model" for note in notes) > len(VALUES) // 4
    assert len({note.pitch for note in notes}) > 5
    for a, b in zip(fast_results, slow_results, strict=True):
        assert a.pitches.dtype == b.pitches.dtype
        assert a.pitches.tolist() == b.pitches.tolist()
        assert a.inputs.tolist() == b.inputs.tolist()
        assert [type(getattr(n, f)) for n in a.notes for f in ("normalized", "start")] == \
            [type(getattr(n, f)) for n in b.notes for f in ("normalized", "start")]
    for part_a, part_b in zip(fast.streams["s"].model_state, slow.streams["s"].model_state,
                              strict=True):
        assert part_a.dtype == part_b.dtype
        assert part_a.tobytes() == part_b.tobytes()
    logits = [c.streams["s"].next_logits for c in (fast, slow)]
    assert (logits[0] is None) == (logits[1] is None)
    if logits[0] is not None and logits[1] is not None:
        assert logits[0].tobytes() == logits[1].tobytes()


def test_a_muted_voice_steps_without_notes(shipped: Any) -> None:
    from streamsonic.config import VoiceRule

    results = {}
    for one_path in (True, False):
        config = load_config(None, {"model.device": "cpu", "model.passing_notes": 0})
        config = dataclasses.replace(config, voices=(VoiceRule(match="s", mute=True),))
        stepper, encoding, _ = load_pitch_model(config.model)
        conductor = Conductor(config, stepper, encoding)
        conductor.one_path = one_path
        played = [conductor.play([Cue(Sample("s", float(n), v), float(n))])
                  for n, v in enumerate(VALUES[:40])]
        assert all(not r.notes for r in played)
        results[one_path] = ([r.pitches.tolist() for r in played],
                             [p.tobytes() for p in conductor.streams["s"].model_state])
    assert results[True] == results[False]


def test_a_few_rows_step_as_streams_stepped_alone(shipped: Any) -> None:
    """Up to FEW_ROWS rows step through one compiled call (``_cells``): one row's
    propose/commit gives the bits of its step; a few streams stepped together, and the
    paths of a search grown from one state (``step_rows``), give each row the bits of that
    stream stepped alone with that input; and the compiled arithmetic is NumPy's (a large
    batch's ``_layers``, BLAS's products) to float32 rounding."""
    config = load_config(None, {"model.device": "cpu"})
    stepper: Any = load_pitch_model(config.model)[0]
    rng = np.random.default_rng(3)
    states = [stepper.initial_state(1) for _ in range(FEW_ROWS)]
    for _ in range(30):
        data, chosen = rng.random(FEW_ROWS), rng.random(FEW_ROWS)
        alone = [stepper.step(chosen[i:i + 1], st) for i, st in enumerate(states)]
        # one row: propose then commit is its step
        logits, pending = stepper.propose(data[:1], states[0])
        proposed, _ = stepper.step(data[:1], states[0])
        assert logits.tobytes() == proposed.tobytes()
        new = stepper.commit(pending, chosen[:1])
        assert [p.tobytes() for p in new] == [p.tobytes() for p in alone[0][1]]
        # a few streams together: each as alone
        together = stepper.stack(states)
        batch_logits, batch = stepper.step(chosen, together)
        for i, (want_logits, want) in enumerate(alone):
            assert batch_logits[i:i + 1].tobytes() == want_logits.tobytes()
            assert [p[i:i + 1].tobytes() for p in batch] == [p.tobytes() for p in want]
        # a search's paths: rows 0, 0, 2 of the batch, each with its own input
        rows = np.array([0, 0, 2])
        inputs = np.array([chosen[0], data[1], chosen[2]])
        logits, paths = stepper.step_rows(inputs, together, rows)
        for k, (r, x) in enumerate(zip(rows, inputs, strict=True)):
            want_logits, want = stepper.step(np.array([x]), states[r])
            assert logits[k:k + 1].tobytes() == want_logits.tobytes()
            assert [p[k:k + 1].tobytes() for p in paths] == [p.tobytes() for p in want]
        # NumPy's arithmetic for the same step, as a batch above FEW_ROWS takes it
        h1, c1, h2, c2 = together
        base = h1 @ stepper._w_hh1_t + stepper._b1
        shared = h2 @ stepper._w_hh2_t + stepper._b2
        want = stepper._layers(base, shared, stepper._x(chosen), c1, c2)
        np.testing.assert_allclose(batch_logits, want[2] @ stepper._head_t + stepper._head_b,
                                   rtol=0, atol=1e-4)
        for got, expected in zip(batch, want, strict=True):
            np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)
        states = [tuple(p[i:i + 1].copy() for p in batch) for i in range(FEW_ROWS)]


@pytest.mark.parametrize("rows", [1, 2, 3, 8, 9, 16])
def test_log_p_gives_each_row_the_bits_of_a_row_alone(shipped: Any, rows: int) -> None:
    """``Chooser.log_p`` of a batch is each row's log_p alone, to the bit (the search's
    paths, stepped as one array, are compared as single rows), and NumPy's log-softmax over
    the candidates to rounding."""
    config = load_config(None, {"model.device": "cpu"})
    conductor = Conductor(config, *load_pitch_model(config.model)[:2])
    chooser = conductor.chooser
    rng = np.random.default_rng(rows)
    for _ in range(300):
        logits = rng.normal(0, 4, (rows, chooser._cand_class.max() + 1)).astype(np.float32)
        got = chooser.log_p(logits)
        alone = np.concatenate([chooser.log_p(logits[i:i + 1]) for i in range(rows)])
        assert got.tobytes() == alone.tobytes()
        sub = np.asarray(logits, dtype=np.float64)[:, chooser._cand_class]
        sub = sub - sub.max(axis=1, keepdims=True)
        want = sub - np.log(np.array([row.sum() for row in np.exp(sub)])[:, None])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_nearest_of_one_pitch_is_the_choosers(shipped: Any) -> None:
    """``Conductor._nearest`` (bisection, one pitch) picks what ``Chooser.nearest`` picks:
    below, above and between the candidates, on them, and halfway (the lower one)."""
    config = load_config(None, {"model.device": "cpu"})
    stepper, encoding, _ = load_pitch_model(config.model)
    conductor = Conductor(config, stepper, encoding)
    cands = conductor.chooser.candidates.astype(float)
    pitches = [*np.random.default_rng(3).uniform(cands[0] - 5, cands[-1] + 5, 500),
               *cands, *((cands[:-1] + cands[1:]) / 2), cands[0] - 0.5, cands[-1] + 0.5]
    want = conductor.chooser.nearest(np.array(pitches)).tolist()
    assert [conductor._nearest(p) for p in pitches] == want


def test_a_float64_stepper_plays_phrases_alike_on_both_paths(shipped: Any) -> None:
    """The compiled phrase step in float64 (a stepper built with ``dtype=np.float64``, the
    NumPy type): the general path's notes and model states, to the bit."""
    from streamsonic.model.checkpoint import default_weights

    arrays = dict(np.load(default_weights("pitch").with_suffix(".npz")))

    def make() -> NumpyPitchStepper:
        return NumpyPitchStepper(arrays, dtype=np.float64)

    played = [_play(one_path, {"model.passing_notes": 5}, False, make)
              for one_path in (True, False)]
    (fast, fast_results, compiled), (slow, slow_results, _) = played
    assert compiled == len(VALUES) - 1
    assert [n for r in fast_results for n in r.notes] == [n for r in slow_results
                                                           for n in r.notes]
    states = [c.streams["s"].model_state for c in (fast, slow)]
    assert all(part.dtype == np.float64 for part in states[0])
    assert [p.tobytes() for p in states[0]] == [p.tobytes() for p in states[1]]


@pytest.mark.parametrize("streams", [2, 17, 40])
def test_several_streams_phrases_play_what_each_plays_alone(shipped: Any, streams: int,
                                                             ) -> None:
    """Several cues with phrases step through one compiled call (``Conductor.
    _step_phrases``): the notes, model states and logits of each stream played alone, to
    the bit, streams joining on different rows (a stream's first phrase goes alone)."""
    config = load_config(None, {"model.device": "cpu", "model.passing_notes": 3})
    walks = np.cumsum(np.random.default_rng(streams).standard_normal((40, streams)), axis=0)
    walks[17, ::3] += 40.0  # a spike on some streams: accents, headroom
    played = []
    for together in (True, False):
        stepper, encoding, _ = load_pitch_model(config.model)
        assert isinstance(stepper, NumpyPitchStepper)
        batches: list[int] = []
        phrases = stepper.phrases

        def counted(*args: Any, phrases: Any = phrases, batches: list[int] = batches,
                    ) -> Any:
            batches.append(args[3][0].shape[0])
            return phrases(*args)

        stepper.phrases = counted  # type: ignore[method-assign,assignment]
        conductor = Conductor(config, stepper, encoding)
        notes = []
        for n, row in enumerate(walks):
            cues = []
            for i, value in enumerate(row):
                if n < i % 5:  # stream i joins on row i % 5
                    continue
                sample = Sample(f"s{i}", float(n), float(value))
                cues.append(Cue(sample, 0.25 * n, None, reading=conductor.observe(sample),
                                span=0.25))
            if together:
                notes += conductor.play(cues).notes
            else:
                for cue in cues:
                    notes += conductor.play([cue]).notes
        states = [p.tobytes() for st in conductor.streams.values() for p in st.model_state]
        logits = [st.next_logits.tobytes() for st in conductor.streams.values()
                  if st.next_logits is not None]
        played.append((notes, states, logits, batches))
    (notes, states, logits, batches), (alone, *alone_rest, alone_batches) = played
    assert (notes, states, logits) == (alone, *alone_rest)
    assert not alone_batches  # one cue at a time: the one-stream step
    # a batch per row from the second, each of the streams that had played before
    assert batches[-1] == streams
    assert sum(batches) == sum(n > i % 5 for n in range(len(walks)) for i in range(streams))
    assert sum(n.source == "model" for n in notes) > len(walks) * streams // 4
    assert any(n.accent for n in notes)


def test_warm_up_loads_the_phrase_kernels_of_one_stream_and_of_several(shipped: Any) -> None:
    """The daemon's warm-up (before READY) plays one stream alone and two together, so
    both compiled phrase kernels are loaded (or compiled) before the first real sample, in
    a fresh process: not at the first batch of several streams."""
    import subprocess
    import sys

    code = """
from streamsonic.conductor import warm_up
from streamsonic.config import load_config
from streamsonic.model import phrase_kernel
from streamsonic.model.loader import load_pitch_model
config = load_config(None, {"model.device": "cpu"})
stepper, encoding, _ = load_pitch_model(config.model)
before = [bool(k.signatures) for k in (phrase_kernel.phrase, phrase_kernel.phrases)]
warm_up(config, stepper, encoding)
after = [bool(k.signatures) for k in (phrase_kernel.phrase, phrase_kernel.phrases)]
print(before, after)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=True)
    assert done.stdout.split("\n")[-2] == "[False, False] [True, True]", done.stdout


@pytest.mark.parametrize("seed", range(8))
def test_random_settings_play_alike_on_all_paths(shipped: Any, seed: int) -> None:
    """Random scales, keys, ranges, added-note limits, influences, rates and spans, on
    random walks, noise, flat and spiky data, one or three streams: the fast paths (one
    stream's and several streams' compiled phrases, one note per sample) play what the
    general path plays cue by cue, note for note."""
    import random

    from streamsonic.music import SCALES

    rnd = random.Random(seed)
    low = rnd.randint(30, 80)
    config = load_config(None, {
        "model.device": "cpu", "music.scale": rnd.choice(sorted(SCALES)),
        "music.key": rnd.choice(["C", "D", "F#", "Bb"]), "music.low": low,
        "music.high": min(low + rnd.choice([12, 24, 40]), 120),
        "model.passing_notes": 0 if seed == 7 else rnd.choice([1, 2, 5, 8]),
        "model.influence": rnd.choice([0.0, 0.3, 0.8, 0.95]),
        "clock.max_rate": rnd.choice([2.0, 16.0, 40.0])})
    streams = 3 if seed % 2 else 1
    rng = np.random.default_rng(seed)
    values = {
        "walk": np.cumsum(rng.standard_normal((60, streams)), axis=0),
        "noise": rng.standard_normal((60, streams)),
        "flat": np.round(rng.standard_normal((60, streams)) * 0.2),
        "spiky": rng.standard_normal((60, streams)) * np.where(
            rng.random((60, streams)) < 0.05, 50.0, 1.0),
    }[rnd.choice(["walk", "noise", "flat", "spiky"])]
    spans = [[rnd.choice([None, 0.05, 0.3]) for _ in range(streams)] for _ in values]
    played = []
    for fast in (True, False):
        stepper, encoding, _ = load_pitch_model(config.model)
        conductor = Conductor(config, stepper, encoding)
        conductor.one_path = fast
        notes = []
        for n, row in enumerate(values):
            cues = []
            for i, value in enumerate(row):
                sample = Sample(f"s{i}", float(n), float(value))
                cues.append(Cue(sample, 0.1 * n, None, reading=conductor.observe(sample),
                                span=spans[n][i]))
            if fast:
                notes += conductor.play(cues).notes
            else:
                for cue in cues:
                    notes += conductor.play([cue]).notes
        played.append(notes)
    assert played[0] == played[1]
    assert len([n for n in played[0] if n.source == "data"]) == len(values) * streams


@pytest.mark.parametrize(("overrides", "given", "run"), [
    ({"model.passing_notes": 5}, False, 512),
    ({"model.passing_notes": 5}, True, 7),
    ({"model.passing_notes": 2, "model.influence": 0.5}, False, 1),
    ({"model.passing_notes": 5, "accent.enabled": False}, True, 64),
    ({"model.passing_notes": 3, "model.temperature": 0.7}, False, 64),  # (not compiled)
    # one note per sample: compiled runs too (Conductor._start_plain)
    ({"model.passing_notes": 0}, True, 64),
    ({"model.passing_notes": 0}, False, 1000),
    ({"model.passing_notes": 0, "model.temperature": 0.7}, False, 7),  # the draws in order
    ({"model.passing_notes": 3, "model.influence": 1.0}, False, 64),  # no phrases at 1.0
    ({"model.passing_notes": 0, "model.influence": 0.3, "accent.enabled": False}, True, 1),
    ({"model.passing_notes": 5, "clock.max_rate": 80.0}, False, 64),  # some spans < MIN_NOTE
    ({"model.passing_notes": 5, "clock.max_rate": 80.0, "accent.enabled": False}, False,
     -64),  # every span < MIN_NOTE: no notes added
])
def test_a_run_of_cues_plays_what_they_play_one_by_one(shipped: Any, overrides: dict[str, Any],
                                                       given: bool, run: int) -> None:
    """``Conductor.play_run`` (``render``'s one column, ``run`` rows at a time) gives the
    notes, pitches, inputs, model state, logits and phrase marks that ``play`` of each cue
    alone gives, to the bit; the compiled run steps every phrase after the first, or
    (one note per sample) every cue. A negative ``run``: as long, every span shorter than
    MIN_NOTE."""
    short, run = run < 0, abs(run)
    played = {}
    for together in (True, False):
        config = load_config(None, {"model.device": "cpu", **overrides})
        stepper, encoding, _ = load_pitch_model(config.model)
        assert isinstance(stepper, NumpyPitchStepper)
        runs = plain_runs = 0
        compiled_run, plain_run = stepper.run, stepper.plain_run

        def counted(*args: Any, compiled_run: Callable[..., Any] = compiled_run) -> Any:
            nonlocal runs
            runs += 1
            return compiled_run(*args)

        def counted_plain(*args: Any, plain_run: Callable[..., Any] = plain_run) -> Any:
            nonlocal plain_runs
            plain_runs += 1
            return plain_run(*args)

        stepper.run = counted  # type: ignore[method-assign,assignment]
        stepper.plain_run = counted_plain  # type: ignore[method-assign,assignment]
        conductor = Conductor(config, stepper, encoding)
        cues = []
        for n, value in enumerate(VALUES):
            sample = Sample("s", float(n), value)
            cues.append(Cue(sample, 0.25 * n, (n % 13) / 12.0 if given else None,
                            reading=conductor.observe(sample),
                            span=0.25 if n % 2 and not short else None))
        if together:
            results = [r for at in range(0, len(cues), run)
                       for r in conductor.play_run(cues[at:at + run])]
        else:
            results = [conductor.play([cue]) for cue in cues]
        st = conductor.streams["s"]
        played[together] = (
            [r.notes for r in results], [r.pitches.tolist() for r in results],
            [r.inputs.tolist() for r in results], [p.tobytes() for p in st.model_state],
            None if st.next_logits is None else st.next_logits.tobytes(),
            (st.held, st.anchor, st.last, st.notes))
        phrasing = (overrides["model.passing_notes"] > 0
                    and overrides.get("model.influence", 0.8) < 1.0)
        compiled = phrasing and overrides.get("model.temperature", 0.0) == 0.0
        # (the first phrase takes the general path: a run of it alone compiles nothing)
        expected = -(-len(cues) // run) - (run == 1) if together and compiled else 0
        assert runs == expected
        assert plain_runs == (-(-len(cues) // run) if together and not phrasing else 0)
    assert played[True] == played[False]
    notes = [n for r in played[True][0] for n in r]
    assert len({n.pitch for n in notes}) > 5
    if phrasing and not short:
        assert sum(n.source == "model" for n in notes) > len(VALUES) // 4
    if overrides.get("accent.enabled", True):
        assert any(n.accent for n in notes)


@pytest.mark.parametrize("passing", [5, 0])
def test_a_reading_placed_by_observe_plays_what_the_cues_place_plays(shipped: Any,
                                                                     passing: int) -> None:
    """``Conductor.observe(sample, place)`` (``render``'s whole-file place, read once) gives
    the reading, and the notes, that a cue with ``normalized=place`` beside the window's
    reading gives; places beyond 0..1 (the headroom) and NaN included."""
    played = []
    for placed in (True, False):
        config = load_config(None, {"model.device": "cpu", "model.passing_notes": passing})
        stepper, encoding, _ = load_pitch_model(config.model)
        conductor = Conductor(config, stepper, encoding)
        cues, readings = [], []
        for n, value in enumerate(VALUES):
            sample = Sample("s", float(n), value)
            place = math.nan if n == 40 else (n % 17) / 12.0 - 0.2
            if placed:
                cue = Cue(sample, 0.25 * n, reading=conductor.observe(sample, place),
                          span=0.25)
            else:
                cue = Cue(sample, 0.25 * n, place, reading=conductor.observe(sample),
                          span=0.25)
            cues.append(cue)
            readings.append(conductor._readings([cue])[0])
        played.append((readings, [r.notes for r in conductor.play_run(cues)]))
    assert played[0] == played[1]
    assert any(r.beyond is not None for r in played[0][0])


@pytest.mark.parametrize(("run", "passing"), [(1, 5), (7, 5), (400, 5), (7, 0), (400, 0)])
def test_a_column_rendered_alone_plays_what_it_plays_beside_another(
        shipped: Any, monkeypatch: pytest.MonkeyPatch, run: int, passing: int) -> None:
    """``render`` steps one column in runs of ``render.RUN`` rows (``Conductor.start_run``,
    each run's step in a second thread, starting where the run before it ended), several
    columns row by row as one batch: a column's notes are the same either way (it is the
    first stream, so its voice is too), across runs' ends in flat stretches too; with
    phrases and at one note per sample (``passing``: ``model.passing_notes``)."""
    from streamsonic import render

    monkeypatch.setattr(render, "RUN", run)
    config = load_config(None, {"model.device": "cpu", "model.passing_notes": passing})
    rng = np.random.default_rng(3)
    size = 1300
    walk = np.cumsum(rng.standard_normal(size)) + np.where(rng.random(size) < 0.01, 30.0, 0.0)
    walk[::5] = walk[1::5]  # the data held for a row now and then (the same note)
    walk[395:410] = walk[395]
    a = render.Series("a", walk, list(range(size)), {})
    b = render.Series("b", rng.standard_normal(size), list(range(size)), {})
    alone = render.render_notes(config, a, [])
    beside = [n for n in render.render_notes(config, [a, b], []) if n.stream == "a"]
    assert alone == beside
    added = sum(n.source == "model" for n in alone)
    assert added > size // 4 if passing else added == 0
    assert any(n.accent for n in alone)


def test_the_compiled_lead_in_plans_what_lead_in_plans() -> None:
    """``phrase_kernel._lead_in`` (a compiled run's plan) against ``music.lead_in`` (the
    conductor's), on every pair of candidates up to 40 apart and limits -1 .. 9: the same
    waypoints (Python's rounding, half to even)."""
    from streamsonic.model import phrase_kernel
    from streamsonic.music import lead_in

    out = np.empty(16, np.int64)
    for prev in range(41):
        for target in range(41):
            for limit in range(-1, 10):
                count = phrase_kernel._lead_in(prev, target, limit, out)
                assert out[:count].tolist() == [w.index for w in lead_in(prev, target, limit)]
