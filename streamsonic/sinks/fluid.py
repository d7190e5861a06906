"""``audio[:DEVICE]``: FluidSynth rendered inside an audio callback (JACK or PortAudio).

The synth has no audio driver of its own. The scheduler hands each message over
``lookahead`` seconds early (on the asyncio thread); ``send`` appends it to a bounded
deque (append/popleft are atomic, so the callback never waits on a lock). The callback
moves the messages into a heap, works out the clock time of its block
(:class:`~streamsonic.sinks.blocks.StreamClock`) and renders the block with every message
at its exact frame (:class:`~streamsonic.sinks.blocks.BlockRenderer`). Underruns and late
or dropped messages are counted and logged (rate-limited) from the asyncio side.

The stream comes from PortAudio (sounddevice), except when the chosen device is a JACK
client: then the sink is its own JACK client ``streamsonic`` (libjack through ctypes) with
ports ``streamsonic:out_0`` and ``streamsonic:out_1`` connected to the device's playback
ports, because PortAudio's JACK host API can be neither stopped nor re-initialized after
the server died. A monitor thread notices a lost device (JACK shutdown, a PortAudio stream
that finished by itself, callbacks that stopped) and reopens the stream when it returns.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from types import ModuleType
from typing import Any, Protocol

import mido
import numpy as np

from streamsonic.config import Config
from streamsonic.errors import AudioError
from streamsonic.sinks import jackclient
from streamsonic.sinks.base import CC_ALL_NOTES_OFF, CC_ALL_SOUND_OFF, Sink
from streamsonic.sinks.blocks import BlockRenderer, StreamClock
from streamsonic.sinks.reconnect import Backoff
from streamsonic.sinks.synth import GRAIN, FluidSynth
from streamsonic.soundfont import find_soundfont
from streamsonic.stats import Counters, RateLimitedLog

log = logging.getLogger(__name__)

JACK_CLIENT_NAME = "streamsonic"
_now = time.monotonic
INBOX_SIZE = 8192  # messages waiting for the callback
LOOKAHEAD_MARGIN = 0.03  # seconds of scheduler wake-up slack on top of two blocks
CLOSE_GRACE = 1.0  # seconds allowed for the last messages to render on close
MONITOR_INTERVAL = 0.25  # seconds between the monitor thread's looks at the stream
STALL_TIMEOUT = 2.0  # seconds without an audio callback before the device counts as away

PORTAUDIO_HINT = (
    "install PortAudio (Debian/Ubuntu: apt install libportaudio2; Fedora: dnf install "
    "portaudio; macOS: brew install portaudio) and pip install sounddevice"
)
NO_DEVICE_HINT = (
    "check that PipeWire/PulseAudio/ALSA (or JACK) is running and this user may use it, pick "
    "a device with --output audio:NAME (see 'streamsonic devices'), or play elsewhere with "
    "--output midi:NAME, --output midi-virtual:NAME or --output wav:PATH"
)

_jack_name: ctypes.Array[ctypes.c_char] | None = None  # PortAudio keeps the pointer


def _import_sounddevice() -> ModuleType:
    """sounddevice, with PortAudio initialized (again, if :func:`_release_portaudio` ran)."""
    try:
        import sounddevice  # noqa: PLC0415 - optional backend, imported on use
    except (ImportError, OSError) as err:  # OSError: the PortAudio library is missing
        raise AudioError(f"audio output is not available ({err}); {PORTAUDIO_HINT}") from None
    _name_jack_client(sounddevice)
    if sounddevice._initialized == 0:
        sounddevice._initialize()
    return sounddevice


def _release_portaudio(sd: ModuleType) -> None:
    """Terminate PortAudio (while the JACK server is alive: afterwards it would abort)."""
    while sd._initialized > 0:
        sd._terminate()


def _name_jack_client(sd: ModuleType) -> None:
    """Name our JACK client (PortAudio reads the name when it initializes; re-init once)."""
    global _jack_name  # noqa: PLW0603 - one per process, must outlive PortAudio's use
    if _jack_name is not None:
        return
    names = [api["name"] for api in sd.query_hostapis()]
    if not any("JACK" in n for n in names):
        _jack_name = ctypes.create_string_buffer(b"")
        return
    try:
        lib = ctypes.CDLL(sd._libname)
        setter = lib.PaJack_SetClientName
    except (OSError, AttributeError):
        _jack_name = ctypes.create_string_buffer(b"")
        return
    _jack_name = ctypes.create_string_buffer(JACK_CLIENT_NAME.encode())
    setter.argtypes = [ctypes.c_char_p]
    setter(_jack_name)
    sd._terminate()
    sd._initialize()


Render = Callable[[np.ndarray, int, bool], None]
"""The sink's callback: ``render(out, frames, underflow)`` fills ``out`` ((frames, 2) float32)."""


