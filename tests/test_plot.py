"""``render --plot``: velocity as colour, accents marked on every panel, the anomaly strip."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PathCollection

from streamsonic.config import Config, load_config
from streamsonic.errors import OutputError
from streamsonic.events import NoteEvent
from streamsonic.plot import (
    ACCENT_LABEL,
    MAX_COLUMNS,
    VELOCITY_LABEL,
    PlotArtists,
    build_figure,
    dot_size,
    note_arrays,
    plot_render,
)
from streamsonic.render import Series, render_notes

EXE = [sys.executable, "-m", "streamsonic"]


def note(i: int, *, pitch: int = 60, velocity: int = 70, anomaly: float = 0.1,
         accent: bool = False) -> NoteEvent:
    return NoteEvent(stream="s", time=float(i), value=float(i) * 2.0, normalized=0.5,
                     pitch=pitch, velocity=velocity, duration=0.25, channel=0, program=0,
                     start=i * 0.25, anomaly=anomaly, accent=accent, direction=int(accent))


def series_of(values: list[float] | np.ndarray, name: str = "s") -> Series:
    values = np.asarray(values, dtype=float)
    return Series(name, values, list(range(2, len(values) + 2)), {})


Drawn = tuple[PlotArtists, list[NoteEvent], Config]


@pytest.fixture
def figure() -> Iterator[Drawn]:
    """Ten notes, rows 3 and 7 accented, with distinct pitches and velocities."""
    config = load_config(None, {"accent.threshold": 0.6})
    accented = {3, 7}
    notes = [note(i, pitch=55 + i, velocity=10 + 10 * i, anomaly=0.9 if i in accented else 0.2,
                  accent=i in accented) for i in range(10)]
    artists = build_figure(series_of([n.value for n in notes]), notes, config)
    yield artists, notes, config
    plt.close(artists.figure)


def legend_texts(artists: PlotArtists) -> list[list[str]]:
    return [[t.get_text() for t in legend.get_texts()] for legend in artists.legends]


def axes_of(artist: Artist) -> Axes:
    """The axes ``artist`` is drawn on."""
    ax = artist.axes
    assert isinstance(ax, Axes)
    return ax


def offsets(collection: PathCollection) -> np.ndarray:
    """The (x, y) of each marker of ``collection``, as an (N, 2) array."""
    return np.asarray(collection.get_offsets())


def test_note_arrays_are_the_note_columns() -> None:
    notes = [note(0), note(1, pitch=72, velocity=127, anomaly=0.8, accent=True)]
    arrays = note_arrays(notes)
    assert len(arrays) == 2
    assert arrays.x.tolist() == [0.0, 1.0]
    assert arrays.pitch.tolist() == [60, 72]
    assert arrays.velocity.tolist() == [70, 127]
    assert arrays.anomaly.tolist() == [0.1, 0.8]
    assert arrays.accent.dtype == bool and arrays.accent.tolist() == [False, True]
    assert len(note_arrays([])) == 0


def test_dot_size_shrinks_with_many_notes_but_stays_visible() -> None:
    sizes = [dot_size(n) for n in (0, 1, 100, 1000, 10_000, 1_000_000)]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] == 30.0 and sizes[-1] == 4.0


def test_notes_are_coloured_by_velocity_with_a_labelled_colourbar(figure: Drawn) -> None:
    artists, notes, _ = figure
    dots = artists.notes.notes
    assert np.array_equal(dots.get_offsets(), [[n.time, n.pitch] for n in notes])
    velocities = dots.get_array()
    assert velocities is not None and velocities.tolist() == [n.velocity for n in notes]
    # a fixed 1..127 scale: the same colour means the same loudness in every plot
    assert (dots.norm.vmin, dots.norm.vmax) == (1, 127)
    colours = dots.to_rgba(velocities)
    assert len({tuple(c) for c in colours}) == len(notes)
    assert artists.colorbar.mappable is dots
    assert artists.colorbar.ax.get_ylabel() == VELOCITY_LABEL == "velocity (loudness)"


def test_accented_notes_and_only_those_carry_the_accent_markers(figure: Drawn) -> None:
    artists, notes, _ = figure
    accented = [n for n in notes if n.accent]
    # notes panel: a ring around each accented note's dot
    ring = artists.notes.accents
    assert np.array_equal(ring.get_offsets(), [[n.time, n.pitch] for n in accented])
    faces = np.asarray(ring.get_facecolor())  # hollow: no face, or a transparent one
    assert faces.size == 0 or faces[:, 3].max() == 0
    assert ring.get_label() == ACCENT_LABEL
    # data panel: a star on each accented note's value
    star = artists.data.accents
    assert np.array_equal(star.get_offsets(), [[n.time, n.value] for n in accented])
    assert star.get_label() == ACCENT_LABEL
    # the marker differs from the ordinary dots (not only the colour)
    plain = artists.notes.notes.get_paths()[0].vertices
    assert not np.array_equal(star.get_paths()[0].vertices, plain)
    assert ring.get_sizes()[0] > artists.notes.notes.get_sizes()[0]
    # the legends of both panels name the accent
    texts = legend_texts(artists)
    assert ACCENT_LABEL in texts[0] and ACCENT_LABEL in texts[1]


def test_anomaly_strip_shows_every_score_and_the_threshold_dashed(figure: Drawn) -> None:
    artists, notes, config = figure
    strip = artists.anomaly

    def bars(collection: LineCollection) -> list[tuple[float, float]]:
        return [(seg[0][0], seg[1][1]) for seg in collection.get_segments()]

    assert bars(strip.accents) == [(n.time, n.anomaly) for n in notes if n.accent]
    assert bars(strip.scores) == [(n.time, n.anomaly) for n in notes if not n.accent]
    assert np.asarray(strip.threshold.get_ydata()).tolist() == [config.accent.threshold] * 2
    assert strip.threshold.get_linestyle() == "--"
    ax = axes_of(strip.threshold)
    assert ax.get_ylim()[0] == 0.0 and 1.0 <= ax.get_ylim()[1] <= 1.1
    assert f"accent threshold {config.accent.threshold:g}" in legend_texts(artists)[2]


def test_panels_share_the_row_axis_and_are_labelled(figure: Drawn) -> None:
    artists, _, _ = figure
    data_ax = axes_of(artists.data.line)
    notes_ax = axes_of(artists.notes.notes)
    strip_ax = axes_of(artists.anomaly.threshold)
    assert data_ax.get_shared_x_axes().joined(data_ax, notes_ax)
    assert data_ax.get_shared_x_axes().joined(data_ax, strip_ax)
    assert notes_ax.get_ylabel() == "MIDI pitch" and strip_ax.get_ylabel() == "anomaly"
    assert "row" in strip_ax.get_xlabel()
    title = artists.figure.get_suptitle()
    assert "10 notes" in title and "2 accents" in title
    width, height = artists.figure.get_size_inches()
    assert width <= 14 and height <= 9


def test_no_notes_still_draws_an_empty_figure(tmp_path: Path) -> None:
    out = tmp_path / "empty.png"
    plot_render(series_of([1.0, 2.0]), [], str(out), Config())
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_notes_beyond_the_range_stay_in_view() -> None:
    config = Config()
    notes = [note(0, pitch=config.music.low - 9), note(1, pitch=config.music.high + 11)]
    artists = build_figure(series_of([0.0, 1.0]), notes, config)
    try:
        low, high = axes_of(artists.notes.notes).get_ylim()
        assert low < config.music.low - 9 and high > config.music.high + 11
    finally:
        plt.close(artists.figure)


def test_thousands_of_notes_are_a_few_artists(tmp_path: Path) -> None:
    """Notes are drawn as one collection per kind, not one artist per note (a loop of plot
    calls took minutes for thousands of notes): the figure of 5,000 notes holds as many
    artists as that of 10. (Time is measured in benchmarks, not asserted here.)"""
    rng = np.random.default_rng(0)
    n = 5000
    notes = [note(i, pitch=int(rng.integers(50, 90)), velocity=int(rng.integers(1, 128)),
                  anomaly=float(rng.random()), accent=bool(i % 97 == 0)) for i in range(n)]

    def artists(count: int) -> list[int]:
        drawn = build_figure(series_of(np.arange(count) * 2.0), notes[:count], Config())
        try:
            return [len(ax.get_children()) for ax in drawn.figure.axes]
        finally:
            plt.close(drawn.figure)

    assert artists(n) == artists(10)
    plot_render(series_of(np.arange(n) * 2.0), notes, str(tmp_path / "big.png"), Config())
    assert (tmp_path / "big.png").read_bytes()[:4] == b"\x89PNG"
    assert plt.get_fignums() == []  # the figure is closed


def test_unwritable_plot_path_is_an_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="cannot write plot"):
        plot_render(series_of([1.0]), [note(0)], str(tmp_path / "no" / "dir.png"), Config())


def spiky_csv(path: Path) -> int:
    """A noisy sine with one large spike; returns the spike's row (0-based)."""
    rng = np.random.default_rng(5)
    values = np.sin(np.arange(160) / 6.0) + rng.normal(0.0, 0.05, 160)
    spike = 110
    values[spike] += 12.0
    path.write_text("value\n" + "".join(f"{v:.5f}\n" for v in values))
    return spike


