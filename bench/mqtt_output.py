"""The MQTT output under load: notes published by a busy daemon that reach the broker.

    .venv/bin/python bench/mqtt_output.py [--streams 1000] [--seconds 12] [--qos 1]
        [--protocols 5,3.1.1] [--broker-inflight 20,100] [--rev REV] [--runs 1]

For each protocol and broker setting: a mosquitto on a free loopback port (its
``max_inflight_messages``, which an MQTT 5 client is told as its Receive Maximum: 20 is
mosquitto's default), ``mosquitto_sub`` counting what arrives on ``notes/#`` (at the
same QoS), and ``streamsonic run --output events --output mqtt:URL/notes`` fed from stdin by a
paced generator (every stream one ``name=value`` line every 0.1 s; a Python generator
reaches about 8,000-9,000 lines a second on 2 cores, so 1,000 streams run a little under
10 Hz). The notes played are the daemon's own count (its ``stopped:`` line); delivered is
what the subscriber got (the broker keeps whatever waits for it: ``max_queued_messages
0``); dropped is the difference (the output counts the same, ``dropped.*``, and warns).
Each tree's daemon runs once first, to compile its kernels. ``--rev REV`` runs REV's
daemon (a git worktree) beside this tree's in the same run. Prints one table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # (bench.mqtt's broker; the daemons run their tree's code)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class Counter:
    """``mosquitto_sub`` counting the messages on ``topic`` (a C client: a Python one took
    a third of a core from the daemon it measures)."""

    def __init__(self, port: int, topic: str, qos: int) -> None:
        exe = shutil.which("mosquitto_sub")
        if exe is None:
            raise SystemExit("bench/mqtt_output.py: mosquitto_sub is not installed "
                             "(apt-get install mosquitto-clients)")
        self.count = 0
        self._proc = subprocess.Popen([exe, "-h", "127.0.0.1", "-p", str(port), "-t", topic,
                                       "-q", str(qos), "-F", "%t"],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        time.sleep(0.5)  # (its SUBACK: nothing is published before the daemon starts)

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for _ in self._proc.stdout:
            self.count += 1

    def settle(self, quiet: float = 1.5, most: float = 30.0) -> int:
        """The count once it stopped growing for ``quiet`` seconds."""
        end = time.monotonic() + most
        last, since = -1, time.monotonic()
        while time.monotonic() < end:
            if self.count != last:
                last, since = self.count, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
            time.sleep(0.1)
        self._proc.terminate()
        self._proc.wait()
        return self.count


def run_once(tree: Path, streams: int, seconds: float, qos: int, protocol: str,
             inflight: int | None) -> dict[str, float]:
    """One daemon run: notes played, delivered, and the generator's rate."""
    from bench.mqtt import start_broker  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        broker, port = start_broker(Path(tmp), inflight)
        try:
            return _run(tree, port, streams, seconds, qos, protocol)
        finally:
            broker.terminate()
            broker.wait()


def _run(tree: Path, port: int, streams: int, seconds: float, qos: int, protocol: str
         ) -> dict[str, float]:
    """One daemon run against the broker on ``port`` (see :func:`run_once`)."""
    counter = Counter(port, "notes/#", qos)
    # (the protocol quoted: older revisions took --set mqtt.protocol=5 as a number)
    cmd = [sys.executable, "-m", "streamsonic", "--output", "events", "--output",
           f"mqtt:mqtt://127.0.0.1:{port}/notes", "--set", f"mqtt.qos={qos}",
           "--set", f'mqtt.protocol="{protocol}"']
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(tree)}
    daemon = subprocess.Popen(cmd, cwd=tree, env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert daemon.stdin is not None and daemon.stderr is not None
    err: list[bytes] = []
    reader = threading.Thread(target=lambda: err.extend(daemon.stderr or []), daemon=True)
    reader.start()
    names = [f"s{i}=" for i in range(streams)]
    lines = 0
    t0 = time.monotonic()
    k = 0
    while time.monotonic() - t0 < seconds and daemon.poll() is None:
        value = f"{(k % 17) * 0.37 - 3.0:.2f}\n"
        with contextlib.suppress(BrokenPipeError):  # (it failed: said below)
            daemon.stdin.write("".join(n + value for n in names).encode())
            daemon.stdin.flush()
        lines += streams
        k += 1
        wait = t0 + k * 0.1 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    rate = lines / (time.monotonic() - t0)
    with contextlib.suppress(BrokenPipeError):
        daemon.stdin.close()
    daemon.wait(120)
    reader.join(10)
    delivered = counter.settle()
    text = b"".join(err).decode(errors="replace")
    found = re.search(r"stopped: (\d+) samples, (\d+) notes", text)
    if daemon.returncode != 0 or found is None:
        raise SystemExit(f"bench/mqtt_output.py: the daemon failed ({daemon.returncode}):\n"
                         + text[-2000:])
    played = int(found.group(2))
    return {"played": played, "delivered": delivered, "rate": rate}


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """``rev`` checked out in a temporary git worktree."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev],
                       check=True, capture_output=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(tree)], check=False, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000,
                        help="streams, each a line every 0.1 s (default 1000)")
    parser.add_argument("--seconds", type=float, default=12.0,
                        help="seconds of input per run (default 12)")
    parser.add_argument("--qos", type=int, default=1, choices=(0, 1, 2),
                        help="the output's QoS, and the counter's (default 1)")
    parser.add_argument("--protocols", default="5,3.1.1",
                        help="MQTT versions, comma-separated (default 5,3.1.1)")
    parser.add_argument("--broker-inflight", default="default",
                        help="mosquitto max_inflight_messages values, comma-separated "
                             "('default': mosquitto's own, 20)")
    parser.add_argument("--rev", action="append", default=[],
                        help="also run this revision's daemon (repeatable)")
    parser.add_argument("--runs", type=int, default=1, help="runs of each row (default 1)")
    args = parser.parse_args()
    settings = [None if v == "default" else int(v) for v in args.broker_inflight.split(",")]
    with contextlib.ExitStack() as stack:
        trees = [(rev, stack.enter_context(worktree(rev))) for rev in args.rev]
        trees.append(("now", REPO))
        for _, tree in trees:  # a first run compiles the kernels (a worktree's own cache)
            subprocess.run([sys.executable, "-m", "streamsonic", "--output", "events"],
                           cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                           input=b"1\n2\n3\n", capture_output=True, check=True)
        print(f"MQTT output under load: {args.streams} streams, {args.seconds:g} s, "
              f"QoS {args.qos}")
        print("| rev | protocol | broker max_inflight | input lines/s | notes played | "
              "delivered | dropped |")
        print("|---|---|---|---|---|---|---|")
        for protocol in args.protocols.split(","):
            for inflight in settings:
                for rev, tree in trees:
                    for _ in range(args.runs):
                        r = run_once(tree, args.streams, args.seconds, args.qos, protocol,
                                     inflight)
                        lost = r["played"] - r["delivered"]
                        print(f"| {rev} | {protocol} | {inflight or '20 (default)'} | "
                              f"{r['rate']:,.0f} | {r['played']:,} | {r['delivered']:,} | "
                              f"{lost:,} ({100.0 * lost / max(r['played'], 1):.1f}%) |",
                              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
