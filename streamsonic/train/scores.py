"""Scores with real rhythm -> melodies, through music21 (the ``train`` extra).

MusicXML (``.mxl``, ``.musicxml``, ``.xml``), ABC (``.abc``, every tune of a collection
file is a piece of its own) and Humdrum (``.krn``) are parsed with music21; MIDI files keep
their mido reader (:mod:`streamsonic.train.dataset`), so training on MIDI needs no extra.
music21's bundled corpus is reached with a selector instead of a folder:

    music21:bach             every file of the collection (``corpus.getComposer``)
    music21:bach:musicxml    only its MusicXML files (also abc, humdrum, midi)
    music21:ryansMammoth     Ryan's Mammoth Collection (ABC)

The melody of a score is, by default (``tracks="auto"``), its part named Soprano or Melody
(a chorale's soprano, not the horn that some chorales list first), else its part with the
highest median pitch (the top voice: Humdrum lists the bass first; a tune's only line);
``"first"`` always reads the first part with notes. A chord
plays its highest note; ``tracks="all"`` takes the highest note starting at each onset
over every part (the MIDI reader's rule). Tied notes are one note; grace notes and chord
symbols are not notes. Times are in quarter-note beats (music21's ``quarterLength``, the
beat of a MIDI file's ticks per beat). Velocity is the note's own when the file gives one, else that
of the last dynamic mark before it (``pp`` .. ``ff`` through music21's volume scalar), else
:data:`DEFAULT_VELOCITY`.

Parsing is slow (about 0.1 s a chorale, 0.3 s a fiddle tune on the development machine),
so each file's melodies are cached by the file's sha256 under
``$XDG_CACHE_HOME/streamsonic/melodies`` (``~/.cache`` when unset); a changed file, another
``tracks`` rule or a new :data:`EXTRACTOR_VERSION` misses the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from streamsonic.errors import TrainingError
from streamsonic.extras import import_extra

if TYPE_CHECKING:
    from streamsonic.train.dataset import Melody

log = logging.getLogger(__name__)

#: Suffix -> format name (the names a ``music21:NAME:FORMAT`` selector takes).
SCORE_SUFFIXES: dict[str, str] = {
    ".mxl": "musicxml", ".musicxml": "musicxml", ".xml": "musicxml",
    ".abc": "abc", ".krn": "humdrum",
}
#: Format name -> the file extensions music21's corpus lists it under.
FORMAT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "musicxml": ("mxl", "musicxml", "xml"), "abc": ("abc",), "humdrum": ("krn",),
    "midi": ("mid", "midi"),
}
SELECTOR_PREFIX = "music21:"
#: Velocity of notes when a score gives no dynamics (mezzo-forte, music21's default too).
DEFAULT_VELOCITY = 80
#: Bump when the extraction rule changes: cached melodies of older rules are not reused.
EXTRACTOR_VERSION = 2

#: Part names (lower case prefixes) that ``tracks="auto"`` takes as the melody.
MELODY_PARTS = ("soprano", "melody", "cantus")

ScoreTracks = Literal["auto", "all", "first"]


def is_selector(source: str) -> bool:
    """True for ``music21:...`` (the bundled corpus), False for a folder."""
    return source.startswith(SELECTOR_PREFIX)


def music21_module(feature: str = "training on scores") -> Any:
    """music21, or the MissingExtraError that names the ``train`` extra (exit 69)."""
    return import_extra("music21", feature)


def corpus_files(selector: str) -> tuple[Path, list[Path]]:
    """The files of music21's bundled corpus that ``music21:NAME[:FORMAT]`` names, and
    the corpus folder they are under (names are shown relative to it)."""
    m21 = music21_module(f"--corpus {selector}")
    spec = selector[len(SELECTOR_PREFIX):]
    name, _, fmt = spec.partition(":")
    if not name:
        raise TrainingError(f"--corpus {selector}: name a collection after 'music21:', "
                            "e.g. music21:bach or music21:ryansMammoth:abc")
    exts: tuple[str, ...] | None = None
    if fmt:
        if fmt not in FORMAT_EXTENSIONS:
            raise TrainingError(f"--corpus {selector}: unknown format {fmt!r}; use one of "
                                f"{', '.join(FORMAT_EXTENSIONS)}")
        exts = FORMAT_EXTENSIONS[fmt]
    found = m21.corpus.getComposer(name, fileExtensions=exts or ())
    paths = sorted(Path(str(p)) for p in found)
    if not paths:
        root = Path(m21.corpus.__file__).parent
        names = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name[0].isalpha())
        raise TrainingError(f"--corpus {selector}: music21's corpus has no "
                            f"{fmt + ' ' if fmt else ''}files for {name!r}; collections: "
                            f"{', '.join(names) or 'none (corpus missing)'}")
    base = _corpus_root(paths)
    return base, paths


def _corpus_root(paths: Sequence[Path]) -> Path:
    """The music21 ``corpus`` folder above ``paths`` (names are shown relative to it)."""
    for parent in paths[0].parents:
        if parent.name == "corpus":
            return parent
    return paths[0].parent


def cache_dir() -> Path:
    """Where extracted melodies are cached."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamsonic" / "melodies"


