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
that says what is wrong, before anything is built from it.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeGuard

import torch

from streamsonic.errors import CheckpointError
from streamsonic.model.network import PitchLSTM, StackedLSTM, TemporalLSTM

FORMAT = "streamsonic-checkpoint"
FORMAT_VERSION = 1

#: Where the shipped weights live: package data, ``streamsonic/data/weights`` (in a checkout
#: a symlink to the repository's weights/ folder, which the wheel holds as real files).
WEIGHTS_DIR = Path(str(resources.files("streamsonic") / "data" / "weights")).resolve()

#: Widest LSTM layer a checkpoint may declare (the shipped ones use 256).
MAX_HIDDEN = 4096
#: Longest training window a checkpoint may declare.
MAX_SEQ_LEN = 100_000
#: Most bins a temporal checkpoint's gap or duration grid may have.
MAX_GRID = 64
#: Metadata sections that must be tables when present (``streamsonic info`` reads them).
META_TABLES = ("data", "training", "metrics", "versions")

_SHA256 = re.compile(r"[0-9a-f]{64}")


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


def default_weights(kind: str) -> Path:
    """The shipped checkpoint for ``kind`` ("pitch" or "temporal"), installed with the
    package (see :data:`WEIGHTS_DIR`)."""
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


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors: each one's name, dtype and shape, then its bytes, by name."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` atomically (temp file + rename); metadata is made plain first, and the
    weights' checksum is stored with them."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
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
        return _checked(data, p)
    except _Malformed as err:
        raise CheckpointError(
            f"{p}: malformed checkpoint: {err}; retrain it ('streamsonic train') or restore "
            "a good copy"
        ) from None


class _Malformed(ValueError):
    """What is wrong with a checkpoint's content (``load_checkpoint`` adds the file)."""


def _checked(data: dict[str, Any], p: Path) -> Checkpoint:
    """The checkpoint in ``data`` once every part of it is checked."""
    kind = data.get("kind")
    if kind not in ("pitch", "temporal"):
        raise _Malformed(f"kind is {kind!r}, not 'pitch' or 'temporal'")
    classes = _classes(data.get("classes"))
    arch = data.get("arch")
    if not isinstance(arch, dict):
        raise _Malformed(f"arch is a {type(arch).__name__}, not a table of network sizes")
    seq_len = data.get("seq_len", 50)
    if not _is_int(seq_len) or not 1 <= seq_len <= MAX_SEQ_LEN:
        raise _Malformed(f"seq_len is {seq_len!r}, not a whole number 1..{MAX_SEQ_LEN}")
    meta = data.get("meta", {})
    _check_meta(meta)
    state_dict = data.get("state_dict")
    if not isinstance(state_dict, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
    ):
        raise _Malformed("state_dict is not a table of named tensors")
    stored = data.get("weights_sha256")
    if stored is not None:
        if not isinstance(stored, str) or not _SHA256.fullmatch(stored):
            raise _Malformed(f"weights_sha256 is {stored!r}, not a sha256 hex digest")
        if weights_digest(state_dict) != stored:
            raise CheckpointError(
                f"{p}: the weights do not match their sha256 checksum: the file is "
                "corrupted; restore a good copy or retrain it"
            )
    network = _network_on_meta(kind, arch, len(classes))
    _check_tensors(state_dict, network)
    return Checkpoint(kind=kind, arch=dict(arch), classes=classes, state_dict=dict(state_dict),
                      seq_len=seq_len, meta=dict(meta), path=str(p), weights_sha256=stored)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def _classes(classes: object) -> list[int]:
    if not isinstance(classes, list) or len(classes) < 2:
        raise _Malformed(f"the pitch table (classes) is {_short(classes)}; it needs two or more "
                         "MIDI pitches")
    for c in classes:
        if not _is_int(c) or not 0 <= c <= 127:
            raise _Malformed(f"the pitch table (classes) holds {c!r}, not a MIDI pitch 0..127")
    if any(a >= b for a, b in itertools.pairwise(classes)):
        raise _Malformed("the pitch table (classes) is not strictly ascending")
    return list(classes)


