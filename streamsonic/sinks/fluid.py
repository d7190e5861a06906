"""``audio[:DEVICE]``: FluidSynth rendered inside a sounddevice output callback.

The synth has no audio driver of its own. The scheduler hands each message over
``lookahead`` seconds early (on the asyncio thread); ``send`` appends it to a bounded
deque (append/popleft are atomic, so the callback never waits on a lock). The callback
moves the messages into a heap, works out the clock time of its block
(:class:`~streamsonic.sinks.blocks.StreamClock`) and renders the block with every message
at its exact frame (:class:`~streamsonic.sinks.blocks.BlockRenderer`). Underruns and late
or dropped messages are counted and logged (rate-limited) from the asyncio side.

On JACK the client is named ``streamsonic`` (PortAudio's ``PaJack_SetClientName``), so its
ports are ``streamsonic:out_0`` and ``streamsonic:out_1``.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import threading
import time
from collections import deque
from types import ModuleType
from typing import Any

import mido
import numpy as np

from streamsonic.config import Config
from streamsonic.errors import AudioError
from streamsonic.sinks.base import Sink
from streamsonic.sinks.blocks import BlockRenderer, StreamClock
from streamsonic.sinks.synth import GRAIN, FluidSynth
from streamsonic.soundfont import find_soundfont
from streamsonic.stats import Counters, RateLimitedLog

log = logging.getLogger(__name__)

JACK_CLIENT_NAME = "streamsonic"
_now = time.monotonic
INBOX_SIZE = 8192  # messages waiting for the callback
LOOKAHEAD_MARGIN = 0.03  # seconds of scheduler wake-up slack on top of two blocks
CLOSE_GRACE = 1.0  # seconds allowed for the last messages to render on close

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
    try:
        import sounddevice  # noqa: PLC0415 - optional backend, imported on use
    except (ImportError, OSError) as err:  # OSError: the PortAudio library is missing
        raise AudioError(f"audio output is not available ({err}); {PORTAUDIO_HINT}") from None
    _name_jack_client(sounddevice)
    return sounddevice


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


class AudioSink(Sink):
    """Live audio: FluidSynth inside a sounddevice OutputStream callback."""

    def __init__(self, name: str, sd: ModuleType, synth: FluidSynth, device: Any,
                 block_size: int, latency: float, warn_interval: float = 10.0) -> None:
        super().__init__(name)
        self.synth = synth
        self.rate = synth.sample_rate
        self.block_size = block_size
        self.lookahead = 2 * block_size / self.rate + LOOKAHEAD_MARGIN
        self.counters = Counters()
        self._sd = sd
        self._inbox: deque[tuple[float, int, mido.Message]] = deque()
        self._seq = itertools.count()
        self._renderer = BlockRenderer(synth, self.rate, GRAIN)
        self._clock = StreamClock(self.rate)
        self._frames = 0
        self._underruns = 0
        self._callback_errors = 0
        self._reported: dict[str, int] = {}
        self._rendered_until = -float("inf")  # clock time up to which audio is rendered
        self._final_time = -float("inf")  # time of the latest message handed over
        self._finished = threading.Event()
        self._warn = RateLimitedLog(log, interval=warn_interval)
        try:
            self._stream = sd.OutputStream(
                samplerate=self.rate, blocksize=block_size, device=device, channels=2,
                dtype="float32", latency=latency or None, callback=self._callback,
                finished_callback=self._finished.set,
            )
            self._stream.start()
        except Exception as err:  # sounddevice.PortAudioError, ValueError
            synth.delete()
            raise AudioError(f"cannot start audio output {name!r}: {err}; {NO_DEVICE_HINT}") \
                from None
        self.latency = float(self._stream.latency)
        log.info("output %s: %s, %d Hz, %d-frame blocks, output latency %.1f ms, SoundFont %s",
                 name, self.device_name, self.rate, block_size, self.latency * 1000,
                 synth.soundfont)

    @property
    def device_name(self) -> str:
        """The output device's name."""
        return str(self._sd.query_devices(self._stream.device)["name"])

    @property
    def stats(self) -> dict[str, int]:
        """``underruns``, ``late`` (placed at the block start), ``dropped`` (inbox full)."""
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
    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        now = _now()
        try:
            if status.output_underflow:
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
        if self._finished.is_set():
            raise AudioError(f"audio output {self.name!r} stopped (device gone or server "
                             f"shut down); {NO_DEVICE_HINT}")
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

    def _close(self) -> None:
        """Let the final messages (note-offs, All Sound Off) render, then stop."""
        try:
            final = self._final_time + self.block_size / self.rate
            deadline = _now() + max(0.0, final - _now()) + CLOSE_GRACE
            while not self._finished.is_set() and _now() < deadline and (
                self._inbox or self._renderer.pending or self._rendered_until < final
            ):
                time.sleep(0.005)
            self._stream.stop()
            self._stream.close()
        except Exception as err:
            log.warning("output %s: closing the audio stream failed: %s", self.name, err)
        finally:
            self._report()
            self.synth.delete()


def open_sink(arg: str, config: Config) -> AudioSink:
    """Factory for ``audio[:DEVICE]`` (looked up by streamsonic.outputs)."""
    sd = _import_sounddevice()
    audio = config.audio
    wanted = arg or audio.device
    device = _output_device(sd, wanted)
    rate = _sample_rate(sd, device, audio.sample_rate)
    soundfont = find_soundfont(audio.soundfont)
    synth = FluidSynth(soundfont, rate, audio.gain, config.music.program)
    name = f"audio:{wanted}" if wanted else "audio"
    return AudioSink(name, sd, synth, device, audio.block_size, audio.latency,
                     config.daemon.warn_interval)


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
