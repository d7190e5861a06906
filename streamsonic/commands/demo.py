"""`streamsonic demo`: the embedded demo series, played live or rendered to files.

The demo first renders the series to the output directory (MIDI, WAV, a plot and the
event log, through ``render_file``), then, when an audio device opens, plays the logged
notes live through FluidSynth on a real-time clock. Without one (a server, CI, a
container) it says why and prints how to play the files. Rendering happens before the
audio stream opens, so the heavy work (torch, matplotlib) never starves the callback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from streamsonic.commands.common import (
    RENDER_OPTIONS,
    add_config_options,
    add_options,
    config_from,
    setup_logging,
    stop_signals,
)
from streamsonic.commands.printing import write_stdout
from streamsonic.config import Config
from streamsonic.errors import (
    MissingExtraError,
    OutputError,
    OutputWriteError,
    SoundFontError,
    UsageError,
)
from streamsonic.events import NoteEvent
from streamsonic.extras import require_extra
from streamsonic.sinks.base import Sink

if TYPE_CHECKING:
    from streamsonic.music import Earcon
    from streamsonic.outputs import OutputSpec

log = logging.getLogger(__name__)

#: Debian's timgm6mb-soundfont, named in the hint we print when no SoundFont is found.
DEBIAN_SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
#: Seconds of silence before the first live note (the audio stream settles).
LEAD_IN = 0.3
#: Seconds the last live note is given to ring out before the audio stream closes.
RING_OUT = 1.5

DESCRIPTION = """\
Play the embedded demo series: one made-up day of a web server's load, a row every
5 minutes, with a daily rhythm, a runaway process pinning the CPU from 14:30 to 15:10 and
a crash at 20:00. Listen for the high, loud run and the sudden drop.

It renders MIDI, WAV, a plot and the event log into the output directory, then plays
the notes live through FluidSynth when there is an audio device; without one it prints
how to play the files. --output plays them live elsewhere: another audio device
(audio:NAME, see 'streamsonic devices') or a MIDI port (midi:NAME, midi-virtual:NAME);
one that cannot be opened is an error. The music and model options are those of
'streamsonic render'.

examples:
  streamsonic demo
  streamsonic demo --output audio:USB
  streamsonic demo --output midi-virtual:streamsonic
  streamsonic demo --column requests --scale minor-pentatonic --influence 0.5
  streamsonic demo --files --output-dir /tmp/demo"""

COLUMNS = ("cpu", "requests")
#: What ``demo --output`` may name: outputs that play live (the files are rendered anyway).
LIVE_KINDS = ("audio", "midi", "midi-virtual")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the demo options."""
    parser.add_argument("--column", choices=COLUMNS, default="cpu",
                        help="which series to play (default cpu)")
    parser.add_argument("--output-dir", metavar="DIR", default="demo-output",
                        help="where the files go (default ./demo-output)")
    parser.add_argument("--files", action="store_true",
                        help="render to files even when an audio device exists; play nothing")
    parser.add_argument("-o", "--output", metavar="SPEC",
                        help="where to play the demo live: audio[:DEVICE] (default: the "
                             "default audio device, files only when there is none), "
                             "midi:NAME, midi-virtual:NAME")
    add_options(parser, RENDER_OPTIONS, "music and model")
    add_config_options(parser)


def main(args: argparse.Namespace) -> int:
    """Play the demo, or render it to files when there is no audio device."""
    from streamsonic.outputs import parse_output  # noqa: PLC0415 - lazy backend

    if args.files and args.output is not None:
        raise UsageError("--files plays nothing: drop --output, or --files to play live")
    live = parse_output(args.output) if args.output is not None else None
    if live is not None and live.kind not in LIVE_KINDS:
        raise UsageError(f"demo --output plays the demo live: audio[:DEVICE], midi:NAME or "
                         f"midi-virtual:NAME, not {args.output!r}; the MIDI, WAV and events "
                         "files are written to --output-dir anyway")
    config = config_from(args, RENDER_OPTIONS)
    setup_logging(config.daemon.log_level)
    out_dir = Path(args.output_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the demo's output directory {out_dir}: "
                          f"{err.strerror}; pass another one with --output-dir") from None
    with stop_signals():  # SIGTERM, SIGHUP: no file written, none replaced
        files = _render(config, args.column, out_dir)
    audio = None if args.files else _open_audio(config, live, files)
    if audio is None:
        _print_files(files, config, "The demo was rendered to files" if args.files else
                     "No usable audio device, so the demo was rendered to files")
        if not args.files:
            write_stdout("On a machine with speakers, 'streamsonic demo' plays it live.\n")
        return 0
    try:
        # Ctrl-C, SIGTERM and SIGHUP (StopSignal, exit 130, 143, 129) end the playback alike:
        # the scheduler and the output close (the notes sounding are silenced), the files
        # are listed, and the CLI names the signal.
        with stop_signals(), audio:
            notes = _read_events(files["events"])
            end = max(n.start + n.duration for n in notes)
            write_stdout(f"streamsonic demo: playing {len(notes)} notes of the "
                         f"{args.column!r} series live ({end:.0f} s); Ctrl-C stops.\n")
            from streamsonic.music import earcon_for  # noqa: PLC0415 - numpy import

            asyncio.run(_play(notes, audio, earcon_for(config.accent)))
    except KeyboardInterrupt:
        _print_files(files, config, "The demo's files")
        raise
    _print_files(files, config, "The demo's files")
    return 0


