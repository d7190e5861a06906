"""One note per sample on the CPU in one compiled call: a run of one stream's samples, each
stepped as :meth:`streamsonic.conductor.Conductor._step_one` steps it alone without phrases
(``model.passing_notes = 0``): :meth:`~streamsonic.model.stepper.NumpyPitchStepper.propose`
with the data's input, :meth:`~streamsonic.model.choice.Chooser.choose_one` of the logits,
:meth:`~streamsonic.model.stepper.NumpyPitchStepper.commit` with the chosen note's input.

The same compiled pieces in the same order on the same numbers (:mod:`streamsonic.model.
kernels`: ``rows_product``, ``cells``, ``choose``), without the Python between them (about
as much time again as their arithmetic). tests/test_fast_paths.py holds a run to the notes,
inputs and state of its samples played one by one, bit for bit.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from streamsonic.model import kernels


def _run_py(
    x: np.ndarray, data_pitch: np.ndarray, uniform: np.ndarray, influence: float,
    kernel_scale: float, temperature: float, cand_class: np.ndarray, cand_pitch: np.ndarray,
    cand_x: np.ndarray, w_hh1: np.ndarray, v1: np.ndarray, w2: np.ndarray, v2: np.ndarray,
    head: np.ndarray, h1: np.ndarray, c1: np.ndarray, h2: np.ndarray, c2: np.ndarray,
    chosen_out: np.ndarray,
) -> None:
    """Sample ``i`` (network input ``x[i]`` in the stepper's precision, data pitch
    ``data_pitch[i]``, ``uniform[i]`` its draw where ``temperature`` > 0) steps from the
    state before it: its note, a candidate index, into ``chosen_out[i]``. The stream's
    state ``h1 .. c2`` (1, H) is read at the start and holds the stream's after the last
    sample when it returns."""
    n = x.shape[0]
    index = np.zeros(1, np.intp)
    base = np.empty((1, w_hh1.shape[1]), w_hh1.dtype)
    xs = np.empty(1, x.dtype)
    raw = np.empty((1, head.shape[1]), h1.dtype)
    logits = np.empty((1, head.shape[1]), np.float64)
    one = np.empty(1, np.int64)
    # two sets of the state: each sample steps from one into the other (the proposal's
    # state, which the commit replaces, lands there first)
    a_h1, a_c1, a_h2, a_c2 = h1, c1, h2, c2
    b_h1, b_c1, b_h2, b_c2 = (np.empty_like(h1), np.empty_like(c1), np.empty_like(h2),
                              np.empty_like(c2))
    for i in range(n):
        kernels.rows_product(a_h1, index, w_hh1, base)
        xs[0] = x[i]
        kernels.cells(base, index, xs, a_c1, index, a_h2, a_c2, v1, w2, v2, head, b_h1, b_c1,
                      b_h2, b_c2, raw)
        for c in range(raw.shape[1]):
            logits[0, c] = raw[0, c]
        kernels.choose(logits, cand_class, cand_pitch, data_pitch[i:i + 1], influence,
                       kernel_scale, temperature, uniform[i:i + 1], one)
        chosen_out[i] = one[0]
        xs[0] = cand_x[one[0]]
        kernels.cells(base, index, xs, a_c1, index, a_h2, a_c2, v1, w2, v2, head, b_h1, b_c1,
                      b_h2, b_c2, raw)
        a_h1, a_c1, a_h2, a_c2, b_h1, b_c1, b_h2, b_c2 = (
            b_h1, b_c1, b_h2, b_c2, a_h1, a_c1, a_h2, a_c2)
    if n % 2:  # the last sample's state is in the second set: back into the stream's
        h1[:, :] = a_h1
        c1[:, :] = a_c1
        h2[:, :] = a_h2
        c2[:, :] = a_c2


if os.environ.get("STREAMSONIC_NO_JIT"):  # for debugging: the plain Python
    run: Any = _run_py
else:
    run = kernels.jit(_run_py, fastmath=False)
