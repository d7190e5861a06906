"""Compiled (numba) pieces of one LSTM timestep of the pitch network on the CPU.

A timestep of N streams is a few matrix-matrix products (NumPy float32 ``@``, BLAS, the
weights read once per batch: :class:`streamsonic.model.stepper.NumpyPitchStepper`) and the
elementwise gate arithmetic, which NumPy would spend a dozen passes over memory on; that
part is one compiled call per layer here (:func:`gates_cell`). A few rows (one stream, the
paths of the phrases' search, a small batch) take the first layer's recurrent product as a
compiled sum, each row alone (:func:`rows_product`), and everything after it in one
compiled call (:func:`cells`). The influence chooser's scores, the data encoding and the
phrases' search steps are compiled too (:func:`choose`, :func:`encode`, :func:`log_p`,
:func:`beam_level`, :func:`beam_best`, :func:`choose_near`); one stream's whole phrase is
one call of :mod:`streamsonic.model.phrase_kernel`, made of these.

Gate order is PyTorch's: input, forget, cell, output.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def numba_cache_dir() -> str | None:
    """Where numba keeps compiled kernels: ``$NUMBA_CACHE_DIR`` when set, else
    ``streamsonic/numba`` in the user's cache directory (systemd's ``$CACHE_DIRECTORY``,
    ``$XDG_CACHE_HOME`` or ``~/.cache``), created if need be. None when that cannot be
    created or written: then nothing is cached (never beside the installed package)."""
    given = os.environ.get("NUMBA_CACHE_DIR")
    if given:
        return given
    base = (os.environ.get("CACHE_DIRECTORY") or "").split(":")[0]
    if base:
        path = Path(base) / "numba"  # systemd's CacheDirectory=streamsonic is ours alone
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        try:
            root = Path(xdg) if Path(xdg).is_absolute() else Path.home() / ".cache"
        except RuntimeError:  # no home directory (e.g. a systemd DynamicUser)
            return None
        path = root / "streamsonic" / "numba"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return str(path) if os.access(path, os.W_OK | os.X_OK) else None


#: The modules whose functions numba compiles (with :func:`jit`), from the package's root.
#: numba keys a function's cached machine code on its own source file alone, not on the
#: compiled functions it calls from other modules: after a change to ``kernels.py`` alone,
#: the phrase step cached from ``phrase_kernel.py`` went on running the old products
#: (different bits from the same products called directly). So the cache lives in a
#: directory named for the sources of all of them together (:func:`kernel_cache_dir`).
KERNEL_MODULES = ("model/kernels.py", "model/phrase_kernel.py", "model/plain_kernel.py",
                  "anomaly_kernel.py", "normalize_kernel.py")
#: How many such directories (each the kernels of one version of those sources) are kept
#: in the cache directory; older ones (by last use) are removed.
KEEP_VERSIONS = 4


def kernel_key(root: Path | None = None) -> str:
    """``k-`` and 16 hex digits of the SHA-256 of :data:`KERNEL_MODULES`' sources (in the
    package at ``root``: this one's by default)."""
    root = Path(__file__).resolve().parents[1] if root is None else root
    digest = hashlib.sha256()
    for name in KERNEL_MODULES:
        digest.update(name.encode())
        try:
            digest.update((root / name).read_bytes())
        except OSError:  # (an install without it: nothing of it to key on)
            digest.update(b"-")
    return "k-" + digest.hexdigest()[:16]


def kernel_cache_dir() -> str | None:
    """The directory of :func:`numba_cache_dir` for these kernels' sources (its
    :func:`kernel_key` subdirectory, created and marked as just used; the least recently
    used beyond :data:`KEEP_VERSIONS` removed), or the one ``$NUMBA_CACHE_DIR`` names if it
    is already that (a worker process, given its parent's). None: nothing is cached."""
    base = numba_cache_dir()
    if base is None:
        return None
    key = kernel_key()
    if Path(base).name == key:
        return base
    path = Path(base) / key
    try:
        path.mkdir(exist_ok=True)
        os.utime(path)
        siblings = sorted((p for p in Path(base).glob("k-*") if p.is_dir() and p != path),
                          key=lambda p: p.stat().st_mtime, reverse=True)
        for old in siblings[KEEP_VERSIONS - 1:]:
            shutil.rmtree(old, ignore_errors=True)
    except OSError:
        return None
    return str(path) if os.access(path, os.W_OK | os.X_OK) else None


