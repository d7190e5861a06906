"""Advance a pitch network one timestep at a time, with its state kept by the caller.

The research re-ran a 50-step window through the network for every sample. A recurrent
network does not need that: its ``(h, c)`` after ``t`` steps summarises the history, so
each sample costs one timestep. The influence semantics need two evaluations of that
timestep from the same state: one with the data value as input (whose logits choose the
note) and one with the chosen note as input (which is what the network remembers). The
first layer's recurrent product ``W_hh @ h`` does not depend on the input, so
``propose``/``commit`` compute it once and share it; that product is most of the work.

Two backends with one interface:

* :class:`NumpyPitchStepper` - CPU, without torch: a batch of N streams is one
  matrix-matrix product per layer (NumPy float32 ``@``, the weights read once per batch)
  and one compiled (numba) call per layer for the gates (:mod:`streamsonic.model.kernels`);
  measured in ``bench/step.py``. It reads its weights from a plain table of NumPy arrays
  (:mod:`streamsonic.model.arrays`), so the CPU run path never imports torch.
* :class:`TorchPitchStepper` - any torch device (CUDA): the states stay on the device and
  a batch is one call per operator, in inference mode.

Logits always come back as a NumPy array ``(batch, n_classes)`` for the chooser.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from streamsonic.errors import DeviceError

if TYPE_CHECKING:
    import torch

    from streamsonic.model.choice import Chooser
    from streamsonic.model.network import PitchLSTM

#: Opaque per-stream (or batched) state: four arrays/tensors (h1, c1, h2, c2), (batch, H).
State = tuple[Any, Any, Any, Any]

#: Up to this many distinct rows, :meth:`NumpyPitchStepper.step_rows` multiplies the first
#: layer's recurrent weights one row at a time (above it, one product: BLAS's blocking wins).
ROW_BY_ROW = 8
#: Up to this many rows, :class:`NumpyPitchStepper` takes a step's rest after that product
#: in one compiled call (each row as a stream stepped alone, :meth:`~NumpyPitchStepper.
#: _cells`); above it NumPy's batched products and gate passes cost less (measured, one
#: thread: 2 paths of a search from one state 24.3 µs against 33.7, 4 from one 30.4
#: against 33.8, 8 from one 42.4 against 39.7; 8 streams 14.2 µs each against 10.9).
FEW_ROWS = 4
#: Up to this many rows (a stream's search keeps 8 paths), :meth:`NumpyPitchStepper.
#: step_rows` takes them through the same compiled call: every path of a stream's search
#: gets the bits of a stream stepped alone, as the compiled phrase step computes them
#: (:meth:`NumpyPitchStepper.phrase`); 8 paths from one state cost 42.4 µs that way against
#: 39.7 through NumPy's batched products (measured when FEW_ROWS was chosen).
PATH_ROWS = 8

#: Device nodes without which no CUDA GPU can be present (Linux, WSL).
CUDA_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg")


def _state(parts: Iterable[Any]) -> State:
    """The four parts ``(h1, c1, h2, c2)`` as a :data:`State`."""
    h1, c1, h2, c2 = parts
    return (h1, c1, h2, c2)


def device_name(name: str) -> str:
    """``"auto"``: ``"cuda"`` when PyTorch sees a CUDA GPU, else ``"cpu"``; ``"cpu"`` stays
    ``"cpu"``; ``"cuda"`` or ``"cuda:N"`` without CUDA is a :class:`DeviceError`.

    torch is imported only when a GPU could be there: ``"cuda..."`` asked for, or ``"auto"``
    on a machine with an NVIDIA device node. The CPU run path stays torch-free (start-up
    and memory: ``import torch`` alone is about 2 s and 220 MB)."""
    if name == "cpu":
        return "cpu"
    if name not in ("auto", "cuda") and not name.startswith("cuda:"):
        raise DeviceError(f"unknown device {name!r}; use auto, cpu or cuda")
    if name == "auto" and not any(Path(node).exists() for node in CUDA_NODES):
        return "cpu"
    import torch  # noqa: PLC0415 - only where a GPU may be

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise DeviceError(
            f"device {name!r} was asked for but PyTorch sees no CUDA GPU "
            f"(torch {torch.__version__}); use --device cpu or auto"
        )
    return name


def resolve_device(name: str) -> torch.device:
    """:func:`device_name` as a ``torch.device`` (training, the temporal model)."""
    import torch  # noqa: PLC0415

    return torch.device(device_name(name))


@dataclass(frozen=True, slots=True)
class Pending:
    """A proposed step: the state it started from and the shared first-layer product."""

    state: State
    base: Any  # W_hh1 @ h1 (+ b1, but for NumPy's few rows), (batch, 4 * hidden1)
    shared: Any = None  # (NumPy, many rows) W_hh2 @ h2 + b2, the second layer's input-free
    # part; None: a few rows, whose commit takes them through the compiled cells again


@dataclass(frozen=True, slots=True)
class PhraseSetup:
    """What :meth:`NumpyPitchStepper.phrase` needs that stays the same from note to note:
    the search's limits, the chooser's settings and candidates (see
    :meth:`streamsonic.conductor.Conductor._phrase`)."""

    octave: int  # candidates per octave: the search's largest leap
    reach: float  # semitones around the data's pitch that the search's end looks at
    window: float  # semitones within which the data's note may move (Chooser.window)
    influence: float
    kernel_scale: float
    cand_class: np.ndarray  # each candidate's model class
    cand_pitch: np.ndarray  # each candidate's pitch (float64)
    cand_x: np.ndarray  # each candidate's network input, in the stepper's precision
    beam: int  # paths the search keeps


class PitchStepper(Protocol):
    """What the engine needs from a stepper."""

    n_classes: int
    device: Any  # "cpu" (NumPy) or a torch.device

    def initial_state(self, batch: int = 1) -> State: ...

    def step(self, inputs: np.ndarray, state: State) -> tuple[np.ndarray, State]: ...

    def propose(self, inputs: np.ndarray, state: State) -> tuple[np.ndarray, Pending]: ...

    def commit(self, pending: Pending, inputs: np.ndarray) -> State: ...

    def stack(self, states: list[State]) -> State: ...

    def split(self, state: State, batch: int) -> list[State]: ...

    def take(self, state: State, rows: np.ndarray) -> State: ...

    def step_rows(self, inputs: np.ndarray, state: State,
                  rows: np.ndarray) -> tuple[np.ndarray, State]: ...


@dataclass(frozen=True, slots=True)
class StepWeights:
    """A stacked-LSTM network's weights laid out for one-timestep evaluation (torch)."""

    w_ih1_t: torch.Tensor  # (input_size, 4 * hidden1)
    w_hh1_t: torch.Tensor  # (hidden1, 4 * hidden1)
    b1: torch.Tensor  # both first-layer biases, summed
    w2: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # for torch.lstm_cell
    head_t: torch.Tensor
    head_b: torch.Tensor


