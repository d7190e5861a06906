"""`streamsonic convert`: where the .npz goes is checked before anything is written, and a
write that fails leaves no partial file (README: exit statuses, Training)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from streamsonic.cli import main as cli_main
from streamsonic.model.arrays import load_arrays
from streamsonic.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from streamsonic.model.network import TemporalLSTM
from streamsonic.model.temporal import TimingEncoding
from tests.conftest import CLASSES
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


@pytest.mark.parametrize("how", ["-o a symlink to it", "the default .npz a symlink to it",
                                 "-o a hard link to it"])
def test_convert_refuses_an_output_that_is_its_checkpoint(how: str, checkpoint: Path,
                                                          capsys: pytest.CaptureFixture[str]):
    """Was: "wrote link.npz", exit 0, and the checkpoint behind the link replaced by the
    .npz's bytes (the .pt lost). Refused before anything is read or written, exit 64."""
    before = checkpoint.read_bytes()
    out = checkpoint.with_name("link.npz")
    if how == "the default .npz a symlink to it":
        out = checkpoint.with_suffix(".npz")  # ok.npz -> ok.pt
    if "hard link" in how:
        out.hardlink_to(checkpoint)
    else:
        out.symlink_to(checkpoint.name)
    argv = ["convert", str(checkpoint)] + ([] if "default" in how else ["-o", str(out)])
    status = cli_main(argv)
    err = capsys.readouterr().err
    assert status == 64, err
    kind = "hard link" if "hard link" in how else "symlink"
    where = (f"{out} (where its .npz goes by default)" if "default" in how else f"-o {out}")
    fix = f"remove {out} or give -o another name" if "default" in how else "give -o another name"
    assert err == (f"streamsonic: error: {where} is the checkpoint {checkpoint} itself (a "
                   f"{kind} to it): writing it would replace the checkpoint; {fix}\n")
    assert checkpoint.read_bytes() == before
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == sorted(["ok.pt", out.name])
    assert out.is_symlink() == (kind == "symlink")


def test_convert_replaces_a_symlink_at_its_output_never_writes_through_it(
        checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A symlink at the output's name that leads to another file (here another checkpoint):
    the link is replaced by the .npz, what it led to is left as it was. Was: written
    through, the other checkpoint replaced by the .npz's bytes."""
    other = tmp_path / "other.pt"
    other.write_bytes(checkpoint.read_bytes() + b"another")
    out = checkpoint.with_suffix(".npz")
    out.symlink_to(other)
    assert cli_main(["convert", str(checkpoint)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {out} (pitch model, ")
    assert printed.endswith(f"; it replaces a symlink to {other}, left as it was\n")
    assert not out.is_symlink() and out.is_file()
    assert other.read_bytes() == checkpoint.read_bytes() + b"another"
    assert load_arrays(out).weights_sha256 == load_checkpoint(checkpoint).weights_sha256
    mask = os.umask(0)
    os.umask(mask)
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~mask)  # a new file's, not the link's


def test_convert_of_a_weights_file_says_it_is_one(checkpoint: Path,
                                                  capsys: pytest.CaptureFixture[str]):
    """Was: "ok.npz is not a streamsonic checkpoint (cannot be loaded safely:
    RuntimeError)", exit 66, for the .npz convert itself wrote. Now a usage error (64)
    saying convert takes the .pt, and nothing written."""
    npz = checkpoint.with_suffix(".npz")
    assert cli_main(["convert", str(checkpoint)]) == 0
    capsys.readouterr()
    before = npz.read_bytes()
    assert cli_main(["convert", str(npz), "-o", str(checkpoint.with_name("again.npz"))]) == 64
    assert capsys.readouterr().err == (
        f"streamsonic: error: {npz} is already a torch-free weights file (.npz): convert takes "
        f"a .pt checkpoint and writes its .npz; --weights, --temporal-weights and info read "
        f"{npz} as it is\n")
    assert npz.read_bytes() == before
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["ok.npz", "ok.pt"]


@pytest.mark.parametrize("command", ["convert", "info"])
def test_a_weights_file_named_pt_is_named_as_one(command: str, checkpoint: Path,
                                                 capsys: pytest.CaptureFixture[str]):
    """A .npz under a .pt name (what the symlink bug above left behind): was "x.pt is not a
    streamsonic checkpoint (cannot be loaded safely: RuntimeError)"."""
    assert cli_main(["convert", str(checkpoint)]) == 0
    capsys.readouterr()
    renamed = checkpoint.with_name("x.pt")
    checkpoint.with_suffix(".npz").rename(renamed)
    assert cli_main([command, str(renamed)]) == 66
    assert capsys.readouterr().err == (
        f"streamsonic: error: {renamed} is a torch-free weights file (the .npz format), not a "
        f".pt checkpoint; name it x.npz: --weights, --temporal-weights and info read a .npz "
        "as it is\n")


def test_a_converted_temporal_model_plays_from_its_npz(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]):
    """convert temporal.pt wrote temporal.npz and info read it, but --temporal-weights
    temporal.npz said "temporal.npz is not a streamsonic checkpoint" (exit 66). Now the
    .npz plays the same notes, rhythm included, as its checkpoint."""
    timing = TimingEncoding()
    torch.manual_seed(7)
    net = TemporalLSTM(len(CLASSES), timing.n_gap, timing.n_duration, timing.input_size,
                       hidden1=16, hidden2=12)
    arch = {**net.arch(), **timing.to_dict(),
            "default_timing": {"gap": 0.5, "duration": 1.0, "velocity": 90.0}}
    pt = tmp_path / "t.pt"
    save_checkpoint(pt, Checkpoint(kind="temporal", arch=arch, classes=CLASSES,
                                   state_dict=net.state_dict()), arrays=False)
    assert cli_main(["convert", str(pt)]) == 0
    data = tmp_path / "in.csv"
    data.write_text("".join(f"{(i * 7) % 11}\n" for i in range(40)))
    played = {}
    for weights in ("t.pt", "t.npz"):
        capsys.readouterr()
        assert cli_main(["render", str(data), "--rhythm", "model", "--temporal-weights",
                         str(tmp_path / weights), "-o", "events", "--seed", "3"]) == 0, \
            capsys.readouterr().err
        played[weights] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(played["t.npz"]) == 40
    assert played["t.npz"] == played["t.pt"]
