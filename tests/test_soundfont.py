"""SoundFont discovery order and its error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamsonic.errors import SoundFontError
from streamsonic.soundfont import ENV_VAR, find_soundfont
from tests.components import missing


def sf2(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_bytes(b"RIFF")
    return path


def test_configured_path_wins(tmp_path: Path) -> None:
    mine = sf2(tmp_path, "mine.sf2")
    env_sf = sf2(tmp_path, "env.sf2")
    system = sf2(tmp_path, "system.sf2")
    found = find_soundfont(str(mine), env={ENV_VAR: str(env_sf)}, files=[str(system)])
    assert found == mine


def test_environment_before_system(tmp_path: Path) -> None:
    env_sf = sf2(tmp_path, "env.sf2")
    system = sf2(tmp_path, "system.sf2")
    assert find_soundfont("", env={ENV_VAR: str(env_sf)}, files=[str(system)]) == env_sf


def test_system_files_in_order_then_directories(tmp_path: Path) -> None:
    second = sf2(tmp_path, "b.sf2")
    found = find_soundfont("", env={}, files=[str(tmp_path / "missing.sf2"), str(second)],
                           directories=[])
    assert found == second
    folder = tmp_path / "dir"
    folder.mkdir()
    any_sf = sf2(folder, "Some_GM.sf2")
    assert find_soundfont("", env={}, files=[], directories=[str(folder)]) == any_sf


def test_missing_configured_path_is_not_replaced(tmp_path: Path) -> None:
    system = sf2(tmp_path, "system.sf2")
    with pytest.raises(SoundFontError, match=r"nope\.sf2.*does not exist"):
        find_soundfont(str(tmp_path / "nope.sf2"), env={}, files=[str(system)])


def test_bad_environment_path(tmp_path: Path) -> None:
    with pytest.raises(SoundFontError, match=rf"\${ENV_VAR}"):
        find_soundfont("", env={ENV_VAR: str(tmp_path / "gone.sf2")}, files=[])


def test_none_found_names_packages_and_flags() -> None:
    with pytest.raises(SoundFontError) as info:
        find_soundfont("", env={}, files=[], directories=[])
    text = str(info.value)
    for needle in ("fluid-soundfont-gm", "timgm6mb-soundfont", "--soundfont", "midi:"):
        assert needle in text
    assert "\n" not in text


def test_finds_the_debian_soundfont_on_this_machine() -> None:
    if not Path("/usr/share/sounds/sf2/TimGM6mb.sf2").is_file():
        missing("timgm6mb-soundfont is not installed (apt install timgm6mb-soundfont)")
    assert find_soundfont("", env={}).suffix == ".sf2"
