"""The torch-free weights format: a checkpoint's weights and metadata as a NumPy ``.npz``.

The CPU run path reads the pitch model from here, so it never imports torch (``import
torch`` alone is about 2 s of start-up and 220 MB of memory). ``streamsonic train`` writes
one beside every checkpoint it saves (``pitch.pt`` -> ``pitch.npz``), ``streamsonic
convert`` makes one from an existing checkpoint, and the shipped weights carry one.

Layout: one array per weight, under its state-dict name (``lstm1.weight_hh_l0`` ...), and
``__meta__``, a string holding JSON::

    {"format": "streamsonic-arrays", "format_version": 1, "kind": "pitch" | "temporal",
     "arch": {...}, "classes": [...], "seq_len": 50, "meta": {...},
     "weights_sha256": "...", "source_sha256": "..."}

``weights_sha256`` is the checkpoint's own checksum of its weights (the same digest over
the same bytes, :func:`weights_digest`), verified on load. ``source_sha256`` is the sha256
of the ``.pt`` file it was converted from: a ``.npz`` beside a checkpoint is used instead
of it only while that checkpoint is the file it came from (:func:`arrays_for`), so a
retrained ``pitch.pt`` is never played with the old ``pitch.npz``.

Loading checks what :mod:`streamsonic.model.checkpoint` checks for ``.pt`` files (the pitch
table, the network sizes against the arrays' shapes, floating-point and finite weights, the
metadata's shape, the checksum) with the same messages, and the checks themselves live
here, torch-free, for both. ``np.load`` runs with ``allow_pickle=False``: a file cannot run
code.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

from streamsonic.errors import CheckpointError, UsageError
from streamsonic.model.files import check_writable, interrupts_held, same_file, write_whole

if TYPE_CHECKING:
    from streamsonic.model.checkpoint import Checkpoint
    from streamsonic.model.network import PitchLSTM

FORMAT = "streamsonic-arrays"
FORMAT_VERSION = 1
META_KEY = "__meta__"
SUFFIX = ".npz"

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

SHA256 = re.compile(r"[0-9a-f]{64}")
def hint_for(kind: str | None) -> str:
    """What to do about a missing or unusable model file of ``kind`` (None: pitch)."""
    if kind == "temporal":
        return ("train one with 'streamsonic train temporal DIR -o weights/temporal.pt' (run "
                "and render take it with --temporal-weights)")
    return ("train one with 'streamsonic train pitch DIR -o weights/pitch.pt' (run and render "
            "take it with --weights)")


HINT = hint_for(None)


def default_weights(kind: str) -> Path:
    """The shipped checkpoint for ``kind`` ("pitch" or "temporal"), installed with the
    package (see :data:`WEIGHTS_DIR`)."""
    return WEIGHTS_DIR / f"{kind}.pt"


class Malformed(ValueError):
    """What is wrong with a checkpoint's content (the loaders add the file)."""


@dataclass
class ArrayCheckpoint:
    """A loaded ``.npz``: what :class:`~streamsonic.model.checkpoint.Checkpoint` holds, with
    NumPy arrays for tensors."""

    kind: str
    arch: dict[str, Any]
    classes: list[int]
    arrays: dict[str, np.ndarray]
    seq_len: int = 50
    meta: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    weights_sha256: str | None = None


# -- the checks, shared with the .pt loader --------------------------------------------------

def is_int(value: object) -> TypeGuard[int]:
    """A whole number (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def short(value: object) -> str:
    """``repr(value)``, cut to about 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:50] + "..."


def check_classes(classes: object) -> list[int]:
    """The pitch table: two or more strictly ascending MIDI pitches."""
    if not isinstance(classes, list) or len(classes) < 2:
        raise Malformed(f"the pitch table (classes) is {short(classes)}; it needs two or more "
                        "MIDI pitches")
    for c in classes:
        if not is_int(c) or not 0 <= c <= 127:
            raise Malformed(f"the pitch table (classes) holds {c!r}, not a MIDI pitch 0..127")
    if any(a >= b for a, b in itertools.pairwise(classes)):
        raise Malformed("the pitch table (classes) is not strictly ascending")
    return list(classes)


