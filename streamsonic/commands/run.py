"""`streamsonic run`: the live daemon."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from streamsonic.commands.common import (
    MUSIC_OPTIONS,
    Option,
    add_config_options,
    add_options,
    config_from,
    overrides_from,
    setup_logging,
)
from streamsonic.config import Config
from streamsonic.errors import UsageError

if TYPE_CHECKING:
    from streamsonic.events import Source
    from streamsonic.record import Recorder

DESCRIPTION = """\
Sonify live streams. Reads numbers from FILE or stdin (or MQTT with --mqtt, NATS with
--nats), one note per sample (event clock) or per tick (tick clock), and plays them until
the input ends; then waits for the last note to finish and exits 0. A closed stdout
(... | head -1) stops it quietly (exit 0). SIGINT (exit 130) and SIGTERM (exit 0) stop it
cleanly (every sounding note is released); SIGHUP re-reads the config file and applies it,
keeping every stream's state (what needs a restart is named in a warning; check a file
first with 'streamsonic check-config'). Exit statuses: README, "Configuration".

stdin formats (auto-detected per line; input.format fixes one): a bare number;
comma/semicolon/tab/space/| separated columns (a first line of names is a header);
name=value or name: value pairs; Prometheus text lines; one JSON object per line. An ISO
8601 or epoch-seconds timestamp may lead the line (or a column named time, timestamp, ts,
date ... hold it). Bad lines and fields are skipped and counted, never fatal.

outputs (--output, repeatable; default from config: audio):
  events              one JSON line per note on stdout
  file:PATH           Standard MIDI File, written as it goes ({start} in PATH: the
                      UTC start time); an earlier file there is kept as NAME-1.mid
  audio[:DEVICE]      FluidSynth through the audio device
  midi:NAME           an existing MIDI port (name or substring)
  midi-virtual:NAME   a new virtual MIDI port other programs can connect to
  wav:PATH            audio rendered to a WAV file from the first note, as it goes
  mqtt:PREFIX         notes as JSON messages under an MQTT topic prefix

--record FILE writes every sample taken in, with its arrival time, as JSON lines
({start} and {n} in FILE, rotation and never overwriting as for file: outputs);
'streamsonic replay FILE' plays it again with the original timing."""

NETWORK_OPTIONS: tuple[Option, ...] = (
    Option(("--mqtt",), "mqtt.url", str,
           "read from an MQTT broker instead of stdin: mqtt://host[:port] or mqtts://host[:port]",
           metavar="URL"),
    Option(("--qos",), "mqtt.qos", int, "MQTT subscription QoS (default 1)",
           choices=None, metavar="0|1|2"),
    Option(("--client-id",), "mqtt.client_id", str,
           "MQTT client id (fixed ids allow persistent sessions)", metavar="ID"),
    Option(("--nats",), "nats.url", str,
           "read from a NATS server instead of stdin: nats://host[:port] (see --subject, "
           "--partition)", metavar="URL"),
)

RUN_OPTIONS: tuple[Option, ...] = (
    Option(("--workers",), "daemon.workers", int,
           "processes that play the streams (default 1): N > 1 hands each stream to one of "
           "N worker processes, to use N cores (events and mqtt outputs only)", metavar="N"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the run options."""
    parser.add_argument("file", nargs="?", metavar="FILE",
                        help="read FILE instead of stdin ('-' or none: stdin); a FIFO or a "
                             "growing file is read as it comes, up to its end (no output "
                             "or --record may write it)")
    parser.add_argument("--record", metavar="FILE",
                        help="record every sample taken in, with its arrival time, to FILE "
                             "(JSON lines; see 'streamsonic replay')")
    parser.add_argument("--output", "-o", action="append", default=[], metavar="SPEC",
                        help="where notes go (repeatable): events, file:PATH, audio[:DEVICE], "
                             "midi:NAME, midi-virtual:NAME, wav:PATH, mqtt:PREFIX")
    add_options(parser, MUSIC_OPTIONS, "music and model")
    network = add_options(parser, NETWORK_OPTIONS, "MQTT and NATS input")
    network.add_argument("--topic", action="append", default=[], metavar="FILTER",
                         help="MQTT topic filter to subscribe to (repeatable; wildcards + and "
                              "#). $share/GROUP/... shared subscriptions are dealt out "
                              "round-robin by most brokers, which splits every stream's "
                              "melody between daemons: see README, \"Scaling out\"")
    network.add_argument("--play-notes", action="store_true",
                         help="MQTT input carries notes published by another streamsonic "
                              "(--output mqtt:PREFIX); play them as they are (a bad one is "
                              "skipped, counted as bad_note, and the warning names the field "
                              "and its value)")
    network.add_argument("--subject", action="append", default=[], metavar="SUBJECT",
                         help="NATS subject to subscribe to (repeatable; wildcards * and >; "
                              "{partition} stands for each of this instance's partitions)")
    network.add_argument("--partition", action="append", default=[], type=int, metavar="N",
                         help="NATS partition this instance plays (repeatable; the server's "
                              "mapping partition(N, ...) makes them)")
    add_options(parser, RUN_OPTIONS, "processes")
    add_config_options(parser)


