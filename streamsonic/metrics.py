"""The Prometheus endpoint (``[metrics] listen``): what the daemon counts, read at scrape time.

Nothing here adds bookkeeping to the hot path: a custom collector reads the counters the
daemon keeps anyway (the engine's, the source's, each output's, the scheduler's notes per
output) when Prometheus scrapes. The one exception is the step latency histogram, which the
conductor feeds through its ``on_step`` hook (two clock reads per batched step).

The HTTP server (:func:`serve`, threads of its own) answers ``/metrics`` with
prometheus-client's exposition, ``/`` with a small page that links to it (as
node_exporter's does) and any other path with 404; the collector reads the
daemon's state from its threads without locks. Reads of ints and of ``len()`` are atomic
under the GIL; a dict that changes size while it is copied is read again.

With ``daemon.workers > 1`` the daemon's process serves the endpoint: each worker keeps its
own registry and sends a snapshot every second; a scrape merges them (:func:`merge_families`).

Metric names (all ``streamsonic_``; counters end in ``_total``):

    input_samples_total                    samples the engine took
    input_rejected_total{reason}           input skipped as bad, by reason (nan, parse ...)
    input_ignored_total{reason}            header and comment lines
    samples_aggregated_total               samples folded into another's note that played
    samples_dropped_total{reason}          queue_full (source), slow_consumer (NATS), evicted,
                                           streams_full, at_stop
    streams_evicted_total{reason}          idle, full
    streams                                live streams
    queue_depth                            notes waiting in the engine's queues
    phrases_shed_total                     samples played without passing notes (overload)
    notes_played_total                     notes the engine scheduled
    notes_total{output}                    notes handed to each output
    output_up{output}                      0 while an output's device is away, and from
                                           its failure (a full disk) until the daemon stops
    output_events_total{output,event}      each output's own counters (dropped, late ...)
    audio_underruns_total{output}          audio callbacks that ran too late
    earcons_total{result}                  accent earcons played, dropped (past max lag)
    step_seconds                           histogram: one batched LSTM step
    source_up                              0 while the source waits (for the broker)
    mqtt_connected                         1 while connected to the broker
    mqtt_connects_total, mqtt_reconnects_total, mqtt_disconnects_total, mqtt_takeovers_total
    reloads_total{result}                  SIGHUP reloads: ok, failed
    reload_failed                          1 while the last reload failed

and the usual ``process_*`` metrics (:class:`ProcessMetrics`: memory, CPU time, file
descriptors, start time), which read only this process's own ``/proc/self`` files, so that
they are there under the systemd unit's ``ProcSubset=pid`` too.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from streamsonic.config import parse_listen
from streamsonic.errors import MetricsError
from streamsonic.extras import import_extra

if TYPE_CHECKING:
    from collections import Counter
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from prometheus_client.registry import CollectorRegistry

    from streamsonic.engine import Engine
    from streamsonic.events import Source
    from streamsonic.scheduler import Scheduler
    from streamsonic.sinks.base import Sink

log = logging.getLogger(__name__)

#: Step latency buckets in seconds: 50 µs (a small batch on a fast CPU) to 2.5 s (stalled).
STEP_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5)

T = TypeVar("T")

#: The path the metrics are served at.
METRICS_PATH = "/metrics"
#: What ``/`` answers: a page that points to the metrics.
LANDING_PAGE = (b"<html><head><title>streamsonic</title></head><body><h1>streamsonic</h1>"
                b'<p><a href="/metrics">Metrics</a></p></body></html>\n')
#: What any other path answers (404).
NOT_FOUND = b"404 page not found; the metrics are at /metrics\n"


class Observed(Protocol):
    """What the collector reads: the daemon (``streamsonic.daemon.Daemon``)."""

    @property
    def engine(self) -> Engine | None: ...

    @property
    def source(self) -> Source | None: ...

    @property
    def scheduler(self) -> Scheduler | None: ...

    @property
    def reloads(self) -> Counter[str]: ...

    @property
    def reload_error(self) -> str | None: ...

    @property
    def source_waiting_for(self) -> str | None: ...

    @property
    def mqtt_connected(self) -> bool | None: ...


def _read(read: Callable[[], T], default: T) -> T:
    """``read()``, again if a dict changed size under it (the event loop's thread writes
    while the scrape thread reads); ``default`` if it keeps changing."""
    for _ in range(5):
        try:
            return read()
        except RuntimeError:
            continue
    return default


def _sink_stats(sink: Sink) -> dict[str, int]:
    empty: dict[str, int] = {}
    return _read(lambda: sink.stats, empty)


def _prefixed(stats: dict[str, int], prefix: str) -> Iterator[tuple[str, int]]:
    for key, value in sorted(stats.items()):
        if key.startswith(prefix):
            yield key[len(prefix):], value


class DaemonCollector:
    """A prometheus-client collector over the running daemon's counters."""

    def __init__(self, observed: Observed) -> None:
        self.observed = observed
        self._core = import_extra("prometheus_client.core", "the metrics endpoint")

    def describe(self) -> list[Any]:
        """Nothing up front: families depend on the outputs (collected at each scrape)."""
        return []

    def collect(self) -> Iterable[Any]:
        """Every family, read now."""
        core = self._core
        counter, gauge = core.CounterMetricFamily, core.GaugeMetricFamily
        daemon = self.observed
        engine, source, scheduler = daemon.engine, daemon.source, daemon.scheduler
        source_stats: dict[str, int] = _read(lambda: source.stats, {}) if source else {}

        samples = counter("streamsonic_input_samples", "Samples the engine took.")
        samples.add_metric([], engine.samples if engine else 0)
        yield samples
        rejected = counter("streamsonic_input_rejected",
                           "Input skipped as bad, by reason (see README, Reliability).",
                           labels=["reason"])
        for reason, value in _prefixed(source_stats, "skipped."):
            rejected.add_metric([reason], value)
        yield rejected
        ignored = counter("streamsonic_input_ignored", "Header and comment lines, by reason.",
                          labels=["reason"])
        for reason, value in _prefixed(source_stats, "ignored."):
            ignored.add_metric([reason], value)
        yield ignored

        engine_stats: dict[str, int] = _read(lambda: engine.stats, {}) if engine else {}
        aggregated = counter("streamsonic_samples_aggregated",
                             "Samples folded into another sample's note that played "
                             "(clock.backlog).")
        aggregated.add_metric([], engine.aggregated if engine else 0)
        yield aggregated
        dropped = counter("streamsonic_samples_dropped", "Samples dropped unplayed, by reason.",
                          labels=["reason"])
        for reason, value in _prefixed(source_stats, "dropped."):
            dropped.add_metric([reason], value)
        for reason, value in _prefixed(engine_stats, "dropped."):
            dropped.add_metric([reason], value)
        yield dropped
        evicted = counter("streamsonic_streams_evicted", "Streams forgotten, by reason.",
                          labels=["reason"])
        for reason in ("idle", "full"):
            evicted.add_metric([reason], engine_stats.get(f"evicted.{reason}", 0))
        yield evicted
        streams = gauge("streamsonic_streams", "Live streams (each has its own state).")
        streams.add_metric([], len(engine.conductor.streams) if engine else 0)
        yield streams
        depth = gauge("streamsonic_queue_depth", "Notes waiting in the engine's queues.")
        depth.add_metric([], _read(lambda: engine.waiting, 0) if engine else 0)
        yield depth
        shed = counter("streamsonic_phrases_shed",
                       "Samples played without the model's passing notes under overload.")
        shed.add_metric([], engine_stats.get("shed.phrases", 0))
        yield shed
        played = counter("streamsonic_notes_played", "Notes the engine scheduled.")
        played.add_metric([], engine.played if engine else 0)
        yield played

        yield from self._outputs(scheduler)
        yield from self._source(source_stats)

        reloads = counter("streamsonic_reloads", "Configuration reloads (SIGHUP), by result.",
                          labels=["result"])
        for result in ("ok", "failed"):
            reloads.add_metric([result], daemon.reloads[result])
        yield reloads
        failed = gauge("streamsonic_reload_failed",
                       "1 while the last reload failed (the previous configuration runs).")
        failed.add_metric([], 1 if daemon.reload_error else 0)
        yield failed

    def _outputs(self, scheduler: Scheduler | None) -> Iterator[Any]:
        core = self._core
        counter, gauge = core.CounterMetricFamily, core.GaugeMetricFamily
        notes = counter("streamsonic_notes", "Notes handed to each output.", labels=["output"])
        up = gauge("streamsonic_output_up", "0 while an output's device is away, and once "
                   "it failed (until the daemon stops or a reload opens it again).",
                   labels=["output"])
        events = counter("streamsonic_output_events", "Each output's own counters.",
                         labels=["output", "event"])
        underruns = counter("streamsonic_audio_underruns",
                            "Audio callbacks that ran too late (a click or gap).",
                            labels=["output"])
        earcons = counter("streamsonic_earcons", "Accent earcons played, and left out when "
                          "they would have waited past accent.earcon_max_lag.",
                          labels=["result"])
        if scheduler is not None:
            earcons.add_metric(["played"], scheduler.earcons)
            earcons.add_metric(["dropped"], scheduler.earcons_dropped)
            empty: dict[str, int] = {}
            for name, value in sorted(_read(lambda: dict(scheduler.notes_out), empty).items()):
                notes.add_metric([name], value)
            running = list(scheduler.sinks)
            names = {sink.name for sink in running}
            failed: list[Sink] = []  # closed after a failure: up 0, its counters stay
            for sink, _ in list(scheduler.failed):
                if sink.name not in names:  # (not opened again by a reload)
                    names.add(sink.name)
                    failed.append(sink)
            for sink in running + failed:
                up.add_metric([sink.name], 0 if sink.lost or sink in failed else 1)
                stats = _sink_stats(sink)
                for event, value in sorted(stats.items()):
                    if event == "underruns":
                        underruns.add_metric([sink.name], value)
                    else:
                        events.add_metric([sink.name, event], value)
        yield from (notes, up, events, underruns, earcons)

    def _source(self, stats: dict[str, int]) -> Iterator[Any]:
        core = self._core
        counter, gauge = core.CounterMetricFamily, core.GaugeMetricFamily
        up = gauge("streamsonic_source_up", "0 while the source waits (for the broker).")
        up.add_metric([], 0 if self.observed.source_waiting_for else 1)
        yield up
        mqtt_connected = self.observed.mqtt_connected
        if mqtt_connected is None:  # not an MQTT source
            return
        connected = gauge("streamsonic_mqtt_connected", "1 while connected to the broker.")
        connected.add_metric([], 1 if mqtt_connected else 0)
        yield connected
        connects = stats.get("connects", 0)
        for name, value, text in (
            ("connects", connects, "Connections the broker accepted."),
            ("reconnects", max(connects - 1, 0), "Connections after the first."),
            ("disconnects", stats.get("disconnects", 0), "Connections lost or closed."),
            ("takeovers", stats.get("takeovers", 0),
             "Sessions taken over by another client with our client id."),
            ("messages", stats.get("received", 0), "Messages received."),
        ):
            family = counter(f"streamsonic_mqtt_{name}", text)
            family.add_metric([], value)
            yield family


