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

import logging
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``numba.njit`` with an on-disk cache where the package folder (or
    ``$NUMBA_CACHE_DIR``) is writable; without a cache it compiles at first use."""
    import numba  # noqa: PLC0415 - imported only when the CPU stepper is built

    try:
        return numba.njit(cache=True, fastmath=True, nogil=True)(fn)
    except RuntimeError:  # no writable cache location (read-only install)
        log.debug("numba cache unavailable for %s (set NUMBA_CACHE_DIR)", fn.__name__)
        return numba.njit(cache=False, fastmath=True, nogil=True)(fn)


def _cell_py(gates: np.ndarray, c: np.ndarray, h_out: np.ndarray, c_out: np.ndarray) -> None:
    hidden = c.shape[0]
    for j in range(hidden):
        i = 1.0 / (1.0 + math.exp(-gates[j]))
        f = 1.0 / (1.0 + math.exp(-gates[hidden + j]))
        g = math.tanh(gates[2 * hidden + j])
        o = 1.0 / (1.0 + math.exp(-gates[3 * hidden + j]))
        cn = f * c[j] + i * g
        c_out[j] = cn
        h_out[j] = o * math.tanh(cn)


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


if os.environ.get("STREAMSONIC_NO_JIT"):  # for debugging the kernels in plain Python
    _cell, _layer2, propose, commit = _cell_py, _layer2_py, _propose_py, _commit_py
else:
    _cell = _jit(_cell_py)
    _layer2 = _jit(_layer2_py)
    propose = _jit(_propose_py)
    commit = _jit(_commit_py)
