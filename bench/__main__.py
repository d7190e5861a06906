"""Run every benchmark, then print one table of their headline numbers.

    .venv/bin/python -m bench [--full] [--only NAME[,NAME...]] [--skip NAME[,NAME...]]

Each benchmark runs as its own process, in its quick form (``--full``: its defaults, which
take much longer), with BLAS, OpenMP and torch pinned to one thread; its whole output is
printed as it finishes, under its name. The table at the end has one row per benchmark:
how long it ran, its exit status, and its headline lines (the lines that state its result;
see ``HEADLINES``). Benchmarks that need a component this machine lacks (JACK for
``latency``) fail their row, they do not stop the others.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Bench:
    name: str
    quick: tuple[str, ...]  # arguments for the quick form
    headline: str  # regex: the lines of its output that state the result


#: Every benchmark in bench/, in the order they run (cheap first).
BENCHES = (
    Bench("startup", ("--runs", "3"), r"^now\s+\d|^target"),
    Bench("step", ("--samples", "500", "--rounds", "3"),
          r"^streamsonic stepper, compiled|^target|^\s*(256|1024)\s"),
    Bench("capacity", ("--quick",), r": held "),
    Bench("normalize", ("--samples", "5000", "--rounds", "3", "--streams", "500"),
          r"^\s*(compiled|python)\s"),
    Bench("scheduler", ("--rounds", "3", "--batches", "10"), r"^events"),
    Bench("mqtt", ("--messages", "5000", "--latency-messages", "200"),
          r"^\s*[01]\s+[\d,]+|ratio p50|publish -> note"),
    Bench("render", ("--rows", "5000", "--notes", "5000", "--repeat", "1"), r"rows/s|notes/s"),
    Bench("mqtt_output", ("--seconds", "6", "--protocols", "3.1.1"), r"^\| now \|"),
    Bench("latency", ("--lines", "200", "--notes", "10"), r"MIDI latency p99|jitter"),
    Bench("soak", ("--seconds", "60", "--streams", "200"), r"RSS|held|leak|growth"),
    Bench("rhythm", (), r"."),
    Bench("musicality", ("--no-sweep",), r"mean|total"),
    Bench("listen", ("--skip-fast",), r"mean|total"),
    Bench("accents", ("--seeds", "3", "--reference"),
          r"^\| (all|separable) \||^syn:(noise|random walk)\s+streamsonic"),
    Bench("train", ("--batches", "4", "--repeats", "1"), r"speed|s/batch|ratio"),
    Bench("train_onset", ("--epochs", "3", "--seeds", "1"), r"mean|best|loss"),
)


def machine() -> str:
    """One line describing this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
            f"load average {load}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="each benchmark's defaults")
    parser.add_argument("--only", default="", help="comma-separated names to run")
    parser.add_argument("--skip", default="", help="comma-separated names to leave out")
    args = parser.parse_args()
    only = {n for n in args.only.split(",") if n}
    skip = {n for n in args.skip.split(",") if n}
    unknown = (only | skip) - {b.name for b in BENCHES}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}; "
                     f"known: {', '.join(b.name for b in BENCHES)}")
    chosen = [b for b in BENCHES if (not only or b.name in only) and b.name not in skip]
    print(f"machine: {machine()}", flush=True)
    rows: list[tuple[str, float, int, list[str]]] = []
    for bench in chosen:
        cmd = [sys.executable, str(REPO / "bench" / f"{bench.name}.py"),
               *(() if args.full else bench.quick)]
        print(f"\n=== {bench.name}: {' '.join(cmd[1:])}", flush=True)
        began = time.monotonic()
        proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, **ONE_THREAD},
                              capture_output=True, text=True, check=False)
        took = time.monotonic() - began
        print(proc.stdout, end="")
        if proc.returncode:
            print(proc.stderr[-2000:], end="")
        pattern = re.compile(bench.headline)
        lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
        heads = [line for line in lines if pattern.search(line)] or lines[-1:]
        if proc.returncode:
            errors = [line for line in proc.stderr.splitlines() if line.strip()]
            heads = [f"failed (exit {proc.returncode}): {errors[-1] if errors else ''}"]
        rows.append((bench.name, took, proc.returncode, heads[:6]))
    print(f"\n{'benchmark':<12} {'s':>6} {'exit':>4}  headline")
    for name, took, status, heads in rows:
        for i, head in enumerate(heads or ["-"]):
            if i == 0:
                print(f"{name:<12} {took:>6.0f} {status:>4}  {head}")
            else:
                print(f"{'':<12} {'':>6} {'':>4}  {head}")
    print(f"\nmachine: {machine()}")
    return 0 if all(status == 0 for _, _, status, _ in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
