"""Plain-text tables of validation metrics against the baselines (train report, info, bench)."""

from __future__ import annotations

from typing import Any

from streamsonic.train.progress import format_seconds

#: Metric name -> (column title, format, higher is better).
METRICS: dict[str, tuple[str, str, bool]] = {
    "accuracy": ("pitch top-1", "{:.1%}", True),
    "pitch_loss": ("pitch log-loss", "{:.3f}", False),
    "gap_accuracy": ("gap top-1", "{:.1%}", True),
    "gap_loss": ("gap log-loss", "{:.3f}", False),
    "duration_accuracy": ("duration top-1", "{:.1%}", True),
    "duration_loss": ("duration log-loss", "{:.3f}", False),
    "velocity_mae": ("velocity MAE", "{:.2f}", False),
    "loss": ("loss", "{:.3f}", False),
}


def metrics_table(model: dict[str, float], baselines: dict[str, dict[str, float]]) -> str:
    """Rows: model and each baseline; columns: the metrics the model has."""
    names = [k for k in METRICS if k in model]
    rows: list[list[str]] = [["", *[METRICS[k][0] for k in names]]]
    rows.append(["model", *[METRICS[k][1].format(model[k]) for k in names]])
    for base, values in baselines.items():
        label = base.replace("_", " ")
        rows.append([label, *[METRICS[k][1].format(values[k]) if k in values else "-"
                              for k in names]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                     for r in rows)


def beats_baselines(model: dict[str, float], baselines: dict[str, dict[str, float]]) -> bool:
    """True when the model's pitch accuracy is above every baseline's."""
    acc = model.get("accuracy", 0.0)
    return all(acc > b.get("accuracy", 0.0) for b in baselines.values())


def shortfalls(model: dict[str, float], baselines: dict[str, dict[str, float]]) -> list[str]:
    """The model's top-1 and log-loss metrics that some baseline matches or beats."""
    out = []
    for key in ("accuracy", "pitch_loss", "gap_accuracy", "gap_loss", "duration_accuracy",
                "duration_loss"):
        if key not in model:
            continue
        higher = METRICS[key][2]
        for name, values in baselines.items():
            if key in values and (model[key] <= values[key] if higher
                                  else model[key] >= values[key]):
                out.append(f"{METRICS[key][0]} ({name.replace('_', ' ')})")
    return out


def report(result: Any) -> str:
    """The short report ``streamsonic train`` prints at the end (a ``TrainResult``)."""
    lines = []
    if result.stopped == "already-finished":
        lines.append(f"nothing to do: the saved run already finished ({result.epochs_run} "
                     "epochs); raise --epochs to train longer")
    if not result.best:
        lines.append(f"no epoch finished, nothing was saved to {result.out}")
        return "\n".join(lines)
    how = {"completed": "all epochs done", "early-stopped": "stopped early",
           "interrupted": "interrupted; continue with --resume",
           "already-finished": "already finished"}[result.stopped]
    lines.append(f"{result.kind} model: best epoch {result.best_epoch} of {result.epochs_run} "
                 f"({how}), {format_seconds(result.seconds)} of training, "
                 f"{result.n_params:,} parameters")
    lines.append(f"saved {result.out}")
    if result.skipped:
        n = len(result.skipped)
        lines.append(f"skipped {n} file{'' if n == 1 else 's'}: "
                     + ", ".join(name for name, _ in result.skipped))
    if getattr(result, "duplicates", None):
        lines.append(f"left out {len(result.duplicates)} duplicate files (the same contents "
                     "as another file read before them)")
    lines.append("validation (held-out pieces):")
    lines.append(metrics_table(result.best, result.baselines))
    short = shortfalls(result.best, result.baselines)
    if short:
        lines.append("warning: a baseline matches or beats the model on " + ", ".join(short)
                     + "; train longer or on more (or more varied) data")
    return "\n".join(lines)