def test_rendered_spike_is_the_accent_on_the_figure(tmp_path: Path,
                                                    random_pitch_checkpoint: Path) -> None:
    from streamsonic.render import read_series

    csv = tmp_path / "spike.csv"
    spike = spiky_csv(csv)
    config = load_config(None, {"model.weights": str(random_pitch_checkpoint)})
    series = read_series(csv.read_text(), None, str(csv))
    notes = render_notes(config, series, [])
    data = [n for n in notes if n.source == "data"]  # the model's added notes aside
    assert data[spike].accent  # the pipeline flags the spike ...
    artists = build_figure(series, notes, config)
    try:  # ... and the figure marks exactly the notes it flagged
        accented = [n for n in notes if n.accent]
        assert spike in offsets(artists.notes.accents)[:, 0].tolist()
        assert len(offsets(artists.notes.accents)) == len(accented)
        assert len(offsets(artists.data.accents)) == len(accented)
        assert offsets(artists.data.accents)[:, 1].max() == pytest.approx(
            series.values[spike])
    finally:
        plt.close(artists.figure)


def red_pixels(png: Path) -> int:
    image = plt.imread(png)
    return int(((image[..., 0] > 0.75) & (image[..., 1] < 0.3) & (image[..., 2] < 0.3)).sum())