_cache_dir = functools.cache(kernel_cache_dir)  # once per process, before numba is imported


def _jit(fn: Callable[..., Any], **options: Any) -> Callable[..., Any]:
    """``numba.njit`` with an on-disk cache in :func:`kernel_cache_dir`; without one it
    compiles at first use."""
    options = {"fastmath": True, "nogil": True, "error_model": "numpy", **options}
    cache_dir = _cache_dir()
    if cache_dir is not None:
        os.environ["NUMBA_CACHE_DIR"] = cache_dir  # read by numba's config ...
    import numba  # noqa: PLC0415 - imported only when the CPU stepper is built

    if cache_dir is None:
        return numba.njit(cache=False, **options)(fn)
    numba.core.config.reload_config()  # ... at import, or now if it was imported before
    try:
        return numba.njit(cache=True, **options)(fn)
    except RuntimeError:  # no writable cache location (read-only install)
        log.debug("numba cache unavailable for %s (set NUMBA_CACHE_DIR)", fn.__name__)
        return numba.njit(cache=False, **options)(fn)


#: ``numba.njit`` as the kernels here use it (cached on disk where possible), for other
#: modules' compiled code.
jit = _jit


#: Clamp and coefficients of a [13/6] rational approximation of tanh (the one Eigen and
#: TensorFlow use for float32): max abs error 2.6e-7, about 4 float32 ulps, and made of
#: multiply-adds only, so the compiler vectorizes the gate loops (libm calls it cannot).
#: float32 constants, so float32 arithmetic stays float32 (and twice as wide in SIMD).
_TANH_CLAMP = np.float32(7.90531110763549805)
_A1, _A3 = np.float32(4.89352455891786e-03), np.float32(6.37261928875436e-04)
_A5, _A7 = np.float32(1.48572235717979e-05), np.float32(5.12229709037114e-08)
_A9, _A11 = np.float32(-8.60467152213735e-11), np.float32(2.00018790482477e-13)
_A13 = np.float32(-2.76076847742355e-16)
_B0, _B2 = np.float32(4.89352518554385e-03), np.float32(2.26843463243900e-03)
_B4, _B6 = np.float32(1.18534705686654e-04), np.float32(1.19825839466702e-06)
_HALF = np.float32(0.5)


def _tanh_py(x: Any) -> Any:
    x = x if x < _TANH_CLAMP else _TANH_CLAMP  # comparisons, not min/max: they vectorize
    x = x if x > -_TANH_CLAMP else -_TANH_CLAMP
    x2 = x * x
    p = ((((((_A13 * x2 + _A11) * x2 + _A9) * x2 + _A7) * x2 + _A5) * x2 + _A3) * x2 + _A1) * x
    q = ((_B6 * x2 + _B4) * x2 + _B2) * x2 + _B0
    return p / q


def _gates_cell_py(
    gates: np.ndarray, x: np.ndarray, w_in: np.ndarray, scale: np.ndarray, c: np.ndarray,
    h_out: np.ndarray, c_out: np.ndarray,
) -> None:
    """One LSTM cell for every row: ``gates`` (B, 4H) are the matrix products (and biases),
    ``x[b] * w_in`` the scalar input's column added to them; ``c`` (B, H) the cell state;
    writes ``h_out`` and ``c_out`` (B, H). ``scale`` is 0.5 on the sigmoid gates and 1 on the
    cell gate (sigmoid(x) = (1 + tanh(x / 2)) / 2). ``gates`` is left as it was.

    Three simple loops per row (one tanh over all 4H gates, the cell update, the output)
    rather than one: the compiler vectorizes these, not a loop that reads four gate blocks
    and writes two outputs (measured 0.5 us against 1.8-4.2 us per 256-unit row).
    """
    batch, n_gates = gates.shape
    hidden = n_gates // 4
    flat_g = gates.reshape(-1)
    flat_c = c.reshape(-1)
    flat_h = h_out.reshape(-1)
    flat_co = c_out.reshape(-1)
    t = np.empty(n_gates, dtype=gates.dtype)
    u = np.empty(hidden, dtype=gates.dtype)
    for b in range(batch):
        xb = x[b]
        og = b * n_gates
        oh = b * hidden
        for k in range(n_gates):
            t[k] = _tanh(scale[k] * (flat_g[og + k] + xb * w_in[k]))
        for j in range(hidden):
            cn = ((_HALF * t[hidden + j] + _HALF) * flat_c[oh + j]
                  + (_HALF * t[j] + _HALF) * t[2 * hidden + j])
            u[j] = cn
            flat_co[oh + j] = cn
        for j in range(hidden):
            flat_h[oh + j] = (_HALF * t[3 * hidden + j] + _HALF) * _tanh(u[j])


