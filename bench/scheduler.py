"""CPU per note through ``Scheduler.play`` on a real asyncio loop, now and at an earlier
commit, interleaved in the same run.

    .venv/bin/python bench/scheduler.py [--rev HEAD] [--notes 2000] [--batches 30]
                                        [--rounds 5] [--outputs events,events+file]

Each measurement is one process (imports done before timing) that opens the outputs the way
``run`` does (``events`` writing to /dev/null through the process's stdout descriptor, as in a
daemon or a worker; ``file`` the live, incremental MIDI file in a temporary folder), makes a
:class:`~streamsonic.scheduler.Scheduler` on the running loop, and plays ``--batches``
batches of ``--notes`` notes, one per stream, every ``--interval`` seconds (the notes are made
beforehand, each batch's start planned at ``latency`` after the loop time it is played at,
as the engine's). Durations vary
from 0.05 to 0.35 s, so at a 0.1 s interval about three notes in four are ended by the
stream's next note and the rest by their own note-off timer. ``Scheduler.tick`` runs once a
second, as the daemon's. The time counted is the process's CPU time (``time.process_time``)
from the first batch until the scheduler is idle (every note-off handed over), closed
included: microseconds per note.

``--rev REV`` is checked out into a temporary worktree (``git worktree add``); the rounds
alternate which revision goes first. Printed: every round's figures, the median per
revision and output, and the median of the per-round ratios (REV / now: how many times
cheaper a note is now).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


async def _play(outputs: str, notes: int, batches: int, interval: float, tmp: str) -> float:
    from streamsonic.config import load_config  # noqa: PLC0415
    from streamsonic.daemon import open_outputs  # noqa: PLC0415
    from streamsonic.events import NoteEvent  # noqa: PLC0415
    from streamsonic.outputs import parse_output  # noqa: PLC0415
    from streamsonic.scheduler import Scheduler  # noqa: PLC0415

    config = load_config(None, {"daemon.log_level": "warning"})
    specs = [parse_output("events" if o == "events" else f"file:{tmp}/out.mid")
             for o in outputs.split("+")]
    sinks = open_outputs(specs, config, live=True)
    loop = asyncio.get_running_loop()
    scheduler = Scheduler(loop, sinks)
    streams = [f"sensor-{i:05d}" for i in range(notes)]
    t0 = loop.time() + 1.0 + scheduler.latency  # the notes are made by then
    made = [[NoteEvent(streams[i], 1.7e9 + b / 10, 0.1 * i, 0.5, 48 + (i + b) % 40,
                       60 + i % 60, 0.05 + 0.3 * ((i * 37 + b) % 100) / 100, i % 16, 0,
                       start=t0 + b * interval)
             for i in range(notes)] for b in range(batches)]
    ticked = loop.time()
    await asyncio.sleep(max(t0 - scheduler.latency - loop.time(), 0.0))
    cpu = time.process_time()
    for b, batch in enumerate(made):
        await asyncio.sleep(max(t0 + b * interval - scheduler.latency - loop.time(), 0.0))
        for note in batch:
            scheduler.play(note)
        if loop.time() - ticked >= 1.0:
            scheduler.tick()
            ticked = loop.time()
    while not scheduler.idle:
        await asyncio.sleep(max(scheduler.end_time - loop.time(), 0.0) + 0.002)
    scheduler.close()
    cpu = time.process_time() - cpu
    return cpu * 1e6 / (notes * batches)


def measure(outputs: str, notes: int, batches: int, interval: float) -> float:
    """Microseconds of CPU per note at the revision this process imports streamsonic from."""
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_play(outputs, notes, batches, interval, tmp))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="HEAD", help="the revision to compare with")
    ap.add_argument("--notes", type=int, default=2000, help="notes per batch (one a stream)")
    ap.add_argument("--batches", type=int, default=30,
                    help="batches played per measurement (default: %(default)s)")
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between batches")
    ap.add_argument("--rounds", type=int, default=5,
                    help="interleaved rounds (alternating which revision goes first); "
                         "medians are shown (default: %(default)s)")
    ap.add_argument("--outputs", default="events,events+file",
                    help="comma-separated output sets (events, file, joined by +)")
    ap.add_argument("--json", metavar="OUTPUTS", help=argparse.SUPPRESS)  # worker mode
    args = ap.parse_args()
    if args.json:
        print(json.dumps(measure(args.json, args.notes, args.batches, args.interval)),
              file=sys.stderr)
        return 0
    sets = args.outputs.split(",")
    figures: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree),
                        args.rev], check=True, capture_output=True)
        try:
            trees = {args.rev: tree, "now": REPO}
            for r in range(args.rounds):
                order = list(trees) if r % 2 == 0 else list(reversed(trees))
                for outputs in sets:
                    for name in order:
                        res = subprocess.run(
                            [sys.executable, str(Path(__file__).resolve()), "--json", outputs,
                             "--notes", str(args.notes), "--batches", str(args.batches),
                             "--interval", str(args.interval)],
                            cwd=trees[name], env={**os.environ, "PYTHONPATH": str(trees[name])},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            check=False)
                        if res.returncode != 0:
                            print(res.stderr, file=sys.stderr)
                            return 1
                        value = float(res.stderr.strip().splitlines()[-1])
                        figures.setdefault((outputs, name), []).append(value)
                        print(f"round {r + 1} {outputs:<12} {name:<8} {value:7.2f} us/note",
                              flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                           check=False, capture_output=True)
    print(f"\nCPU per note, {args.notes} notes a batch every {args.interval} s, {args.batches} "
          f"batches, median of {args.rounds} interleaved rounds")
    print(f"{'outputs':<14}{args.rev[:12]:>14}{'now':>10}{'ratio':>9}")
    for outputs in sets:
        base, now = figures[(outputs, args.rev)], figures[(outputs, "now")]
        ratio = statistics.median(b / n for b, n in zip(base, now, strict=True))
        print(f"{outputs:<14}{statistics.median(base):>14.2f}{statistics.median(now):>10.2f}"
              f"{ratio:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
