"""Latency and onset jitter of the live outputs, on a JACK dummy server it starts itself.

1. MIDI: ``streamsonic run --output midi-virtual:bench --midi-api jack`` (event clock); a
   receiving JACK MIDI port records when each note_on arrives. Latency = arrival minus the
   moment the line was written to the daemon's stdin; p50/p99 over ``--lines`` lines.
   Baseline, same run: a plain rtmidi client sending straight to the same receiver (what JACK
   MIDI itself costs: delivery happens once per period).
2. Audio: ``--output audio`` looped with ``jack_connect`` into a capture stream; each note's
   onset (found by correlation with the note rendered alone) minus its scheduled time. One
   note per sample (``model.passing_notes = 0``): the notes the model adds lead into each
   data note, often at its pitch, too close for correlation to tell them apart.
   Jitter = standard deviation of that error (spread = max - min). Baseline: the floor set
   by FluidSynth's 64-frame grid (uniform error: 64 / sqrt(12) frames).

Run: ``.venv/bin/python bench/latency.py [--period 256] [--lines 1000] [--notes 40]``.
Targets: MIDI p99 < 2 ms + one JACK period; audio jitter < 1 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import mido
import numpy as np
import rtmidi
import sounddevice as sd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import pitch_weights  # noqa: E402
from streamsonic.sinks import fluid  # noqa: E402
from tests.jackaudio import Capture  # noqa: E402
from tests.jackmidi import Receiver  # noqa: E402
from tests.pitchdetect import SOUNDFONT, locate, reference_note  # noqa: E402

RATE = 48000


def start_jack(period: int) -> tuple[subprocess.Popen, str]:
    name = f"streamsonic-bench-{os.getpid()}"
    env = {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_AUDIO_RESERVATION": "1"}
    proc = subprocess.Popen(["jackd", "--no-realtime", "-d", "dummy", "-r", str(RATE), "-p",
                             str(period)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    subprocess.run(["jack_wait", "-w", "-t", "10"], env=env, check=True, capture_output=True)
    os.environ["JACK_DEFAULT_SERVER"] = name
    os.environ["JACK_NO_START_SERVER"] = "1"
    sd._terminate()  # PortAudio looks for JACK when it initializes
    sd._initialize()
    return proc, name


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


class Daemon:
    """``streamsonic run`` with stdout (events) and stderr read by threads (no pipe stalls)."""

    def __init__(self, args: list[str]) -> None:
        cmd = [sys.executable, "-m", "streamsonic", "run", "--device", "cpu", "--output",
               "events", *args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.out: list[str] = []
        self.err: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True).start()

    def _read(self, stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)
            if "ready: outputs" in line:
                self.ready.set()

    def wait_ready(self) -> None:
        if not self.ready.wait(120):
            raise RuntimeError("daemon not ready: " + "".join(self.err[-5:]))

    def write(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self) -> list[dict]:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        time.sleep(0.2)
        return [json.loads(line) for line in self.out if line.startswith("{")]


def bench_midi(weights: list[str], lines: int, interval: float) -> tuple[np.ndarray, np.ndarray]:
    # baseline: JACK MIDI itself
    rx = Receiver("bench-base-rx")
    out = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name="bench-base-tx")
    out.open_virtual_port("out")
    rx.connect_from("bench-base-tx:out")
    base = []
    for i in range(min(lines, 300)):
        sent = time.monotonic()
        out.send_message(mido.Message("note_on", note=60 + i % 12, velocity=64).bytes())
        got = rx.take(1, timeout=2)
        if got:
            base.append(got[0][0] - sent)
        time.sleep(interval / 3)
    out.delete()
    rx.close()

    rx = Receiver("bench-rx")
    proc = Daemon([*weights, "--output", "midi-virtual:bench", "--midi-api", "jack",
                   "--clock", "event", "--max-rate", "1000", "--note-length", "0.01",
                   "--tempo", "240"])
    proc.wait_ready()
    rx.connect_from("bench:out")
    for value in (-1, -2, -3):  # warm the model up (its first steps are slow); not counted
        proc.write(str(value))
        time.sleep(0.5)
    written: dict[float, float] = {}
    for i in range(lines):
        written[float(i)] = time.monotonic()
        proc.write(str(i))
        time.sleep(interval)
    events = proc.finish()
    arrivals = [(t, m.note) for t, m in rx.drain(0.5) if m.type == "note_on" and m.velocity > 0]
    rx.close()
    # Pair the measured lines' notes with the last note_ons received (the warm-up notes may
    # arrive before the receiver is connected), and check that the pitches agree.
    counted = [e for e in events if e["value"] in written]
    tail = arrivals[-len(counted):] if counted else []
    pairs = list(zip(counted, tail, strict=False))
    mismatched = sum(e["pitch"] != note for e, (_, note) in pairs)
    latency = [t - written[e["value"]] for e, (t, _) in pairs]
    print(f"midi: {len(events)} notes from {lines} lines (+3 warm-up), {len(arrivals)} note_ons "
          f"received, {mismatched} pitch mismatches in pairing")
    return np.array(latency), np.array(base)


def bench_audio(weights: list[str], notes: int, period: int) -> np.ndarray:
    sd = fluid._import_sounddevice()
    capture = Capture(sd, RATE, period)
    capture.stream.start()
    mine = [p for p in _ports() if re.search(r":in_[01]$", p)]
    proc = Daemon([*weights, "--output", "audio", "--soundfont", str(SOUNDFONT),
                   "--set", f"audio.block_size={period}", "--note-length", "0.5",
                   # one note per sample: the notes the model adds (model.passing_notes) lead
                   # into each data note within its span, often at its pitch, too close to
                   # locate each note alone by correlation (their onsets are as precise)
                   "--set", "model.passing_notes=0"])
    proc.wait_ready()
    for value in (5, 1):  # warm the model up
        proc.write(str(value))
        time.sleep(1.0)
    theirs = [p for p in _ports() if re.search(r"^streamsonic.*:out_[01]$", p)]
    for src, dst in zip(sorted(theirs), sorted(mine), strict=True):
        subprocess.run(["jack_connect", src, dst], check=True)
    listening = time.monotonic() + 0.1
    rng = np.random.default_rng(0)
    for value in rng.integers(0, 100, notes):
        proc.write(str(value))
        time.sleep(0.3)
    events = [e for e in proc.finish() if e["start"] > listening]
    time.sleep(0.1)
    capture.stream.stop()
    capture.stream.close()
    audio = capture.audio().astype(np.float64)
    errors = []
    for e in events:
        around = capture.frame_of(e["start"])
        found, score = locate(audio, reference_note(e["pitch"], e["velocity"], e["program"],
                                                    RATE), around, RATE // 40)
        if score > 0.8:
            errors.append((found - around) / RATE)
    print(f"audio: {len(events)} notes, {len(errors)} located")
    return np.array(errors)


def _ports() -> list[str]:
    out = subprocess.run(["jack_lsp"], capture_output=True, text=True, check=False)
    return [p.strip() for p in out.stdout.splitlines() if p.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--period", type=int, default=256, help="JACK period in frames")
    parser.add_argument("--lines", type=int, default=1000,
                        help="MIDI test: lines written to the daemon, one every --interval "
                             "seconds; p50/p99 are over their notes (default: %(default)s)")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between lines")
    parser.add_argument("--notes", type=int, default=40,
                        help="audio test: notes played, 0.3 s apart, whose onsets are "
                             "located for the jitter (default: %(default)s)")
    args = parser.parse_args()
    jack, _ = start_jack(args.period)
    period_ms = args.period / RATE * 1000
    try:
        with tempfile.TemporaryDirectory() as tmp:
            weights = ["--weights", str(pitch_weights(Path(tmp)))]
            latency, base = bench_midi(weights, args.lines, args.interval)
            errors = bench_audio(weights, args.notes, args.period)
    finally:
        sd._terminate()
        stop(jack)
    ms = 1000.0
    target_p99 = 2.0 + period_ms
    floor = 64 / RATE / np.sqrt(12) * ms
    rows = [
        ("MIDI latency p50", np.percentile(latency, 50) * ms, np.percentile(base, 50) * ms,
         None),
        ("MIDI latency p99", np.percentile(latency, 99) * ms, np.percentile(base, 99) * ms,
         target_p99),
        ("MIDI latency max", latency.max() * ms, base.max() * ms, None),
        ("audio onset jitter (std)", np.std(errors) * ms, floor, 1.0),
        ("audio onset spread (max-min)", np.ptp(errors) * ms, 64 / RATE * ms, 2.0),
        ("audio onset error (mean)", np.mean(errors) * ms, 0.0, None),
    ]
    print(f"\nJACK dummy server {RATE} Hz, period {args.period} frames ({period_ms:.2f} ms); "
          f"{len(latency)} MIDI notes, {len(errors)} audio notes")
    print(f"{'measure':32s} {'ms':>8s} {'baseline':>9s} {'ratio':>7s} {'target':>8s} ok")
    for label, value, baseline, target in rows:
        ratio = f"{value / baseline:7.2f}" if baseline else "      -"
        tgt = f"{target:8.2f}" if target is not None else "       -"
        ok = "" if target is None else ("yes" if value < target else "NO")
        print(f"{label:32s} {value:8.3f} {baseline:9.3f} {ratio} {tgt} {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
