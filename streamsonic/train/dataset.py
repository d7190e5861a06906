"""MIDI files and scores -> melodies -> training windows.

MIDI files are read with mido (no extra needed); MusicXML, ABC and Humdrum scores and
music21's bundled corpus (``music21:NAME`` sources) through music21, see
:mod:`streamsonic.train.scores` (the ``train`` extra). A corpus can come from several
sources (folders and selectors) at once.

A *melody* is the highest note sounding at each onset: at every tick where at least one
note starts, the highest starting pitch is kept (the research's extraction; for a
right-hand part it is the melody line). ``tracks="first"`` reads only the first track
that has notes; ``"all"`` (and ``"auto"``, the default) merges every track first. For scores
``"auto"`` reads the first part instead (see :mod:`streamsonic.train.scores`).

Timing is kept in **beats** (ticks / ticks-per-beat), not seconds: set_tempo events are
ignored, so a piece means the same whatever tempo its file asks for, and the live engine
turns beats into seconds at its own tempo (see :mod:`streamsonic.model.temporal`).
Each note carries its own ``gap`` (beats from its onset to the next onset; the last note
of a piece uses its duration), ``duration`` (beats) and ``velocity``.

Unreadable or empty files are skipped and reported by name in :attr:`Corpus.skipped`,
never fatal. The split is by file, seeded, so validation windows come from pieces the
model never saw.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import mido
import numpy as np

from streamsonic.errors import NoInputError, TrainingError
from streamsonic.extras import require_extra
from streamsonic.train import scores

log = logging.getLogger(__name__)

MIDI_SUFFIXES = (".mid", ".midi")
#: "auto": MIDI files merge every track, scores read their first part.
Tracks = Literal["auto", "all", "first"]


@dataclass(frozen=True)
class Melody:
    """One piece's melody as parallel arrays, one entry per note."""

    name: str
    sha256: str
    pitches: np.ndarray  # int64 MIDI pitches
    gaps: np.ndarray  # float64 beats from this onset to the next
    durations: np.ndarray  # float64 beats
    velocities: np.ndarray  # int64 1..127

    def __len__(self) -> int:
        return int(self.pitches.size)


@dataclass
class Corpus:
    """Every usable melody under a folder, and what was skipped and why."""

    root: str
    melodies: list[Melody] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)
    #: Files left out for having the same bytes as one read before: (name, that one's name)
    duplicates: list[tuple[str, str]] = field(default_factory=list)

    @property
    def n_notes(self) -> int:
        """Total notes over all melodies."""
        return sum(len(m) for m in self.melodies)

    def classes(self) -> list[int]:
        """The pitch vocabulary: every pitch that occurs, sorted."""
        if not self.melodies:
            return []
        return sorted({int(p) for m in self.melodies for p in m.pitches})

    def summary(self) -> dict[str, object]:
        """What a checkpoint records about its training data."""
        return {
            "root": self.root,
            "files": [{"name": m.name, "sha256": m.sha256, "notes": len(m)} for m in self.melodies],
            "skipped": [{"name": n, "reason": r} for n, r in self.skipped],
            "duplicates": [{"name": n, "same_as": same} for n, same in self.duplicates],
            "n_files": len(self.melodies),
            "n_notes": self.n_notes,
        }


def find_midi_files(root: str | Path) -> list[Path]:
    """Every ``.mid``/``.midi`` file under ``root`` (recursively), sorted by path."""
    return [p for p in find_training_files(root) if p.suffix.lower() in MIDI_SUFFIXES]


def find_training_files(root: str | Path) -> list[Path]:
    """Every MIDI and score file under ``root`` (recursively), sorted by path."""
    base = Path(root)
    if not base.is_dir():
        raise NoInputError(f"training data folder {base} does not exist or is not a folder; "
                            "pass a folder of .mid, .midi, .mxl, .musicxml, .xml, .abc or .krn "
                            "files, "
                            "or music21:NAME for music21's corpus")
    suffixes = (*MIDI_SUFFIXES, *scores.SCORE_SUFFIXES)
    # a symlink that leads nowhere is listed too: reading it fails, and it is skipped by name
    return sorted(p for p in base.rglob("*") if p.suffix.lower() in suffixes
                  and (p.is_file() or (p.is_symlink() and not p.exists())))


