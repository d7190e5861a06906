"""JACK killed (SIGKILL) while the daemon plays, then restarted: the real components.

Each test runs its own JACK dummy server (a name no other test uses, so killing it touches
nobody else), the daemon as a CLI subprocess with an ``events`` output beside the JACK one,
and a steady feed of numbers. It checks: the daemon says once that the server went away and
stays alive; the events output keeps receiving every note; the port is back in ``jack_lsp``
soon after the server returns and receives notes again; SIGTERM then exits 0 and every note
that went out over the new port is released. Beside them, unit tests drive the audio sink's
monitor with a fake stream, for what a real server cannot be made to do on cue (callbacks
that stall and resume).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import mido
import numpy as np
import pytest

from streamsonic.config import Config, DaemonConfig, MidiConfig
from streamsonic.sinks import fluid, midiport
from streamsonic.sinks.synth import FluidSynth
from tests.components import missing
from tests.fixtures_jack import JackServer, start_failure
from tests.jackaudio import JackCapture
from tests.jackmidi import Receiver
from tests.test_live_midi import unmatched_note_ons

RATE = 48000
PERIOD = 1024


class KillableJack:
    """A JACK dummy server of our own that a test may SIGKILL and start again.

    A killed jackd leaves its entry in JACK's shared-memory registry (at most 8 servers per
    machine), reclaimed only when a server of the same name starts again. So the names come
    from a small pool (a stale entry of a crashed run is reused, never piled up), and the
    fixture always ends with a clean stop of a restarted server.
    """

    POOL = tuple(f"streamsonic-loss-{i}" for i in range(4))

    def __init__(self, log: Path) -> None:
        self.name = ""
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.server: JackServer | None = None

    def start(self) -> JackServer:
        """Start the server (under the name it had before, if any)."""
        for name in [self.name] if self.name else self.POOL:
            if self._start(name):
                assert self.proc is not None
                self.name = name
                self.server = JackServer(name, self.proc.pid, RATE, PERIOD, self.log)
                return self.server
        raise RuntimeError(start_failure(self.log))

    def _start(self, name: str) -> bool:
        env = {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_AUDIO_RESERVATION": "1"}
        if subprocess.run(["jack_wait", "-c"], env=env, capture_output=True, text=True,
                          timeout=30, check=False).stdout.strip() == "running":
            return False  # another run's server has this name
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                ["jackd", "--no-realtime", "-d", "dummy", "-r", str(RATE), "-p", str(PERIOD)],
                env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        ready = subprocess.run(["jack_wait", "-w", "-t", "10"], env=env, capture_output=True,
                               timeout=30, check=False)
        time.sleep(0.2)
        if ready.returncode != 0 or self.proc.poll() is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(timeout=10)
            return False
        return True

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop cleanly; a killed server is started again first (reclaims its entry)."""
        if self.proc is None:
            return
        if self.proc.poll() is not None:
            try:
                self.start()
            except RuntimeError:
                return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def killable_jack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KillableJack]:
    """Our own JACK server; this process's JACK clients (receivers) use it too."""
    if shutil.which("jackd") is None or shutil.which("jack_wait") is None:
        missing("jackd is not installed (apt install --no-install-recommends jackd2)")
    jack = KillableJack(tmp_path / "jackd.log")
    jack.start()
    monkeypatch.setenv("JACK_DEFAULT_SERVER", jack.name)
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    try:
        yield jack
    finally:
        jack.stop()