#: Families a daemon with worker processes (``daemon.workers``) takes from its own process
#: alone: the source, the reloads and what a process has once; the others are the sums of
#: its own and every worker's (counters, histograms, live streams, memory and CPU).
ROUTER_ONLY = frozenset({
    "streamsonic_source_up", "streamsonic_mqtt_connected", "streamsonic_mqtt_connects",
    "streamsonic_mqtt_reconnects", "streamsonic_mqtt_disconnects",
    "streamsonic_mqtt_takeovers", "streamsonic_mqtt_messages", "streamsonic_reloads",
    "streamsonic_reload_failed", "process_start_time_seconds", "process_max_fds",
})


def merge_families(own: list[Any], others: list[list[Any]]) -> list[Any]:
    """``own`` families with each of ``others`` (the workers' snapshots) added in: samples of
    one name and labels summed (``_created`` timestamps: the earliest), except the families
    in :data:`ROUTER_ONLY`, which stay as ``own`` has them."""
    metric = import_extra("prometheus_client.core", "the metrics endpoint").Metric
    merged: dict[str, Any] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for index, families in enumerate([own, *others]):
        for family in families:
            if index and family.name in ROUTER_ONLY:
                continue
            if family.name not in merged:
                merged[family.name] = metric(family.name, family.documentation, family.type,
                                             family.unit)
                values[family.name] = {}
            sums = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in sums:
                    sums[key] = sample.value
                elif sample.name.endswith("_created"):
                    sums[key] = min(sums[key], sample.value)
                else:
                    sums[key] += sample.value
    for name, family in merged.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
    return list(merged.values())


