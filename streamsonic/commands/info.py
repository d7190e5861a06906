"""`streamsonic info [CHECKPOINT]`: what a weights file holds (by default the shipped one)."""

from __future__ import annotations

import argparse
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Show what a checkpoint (.pt, or the .npz written beside it) holds: its kind, pitch classes
and range, architecture, the training data (files and their sha256), validation metrics
against the baselines, how it was trained, and the library versions that made it. Without
CHECKPOINT, the pitch model installed with streamsonic (the one 'run' plays by default);
'temporal' names the shipped temporal model. --default-config prints the shipped,
commented config.toml.

examples:
  streamsonic info
  streamsonic info temporal --json
  streamsonic info weights/mine.pt
  streamsonic info --default-config > ~/.config/streamsonic/config.toml"""

#: CHECKPOINT words that name the checkpoints shipped with the package.
SHIPPED = ("pitch", "temporal")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the info options."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?", default="pitch",
                        help="a .pt checkpoint or its torch-free .npz, or 'pitch' / "
                             "'temporal' for a shipped model (default: the shipped pitch "
                             "model)")
    parser.add_argument("--default-config", action="store_true",
                        help="print the shipped config.toml (every setting, commented) and exit")
    parser.add_argument("--json", action="store_true", help="print everything as JSON")
    parser.add_argument("--files", action="store_true",
                        help="list every training file with its sha256")


NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def note_name(pitch: int) -> str:
    """MIDI pitch -> scientific pitch name (60 -> C4)."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def describe(ckpt: Any, files: bool = False) -> str:
    """The human-readable description of a loaded checkpoint (a ``.pt``'s or a ``.npz``'s:
    tensors or arrays)."""
    from streamsonic.train.report import metrics_table  # noqa: PLC0415

    meta = ckpt.meta or {}
    data = meta.get("data", {})
    training = meta.get("training", {})
    metrics = meta.get("metrics", {})
    size = Path(ckpt.path).stat().st_size if ckpt.path else 0
    lo, hi = min(ckpt.classes), max(ckpt.classes)
    weights = ckpt.arrays if hasattr(ckpt, "arrays") else ckpt.state_dict
    n_params = sum(math.prod(v.shape) for v in weights.values())
    missing = [str(p) for p in range(lo, hi + 1) if p not in ckpt.classes]
    arch = {k: v for k, v in ckpt.arch.items() if not isinstance(v, list | dict)}
    checksum = (f"sha256 {ckpt.weights_sha256} (verified)" if ckpt.weights_sha256 else
                "none: saved before checksums, so damage cannot be detected; re-save it")
    lines = [
        f"file:        {ckpt.path} ({size / 1e6:.2f} MB)",
        f"kind:        {ckpt.kind}",
        f"weights:     {checksum}",
        f"classes:     {len(ckpt.classes)} pitches, {lo}..{hi} "
        f"({note_name(lo)}..{note_name(hi)})",
        f"missing:     {', '.join(missing) or 'none'}",
        f"network:     {', '.join(f'{k}={v}' for k, v in arch.items())}; {n_params:,} parameters",
        f"seq_len:     {ckpt.seq_len}",
    ]
    if "gap_grid" in ckpt.arch:
        grid = ", ".join(f"{g:g}" for g in ckpt.arch["gap_grid"])
        lines.append(f"timing:      gap/duration bins in beats: {grid}")
        lines.append(f"first note:  {ckpt.arch.get('default_timing')}")
    if data:
        lines.append(f"data:        {data.get('n_files', '?')} files, {data.get('n_notes', '?')} "
                     f"notes from {data.get('root', '?')} (tracks: {data.get('tracks', '?')})")
        split = data.get("split", {})
        if split:
            lines.append(f"split:       {len(split.get('train', []))} train / "
                         f"{len(split.get('val', []))} validation files (seed "
                         f"{split.get('seed')}); validation: {', '.join(split.get('val', []))}")
        if data.get("skipped"):
            lines.append(f"skipped:     {', '.join(s['name'] for s in data['skipped'])}")
        if files:
            lines.extend(f"  {f['sha256']}  {f['name']} ({f['notes']} notes)"
                         for f in data.get("files", []))
    if training:
        lines.append(f"training:    best epoch {training.get('best_epoch')} of "
                     f"{training.get('epochs_run')} ({training.get('stopped')}), "
                     f"{training.get('seconds')} s on {training.get('device')}, "
                     f"{training.get('windows_per_second')} windows/s")
        if training.get("command"):
            lines.append(f"command:     {training['command']}")
    if metrics.get("val"):
        if not isinstance(metrics["val"], dict):
            raise TypeError(f"meta.metrics.val is {metrics['val']!r}, not a table")
        lines.append("validation:")
        lines.extend("  " + row for row in
                     metrics_table(metrics["val"], metrics.get("baselines", {})).splitlines())
    versions = meta.get("versions", {})
    if versions:
        lines.append("versions:    " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if meta.get("created"):
        lines.append(f"created:     {meta['created']}")
    other = {k: v for k, v in meta.items()
             if k not in ("data", "training", "metrics", "versions", "created")}
    if other:
        lines.append(f"meta:        {json.dumps(other, default=str)}")
    return "\n".join(lines)


def default_config_text() -> str:
    """The shipped config.toml (package data; the repository's config.toml in a checkout)."""
    return (resources.files("streamsonic") / "data" / "config.toml").read_text(encoding="utf-8")


def main(args: argparse.Namespace) -> int:
    """Print the description (or JSON)."""
    from streamsonic.commands.printing import write_stdout  # noqa: PLC0415

    if args.default_config:
        write_stdout(default_config_text())
        return 0
    from streamsonic.errors import CheckpointError  # noqa: PLC0415
    from streamsonic.model.arrays import SUFFIX, default_weights, load_arrays  # noqa: PLC0415

    path = args.checkpoint
    if path in SHIPPED and not Path(path).is_file():
        path = default_weights(path)
    if Path(path).suffix == SUFFIX:  # the torch-free weights (read without torch)
        ckpt: Any = load_arrays(path)  # checks everything a player needs
    else:
        from streamsonic.model.checkpoint import load_checkpoint  # noqa: PLC0415

        ckpt = load_checkpoint(path)
    if args.json:
        write_stdout(json.dumps({"kind": ckpt.kind, "arch": ckpt.arch, "classes": ckpt.classes,
                                 "seq_len": ckpt.seq_len, "weights_sha256": ckpt.weights_sha256,
                                 "meta": ckpt.meta}, indent=2, default=str) + "\n")
        return 0
    try:
        text = describe(ckpt, files=args.files)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        # The metadata's inner shape (training files, metrics...) is free-form.
        raise CheckpointError(
            f"{ckpt.path}: malformed checkpoint metadata ({type(err).__name__}: {err}); "
            "'streamsonic info --json' shows it as stored"
        ) from None
    write_stdout(text + "\n")
    return 0