def _cell_py(t: np.ndarray, c: np.ndarray, p: int, c_out: np.ndarray, h_out: np.ndarray,
             r: int) -> None:
    """One row's cell update from its gates' tanh ``t`` (4 * H; the sigmoid gates as
    tanh of half the gate): the new cell state from row ``p`` of ``c`` into row ``r`` of
    ``c_out``, the new output into row ``r`` of ``h_out``."""
    hidden = c.shape[1]
    for j in range(hidden):
        c_out[r, j] = ((_HALF * t[hidden + j] + _HALF) * c[p, j]
                       + (_HALF * t[j] + _HALF) * t[2 * hidden + j])
    for j in range(hidden):
        h_out[r, j] = (_HALF * t[3 * hidden + j] + _HALF) * _tanh(c_out[r, j])


def _cells_py(
    base: np.ndarray, where: np.ndarray, x: np.ndarray, c1: np.ndarray, rows: np.ndarray,
    h2: np.ndarray, c2: np.ndarray, v1: np.ndarray, w2: np.ndarray, v2: np.ndarray,
    head: np.ndarray, h1_out: np.ndarray, c1_out: np.ndarray, h2_out: np.ndarray,
    c2_out: np.ndarray, logits: np.ndarray,
) -> None:
    """Both LSTM cells and the head for a few rows, after the first layer's recurrent
    product: row ``r`` steps from ``base[where[r]]`` (that product, without bias) and the
    state in row ``rows[r]`` of ``c1``, ``h2``, ``c2``, with input ``x[r]``; writes its new
    state and logits in row ``r`` of the outputs. ``v1`` holds the first layer's bias, input
    column and gate scales (3, 4 * H1); ``w2`` the second layer's recurrent weights above
    its input weights (H2 + H1, 4 * H2); ``v2`` its bias and gate scales (2, 4 * H2); ``head``
    the head's weights above its bias (H2 + 1, classes). The products run as a sum over
    the rows of a weight matrix (no sum across vector lanes), so a row's numbers do not
    depend on the other rows or on its place in the batch: a path of the phrases' search,
    or a stream stepped with a few others, gets the bits of a stream stepped alone."""
    n_gates1 = base.shape[1]
    hidden1 = n_gates1 // 4
    n_gates2 = w2.shape[1]
    hidden2 = n_gates2 // 4
    classes = head.shape[1]
    n = x.shape[0]
    t1 = np.empty(n_gates1, dtype=base.dtype)
    g2 = np.empty((n, n_gates2), dtype=base.dtype)
    for r in range(n):
        b = where[r]
        p = rows[r]
        xr = x[r]
        for k in range(n_gates1):
            t1[k] = _tanh(v1[2, k] * (base[b, k] + v1[0, k] + xr * v1[1, k]))
        _cell(t1, c1, p, c1_out, h1_out, r)
        for j in range(n_gates2):
            g2[r, j] = v2[0, j]
    # The second layer's product for every row together: each row of ``w2`` is read once
    # for all of them (8 rows: 17 us against 24 one row at a time), each output still
    # summed over ``w2``'s rows in order (the bits of a row stepped alone), and read and
    # written once per 4 (its recurrent part) or 8 (its input part) of them: one row of
    # the shipped model 5.0 us against 6.4 one at a time, 4 rows 11.1 against 18.1
    # (2026-12-06, best of 7 in one process; the same bits).
    k = 0
    while k + 4 <= hidden2:
        for r in range(n):
            p = rows[r]
            a0, a1, a2, a3 = h2[p, k], h2[p, k + 1], h2[p, k + 2], h2[p, k + 3]
            for j in range(n_gates2):
                g2[r, j] = (((g2[r, j] + a0 * w2[k, j]) + a1 * w2[k + 1, j])
                            + a2 * w2[k + 2, j]) + a3 * w2[k + 3, j]
        k += 4
    while k < hidden2:
        for r in range(n):
            hk = h2[rows[r], k]
            for j in range(n_gates2):
                g2[r, j] += hk * w2[k, j]
        k += 1
    k = 0
    while k + 8 <= hidden1:
        o = hidden2 + k
        for r in range(n):
            a0, a1, a2, a3 = h1_out[r, k], h1_out[r, k + 1], h1_out[r, k + 2], h1_out[r, k + 3]
            a4, a5 = h1_out[r, k + 4], h1_out[r, k + 5]
            a6, a7 = h1_out[r, k + 6], h1_out[r, k + 7]
            for j in range(n_gates2):
                g2[r, j] = (((((((g2[r, j] + a0 * w2[o, j]) + a1 * w2[o + 1, j])
                                + a2 * w2[o + 2, j]) + a3 * w2[o + 3, j]) + a4 * w2[o + 4, j])
                             + a5 * w2[o + 5, j]) + a6 * w2[o + 6, j]) + a7 * w2[o + 7, j]
        k += 8
    while k < hidden1:
        for r in range(n):
            hk = h1_out[r, k]
            for j in range(n_gates2):
                g2[r, j] += hk * w2[hidden2 + k, j]
        k += 1
    for r in range(n):
        for j in range(n_gates2):
            g2[r, j] = _tanh(v2[1, j] * g2[r, j])
        _cell(g2[r], c2, rows[r], c2_out, h2_out, r)
        for j in range(classes):
            logits[r, j] = head[hidden2, j]
        for k in range(hidden2):
            hk = h2_out[r, k]
            for j in range(classes):
                logits[r, j] += hk * head[k, j]


