"""Plain-text tables of validation metrics against the baselines (train report, info, bench)."""

from __future__ import annotations

from typing import Any

from streamsonic.train.progress import format_seconds

#: Metric name -> (column title, format, higher is better).
METRICS: dict[str, tuple[str, str, bool]] = {
    "accuracy": ("pitch top-1", "{:.1%}", True),
    "gap_accuracy": ("gap bin", "{:.1%}", True),
    "duration_accuracy": ("duration bin", "{:.1%}", True),
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
        lines.append(f"skipped {len(result.skipped)} files: "
                     + ", ".join(name for name, _ in result.skipped))
    lines.append("validation (held-out files):")
    lines.append(metrics_table(result.best, result.baselines))
    if not beats_baselines(result.best, result.baselines):
        lines.append("warning: the model does not beat every baseline on pitch accuracy; "
                     "train longer or on more data")
    return "\n".join(lines)
