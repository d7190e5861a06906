"""Draw a rendered series and its notes so that loudness and accents are plain to see.

Three panels per column, all sharing the x axis (the row of the input each note was made
from; several columns are stacked, each with its own three):

* **data**: the series as a line, with every accented row starred in red;
* **notes**: one dot per note at its pitch, coloured by velocity (colourbar
  "velocity (loudness)"), accented notes ringed in red; dotted lines mark the ordinary
  pitch range (notes outside it are values beyond the recent range, in the headroom);
* **anomaly**: a thin strip with each note's anomaly score (0..1) and the accent
  threshold as a dashed line.

Every layer is one vectorized artist (a scatter or a line collection), so thousands of
notes draw as fast as a few. matplotlib is imported here only, inside the functions, so
that nothing else in streamsonic pays for it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from streamsonic.config import Config
from streamsonic.errors import UsageError
from streamsonic.events import NoteEvent
from streamsonic.extras import import_extra
from streamsonic.sinks.outfile import OutputFile

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.collections import LineCollection, PathCollection
    from matplotlib.colorbar import Colorbar
    from matplotlib.figure import Figure
    from matplotlib.legend import Legend
    from matplotlib.lines import Line2D

    from streamsonic.render import Series

#: Legend label of the accent markers (the same on every panel).
ACCENT_LABEL = "accent (anomaly)"
#: Label of the velocity colourbar.
VELOCITY_LABEL = "velocity (loudness)"
#: Colour of everything that marks an accent; the velocity colour map has no red in it.
ACCENT_COLOR = "#d62728"
VELOCITY_CMAP = "viridis"
DATA_COLOR = "#4c72b0"
#: The most columns one figure stacks (three panels each).
MAX_COLUMNS = 8


@dataclass(frozen=True)
class NoteArrays:
    """The notes as parallel arrays, one entry per note, in the order played."""

    x: np.ndarray  # row of the input (the sample time of an offline render)
    value: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray
    anomaly: np.ndarray
    accent: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.x)


def note_arrays(notes: list[NoteEvent]) -> NoteArrays:
    """Columns of ``notes`` as numpy arrays (empty arrays for no notes)."""
    return NoteArrays(
        x=np.fromiter((n.time for n in notes), float, len(notes)),
        value=np.fromiter((n.value for n in notes), float, len(notes)),
        pitch=np.fromiter((n.pitch for n in notes), float, len(notes)),
        velocity=np.fromiter((n.velocity for n in notes), float, len(notes)),
        anomaly=np.fromiter((n.anomaly for n in notes), float, len(notes)),
        accent=np.fromiter((n.accent for n in notes), bool, len(notes)),
    )


def dot_size(count: int) -> float:
    """Scatter marker area (points^2) for ``count`` notes: large when few, small when many."""
    return float(np.clip(6000.0 / max(count, 1), 4.0, 30.0))


@dataclass(frozen=True)
class DataArtists:
    """What :func:`draw_data` drew."""

    line: Line2D
    accents: PathCollection


@dataclass(frozen=True)
class NoteArtists:
    """What :func:`draw_notes` drew."""

    notes: PathCollection
    accents: PathCollection


@dataclass(frozen=True)
class AnomalyArtists:
    """What :func:`draw_anomaly` drew."""

    scores: LineCollection
    accents: LineCollection
    threshold: Line2D


@dataclass(frozen=True)
class ColumnArtists:
    """One column's panels: its data, its notes and their colourbar, its anomaly strip."""

    data: DataArtists
    notes: NoteArtists
    anomaly: AnomalyArtists
    colorbar: Colorbar
    legends: list[Legend]


@dataclass(frozen=True)
class PlotArtists:
    """The whole figure and each column's parts, for :func:`plot_render` and for tests
    (``data``, ``notes``, ``anomaly``, ``colorbar``, ``legends``: the first column's)."""

    figure: Figure
    columns: list[ColumnArtists]

    @property
    def data(self) -> DataArtists:
        return self.columns[0].data

    @property
    def notes(self) -> NoteArtists:
        return self.columns[0].notes

    @property
    def anomaly(self) -> AnomalyArtists:
        return self.columns[0].anomaly

    @property
    def colorbar(self) -> Colorbar:
        return self.columns[0].colorbar

    @property
    def legends(self) -> list[Legend]:
        return self.columns[0].legends