def step_weights(network: torch.nn.Module) -> StepWeights:
    """The weights of a network with ``lstm1``, ``lstm2`` and ``head`` (pitch or temporal)."""
    import torch  # noqa: PLC0415

    n: Any = network
    with torch.no_grad():
        return StepWeights(
            w_ih1_t=n.lstm1.weight_ih_l0.detach().t().contiguous(),
            w_hh1_t=n.lstm1.weight_hh_l0.detach().t().contiguous(),
            b1=(n.lstm1.bias_ih_l0 + n.lstm1.bias_hh_l0).detach(),
            w2=(n.lstm2.weight_ih_l0.detach(), n.lstm2.weight_hh_l0.detach(),
                n.lstm2.bias_ih_l0.detach(), n.lstm2.bias_hh_l0.detach()),
            head_t=n.head.weight.detach().t().contiguous(),
            head_b=n.head.bias.detach(),
        )


#: A pitch network's weights: its state dict's names -> arrays (NumPy, or torch tensors).
Weights = Mapping[str, Any]


def make_stepper(network: PitchLSTM | Weights, device: Any = "cpu",
                 dtype: Any = None) -> PitchStepper:
    """The fastest stepper for ``device``: NumPy on CPU (from a network or from its weights
    as arrays), torch elsewhere (a network, or arrays rebuilt into one)."""
    if str(device) == "cpu":
        return NumpyPitchStepper(network, dtype=dtype)
    if isinstance(network, Mapping):
        from streamsonic.model.arrays import pitch_network_from  # noqa: PLC0415 - torch

        network = pitch_network_from(network)
    return TorchPitchStepper(network, device=device, dtype=dtype)


