"""Checkpoint files: a state dict plus metadata, loadable with ``weights_only=True``.

Layout (a plain dict of tensors, str, int, float, list and dict only)::

    {"format": "streamsonic-checkpoint", "format_version": 1, "kind": "pitch" | "temporal",
     "arch": {...network sizes...}, "classes": [MIDI pitches], "seq_len": 50,
     "state_dict": {...}, "meta": {...training data summary, metrics, versions...}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from streamsonic.errors import CheckpointError
from streamsonic.model.network import PitchLSTM

FORMAT = "streamsonic-checkpoint"
FORMAT_VERSION = 1

#: Where the shipped weights live (the repository's weights/ folder).
WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    kind: str
    arch: dict[str, Any]
    classes: list[int]
    state_dict: dict[str, torch.Tensor]
    seq_len: int = 50
    meta: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    def pitch_network(self) -> PitchLSTM:
        """Rebuild the pitch network with its trained weights (eval mode, CPU)."""
        if self.kind != "pitch":
            raise CheckpointError(f"{self.path}: is a {self.kind!r} checkpoint, not a pitch model")
        net = PitchLSTM(
            n_classes=int(self.arch["n_classes"]),
            hidden1=int(self.arch["hidden1"]),
            hidden2=int(self.arch["hidden2"]),
            input_size=int(self.arch.get("input_size", 1)),
        )
        try:
            net.load_state_dict(self.state_dict)
        except RuntimeError as err:
            raise CheckpointError(
                f"{self.path}: weights do not match the pitch network ({err}); "
                "retrain with 'streamsonic train pitch'"
            ) from None
        return net.eval()


def default_weights(kind: str) -> Path:
    """The shipped checkpoint for ``kind`` ("pitch" or "temporal")."""
    return WEIGHTS_DIR / f"{kind}.pt"


def plain(value: Any) -> Any:
    """``value`` as the plain types ``torch.load(weights_only=True)`` accepts.

    Containers become dicts/lists, ``str`` subclasses (``torch.__version__``) become
    ``str``, NumPy scalars become Python numbers, paths become strings.
    """
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, str | Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # NumPy scalars
        return value.item()
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` atomically (temp file + rename); metadata is made plain first."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": ckpt.kind,
        "arch": plain(dict(ckpt.arch)),
        "classes": [int(c) for c in ckpt.classes],
        "seq_len": int(ckpt.seq_len),
        "state_dict": {k: v.detach().cpu() for k, v in ckpt.state_dict.items()},
        "meta": plain(ckpt.meta),
    }
    tmp = target.with_name(target.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(target)


def load_checkpoint(path: str | Path, kind: str | None = None) -> Checkpoint:
    """Load and check a checkpoint; ``kind`` ("pitch"/"temporal") must match if given."""
    p = Path(path)
    hint = "train one with 'streamsonic train pitch DIR -o weights/pitch.pt' or pass --weights"
    if not p.is_file():
        raise CheckpointError(f"weights file {p} does not exist; {hint}")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types (KeyError, UnpicklingError, ...)
        raise CheckpointError(
            f"{p} is not a streamsonic checkpoint (cannot be loaded safely: "
            f"{type(err).__name__}); {hint}"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not a streamsonic checkpoint; {hint}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{p} was written in checkpoint format {version}, this streamsonic reads "
            f"format {FORMAT_VERSION}; retrain it or use a matching streamsonic version"
        )
    if kind is not None and data.get("kind") != kind:
        raise CheckpointError(f"{p} holds a {data.get('kind')!r} model, expected a {kind!r} model")
    try:
        return Checkpoint(
            kind=str(data["kind"]),
            arch=dict(data["arch"]),
            classes=[int(c) for c in data["classes"]],
            state_dict=dict(data["state_dict"]),
            seq_len=int(data.get("seq_len", 50)),
            meta=dict(data.get("meta", {})),
            path=str(p),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{p}: checkpoint is incomplete ({err}); retrain it") from None