class ProcessMetrics:
    """The ``process_*`` metrics of this process, as prometheus-client's ProcessCollector
    names them: from ``PROC/self/stat`` (memory, CPU time, start), ``PROC/self/fd`` and
    :func:`resource.getrlimit`. That collector needs ``/proc/stat`` (the boot time) and
    exports nothing without it, which is what the systemd unit's ``ProcSubset=pid`` hides;
    here the start time comes from the boot time where it can be read, else from the time
    since boot (``CLOCK_BOOTTIME``, the clock of the start field in ``stat``), else from
    psutil where it is installed. A file that cannot be read leaves out only its metrics."""

    def __init__(self, proc: str | Path = "/proc") -> None:
        self._core = import_extra("prometheus_client.core", "the metrics endpoint")
        self.proc = Path(proc)
        try:
            self._ticks = float(os.sysconf("SC_CLK_TCK"))
        except (ValueError, OSError):
            self._ticks = 100.0
        self._pagesize = resource.getpagesize()
        self._started: float | None = None  # the start time, once known

    def describe(self) -> list[Any]:
        return []

    def _start_time(self, since_boot: float) -> float | None:
        """Seconds since the epoch when this process started (``since_boot``: its start
        in seconds after boot), or None."""
        try:
            with (self.proc / "stat").open("rb") as stat:
                for line in stat:
                    if line.startswith(b"btime "):
                        return float(line.split()[1]) + since_boot
        except (OSError, ValueError, IndexError):
            pass
        try:
            return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - since_boot)
        except (AttributeError, OSError):  # not Linux
            pass
        try:
            import psutil  # type: ignore[import-untyped]  # noqa: PLC0415 - optional
        except ImportError:
            return None
        return float(psutil.Process().create_time())

    def collect(self) -> Iterable[Any]:
        """Every metric this process's files give now."""
        gauge, counter = self._core.GaugeMetricFamily, self._core.CounterMetricFamily
        own = self.proc / "self"
        try:
            parts = (own / "stat").read_bytes().rsplit(b")", 1)[-1].split()
            cpu = (float(parts[11]) + float(parts[12])) / self._ticks
            vmem, rss, since_boot = float(parts[20]), float(parts[21]), float(parts[19])
        except (OSError, ValueError, IndexError):
            times = os.times()
            yield counter("process_cpu_seconds_total",
                          "Total user and system CPU time spent in seconds.",
                          value=times.user + times.system)
        else:
            yield gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                        value=vmem)
            yield gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
                        value=rss * self._pagesize)
            if self._started is None:
                self._started = self._start_time(since_boot / self._ticks)
            if self._started is not None:
                yield gauge("process_start_time_seconds",
                            "Start time of the process since unix epoch in seconds.",
                            value=self._started)
            yield counter("process_cpu_seconds_total",
                          "Total user and system CPU time spent in seconds.", value=cpu)
        try:
            fds = sum(1 for _ in (own / "fd").iterdir())
        except OSError:
            pass
        else:
            yield gauge("process_open_fds", "Number of open file descriptors.", value=fds)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft != resource.RLIM_INFINITY:
            yield gauge("process_max_fds", "Maximum number of open file descriptors.",
                        value=float(soft))