def draw_data(ax: Axes, series: Series, arrays: NoteArrays,
              rows: np.ndarray | None = None) -> DataArtists:
    """The series as a line (each value at its row, ``rows``: by default one after the
    other), a red star on the value of every accented note."""
    x = np.arange(len(series.values)) if rows is None else rows
    line = ax.plot(x, series.values, color=DATA_COLOR, lw=1.2,
                   label=f"data: {series.name}", zorder=2)[0]
    hit = arrays.accent
    accents = ax.scatter(arrays.x[hit], arrays.value[hit], marker="*", s=160,
                         color=ACCENT_COLOR, edgecolors="white", linewidths=0.6, zorder=4,
                         label=ACCENT_LABEL)
    ax.set_ylabel(series.name, color=DATA_COLOR)
    return DataArtists(line, accents)


def draw_notes(ax: Axes, arrays: NoteArrays, config: Config) -> NoteArtists:
    """Pitches coloured by velocity; accented notes ringed in red; the ordinary range dotted."""
    size = dot_size(len(arrays))
    notes = ax.scatter(arrays.x, arrays.pitch, c=arrays.velocity, cmap=VELOCITY_CMAP,
                       vmin=1, vmax=127, s=size, linewidths=0, zorder=3,
                       label="note (colour: velocity)")
    hit = arrays.accent
    accents = ax.scatter(arrays.x[hit], arrays.pitch[hit], s=max(size * 6, 90),
                         facecolors="none", edgecolors=ACCENT_COLOR, linewidths=1.8, zorder=4,
                         label=ACCENT_LABEL)
    low, high = config.music.low, config.music.high
    for edge, label in ((low, "ordinary range"), (high, None)):
        ax.axhline(edge, color="0.55", lw=0.8, ls=":", zorder=1, label=label)
    top = max(high, int(arrays.pitch.max()) if len(arrays) else high)
    bottom = min(low, int(arrays.pitch.min()) if len(arrays) else low)
    ax.set_ylim(bottom - 2, top + 2)
    ax.set_ylabel("MIDI pitch")
    return NoteArtists(notes, accents)


def draw_anomaly(ax: Axes, arrays: NoteArrays, threshold: float) -> AnomalyArtists:
    """Anomaly score per note as thin bars (accented ones red), the threshold dashed."""
    hit = arrays.accent
    scores = ax.vlines(arrays.x[~hit], 0.0, arrays.anomaly[~hit], color="0.45", lw=1.0,
                       label="anomaly score")
    accents = ax.vlines(arrays.x[hit], 0.0, arrays.anomaly[hit], color=ACCENT_COLOR, lw=1.6,
                        label=ACCENT_LABEL)
    line = ax.axhline(threshold, color=ACCENT_COLOR, lw=1.0, ls="--",
                      label=f"accent threshold {threshold:g}")
    ax.set_ylim(0.0, 1.05)
    ax.set_yticks([0.0, 0.5, 1.0])
    ax.set_ylabel("anomaly")
    return AnomalyArtists(scores, accents, line)


def _title(table: Sequence[Series], arrays: list[NoteArrays], config: Config) -> str:
    norm = config.normalize
    method = norm.render_mode if norm.render_scope == "global" else norm.mode
    accents = sum(int(a.accent.sum()) for a in arrays)
    off = "" if config.accent.enabled else " (accents off)"
    names = table[0].name if len(table) == 1 else f"{len(table)} columns"
    return (
        f"{names}: {sum(len(a) for a in arrays)} notes, {accents} "
        f"accent{'s' * (accents != 1)}{off}\n"
        f"{config.music.key} {config.music.scale}, influence {config.model.influence:g}, "
        f"{norm.render_scope} {method} normalization"
    )


def _rows(table: Sequence[Series]) -> list[np.ndarray]:
    """Each column's values' rows as render numbers them (the sorted lines that hold a
    value in any column)."""
    if len(table) == 1:
        return [np.arange(len(table[0].values), dtype=float)]
    lines = sorted({line for s in table for line in s.lines})
    row_of = {line: row for row, line in enumerate(lines)}
    return [np.array([row_of[line] for line in s.lines], dtype=float) for s in table]


