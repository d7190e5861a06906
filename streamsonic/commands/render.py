"""`streamsonic render`: a CSV file to MIDI (and WAV, and a plot), offline."""

from __future__ import annotations

import argparse

from streamsonic.commands.common import (
    RENDER_OPTIONS,
    add_config_options,
    add_options,
    config_from,
    setup_logging,
    stop_signals,
)
from streamsonic.extras import require_extra

DESCRIPTION = """\
Render a CSV file (or JSON lines, or name=value lines, as run reads them: a column per
name) offline, one data note per row in file order (with
the notes the model adds before it in between: model.passing_notes, 0 for one note per row),
faster than real time and deterministic for a given --seed. The tempo and --step decide the
spacing. By default values are placed over the whole file (normalize.render_mode = "auto":
ordinary values spread by their quantiles, the few beyond the 2nd/98th percentiles play
beyond the range), so heavy-tailed data stays audible; --normalize rolling plays it exactly
as the daemon would. When the reader of -o events goes away (... | head -1), the other
outputs are still written whole, exit 0.

examples:
  streamsonic render data.csv --column population -o out.mid --plot out.png
  streamsonic render hosts.csv --column cpu --column mem -o hosts.mid
  streamsonic render hosts.csv --all-columns -o hosts.mid
  streamsonic render trading.csv --column 'Adj Close' -o out.mid -o out.wav"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the render options."""
    parser.add_argument("file", metavar="FILE", help="CSV file (or '-' for stdin)")
    parser.add_argument("--column", metavar="NAME|INDEX", action="append", default=[],
                        help="column to play, by header name or 0-based index (a later "
                             "column of a name taken plays as NAME#2; default: the "
                             "column with the most numbers, leaving out a time column: time, "
                             "timestamp, ts, date, datetime, epoch); repeat it to play "
                             "several columns, each as its own stream and voice, playing "
                             "the notes it plays alone, a row's notes together")
    parser.add_argument("--all-columns", action="store_true",
                        help="play every column that holds numbers, except a time column")
    parser.add_argument("-o", "--output", action="append", default=[], metavar="OUT",
                        help="output file (repeatable): OUT.mid, OUT.wav, file:PATH, wav:PATH, "
                             "or events (JSON lines on stdout); not the input FILE")
    parser.add_argument("--plot", metavar="OUT.png",
                        help="draw the data and the notes (velocity as colour, accents "
                             "marked, the anomaly score): three panels per column, at most "
                             "8 columns stacked")
    parser.add_argument("--normalize", choices=("global", "rolling"), default=None,
                        help="place values over the whole file (default; the method is "
                             "normalize.render_mode) or over a rolling window as the daemon "
                             "does (--window, --normalize-mode)")
    add_options(parser, RENDER_OPTIONS, "music and model")
    add_config_options(parser)


def main(args: argparse.Namespace) -> int:
    """Render the file."""
    extra = {"normalize.render_scope": args.normalize} if args.normalize else {}
    config = config_from(args, RENDER_OPTIONS, extra)
    setup_logging(config.daemon.log_level)
    if args.plot:  # say so now rather than after the rendering
        require_extra("matplotlib", "--plot")
    from streamsonic.render import render_file  # noqa: PLC0415 - keeps --help light

    if args.all_columns and args.column:
        from streamsonic.errors import UsageError  # noqa: PLC0415

        raise UsageError("--all-columns and --column: give one or the other")
    with stop_signals():  # SIGTERM, SIGHUP: no file written, none replaced
        return render_file(config, args.file, column=list(args.column),
                           outputs=list(args.output), plot=args.plot,
                           every_column=args.all_columns)
