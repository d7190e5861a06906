"""``midi:NAME`` and ``midi-virtual:NAME``: MIDI ports through python-rtmidi.

Messages are mido messages sent as raw bytes the moment the scheduler hands them over
(``lookahead`` 0). The backend API is ``midi.api``: ``alsa``, ``jack``, or ``auto`` (the
compiled APIs in rtmidi's order, ALSA first on Linux, skipping one that cannot start, e.g.
ALSA without a sequencer).

An existing port is chosen by exact name, else by case-insensitive substring. When it
disappears the sink keeps the daemon alive: it logs (rate-limited), drops and counts the
messages while the port is away, and a background thread that looks every
``midi.reconnect_interval`` seconds reopens it when it returns. Notes that were sounding
when the port went away are forgotten (the synth on the other side is gone with them).
"""

from __future__ import annotations

import logging
import threading
from contextlib import suppress
from types import ModuleType
from typing import Any

import mido

from streamsonic.config import Config
from streamsonic.errors import MidiPortError
from streamsonic.sinks.base import CC_ALL_NOTES_OFF, Sink
from streamsonic.stats import Counters, RateLimitedLog

log = logging.getLogger(__name__)

CLIENT_NAME = "streamsonic"
VIRTUAL_PORT = "out"
API_LABELS = {"alsa": "ALSA", "jack": "JACK"}


def _rtmidi() -> ModuleType:
    try:
        import rtmidi  # noqa: PLC0415 - optional backend, imported on use
    except ImportError as err:
        raise MidiPortError(
            f"python-rtmidi is not available ({err}); pip install python-rtmidi "
            "(Debian/Ubuntu also need libasound2 and libjack-jackd2-0)"
        ) from None
    return rtmidi


def api_ids(name: str) -> list[tuple[str, int]]:
    """(label, rtmidi API id) to try for ``midi.api`` = ``name``, in order."""
    rtmidi = _rtmidi()
    compiled = list(rtmidi.get_compiled_api())
    labels = {rtmidi.API_LINUX_ALSA: "alsa", rtmidi.API_UNIX_JACK: "jack"}
    if name == "auto":
        return [(labels.get(api, rtmidi.get_api_name(api)), api) for api in compiled]
    wanted = rtmidi.API_LINUX_ALSA if name == "alsa" else rtmidi.API_UNIX_JACK
    if wanted not in compiled:
        raise MidiPortError(
            f"python-rtmidi was built without {API_LABELS[name]} support; use --midi-api "
            f"{'jack' if name == 'alsa' else 'alsa'} or auto"
        )
    return [(name, wanted)]


def _new_out(api: int, client: str) -> Any:
    rtmidi = _rtmidi()
    out = rtmidi.MidiOut(rtapi=api, name=client)
    out.set_error_callback(_rtmidi_error)
    return out


_errors = RateLimitedLog(log, interval=10.0)


def _rtmidi_error(kind: int, message: str, data: object = None) -> None:
    """rtmidi reports some failures through this callback instead of raising."""
    _errors.warning(f"rtmidi:{kind}", "MIDI backend: %s", message)


def match_port(ports: list[str], wanted: str) -> int | None:
    """Index of the port named ``wanted`` (exact), else the first containing it (any case)."""
    if wanted in ports:
        return ports.index(wanted)
    lower = wanted.lower()
    for i, name in enumerate(ports):
        if lower in name.lower():
            return i
    return None