class _Merged:
    """A collector: the registry's own families merged with the workers' snapshots."""

    def __init__(self, own: CollectorRegistry, snapshots: Callable[[], list[list[Any]]]) -> None:
        self.own, self.snapshots = own, snapshots

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        return merge_families(list(self.own.collect()), self.snapshots())


class MetricsServer:
    """The registry (our collector, the step histogram, process metrics) and its HTTP
    server; ``listen`` again on another address at reload, ``close`` at exit.

    ``workers`` (a daemon with worker processes): what returns the workers' latest
    snapshots (each the list of families of its own registry, :meth:`snapshot`), served
    merged with this process's families (:func:`merge_families`)."""

    def __init__(self, observed: Observed,
                 workers: Callable[[], list[list[Any]]] | None = None) -> None:
        client = import_extra("prometheus_client", "the metrics endpoint (metrics.listen)")
        self._client = client
        self.own: CollectorRegistry = client.CollectorRegistry(auto_describe=False)
        self.registry: CollectorRegistry = self.own
        if workers is not None:
            self.registry = client.CollectorRegistry(auto_describe=False)
            self.registry.register(_Merged(self.own, workers))
        self.collector = DaemonCollector(observed)
        self.own.register(self.collector)
        self.own.register(ProcessMetrics())
        self.step_seconds = client.Histogram(
            "streamsonic_step_seconds", "Duration of one batched model step (all its streams).",
            buckets=STEP_BUCKETS, registry=self.own)
        self.step_streams = client.Counter(
            "streamsonic_step_streams", "Streams stepped (the sum of the steps' batch sizes).",
            registry=self.own)
        self.listen = ""
        self.address: tuple[str, int] | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def snapshot(self) -> list[Any]:
        """This process's families as they are now (a worker sends them to the daemon)."""
        return list(self.own.collect())

    def observe_step(self, streams: int, seconds: float) -> None:
        """The conductor's ``on_step`` hook."""
        self.step_seconds.observe(seconds)
        self.step_streams.inc(streams)

    def start(self, listen: str) -> None:
        """Serve /metrics on ``listen`` ("HOST:PORT"; "" stops serving). A server already
        running on another address is stopped once the new one listens; if the new one
        cannot listen, the old one keeps serving and MetricsError says why."""
        if listen == self.listen:
            return
        old = (self._server, self._thread)
        if listen:
            host, port = parse_listen(listen)
            try:
                server, thread = serve(host, port, self._client.make_wsgi_app(self.registry))
            except (OSError, ValueError) as err:
                reason = getattr(err, "strerror", None) or str(err)
                raise MetricsError(
                    f"metrics.listen = {listen!r}: cannot listen there ({reason}); choose a "
                    "free port on an address of this machine, or \"\" to turn metrics off"
                ) from None
            self._server, self._thread = server, thread
            bound_host, bound_port = server.server_address[:2]
            self.address = (str(bound_host), int(bound_port))
            log.info("metrics: serving http://%s/metrics", _url_host(*self.address))
        else:
            self._server = self._thread = None
            self.address = None
            log.info("metrics: endpoint turned off")
        self.listen = listen
        _stop(*old)

    def close(self) -> None:
        """Stop serving. Safe to call twice."""
        old = (self._server, self._thread)
        self._server = self._thread = None
        self.listen = ""
        _stop(*old)


