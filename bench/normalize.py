"""Micro-benchmark: microseconds per ``RollingNormalizer.push`` (+ ``position``, as
``Conductor.observe`` calls them) for the compiled normalizer against the plain-Python one
it replaced (tests/normalize_reference.py), one thread, interleaved rounds, on the same
series; then ``Conductor.observe`` per sample over ``--streams`` streams (one sample per
stream in turn, as the daemon sees them), one conductor with each normalizer, interleaved.

    nice -n 10 .venv/bin/python -m bench.normalize [--mode auto] [--samples 20000] \
        [--rounds 5] [--streams 2000]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamsonic.normalize import RollingNormalizer
from tests import normalize_reference as reference


def series(n: int, seed: int = 1) -> list[float]:
    """Noise on a random walk with occasional level shifts and spikes (every branch of
    auto-ranging is taken)."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(0, 0.2, n)) + rng.normal(0, 1, n)
    shifts = np.cumsum(np.where(rng.random(n) < 0.002, rng.normal(0, 50, n), 0.0))
    spikes = np.where(rng.random(n) < 0.01, rng.normal(0, 30, n), 0.0)
    return [float(v) for v in walk + shifts + spikes]


def run(cls: type, mode: str, values: list[float], position: bool) -> float:
    """Microseconds per sample over ``values`` (a fresh normalizer, window 200)."""
    norm = cls(mode=mode, window=200)
    push, pos = norm.push, norm.position
    began = time.perf_counter()
    if position:
        for i, v in enumerate(values):
            push(float(i), v)
            pos(v)
    else:
        for i, v in enumerate(values):
            push(float(i), v)
    return (time.perf_counter() - began) / len(values) * 1e6


def observe(cls: type, streams: int, values: list[float], rounds: int) -> list[float]:
    """Microseconds per ``Conductor.observe`` over ``values`` spread across ``streams``
    streams, with ``cls`` as the streams' normalizer, after a warm-up of one full window."""
    from streamsonic import conductor as module  # noqa: PLC0415
    from streamsonic.config import load_config  # noqa: PLC0415
    from streamsonic.events import Sample  # noqa: PLC0415
    from streamsonic.model.loader import load_pitch_model  # noqa: PLC0415

    logging.disable(logging.WARNING)  # "more streams than the MIDI channels"
    config = load_config(None, {"model.passing_notes": 0})
    stepper, encoding, _ = load_pitch_model(config.model)
    saved = module.RollingNormalizer
    module.RollingNormalizer = cls  # type: ignore[misc,assignment]
    try:
        conductor = module.Conductor(config, stepper, encoding)
        names = [f"s{k}" for k in range(streams)]
        samples = [Sample(names[i % streams], float(i // streams), v)
                   for i, v in enumerate(values)]
        for s in samples[:streams * 200]:
            conductor.observe(s)
    finally:
        module.RollingNormalizer = saved  # type: ignore[misc]
    timed = samples[streams * 200:]
    out = []
    for _ in range(rounds):
        began = time.perf_counter()
        for s in timed:
            conductor.observe(s)
        out.append((time.perf_counter() - began) / len(timed) * 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", default="auto",
                        help="normalization mode of the push timings: auto, rank, robust, "
                             "minmax or zscore (the observe timings keep the configured "
                             "mode) (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=20_000,
                        help="samples in the series of the push timings "
                             "(default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds of every timing; median (min..max) is "
                             "printed (default: %(default)s)")
    parser.add_argument("--streams", type=int, default=2000, help="0: skip observe")
    args = parser.parse_args()
    values = series(args.samples)
    run(RollingNormalizer, args.mode, values[:500], True)  # compile / load the kernels
    rows: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, cls in (("python", reference.RollingNormalizer),
                          ("compiled", RollingNormalizer)):
            for what, position in (("push", False), ("push+position", True)):
                rows.setdefault(f"{name} {what}", []).append(
                    run(cls, args.mode, values, position))
    print(f"mode {args.mode}, window 200, {args.samples} samples, {args.rounds} rounds "
          "interleaved: us per sample, median (min..max)")
    for key, us in rows.items():
        print(f"  {key:24s} {statistics.median(us):7.2f}  ({min(us):.2f}..{max(us):.2f})")
    if args.streams:
        values = series(args.streams * 240, seed=2)
        obs: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for name, cls in (("python", reference.RollingNormalizer),
                              ("compiled", RollingNormalizer)):
                obs.setdefault(name, []).extend(observe(cls, args.streams, values, 1))
        print(f"Conductor.observe, {args.streams} streams, {args.streams * 40} samples "
              "timed after 200 each, us per sample, median (min..max)")
        for key, us in obs.items():
            print(f"  {key:24s} {statistics.median(us):7.2f}  ({min(us):.2f}..{max(us):.2f})")


if __name__ == "__main__":
    main()
