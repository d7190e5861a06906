"""MQTT benchmarks: source throughput and publish-to-note latency on loopback.

    .venv/bin/python bench/mqtt.py [--messages N] [--latency-messages N]

Starts its own mosquitto on a free port. Prints two tables:

1. Throughput: N messages published as fast as possible (one publisher, QoS 0 and 1) into
   (a) a bare paho subscriber that only counts (the baseline: broker + paho ceiling) and
   (b) ``MqttSource`` consumed by an asyncio task (decode, queue, hand-off to asyncio),
   ratio = source / baseline. The queue is sized to hold everything, so nothing drops.
2. Latency: messages published at a steady rate on 4 topics to ``streamsonic run --mqtt
   ... --output events`` (event clock, --max-rate 1000); publish-to-note time is from just
   before ``publish()`` to the note's JSON line arriving on the daemon's stdout. Baseline:
   the same publishes received by a bare paho subscriber in the same run. One warm-up
   message per topic goes first; the cold first-note time is printed on its own line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import pitch_weights  # noqa: E402
from streamsonic.config import load_config  # noqa: E402
from streamsonic.sources.mqtt import MqttSource  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_broker(workdir: Path, max_inflight: int | None = 0
                 ) -> tuple[subprocess.Popen[bytes], int]:
    """A mosquitto on a free loopback port, holding whatever waits for a subscriber, with
    ``max_inflight_messages`` (0: no limit; None: mosquitto's default, 20), and the port."""
    port = free_port()
    conf = workdir / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "max_queued_messages 0"]
    if max_inflight is not None:
        lines.append(f"max_inflight_messages {max_inflight}")
    if os.geteuid() == 0:
        lines.append("user root")
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def publisher(port: int) -> paho.Client:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.max_inflight_messages_set(0)  # 0 = unlimited (for the QoS 1 runs)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def publish_all(port: int, topic: str, n: int, qos: int) -> None:
    client = publisher(port)
    infos = [client.publish(topic, str(i % 1000), qos=qos) for i in range(n)]
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


# -- throughput ---------------------------------------------------------------------------

def subscriber(port: int, topic: str, qos: int,
               on_message: Callable[[Any, Any, Any], None]) -> paho.Client:
    """A bare paho subscriber on the loopback broker at ``port``, its network thread
    started, once the broker has acknowledged the subscription (the benches' ceiling)."""
    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    sub.on_message = on_message
    subscribed = threading.Event()
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    sub.subscribe(topic, qos=qos)
    subscribed.wait(10)
    return sub


def baseline_throughput(port: int, n: int, qos: int) -> float:
    done = threading.Event()
    times: list[float] = []
    count = 0

    def on_message(_c: object, _u: object, _m: object) -> None:
        nonlocal count
        count += 1
        if count == 1:
            times.append(time.perf_counter())
        if count == n:
            times.append(time.perf_counter())
            done.set()

    sub = subscriber(port, "tp/base", qos, on_message)
    publish_all(port, "tp/base", n, qos)
    ok = done.wait(120)
    sub.disconnect()
    sub.loop_stop()
    if not ok:
        raise RuntimeError(f"baseline got {count} of {n}")
    return n / (times[1] - times[0])


async def source_throughput(port: int, n: int, qos: int) -> tuple[float, dict[str, int]]:
    config = load_config(None, {"mqtt.url": f"mqtt://127.0.0.1:{port}",
                                "mqtt.topics": ["tp/src"], "mqtt.qos": qos,
                                "mqtt.queue_size": n + 10})
    async with MqttSource.from_config(config) as source:
        while source.stats.get("subscribed", 0) < 1:
            await asyncio.sleep(0.01)
        pub = asyncio.create_task(asyncio.to_thread(publish_all, port, "tp/src", n, qos))
        count = 0
        first = 0.0
        async for _sample in source:
            count += 1
            if count == 1:
                first = time.perf_counter()
            if count == n:
                break
        last = time.perf_counter()
        await pub
        stats = source.stats
    return n / (last - first), stats


# -- latency ------------------------------------------------------------------------------

