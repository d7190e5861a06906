"""Training throughput and the shipped weights' validation table.

    .venv/bin/python bench/train.py [--data /work/shared/data/clementi] [--batches 12]

1. Throughput: windows per second of training (forward, backward, AdamW step; batch 32,
   50 steps per window) for the pitch and temporal networks on CPU with 1 and 2 threads,
   best of ``--repeats`` interleaved runs. Ratios are against the pitch model with 1
   thread, measured in the same run.
2. Validation of weights/pitch.pt and weights/temporal.pt, recomputed from the training
   data each checkpoint records (its folders and music21:NAME selectors; ``--data`` for a
   recorded folder that is not there) on the split stored in it, against both baselines,
   and per collection where it holds several; plus the pitch model run as the daemon runs
   it: one persistent state over each whole validation piece (no reset every 50 notes),
   one note at a time through the NumPy stepper.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from streamsonic.model.checkpoint import default_weights, load_checkpoint
from streamsonic.model.network import StackedLSTM
from streamsonic.model.stepper import make_stepper
from streamsonic.model.temporal import temporal_parts
from streamsonic.train.baselines import baselines
from streamsonic.train.dataset import load_corpus, make_windows
from streamsonic.train.loop import evaluate
from streamsonic.train.report import metrics_table
from streamsonic.train.tasks import PitchTask, Task, TemporalTask, make_task, to_tensors

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "clementi"


def throughput(kind: str, corpus, threads: int, batches: int, batch_size: int = 32) -> float:
    torch.set_num_threads(threads)
    task = make_task(kind, corpus.classes())
    windows = make_windows([task.encode(m) for m in corpus.melodies], 50, 4)
    torch.manual_seed(0)
    net = task.build(256, None)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    dev = torch.device("cpu")

    def one() -> None:
        idx = np.sort(rng.choice(len(windows), batch_size, replace=False))
        x, y, m = to_tensors(windows.x[idx], {k: v[idx] for k, v in windows.targets.items()},
                             windows.mask[idx], dev)
        out, _ = net(x)
        loss = task.loss(net, out, y, m)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    for _ in range(2):
        one()
    t0 = time.perf_counter()
    for _ in range(batches):
        one()
    return batches * batch_size / (time.perf_counter() - t0)


def streaming_accuracy(ckpt, val) -> float:
    """Pitch top-1 over whole pieces with one persistent state, as the daemon steps."""
    task = PitchTask(ckpt.classes)
    stepper = make_stepper(ckpt.pitch_network())
    correct = total = 0
    for melody in val:
        feats, targets = task.encode(melody)
        state = stepper.initial_state(1)
        for i in range(len(melody) - 1):
            logits, state = stepper.step(feats[i], state)
            correct += int(logits[0].argmax() == targets["pitch"][i + 1])
            total += 1
    return correct / max(total, 1)


def validation(kind: str, data: Path) -> None:
    path = default_weights(kind)
    if not path.is_file():
        print(f"\n{path}: not there, skipped")
        return
    ckpt = load_checkpoint(path, kind=kind)
    recorded = ckpt.meta["data"].get("sources") or str(ckpt.meta["data"]["root"]).split(", ")
    usable = all(s.startswith("music21:") or Path(s).is_dir() for s in recorded)
    corpus = load_corpus(recorded if usable else data, ckpt.meta["data"].get("tracks", "auto"))
    by_name = {m.name: m for m in corpus.melodies}
    split = ckpt.meta["data"]["split"]
    train_m = [by_name[n] for n in split["train"]]
    val_m = [by_name[n] for n in split["val"]]
    task: Task
    net: StackedLSTM
    if kind == "pitch":
        task = PitchTask(ckpt.classes)
        net = ckpt.pitch_network()
    else:
        net, timing, _ = temporal_parts(ckpt)
        task = TemporalTask(ckpt.classes, timing)
    enc_val = [task.encode(m) for m in val_m]
    windows = make_windows(enc_val, ckpt.seq_len, ckpt.seq_len)
    metrics = evaluate(net, task, windows, torch.device("cpu"))
    base = baselines([task.encode(m)[1] for m in train_m], [t for _, t in enc_val])
    n = int(windows.mask.sum())
    print(f"\n{path.name}: {len(val_m)} held-out files, {n} transitions "
          f"(windows of {ckpt.seq_len}, state reset per window)")
    print(metrics_table(metrics, base))
    groups: dict[str, list] = {}
    for m in val_m:  # music21:bach/bwv1.6.mxl -> music21:bach
        groups.setdefault(m.name.split("/")[0] if "/" in m.name else "", []).append(m)
    if len(groups) > 1:
        for group, members in sorted(groups.items()):
            enc = [task.encode(m) for m in members]
            w = make_windows(enc, ckpt.seq_len, ckpt.seq_len)
            print(f"\n  {group}: {len(members)} held-out pieces, {int(w.mask.sum())} transitions")
            print(metrics_table(evaluate(net, task, w, torch.device("cpu")),
                                baselines([task.encode(m)[1] for m in train_m],
                                          [t for _, t in enc])))
    stored = ckpt.meta["metrics"]["val"]["accuracy"]
    print(f"stored in checkpoint: pitch top-1 {stored:.1%} (recomputed {metrics['accuracy']:.1%})")
    if kind == "pitch":
        print(f"streaming (one state per whole piece, NumPy stepper): pitch top-1 "
              f"{streaming_accuracy(ckpt, val_m):.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA,
                        help="corpus folder of the throughput runs, and of the validation "
                             "where a checkpoint's recorded folder is not there "
                             "(default: %(default)s)")
    parser.add_argument("--batches", type=int, default=12,
                        help="timed training batches (32 windows each) per throughput run, "
                             "after 2 warm-up (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved repeats; the best is shown (shared machines are noisy)")
    args = parser.parse_args()
    corpus = load_corpus(args.data)
    print(f"training throughput on CPU ({args.data.name}: {corpus.n_notes} notes; batch 32 x "
          f"50 steps; {args.batches} batches after 2 warm-up; best of {args.repeats})")
    configs = [(kind, threads) for kind in ("pitch", "temporal") for threads in (1, 2)]
    best = dict.fromkeys(configs, 0.0)
    for _ in range(args.repeats):
        for kind, threads in configs:
            wps = throughput(kind, corpus, threads, args.batches)
            best[kind, threads] = max(best[kind, threads], wps)
    rows = [(kind, threads, best[kind, threads]) for kind, threads in configs]
    base = rows[0][2]
    print(f"{'model':<10}{'threads':>8}{'windows/s':>12}{'notes/s':>10}{'vs pitch@1':>12}")
    for kind, threads, wps in rows:
        print(f"{kind:<10}{threads:>8}{wps:>12.1f}{wps * 50:>10.0f}{wps / base:>11.2f}x")
    torch.set_num_threads(1)
    for kind in ("pitch", "temporal"):
        validation(kind, args.data)


if __name__ == "__main__":
    main()
