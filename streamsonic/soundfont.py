"""Finding a General MIDI SoundFont for the FluidSynth outputs.

Order: the configured path (``audio.soundfont`` / ``--soundfont``), then
``$STREAMSONIC_SOUNDFONT``, then the usual system locations of Debian/Ubuntu, Fedora, Arch,
openSUSE and macOS Homebrew. A configured path that does not exist is an error (it is never
silently replaced by another SoundFont).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from streamsonic.errors import SoundFontError

ENV_VAR = "STREAMSONIC_SOUNDFONT"

#: Files looked for, best first (FluidR3 is the larger, better-sounding GM set).
SYSTEM_SOUNDFONTS: tuple[str, ...] = (
    # Debian/Ubuntu: fluid-soundfont-gm, timgm6mb-soundfont, the alternatives symlink
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    # Fedora (fluid-soundfont-gm), Arch (soundfont-fluid), openSUSE
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/soundfonts/FluidR3_GM2-2.sf2",
    "/usr/share/sounds/sf2/FluidR3_GM2-2.sf2",
    "/usr/share/soundfonts/TimGM6mb.sf2",
    # macOS Homebrew (fluid-synth ships none; users drop one here) and local installs
    "/opt/homebrew/share/soundfonts/default.sf2",
    "/opt/homebrew/share/fluid-synth/sf2/VintageDreamsWaves-v2.sf2",
    "/usr/local/share/soundfonts/default.sf2",
    "/usr/local/share/sounds/sf2/FluidR3_GM.sf2",
)

#: Directories searched for any ``*.sf2`` when none of the files above exist.
SYSTEM_DIRECTORIES: tuple[str, ...] = (
    "/usr/share/sounds/sf2",
    "/usr/share/soundfonts",
    "/usr/local/share/soundfonts",
    "/opt/homebrew/share/soundfonts",
    "~/.local/share/soundfonts",
    "~/Library/Audio/Sounds/Banks",
)

INSTALL_HINT = (
    "install a General MIDI SoundFont (Debian/Ubuntu: apt install fluid-soundfont-gm or "
    "timgm6mb-soundfont; Fedora: dnf install fluid-soundfont-gm; Arch: pacman -S "
    "soundfont-fluid; macOS: put a .sf2 in /opt/homebrew/share/soundfonts/default.sf2), "
    f"or pass --soundfont PATH, set audio.soundfont in config.toml or ${ENV_VAR}, "
    "or use --output midi:NAME to play through another synthesizer"
)


def _usable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.R_OK)


def candidates(
    files: Sequence[str] = SYSTEM_SOUNDFONTS, directories: Sequence[str] = SYSTEM_DIRECTORIES
) -> Iterable[Path]:
    """System SoundFonts in the order they are tried."""
    for name in files:
        yield Path(name)
    for directory in directories:
        folder = Path(directory).expanduser()
        if folder.is_dir():
            yield from sorted(folder.glob("*.sf2"))


def find_soundfont(
    configured: str = "",
    *,
    env: dict[str, str] | None = None,
    files: Sequence[str] = SYSTEM_SOUNDFONTS,
    directories: Sequence[str] = SYSTEM_DIRECTORIES,
) -> Path:
    """The SoundFont to load; raises SoundFontError naming what to install when none exists."""
    environ = os.environ if env is None else env
    for origin, value in (("--soundfont / audio.soundfont", configured),
                          (f"${ENV_VAR}", environ.get(ENV_VAR, ""))):
        if not value:
            continue
        path = Path(value).expanduser()
        if not _usable(path):
            why = ("is a folder" if path.is_dir() else "is not readable" if path.exists()
                   else "does not exist")
            raise SoundFontError(
                f"SoundFont {str(path)!r} (from {origin}) {why}; pass an existing .sf2 file"
            )
        return path
    for path in candidates(files, directories):
        if _usable(path):
            return path
    raise SoundFontError(f"no General MIDI SoundFont found; {INSTALL_HINT}")
