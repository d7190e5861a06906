"""The temporal model's note encoding and its stepper (pitch *and* timing per note).

Encoding of one note (one timestep)
-----------------------------------
``[pitch, gap one-hot (16), duration one-hot (16), velocity]`` = 34 values, where

* ``pitch`` is the pitch's class position 0..1 (:class:`~streamsonic.encoding.PitchEncoding`,
  the same slot the data value goes into, so the influence mechanism is unchanged);
* ``gap`` is the time from this note's onset to the next onset, and ``duration`` the note's
  length, both in **beats**, each snapped to the nearest of 16 log-spaced grid values
  (1/16 .. 8 beats, including triplet values);
* ``velocity`` is MIDI velocity / 127.

The research used the *position of the onset within a 20 s cycle* (80 bins). That ties
rhythm to wall-clock time and to one tempo, and makes the network reconstruct every
inter-onset interval as a difference of two cycle positions modulo 80. Encoding the
inter-onset interval itself in beats carries the same information for a monophonic
line, is tempo-free, and is what the engine needs (when does the next note start).

The network (:class:`~streamsonic.model.network.TemporalLSTM`) reads note ``t`` and
predicts note ``t + 1``: pitch logits, gap and duration bins (classification) and
velocity (regression).

Tempo mapping
-------------
Training data is read in beats (MIDI ticks / ticks per beat; set_tempo is ignored). The
stepper turns beats into seconds at ``tempo`` beats per minute, 120 by default
(0.5 s per beat), which the engine passes from ``music.tempo``.

Live semantics (same as the pitch stepper)
------------------------------------------
``propose(data)`` evaluates one step from the stream's state with the data value in the
pitch slot and the previous note's timing in the timing slots; the chooser picks a pitch
from the logits; the note is played with the predicted :class:`Timing` (gap and duration
drawn from the model's distribution with the stream's generator at ``model.rhythm_temperature``,
or its most likely bins at 0); ``commit(chosen)``
re-evaluates the same step with the chosen pitch and that predicted timing, which is
what the network remembers. The first layer's ``W_hh @ h`` is shared by both evaluations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from streamsonic.encoding import PitchEncoding
from streamsonic.model.checkpoint import Checkpoint
from streamsonic.model.network import TemporalLSTM
from streamsonic.model.stepper import step_weights

#: Grid of note values in beats (gap and duration bins share it).
BEAT_GRID: tuple[float, ...] = (
    1 / 16, 1 / 8, 1 / 6, 1 / 4, 1 / 3, 3 / 8, 1 / 2, 2 / 3, 3 / 4, 1.0, 3 / 2, 2.0, 3.0, 4.0,
    6.0, 8.0,
)


@dataclass(frozen=True)
class Timing:
    """When the next note starts, how long this one lasts, how loud it is."""

    delay: float  # seconds from this note's onset to the next onset
    duration: float  # seconds
    velocity: int  # 1..127


class TimingEncoding:
    """Beats/velocity <-> bins and the network's input vector."""

    def __init__(self, gap_grid: Sequence[float] = BEAT_GRID,
                 duration_grid: Sequence[float] = BEAT_GRID) -> None:
        self.gap_grid = np.asarray(gap_grid, dtype=np.float64)
        self.duration_grid = np.asarray(duration_grid, dtype=np.float64)
        if np.any(self.gap_grid <= 0) or np.any(self.duration_grid <= 0):
            raise ValueError("timing grids must be positive beat values")
        self._log_gap = np.log(self.gap_grid)
        self._log_dur = np.log(self.duration_grid)

    @property
    def n_gap(self) -> int:
        """Number of gap bins."""
        return int(self.gap_grid.size)

    @property
    def n_duration(self) -> int:
        """Number of duration bins."""
        return int(self.duration_grid.size)

    @property
    def n_timing(self) -> int:
        """Width of the timing part of the input vector (gap + duration one-hots + velocity)."""
        return self.n_gap + self.n_duration + 1

    @property
    def input_size(self) -> int:
        """Width of the whole input vector (pitch slot first)."""
        return 1 + self.n_timing

    @staticmethod
    def _nearest(log_grid: np.ndarray, beats: np.ndarray) -> np.ndarray:
        logs = np.log(np.maximum(np.asarray(beats, dtype=np.float64), 1e-3))
        return np.abs(logs[..., None] - log_grid).argmin(axis=-1)

    def gap_bin(self, beats: np.ndarray) -> np.ndarray:
        """Nearest gap bin (log scale) of each value in beats."""
        return self._nearest(self._log_gap, beats)

    def duration_bin(self, beats: np.ndarray) -> np.ndarray:
        """Nearest duration bin (log scale) of each value in beats."""
        return self._nearest(self._log_dur, beats)

    def timing_features(self, gap_bins: np.ndarray, duration_bins: np.ndarray,
                        velocities: np.ndarray) -> np.ndarray:
        """(N,) bins and MIDI velocities -> (N, n_timing) float32 vectors."""
        g = np.asarray(gap_bins, dtype=np.int64)
        out = np.zeros((g.size, self.n_timing), dtype=np.float32)
        rows = np.arange(g.size)
        out[rows, g] = 1.0
        out[rows, self.n_gap + np.asarray(duration_bins, dtype=np.int64)] = 1.0
        out[:, -1] = np.asarray(velocities, dtype=np.float32) / 127.0
        return out

    def to_dict(self) -> dict[str, list[float]]:
        """What a checkpoint stores to rebuild this encoding."""
        return {"gap_grid": self.gap_grid.tolist(), "duration_grid": self.duration_grid.tolist()}