class _Backend(Protocol):
    """One audio stream that calls ``render`` from its audio thread."""

    period: int  # frames the callback renders at most at once
    latency: float  # seconds from a rendered frame to the output
    device_name: str

    def start(self, render: Render, on_dead: Callable[[], None]) -> None:
        """Open the stream and start calling ``render``; ``on_dead()`` (from any thread,
        flags only) when it can no longer run. Raises AudioError."""

    def dead(self) -> str | None:
        """Why the stream can no longer run (server gone, stream finished), or None."""

    def close(self) -> None:
        """Stop and release; after a death only frees (never waits for the dead device)."""


class JackBackend:
    """Our own JACK client ``streamsonic`` with ports ``out_0``/``out_1``, through libjack.

    Used when the output device is a JACK client (``system``, say): unlike PortAudio's JACK
    host API it can be closed after the server died and opened again when it returns.
    """

    def __init__(self, target: str) -> None:
        self.target = target  # the JACK client whose playback ports we feed
        self.device_name = f"{target} (JACK)"
        self.period = 0
        self.latency = 0.0
        self.rate = 0
        self._client: jackclient.JackClient | None = None
        self._ports: list[int] = []
        self._scratch = np.zeros((0, 2), dtype=np.float32)
        self._xrun = False
        self._render: Render | None = None

    def probe_rate(self) -> int:
        """The server's sample rate (opens the client)."""
        self._open()
        return self.rate

    def _open(self) -> jackclient.JackClient:
        if self._client is None:
            try:
                self._client = jackclient.JackClient(JACK_CLIENT_NAME)
            except jackclient.JackError as err:
                raise AudioError(f"audio output on JACK: {err}") from None
            self.rate = self._client.sample_rate
        return self._client

    def start(self, render: Render, on_dead: Callable[[], None]) -> None:
        """Register the ports, activate, connect them to the target's playback ports."""
        try:
            client = self._open()
            client.on_shutdown = lambda _reason: on_dead()  # flags only (JACK thread)
            if client.dead.is_set():
                raise jackclient.JackError("the JACK server went away")
            targets = client.ports("^" + _ere_escape(self.target) + ":",
                                   flags=jackclient.JackPortIsInput)
            if not targets:
                raise jackclient.JackError(f"JACK client {self.target!r} has no audio inputs")
            self._render = render
            self.period = client.buffer_size
            self._scratch = np.zeros((max(self.period, 8192), 2), dtype=np.float32)
            self._ports = [client.register_output(f"out_{i}") for i in range(2)]
            client.set_process_callback(self._process)
            client.set_xrun_callback(self._on_xrun)
            client.activate()
            for i, port in enumerate(self._ports):
                client.connect(client.port_name(port), targets[min(i, len(targets) - 1)])
            self.latency = (client.playback_latency(targets[0]) + self.period) / self.rate
        except jackclient.JackError as err:
            self.close()
            raise AudioError(f"audio output on JACK: {err}") from None

    def _on_xrun(self) -> None:
        self._xrun = True

    def _process(self, frames: int) -> int:
        """JACK's process thread: render, then copy each channel into its port buffer."""
        client = self._client
        render = self._render
        if client is None or render is None:
            return 0
        if frames > len(self._scratch):
            self._scratch = np.zeros((frames, 2), dtype=np.float32)
        block = self._scratch[:frames]
        xrun, self._xrun = self._xrun, False
        render(block, frames, xrun)
        for i, port in enumerate(self._ports):
            buffer = (ctypes.c_float * frames).from_address(client.port_buffer(port, frames))
            np.ctypeslib.as_array(buffer)[:] = block[:, i]
        return 0

    def dead(self) -> str | None:
        """Why the client can no longer run, or None."""
        client = self._client
        if client is None:
            return "closed"
        if client.dead.is_set():
            return f"the JACK server went away ({client.reason})"
        return None

    def close(self) -> None:
        """Deactivate and close (a client of a dead server is only freed)."""
        client, self._client = self._client, None
        self._ports = []
        if client is not None:
            client.close()