def check_meta(meta: object) -> None:
    """The metadata is a table, and so are its known sections."""
    if not isinstance(meta, dict):
        raise Malformed(f"meta is a {type(meta).__name__}, not a table")
    for section in META_TABLES:
        if section in meta and not isinstance(meta[section], dict):
            raise Malformed(f"meta.{section} is a {type(meta[section]).__name__}, not a table")
    if "created" in meta and not isinstance(meta["created"], str):
        raise Malformed(f"meta.created is {meta['created']!r}, not a date string")


def check_seq_len(seq_len: object) -> int:
    """The training window: a whole number 1..MAX_SEQ_LEN."""
    if not is_int(seq_len) or not 1 <= seq_len <= MAX_SEQ_LEN:
        raise Malformed(f"seq_len is {seq_len!r}, not a whole number 1..{MAX_SEQ_LEN}")
    return seq_len


def _size(arch: dict[str, Any], key: str, low: int, high: int) -> int:
    value = arch.get(key)
    if not is_int(value) or not low <= value <= high:
        raise Malformed(f"arch.{key} is {value!r}, not a whole number {low}..{high}")
    return int(value)


def _grid(arch: dict[str, Any], key: str) -> list[float]:
    grid = arch.get(key)
    if not isinstance(grid, list) or not 1 <= len(grid) <= MAX_GRID or not all(
        is_number(g) and g > 0 for g in grid
    ):
        raise Malformed(f"arch.{key} is {short(grid)}, not a list of 1..{MAX_GRID} positive "
                        "beat values")
    return grid


def _lstm(name: str, n_in: int, hidden: int) -> dict[str, tuple[int, ...]]:
    gates = 4 * hidden
    return {f"{name}.weight_ih_l0": (gates, n_in), f"{name}.weight_hh_l0": (gates, hidden),
            f"{name}.bias_ih_l0": (gates,), f"{name}.bias_hh_l0": (gates,)}


def expected_shapes(kind: str, arch: object, n_classes: int) -> dict[str, tuple[int, ...]]:
    """The weights (names and shapes) of the network ``arch`` describes, once ``arch`` is
    checked: two stacked LSTMs and a linear head, as PyTorch lays them out."""
    if not isinstance(arch, dict):
        raise Malformed(f"arch is a {type(arch).__name__}, not a table of network sizes")
    if arch.get("n_classes") != n_classes:
        raise Malformed(f"arch.n_classes is {arch.get('n_classes')!r} but the pitch table "
                        f"(classes) has {n_classes} pitches")
    hidden1 = _size(arch, "hidden1", 1, MAX_HIDDEN)
    hidden2 = _size(arch, "hidden2", 1, MAX_HIDDEN)
    if kind == "pitch":
        input_size = arch.get("input_size", 1)
        if input_size != 1 or not is_int(input_size):
            raise Malformed(f"arch.input_size is {input_size!r}; a pitch model reads 1 value")
        n_out = n_classes
    else:
        n_gap = _size(arch, "n_gap", 1, MAX_GRID)
        n_duration = _size(arch, "n_duration", 1, MAX_GRID)
        if len(_grid(arch, "gap_grid")) != n_gap or \
                len(_grid(arch, "duration_grid")) != n_duration:
            raise Malformed("arch.gap_grid and arch.duration_grid do not have n_gap and "
                            "n_duration bins")
        input_size = _size(arch, "input_size", 1, 2 * MAX_GRID + 2)
        if input_size != n_gap + n_duration + 2:
            raise Malformed(f"arch.input_size is {input_size}; a temporal model with these "
                            f"grids reads {n_gap + n_duration + 2} values")
        default = arch.get("default_timing", {"gap": 0.5, "duration": 0.5, "velocity": 80})
        if not isinstance(default, dict) or not all(
            is_number(default.get(k)) and default[k] > 0 for k in ("gap", "duration", "velocity")
        ) or not default["velocity"] <= 127:
            raise Malformed(f"arch.default_timing is {short(default)}, not positive gap and "
                            "duration and a velocity 1..127")
        n_out = n_classes + n_gap + n_duration + 1
    return {**_lstm("lstm1", input_size, hidden1), **_lstm("lstm2", hidden1, hidden2),
            "head.weight": (n_out, hidden2), "head.bias": (n_out,)}


