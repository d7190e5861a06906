"""Soak test: the real daemon on a real mosquitto for a long time, under mixed traffic.

    .venv/bin/python bench/soak.py                 # 30 minutes
    .venv/bin/python bench/soak.py --minutes 2     # CI
    .venv/bin/python bench/soak.py --seconds 25 --json out.json   # the test suite's run

Starts mosquitto on a free loopback port (``tests.fixtures_mqtt.Broker``) and
``streamsonic run --mqtt ... --output events --output file:soak.mid``, then publishes to
``--streams`` topics (1,000 by default) at mixed rates (a few fast streams above the event
clock's cap, most at 0.1-5 Hz), with values that wander and now and then spike, plus hostile
payloads (invalid UTF-8, NaN, text, lone surrogates, deep JSON, oversized messages) on the
same topics. A few streams retire every minute and new names take their place, so idle
streams are evicted (``streams.idle_evict`` is set to 30 s by a reload, SIGHUP, after the
fill). At the end the daemon gets SIGTERM while traffic still flows.

A stream's memory grows until its windows are full (about 13 kB new, 66 kB after some 400
samples), which at 0.1 Hz takes over an hour: so that growth is not mistaken for a leak,
every stream (and every new name) first gets a burst of ``--fill`` samples, and the RSS is
measured from a short settling time after that fill.

Reports, as a table: messages published (valid, hostile), what the daemon counted (samples,
notes, skips and drops by reason, evictions, all from its own statistics lines), its RSS
after settling and at the end (growth must stay under ``--max-growth``, 2%: the end is the
median of the last five samples, so that one late step of a few MB, such as a kernel
loaded from numba's cache when a stream first takes a rare path, is not taken for a leak,
which moves them all), its CPU use,
and the notes left hanging at shutdown in the MIDI file (must be 0; note_on without a
note_off or an All Notes Off on its channel). Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import mido  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402

from tests.fixtures_mqtt import Broker  # noqa: E402

#: Streams per rate (Hz), as fractions of --streams: 1% faster than the event clock's cap
#: (8 notes/s: aggregated), the rest from 5 Hz down to one sample every 10 s.
RATE_MIX: tuple[tuple[float, float], ...] = ((20.0, 0.01), (5.0, 0.09), (1.0, 0.3),
                                             (0.1, 0.6))
#: Hostile payloads, sent in turn (an oversized one every 10 s on its own).
HOSTILE: tuple[bytes, ...] = (
    b"\xff\xfe\xfd",                      # invalid UTF-8
    b"nan",
    b"-inf",
    b"1e999",                             # too large for a float
    b"hello",
    b"",
    b'{"\\ud800": 1}',                    # a lone surrogate as a JSON key (defect 1)
    b"[" * 5000 + b"]" * 5000,            # deep nesting
    b'{"value": "x"}',
    b"\x00\x01\x02",
)
#: streams.idle_evict during the soak (after the fill), seconds.
IDLE_EVICT = 30.0
#: Fill messages published at most this far ahead of what the daemon has taken.
FILL_AHEAD = 20_000
OVERSIZED = b"1" * (17 * 65536)  # over 16 x input.max_line_bytes
STATS_RE = re.compile(r"stats: (\d+) samples, (\d+) notes, (\d+) streams, (\d+) waiting; "
                      r"streams (.*?); input (.*)$")
STOPPED_RE = re.compile(r"stopped: (\d+) samples, (\d+) notes; streams (.*?); input (.*)$")


@dataclass
class Result:
    """Everything the soak measured."""

    seconds: float
    streams: int
    filled: int = 0  # samples of the fill (a burst on every stream before the soak)
    fill_seconds: float = 0.0
    published: int = 0  # valid samples, fill included, up to the SIGTERM
    hostile: int = 0
    oversized: int = 0
    retired: int = 0
    samples: int = 0
    notes: int = 0
    accents: int = 0
    events_lines: int = 0
    live_streams_max: int = 0
    daemon_counts: dict[str, int] = field(default_factory=dict)
    rss_start_kib: int = 0
    rss_end_kib: int = 0
    rss_max_kib: int = 0
    rss_late_kib: int = 0  # the median of the last five samples (the end's included)
    rss_growth_pct: float = 0.0  # the median of the last five samples against the start
    rss_timeline_mib: list[float] = field(default_factory=list)  # ten points, warm-up to end
    cpu_seconds: float = 0.0
    hanging: int = -1
    midi_notes: int = 0
    exit_status: int | None = None
    tracebacks: int = 0
    failures: list[str] = field(default_factory=list)


def soak_config(idle_evict: float, stats_interval: float) -> str:
    """The daemon's config file for the soak."""
    return (f"[streams]\nidle_evict = {idle_evict}\n\n"
            f"[daemon]\nstats_interval = {stats_interval}\n")


