"""The streaming stepper chooses exactly the notes of a from-scratch reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamsonic.encoding import PitchEncoding
from streamsonic.model.choice import Chooser
from streamsonic.model.network import PitchLSTM
from streamsonic.model.stepper import (
    NumpyPitchStepper,
    TorchPitchStepper,
    make_stepper,
    resolve_device,
)
from streamsonic.music import scale_pitches
from tests.conftest import CLASSES


def reference_notes(net: PitchLSTM, chooser: Chooser, data: np.ndarray) -> list[int]:
    """The research's semantics, recomputed from scratch for every sample: the whole
    history of chosen notes, then the data value in the newest slot, through the full
    network from a zero state; greedy choice."""
    chosen_inputs: list[float] = []
    notes: list[int] = []
    with torch.no_grad():
        for value in data:
            d = chooser.data_pitch(np.array([value]))
            seq = [*chosen_inputs, float(chooser.data_input(d)[0])]
            x = torch.tensor(seq, dtype=torch.float32).reshape(1, -1, 1)
            logits, _ = net(x)
            idx = chooser.choose(logits[0, -1:].numpy(), d, [np.random.default_rng(0)])[0]
            notes.append(int(chooser.candidates[idx]))
            chosen_inputs.append(float(chooser.candidate_input(np.array([idx]))[0]))
    return notes


def streamed_notes(stepper: object, chooser: Chooser, data: np.ndarray) -> list[int]:
    state = stepper.initial_state(1)  # type: ignore[attr-defined]
    notes = []
    for value in data:
        d = chooser.data_pitch(np.array([value]))
        logits, pending = stepper.propose(chooser.data_input(d), state)  # type: ignore[attr-defined]
        idx = chooser.choose(logits, d, [np.random.default_rng(0)])
        state = stepper.commit(pending, chooser.candidate_input(idx))  # type: ignore[attr-defined]
        notes.append(int(chooser.candidates[idx[0]]))
    return notes


@pytest.fixture(scope="module")
def net() -> PitchLSTM:
    torch.manual_seed(7)
    net = PitchLSTM(n_classes=len(CLASSES)).eval()
    # Random init gives near-uniform logits; sharpen the head so the model has opinions.
    with torch.no_grad():
        net.head.weight.mul_(8.0)
    return net


INFLUENCE = 0.3


@pytest.fixture(scope="module")
def reference(net: PitchLSTM) -> tuple[Chooser, np.ndarray, list[int]]:
    """500 random samples and the reference's notes (computed once: it is O(n^2))."""
    chooser = Chooser(PitchEncoding(CLASSES), scale_pitches("chromatic", "C", 50, 89),
                      influence=INFLUENCE)
    data = np.random.default_rng(42).random(500)
    return chooser, data, reference_notes(net, chooser, data)


@pytest.mark.parametrize("backend", [NumpyPitchStepper, TorchPitchStepper])
def test_stepper_matches_full_recompute(
    net: PitchLSTM, reference: tuple[Chooser, np.ndarray, list[int]], backend: type
) -> None:
    chooser, data, expected = reference
    got = streamed_notes(backend(net), chooser, data)
    assert got == expected
    # The model actually had a say: the notes are not just the data quantized.
    nearest = [int(chooser.candidates[np.argmin(np.abs(chooser.candidates - d))])
               for d in chooser.data_pitch(data)]
    assert sum(a != b for a, b in zip(got, nearest, strict=True)) > 50


def test_batched_step_equals_single_streams(net: PitchLSTM) -> None:
    stepper = NumpyPitchStepper(net)
    rng = np.random.default_rng(3)
    singles = [stepper.initial_state(1) for _ in range(3)]
    batch = stepper.stack(singles)
    for _ in range(20):
        x = rng.random(3)
        logits_b, batch = stepper.step(x, batch)
        for i in range(3):
            logits_i, singles[i] = stepper.step(x[i : i + 1], singles[i])
            np.testing.assert_allclose(logits_b[i], logits_i[0], rtol=1e-5, atol=1e-5)
    for i, part in enumerate(stepper.split(batch, 3)):
        np.testing.assert_allclose(part[0], singles[i][0], rtol=1e-5, atol=1e-5)


def test_step_equals_network_forward(net: PitchLSTM) -> None:
    seq = torch.rand(2, 40, 1)
    with torch.no_grad():
        ref, _ = net(seq)
    stepper = NumpyPitchStepper(net)
    state = stepper.initial_state(2)
    outs = []
    for t in range(40):
        logits, state = stepper.step(seq[:, t, 0].numpy(), state)
        outs.append(logits)
    np.testing.assert_allclose(np.stack(outs, axis=1), ref.numpy(), atol=1e-5)


def test_cpu_gets_the_compiled_stepper(net: PitchLSTM) -> None:
    assert isinstance(make_stepper(net, "cpu"), NumpyPitchStepper)


def test_device_resolution() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        from streamsonic.errors import DeviceError

        with pytest.raises(DeviceError, match="--device cpu"):
            resolve_device("cuda")
