"""The daemon's step seam (:meth:`Conductor.play`, which the engine, the rhythm driver and
``render`` call) plays exactly the notes of a from-scratch reference, for both backends of
the pitch model and for the temporal model; and the stepper's own pieces."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pytest
import torch

from streamsonic.conductor import Conductor, Cue, Reading, StepResult, stream_seed
from streamsonic.config import Config, load_config
from streamsonic.encoding import PitchEncoding
from streamsonic.events import Sample
from streamsonic.model.choice import Chooser
from streamsonic.model.network import PitchLSTM, TemporalLSTM
from streamsonic.model.stepper import (
    ROW_BY_ROW,
    NumpyPitchStepper,
    TorchPitchStepper,
    make_stepper,
    resolve_device,
)
from streamsonic.model.temporal import TemporalStepper, Timing, TimingEncoding
from streamsonic.music import beyond_pitch, scale_pitches, seconds_per_beat
from tests.conftest import CLASSES

INFLUENCE = 0.3
STREAMS = ("a", "b", "c")
SAMPLES = 300


# -- the reference: the whole history through the full network, for every sample --------

@functools.cache
def fused() -> bool:
    """Whether the compiled kernels fuse a multiply and an add (``rows_product`` is
    compiled to contract them): where the CPU has FMA (LLVM's host features), or is an
    ARM, whose floating-point units always fuse."""
    import platform

    import llvmlite.binding as llvm

    return bool(llvm.get_host_cpu_features().get("fma")) or platform.machine() in (
        "aarch64", "arm64")


def sequential_sum(h: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``h @ w`` (float32) written out one weight row at a time, in order: each step
    ``acc + h[k] * w[k]`` rounded once where the kernels fuse (a fused multiply-add,
    computed in NumPy's long double: 80 bits on x86, 128 on Linux on ARM, where the product
    of two float32 is exact and the sum as good as exact), else the product and the sum
    each rounded to float32."""
    if not fused():
        acc: np.ndarray = np.zeros(w.shape[1], np.float32)
        for k in range(w.shape[0]):
            acc = acc + h[k] * w[k]
        return acc
    wide = w.astype(np.longdouble)
    acc = np.zeros(w.shape[1], np.float32)
    for k in range(w.shape[0]):
        acc = (np.longdouble(h[k]) * wide[k] + acc.astype(np.longdouble)).astype(np.float32)
    return acc


def _chooser(config: Config, classes: list[int]) -> Chooser:
    music, model = config.music, config.model
    return Chooser(PitchEncoding(classes), scale_pitches(music.scale, music.key, music.low,
                                                         music.high),
                   influence=model.influence, temperature=model.temperature,
                   kernel_width=model.kernel_width)


def _pick(chooser: Chooser, logits: np.ndarray, data_pitch: np.ndarray,
          rng: np.random.Generator | None) -> int:
    """Greedy: the argmax of the NumPy scores; sampling: the chooser with the stream's
    generator (the choice itself is tested against the scores in test_choice.py)."""
    if rng is None:
        return int(np.argmax(chooser.scores(logits, data_pitch)[0]))
    return int(chooser.choose(logits, data_pitch, [rng])[0])


def _played(config: Config, position: float, candidate: int) -> int:
    """The pitch a note plays: the chosen candidate, or beyond the ordinary range the
    headroom pitch (of the scale) nearest to where the data alone puts it."""
    music = config.music
    if 0.0 <= position <= 1.0:
        return candidate
    headroom = scale_pitches(music.scale, music.key, music.low - music.headroom,
                             music.high + music.headroom)
    target = beyond_pitch(position, music.low, music.high, music.headroom)
    return int(headroom[np.abs(headroom - target).argmin()])


def pitch_reference(net: PitchLSTM, config: Config, positions: np.ndarray,
                    rng: np.random.Generator | None = None) -> tuple[list[int], list[float]]:
    """The research's semantics, recomputed from scratch for every sample: the whole
    history of chosen notes, then the data value in the newest slot, through the full
    network from a zero state. Returns the pitches played and the inputs remembered."""
    chooser = _chooser(config, CLASSES)
    remembered: list[float] = []
    pitches: list[int] = []
    for position in positions:
        d = chooser.data_pitch(np.array([min(1.0, max(0.0, position))]))
        seq = [*remembered, float(chooser.data_input(d)[0])]
        with torch.no_grad():
            logits, _ = net(torch.tensor(seq, dtype=torch.float32).reshape(1, -1, 1))
        idx = _pick(chooser, logits[0, -1:].double().numpy(), d, rng)
        pitches.append(_played(config, position, int(chooser.candidates[idx])))
        remembered.append(float(chooser.candidate_input(np.array([idx]))[0]))
    return pitches, remembered


def temporal_reference(
    net: TemporalLSTM, timing: TimingEncoding, config: Config, classes: list[int],
    positions: np.ndarray, first: np.ndarray,
) -> tuple[list[int], list[Timing]]:
    """The same for the temporal model: note ``k`` of the history is [chosen pitch, its
    predicted timing]; the newest slot holds [data, the previous note's timing]."""
    chooser = _chooser(config, classes)
    spb = seconds_per_beat(config.music.tempo)
    history: list[np.ndarray] = []
    previous = first
    pitches: list[int] = []
    timings: list[Timing] = []
    for position in positions:
        d = chooser.data_pitch(np.array([min(1.0, max(0.0, position))]))
        probe = [*history, np.concatenate([chooser.data_input(d), previous])]
        with torch.no_grad():
            out, _ = net(torch.tensor(np.array(probe)[None], dtype=torch.float32))
        logits, gap, dur, vel = (part[0, -1:] for part in net.split(out))
        g, du = int(gap.argmax()), int(dur.argmax())
        v = int(np.clip(np.rint(float(vel.clamp(0.0, 1.0)[0]) * 127), 1, 127))
        timings.append(Timing(float(timing.gap_grid[g] * spb),
                              float(timing.duration_grid[du] * spb), v))
        idx = _pick(chooser, logits.double().numpy(), d, None)
        pitches.append(_played(config, position, int(chooser.candidates[idx])))
        previous = timing.timing_features(np.array([g]), np.array([du]), np.array([v]))[0]
        history.append(np.concatenate([chooser.candidate_input(np.array([idx])), previous]))
    return pitches, timings


# -- the daemon's path --------------------------------------------------------------------

def positions_for(seed: int, n: int) -> np.ndarray:
    """Places in the ordinary range (0..1), and one in seven beyond it, up to 1000 range
    widths out on either side (those play in the headroom, whatever the model says)."""
    rng = np.random.default_rng(seed)
    pos = rng.random(n)
    out = rng.random(n) < 1 / 7
    excess = 10.0 ** rng.uniform(-1.5, 3.0, n)
    pos[out] = np.where(rng.random(out.sum()) < 0.5, 1.0 + excess[out], -excess[out])
    return pos


def conduct(conductor: Conductor, positions: dict[str, np.ndarray],
            check: Callable[[list[str], StepResult], None] | None = None) -> dict[str, list[int]]:
    """Play the streams through :meth:`Conductor.play` as the engine's tick clock does:
    each step one batch of a changing subset of the streams, in a changing order."""
    rng = np.random.default_rng(5)
    played: dict[str, list[int]] = {name: [] for name in positions}
    step = 0
    while any(len(played[n]) < len(p) for n, p in positions.items()):
        names = [n for n, p in positions.items() if len(played[n]) < len(p) and rng.random() < 0.7]
        rng.shuffle(names)
        cues = [Cue(Sample(n, float(step), 1.0), float(step), reading=Reading(0.5),
                    normalized=float(positions[n][len(played[n])])) for n in names]
        result = conductor.play(cues)
        assert len(result.pitches) == len(result.inputs) == len(cues)
        # The notes are the result's pitches (no voice is muted here).
        assert [(n.stream, n.pitch) for n in result.notes] == \
            list(zip(names, result.pitches.tolist(), strict=True))
        if check is not None:
            check(names, result)
        for n, pitch in zip(names, result.pitches, strict=True):
            played[n].append(int(pitch))
        step += 1
    return played


@pytest.fixture(scope="module")
def net() -> PitchLSTM:
    torch.manual_seed(7)
    net = PitchLSTM(n_classes=len(CLASSES)).eval()
    # Random init gives near-uniform logits; sharpen the head so the model has opinions.
    with torch.no_grad():
        net.head.weight.mul_(8.0)
    return net


def pitch_config(**overrides: object) -> Config:
    # One note per sample (model.passing_notes = 0): the research's step, which the
    # reference recomputes; phrases are tested in test_phrases.py.
    return load_config(None, {"music.scale": "chromatic", "music.low": 50, "music.high": 89,
                              "model.influence": INFLUENCE, "model.passing_notes": 0,
                              **overrides})


@pytest.fixture(scope="module")
def reference(net: PitchLSTM) -> dict[str, tuple[np.ndarray, list[int], list[float]]]:
    """Each stream's positions, and the reference's pitches and remembered inputs
    (computed once: the reference is O(n^2))."""
    config = pitch_config()
    out = {}
    for i, name in enumerate(STREAMS):
        positions = positions_for(40 + i, SAMPLES)
        out[name] = (positions, *pitch_reference(net, config, positions))
    return out


@pytest.mark.parametrize("backend", [NumpyPitchStepper, TorchPitchStepper])
def test_conductor_plays_the_full_recompute(
    net: PitchLSTM, reference: dict[str, tuple[np.ndarray, list[int], list[float]]],
    backend: type,
) -> None:
    config = pitch_config()
    conductor = Conductor(config, backend(net), PitchEncoding(CLASSES))
    steps: dict[str, int] = dict.fromkeys(STREAMS, 0)

    def remembered(names: list[str], result: StepResult) -> None:
        assert result.timings is None  # the pitch model has no timing to say
        for name, x in zip(names, result.inputs, strict=True):
            assert x == pytest.approx(reference[name][2][steps[name]], abs=1e-9)
            steps[name] += 1

    got = conduct(conductor, {n: r[0] for n, r in reference.items()}, remembered)
    for name, (positions, expected, _) in reference.items():
        assert got[name] == expected, name
        # The test has teeth: the model moved many notes away from the data's own pitch,
        # and values beyond the range played in the headroom.
        chooser = conductor.chooser
        inside = (positions >= 0) & (positions <= 1)
        nearest = chooser.candidates[np.abs(chooser.candidates[None, :]
                                            - chooser.data_pitch(positions)[:, None]).argmin(1)]
        assert np.sum(np.asarray(got[name])[inside] != nearest[inside]) > 40
        outside = np.asarray(got[name])[~inside]
        assert np.all((outside >= 89) | (outside <= 50))
        assert np.sum((outside > 89) | (outside < 50)) > 20


def test_conductor_samples_with_each_streams_own_generator(net: PitchLSTM) -> None:
    """With temperature, each stream draws from its own generator (seeded by model.seed
    and its name), whatever else plays in the same batch."""
    config = pitch_config(**{"model.temperature": 1.5, "model.seed": 9})
    positions = {n: positions_for(60 + i, 120) for i, n in enumerate(STREAMS)}
    got = conduct(Conductor(config, NumpyPitchStepper(net), PitchEncoding(CLASSES)), positions)
    for name, pos in positions.items():
        rng = np.random.default_rng(stream_seed(9, name))
        expected, _ = pitch_reference(net, config, pos, rng)
        assert got[name] == expected, name


TEMPORAL_CLASSES = [p for p in range(55, 80) if p != 61]


def test_conductor_plays_the_temporal_full_recompute() -> None:
    """rhythm = "model": the seam's pitches and timings, and the notes' durations and
    velocities, are the temporal network's over the whole history."""
    torch.manual_seed(11)
    enc = TimingEncoding()
    net = TemporalLSTM(len(TEMPORAL_CLASSES), enc.n_gap, enc.n_duration, enc.input_size,
                       hidden1=24, hidden2=16).eval()
    with torch.no_grad():
        net.head.weight.mul_(6.0)
    config = load_config(None, {"music.scale": "major", "music.low": 55, "music.high": 79,
                                "model.influence": 0.5, "music.tempo": 90.0,
                                "model.rhythm_temperature": 0.0})  # the reference: argmax
    default = {"gap": 0.5, "duration": 1.0, "velocity": 90}
    stepper = TemporalStepper(net, enc, TEMPORAL_CLASSES, tempo=90.0, default_timing=default)
    conductor = Conductor(config, stepper, stepper.encoding)
    first = enc.timing_features(enc.gap_bin(np.array([0.5])), enc.duration_bin(np.array([1.0])),
                                np.array([90]))[0]
    positions = {n: positions_for(80 + i, 150) for i, n in enumerate(STREAMS[:2])}
    timings: dict[str, list[Timing]] = {n: [] for n in positions}

    def timed(names: list[str], result: StepResult) -> None:
        assert result.timings is not None and len(result.timings) == len(names)
        for name, t, note in zip(names, result.timings, result.notes, strict=True):
            timings[name].append(t)
            assert (note.duration, note.velocity) == (t.duration, t.velocity)

    got = conduct(conductor, positions, timed)
    for name, pos in positions.items():
        expected, expected_timings = temporal_reference(net, enc, config, TEMPORAL_CLASSES,
                                                        pos, first)
        assert got[name] == expected, name
        assert timings[name] == pytest.approx(expected_timings), name
        assert len({t.delay for t in timings[name]}) > 2  # the timing has a say too


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


def test_a_search_multiplies_each_distinct_row_as_one_stream_alone(net: PitchLSTM) -> None:
    """Up to ROW_BY_ROW distinct rows, the first layer's recurrent product is a compiled sum
    over the weights' rows in their order, each row alone: the bits of that sum written out
    in NumPy (one weight row at a time, fused where the kernels fuse: sequential_sum),
    whatever the other rows; more rows go as one BLAS product."""
    stepper = NumpyPitchStepper(net)
    rng = np.random.default_rng(5)
    w = stepper._w_hh1_t
    for n in (1, 2, 3, ROW_BY_ROW):
        h = rng.standard_normal((n, stepper.h1)).astype(stepper.dtype)
        got = stepper._recurrent(h)
        for i in range(n):
            want = sequential_sum(h[i], w)
            assert got[i].tobytes() == want.tobytes(), (n, i)
            assert got[i].tobytes() == stepper._recurrent(h[i : i + 1])[0].tobytes()
    h = rng.standard_normal((ROW_BY_ROW + 1, stepper.h1)).astype(stepper.dtype)
    assert stepper._recurrent(h).tobytes() == (h @ w).tobytes()


@pytest.mark.parametrize("rows", [[2], [0, 0, 0], [3, 1, 3, 0, 1], [4, 4, 2, 0, 1, 3, 3, 2],
                                  [*range(12), 5, 5]])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_step_rows_steps_the_gathered_rows(net: PitchLSTM, backend: str, rows: list[int],
                                           ) -> None:
    """A search's paths step from the rows of the paths they grew from (a row several
    times, with different inputs): the same as stepping those rows gathered, both
    backends; the distinct rows' first-layer product is shared (NumPy)."""
    stepper = NumpyPitchStepper(net) if backend == "numpy" else TorchPitchStepper(net)
    rng = np.random.default_rng(4)
    state = stepper.initial_state(12)
    for _ in range(5):  # a state that differs from row to row
        _, state = stepper.step(rng.random(12), state)
    x = rng.random(len(rows))
    index = np.array(rows)
    logits, new = stepper.step_rows(x, state, index)
    ref_logits, ref = stepper.step(x, stepper.take(state, index))
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-5)
    for got, want in zip(new, ref, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    # take: the rows themselves, in the order asked
    for part, whole in zip(stepper.take(state, index), state, strict=True):
        np.testing.assert_array_equal(np.asarray(part), np.asarray(whole)[index])


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


@pytest.mark.parametrize("depth", [13, 16, 256])
def test_rows_product_sums_each_row_in_order(depth: int) -> None:
    """``kernels.rows_product`` of one row and of several (weights read 8 rows at a time,
    then the rest one by one): each output the float32 sum over the weight rows in their
    order, so a row's bits do not depend on the rows beside it."""
    from streamsonic.model import kernels

    rng = np.random.default_rng(depth)
    w = rng.standard_normal((depth, 40)).astype(np.float32)
    h = rng.standard_normal((5, depth)).astype(np.float32)
    for rows in ([3], [0, 4, 2], [1, 1, 0, 2, 3, 4, 2]):
        out = np.empty((len(rows), w.shape[1]), np.float32)
        kernels.rows_product(h, np.array(rows, dtype=np.int64), w, out)
        for i, r in enumerate(rows):
            assert out[i].tobytes() == sequential_sum(h[r], w).tobytes(), (rows, i)