def _check_meta(meta: object) -> None:
    if not isinstance(meta, dict):
        raise _Malformed(f"meta is a {type(meta).__name__}, not a table")
    for section in META_TABLES:
        if section in meta and not isinstance(meta[section], dict):
            raise _Malformed(f"meta.{section} is a {type(meta[section]).__name__}, not a table")
    if "created" in meta and not isinstance(meta["created"], str):
        raise _Malformed(f"meta.created is {meta['created']!r}, not a date string")


def _size(arch: dict[str, Any], key: str, low: int, high: int) -> int:
    value = arch.get(key)
    if not _is_int(value) or not low <= value <= high:
        raise _Malformed(f"arch.{key} is {value!r}, not a whole number {low}..{high}")
    return int(value)


def _grid(arch: dict[str, Any], key: str) -> list[float]:
    grid = arch.get(key)
    if not isinstance(grid, list) or not 1 <= len(grid) <= MAX_GRID or not all(
        _is_number(g) and g > 0 for g in grid
    ):
        raise _Malformed(f"arch.{key} is {_short(grid)}, not a list of 1..{MAX_GRID} positive "
                         "beat values")
    return grid


def _network_on_meta(kind: str, arch: dict[str, Any], n_classes: int) -> StackedLSTM:
    """The network ``arch`` describes, on torch's meta device (shapes only, no memory)."""
    if arch.get("n_classes") != n_classes:
        raise _Malformed(f"arch.n_classes is {arch.get('n_classes')!r} but the pitch table "
                         f"(classes) has {n_classes} pitches")
    hidden1 = _size(arch, "hidden1", 1, MAX_HIDDEN)
    hidden2 = _size(arch, "hidden2", 1, MAX_HIDDEN)
    if kind == "pitch":
        input_size = arch.get("input_size", 1)
        if input_size != 1 or not _is_int(input_size):
            raise _Malformed(f"arch.input_size is {input_size!r}; a pitch model reads 1 value")
        with torch.device("meta"):
            return PitchLSTM(n_classes, hidden1=hidden1, hidden2=hidden2)
    n_gap = _size(arch, "n_gap", 1, MAX_GRID)
    n_duration = _size(arch, "n_duration", 1, MAX_GRID)
    if len(_grid(arch, "gap_grid")) != n_gap or len(_grid(arch, "duration_grid")) != n_duration:
        raise _Malformed("arch.gap_grid and arch.duration_grid do not have n_gap and n_duration "
                         "bins")
    input_size = _size(arch, "input_size", 1, 2 * MAX_GRID + 2)
    if input_size != n_gap + n_duration + 2:
        raise _Malformed(f"arch.input_size is {input_size}; a temporal model with these grids "
                         f"reads {n_gap + n_duration + 2} values")
    default = arch.get("default_timing", {"gap": 0.5, "duration": 0.5, "velocity": 80})
    if not isinstance(default, dict) or not all(
        _is_number(default.get(k)) and default[k] > 0 for k in ("gap", "duration", "velocity")
    ) or not default["velocity"] <= 127:
        raise _Malformed(f"arch.default_timing is {_short(default)}, not positive gap and "
                         "duration and a velocity 1..127")
    with torch.device("meta"):
        return TemporalLSTM(n_classes, n_gap, n_duration, input_size, hidden1=hidden1,
                            hidden2=hidden2)


def _check_tensors(state_dict: dict[str, torch.Tensor], network: StackedLSTM) -> None:
    expected = {name: tuple(t.shape) for name, t in network.state_dict().items()}
    missing = sorted(set(expected) - set(state_dict))
    extra = sorted(set(state_dict) - set(expected))
    if missing or extra:
        raise _Malformed(f"the weights lack {missing or 'nothing'} and have unexpected "
                         f"{extra or 'nothing'} for the network arch describes")
    for name, tensor in state_dict.items():
        if tuple(tensor.shape) != expected[name]:
            raise _Malformed(f"weight {name} has shape {tuple(tensor.shape)}, the network arch "
                             f"describes needs {expected[name]}")
        if not tensor.is_floating_point():
            raise _Malformed(f"weight {name} holds {tensor.dtype}, not floating-point numbers")
        if not bool(torch.isfinite(tensor).all()):
            raise _Malformed(f"weight {name} holds NaN or infinite values")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:50] + "..."