@contextlib.contextmanager
def demo_series() -> Iterator[Path]:
    """The embedded CSV as a file path (package data: ``streamsonic/data/demo.csv``)."""
    with resources.as_file(resources.files("streamsonic") / "data" / "demo.csv") as path:
        yield path


def _open_audio(config: Config, live: OutputSpec | None,
                files: dict[str, Path]) -> Sink | None:
    """The live output: ``live`` (``--output``; an error, after the files are listed, when
    it cannot be opened), else the default audio device or None (with the reason logged)
    when there is none."""
    from streamsonic.outputs import open_output, parse_output  # noqa: PLC0415 - lazy backend

    try:
        return open_output(live or parse_output("audio"), config)
    except OutputError as err:
        if live is not None:
            _print_files(files, config, "The demo was rendered to files")
            raise
        log.warning("no live audio: %s", err)
        return None


def _render(config: Config, column: str, out_dir: Path) -> dict[str, Path]:
    """Render the demo series into ``out_dir``; return the files by kind.

    Without a SoundFont the WAV file is left out (with a warning) and the rest is rendered;
    so is the plot without matplotlib (the 'plot' extra).
    """
    files = {"wav": out_dir / "demo.wav", "mid": out_dir / "demo.mid",
             "events": out_dir / "demo.jsonl", "png": out_dir / "demo.png"}
    try:
        require_extra("matplotlib", "the demo's plot")
    except MissingExtraError as err:
        log.warning("no plot: %s", err)
        del files["png"]
    try:
        _render_files(config, column, files)
    except SoundFontError as err:
        log.warning("no WAV file (%s); rendering MIDI, plot and events only", err)
        del files["wav"]
        _render_files(config, column, files)
    return files


def _render_files(config: Config, column: str, files: dict[str, Path]) -> None:
    """``render_file`` on the embedded series; the events log goes to ``files["events"]``.

    The events log is written beside it under a temporary name and renamed when complete,
    like the other files: a failed or stopped render leaves no partial log and an earlier
    one as it was. A failed write is one OutputWriteError (exit 74) naming the file.
    """
    from streamsonic.render import render_file  # noqa: PLC0415 - torch import

    outputs = [f"file:{files['mid']}", "events"]
    if "wav" in files:
        outputs.append(f"wav:{files['wav']}")
    path = files["events"]
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as err:
        raise OutputWriteError(f"cannot write the demo's events file {path}: "
                               f"{err.strerror}; pass another folder with --output-dir"
                               ) from None
    tmp = Path(tmp_name)
    raw = io.FileIO(fd, "w")
    raw.name = str(path)  # the events output's messages name the file, not stdout
    try:
        with demo_series() as series, io.TextIOWrapper(raw, encoding="utf-8") as events, \
                contextlib.redirect_stdout(events):
            render_file(config, str(series), column=column, outputs=outputs,
                        plot=str(files["png"]) if "png" in files else None)
        tmp.replace(path)
    except OSError as err:  # closing (the last flush) or renaming the log
        raise OutputWriteError(f"cannot write the demo's events file {path}: "
                               f"{err.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _read_events(path: Path) -> list[NoteEvent]:
    """The notes of an ``events`` log, in order."""
    with path.open(encoding="utf-8") as fh:
        return [NoteEvent(**json.loads(line)) for line in fh if line.strip()]


async def _play(notes: list[NoteEvent], sink: Sink, earcon: Earcon | None) -> None:
    """Play rendered notes (start times from 0) on the real-time clock into ``sink``."""
    from streamsonic.scheduler import Scheduler  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    scheduler = Scheduler(loop, [sink], earcon=earcon)
    t0 = loop.time() + scheduler.latency + LEAD_IN
    try:
        for note in notes:
            scheduler.play(dataclasses.replace(note, start=t0 + note.start))
        await asyncio.sleep(max(0.0, scheduler.end_time - loop.time()) + RING_OUT)
    finally:
        scheduler.close()


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _soundfont_hint(config: Config) -> str:
    """The SoundFont to name in the fluidsynth command we suggest."""
    from streamsonic.soundfont import find_soundfont  # noqa: PLC0415

    try:
        return str(find_soundfont(config.audio.soundfont))
    except SoundFontError:
        return DEBIAN_SOUNDFONT


def _print_files(files: dict[str, Path], config: Config, head: str) -> None:
    """Say where the files are and how to play them."""
    labels = {
        "wav": "audio; play it: aplay {path}",
        "mid": "MIDI; play it: fluidsynth -a alsa {soundfont} {path}",
        "events": "one JSON line per note",
        "png": "the data and the notes on one plot",
    }
    soundfont = _soundfont_hint(config)
    shown = {kind: _shown(path) for kind, path in files.items()}
    width = max(map(len, shown.values()))
    lines = [f"{head} (in {_shown(files['mid'].parent)}/):"]
    lines.extend(f"  {text:<{width}}  " + labels[kind].format(path=text, soundfont=soundfont)
                 for kind, text in shown.items())
    write_stdout("".join(line + "\n" for line in lines))