def check_weights(shapes: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]],
                  dtypes: Mapping[str, str], finite: Mapping[str, bool]) -> None:
    """Names, shapes, floating-point dtypes and finiteness of the weights against
    :func:`expected_shapes` (``dtypes`` as torch names them, ``torch.float32``)."""
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    if missing or extra:
        raise Malformed(f"the weights lack {missing or 'nothing'} and have unexpected "
                        f"{extra or 'nothing'} for the network arch describes")
    for name, shape in shapes.items():
        if tuple(shape) != expected[name]:
            raise Malformed(f"weight {name} has shape {tuple(shape)}, the network arch "
                            f"describes needs {expected[name]}")
        if dtypes[name] not in ("torch.float16", "torch.bfloat16", "torch.float32",
                                "torch.float64"):
            raise Malformed(f"weight {name} holds {dtypes[name]}, not floating-point numbers")
        if not finite[name]:
            raise Malformed(f"weight {name} holds NaN or infinite values")


# -- digests ---------------------------------------------------------------------------------

def torch_dtype_name(array: np.ndarray) -> str:
    """The name torch gives ``array``'s dtype (``torch.float32``), for the digest."""
    return "torch.bool" if array.dtype == np.bool_ else f"torch.{array.dtype.name}"


def weights_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over the weights: each one's name, dtype and shape, then its bytes, by name;
    the same digest :func:`streamsonic.model.checkpoint.weights_digest` computes over the
    same weights as tensors."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{torch_dtype_name(array)}\0{tuple(array.shape)}\0".encode())
        digest.update(array.reshape(-1).view(np.uint8).tobytes())
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- writing ---------------------------------------------------------------------------------

def arrays_path(checkpoint: str | Path) -> Path:
    """Where the ``.npz`` of a checkpoint goes: beside it, ``pitch.pt`` -> ``pitch.npz``."""
    return Path(checkpoint).with_suffix(SUFFIX)


def save_arrays(path: str | Path, ckpt: Checkpoint | ArrayCheckpoint,
                source_sha256: str | None = None, follow: bool = True) -> Path:
    """Write ``ckpt`` as a ``.npz`` atomically (temp file + rename); ``source_sha256`` names
    the ``.pt`` file it comes from; ``follow``: as :func:`write_whole` takes it."""
    from streamsonic.model.checkpoint import plain  # noqa: PLC0415 - metadata made plain

    target = Path(path)
    table: Mapping[str, Any] = (ckpt.arrays if isinstance(ckpt, ArrayCheckpoint)
                                else ckpt.state_dict)
    arrays = {k: np.ascontiguousarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
              for k, v in table.items()}
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": ckpt.kind,
        "arch": plain(dict(ckpt.arch)), "classes": [int(c) for c in ckpt.classes],
        "seq_len": int(ckpt.seq_len), "meta": plain(ckpt.meta),
        "weights_sha256": weights_digest(arrays), "source_sha256": source_sha256,
    }
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **{META_KEY: np.array(json.dumps(header))}, **arrays)
    with interrupts_held():
        return write_whole(target, buffer.getbuffer(), "weights file", follow)


def convert(checkpoint: str | Path, out: str | Path | None = None) -> Path:
    """Write the ``.npz`` of a ``.pt`` checkpoint (checked as :func:`load_checkpoint` checks
    it) beside it, or at ``out``; returns where it went.

    A ``.npz`` given as the checkpoint is a :class:`UsageError` (it is converted already).
    The output is never the checkpoint itself (a symlink or hard link to it, under the
    ``.npz``'s name): that is a :class:`UsageError`, before anything is read or written.
    A symlink at the output's name is replaced by the new file, never written through: what
    it led to (another checkpoint, say) is left as it was."""
    from streamsonic.model.checkpoint import load_checkpoint  # noqa: PLC0415 - torch

    source = Path(checkpoint)
    if source.suffix == SUFFIX:
        raise UsageError(f"{source} is already a torch-free weights file ({SUFFIX}): convert "
                         f"takes a .pt checkpoint and writes its {SUFFIX}; --weights, "
                         f"--temporal-weights and info read {source} as it is")
    target = Path(out) if out else arrays_path(source)
    if same_file(source, target):
        where = f"-o {target}" if out else f"{target} (where its {SUFFIX} goes by default)"
        how = (" (a symlink to it)" if target.is_symlink() else
               "" if os.path.realpath(source) == os.path.realpath(target) else
               " (a hard link to it)")
        fix = "give -o another name" if out else f"remove {target} or give -o another name"
        raise UsageError(f"{where} is the checkpoint {source} itself{how}: writing it would "
                         f"replace the checkpoint; {fix}")
    ckpt = load_checkpoint(source)
    # a folder, a read-only one: 69, nothing written
    check_writable(target, "weights file", follow=False)
    return save_arrays(target, ckpt, file_digest(source), follow=False)


