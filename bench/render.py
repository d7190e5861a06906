"""Render throughput (rows/s) and the per-note cost of the outputs, now and at an earlier
commit, in the same run.

    .venv/bin/python bench/render.py [--rows 20000] [--columns 8] [--notes 20000]
                                     [--rev REV] [--repeat 3]

Rows/s is CPU time (``time.process_time``, of every thread), so other work on a shared
machine counts less; each figure is the best of ``--repeat`` runs. Three rows are
wall-clock time: a render steps the model in a second thread while the first reads rows and
schedules notes, so on two free cores it takes less time than CPU. Rows:

* ``render, 1 column``: ``render_notes`` of one column of a random walk into a MIDI file
  (the ``streamsonic render data.csv -o out.mid`` path: normalize, step, choose, schedule,
  encode), at the defaults (phrases: the model adds notes between the data's); then the
  same with one note per row (``model.passing_notes = 0``; CPU and wall clock), and a
  quarter as many rows of Gaussian noise at the defaults (every row leaps: the most added
  notes, phrases' worst case).
* ``render, N columns``: N columns of the same length in one render (at a revision that
  cannot render several columns at once, N one-column renders; the rows/s counts every
  column's rows).
* ``output ...``: microseconds of CPU per note through ``Scheduler.play`` into one output
  (the events output writing to /dev/null, the MIDI file output, the MQTT output to a
  real mosquitto when ``mosquitto`` is installed, at QoS 0 and QoS 1: CPU of every
  thread, paho's network thread with its acknowledgements included), notes made
  beforehand. The MQTT output is fed in runs of 1,000 notes, each run sent (QoS 1:
  acknowledged) before the next, as a live feed would allow; a dropped note fails the
  run rather than counting as free.

``--rev REV`` (repeatable) runs the same measurements in a temporary worktree of REV
(``git worktree add``) with the same Python and prints them beside the working tree's
(``--no-now``: the revisions only), with the ratio of the last column to the first. Each
render call loads the model once (as the command does); a first small render warms the
imports. BLAS runs on one thread.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def best_cpu(fn: Callable[[], object], repeat: int) -> float:
    """Least CPU seconds of ``repeat`` calls of ``fn``."""
    return best(fn, repeat)[0]


def best(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Least CPU seconds and least wall-clock seconds of ``repeat`` calls of ``fn``."""
    cpu, wall = [], []
    for _ in range(repeat):
        t0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - t0)
        wall.append(time.perf_counter() - w0)
    return min(cpu), min(wall)


@contextlib.contextmanager
def mosquitto() -> Iterator[int | None]:
    """A mosquitto on a free local port (None without one)."""
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto")
                                        .exists() else None)
    if exe is None:
        yield None
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "m.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port),
                                                                            timeout=0.2):
                    break
                time.sleep(0.05)
            yield port
        finally:
            proc.terminate()
            proc.wait()


def floor_rows_per_s(rows: int, repeat: int) -> float:
    """Rows/s of the matrix products that one row of a one-note-per-row render cannot do
    without, alone, in the shipped model's shapes: a row proposes (the two layers'
    recurrent products, the second layer's input product, the head) and then commits the
    chosen note (the second layer's input product again, for the chosen note's first
    layer), each product depending on the one before, so a column's rows cannot share
    them. NumPy on one BLAS thread, no Python of the renderer's own: a bound on what any
    render of one column can reach with these float32 weights on this machine."""
    import numpy as np  # noqa: PLC0415

    from streamsonic.model.checkpoint import default_weights  # noqa: PLC0415

    weights = np.load(default_weights("pitch").with_suffix(".npz"))
    hh1 = np.ascontiguousarray(weights["lstm1.weight_hh_l0"].T, np.float32)
    ih2 = np.ascontiguousarray(weights["lstm2.weight_ih_l0"].T, np.float32)
    hh2 = np.ascontiguousarray(weights["lstm2.weight_hh_l0"].T, np.float32)
    head = np.ascontiguousarray(weights["head.weight"].T, np.float32)
    h1 = np.full((1, hh1.shape[0]), 0.1, np.float32)
    h2 = np.full((1, hh2.shape[0]), 0.1, np.float32)

    def run() -> None:
        for _ in range(rows):
            h1 @ hh1
            h2 @ hh2
            h1 @ ih2  # proposed
            h2 @ head
            h1 @ ih2  # committed

    return rows / best_cpu(run, repeat)


