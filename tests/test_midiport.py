"""MIDI port sinks against real JACK MIDI ports (jackd dummy server)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import mido
import pytest

from streamsonic.config import Config, DaemonConfig, MidiConfig
from streamsonic.errors import MidiPortError
from streamsonic.sinks import jackclient, midiport
from tests.jackmidi import Receiver


def jack_config(interval: float = 60.0) -> Config:
    return Config(midi=MidiConfig(api="jack", reconnect_interval=interval),
                  daemon=DaemonConfig(warn_interval=0.01))


def note_on(note: int, channel: int = 0) -> mido.Message:
    return mido.Message("note_on", channel=channel, note=note, velocity=90)


def note_off(note: int, channel: int = 0) -> mido.Message:
    return mido.Message("note_off", channel=channel, note=note, velocity=0)


def kinds(messages: list[tuple[float, mido.Message]]) -> list[tuple[str, int]]:
    out = []
    for _, m in messages:
        out.append((m.type, m.note if hasattr(m, "note") else m.control))
    return out


def test_match_port_exact_then_substring() -> None:
    ports = ["FLUID Synth (123):Synth input port", "fluid", "Midi Through:0"]
    assert midiport.match_port(ports, "fluid") == 1
    assert midiport.match_port(ports, "FLUID Synth") == 0
    assert midiport.match_port(ports, "synth input") == 0
    assert midiport.match_port(ports, "nothing") is None


@pytest.mark.jack
def test_virtual_port_delivers_and_close_silences(jack_server) -> None:
    sink = midiport.open_virtual_sink("ss-virtual", jack_config())
    rx = Receiver("rx-virtual")
    try:
        rx.connect_from("ss-virtual:out")
        sink.send(note_on(60), 0.0)
        sink.send(note_on(64, channel=1), 0.0)
        sink.send(note_off(60), 0.1)
        got = rx.take(3)
        assert kinds(got) == [("note_on", 60), ("note_on", 64), ("note_off", 60)]
        assert got[1][1].channel == 1
        sink.close()  # 64 still sounds: note_off, then CC123 + CC120 on channels 0 and 1
        got = rx.take(5)
        assert kinds(got)[0] == ("note_off", 64)
        ccs = sorted((m.channel, m.control) for _, m in got[1:])
        assert ccs == [(0, 120), (0, 123), (1, 120), (1, 123)]
        assert sink.stats["sent"] == 3 + 5
    finally:
        sink.close()
        rx.close()


@pytest.mark.jack
def test_virtual_port_renamed_by_jack_is_named_right(jack_server, caplog) -> None:
    """A client ``vdup`` exists: JACK names ours ``vdup-01``; the log and ``port`` say so
    (they said ``vdup:out``, a port that does not exist)."""
    caplog.set_level(logging.INFO, logger="streamsonic.sinks.midiport")
    rx = Receiver("vdup")
    sink = midiport.open_virtual_sink("vdup", jack_config())
    try:
        assert sink.port == "vdup-01:out"
        assert "opened virtual port vdup-01:out (jack)" in caplog.text
        subprocess.run(["jack_connect", sink.port, "vdup:in"], check=True,
                       capture_output=True, timeout=10)  # the port of that name exists
        sink.send(note_on(60), 0.0)
        assert kinds(rx.take(1)) == [("note_on", 60)]
    finally:
        sink.close()
        rx.close()


@pytest.mark.jack
def test_existing_port_by_substring_and_reconnect(jack_server) -> None:
    rx = Receiver("synth-rx")
    sink = midiport.open_sink("synth-rx", jack_config())
    try:
        assert sink.port == "synth-rx:in"
        sink.send(note_on(60), 0.0)
        assert kinds(rx.take(1)) == [("note_on", 60)]

        rx.close()  # the port goes away
        sink.check()
        assert not sink.connected
        assert sink.sounding == set()  # forgotten: they went away with the port
        sink.send(note_on(62), 1.0)  # dropped, counted, the daemon lives on
        sink.send(note_off(62), 1.1)
        assert sink.stats["dropped"] == 2
        assert sink.stats["disconnects"] == 1

        rx = Receiver("synth-rx")  # it comes back
        sink.check()
        assert sink.connected
        assert sink.stats["reconnects"] == 1
        sink.send(note_on(67), 2.0)
        got = kinds(rx.take(2))
        assert got == [("control_change", 123), ("note_on", 67)]
    finally:
        sink.close()
        rx.close()


@pytest.mark.jack
def test_port_back_gets_programs_and_pans_again(jack_server) -> None:
    """A synth that restarts starts from its defaults: the port that comes back gets every
    used channel's program and pan again before the next note (it got none before)."""
    rx = Receiver("setup-rx")
    sink = midiport.open_sink("setup-rx", jack_config())
    try:
        sink.send(mido.Message("program_change", channel=0, program=5), 0.0)
        sink.send(mido.Message("control_change", channel=0, control=10, value=30), 0.0)
        sink.send(mido.Message("program_change", channel=1, program=40), 0.0)
        sink.send(mido.Message("control_change", channel=1, control=10, value=90), 0.0)
        sink.send(note_on(60), 0.0)
        assert len(rx.take(5)) == 5
        rx.close()
        sink.check()
        assert not sink.connected
        # dropped while away, still remembered: the latest program is the one sent again
        sink.send(mido.Message("program_change", channel=1, program=41), 1.0)
        rx = Receiver("setup-rx")
        sink.check()
        assert sink.connected
        sink.send(note_on(64, channel=1), 2.0)
        got = [m for _, m in rx.take(7)]
        assert len(got) == 7, got  # 2 x all notes off, 2 x (program, pan), the note
        assert [(m.type, m.channel) for m in got[:2]] == [("control_change", 0),
                                                          ("control_change", 1)]
        assert [m.control for m in got[:2]] == [123, 123]
        setup = [(m.channel, m.type, m.program if m.type == "program_change" else m.value)
                 for m in got[2:6]]
        assert setup == [(0, "program_change", 5), (0, "control_change", 30),
                         (1, "program_change", 41), (1, "control_change", 90)]
        assert (got[6].type, got[6].note, got[6].channel) == ("note_on", 64, 1)
    finally:
        sink.close()
        rx.close()


