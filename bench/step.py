"""Per-sample cost of the streaming stepper vs the research's method, batch 1, and the
per-stream cost of one batched step from 1 to 4,096 streams.

The research re-ran the whole 50-step input window through the network for every sample.
streamsonic keeps the LSTM state per stream and advances it one timestep per sample (two
evaluations of that timestep: the data proposes, the chosen note is remembered). Same
model (the shipped weights/pitch.pt), same machine, same run.

    .venv/bin/python bench/step.py [--samples 2000] [--window 50] [--device cpu|cuda]
                                   [--batches 1,4,16,64,256,1024,4096] [--rounds 7]

Prints one row per method: median and p90 microseconds per sample, and the speed-up of
each against the research's method. The conductor rows are the daemon's whole per-sample
path at batch 1 (``Conductor.observe`` and ``play``: the rolling window and anomaly score,
the step, the choice, the note), with one note per sample (``model.passing_notes = 0``:
issue 10's target, <= 100 us) and at the defaults (phrases: on a Gaussian random walk, and
on uniform noise, where the model adds its most notes and searches the most: the worst
case). Then the batch table: per-stream microseconds of one
whole step (propose + commit, both layers and the head) of N streams, beside torch's
``LSTMCell`` (one evaluation of the first layer alone, 1 thread) and the bare float32
matrix product of the first layer's recurrent weights (the floor: every step must read
them once), all in the same run, interleaved round by round (median of ``--rounds``).
BLAS and torch run on one thread (two threads collapse small kernels on a shared 2-core
machine).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads BLAS
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamsonic.conductor import Conductor, Cue
from streamsonic.config import load_config
from streamsonic.encoding import PitchEncoding
from streamsonic.events import Sample
from streamsonic.model.checkpoint import default_weights, load_checkpoint
from streamsonic.model.choice import Chooser
from streamsonic.model.network import PitchLSTM
from streamsonic.model.stepper import NumpyPitchStepper, PitchStepper, TorchPitchStepper
from streamsonic.music import scale_pitches


def timed(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn(i)
        out.append((time.perf_counter_ns() - t0) / 1000.0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2000,
                    help="timed samples per batch-1 row (the research's rows: a quarter, "
                         "at least 200) (default: %(default)s)")
    ap.add_argument("--window", type=int, default=50,
                    help="steps in the research method's input window, re-run whole for "
                         "every sample (default: %(default)s)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                    help="where the network runs; cpu adds the compiled NumPy stepper's "
                         "rows (default: %(default)s)")
    ap.add_argument("--batches", default="1,4,16,64,256,1024,4096",
                    help="batch sizes of the batch table (comma-separated; '' skips it)")
    ap.add_argument("--rounds", type=int, default=7, help="rounds per batch size")
    ap.add_argument("--skip-single", action="store_true", help="only the batch table")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dev = torch.device(args.device)
    ckpt = load_checkpoint(default_weights("pitch"), kind="pitch")
    net = ckpt.pitch_network().to(dev)
    enc = PitchEncoding(ckpt.classes)
    chooser = Chooser(enc, scale_pitches("chromatic", "C", enc.low, enc.high), influence=0.5)
    data = np.random.default_rng(0).random(args.samples + 100)
    if args.batches:
        batch_table(net, dev, [int(b) for b in args.batches.split(",")], args.rounds)
    if args.skip_single:
        return 0
    rows: list[tuple[str, list[float]]] = []
    rngs = [np.random.default_rng(0)]
    inputs = data.copy()
    n_research = max(args.samples // 4, 200)

    # The research's method: a 50-step window whose newest slot holds the data; the whole
    # window goes through the network for every sample; the chosen note replaces the slot.
    def research(with_choice: bool) -> list[float]:
        window = [0.5] * args.window

        def one(i: int) -> None:
            window.pop(0)
            if with_choice:
                d, x = chooser.encode(data[i : i + 1])
                window.append(float(x[0]))
            else:
                window.append(float(inputs[i]))
            with torch.inference_mode():
                x_t = torch.tensor(window, dtype=torch.float32, device=dev).reshape(1, -1, 1)
                logits, _ = net(x_t)
                out = logits[0, -1:].double().cpu().numpy()
            if with_choice:
                idx = chooser.choose(out, d, rngs)
                window[-1] = float(chooser.candidate_input(idx)[0])
            else:
                window[-1] = float(inputs[i + 1])

        timed(one, 20)
        return timed(one, n_research)

    # streamsonic: one timestep per sample from the stream's state (data proposes, the
    # chosen note is remembered: two evaluations sharing the first layer's W_hh @ h).
    def streaming(stepper: PitchStepper, with_choice: bool) -> list[float]:
        state = [stepper.initial_state(1)]
        one_in = [inputs[i : i + 1] for i in range(len(inputs))]

        def one(i: int) -> None:
            if with_choice:
                d, x = chooser.encode(data[i : i + 1])
            else:
                x = one_in[i]
            logits, pending = stepper.propose(x, state[0])
            chosen = (chooser.candidate_input(chooser.choose(logits, d, rngs)) if with_choice
                      else one_in[i + 1])
            state[0] = stepper.commit(pending, chosen)

        timed(one, 50)
        return timed(one, args.samples)

    cpu_stepper = NumpyPitchStepper(net) if dev.type == "cpu" else None
    torch_stepper = TorchPitchStepper(net, device=dev)
    rows.append((f"research: re-run {args.window}-step window (torch)", research(False)))
    if cpu_stepper is not None:
        rows.append(("streamsonic stepper, compiled CPU kernels", streaming(cpu_stepper, False)))
    rows.append((f"streamsonic stepper, torch on {dev.type}", streaming(torch_stepper, False)))
    rows.append(("research + choice (influence 0.5)", research(True)))
    if cpu_stepper is not None:
        rows.append(("streamsonic stepper + choice, compiled", streaming(cpu_stepper, True)))

    # The whole per-sample path of the daemon: normalize, step, choose, make the note(s);
    # one note per sample (model.passing_notes = 0), and at the defaults (phrases: on this
    # uniform noise nearly every sample leaps, so the model adds its most notes, a search
    # of up to BEAM paths per added note).
    walk = np.cumsum(np.random.default_rng(1).standard_normal(args.samples + 100))

    def whole(passing_notes: int | None, values: np.ndarray = data) -> list[float]:
        over: dict[str, object] = {"model.device": args.device}
        if passing_notes is not None:
            over["model.passing_notes"] = passing_notes
        conductor = Conductor(load_config(None, over), cpu_stepper or torch_stepper, enc)

        def full(i: int) -> None:
            s = Sample("bench", float(i), float(values[i]))
            conductor.observe(s)
            conductor.play([Cue(s, float(i))])

        timed(full, 50)
        return timed(full, args.samples)

    rows.append((WHOLE, whole(0)))
    rows.append((WALK, whole(None, walk)))
    rows.append(("conductor, phrases (defaults, noise)", whole(None)))

    cpu = "".join(open("/proc/cpuinfo").read().split("model name")[1:2]).split("\n")[0]  # noqa: PTH123, SIM115
    print(f"\nper-sample cost, batch 1, device {dev.type}, torch {torch.__version__}, "
          f"1 thread, CPU{cpu.strip()}")
    print(f"{'method':<52} {'median us':>10} {'p90 us':>9} {'speed-up':>9}")
    medians = {name: statistics.median(times) for name, times in rows}
    base = medians[rows[0][0]]
    base_choice = medians["research + choice (influence 0.5)"]
    for name, times in rows:
        ref = base_choice if ("choice" in name or "conductor" in name) else base
        med = medians[name]
        print(f"{name:<52} {med:>10.1f} {float(np.percentile(times, 90)):>9.1f} "
              f"{ref / med:>8.1f}x")
    print("(speed-ups: model rows against the research's window re-run, rows with the choice "
          "against the research's method with the same choice)")
    step_med = medians[rows[1][0]]
    ok = base / step_med >= 20 and step_med <= 100
    print(f"\ntarget: stepper >= 20x faster than the research's method and <= 100 us/sample: "
          f"{base / step_med:.1f}x, {step_med:.1f} us -> {'met' if ok else 'NOT met'}")
    whole_med = medians[WHOLE]
    print(f"target (issue 10): whole per-sample path at batch 1 <= 100 us: {whole_med:.1f} us "
          f"one note per sample -> {'met' if whole_med <= 100 else 'NOT met'}; "
          f"{medians[WALK]:.1f} us at the defaults (phrases) on a random walk -> "
          f"{'met' if medians[WALK] <= 100 else 'NOT met'}")
    return 0


#: The row of the whole per-sample path at the defaults (phrases) on a random walk.
WALK = "conductor, phrases (defaults, random walk)"
#: The row of the whole per-sample path, one note per sample.
WHOLE = "conductor, 1 note/sample (observe+step+choose+note)"


def per_stream(fn: Callable[[], object], batch: int, budget: float = 0.05) -> float:
    """Microseconds per stream of one call of ``fn`` (a batch of ``batch`` streams): the
    best of as many calls as fit in ``budget`` seconds (at least 3)."""
    fn()
    best = float("inf")
    deadline = time.perf_counter() + budget
    calls = 0
    while calls < 3 or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        calls += 1
    return best * 1e6 / batch


def batch_table(net: PitchLSTM, dev: torch.device, batches: list[int],
                rounds: int) -> None:
    """Per-stream cost of one step of N streams, beside LSTMCell and the matrix floor."""
    stepper: PitchStepper = (NumpyPitchStepper(net) if dev.type == "cpu"
                             else TorchPitchStepper(net, device=dev))
    hidden = int(net.hidden1)
    w = net.state_dict()["lstm1.weight_hh_l0"].t().contiguous().cpu().numpy()
    cell = torch.nn.LSTMCell(1, hidden).to(dev).eval()
    torch_stepper = TorchPitchStepper(net, device=dev) if dev.type == "cpu" else None
    rng = np.random.default_rng(0)
    label = "NumPy+numba" if dev.type == "cpu" else f"torch {dev.type}"
    print(f"\nbatch table: us per stream for one step of N streams, device {dev.type}, "
          f"median of {rounds} rounds (each the best call of 50 ms)")
    head = (f"{'N':>6} {'step ' + label:>18} {'torch stepper cpu':>18} "
            f"{'LSTMCell 1 layer':>17} {'matmul floor':>13} {'step/floor':>11}")
    print(head)
    for b in batches:
        state = stepper.initial_state(b)
        x = rng.random(b)
        h = rng.standard_normal((b, hidden)).astype(np.float32)
        xt = torch.as_tensor(x[:, None], dtype=torch.float32, device=dev)
        ht = torch.zeros(b, hidden, device=dev)
        ct = torch.zeros(b, hidden, device=dev)
        tstate = torch_stepper.initial_state(b) if torch_stepper is not None else None
        def ours(state: object = state, x: np.ndarray = x) -> None:
            stepper.step(x, state)  # type: ignore[arg-type]

        def lstm_cell(xt: torch.Tensor = xt, ht: torch.Tensor = ht,
                      ct: torch.Tensor = ct) -> None:
            with torch.inference_mode():
                cell(xt, (ht, ct))
            if dev.type == "cuda":
                torch.cuda.synchronize()

        wt = torch.as_tensor(w, device=dev)
        htt = torch.as_tensor(h, device=dev)

        def floor(h: np.ndarray = h, htt: torch.Tensor = htt, wt: torch.Tensor = wt) -> None:
            if dev.type == "cpu":
                h @ w
            else:  # on the device, where the step runs
                htt @ wt
                torch.cuda.synchronize()

        def torch_cpu(tstate: object = tstate, x: np.ndarray = x) -> None:
            assert torch_stepper is not None
            torch_stepper.step(x, tstate)  # type: ignore[arg-type]

        cols: dict[str, list[float]] = {"ours": [], "torch": [], "cell": [], "floor": []}
        for _ in range(rounds):
            cols["ours"].append(per_stream(ours, b))
            if torch_stepper is not None:
                cols["torch"].append(per_stream(torch_cpu, b))
            cols["cell"].append(per_stream(lstm_cell, b))
            cols["floor"].append(per_stream(floor, b))
        med = {k: statistics.median(v) if v else float("nan") for k, v in cols.items()}
        print(f"{b:>6} {med['ours']:>18.2f} {med['torch']:>18.2f} {med['cell']:>17.2f} "
              f"{med['floor']:>13.2f} {med['ours'] / med['floor']:>10.2f}x")
    print("(step: propose + commit of the whole two-layer network and its head; LSTMCell: "
          "one evaluation of the first layer only; floor: (N, 256) @ (256, 1024) float32)")


if __name__ == "__main__":
    sys.exit(main())