def _cache_file(sha: str, tracks: str) -> Path:
    return cache_dir() / f"{sha}-{tracks}-v{EXTRACTOR_VERSION}.npz"


def _read_cache(sha: str, tracks: str) -> list[tuple[str, tuple[np.ndarray, ...]]] | None:
    path = _cache_file(sha, tracks)
    try:
        with np.load(path, allow_pickle=False) as data:
            labels = [str(x) for x in data["labels"]]
            return [(label, tuple(np.asarray(data[f"{k}{i}"])
                                  for k in ("p", "g", "d", "v")))
                    for i, label in enumerate(labels)]
    except (OSError, KeyError, ValueError):
        return None


def _write_cache(sha: str, tracks: str, pieces: list[tuple[str, tuple[np.ndarray, ...]]]) -> None:
    path = _cache_file(sha, tracks)
    arrays: dict[str, np.ndarray] = {"labels": np.array([label for label, _ in pieces], dtype=str)}
    for i, (_, (p, g, d, v)) in enumerate(pieces):
        arrays.update({f"p{i}": p, f"g{i}": g, f"d{i}": d, f"v{i}": v})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        tmp.replace(path)
    except OSError as err:  # a read-only cache only costs time
        log.debug("cannot cache melodies in %s: %s", path.parent, err)


def _median_pitch(part: Any) -> float:
    """The median pitch of a part's notes (the top voice has the highest)."""
    pitches = [float(p.ps) for n in part.recurse().notes for p in getattr(n, "pitches", ())]
    return float(np.median(pitches)) if pitches else -1.0


def _velocity_of(element: Any, current: int) -> int:
    vel = getattr(getattr(element, "volume", None), "velocity", None)
    return int(vel) if vel else current


