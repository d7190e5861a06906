"""The training loop shared by the pitch and the temporal model.

AdamW, gradient clipping, validation after every epoch on held-out *files*, the best
model by validation loss written to ``OUT`` as soon as it improves, early stopping after
``patience`` epochs without improvement, and a resume file ``OUT.resume`` written after
every epoch (last weights, optimizer, best loss, best weights, epochs without improvement,
history). Ctrl-C stops between batches: the best checkpoint is already on disk and
``--resume`` continues from the last finished epoch, so an epoch after the resume replaces
the best checkpoint only if it beats the saved run's best, and patience counts on from the
saved run (with the patience given now: a larger one continues an early-stopped run).

Runs are deterministic for a given ``--seed``: the split, the initial weights, the
order of windows and the dropout masks of epoch ``e`` are all derived from
``(seed, e)``, so a resumed run repeats exactly what an uninterrupted one would do (on
the same device and library versions).
"""

from __future__ import annotations

import copy
import datetime as dt
import importlib.metadata
import io
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn

from streamsonic import __version__
from streamsonic.errors import (
    CheckpointError,
    OutputExistsError,
    TrainingDivergedError,
    TrainingError,
    UsageError,
)
from streamsonic.model.arrays import SUFFIX, arrays_path
from streamsonic.model.checkpoint import Checkpoint, save_checkpoint
from streamsonic.model.files import check_writable, interrupts_held, write_whole
from streamsonic.model.stepper import resolve_device
from streamsonic.train.baselines import baselines
from streamsonic.train.dataset import (
    Tracks,
    Windows,
    load_corpus,
    make_windows,
    split_by_file,
    transposed,
)
from streamsonic.train.progress import LoadProgress, Progress
from streamsonic.train.tasks import Task, TemporalTask, make_task, metrics_from, to_tensors

RESUME_FORMAT = "streamsonic-resume"
RESUME_VERSION = 1

#: Seconds between the lines that say how reading the training data goes (parsing a
#: music21 collection takes minutes; a quick read prints none).
LOAD_PROGRESS_SECONDS = 5.0

#: Options that must be the same for ``--resume`` to continue a run.
FINGERPRINT_KEYS = ("kind", "seq_len", "stride", "batch_size", "lr", "weight_decay", "clip",
                    "val_fraction", "seed", "tracks", "hidden1", "hidden2", "transpose")


