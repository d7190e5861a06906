"""`streamsonic train pitch|temporal [DIR] [--corpus SOURCE] -o OUT.pt`: train a model from
MIDI files and scores."""

from __future__ import annotations

import argparse
import shlex
import sys

from streamsonic.commands.common import setup_logging, stop_signals
from streamsonic.errors import EXIT_INTERRUPTED

DESCRIPTION = """\
Train the pitch model (next note from the previous ones) or the temporal model (next
note's pitch, gap, duration and velocity) on every MIDI file (.mid, .midi) and score
(MusicXML .mxl/.musicxml/.xml, ABC .abc, Humdrum .krn) under DIR, and on each --corpus
source: another folder, or music21's bundled corpus as music21:NAME[:FORMAT]. Scores
need music21 (pip install 'streamsonic[train]'). The melody of a MIDI file is its highest
note per onset; of a score, its part named Soprano or Melody, else its highest voice
(--tracks). Pieces (every tune of an ABC collection is one) are split into training and
validation by PIECE (seeded). The best model by validation loss is written to OUT.pt as
soon as it improves, with OUT.npz beside it; Ctrl-C stops cleanly and --resume continues
from the last finished epoch (state in OUT.pt.resume). An earlier run's files are never
replaced without --overwrite (exit 73). A loss that becomes NaN or infinite stops the run
(exit 70: lower --lr); nothing of that state is saved. Files with the same contents (a
folder given twice, also through a symlink; a copy) are read once, and while scores are
parsed a line every 5 seconds says how far it is. No config file is read or written.

examples:
  streamsonic train pitch ./midi -o weights/mine.pt
  streamsonic train temporal ./midi -o weights/mine-temporal.pt --epochs 30
  streamsonic train temporal --corpus music21:bach:musicxml -o weights/bach-temporal.pt
  streamsonic train pitch ./midi -o weights/mine.pt --resume
  streamsonic train pitch ./midi -o weights/mine.pt --overwrite --lr 0.001
  streamsonic --weights weights/mine.pt            play with it
  streamsonic info weights/mine.pt                 what is inside"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the train options."""
    parser.add_argument("kind", choices=("pitch", "temporal"), help="which model to train")
    parser.add_argument("data", metavar="DIR", nargs="?", default="",
                        help="folder of MIDI files and scores (searched recursively)")
    parser.add_argument("--corpus", action="append", default=[], metavar="SOURCE",
                        help="more training data, repeatable: a folder, or music21:NAME"
                             "[:FORMAT] for a collection of music21's corpus (e.g. "
                             "music21:bach, music21:ryansMammoth:abc; FORMAT is musicxml, "
                             "abc, humdrum or midi)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.pt",
                        help="checkpoint to write (the best epoch by validation loss); the "
                             "name must end in .pt: OUT.npz (the same weights for the "
                             "torch-free player) and OUT.pt.resume go beside it")
    g = parser.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=60, metavar="N",
                   help="most epochs to run (default 60; early stopping usually ends sooner)")
    g.add_argument("--patience", type=int, default=6, metavar="N",
                   help="stop after N epochs without a better validation loss (default 6)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run saved in OUT.pt.resume (same options and data)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run's OUT.pt, OUT.npz and OUT.pt.resume (without "
                        "it, or --resume, train refuses to start when any of them exists: "
                        "exit 73)")
    g.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the split, initial weights and batch order (default 0)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to train; auto = CUDA when present (default)")
    g.add_argument("--threads", type=int, default=0, metavar="N",
                   help="CPU threads for PyTorch (default 0: PyTorch's choice; "
                        "1 is fastest on a busy machine)")
    g.add_argument("--seq-len", type=int, default=50, metavar="N",
                   help="notes per training window (default 50)")
    g.add_argument("--stride", type=int, default=4, metavar="N",
                   help="notes between the starts of training windows (default 4)")
    g.add_argument("--batch-size", type=int, default=32, metavar="N",
                   help="windows per batch (default 32)")
    g.add_argument("--lr", type=float, default=3e-3, metavar="X",
                   help="AdamW learning rate (default 0.003)")
    g.add_argument("--weight-decay", type=float, default=0.01, metavar="X",
                   help="AdamW weight decay (default 0.01)")
    g.add_argument("--clip", type=float, default=1.0, metavar="X",
                   help="gradient norm clipping (default 1.0)")
    g.add_argument("--val-fraction", type=float, default=0.2, metavar="X",
                   help="fraction of the pieces held out for validation (default 0.2)")
    g.add_argument("--transpose", type=int, default=0, metavar="N",
                   help="also train on copies of each training piece shifted by up to N "
                        "semitones either way, where they stay in the pitch range (default 0)")
    g.add_argument("--tracks", choices=("auto", "all", "first"), default="auto",
                   help="where the melody comes from: all tracks/parts merged (the highest "
                        "note per onset), or the first track/part with notes; auto (default): "
                        "MIDI files all, scores the part named Soprano or Melody, else the "
                        "highest voice")
    g.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   default="info", help="log verbosity on stderr (default info)")
    g.add_argument("--hidden1", type=int, default=256, metavar="N",
                   help="units of the first LSTM (default 256)")
    g.add_argument("--hidden2", type=int, default=None, metavar="N",
                   help="units of the second LSTM (default: number of pitch classes for "
                        "pitch, 128 for temporal)")


def main(args: argparse.Namespace) -> int:
    """Train, print the report; 130 when interrupted (143 SIGTERM, 129 SIGHUP)."""
    from streamsonic.train.loop import TrainOptions, train  # noqa: PLC0415 - keeps --help light
    from streamsonic.train.report import report  # noqa: PLC0415

    setup_logging(args.log_level)
    opts = TrainOptions(
        kind=args.kind, data=args.data, out=args.output, epochs=args.epochs,
        seq_len=args.seq_len, stride=args.stride, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, clip=args.clip, val_fraction=args.val_fraction,
        seed=args.seed, device=args.device, tracks=args.tracks, patience=args.patience,
        hidden1=args.hidden1, hidden2=args.hidden2, resume=args.resume, threads=args.threads,
        overwrite=args.overwrite,
        transpose=args.transpose, corpus=tuple(args.corpus),
        command=shlex.join(["streamsonic", *sys.argv[1:]]) if sys.argv[1:2] == ["train"] else "",
    )
    with stop_signals() as stopped:  # SIGTERM, SIGHUP: as Ctrl-C, the last epoch kept
        result = train(opts)
    print(report(result))
    if result.stopped != "interrupted":
        return 0
    return stopped.exit_status or EXIT_INTERRUPTED