def temporal_parts(ckpt: Checkpoint) -> tuple[TemporalLSTM, TimingEncoding, dict[str, Any]]:
    """The network (trained weights, eval mode, CPU), timing encoding and first-note timing."""
    from streamsonic.errors import CheckpointError  # noqa: PLC0415

    if ckpt.kind != "temporal":
        raise CheckpointError(f"{ckpt.path}: is a {ckpt.kind!r} checkpoint, not a temporal model; "
                              "pass one made by 'streamsonic train temporal'")
    arch = ckpt.arch
    try:
        timing = TimingEncoding(arch["gap_grid"], arch["duration_grid"])
        net = TemporalLSTM(
            n_classes=int(arch["n_classes"]), n_gap=int(arch["n_gap"]),
            n_duration=int(arch["n_duration"]), input_size=int(arch["input_size"]),
            hidden1=int(arch["hidden1"]), hidden2=int(arch["hidden2"]),
        )
        net.load_state_dict(ckpt.state_dict)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{ckpt.path}: weights do not match the temporal network ({err}); "
            "retrain with 'streamsonic train temporal'"
        ) from None
    default = dict(arch.get("default_timing", {"gap": 0.5, "duration": 0.5, "velocity": 80}))
    return net.eval(), timing, default


@dataclass(frozen=True, slots=True)
class TemporalStepState:
    """Per-stream (or batched) state: LSTM ``(h1, c1, h2, c2)`` and the last note's timing."""

    h1: torch.Tensor
    c1: torch.Tensor
    h2: torch.Tensor
    c2: torch.Tensor
    timing: torch.Tensor  # (batch, n_timing): timing part of the last note's input vector


@dataclass(frozen=True, slots=True)
class TemporalPending:
    """A proposed step: its start state, the shared first-layer product, predicted timing."""

    state: TemporalStepState
    base: torch.Tensor
    timing: torch.Tensor  # (batch, n_timing) predicted timing of the chosen note