def parse_counts(text: str) -> dict[str, int]:
    """``a=1, b.c=2`` (the daemon's ``_fmt_stats``) -> dict; ``-`` -> {}."""
    if text.strip() == "-":
        return {}
    out: dict[str, int] = {}
    for item in text.split(", "):
        key, _, value = item.partition("=")
        out[key.strip()] = int(value)
    return out


def daemon_samples(log_path: Path) -> int:
    """Samples the daemon has taken, from its last statistics line (0 before the first)."""
    found = STATS_RE.findall(log_path.read_text(errors="replace"))
    return int(found[-1][0]) if found else 0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hanging_notes(path: Path) -> tuple[int, int]:
    """(notes still sounding at the end of the MIDI file, note_ons in it). A note_on counts
    up, a note_off (or note_on velocity 0) down, All Notes Off / All Sound Off clears its
    channel."""
    sounding: dict[tuple[int, int], int] = {}
    ons = 0
    for msg in mido.MidiFile(path):
        if msg.type == "note_on" and msg.velocity > 0:
            ons += 1
            sounding[(msg.channel, msg.note)] = sounding.get((msg.channel, msg.note), 0) + 1
        elif msg.type in ("note_on", "note_off"):
            key = (msg.channel, msg.note)
            sounding[key] = max(sounding.get(key, 0) - 1, 0)
        elif msg.type == "control_change" and msg.control in (120, 123):
            for key in [k for k in sounding if k[0] == msg.channel]:
                sounding[key] = 0
    return sum(sounding.values()), ons