# -- reading ---------------------------------------------------------------------------------

def _header(npz: Any, p: Path | str, hint: str = HINT) -> dict[str, Any]:
    if META_KEY not in npz.files:
        raise CheckpointError(f"{p} is not a streamsonic weights file (no {META_KEY}); {hint}")
    raw = npz[META_KEY]
    try:
        header = json.loads(str(raw[()])) if raw.dtype.kind == "U" and raw.ndim == 0 else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not a streamsonic weights file; {hint}")
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{p} was written in weights format {header.get('format_version')}, this "
            f"streamsonic reads format {FORMAT_VERSION}; convert its checkpoint again "
            "('streamsonic convert') or use a matching streamsonic version")
    return header


def read_header(path: str | Path, shown: str | None = None) -> dict[str, Any]:
    """The metadata of a ``.npz`` (no weights read, nothing checked but the format);
    ``shown``: what errors call the file (default: its path)."""
    p = Path(path)
    name = shown or p
    try:
        with np.load(p, allow_pickle=False) as npz:
            return _header(npz, name)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise CheckpointError(f"{name} is not a streamsonic weights file (cannot be read: "
                              f"{type(err).__name__}); {HINT}") from None


def arrays_inside(p: Path) -> bool:
    """Whether the file at ``p`` (whatever its name) is a streamsonic ``.npz``: for the error
    about a checkpoint that torch cannot load."""
    try:
        read_header(p)
    except CheckpointError:
        return False
    return True


def missing(p: Path, hint: str) -> CheckpointError:
    """The error for a weights file ``p`` that is not a regular file: a folder, something
    else that is there (a device, a FIFO, a socket: never opened, so a FIFO cannot hang the
    command), or nothing."""
    if p.is_dir():
        return CheckpointError(f"weights file {p} is a folder; give a weights file (a .pt "
                               f"checkpoint or its {SUFFIX}), e.g. {p / 'pitch.pt'}")
    if p.exists():
        return CheckpointError(f"weights file {p} is not a regular file (a device, a pipe or "
                               f"a socket); give a weights file (a .pt checkpoint or its "
                               f"{SUFFIX})")
    return CheckpointError(f"weights file {p} does not exist; {hint}")


#: Where each kind of model is given to run and render.
OPTION = {"pitch": "--weights", "temporal": "--temporal-weights (with --rhythm model)"}


def wrong_kind(shown: str | Path, got: object, kind: str) -> CheckpointError:
    """The error for a weights file (as the message names it: ``shown``) that holds a model
    of another kind than ``kind``, with the option that takes the kind it holds."""
    fix = f"; a {got} model goes to {OPTION[got]}" if isinstance(got, str) and got in OPTION \
        else ""
    return CheckpointError(f"{shown} holds a {got!r} model, expected a {kind!r} model{fix}")