def _float64(dtype: Any) -> bool:
    """Whether ``dtype`` (NumPy's, as a dtype, a type or a name, or torch's; None:
    float32) asks for float64."""
    if dtype is None:
        return False
    name = dtype.__name__ if isinstance(dtype, type) else str(dtype)
    return name.rsplit(".", 1)[-1] in ("float64", "double")


def _arrays(weights: PitchLSTM | Weights) -> dict[str, np.ndarray]:
    """A network's state dict (or a table of arrays or tensors) as NumPy arrays."""
    table: Any = weights if isinstance(weights, Mapping) else weights.state_dict()
    return {k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
            for k, v in table.items()}


class NumpyPitchStepper:
    """CPU stepper: NumPy arrays, no torch. A batch is one matrix product per layer (the
    weights read once for all its streams) and one compiled gate kernel call per layer
    (:mod:`streamsonic.model.kernels`)."""

    def __init__(self, network: PitchLSTM | Weights, dtype: Any = None) -> None:
        from streamsonic.model import kernels, phrase_kernel  # noqa: PLC0415 - numba, CPU only

        sd = _arrays(network)
        w_ih1 = sd["lstm1.weight_ih_l0"]
        if w_ih1.ndim != 2 or w_ih1.shape[1] != 1:
            raise ValueError("the pitch stepper needs a network with a scalar input")
        self._k = kernels
        self._pk = phrase_kernel
        self.device = "cpu"
        self.dtype = np.float64 if _float64(dtype) else np.float32
        f = self.dtype
        self.h1 = sd["lstm1.weight_hh_l0"].shape[1]
        self.h2 = sd["lstm2.weight_hh_l0"].shape[1]
        self.n_classes = sd["head.weight"].shape[0]

        def arr(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(a, dtype=f)

        self._w_ih1 = arr(w_ih1[:, 0])
        self._w_hh1_t = arr(sd["lstm1.weight_hh_l0"].T)
        # Biases summed in float64, then rounded once.
        self._b1 = arr(sd["lstm1.bias_ih_l0"].astype(np.float64) + sd["lstm1.bias_hh_l0"])
        self._w_ih2_t = arr(sd["lstm2.weight_ih_l0"].T)
        self._w_hh2_t = arr(sd["lstm2.weight_hh_l0"].T)
        self._b2 = arr(sd["lstm2.bias_ih_l0"].astype(np.float64) + sd["lstm2.bias_hh_l0"])
        self._head_t = arr(sd["head.weight"].T)
        self._head_b = arr(sd["head.bias"])
        self._scale1 = self._scale(self.h1)
        self._scale2 = self._scale(self.h2)
        self._zero2 = np.zeros(4 * self.h2, f)
        #: Where h1, c1, h2 and c2 end in a stream's row (see :meth:`split`).
        self._part_ends = (self.h1, 2 * self.h1, 2 * self.h1 + self.h2,
                           2 * (self.h1 + self.h2))
        # A few rows (:meth:`_cells`): everything after the first layer's recurrent product
        # in one compiled call, its small weights packed (fewer arguments to pass).
        self._v1 = arr(np.stack([self._b1, self._w_ih1, self._scale1]))
        self._w2 = arr(np.concatenate([self._w_hh2_t, self._w_ih2_t]))
        self._v2 = arr(np.stack([self._b2, self._scale2]))
        self._head = arr(np.concatenate([self._head_t, self._head_b[None, :]]))
        self._index = np.arange(max(FEW_ROWS, ROW_BY_ROW), dtype=np.intp)
        # What :meth:`propose` of one stream computes and drops (its new state: commit
        # computes the chosen input's) lands in these, not in fresh arrays.
        self._scratch = self._empty_state(1)

    def _scale(self, hidden: int) -> np.ndarray:
        scale = np.full(4 * hidden, 0.5, self.dtype)
        scale[2 * hidden : 3 * hidden] = 1.0
        return scale

    def _empty_state(self, batch: int) -> State:
        f = self.dtype
        return (np.empty((batch, self.h1), f), np.empty((batch, self.h1), f),
                np.empty((batch, self.h2), f), np.empty((batch, self.h2), f))

    def initial_state(self, batch: int = 1) -> State:
        """Zero state for ``batch`` streams."""
        z1 = np.zeros((batch, self.h1), self.dtype)
        z2 = np.zeros((batch, self.h2), self.dtype)
        return (z1, z1.copy(), z2, z2.copy())

    def _x(self, inputs: np.ndarray) -> np.ndarray:
        if type(inputs) is np.ndarray and inputs.ndim == 1:  # not a subclass
            return inputs.astype(self.dtype)  # (one call: a step's overhead counts)
        return np.ascontiguousarray(np.atleast_1d(inputs), dtype=self.dtype)

    def step(self, inputs: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """One timestep: inputs (batch,) -> logits (batch, n_classes), new state.

        :meth:`propose` then :meth:`commit` with the same inputs, the layers evaluated
        once (the same products in the same order: the same numbers). Up to
        ``FEW_ROWS`` streams, each row as a stream stepped alone (:meth:`_cells`)."""
        h1, c1, h2, c2 = state
        n = h1.shape[0]
        if n <= FEW_ROWS:
            index = self._index[:n]
            return self._cells(self._recurrent(h1), index, self._x(inputs), state, index)
        base = h1 @ self._w_hh1_t
        base += self._b1
        shared = h2 @ self._w_hh2_t
        shared += self._b2
        new = self._layers(base, shared, self._x(inputs), c1, c2)
        logits = new[2] @ self._head_t
        logits += self._head_b
        return logits, new

    def step_rows(self, inputs: np.ndarray, state: State,
                  rows: np.ndarray) -> tuple[np.ndarray, State]:
        """:meth:`step` of ``take(state, rows)`` (a row of ``state`` may be stepped
        several times, with different inputs: the paths of a search that grow from one).

        The first layer's recurrent product is computed once per distinct row, one row at a
        time for up to ``ROW_BY_ROW`` distinct rows (:meth:`_recurrent`), and up to
        ``PATH_ROWS`` rows the rest in one compiled call (:meth:`_cells`): each row has the
        bits of a stream stepped alone; a larger batch's products round as BLAS blocks them
        (a batch's logits match to about 1e-6).
        """
        rows = np.asarray(rows, dtype=np.intp)
        h1, c1, h2, c2 = state
        first: dict[int, int] = {}  # each distinct row -> its place among them
        where = [first.setdefault(r, len(first)) for r in rows.tolist()]
        base = self._recurrent(h1[list(first)])
        if len(rows) <= PATH_ROWS:
            return self._cells(base, np.array(where, dtype=np.intp), self._x(inputs), state,
                               rows)
        base = base[where]
        base += self._b1
        shared = h2[rows] @ self._w_hh2_t
        shared += self._b2
        new = self._layers(base, shared, self._x(inputs), c1[rows], c2[rows])
        logits = new[2] @ self._head_t
        logits += self._head_b
        return logits, new

    def _recurrent(self, h1: np.ndarray) -> np.ndarray:
        """``h1 @ W_hh1`` (the first layer's recurrent product): up to ``ROW_BY_ROW`` rows
        in one compiled call, each row alone (:func:`~streamsonic.model.kernels.
        rows_product`: a row's bits do not depend on the others), more in one BLAS product.
        One-thread OpenBLAS (0.3.31) takes 10.5 µs for one row of this model and 58 µs for
        2 rows on the CPU of 2026-12-05; the compiled sum 8.2 µs a row."""
        n = h1.shape[0]
        if n > ROW_BY_ROW:
            return h1 @ self._w_hh1_t
        out = np.empty((n, self._w_hh1_t.shape[1]), self.dtype)
        self._k.rows_product(h1, self._index[:n], self._w_hh1_t, out)
        return out

    def _cells(self, base: np.ndarray, where: np.ndarray, x: np.ndarray, state: State,
               rows: np.ndarray, out: State | None = None) -> tuple[np.ndarray, State]:
        """A few rows' step after the first layer's recurrent product ``base`` (without
        bias): row ``r`` from ``base[where[r]]`` and row ``rows[r]`` of ``state``, with input
        ``x[r]``; its logits and new state (into ``out`` if given). One compiled call
        (:func:`~streamsonic.model.kernels.cells`): the per-row NumPy products and gate
        passes it replaces cost more in calls than in arithmetic (one row: 24.1 µs for a
        propose and a commit before, 20.3 after, 9.3 of it the recurrent product; 2 paths
        of a search from one: 36.2 against 24.5)."""
        _, c1, h2, c2 = state
        n = x.shape[0]
        new = self._empty_state(n) if out is None else out
        logits = np.empty((n, self.n_classes), self.dtype)
        self._k.cells(base, where, x, c1, rows, h2, c2, self._v1, self._w2, self._v2,
                      self._head, *new, logits)
        return logits, new

    def phrase(self, setup: PhraseSetup, plan: np.ndarray, state: State, logits: np.ndarray,
               target: int, data_pitch: float, held: float, anchor: int, beyond: bool,
               last: int) -> tuple[int, np.ndarray, State, np.ndarray]:
        """One stream's phrase in one compiled call (:mod:`streamsonic.model.phrase_kernel`:
        the search for the notes that lead to the data's note, that note, the step through
        it): ``plan`` the fallback candidate of each note to add, ``state`` and ``logits``
        (1, classes; float64) the stream's, ``target`` the candidate nearest to the data's
        pitch, ``held`` and ``anchor`` the data pitch and candidate of the stream's last data
        note (NaN, -1: none), ``beyond`` whether the data alone decides (beyond the
        ordinary range), ``last`` the candidate played last. Returns the data's note (a
        candidate index), the added notes, and the stream's new state and logits."""
        leads = np.empty(plan.shape[0], np.int64)
        new = self._empty_state(1)
        out = np.empty((1, self.n_classes), np.float64)
        h1, c1, h2, c2 = state
        u = setup
        chosen = self._pk.phrase(
            plan, target, u.octave, data_pitch, u.reach, u.window, u.influence,
            u.kernel_scale, held, anchor, beyond, last, self._w_hh1_t, self._v1, self._w2,
            self._v2, self._head, u.cand_class, u.cand_pitch, u.cand_x, h1, c1, h2, c2,
            logits, u.beam, leads, *new, out)
        return int(chosen), leads, new, out

    def run(self, setup: PhraseSetup, data_pitch: np.ndarray, targets: np.ndarray,
            plain: np.ndarray, beyond: np.ndarray, limits: np.ndarray, state: State,
            logits: np.ndarray, held: float, anchor: int, last: int,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, State, np.ndarray]:
        """:meth:`phrase` of one stream's consecutive data notes in one compiled call
        (:func:`~streamsonic.model.phrase_kernel.run`): note ``i``'s plan is what
        :func:`~streamsonic.music.lead_in` plans from the note played last, at most
        ``limits[i]`` notes, none where ``plain[i]`` (an accent). Returns each note's data
        note (a candidate index), the added notes (note ``i``'s at
        ``leads[starts[i]:starts[i + 1]]``), ``starts``, and the stream's state and logits
        after the last note (the bits of :meth:`phrase` note by note)."""
        n = data_pitch.shape[0]
        chosen = np.empty(n, np.int64)
        leads = np.empty(int(limits.sum()), np.int64)
        starts = np.empty(n + 1, np.int64)
        new = _state(np.array(a, order="C") for a in state)  # (copies: theirs stay)
        out = np.ascontiguousarray(logits, dtype=np.float64).copy()
        held_a = np.array([held], np.float64)
        marks = np.array([anchor, last], np.int64)
        u = setup
        self._pk.run(
            np.ascontiguousarray(data_pitch, np.float64), targets, plain, beyond, limits,
            u.octave, u.reach, u.window, u.influence, u.kernel_scale, self._w_hh1_t,
            self._v1, self._w2, self._v2, self._head, u.cand_class, u.cand_pitch, u.cand_x,
            *new, out, held_a, marks, u.beam, chosen, leads, starts)
        return chosen, leads, starts, new, out

    def plain_run(self, chooser: Chooser, data_input: np.ndarray, data_pitch: np.ndarray,
                  uniform: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """One stream's consecutive samples, one note each, in one compiled call
        (:func:`~streamsonic.model.plain_kernel.run`): sample ``i`` steps as :meth:`propose`
        with ``data_input[i]``, ``chooser``'s choice (with ``uniform[i]`` as its draw where
        its temperature is above 0), :meth:`commit` with the chosen note's input. Returns
        each sample's note (a candidate index) and the stream's state after the last (the
        bits of those calls sample by sample)."""
        # (render's alone: not loaded with the stepper, which the daemon builds at start)
        from streamsonic.model import plain_kernel  # noqa: PLC0415

        chosen = np.empty(data_input.shape[0], np.int64)
        new = _state(np.array(a, order="C") for a in state)  # (copies: theirs stay)
        plain_kernel.run(
            self._x(data_input), np.ascontiguousarray(data_pitch, np.float64),
            np.ascontiguousarray(uniform, np.float64), chooser.influence,
            chooser.kernel_scale, chooser.temperature, chooser.cand_class,
            chooser.cand_pitch, chooser.cand_inputs.astype(self.dtype), self._w_hh1_t,
            self._v1, self._w2, self._v2, self._head, *new, chosen)
        return chosen, new

    def phrases(self, setup: PhraseSetup, plans: np.ndarray, starts: np.ndarray,
                state: State, logits: np.ndarray, targets: np.ndarray, data_pitch: np.ndarray,
                held: np.ndarray, anchor: np.ndarray, beyond: np.ndarray, last: np.ndarray,
                ) -> tuple[np.ndarray, np.ndarray, State, np.ndarray]:
        """:meth:`phrase` of several streams in one compiled call (the rows of ``state``,
        ``logits`` and the per-stream arrays; stream ``i``'s plan is
        ``plans[starts[i]:starts[i + 1]]``), each with the bits it gets alone. Returns
        each stream's data note, the added notes (sliced as the plans), and the new
        batched state and logits."""
        n = state[0].shape[0]
        leads = np.empty(plans.shape[0], np.int64)
        chosen = np.empty(n, np.int64)
        new = self._empty_state(n)
        out = np.empty((n, self.n_classes), np.float64)
        h1, c1, h2, c2 = state
        u = setup
        longest = int((starts[1:] - starts[:-1]).max()) if n else 0
        work = self._pk.work_for(n, longest, u.beam, h1, c1, h2, c2, logits,
                                 u.cand_class.shape[0], self._w_hh1_t.shape[1])
        self._pk.phrases(
            plans, starts, targets, u.octave, data_pitch, u.reach, u.window, u.influence,
            u.kernel_scale, held, anchor, beyond, last, self._w_hh1_t, self._v1, self._w2,
            self._v2, self._head, u.cand_class, u.cand_pitch, u.cand_x, h1, c1, h2, c2,
            logits, leads, *new, out, chosen, work)
        return chosen, leads, new, out

    def _layers(self, base: np.ndarray, shared: np.ndarray, x: np.ndarray, c1: np.ndarray,
                c2: np.ndarray) -> State:
        """Both layers' cells from the shared products, with ``x`` as the input (a batch
        of more than ``FEW_ROWS`` rows: BLAS's products of the whole batch)."""
        batch = base.shape[0]
        h1, c1n = np.empty((batch, self.h1), self.dtype), np.empty((batch, self.h1), self.dtype)
        self._k.gates_cell(base, x, self._w_ih1, self._scale1, c1, h1, c1n)
        gates2 = h1 @ self._w_ih2_t
        gates2 += shared
        h2, c2n = np.empty((batch, self.h2), self.dtype), np.empty((batch, self.h2), self.dtype)
        x0 = np.zeros(batch, self.dtype)
        self._k.gates_cell(gates2, x0, self._zero2, self._scale2, c2, h2, c2n)
        return (h1, c1n, h2, c2n)

    def propose(self, inputs: np.ndarray, state: State) -> tuple[np.ndarray, Pending]:
        """Logits for the next note with ``inputs`` (the data), state left unchanged."""
        h1, c1, h2, c2 = state
        n = h1.shape[0]
        if n <= FEW_ROWS:  # as step does; the state it drops lands in buffers for one
            index = self._index[:n]
            base = self._recurrent(h1)
            logits, _ = self._cells(base, index, self._x(inputs), state, index,
                                    self._scratch if n == 1 else None)
            return logits, Pending(state, base)
        base = h1 @ self._w_hh1_t
        shared = h2 @ self._w_hh2_t
        base += self._b1
        shared += self._b2
        _, _, h2n, _ = self._layers(base, shared, self._x(inputs), c1, c2)
        logits = h2n @ self._head_t
        logits += self._head_b
        return logits, Pending(state, base, shared)

    def commit(self, pending: Pending, inputs: np.ndarray) -> State:
        """The state after the same timestep with ``inputs`` (the chosen notes) instead."""
        _, c1, _, c2 = pending.state
        if pending.shared is None:  # a few rows (propose took them through _cells)
            index = self._index[:pending.base.shape[0]]
            return self._cells(pending.base, index, self._x(inputs), pending.state, index)[1]
        return self._layers(pending.base, pending.shared, self._x(inputs), c1, c2)

    def stack(self, states: list[State]) -> State:
        """Per-stream states (batch 1 each) -> one batched state."""
        if len(states) == 1:
            return states[0]
        return _state(np.concatenate(p, axis=0) for p in zip(*states, strict=True))

    def split(self, state: State, batch: int) -> list[State]:
        """One batched state -> per-stream states (batch 1 each)."""
        if batch == 1:
            return [state]
        # Each stream's four parts are views into one row of its own (a view into the
        # batch would keep the whole batch's arrays alive as long as any one of its streams
        # stays idle): one copy per stream, and stacking them again reads one row each.
        whole = np.concatenate(state, axis=1)
        a, b, c, d = self._part_ends
        rows = [whole[i : i + 1].copy() for i in range(batch)]
        return [(row[:, :a], row[:, a:b], row[:, b:c], row[:, c:d]) for row in rows]

    def take(self, state: State, rows: np.ndarray) -> State:
        """The batched state of ``rows`` (indices, repeats allowed) of a batched state, as
        new arrays."""
        return _state(s[rows] for s in state)


class TorchPitchStepper:
    """Stepper on a torch device (CUDA, or CPU for comparison), in inference mode.

    The states live on the device from :meth:`initial_state` on (``stack``/``split`` and
    both evaluations stay there); a batch of N streams is one call per operator, whatever
    N; only the logits come back to the host, for the chooser."""

    def __init__(self, network: PitchLSTM, device: Any = "cpu", dtype: Any = None) -> None:
        import torch  # noqa: PLC0415 - torch only for this backend

        if network.input_size != 1:
            raise ValueError("the pitch stepper needs a network with a scalar input")
        self._torch = torch
        self.device = torch.device(device)
        self.dtype = dtype if dtype is not None else torch.float32
        self.n_classes = network.n_classes
        self.network = network.to(device=self.device, dtype=self.dtype).eval()
        w = step_weights(self.network)
        self._w_ih1 = w.w_ih1_t[0].contiguous()  # the scalar input's column
        self._w_hh1_t, self._b1, self._w2 = w.w_hh1_t, w.b1, w.w2
        self._head_t, self._head_b = w.head_t, w.head_b

    def initial_state(self, batch: int = 1) -> State:
        """Zero state for ``batch`` streams on the device."""
        return self.network.initial_state(batch, device=self.device, dtype=self.dtype)

    def _x(self, inputs: np.ndarray) -> torch.Tensor:
        return self._torch.as_tensor(np.asarray(inputs), dtype=self.dtype).to(self.device)

    def _layer1(
        self, base: torch.Tensor, x: torch.Tensor, c1: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        torch = self._torch
        gates = torch.addcmul(base, x[:, None], self._w_ih1)
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c1 + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def step(self, inputs: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """One timestep: inputs (batch,) -> logits (batch, n_classes), new state."""
        logits, pending = self.propose(inputs, state)
        return logits, self.commit(pending, inputs)

    def propose(self, inputs: np.ndarray, state: State) -> tuple[np.ndarray, Pending]:
        """Logits for the next note with ``inputs`` (the data), state left unchanged."""
        torch = self._torch
        with torch.inference_mode():
            h1, c1, h2, c2 = state
            base = torch.addmm(self._b1, h1, self._w_hh1_t)
            h1n, _ = self._layer1(base, self._x(inputs), c1)
            h2n, _ = torch.lstm_cell(h1n, (h2, c2), *self._w2)
            logits = torch.addmm(self._head_b, h2n, self._head_t)
            return logits.double().cpu().numpy(), Pending(state, base)

    def commit(self, pending: Pending, inputs: np.ndarray) -> State:
        """The state after the same timestep with ``inputs`` (the chosen notes) instead."""
        torch = self._torch
        with torch.inference_mode():
            _, c1, h2, c2 = pending.state
            h1n, c1n = self._layer1(pending.base, self._x(inputs), c1)
            h2n, c2n = torch.lstm_cell(h1n, (h2, c2), *self._w2)
            return (h1n, c1n, h2n, c2n)

    def stack(self, states: list[State]) -> State:
        """Per-stream states (batch 1 each) -> one batched state (on the device)."""
        if len(states) == 1:
            return states[0]
        return _state(self._torch.cat(p, dim=0) for p in zip(*states, strict=True))

    def split(self, state: State, batch: int) -> list[State]:
        """One batched state -> per-stream states (batch 1 each, on the device)."""
        if batch == 1:
            return [state]
        parts = [s.split(1, dim=0) for s in state]
        return [_state(p[i] for p in parts) for i in range(batch)]

    def take(self, state: State, rows: np.ndarray) -> State:
        """The batched state of ``rows`` (indices, repeats allowed) of a batched state (on
        the device)."""
        index = self._torch.as_tensor(np.asarray(rows, dtype=np.int64), device=self.device)
        return _state(s.index_select(0, index) for s in state)

    def step_rows(self, inputs: np.ndarray, state: State,
                  rows: np.ndarray) -> tuple[np.ndarray, State]:
        """:meth:`step` of ``take(state, rows)``."""
        return self.step(inputs, self.take(state, rows))