#: Values of the warm-up messages (not counted in the latency table).
WARMUP = 1_000_000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def latency(port: int, n: int, rate: float, tmp: Path) -> tuple[list[float], list[float]]:
    sent: dict[int, float] = {}
    base: dict[int, float] = {}
    note_at: dict[int, float] = {}
    cmd = [sys.executable, "-m", "streamsonic", "run", "--mqtt", f"mqtt://127.0.0.1:{port}",
           "--topic", "lat/#", "--output", "events", "--weights", str(pitch_weights(tmp)),
           "--max-rate", "1000", "--log-level", "info"]
    daemon = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL, cwd=REPO)
    ready = threading.Event()

    def read_err() -> None:
        assert daemon.stderr is not None
        for line in daemon.stderr:
            if "ready:" in line:
                ready.set()

    def read_out() -> None:
        assert daemon.stdout is not None
        for line in daemon.stdout:
            now = time.perf_counter()
            note = json.loads(line)
            note_at.setdefault(int(note["value"]), now)

    threading.Thread(target=read_err, daemon=True).start()
    threading.Thread(target=read_out, daemon=True).start()
    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        base.setdefault(int(msg.payload), time.perf_counter())

    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    sub.subscribe("lat/#", qos=1)
    if not ready.wait(120):
        raise RuntimeError("daemon did not become ready")
    time.sleep(0.5)
    pub = publisher(port)
    # Warm-up: the first note of a fresh daemon pays for torch's first forward pass; it is
    # reported separately (cold) and kept out of the steady-state numbers.
    for k in range(4):
        sent[WARMUP + k] = time.perf_counter()
        pub.publish(f"lat/s{k}", str(WARMUP + k), qos=1)
    time.sleep(2.0)
    interval = 1.0 / rate
    start = time.perf_counter()
    for i in range(n):
        target = start + i * interval
        while time.perf_counter() < target:
            time.sleep(min(0.001, max(0.0, target - time.perf_counter())))
        sent[i] = time.perf_counter()
        pub.publish(f"lat/s{i % 4}", str(i), qos=1)
    time.sleep(1.0)
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(30)
    pub.disconnect()
    pub.loop_stop()
    sub.disconnect()
    sub.loop_stop()
    cold = note_at.get(WARMUP, float("nan")) - sent[WARMUP]
    print(f"cold start: first note {cold * 1000:.0f} ms after its publish (torch warm-up)")
    ours = [note_at[i] - sent[i] for i in sent if i in note_at and i < WARMUP]
    theirs = [base[i] - sent[i] for i in sent if i in base and i < WARMUP]
    if len(ours) < n:
        print(f"note: {n - len(ours)} of {n} messages made no note (aggregated by the clock)")
    return ours, theirs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000,
                        help="throughput: messages published per run (QoS 0 and 1, paho "
                             "baseline and MqttSource each) (default: %(default)s)")
    parser.add_argument("--latency-messages", type=int, default=400,
                        help="latency run: messages published on 4 topics at --rate, after "
                             "one warm-up message per topic (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=50.0, help="latency run: messages/s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        broker, port = start_broker(tmp)
        try:
            print(f"throughput: {args.messages} messages, one publisher, loopback")
            print(f"{'qos':>3}  {'paho baseline msg/s':>20}  {'MqttSource msg/s':>17}  "
                  f"{'ratio':>6}  dropped")
            for qos in (0, 1):
                base = baseline_throughput(port, args.messages, qos)
                ours, stats = asyncio.run(source_throughput(port, args.messages, qos))
                print(f"{qos:>3}  {base:>20,.0f}  {ours:>17,.0f}  {ours / base:>6.2f}  "
                      f"{stats.get('dropped.queue_full', 0)}")
            print()
            note_lat, paho_lat = latency(port, args.latency_messages, args.rate, tmp)
            print(f"latency: {args.latency_messages} messages at {args.rate:g}/s on 4 topics, "
                  "QoS 1, ms")
            print(f"{'path':<32} {'n':>5} {'p50':>8} {'p99':>8} {'max':>8}")
            rows = [("publish -> paho subscriber", paho_lat),
                    ("publish -> note (daemon events)", note_lat)]
            for name, values in rows:
                ms = [v * 1000 for v in values]
                print(f"{name:<32} {len(ms):>5} {statistics.median(ms):>8.2f} "
                      f"{percentile(ms, 99):>8.2f} {max(ms):>8.2f}")
            p50 = statistics.median(note_lat) / statistics.median(paho_lat)
            print(f"ratio p50 note / p50 baseline: {p50:.1f}")
        finally:
            broker.terminate()
            broker.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