def _pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the file-only Agg backend (no display needed)."""
    matplotlib = import_extra("matplotlib", "the plot")  # heavy import, only when plotting
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def build_figure(series: Series | Sequence[Series], notes: list[NoteEvent],
                 config: Config) -> PlotArtists:
    """The figure for ``render --plot``, not yet saved (close it with ``plt.close``): each
    column's three panels, stacked (at most :data:`MAX_COLUMNS`). It shows the data's notes
    (the notes the model adds between them are left out)."""
    plt = _pyplot()
    table = [series] if not isinstance(series, Sequence) else list(series)
    if not 1 <= len(table) <= MAX_COLUMNS:
        raise ValueError(f"a figure draws 1 to {MAX_COLUMNS} columns, not {len(table)}")
    data_notes = [n for n in notes if n.source == "data"]
    if len(table) == 1:
        arrays = [note_arrays(data_notes)]
    else:
        arrays = [note_arrays([n for n in data_notes if n.stream == s.name]) for s in table]
    fig = plt.figure(figsize=(12, 1.2 + 6.3 * len(table)), dpi=110)
    grid = fig.add_gridspec(3 * len(table), 2, height_ratios=[3, 3, 1.1] * len(table),
                            width_ratios=[60, 1], hspace=0.22, wspace=0.03)
    columns = []
    first: Axes | None = None
    for k, (column, column_arrays, rows) in enumerate(zip(table, arrays, _rows(table),
                                                          strict=True)):
        ax_data = fig.add_subplot(grid[3 * k, 0], sharex=first)
        first = first or ax_data
        ax_notes = fig.add_subplot(grid[3 * k + 1, 0], sharex=first)
        ax_anomaly = fig.add_subplot(grid[3 * k + 2, 0], sharex=first)
        last = k == len(table) - 1
        for ax in (ax_data, ax_notes) if last else (ax_data, ax_notes, ax_anomaly):
            ax.tick_params(labelbottom=False)
        for ax in (ax_data, ax_notes):
            ax.grid(axis="x", color="0.9", lw=0.6)
        data = draw_data(ax_data, column, column_arrays, rows)
        note_artists = draw_notes(ax_notes, column_arrays, config)
        anomaly = draw_anomaly(ax_anomaly, column_arrays, config.accent.threshold)
        colorbar = fig.colorbar(note_artists.notes, cax=fig.add_subplot(grid[3 * k + 1, 1]))
        colorbar.set_label(VELOCITY_LABEL)
        if last:
            ax_anomaly.set_xlabel("row of the input (the data point each note was made from)")
        # Legends sit above their panels, outside the axes, so they never hide a note.
        legends = [
            ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=3, fontsize=8,
                      frameon=False, borderaxespad=0.2, handletextpad=0.4, columnspacing=1.2)
            for ax in (ax_data, ax_notes, ax_anomaly)
        ]
        columns.append(ColumnArtists(data, note_artists, anomaly, colorbar, legends))
    fig.suptitle(_title(table, arrays, config), fontsize=11)
    height = fig.get_size_inches()[1]
    fig.subplots_adjust(left=0.07, right=0.93, top=1.0 - 0.9 / height,
                        bottom=0.6 / height)
    return PlotArtists(fig, columns)


def plot_formats() -> list[str]:
    """The image formats a plot can be written in (matplotlib's: png, svg, pdf ...)."""
    _pyplot()
    from matplotlib.backend_bases import FigureCanvasBase  # noqa: PLC0415

    return sorted(FigureCanvasBase.get_supported_filetypes())


def open_plot(path: str) -> OutputFile:
    """The plot's file, opened before the rendering so that a bad name fails at once: its
    format from its suffix (a name without a known one is a UsageError), written whole at
    the end (a hidden temporary file renamed over it: an earlier file stays as it was
    until then, and if the plot is not made)."""
    suffix = Path(path).suffix.lower().lstrip(".")
    formats = plot_formats()
    if suffix not in formats:
        raise UsageError(f"--plot {path}: the name must end in an image format, one of "
                         + ", ".join(f".{f}" for f in formats) + " (e.g. plot.png)")
    return OutputFile(path, "plot")


def plot_render(series: Series | Sequence[Series], notes: list[NoteEvent],
                path: str | OutputFile, config: Config) -> None:
    """Write the figure of :func:`build_figure` to ``path`` (a name, or the file of
    :func:`open_plot`; the format from its suffix)."""
    out = open_plot(path) if isinstance(path, str) else path
    try:
        plt = _pyplot()
        artists = build_figure(series, notes, config)
        try:
            image = io.BytesIO()
            artists.figure.savefig(image, format=out.path.suffix.lower().lstrip("."))
        finally:
            plt.close(artists.figure)
        out.append(image.getbuffer())
        out.commit()
    except BaseException:
        out.discard()
        raise