class PortAudioBackend:
    """A sounddevice OutputStream (ALSA, PipeWire, PulseAudio, CoreAudio, WASAPI...)."""

    def __init__(self, sd: ModuleType, device: int, rate: int, block_size: int,
                 latency: float) -> None:
        self._sd = sd
        self.device = device
        self.rate = rate
        self.period = block_size
        self._latency_wanted = latency
        self.latency = 0.0
        self.device_name = str(sd.query_devices(device)["name"])
        self._stream: Any = None
        self._finished = threading.Event()
        self._stopping = False
        self._render: Render | None = None

    def start(self, render: Render, on_dead: Callable[[], None]) -> None:
        """Open and start the stream."""
        self._render = render
        self._finished = finished = threading.Event()
        self._stopping = False

        def on_finished() -> None:
            finished.set()
            if not self._stopping:
                on_dead()

        try:
            self._stream = self._sd.OutputStream(
                samplerate=self.rate, blocksize=self.period, device=self.device, channels=2,
                dtype="float32", latency=self._latency_wanted or None, callback=self._callback,
                finished_callback=on_finished,
            )
            self._stream.start()
        except Exception as err:  # sounddevice.PortAudioError, ValueError
            raise AudioError(f"cannot start audio output {self.device_name!r}: {err}") \
                from None
        self.latency = float(self._stream.latency)

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        assert self._render is not None
        self._render(outdata, frames, bool(status.output_underflow))

    def dead(self) -> str | None:
        """Why the stream stopped by itself, or None."""
        if self._stream is None:
            return "closed"
        if self._finished.is_set() or not self._stream.active:
            return "the audio stream stopped (device gone or sound server shut down)"
        return None

    def close(self) -> None:
        """Stop and close; a stream that died is closed from a thread nobody waits on."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        self._stopping = True
        if self._finished.is_set() or not stream.active:
            # a dead device may never answer: do not hold anyone up
            threading.Thread(target=_close_quietly, args=(stream,), daemon=True,
                             name="audio-close").start()
            return
        stream.stop()
        stream.close()


def _close_quietly(stream: Any) -> None:
    with suppress(Exception):
        stream.close(ignore_errors=True)


def _ere_escape(text: str) -> str:
    """Escape a name for a POSIX extended regular expression (``jack_get_ports``)."""
    return "".join("\\" + c if c in "\\()[]{}*+?|$^." else c for c in text)


class AudioSink(Sink):
    """Live audio: FluidSynth rendered inside an audio callback (JACK or PortAudio).

    A monitor thread watches the stream: a JACK server shutdown or a PortAudio stream that
    finished by itself (hard loss: the stream is closed and reopened, with backoff, when the
    device returns) and a callback counter that stops moving (a stall: messages are dropped
    until the callbacks resume). On either it logs one error line; while the device is away
    messages are dropped and counted, and sounding notes are released before playing again.
    """

    def __init__(self, name: str, backend: _Backend, synth: FluidSynth, block_size: int,
                 warn_interval: float = 10.0, reconnect_interval: float = 1.0) -> None:
        super().__init__(name)
        self.synth = synth
        self.rate = synth.sample_rate
        self.block_size = block_size
        self.counters = Counters()
        self._backend = backend
        self._inbox: deque[tuple[float, int, mido.Message]] = deque()
        self._seq = itertools.count()
        self._renderer = BlockRenderer(synth, self.rate, GRAIN)
        self._clock = StreamClock(self.rate)
        self._frames = 0
        self._callbacks = 0  # the watchdog's counter
        self._underruns = 0
        self._callback_errors = 0
        self._reported: dict[str, int] = {}
        self._rendered_until = -float("inf")  # clock time up to which audio is rendered
        self._final_time = -float("inf")  # time of the latest message handed over
        self._warn = RateLimitedLog(log, interval=warn_interval)
        self._lost_reason: str | None = None
        self._hard_loss = False
        self._wake = threading.Event()
        self._stopping = False
        self._reconnect_interval = reconnect_interval
        try:
            backend.start(self._render, self._wake.set)
        except AudioError as err:
            synth.delete()
            raise AudioError(f"{err}; {NO_DEVICE_HINT}") from None
        self.lookahead = 2 * max(block_size, backend.period) / self.rate + LOOKAHEAD_MARGIN
        self.latency = backend.latency
        self._monitor_thread = threading.Thread(target=self._monitor, name=f"{name}-monitor",
                                                daemon=True)
        self._monitor_thread.start()
        log.info("output %s: %s, %d Hz, %d-frame blocks, output latency %.1f ms, SoundFont %s",
                 name, self.device_name, self.rate, backend.period, self.latency * 1000,
                 synth.soundfont)

    @property
    def device_name(self) -> str:
        """The output device's name."""
        return self._backend.device_name

    @property
    def lost(self) -> str | None:
        """Why messages are being dropped (device or server away, callbacks stalled)."""
        return self._lost_reason

    @property
    def stats(self) -> dict[str, int]:
        """``underruns``, ``late`` (placed at the block start), ``dropped`` (inbox full or
        device away), ``disconnects``, ``reconnects``."""
        out = self.counters.snapshot()
        out["underruns"] = self._underruns
        out["late"] = self._renderer.late
        out["callback_errors"] = self._callback_errors
        return out

    def panic(self, time: float | None = None) -> None:
        """Silence everything; by default as soon as the next block can play it."""
        if time is None:
            time = max(self._last_time, _now() + self.block_size / self.rate)
        super().panic(time)

    # -- audio thread ------------------------------------------------------------------
    def _render(self, outdata: np.ndarray, frames: int, underflow: bool) -> None:
        now = _now()
        self._callbacks += 1
        try:
            if underflow:
                self._underruns += 1
                self._clock.reset()
            start = self._clock.block_start(now, self._frames)
            inbox = self._inbox
            renderer = self._renderer
            while inbox:
                renderer.push(*inbox.popleft())
            renderer.render(outdata, start)
            self._rendered_until = start + frames / self.rate
        except Exception:  # never let an exception kill the stream
            self._callback_errors += 1
            outdata.fill(0.0)
        self._frames += frames

    # -- asyncio side ------------------------------------------------------------------
    def _send(self, msg: mido.Message, time: float) -> None:
        if self._lost_reason is not None:
            self.counters.add("dropped")
            self._warn.warning("away", "output %s: the audio device is away; dropping "
                               "messages until it returns (%d dropped so far)", self.name,
                               self.counters.get("dropped"))
            return
        if len(self._inbox) >= INBOX_SIZE:
            self.counters.add("dropped")
            self._warn.warning("dropped", "output %s: audio callback is not keeping up; "
                               "dropped a %s", self.name, msg.type)
        else:
            self._inbox.append((time, next(self._seq), msg))
            self._final_time = max(self._final_time, time)
        self._report()

    def _report(self) -> None:
        """Log new underruns / late messages (rate-limited), from the asyncio side."""
        for key, value, what in (
            ("underruns", self._underruns, "audio underruns (the callback ran too late)"),
            ("late", self._renderer.late, "notes rendered late (scheduler fell behind)"),
            ("callback_errors", self._callback_errors, "audio callback errors"),
        ):
            if value > self._reported.get(key, 0) and self._warn.warning(
                key, "output %s: %d %s so far", self.name, value, what
            ):
                self._reported[key] = value

    # -- monitor thread ----------------------------------------------------------------
    def _monitor(self) -> None:
        """Watch for a dead stream or stalled callbacks; reopen a dead one, with backoff."""
        backoff = Backoff(min(0.25, self._reconnect_interval), self._reconnect_interval)
        seen = self._callbacks
        moved_at = _now()
        delay = MONITOR_INTERVAL
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            if self._stopping:
                return
            delay = MONITOR_INTERVAL
            why = self._backend.dead()
            if why is not None:
                self._go_lost(why, hard=True)
                if self._reopen():
                    backoff.reset()
                    seen, moved_at = self._callbacks, _now()
                else:
                    delay = backoff.next()
                continue
            now = _now()
            if self._callbacks != seen:
                seen, moved_at = self._callbacks, now
                if self._lost_reason is not None and not self._hard_loss:
                    self._resume()
            elif now - moved_at > STALL_TIMEOUT and self._lost_reason is None:
                self._go_lost(f"no audio callback for {now - moved_at:.1f} s", hard=False)

    def _go_lost(self, why: str, hard: bool) -> None:
        if self._lost_reason is not None:
            self._hard_loss = self._hard_loss or hard
            return
        self._hard_loss = hard
        self._lost_reason = why
        self.counters.add("disconnects")
        self._sounding.clear()  # released when it plays again
        log.error("output %s: %s; dropping audio messages (counted)%s", self.name, why,
                  " and reopening the stream when the device returns" if hard else
                  " until the callbacks resume")

    def _silence_synth(self) -> None:
        """All Notes Off and All Sound Off on every channel (no callback may be running)."""
        self._inbox.clear()
        self._renderer.clear()
        for channel in range(16):
            for control in (CC_ALL_NOTES_OFF, CC_ALL_SOUND_OFF):
                self.synth.apply(mido.Message("control_change", channel=channel,
                                              control=control, value=0))

    def _reopen(self) -> bool:
        """Close the dead stream, silence the synth, try to open a new one."""
        self._backend.close()
        self._silence_synth()
        self._frames = 0
        self._clock = StreamClock(self.rate)
        self._rendered_until = -float("inf")
        try:
            if isinstance(self._backend, JackBackend) and self._backend.probe_rate() != self.rate:
                rate = self._backend.rate
                self._backend.close()
                raise AudioError(f"the JACK server now runs at {rate} Hz, the synth at "
                                 f"{self.rate} Hz; restart streamsonic")
            self._backend.start(self._render, self._wake.set)
        except AudioError as err:
            self._warn.warning("reopen", "output %s: audio device not back yet (%s)", self.name,
                               err)
            return False
        self.latency = self._backend.latency
        self.counters.add("reconnects")
        self._hard_loss = False
        self._lost_reason = None
        log.info("output %s: audio stream open again on %s; playing", self.name,
                 self.device_name)
        return True

    def _resume(self) -> None:
        """Callbacks run again after a stall: release what sounded, then play."""
        when = _now()
        for channel in range(16):
            for control in (CC_ALL_NOTES_OFF, CC_ALL_SOUND_OFF):
                self._inbox.append((when, next(self._seq), mido.Message(
                    "control_change", channel=channel, control=control, value=0)))
        self._lost_reason = None
        log.info("output %s: audio callbacks resumed; playing", self.name)

    def _close(self) -> None:
        """Let the final messages (note-offs, All Sound Off) render, then stop."""
        self._stopping = True
        self._wake.set()
        if self._monitor_thread is not threading.current_thread():
            self._monitor_thread.join(timeout=5.0)
        try:
            final = self._final_time + self.block_size / self.rate
            deadline = _now() + max(0.0, final - _now()) + CLOSE_GRACE
            while self._lost_reason is None and self._backend.dead() is None \
                    and _now() < deadline and (self._inbox or self._renderer.pending
                                               or self._rendered_until < final):
                time.sleep(0.005)
            self._backend.close()
        except Exception as err:
            log.warning("output %s: closing the audio stream failed: %s", self.name, err)
        finally:
            self._report()
            stats = self.counters.snapshot()
            if stats.get("disconnects"):
                log.info("output %s: %d messages dropped while the device was away "
                         "(%d disconnects, %d reconnects)", self.name, stats.get("dropped", 0),
                         stats["disconnects"], stats.get("reconnects", 0))
            self.synth.delete()


