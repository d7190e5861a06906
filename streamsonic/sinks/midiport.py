"""``midi:NAME`` and ``midi-virtual:NAME``: MIDI ports through python-rtmidi.

Messages are mido messages sent as raw bytes the moment the scheduler hands them over
(``lookahead`` 0). The backend API is ``midi.api``: ``alsa``, ``jack``, or ``auto`` (the
compiled APIs in rtmidi's order, ALSA first on Linux, skipping one that cannot start, e.g.
ALSA without a sequencer).

An existing port is chosen by exact name, else by case-insensitive substring (the first
listed; a warning names the others that match too). When it disappears the sink keeps the
daemon alive: it logs (rate-limited), drops and counts the messages while the port is away,
and a background thread that looks every ``midi.reconnect_interval`` seconds reopens it when
it returns: the port of the exact name it had, else a port that matches NAME and was not
listed beside it (a synth restarted under a new name, as ALSA's client numbers make it),
never another device that merely matches. Notes that were sounding when the port went away
are forgotten (the synth on the other side is gone with them); the port that returns gets
all notes off, then each used channel's last program change and pan (CC 10) again, before
any later note (a restarted synth starts from its defaults).

On JACK the same thread also watches the server (rtmidi reports nothing when it dies and
keeps accepting messages for a port that no longer exists): a small watcher client's
shutdown callback wakes it, it logs one error line, drops and counts messages, and opens a
new rtmidi client and port (``NAME:out`` again for a virtual port) once the server is back,
with jittered exponential backoff. The outputs never start a JACK server.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from contextlib import nullcontext, suppress
from functools import partial
from types import ModuleType
from typing import Any

import mido

from streamsonic.config import Config
from streamsonic.errors import MidiPortError
from streamsonic.extras import missing_extra
from streamsonic.sinks import jackclient
from streamsonic.sinks.base import CC_ALL_NOTES_OFF, CC_PAN, Sink
from streamsonic.sinks.reconnect import Backoff
from streamsonic.stats import Counters, RateLimitedLog

log = logging.getLogger(__name__)

CLIENT_NAME = "streamsonic"
VIRTUAL_PORT = "out"
WATCH_CLIENT = "streamsonic-watch"
SERVER_GONE = "the JACK server went away"
API_LABELS = {"alsa": "ALSA", "jack": "JACK"}
#: At close (JACK), the last messages sent get this many periods, at most DRAIN_MAX seconds,
#: to leave rtmidi's queue (its process callback moves them to the port) before the port
#: is unregistered, which drops whatever is still queued.
DRAIN_PERIODS, DRAIN_MAX = 3, 0.25


def _rtmidi() -> ModuleType:
    try:
        import rtmidi  # noqa: PLC0415 - optional backend, imported on use
    except ImportError as err:
        missing = missing_extra(err, "MIDI ports")
        if missing is not None:
            raise missing from None
        raise MidiPortError(
            f"python-rtmidi is not available ({err}); pip install 'streamsonic[midi]' "
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
    """Sends messages to one rtmidi output (an existing port or our own virtual port).

    A background thread watches what can go away: an existing port (``wanted``), looked
    for every ``reconnect_interval`` seconds, and, on JACK, the server itself (a watcher
    client's shutdown callback wakes the thread at once). While the port or the server is
    away, messages are dropped and counted; when it returns the port is reopened (a new
    rtmidi client and virtual port after a server restart), with jittered exponential
    backoff up to ``reconnect_interval`` between attempts.
    """

    def __init__(self, name: str, out: Any, *, api: str, port: str,
                 wanted: str | None = None, reconnect_interval: float = 1.0,
                 warn_interval: float = 10.0, api_id: int | None = None,
                 client: str = CLIENT_NAME, virtual: bool = False,
                 generation: int | None = None,
                 watch_client: jackclient.JackClient | None = None) -> None:
        super().__init__(name)
        self.api = api
        self.port = port
        self.counters = Counters()
        self._out: Any = out
        self._wanted = wanted
        # The other ports listed while ours was there: another device that merely matches
        # ``wanted`` is never taken for ours coming back.
        self._beside: set[str] = set()
        self._virtual = virtual
        self._api_id = api_id
        self._client = client
        self._lock = threading.Lock()
        # Each channel's last program change and pan (CC 10) as sent (or dropped): a port
        # that comes back (a restarted synth) gets them again before the next note.
        self._setup: dict[tuple[int, int], list[int]] = {}
        self._connected = True
        self._lost_reason: str | None = None
        self._warn = RateLimitedLog(log, interval=warn_interval)
        self._interval = reconnect_interval
        self._backoff = Backoff(min(0.25, reconnect_interval), reconnect_interval)
        self._wake = threading.Event()
        self._stopping = False
        # JACK: the generation (server life) of our clients, and a client that tells us
        # when the server goes away (rtmidi does not).
        self._jack = api == "jack" and generation is not None
        self._gen = generation
        self._token: int | None = None
        self._watch_client: jackclient.JackClient | None = None
        self._server_gone = threading.Event()
        if self._jack:
            assert generation is not None
            self._token = jackclient.track(generation, partial(self._release, out))
            try:
                self._watch_client = self._adopt(watch_client) if watch_client is not None \
                    else self._new_watch_client()
            except jackclient.JackError as err:
                self._release(out)
                jackclient.untrack(self._token)
                raise MidiPortError(f"output {name}: cannot watch the JACK server: {err}") \
                    from None
        self._watcher: threading.Thread | None = None
        if wanted is not None or self._jack:
            self._watcher = threading.Thread(target=self._watch, name=f"{name}-watch",
                                             daemon=True)
            self._watcher.start()

    @property
    def connected(self) -> bool:
        """Whether the port is there now."""
        return self._connected and not self._server_gone.is_set()

    @property
    def lost(self) -> str | None:
        """Why messages are being dropped (port or JACK server away), or None."""
        if self.connected:
            return None
        return self._lost_reason or "the MIDI port went away"

    @property
    def stats(self) -> dict[str, int]:
        """``sent``, ``dropped``, ``disconnects``, ``reconnects``."""
        return self.counters.snapshot()

    # -- asyncio side ------------------------------------------------------------------
    def _send(self, msg: mido.Message, time: float) -> None:
        data = msg.bytes()
        with self._lock:
            status = data[0] & 0xF0
            if status == 0xC0 or (status == 0xB0 and data[1] == CC_PAN):
                self._setup[status, data[0] & 0x0F] = data
            if self._connected and self._out is not None and not self._server_gone.is_set() \
                    and not (self._jack and jackclient.is_dead(self._gen or 0)):
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

    # -- watch thread ------------------------------------------------------------------
    def _lost(self, why: str) -> None:
        """Mark the port as gone (caller holds the lock)."""
        if self._connected:
            self._connected = False
            self._lost_reason = f"MIDI port {self.port!r} disappeared ({why})"
            self.counters.add("disconnects")
            self._sounding.clear()  # the far side lost them with the port
            log.warning("output %s: MIDI port %r disappeared (%s); will reconnect when it "
                        "returns", self.name, self.port, why)

    def _on_shutdown(self, reason: str) -> None:
        """JACK thread: the server went away. Only flags; the watch thread does the rest."""
        self._server_gone.set()
        self._wake.set()

    def _new_watch_client(self) -> jackclient.JackClient:
        return jackclient.JackClient(WATCH_CLIENT, on_shutdown=self._on_shutdown)

    def _adopt(self, watch: jackclient.JackClient) -> jackclient.JackClient:
        """Make ``watch`` (opened before our port, to name it) our watch client."""
        watch.on_shutdown = self._on_shutdown
        if watch.dead.is_set():  # the server went away before it was ours
            self._on_shutdown(watch.reason)
        return watch

    def _release(self, out: Any) -> None:
        """Free an rtmidi client (of a dead server, or at close); idempotent."""
        with self._lock:
            if self._out is out:
                self._out = None
        _delete(out)

    def check(self) -> float:
        """Look once: notice that the port or the server left, or reopen what came back.

        Returns the seconds until the next look (backoff while the server is away).
        """
        if self.closed:
            return self._interval
        if self._server_gone.is_set():
            self._server_lost()
            return self._reopen_after_restart()
        if self._wanted is None:
            return self._interval
        with self._lock:
            if self.closed or self._out is None:
                return self._interval
            try:
                ports = list(self._out.get_ports())
            except Exception as err:
                self._warn.warning("list", "output %s: cannot list MIDI ports: %s", self.name,
                                   err)
                return self._interval
            if self._connected:
                if self.port in ports:
                    self.beside(ports)
                else:
                    self._lost("no longer listed")
                return self._interval
            index = self.find(ports)
            if index is None:
                return self._interval
            try:
                self._out.close_port()
                self._out.open_port(index)
            except Exception as err:
                self._warn.warning("reopen", "output %s: reopening MIDI port %r failed: %s",
                                   self.name, ports[index], err)
                return self._interval
            was, self.port = self.port, ports[index]
            self._reconnected()
        if self.port == was:
            log.info("output %s: MIDI port %r is back; sending again", self.name, self.port)
        else:
            log.warning("output %s: MIDI port %r is back as %r (a new port matching %r); "
                        "sending again", self.name, was, self.port, self._wanted)
        return self._interval

    def beside(self, ports: list[str]) -> None:
        """Remember the ports listed beside ours (``ports`` lists ours too)."""
        self._beside = {p for p in ports if p != self.port}

    def find(self, ports: list[str]) -> int | None:
        """Index in ``ports`` of our port come back: by the exact name it had, else (a synth
        restarted under a new name, e.g. an ALSA client number) the first port matching
        ``wanted`` that was not listed beside ours."""
        if self.port in ports:
            return ports.index(self.port)
        new = [p for p in ports if p not in self._beside]
        index = match_port(new, self._wanted or self.port)
        return None if index is None else ports.index(new[index])

    def _reconnected(self) -> None:
        """The port is open again (caller holds the lock)."""
        self._connected = True
        self._lost_reason = None
        self.counters.add("reconnects")
        for channel in sorted(self._channels):  # nothing of ours should sound there
            with suppress(Exception):
                self._out.send_message([0xB0 | channel, CC_ALL_NOTES_OFF, 0])
        # A restarted synth starts from its defaults: each channel's program (first) and pan
        # again, before any later note (``_send`` waits for the lock held here).
        for key in sorted(self._setup, key=lambda k: (k[1], k[0] != 0xC0)):
            with suppress(Exception):
                self._out.send_message(self._setup[key])

    def _server_lost(self) -> None:
        """The JACK server went away: one error line, then drop until it returns."""
        with self._lock:
            if self._lost_reason == SERVER_GONE:
                return
            if self._connected:
                self.counters.add("disconnects")
            self._connected = False
            self._lost_reason = SERVER_GONE
            self._sounding.clear()  # they went away with the server
        log.error("output %s: the JACK server went away; port %r is gone, dropping MIDI "
                  "messages (counted) and reopening it when the server returns", self.name,
                  self.port)

    def _reopen_after_restart(self) -> float:
        """Open a new rtmidi client (and port) on the restarted server, if it is back."""
        assert self._api_id is not None
        out: Any = None
        watch: jackclient.JackClient | None = None
        try:
            with jackclient.opening() as gen:  # frees our dead clients (and others') first
                watch = self._new_watch_client()  # first: fails quietly while it is away
                out = _new_out(self._api_id, self._client)
                port = self._open_on(out, watch)
                token = jackclient.track(gen, partial(self._release, out))
                with self._lock:
                    if self.closed:
                        jackclient.untrack(token)
                        raise MidiPortError("closed meanwhile")
                    self._out, self._gen, self._token = out, gen, token
                    old_watch, self._watch_client = self._watch_client, watch
                    self._server_gone.clear()
                    if port is not None:
                        self.port = port
                        self._reconnected()
                    else:
                        self._lost_reason = f"MIDI port matching {self._wanted!r} not back yet"
        except Exception as err:
            if out is not None and self._out is not out:
                _delete(out)
            if watch is not None and self._watch_client is not watch:
                watch.close()
            if not self.closed:
                self._warn.warning("restart", "output %s: JACK server not back yet (%s)",
                                   self.name, err)
            return self._backoff.next()
        if old_watch is not None:
            old_watch.close()
        self._backoff.reset()
        if port is not None:
            log.info("output %s: the JACK server is back; MIDI port %r open again, sending",
                     self.name, self.port)
        else:
            log.info("output %s: the JACK server is back; waiting for a port matching %r",
                     self.name, self._wanted)
        return self._interval

    def _open_on(self, out: Any, watch: jackclient.JackClient) -> str | None:
        """Open our port on a fresh rtmidi client: the virtual port, or the wanted one."""
        if self._virtual:
            return _open_virtual(out, self._client, watch)
        assert self._wanted is not None
        ports = list(out.get_ports())
        index = self.find(ports)
        if index is None:
            return None
        out.open_port(index)
        return ports[index]

    def _watch(self) -> None:
        delay = self._interval
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            if self._stopping:
                return
            try:
                delay = self.check()
            except Exception:  # the watcher must outlive a surprise
                log.exception("output %s: checking the MIDI port failed", self.name)
                delay = self._interval

    def _close(self) -> None:
        stats = self.stats
        if stats.get("dropped"):
            log.info("output %s: %d MIDI messages dropped while the port was away "
                     "(%d disconnects, %d reconnects)", self.name, stats["dropped"],
                     stats.get("disconnects", 0), stats.get("reconnects", 0))
        self._stopping = True
        self._wake.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=5.0)
        if not self._jack:
            with self._lock:
                out, self._out = self._out, None
            if out is not None:
                _delete(out)
            return
        self._drain()
        with jackclient.opening():  # no client is freed under us meanwhile
            with self._lock:
                out, self._out = self._out, None
                token, self._token = self._token, None
                watch, self._watch_client = self._watch_client, None
            if token is not None:
                jackclient.untrack(token)
            if out is not None:
                _delete(out)
            if watch is not None:
                watch.close()

    def _drain(self) -> None:
        """JACK: let what was just sent (a close's note-offs and controllers) reach the
        port before it goes. rtmidi queues JACK messages for its process callback; under CPU
        load (two busy loops beside it) a port unregistered right after a panic lost all
        five of its messages in 3 of 32 runs of tests/test_midiport.py's close test, 0 of
        40 with this wait. Without load the loss was not seen, so no test fails every time
        without it."""
        watch = self._watch_client
        if watch is None or self._server_gone.is_set() or not self.stats.get("sent"):
            return
        try:
            period = watch.buffer_size / max(1, watch.sample_rate)
        except Exception:  # a server going away: nothing to wait for
            return
        time.sleep(min(DRAIN_MAX, DRAIN_PERIODS * period))


def _delete(out: Any) -> None:
    """Close an rtmidi output's port and free it (errors of a dead backend ignored)."""
    with jackclient.closing():  # no-op wait unless this process just changed JACK clients
        with suppress(Exception):
            out.close_port()
        with suppress(Exception):
            out.delete()


def _virtual_ports(watch: jackclient.JackClient, client: str) -> set[str]:
    """JACK MIDI output ports ``CLIENT:out``, or ``CLIENT-NN:out``: JACK renames a client
    whose name is taken."""
    name = re.compile(rf"{re.escape(client)}(-[0-9]+)?:{VIRTUAL_PORT}")
    return {p for p in watch.ports("", jackclient.MIDI_TYPE, jackclient.JackPortIsOutput)
            if name.fullmatch(p)}


def _open_virtual(out: Any, client: str, watch: jackclient.JackClient | None) -> str:
    """Open the virtual port ``out`` on ``out``; return its real name. On JACK (``watch``
    given) that is the one port of ours listed after and not before: JACK renames a client
    whose name is taken (``NAME-01``), and rtmidi does not say so. Raises what rtmidi does."""
    before = _virtual_ports(watch, client) if watch is not None else set()
    out.open_virtual_port(VIRTUAL_PORT)
    if watch is None:
        return f"{client}:{VIRTUAL_PORT}"
    new = _virtual_ports(watch, client) - before
    if len(new) == 1:
        return new.pop()
    log.warning("virtual MIDI port %s:%s: cannot tell its name on JACK (%s); JACK may have "
                "renamed the client (%s-01, ...): see jack_lsp", client, VIRTUAL_PORT,
                "several new ports" if new else "not listed", client)
    return f"{client}:{VIRTUAL_PORT}"


def _opening(label: str) -> Any:
    """``jackclient.opening()`` for JACK (see there why), nothing for other APIs."""
    return jackclient.opening() if label == "jack" else nullcontext(None)


def open_sink(arg: str, config: Config) -> MidiPortSink:
    """Factory for ``midi:NAME``: an existing output port, by exact name or substring."""
    listing: list[str] = []
    failures: list[str] = []
    for label, api in api_ids(config.midi.api):
        with _opening(label) as gen:
            try:
                out = _new_out(api, CLIENT_NAME)
            except Exception as err:  # e.g. ALSA without /dev/snd/seq
                failures.append(f"{label}: {err}")
                continue
            ports = list(out.get_ports())
            index = match_port(ports, arg)
            if index is None:
                listing.extend(f"{p} ({label})" for p in ports)
                _delete(out)
                continue
            try:
                out.open_port(index)
            except Exception as err:
                _delete(out)
                raise MidiPortError(
                    f"MIDI port {ports[index]!r} ({label}) cannot be opened: {err}"
                ) from None
            log.info("output midi:%s: sending to %r (%s)", arg, ports[index], label)
            others = [p for p in ports if p != ports[index] and arg.lower() in p.lower()]
            if others and ports[index] != arg:
                log.warning("output midi:%s: %r also matches %s; sending to %r only (also "
                            "when it comes back); give the full port name to choose",
                            arg, arg, ", ".join(map(repr, others)), ports[index])
            sink = MidiPortSink(f"midi:{arg}", out, api=label, port=ports[index], wanted=arg,
                                reconnect_interval=config.midi.reconnect_interval,
                                warn_interval=config.daemon.warn_interval, api_id=api,
                                client=CLIENT_NAME, generation=gen)
            sink.beside(ports)
            return sink
    available = "; ".join(listing) if listing else "none"
    why = f" (unavailable: {'; '.join(failures)})" if failures else ""
    raise MidiPortError(
        f"no MIDI output port matches {arg!r}{why}; available ports: {available}. Start the "
        "synthesizer first, check 'streamsonic devices', choose --midi-api, or use "
        "--output midi-virtual:NAME"
    )


def open_virtual_sink(arg: str, config: Config) -> MidiPortSink:
    """Factory for ``midi-virtual:NAME``: a new port ``NAME:out`` that others connect to
    (on JACK ``NAME-01:out``, ... when a client NAME exists: JACK renames ours; the log and
    ``port`` give the real name)."""
    failures: list[str] = []
    for label, api in api_ids(config.midi.api):
        with _opening(label) as gen:
            try:
                out = _new_out(api, arg)
            except Exception as err:
                failures.append(f"{label}: {err}")
                continue
            watch: jackclient.JackClient | None = None
            try:
                if label == "jack":  # the sink's watch client; first, to name our port
                    watch = jackclient.JackClient(WATCH_CLIENT)
                port = _open_virtual(out, arg, watch)
            except Exception as err:  # e.g. Windows MM has no virtual ports
                failures.append(f"{label}: {err}")
                _delete(out)
                if watch is not None:
                    watch.close()
                continue
            log.info("output midi-virtual:%s: opened virtual port %s (%s)", arg, port, label)
            return MidiPortSink(f"midi-virtual:{arg}", out, api=label, port=port,
                                reconnect_interval=config.midi.reconnect_interval,
                                warn_interval=config.daemon.warn_interval, api_id=api,
                                client=arg, virtual=True, generation=gen, watch_client=watch)
    raise MidiPortError(
        f"cannot open virtual MIDI port {arg!r} ({'; '.join(failures) or 'no MIDI API'}); "
        "on Linux load the ALSA sequencer (modprobe snd-seq) or start JACK and use "
        "--midi-api jack"
    )