@pytest.mark.jack
def test_reconnects_only_to_its_own_port_not_another_match(jack_server, caplog) -> None:
    """``midi:twin`` matches ``twin:in`` and ``twin-b:in``: it sends to the first (with a
    warning naming the other) and, when that one goes, waits for it instead of taking the
    other (it did); a port that appears meanwhile and matches (a synth back under a new
    name) is taken, with a warning."""
    caplog.set_level(logging.INFO, logger="streamsonic.sinks.midiport")
    rx = Receiver("twin")
    other = Receiver("twin-b")
    sink = midiport.open_sink("twin", jack_config())
    renamed: Receiver | None = None
    try:
        assert sink.port == "twin:in"
        assert "'twin' also matches 'twin-b:in'; sending to 'twin:in' only" in caplog.text
        rx.close()
        sink.check()
        assert not sink.connected
        sink.check()
        assert not sink.connected  # twin-b:in was there beside it: not ours
        assert sink.port == "twin:in"
        rx = Receiver("twin")
        sink.check()
        assert sink.connected
        assert sink.port == "twin:in"
        sink.send(note_on(60), 0.0)
        assert ("note_on", 60) in kinds(rx.take(2))
        assert other.drain() == []

        rx.close()
        sink.check()
        renamed = Receiver("twin-new")  # not listed beside ours: ours, renamed
        sink.check()
        assert sink.port == "twin-new:in"
        assert "MIDI port 'twin:in' is back as 'twin-new:in'" in caplog.text
    finally:
        sink.close()
        rx.close()
        other.close()
        if renamed is not None:
            renamed.close()


@pytest.mark.jack
def test_background_thread_reconnects(jack_server) -> None:
    rx = Receiver("auto-rx")
    sink = midiport.open_sink("auto-rx", jack_config(interval=0.05))
    try:
        rx.close()
        deadline = time.monotonic() + 10
        while sink.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not sink.connected
        rx = Receiver("auto-rx")
        while not sink.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sink.connected
        sink.send(note_on(72), 0.0)
        assert ("note_on", 72) in kinds(rx.take(1))
    finally:
        sink.close()
        rx.close()


@pytest.mark.jack
def test_missing_port_lists_what_exists(jack_server) -> None:
    rx = Receiver("listed-rx")
    try:
        with pytest.raises(MidiPortError) as info:
            midiport.open_sink("no-such-synth", jack_config())
        text = str(info.value)
        assert "'no-such-synth'" in text
        assert "listed-rx:in" in text
        assert "midi-virtual:NAME" in text
    finally:
        rx.close()