def _choose_py(
    logits: np.ndarray, cand_class: np.ndarray, cand_pitch: np.ndarray, data_pitch: np.ndarray,
    influence: float, kernel_scale: float, temperature: float, uniform: np.ndarray,
    out: np.ndarray,
) -> None:
    """Influence-weighted choice per row (see :mod:`streamsonic.model.choice`)."""
    n = cand_class.shape[0]
    scores = np.empty(n, dtype=np.float64)
    for b in range(logits.shape[0]):
        top = -np.inf
        for j in range(n):
            v = logits[b, cand_class[j]]
            top = max(top, v)
        total = 0.0
        for j in range(n):
            total += math.exp(logits[b, cand_class[j]] - top)
        log_norm = top + math.log(total)
        best = 0
        for j in range(n):
            dist = cand_pitch[j] - data_pitch[b]
            scores[j] = ((1.0 - influence) * (logits[b, cand_class[j]] - log_norm)
                         - influence * dist * dist * kernel_scale)
            if scores[j] > scores[best]:
                best = j
        if temperature <= 0.0:
            out[b] = best
            continue
        top = scores[best]
        total = 0.0
        for j in range(n):
            scores[j] = math.exp((scores[j] - top) / temperature)
            total += scores[j]
        target = uniform[b] * total
        acc = 0.0
        out[b] = n - 1
        for j in range(n):
            acc += scores[j]
            if acc >= target:
                out[b] = j
                break


def _encode_py(
    normalized: np.ndarray, low: float, span: float, classes: np.ndarray,
    pitch_out: np.ndarray, input_out: np.ndarray,
) -> None:
    """Normalized values -> data pitches in the range and their network inputs
    (the position of each pitch in the class table, interpolated, scaled to 0..1)."""
    n = classes.shape[0]
    for b in range(normalized.shape[0]):
        p = low + normalized[b] * span
        pitch_out[b] = p
        if p <= classes[0]:
            pos = 0.0
        elif p >= classes[n - 1]:
            pos = n - 1.0
        else:
            k = 0
            while classes[k + 1] < p:
                k += 1
            pos = k + (p - classes[k]) / (classes[k + 1] - classes[k])
        input_out[b] = pos / (n - 1)


