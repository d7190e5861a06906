"""Start-up and memory of the CPU run path: peak RSS and first-note time of
``echo 1 2 3 | streamsonic --output events``, now and at earlier commits, interleaved.

    .venv/bin/python bench/startup.py [--runs 5] [--rev REV ...] [--no-now]

Each run is a fresh daemon (``python -m streamsonic --output events``, the shipped weights,
three samples on stdin, then end of input): its peak RSS is the kernel's high-water mark
(``ru_maxrss`` of the process, from ``wait4``), its first note the seconds from starting
it to the first line on its stdout. ``--rev REV`` (repeatable) runs the same daemon from a
temporary worktree of REV (``git worktree add``, same Python, ``PYTHONPATH`` on the tree);
the trees take turns, one run each per round, so that load on a shared machine falls on
all of them alike. Each tree first runs once unrecorded: it fills numba's kernel cache
for that tree (a tree without one compiles the kernels, about 10 s and 220 MB), and its
figures are printed on their own line. Targets (issue 10, item 5): peak RSS <= 150 MB,
first note <= 1 s.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINES = b"1\n2\n3\n"
TARGET_MB, TARGET_S = 150.0, 1.0


@dataclass(frozen=True)
class Run:
    peak_kib: int  # ru_maxrss (KiB on Linux)
    first_note_s: float
    total_s: float


def run_once(tree: Path) -> Run:
    """One daemon from ``tree``, to the end of its input."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with tempfile.TemporaryFile() as err:
        began = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "streamsonic", "--output", "events"],
                                cwd=tree, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(LINES)
        proc.stdin.close()
        first = proc.stdout.readline()
        first_s = time.monotonic() - began
        proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        total_s = time.monotonic() - began
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        err.seek(0)
        log = err.read().decode(errors="replace")
    if proc.returncode != 0 or not first:
        raise RuntimeError(f"the daemon from {tree} failed (exit {proc.returncode}):\n{log}")
    model = re.search(r"pitch model (\S+)", log)
    if model is None or not Path(model.group(1)).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"the daemon from {tree} did not load that tree's model:\n{log}")
    return Run(usage.ru_maxrss, first_s, total_s)


def spread(values: list[float], fmt: str) -> str:
    """min / median / max."""
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values),
                                                 max(values)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="recorded runs per tree (default 5)")
    ap.add_argument("--rev", action="append", default=[],
                    help="also measure this commit, in a worktree (repeatable)")
    ap.add_argument("--no-now", action="store_true",
                    help="leave out the working tree (compare revisions only)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees: dict[str, Path] = {}
        try:
            for rev in args.rev:
                tree = Path(tmp) / f"tree{len(trees)}"
                subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach",
                                str(tree), rev], check=True, capture_output=True)
                trees[rev] = tree
            if not args.no_now:
                trees["now"] = REPO
            if not trees:
                ap.error("nothing to measure (--no-now without --rev)")
            first = {name: run_once(tree) for name, tree in trees.items()}
            runs: dict[str, list[Run]] = {name: [] for name in trees}
            for _ in range(args.runs):
                for name, tree in trees.items():
                    runs[name].append(run_once(tree))
        finally:
            for tree in trees.values():
                if tree != REPO:
                    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                    str(tree)], check=False, capture_output=True)
    print(f"\nstart-up: {LINES.decode().split()} | streamsonic --output events, "
          f"{args.runs} runs per tree, interleaved; load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'tree':<14} {'peak RSS MB min / median / max':>32} {'(MiB median)':>13} "
          f"{'first note s min / median / max':>33}")
    for name, done in runs.items():
        mb = [r.peak_kib * 1024 / 1e6 for r in done]
        mib = statistics.median(r.peak_kib / 1024 for r in done)
        print(f"{name[:14]:<14} {spread(mb, '.1f'):>32} {mib:>13.1f} "
              f"{spread([r.first_note_s for r in done], '.2f'):>33}")
    for name, r in first.items():
        print(f"{name[:14]:<14} first run (fills the kernel cache if empty): peak "
              f"{r.peak_kib * 1024 / 1e6:.1f} MB, first note {r.first_note_s:.2f} s")
    print(f"target: peak RSS <= {TARGET_MB:.0f} MB, first note <= {TARGET_S:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
