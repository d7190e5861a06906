"""The networks, as plain ``nn.Module``s: no state, no device policy, no I/O.

Both are two stacked LSTMs and a linear head (:class:`StackedLSTM`):

* ``PitchLSTM`` is the research's pitch-based model: one scalar input per step, an LSTM of
  256 units, a second LSTM whose width defaults to the number of classes (38 for the
  Clementi corpus), and a linear head over the pitch classes.
* ``TemporalLSTM`` reads a note vector (pitch plus timing) and predicts the next note's
  pitch, gap, duration and velocity.

State is passed explicitly as ``(h1, c1, h2, c2)``, each of shape ``(batch, hidden)``,
so a stepper can keep it per stream.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

State = tuple[Tensor, Tensor, Tensor, Tensor]
PitchState = State
TemporalState = State


def zero_state(
    batch: int, hidden1: int, hidden2: int, device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> State:
    """``(h1, c1, h2, c2)`` zeros for two stacked LSTMs."""
    dtype = dtype or torch.get_default_dtype()
    return (
        torch.zeros(batch, hidden1, device=device, dtype=dtype),
        torch.zeros(batch, hidden1, device=device, dtype=dtype),
        torch.zeros(batch, hidden2, device=device, dtype=dtype),
        torch.zeros(batch, hidden2, device=device, dtype=dtype),
    )


class StackedLSTM(nn.Module):
    """``lstm1`` -> dropout -> ``lstm2`` -> ``head``, with explicit state."""

    def __init__(self, input_size: int, hidden1: int, hidden2: int, n_out: int,
                 dropout: float) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden1 = hidden1
        self.hidden2 = hidden2
        self.lstm1 = nn.LSTM(input_size, hidden1, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.lstm2 = nn.LSTM(hidden1, hidden2, batch_first=True)
        self.head = nn.Linear(hidden2, n_out)

    def initial_state(
        self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """Zero state for ``batch`` sequences."""
        return zero_state(batch, self.hidden1, self.hidden2, device, dtype)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """``x``: (batch, time, input_size) -> head output (batch, time, n_out), new state."""
        if state is None:
            out1, (h1, c1) = self.lstm1(x)
            out2, (h2, c2) = self.lstm2(self.drop(out1))
        else:
            s_h1, s_c1, s_h2, s_c2 = (s.unsqueeze(0) for s in state)
            out1, (h1, c1) = self.lstm1(x, (s_h1, s_c1))
            out2, (h2, c2) = self.lstm2(self.drop(out1), (s_h2, s_c2))
        return self.head(out2), (h1[0], c1[0], h2[0], c2[0])


class PitchLSTM(StackedLSTM):
    """Two stacked LSTMs and a linear head over pitch classes (the output is logits)."""

    def __init__(
        self,
        n_classes: int,
        hidden1: int = 256,
        hidden2: int | None = None,
        input_size: int = 1,
        dropout: float = 0.3,
    ) -> None:
        super().__init__(input_size, hidden1, hidden2 if hidden2 is not None else n_classes,
                         n_classes, dropout)
        self.n_classes = n_classes

    def arch(self) -> dict[str, int]:
        """Sizes needed to rebuild this network (stored in checkpoints)."""
        return {
            "n_classes": self.n_classes,
            "hidden1": self.hidden1,
            "hidden2": self.hidden2,
            "input_size": self.input_size,
        }


class TemporalLSTM(StackedLSTM):
    """Two stacked LSTMs over a note vector (pitch plus timing) and one linear head.

    Input per step: ``input_size`` features (see ``streamsonic.model.temporal.TimingEncoding``).
    Output per step: one vector of ``n_classes + n_gap + n_duration + 1`` values: pitch
    logits, gap-bin logits, duration-bin logits and a velocity regression (0..1 scale).
    """

    def __init__(
        self,
        n_classes: int,
        n_gap: int,
        n_duration: int,
        input_size: int,
        hidden1: int = 256,
        hidden2: int = 128,
        dropout: float = 0.3,
    ) -> None:
        super().__init__(input_size, hidden1, hidden2, n_classes + n_gap + n_duration + 1,
                         dropout)
        self.n_classes = n_classes
        self.n_gap = n_gap
        self.n_duration = n_duration

    def arch(self) -> dict[str, int]:
        """Sizes needed to rebuild this network (stored in checkpoints)."""
        return {
            "n_classes": self.n_classes,
            "n_gap": self.n_gap,
            "n_duration": self.n_duration,
            "input_size": self.input_size,
            "hidden1": self.hidden1,
            "hidden2": self.hidden2,
        }

    def split(self, out: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Head output (..., n_out) -> (pitch logits, gap logits, duration logits, velocity)."""
        c, g, d = self.n_classes, self.n_gap, self.n_duration
        return out[..., :c], out[..., c : c + g], out[..., c + g : c + g + d], out[..., -1]
