"""`streamsonic run`: the live daemon."""

from __future__ import annotations

import argparse

from streamsonic.commands.common import (
    MUSIC_OPTIONS,
    Option,
    add_config_options,
    add_options,
    config_from,
    overrides_from,
    setup_logging,
)

DESCRIPTION = """\
Sonify live streams. Reads numbers from stdin (or MQTT with --mqtt), one note per sample
(event clock) or per tick (tick clock), and plays them until the input ends; then waits
for the last note to finish and exits 0. SIGINT/SIGTERM stop it cleanly (every sounding
note is released); SIGHUP re-reads the config file's musical settings, keeping every
stream's state.

stdin formats (auto-detected per line): a bare number; comma/semicolon/tab/space
separated columns (a first line of names is a header); name=value or name: value pairs;
Prometheus text lines; one JSON object per line. An ISO 8601 or epoch-seconds timestamp
may lead the line.

outputs (--output, repeatable; default from config: audio):
  events              one JSON line per note on stdout
  file:PATH           Standard MIDI File, written as it goes ({start} in PATH: the
                      UTC start time); an earlier file there is kept as NAME-1.mid
  audio[:DEVICE]      FluidSynth through the audio device
  midi:NAME           an existing MIDI port (name or substring)
  midi-virtual:NAME   a new virtual MIDI port other programs can connect to
  wav:PATH            audio rendered to a WAV file from the first note, as it goes
  mqtt:PREFIX         notes as JSON messages under an MQTT topic prefix"""

MQTT_OPTIONS: tuple[Option, ...] = (
    Option(("--mqtt",), "mqtt.url", str,
           "read from an MQTT broker instead of stdin: mqtt://host[:port] or mqtts://host[:port]",
           metavar="URL"),
    Option(("--qos",), "mqtt.qos", int, "MQTT subscription QoS (default 1)",
           choices=None, metavar="0|1|2"),
    Option(("--client-id",), "mqtt.client_id", str,
           "MQTT client id (fixed ids allow persistent sessions)", metavar="ID"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the run options."""
    parser.add_argument("--output", "-o", action="append", default=[], metavar="SPEC",
                        help="where notes go (repeatable): events, file:PATH, audio[:DEVICE], "
                             "midi:NAME, midi-virtual:NAME, wav:PATH, mqtt:PREFIX")
    add_options(parser, MUSIC_OPTIONS, "music and model")
    add_options(parser, MQTT_OPTIONS, "MQTT input")
    parser.add_argument("--topic", action="append", default=[], metavar="FILTER",
                        help="MQTT topic filter to subscribe to (repeatable; wildcards + and #; "
                             "$share/GROUP/... for shared subscriptions)")
    parser.add_argument("--play-notes", action="store_true",
                        help="MQTT input carries notes published by another streamsonic "
                             "(--output mqtt:PREFIX); play them as they are")
    add_config_options(parser)


def main(args: argparse.Namespace) -> int:
    """Run the daemon until its input ends or it is stopped."""
    extra = {"mqtt.topics": list(args.topic)} if args.topic else {}
    config = config_from(args, MUSIC_OPTIONS + MQTT_OPTIONS, extra)
    setup_logging(config.daemon.log_level)
    from streamsonic.daemon import run_daemon  # noqa: PLC0415 - keeps --help light

    return run_daemon(config, outputs=list(args.output), play_notes=args.play_notes,
                      config_path=args.config,
                      cli_overrides=overrides_from(args, MUSIC_OPTIONS + MQTT_OPTIONS) | extra)
