"""Checkpoint files: a state dict plus metadata, loadable with ``weights_only=True``.

Layout (a plain dict of tensors, str, int, float, list and dict only)::

    {"format": "streamsonic-checkpoint", "format_version": 1, "kind": "pitch" | "temporal",
     "arch": {...network sizes...}, "classes": [MIDI pitches], "seq_len": 50,
     "state_dict": {...}, "meta": {...training data summary, metrics, versions...},
     "weights_sha256": "..."}

``weights_sha256`` (:func:`weights_digest`) is written by :func:`save_checkpoint` and
verified on load, so a damaged file is refused instead of played; files written before it
existed load without it (``streamsonic info`` says so). Loading checks everything else a
file could get wrong too (the pitch table, network sizes against the tensors' shapes,
finite weights, the metadata's shape) and refuses a bad file with a ``CheckpointError``
that says what is wrong, before anything is built from it. The checks are the torch-free
ones of :mod:`streamsonic.model.arrays`, which the ``.npz`` beside each checkpoint (the
format the CPU run path reads, without torch) goes through too; :func:`save_checkpoint`
writes that ``.npz`` with the checkpoint.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamsonic.errors import CheckpointError
from streamsonic.model.arrays import (
    MAX_GRID,
    MAX_HIDDEN,
    MAX_SEQ_LEN,
    META_TABLES,
    SHA256,
    SUFFIX,
    WEIGHTS_DIR,
    Malformed,
    arrays_inside,
    arrays_path,
    check_classes,
    check_meta,
    check_seq_len,
    check_weights,
    default_weights,
    expected_shapes,
    hint_for,
    load_arrays,
    missing,
    save_arrays,
    wrong_kind,
)
from streamsonic.model.files import interrupts_held, write_whole
from streamsonic.model.network import PitchLSTM

__all__ = ["FORMAT", "FORMAT_VERSION", "MAX_GRID", "MAX_HIDDEN", "MAX_SEQ_LEN", "META_TABLES",
           "WEIGHTS_DIR", "Checkpoint", "default_weights", "load_checkpoint", "load_weights",
           "plain", "save_checkpoint", "weights_digest"]

FORMAT = "streamsonic-checkpoint"
FORMAT_VERSION = 1


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
    #: The checksum stored in the file (verified on load); None: saved before checksums.
    weights_sha256: str | None = None

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


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors: each one's name, dtype and shape, then its bytes, by name."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: str | Path, ckpt: Checkpoint, arrays: bool = True) -> None:
    """Write ``ckpt`` atomically (temp file + rename); metadata is made plain first, and the
    weights' checksum is stored with them. With ``arrays``, the torch-free ``.npz`` of the
    same checkpoint goes beside it (:mod:`streamsonic.model.arrays`; the CPU player reads
    that one)."""
    target = Path(path)
    state_dict = {k: v.detach().cpu() for k, v in ckpt.state_dict.items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": ckpt.kind,
        "arch": plain(dict(ckpt.arch)),
        "classes": [int(c) for c in ckpt.classes],
        "seq_len": int(ckpt.seq_len),
        "state_dict": state_dict,
        "meta": plain(ckpt.meta),
        "weights_sha256": weights_digest(state_dict),
    }
    with interrupts_held():  # a Ctrl-C meanwhile comes once both files are whole
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
        write_whole(target, data, "checkpoint")
        if arrays and target.suffix != ".npz":
            save_arrays(arrays_path(target), ckpt, hashlib.sha256(data).hexdigest())


def load_weights(path: str | Path, kind: str | None = None) -> Checkpoint:
    """A checkpoint from a ``.pt`` or from its ``.npz`` (the one file given; read and
    checked by :func:`load_checkpoint` or :func:`~streamsonic.model.arrays.load_arrays`),
    with tensors either way: what the torch models (the temporal one) are built from."""
    p = Path(path)
    if p.suffix != SUFFIX:
        return load_checkpoint(p, kind=kind)
    loaded = load_arrays(p, kind=kind)
    return Checkpoint(kind=loaded.kind, arch=loaded.arch, classes=loaded.classes,
                      state_dict={k: torch.from_numpy(np.array(v))
                                  for k, v in loaded.arrays.items()},
                      seq_len=loaded.seq_len, meta=loaded.meta, path=loaded.path,
                      weights_sha256=loaded.weights_sha256)


def load_checkpoint(path: str | Path, kind: str | None = None) -> Checkpoint:
    """Load and check a checkpoint; ``kind`` ("pitch"/"temporal") must match if given."""
    p = Path(path)
    hint = hint_for(kind)
    if not p.is_file():
        raise missing(p, hint)
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types (KeyError, UnpicklingError, ...)
        if arrays_inside(p):  # a .npz under another name: torch cannot read it
            raise CheckpointError(
                f"{p} is a torch-free weights file (the {SUFFIX} format), not a .pt "
                f"checkpoint; name it {p.stem}{SUFFIX}: --weights, --temporal-weights and "
                f"info read a {SUFFIX} as it is") from None
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
        raise wrong_kind(p, data.get("kind"), kind)
    try:
        return _checked(data, p)
    except Malformed as err:
        raise CheckpointError(
            f"{p}: malformed checkpoint: {err}; retrain it ('streamsonic train') or restore "
            "a good copy"
        ) from None


def _checked(data: dict[str, Any], p: Path) -> Checkpoint:
    """The checkpoint in ``data`` once every part of it is checked."""
    kind = data.get("kind")
    if kind not in ("pitch", "temporal"):
        raise Malformed(f"kind is {kind!r}, not 'pitch' or 'temporal'")
    classes = check_classes(data.get("classes"))
    arch = data.get("arch")
    if not isinstance(arch, dict):
        raise Malformed(f"arch is a {type(arch).__name__}, not a table of network sizes")
    seq_len = check_seq_len(data.get("seq_len", 50))
    meta = data.get("meta", {})
    check_meta(meta)
    state_dict = data.get("state_dict")
    if not isinstance(state_dict, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
    ):
        raise Malformed("state_dict is not a table of named tensors")
    stored = data.get("weights_sha256")
    if stored is not None:
        if not isinstance(stored, str) or not SHA256.fullmatch(stored):
            raise Malformed(f"weights_sha256 is {stored!r}, not a sha256 hex digest")
        if weights_digest(state_dict) != stored:
            raise CheckpointError(
                f"{p}: the weights do not match their sha256 checksum: the file is "
                "corrupted; restore a good copy or retrain it"
            )
    expected = expected_shapes(kind, arch, len(classes))
    check_weights({k: tuple(t.shape) for k, t in state_dict.items()}, expected,
                  {k: str(t.dtype) for k, t in state_dict.items()},
                  {k: t.is_floating_point() and bool(torch.isfinite(t).all())
                   for k, t in state_dict.items()})
    return Checkpoint(kind=kind, arch=dict(arch), classes=classes, state_dict=dict(state_dict),
                      seq_len=seq_len, meta=dict(meta), path=str(p), weights_sha256=stored)
