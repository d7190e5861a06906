"""Checkpoint files: round trip, plain metadata, and clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamsonic.errors import CheckpointError
from streamsonic.model.checkpoint import (
    FORMAT,
    Checkpoint,
    default_weights,
    load_checkpoint,
    plain,
    save_checkpoint,
)
from streamsonic.model.network import PitchLSTM, TemporalLSTM
from streamsonic.model.temporal import TimingEncoding, temporal_parts
from tests.components import missing

CLASSES = [60, 62, 64, 65, 67]


def _pitch_ckpt(**meta: object) -> Checkpoint:
    torch.manual_seed(0)
    net = PitchLSTM(len(CLASSES), hidden1=8)
    return Checkpoint(kind="pitch", arch=net.arch(), classes=CLASSES,
                      state_dict=net.state_dict(), seq_len=12, meta=dict(meta))


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    ckpt = _pitch_ckpt(versions={"torch": torch.__version__}, metrics={"acc": np.float32(0.5)},
                       files=("a.mid", "b.mid"), n=np.int64(3))
    path = tmp_path / "m.pt"
    save_checkpoint(path, ckpt)
    back = load_checkpoint(path, kind="pitch")
    assert back.kind == "pitch" and back.classes == CLASSES and back.seq_len == 12
    assert back.meta == {"versions": {"torch": str(torch.__version__)},
                         "metrics": {"acc": 0.5}, "files": ["a.mid", "b.mid"], "n": 3}
    assert type(back.meta["versions"]["torch"]) is str
    for k, v in ckpt.state_dict.items():
        assert torch.equal(back.state_dict[k], v)
    x = torch.rand(1, 4, 1)
    assert torch.equal(back.pitch_network()(x)[0], _rebuilt(ckpt)(x)[0])


def _rebuilt(ckpt: Checkpoint) -> PitchLSTM:
    net = PitchLSTM(len(CLASSES), hidden1=8)
    net.load_state_dict(ckpt.state_dict)
    return net.eval()


def test_plain_converts_what_weights_only_refuses():
    out = plain({"v": torch.__version__, "p": [np.float64(1.5), (1, 2)], 3: None, "b": True})
    assert out == {"v": str(torch.__version__), "p": [1.5, [1, 2]], "3": None, "b": True}
    assert type(out["v"]) is str and type(out["p"][0]) is float


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match=r"junk\.pt is not a streamsonic checkpoint"):
        load_checkpoint(path)


def test_foreign_torch_file_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"model": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match=r"other\.pt is not a streamsonic checkpoint"):
        load_checkpoint(path)


def test_pickled_object_is_refused_without_running_it(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"format": FORMAT, "obj": TimingEncoding()}, path)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(path)


def test_other_format_version_names_both_versions(tmp_path):
    path = tmp_path / "future.pt"
    save_checkpoint(path, _pitch_ckpt())
    data = torch.load(path, weights_only=True)
    data["format_version"] = 99
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"format 99.*reads format 1"):
        load_checkpoint(path)


def test_wrong_kind_and_missing_file(tmp_path):
    path = tmp_path / "p.pt"
    save_checkpoint(path, _pitch_ckpt())
    with pytest.raises(CheckpointError, match="holds a 'pitch' model, expected a 'temporal'"):
        load_checkpoint(path, kind="temporal")
    with pytest.raises(CheckpointError, match="not a temporal model"):
        temporal_parts(load_checkpoint(path))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_mismatched_weights_say_retrain(tmp_path):
    ckpt = _pitch_ckpt()
    ckpt.arch["hidden1"] = 16
    path = tmp_path / "bad.pt"
    save_checkpoint(path, ckpt)
    with pytest.raises(CheckpointError, match="retrain"):
        load_checkpoint(path).pitch_network()


def test_temporal_checkpoint_round_trip(tmp_path):
    timing = TimingEncoding()
    net = TemporalLSTM(len(CLASSES), timing.n_gap, timing.n_duration, timing.input_size,
                       hidden1=8, hidden2=6)
    arch = {**net.arch(), **timing.to_dict(),
            "default_timing": {"gap": 0.5, "duration": 1.0, "velocity": 90.0}}
    path = tmp_path / "t.pt"
    save_checkpoint(path, Checkpoint(kind="temporal", arch=arch, classes=CLASSES,
                                     state_dict=net.state_dict()))
    back, enc, default = temporal_parts(load_checkpoint(path, kind="temporal"))
    assert back.hidden2 == 6 and enc.n_gap == timing.n_gap
    assert default["duration"] == 1.0


@pytest.mark.parametrize("kind", ["pitch", "temporal"])
def test_shipped_weights_load(kind):
    path = default_weights(kind)
    if not path.is_file():
        missing(f"shipped weights {path} are missing (they are in git: git checkout weights/)")
    ckpt = load_checkpoint(path, kind=kind)
    assert path.stat().st_size < 8_000_000
    assert ckpt.meta["data"]["n_files"] >= 2
    assert ckpt.meta["versions"]["torch"]
    if kind == "pitch":
        ckpt.pitch_network()
        val = ckpt.meta["metrics"]["val"]["accuracy"]
        for base in ckpt.meta["metrics"]["baselines"].values():
            assert val > base["accuracy"]
    else:
        temporal_parts(ckpt)
