"""The temporal model's encoding and stepper against the plain network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamsonic.errors import CheckpointError
from streamsonic.model.checkpoint import Checkpoint, default_weights, load_checkpoint
from streamsonic.model.network import TemporalLSTM
from streamsonic.model.temporal import BEAT_GRID, TemporalStepper, TimingEncoding
from tests.components import missing

CLASSES = [60, 62, 64, 65, 67, 69, 71, 72]


@pytest.fixture(scope="module")
def stepper_parts() -> tuple[TemporalLSTM, TimingEncoding, TemporalStepper]:
    torch.manual_seed(7)
    enc = TimingEncoding()
    net = TemporalLSTM(len(CLASSES), enc.n_gap, enc.n_duration, enc.input_size,
                       hidden1=16, hidden2=12).eval()
    return net, enc, TemporalStepper(net, enc, CLASSES, tempo=120.0,
                                     default_timing={"gap": 0.5, "duration": 1, "velocity": 90})


def test_bins_snap_on_a_log_scale():
    enc = TimingEncoding()
    assert len(BEAT_GRID) == 16 and enc.input_size == 1 + 16 + 16 + 1
    assert enc.gap_grid[enc.gap_bin(np.array([0.5, 0.49, 1.0, 100.0, 0.0]))].tolist() == \
        [0.5, 0.5, 1.0, 8.0, 1 / 16]
    assert enc.duration_grid[enc.duration_bin(np.array([1 / 3, 0.3]))].tolist() == [1 / 3, 1 / 3]
    feats = enc.timing_features(np.array([6]), np.array([9]), np.array([127]))
    assert feats.shape == (1, 33)
    assert feats[0, 6] == 1 and feats[0, 16 + 9] == 1 and feats[0, -1] == 1.0
    assert feats.sum() == 3


def test_steps_equal_the_network_over_the_committed_sequence(stepper_parts) -> None:
    """propose = the network after the committed notes plus [data, previous timing];
    commit = the network fed [chosen pitch, predicted timing] at that step."""
    net, _, stepper = stepper_parts
    state = stepper.initial_state(1)
    committed: list[np.ndarray] = []
    for data, chosen in ((0.0, 0.1), (0.5, 0.6), (1.0, 0.9), (0.25, 0.3)):
        logits, _, pending = stepper.propose(np.array([data]), state)
        probe = [*committed, np.concatenate([[data], state.timing[0].numpy()])]
        state = stepper.commit(pending, np.array([chosen]))
        committed.append(np.concatenate([[chosen], state.timing[0].numpy()]))
        with torch.no_grad():
            out, _ = net(torch.tensor(np.array(probe)[None], dtype=torch.float32))
            _, (h1, c1, h2, c2) = net(torch.tensor(np.array(committed)[None],
                                                   dtype=torch.float32))
        np.testing.assert_allclose(logits[0], net.split(out)[0][0, -1].numpy(), atol=1e-5)
        for got, want in zip((state.h1, state.c1, state.h2, state.c2), (h1, c1, h2, c2),
                             strict=True):
            np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


def test_propose_leaves_state_alone_and_data_influences_pitch_only(stepper_parts):
    _, _, stepper = stepper_parts
    state = stepper.initial_state(1)
    a, ta, _ = stepper.propose(np.array([0.1]), state)
    b, _, _ = stepper.propose(np.array([0.9]), state)
    a2, ta2, _ = stepper.propose(np.array([0.1]), state)
    np.testing.assert_array_equal(a, a2)
    assert ta == ta2
    assert not np.allclose(a, b)


def test_commit_stores_the_predicted_timing(stepper_parts):
    _, enc, stepper = stepper_parts
    state = stepper.initial_state(1)
    _, timings, pending = stepper.propose(np.array([0.3]), state)
    new = stepper.commit(pending, np.array([0.4]))
    t = timings[0]
    vec = new.timing[0].numpy()
    assert enc.gap_grid[vec[:16].argmax()] * 0.5 == pytest.approx(t.delay)
    assert enc.duration_grid[vec[16:32].argmax()] * 0.5 == pytest.approx(t.duration)
    assert round(vec[-1] * 127) == t.velocity


def test_tempo_maps_beats_to_seconds(stepper_parts):
    net, enc, fast = stepper_parts
    slow = TemporalStepper(net, enc, CLASSES, tempo=60.0)
    _, tf, _ = fast.propose(np.array([0.5]), fast.initial_state(1))
    state = slow.initial_state(1)
    state = type(state)(state.h1, state.c1, state.h2, state.c2,
                        fast.initial_state(1).timing)
    _, ts, _ = slow.propose(np.array([0.5]), state)
    assert ts[0].delay == pytest.approx(2 * tf[0].delay)
    assert ts[0].duration == pytest.approx(2 * tf[0].duration)


def test_batched_equals_one_by_one_and_stack_split(stepper_parts):
    _, _, stepper = stepper_parts
    states = [stepper.initial_state(1) for _ in range(3)]
    for i, s in enumerate(states):
        _, _, p = stepper.propose(np.array([0.2 * i]), s)
        states[i] = stepper.commit(p, np.array([0.3 * i]))
    batched = stepper.stack(states)
    logits, timings, pending = stepper.propose(np.array([0.1, 0.5, 0.9]), batched)
    for i, s in enumerate(stepper.split(batched, 3)):
        single, t1, _ = stepper.propose(np.array([[0.1, 0.5, 0.9][i]]), s)
        np.testing.assert_allclose(single[0], logits[i], atol=1e-5)
        assert t1[0] == timings[i]
    after = stepper.split(stepper.commit(pending, np.array([0.0, 0.0, 0.0])), 3)
    assert len(after) == 3 and after[0].h1.shape == (1, 16)


def test_shipped_temporal_weights_step():
    path = default_weights("temporal")
    if not path.is_file():
        missing(f"shipped weights {path} are missing (they are in git: git checkout weights/)")
    stepper = TemporalStepper.from_checkpoint(load_checkpoint(path, kind="temporal"),
                                              torch.device("cpu"))
    state = stepper.initial_state(1)
    for x in (0.1, 0.5, 0.9):
        logits, timings, pending = stepper.propose(np.array([x]), state)
        state = stepper.commit(pending, np.array([x]))
        assert logits.shape == (1, stepper.n_classes)
        assert 0 < timings[0].delay <= 4.0 and 1 <= timings[0].velocity <= 127


def test_from_checkpoint_refuses_a_pitch_checkpoint(random_pitch_checkpoint):
    with pytest.raises(CheckpointError, match="not a temporal model"):
        TemporalStepper.from_checkpoint(load_checkpoint(random_pitch_checkpoint), "cpu")
    assert isinstance(load_checkpoint(random_pitch_checkpoint), Checkpoint)


def test_timing_is_drawn_from_the_model_with_the_streams_generator(stepper_parts):
    """With generators and temperature 1 the gap and duration are draws from the model's
    distribution (the same seed draws the same), at temperature 0 or without generators
    the most likely bins."""
    net, enc, greedy = stepper_parts
    stepper = TemporalStepper(net, enc, CLASSES, tempo=120.0, temperature=1.0)
    state = stepper.initial_state(1)
    x = np.array([0.4])
    _, best, _ = greedy.propose(x, state)
    _, best_too, _ = stepper.propose(x, state)  # no generators: the most likely timing
    assert best == best_too
    cold = TemporalStepper(net, enc, CLASSES, tempo=120.0, temperature=0.0)
    assert cold.propose(x, state, [np.random.default_rng(3)])[1] == best
    runs = []
    for _ in range(2):
        rng = np.random.default_rng(42)
        runs.append([stepper.propose(x, state, [rng])[1][0] for _ in range(400)])
    assert runs[0] == runs[1]
    gaps = [t.delay for t in runs[0]]
    assert len(set(gaps)) >= 8  # an untrained net is nearly uniform over 16 bins
    # the draws follow the model's distribution: the share of each gap bin ~ softmax
    with torch.no_grad():
        _, gap_logits, _, _ = net.split(net(torch.cat(
            [torch.tensor([[0.4]]), state.timing], dim=1)[None].float())[0][0])
    p = torch.softmax(gap_logits[0].double(), 0).numpy()
    share = np.bincount(enc.gap_bin(np.array(gaps) / 0.5), minlength=16) / len(gaps)
    assert np.abs(share - p).max() < 0.08
    # one draw for both: where the two distributions agree, so do gap and duration
    assert sum(t.duration == t.delay for t in runs[0]) > 0.5 * len(runs[0])


def test_draws_are_per_stream(stepper_parts):
    """Batched, each row draws from its own generator: the same as one stream at a time."""
    net, enc, _ = stepper_parts
    stepper = TemporalStepper(net, enc, CLASSES, tempo=120.0, temperature=1.0)
    states = [stepper.initial_state(1) for _ in range(3)]
    x = np.array([0.1, 0.5, 0.9])
    _, batched, _ = stepper.propose(x, stepper.stack(states),
                                    [np.random.default_rng(s) for s in (1, 2, 3)])
    one = [stepper.propose(x[i:i + 1], states[i], [np.random.default_rng(i + 1)])[1][0]
           for i in range(3)]
    assert batched == one
