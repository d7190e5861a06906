"""Malformed checkpoints that the safe loader accepts are refused with a line saying what is
wrong (exit 66), and a checksum of the weights catches a damaged file."""

from __future__ import annotations

import math
import os
import re
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from streamsonic.errors import CheckpointError
from streamsonic.model.arrays import arrays_path, file_digest, save_arrays
from streamsonic.model.checkpoint import (
    Checkpoint,
    default_weights,
    load_checkpoint,
    save_checkpoint,
    weights_digest,
)
from streamsonic.model.network import PitchLSTM, TemporalLSTM
from streamsonic.model.temporal import TimingEncoding, temporal_parts

REPO = Path(__file__).resolve().parents[1]
CLASSES = [60, 62, 64, 65, 67]

Mutation = Callable[[dict[str, Any]], None]


def pitch_file(path: Path) -> Path:
    torch.manual_seed(0)
    net = PitchLSTM(len(CLASSES), hidden1=8)
    save_checkpoint(path, Checkpoint(kind="pitch", arch=net.arch(), classes=CLASSES,
                                     state_dict=net.state_dict(), seq_len=12,
                                     meta={"data": {"n_files": 2}, "created": "today"}))
    return path


def temporal_file(path: Path) -> Path:
    torch.manual_seed(0)
    timing = TimingEncoding()
    net = TemporalLSTM(len(CLASSES), timing.n_gap, timing.n_duration, timing.input_size,
                       hidden1=8, hidden2=6)
    arch = {**net.arch(), **timing.to_dict(),
            "default_timing": {"gap": 0.5, "duration": 1.0, "velocity": 90.0}}
    save_checkpoint(path, Checkpoint(kind="temporal", arch=arch, classes=CLASSES,
                                     state_dict=net.state_dict()))
    return path


def mutated(path: Path, mutate: Mutation, rehash: bool = True) -> Path:
    """``path`` changed by ``mutate`` as a writer could have got it wrong; the checksum is
    recomputed (``rehash``) so that each check is reached on its own."""
    data = torch.load(path, weights_only=True)
    mutate(data)
    if rehash and isinstance(data.get("state_dict"), dict):
        try:
            data["weights_sha256"] = weights_digest(data["state_dict"])
        except (AttributeError, TypeError):
            data.pop("weights_sha256", None)
    out = path.with_name("bad-" + path.name)
    torch.save(data, out)
    return out


def first_weight(data: dict[str, Any]) -> torch.Tensor:
    return data["state_dict"]["lstm1.weight_hh_l0"]


PITCH_CASES: dict[str, tuple[Mutation, str]] = {
    "classes-empty": (lambda d: d.update(classes=[]), r"classes\) is \[\]"),
    "classes-one": (lambda d: d.update(classes=[60]), "two or more"),
    "classes-out-of-range": (lambda d: d["classes"].__setitem__(-1, 200), "holds 200"),
    "classes-negative": (lambda d: d["classes"].__setitem__(0, -1), "holds -1"),
    "classes-not-int": (lambda d: d["classes"].__setitem__(0, 60.5), "holds 60.5"),
    "classes-unsorted": (lambda d: d["classes"].reverse(), "not strictly ascending"),
    "classes-duplicate": (lambda d: d["classes"].__setitem__(1, 60), "not strictly ascending"),
    "classes-not-list": (lambda d: d.update(classes="CDE"), "is 'CDE'"),
    "n-classes-mismatch": (lambda d: d["arch"].update(n_classes=6), "arch.n_classes is 6"),
    "hidden-negative": (lambda d: d["arch"].update(hidden1=-5), "arch.hidden1 is -5"),
    "hidden-zero": (lambda d: d["arch"].update(hidden2=0), "arch.hidden2 is 0"),
    "hidden-huge": (lambda d: d["arch"].update(hidden1=10**9), "arch.hidden1 is 1000000000"),
    "hidden-float": (lambda d: d["arch"].update(hidden1=8.0), "arch.hidden1 is 8.0"),
    "hidden-missing": (lambda d: d["arch"].pop("hidden1"), "arch.hidden1 is None"),
    "hidden-vs-shapes": (lambda d: d["arch"].update(hidden1=16), "has shape"),
    "input-size": (lambda d: d["arch"].update(input_size=3), "arch.input_size is 3"),
    "arch-not-table": (lambda d: d.update(arch=[8]), "arch is a list"),
    "weights-nan": (lambda d: first_weight(d).view(-1).__setitem__(0, math.nan), "NaN"),
    "weights-inf": (lambda d: first_weight(d).view(-1).__setitem__(3, -math.inf), "infinite"),
    "weights-int": (lambda d: d["state_dict"].update(
        {"head.bias": torch.zeros(len(CLASSES), dtype=torch.int64)}), "torch.int64"),
    "weights-missing": (lambda d: d["state_dict"].pop("head.bias"), r"lack \['head.bias'\]"),
    "weights-extra": (lambda d: d["state_dict"].update(x=torch.zeros(1)), r"unexpected \['x'\]"),
    "weights-not-tensor": (lambda d: d["state_dict"].update({"head.bias": 3}), "named tensors"),
    "seq-len": (lambda d: d.update(seq_len=-1), "seq_len is -1"),
    "kind": (lambda d: d.update(kind="banana"), "kind is 'banana'"),
    "meta-not-table": (lambda d: d.update(meta="x"), "meta is a str"),
    "meta-data-not-table": (lambda d: d["meta"].update(data="x"), "meta.data is a str"),
    "meta-training-list": (lambda d: d["meta"].update(training=[1]), "meta.training is a list"),
    "meta-created": (lambda d: d["meta"].update(created=5), "meta.created is 5"),
    "checksum-not-hex": (lambda d: d.update(weights_sha256="x"), "not a sha256"),
}


