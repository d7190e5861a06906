"""`streamsonic convert`: write the torch-free ``.npz`` of a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from streamsonic.commands.common import setup_logging

DESCRIPTION = """\
Write the torch-free weights file (.npz) of a checkpoint (.pt), beside it by default
(pitch.pt -> pitch.npz). The CPU player reads the .npz and never imports torch: it starts
in well under a second and uses less than half the memory. 'streamsonic train' writes one
with every checkpoint; use this for checkpoints from older versions or copied without it.
A temporal model's .npz is read by --temporal-weights too, but that model still runs on
torch. CHECKPOINT is the .pt: a .npz given is converted already (exit 64).
A .npz is used only while its checkpoint is the file it was converted from: after
replacing a .pt, convert it again (until then the player reads the .pt with torch).
The .npz is never the checkpoint itself (a symlink or hard link to it is refused, exit 64);
a symlink at its name is replaced by the file, never written through.

examples:
  streamsonic convert weights/pitch.pt
  streamsonic convert my.pt -o /srv/streamsonic/my.npz"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the convert options."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt checkpoint")
    parser.add_argument("-o", "--output", metavar="OUT.npz", default=None,
                        help="where to write it (default: beside the checkpoint)")
    parser.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warning", "error"),
                        help="log verbosity on stderr (default info)")


def main(args: argparse.Namespace) -> int:
    """Check the checkpoint as the player would, then write its .npz."""
    setup_logging(args.log_level)
    from streamsonic.errors import UsageError  # noqa: PLC0415
    from streamsonic.model.arrays import SUFFIX, arrays_path, convert, load_arrays  # noqa: PLC0415

    if args.output is not None and not str(args.output).endswith(SUFFIX):
        raise UsageError(f"--output {args.output!r}: the weights file's name must end in "
                         f"{SUFFIX}")
    target = Path(args.output) if args.output else arrays_path(args.checkpoint)
    link = target.readlink() if target.is_symlink() else None
    out = convert(args.checkpoint, args.output)
    ckpt = load_arrays(out)  # read back: what the player will read
    replaced = "" if link is None else f"; it replaces a symlink to {link}, left as it was"
    print(f"wrote {out} ({ckpt.kind} model, {len(ckpt.arrays)} weights, "
          f"sha256 {ckpt.weights_sha256}){replaced}")
    return 0
