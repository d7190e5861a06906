"""One stream's phrase step on the CPU in one compiled call: the beam search for the notes
that lead to the data's next note, the data's note near the data, and the LSTM step
through it (what :meth:`streamsonic.conductor.Conductor._phrase` does for one stream with
:meth:`~streamsonic.conductor.Conductor._search_one`, :meth:`~streamsonic.conductor.
Conductor._end`, :meth:`~streamsonic.model.choice.Chooser.choose_near` and
:meth:`~streamsonic.conductor.Conductor._advance`).

The same compiled pieces in the same order on the same numbers
(:mod:`streamsonic.model.kernels`: ``rows_product``, ``cells``, ``log_p``, ``beam_level``,
``beam_best``, ``choose_near``), without the Python between them: a random walk's phrase
costs a few dozen NumPy calls and allocations in Python, about as much as its arithmetic.
tests/test_fast_paths.py holds it to the general path, bit for bit.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from streamsonic.model import kernels


def _phrase_py(
    plan: np.ndarray, target: int, octave: int, data_pitch: float, reach: float,
    window: float, influence: float, kernel_scale: float, held: float, anchor: int,
    beyond: bool, last: int,
    w_hh1: np.ndarray, v1: np.ndarray, w2: np.ndarray, v2: np.ndarray, head: np.ndarray,
    cand_class: np.ndarray, cand_pitch: np.ndarray, cand_x: np.ndarray,
    h1: np.ndarray, c1: np.ndarray, h2: np.ndarray, c2: np.ndarray, logits: np.ndarray,
    beam: int, leads_out: np.ndarray, h1_out: np.ndarray, c1_out: np.ndarray,
    h2_out: np.ndarray, c2_out: np.ndarray, logits_out: np.ndarray,
) -> int:
    """One stream's phrase (see the module): ``plan`` the fallback candidate of each note to
    add (empty: none), the stream's state ``h1 .. c2`` (1, H) and next logits (1, classes;
    float64). Writes the added notes into ``leads_out[:len(plan)]``, the new state and
    logits into the outputs; returns the data's note (a candidate index). ``held`` and
    ``anchor``: the data pitch and note of the stream's last data note (flat data stays on
    the same note); ``beyond``: the data alone decides (the target)."""
    n_cand = cand_class.shape[0]
    classes = logits.shape[1]
    levels = plan.shape[0]
    dtype = h1.dtype
    # the stream's state and logits after its search (its own, without one)
    sh1, sc1, sh2, sc2 = h1, c1, h2, c2
    s_logits = logits
    s_row = 0
    avoid = -1
    if levels > 0:
        # two sets of beam buffers: the paths' states, logits (float64), paths and scores
        bh1 = np.empty((2, beam, h1.shape[1]), dtype)
        bc1 = np.empty((2, beam, c1.shape[1]), dtype)
        bh2 = np.empty((2, beam, h2.shape[1]), dtype)
        bc2 = np.empty((2, beam, c2.shape[1]), dtype)
        blog = np.empty((2, beam, classes), np.float64)
        paths = np.empty((2, beam, levels + 1), np.int64)
        scores = np.zeros((2, beam), np.float64)
        raw = np.empty((beam, classes), dtype)
        lp = np.empty((beam, n_cand), np.float64)
        grown = np.empty((beam, n_cand), np.float64)
        entry = np.empty(beam, np.int64)
        note = np.empty(beam, np.int64)
        best = np.empty(beam, np.float64)
        where = np.empty(beam, np.int64)
        parents = np.empty(beam, np.int64)
        base = np.empty((beam, w_hh1.shape[1]), dtype)
        x = np.empty(beam, dtype)
        paths[0, 0, 0] = last
        k = 1
        cur = 0
        for j in range(levels):
            # the paths' states: the stream's own at the first level, then the last level's
            if j == 0:
                ph1, pc1, ph2, pc2, plog = h1, c1, h2, c2, logits
            else:
                ph1, pc1, ph2, pc2, plog = bh1[cur], bc1[cur], bh2[cur], bc2[cur], blog[cur]
            kernels.log_p(plog[:k], cand_class, lp[:k])
            for e in range(k):
                for c in range(n_cand):
                    grown[e, c] = scores[cur, e] + lp[e, c]
            fallback = min(max(plan[j], 0), n_cand - 1)
            prev = np.empty(k, np.int64)
            for e in range(k):
                prev[e] = paths[cur, e, j]
            picks = kernels.beam_level(grown[:k], prev, target, levels - j, octave, fallback,
                                       entry, note, best)
            # each distinct parent's recurrent product once, in order of first appearance
            distinct = 0
            for t in range(picks):
                found = -1
                for d in range(distinct):
                    if parents[d] == entry[t]:
                        found = d
                        break
                if found < 0:
                    parents[distinct] = entry[t]
                    found = distinct
                    distinct += 1
                where[t] = found
                x[t] = cand_x[note[t]]
            kernels.rows_product(ph1, parents[:distinct], w_hh1, base[:distinct])
            nxt = 1 - cur
            kernels.cells(base[:distinct], where[:picks], x[:picks], pc1, entry[:picks], ph2,
                          pc2, v1, w2, v2, head, bh1[nxt, :picks], bc1[nxt, :picks],
                          bh2[nxt, :picks], bc2[nxt, :picks], raw[:picks])
            for t in range(picks):
                for c in range(classes):
                    blog[nxt, t, c] = raw[t, c]
                for i in range(j + 1):
                    paths[nxt, t, i] = paths[cur, entry[t], i]
                paths[nxt, t, j + 1] = note[t]
                scores[nxt, t] = best[t]
            cur, k = nxt, picks
        kernels.log_p(blog[cur, :k], cand_class, lp[:k])
        kb = kernels.beam_best(scores[cur, :k], lp[:k], cand_pitch, data_pitch, reach, target)
        for i in range(levels):
            leads_out[i] = paths[cur, kb, i + 1]
        avoid = leads_out[levels - 1]
        sh1, sc1, sh2, sc2 = bh1[cur], bc1[cur], bh2[cur], bc2[cur]
        s_logits, s_row = blog[cur], kb
    # the data's note near the data
    one_lp = np.empty((1, n_cand), np.float64)
    kernels.log_p(s_logits[s_row:s_row + 1], cand_class, one_lp)
    data = np.empty(1, np.float64)
    data[0] = data_pitch
    avoid_a = np.empty(1, np.int64)
    avoid_a[0] = avoid
    chosen_a = np.empty(1, np.int64)
    kernels.choose_near(one_lp, cand_pitch, data, avoid_a, window, influence, kernel_scale,
                        chosen_a)
    chosen = chosen_a[0]
    if beyond:
        chosen = target
    elif held == data_pitch and anchor not in (-1, avoid):
        chosen = anchor
    # the step through it
    row = np.empty(1, np.int64)
    row[0] = s_row
    zero = np.zeros(1, np.int64)
    base1 = np.empty((1, w_hh1.shape[1]), dtype)
    kernels.rows_product(sh1, row, w_hh1, base1)
    x1 = np.empty(1, dtype)
    x1[0] = cand_x[chosen]
    raw1 = np.empty((1, classes), dtype)
    kernels.cells(base1, zero, x1, sc1, row, sh2, sc2, v1, w2, v2, head, h1_out, c1_out,
                  h2_out, c2_out, raw1)
    for c in range(classes):
        logits_out[0, c] = raw1[0, c]
    return chosen


if os.environ.get("STREAMSONIC_NO_JIT"):  # for debugging: the plain Python
    phrase: Any = _phrase_py
else:
    phrase = kernels.jit(_phrase_py, fastmath=False)