@pytest.mark.parametrize("case", sorted(PITCH_CASES))
def test_malformed_pitch_checkpoint_is_refused(case: str, tmp_path: Path) -> None:
    mutate, reason = PITCH_CASES[case]
    path = mutated(pitch_file(tmp_path / "p.pt"), mutate,
                   rehash=case != "checksum-not-hex")
    with pytest.raises(CheckpointError, match=reason) as info:
        load_checkpoint(path)
    assert "malformed checkpoint" in str(info.value) and str(path) in str(info.value)


TEMPORAL_CASES: dict[str, tuple[Mutation, str]] = {
    "grid-empty": (lambda d: d["arch"].update(gap_grid=[]), "arch.gap_grid is"),
    "grid-negative": (lambda d: d["arch"]["duration_grid"].__setitem__(0, -1.0),
                      "arch.duration_grid is"),
    "grid-nan": (lambda d: d["arch"]["gap_grid"].__setitem__(0, math.nan), "arch.gap_grid is"),
    "grid-length": (lambda d: d["arch"]["gap_grid"].pop(), "do not have n_gap"),
    "input-size": (lambda d: d["arch"].update(input_size=3), "arch.input_size is 3"),
    "n-gap-huge": (lambda d: d["arch"].update(n_gap=10**6), "arch.n_gap is 1000000"),
    "default-timing": (lambda d: d["arch"].update(default_timing={"gap": 0}),
                       "arch.default_timing"),
    "default-velocity": (lambda d: d["arch"]["default_timing"].update(velocity=500),
                         "arch.default_timing"),
}


@pytest.mark.parametrize("case", sorted(TEMPORAL_CASES))
def test_malformed_temporal_checkpoint_is_refused(case: str, tmp_path: Path) -> None:
    mutate, reason = TEMPORAL_CASES[case]
    path = mutated(temporal_file(tmp_path / "t.pt"), mutate)
    with pytest.raises(CheckpointError, match=reason):
        load_checkpoint(path)


def test_valid_files_load_and_build(tmp_path: Path) -> None:
    pitch = load_checkpoint(pitch_file(tmp_path / "p.pt"), kind="pitch")
    pitch.pitch_network()
    assert pitch.weights_sha256 == weights_digest(pitch.state_dict)
    temporal_parts(load_checkpoint(temporal_file(tmp_path / "t.pt"), kind="temporal"))


# -- the checksum --------------------------------------------------------------------------

def test_changed_weight_with_the_old_checksum_is_corrupted(tmp_path: Path) -> None:
    """One weight changed to another finite value: only the checksum can tell."""
    def nudge(d: dict[str, Any]) -> None:
        first_weight(d).view(-1)[0] += 0.001

    path = mutated(pitch_file(tmp_path / "p.pt"), nudge, rehash=False)
    with pytest.raises(CheckpointError, match="do not match their sha256 checksum"):
        load_checkpoint(path)


def test_checkpoint_without_checksum_loads_and_info_says_so(tmp_path: Path) -> None:
    path = mutated(pitch_file(tmp_path / "p.pt"), lambda d: d.pop("weights_sha256"),
                   rehash=False)
    ckpt = load_checkpoint(path)
    assert ckpt.weights_sha256 is None
    result = cli("info", str(path))
    assert result.returncode == 0, result.stderr
    assert "weights:     none: saved before checksums" in result.stdout


def test_digest_covers_names_shapes_and_bytes() -> None:
    a = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    assert weights_digest(a) == weights_digest({"w": a["w"].clone()})
    assert weights_digest(a) != weights_digest({"v": a["w"]})
    assert weights_digest(a) != weights_digest({"w": a["w"].reshape(3, 2)})
    assert weights_digest(a) != weights_digest({"w": a["w"].t()})  # same numbers, moved
    b = a["w"].clone()
    b[1, 2] = torch.nextafter(b[1, 2], torch.tensor(6.0))  # one float32 ulp
    assert weights_digest(a) != weights_digest({"w": b})


@pytest.mark.parametrize("kind", ["pitch", "temporal"])
def test_shipped_weights_carry_a_verified_checksum(kind: str) -> None:
    ckpt = load_checkpoint(default_weights(kind), kind=kind)
    assert ckpt.weights_sha256 is not None
    assert ckpt.weights_sha256 == weights_digest(ckpt.state_dict)


