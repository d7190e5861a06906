"""Phrases on the CPU in compiled calls: for each stream, the beam search for the notes
that lead to the data's next note, the data's note near the data, and the LSTM step
through it (what :meth:`streamsonic.conductor.Conductor._phrase` does with
:meth:`~streamsonic.conductor.Conductor._search_one`, :meth:`~streamsonic.conductor.
Conductor._end`, :meth:`~streamsonic.model.choice.Chooser.choose_near` and
:meth:`~streamsonic.conductor.Conductor._advance`). :func:`phrase` plays one stream,
:func:`phrases` several.

The same compiled pieces in the same order on the same numbers
(:mod:`streamsonic.model.kernels`: ``rows_product``, ``cells``, ``log_p``, ``beam_level``,
``beam_best``, ``choose_near``), without the Python between them (the general path's
few dozen NumPy calls and allocations per phrase of a random walk cost about as much as
its arithmetic).
Every product and cell is computed row by row (a row's bits do not depend on the rows
beside it), so a stream played among several gets the bits it gets alone, while
:func:`phrases` reads the first layer's weights once for up to ``CHUNK`` streams.
tests/test_fast_paths.py holds both to the general path, bit for bit.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from streamsonic.model import kernels

#: Streams whose first layer's recurrent products :func:`phrases` computes together (the
#: weights read once for them: 5.2 µs a row in groups of 16, 9.1 one at a time, 4.0 for
#: BLAS's product of 256 rows, which rounds otherwise).
CHUNK = 16


def _search_py(
    plan: np.ndarray, target: int, octave: int, data_pitch: float, reach: float, last: int,
    base0: np.ndarray, w_hh1: np.ndarray, v1: np.ndarray, w2: np.ndarray, v2: np.ndarray,
    head: np.ndarray, cand_class: np.ndarray, cand_pitch: np.ndarray, cand_x: np.ndarray,
    h1: np.ndarray, c1: np.ndarray, h2: np.ndarray, c2: np.ndarray, logits: np.ndarray,
    scratch: tuple[np.ndarray, ...], leads_out: np.ndarray, f_h1: np.ndarray,
    f_c1: np.ndarray, f_h2: np.ndarray, f_c2: np.ndarray, f_logits: np.ndarray,
) -> int:
    """One stream's search for the ``len(plan)`` notes (at least one) that lead to the data's
    note: ``plan`` the fallback candidate of each, ``base0`` (1, 4 * H1) the first layer's
    recurrent product of the stream's ``h1``, ``h1 .. c2`` (1, H) its state and ``logits``
    (1, classes; float64) its next logits, ``scratch`` the search's buffers
    (:func:`_scratch`). Writes the notes into ``leads_out``, the state and logits after
    them into the ``f_`` outputs (1, ...); returns the last note."""
    n_cand = cand_class.shape[0]
    classes = logits.shape[1]
    levels = plan.shape[0]
    bh1, bc1, bh2, bc2, raw, base, x = scratch[:7]
    blog, scores, lp, grown, best = scratch[7:12]
    paths, entry, note, where, parents, prev = scratch[12:]
    paths[0, 0, 0] = last
    scores[0, 0] = 0.0
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
            prev[e] = paths[cur, e, j]
        fallback = min(max(plan[j], 0), n_cand - 1)
        picks = kernels.beam_level(grown[:k], prev[:k], target, levels - j, octave,
                                   fallback, entry, note, best)
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
        if j == 0:  # one parent: the stream's own state, its product given
            products = base0
        else:
            kernels.rows_product(ph1, parents[:distinct], w_hh1, base[:distinct])
            products = base[:distinct]
        nxt = 1 - cur
        kernels.cells(products, where[:picks], x[:picks], pc1, entry[:picks], ph2, pc2, v1,
                      w2, v2, head, bh1[nxt, :picks], bc1[nxt, :picks], bh2[nxt, :picks],
                      bc2[nxt, :picks], raw[:picks])
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
    f_h1[0, :] = bh1[cur, kb]
    f_c1[0, :] = bc1[cur, kb]
    f_h2[0, :] = bh2[cur, kb]
    f_c2[0, :] = bc2[cur, kb]
    f_logits[0, :] = blog[cur, kb]
    return leads_out[levels - 1]


def _scratch_py(beam: int, levels: int, h1: np.ndarray, c1: np.ndarray, h2: np.ndarray,
                c2: np.ndarray, classes: int, n_cand: int, width: int,
                ) -> tuple[Any, ...]:
    """The search's buffers, for paths of up to ``levels`` added notes: two sets (this
    level's paths and the next's) of the paths' states (like ``h1 .. c2``), logits
    (float64), scores and notes; one level's products, inputs, log-probabilities, picks."""
    dtype = h1.dtype
    return (np.empty((2, beam, h1.shape[1]), dtype), np.empty((2, beam, c1.shape[1]), dtype),
            np.empty((2, beam, h2.shape[1]), dtype), np.empty((2, beam, c2.shape[1]), dtype),
            np.empty((beam, classes), dtype), np.empty((beam, width), dtype),
            np.empty(beam, dtype),
            np.empty((2, beam, classes), np.float64), np.zeros((2, beam), np.float64),
            np.empty((beam, n_cand), np.float64), np.empty((beam, n_cand), np.float64),
            np.empty(beam, np.float64),
            np.empty((2, beam, levels + 1), np.int64), np.empty(beam, np.int64),
            np.empty(beam, np.int64), np.empty(beam, np.int64), np.empty(beam, np.int64),
            np.empty(beam, np.int64))