def extract_melody(mid: mido.MidiFile, tracks: Tracks = "auto") -> tuple[np.ndarray, ...]:
    """Highest note per onset of ``mid`` -> (pitches, gaps, durations, velocities).

    Times are in beats. Drum channel 10 (index 9) is ignored.
    """
    tpb = float(mid.ticks_per_beat or 480)
    if tracks == "first":  # "auto" and "all" merge every track
        chosen = next((t for t in mid.tracks if any(_is_on(m) for m in t)), None)
        messages = list(chosen) if chosen is not None else []
    else:
        messages = list(mido.merge_tracks(mid.tracks))
    onsets: dict[int, tuple[int, int]] = {}  # tick -> (pitch, velocity) of the highest note
    sounding: dict[tuple[int, int], list[int]] = {}  # (channel, pitch) -> start ticks
    ends: dict[tuple[int, int], int] = {}  # (start tick, pitch) -> end tick
    tick = 0
    for msg in messages:
        tick += msg.time
        if msg.type not in ("note_on", "note_off") or msg.channel == 9:
            continue
        key = (msg.channel, msg.note)
        if _is_on(msg):
            sounding.setdefault(key, []).append(tick)
            best = onsets.get(tick)
            if best is None or msg.note > best[0]:
                onsets[tick] = (msg.note, msg.velocity)
        elif sounding.get(key):
            start = sounding[key].pop(0)
            ends[(start, msg.note)] = max(ends.get((start, msg.note), 0), tick)
    starts = sorted(onsets)
    n = len(starts)
    pitches = np.array([onsets[s][0] for s in starts], dtype=np.int64)
    velocities = np.array([onsets[s][1] for s in starts], dtype=np.int64)
    durations = np.empty(n, dtype=np.float64)
    gaps = np.empty(n, dtype=np.float64)
    for i, s in enumerate(starts):
        end: float | None = ends.get((s, int(pitches[i])))  # in ticks
        if end is None:  # never released: let it last until the next onset
            end = starts[i + 1] if i + 1 < n else s + tpb
        durations[i] = max(end - s, 1) / tpb
        gaps[i] = (starts[i + 1] - s) / tpb if i + 1 < n else durations[i]
    return pitches, gaps, durations, velocities


def _is_on(msg: mido.Message) -> bool:
    return msg.type == "note_on" and msg.velocity > 0


def load_melody(path: Path, name: str, tracks: Tracks = "auto", min_notes: int = 2) -> Melody:
    """Read one file; raises ``ValueError`` with a reason when it cannot be used."""
    data = path.read_bytes()
    try:
        mid = mido.MidiFile(file=io.BytesIO(data))
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as err:
        why = str(err) or ("the file ends early" if isinstance(err, EOFError)
                           else "no reason given")
        raise ValueError(f"not a readable MIDI file ({type(err).__name__}: {why})") from None
    pitches, gaps, durations, velocities = extract_melody(mid, tracks)
    if pitches.size < min_notes:
        raise ValueError(f"has {pitches.size} notes, need at least {min_notes}")
    return Melody(name, hashlib.sha256(data).hexdigest(), pitches, gaps, durations, velocities)


class LoadProgress(Protocol):
    """Told how reading the training data goes (:class:`streamsonic.train.progress.
    LoadProgress` prints it, rate-limited)."""

    def update(self, files: int, total: int, pieces: int) -> None: ...


