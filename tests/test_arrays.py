"""The torch-free weights (.npz): written beside every checkpoint, checked like a .pt on load
(a bad file is one line and exit 66), used only while it matches its checkpoint, and the
CPU run path that reads it never imports torch; on CUDA the torch stepper keeps the
states on the device."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from streamsonic.config import load_config
from streamsonic.errors import CheckpointError
from streamsonic.model.arrays import (
    META_KEY,
    arrays_for,
    arrays_path,
    load_arrays,
    read_header,
    weights_digest,
)
from streamsonic.model.checkpoint import (
    Checkpoint,
    default_weights,
    load_checkpoint,
    save_checkpoint,
)
from streamsonic.model.checkpoint import weights_digest as tensor_digest
from streamsonic.model.loader import load_pitch_model
from streamsonic.model.network import PitchLSTM, TemporalLSTM
from streamsonic.model.stepper import NumpyPitchStepper, TorchPitchStepper
from streamsonic.model.temporal import TimingEncoding

REPO = Path(__file__).resolve().parents[1]
CLASSES = [60, 62, 64, 65, 67]


def pitch_pair(path: Path) -> Path:
    """A small pitch checkpoint and, beside it, its .npz (as ``train`` writes them)."""
    torch.manual_seed(0)
    net = PitchLSTM(len(CLASSES), hidden1=8)
    save_checkpoint(path, Checkpoint(kind="pitch", arch=net.arch(), classes=CLASSES,
                                     state_dict=net.state_dict(), seq_len=12,
                                     meta={"data": {"n_files": 2}, "created": "today"}))
    return path


def rewrite(npz: Path, out: Path, header: Callable[[dict[str, Any]], None] | None = None,
            arrays: Callable[[dict[str, np.ndarray]], None] | None = None,
            rehash: bool = True) -> Path:
    """``npz`` with its metadata and/or arrays changed as a writer could get them wrong;
    the checksum is recomputed (``rehash``) so that each check is reached on its own."""
    meta = read_header(npz)
    with np.load(npz, allow_pickle=False) as f:
        table = {k: f[k] for k in f.files if k != META_KEY}
    if arrays is not None:
        arrays(table)
    if header is not None:
        header(meta)
    if rehash:
        meta["weights_sha256"] = weights_digest(table)
    with out.open("wb") as fh:
        np.savez(fh, allow_pickle=False, **{META_KEY: np.array(json.dumps(meta))}, **table)
    return out


def test_train_writes_both_and_they_hold_the_same_weights(tmp_path: Path) -> None:
    pt = pitch_pair(tmp_path / "p.pt")
    npz = arrays_path(pt)
    assert npz == tmp_path / "p.npz" and npz.is_file()
    ckpt = load_checkpoint(pt)
    arrays = load_arrays(npz, kind="pitch")
    assert (arrays.kind, arrays.classes, arrays.arch, arrays.seq_len, arrays.meta) == (
        ckpt.kind, ckpt.classes, ckpt.arch, ckpt.seq_len, ckpt.meta)
    # The same digest over the same bytes: the .pt's checksum verifies the .npz.
    assert arrays.weights_sha256 == ckpt.weights_sha256 == tensor_digest(ckpt.state_dict)
    for name, tensor in ckpt.state_dict.items():
        np.testing.assert_array_equal(arrays.arrays[name], tensor.numpy())
    # A stepper from the arrays plays exactly what one from the network plays.
    a, b = NumpyPitchStepper(arrays.arrays), NumpyPitchStepper(ckpt.pitch_network())
    sa, sb = a.initial_state(2), b.initial_state(2)
    for x in np.random.default_rng(0).random((20, 2)):
        la, sa = a.step(x, sa)
        lb, sb = b.step(x, sb)
        np.testing.assert_array_equal(la, lb)


def test_shipped_npz_is_the_shipped_checkpoint() -> None:
    """weights/pitch.npz was converted from weights/pitch.pt as it is now (else the player
    would fall back to torch: convert it again after retraining)."""
    ckpt, why = arrays_for(default_weights("pitch"), "pitch")
    assert ckpt is not None, why
    assert ckpt.path == str(default_weights("pitch").with_suffix(".npz"))
    assert ckpt.weights_sha256 == load_checkpoint(default_weights("pitch")).weights_sha256


def first(table: dict[str, np.ndarray]) -> np.ndarray:
    return table["lstm1.weight_hh_l0"]


CASES: dict[str, tuple[dict[str, Any], str]] = {
    "weights-nan": ({"arrays": lambda t: first(t).reshape(-1).__setitem__(0, np.nan)}, "NaN"),
    "weights-inf": ({"arrays": lambda t: first(t).reshape(-1).__setitem__(2, -np.inf)},
                    "infinite"),
    "weights-int": ({"arrays": lambda t: t.update({"head.bias": np.zeros(5, np.int64)})},
                    "torch.int64"),
    "weights-shape": ({"arrays": lambda t: t.update({"head.bias": np.zeros(6, np.float32)})},
                      r"head.bias has shape \(6,\)"),
    "weights-missing": ({"arrays": lambda t: t.pop("head.bias")}, r"lack \['head.bias'\]"),
    "weights-extra": ({"arrays": lambda t: t.update(x=np.zeros(1, np.float32))},
                      r"unexpected \['x'\]"),
    "classes-unsorted": ({"header": lambda h: h["classes"].reverse()}, "not strictly ascending"),
    "classes-out-of-range": ({"header": lambda h: h["classes"].__setitem__(0, 200)},
                             "holds 200"),
    "hidden-vs-shapes": ({"header": lambda h: h["arch"].update(hidden1=16)}, "has shape"),
    "hidden-huge": ({"header": lambda h: h["arch"].update(hidden1=10**9)},
                    "arch.hidden1 is 1000000000"),
    "kind": ({"header": lambda h: h.update(kind="banana")}, "kind is 'banana'"),
    "meta-data-not-table": ({"header": lambda h: h["meta"].update(data="x")},
                            "meta.data is a str"),
    "checksum-not-hex": ({"header": lambda h: h.update(weights_sha256="x"), "rehash": False},
                         "not a sha256"),
    "checksum-wrong": ({"arrays": lambda t: first(t).reshape(-1).__setitem__(1, 0.25),
                        "rehash": False}, "do not match their sha256 checksum"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_npz_is_refused(case: str, tmp_path: Path) -> None:
    change, reason = CASES[case]
    bad = rewrite(arrays_path(pitch_pair(tmp_path / "p.pt")), tmp_path / "bad.npz", **change)
    with pytest.raises(CheckpointError, match=reason) as info:
        load_arrays(bad)
    assert str(bad) in str(info.value)


def test_files_that_are_not_weights_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "text.npz"
    text.write_text("hello")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, allow_pickle=True,
             **{META_KEY: np.array([{"format": "streamsonic-arrays"}], dtype=object)})
    bare = tmp_path / "bare.npz"
    np.savez(bare, w=np.zeros(3))
    future = rewrite(arrays_path(pitch_pair(tmp_path / "p.pt")), tmp_path / "future.npz",
                     header=lambda h: h.update(format_version=99))
    for path, reason in ((text, "cannot be read"), (pickled, "not a streamsonic weights"),
                         (bare, "no __meta__"), (future, "weights format 99"),
                         (tmp_path / "none.npz", "does not exist")):
        with pytest.raises(CheckpointError, match=reason):
            load_arrays(path)
    with zipfile.ZipFile(pickled) as z:  # the object array was stored pickled: never loaded
        assert z.namelist() == [META_KEY + ".npy"]


def test_a_stale_npz_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint replaced after conversion: the .npz beside it is the old model, so the
    player reads the .pt (with torch) and says how to bring the .npz up to date."""
    pt = pitch_pair(tmp_path / "p.pt")
    old = arrays_path(pt).read_bytes()
    torch.manual_seed(5)
    net = PitchLSTM(len(CLASSES), hidden1=8)
    save_checkpoint(pt, Checkpoint(kind="pitch", arch=net.arch(), classes=CLASSES,
                                   state_dict=net.state_dict()))
    arrays_path(pt).write_bytes(old)
    ckpt, why = arrays_for(pt, "pitch")
    assert ckpt is None and "streamsonic convert" in why and "changed" in why
    config = load_config(None, {"model.weights": str(pt), "model.device": "cpu"})
    caplog.set_level("INFO")
    _, _, loaded = load_pitch_model(config.model)
    assert loaded.path == str(pt) and "was not converted from this p.pt" in caplog.text
    np.testing.assert_array_equal(loaded.arrays["head.bias"], net.head.bias.detach().numpy())


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "STREAMSONIC_CONFIG"}
    return subprocess.run([sys.executable, "-m", "streamsonic", *args], cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=120, check=False, env=env)