class Publisher:
    """Publishes the traffic from its own thread: a heap of (due time, stream)."""

    def __init__(self, port: int, streams: int, seed: int, churn_per_minute: int,
                 fill: int) -> None:
        self.rng = random.Random(seed)
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.streams = streams
        self.churn = churn_per_minute
        self.fill = fill
        self.names: list[str] = [f"soak/s{i}" for i in range(streams)]
        self.rates: list[float] = []
        for rate, share in RATE_MIX:
            self.rates += [rate] * round(share * streams)
        self.rates = (self.rates + [1.0] * streams)[:streams]
        self.values = [self.rng.uniform(0, 100) for _ in range(streams)]
        self.stop = threading.Event()
        self.published = self.hostile = self.oversized = self.retired = 0
        self.thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def _payload(self, i: int) -> bytes:
        v = self.values[i] = self.values[i] + self.rng.gauss(0, 1)
        if self.rng.random() < 0.002:  # now and then an anomaly
            v += self.rng.choice((-1, 1)) * self.rng.uniform(50, 200)
        return f"{v:.4f}".encode()

    def burst(self, i: int) -> None:
        """``fill`` samples on stream ``i`` at once (its windows fill: steady-state memory)."""
        for _ in range(self.fill):
            self.client.publish(self.names[i], self._payload(i), qos=1)
        self.published += self.fill

    def fill_all(self, rate: float, taken: Callable[[], int], ahead: int) -> None:
        """A burst on every stream, at most ``rate`` messages a second in all, and never
        more than ``ahead`` messages before what the daemon has taken (``taken()``): the
        broker queues at most ``max_queued_messages`` for a slow subscriber and drops the
        rest, which would make the fill a test of the broker."""
        start = time.monotonic()
        for i in range(self.streams):
            self.burst(i)
            wait = start + (i + 1) * self.fill / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            while self.published - taken() > ahead:
                time.sleep(0.2)

    def _run(self) -> None:
        start = time.monotonic()
        heap = [(start + self.rng.uniform(0, min(1.0, 1.0 / r)), i)
                for i, r in enumerate(self.rates)]
        heapq.heapify(heap)
        next_hostile = start + 0.05
        next_oversized = start + 10.0
        next_churn = start + 60.0 / self.churn if self.churn else math.inf
        generation = 0
        while not self.stop.is_set():
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                due, i = heapq.heappop(heap)
                self.client.publish(self.names[i], self._payload(i), qos=1)
                self.published += 1
                heapq.heappush(heap, (due + 1.0 / self.rates[i], i))
            if now >= next_hostile:  # about 20 a second
                kind = HOSTILE[self.hostile % len(HOSTILE)]
                self.client.publish(self.names[self.rng.randrange(self.streams)], kind, qos=1)
                self.hostile += 1
                next_hostile += 0.05
            if now >= next_oversized:
                self.client.publish(self.names[0], OVERSIZED, qos=1)
                self.oversized += 1
                next_oversized += 10.0
            if now >= next_churn:  # a stream retires; a new name takes its rate
                generation += 1
                i = self.rng.randrange(self.streams)
                self.names[i] = f"soak/g{generation}-{i}"
                self.retired += 1
                self.burst(i)  # as full as the one it replaces
                next_churn += 60.0 / self.churn
            time.sleep(0.005)

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=10)
        self.client.disconnect()
        self.client.loop_stop()