@dataclass(frozen=True)
class TrainOptions:
    """Everything one training run needs (the CLI flags of ``streamsonic train``)."""

    kind: str
    data: str
    out: str
    epochs: int = 60
    seq_len: int = 50
    stride: int = 4
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    clip: float = 1.0
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    tracks: Tracks = "auto"  # checked by ``check`` too: values come from the command line
    patience: int = 6
    hidden1: int = 256
    hidden2: int | None = None
    transpose: int = 0
    resume: bool = False
    overwrite: bool = False  # replace an earlier run's OUT.pt, .npz and .resume
    threads: int = 0
    command: str = ""
    corpus: tuple[str, ...] = ()  # more sources: folders or music21:NAME selectors

    def sources(self) -> list[str]:
        """Where the training data comes from: ``data`` (if given), then ``corpus``."""
        return [s for s in (self.data, *self.corpus) if s]

    def check(self) -> None:
        """Reject values that cannot train, naming the flag: a bad option is a bad command
        line (UsageError, exit 64), as the README's exit statuses say."""
        if self.kind not in ("pitch", "temporal"):
            raise UsageError(f"unknown model kind {self.kind!r}; use pitch or temporal")
        for name, value in (("--epochs", self.epochs), ("--seq-len", self.seq_len),
                            ("--stride", self.stride), ("--batch-size", self.batch_size),
                            ("--patience", self.patience), ("--hidden1", self.hidden1)):
            if value < 1:
                raise UsageError(f"{name} must be at least 1, got {value}")
        if not 0 <= self.transpose <= 12:
            raise UsageError(f"--transpose must be 0..12 semitones, got {self.transpose}")
        if self.threads < 0:
            raise UsageError(f"--threads must be >= 0 (0: default), got {self.threads}")
        if self.hidden2 is not None and self.hidden2 < 1:
            raise UsageError(f"--hidden2 must be at least 1, got {self.hidden2}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"--lr must be > 0, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UsageError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if not (math.isfinite(self.clip) and self.clip > 0):  # 0 would zero every gradient
            raise UsageError(f"--clip must be > 0 (the largest gradient norm), got {self.clip}")
        if not 0.0 < self.val_fraction < 1.0:
            raise UsageError(f"--val-fraction {self.val_fraction} must be between 0 and 1")
        if self.tracks not in ("auto", "all", "first"):
            raise UsageError(f"--tracks must be auto, all or first, got {self.tracks!r}")
        if not self.sources():
            raise TrainingError("no training data: pass a folder of MIDI or score files, "
                                "or --corpus music21:NAME (e.g. music21:bach)")

    def fingerprint(self) -> dict[str, Any]:
        """The options a resumed run must share with the run it continues."""
        return {k: getattr(self, k) for k in FINGERPRINT_KEYS}


@dataclass
class TrainResult:
    """What a run produced."""

    out: Path
    kind: str
    stopped: str  # "completed" | "early-stopped" | "interrupted" | "already-finished"
    epochs_run: int
    best_epoch: int
    best: dict[str, float]
    baselines: dict[str, dict[str, float]]
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (name, same as)
    n_params: int = 0
    train_windows: int = 0
    val_windows: int = 0
    windows_per_second: float = 0.0


def resume_path(out: str | Path) -> Path:
    """Where the resume state of ``out`` lives."""
    return Path(str(out) + ".resume")


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}" if n == 1 else f"{n:,} {what}s"


#: The suffix ``-o`` must have: the ``.npz`` beside it takes the name with ``.npz`` instead.
CHECKPOINT_SUFFIX = ".pt"


def output_files(out: str | Path) -> list[Path]:
    """The files a run writes: the checkpoint, its ``.npz`` and the resume state."""
    return [Path(out), arrays_path(out), resume_path(out)]


def check_outputs(out: str | Path, replace: bool = False) -> None:
    """The files a run writes (the checkpoint, its ``.npz``, the resume state) can be
    written and may be: none is a folder, their folder exists or can be made and takes
    files (else exit 69), and unless ``replace`` (``--overwrite``, ``--resume``) none of
    them is there already (exit 73: an earlier run's files are never replaced by
    accident). Checked before any data is read, so a bad ``-o`` is one line, not a lost
    epoch. ``out`` must end in ``.pt`` (a usage error, 64, otherwise): ``x.npz`` would
    be the checkpoint and its own ``.npz`` at once, ``x.pt.resume`` another run's resume
    state, and ``x`` would write ``x.npz`` under a name that says nothing of it."""
    name = str(out)
    if name.endswith(".resume"):
        raise UsageError(f"-o {out}: that name is a run's resume state (NAME.pt.resume, "
                         "written beside NAME.pt); give the checkpoint's name, NAME.pt")
    check_writable(out, "checkpoint")  # first: a folder is "a folder", not "not .pt"
    if Path(out).suffix != CHECKPOINT_SUFFIX:
        try:
            stem = Path(out).with_suffix(CHECKPOINT_SUFFIX)
        except ValueError:  # no name to put a suffix on ("/")
            stem = Path("model.pt")
        why = (f"that is the name of the {SUFFIX} written beside the checkpoint"
               if Path(out).suffix == SUFFIX else "the checkpoint's name must end in .pt")
        raise UsageError(f"-o {out}: {why}; give the checkpoint's name, NAME.pt (e.g. "
                         f"{stem}: train writes NAME.pt, NAME{SUFFIX} beside it and "
                         "NAME.pt.resume)")
    check_writable(arrays_path(out), "weights file", option="-o (its .npz, beside it)")
    check_writable(resume_path(out), "resume state", option="-o (its .resume, beside it)")
    if replace:
        return
    there = [p for p in output_files(out) if os.path.lexists(p)]
    if there:
        raise OutputExistsError(
            f"-o {out}: {', '.join(map(str, there))} already "
            f"{'exists' if len(there) == 1 else 'exist'} (an earlier run's); pass "
            f"--overwrite to replace {'it' if len(there) == 1 else 'them'}, --resume to "
            "continue that run, or give -o another name")


