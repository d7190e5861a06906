"""Worker processes: one daemon's streams played on several cores (``daemon.workers``).

    input --> router (this process) --crc32(stream) % N--> worker k: Daemon(PipeSource)

One event loop on one core plays about 10,000-18,000 notes a second (README, "Capacity").
With ``daemon.workers = N > 1`` the daemon's own process becomes a router: it reads the
input (stdin, a file, MQTT or NATS, with ``--record``) and hands each sample to one of N
worker processes, chosen by a hash of the stream's name, so every sample of a stream reaches
the same worker and its melody stays whole. Each worker is the ordinary live pipeline
(:class:`~streamsonic.daemon.Daemon`) reading from a pipe (:class:`PipeSource`): it loads
the model, keeps its streams' states, steps them in batches and writes its notes to its own
outputs. Outputs that can take several writers: ``events`` (each write holds whole lines,
see :mod:`streamsonic.sinks.events`) and ``mqtt`` (a connection per worker, the client id
suffixed ``-wK``); a MIDI file, a WAV file, audio and MIDI ports hold one stream of notes and
are refused. ``metrics.listen`` is served by the router: every worker sends it a snapshot
of its own metrics every second (:data:`SNAPSHOT_EVERY`), and a scrape sees their sums
with the router's source (``streamsonic.metrics.merge_families``).

What the router does:

* Samples go to the workers in frames (a length and a pickled list of ``(stream, time,
  value, receipt, arrived)`` tuples, ``arrived`` being when the sample reached the daemon:
  the router's read, or an MQTT or NATS source's own hand-over, on ``time.monotonic``), one
  per worker per loop turn or per ``FRAME_ITEMS``; a worker
  that falls behind fills its pipe, and the router then waits for it, so the source is read
  no faster than the workers play (stdin: nothing dropped; MQTT: the broker's queue).
* Deliveries owed to the sender (MQTT QoS 1) are kept by the router and settled when the
  worker says it has scheduled the sample's note (or dropped it), over a pipe back.
* systemd sees one service: the router reports READY once every worker has loaded its model,
  pets the watchdog and keeps STATUS= current; the workers do not talk to systemd.
* SIGINT, SIGTERM and SIGHUP are passed on to every worker (each stops cleanly, releasing its
  notes, or reloads its config file: a SIGHUP once the router has read the file and checked
  its own part, and the router logs one line saying the reload was taken, or that it failed
  and no worker was asked); the workers run in their own process group, so a
  terminal's Ctrl-C reaches them once, through the router (under systemd ``KillMode=mixed``
  does the same for SIGTERM). The end of the input closes the workers' pipes: each
  plays out what waits and exits. When one worker exits (an error, a lost stdout reader), the
  others are stopped too and the daemon exits with the first failed worker's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from streamsonic import logs, sources
from streamsonic.config import Config, find_config_file, load_config
from streamsonic.errors import (
    EXIT_INTERRUPTED,
    EXIT_WORKER_KILLED,
    ConfigError,
    SourceError,
    StreamsonicError,
)
from streamsonic.events import Arrival, Holding, NoteEvent, Receipt, Sample, Source
from streamsonic.outputs import OutputSpec, shown
from streamsonic.reloading import Reloader
from streamsonic.sdnotify import ENV_SOCKET, Notifier, watchdog_interval
from streamsonic.sources import Connecting

if TYPE_CHECKING:
    from streamsonic.daemon import Daemon
    from streamsonic.engine import Engine
    from streamsonic.metrics import MetricsServer
    from streamsonic.scheduler import Scheduler

log = logging.getLogger(__name__)

#: Output kinds a worker may open: several processes can write them at once.
SHARED_OUTPUTS = frozenset({"events", "mqtt"})
#: The most samples one frame to a worker holds.
FRAME_ITEMS = 512
#: Seconds the oldest sample waits for its frame at most: under a steady flow the event loop
#: turns only every YIELD_EVERY, and samples would wait for that.
FRAME_AGE = 0.002
#: Bytes waiting in a worker's pipe (and the router's buffer for it) before the router waits
#: for the worker to read: the bound on what is in flight to a worker.
HIGH_WATER = 1 << 20
#: Seconds of uninterrupted routing after which the event loop gets a turn.
YIELD_EVERY = 0.02
#: Seconds a stopping worker has before it is killed (each answers SIGTERM within 1 s).
STOP_GRACE = 15.0
#: Seconds between a worker's snapshots of its metrics (for the router's endpoint).
SNAPSHOT_EVERY = 1.0
#: Stream name -> worker index, kept for this many names (then started afresh).
INDEX_CACHE = 65536
#: Environment variables a worker must not see: systemd talks to the router only.
_SYSTEMD_ENV = (ENV_SOCKET, "WATCHDOG_USEC", "WATCHDOG_PID")

_HEADER = struct.Struct("<I")


def _late_signal(name: str) -> None:
    log.debug("%s while stopping: already stopping", name)


def worker_of(stream: str, workers: int) -> int:
    """The worker (0 .. workers - 1) that plays ``stream``: a CRC-32 of its UTF-8 name."""
    return zlib.crc32(stream.encode("utf-8", "surrogatepass")) % workers


def check_workers(config: Config, specs: list[OutputSpec]) -> None:
    """Refuse what several worker processes cannot do (ConfigError, exit 78)."""
    n = config.daemon.workers
    single = [spec for spec in specs if spec.kind not in SHARED_OUTPUTS]
    if single:
        raise ConfigError(
            f"daemon.workers = {n}: the output(s) {shown(single)} take all notes in one "
            "process; with several workers use the events or mqtt outputs, or set "
            "daemon.workers = 1 (--workers 1)")


def frame(payload: object) -> bytes:
    """One frame: the length, then ``payload`` pickled."""
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next frame's payload; None at the end of the pipe."""
    try:
        head = await reader.readexactly(_HEADER.size)
        return pickle.loads(await reader.readexactly(_HEADER.unpack(head)[0]))
    except asyncio.IncompleteReadError:  # our own process on the other end, or its end
        return None