def open_sink(arg: str, config: Config) -> AudioSink:
    """Factory for ``audio[:DEVICE]`` (looked up by streamsonic.outputs)."""
    sd = _import_sounddevice()
    audio = config.audio
    wanted = arg or audio.device
    device = _output_device(sd, wanted)
    soundfont = find_soundfont(audio.soundfont)
    backend: _Backend
    info = sd.query_devices(device)
    if "JACK" in sd.query_hostapis(info["hostapi"])["name"] and jackclient.available():
        # Our own JACK client instead of PortAudio's, whose JACK host API can be neither
        # stopped nor terminated once its server died; PortAudio lets go of the server now.
        _release_portaudio(sd)
        jack = JackBackend(str(info["name"]))
        try:
            rate = jack.probe_rate()
        except AudioError as err:
            raise AudioError(f"{err}; {NO_DEVICE_HINT}") from None
        backend = jack
    else:
        rate = _sample_rate(sd, device, audio.sample_rate)
        backend = PortAudioBackend(sd, device, rate, audio.block_size, audio.latency)
    try:
        synth = FluidSynth(soundfont, rate, audio.gain, config.music.program)
    except BaseException:
        backend.close()
        raise
    name = f"audio:{wanted}" if wanted else "audio"
    return AudioSink(name, backend, synth, audio.block_size, config.daemon.warn_interval,
                     config.midi.reconnect_interval)