class Daemon:
    """``streamsonic run`` fed a steady stream of numbers; stdout events and stderr lines
    are collected with their arrival times."""

    def __init__(self, env: dict[str, str], checkpoint: Path, *outputs: str,
                 extra: tuple[str, ...] = ()) -> None:
        cmd = [sys.executable, "-m", "streamsonic", "run", "--weights", str(checkpoint),
               "--device", "cpu", "--midi-api", "jack", "--log-level", "info",
               "--set", "midi.reconnect_interval=0.5", *extra]
        for spec in outputs:
            cmd += ["--output", spec]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: queue.Queue[tuple[float, dict[str, object]]] = queue.Queue()
        self.log: list[tuple[float, str]] = []
        self._feeding = threading.Event()
        self._threads = [threading.Thread(target=self._read_events, daemon=True),
                         threading.Thread(target=self._read_log, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _read_events(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.events.put((time.monotonic(), json.loads(line)))

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append((time.monotonic(), line.rstrip()))

    def wait_log(self, text: str, timeout: float, after: float = 0.0) -> float:
        """Arrival time of the first log line containing ``text`` (after ``after``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, line in list(self.log):
                if t >= after and text in line:
                    return t
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"daemon never logged {text!r}; log:\n" + self.log_text())

    def log_text(self) -> str:
        return "\n".join(line for _, line in self.log)

    def start_feeding(self, interval: float = 0.3) -> None:
        """Write numbers forever (until stop_feeding), one every ``interval`` seconds."""
        self._feeding.set()

        def feed() -> None:
            assert self.proc.stdin is not None
            i = 0
            while self._feeding.is_set():
                try:
                    self.proc.stdin.write(f"{(i * 7) % 11}\n")
                    self.proc.stdin.flush()
                except (BrokenPipeError, ValueError):
                    return
                i += 1
                time.sleep(interval)

        threading.Thread(target=feed, daemon=True).start()

    def stop_feeding(self) -> None:
        self._feeding.clear()

    def events_after(self, t: float, count: int, timeout: float) -> list[dict[str, object]]:
        """At least ``count`` events that arrived after ``t`` (fewer if time runs out)."""
        got: list[dict[str, object]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            try:
                arrived, event = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            if arrived > t:
                got.append(event)
        return got

    def terminate(self, timeout: float = 60.0) -> int:
        self.stop_feeding()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            for thread in self._threads:
                thread.join(timeout=5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_port(jack: JackServer, name: str, timeout: float) -> float:
    """Seconds until ``name`` is listed by jack_lsp."""
    start = time.monotonic()
    jack.wait_for_ports(name, 1, timeout=timeout)
    return time.monotonic() - start


def note_ons(received: list[tuple[float, object]]) -> list[object]:
    return [m for _, m in received if m.type == "note_on" and m.velocity > 0]  # type: ignore[attr-defined]


@pytest.mark.jack
@pytest.mark.slow
def test_midi_virtual_survives_jack_restart(killable_jack: KillableJack,
                                            random_pitch_checkpoint: Path) -> None:
    jack = killable_jack.server
    assert jack is not None
    daemon = Daemon(jack.env(), random_pitch_checkpoint, "midi-virtual:ss-loss", "events")
    rx: Receiver | None = None
    try:
        daemon.wait_log("ready: outputs", 120)
        rx = Receiver("loss-rx")
        rx.connect_from("ss-loss:out", timeout=30)
        daemon.start_feeding()
        assert note_ons(rx.take(6, timeout=30)), "no notes reached the port before the kill"

        killed = time.monotonic()
        killable_jack.kill()
        rx.close()  # dead: free it before this process opens another JACK client
        rx = None
        noticed = daemon.wait_log("the JACK server went away", 20, after=killed)
        print(f"loss logged {noticed - killed:.2f} s after the kill")
        # the events output keeps receiving every note while the port is away
        assert len(daemon.events_after(killed, 5, timeout=30)) == 5, daemon.log_text()
        assert daemon.proc.poll() is None

        jack = killable_jack.start()
        back = wait_port(jack, "ss-loss:out", timeout=20)
        print(f"port back {back:.2f} s after jackd answered")
        daemon.wait_log("the JACK server is back", 20)
        rx = Receiver("loss-rx2")
        rx.connect_from("ss-loss:out", timeout=30)
        received = rx.take(6, timeout=30)
        assert note_ons(received), "no notes reached the port after the restart"
        assert daemon.proc.poll() is None

        status = daemon.terminate()
        received += rx.drain(0.5)
    finally:
        daemon.kill()
        if rx is not None:
            rx.close()
    log = daemon.log_text()
    assert status == 0, log
    assert log.count("the JACK server went away") == 1, log  # one error line, not a flood
    messages = [m for _, m in received]
    assert unmatched_note_ons(messages) == []  # SIGTERM released what sounded on the new port
    assert "dropped" in log, log  # the messages sent while the port was away were counted


@pytest.mark.jack
@pytest.mark.slow
def test_audio_survives_jack_restart(killable_jack: KillableJack, random_pitch_checkpoint: Path,
                                     soundfont: Path) -> None:
    jack = killable_jack.server
    assert jack is not None
    # an organ (program 19) sustains while a note is on: a note left hanging by the outage
    # would sound on after the restart; long notes, so some note sounds at the kill
    daemon = Daemon(jack.env(), random_pitch_checkpoint, "audio", "events",
                    extra=("--soundfont", str(soundfont), "--program", "19",
                           "--note-length", "2", "--set", f"audio.block_size={PERIOD}"))
    capture: JackCapture | None = None
    try:
        daemon.wait_log("ready: outputs", 120)
        ours = jack.wait_for_ports("streamsonic:out_", 2, timeout=30)
        capture = JackCapture("loss-cap")
        capture.connect_from(ours)
        started = time.monotonic()
        daemon.start_feeding()
        capture.wait_sound(started, timeout=60)

        killed = time.monotonic()
        killable_jack.kill()
        noticed = daemon.wait_log("the JACK server went away", 20, after=killed)
        print(f"audio loss logged {noticed - killed:.2f} s after the kill")
        assert len(daemon.events_after(killed, 5, timeout=30)) == 5, daemon.log_text()
        assert daemon.proc.poll() is None

        jack = killable_jack.start()
        back = wait_port(jack, "streamsonic:out_", timeout=20)
        print(f"audio ports back {back:.2f} s after jackd answered")
        daemon.wait_log("audio stream open again", 20)
        capture = JackCapture("loss-cap2")  # frees the dead one first
        capture.connect_from(jack.wait_for_ports("streamsonic:out_", 2))
        daemon.stop_feeding()
        stopped = time.monotonic()
        # nothing from before the kill sounds on: silence once the last notes have ended
        capture.wait_silence(stopped, hold=1.5, timeout=20)
        daemon.start_feeding()
        capture.wait_sound(time.monotonic(), timeout=30)  # and new notes play
        status = daemon.terminate()
    finally:
        daemon.kill()
        if capture is not None:
            capture.close()
    log = daemon.log_text()
    assert status == 0, log
    assert log.count("the JACK server went away") == 1, log
    assert "messages dropped while the device was away" in log, log


@pytest.mark.jack
@pytest.mark.slow
def test_exit_on_device_loss_releases_notes_elsewhere(killable_jack: KillableJack,
                                                      random_pitch_checkpoint: Path,
                                                      tmp_path: Path) -> None:
    """``output.on_device_loss = "exit"``: exit 69 with one line; the file output is
    written and every note in it is released (long notes, so some sound at the exit)."""
    jack = killable_jack.server
    assert jack is not None
    song = tmp_path / "out.mid"
    daemon = Daemon(jack.env(), random_pitch_checkpoint, "midi-virtual:ss-exit", f"file:{song}",
                    "events", extra=("--set", "output.on_device_loss=exit",
                                     "--note-length", "8"))
    try:
        daemon.wait_log("ready: outputs", 120)
        daemon.start_feeding()
        assert len(daemon.events_after(0.0, 3, timeout=60)) == 3, daemon.log_text()
        killable_jack.kill()
        status = daemon.proc.wait(timeout=30)
        daemon.stop_feeding()
    finally:
        daemon.kill()
    log = daemon.log_text()
    assert status == 69, log
    last = log.strip().splitlines()[-1]
    assert "on_device_loss" in last and "JACK server went away" in last, log
    messages = [m for m in mido.MidiFile(song) if not m.is_meta]
    assert any(m.type == "note_on" and m.velocity > 0 for m in messages)
    assert unmatched_note_ons(messages) == []


# -- the audio sink's monitor, with a fake stream ---------------------------------------------
class FakeStream:
    """Stands in for the JACK/PortAudio backend: the test runs the audio callback itself."""

    period = 256
    latency = 0.01
    device_name = "fake"

    def __init__(self) -> None:
        self.render: Callable[[np.ndarray, int, bool], None] | None = None
        self.on_dead: Callable[[], None] | None = None
        self.why: str | None = None
        self.starts = 0
        self._running = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, render: Callable[[np.ndarray, int, bool], None],
              on_dead: Callable[[], None]) -> None:
        self.render, self.on_dead, self.why = render, on_dead, None
        self.starts += 1

    def dead(self) -> str | None:
        return self.why

    def close(self) -> None:
        self.pause()
        self.why = self.why or "closed"

    def play(self) -> None:
        """Run the callback every 5 ms (a 256-frame block lasts 5.3 ms at 48 kHz)."""
        self._running.set()

        def run() -> None:
            block = np.zeros((self.period, 2), dtype=np.float32)
            while self._running.is_set():
                assert self.render is not None
                self.render(block, self.period, False)
                time.sleep(0.005)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def pause(self) -> None:
        self._running.clear()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def fake_audio(soundfont: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[
        tuple[fluid.AudioSink, FakeStream]]:
    monkeypatch.setattr(fluid, "STALL_TIMEOUT", 0.3)
    monkeypatch.setattr(fluid, "MONITOR_INTERVAL", 0.05)
    stream = FakeStream()
    synth = FluidSynth(soundfont, 48000, 0.5, program=19)  # organ: sustains while on
    sink = fluid.AudioSink("audio", stream, synth, 256, warn_interval=0.01,
                           reconnect_interval=0.1)
    stream.play()
    try:
        yield sink, stream
    finally:
        stream.pause()
        sink.close()


def test_stalled_callbacks_drop_then_resume_silenced(fake_audio, caplog) -> None:
    sink, stream = fake_audio
    sink.send(mido.Message("note_on", note=60, velocity=100), time.monotonic() + 0.05)
    wait_for(lambda: sink.synth.active_voices() > 0)
    stream.pause()  # the callbacks stop
    wait_for(lambda: sink.lost is not None)
    assert "no audio callback" in str(sink.lost)
    sink.send(mido.Message("note_off", note=60), time.monotonic())  # dropped, counted
    assert sink.stats["dropped"] == 1
    stream.play()  # they resume: what sounded is released before anything plays
    wait_for(lambda: sink.lost is None)
    wait_for(lambda: sink.synth.active_voices() == 0)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "no audio callback" in errors[0].getMessage()


def test_dead_stream_is_reopened_with_the_synth_silenced(fake_audio) -> None:
    sink, stream = fake_audio
    sink.send(mido.Message("note_on", note=64, velocity=100), time.monotonic() + 0.05)
    wait_for(lambda: sink.synth.active_voices() > 0)
    stream.pause()
    stream.why = "the JACK server went away"
    assert stream.on_dead is not None
    stream.on_dead()  # what the JACK shutdown callback does
    wait_for(lambda: stream.starts == 2)
    assert sink.lost is None
    assert sink.stats["disconnects"] == 1 and sink.stats["reconnects"] == 1
    stream.play()  # the new stream's callbacks: the organ note (its note-off was lost with
    wait_for(lambda: sink.synth.active_voices() == 0, timeout=3)  # the stream) is silenced


@pytest.mark.jack
@pytest.mark.slow
def test_existing_port_after_jack_restart(killable_jack: KillableJack) -> None:
    """``midi:NAME`` on JACK: the port-level reconnection also covers a server restart (a new
    rtmidi client, then the usual look for the port once the synth is back)."""
    config = Config(midi=MidiConfig(api="jack", reconnect_interval=0.2),
                    daemon=DaemonConfig(warn_interval=0.01))
    rx = Receiver("loss-synth")
    sink = midiport.open_sink("loss-synth", config)
    try:
        sink.send(mido.Message("note_on", note=60, velocity=90), 0.0)
        assert [m.note for _, m in rx.take(1)] == [60]
        killable_jack.kill()
        wait_for(lambda: sink.lost == midiport.SERVER_GONE)
        sink.send(mido.Message("note_on", note=62, velocity=90), 1.0)
        assert sink.stats["dropped"] == 1
        killable_jack.start()
        wait_for(lambda: sink.lost is not None and "not back yet" in sink.lost, timeout=20)
        rx = Receiver("loss-synth")  # the synth returns (the dead receiver is freed first)
        wait_for(lambda: sink.connected, timeout=20)
        sink.send(mido.Message("note_on", note=67, velocity=90), 2.0)
        got = [(m.type, getattr(m, "note", None)) for _, m in rx.take(2)]
        assert ("note_on", 67) in got
        assert sink.stats["reconnects"] == 1
    finally:
        sink.close()
        rx.close()