# -- the worker's side -------------------------------------------------------------------------
@dataclass(frozen=True)
class Setup:
    """What a worker is told first: who it is and what to play."""

    index: int
    workers: int
    config: Config
    specs: list[str]
    config_path: str | None
    cli_overrides: dict[str, object]
    fixed_outputs: bool
    back_fd: int


class BackChannel:
    """The worker's messages to the router: ``("ready",)`` and ``("settled", [ids])``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._writer: asyncio.StreamWriter | None = None
        self._settled: list[int] = []
        self._due = False

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.streams.FlowControlMixin(loop), os.fdopen(self.fd, "wb", 0))
        self._writer = asyncio.StreamWriter(transport, protocol, None, loop)

    def send(self, message: tuple[object, ...]) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(frame(message))

    def settle(self, receipt: int) -> None:
        """The sample with this receipt played (or was dropped): tell the router soon."""
        self._settled.append(receipt)
        if not self._due:
            self._due = True
            asyncio.get_running_loop().call_soon(self._send_settled)

    def _send_settled(self) -> None:
        self._due = False
        settled, self._settled = self._settled, []
        if settled:
            self.send(("settled", settled))

    def close(self) -> None:
        self._send_settled()
        if self._writer is not None:
            self._writer.close()


class _Settle:
    """A receipt the router keeps: settled over the back channel."""

    __slots__ = ("back", "receipt")

    def __init__(self, back: BackChannel, receipt: int) -> None:
        self.back, self.receipt = back, receipt

    def done(self) -> None:
        self.back.settle(self.receipt)


class PipeSource:
    """A worker's source: the samples the router sends down the worker's stdin."""

    def __init__(self, fd: int, back: BackChannel) -> None:
        self._fd = fd
        self._back = back
        self._reader: asyncio.StreamReader | None = None
        self._receipt = 0
        self._arrived: float | None = None
        self._samples = 0

    async def __aenter__(self) -> PipeSource:
        loop = asyncio.get_running_loop()
        reader = self._reader = asyncio.StreamReader(limit=1 << 24)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                     os.fdopen(self._fd, "rb", 0))
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def __aiter__(self) -> AsyncIterator[Sample | NoteEvent]:
        assert self._reader is not None, "enter the source first"
        while True:
            items = await read_frame(self._reader)
            if items is None:
                return
            for stream, time, value, receipt, arrived in items:
                self._receipt = receipt
                self._arrived = arrived
                self._samples += 1
                yield Sample(stream, time, value)
            # A turn of the loop per frame (a few ms of samples): the batch step's timer
            # and the outputs' writes need not wait for the engine's longer feeding slice.
            await asyncio.sleep(0)

    def hold(self) -> Receipt | None:
        """The receipt of the sample yielded last (None when the router owes nothing)."""
        return _Settle(self._back, self._receipt) if self._receipt else None

    def arrived(self) -> float | None:
        """When the sample yielded last reached the daemon (``time.monotonic``): when the
        router read it, or when its MQTT or NATS source handed it over."""
        return self._arrived

    @property
    def stats(self) -> dict[str, int]:
        return {"samples": self._samples}


class WorkerNotifier(Notifier):
    """A worker's Notifier: READY goes to the router (which tells systemd), the rest
    nowhere."""

    def __init__(self, back: BackChannel, on_ready: Callable[[], None] | None = None) -> None:
        super().__init__(address="")
        self._back = back
        self._on_ready = on_ready
        self._ready = False

    def ready(self, status: str | None = None) -> bool:
        if not self._ready:  # the first READY: the model is loaded; later ones are reloads
            self._ready = True
            if self._on_ready is not None:
                self._on_ready()
            self._back.send(("ready",))
        return True


class Snapshots:
    """A worker's metrics (its own registry, never served), sent to the router every
    :data:`SNAPSHOT_EVERY` seconds while the worker runs."""

    def __init__(self, daemon: Daemon, back: BackChannel) -> None:
        from streamsonic.metrics import MetricsServer  # noqa: PLC0415 - optional extra

        self.server = MetricsServer(daemon)
        self.back = back
        if daemon.engine is not None:
            daemon.engine.conductor.on_step.append(self.server.observe_step)
        self._handle = asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        self.back.send(("metrics", self.server.snapshot()))
        self._handle = asyncio.get_running_loop().call_later(SNAPSHOT_EVERY, self._send)

    def close(self) -> None:
        self._handle.cancel()


def _snapshots_wanted() -> bool:
    """Whether a worker can make metrics snapshots (the 'metrics' extra is installed)."""
    try:
        import prometheus_client  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def _read_setup(fd: int) -> Setup:
    """The first frame on ``fd``, read without reading past it."""
    def exactly(n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = os.read(fd, n - len(out))
            if not chunk:
                raise SourceError("the router closed the worker's pipe before its setup")
            out += chunk
        return bytes(out)

    setup = pickle.loads(exactly(_HEADER.unpack(exactly(_HEADER.size))[0]))
    if not isinstance(setup, Setup):
        raise SourceError(f"a worker's first frame must be its setup, not {type(setup)}")
    return setup


def worker_main() -> int:
    """A worker process (``python -m streamsonic.worker``): play what the router sends."""
    from streamsonic.daemon import Daemon, prompt_threads  # noqa: PLC0415
    from streamsonic.outputs import parse_output  # noqa: PLC0415

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # until the daemon handles it: no traceback
    setup = _read_setup(0)
    logs.set_tag(f"worker {setup.index + 1}/{setup.workers}: ")
    logs.setup_logging(setup.config.daemon.log_level)
    back = BackChannel(setup.back_fd)
    daemon = Daemon(setup.config, [parse_output(s) for s in setup.specs], False,
                    setup.config_path, setup.cli_overrides, fixed_outputs=setup.fixed_outputs,
                    routed=True)
    snapshots: list[Snapshots] = []

    def started() -> None:
        if _snapshots_wanted():
            snapshots.append(Snapshots(daemon, back))

    daemon.notifier = WorkerNotifier(back, started)
    daemon.open_input = lambda _config: PipeSource(0, back)

    async def run() -> int:
        await back.open()
        try:
            return await daemon.main()
        finally:
            for snapshot in snapshots:
                snapshot.close()
            back.close()

    try:
        with prompt_threads(), asyncio.Runner() as runner:  # (the router's: run_daemon)
            return runner.run(run())
    except StreamsonicError as err:
        print(logs.error_line(f"worker {setup.index + 1}: {err}"), file=sys.stderr)
        return err.exit_status


# -- the router's side -------------------------------------------------------------------------
@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    back: asyncio.StreamReader
    #: (stream, time, value, receipt, when the router read it) of samples not yet sent
    pending: list[tuple[str, float, float, int, float]] = field(default_factory=list)
    ready: bool = False
    samples: int = 0
    stopping: bool = False  # asked to stop (once: a second SIGTERM could come too late)

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig``; a stop signal at most once."""
        if self.process.returncode is not None:
            return
        if sig in (signal.SIGINT, signal.SIGTERM):
            if self.stopping:
                return
            self.stopping = True
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)

    @property
    def stdin(self) -> asyncio.StreamWriter:
        assert self.process.stdin is not None
        return self.process.stdin