def load_arrays(path: str | Path, kind: str | None = None,
                shown: str | None = None) -> ArrayCheckpoint:
    """Load and check a ``.npz``; ``kind`` ("pitch"/"temporal") must match if given;
    ``shown``: what errors call the file (default: its path)."""
    p = Path(path)
    name = shown or p
    if not p.is_file():
        raise missing(p, hint_for(kind))
    try:
        with np.load(p, allow_pickle=False) as npz:
            header = _header(npz, name, hint_for(kind))
            arrays = {key: npz[key] for key in npz.files if key != META_KEY}
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        raise CheckpointError(f"{name} is not a streamsonic weights file (cannot be read: "
                              f"{type(err).__name__}); {hint_for(kind)}") from None
    if kind is not None and header.get("kind") != kind:
        raise wrong_kind(name, header.get("kind"), kind)
    try:
        return _checked(header, arrays, p, name)
    except Malformed as err:
        raise CheckpointError(f"{name}: malformed weights file: {err}; convert its checkpoint "
                              "again ('streamsonic convert') or restore a good copy") from None


def _checked(header: dict[str, Any], arrays: dict[str, np.ndarray], p: Path,
             name: Path | str) -> ArrayCheckpoint:
    kind = header.get("kind")
    if kind not in ("pitch", "temporal"):
        raise Malformed(f"kind is {kind!r}, not 'pitch' or 'temporal'")
    classes = check_classes(header.get("classes"))
    arch = header.get("arch")
    seq_len = check_seq_len(header.get("seq_len", 50))
    meta = header.get("meta", {})
    check_meta(meta)
    stored = header.get("weights_sha256")
    if not isinstance(stored, str) or not SHA256.fullmatch(stored):
        raise Malformed(f"weights_sha256 is {stored!r}, not a sha256 hex digest")
    if weights_digest(arrays) != stored:
        raise CheckpointError(f"{name}: the weights do not match their sha256 checksum: the file "
                              "is corrupted; convert its checkpoint again or restore a good copy")
    expected = expected_shapes(kind, arch, len(classes))
    check_weights({k: a.shape for k, a in arrays.items()}, expected,
                  {k: torch_dtype_name(a) for k, a in arrays.items()},
                  {k: a.dtype.kind == "f" and bool(np.isfinite(a).all())
                   for k, a in arrays.items()})
    assert isinstance(arch, dict)  # expected_shapes checked it
    return ArrayCheckpoint(kind=kind, arch=dict(arch), classes=classes, arrays=arrays,
                           seq_len=seq_len, meta=dict(meta), path=str(p), weights_sha256=stored)


def arrays_for(path: str | Path, kind: str) -> tuple[ArrayCheckpoint | None, str]:
    """The torch-free weights for the checkpoint at ``path``: the file itself if it is a
    ``.npz``; for a ``.pt``, the ``.npz`` beside it when it was converted from exactly that
    file. Else None and why not (a line for the log, once the checkpoint has loaded). A
    missing file, or a broken ``.npz``, is a :class:`CheckpointError`."""
    p = Path(path)
    if p.suffix == SUFFIX:
        return load_arrays(p, kind=kind), ""
    if not p.is_file():
        raise missing(p, hint_for(kind))
    beside = arrays_path(p)
    if not beside.is_file():
        return None, (f"{p} has no {beside.name} beside it: it was read with torch (slower "
                      f"start, more memory); 'streamsonic convert {p}' writes one")
    shown = f"the {beside.name} beside {p}"  # read in its place: errors name both
    header = read_header(beside, shown)
    if header.get("source_sha256") != file_digest(p):
        return None, (f"{beside} was not converted from this {p.name} (it changed since): the "
                      f"checkpoint was read with torch; 'streamsonic convert {p}' brings it "
                      "up to date")
    if header.get("kind") != kind:  # named as the user gave it, with the file read
        raise wrong_kind(f"{p} (read as the {beside.name} beside it)", header.get("kind"), kind)
    return load_arrays(beside, kind=kind, shown=shown), ""


def pitch_network_from(arrays: Mapping[str, Any]) -> PitchLSTM:
    """A torch pitch network with these weights (CUDA: the torch stepper needs one)."""
    import torch  # noqa: PLC0415

    from streamsonic.model.network import PitchLSTM  # noqa: PLC0415

    w_hh1, head = arrays["lstm1.weight_hh_l0"], arrays["head.weight"]
    net = PitchLSTM(n_classes=int(head.shape[0]), hidden1=int(w_hh1.shape[1]),
                    hidden2=int(arrays["lstm2.weight_hh_l0"].shape[1]))
    net.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in arrays.items()})
    return net.eval()
