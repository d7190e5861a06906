"""Capacity: how many streams at 10 samples/s one daemon holds, from stdin and from MQTT.

    .venv/bin/python bench/capacity.py [--quick] [--streams 100,500,...] [--sources stdin,mqtt]

A paced generator sends every stream one sample per period (10 Hz), spread evenly over the
period in 10 ms chunks, into:

* ``daemon``: ``streamsonic run --output events`` (defaults otherwise: event clock,
  ``clock.max_rate``, ``clock.batch_window``), reading stdin, or ``--mqtt`` with one topic
  per stream at QoS 0 (mosquitto on loopback, started here; a publisher process);
* ``bare``: the floor, in the same run: a Python process that parses the same input
  (``name=value`` lines; MQTT messages with a bare paho subscriber) and writes one JSON line
  per sample, flushed per read.

Latency is sample-to-note: from just before the generator writes (publishes) a sample to the
moment its note's JSON line is read from the target's stdout, over 100 tracked streams
(``k0``..``k99``, in the first chunk of every period); it includes the events output's flush
delay. A target holds ``n`` streams when p99 <= 50 ms and >= 99% of the tracked samples came
out as notes within the run. CPU per note is the target's user+system CPU time over the
measured seconds divided by the lines it printed; RSS is at the end. Threads of BLAS/OpenMP
are pinned to one in the targets. Rows print as they finish; a target that fails twice in a
row is not tried at larger ``n``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import pitch_weights  # noqa: E402

RATE = 10.0  # samples per second per stream
CHUNK = 0.01  # seconds between the generator's writes
TRACKED = 100  # streams whose every note is timed
HELD_P99 = 0.050
HELD_SHARE = 0.99
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TICK = os.sysconf("SC_CLK_TCK")

BARE_STDIN = r"""
import json, os
enc = json.JSONEncoder(separators=(",", ":")).encode
rest = b""
while data := os.read(0, 1 << 16):
    *lines, rest = (rest + data).split(b"\n")
    out = [enc({"stream": n.decode(), "value": float(v)}) for n, _, v in
           (line.partition(b"=") for line in lines)]
    if out:
        os.write(1, ("\n".join(out) + "\n").encode())
"""

BARE_MQTT = r"""
import json, sys
import paho.mqtt.client as paho
enc = json.JSONEncoder(separators=(",", ":")).encode
out = sys.stdout
def on_message(_c, _u, msg):
    line = enc({"stream": msg.topic, "value": float(msg.payload)}) + "\n"
    out.write(line)
    out.flush()
client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
client.on_message = on_message
def on_connect(c, *_a):
    c.subscribe("cap/#", qos=0)
    print("ready:", file=sys.stderr, flush=True)
client.on_connect = on_connect
client.connect("127.0.0.1", int(sys.argv[1]))
client.loop_forever()
"""


def names(n: int) -> list[str]:
    """Stream names: the tracked ones first (k0..k99), then s100.."""
    return [f"k{i}" if i < TRACKED else f"s{i}" for i in range(n)]


def value(i: int, k: int) -> float:
    """Sample k of stream i: for tracked streams the period number (how a note is matched
    to its sample), for the others a wandering line."""
    if i < TRACKED:
        return float(k)
    return round(10 * math.sin(k / 7 + i) + (i % 13), 3)


def chunks(n: int) -> list[range]:
    """The streams each 10 ms write of a period carries (the tracked ones in the first)."""
    per = max(1, round(1 / RATE / CHUNK))
    size = math.ceil(n / per)
    return [range(j * size, min(n, (j + 1) * size)) for j in range(per) if j * size < n]


@dataclass
class Result:
    target: str
    source: str
    streams: int
    p50: float
    p99: float
    share: float
    cpu_per_note_us: float
    cpu_share: float
    rss_mb: float
    notes_per_s: float

    @property
    def held(self) -> bool:
        return self.p99 <= HELD_P99 and self.share >= HELD_SHARE


def family(pid: int) -> list[int]:
    """``pid`` and its descendants (a daemon with ``--workers N`` runs N more processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):  # it just ended
                todo += [int(c) for c in task.read_text().split()]
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its descendants (the running ones)."""
    total = 0.0
    for p in family(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants."""
    total = 0.0
    for p in family(pid):
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
    return total / 1024 if total else math.nan


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Reader:
    """Reads the target's stdout: counts lines, times the tracked streams' notes."""

    def __init__(self, proc: subprocess.Popen[bytes], tracked_prefix: bytes) -> None:
        self.proc = proc
        self.prefix = tracked_prefix
        self.lines = 0
        self.arrivals: dict[tuple[str, int], float] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        assert self.proc.stdout is not None
        prefix = self.prefix
        for line in self.proc.stdout:
            now = time.monotonic()
            self.lines += 1
            if prefix in line[:24]:
                note = json.loads(line)
                key = (note["stream"].rpartition("/")[2], int(note["value"]))
                self.arrivals.setdefault(key, now)