class Router:
    """The daemon's process when ``daemon.workers > 1`` (see the module)."""

    def __init__(self, config: Config, specs: list[OutputSpec], config_path: str | None,
                 cli_overrides: dict[str, object], fixed_outputs: bool,
                 open_input: Callable[[Config], Source] | None) -> None:
        self.config = config
        self.started = config  # (what a reload cannot change runs as it says)
        self.specs = specs
        self.config_path = config_path
        self.cli_overrides = cli_overrides
        self.fixed_outputs = fixed_outputs
        self.open_input = open_input
        self.notifier = Notifier()
        self.workers: list[_Worker] = []
        self.owed: dict[int, Receipt] = {}  # receipt id -> the source's delivery
        self._next_receipt = 1
        self._index: dict[str, int] = {}
        self._listeners: list[asyncio.Task[None]] = []
        self._flush_due = False
        self._oldest = 0.0  # when the oldest sample not yet sent was routed
        self._stop = asyncio.Event()
        self.stop_reason: str | None = None
        # Workers that ended while the input went on and no stop was asked for (a signal
        # to the worker alone, a crash): their streams went unplayed, a failure whatever
        # their status; and the workers whose end has been logged (once each).
        self._ended_early: set[int] = set()
        self._reported: set[int] = set()
        self._terminated: set[int] = set()  # workers the daemon sent SIGTERM to
        self.routed = 0
        self._arrival: Arrival | None = None  # the source, when it knows when items came
        # what the metrics endpoint reads (streamsonic.metrics.Observed)
        self.engine: Engine | None = None
        self.scheduler: Scheduler | None = None
        self.source: Source | None = None
        self.reloads: Counter[str] = Counter()
        self.reload_error: str | None = None
        self.metrics: MetricsServer | None = None
        self.snapshots: dict[int, list[Any]] = {}  # worker index -> its latest metrics
        self._reloader = Reloader(self._reload_now)  # SIGHUP's reloads, one at a time

    # -- start and stop ------------------------------------------------------------------
    async def main(self) -> int:
        from streamsonic.sources import open_source  # noqa: PLC0415

        check_workers(self.config, self.specs)
        source = (self.open_input(self.config) if self.open_input is not None
                  else open_source(self.config))
        self.source = source
        loop = asyncio.get_running_loop()
        self.notifier.status(f"starting {self.config.daemon.workers} workers")
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._reloader.request)
        try:
            await self._start()
            watch = [asyncio.create_task(w.process.wait()) for w in self.workers]
            ready = asyncio.create_task(self._until_ready())
            stopper = asyncio.create_task(self._stop.wait())
            await asyncio.wait({ready, stopper, *watch}, return_when=asyncio.FIRST_COMPLETED)
            if ready.done() and not self._stop.is_set() and not any(t.done() for t in watch):
                status = await self._serve(source, watch)
            else:
                ready.cancel()
                status = 0
            stopper.cancel()
            return self._status(await self._finish(), status)
        finally:
            await self._reloader.cancel()  # (a reload trying a broker: given up)
            self.notifier.stopping("stopping")
            # While the workers stop: a stop signal goes on to them (they take it as the
            # first), SIGHUP changes nothing; the loop's close gives the signals back.
            # (Without handlers, a second SIGTERM ended the router at once, -15.)
            loop.add_signal_handler(signal.SIGHUP, _late_signal, "SIGHUP")
            if self.workers:  # after a failure too: each stops cleanly, then what is left dies
                await self._finish()
            await self._kill_all()
            if self.metrics is not None:
                self.metrics.close()
            log.info("stopped: %d samples to %d workers (%s); input %s", self.routed,
                     len(self.workers), ", ".join(str(w.samples) for w in self.workers),
                     ", ".join(f"{k}={v}" for k, v in sorted(source.stats.items())) or "-")

    async def _start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_ENV}
        n = self.config.daemon.workers
        for index in range(n):
            back_r, back_w = os.pipe()
            try:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "streamsonic.worker", stdin=subprocess.PIPE,
                    pass_fds=(back_w,), env=env, process_group=0)
            finally:
                os.close(back_w)
            reader = asyncio.StreamReader(limit=1 << 24)
            loop = asyncio.get_running_loop()
            await loop.connect_read_pipe(functools.partial(asyncio.StreamReaderProtocol, reader),
                                         os.fdopen(back_r, "rb", 0))
            worker = _Worker(index, process, reader)
            self.workers.append(worker)
            config, overrides = self.config, dict(self.cli_overrides)
            overrides["metrics.listen"] = ""  # the router serves the workers' metrics
            config = replace(config, metrics=replace(config.metrics, listen=""))
            if config.mqtt.client_id:  # one MQTT connection per worker: their ids apart
                client_id = f"{config.mqtt.client_id}-w{index + 1}"
                overrides["mqtt.client_id"] = client_id  # kept by the worker's reloads
                config = replace(config, mqtt=replace(config.mqtt, client_id=client_id))
            worker.stdin.write(frame(Setup(index, n, config, [str(s) for s in self.specs],
                                           self.config_path, overrides, self.fixed_outputs,
                                           back_w)))
            self._listeners.append(asyncio.create_task(self._listen(worker)))

    async def _until_ready(self) -> None:
        while not all(w.ready for w in self.workers):
            await asyncio.sleep(0.02)

    async def _listen(self, worker: _Worker) -> None:
        """The worker's messages: ready, and the receipts it settled."""
        while True:
            message = await read_frame(worker.back)
            if message is None:
                return
            if message[0] == "ready":
                worker.ready = True
            elif message[0] == "metrics":
                self.snapshots[worker.index] = message[1]
            elif message[0] == "settled":
                for receipt in message[1]:
                    owed = self.owed.pop(receipt, None)
                    if owed is not None:
                        owed.done()

    async def _serve(self, source: Source, watch: list[asyncio.Task[int]]) -> int:
        """Route the input until it ends (then let the workers play out) or a stop."""
        holding = source if isinstance(source, Holding) else None
        self._arrival = source if isinstance(source, Arrival) else None
        self._serve_metrics(self.config.metrics.listen)
        self.notifier.ready(self.status_text())
        log.info("ready: %d workers, outputs %s", len(self.workers),
                 shown(self.specs))
        housekeeping = asyncio.create_task(self._housekeeping())
        stopper = asyncio.create_task(self._stop.wait())
        try:
            async with source:
                route = asyncio.create_task(self._route(source, holding))
                done, _ = await asyncio.wait({route, stopper, *watch},
                                             return_when=asyncio.FIRST_COMPLETED)
                if route in done:
                    route.result()  # a source failure is raised
                    log.info("input ended; the workers play out what waits")
                    self._flush()
                    for worker in self.workers:
                        worker.stdin.close()
                    await self._wait_workers(watch, stopper)
                else:
                    if not self._stop.is_set():
                        self._ended_early.update(w.index for w, task in
                                                 zip(self.workers, watch, strict=True)
                                                 if task.done())
                    route.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await route
                # receipts settle as the workers end: the source stays open meanwhile
                await self._finish()
        finally:
            housekeeping.cancel()
            stopper.cancel()
        return 0

    async def _wait_workers(self, watch: list[asyncio.Task[int]],
                            stopper: asyncio.Task[bool]) -> None:
        """Until every worker has ended, one has failed, or a stop is asked for."""
        while not self._stop.is_set():
            running = [t for t in watch if not t.done()]
            if not running or any(t.result() != 0 for t in watch if t.done()):
                return
            await asyncio.wait({stopper, *running}, return_when=asyncio.FIRST_COMPLETED)

    def _failed(self, index: int, code: int | None) -> bool:
        """Whether worker ``index``, which ended with ``code`` (None: still running), failed:
        the one judgement behind both the exit status (:meth:`_status`) and the error lines
        (:meth:`_finish`), so that they cannot disagree. A worker failed when it ended on
        its own while the input went on and no stop was asked for (its streams went
        unplayed), whatever its status; else when it ended with a status other than 0, or
        by a signal other than the stop (SIGTERM, SIGINT) that the daemon passed on or sent
        it (a SIGTERM of someone else's, e.g. while the workers start, is a failure)."""
        if index in self._ended_early and self.stop_reason is None:
            return True
        if code in (0, None):
            return False
        stopped = index in self._terminated or self.stop_reason is not None
        return not (stopped and code in (-signal.SIGTERM, -signal.SIGINT))

    def _status(self, statuses: list[int | None], status: int) -> int:
        """The daemon's exit status: a stop by SIGINT 130, else the first failed worker's
        (:meth:`_failed`; 70 where it has no status of its own: killed by a signal, or a
        status 0 while the input went on)."""
        if self.stop_reason == "SIGINT":
            return EXIT_INTERRUPTED
        failed = [code for index, code in enumerate(statuses) if self._failed(index, code)]
        if failed:
            code = failed[0]
            return code if code is not None and code > 0 else EXIT_WORKER_KILLED
        return status

    async def _finish(self) -> list[int | None]:
        """Stop every worker still running (SIGTERM), wait for all of them; their statuses."""
        if any(w.process.returncode is None for w in self.workers):
            for worker in self.workers:
                if worker.process.returncode is None:
                    self._terminated.add(worker.index)
                worker.send(signal.SIGTERM)
            waits = [asyncio.create_task(w.process.wait()) for w in self.workers]
            await asyncio.wait(waits, timeout=STOP_GRACE)
        statuses = [w.process.returncode for w in self.workers]
        for worker, code in zip(self.workers, statuses, strict=True):
            if worker.index in self._reported or not self._failed(worker.index, code):
                continue
            self._reported.add(worker.index)  # (_finish runs more than once on the way out)
            if code is not None and code < 0:
                how = f"was ended by {signal.Signals(-code).name}"
            else:
                how = f"exited with status {code}"
            if self.stop_reason is not None:
                when = " as the daemon stopped"
            elif worker.index in self._ended_early:
                when = (" while the input went on (its streams were no longer played); the "
                        "daemon stopped the others")
            else:
                when = "; the daemon stopped the others"
            log.error("worker %d %s%s", worker.index + 1, how, when)
        return statuses

    async def _kill_all(self) -> None:
        for worker in self.workers:
            if worker.process.returncode is None:
                log.error("worker %d did not stop within %g s: killed", worker.index + 1,
                          STOP_GRACE)
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()

    # -- routing -------------------------------------------------------------------------
    def worker_for(self, stream: str) -> _Worker:
        index = self._index.get(stream)
        if index is None:
            if len(self._index) >= INDEX_CACHE:
                self._index.clear()
            index = self._index[stream] = worker_of(stream, len(self.workers))
        return self.workers[index]

    async def _route(self, source: Source, holding: Holding | None) -> None:
        loop = asyncio.get_running_loop()
        turn = loop.time() + YIELD_EVERY
        async for item in source:
            if isinstance(item, NoteEvent):  # only --play-notes yields notes: not routed
                continue
            receipt = 0
            if holding is not None:
                owed = holding.hold()
                if owed is not None:
                    receipt = self._next_receipt
                    self._next_receipt += 1
                    self.owed[receipt] = owed
            worker = self.worker_for(item.stream)
            now = loop.time()
            # when it reached the daemon: an MQTT or NATS source knows it (its queue's wait)
            arrived = self._arrival.arrived() if self._arrival is not None else None
            worker.pending.append((item.stream, item.time, item.value, receipt,
                                   now if arrived is None else min(arrived, now)))
            worker.samples += 1
            self.routed += 1
            if len(worker.pending) >= FRAME_ITEMS:
                self._send(worker)
            elif not self._flush_due:
                self._flush_due = True
                self._oldest = now
                loop.call_soon(self._flush)
            elif now - self._oldest >= FRAME_AGE:
                self._flush()
            if worker.stdin.transport.get_write_buffer_size() > HIGH_WATER:
                try:  # the worker is behind: read no more until it catches up
                    await worker.stdin.drain()
                except ConnectionError:  # it is gone: its watch ends the run
                    return
            if now >= turn:
                await asyncio.sleep(0)
                turn = loop.time() + YIELD_EVERY

    def _send(self, worker: _Worker) -> None:
        items, worker.pending = worker.pending, []
        if items and not worker.stdin.is_closing():
            worker.stdin.write(frame(items))

    def _flush(self) -> None:
        self._flush_due = False
        for worker in self.workers:
            self._send(worker)

    # -- signals, systemd ----------------------------------------------------------------
    def _signal(self, sig: signal.Signals) -> None:
        if self.stop_reason is None:
            self.stop_reason = sig.name
        for worker in self.workers:
            worker.send(sig)
        self._stop.set()

    async def _reload_now(self) -> None:
        """The router reads the config file and checks its part (the workers' outputs,
        a new broker's login: ``check_reconfigure``); if that fails, nothing changes
        anywhere and the workers are not asked to reload. Else every worker reloads its
        config file, and the router applies the source's part (an MQTT source's topics and
        broker) and ``metrics.listen``. (One pass: SIGHUP runs it through a
        :class:`streamsonic.reloading.Reloader`, one at a time.)"""
        self.notifier.reloading("reloading the configuration")
        try:
            new = load_config(find_config_file(self.config_path), self.cli_overrides)
            check_workers(new, self.specs)
            source = self.source
            if isinstance(source, Connecting):  # a new broker login is tried first
                await source.check_reconfigure(new)
            old_listen = self.config.metrics.listen
            if new.metrics.listen != old_listen:
                self._serve_metrics(new.metrics.listen)
            from streamsonic.daemon import changed_keys  # noqa: PLC0415 - as worker_main does

            # (said here, once: the workers leave these out of their own reload lines)
            restart = [k for k in changed_keys(self.started, new) if k == "daemon.workers"
                       or (k.startswith("input.") and not isinstance(source, Connecting))]
            if isinstance(source, Connecting):  # its topics, payloads, broker
                try:  # (checks first: raises having changed nothing)
                    restart += source.reconfigure(new)
                except BaseException:
                    with contextlib.suppress(StreamsonicError):
                        self._serve_metrics(old_listen)
                    raise
            for worker in self.workers:
                worker.send(signal.SIGHUP)
            if restart:
                log.warning("reload: these settings changed but need a restart to take "
                            "effect (systemctl restart streamsonic): %s", "; ".join(restart))
            own = self._own_keys(new, restart)
            self.config = new
        except StreamsonicError as err:
            self.reloads["failed"] += 1
            self.reload_error = " ".join(str(err).split())
            log.error("reload failed, keeping the running configuration: %s", err)
        else:
            self.reloads["ok"] += 1
            self.reload_error = None
            running = sum(w.process.returncode is None for w in self.workers)
            log.info("reload taken: asked the %d workers to reload (each says what it "
                     "applied); the daemon itself applied %s", running,
                     ", ".join(own) if own else "nothing (nothing of its own changed)")
        finally:
            self.notifier.ready(self.status_text())

    def _own_keys(self, new: Config, restart: list[str]) -> list[str]:
        """The changed settings that the router's own process applies on reload: its
        source's (mqtt.*) and metrics.listen (not those ``restart`` names)."""
        from streamsonic.daemon import changed_keys  # noqa: PLC0415 - as worker_main does

        unapplied = {k.split(" ", 1)[0] for k in restart}
        return [k for k in changed_keys(self.config, new) if k not in unapplied
                and (k == "metrics.listen"
                     or (k.startswith("mqtt.") and isinstance(self.source, Connecting)))]

    def _serve_metrics(self, listen: str) -> None:
        """Serve the merged metrics on ``listen`` ("": stop); made on first use."""
        if self.metrics is None:
            if not listen:
                return
            from streamsonic.metrics import MetricsServer  # noqa: PLC0415 - optional extra

            self.metrics = MetricsServer(self, workers=lambda: list(self.snapshots.values()))
        self.metrics.start(listen)

    # -- what the metrics endpoint reads -------------------------------------------------
    @property
    def source_waiting_for(self) -> str | None:
        """What the source waits for (the broker), or None."""
        return sources.waiting_for(self.source)

    @property
    def mqtt_connected(self) -> bool | None:
        """Whether the MQTT source is connected; None for another source."""
        return sources.connected(self.source)

    def status_text(self) -> str:
        running = sum(w.process.returncode is None for w in self.workers)
        waiting = self.source_waiting_for
        text = (f"waiting for {waiting}" if waiting else
                f"playing through {running} of {len(self.workers)} workers to "
                f"{shown(self.specs) or 'no output'}")
        if self.reload_error:
            text = (f"reload failed: {self.reload_error} (running the previous "
                    f"configuration); {text}")
        return text

    async def _housekeeping(self) -> None:
        interval = watchdog_interval()
        ping = interval / 2 if interval else 1.0
        while True:
            await asyncio.sleep(min(ping, 1.0))
            self.notifier.watchdog()
            self.notifier.status(self.status_text())


def run_router(config: Config, specs: list[OutputSpec], config_path: str | None,
               cli_overrides: dict[str, object], fixed_outputs: bool,
               open_input: Callable[[Config], Source] | None) -> int:
    """Run the daemon as a router over ``daemon.workers`` worker processes."""
    router = Router(config, specs, config_path, cli_overrides, fixed_outputs, open_input)
    with asyncio.Runner() as runner:
        return runner.run(router.main())
