"""The fast paths give the bits of the general ones.

One cue with one note per sample steps through ``Conductor._step_one`` (a column rendered
alone, a stream stepped alone): the same notes, pitches, remembered inputs and model states,
to the bit, as the general (batched) path stepping the same single cue. The stepper's
one-row propose/commit is NumPy's arithmetic."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from streamsonic.conductor import Conductor, Cue, StepResult
from streamsonic.config import load_config
from streamsonic.events import Sample
from streamsonic.model.loader import load_pitch_model

#: A walk with a flat stretch, spikes far out of range (headroom, accents) and a drop.
VALUES = [*np.cumsum(np.random.default_rng(7).standard_normal(120)).tolist(),
          *[3.0] * 6, 80.0, 2.0, -60.0, 1.0, *np.random.default_rng(8).normal(0, 5, 60).tolist()]


def _play(one_path: bool, overrides: dict[str, Any], given: bool,
          ) -> tuple[Conductor, list[StepResult]]:
    config = load_config(None, {"model.device": "cpu", "model.passing_notes": 0, **overrides})
    stepper, encoding, _ = load_pitch_model(config.model)
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
    return conductor, results


@pytest.mark.parametrize(("overrides", "given"), [
    ({}, False),
    ({}, True),
    ({"model.temperature": 0.7}, False),
    ({"model.influence": 1.0, "model.passing_notes": 3}, False),
    ({"model.influence": 0.3, "accent.enabled": False}, False),
    ({"music.note_length": 0.5, "music.velocity_min": 30}, True),
])
def test_one_cue_path_plays_what_the_general_path_plays(shipped: Any,
                                                         overrides: dict[str, Any],
                                                         given: bool) -> None:
    fast, fast_results = _play(True, overrides, given)
    slow, slow_results = _play(False, overrides, given)
    notes = [note for r in fast_results for note in r.notes]
    assert notes == [note for r in slow_results for note in r.notes]
    assert len(notes) == len(VALUES)
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


def test_one_rows_step_is_the_batched_arithmetic(shipped: Any) -> None:
    """The stepper's one-row propose/commit (biases added inside the compiled cell calls,
    buffers reused) gives the bits of NumPy's adds and ``_layers``, as a batch takes it."""
    config = load_config(None, {"model.device": "cpu"})
    stepper: Any = load_pitch_model(config.model)[0]
    rng = np.random.default_rng(3)
    state = stepper.initial_state(1)
    for _ in range(50):
        data, chosen = rng.random(1), rng.random(1)
        logits, pending = stepper.propose(data, state)
        new = stepper.commit(pending, chosen)
        h1, c1, h2, c2 = state
        base = h1 @ stepper._w_hh1_t
        base += stepper._b1
        shared = h2 @ stepper._w_hh2_t
        shared += stepper._b2
        proposed = stepper._layers(base, shared, stepper._x(data), c1, c2)
        want_logits = proposed[2] @ stepper._head_t
        want_logits += stepper._head_b
        want = stepper._layers(base, shared, stepper._x(chosen), c1, c2)
        assert logits.tobytes() == want_logits.tobytes()
        assert pending.base.tobytes() == base.tobytes()
        assert pending.shared.tobytes() == shared.tobytes()
        for got, expected in zip(new, want, strict=True):
            assert got.tobytes() == expected.tobytes()
        state = new


@pytest.mark.parametrize("rows", [1, 2, 3, 8, 9, 16])
def test_log_p_rows_sums_each_row_as_a_row_alone(shipped: Any, rows: int) -> None:
    """``Chooser.log_p_rows`` (one reduction over C-ordered rows) is the per-row
    ``row.sum()`` reference to the bit, while ``log_p`` (a batch's reduction) is not."""
    config = load_config(None, {"model.device": "cpu"})
    conductor = Conductor(config, *load_pitch_model(config.model)[:2])
    chooser = conductor.chooser
    rng = np.random.default_rng(rows)
    differ = 0
    for _ in range(300):
        logits = rng.normal(0, 4, (rows, chooser._cand_class.max() + 1)).astype(np.float32)
        sub = np.asarray(logits, dtype=np.float64)[:, chooser._cand_class]
        sub = sub - sub.max(axis=1, keepdims=True)
        want = sub - np.log(np.array([row.sum() for row in np.exp(sub)])[:, None])
        assert chooser.log_p_rows(logits).tobytes() == want.tobytes()
        differ += chooser.log_p(logits).tobytes() != want.tobytes()
    assert rows == 1 or differ > 0  # (else the test could not tell the two apart)
