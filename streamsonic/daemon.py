"""The daemon: open outputs, load the model, run the engine, stop cleanly.

Signals become explicit requests handled in one place: SIGINT and SIGTERM stop (every
sounding note is released on every output, files are written), SIGHUP reloads the config
file without losing any stream's state (see :meth:`Daemon._reload_now` for what a reload
applies). Under systemd it reports READY/RELOADING/STOPPING, keeps STATUS= current (playing
N streams, waiting for the broker, reload failed) and pets the watchdog
(``streamsonic.sdnotify``); with ``[metrics] listen`` it serves Prometheus metrics
(``streamsonic.metrics``).

Under a service manager a daemon with nothing to read (no MQTT URL, stdin /dev/null or
closed) refuses to start (exit 78) instead of reporting READY and ending at once: the source
is made before the model loads, and ``streamsonic.sources.open_source`` checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from streamsonic import logs, sources
from streamsonic.config import Config, find_config_file, load_config, to_dict
from streamsonic.errors import (
    EXIT_INTERRUPTED,
    OutputError,
    StreamsonicError,
)
from streamsonic.events import Arrival, Holding
from streamsonic.extras import require_extra
from streamsonic.mqtt.urls import check_password_file
from streamsonic.outputs import (
    LIVE_FACTORIES,
    OutputSpec,
    check_distinct_files,
    check_stdout_shared,
    open_output,
    parse_output,
    shown,
)
from streamsonic.reloading import Reloader
from streamsonic.sdnotify import Notifier, watchdog_interval
from streamsonic.sinks.base import Sink
from streamsonic.sources import Connecting
from streamsonic.sources.nats_url import check_password_file as check_nats_password_file

if TYPE_CHECKING:  # the runtime imports are deferred: they load torch
    from streamsonic.conductor import Stepper
    from streamsonic.engine import Engine
    from streamsonic.events import Source
    from streamsonic.metrics import MetricsServer
    from streamsonic.scheduler import Scheduler

log = logging.getLogger(__name__)

#: Seconds a thread that wants the GIL waits for the running one to hand it over (Python's
#: default is 5 ms). The daemon's helper threads (paho's network threads, an audio
#: callback, MIDI) want it back after every system call while the engine computes; at
#: 5 ms a busy daemon's MQTT output with 20 notes in flight (mosquitto's default for MQTT
#: 5) dropped 1.0-10.5% of its notes at 1,000 streams (6 runs), at 1 ms none in 4 of 5
#: runs (6.0% in one), with the engine's CPU per note within noise (bench/mqtt_output.py,
#: bench/capacity.py; README, MQTT).
SWITCH_INTERVAL = 0.001


@contextlib.contextmanager
def prompt_threads() -> Iterator[None]:
    """While inside: the process hands the GIL to a waiting thread within SWITCH_INTERVAL
    (the old interval is given back after, for a caller in the same process)."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


#: Settings a reload cannot apply to a running daemon (the model and its device are loaded
#: once; every stream's state belongs to them).
RESTART_KEYS = frozenset({"model.weights", "model.temporal_weights", "model.device",
                          "model.rhythm", "daemon.warn_interval", "daemon.workers"})
#: Settings applied on reload by the daemon itself or read where they are used.
LIVE_KEYS = frozenset({"output.on_device_loss", "daemon.log_level", "daemon.stats_interval",
                       "metrics.listen", "normalize.render_scope", "normalize.render_mode"})
#: Settings the conductor applies (``Conductor.configure``): prefixes of dotted keys.
CONDUCTOR_PREFIXES = ("music.", "normalize.", "clock.", "accent.", "streams.", "voices",
                      "model.influence", "model.temperature", "model.kernel_width",
                      "model.seed", "model.rhythm_temperature")
