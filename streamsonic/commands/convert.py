"""`streamsonic convert`: write the torch-free ``.npz`` of a checkpoint."""

from __future__ import annotations

import argparse

from streamsonic.commands.common import setup_logging

DESCRIPTION = """\
Write the torch-free weights file (.npz) of a checkpoint (.pt), beside it by default
(pitch.pt -> pitch.npz). The CPU player reads the .npz and never imports torch: it starts
in well under a second and uses less than half the memory. 'streamsonic train' writes one
with every checkpoint; use this for checkpoints from older versions or copied without it.
A .npz is used only while its checkpoint is the file it was converted from: after
replacing a .pt, convert it again (until then the player reads the .pt with torch).

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
    from streamsonic.model.arrays import SUFFIX, convert, load_arrays  # noqa: PLC0415

    if args.output is not None and not str(args.output).endswith(SUFFIX):
        raise UsageError(f"--output {args.output!r}: the weights file's name must end in "
                         f"{SUFFIX}")
    out = convert(args.checkpoint, args.output)
    ckpt = load_arrays(out)  # read back: what the player will read
    print(f"wrote {out} ({ckpt.kind} model, {len(ckpt.arrays)} weights, "
          f"sha256 {ckpt.weights_sha256})")
    return 0
