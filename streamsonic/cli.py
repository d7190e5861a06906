"""The ``streamsonic`` command line: ``main(argv) -> int``.

Subcommands live in ``streamsonic.commands``; ``run`` is the default, so
``tail -f metrics.log | streamsonic`` works. Errors become one line on stderr and a
distinct exit status (see ``streamsonic.errors``): a command line that argparse refuses is
64 (EX_USAGE), not argparse's 2. A closed stdout (``streamsonic ... | head -1``) ends the
command quietly with status 0. ``--help`` does not import torch.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any, NoReturn

from streamsonic import __version__, logs
from streamsonic.errors import EXIT_INTERRUPTED, StopSignal, StreamsonicError, UsageError

# One BLAS thread unless the user says otherwise (before anything loads NumPy): the daemon
# steps its streams as one matrix product per layer from one event loop, and a second BLAS
# thread on a small, shared machine makes those products slower, not faster.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("streamsonic.commands.run",
            "sonify live streams from stdin, a file, MQTT or NATS (the default command)"),
    "render": ("streamsonic.commands.render", "render a CSV file offline to MIDI/WAV and a plot"),
    "train": ("streamsonic.commands.train",
              "train the pitch or temporal model from MIDI files and scores"),
    "info": ("streamsonic.commands.info", "show what a checkpoint contains"),
    "convert": ("streamsonic.commands.convert",
                "write a checkpoint's torch-free weights file (.npz) for the CPU player"),
    "devices": ("streamsonic.commands.devices", "list audio devices and MIDI ports"),
    "demo": ("streamsonic.commands.demo", "play (or render) the embedded demo series"),
    "replay": ("streamsonic.commands.replay",
               "play a recording (run --record) again, with its original timing"),
    "check-config": ("streamsonic.commands.check_config",
                     "validate a config file and print the effective configuration"),
}

DESCRIPTION = """\
Hear your data. streamsonic reads numbers from stdin, MQTT or NATS, normalizes each stream
over a rolling window, lets the values steer a streaming LSTM trained on piano music, and
plays the notes live (FluidSynth audio or a MIDI port) or writes them to files.

examples:
  tail -f metrics.log | streamsonic                     play through the audio device
  printf '1\\n5\\n3\\n9\\n' | streamsonic --output file:out.mid
  tail -f metrics.log | streamsonic --output events     one JSON line per note
  streamsonic render series.csv --column price -o out.mid --plot out.png
  streamsonic --mqtt mqtt://broker --topic 'plant/+/temperature'
  streamsonic run series.txt --record session.jsonl     a file instead of stdin, recorded
  streamsonic replay session.jsonl --fast -o file:again.mid
  streamsonic check-config /etc/streamsonic/config.toml

Run 'streamsonic COMMAND --help' for a command's options."""


#: What ``--version`` prints, on every command.
VERSION = f"streamsonic {__version__}"


class Parser(argparse.ArgumentParser):
    """argparse with the documented usage status: a bad command line exits 64 (EX_USAGE)
    after the usage line and one error line, as argparse words them."""

    #: The subcommands' parsers, by name (the top-level parser's only).
    commands: dict[str, argparse.ArgumentParser]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No abbreviations: `demo --output audio:NAME` was taken as `--output-dir` and
        # rendered into a folder named "audio:NAME"; an option is spelt out or refused.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(UsageError.exit_status, f"{self.prog}: error: {message}\n")


def _load(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name][0])


def build_parser() -> Parser:
    """The full parser with every subcommand (each has ``--version``)."""
    parser = Parser(
        prog="streamsonic",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=VERSION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    parser.commands = {}
    for name, (_, summary) in COMMANDS.items():
        module = _load(name)
        p = sub.add_parser(
            name,
            help=summary,
            description=getattr(module, "DESCRIPTION", summary),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--version", action="version", version=VERSION,
                       help="show the version and exit")
        module.configure(p)
        parser.commands[name] = p
    return parser


def _stdout_gone() -> None:
    """stdout's reader went away: send what Python still has for it to /dev/null, so the
    interpreter's last flush at exit does not complain (as ``head`` and ``yes`` stay quiet)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no stdout descriptor: nothing to flush
        pass


def _with_default_command(argv: list[str]) -> list[str]:
    if not argv:
        return ["run"]
    first = argv[0]
    if first in COMMANDS or first in ("-h", "--help", "--version"):
        return argv
    if not first.startswith("-") and not os.path.lexists(first):
        # ``run FILE`` is the default; a misspelt command is no file either
        close = difflib.get_close_matches(first, COMMANDS, n=1, cutoff=0.75)
        if close:
            raise UsageError(f"{first!r} is neither a command nor an existing file; did you "
                             f"mean 'streamsonic {close[0]}'? (streamsonic --help lists the "
                             "commands)")
    return ["run", *argv]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    try:
        args_list = _with_default_command(list(sys.argv[1:] if argv is None else argv))
    except UsageError as err:
        print(logs.error_line(str(err)), file=sys.stderr)
        return err.exit_status
    parser = build_parser()
    args, rest = parser.parse_known_args(args_list)
    if rest:  # argparse would blame the top-level parser, with its usage: blame the command
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(rest)}")
    module = _load(args.command)
    try:
        return int(module.main(args))
    except StreamsonicError as err:
        print(logs.error_line(str(err)), file=sys.stderr)  # <3>error: ... under journald
        return err.exit_status
    except StopSignal as stop:
        print(f"streamsonic: stopped by {signal.Signals(stop.signum).name}", file=sys.stderr)
        return stop.exit_status
    except KeyboardInterrupt:
        print("streamsonic: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed by its reader: the end, not an error
        _stdout_gone()
        return 0


if __name__ == "__main__":
    sys.exit(main())