class TemporalStepper:
    """Advance a temporal network one note at a time on any torch device."""

    def __init__(self, network: TemporalLSTM, timing: TimingEncoding, classes: Sequence[int],
                 device: torch.device | str = "cpu", tempo: float = 120.0,
                 default_timing: dict[str, float] | None = None,
                 temperature: float = 0.0) -> None:
        if tempo <= 0:
            raise ValueError("tempo must be > 0 beats per minute")
        if not temperature >= 0:
            raise ValueError("rhythm temperature must be >= 0")
        self.temperature = float(temperature)
        self.device = torch.device(device)
        self.encoding = PitchEncoding(classes)
        self.n_classes = network.n_classes
        self.timing_encoding = timing
        self.seconds_per_beat = 60.0 / tempo
        self.network = network.to(self.device).eval()
        w = step_weights(self.network)
        self._w_ih1_t, self._w_hh1_t, self._b1, self._w2 = w.w_ih1_t, w.w_hh1_t, w.b1, w.w2
        self._head_t, self._head_b = w.head_t, w.head_b
        d = default_timing or {"gap": 0.5, "duration": 0.5, "velocity": 80}
        first = timing.timing_features(timing.gap_bin(np.array([d["gap"]])),
                                       timing.duration_bin(np.array([d["duration"]])),
                                       np.array([d["velocity"]]))
        self._first_timing = torch.as_tensor(first, device=self.device)

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, device: torch.device | str = "cpu",
                        tempo: float = 120.0, temperature: float = 0.0) -> TemporalStepper:
        """The stepper for a temporal checkpoint; ``tempo`` maps beats to seconds,
        ``temperature`` is how gap and duration are drawn (see :meth:`propose`; 0: the
        most likely, the daemon passes ``model.rhythm_temperature``)."""
        net, timing, default = temporal_parts(ckpt)
        return cls(net, timing, ckpt.classes, device=device, tempo=tempo, default_timing=default,
                   temperature=temperature)

    def initial_state(self, batch: int = 1) -> TemporalStepState:
        """Zero LSTM state; the "previous note" timing is the training data's most common."""
        h1, c1, h2, c2 = self.network.initial_state(batch, device=self.device)
        return TemporalStepState(h1, c1, h2, c2, self._first_timing.expand(batch, -1).clone())

    def _x(self, inputs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(inputs, dtype=np.float32).reshape(-1),
                               device=self.device)

    def _forward(self, base: torch.Tensor, pitch: torch.Tensor, timing: torch.Tensor,
                 state: TemporalStepState) -> tuple[torch.Tensor, ...]:
        x = torch.cat([pitch[:, None], timing], dim=1)
        gates = base + x @ self._w_ih1_t
        i, f, g, o = gates.chunk(4, dim=1)
        c1 = torch.sigmoid(f) * state.c1 + torch.sigmoid(i) * torch.tanh(g)
        h1 = torch.sigmoid(o) * torch.tanh(c1)
        h2, c2 = torch.lstm_cell(h1, (state.h2, state.c2), *self._w2)
        return h1, c1, h2, c2

    def _bins(self, logits: torch.Tensor, uniform: np.ndarray | None) -> np.ndarray:
        """One bin per row: the most likely, or drawn from ``softmax(logits / T)`` with one
        uniform number per row (inverse CDF, so a generator's draw decides it)."""
        if uniform is None or self.temperature <= 0.0:
            return logits.argmax(dim=1).cpu().numpy()
        z = logits.double().cpu().numpy() / self.temperature
        p = np.exp(z - z.max(axis=1, keepdims=True))
        cdf = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
        picks = (cdf < uniform[:, None]).sum(axis=1)
        return np.minimum(picks, logits.shape[1] - 1)

    @torch.inference_mode()
    def propose(self, data_inputs: np.ndarray, state: TemporalStepState,
                rngs: Sequence[np.random.Generator] | None = None,
                ) -> tuple[np.ndarray, list[Timing], TemporalPending]:
        """Pitch logits (B, C) and the next note's timing with the data in the pitch slot.

        Gap and duration are the most likely bins, or, given one generator per row and a
        temperature above 0, drawn from the model's distributions with **one** uniform
        number per row for both (the same quantile of each: the network predicts them
        separately, and drawn independently a note of a long gap would often get a short
        duration, which the data almost never has). Velocity is the regression's value.
        """
        base = torch.addmm(self._b1, state.h1, self._w_hh1_t)
        _, _, h2, _ = self._forward(base, self._x(data_inputs), state.timing, state)
        out = torch.addmm(self._head_b, h2, self._head_t)
        logits, gap, dur, vel = self.network.split(out)
        draws = (np.array([rng.random() for rng in rngs], dtype=np.float64)
                 if rngs is not None and self.temperature > 0.0 else None)
        gap_bin = self._bins(gap, draws)
        dur_bin = self._bins(dur, draws)
        enc = self.timing_encoding
        velocity = np.clip(np.rint(vel.clamp(0.0, 1.0).cpu().numpy() * 127), 1, 127)
        timings = [
            Timing(
                delay=float(enc.gap_grid[g] * self.seconds_per_beat),
                duration=float(enc.duration_grid[d] * self.seconds_per_beat),
                velocity=int(v),
            )
            for g, d, v in zip(gap_bin, dur_bin, velocity, strict=True)
        ]
        predicted = torch.as_tensor(enc.timing_features(gap_bin, dur_bin, velocity),
                                    device=self.device)
        return logits.double().cpu().numpy(), timings, TemporalPending(state, base, predicted)

    @torch.inference_mode()
    def commit(self, pending: TemporalPending, chosen_inputs: np.ndarray) -> TemporalStepState:
        """The state after the same step with the chosen pitch and the predicted timing."""
        h1, c1, h2, c2 = self._forward(pending.base, self._x(chosen_inputs), pending.timing,
                                       pending.state)
        return TemporalStepState(h1, c1, h2, c2, pending.timing)

    @torch.inference_mode()
    def step(self, inputs: np.ndarray,
             state: TemporalStepState) -> tuple[np.ndarray, list[Timing], TemporalStepState]:
        """Propose and commit with the same pitch input (the model playing on its own)."""
        logits, timings, pending = self.propose(inputs, state)
        return logits, timings, self.commit(pending, inputs)

    @staticmethod
    def stack(states: list[TemporalStepState]) -> TemporalStepState:
        """Per-stream states (batch 1 each) -> one batched state."""
        if len(states) == 1:
            return states[0]
        return TemporalStepState(*(torch.cat([getattr(s, f) for s in states], dim=0)
                                   for f in ("h1", "c1", "h2", "c2", "timing")))

    @staticmethod
    def split(state: TemporalStepState, batch: int) -> list[TemporalStepState]:
        """One batched state -> per-stream states (batch 1 each)."""
        if batch == 1:
            return [state]
        parts = [getattr(state, f).split(1, dim=0) for f in ("h1", "c1", "h2", "c2", "timing")]
        return [TemporalStepState(*(p[i] for p in parts)) for i in range(batch)]