def main(args: argparse.Namespace) -> int:
    """Run the daemon until its input ends or it is stopped."""
    extra: dict[str, object] = {"mqtt.topics": list(args.topic)} if args.topic else {}
    if args.subject:
        extra["nats.subjects"] = list(args.subject)
    if args.partition:
        extra["nats.partitions"] = list(args.partition)
    options = MUSIC_OPTIONS + NETWORK_OPTIONS + RUN_OPTIONS
    config = config_from(args, options, extra, EXTRA_FLAGS)
    _check_network_flags(config, args)
    setup_logging(config.daemon.log_level)
    source = _input(config, args.file, args.play_notes)  # a missing FILE fails now (66)
    outputs = list(args.output) or list(config.output.targets)
    _check_record_path(args.record, outputs)
    _check_not_input(args.file, args.record, outputs)
    recorder = _recorder(config, args.record, args.play_notes)
    from streamsonic.daemon import run_daemon  # noqa: PLC0415 - keeps --help light

    def open_input(config: Config) -> Source:
        from streamsonic.sources import open_source  # noqa: PLC0415 - lazy backends

        inner = source if source is not None else open_source(config,
                                                               play_notes=args.play_notes)
        if recorder is None:
            return inner
        from streamsonic.record import RecordingSource  # noqa: PLC0415

        return RecordingSource(inner, recorder)

    try:
        status = run_daemon(config, outputs=list(args.output), play_notes=args.play_notes,
                            config_path=args.config,
                            cli_overrides=overrides_from(args, options)
                            | extra, open_input=open_input)
    finally:
        if recorder is not None:
            recorder.close()
    if recorder is not None and recorder.failed is not None:
        raise recorder.failed  # the music played on; the recording is incomplete (74)
    return status


#: The config keys that run's list flags set (for error messages that name the flag).
EXTRA_FLAGS = {"mqtt.topics": "--topic", "nats.subjects": "--subject",
               "nats.partitions": "--partition"}


def _check_network_flags(config: Config, args: argparse.Namespace) -> None:
    """Flags that only a network source reads are refused without one: they would do
    nothing, and stdin would be read instead."""
    if args.topic and not config.mqtt.url:
        raise UsageError("--topic subscribes to an MQTT broker: give it with --mqtt URL (or "
                         "mqtt.url in the config file)")
    for flag in ("subject", "partition"):
        if getattr(args, flag) and not config.nats.url:
            raise UsageError(f"--{flag} reads from a NATS server: give it with --nats URL "
                             "(or nats.url in the config file)")
    if args.play_notes and not (config.mqtt.url or config.nats.url):
        raise UsageError("--play-notes plays the notes another streamsonic published to MQTT "
                         "(or NATS): give the broker with --mqtt URL (or --nats URL)")


def _input(config: Config, path: str | None, play_notes: bool) -> Source | None:
    """The source for ``run FILE`` (None: the configured one, stdin or MQTT)."""
    if path is None:
        return None
    for key in ("mqtt", "nats"):  # a network source is configured
        url = getattr(getattr(config, key, None), "url", "")
        if url:
            from streamsonic.mqtt.urls import redact_url  # noqa: PLC0415 - no paho

            raise UsageError(f"run {path}: {key}.url is set too ({redact_url(url)}); read "
                             f"either the file or the network: drop FILE, or --set "
                             f"{key}.url=''")
    if play_notes:
        raise UsageError("--play-notes reads notes from MQTT; it takes no FILE")
    from streamsonic.sources.stdin import StdinSource  # noqa: PLC0415 - lazy backend

    return StdinSource.open_file(config, path)


def _check_record_path(path: str | None, outputs: list[str]) -> None:
    """``--record FILE`` must not be a file an output writes: both would write it, each
    over the other's bytes (a file of JSON lines and MIDI that neither can read)."""
    if path is None:
        return
    from streamsonic.outputs import parse_output, writer_of  # noqa: PLC0415

    spec = writer_of(path, [parse_output(text) for text in outputs])
    if spec is not None:
        raise UsageError(f"--record {path} and the output {spec} are the same file: both "
                         "would write it; give --record another path")


def _check_not_input(path: str | None, record: str | None, outputs: list[str]) -> None:
    """``run FILE``: no output (nor ``--record``) may write FILE, which it would set aside
    as ``FILE-1`` while it is read (as ``replay`` and ``render`` refuse it)."""
    if path is None:
        return
    from streamsonic.outputs import check_not_input, parse_output  # noqa: PLC0415

    check_not_input([path], [parse_output(text) for text in outputs],
                    [(f"--record {record}", record)] if record else [])


def _recorder(config: Config, path: str | None, play_notes: bool) -> Recorder | None:
    """The recorder for ``--record`` (its first file is opened now: a bad path is exit 69)."""
    if path is None:
        return None
    if not path.strip():
        raise UsageError("--record needs a file name, e.g. --record samples.jsonl")
    if play_notes:
        raise UsageError("--record records samples; --play-notes receives finished notes, "
                         "which it cannot record")
    from streamsonic.record import Recorder  # noqa: PLC0415

    return Recorder(path, config.output)