def _output_device(sd: ModuleType, wanted: str) -> int:
    """Device index for a name (substring, as sounddevice matches) or the default output."""
    if wanted:
        try:
            info = sd.query_devices(int(wanted) if wanted.isdigit() else wanted, "output")
        except (ValueError, sd.PortAudioError) as err:
            outputs = [d["name"] for d in sd.query_devices() if d["max_output_channels"] > 0]
            raise AudioError(
                f"audio device {wanted!r}: {err}; output devices: "
                f"{', '.join(outputs) or 'none'}; {NO_DEVICE_HINT}"
            ) from None
        return int(info["index"])
    try:
        info = sd.query_devices(kind="output")
    except (ValueError, sd.PortAudioError):
        raise AudioError(f"no audio output device found; {NO_DEVICE_HINT}") from None
    return int(info["index"])


def _sample_rate(sd: ModuleType, device: int, wanted: int) -> int:
    """``wanted`` if the device takes it, else the device's default rate (JACK's, say)."""
    try:
        sd.check_output_settings(device=device, samplerate=wanted, channels=2,
                                 dtype="float32")
    except (ValueError, sd.PortAudioError) as err:
        rate = int(sd.query_devices(device)["default_samplerate"])
        log.info("audio device does not take %d Hz (%s); using its rate, %d Hz", wanted, err,
                 rate)
        return rate
    return wanted