def corrupt_middle(src: Path, dst: Path, size: int = 4096) -> None:
    """``src`` with ``size`` bytes in the middle overwritten by finite float32 values (a
    disk or copy error that NaN checks cannot see)."""
    data = bytearray(src.read_bytes())
    start = (len(data) // 2) & ~3
    data[start:start + size] = struct.pack("<f", 0.25) * (size // 4)
    dst.write_bytes(bytes(data))


# -- through the command line --------------------------------------------------------------

def cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("STREAMSONIC_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "streamsonic", *args], cwd=REPO,
                          input=stdin.decode(), capture_output=True, text=True, timeout=120,
                          check=False, env=env)


def test_shipped_pitch_with_4_kib_corrupted_is_refused(tmp_path: Path) -> None:
    """Before the checksum, such a copy of weights/pitch.pt loaded and played."""
    bad = tmp_path / "pitch.pt"
    corrupt_middle(default_weights("pitch"), bad)
    with pytest.raises(CheckpointError, match="do not match their sha256 checksum"):
        load_checkpoint(bad)
    for args in (["info", str(bad)], ["run", "--output", "events", "--weights", str(bad)]):
        result = cli(*args, stdin=b"1\n2\n")
        assert result.returncode == 66, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert "corrupted" in line and str(bad) in line
        assert result.stdout == ""


@pytest.mark.parametrize("case", ["weights-nan", "hidden-negative", "classes-out-of-range",
                                  "classes-empty", "hidden-huge", "meta-data-not-table"])
def test_cli_info_and_run_exit_66_with_one_line(case: str, tmp_path: Path) -> None:
    """`info` exited 0 on three of these, `run` with a traceback (exit 1) on most."""
    mutate, reason = PITCH_CASES[case]
    path = mutated(pitch_file(tmp_path / "p.pt"), mutate)
    for args in (["info", str(path)], ["run", "--output", "events", "--weights", str(path)]):
        result = cli(*args, stdin=b"1\n2\n")
        assert result.returncode == 66, (args, result.stderr)
        [line] = result.stderr.strip().splitlines()
        assert "malformed checkpoint" in line and re.search(reason, line), line


def test_info_with_malformed_inner_metadata_exits_66(tmp_path: Path) -> None:
    def bad_files(d: dict[str, Any]) -> None:
        d["meta"]["data"]["files"] = [1, 2]
        d["meta"]["metrics"] = {"val": "x"}

    path = mutated(pitch_file(tmp_path / "p.pt"), bad_files)
    result = cli("info", "--files", str(path))
    assert result.returncode == 66, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "malformed checkpoint metadata" in line
    assert cli("info", "--json", str(path)).returncode == 0  # shows it as stored


def test_corruption_of_a_temporal_copy_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "temporal.pt"
    corrupt_middle(default_weights("temporal"), bad)
    with pytest.raises(CheckpointError, match="do not match their sha256 checksum"):
        load_checkpoint(bad, kind="temporal")


def test_run_names_the_weights_file_given_not_the_npz_read_for_it(tmp_path: Path) -> None:
    """``run --weights temporal.pt`` said "temporal.npz holds a 'temporal' model", a file
    the user never named. Now the one given, the .npz read in its place, and where a
    temporal model goes; without the .npz (read with torch) the same, less the .npz."""
    path = temporal_file(tmp_path / "temporal.pt")
    assert path.with_suffix(".npz").is_file()  # written beside it, as train does
    result = cli("run", "--output", "events", "--weights", str(path), stdin=b"1\n")
    assert result.returncode == 66, result.stderr
    fix = "a temporal model goes to --temporal-weights (with --rhythm model)"
    assert result.stderr == (f"streamsonic: error: {path} (read as the temporal.npz beside "
                             f"it) holds a 'temporal' model, expected a 'pitch' model; {fix}\n")
    path.with_suffix(".npz").unlink()
    result = cli("run", "--output", "events", "--weights", str(path), stdin=b"1\n")
    assert result.returncode == 66, result.stderr
    assert result.stderr == (f"streamsonic: error: {path} holds a 'temporal' model, expected "
                             f"a 'pitch' model; {fix}\n")


def test_a_bad_npz_read_for_a_checkpoint_is_named_with_it(tmp_path: Path) -> None:
    """A broken .npz beside the checkpoint given (its source checksum right, a weight NaN):
    was named alone ("p.npz: malformed weights file"), now as the one beside p.pt."""
    path = pitch_file(tmp_path / "p.pt")
    ckpt = load_checkpoint(path)
    ckpt.state_dict["head.bias"][0] = math.nan
    save_arrays(arrays_path(path), ckpt, file_digest(path))
    result = cli("run", "--output", "events", "--weights", str(path), stdin=b"1\n")
    assert result.returncode == 66, result.stderr
    assert result.stderr.startswith(f"streamsonic: error: the p.npz beside {path}: malformed "
                                    "weights file: weight head.bias holds NaN or infinite values")
