"""The ``streamsonic`` command line: ``main(argv) -> int``.

Subcommands live in ``streamsonic.commands``; ``run`` is the default, so
``tail -f metrics.log | streamsonic`` works. Errors become one line on stderr and a
distinct exit status (see ``streamsonic.errors``). ``--help`` does not import torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from streamsonic import __version__
from streamsonic.errors import EXIT_INTERRUPTED, StreamsonicError

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("streamsonic.commands.run", "sonify live streams from stdin or MQTT (default)"),
    "render": ("streamsonic.commands.render", "render a CSV file offline to MIDI/WAV and a plot"),
    "train": ("streamsonic.commands.train", "train the pitch or temporal model from MIDI files"),
    "info": ("streamsonic.commands.info", "show what a checkpoint contains"),
    "devices": ("streamsonic.commands.devices", "list audio devices and MIDI ports"),
    "demo": ("streamsonic.commands.demo", "play (or render) the embedded demo series"),
}

DESCRIPTION = """\
Hear your data. streamsonic reads numbers from stdin or MQTT, normalizes each stream over
a rolling window, lets the values steer a streaming LSTM trained on piano music, and plays
the notes live (FluidSynth audio or a MIDI port) or writes them to files.

examples:
  tail -f metrics.log | streamsonic                     play through the audio device
  printf '1\\n5\\n3\\n9\\n' | streamsonic --output file:out.mid
  tail -f metrics.log | streamsonic --output events     one JSON line per note
  streamsonic render series.csv --column price -o out.mid --plot out.png
  streamsonic --mqtt mqtt://broker --topic 'plant/+/temperature'

Run 'streamsonic COMMAND --help' for a command's options."""


def _load(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name][0])


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="streamsonic",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"streamsonic {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, summary) in COMMANDS.items():
        module = _load(name)
        p = sub.add_parser(
            name,
            help=summary,
            description=getattr(module, "DESCRIPTION", summary),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(p)
    return parser


def _with_default_command(argv: list[str]) -> list[str]:
    if not argv:
        return ["run"]
    first = argv[0]
    if first in COMMANDS or first in ("-h", "--help", "--version"):
        return argv
    return ["run", *argv]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args_list = _with_default_command(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args = parser.parse_args(args_list)
    module = _load(args.command)
    try:
        return int(module.main(args))
    except StreamsonicError as err:
        print(f"streamsonic: error: {err}", file=sys.stderr)
        return err.exit_status
    except KeyboardInterrupt:
        print("streamsonic: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