@pytest.mark.skipif(Path("/dev/snd/seq").exists(), reason="this machine has an ALSA sequencer")
def test_alsa_without_sequencer_is_a_clear_error() -> None:
    cfg = Config(midi=MidiConfig(api="alsa"))
    with pytest.raises(MidiPortError, match="alsa"):
        midiport.open_virtual_sink("x", cfg)


@pytest.mark.jack
@pytest.mark.skipif(Path("/dev/snd/seq").exists(), reason="auto would pick ALSA here")
def test_auto_falls_back_to_jack(jack_server) -> None:
    sink = midiport.open_virtual_sink("ss-auto", Config())
    try:
        assert sink.api == "jack"
        assert any(p.startswith("ss-auto:") for p in jack_server.ports())
    finally:
        sink.close()
    assert os.environ["JACK_DEFAULT_SERVER"] == jack_server.name


@pytest.mark.jack
def test_devices_command_lists_audio_and_midi(jack_server) -> None:

    rx = Receiver("listed-by-devices")
    try:
        out = subprocess.run([sys.executable, "-m", "streamsonic", "devices", "--json"],
                             env=jack_server.env(), capture_output=True, text=True, timeout=60,
                             check=True)
    finally:
        rx.close()
    listing = json.loads(out.stdout)
    assert any(d["name"] == "system" for d in listing["audio"]["devices"])
    assert "listed-by-devices:in" in listing["midi"]["jack"]["ports"]


def test_devices_command_works_with_nothing(tmp_path) -> None:

    env = {"JACK_DEFAULT_SERVER": "absent-server", "JACK_NO_START_SERVER": "1",
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "streamsonic", "devices"], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0
    assert "audio output devices" in out.stdout
    assert "MIDI output ports" in out.stdout


def test_closing_waits_out_the_last_client_change(monkeypatch) -> None:
    """Unit test (a fake clock and sleep) beside the real JACK tests above: a close right
    after this process opened or closed a JACK client waits until SETTLE has passed."""
    now = [1000.0]
    slept: list[float] = []
    real_sleep, test_thread = time.sleep, threading.current_thread()

    def sleep(seconds: float) -> None:  # only this thread's sleeps are the ones under test
        if threading.current_thread() is test_thread:
            slept.append(seconds)
        else:
            real_sleep(seconds)

    monkeypatch.setattr(jackclient.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(jackclient.time, "sleep", sleep)
    monkeypatch.setattr(jackclient, "_last_change", 0.0)
    with jackclient.closing():
        pass
    assert slept == []  # nothing changed lately
    now[0] += 0.03
    with jackclient.closing():
        pass
    assert slept == [pytest.approx(jackclient.SETTLE - 0.03)]
    now[0] += 1.0
    with jackclient.opening():
        pass
    now[0] += 0.05
    with jackclient.closing():
        pass
    assert slept[-1] == pytest.approx(jackclient.SETTLE - 0.05)


@pytest.mark.parametrize("returns", [True, False])
def test_a_dead_client_is_freed_only_once_its_callbacks_returned(
        jack_server: object, monkeypatch: pytest.MonkeyPatch, returns: bool) -> None:
    """Freeing a client cancels its JACK threads; one cancelled inside our Python callback
    (the server's shutdown notice, still running) never gave the GIL back, and the whole
    daemon froze. So a dead client's close waits until its callbacks have returned (at
    most CALLBACK_WAIT seconds: a callback that never returns does not hold the close)."""
    monkeypatch.setattr(jackclient, "CALLBACK_WAIT", 0.5 if returns else 0.2)
    client = jackclient.JackClient("streamsonic-guard")
    running, release = threading.Event(), threading.Event()
    returned: list[float] = []

    def callback() -> None:  # (a JACK thread's callback in flight)
        running.set()
        release.wait(5.0)
        returned.append(time.monotonic())

    jack_thread = threading.Thread(target=client._guarded(callback))
    jack_thread.start()
    assert running.wait(5.0)
    client.dead.set()  # (the server "died": only this client is told, not the process)
    closed: list[float] = []

    def close() -> None:
        client.close()
        closed.append(time.monotonic())

    closer = threading.Thread(target=close)
    closer.start()
    if returns:
        time.sleep(0.1)
        assert closed == []  # waits for the callback
        release.set()
        closer.join(5.0)
        assert closed and returned and closed[0] >= returned[0]
    else:
        closer.join(5.0)  # the callback still runs: closed after CALLBACK_WAIT all the same
        assert closed and not returned
        release.set()
    jack_thread.join(5.0)
