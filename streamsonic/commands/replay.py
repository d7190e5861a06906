"""`streamsonic replay`: play a recording (``run --record``) again through the live engine."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

from streamsonic.commands.common import (
    MUSIC_OPTIONS,
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

DESCRIPTION = """\
Play a recording made with 'streamsonic run --record FILE' again, through the same engine
as 'run', with the samples arriving with their original gaps: with the same config and
--seed the notes are the same as in the recorded run. Several recordings (rotated files)
are played one after another in the order of their first samples' arrivals, whatever
order they are named in (a shell sorts session-10 before session-2).

  --speed X   X times as fast (0.5: half as fast); audio and MIDI outputs play along
  --fast      as fast as it can be computed, on a virtual clock: the engine sees exactly
              the original timing (rate caps, aggregation, ticks, note lengths), so a
              file: or events output holds what the recorded run played; only outputs
              that do not play in real time (events, file:, wav:, mqtt:)

examples:
  streamsonic replay session.jsonl                           play it again, as it was
  streamsonic replay session-*.jsonl --fast -o file:incident.mid
  streamsonic replay session.jsonl --speed 4 --scale minor   faster, in another scale"""

#: Outputs that play in real time, which --fast cannot feed.
REAL_TIME_KINDS = ("audio", "midi", "midi-virtual")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the replay options."""
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="recording(s) written by 'run --record', played in the order of "
                             "their first arrivals")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, metavar="X",
                      help="play X times as fast as recorded (0.001..1000; default 1)")
    pace.add_argument("--fast", action="store_true",
                      help="as fast as possible on a virtual clock (only outputs that do not "
                           "play in real time: events, file:, wav:, mqtt:)")
    parser.add_argument("--output", "-o", action="append", default=[], metavar="SPEC",
                        help="where notes go (repeatable), as for run: events, file:PATH, "
                             "audio[:DEVICE], midi:NAME, midi-virtual:NAME, wav:PATH, "
                             "mqtt:PREFIX; a file output may not write a FILE replayed")
    add_options(parser, MUSIC_OPTIONS, "music and model")
    add_config_options(parser)


def main(args: argparse.Namespace) -> int:
    """Replay the recordings."""
    if not (math.isfinite(args.speed) and 0.001 <= args.speed <= 1000.0):
        raise UsageError(f"--speed {args.speed}: must be 0.001..1000")
    config = config_from(args, MUSIC_OPTIONS)
    setup_logging(config.daemon.log_level)
    outputs = list(args.output) or list(config.output.targets)
    if args.fast:
        from streamsonic.outputs import parse_output, shown  # noqa: PLC0415

        live = [spec for spec in map(parse_output, outputs) if spec.kind in REAL_TIME_KINDS]
        if live:
            raise UsageError(f"replay --fast: output {shown(live[:1])} plays in real time; give "
                             "--output events, file:PATH or wav:PATH, or use --speed")
    from streamsonic.record import ReplaySource, VirtualTimeLoop  # noqa: PLC0415

    source = ReplaySource.open(list(args.files), speed=1.0 if args.fast else args.speed)
    from streamsonic.outputs import check_not_input, parse_output  # noqa: PLC0415

    # (an output on a recording set it aside as REC-1 before it was read)
    check_not_input(args.files, [parse_output(text) for text in outputs])
    from streamsonic.daemon import run_daemon  # noqa: PLC0415 - keeps --help light

    def open_input(config: Config) -> Source:
        return source

    return run_daemon(config, outputs=outputs, config_path=args.config,
                      cli_overrides=overrides_from(args, MUSIC_OPTIONS),
                      open_input=open_input,
                      loop_factory=VirtualTimeLoop if args.fast else None)
