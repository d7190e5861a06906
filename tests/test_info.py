"""`streamsonic info` and `check-config`: a stdout that cannot be written is a write failure
(one line, exit 74), and a folder, device or FIFO given as a checkpoint is named as one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamsonic.cli import main as cli_main


@pytest.mark.parametrize("args", [["info", "--default-config"], ["check-config", "CONFIG"],
                                  ["info", "--json"]])
def test_stdout_on_a_full_disk_is_one_line_and_exit_74(args: list[str], tmp_path: Path):
    """``> /dev/full``: was a traceback, exit 1."""
    config = tmp_path / "config.toml"
    config.write_text("[daemon]\nlog_level = \"info\"\n")
    argv = [str(config) if a == "CONFIG" else a for a in args]
    with Path("/dev/full").open("w") as full:
        res = subprocess.run([sys.executable, "-m", "streamsonic", *argv], stdout=full,
                             stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    assert res.returncode == 74, res.stderr
    assert res.stderr == ("streamsonic: error: cannot write to standard output: No space left "
                          "on device\n")


def test_info_on_a_folder_says_it_is_a_folder(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]):
    """Was: "weights file adir does not exist"."""
    folder = tmp_path / "adir"
    folder.mkdir()
    assert cli_main(["info", str(folder)]) == 66
    err = capsys.readouterr().err
    assert err == (f"streamsonic: error: weights file {folder} is a folder; give a weights "
                   f"file (a .pt checkpoint or its .npz), e.g. {folder / 'pitch.pt'}\n")


@pytest.mark.parametrize(("command", "what"), [("info", "/dev/zero"), ("info", "fifo"),
                                               ("convert", "/dev/null"),
                                               ("convert", "fifo")])
def test_a_weights_file_that_is_not_a_regular_file_is_named_so(command: str, what: str,
                                                                tmp_path: Path):
    """Was: "weights file /dev/zero does not exist" (a device, a FIFO: they do exist). A
    FIFO is never opened, so nothing waits for a writer (the timeout would end it)."""
    path = tmp_path / "ff.pt" if what == "fifo" else Path(what)
    if what == "fifo":
        os.mkfifo(path)
    res = subprocess.run([sys.executable, "-m", "streamsonic", command, str(path)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 66, res.stderr
    assert res.stderr == (f"streamsonic: error: weights file {path} is not a regular file (a "
                          "device, a pipe or a socket); give a weights file (a .pt checkpoint "
                          "or its .npz)\n")