def test_cli_render_writes_a_png_with_the_accent_on_it(tmp_path: Path,
                                                       random_pitch_checkpoint: Path) -> None:
    csv = tmp_path / "spike.csv"
    spiky_csv(csv)
    pngs = {}
    for accents in ("true", "false"):
        png = pngs[accents] = tmp_path / f"accents-{accents}.png"
        res = subprocess.run([*EXE, "render", str(csv), "--plot", str(png), "--weights",
                              str(random_pitch_checkpoint), "--set", f"accent.enabled={accents}"],
                             capture_output=True, text=True, timeout=120, check=False)
        assert res.returncode == 0, res.stderr
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20_000
    height, width = plt.imread(pngs["true"]).shape[:2]
    assert 600 <= height <= 1200 and 1000 <= width <= 1800
    # Both have the red dashed threshold; only the accented one has star, ring and red bar
    # (one accent, at the spike: about 360 more red pixels).
    assert red_pixels(pngs["true"]) > red_pixels(pngs["false"]) + 250


def test_importing_the_plot_module_does_not_import_matplotlib() -> None:
    code = ("import sys, streamsonic.plot, streamsonic.render; "
            "sys.exit('matplotlib' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_several_columns_stack_their_panels_each_with_its_own_notes() -> None:
    """Three columns (the second with gaps): three panels each, all on one row axis; each
    column's data line at its own rows, its notes and accents its stream's alone."""
    a = Series("a", np.arange(6.0), [2, 3, 4, 5, 6, 7], {})
    b = Series("b", np.array([10.0, 30.0, 20.0]), [3, 5, 7], {})  # rows 1, 3, 5
    c = Series("c", -np.arange(6.0), [2, 3, 4, 5, 6, 7], {})

    def of(stream: str, row: int, **kw: object) -> NoteEvent:
        return dataclasses.replace(note(row, **kw), stream=stream)  # type: ignore[arg-type]

    notes = ([of("a", r, pitch=60 + r) for r in range(6)]
             + [of("b", r, pitch=70, accent=r == 3, anomaly=0.9 if r == 3 else 0.1)
                for r in (1, 3, 5)]
             + [of("c", r, pitch=50, velocity=120) for r in range(6)]
             + [dataclasses.replace(of("a", 2), source="model")])  # not drawn
    artists = build_figure([a, b, c], notes, Config())
    try:
        assert [col.data.line.get_label() for col in artists.columns] == [
            "data: a", "data: b", "data: c"]
        assert np.asarray(artists.columns[1].data.line.get_xdata()).tolist() == [1.0, 3.0, 5.0]
        assert [len(offsets(col.notes.notes)) for col in artists.columns] == [6, 3, 6]
        assert offsets(artists.columns[1].notes.accents).tolist() == [[3.0, 70.0]]
        assert [len(offsets(col.notes.accents)) for col in artists.columns] == [0, 1, 0]
        assert np.asarray(artists.columns[2].notes.notes.get_array()).tolist() == [120.0] * 6
        panels = [axes_of(p) for col in artists.columns
                  for p in (col.data.line, col.notes.notes, col.anomaly.threshold)]
        assert all(panels[0].get_shared_x_axes().joined(panels[0], ax) for ax in panels)
        tops = [ax.get_position().y0 for ax in panels]
        assert tops == sorted(tops, reverse=True)  # column by column, top to bottom
        # the row axis is labelled once, under the last strip
        assert [bool(ax.get_xlabel()) for ax in panels] == [False] * 8 + [True]
        assert "3 columns: 15 notes, 1 accent" in artists.figure.get_suptitle()
        assert artists.legends is artists.columns[0].legends
    finally:
        plt.close(artists.figure)


def test_a_figure_takes_one_to_max_columns() -> None:
    from streamsonic import render

    assert MAX_COLUMNS == render.PLOT_COLUMNS  # what render checks before importing this
    with pytest.raises(ValueError, match="1 to 8 columns, not 9"):
        build_figure([series_of([1.0], f"c{i}") for i in range(9)], [], Config())


def test_cli_plots_several_columns_and_refuses_too_many(tmp_path: Path,
                                                       random_pitch_checkpoint: Path) -> None:
    rng = np.random.default_rng(2)
    table = rng.standard_normal((80, 9)).cumsum(axis=0)
    csv = tmp_path / "nine.csv"
    csv.write_text(",".join(f"c{i}" for i in range(9)) + "\n"
                   + "".join(",".join(f"{v:.4f}" for v in row) + "\n" for row in table))
    png = tmp_path / "three.png"
    args = [*EXE, "render", str(csv), "--weights", str(random_pitch_checkpoint), "--plot"]
    res = subprocess.run([*args, str(png), "--column", "c0", "--column", "c4", "--column",
                          "c8"], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    height, width = plt.imread(png).shape[:2]
    assert 2000 <= height <= 2400 and 1000 <= width <= 1800  # three columns' panels
    res = subprocess.run([*args, str(tmp_path / "nine.png"), "--all-columns"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 64
    assert "--plot draws at most 8 columns" in res.stderr and "not 9" in res.stderr
    assert not (tmp_path / "nine.png").exists()
