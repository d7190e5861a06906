"""Error lines say what was wrong and what to do about it (a QA pass at 36e50ff found these
naming the wrong fix)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamsonic.cli import main
from streamsonic.config import load_config
from streamsonic.errors import CheckpointError, ConfigError, SoundFontError
from streamsonic.model.arrays import load_arrays
from streamsonic.soundfont import find_soundfont


@pytest.mark.parametrize(("typed", "meant"), [("rendr", "render"),
                                               ("chek-config", "check-config")])
def test_a_misspelt_command_is_named(typed: str, meant: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``streamsonic rendr x.csv`` was taken for ``run rendr``: "cannot read input file
    rendr", exit 66."""
    monkeypatch.chdir(tmp_path)
    assert main([typed, "x.csv"]) == 64
    err = capsys.readouterr().err
    assert f"did you mean 'streamsonic {meant}'" in err and err.count("\n") == 1


def test_an_existing_file_named_like_a_command_is_still_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rendr").write_text("1\n2\n")
    res = subprocess.run([sys.executable, "-m", "streamsonic", "rendr", "-o", "events"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) >= 2


def test_a_missing_config_file_names_how_to_make_one(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    """check-config takes the file as an argument: "pass an existing file to --config"
    named an option it does not have."""
    assert main(["check-config", str(tmp_path / "none.toml")]) == 78
    err = capsys.readouterr().err
    assert "does not exist" in err and "--default-config" in err and "to --config" not in err


def test_a_missing_temporal_model_names_the_temporal_fix(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"train temporal .* --temporal-weights"):
        load_arrays(tmp_path / "none.npz", kind="temporal")
    with pytest.raises(CheckpointError, match=r"train pitch .* --weights"):
        load_arrays(tmp_path / "none.npz", kind="pitch")


def test_a_soundfont_that_is_a_folder_is_called_one(tmp_path: Path) -> None:
    with pytest.raises(SoundFontError, match="is a folder"):
        find_soundfont(str(tmp_path), env={})
    with pytest.raises(SoundFontError, match="does not exist"):
        find_soundfont(str(tmp_path / "none.sf2"), env={})


def test_an_empty_record_name_is_a_usage_error() -> None:
    """``--record ''`` said "cannot write record file .: it is a folder"."""
    res = subprocess.run([sys.executable, "-m", "streamsonic", "--record", "", "-o", "events"],
                         input="1\n", capture_output=True, text=True, timeout=120,
                         check=False)
    assert res.returncode == 64, res.stderr
    assert "--record needs a file name" in res.stderr.splitlines()[-1]


def test_an_empty_list_setting_is_shown_as_written() -> None:
    """``--set output.targets=[]`` was shown as ``output.targets = ()``."""
    with pytest.raises(ConfigError, match=r"output\.targets = \[\]: name at least one output"):
        load_config(None, {"output.targets": []})


def test_a_resume_state_is_no_checkpoint_name(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``train -o out/a.pt.resume`` was taken, writing over another run's resume state."""
    (tmp_path / "data").mkdir()
    assert main(["train", "pitch", str(tmp_path / "data"), "-o",
                 str(tmp_path / "a.pt.resume")]) == 64
    assert "resume state" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_file_input_is_named_in_its_warnings(tmp_path: Path) -> None:
    """``run FILE``: the skipped lines' warnings name the file (they said "stdin line 2")."""
    data = tmp_path / "in.txt"
    data.write_text("1\nx\n2\n")
    res = subprocess.run([sys.executable, "-m", "streamsonic", "run", str(data), "-o",
                          "events"], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert f"{data} line 2: skipped not_numeric" in res.stderr
    assert "stdin line" not in res.stderr
