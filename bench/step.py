"""Per-sample cost of the streaming stepper vs the research's method, batch 1.

The research re-ran the whole 50-step input window through the network for every sample.
streamsonic keeps the LSTM state per stream and advances it one timestep per sample (two
evaluations of that timestep: the data proposes, the chosen note is remembered). Same
model (the shipped weights/pitch.pt), same machine, same run.

    .venv/bin/python bench/step.py [--samples 2000] [--window 50] [--device cpu|cuda]

Prints one row per method: median and p90 microseconds per sample, and the speed-up of
each against the research's method.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
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
from streamsonic.model.stepper import NumpyPitchStepper, TorchPitchStepper
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
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    dev = torch.device(args.device)
    ckpt = load_checkpoint(default_weights("pitch"), kind="pitch")
    net = ckpt.pitch_network().to(dev)
    enc = PitchEncoding(ckpt.classes)
    chooser = Chooser(enc, scale_pitches("chromatic", "C", enc.low, enc.high), influence=0.5)
    data = np.random.default_rng(0).random(args.samples + 100)
    rows: list[tuple[str, list[float]]] = []
    rngs = [np.random.default_rng(0)]

    # The research's method: a 50-step window, newest slot = data, whole window re-run.
    window = [0.5] * args.window

    def research(i: int) -> None:
        d = chooser.data_pitch(data[i : i + 1])
        window.pop(0)
        window.append(float(chooser.data_input(d)[0]))
        with torch.inference_mode():
            x = torch.tensor(window, dtype=torch.float32, device=dev).reshape(1, -1, 1)
            logits, _ = net(x)
            idx = chooser.choose(logits[0, -1:].double().cpu().numpy(), d, rngs)
        window[-1] = float(chooser.candidate_input(idx)[0])

    n_research = max(args.samples // 4, 200)
    timed(research, 20)
    rows.append((f"research: re-run {args.window}-step window (torch)",
                 timed(research, n_research)))

    def streaming(stepper: object) -> list[float]:
        state = [stepper.initial_state(1)]  # type: ignore[attr-defined]

        def one(i: int) -> None:
            d = chooser.data_pitch(data[i : i + 1])
            logits, pending = stepper.propose(chooser.data_input(d), state[0])  # type: ignore[attr-defined]
            idx = chooser.choose(logits, d, rngs)
            state[0] = stepper.commit(pending, chooser.candidate_input(idx))  # type: ignore[attr-defined]

        timed(one, 50)
        return timed(one, args.samples)

    if dev.type == "cpu":
        rows.append(("streamsonic stepper, compiled CPU kernels",
                     streaming(NumpyPitchStepper(net))))
    rows.append((f"streamsonic stepper, torch on {dev.type}",
                 streaming(TorchPitchStepper(net, device=dev))))

    # The whole per-sample path of the daemon: normalize, step, choose, make the note.
    config = load_config(None, {"model.device": args.device})
    stepper = NumpyPitchStepper(net) if dev.type == "cpu" else TorchPitchStepper(net, device=dev)
    conductor = Conductor(config, stepper, enc)

    def full(i: int) -> None:
        s = Sample("bench", float(i), float(data[i]))
        conductor.observe(s)
        conductor.play([Cue(s, float(i))])

    timed(full, 50)
    rows.append(("streamsonic conductor (normalize+step+choose+note)", timed(full, args.samples)))

    base = statistics.median(rows[0][1])
    cpu = "".join(open("/proc/cpuinfo").read().split("model name")[1:2]).split("\n")[0]  # noqa: PTH123, SIM115
    print(f"\nper-sample cost, batch 1, device {dev.type}, torch {torch.__version__}, "
          f"1 thread, CPU{cpu.strip()}")
    print(f"{'method':<52} {'median us':>10} {'p90 us':>9} {'speed-up':>9}")
    for name, times in rows:
        med = statistics.median(times)
        p90 = float(np.percentile(times, 90))
        print(f"{name:<52} {med:>10.1f} {p90:>9.1f} {base / med:>8.1f}x")
    step_med = statistics.median(rows[1][1])
    print(f"\ntarget: stepper >= 20x faster than the research's method and <= 100 us/sample: "
          f"{base / step_med:.1f}x, {step_med:.1f} us -> "
          f"{'met' if base / step_med >= 20 and step_med <= 100 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