def versions() -> dict[str, str]:
    """Library versions recorded in every checkpoint."""
    def ver(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    return {"streamsonic": __version__, "torch": str(torch.__version__), "numpy": np.__version__,
            "mido": ver("mido"), "music21": ver("music21"), "python": platform.python_version()}


def evaluate(net: nn.Module, task: Task, windows: Windows, device: torch.device,
             batch_size: int = 256) -> dict[str, float]:
    """Validation metrics of ``net`` over ``windows`` (eval mode, no dropout)."""
    was_training = net.training
    net.eval()
    sums: dict[str, float] = {}
    with torch.no_grad():
        for i in range(0, len(windows), batch_size):
            sl = slice(i, i + batch_size)
            x, y, m = to_tensors(windows.x[sl], {k: v[sl] for k, v in windows.targets.items()},
                                 windows.mask[sl], device)
            out, _ = net(x)
            for k, v in task.counts(net, out, y, m).items():
                sums[k] = sums.get(k, 0.0) + v
    net.train(was_training)
    return metrics_from(sums)


class _Run:
    """Mutable state of a run; what the resume file stores besides weights and optimizer."""

    def __init__(self) -> None:
        self.epoch = 0  # last finished epoch
        self.best_loss = float("inf")
        self.best_epoch = 0
        self.best_metrics: dict[str, float] = {}
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_epochs = 0
        self.history: list[dict[str, float]] = []
        self.seconds = 0.0
        self.windows_seen = 0
        self.train_seconds = 0.0
        self.early_stopped = False


def train(opts: TrainOptions, stream: TextIO | None = None,
          on_epoch: Callable[[int], None] | None = None) -> TrainResult:
    """Train one model as ``opts`` says; see the module docstring."""
    opts.check()
    check_outputs(opts.out, replace=opts.resume or opts.overwrite)
    device = resolve_device(opts.device)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    started = time.monotonic()
    reading = LoadProgress(stream=stream, interval=LOAD_PROGRESS_SECONDS)
    corpus = load_corpus(opts.sources(), opts.tracks, progress=reading)
    reading.done()
    train_m, val_m = split_by_file(corpus.melodies, opts.val_fraction, opts.seed)
    classes = corpus.classes()
    if len(classes) < 2:
        raise TrainingError(f"the training files of {corpus.root} use only one pitch; "
                            "a model needs at least two")
    task = make_task(opts.kind, classes)
    if isinstance(task, TemporalTask):
        task.set_default_timing(train_m)
    enc_train = [task.encode(m) for m in transposed(train_m, opts.transpose, classes)]
    enc_val = [task.encode(m) for m in val_m]
    w_train = make_windows(enc_train, opts.seq_len, opts.stride)
    w_val = make_windows(enc_val, opts.seq_len, opts.seq_len)
    n_parts = {"pitch": task.encoding.size}
    if isinstance(task, TemporalTask):
        n_parts |= {"gap": task.timing.n_gap, "duration": task.timing.n_duration}
    base = baselines([t for _, t in enc_train], [t for _, t in enc_val], n_parts)

    torch.manual_seed(opts.seed)
    net = task.build(opts.hidden1, opts.hidden2).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    run = _Run()
    data_hashes = [m.sha256 for m in corpus.melodies]
    if opts.resume:
        _load_resume(opts, run, net, optimizer, data_hashes, device)
        # --patience may differ from the saved run's: the epochs without improvement carry
        # over and the new patience decides (a larger one continues an early-stopped run)
        run.early_stopped = run.bad_epochs >= opts.patience

    n_params = sum(p.numel() for p in net.parameters())
    summary = corpus.summary()
    summary["split"] = {"train": [m.name for m in train_m], "val": [m.name for m in val_m],
                        "seed": opts.seed, "val_fraction": opts.val_fraction}
    summary["tracks"] = opts.tracks
    summary["sources"] = opts.sources()
    summary["pitch_range"] = [classes[0], classes[-1]]

    def meta(stopped: str) -> dict[str, Any]:
        return {
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "data": summary,
            "metrics": {"val": dict(run.best_metrics), "baselines": base,
                        "train": dict(run.history[run.best_epoch - 1])
                        if 0 < run.best_epoch <= len(run.history) else {}},
            "training": {
                "command": opts.command, "options": asdict(opts) | {"resume": False},
                "best_epoch": run.best_epoch, "epochs_run": run.epoch, "stopped": stopped,
                "seconds": round(run.seconds, 1), "parameters": n_params,
                "windows": {"train": len(w_train), "val": len(w_val)},
                "device": str(device),
                "windows_per_second": round(run.windows_seen / max(run.train_seconds, 1e-9), 1),
            },
            "versions": versions(),
        }

    def save_best(stopped: str) -> None:
        if run.best_state is None:
            return
        save_checkpoint(opts.out, Checkpoint(kind=task.kind, arch=task.arch(net), classes=classes,
                                             state_dict=run.best_state, seq_len=opts.seq_len,
                                             meta=meta(stopped)))

    n_batches = (len(w_train) + opts.batch_size - 1) // opts.batch_size
    progress = Progress(opts.epochs, n_batches, first_epoch=run.epoch + 1, stream=stream)
    progress.message(
        f"training {opts.kind} model on {_count(len(train_m), 'piece')} ({len(w_train):,} "
        f"windows), validating on {_count(len(val_m), 'piece')} ({len(w_val):,} windows); "
        f"{_count(len(corpus.melodies), 'piece')} from "
        f"{_count(len({m.sha256 for m in corpus.melodies}), 'file')}; {n_params:,} "
        f"parameters; device {device}"
    )
    stopped = "completed"
    if run.early_stopped or run.epoch >= opts.epochs:
        stopped = "already-finished"
    resumed_at = time.monotonic()
    base_seconds = run.seconds
    try:
        for epoch in range(run.epoch + 1, opts.epochs + 1):
            if run.early_stopped:
                break
            tr = _train_epoch(epoch, opts, task, net, optimizer, w_train, device, run, progress)
            val = evaluate(net, task, w_val, device)
            run.seconds = base_seconds + time.monotonic() - resumed_at
            run.history.append({"epoch": epoch, "train_loss": tr[0], "train_accuracy": tr[1],
                                **{f"val_{k}": v for k, v in val.items()}})
            _check_finite(epoch, tr[0], val, net)
            run.epoch = epoch
            # An epoch's checkpoint and resume state are saved together: a Ctrl-C (or
            # SIGTERM) meanwhile comes after both, so "continue with --resume" continues
            # from this epoch (it came between them and left no resume state).
            with interrupts_held():
                if val["loss"] < run.best_loss - 1e-4:
                    run.best_loss, run.best_epoch, run.best_metrics = val["loss"], epoch, val
                    run.best_state = copy.deepcopy({k: v.detach().cpu()
                                                    for k, v in net.state_dict().items()})
                    run.bad_epochs = 0
                    save_best("running")
                    mark = " *best*"
                else:
                    run.bad_epochs += 1
                    mark = ""
                run.early_stopped = run.bad_epochs >= opts.patience
                _save_resume(opts, run, net, optimizer, data_hashes)
            progress.epoch(epoch, f"loss {tr[0]:.3f} acc {tr[1]:.1%} | val loss "
                                  f"{val['loss']:.3f} acc {val['accuracy']:.1%}{mark}")
            if on_epoch is not None:
                on_epoch(epoch)
            if run.early_stopped:
                stopped = "early-stopped"
                progress.message(f"early stop: no better validation loss for {opts.patience} "
                                 f"epochs (best: epoch {run.best_epoch})")
                break
    except KeyboardInterrupt:
        stopped = "interrupted"
        run.seconds = base_seconds + time.monotonic() - resumed_at
    except _Diverged as why:
        progress.end_line()
        run.seconds = base_seconds + time.monotonic() - resumed_at
        save_best("diverged")  # the last finite best, its metadata saying how the run ended
        raise TrainingDivergedError(_diverged_message(str(why), opts, run)) from None
    if stopped != "already-finished":
        save_best(stopped)
    return TrainResult(
        out=Path(opts.out), kind=task.kind, stopped=stopped, epochs_run=run.epoch,
        best_epoch=run.best_epoch, best=dict(run.best_metrics), baselines=base,
        seconds=run.seconds if run.seconds else time.monotonic() - started,
        history=list(run.history), skipped=list(corpus.skipped),
        duplicates=list(corpus.duplicates), n_params=n_params,
        train_windows=len(w_train), val_windows=len(w_val),
        windows_per_second=run.windows_seen / max(run.train_seconds, 1e-9),
    )


def _train_epoch(epoch: int, opts: TrainOptions, task: Task, net: nn.Module,
                 optimizer: torch.optim.Optimizer, windows: Windows, device: torch.device,
                 run: _Run, progress: Progress) -> tuple[float, float]:
    """One pass over the training windows; returns (mean loss, pitch accuracy)."""
    torch.manual_seed(opts.seed * 1_000_003 + epoch)
    order = np.random.default_rng([opts.seed, epoch]).permutation(len(windows))
    net.train()
    sums = {"loss": 0.0, "pitch_correct": 0.0, "n": 0.0}
    t0 = time.perf_counter()
    for b, i in enumerate(range(0, len(order), opts.batch_size), start=1):
        idx = np.sort(order[i : i + opts.batch_size])
        x, y, m = to_tensors(windows.x[idx], {k: v[idx] for k, v in windows.targets.items()},
                             windows.mask[idx], device)
        out, _ = net(x)
        loss = task.loss(net, out, y, m)
        if not torch.isfinite(loss):  # before the step: NaN would spread to every weight
            raise _Diverged(f"the training loss became {float(loss.detach())} at epoch "
                            f"{epoch}, batch {b}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), opts.clip)
        optimizer.step()
        with torch.no_grad():
            c = task.counts(net, out.detach(), y, m)
        for k in sums:
            sums[k] += c[k]
        run.windows_seen += len(idx)
        n = max(sums["n"], 1.0)
        progress.batch(epoch, b, sums["loss"] / n, sums["pitch_correct"] / n)
    run.train_seconds += time.perf_counter() - t0
    n = max(sums["n"], 1.0)
    return sums["loss"] / n, sums["pitch_correct"] / n


class _Diverged(Exception):
    """The loss (or a weight) is no longer a finite number; the text says where."""


def _check_finite(epoch: int, train_loss: float, val: dict[str, float], net: nn.Module) -> None:
    """Raise :class:`_Diverged` unless the epoch's losses and every weight are finite, so
    no NaN state is ever saved (the per-batch check catches most runs sooner)."""
    if not math.isfinite(train_loss):
        raise _Diverged(f"the training loss of epoch {epoch} became {train_loss}")
    bad = sorted(k for k, v in val.items() if not math.isfinite(v))
    if bad:
        raise _Diverged(f"the validation {bad[0].replace('_', ' ')} of epoch {epoch} became "
                        f"{val[bad[0]]}")
    with torch.no_grad():
        if not all(bool(torch.isfinite(p).all()) for p in net.parameters()):
            raise _Diverged(f"the weights held NaN or infinity after epoch {epoch}")


def _diverged_message(why: str, opts: TrainOptions, run: _Run) -> str:
    """One line: what diverged, the fix, and what is on disk."""
    if run.best_state is not None:
        kept = (f"{opts.out} keeps the best epoch before it ({run.best_epoch}), "
                f"{resume_path(opts.out).name} the last finished one ({run.epoch})")
    else:
        kept = "no epoch finished, nothing was saved"
    again = " and --overwrite" if any(os.path.lexists(p) for p in output_files(opts.out)) \
        else ""
    return (f"training diverged: {why}; the learning rate is too high: start again with a "
            f"lower --lr{again} (now {opts.lr:g}; the default is 0.003); {kept}")


def _save_resume(opts: TrainOptions, run: _Run, net: nn.Module,
                 optimizer: torch.optim.Optimizer, data_hashes: list[str]) -> None:
    payload = {
        "format": RESUME_FORMAT, "format_version": RESUME_VERSION,
        "fingerprint": opts.fingerprint(), "data": data_hashes,
        "epoch": run.epoch, "best_loss": run.best_loss, "best_epoch": run.best_epoch,
        "best_metrics": run.best_metrics, "best_state": run.best_state,
        "bad_epochs": run.bad_epochs, "history": run.history, "seconds": run.seconds,
        "windows_seen": run.windows_seen, "train_seconds": run.train_seconds,
        "early_stopped": run.early_stopped,
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "optimizer": optimizer.state_dict(),
    }
    with interrupts_held():  # a Ctrl-C meanwhile comes once the file is whole
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_whole(resume_path(opts.out), buffer.getbuffer(), "resume state")


def _load_resume(opts: TrainOptions, run: _Run, net: nn.Module,
                 optimizer: torch.optim.Optimizer, data_hashes: list[str],
                 device: torch.device) -> None:
    path = resume_path(opts.out)
    if not path.is_file():
        raise CheckpointError(f"--resume: no resume state {path} next to {opts.out}; "
                              "start without --resume (it is written after every epoch)")
    try:
        data = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # any failure means the file is unusable
        raise CheckpointError(f"--resume: {path} cannot be read ({type(err).__name__}); "
                              "delete it and start without --resume") from None
    if not isinstance(data, dict) or data.get("format") != RESUME_FORMAT \
            or data.get("format_version") != RESUME_VERSION:
        raise CheckpointError(f"--resume: {path} is not a streamsonic resume file of format "
                              f"{RESUME_VERSION}; delete it and start without --resume")
    saved = data["fingerprint"]
    diff = [k for k in FINGERPRINT_KEYS if saved.get(k) != getattr(opts, k)]
    if diff:
        shown = ", ".join(f"{k}={saved.get(k)!r} (now {getattr(opts, k)!r})" for k in diff)
        raise UsageError(f"--resume: the saved run used different options: {shown}; "
                         "pass the same options, or start again with --overwrite")
    if list(data["data"]) != data_hashes:
        raise TrainingError(f"--resume: the training files of {', '.join(opts.sources())} "
                            "changed since the saved run; start again with --overwrite "
                            "instead of --resume")
    net.load_state_dict(data["model"])
    optimizer.load_state_dict(data["optimizer"])
    run.epoch = int(data["epoch"])
    run.best_loss = float(data["best_loss"])
    run.best_epoch = int(data["best_epoch"])
    run.best_metrics = dict(data["best_metrics"])
    run.best_state = data["best_state"]
    run.bad_epochs = int(data["bad_epochs"])
    run.history = list(data["history"])
    run.seconds = float(data["seconds"])
    run.windows_seen = int(data["windows_seen"])
    run.train_seconds = float(data["train_seconds"])