def run(args: argparse.Namespace, workdir: Path) -> Result:
    seconds = args.seconds if args.seconds else args.minutes * 60.0
    settle = min(max(20.0, seconds * 0.1), 60.0)
    result = Result(seconds=seconds, streams=args.streams)
    broker = Broker(workdir / "broker")
    broker.start()
    midi = workdir / "soak.mid"
    log_path = workdir / "daemon.log"
    # Streams filled early would sit idle through the rest of the fill and be evicted
    # before the soak starts (and then refill from empty windows, which is growth, not a
    # leak): the fill runs with a long idle_evict, and a reload (SIGHUP) then sets 30 s.
    conf = workdir / "soak.toml"
    conf.write_text(soak_config(idle_evict=3600.0, stats_interval=args.stats_interval))
    cmd = [sys.executable, "-m", "streamsonic", "run", "--mqtt", broker.url,
           "--topic", "soak/#", "--output", "events", "--output", f"file:{midi}",
           "--log-level", "info", "--config", str(conf)]
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log)
    assert daemon.stdout is not None
    counts = {"lines": 0, "accents": 0}

    def read_events() -> None:
        assert daemon.stdout is not None
        for line in daemon.stdout:
            counts["lines"] += 1
            if b'"accent":true' in line:
                counts["accents"] += 1

    reader = threading.Thread(target=read_events, daemon=True)
    reader.start()
    publisher: Publisher | None = None
    try:
        deadline = time.monotonic() + 120
        while b"ready:" not in log_path.read_bytes():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the daemon did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(0.1)
        publisher = Publisher(broker.port, args.streams, args.seed, args.churn, args.fill)
        if args.fill:  # every stream's windows full before anything is measured
            t_fill = time.monotonic()
            def taken() -> int:
                if daemon.poll() is not None or time.monotonic() - t_fill > 1800:
                    raise RuntimeError("the daemon did not take the fill:\n"
                                       + log_path.read_text()[-3000:])
                return daemon_samples(log_path)

            publisher.fill_all(args.fill_rate, taken, FILL_AHEAD)
            while taken() < publisher.published:
                time.sleep(0.5)
            result.fill_seconds = time.monotonic() - t_fill
        result.filled = publisher.published
        publisher.thread.start()
        # Every stream (the slowest at 0.1 Hz) has had a sample before idle_evict drops to
        # 30 s, so only the names that retire from now on are evicted.
        time.sleep(max(1.0 / rate for rate, _ in RATE_MIX) * 1.5)
        conf.write_text(soak_config(idle_evict=IDLE_EVICT, stats_interval=args.stats_interval))
        daemon.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while b"reloaded configuration" not in log_path.read_bytes():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the daemon did not reload:\n" + log_path.read_text()[-3000:])
            time.sleep(0.1)
        t0 = time.monotonic()
        rss: list[int] = []
        after_warmup = 0
        while (elapsed := time.monotonic() - t0) < seconds:
            if daemon.poll() is not None:
                result.failures.append(f"the daemon exited early ({daemon.returncode})")
                break
            rss.append(rss_kib(daemon.pid))
            if not result.rss_start_kib and elapsed >= settle:
                result.rss_start_kib = rss[-1]
                after_warmup = len(rss) - 1
            time.sleep(min(1.0, seconds - elapsed))
        if daemon.poll() is None:
            result.rss_end_kib = rss_kib(daemon.pid)
            result.rss_max_kib = max(rss, default=result.rss_end_kib)
            if result.rss_start_kib:
                steady = [*rss[after_warmup:], result.rss_end_kib]
                result.rss_late_kib = int(statistics.median(steady[-5:]))
                result.rss_timeline_mib = [
                    round(steady[round(k * (len(steady) - 1) / 9)] / 1024, 1) for k in range(10)]
            result.cpu_seconds = cpu_seconds(daemon.pid)
            if publisher is not None:
                result.published, result.hostile = publisher.published, publisher.hostile
                result.oversized, result.retired = publisher.oversized, publisher.retired
            daemon.send_signal(signal.SIGTERM)  # traffic still flowing, notes sounding
        result.exit_status = daemon.wait(timeout=60)
    finally:
        if publisher is not None:
            publisher.close()
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        reader.join(timeout=10)
        broker.stop()
    text = log_path.read_text(errors="replace")
    result.tracebacks = text.count("Traceback")
    for line in text.splitlines():
        if m := STATS_RE.search(line):
            result.live_streams_max = max(result.live_streams_max, int(m.group(3)))
        if m := STOPPED_RE.search(line):
            result.samples, result.notes = int(m.group(1)), int(m.group(2))
            result.daemon_counts = parse_counts(m.group(3)) | parse_counts(m.group(4))
    result.events_lines, result.accents = counts["lines"], counts["accents"]
    if result.rss_start_kib:
        result.rss_growth_pct = 100.0 * (result.rss_late_kib - result.rss_start_kib) \
            / result.rss_start_kib
    if midi.exists():
        result.hanging, result.midi_notes = hanging_notes(midi)
    check(result, args.max_growth)
    return result


def check(r: Result, max_growth: float) -> None:
    """Append a line to ``r.failures`` for each check that fails."""
    if r.exit_status != 0:
        r.failures.append(f"exit status {r.exit_status}, not 0")
    if r.tracebacks:
        r.failures.append(f"{r.tracebacks} tracebacks in the daemon's log")
    if r.hanging != 0:
        r.failures.append(f"{r.hanging} notes hanging at shutdown (or no MIDI file)")
    if not r.rss_start_kib:
        r.failures.append("no RSS after settling")
    elif r.rss_growth_pct >= max_growth:
        r.failures.append(f"RSS grew {r.rss_growth_pct:.2f}% (limit {max_growth}%)")
    # A note is counted when it is scheduled (a few ms ahead); those whose start had not
    # come at SIGTERM are cancelled, never written: at most about one per live stream.
    if r.notes == 0 or not 0 <= r.notes - r.events_lines <= max(r.live_streams_max, 1):
        r.failures.append(f"{r.notes} notes counted, {r.events_lines} events lines")
    if r.daemon_counts.get("internal_error") or any(
            "internal_error" in k for k in r.daemon_counts):
        r.failures.append("the parser reported internal errors")