def test_cli_run_with_a_bad_npz_exits_66_with_one_line(tmp_path: Path) -> None:
    bad = rewrite(arrays_path(pitch_pair(tmp_path / "p.pt")), tmp_path / "bad.npz",
                  arrays=lambda t: first(t).reshape(-1).__setitem__(0, np.nan))
    result = cli("run", "--output", "events", "--weights", str(bad), "--device", "cpu",
                 stdin="1\n2\n")
    assert result.returncode == 66, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "malformed weights file" in line and "NaN" in line and str(bad) in line
    assert result.stdout == ""


def test_convert_writes_what_the_player_reads(tmp_path: Path) -> None:
    pt = pitch_pair(tmp_path / "p.pt")
    arrays_path(pt).unlink()
    assert arrays_for(pt, "pitch")[0] is None
    result = cli("convert", str(pt))
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and arrays_path(pt).is_file()
    ckpt, _ = arrays_for(pt, "pitch")
    assert ckpt is not None and ckpt.weights_sha256 == load_checkpoint(pt).weights_sha256
    played = cli("run", "--output", "events", "--weights", str(pt), "--device", "cpu",
                 "--log-level", "info", stdin="1 2 3\n")
    assert played.returncode == 0, played.stderr
    assert f"pitch model {arrays_path(pt)}" in played.stderr
    assert len(played.stdout.splitlines()) == 3
    missing = cli("convert", str(tmp_path / "none.pt"))
    assert missing.returncode == 66 and "does not exist" in missing.stderr


