"""The MQTT source's own cost per message, without the engine: CPU and throughput.

    .venv/bin/python bench/mqtt_source.py [--topics 1000] [--rates 10000,20000,max]
        [--seconds 5]

Starts its own mosquitto on a free port. A publisher process writes pre-encoded QoS 0
PUBLISH packets (MQTT 3.1.1, one topic per stream, bare-number payloads) on a raw socket,
paced at each rate (messages/s, in 10 ms chunks; ``max``: as fast as the broker takes
them), so the publisher costs this process nothing. Targets, each in its own process:

* ``source``: ``MqttSource`` (this checkout's, or ``--repo``'s) consumed by an asyncio
  task with ``async for`` and ``hold()`` as the engine does (decode, queue, hand-over to
  asyncio), at QoS 0 and the default protocol (MQTT 5);
* ``bare``: a bare paho subscriber (``loop_start``, MQTT 5) that counts messages in
  ``on_message``: the ceiling of paho itself.

Per row: messages received of those published, messages/s received, and CPU µs per message
(the target process's user+system time while receiving, all threads, divided by the messages
it received). To compare two revisions, run it from each (``--repo`` names the checkout whose
``streamsonic`` the source target imports) in the same session.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 127, n >> 7
        out.append(byte | (128 if n else 0))
        if not n:
            return bytes(out)


def packet(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + varint(len(body)) + body


def utf8(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def publisher(port: int, topics: int, rate: float, seconds: float) -> None:
    """(Separate process) publish ``rate`` messages/s (0: as fast as possible) for
    ``seconds``, round-robin over ``topics`` topics; print how many were sent."""
    sock = socket.create_connection(("127.0.0.1", port))
    connect = utf8("MQTT") + bytes([4, 2]) + (60).to_bytes(2, "big") + utf8(f"pub{os.getpid()}")
    sock.sendall(packet(0x10, connect))
    sock.recv(4)  # CONNACK
    names = [utf8(f"bench/s{i}") for i in range(topics)]
    per_chunk = max(1, round(rate / 100)) if rate else 1000
    sent = 0
    start = time.perf_counter()
    k = 0
    while time.perf_counter() - start < seconds:
        blob = b"".join(packet(0x30, names[(sent + j) % topics] + str((k + j) % 997).encode())
                        for j in range(per_chunk))
        sock.sendall(blob)
        sent += per_chunk
        k += per_chunk
        if rate:
            due = start + sent / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    sock.sendall(packet(0xE0, b""))
    sock.close()
    print(sent, flush=True)


def cpu() -> float:
    usage = os.times()
    return usage.user + usage.system


def bare(port: int, topics: int, idle: float) -> tuple[int, float, float]:
    sys.path.insert(0, str(REPO))
    from bench.mqtt import subscriber  # noqa: PLC0415

    count = 0
    marks: list[tuple[float, float]] = []

    def on_message(_c: object, _u: object, _m: object) -> None:
        nonlocal count
        count += 1
        if count == 1:
            marks.append((time.perf_counter(), cpu()))

    sub = subscriber(port, "bench/#", 0, on_message)
    print("ready", flush=True)
    last, seen = time.perf_counter(), 0
    end = (last, cpu())
    give_up = last + 600
    while time.perf_counter() < give_up:  # until nothing has arrived for ``idle`` seconds
        time.sleep(0.05)
        if count != seen:
            last, seen = time.perf_counter(), count
            end = (last, cpu())
        elif count and time.perf_counter() - last > idle:
            break
    sub.disconnect()
    sub.loop_stop()
    if not marks:
        return 0, 0.0, 0.0
    return count, end[0] - marks[0][0], end[1] - marks[0][1]


async def source(port: int, idle: float) -> tuple[int, float, float]:
    from streamsonic.config import load_config  # noqa: PLC0415
    from streamsonic.sources.mqtt import MqttSource  # noqa: PLC0415

    print(f"source: {sys.modules['streamsonic'].__file__}", file=sys.stderr)

    config = load_config(None, {"mqtt.url": f"mqtt://127.0.0.1:{port}",
                                "mqtt.topics": ["bench/#"], "mqtt.queue_size": 1_000_000})
    count = 0
    first = (0.0, 0.0)
    end = (0.0, 0.0)
    async with MqttSource.from_config(config) as src:
        while src.stats.get("subscribed", 0) < 1:
            await asyncio.sleep(0.01)
        print("ready", flush=True)

        async def consume() -> None:
            nonlocal count, first, end
            async for _item in src:
                src.hold()
                count += 1
                if count == 1:
                    first = (time.perf_counter(), cpu())
                end = (time.perf_counter(), cpu())

        task = asyncio.create_task(consume())
        seen = -1
        while True:
            await asyncio.sleep(idle)
            if count == seen and count:
                break
            seen = count
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return count, end[0] - first[0], end[1] - first[1]


def target(kind: str, port: int, topics: int) -> None:
    """(Separate process) receive until idle, print count, wall and CPU seconds."""
    result = bare(port, topics, 1.0) if kind == "bare" else asyncio.run(source(port, 1.0))
    print(*result, flush=True)


def run(kind: str, repo: Path, port: int, topics: int, rate: float, seconds: float) -> str:
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, __file__, "--target", kind, str(port), str(topics)],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=repo)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{kind} did not start")
    pub = subprocess.run([sys.executable, __file__, "--publish", str(port), str(topics),
                          str(rate), str(seconds)], capture_output=True, text=True, check=True)
    sent = int(pub.stdout.split()[-1])
    out, _ = proc.communicate(timeout=600)
    count, wall, used = (float(x) for x in out.split()[-3:])
    label = "max" if not rate else f"{rate:,.0f}"
    return (f"{kind:<7} {topics:>6} {label:>8} {sent:>9,} {count / sent * 100:>7.1f} "
            f"{count / wall if wall else 0:>10,.0f} {used / count * 1e6 if count else 0:>9.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topics", type=int, default=1000,
                        help="topics (one per stream) the publisher cycles through "
                             "(default: %(default)s)")
    parser.add_argument("--rates", default="10000,20000,max",
                        help="messages/s to publish, comma-separated; 'max': unpaced")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="seconds of publishing per row (default: %(default)s)")
    parser.add_argument("--targets", default="source,bare",
                        help="subscribers to measure, comma-separated: source (MqttSource), "
                             "bare (a bare paho subscriber) (default: %(default)s)")
    parser.add_argument("--repo", type=Path, default=REPO,
                        help="the checkout whose streamsonic the source target imports")
    parser.add_argument("--target", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--publish", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.target:
        kind, port, topics = args.target
        target(kind, int(port), int(topics))
        return 0
    if args.publish:
        port, topics, rate, seconds = args.publish
        publisher(int(port), int(topics), float(rate), float(seconds))
        return 0
    sys.path.insert(0, str(REPO))
    from bench.mqtt import start_broker  # noqa: PLC0415

    print(f"MQTT source cost per message; {os.cpu_count()} CPUs; "
          f"load {os.getloadavg()[0]:.1f}; source from {args.repo}")
    print(f"{'target':<7} {'topics':>6} {'rate':>8} {'sent':>9} {'recv%':>7} "
          f"{'msg/s':>10} {'CPU us/m':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        broker, port = start_broker(Path(tmp))
        try:
            for rate_text in args.rates.split(","):
                rate = 0.0 if rate_text == "max" else float(rate_text)
                for kind in args.targets.split(","):
                    print(run(kind, args.repo.resolve(), port, args.topics, rate,
                              args.seconds), flush=True)
        finally:
            broker.terminate()
            broker.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
