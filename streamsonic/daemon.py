"""The daemon: open outputs, load the model, run the engine, stop cleanly.

Signals become explicit requests handled in one place: SIGINT and SIGTERM stop (every
sounding note is released on every output, files are written), SIGHUP reloads the config
file's musical settings without losing any stream's state. Under systemd it reports
READY/RELOADING/STOPPING and pets the watchdog (``streamsonic.sdnotify``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

from streamsonic.config import Config, find_config_file, load_config
from streamsonic.errors import EXIT_INTERRUPTED, OutputError, StreamsonicError
from streamsonic.events import Holding
from streamsonic.outputs import OutputSpec, open_output, parse_output
from streamsonic.sdnotify import Notifier, watchdog_interval
from streamsonic.sinks.base import Sink

if TYPE_CHECKING:  # the runtime imports are deferred: they load torch
    from streamsonic.conductor import Stepper
    from streamsonic.engine import Engine
    from streamsonic.events import Source
    from streamsonic.scheduler import Scheduler

log = logging.getLogger(__name__)


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
    daemon = Daemon(config, specs, play_notes, config_path, cli_overrides or {})
    daemon.open_input = open_input
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(daemon.main())


class Daemon:
    """One run of the live pipeline."""

    #: Opens the input instead of the configured source, when set (see ``run_daemon``).
    open_input: Callable[[Config], Source] | None = None

    def __init__(
        self,
        config: Config,
        specs: list[OutputSpec],
        play_notes: bool,
        config_path: str | None,
        cli_overrides: dict[str, object],
    ) -> None:
        self.config = config
        self.specs = specs
        self.play_notes = play_notes
        self.config_path = config_path
        self.cli_overrides = cli_overrides
        self.notifier = Notifier()
        self.stop_reason: str | None = None
        self._stop = asyncio.Event()

    def request_stop(self, reason: str) -> None:
        """Ask the daemon to stop (from a signal handler or a failure)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()

    async def main(self) -> int:
        """Set up, run, and always tear down."""
        from streamsonic.conductor import Conductor  # noqa: PLC0415 - torch import
        from streamsonic.engine import Engine  # noqa: PLC0415
        from streamsonic.model.loader import load_pitch_model  # noqa: PLC0415
        from streamsonic.scheduler import Scheduler  # noqa: PLC0415
        from streamsonic.sources import open_source  # noqa: PLC0415

        loop = asyncio.get_running_loop()
        use_rhythm = self.config.model.rhythm == "model" and not self.play_notes
        stepper: Stepper
        if use_rhythm:
            from streamsonic.rhythm import RhythmDriver, load_temporal_model  # noqa: PLC0415

            stepper, encoding = load_temporal_model(self.config)
        else:
            stepper, encoding, _ = load_pitch_model(self.config.model)
        conductor = Conductor(self.config, stepper, encoding)
        source = (self.open_input(self.config) if self.open_input is not None
                  else open_source(self.config, play_notes=self.play_notes))
        sinks = open_outputs(self.specs, self.config, live=True)
        scheduler = Scheduler(loop, sinks, earcon=conductor.earcon)
        rhythm = RhythmDriver(conductor, scheduler, loop) if use_rhythm else None
        engine = Engine(conductor, scheduler, loop, rhythm=rhythm)
        self._install_signals(loop, engine)
        status = 0
        try:
            async with source:
                self.notifier.ready(f"playing to {', '.join(str(s) for s in self.specs)}")
                log.info("ready: outputs %s, %s clock", ", ".join(map(str, self.specs)),
                         self.config.clock.mode)
                status = await self._run(engine, source, scheduler)
        except StreamsonicError:
            raise
        finally:
            self.notifier.stopping()
            engine.cancel()
            scheduler.close()
            self._remove_signals(loop)
            log.info("stopped: %d samples, %d notes; streams %s; input %s", engine.samples,
                     engine.played, _fmt_stats(engine.stats), _fmt_stats(source.stats))
        scheduler.check_written()  # a file that could not be written is a failed run
        return status

    async def _run(self, engine: Engine, source: Source, scheduler: Scheduler) -> int:
        holding = source if isinstance(source, Holding) else None
        consume = asyncio.create_task(engine.consume(aiter(source), holding))
        stopper = asyncio.create_task(self._stop.wait())
        housekeeping = asyncio.create_task(self._housekeeping(engine, source, scheduler))
        try:
            done, _ = await asyncio.wait({consume, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if consume in done:
                consume.result()  # re-raise a source failure
                log.info("input ended; waiting for the last notes")
                drain = asyncio.create_task(engine.drain())
                await asyncio.wait({drain, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if drain.done():
                    drain.result()
                else:
                    drain.cancel()
        finally:
            for task in (consume, stopper, housekeeping):
                task.cancel()
            for task in (consume, housekeeping):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.stop_reason == "SIGINT":
            return EXIT_INTERRUPTED
        if self.stop_reason == "outputs failed":
            raise OutputError("every output failed; see the errors above")
        if self.stop_reason and self.stop_reason.startswith("device lost: "):
            raise OutputError(f"output {self.stop_reason[13:]}; exiting, as "
                              "output.on_device_loss = \"exit\" asks")
        return 0

    async def _housekeeping(self, engine: Engine, source: Source, scheduler: Scheduler) -> None:
        """Watchdog pings, idle streams evicted, periodic stats, and stopping when every
        output failed."""
        interval = watchdog_interval()
        ping = interval / 2 if interval else 1.0
        stats_every = self.config.daemon.stats_interval
        loop = asyncio.get_running_loop()
        next_stats = loop.time() + stats_every if stats_every > 0 else float("inf")
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
            if loop.time() >= next_stats:
                next_stats += stats_every
                log.info("stats: %d samples, %d notes, %d streams, %d waiting; streams %s; "
                         "input %s", engine.samples, engine.played,
                         len(engine.conductor.streams), engine.waiting,
                         _fmt_stats(engine.stats), _fmt_stats(source.stats))

    def _install_signals(self, loop: asyncio.AbstractEventLoop, engine: Engine) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self._reload, engine)

    @staticmethod
    def _remove_signals(loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def _reload(self, engine: Engine) -> None:
        """SIGHUP: re-read the config file; apply musical settings, keep stream state.

        Whatever goes wrong, the running configuration stays, one error line says why, and
        READY=1 follows RELOADING=1 (systemd would otherwise wait for it forever).
        """
        self.notifier.reloading()
        try:
            new = load_config(find_config_file(self.config_path), self.cli_overrides)
            try:
                engine.conductor.configure(new)
                engine.scheduler.earcon = engine.conductor.earcon
            except Exception:
                engine.conductor.configure(self.config)  # undo a partial change
                raise
            self.config = new
            log.info("reloaded configuration (music, model influence, clock)")
        except StreamsonicError as err:
            log.error("reload failed, keeping the running configuration: %s", err)
        except Exception as err:  # a bug must not leave systemd waiting or kill the daemon
            log.error("reload failed, keeping the running configuration: %s: %s",
                      type(err).__name__, err)
            log.debug("reload failure", exc_info=True)
        finally:
            self.notifier.ready()


def _fmt_stats(stats: dict[str, int]) -> str:
    if not stats:
        return "-"
    return ", ".join(f"{k}={v}" for k, v in sorted(stats.items()))