#: mqtt.* settings that the mqtt: output is opened with.
MQTT_OUTPUT_KEYS = ("mqtt.url", "mqtt.qos", "mqtt.client_id", "mqtt.protocol", "mqtt.username",
                    "mqtt.password", "mqtt.password_file", "mqtt.ca_file", "mqtt.cert_file",
                    "mqtt.key_file", "mqtt.keepalive")
#: A SIGINT, SIGTERM or SIGHUP that the event loop has not heard of this many seconds after
#: Python's handler saw it was lost on the way (its wake-up pipe was full): the daemon acts
#: on it then (a stop, a reload).
SIGNAL_LOST = 0.5
_FILE_KEYS = ("output.flush_interval", "output.rotate_seconds", "output.rotate_bytes")
#: Output kind -> the settings (prefixes of dotted keys) it is opened with: on reload an
#: output whose settings changed is opened anew (the new one first, then the old closed).
OUTPUT_SETTINGS: dict[str, tuple[str, ...]] = {
    "events": (),
    "file": _FILE_KEYS,
    "wav": (*_FILE_KEYS, "audio."),
    "audio": ("audio.", "midi.reconnect_interval"),
    "midi": ("midi.",),
    "midi-virtual": ("midi.",),
    "mqtt": MQTT_OUTPUT_KEYS,
}