def test_info_reads_an_npz_as_it_reads_its_checkpoint() -> None:
    """--weights takes a .npz, so info does too (it was refused as "not a streamsonic
    checkpoint"): the same description but for the file line, read without torch."""
    pt = REPO / "weights" / "pitch.pt"
    npz = subprocess.run([sys.executable, "-c", NO_TORCH, "info", str(arrays_path(pt))],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert npz.returncode == 0, npz.stderr
    assert npz.stderr.strip().splitlines()[-1] == "torch-free", npz.stderr
    checkpoint = cli("info", str(pt))
    assert checkpoint.returncode == 0, checkpoint.stderr
    assert npz.stdout.splitlines()[0].startswith(f"file:        {arrays_path(pt)} (")
    assert npz.stdout.splitlines()[1:] == checkpoint.stdout.splitlines()[1:]
    as_json = json.loads(cli("info", "--json", str(arrays_path(pt))).stdout)
    assert as_json["weights_sha256"] == load_checkpoint(pt).weights_sha256


NO_TORCH = """
import atexit, io, os, sys
def check():
    os.write(2, b"TORCH LOADED\\n" if "torch" in sys.modules else b"torch-free\\n")
atexit.register(check)
from streamsonic.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("args", [
    ["run", "--output", "events", "--device", "auto"],
    ["run", "--output", "events", "--device", "cpu", "--clock", "tick"],
    ["render", "-", "-o", "events", "--device", "cpu"],
])
def test_the_cpu_run_path_does_not_import_torch(args: list[str]) -> None:
    """Start-up and memory: `import torch` alone was 78% of the time to the first note and
    220 of 343 MB. The daemon (both clocks) and render read the .npz and step NumPy."""
    if args[-1] == "auto" and any(Path(n).exists() for n in ("/dev/nvidiactl", "/dev/dxg")):
        pytest.skip("a GPU device node exists here: device auto rightly asks torch about it")
    env = {k: v for k, v in os.environ.items() if k != "STREAMSONIC_CONFIG"}
    result = subprocess.run([sys.executable, "-c", NO_TORCH, *args], cwd=REPO,
                            input="1,2,3\n4,5,6\n7,8,9\n", capture_output=True, text=True,
                            timeout=120, check=False, env=env)
    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stdout.splitlines() if line.startswith("{")]) >= 3
    assert result.stderr.strip().splitlines()[-1] == "torch-free", result.stderr


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="no CUDA GPU here (the CUDA stepper needs one)")
def test_cuda_stepper_keeps_states_on_the_device_and_plays_the_cpu_notes() -> None:
    """On CUDA a batch goes through the torch stepper's calls on the device; the states
    never leave it; the logits equal the CPU stepper's."""
    config = load_config(None, {"model.device": "cuda"})
    stepper, _, ckpt = load_pitch_model(config.model)
    assert isinstance(stepper, TorchPitchStepper) and stepper.device.type == "cuda"
    cpu = NumpyPitchStepper(ckpt.arrays)
    batch = 300
    gpu_state, cpu_state = stepper.initial_state(batch), cpu.initial_state(batch)
    rng = np.random.default_rng(1)
    for _ in range(30):
        x = rng.random(batch)
        lg, pending = stepper.propose(x, gpu_state)
        lc, cpu_pending = cpu.propose(x, cpu_state)
        np.testing.assert_allclose(lg, lc, atol=2e-4)
        chosen = rng.random(batch)
        gpu_state = stepper.commit(pending, chosen)
        cpu_state = cpu.commit(cpu_pending, chosen)
        assert all(s.device.type == "cuda" for s in gpu_state)
    parts = stepper.split(gpu_state, batch)
    assert all(p.device.type == "cuda" for s in parts for p in s)
    assert all(p.device.type == "cuda" for p in stepper.stack(parts))


def test_temporal_checkpoints_get_an_npz_too(tmp_path: Path) -> None:
    torch.manual_seed(0)
    timing = TimingEncoding()
    net = TemporalLSTM(len(CLASSES), timing.n_gap, timing.n_duration, timing.input_size,
                       hidden1=8, hidden2=6)
    arch = {**net.arch(), **timing.to_dict(),
            "default_timing": {"gap": 0.5, "duration": 1.0, "velocity": 90.0}}
    pt = tmp_path / "t.pt"
    save_checkpoint(pt, Checkpoint(kind="temporal", arch=arch, classes=CLASSES,
                                   state_dict=net.state_dict()))
    ckpt, _ = arrays_for(pt, "temporal")
    assert ckpt is not None and ckpt.arch == arch
    with pytest.raises(CheckpointError, match="expected a 'pitch' model"):
        arrays_for(pt, "pitch")
    buf = io.BytesIO(arrays_path(pt).read_bytes())
    assert zipfile.is_zipfile(buf)
