"""A MIDI receiver on JACK for the port tests and the latency bench."""

from __future__ import annotations

import queue
import subprocess
import time

import mido
import rtmidi

from streamsonic.sinks import jackclient


class Receiver:
    """A JACK MIDI input port ``client:in`` that records (monotonic time, message)."""

    def __init__(self, client: str = "receiver") -> None:
        self.client = client
        self.received: queue.Queue[tuple[float, mido.Message]] = queue.Queue()
        # opened and tracked like streamsonic's own JACK clients: if the server dies, the
        # next client opened in this process frees this one first (libjack would delete it)
        with jackclient.opening() as gen:
            self._in = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK, name=client)
            self._in.ignore_types(sysex=True, timing=True, active_sense=True)
            self._in.open_virtual_port("in")
            self._in.set_callback(self._on_message)
            self._token = jackclient.track(gen, self._free)
        self._freed = False

    def _on_message(self, event: tuple[list[int], float], data: object = None) -> None:
        self.received.put((time.monotonic(), mido.Message.from_bytes(event[0])))

    def connect_from(self, source: str, timeout: float = 10.0) -> None:
        """Connect an output port (by exact name or substring) to our input."""
        deadline = time.monotonic() + timeout
        while True:
            ports = self._in.get_ports()
            matches = [p for p in ports if source in p]
            if matches:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"no JACK MIDI output {source!r}; have {ports}")
            time.sleep(0.05)
        subprocess.run(["jack_connect", matches[0], f"{self.client}:in"], check=True,
                       capture_output=True, timeout=10)

    def take(self, count: int, timeout: float = 10.0) -> list[tuple[float, mido.Message]]:
        """The next ``count`` messages (fewer if ``timeout`` passes first)."""
        out: list[tuple[float, mido.Message]] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                out.append(self.received.get(timeout=left))
            except queue.Empty:
                break
        return out

    def drain(self, quiet: float = 0.3) -> list[tuple[float, mido.Message]]:
        """Everything until nothing arrives for ``quiet`` seconds."""
        out: list[tuple[float, mido.Message]] = []
        while True:
            try:
                out.append(self.received.get(timeout=quiet))
            except queue.Empty:
                return out

    def _free(self) -> None:
        if self._freed:
            return
        self._freed = True
        with jackclient.closing():  # as streamsonic's own closes (see there why)
            self._in.cancel_callback()
            self._in.close_port()
            self._in.delete()

    def close(self) -> None:
        """Remove the port and the client (idempotent; after a server death, only frees)."""
        with jackclient.opening():
            jackclient.untrack(self._token)
            self._free()