def table(r: Result) -> str:
    """The soak's figures as a Markdown table."""
    skipped = {k: v for k, v in r.daemon_counts.items() if k.startswith(("skipped", "too_"))}
    dropped = {k: v for k, v in r.daemon_counts.items() if k.startswith("dropped")}
    evicted = {k: v for k, v in r.daemon_counts.items() if k.startswith(("evicted", "released"))}
    other = {k: v for k, v in r.daemon_counts.items()
             if k not in skipped | dropped | evicted and not k.startswith("by_topic.")}

    def fmt(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v:,}" for k, v in sorted(d.items())) or "none"

    rows = [
        ("duration", f"{r.seconds:,.0f} s after a {r.fill_seconds:.0f} s fill "
                     f"({r.filled:,} samples), SIGTERM under traffic"),
        ("streams", f"{r.streams:,} topics at mixed rates; {r.retired} retired for new names; "
                    f"at most {r.live_streams_max:,} live"),
        ("published (to the SIGTERM)", f"{r.published:,} samples + {r.hostile:,} hostile + "
                                       f"{r.oversized} oversized payloads"),
        ("daemon: samples", f"{r.samples:,}"),
        ("notes played", f"{r.events_lines:,} ({r.accents:,} accented; {r.midi_notes:,} "
                         "note-ons in the MIDI file, earcons included)"),
        ("notes scheduled, cancelled by the SIGTERM", f"{r.notes - r.events_lines:,}"),
        ("skipped (bad input), by reason", fmt(skipped)),
        ("dropped, by reason", fmt(dropped)),
        ("evictions", fmt(evicted)),
        ("other input counters", fmt(other)),
        ("RSS after settling, ten points", " ".join(f"{m:g}" for m in r.rss_timeline_mib)),
        ("RSS after settling -> end", f"{r.rss_start_kib / 1024:.1f} -> "
                                     f"{r.rss_end_kib / 1024:.1f} MiB (last five's median "
                                     f"{r.rss_late_kib / 1024:.1f}: {r.rss_growth_pct:+.2f}%;"
                                     f" max {r.rss_max_kib / 1024:.1f})"),
        ("daemon CPU", f"{r.cpu_seconds:.0f} s ({r.cpu_seconds / r.seconds:.2f} cores)"),
        ("hanging notes at shutdown", str(r.hanging)),
        ("exit status", f"{r.exit_status}; {r.tracebacks} tracebacks"),
        ("result", "PASS" if not r.failures else "FAIL: " + "; ".join(r.failures)),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'measure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {k.ljust(width)} | {v} |" for k, v in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long (default 30)")
    parser.add_argument("--seconds", type=float, default=0.0,
                        help="how long in seconds (overrides --minutes; the test suite's run)")
    parser.add_argument("--streams", type=int, default=1000, help="topics (default 1000)")
    parser.add_argument("--churn", type=int, default=30,
                        help="streams retired for new names per minute (default 30)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the publisher's random values, spikes, timing and "
                             "picks (default 0)")
    parser.add_argument("--fill", type=int, default=400,
                        help="samples per stream in a burst before the soak (and per new "
                             "name), so windows are full and memory at steady state; 0: none "
                             "(default 400)")
    parser.add_argument("--fill-rate", type=float, default=4000.0,
                        help="messages a second during the fill (default 4000)")
    parser.add_argument("--stats-interval", type=float, default=2.0,
                        help="the daemon's stats_interval (default 2 s)")
    parser.add_argument("--max-growth", type=float, default=2.0,
                        help="RSS growth allowed after the warm-up, in %% (default 2)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--keep", type=Path,
                        help="keep the daemon's log and MIDI file in this folder")
    args = parser.parse_args(argv)
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so the daemon and broker are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
            result = run(args, Path(tmp))
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=1))
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