def endpoint(metrics: WSGIApplication) -> WSGIApplication:
    """The endpoint's WSGI application: ``/metrics`` is ``metrics`` (prometheus-client's
    application, which itself answers only GET, HEAD and OPTIONS), ``/`` the landing page,
    anything else 404."""
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == METRICS_PATH:
            return metrics(environ, start_response)
        if path == "/":
            status, kind, body = "200 OK", "text/html; charset=utf-8", LANDING_PAGE
        else:
            status, kind, body = "404 Not Found", "text/plain; charset=utf-8", NOT_FOUND
        start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    return app


class _QuietHandler(WSGIRequestHandler):
    """No line on stderr per request (a scrape every 15 s would fill the journal)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(host: str, port: int, metrics: WSGIApplication) -> tuple[WSGIServer,
                                                                   threading.Thread]:
    """Serve :func:`endpoint` around ``metrics`` on ``host``:``port`` (IPv4 or IPv6, as
    the address resolves), a thread per request, from a daemon thread; OSError when it
    cannot listen there."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                  flags=socket.AI_PASSIVE)[0]

    class Server(socketserver.ThreadingMixIn, WSGIServer):
        address_family = family
        daemon_threads = True

    server = make_server(str(address[0]), port, endpoint(metrics), server_class=Server,
                         handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server, thread


def _url_host(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _stop(server: Any, thread: threading.Thread | None) -> None:
    if server is None:
        return
    server.shutdown()
    server.server_close()
    if thread is not None:
        thread.join(5.0)
