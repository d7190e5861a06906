"""Shared by the benchmark scripts."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pitch_weights(tmp: Path) -> Path:
    """The shipped pitch checkpoint, or (in a checkout without it) a seeded random one."""
    shipped = REPO / "weights" / "pitch.pt"
    if shipped.is_file():
        return shipped
    import torch  # noqa: PLC0415 - only for the fallback

    from streamsonic.model.checkpoint import Checkpoint, save_checkpoint  # noqa: PLC0415
    from streamsonic.model.network import PitchLSTM  # noqa: PLC0415

    classes = [p for p in range(50, 90) if p not in (51, 87)]
    torch.manual_seed(0)
    net = PitchLSTM(n_classes=len(classes))
    path = tmp / "pitch.pt"
    save_checkpoint(path, Checkpoint(kind="pitch", arch=net.arch(), classes=classes,
                                     state_dict=net.state_dict(), meta={}))
    return path