def _rows_product_py(h: np.ndarray, rows: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = h[rows[i]] @ w`` (the first layer's recurrent product of a few rows), as a
    sum over the rows of ``w`` in their order, each step ``acc + h * w`` (compiled to fuse
    the multiply and the add where the CPU can, one rounding, and with no other fastmath:
    no reordering): a row's numbers do not depend on the others or on the caller, so one
    stream stepped alone, a path of its search and the compiled phrase step
    (:mod:`streamsonic.model.phrase_kernel`) get the same bits. The rows go through ``w``
    8 of its rows at a time (each output still sums them one by one, in order), one row
    too: each output is read and written once per 8 of ``w``'s rows, and ``w`` (1 MiB in
    the shipped model) is read from the cache once for all the rows. One row of the
    shipped model (2026-12-06, best of 7 in one process): 14.2 µs, against 26.3 with a
    read and write of the output per row of ``w`` and no fused multiply-adds (16.5 fused
    or not alone, 23.3 not alone); 4 rows 46.4 µs against 54.4."""
    width = w.shape[1]
    depth = w.shape[0]
    n = rows.shape[0]
    for i in range(n):
        for j in range(width):
            out[i, j] = 0.0
    k = 0
    while k + 8 <= depth:
        for i in range(n):
            r = rows[i]
            h0, h1, h2, h3 = h[r, k], h[r, k + 1], h[r, k + 2], h[r, k + 3]
            h4, h5, h6, h7 = h[r, k + 4], h[r, k + 5], h[r, k + 6], h[r, k + 7]
            for j in range(width):
                out[i, j] = (((((((out[i, j] + h0 * w[k, j]) + h1 * w[k + 1, j])
                                 + h2 * w[k + 2, j]) + h3 * w[k + 3, j]) + h4 * w[k + 4, j])
                              + h5 * w[k + 5, j]) + h6 * w[k + 6, j]) + h7 * w[k + 7, j]
        k += 8
    while k < depth:
        for i in range(n):
            hk = h[rows[i], k]
            for j in range(width):
                out[i, j] += hk * w[k, j]
        k += 1


def _log_p_py(logits: np.ndarray, cand_class: np.ndarray, out: np.ndarray) -> None:
    """The model's log-probability of each candidate, the softmax taken over the candidates'
    classes (``logits[:, cand_class]``), for each row alone (the same bits for a row in
    any batch): the row's largest logit subtracted, then the log of the sum of the
    exponentials, summed in candidate order (compiled without fastmath). A row with NaN
    gives NaN."""
    n = cand_class.shape[0]
    for b in range(logits.shape[0]):
        top = logits[b, cand_class[0]]
        for j in range(1, n):
            v = logits[b, cand_class[j]]
            if v > top or math.isnan(v):
                top = v
        total = 0.0
        for j in range(n):
            d = logits[b, cand_class[j]] - top
            out[b, j] = d
            total += math.exp(d)
        log_total = math.log(total)
        for j in range(n):
            out[b, j] = out[b, j] - log_total


def _beam_level_py(
    scores: np.ndarray, prev: np.ndarray, target: int, left: int, octave: int, fallback: int,
    entry_out: np.ndarray, note_out: np.ndarray, score_out: np.ndarray,
) -> int:
    """One level of the phrases' beam search (:meth:`streamsonic.conductor.Conductor._search`)
    for one stream: which notes each path (row of ``scores``, its score plus the model's
    log-probability of each candidate) may add next, then the best of them, at most
    ``len(entry_out)``. A path may move to a candidate that is not the note before it
    (``prev``), at most ``octave`` candidates away, from which ``target`` can still be
    reached in the ``left - 1`` notes after it (an octave each) and, as the last one, is not
    the target; a path with no such note takes ``fallback``. Best first, ties in path order
    then lower note (a stable sort of the negated scores, not-allowed ones -inf). Writes the
    path, note and score of each pick; returns how many (at most the allowed count)."""
    k, n = scores.shape
    flat = np.empty(k * n, dtype=np.float64)
    reach = 1 + (left - 1) * octave
    count = 0
    for e in range(k):
        p = prev[e]
        allowed = 0
        for c in range(n):
            if (c != p and abs(c - p) <= octave and abs(target - c) <= reach
                    and (left > 1 or c != target)):
                allowed += 1
                flat[e * n + c] = scores[e, c]
            else:
                flat[e * n + c] = -np.inf
        if allowed == 0:  # (a limit too small): the plan's note
            flat[e * n + fallback] = scores[e, fallback]
            allowed = 1
        count += allowed
    picks = min(count, entry_out.shape[0])
    taken = np.zeros(k * n, dtype=np.bool_)
    for t in range(picks):
        best = -1
        for i in range(k * n):
            if not taken[i] and (best < 0 or flat[i] > flat[best]):
                best = i
        taken[best] = True
        entry_out[t] = best // n
        note_out[t] = best % n
        score_out[t] = flat[best]
    return picks


def _beam_best_py(
    scores: np.ndarray, log_p: np.ndarray, candidates: np.ndarray, data_pitch: float,
    reach: float, target: int,
) -> int:
    """The end of the phrases' search for one stream: the path (row) whose score plus the
    model's best log-probability (``log_p``, one row per path) for a data note near the
    data's pitch (candidates within ``reach`` semitones, and ``target``) is the highest;
    ties to the earlier path."""
    k, n = log_p.shape
    best, best_total = 0, 0.0
    for e in range(k):
        top = -np.inf
        first = True
        for c in range(n):
            if abs(candidates[c] - data_pitch) <= reach or c == target:
                v = log_p[e, c]
                if first or v > top:
                    top, first = v, False
        total = scores[e] + top
        if e == 0 or total > best_total:
            best, best_total = e, total
    return best


def _choose_near_py(
    log_p: np.ndarray, cand_pitch: np.ndarray, data_pitch: np.ndarray, avoid: np.ndarray,
    window: float, influence: float, kernel_scale: float, out: np.ndarray,
) -> None:
    """A phrase's data note for each row, greedy (temperature 0; see
    :meth:`streamsonic.model.choice.Chooser.choose_near`): among the candidates within
    ``window`` semitones of the data's pitch (always the nearest, the first on ties), the
    best of ``(1 - influence) * log_p + influence * kernel``, the first on ties; ``avoid``
    (-1: none) only when nothing else is in reach. The arithmetic is NumPy's, in its order
    (compiled without fastmath: no fused multiply-adds)."""
    n = cand_pitch.shape[0]
    for b in range(log_p.shape[0]):
        d = data_pitch[b]
        nearest = 0
        for c in range(1, n):
            if abs(cand_pitch[c] - d) < abs(cand_pitch[nearest] - d):
                nearest = c
        count = 0
        for c in range(n):
            if abs(cand_pitch[c] - d) <= window or c == nearest:
                count += 1
        best = -1
        top = 0.0
        for c in range(n):
            dist = cand_pitch[c] - d
            if not (abs(dist) <= window or c == nearest):
                continue
            if c == avoid[b] and count > 1:
                continue
            score = (1.0 - influence) * log_p[b, c] + influence * (-(dist * dist) * kernel_scale)
            if best < 0 or score > top:
                best, top = c, score
        out[b] = best


if os.environ.get("STREAMSONIC_NO_JIT"):  # for debugging the kernels in plain Python
    _tanh, gates_cell, choose, encode = _tanh_py, _gates_cell_py, _choose_py, _encode_py
    _cell, cells = _cell_py, _cells_py
    beam_level, beam_best, choose_near = _beam_level_py, _beam_best_py, _choose_near_py
    log_p, rows_product = _log_p_py, _rows_product_py
else:
    _tanh = _jit(_tanh_py, inline="always")
    gates_cell = _jit(_gates_cell_py)
    _cell = _jit(_cell_py, inline="always")
    cells = _jit(_cells_py)
    choose = _jit(_choose_py)
    encode = _jit(_encode_py)
    log_p = _jit(_log_p_py, fastmath=False)
    rows_product = _jit(_rows_product_py, fastmath={"contract"})
    beam_level = _jit(_beam_level_py, fastmath=False)
    beam_best = _jit(_beam_best_py, fastmath=False)
    choose_near = _jit(_choose_near_py, fastmath=False)
