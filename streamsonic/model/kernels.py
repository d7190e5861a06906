"""Compiled (numba) kernels for one LSTM timestep of the pitch network on the CPU.

At batch sizes of one or a few streams, a timestep is a few hundred thousand multiply-adds
and a few thousand transcendental functions; NumPy or PyTorch would spend most of the time
dispatching ~30 small operators. These kernels do the whole step in one call.

Weights are prepared by :class:`streamsonic.model.stepper.NumpyPitchStepper`:
``w_hh1_t`` (H1, 4*H1), ``w_ih1`` (4*H1,), ``b1`` (4*H1,) (both biases summed),
``w2_t`` (H1+H2, 4*H2) (input and recurrent weights stacked), ``b2``, ``head_t`` (H2, C),
``head_b`` (C,). Gate order is PyTorch's: input, forget, cell, output.
"""

from __future__ import annotations

import functools
import logging
import math
import os
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


_cache_dir = functools.cache(numba_cache_dir)  # once per process, before numba is imported


def _jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``numba.njit`` with an on-disk cache in :func:`numba_cache_dir`; without one it
    compiles at first use."""
    cache_dir = _cache_dir()
    if cache_dir is not None:
        os.environ["NUMBA_CACHE_DIR"] = cache_dir  # read by numba's config ...
    import numba  # noqa: PLC0415 - imported only when the CPU stepper is built

    if cache_dir is None:
        return numba.njit(cache=False, fastmath=True, nogil=True)(fn)
    numba.core.config.reload_config()  # ... at import, or now if it was imported before
    try:
        return numba.njit(cache=True, fastmath=True, nogil=True)(fn)
    except RuntimeError:  # no writable cache location (read-only install)
        log.debug("numba cache unavailable for %s (set NUMBA_CACHE_DIR)", fn.__name__)
        return numba.njit(cache=False, fastmath=True, nogil=True)(fn)


#: Clamp and coefficients of a [13/6] rational approximation of tanh (the one Eigen and
#: TensorFlow use for float32): max abs error 2.6e-7, about 4 float32 ulps, and made of
#: multiply-adds only, so the compiler vectorizes the gate loops (libm calls it cannot).
_TANH_CLAMP = 7.90531110763549805
_A1, _A3 = 4.89352455891786e-03, 6.37261928875436e-04
_A5, _A7 = 1.48572235717979e-05, 5.12229709037114e-08
_A9, _A11, _A13 = -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16
_B0, _B2 = 4.89352518554385e-03, 2.26843463243900e-03
_B4, _B6 = 1.18534705686654e-04, 1.19825839466702e-06


def _tanh_py(x: float) -> float:
    x = min(max(x, -_TANH_CLAMP), _TANH_CLAMP)
    x2 = x * x
    p = ((((((_A13 * x2 + _A11) * x2 + _A9) * x2 + _A7) * x2 + _A5) * x2 + _A3) * x2 + _A1) * x
    q = ((_B6 * x2 + _B4) * x2 + _B2) * x2 + _B0
    return p / q


def _cell_py(gates: np.ndarray, c: np.ndarray, h_out: np.ndarray, c_out: np.ndarray) -> None:
    hidden = c.shape[0]
    for j in range(hidden):
        i = 0.5 * _tanh(0.5 * gates[j]) + 0.5  # sigmoid(x) = (1 + tanh(x / 2)) / 2
        f = 0.5 * _tanh(0.5 * gates[hidden + j]) + 0.5
        g = _tanh(gates[2 * hidden + j])
        o = 0.5 * _tanh(0.5 * gates[3 * hidden + j]) + 0.5
        cn = f * c[j] + i * g
        c_out[j] = cn
        h_out[j] = o * _tanh(cn)


def _layer2_py(
    h1: np.ndarray, h2: np.ndarray, c2: np.ndarray, w2_t: np.ndarray, b2: np.ndarray,
    gates: np.ndarray, h_out: np.ndarray, c_out: np.ndarray,
) -> None:
    n1 = h1.shape[0]
    n2 = h2.shape[0]
    g = gates.shape[0]
    for k in range(g):
        gates[k] = b2[k]
    for j in range(n1):
        hj = h1[j]
        for k in range(g):
            gates[k] += hj * w2_t[j, k]
    for j in range(n2):
        hj = h2[j]
        for k in range(g):
            gates[k] += hj * w2_t[n1 + j, k]
    _cell(gates, c2, h_out, c_out)


def _propose_py(
    h1: np.ndarray, c1: np.ndarray, h2: np.ndarray, c2: np.ndarray, x: np.ndarray,
    w_hh1_t: np.ndarray, w_ih1: np.ndarray, b1: np.ndarray, w2_t: np.ndarray, b2: np.ndarray,
    head_t: np.ndarray, head_b: np.ndarray, base: np.ndarray, logits: np.ndarray,
) -> None:
    batch, n1 = h1.shape
    g1 = base.shape[1]
    n2 = h2.shape[1]
    gates1 = np.empty(g1, dtype=h1.dtype)
    gates2 = np.empty(4 * n2, dtype=h1.dtype)
    h1n = np.empty(n1, dtype=h1.dtype)
    c1n = np.empty(n1, dtype=h1.dtype)
    h2n = np.empty(n2, dtype=h1.dtype)
    c2n = np.empty(n2, dtype=h1.dtype)
    for b in range(batch):
        row = base[b]
        for k in range(g1):
            row[k] = b1[k]
        for j in range(n1):
            hj = h1[b, j]
            for k in range(g1):
                row[k] += hj * w_hh1_t[j, k]
        xb = x[b]
        for k in range(g1):
            gates1[k] = row[k] + xb * w_ih1[k]
        _cell(gates1, c1[b], h1n, c1n)
        _layer2(h1n, h2[b], c2[b], w2_t, b2, gates2, h2n, c2n)
        for k in range(logits.shape[1]):
            s = head_b[k]
            for j in range(n2):
                s += h2n[j] * head_t[j, k]
            logits[b, k] = s


def _commit_py(
    base: np.ndarray, c1: np.ndarray, h2: np.ndarray, c2: np.ndarray, x: np.ndarray,
    w_ih1: np.ndarray, w2_t: np.ndarray, b2: np.ndarray,
    h1_out: np.ndarray, c1_out: np.ndarray, h2_out: np.ndarray, c2_out: np.ndarray,
) -> None:
    batch, g1 = base.shape
    gates1 = np.empty(g1, dtype=base.dtype)
    gates2 = np.empty(4 * h2.shape[1], dtype=base.dtype)
    for b in range(batch):
        xb = x[b]
        for k in range(g1):
            gates1[k] = base[b, k] + xb * w_ih1[k]
        _cell(gates1, c1[b], h1_out[b], c1_out[b])
        _layer2(h1_out[b], h2[b], c2[b], w2_t, b2, gates2, h2_out[b], c2_out[b])


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


if os.environ.get("STREAMSONIC_NO_JIT"):  # for debugging the kernels in plain Python
    _cell, _layer2, propose, commit = _cell_py, _layer2_py, _propose_py, _commit_py
    choose, _tanh, encode = _choose_py, _tanh_py, _encode_py
else:
    _tanh = _jit(_tanh_py)
    _cell = _jit(_cell_py)
    _layer2 = _jit(_layer2_py)
    propose = _jit(_propose_py)
    commit = _jit(_commit_py)
    choose = _jit(_choose_py)
    encode = _jit(_encode_py)