def load_corpus(sources: str | Path | Sequence[str | Path], tracks: Tracks = "auto",
                min_notes: int = 2, progress: LoadProgress | None = None) -> Corpus:
    """Every usable melody of ``sources`` (folders, ``music21:NAME`` selectors); bad files
    and pieces go to ``skipped`` with a reason. A file with the same bytes as one read
    before it (a folder given twice, or through a symlink; a copy) is left out, named in
    ``duplicates`` and counted in one warning: its pieces would otherwise count twice and
    could land in training and validation both. Scores need music21 (the ``train``
    extra): its absence is a MissingExtraError before any file is read. ``progress``
    hears the files done and pieces read so far, also while a score collection is parsed."""
    roots = [str(sources)] if isinstance(sources, str | Path) else [str(s) for s in sources]
    if not roots:
        raise TrainingError("no training data: pass a folder of MIDI or score files, or "
                            "--corpus music21:NAME")
    listed: list[tuple[Path, list[Path]]] = []
    for root in roots:
        if scores.is_selector(root):
            listed.append(scores.corpus_files(root))
        else:
            listed.append((Path(root), find_training_files(root)))
    if any(p.suffix.lower() in scores.SCORE_SUFFIXES for _, paths in listed for p in paths):
        require_extra("music21", "training on MusicXML, ABC or Humdrum scores")
    corpus = Corpus(root=", ".join(roots))
    seen: dict[str, str] = {}  # sha256 of a file's bytes -> the name it was read under
    done, total = 0, sum(len(paths) for _, paths in listed)

    def tell(pieces_now: int = 0) -> None:
        if progress is not None:
            progress.update(done, total, len(corpus.melodies) + pieces_now)

    for root, (base, paths) in zip(roots, listed, strict=True):
        prefix = "music21:" if scores.is_selector(root) else (f"{root}/" if len(roots) > 1
                                                              else "")
        for path in paths:
            rel = prefix + str(path.relative_to(base))
            found: list[Melody] = []
            skipped: list[tuple[str, str]] = []
            try:
                sha = _file_sha256(path)
                if sha in seen:
                    corpus.duplicates.append((rel, seen[sha]))
                else:
                    seen[sha] = rel
                    if path.suffix.lower() in MIDI_SUFFIXES:
                        found = [load_melody(path, rel, tracks, min_notes)]
                    else:
                        found, skipped = scores.load_score_melodies(path, rel, tracks,
                                                                    min_notes, on_piece=tell)
            except (ValueError, OSError) as err:
                log.warning("skipping %s: %s", rel, err)
                corpus.skipped.append((rel, str(err)))
            corpus.melodies.extend(found)
            for name, why in skipped:
                log.debug("skipping %s: %s", name, why)
            corpus.skipped.extend(skipped)
            done += 1
            tell()
    if corpus.duplicates:
        name, same = corpus.duplicates[0]
        log.warning("left out %s with the same contents as another file read before it "
                    "(e.g. %s, the same as %s): each is read once",
                    _count(len(corpus.duplicates), "file"), name, same)
    if not corpus.melodies:
        why = f" ({len(corpus.skipped)} skipped: see the warnings above)" if corpus.skipped else ""
        raise TrainingError(f"no usable MIDI or score files in {corpus.root}{why}; pass a "
                            "folder that holds .mid, .midi, .mxl, .musicxml, .xml, .abc or "
                            ".krn files with notes")
    return corpus


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes; a symlink that leads nowhere is an OSError saying so."""
    if path.is_symlink() and not path.exists():
        raise OSError(f"a symbolic link to {path.readlink()}, which does not exist")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def split_by_file(melodies: Sequence[Melody], val_fraction: float,
                  seed: int) -> tuple[list[Melody], list[Melody]]:
    """Shuffle whole pieces with ``seed`` and hold ``val_fraction`` of them out.

    At least one piece is held out and at least one kept for training.
    """
    if len(melodies) < 2:
        raise TrainingError(
            f"need at least 2 MIDI files to split training and validation by file, got "
            f"{len(melodies)}; add more files"
        )
    if not 0.0 < val_fraction < 1.0:
        raise TrainingError(f"--val-fraction {val_fraction} must be between 0 and 1")
    order = sorted(melodies, key=lambda m: m.name)
    perm = np.random.default_rng(seed).permutation(len(order))
    n_val = min(max(1, round(len(order) * val_fraction)), len(order) - 1)
    val = [order[i] for i in sorted(perm[:n_val])]
    train = [order[i] for i in sorted(perm[n_val:])]
    return train, val


def window_starts(length: int, seq_len: int, stride: int) -> list[int]:
    """Start notes of the windows cut from a piece of ``length`` notes.

    A window starting at ``s`` covers the transitions ``s -> s+1 .. s+seq_len-1 -> s+seq_len``;
    windows start every ``stride`` notes until one reaches the end (the last may be
    shorter and is padded). With ``stride == seq_len`` they tile the piece: every
    transition exactly once (how validation is cut).
    """
    starts: list[int] = []
    for s in range(0, max(length - 1, 0), stride):
        if starts and starts[-1] + seq_len >= length - 1:
            break
        starts.append(s)
    return starts


@dataclass(frozen=True)
class Windows:
    """Fixed-length training windows: inputs, per-step targets and a mask for padding."""

    x: np.ndarray  # (N, T, F) float32: note t's input vector
    targets: dict[str, np.ndarray]  # name -> (N, T): note t + 1's target
    mask: np.ndarray  # (N, T) bool: False on padding

    def __len__(self) -> int:
        return int(self.x.shape[0])


def make_windows(pieces: Sequence[tuple[np.ndarray, dict[str, np.ndarray]]], seq_len: int,
                 stride: int) -> Windows:
    """Cut encoded pieces into windows of ``seq_len`` steps.

    Each piece is ``(features (L, F), targets name -> (L,))`` where row ``i`` describes
    note ``i``; a window starting at ``s`` reads notes ``s .. s+T-1`` and predicts notes
    ``s+1 .. s+T``. Pieces shorter than a window are padded and masked.
    """
    if seq_len < 1 or stride < 1:
        raise TrainingError("--seq-len and --stride must be at least 1")
    xs: list[np.ndarray] = []
    ys: dict[str, list[np.ndarray]] = {}
    masks: list[np.ndarray] = []
    n_feat = pieces[0][0].shape[1] if pieces else 1
    for feats, targets in pieces:
        length = feats.shape[0]
        for s in window_starts(length, seq_len, stride):
            steps = min(seq_len, length - 1 - s)
            x = np.zeros((seq_len, n_feat), dtype=np.float32)
            x[:steps] = feats[s : s + steps]
            xs.append(x)
            m = np.zeros(seq_len, dtype=bool)
            m[:steps] = True
            masks.append(m)
            for name, values in targets.items():
                y = np.zeros(seq_len, dtype=values.dtype)
                y[:steps] = values[s + 1 : s + 1 + steps]
                ys.setdefault(name, []).append(y)
    if not xs:
        return Windows(np.zeros((0, seq_len, n_feat), np.float32),
                       {k: np.zeros((0, seq_len)) for k in (pieces[0][1] if pieces else {})},
                       np.zeros((0, seq_len), bool))
    return Windows(np.stack(xs), {k: np.stack(v) for k, v in ys.items()}, np.stack(masks))


def transposed(melodies: Sequence[Melody], max_shift: int,
               classes: Sequence[int]) -> list[Melody]:
    """``melodies`` plus copies shifted by ``-max_shift .. +max_shift`` semitones.

    A copy is kept only if every pitch stays in ``classes`` (the vocabulary), so no label
    is invented. Used on the training files only (validation stays as written).
    """
    allowed = {int(c) for c in classes}
    out = list(melodies)
    for m in melodies:
        for shift in range(-max_shift, max_shift + 1):
            if shift == 0:
                continue
            pitches = m.pitches + shift
            if all(int(p) in allowed for p in np.unique(pitches)):
                out.append(Melody(f"{m.name}@{shift:+d}", m.sha256, pitches, m.gaps,
                                  m.durations, m.velocities))
    return out