def _data_note_py(
    logits: np.ndarray, target: int, data_pitch: float, window: float, influence: float,
    kernel_scale: float, held: float, anchor: int, beyond: bool, avoid: int,
    cand_class: np.ndarray, cand_pitch: np.ndarray,
) -> int:
    """The data's note after the lead-in (``avoid``: its last note, -1: none) from the
    stream's ``logits`` (1, classes; float64): near the data's pitch; the ``target`` beyond
    the ordinary range; the last data note (``anchor``) while the data stays where it was
    (``held``)."""
    one_lp = np.empty((1, cand_class.shape[0]), np.float64)
    kernels.log_p(logits, cand_class, one_lp)
    data = np.empty(1, np.float64)
    data[0] = data_pitch
    avoid_a = np.empty(1, np.int64)
    avoid_a[0] = avoid
    chosen = np.empty(1, np.int64)
    kernels.choose_near(one_lp, cand_pitch, data, avoid_a, window, influence, kernel_scale,
                        chosen)
    if beyond:
        return target
    if held == data_pitch and anchor not in (-1, avoid):
        return anchor
    return chosen[0]


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
    the same note); ``beyond``: the data alone decides (the target). :func:`phrases` of
    one stream, its scalars as arrays of one."""
    starts = np.zeros(2, np.int64)
    starts[1] = plan.shape[0]
    ints = np.empty(3, np.int64)  # target, anchor, last
    ints[0], ints[1], ints[2] = target, anchor, last
    floats = np.empty(2, np.float64)  # data pitch, held
    floats[0], floats[1] = data_pitch, held
    beyond_a = np.empty(1, np.bool_)
    beyond_a[0] = beyond
    chosen = np.empty(1, np.int64)
    work = work_for(1, plan.shape[0], beam, h1, c1, h2, c2, logits, cand_class.shape[0],
                    w_hh1.shape[1])
    phrases(plan, starts, ints[0:1], octave, floats[0:1], reach, window, influence,
            kernel_scale, floats[1:2], ints[1:2], beyond_a, ints[2:3], w_hh1, v1, w2, v2,
            head, cand_class, cand_pitch, cand_x, h1, c1, h2, c2, logits, leads_out,
            h1_out, c1_out, h2_out, c2_out, logits_out, chosen, work)
    return chosen[0]


def _work_py(n: int, longest: int, beam: int, h1: np.ndarray, c1: np.ndarray,
             h2: np.ndarray, c2: np.ndarray, logits: np.ndarray, n_cand: int, width: int,
             ) -> tuple[Any, ...]:
    """The buffers of :func:`phrases` of ``n`` streams (``h1 .. c2``, ``logits``: theirs)
    whose plans hold up to ``longest`` notes: the streams that search, the first layer's
    products, the states and logits each steps from, the data notes' inputs, the rows,
    the last step's logits, the search's (:func:`_scratch`)."""
    dtype = h1.dtype
    classes = logits.shape[1]
    return (np.empty(n, np.int64), np.empty((n, width), dtype),
            np.empty((n, h1.shape[1]), dtype), np.empty((n, c1.shape[1]), dtype),
            np.empty((n, h2.shape[1]), dtype), np.empty((n, c2.shape[1]), dtype),
            np.empty((n, classes), logits.dtype), np.empty(n, dtype), np.arange(n),
            np.empty((n, classes), dtype),
            _scratch(beam, longest, h1, c1, h2, c2, classes, n_cand, width))


def _phrases_py(
    plans: np.ndarray, starts: np.ndarray, targets: np.ndarray, octave: int,
    data_pitch: np.ndarray, reach: float, window: float, influence: float,
    kernel_scale: float, held: np.ndarray, anchor: np.ndarray, beyond: np.ndarray,
    last: np.ndarray,
    w_hh1: np.ndarray, v1: np.ndarray, w2: np.ndarray, v2: np.ndarray, head: np.ndarray,
    cand_class: np.ndarray, cand_pitch: np.ndarray, cand_x: np.ndarray,
    h1: np.ndarray, c1: np.ndarray, h2: np.ndarray, c2: np.ndarray, logits: np.ndarray,
    leads_out: np.ndarray, h1_out: np.ndarray, c1_out: np.ndarray,
    h2_out: np.ndarray, c2_out: np.ndarray, logits_out: np.ndarray, chosen_out: np.ndarray,
    work: tuple[Any, ...],
) -> None:
    """:func:`phrase` of each row (stream) of ``h1 .. c2``, ``logits`` and the per-stream
    arrays, its plan ``plans[starts[i]:starts[i + 1]]`` (its added notes into the same
    slice of ``leads_out``), its data note into ``chosen_out[i]``: the bits each stream
    gets from :func:`phrase`, the first layer's products ``CHUNK`` rows at a time; in the
    buffers ``work`` (:func:`work_for`, for as many streams and plans at least as long)."""
    n = h1.shape[0]
    classes = logits.shape[1]
    searching, base, f_h1, f_c1, f_h2, f_c2, f_logits, x, rows, raw, scratch = work
    # the first layer's products of the streams' own states (those with notes to add)
    count = 0
    for i in range(n):
        if starts[i + 1] > starts[i]:
            searching[count] = i
            count += 1
    for g in range(0, count, CHUNK):
        top = min(g + CHUNK, count)
        kernels.rows_product(h1, searching[g:top], w_hh1, base[g:top])
    # each stream's search and data note; the state each steps from lands in f_
    at = 0
    for i in range(n):
        a, b = starts[i], starts[i + 1]
        avoid = -1
        if b > a:
            avoid = _search(plans[a:b], targets[i], octave, data_pitch[i], reach, last[i],
                            base[at:at + 1], w_hh1, v1, w2, v2, head, cand_class,
                            cand_pitch, cand_x, h1[i:i + 1], c1[i:i + 1], h2[i:i + 1],
                            c2[i:i + 1], logits[i:i + 1], scratch, leads_out[a:b],
                            f_h1[i:i + 1], f_c1[i:i + 1], f_h2[i:i + 1], f_c2[i:i + 1],
                            f_logits[i:i + 1])
            at += 1
        else:
            f_h1[i, :] = h1[i]
            f_c1[i, :] = c1[i]
            f_h2[i, :] = h2[i]
            f_c2[i, :] = c2[i]
            f_logits[i, :] = logits[i]
        chosen = _data_note(f_logits[i:i + 1], targets[i], data_pitch[i], window, influence,
                            kernel_scale, held[i], anchor[i], beyond[i], avoid, cand_class,
                            cand_pitch)
        chosen_out[i] = chosen
        x[i] = cand_x[chosen]
    # the step through each data note
    for g in range(0, n, CHUNK):
        top = min(g + CHUNK, n)
        kernels.rows_product(f_h1, rows[g:top], w_hh1, base[g:top])
    kernels.cells(base, rows, x, f_c1, rows, f_h2, f_c2, v1, w2, v2, head, h1_out, c1_out,
                  h2_out, c2_out, raw)
    for i in range(n):
        for c in range(classes):
            logits_out[i, c] = raw[i, c]


def _lead_in_py(prev: int, target: int, limit: int, out: np.ndarray) -> int:
    """:func:`streamsonic.music.lead_in` (the same numbers: Python's rounding, half to
    even) into ``out``: returns how many notes."""
    gap = target - prev
    size = abs(gap)
    if limit <= 0 or size == 1:
        return 0
    if size == 0:
        out[0] = prev + 1
        return 1
    d = 1 if gap > 0 else -1
    n = min(limit + 1, size)
    for j in range(1, n):
        out[j - 1] = prev + d * round(size * j / n)
    return n - 1


def _run_py(
    data_pitch: np.ndarray, targets: np.ndarray, plain: np.ndarray, beyond: np.ndarray,
    limits: np.ndarray, octave: int, reach: float, window: float, influence: float,
    kernel_scale: float,
    w_hh1: np.ndarray, v1: np.ndarray, w2: np.ndarray, v2: np.ndarray, head: np.ndarray,
    cand_class: np.ndarray, cand_pitch: np.ndarray, cand_x: np.ndarray,
    h1: np.ndarray, c1: np.ndarray, h2: np.ndarray, c2: np.ndarray, logits: np.ndarray,
    held: np.ndarray, marks: np.ndarray, beam: int,
    chosen_out: np.ndarray, leads_out: np.ndarray, lead_starts: np.ndarray,
) -> None:
    """One stream's phrases for consecutive data notes, one after the other (what
    :meth:`streamsonic.conductor.Conductor._phrase_one` does note by note, each through
    :func:`phrase`): note ``i`` at ``data_pitch[i]``, nearest candidate ``targets[i]``;
    the notes added before it are those :func:`~streamsonic.music.lead_in` plans from the
    note played last (at most ``limits[i]``; none where ``plain[i]``: an accent), its
    added notes into ``leads_out[lead_starts[i]:lead_starts[i + 1]]``, its data note into
    ``chosen_out[i]``. The stream's state ``h1 .. c2`` (1, H), ``logits`` (1, classes;
    float64), ``held`` (1: the data pitch of its last data note) and ``marks`` (2: the
    candidate of that note, the note played last) are read at the start and hold the
    stream's after the last note when it returns."""
    n = data_pitch.shape[0]
    longest = max(1, limits.max() if n else 1)
    plan = np.empty(longest, np.int64)
    work = work_for(1, longest, beam, h1, c1, h2, c2, logits, cand_class.shape[0],
                 w_hh1.shape[1])
    starts = np.zeros(2, np.int64)
    ints = np.empty(3, np.int64)  # target, anchor, last
    floats = np.empty(2, np.float64)  # data pitch, held
    chosen = np.empty(1, np.int64)
    # two sets of the state: each note steps from one into the other
    sh1, sc1, sh2, sc2 = np.empty_like(h1), np.empty_like(c1), np.empty_like(h2), np.empty_like(c2)
    slog = np.empty_like(logits)
    a_h1, a_c1, a_h2, a_c2, a_log = h1, c1, h2, c2, logits
    b_h1, b_c1, b_h2, b_c2, b_log = sh1, sc1, sh2, sc2, slog
    at = 0
    for i in range(n):
        last = marks[1]
        count = 0
        if not plain[i] and last >= 0:
            count = _lead_in(last, targets[i], limits[i], plan)
        lead_starts[i] = at
        starts[1] = count
        ints[0], ints[1], ints[2] = targets[i], marks[0], last
        floats[0], floats[1] = data_pitch[i], held[0]
        phrases(plan[:count], starts, ints[0:1], octave, floats[0:1], reach, window,
                      influence, kernel_scale, floats[1:2], ints[1:2], beyond[i:i + 1],
                      ints[2:3], w_hh1, v1, w2, v2, head, cand_class, cand_pitch, cand_x,
                      a_h1, a_c1, a_h2, a_c2, a_log, leads_out[at:at + count], b_h1, b_c1,
                      b_h2, b_c2, b_log, chosen, work)
        at += count
        chosen_out[i] = chosen[0]
        held[0] = data_pitch[i]
        marks[0] = chosen[0]
        marks[1] = chosen[0]
        a_h1, a_c1, a_h2, a_c2, a_log, b_h1, b_c1, b_h2, b_c2, b_log = (
            b_h1, b_c1, b_h2, b_c2, b_log, a_h1, a_c1, a_h2, a_c2, a_log)
    lead_starts[n] = at
    if n % 2:  # the last note's state is in the second set: back into the stream's
        h1[:, :] = sh1
        c1[:, :] = sc1
        h2[:, :] = sh2
        c2[:, :] = sc2
        logits[:, :] = slog


if os.environ.get("STREAMSONIC_NO_JIT"):  # for debugging: the plain Python
    _search, _data_note, _scratch = _search_py, _data_note_py, _scratch_py
    _lead_in, work_for = _lead_in_py, _work_py
    phrases: Any = _phrases_py
    phrase: Any = _phrase_py
    run: Any = _run_py
else:
    _search = kernels.jit(_search_py, fastmath=False)
    _scratch = kernels.jit(_scratch_py)
    _data_note = kernels.jit(_data_note_py, fastmath=False)
    work_for = kernels.jit(_work_py)
    phrases = kernels.jit(_phrases_py, fastmath=False)
    phrase = kernels.jit(_phrase_py, fastmath=False)
    _lead_in = kernels.jit(_lead_in_py, fastmath=False)
    run = kernels.jit(_run_py, fastmath=False)
