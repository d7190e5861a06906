"""`streamsonic convert`: where the .npz goes is checked before anything is written, and a
write that fails leaves no partial file (README: exit statuses, Training)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streamsonic.cli import main as cli_main
from tests.test_train import limited_writes, listing


@pytest.fixture
def checkpoint(random_pitch_checkpoint: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    return Path(shutil.copy(random_pitch_checkpoint, folder / "ok.pt"))


@pytest.mark.parametrize("where", ["folder", "under a file"])
def test_convert_to_an_unusable_path_is_one_line_and_writes_nothing(
        where: str, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Was: IsADirectoryError / NotADirectoryError tracebacks (exit 1), and d.npz.tmp left
    beside the folder."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "d.npz").mkdir()
    (out_dir / "afile").write_text("a file")
    out = {"folder": out_dir / "d.npz", "under a file": out_dir / "afile" / "x.npz"}[where]
    before = listing(out_dir)
    status = cli_main(["convert", str(checkpoint), "-o", str(out)])
    err = capsys.readouterr().err
    assert status == 69, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert {"folder": f"cannot write weights file {out}: it is a folder; give -o a file name",
            "under a file": f"{out_dir / 'afile'} is a file, not a folder"}[where] in err
    assert listing(out_dir) == before
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["ok.pt"]


def test_convert_write_failure_keeps_the_old_file_and_exits_74(checkpoint: Path,
                                                               tmp_path: Path):
    """A write that fails part way (files may not grow past 64 KiB, as on a full disk): one
    line naming the file and the cause, exit 74, the earlier .npz as it was, no temporary
    file. Was: a traceback (exit 1) and OUT.npz.tmp left at 64 KiB."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "x.npz"
    out.write_bytes(b"the previous weights")
    res = subprocess.run([sys.executable, "-m", "streamsonic", "convert", str(checkpoint),
                          "-o", str(out)], capture_output=True, text=True, timeout=120,
                         check=False, preexec_fn=lambda: limited_writes(64 * 1024))
    assert res.returncode == 74, res.stderr
    assert res.stderr == (f"streamsonic: error: cannot write weights file {out}: File too "
                          f"large; {out} was left as it was\n")
    assert listing(out_dir) == {"x.npz": b"the previous weights"}