class MidiPortSink(Sink):
    """Sends messages to one rtmidi output (an existing port or our own virtual port)."""

    def __init__(self, name: str, out: Any, *, api: str, port: str,
                 wanted: str | None = None, reconnect_interval: float = 1.0,
                 warn_interval: float = 10.0) -> None:
        super().__init__(name)
        self.api = api
        self.port = port
        self.counters = Counters()
        self._out = out
        self._wanted = wanted
        self._lock = threading.Lock()
        self._connected = True
        self._warn = RateLimitedLog(log, interval=warn_interval)
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        if wanted is not None:
            self._interval = reconnect_interval
            self._watcher = threading.Thread(target=self._watch, name=f"{name}-watch",
                                             daemon=True)
            self._watcher.start()

    @property
    def connected(self) -> bool:
        """Whether the port is there now (a virtual port always is)."""
        return self._connected

    @property
    def stats(self) -> dict[str, int]:
        """``sent``, ``dropped``, ``disconnects``, ``reconnects``."""
        return self.counters.snapshot()

    def _send(self, msg: mido.Message, time: float) -> None:
        data = msg.bytes()
        with self._lock:
            if self._connected:
                try:
                    self._out.send_message(data)
                except Exception as err:  # rtmidi raises its own SystemError subclasses
                    self._lost(f"sending failed ({err})")
                else:
                    self.counters.add("sent")
                    return
        self.counters.add("dropped")
        self._warn.warning("dropped", "output %s: port %r is away; dropping MIDI messages "
                           "until it returns (%d dropped so far)", self.name, self.port,
                           self.counters.get("dropped"))

    def _lost(self, why: str) -> None:
        """Mark the port as gone (caller holds the lock)."""
        if self._connected:
            self._connected = False
            self.counters.add("disconnects")
            self._sounding.clear()  # the far side lost them with the port
            log.warning("output %s: MIDI port %r disappeared (%s); will reconnect when it "
                        "returns", self.name, self.port, why)

    def check(self) -> None:
        """Look for the port once: notice that it left, or reopen it if it came back."""
        assert self._wanted is not None
        with self._lock:
            if self.closed:
                return
            try:
                ports = list(self._out.get_ports())
            except Exception as err:
                self._warn.warning("list", "output %s: cannot list MIDI ports: %s", self.name,
                                   err)
                return
            index = match_port(ports, self._wanted)
            if self._connected:
                if index is None or ports[index] != self.port:
                    self._lost("no longer listed")
                return
            if index is None:
                return
            try:
                self._out.close_port()
                self._out.open_port(index)
            except Exception as err:
                self._warn.warning("reopen", "output %s: reopening MIDI port %r failed: %s",
                                   self.name, ports[index], err)
                return
            self.port = ports[index]
            self._connected = True
            self.counters.add("reconnects")
            for channel in sorted(self._channels):  # nothing of ours should sound there
                with suppress(Exception):
                    self._out.send_message([0xB0 | channel, CC_ALL_NOTES_OFF, 0])
        log.info("output %s: MIDI port %r is back; sending again", self.name, self.port)

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            self.check()

    def _close(self) -> None:
        self._stop.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=5.0)
        with self._lock:
            try:
                self._out.close_port()
            finally:
                self._out.delete()


def open_sink(arg: str, config: Config) -> MidiPortSink:
    """Factory for ``midi:NAME``: an existing output port, by exact name or substring."""
    listing: list[str] = []
    failures: list[str] = []
    for label, api in api_ids(config.midi.api):
        try:
            out = _new_out(api, CLIENT_NAME)
        except Exception as err:  # e.g. ALSA without /dev/snd/seq
            failures.append(f"{label}: {err}")
            continue
        ports = list(out.get_ports())
        index = match_port(ports, arg)
        if index is None:
            listing.extend(f"{p} ({label})" for p in ports)
            out.delete()
            continue
        try:
            out.open_port(index)
        except Exception as err:
            out.delete()
            raise MidiPortError(
                f"MIDI port {ports[index]!r} ({label}) cannot be opened: {err}"
            ) from None
        log.info("output midi:%s: sending to %r (%s)", arg, ports[index], label)
        return MidiPortSink(f"midi:{arg}", out, api=label, port=ports[index], wanted=arg,
                            reconnect_interval=config.midi.reconnect_interval,
                            warn_interval=config.daemon.warn_interval)
    available = "; ".join(listing) if listing else "none"
    why = f" (unavailable: {'; '.join(failures)})" if failures else ""
    raise MidiPortError(
        f"no MIDI output port matches {arg!r}{why}; available ports: {available}. Start the "
        "synthesizer first, check 'streamsonic devices', choose --midi-api, or use "
        "--output midi-virtual:NAME"
    )


def open_virtual_sink(arg: str, config: Config) -> MidiPortSink:
    """Factory for ``midi-virtual:NAME``: a new port ``NAME:out`` that others connect to."""
    failures: list[str] = []
    for label, api in api_ids(config.midi.api):
        try:
            out = _new_out(api, arg)
        except Exception as err:
            failures.append(f"{label}: {err}")
            continue
        try:
            out.open_virtual_port(VIRTUAL_PORT)
        except Exception as err:  # e.g. Windows MM has no virtual ports
            failures.append(f"{label}: {err}")
            out.delete()
            continue
        log.info("output midi-virtual:%s: opened virtual port %s:%s (%s)", arg, arg,
                 VIRTUAL_PORT, label)
        return MidiPortSink(f"midi-virtual:{arg}", out, api=label, port=f"{arg}:{VIRTUAL_PORT}")
    raise MidiPortError(
        f"cannot open virtual MIDI port {arg!r} ({'; '.join(failures) or 'no MIDI API'}); "
        "on Linux load the ALSA sequencer (modprobe snd-seq) or start JACK and use "
        "--midi-api jack"
    )
