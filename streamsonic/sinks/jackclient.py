"""The few libjack calls the outputs need, through ctypes (no extra Python dependency).

Neither python-rtmidi nor PortAudio tells us when the JACK server goes away: rtmidi keeps
accepting messages for a port that no longer exists, and PortAudio's JACK host API can be
neither stopped nor re-initialized once its server died (``Pa_AbortStream`` waits for a
process callback that never comes, ``Pa_Terminate`` fails an assertion and aborts the
interpreter). So the outputs talk to libjack themselves:

- :class:`JackClient` opens a client (never starting a server), reports the server's
  shutdown through a callback (JACK's ``jack_on_info_shutdown``), and can register audio
  output ports and a process callback: the ``audio`` output's JACK backend.
- A client whose server died is closed without waiting (libjack only frees it), and a new
  one is opened when the server is back.

One libjack rule shapes the rest: once the server has died, the next ``jack_client_open``
in the process (anyone's: ours, rtmidi's, PortAudio's) deletes every client object of the
dead server, and a later call on one of them uses freed memory. So every client streamsonic
opens, rtmidi's included, is opened inside :func:`opening` and registered with
:func:`track`; :func:`opening` first closes each tracked client of a server that died.

libjack is loaded on first use; :func:`available` says whether it can be.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

log = logging.getLogger(__name__)
_T = TypeVar("_T")

JackNoStartServer = 0x01
JackPortIsInput = 0x1
JackPortIsOutput = 0x2
JackPlaybackLatency = 1
AUDIO_TYPE = b"32 bit float mono audio"
MIDI_TYPE = b"8 bit raw midi"

_ProcessCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p)
_InfoShutdownCallback = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_XrunCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


class _LatencyRange(ctypes.Structure):
    _fields_ = [("min", ctypes.c_uint32), ("max", ctypes.c_uint32)]


_lib: Any = None
_lib_error: str | None = None
_keep: list[Any] = []  # ctypes callbacks handed to libjack for the life of the process
_lib_lock = threading.Lock()


class JackError(Exception):
    """A libjack call failed (no server, no library, a port that cannot be registered)."""


def _load() -> Any:
    """libjack with the signatures declared, or raise JackError."""
    global _lib, _lib_error  # noqa: PLW0603 - loaded once per process
    with _lib_lock:
        if _lib is not None:
            return _lib
        if _lib_error is not None:
            raise JackError(_lib_error)
        name = ctypes.util.find_library("jack") or "libjack.so.0"
        try:
            lib = ctypes.CDLL(name)
        except OSError as err:
            _lib_error = f"libjack is not available ({err})"
            raise JackError(_lib_error) from None
        p, c, i, u32 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32
        for fname, res, args in (
            ("jack_client_open", p, [c, i, ctypes.POINTER(i)]),
            ("jack_client_close", i, [p]),
            ("jack_get_client_name", c, [p]),
            ("jack_on_info_shutdown", None, [p, _InfoShutdownCallback, p]),
            ("jack_set_process_callback", i, [p, _ProcessCallback, p]),
            ("jack_set_xrun_callback", i, [p, _XrunCallback, p]),
            ("jack_activate", i, [p]),
            ("jack_deactivate", i, [p]),
            ("jack_get_sample_rate", u32, [p]),
            ("jack_get_buffer_size", u32, [p]),
            ("jack_port_register", p, [p, c, c, ctypes.c_ulong, ctypes.c_ulong]),
            ("jack_port_get_buffer", p, [p, u32]),
            ("jack_port_name", c, [p]),
            ("jack_port_by_name", p, [p, c]),
            ("jack_port_get_latency_range", None, [p, i, ctypes.POINTER(_LatencyRange)]),
            ("jack_get_ports", ctypes.POINTER(c), [p, c, c, ctypes.c_ulong]),
            ("jack_free", None, [p]),
            ("jack_connect", i, [p, c, c]),
        ):
            func = getattr(lib, fname)
            func.restype = res
            func.argtypes = args
        # libjack prints every failed connection attempt; its messages are not ours
        silence = ctypes.CFUNCTYPE(None, ctypes.c_char_p)(lambda _msg: None)
        lib.jack_set_error_function.argtypes = [type(silence)]
        lib.jack_set_error_function(silence)
        lib.jack_set_info_function.argtypes = [type(silence)]
        lib.jack_set_info_function(silence)
        _keep.append(silence)  # the C side keeps the pointer
        _lib = lib
        return lib


# -- clients of a server that died ----------------------------------------------------------
# A "generation" is one life of the server as this process saw it. Shutdown callbacks run on
# JACK threads and only add to ``_died`` (a set add is atomic under the GIL; taking a lock
# there could deadlock against a close that joins that thread).
_died: set[int] = set()
_open_lock = threading.RLock()
_tracked: dict[int, tuple[int, Callable[[], None]]] = {}
_ids = iter(range(1, 1 << 62))


def generation() -> int:
    """The server life that a client opened now belongs to."""
    return max(_died) + 1 if _died else 0


def is_dead(gen: int) -> bool:
    """Whether the server of generation ``gen`` has shut down."""
    return gen in _died


def mark_dead(gen: int) -> None:
    """Record that the server of generation ``gen`` shut down (safe from any thread)."""
    _died.add(gen)


def track(gen: int, close: Callable[[], None]) -> int:
    """Register a client of generation ``gen`` and how to close it; returns a token."""
    token = next(_ids)
    _tracked[token] = (gen, close)
    return token


def untrack(token: int) -> None:
    """Forget a client (it was closed)."""
    _tracked.pop(token, None)


def release_dead() -> None:
    """Close every tracked client whose server died (before anything opens a client)."""
    with _open_lock:
        for token, (gen, close) in list(_tracked.items()):
            if gen in _died:
                _tracked.pop(token, None)
                try:
                    close()
                except Exception:  # freeing a dead client must not stop the others
                    log.debug("closing a JACK client of a dead server", exc_info=True)


@contextmanager
def opening() -> Iterator[int]:
    """Hold while opening JACK clients; yields their generation.

    Closes every tracked client of a dead server first, and keeps other threads from
    opening (and so from freeing clients) meanwhile.
    """
    with _open_lock:
        release_dead()
        try:
            yield generation()
        finally:
            _mark_change()


# -- closing after a quiet moment -------------------------------------------------------------
# A client that opens or closes makes the server notify every other client, each on its own
# notification thread; closing a client cancels that thread asynchronously (jack2 1.9.21),
# and one cancelled while it handles such a notification leaves libjack's synchro mutex
# locked or its tables half-updated. A MIDI output that closed its rtmidi client and then at
# once its watch client hung in ``jack_client_close`` for good (gdb: the recursive mutex
# owned by the watch client's exited notification thread) in 3 of 25 runs of
# tests/test_midiport.py beside two busy loops, and crashed in 1; CI hung there for its
# whole 90 minutes. So every close of ours waits until SETTLE seconds have passed since this
# process last opened or closed a client: 0 hangs in 20 such runs, 0 in 6 runs of all five
# JACK test files. Clients of other processes can still race; that needs a fix in libjack.
SETTLE = 0.1
_last_change = 0.0
#: A dead client is closed once none of our Python callbacks runs on its threads (waiting
#: at most CALLBACK_WAIT seconds), and CALLBACK_GRACE seconds after that.
CALLBACK_WAIT, CALLBACK_GRACE = 1.0, 0.02


def _mark_change() -> None:
    global _last_change  # noqa: PLW0603 - one clock per process
    _last_change = time.monotonic()


@contextmanager
def closing() -> Iterator[None]:
    """Hold while closing a JACK client (ours or rtmidi's): waits out the notifications of
    this process's last open or close first, and starts a new quiet period after."""
    wait = _last_change + SETTLE - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    try:
        yield
    finally:
        _mark_change()


def available() -> bool:
    """Whether libjack can be loaded."""
    try:
        _load()
    except JackError:
        return False
    return True


class JackClient:
    """One client of the running JACK server (never starts one).

    ``on_shutdown(reason)`` is called once, from a JACK thread, when the server goes away:
    it must only set flags (no JACK calls, no blocking). After that the client is dead;
    :meth:`close` frees it without talking to the server. Each client is tracked (see
    :func:`opening`), so a dead one is closed before any other client is opened.
    """

    def __init__(self, name: str, on_shutdown: Callable[[str], None] | None = None) -> None:
        self._jack = _load()
        status = ctypes.c_int(0)
        with opening() as gen:
            handle = self._jack.jack_client_open(name.encode(), JackNoStartServer,
                                                 ctypes.byref(status))
            if handle:
                self.generation = gen
                self._token = track(gen, self.close)
        if not handle:
            raise JackError(f"cannot connect to the JACK server (status 0x{status.value:x}; "
                            "is jackd running, and JACK_DEFAULT_SERVER right?)")
        self._client: int | None = handle
        self.on_shutdown = on_shutdown
        self.dead = threading.Event()
        self.reason = ""
        self._callbacks: list[Any] = []  # ctypes callbacks must outlive the client
        # Our Python callbacks running now on JACK threads (see close)
        self._busy = 0
        self._busy_lock = threading.Lock()
        shutdown = _InfoShutdownCallback(self._guarded(self._shutdown))
        self._callbacks.append(shutdown)
        self._jack.jack_on_info_shutdown(handle, shutdown, None)
        self.name = (self._jack.jack_get_client_name(handle) or b"").decode()
        self.sample_rate = int(self._jack.jack_get_sample_rate(handle))
        self.active = False

    def _guarded(self, callback: Callable[..., _T]) -> Callable[..., _T]:
        """``callback`` counted in :attr:`_busy` while it runs (on a JACK thread)."""

        def guarded(*args: Any) -> _T:
            with self._busy_lock:
                self._busy += 1
            try:
                return callback(*args)
            finally:
                with self._busy_lock:
                    self._busy -= 1

        return guarded

    def _wait_callbacks(self) -> None:
        """Wait (at most CALLBACK_WAIT seconds) until none of our callbacks runs, then
        CALLBACK_GRACE more, so that the ctypes trampoline has returned too."""
        deadline = time.monotonic() + CALLBACK_WAIT
        while self._busy and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(CALLBACK_GRACE)

    def _shutdown(self, code: int, reason: bytes | None, arg: object) -> None:
        self.reason = (reason or b"").decode(errors="replace") or f"status 0x{code:x}"
        mark_dead(self.generation)
        self.dead.set()
        if self.on_shutdown is not None:
            self.on_shutdown(self.reason)

    @property
    def handle(self) -> int:
        """The ``jack_client_t*`` (raises once closed)."""
        if self._client is None:
            raise JackError(f"JACK client {self.name!r} is closed")
        return self._client

    @property
    def buffer_size(self) -> int:
        """Frames per JACK period."""
        return int(self._jack.jack_get_buffer_size(self.handle))

    def set_process_callback(self, callback: Callable[[int], int]) -> None:
        """``callback(nframes) -> 0`` runs in JACK's process thread every period."""
        func = _ProcessCallback(self._guarded(lambda frames, _arg: callback(frames)))
        self._callbacks.append(func)
        if self._jack.jack_set_process_callback(self.handle, func, None):
            raise JackError("cannot set the JACK process callback")

    def set_xrun_callback(self, callback: Callable[[], None]) -> None:
        """``callback()`` after each xrun (from a JACK thread; it must not block)."""

        def xrun(_arg: object) -> int:
            callback()
            return 0

        func = _XrunCallback(self._guarded(xrun))
        self._callbacks.append(func)
        self._jack.jack_set_xrun_callback(self.handle, func, None)

    def register_output(self, name: str) -> int:
        """Register an audio output port ``client:name``; returns the ``jack_port_t*``."""
        return self._register(name, JackPortIsOutput)

    def register_input(self, name: str) -> int:
        """Register an audio input port ``client:name``; returns the ``jack_port_t*``."""
        return self._register(name, JackPortIsInput)

    def _register(self, name: str, flags: int) -> int:
        port = self._jack.jack_port_register(self.handle, name.encode(), AUDIO_TYPE, flags, 0)
        if not port:
            raise JackError(f"cannot register JACK port {self.name}:{name}")
        return int(port)

    def port_buffer(self, port: int, frames: int) -> int:
        """Address of ``port``'s buffer for this period (call only in the process callback)."""
        return int(self._jack.jack_port_get_buffer(port, frames))

    def port_name(self, port: int) -> str:
        """Full name of one of our ports."""
        return (self._jack.jack_port_name(port) or b"").decode()

    def has_port(self, name: str) -> bool:
        """Whether a port of that full name exists on the server."""
        return bool(self._jack.jack_port_by_name(self.handle, name.encode()))

    def playback_latency(self, port_name: str) -> int:
        """Frames of playback latency the server reports for an input port (0 if unknown)."""
        port = self._jack.jack_port_by_name(self.handle, port_name.encode())
        if not port:
            return 0
        rng = _LatencyRange()
        self._jack.jack_port_get_latency_range(port, JackPlaybackLatency, ctypes.byref(rng))
        return int(rng.min)

    def ports(self, pattern: str = "", type_: bytes = AUDIO_TYPE, flags: int = 0) -> list[str]:
        """Port names matching a regular expression, type and flags (``jack_get_ports``)."""
        found = self._jack.jack_get_ports(self.handle, pattern.encode() or None, type_, flags)
        if not found:
            return []
        names: list[str] = []
        i = 0
        while found[i]:
            names.append(found[i].decode())
            i += 1
        self._jack.jack_free(ctypes.cast(found, ctypes.c_void_p))
        return names

    def connect(self, source: str, destination: str) -> None:
        """Connect two ports (an existing connection is fine)."""
        err = self._jack.jack_connect(self.handle, source.encode(), destination.encode())
        if err not in (0, 17):  # 17: EEXIST
            raise JackError(f"cannot connect JACK port {source} to {destination} ({err})")

    def activate(self) -> None:
        """Start calling the process callback."""
        if self._jack.jack_activate(self.handle):
            raise JackError(f"cannot activate JACK client {self.name!r}")
        self.active = True

    def close(self) -> None:
        """Deactivate and close; idempotent. A dead client is only freed (no waiting)."""
        with _open_lock:
            client, self._client = self._client, None
            if client is None:
                return
            untrack(self._token)
            dead = self.dead.is_set() or is_dead(self.generation)  # only freed: no threads
            if dead:
                # ... but closing a client cancels its threads, and one cancelled inside
                # our Python callback (the shutdown notice, still running when the server
                # died, on its notification thread) never gives the GIL back: every thread
                # of the daemon then waited for it (3 of 10 restarts of the server with
                # the audio output beside a midi-virtual one)
                self._wait_callbacks()
            with nullcontext() if dead else closing():
                if self.active and not dead:
                    self._jack.jack_deactivate(client)
                self.active = False
                self._jack.jack_client_close(client)
