"""Options shared by subcommands, and turning them into config overrides."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

from streamsonic import logs
from streamsonic.config import SCALE_NAMES, Config, find_config_file, load_config, parse_override
from streamsonic.errors import StopSignal


@dataclass
class Stopped:
    """The stop signal :func:`stop_signals` raised, if any (``signum`` 0: none)."""

    signum: int = 0

    @property
    def exit_status(self) -> int:
        """128 + the signal, as a shell reports it (0: no signal)."""
        return 128 + self.signum if self.signum else 0


@contextlib.contextmanager
def stop_signals() -> Iterator[Stopped]:
    """SIGTERM and SIGHUP raise :class:`StopSignal` (a KeyboardInterrupt) in the main
    thread while inside, as Ctrl-C raises KeyboardInterrupt, so that an offline command
    unwinds, giving up what it was writing or keeping what it finished, instead of dying
    with half a file; the handlers from before after. What it yields says which signal
    came (for a command that catches the interrupt itself, as training does)."""
    stopped = Stopped()
    if threading.current_thread() is not threading.main_thread():
        yield stopped
        return

    def stop(signum: int, _frame: FrameType | None) -> None:
        stopped.signum = signum
        raise StopSignal(signum)

    before = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield stopped
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


@dataclass(frozen=True)
class Option:
    """A command-line flag that overrides one config key."""

    flags: tuple[str, ...]
    key: str
    type: Any = str
    help: str = ""
    choices: tuple[str, ...] | None = None
    metavar: str | None = None


MUSIC_OPTIONS: tuple[Option, ...] = (
    Option(("--influence",), "model.influence", float,
           "0..1: 0 lets the model choose freely, 1 follows the data exactly (default 0.8)",
           metavar="X"),
    Option(("--temperature",), "model.temperature", float,
           "sampling temperature; 0 chooses greedily (default 0)", metavar="T"),
    Option(("--seed",), "model.seed", int, "random seed for sampling (default 0)", metavar="N"),
    Option(("--weights",), "model.weights", str,
           "pitch model checkpoint (default: weights/pitch.pt shipped with streamsonic)",
           metavar="PATH"),
    Option(("--temporal-weights",), "model.temporal_weights", str,
           "temporal model for --rhythm model: a checkpoint or its .npz (default: "
           "weights/temporal.pt)",
           metavar="PATH"),
    Option(("--rhythm",), "model.rhythm", str,
           "who decides note timing: the clock (default), or the temporal model",
           choices=("clock", "model")),
    Option(("--device",), "model.device", str,
           "where the LSTM runs (default auto: CUDA when present)",
           choices=("auto", "cpu", "cuda")),
    Option(("--scale",), "music.scale", str, "scale to play in (default major)",
           choices=SCALE_NAMES),
    Option(("--key",), "music.key", str, "tonic of the scale, e.g. C, F#, Bb (default C)",
           metavar="NOTE"),
    Option(("--low",), "music.low", int, "lowest MIDI pitch (default 50)", metavar="PITCH"),
    Option(("--high",), "music.high", int, "highest MIDI pitch (default 89)", metavar="PITCH"),
    Option(("--tempo",), "music.tempo", float, "beats per minute (default 120)", metavar="BPM"),
    Option(("--note-length",), "music.note_length", float,
           "note length in beats (default 0.5)", metavar="BEATS"),
    Option(("--program",), "music.program", int,
           "General MIDI program (0-127) for every stream without a [[voices]] rule; "
           "default -1: each stream its own, from music.palette", metavar="N"),
    Option(("--clock",), "clock.mode", str,
           "event (default): a note per sample as it arrives (rate-capped); tick: one note "
           "per stream per step at the tempo", choices=("event", "tick")),
    Option(("--step",), "clock.step", float,
           "beats between ticks (tick clock) and between rows (render) (default 0.5)",
           metavar="BEATS"),
    Option(("--max-rate",), "clock.max_rate", float,
           "event clock: at most this many notes per second per stream (default 16)",
           metavar="HZ"),
    Option(("--aggregate",), "clock.aggregate", str,
           "how samples faster than the cap are combined into one note (default anomalous: "
           "the most anomalous of them)", choices=("anomalous", "last", "mean", "min", "max")),
    Option(("--window",), "normalize.window", int,
           "rolling normalization window in samples (default 200)", metavar="N"),
    Option(("--normalize-mode",), "normalize.mode", str,
           "rolling normalization method (default auto: auto-ranging, keeps level, contour "
           "and magnitude)", choices=("auto", "rank", "robust", "minmax", "zscore")),
    Option(("--accent-threshold",), "accent.threshold", float,
           "anomaly score (0..1) from which a note is accented (default 0.5)",
           metavar="SCORE"),
    Option(("--soundfont",), "audio.soundfont", str,
           "General MIDI SoundFont (.sf2) for audio and wav: outputs (default: "
           "$STREAMSONIC_SOUNDFONT, else the system's, e.g. /usr/share/sounds/sf2/)",
           metavar="PATH"),
    Option(("--midi-api",), "midi.api", str,
           "MIDI backend for midi: and midi-virtual: outputs (default auto)",
           choices=("auto", "alsa", "jack")),
)

#: Flags of MUSIC_OPTIONS that only a live clock or a MIDI port uses: a render spaces its
#: rows by clock.step and writes files, so ``render`` and ``demo`` do not offer them.
LIVE_ONLY_KEYS = frozenset({"clock.mode", "clock.max_rate", "clock.aggregate", "midi.api"})

#: The music and model options of ``render`` and ``demo``.
RENDER_OPTIONS: tuple[Option, ...] = tuple(o for o in MUSIC_OPTIONS
                                           if o.key not in LIVE_ONLY_KEYS)


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """--config, --set and --log-level."""
    group = parser.add_argument_group("configuration")
    group.add_argument("--config", metavar="PATH",
                       help="config file (default: $STREAMSONIC_CONFIG, "
                            "~/.config/streamsonic/config.toml, /etc/streamsonic/config.toml)")
    group.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override any config key for this run, e.g. --set music.tempo=90 "
                            "(repeatable; VALUE is TOML)")
    group.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                       help="log verbosity on stderr (default info)")


def add_options(parser: argparse.ArgumentParser, options: tuple[Option, ...],
                title: str) -> argparse._ArgumentGroup:
    """Add ``options`` as flags whose dest is the config key, in a group of their own
    (returned, for flags of the same kind that are not config keys)."""
    group = parser.add_argument_group(title)
    for opt in options:
        group.add_argument(*opt.flags, dest=opt.key, type=opt.type, help=opt.help,
                           choices=opt.choices, metavar=opt.metavar, default=None)
    return group


def overrides_from(args: argparse.Namespace, options: tuple[Option, ...]) -> dict[str, Any]:
    """The config overrides that the user gave on the command line."""
    out: dict[str, Any] = {}
    for text in getattr(args, "set", []) or []:
        key, value = parse_override(text)
        out[key] = value
    for opt in options:
        value = getattr(args, opt.key, None)
        if value is not None:
            out[opt.key] = value
    if getattr(args, "log_level", None):
        out["daemon.log_level"] = args.log_level
    return out


def config_from(args: argparse.Namespace, options: tuple[Option, ...],
                extra: dict[str, Any] | None = None,
                extra_flags: dict[str, str] | None = None) -> Config:
    """Load the config file and apply command-line overrides (``extra``: more keys, set by
    the flags that ``extra_flags`` names, for error messages)."""
    overrides = overrides_from(args, options)
    if extra:
        overrides.update(extra)
    given = {opt.key: opt.flags[0] for opt in options if getattr(args, opt.key, None) is not None}
    given.update({key: flag for key, flag in (extra_flags or {}).items()
                  if key in (extra or {})})
    if getattr(args, "log_level", None):
        given["daemon.log_level"] = "--log-level"
    return load_config(find_config_file(getattr(args, "config", None)), overrides, given)


def setup_logging(level: str) -> None:
    """Log to stderr, one line per record (journald priorities under systemd: see
    ``streamsonic.logs``)."""
    logs.setup_logging(level)
