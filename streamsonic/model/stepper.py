"""Advance a pitch network one timestep at a time, with its state kept by the caller.

The research re-ran a 50-step window through the network for every sample. A recurrent
network does not need that: its ``(h, c)`` after ``t`` steps summarises the history, so
each sample costs one timestep. The influence semantics need two evaluations of that
timestep from the same state: one with the data value as input (whose logits choose the
note) and one with the chosen note as input (which is what the network remembers). The
first layer's recurrent product ``W_hh @ h`` does not depend on the input, so
``propose``/``commit`` compute it once and share it; that product is most of the work.

Two backends with one interface:

* :class:`NumpyPitchStepper` - CPU: one compiled (numba) kernel call per timestep, since at
  batch sizes of a few streams PyTorch's per-operator dispatch would cost more than the
  arithmetic (measured in ``bench/step.py``).
* :class:`TorchPitchStepper` - any torch device (CUDA), inference mode.

Logits always come back as a NumPy array ``(batch, n_classes)`` for the chooser.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from streamsonic.errors import DeviceError
from streamsonic.model.network import PitchLSTM

#: Opaque per-stream (or batched) state: four arrays/tensors (h1, c1, h2, c2), (batch, H).
State = tuple[Any, Any, Any, Any]


def _state(parts: Iterable[Any]) -> State:
    """The four parts ``(h1, c1, h2, c2)`` as a :data:`State`."""
    h1, c1, h2, c2 = parts
    return (h1, c1, h2, c2)


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA when present, else CPU. ``"cuda"`` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise DeviceError(f"unknown device {name!r}; use auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(
            f"device {name!r} was asked for but PyTorch sees no CUDA GPU "
            f"(torch {torch.__version__}); use --device cpu or auto"
        )
    return torch.device(name)


@dataclass(frozen=True, slots=True)
class Pending:
    """A proposed step: the state it started from and the shared first-layer product."""

    state: State
    base: Any  # W_hh1 @ h1 + b1, (batch, 4 * hidden1)


class PitchStepper(Protocol):
    """What the engine needs from a stepper."""

    n_classes: int
    device: torch.device

    def initial_state(self, batch: int = 1) -> State: ...

    def step(self, inputs: np.ndarray, state: State) -> tuple[np.ndarray, State]: ...

    def propose(self, inputs: np.ndarray, state: State) -> tuple[np.ndarray, Pending]: ...

    def commit(self, pending: Pending, inputs: np.ndarray) -> State: ...

    def stack(self, states: list[State]) -> State: ...

    def split(self, state: State, batch: int) -> list[State]: ...


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


def make_stepper(network: PitchLSTM, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> PitchStepper:
    """The fastest stepper for ``device``: NumPy on CPU, torch elsewhere."""
    dev = torch.device(device)
    if dev.type == "cpu":
        return NumpyPitchStepper(network, dtype=dtype)
    return TorchPitchStepper(network, device=dev, dtype=dtype)


def _weights(network: PitchLSTM) -> dict[str, np.ndarray]:
    sd = {k: v.detach().cpu().double().numpy() for k, v in network.state_dict().items()}
    return {
        "w_ih1": sd["lstm1.weight_ih_l0"],
        "w_hh1": sd["lstm1.weight_hh_l0"],
        "b1": sd["lstm1.bias_ih_l0"] + sd["lstm1.bias_hh_l0"],
        "w_ih2": sd["lstm2.weight_ih_l0"],
        "w_hh2": sd["lstm2.weight_hh_l0"],
        "b2": sd["lstm2.bias_ih_l0"] + sd["lstm2.bias_hh_l0"],
        "head_w": sd["head.weight"],
        "head_b": sd["head.bias"],
    }


class NumpyPitchStepper:
    """CPU stepper: NumPy arrays, each timestep one compiled kernel call
    (:mod:`streamsonic.model.kernels`)."""

    def __init__(self, network: PitchLSTM, dtype: torch.dtype = torch.float32) -> None:
        if network.input_size != 1:
            raise ValueError("the pitch stepper needs a network with a scalar input")
        from streamsonic.model import kernels  # noqa: PLC0415 - numba import, CPU only

        self._k = kernels
        self.device = torch.device("cpu")
        self.n_classes = network.n_classes
        self.h1 = network.hidden1
        self.h2 = network.hidden2
        self.dtype = np.float64 if dtype == torch.float64 else np.float32
        w = _weights(network)
        f = self.dtype
        self._w_ih1 = np.ascontiguousarray(w["w_ih1"][:, 0], dtype=f)
        self._w_hh1_t = np.ascontiguousarray(w["w_hh1"].T, dtype=f)
        self._b1 = np.ascontiguousarray(w["b1"], dtype=f)
        w2 = np.concatenate([w["w_ih2"], w["w_hh2"]], axis=1)
        self._w2_t = np.ascontiguousarray(w2.T, dtype=f)
        self._b2 = np.ascontiguousarray(w["b2"], dtype=f)
        self._head_t = np.ascontiguousarray(w["head_w"].T, dtype=f)
        self._head_b = np.ascontiguousarray(w["head_b"], dtype=f)

    def initial_state(self, batch: int = 1) -> State:
        """Zero state for ``batch`` streams."""
        z1 = np.zeros((batch, self.h1), self.dtype)
        z2 = np.zeros((batch, self.h2), self.dtype)
        return (z1, z1.copy(), z2, z2.copy())

    def _x(self, inputs: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.atleast_1d(inputs), dtype=self.dtype)

    def step(self, inputs: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """One timestep: inputs (batch,) -> logits (batch, n_classes), new state."""
        logits, pending = self.propose(inputs, state)
        return logits, self.commit(pending, inputs)

    def propose(self, inputs: np.ndarray, state: State) -> tuple[np.ndarray, Pending]:
        """Logits for the next note with ``inputs`` (the data), state left unchanged."""
        h1, c1, h2, c2 = state
        batch = h1.shape[0]
        base = np.empty((batch, 4 * self.h1), self.dtype)
        logits = np.empty((batch, self.n_classes), self.dtype)
        self._k.propose(h1, c1, h2, c2, self._x(inputs), self._w_hh1_t, self._w_ih1, self._b1,
                        self._w2_t, self._b2, self._head_t, self._head_b, base, logits)
        return logits, Pending(state, base)

    def commit(self, pending: Pending, inputs: np.ndarray) -> State:
        """The state after the same timestep with ``inputs`` (the chosen notes) instead."""
        _, c1, h2, c2 = pending.state
        batch = c1.shape[0]
        out = self.initial_state(batch)
        self._k.commit(pending.base, c1, h2, c2, self._x(inputs), self._w_ih1, self._w2_t,
                       self._b2, *out)
        return out

    def stack(self, states: list[State]) -> State:
        """Per-stream states (batch 1 each) -> one batched state."""
        if len(states) == 1:
            return states[0]
        return _state(np.concatenate(p, axis=0) for p in zip(*states, strict=True))

    def split(self, state: State, batch: int) -> list[State]:
        """One batched state -> per-stream states (batch 1 each)."""
        if batch == 1:
            return [state]
        return [_state(np.ascontiguousarray(s[i : i + 1]) for s in state) for i in range(batch)]


class TorchPitchStepper:
    """Stepper on a torch device (CUDA, or CPU for comparison), in inference mode."""

    def __init__(self, network: PitchLSTM, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        if network.input_size != 1:
            raise ValueError("the pitch stepper needs a network with a scalar input")
        self.device = torch.device(device)
        self.dtype = dtype
        self.n_classes = network.n_classes
        self.network = network.to(device=self.device, dtype=dtype).eval()
        w = step_weights(self.network)
        self._w_ih1 = w.w_ih1_t[0].contiguous()  # the scalar input's column
        self._w_hh1_t, self._b1, self._w2 = w.w_hh1_t, w.b1, w.w2
        self._head_t, self._head_b = w.head_t, w.head_b

    def initial_state(self, batch: int = 1) -> State:
        """Zero state for ``batch`` streams on the device."""
        return self.network.initial_state(batch, device=self.device, dtype=self.dtype)

    def _x(self, inputs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(inputs), dtype=self.dtype).to(self.device)

    def _layer1(
        self, base: torch.Tensor, x: torch.Tensor, c1: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        gates = torch.addcmul(base, x[:, None], self._w_ih1)
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c1 + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    @torch.inference_mode()
    def step(self, inputs: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """One timestep: inputs (batch,) -> logits (batch, n_classes), new state."""
        logits, pending = self.propose(inputs, state)
        return logits, self.commit(pending, inputs)

    @torch.inference_mode()
    def propose(self, inputs: np.ndarray, state: State) -> tuple[np.ndarray, Pending]:
        """Logits for the next note with ``inputs`` (the data), state left unchanged."""
        h1, c1, h2, c2 = state
        base = torch.addmm(self._b1, h1, self._w_hh1_t)
        h1n, _ = self._layer1(base, self._x(inputs), c1)
        h2n, _ = torch.lstm_cell(h1n, (h2, c2), *self._w2)
        logits = torch.addmm(self._head_b, h2n, self._head_t)
        return logits.double().cpu().numpy(), Pending(state, base)

    @torch.inference_mode()
    def commit(self, pending: Pending, inputs: np.ndarray) -> State:
        """The state after the same timestep with ``inputs`` (the chosen notes) instead."""
        _, c1, h2, c2 = pending.state
        h1n, c1n = self._layer1(pending.base, self._x(inputs), c1)
        h2n, c2n = torch.lstm_cell(h1n, (h2, c2), *self._w2)
        return (h1n, c1n, h2n, c2n)

    def stack(self, states: list[State]) -> State:
        """Per-stream states (batch 1 each) -> one batched state."""
        if len(states) == 1:
            return states[0]
        return _state(torch.cat(p, dim=0) for p in zip(*states, strict=True))

    def split(self, state: State, batch: int) -> list[State]:
        """One batched state -> per-stream states (batch 1 each)."""
        if batch == 1:
            return [state]
        parts = [s.split(1, dim=0) for s in state]
        return [_state(p[i] for p in parts) for i in range(batch)]