def wait_ready(proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    for raw in proc.stderr:
        if b"ready:" in raw:
            threading.Thread(target=lambda: [None for _ in proc.stderr],  # type: ignore[union-attr]
                             daemon=True).start()
            return
        if time.monotonic() > deadline:
            break
    raise RuntimeError(f"target did not become ready (exit status {proc.poll()})")


def publisher(port: int, n: int, periods: int, sent_path: str) -> None:
    """(Separate process) publish one message per stream per period, paced."""
    import paho.mqtt.client as paho  # noqa: PLC0415

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    topics = [f"cap/{name}" for name in names(n)]
    parts = chunks(n)
    sent: list[float] = []
    start = time.monotonic() + 0.2
    for k in range(periods):
        for j, part in enumerate(parts):
            target = start + k / RATE + j * CHUNK
            while (delay := target - time.monotonic()) > 0:
                time.sleep(delay)
            if part.start < TRACKED:
                sent.append(time.monotonic())
            for i in part:
                client.publish(topics[i], str(value(i, k)), qos=0)
    time.sleep(0.5)
    client.disconnect()
    client.loop_stop()
    Path(sent_path).write_text(json.dumps(sent))


def run_one(target: str, source: str, n: int, seconds: float, warmup: float,
            weights: Path, port: int | None, tmp: Path, extra: list[str],
            profile: Path | None = None) -> Result:
    env = {**os.environ, **ONE_THREAD}
    periods = int((warmup + seconds) * RATE)
    if target == "daemon":
        # the shipped model as the daemon loads it by default (weights/pitch.npz, torch-free)
        chosen = [] if (REPO / "weights" / "pitch.pt").is_file() else ["--weights", str(weights)]
        cmd = [sys.executable, "-m", "streamsonic", "run", "--output", "events", "--device",
               "cpu", *chosen, "--set", f"streams.max_streams={max(n, 10)}", *extra]
        if source == "mqtt":
            cmd += ["--mqtt", f"mqtt://127.0.0.1:{port}", "--topic", "cap/#", "--qos", "0",
                    "--set", "mqtt.queue_size=200000"]
    else:
        script = BARE_STDIN if source == "stdin" else BARE_MQTT
        cmd = [sys.executable, "-c", script] + ([str(port)] if source == "mqtt" else [])
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if source == "stdin" else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    try:
        if target == "daemon" or source == "mqtt":
            wait_ready(proc)
        else:
            threading.Thread(target=lambda: [None for _ in proc.stderr],  # type: ignore[union-attr]
                             daemon=True).start()
        time.sleep(0.3)
        reader = Reader(proc, b':"k' if source == "stdin" else b"/k")
        sent: list[float] = []
        measure_from = time.monotonic() + 0.2 + warmup
        marks: dict[str, tuple[float, float, int]] = {}

        def mark(name: str) -> None:
            marks[name] = (time.monotonic(), cpu_seconds(proc.pid), reader.lines)
            if name == "from" and profile is not None and target == "daemon":
                spy(proc.pid, seconds, profile.with_name(f"{profile.stem}-{source}-{n}.txt"))

        if source == "stdin":
            assert proc.stdin is not None
            stream_names = names(n)
            parts = chunks(n)
            start = time.monotonic() + 0.2
            for k in range(periods):
                for j, part in enumerate(parts):
                    when = start + k / RATE + j * CHUNK
                    while (delay := when - time.monotonic()) > 0:
                        time.sleep(delay)
                    if "from" not in marks and time.monotonic() >= measure_from:
                        mark("from")
                    data = "".join(f"{stream_names[i]}={value(i, k)}\n" for i in part)
                    if part.start < TRACKED:
                        sent.append(time.monotonic())
                    proc.stdin.write(data.encode())
                    proc.stdin.flush()
            mark("to")
        else:
            sent_path = tmp / f"sent-{n}.json"
            pub = subprocess.Popen([sys.executable, __file__, "--publish", str(port), str(n),
                                    str(periods), str(sent_path)], env=env, cwd=REPO)
            time.sleep(0.2 + warmup)
            mark("from")
            time.sleep(seconds)
            mark("to")
            pub.wait(timeout=60 + warmup + seconds)
            sent = json.loads(sent_path.read_text())
        time.sleep(1.0)  # the last notes come out
        rss = rss_mb(proc.pid)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # sent: per period, the send time of each chunk holding tracked streams, in order
    timed = [j for j, part in enumerate(chunks(n)) if part.start < TRACKED]
    chunk_of = {i: timed.index(j) for j, part in enumerate(chunks(n)) for i in part
                if i < TRACKED}
    first = round(warmup * RATE)
    latencies = []
    expected = 0
    for k in range(first, len(sent) // len(timed)):
        for i in range(min(n, TRACKED)):
            expected += 1
            got = reader.arrivals.get((f"k{i}", k))
            if got is not None:
                latencies.append(got - sent[k * len(timed) + chunk_of[i]])
    (t0, c0, l0), (t1, c1, l1) = marks["from"], marks["to"]
    notes = max(l1 - l0, 1)
    return Result(target, source, n, percentile(latencies, 50), percentile(latencies, 99),
                  len(latencies) / max(expected, 1), (c1 - c0) / notes * 1e6,
                  (c1 - c0) / (t1 - t0), rss, notes / (t1 - t0))


def spy(pid: int, seconds: float, path: Path) -> None:
    """Sample the daemon with py-spy for ``seconds`` (collapsed stacks, by function and
    line, idle stacks left out) into ``path``; in the background."""
    exe = Path(sys.executable).with_name("py-spy")
    subprocess.Popen([str(exe) if exe.exists() else "py-spy", "record", "--pid", str(pid),
                      "--duration", str(int(seconds)), "--rate", "200", "--nonblocking",
                      "--format", "raw", "--output", str(path)],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_broker(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    from bench.mqtt import start_broker as start  # noqa: PLC0415

    return start(tmp)


def row(r: Result) -> str:
    return (f"{r.source:<6} {r.target:<7} {r.streams:>6} {r.notes_per_s:>9,.0f} "
            f"{r.p50 * 1000:>8.1f} {r.p99 * 1000:>8.1f} {r.share * 100:>7.1f} "
            f"{r.cpu_per_note_us:>9.1f} {r.cpu_share * 100:>6.0f} {r.rss_mb:>7.0f}  "
            f"{'yes' if r.held else 'NO'}")


HEADER = (f"{'source':<6} {'target':<7} {'streams':>6} {'notes/s':>9} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'notes%':>7} {'CPU us/n':>9} {'CPU%':>6} {'RSS MB':>7}  held")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="100, 1000, 2000 streams, 3 s each (about 2 minutes)")
    parser.add_argument("--streams", default="100,500,1000,2000,3000,5000",
                        help="stream counts to try, comma-separated, in this order "
                             "(default: %(default)s; --quick: 100,1000,2000)")
    parser.add_argument("--sources", default="stdin,mqtt",
                        help="inputs to measure, comma-separated: stdin, mqtt (a mosquitto "
                             "started here, one topic per stream) (default: %(default)s)")
    parser.add_argument("--targets", default="bare,daemon",
                        help="what reads the input, comma-separated: bare (a Python process "
                             "that only parses and prints, the floor), daemon (streamsonic "
                             "run --output events) (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per row")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of traffic before each row's measured seconds "
                             "(default: %(default)s; --quick: 1)")
    parser.add_argument("--daemon-args", default="",
                        help="more arguments for the daemon, e.g. '--set clock.batch_window=0'")
    parser.add_argument("--keep-going", action="store_true",
                        help="try every size even after two failures")
    parser.add_argument("--profile", type=Path, metavar="PATH",
                        help="sample the daemon with py-spy during each measured run into "
                             "PATH-SOURCE-STREAMS.txt (collapsed stacks; slows it a little)")
    parser.add_argument("--publish", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish:
        port, n, periods, path = args.publish
        publisher(int(port), int(n), int(periods), path)
        return 0
    sweep = [int(x) for x in args.streams.split(",")]
    if args.quick:
        sweep, args.seconds, args.warmup = [100, 1000, 2000], 3.0, 1.0
    print(f"capacity: {RATE:g} samples/s per stream, held = p99 <= {HELD_P99 * 1000:.0f} ms "
          f"and >= {HELD_SHARE:.0%} of tracked samples played; {os.cpu_count()} CPUs; "
          f"{args.seconds:g} s measured after {args.warmup:g} s")
    print(HEADER, flush=True)
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        weights = pitch_weights(tmp)
        broker = None
        port = None
        try:
            for source in args.sources.split(","):
                if source == "mqtt":
                    broker, port = start_broker(tmp)
                for target in args.targets.split(","):
                    failed = 0
                    for n in sweep:
                        if failed >= 2 and not args.keep_going:
                            print(f"{source:<6} {target:<7} {n:>6}  (not tried: failed twice)")
                            continue
                        r = run_one(target, source, n, args.seconds, args.warmup, weights,
                                    port, tmp, args.daemon_args.split(), args.profile)
                        results.append(r)
                        failed = 0 if r.held else failed + 1
                        print(row(r), flush=True)
                if broker is not None:
                    broker.terminate()
                    broker.wait(10)
                    broker = None
        finally:
            if broker is not None:
                broker.terminate()
    print()
    for source in args.sources.split(","):
        held = {t: max([r.streams for r in results if r.source == source and r.target == t
                        and r.held], default=0) for t in args.targets.split(",")}
        print(f"{source}: held " + ", ".join(f"{t} {h}" for t, h in held.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
