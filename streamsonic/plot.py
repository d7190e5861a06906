"""Draw a rendered series and its notes on one figure (as the research did)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from streamsonic.config import Config
from streamsonic.errors import OutputError
from streamsonic.events import NoteEvent

if TYPE_CHECKING:
    from streamsonic.render import Series


def plot_render(series: Series, notes: list[NoteEvent], path: str, config: Config) -> None:
    """Data (line, left axis) and note pitches (dots sized by velocity, right axis)."""
    import matplotlib  # noqa: PLC0415 - heavy import, only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=110)
    x = list(range(len(series.values)))
    ax.plot(x, series.values, color="#4c72b0", lw=1.2, label=f"data: {series.name}")
    ax.set_xlabel("row")
    ax.set_ylabel(series.name, color="#4c72b0")
    ax2 = ax.twinx()
    if notes:
        xs = [int(n.time) for n in notes]
        ax2.scatter(xs, [n.pitch for n in notes], s=[4 + n.velocity / 8 for n in notes],
                    color="#dd8452", label="notes", zorder=3)
    ax2.set_ylabel("MIDI pitch", color="#dd8452")
    ax2.set_ylim(config.music.low - 1, config.music.high + 1)
    norm = config.normalize
    method = norm.render_mode if norm.render_scope == "global" else norm.mode
    ax.set_title(
        f"{series.name}: {len(notes)} notes, {config.music.key} {config.music.scale}, "
        f"influence {config.model.influence:g}, {norm.render_scope} {method} normalization"
    )
    lines = ax.get_legend_handles_labels()
    dots = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + dots[0], lines[1] + dots[1], loc="upper right", fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(Path(path))
    except OSError as err:
        raise OutputError(f"cannot write plot {path}: {err.strerror}") from None
    finally:
        plt.close(fig)