def extract_score_melody(score: Any, tracks: ScoreTracks = "auto") -> tuple[np.ndarray, ...]:
    """One music21 score -> (pitches, gaps, durations, velocities), times in beats."""
    m21 = music21_module()
    parts = list(score.parts) if hasattr(score, "parts") else []
    if not parts:
        parts = [score]
    if tracks in ("auto", "first"):
        with_notes = [p for p in parts if p.recurse().notes.first() is not None] or parts[:1]
        if tracks == "first":
            parts = with_notes[:1]
        else:
            named = [p for p in with_notes
                     if str(getattr(p, "partName", "") or "").lower().startswith(MELODY_PARTS)]
            parts = named[:1] or [max(with_notes, key=_median_pitch)]
    onsets: dict[Fraction, tuple[int, float, int]] = {}  # offset -> (pitch, length, velocity)
    dynamic_cls = m21.dynamics.Dynamic
    harmony_cls = m21.harmony.Harmony
    for part in parts:
        flat = part.stripTies(matchByPitch=True).flatten()
        velocity = DEFAULT_VELOCITY
        for el in flat.getElementsByClass([dynamic_cls, m21.note.GeneralNote]):
            if isinstance(el, dynamic_cls):
                scalar = el.volumeScalar
                if scalar is not None:
                    velocity = int(np.clip(round(float(scalar) * 127), 1, 127))
                continue
            if isinstance(el, harmony_cls) or not getattr(el, "pitches", ()):
                continue  # chord symbols, rests, unpitched
            length = float(el.duration.quarterLength)
            if length <= 0 or el.duration.isGrace:
                continue
            pitch = max(round(float(p.ps)) for p in el.pitches)
            if not 0 <= pitch <= 127:
                continue
            at = Fraction(el.getOffsetInHierarchy(flat)).limit_denominator(10_000)
            best = onsets.get(at)
            if best is None or pitch > best[0]:
                onsets[at] = (pitch, length, _velocity_of(el, velocity))
    starts = sorted(onsets)
    pitches = np.array([onsets[s][0] for s in starts], dtype=np.int64)
    durations = np.array([onsets[s][1] for s in starts], dtype=np.float64)
    velocities = np.array([onsets[s][2] for s in starts], dtype=np.int64)
    gaps = np.empty(len(starts), dtype=np.float64)
    for i in range(len(starts)):
        gaps[i] = float(starts[i + 1] - starts[i]) if i + 1 < len(starts) else durations[i]
    return pitches, gaps, durations, velocities


def parse_score_file(path: Path, tracks: ScoreTracks = "auto",
                     on_piece: Callable[[int], None] | None = None
                     ) -> list[tuple[str, tuple[np.ndarray, ...]]]:
    """Every piece of one score file: ``[(label, arrays)]``; the label is empty for a file
    of one piece, the tune's number (``X:``) or position for a collection. Raises
    ``ValueError`` with a reason when music21 cannot read it. ``on_piece`` hears the
    number of pieces extracted so far (a collection of a few hundred tunes takes minutes)."""
    m21 = music21_module()
    try:
        parsed = m21.converter.parse(str(path))
    except Exception as err:  # music21 raises many kinds; any of them means unreadable
        raise ValueError(f"music21 cannot read it ({type(err).__name__}: {err})"[:300]) from None
    if isinstance(parsed, m21.stream.Opus):
        scores = list(parsed.scores)
        out = []
        for i, sc in enumerate(scores, start=1):
            number = getattr(getattr(sc, "metadata", None), "number", None)
            out.append((f"#{number or i}", extract_score_melody(sc, tracks)))
            if on_piece is not None:
                on_piece(i)
        return out
    return [("", extract_score_melody(parsed, tracks))]


def load_score_melodies(path: Path, name: str, tracks: ScoreTracks = "auto",
                        min_notes: int = 2, on_piece: Callable[[int], None] | None = None
                        ) -> tuple[list[Melody], list[tuple[str, str]]]:
    """The melodies of one score file (cached) and the pieces skipped, with reasons;
    ``on_piece`` as for :func:`parse_score_file` (not called on a cache hit)."""
    from streamsonic.train.dataset import Melody  # noqa: PLC0415 - dataset imports this module

    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    pieces = _read_cache(sha, tracks)
    if pieces is None:
        pieces = parse_score_file(path, tracks, on_piece)
        _write_cache(sha, tracks, pieces)
    melodies: list[Melody] = []
    skipped: list[tuple[str, str]] = []
    for label, (p, g, d, v) in pieces:
        piece = f"{name}{label}"
        if p.size < min_notes:
            skipped.append((piece, f"has {p.size} notes, need at least {min_notes}"))
            continue
        melodies.append(Melody(piece, sha, p, g, d, v))
    if not melodies and not skipped:
        skipped.append((name, "holds no pieces"))
    return melodies, skipped