def open_outputs(specs: list[OutputSpec], config: Config, live: bool = False) -> list[Sink]:
    """Open every output (``live``: for ``run``); if one fails, close those already open and
    re-raise."""
    sinks: list[Sink] = []
    try:
        for spec in specs:
            sinks.append(open_output(spec, config, live))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def run_daemon(
    config: Config,
    outputs: list[str] | None = None,
    play_notes: bool = False,
    config_path: str | None = None,
    cli_overrides: dict[str, object] | None = None,
    open_input: Callable[[Config], Source] | None = None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> int:
    """Run until the input ends (exit 0) or a signal stops it.

    ``open_input`` replaces the configured source (``run FILE``, ``--record``, ``replay``);
    ``loop_factory`` the event loop (``replay --fast``: a loop on virtual time).
    """
    specs = [parse_output(o) for o in (outputs or list(config.output.targets))]
    check_distinct_files(specs)
    check_stdout_shared(specs)
    if config.metrics.listen:  # before the model loads: a missing extra is one line at once
        require_extra("prometheus_client", "the metrics endpoint (metrics.listen)")
    # a password file that cannot be read: a configuration error (78) at once, not a failed
    # connection once the model has loaded
    check_password_file(config, [spec.kind for spec in specs])
    check_nats_password_file(config.nats)
    with prompt_threads():
        if config.daemon.workers > 1 and loop_factory is None and not play_notes:
            from streamsonic.workers import run_router  # noqa: PLC0415

            return run_router(config, specs, config_path, cli_overrides or {},
                              bool(outputs), open_input)
        early = StartupSignals()
        early.install()
        try:
            daemon = Daemon(config, specs, play_notes, config_path, cli_overrides or {},
                            fixed_outputs=bool(outputs))
            daemon.open_input = open_input
            daemon.early = early
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                return runner.run(daemon.main())
        except StoppedDuringStartup as stop:
            log.info("%s while starting: stopped before playing anything", stop.signal_name)
            return 0
        finally:
            early.uninstall()


class StoppedDuringStartup(BaseException):
    """SIGTERM while the daemon loads (the model, its compiled kernels; nothing opened
    yet): it ends there (not an Exception: no ``except Exception`` on the way keeps it)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class StartupSignals:
    """The stop and reload signals from the start until the daemon's loop handles them.

    Without handlers, a SIGTERM or SIGHUP in that time (up to a second warm, some 20 s
    while numba compiles on a first start) ended the process by the signal's default
    action: exit status -15 or -1 (``systemctl stop`` or a reload as the service starts).
    While ``loading`` (nothing opened yet) SIGTERM ends the start-up at the next step of
    it (:meth:`check`: after the imports, the model, the kernels' warm-up; exit 0; the
    handler itself raises nothing, which an import in progress could swallow) and SIGINT
    interrupts it as it does any command (exit 130); after that (the outputs opening) a
    stop is kept and answered as soon as the daemon runs, the way it answers one then
    (every output written, exit 0). A SIGHUP is kept and answered by a reload once the
    daemon runs (the configuration may have changed after it was read).
    """

    _SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.loading = True
        self.stop: str | None = None
        self.reload = False
        self._before: dict[int, Any] = {}

    def install(self) -> None:
        """Handle the signals from now on (the main thread only: elsewhere, as before)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self._SIGNALS:
            self._before[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        """The handlers from before :meth:`install` again, where this one is still set
        (the loop's replaced it while it ran, and gave the defaults back as it closed)."""
        for sig, before in self._before.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, before)
        self._before.clear()

    def _handle(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            self.reload = True
        elif signum == signal.SIGINT and self.loading:
            raise KeyboardInterrupt
        else:
            self.stop = self.stop or name

    def check(self) -> None:
        """While loading: end the start-up here if a stop came (nothing is open yet)."""
        if self.loading and self.stop is not None:
            raise StoppedDuringStartup(self.stop)


def changed_keys(old: Config, new: Config) -> list[str]:
    """The dotted keys whose values differ (``voices`` as a whole)."""
    before, after = to_dict(old), to_dict(new)
    changed: list[str] = []
    for section, values in after.items():
        if not isinstance(values, dict):
            if values != before.get(section):
                changed.append(section)
            continue
        changed += [f"{section}.{key}" for key, value in values.items()
                    if value != before[section].get(key)]
    return changed


def _matches(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in prefixes)


class Daemon:
    """One run of the live pipeline."""

    #: Opens the input instead of the configured source, when set (see ``run_daemon``).
    open_input: Callable[[Config], Source] | None = None
    #: The signals that came while it started (see ``run_daemon``), when set.
    early: StartupSignals | None = None

    def __init__(
        self,
        config: Config,
        specs: list[OutputSpec],
        play_notes: bool,
        config_path: str | None,
        cli_overrides: dict[str, object],
        fixed_outputs: bool = False,
        routed: bool = False,
    ) -> None:
        self.config = config
        #: The configuration the daemon started with: what a reload cannot change (the
        #: model, the input's parser) still runs as it says.
        self.started = config
        self.specs = specs
        self.play_notes = play_notes
        self.config_path = config_path
        self.cli_overrides = cli_overrides
        self.fixed_outputs = fixed_outputs  # --output given: output.targets does not apply
        # A worker of daemon.workers: the router reads the input and names, once, what of
        # daemon.workers and input.* a reload cannot change (each worker said it too).
        self.routed = routed
        self.notifier = Notifier()
        self.stop_reason: str | None = None
        self._stop = asyncio.Event()
        # what the metrics and STATUS= read (set up in main)
        self.engine: Engine | None = None
        self.source: Source | None = None
        self.scheduler: Scheduler | None = None
        self.outputs: dict[str, Sink] = {}  # by spec, in spec order
        self.metrics: MetricsServer | None = None
        self.reloads: Counter[str] = Counter()
        self.reload_error: str | None = None
        self._status_sent: str | None = None
        self._unheard: dict[str, float] = {}  # signal -> when it came (_signal_seen)
        self._reloader = Reloader(self._reload_now)  # SIGHUP's reloads, one at a time

    # -- what is shown (STATUS=, metrics) ----------------------------------------------------
    @property
    def source_waiting_for(self) -> str | None:
        """What the source waits for (the broker), or None."""
        return sources.waiting_for(self.source)

    @property
    def mqtt_connected(self) -> bool | None:
        """Whether the MQTT source is connected; None for another source."""
        return sources.connected(self.source)

    def status_text(self) -> str:
        """The one line systemd shows (``STATUS=``)."""
        parts: list[str] = []
        if self.reload_error:
            parts.append(f"reload failed: {self.reload_error} (running the previous "
                         "configuration)")
        waiting = self.source_waiting_for
        if waiting:
            parts.append(f"waiting for {waiting}")
        else:
            streams = len(self.engine.conductor.streams) if self.engine else 0
            parts.append(f"playing {streams} stream{'' if streams == 1 else 's'} to "
                         f"{shown(self.outputs) or 'no output'}")
        scheduler = self.scheduler
        if scheduler is not None:
            parts += [f"output {sink.name} lost: {sink.lost}"
                      for sink in scheduler.sinks if sink.lost]
            live = {sink.name for sink in scheduler.sinks}
            parts += [f"output {shown([name])} failed" for name, sink in self.outputs.items()
                      if sink.name not in live]
        return "; ".join(parts)

    def _update_status(self, force: bool = False) -> None:
        text = self.status_text()
        if force or text != self._status_sent:
            self._status_sent = text
            self.notifier.status(text)

    def request_stop(self, reason: str) -> None:
        """Ask the daemon to stop (from a signal handler or a failure)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()

    # -- the run -----------------------------------------------------------------------------
    async def main(self) -> int:
        """Set up, run, and always tear down."""
        from streamsonic.sources import open_source  # noqa: PLC0415

        # The source first (it connects only when entered, below): one that cannot work,
        # such as stdin /dev/null under systemd, fails before the model loads.
        source = (self.open_input(self.config) if self.open_input is not None
                  else open_source(self.config, play_notes=self.play_notes))
        self.notifier.status("loading the model")
        early = self.early or StartupSignals()
        from streamsonic.conductor import Conductor, warm_up  # noqa: PLC0415 - torch import
        from streamsonic.engine import Engine  # noqa: PLC0415
        from streamsonic.model.loader import load_pitch_model  # noqa: PLC0415
        from streamsonic.scheduler import Scheduler  # noqa: PLC0415

        early.check()

        loop = asyncio.get_running_loop()
        use_rhythm = self.config.model.rhythm == "model" and not self.play_notes
        stepper: Stepper
        if use_rhythm:
            from streamsonic.rhythm import RhythmDriver, load_temporal_model  # noqa: PLC0415

            stepper, encoding = load_temporal_model(self.config)
        else:
            stepper, encoding, _ = load_pitch_model(self.config.model)
        early.check()
        warm_up(self.config, stepper, encoding)  # before READY: no first note comes late
        conductor = Conductor(self.config, stepper, encoding)
        early.check()
        early.loading = False  # from here a stop is answered once the daemon runs
        try:
            self._start_metrics(self.config.metrics.listen, conductor)
            sinks = open_outputs(self.specs, self.config, live=True)
        except BaseException:
            self._close_metrics()
            raise
        self.outputs = {str(spec): sink for spec, sink in zip(self.specs, sinks, strict=True)}
        scheduler = Scheduler(loop, sinks, earcon=conductor.earcon)
        rhythm = RhythmDriver(conductor, scheduler, loop) if use_rhythm else None
        engine = Engine(conductor, scheduler, loop, rhythm=rhythm)
        self.engine, self.source, self.scheduler = engine, source, scheduler
        self._install_signals(loop)
        if early.stop is not None:
            self.request_stop(early.stop)
        if early.reload:
            loop.call_soon(self._reload)
        status = 0
        # What start-up made (numba, the model, the config: some 100,000 objects) stays for
        # the whole run: out of the collector's way, or each full collection walks all of
        # it (36 ms measured), a pause every note waiting then shares.
        gc.collect()
        gc.freeze()
        try:
            async with source:
                self.notifier.ready(self.status_text())
                self._status_sent = self.status_text()
                log.info("ready: outputs %s, %s clock", shown(self.outputs),
                         self.config.clock.mode)
                status = await self._run(engine, source, scheduler)
        except StreamsonicError:
            raise
        finally:
            gc.unfreeze()
            await self._reloader.cancel()  # (a reload trying a broker: given up)
            self.notifier.stopping("stopping")
            engine.cancel()
            scheduler.close()
            self._calm_signals(loop)
            self._close_metrics()
            log.info("stopped: %d samples, %d notes; streams %s; input %s", engine.samples,
                     engine.played, _fmt_stats(engine.stats), _fmt_stats(source.stats))
        scheduler.check_written()  # a file that could not be written is a failed run
        return status

    async def _run(self, engine: Engine, source: Source, scheduler: Scheduler) -> int:
        holding = source if isinstance(source, Holding) else None
        arrival = source if isinstance(source, Arrival) else None
        consume = asyncio.create_task(engine.consume(aiter(source), holding, arrival))
        stopper = asyncio.create_task(self._stop.wait())
        housekeeping = asyncio.create_task(self._housekeeping(engine, source, scheduler))
        signals = asyncio.create_task(self._watch_signals())
        try:
            done, _ = await asyncio.wait({consume, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if consume in done:
                consume.result()  # re-raise a source failure
                log.info("input ended; waiting for the last notes")
                drain = asyncio.create_task(engine.drain())
                await asyncio.wait({drain, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if drain.done():
                    drain.result()
                    # what the outputs hold reaches their readers however slow they are
                    # (a pager, a consumer that takes its time): a stop cuts the wait short
                    settle = asyncio.create_task(scheduler.settle())
                    await asyncio.wait({settle, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    if not settle.done():
                        settle.cancel()
                else:
                    drain.cancel()
        finally:
            for task in (consume, stopper, housekeeping, signals):
                task.cancel()
            for task in (consume, housekeeping, signals):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.stop_reason is not None:
            # while the source is open: what the outputs hold goes out if its reader takes
            # it now (and what it owed is acknowledged); the rest is given up, still owed.
            # Nothing new is scheduled meanwhile (what waits to play is dropped, counted).
            engine.cancel()
            await scheduler.settle_stopping()
        if self.stop_reason == "SIGINT":
            return EXIT_INTERRUPTED
        if self.stop_reason == "outputs failed":
            scheduler.check_written()  # a file or stdout that could not be written: 74
            raise OutputError("every output failed; see the errors above")
        if self.stop_reason and self.stop_reason.startswith("device lost: "):
            raise OutputError(f"output {self.stop_reason[13:]}; exiting, as "
                              "output.on_device_loss = \"exit\" asks")
        return 0

    async def _housekeeping(self, engine: Engine, source: Source, scheduler: Scheduler) -> None:
        """Watchdog pings, STATUS= kept current, idle streams evicted, periodic stats, and
        stopping when every output failed."""
        interval = watchdog_interval()
        ping = interval / 2 if interval else 1.0
        # The stats line follows the wall clock (the loop's may be replay --fast's virtual
        # one: a 10-hour recording replayed in a minute gave 600 lines).
        stats_every = self.config.daemon.stats_interval
        next_stats = time.monotonic() + stats_every if stats_every > 0 else float("inf")
        while True:
            await asyncio.sleep(min(ping, 1.0))
            self.notifier.watchdog()
            engine.sweep()
            scheduler.tick()  # file outputs flush, rotate, render audio up to now
            if scheduler.failed and not scheduler.sinks:
                self.request_stop("outputs failed")
            if self.config.output.on_device_loss == "exit" and self.stop_reason is None:
                gone = [f"{sink.name}: {sink.lost}" for sink in scheduler.sinks if sink.lost]
                if gone:  # output.on_device_loss = "exit": let a supervisor restart us
                    self.request_stop("device lost: " + "; ".join(gone))
            self._update_status()
            if self.config.daemon.stats_interval != stats_every:  # a reload changed it
                stats_every = self.config.daemon.stats_interval
                next_stats = (time.monotonic() + stats_every if stats_every > 0
                              else float("inf"))
            now = time.monotonic()
            if now >= next_stats:
                next_stats += stats_every
                if next_stats <= now:  # (a long pause: no burst of lines to catch up)
                    next_stats = now + stats_every
                log.info("stats: %d samples, %d notes, %d streams, %d waiting; streams %s; "
                         "input %s", engine.samples, engine.played,
                         len(engine.conductor.streams), engine.waiting,
                         _fmt_stats(engine.stats), _fmt_stats(source.stats))

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        # The loop learns of a signal from a byte that the signal writes to its self-pipe,
        # and a full pipe loses it (every call_soon_threadsafe writes one too; a few
        # hundred fill it while the loop is busy). So Python's own handler, which the loop
        # leaves a no-op, records each one as well, the loop's handler takes the record
        # back, and _watch_signals acts on a record the loop has not heard of.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self._heard, sig.name)
            signal.signal(sig, self._signal_seen)

    def _heard(self, name: str) -> None:
        """The loop's handler of SIGINT and SIGTERM (a stop) and SIGHUP (a reload)."""
        self._unheard.pop(name, None)
        if name == "SIGHUP":
            self._reload()
        else:
            self.request_stop(name)

    def _signal_seen(self, signum: int, _frame: object) -> None:
        """(Python's handler of the same signals: in the main thread, between two
        bytecodes.) Remember when it came, until the loop hears of it."""
        self._unheard.setdefault(signal.Signals(signum).name, time.monotonic())

    async def _watch_signals(self) -> None:
        """A signal that the loop has not heard of SIGNAL_LOST seconds after it came (see
        :meth:`_install_signals`) is acted on then."""
        while True:
            await asyncio.sleep(SIGNAL_LOST / 2)
            now = time.monotonic()
            for name, when in list(self._unheard.items()):
                if now - when >= SIGNAL_LOST:
                    log.warning("%s came while the event loop's wake-up pipe was full; "
                                "acting on it now", name)
                    self._heard(name)

    def _calm_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        """While it exits, until its loop closes (which gives the signals back): SIGINT,
        SIGTERM and SIGHUP change nothing; it is already stopping. (With no handler, a
        second SIGTERM then ended the process at once, exit status -15, its last work
        undone: seen in CI, a test's stop coming as the daemon exited.)"""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self._late_signal, sig.name)

    @staticmethod
    def _late_signal(name: str) -> None:
        log.debug("%s while stopping: already stopping", name)

    # -- metrics -----------------------------------------------------------------------------
    def _start_metrics(self, listen: str, conductor: Any) -> None:
        """Serve metrics on ``listen`` ("" stops); the server is made on first use."""
        if self.metrics is None:
            if not listen:
                return
            from streamsonic.metrics import MetricsServer  # noqa: PLC0415 - optional extra

            self.metrics = MetricsServer(self)
            conductor.on_step.append(self.metrics.observe_step)
        self.metrics.start(listen)

    def _close_metrics(self) -> None:
        if self.metrics is not None:
            self.metrics.close()

    # -- reload ------------------------------------------------------------------------------
    def _reload(self) -> None:
        """SIGHUP: reload the configuration (:meth:`_reload_now`) in a task of its own
        (:class:`streamsonic.reloading.Reloader`), as trying a new broker's login takes a
        moment and the streams play on meanwhile."""
        self._reloader.request()

    async def _reload_now(self) -> None:
        """Re-read the config file and apply it, keeping every stream's state.

        Applied: the musical settings, normalization, clock, accents, voices and the stream
        table (``Conductor.configure``); the outputs (``output.targets`` unless ``--output``
        fixed them; an output whose own settings changed is opened anew: the new one first,
        then the old one closed, its notes released); the MQTT source's topics (subscribed
        and unsubscribed in place), payload decoding and backoff, and its broker settings
        (the connection is closed and made anew); ``metrics.listen``, ``daemon.log_level``
        and ``daemon.stats_interval``. What cannot be applied (the model, the input parser
        of stdin, a switch between stdin and MQTT) is named in one WARNING as needing a
        restart. Changed broker settings are tried before anything is applied
        (``check_reconfigure``): a broker that refuses the new login fails the reload, and
        the running connection stays.

        Whatever goes wrong, the running configuration stays, one error line says why,
        STATUS= and the metrics show the failure until a reload succeeds, and READY=1
        follows RELOADING=1 (systemd would otherwise wait for it forever).
        """
        self.notifier.reloading("reloading the configuration")
        try:
            new = load_config(find_config_file(self.config_path), self.cli_overrides)
            source = self.source
            if isinstance(source, Connecting):  # a new broker login is tried first
                await source.check_reconfigure(new)
            applied, restart = self._apply(new)
        except StreamsonicError as err:
            self._reload_failed(str(err))
        except Exception as err:  # a bug must not leave systemd waiting or kill the daemon
            self._reload_failed(f"{type(err).__name__}: {err}")
            log.debug("reload failure", exc_info=True)
        else:
            self.reloads["ok"] += 1
            self.reload_error = None
            if restart:
                log.warning("reload: these settings changed but need a restart to take "
                            "effect (systemctl restart streamsonic): %s", "; ".join(restart))
            log.info("reloaded configuration (%s)",
                     ", ".join(applied) if applied else "nothing changed")
        finally:
            self._status_sent = self.status_text()
            self.notifier.ready(self._status_sent)

    def _reload_failed(self, reason: str) -> None:
        self.reloads["failed"] += 1
        self.reload_error = " ".join(reason.split())
        log.error("reload failed, keeping the running configuration: %s", reason)

    def _apply(self, new: Config) -> tuple[list[str], list[str]]:
        """Apply ``new``: all of it or (on an error) none of it. Returns the keys applied
        and the settings that need a restart (each named, with why when not obvious)."""
        engine, scheduler = self.engine, self.scheduler
        assert engine is not None and scheduler is not None
        old = self.config
        changed = changed_keys(old, new)
        if not changed:
            return [], []
        # What needs a restart differs from what runs since the start, not from the last
        # file read (a file that named other weights, then the running ones again, was
        # warned about twice).
        started = self.started
        running = changed_keys(started, new)
        restart = [k for k in running if k in RESTART_KEYS]
        source = self.source
        network = isinstance(source, Connecting)
        if not network:  # stdin (or a command's own input): its parser is made once
            restart += [k for k in running if k.startswith("input.")]
        if "mqtt.url" in running and bool(started.mqtt.url) != bool(new.mqtt.url):
            restart.append("mqtt.url (switching between stdin and MQTT)")
        elif started.mqtt.url and not network:  # an MQTT source behind a wrapper (--record)
            restart += [f"{k} (the MQTT source)" for k in running
                        if k.startswith("mqtt.") and not _matches(k, MQTT_OUTPUT_KEYS)]
        if self.fixed_outputs and "output.targets" in running:
            restart.append("output.targets (--output on the command line decides the outputs)")
        routed = [k for k in restart if self.routed and (k == "daemon.workers"
                                                         or k.startswith("input."))]
        restart = [k for k in restart if k not in routed]  # (the router says so)
        specs, opened, closing, retuned = self._open_changed_outputs(new, changed)
        try:
            try:
                engine.conductor.configure(new)
                scheduler.earcon = engine.conductor.earcon
                self._start_metrics(new.metrics.listen, engine.conductor)
                if isinstance(source, Connecting):  # checks first: raises having changed nothing
                    restart += source.reconfigure(new)
            except BaseException:
                engine.conductor.configure(old)  # undo a partial change
                scheduler.earcon = engine.conductor.earcon
                with contextlib.suppress(StreamsonicError):
                    self._start_metrics(old.metrics.listen, engine.conductor)
                raise
        except BaseException:
            for sink in opened.values():
                sink.abandon()  # a file output has written and renamed nothing yet
            raise
        # Nothing can fail from here on: the new outputs play, the old ones are closed. A
        # file output is started after the one it replaces is closed (that one's file is
        # complete, under its name, before the new one keeps it aside).
        files = {key for key, spec in zip(map(str, specs), specs, strict=True)
                 if spec.kind in LIVE_FACTORIES}
        for key, sink in opened.items():
            if key not in files:
                scheduler.add_sink(sink)
        for sink in closing:
            scheduler.remove_sink(sink)
        for sink in retuned:
            sink.retune(new.output)
        if retuned:
            log.info("reload: %s take the new flush and rotation settings",
                     ", ".join(sink.name for sink in retuned))
        for key, sink in opened.items():
            if key in files:
                try:
                    sink.start()
                except StreamsonicError as err:  # the folder went away meanwhile, say
                    log.error("output %s could not be started (%s); the other outputs play "
                              "on, a reload tries it again", sink.name, err)
                    sink.abandon()
                    continue
                scheduler.add_sink(sink)
        self.outputs = {key: opened.get(key) or self.outputs[key] for key in map(str, specs)}
        self.specs = specs
        if new.daemon.log_level != old.daemon.log_level:
            logs.set_level(new.daemon.log_level)
        self.config = new
        unapplied = {k.split(" ", 1)[0] for k in restart} | set(routed) | {
            k for k in changed  # (back to what runs: nothing to apply either)
            if k in RESTART_KEYS or (not network and k.startswith("input."))}
        applied = [k for k in changed if k not in unapplied
                   and (_matches(k, CONDUCTOR_PREFIXES) or k in LIVE_KEYS
                        or k.startswith(("output.", "audio.", "midi.", "mqtt.", "input.")))]
        return applied, restart

    def _open_changed_outputs(self, new: Config, changed: list[str]) -> tuple[
            list[OutputSpec], dict[str, Sink], list[Sink], list[Sink]]:
        """The outputs of ``new``: (specs, the sinks opened for it by spec, the running
        sinks to close, the running file outputs that take new flush and rotation settings
        in place). An output is opened when it is new, when its own settings changed (a
        file output's flush and rotation settings aside: it keeps its file) or when it had
        failed; a file output is opened with its file held back (``defer``), to be started
        once the reload cannot fail. If one cannot be opened, those opened are abandoned
        (nothing written, nothing renamed) and the error is raised: the running outputs
        stay as they are."""
        scheduler = self.scheduler
        assert scheduler is not None
        if self.fixed_outputs:
            specs = list(self.specs)
        else:
            specs = [parse_output(o) for o in new.output.targets]
        live = {id(sink) for sink in scheduler.sinks}
        wanted: list[OutputSpec] = []
        retuned: list[Sink] = []
        for spec in specs:
            sink = self.outputs.get(str(spec))
            settings = OUTPUT_SETTINGS.get(spec.kind, ())
            touched = [k for k in changed if _matches(k, settings)]
            if sink is None or id(sink) not in live:
                wanted.append(spec)
            elif touched and spec.kind in LIVE_FACTORIES \
                    and all(_matches(k, _FILE_KEYS) for k in touched):
                retuned.append(sink)
            elif touched:
                wanted.append(spec)
        keys = {str(spec) for spec in specs}
        closing = [sink for key, sink in self.outputs.items()
                   if id(sink) in live and (key not in keys
                                            or key in {str(s) for s in wanted})]
        opened: dict[str, Sink] = {}
        try:
            for spec in wanted:
                opened[str(spec)] = open_output(spec, new, live=True, defer=True)
        except BaseException:
            for sink in opened.values():
                sink.abandon()
            raise
        if opened or closing:
            log.info("reload: opening %s; closing %s", shown(opened) or "no output",
                     ", ".join(sink.name for sink in closing) or "no output")
        return specs, opened, closing, retuned


def _fmt_stats(stats: dict[str, int]) -> str:
    if not stats:
        return "-"
    return ", ".join(f"{k}={v}" for k, v in sorted(stats.items()))