def measure(rows: int, columns: int, notes: int, repeat: int) -> dict[str, float]:
    """The measurements at the revision this process imports streamsonic from."""
    import inspect  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    from streamsonic.config import load_config  # noqa: PLC0415
    from streamsonic.events import NoteEvent  # noqa: PLC0415
    from streamsonic.outputs import parse_output  # noqa: PLC0415
    from streamsonic.render import Series, render_notes  # noqa: PLC0415
    from streamsonic.scheduler import Scheduler, VirtualClock  # noqa: PLC0415

    out: dict[str, float] = {}
    config = load_config(None, {"model.device": "cpu", "daemon.log_level": "warning"})
    rng = np.random.default_rng(0)
    walks = np.cumsum(rng.standard_normal((columns, rows)), axis=1)
    table = [Series(f"c{c}", walks[c], list(range(2, rows + 2)), {}) for c in range(columns)]
    with tempfile.TemporaryDirectory() as tmp:
        spec = [parse_output(f"file:{tmp}/out.mid")]
        render_notes(config, Series("warm", walks[0][:20], list(range(20)), {}), spec)  # imports
        one, wall = best(lambda: render_notes(config, table[0], spec), repeat)
        out["render, 1 column (rows/s)"] = rows / one
        out["render, 1 column, wall clock (rows/s)"] = rows / wall
        plain = load_config(None, {"model.device": "cpu", "daemon.log_level": "warning",
                                   "model.passing_notes": 0})
        one, wall = best(lambda: render_notes(plain, table[0], spec), repeat)
        out["render, 1 column, passing_notes 0 (rows/s)"] = rows / one
        out["render, 1 column, passing_notes 0, wall clock (rows/s)"] = rows / wall
        noise = Series("noise", rng.standard_normal(rows // 4), list(range(rows // 4)), {})
        one = best_cpu(lambda: render_notes(config, noise, spec), repeat)
        out["render, 1 column of noise (rows/s)"] = rows // 4 / one
        batched = "Sequence" in str(inspect.signature(render_notes).parameters["series"])
        if batched:
            many, wall = best(lambda: render_notes(config, table, spec), repeat)
        else:
            many, wall = best(lambda: [render_notes(config, s, spec) for s in table], repeat)
        out[f"render, {columns} columns (rows/s, all columns)"] = rows * columns / many
        out[f"render, {columns} columns, wall clock (rows/s)"] = rows * columns / wall
    out["floor: the model's products alone, 1 column (rows/s)"] = floor_rows_per_s(rows, repeat)

    made = [NoteEvent(f"s{i % 50}", float(i), 1.0, 0.5, 48 + i % 40, 60 + i % 60, 0.25,
                      i % 16, 0, start=i * 0.01) for i in range(notes)]

    def through(sink_spec: str, name: str, drained: int = 0) -> None:
        from streamsonic.daemon import open_outputs  # noqa: PLC0415

        lost: list[int] = []
        spent: list[float] = []

        def run() -> None:  # CPU from the first note to the output's close (not its
            clock = VirtualClock()  # opening: the MQTT connection's set-up is no note's)
            sinks = open_outputs([parse_output(sink_spec)], config)
            scheduler = Scheduler(clock, sinks)
            t0 = time.process_time()
            for i, note in enumerate(made):
                clock.run_until(note.start)
                scheduler.play(note)
                if drained and i % drained == drained - 1:  # what a live feed allows
                    for sink in sinks:
                        getattr(sink, "drain", lambda: True)()
            clock.run_all()
            scheduler.close()  # (the MQTT output: waits until the broker took the last)
            spent.append(time.process_time() - t0)
            lost.append(sum(n for sink in sinks for k, n in getattr(sink, "stats", {}).items()
                            if k.startswith("dropped")))

        for _ in range(repeat):
            run()
        out[name] = min(spent) * 1e6 / notes
        if max(lost):
            raise SystemExit(f"bench/render.py: {name}: {max(lost)} of {notes} notes dropped; "
                             "the per-note figure would count them as free")

    with tempfile.TemporaryDirectory() as tmp, Path(os.devnull).open("w") as null:
        saved = sys.stdout
        sys.stdout = null
        try:
            through("events", "output events (us/note)")
        finally:
            sys.stdout = saved
        through(f"file:{tmp}/notes.mid", "output MIDI file (us/note)")
        with mosquitto() as port:
            if port is not None:
                for qos in (0, 1):
                    config = load_config(None, {"mqtt.url": f"mqtt://127.0.0.1:{port}",
                                                "mqtt.qos": qos})
                    # published in runs of 1,000 notes, each sent (QoS 1: acknowledged)
                    # before the next: paho holds at most 10,000, and notes made faster
                    # than it sends would be dropped, not measured
                    through("mqtt:bench", f"output MQTT, QoS {qos} (us/note)", 1000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000,
                    help="rows of each rendered column (the noise row: a quarter as many) "
                         "(default: %(default)s)")
    ap.add_argument("--columns", type=int, default=8,
                    help="columns of the 'render, N columns' row (default: %(default)s)")
    ap.add_argument("--notes", type=int, default=20000,
                    help="notes played through each output for its us/note row "
                         "(default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each measurement; the best (least CPU time) is shown "
                         "(default: %(default)s)")
    ap.add_argument("--rev", action="append", default=[],
                    help="also measure this commit, in a worktree (repeatable)")
    ap.add_argument("--no-now", action="store_true",
                    help="leave out the working tree (compare revisions only)")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # worker mode
    args = ap.parse_args()
    if args.no_now and not args.rev:
        ap.error("--no-now leaves nothing to measure without --rev REV")
    sizes = (args.rows, args.columns, args.notes, args.repeat)
    if args.json:
        print(json.dumps(measure(*sizes)))
        return 0
    results: dict[str, dict[str, Any]] = {}
    for rev in args.rev:
        with tempfile.TemporaryDirectory() as tmp:
            tree = Path(tmp) / "tree"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree),
                            rev], check=True, capture_output=True)
            try:
                env = {**os.environ, "PYTHONPATH": str(tree)}
                res = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--json",
                                      "--rows", str(args.rows), "--columns", str(args.columns),
                                      "--notes", str(args.notes), "--repeat", str(args.repeat)],
                                     cwd=tree, env=env, capture_output=True, text=True,
                                     check=False)
                if res.returncode != 0:
                    print(res.stderr, file=sys.stderr)
                    return 1
                results[rev] = json.loads(res.stdout.strip().splitlines()[-1])
            finally:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                str(tree)], check=False, capture_output=True)
    if not args.no_now:
        results["now"] = measure(*sizes)
    keys = list(results[list(results)[-1]])
    cols = list(results)
    print(f"\nrender and output cost ({args.rows} rows, {args.columns} columns, {args.notes} "
          "notes; CPU time, best of "
          f"{args.repeat}; BLAS 1 thread)")
    print(f"{'':<44}" + "".join(f"{c[:12]:>14}" for c in cols)
          + (f"{'ratio':>9}" if len(cols) > 1 else ""))
    for key in keys:
        vals = [results[c].get(key, float("nan")) for c in cols]
        line = f"{key:<44}" + "".join(f"{v:>14.1f}" for v in vals)
        if len(cols) > 1:
            better = vals[-1] / vals[0] if "rows/s" in key else vals[0] / vals[-1]
            line += f"{better:>8.2f}x"
        print(line)
    if len(cols) > 1:
        print("(ratio: how many times better now is; rows/s higher, us/note lower)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
