"""`streamsonic train` / `info`: dataset extraction, split, baselines, training, resume.

The MIDI files are written here with mido: scales and arpeggios with a little rhythm.
Networks are tiny (hidden 24/12) and windows short so the whole file runs in seconds.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import mido
import numpy as np
import pytest
import torch

from streamsonic.cli import main as cli_main
from streamsonic.commands.common import stop_signals
from streamsonic.errors import (
    CheckpointError,
    NoInputError,
    TrainingError,
    UsageError,
)
from streamsonic.model.checkpoint import load_checkpoint
from streamsonic.model.stepper import make_stepper
from streamsonic.model.temporal import TemporalStepper
from streamsonic.train import loop
from streamsonic.train.baselines import baselines
from streamsonic.train.dataset import (
    extract_melody,
    load_corpus,
    make_windows,
    split_by_file,
    transposed,
    window_starts,
)
from streamsonic.train.loop import TrainOptions, resume_path, train
from tests.components import missing

TPB = 480
#: The real validation pass (tests replace ``loop.evaluate`` to script losses around it).
EVALUATE = loop.evaluate


def write_midi(path: Path, tracks: list[list[tuple[int, float, float, int]]]) -> Path:
    """Each track: (pitch, start beat, duration beats, velocity) notes."""
    mid = mido.MidiFile(ticks_per_beat=TPB)
    for notes in tracks:
        events = []
        for pitch, start, dur, vel in notes:
            events.append((round(start * TPB), 1, mido.Message("note_on", note=pitch,
                                                                  velocity=vel)))
            events.append((round((start + dur) * TPB), 0, mido.Message("note_off", note=pitch,
                                                                          velocity=0)))
        events.sort(key=lambda e: (e[0], e[1]))
        track = mido.MidiTrack()
        now = 0
        for tick, _, msg in events:
            track.append(msg.copy(time=tick - now))
            now = tick
        mid.tracks.append(track)
    mid.save(path)
    return path


def scale_piece(root: int, n: int = 40, offset: int = 0) -> list[tuple[int, float, float, int]]:
    """Up and down a major scale from step ``offset``; long-short rhythm, accents."""
    steps = [0, 2, 4, 5, 7, 9, 11, 12, 11, 9, 7, 5, 4, 2]
    out, t = [], 0.0
    for i in range(offset, offset + n):
        gap = 0.75 if i % 2 == 0 else 0.25
        out.append((root + steps[i % len(steps)], t, gap, 100 if i % 4 == 0 else 70))
        t += gap
    return out


def arpeggio_piece(root: int, n: int = 40, offset: int = 0) -> list[tuple[int, float, float, int]]:
    """A broken triad from step ``offset``, even eighths."""
    steps = [0, 4, 7, 12, 7, 4]
    return [(root + steps[i % 6], (i - offset) * 0.5, 0.5, 80) for i in range(offset, offset + n)]


@pytest.fixture
def midi_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "midi"
    folder.mkdir()
    for i in range(4):
        write_midi(folder / f"scale_{i}.mid", [scale_piece(60, 36 + 4 * i, offset=3 * i)])
        write_midi(folder / f"arp_{i}.mid", [arpeggio_piece(60, 36 + 4 * i, offset=i)])
    return folder


def tiny(kind: str, data: Path, out: Path, **kw: object) -> TrainOptions:
    base = {"epochs": 4, "seq_len": 12, "stride": 3, "batch_size": 8, "hidden1": 24,
            "hidden2": 12, "lr": 0.01, "patience": 50, "device": "cpu", "threads": 1,
            "val_fraction": 0.25}
    base.update(kw)
    return TrainOptions(kind=kind, data=str(data), out=str(out), **base)  # type: ignore[arg-type]


# -- dataset ---------------------------------------------------------------------------


def test_melody_is_highest_note_per_onset(tmp_path):
    chords = [(60, 0, 1, 80), (64, 0, 1, 90), (67, 0, 1, 70), (62, 1, 0.5, 60), (55, 1, 2, 60),
              (65, 2, 1, 50)]
    mid = mido.MidiFile(write_midi(tmp_path / "c.mid", [chords]))
    pitches, gaps, durs, vels = extract_melody(mid)
    assert pitches.tolist() == [67, 62, 65]
    assert vels.tolist() == [70, 60, 50]
    assert gaps.tolist() == [1.0, 1.0, 1.0]  # the last note's gap is its duration
    assert durs.tolist() == [1.0, 0.5, 1.0]


def test_tracks_all_merges_first_reads_one(tmp_path):
    melody = [(72, 0, 1, 80), (74, 1, 1, 80)]
    bass = [(48, 0, 1, 80), (79, 1, 1, 80), (50, 2, 1, 80)]
    mid = mido.MidiFile(write_midi(tmp_path / "two.mid", [melody, bass]))
    assert extract_melody(mid, "all")[0].tolist() == [72, 79, 50]
    assert extract_melody(mid, "first")[0].tolist() == [72, 74]


def test_bad_files_are_skipped_by_name(tmp_path, caplog):
    folder = tmp_path / "d"
    folder.mkdir()
    write_midi(folder / "good.mid", [scale_piece(60, 10)])
    (folder / "corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    write_midi(folder / "empty.midi", [[]])
    (folder / "notes.txt").write_text("not midi")
    corpus = load_corpus(folder)
    assert [m.name for m in corpus.melodies] == ["good.mid"]
    assert sorted(n for n, _ in corpus.skipped) == ["corrupt.mid", "empty.midi"]
    assert "corrupt.mid" in caplog.text and "empty.midi" in caplog.text
    reasons = dict(corpus.skipped)
    assert "not a readable MIDI file" in reasons["corrupt.mid"]
    assert "0 notes" in reasons["empty.midi"]


def test_no_usable_files_is_a_clear_error(tmp_path):
    (tmp_path / "x.mid").write_bytes(b"nope")
    with pytest.raises(TrainingError, match=r"no usable MIDI or score files in .*1 skipped"):
        load_corpus(tmp_path)
    with pytest.raises(NoInputError, match="does not exist"):  # 66, as a missing input file
        load_corpus(tmp_path / "missing")


def test_dangling_symlink_and_empty_file_are_skipped_with_a_reason(tmp_path, caplog):
    """A symlink that leads nowhere was left out silently (not in the skipped list), and
    an empty file's reason was "(EOFError: )"."""
    folder = tmp_path / "d"
    folder.mkdir()
    write_midi(folder / "good.mid", [scale_piece(60, 10)])
    write_midi(folder / "other.mid", [scale_piece(62, 10)])
    (folder / "ghost.mid").symlink_to(tmp_path / "gone.mid")
    (folder / "text.mid").write_bytes(b"")
    corpus = load_corpus(folder)
    reasons = dict(corpus.skipped)
    assert sorted(reasons) == ["ghost.mid", "text.mid"]
    assert reasons["ghost.mid"] == f"a symbolic link to {tmp_path / 'gone.mid'}, which does " \
                                   "not exist"
    assert reasons["text.mid"] == "not a readable MIDI file (EOFError: the file ends early)"
    assert "skipping ghost.mid" in caplog.text


def test_missing_folder_names_every_suffix(tmp_path):
    with pytest.raises(NoInputError, match=r"\.mid, \.midi, \.mxl, \.musicxml, \.xml, \.abc or "
                                           r"\.krn"):
        load_corpus(tmp_path / "missing")


def test_the_same_file_twice_is_read_once(midi_dir, tmp_path, caplog):
    """A folder given twice (here also through a symlink) or a copy of a file: each piece
    once, one warning with the count. Was: every file twice (info: 16 files, 8 exist), the
    same piece in training and validation."""
    link = tmp_path / "link"
    link.symlink_to(midi_dir)
    (midi_dir / "copy.mid").write_bytes((midi_dir / "arp_0.mid").read_bytes())
    corpus = load_corpus([midi_dir, link, midi_dir])
    assert len(corpus.melodies) == 8
    assert len({m.sha256 for m in corpus.melodies}) == 8
    assert len(corpus.duplicates) == 1 + 9 + 9
    assert (f"{midi_dir}/copy.mid", f"{midi_dir}/arp_0.mid") in corpus.duplicates
    warnings = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("left out 19 files with the same "
                                                         "contents as another")
    assert corpus.summary()["n_files"] == 8
    train_m, val_m = split_by_file(corpus.melodies, 0.25, 0)
    assert not {m.sha256 for m in train_m} & {m.sha256 for m in val_m}


def test_split_is_by_file_seeded_and_disjoint(midi_dir):
    corpus = load_corpus(midi_dir)
    train_a, val_a = split_by_file(corpus.melodies, 0.25, seed=3)
    train_b, val_b = split_by_file(list(reversed(corpus.melodies)), 0.25, seed=3)
    names = lambda ms: [m.name for m in ms]  # noqa: E731
    assert names(val_a) == names(val_b) and names(train_a) == names(train_b)
    assert len(val_a) == 2 and len(train_a) == 6
    assert not set(names(val_a)) & set(names(train_a))
    # other seeds hold out other files
    assert len({names(split_by_file(corpus.melodies, 0.25, seed=s)[1])[0]
                for s in range(8)}) > 1


def test_transposed_copies_stay_in_the_vocabulary(midi_dir):
    arp = next(m for m in load_corpus(midi_dir).melodies if m.name == "arp_0.mid")
    assert set(arp.pitches.tolist()) == {60, 64, 67, 72}
    classes = [58, 59, *range(60, 74)]
    out = transposed([arp], 2, classes)
    assert [m.name for m in out] == ["arp_0.mid", "arp_0.mid@-2", "arp_0.mid@-1", "arp_0.mid@+1"]
    assert out[1].pitches.tolist()[:4] == [58, 62, 65, 70]
    assert transposed([arp], 0, classes) == [arp]


def test_windows_tile_or_overlap():
    assert window_starts(10, 4, 4) == [0, 4, 8]
    assert window_starts(10, 4, 1) == [0, 1, 2, 3, 4, 5]
    assert window_starts(3, 50, 4) == [0]
    assert window_starts(1, 50, 4) == []
    feats = np.arange(10, dtype=np.float32)[:, None]
    w = make_windows([(feats, {"pitch": np.arange(10)})], seq_len=4, stride=4)
    assert w.x.shape == (3, 4, 1)
    assert w.targets["pitch"][2].tolist() == [9, 0, 0, 0]
    assert w.mask.sum() == 9  # every transition exactly once
    assert (w.x[w.mask][:, 0] + 1 == w.targets["pitch"][w.mask]).all()


def test_baselines():
    train_t = [{"pitch": np.array([1, 2, 2, 2, 3])}]
    val_t = [{"pitch": np.array([2, 2, 5, 2])}]
    b = baselines(train_t, val_t)
    assert b["repeat_previous"]["accuracy"] == pytest.approx(1 / 3)
    assert b["most_frequent"]["accuracy"] == pytest.approx(2 / 3)


def test_baselines_log_loss_is_the_smoothed_distributions():
    """Top-1 and log-loss of both baselines, by hand: add-one smoothing over 3 classes."""
    train_t = [{"gap": np.array([0, 1, 1, 1, 2])}]  # transitions to 1, 1, 1, 2; 2 repeats of 4
    val_t = [{"gap": np.array([1, 1, 0, 1])}]  # 1->1, 1->0, 0->1
    b = baselines(train_t, val_t, {"gap": 3})
    u = np.array([1, 4, 2]) / 7  # (counts 0, 3, 1) + 1, over 4 + 3
    r = (2 + 1) / (4 + 2)  # repeat rate: 2 of 4 pairs, smoothed
    assert b["most_frequent"]["gap_accuracy"] == pytest.approx(2 / 3)
    assert b["most_frequent"]["gap_loss"] == pytest.approx(-np.mean(np.log(u[[1, 0, 1]])))
    p_repeat = [r, (1 - r) * u[0] / (1 - u[1]), (1 - r) * u[1] / (1 - u[0])]
    assert b["repeat_previous"]["gap_accuracy"] == pytest.approx(1 / 3)
    assert b["repeat_previous"]["gap_loss"] == pytest.approx(-np.mean(np.log(p_repeat)))
    assert "pitch_loss" not in b["most_frequent"]  # only the parts the targets have


# -- scores through music21 (the train extra) --------------------------------------------


@pytest.fixture(scope="module")
def m21() -> Any:
    try:
        import music21
    except ModuleNotFoundError:
        missing("music21 is not installed: pip install -e '.[train]' (scripts/setup.sh does)")
    return music21


@pytest.fixture
def melody_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty melody cache of this test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "streamsonic" / "melodies"


def corpus_file(m21: Any, name: str) -> Path:
    return Path(str(m21.corpus.getWork(name)))


#: A two-tune ABC collection: chord symbols, a grace note, a tie, a triplet, a rest, a
#: chord (its top note plays).
ABC = """X:1
T:First
M:4/4
L:1/8
K:D
"D"d2 {e}d>e f2-f2 | (3gfe d2 z2 [DA]2 |
X:2
T:Second
M:6/8
L:1/8
K:G
GAB c2d | e3 d3 |
"""


def test_abc_collection_every_tune_a_piece(m21, tmp_path, melody_cache):
    folder = tmp_path / "abc"
    folder.mkdir()
    (folder / "tunes.abc").write_text(ABC)
    corpus = load_corpus(folder)
    assert [m.name for m in corpus.melodies] == ["tunes.abc#1", "tunes.abc#2"]
    first, second = corpus.melodies
    # d2 {e}d>e f2-f2 | (3gfe d2 z2 [DA]2: the chord symbol and grace note are not notes,
    # the tie is one note, the rest lengthens the gap before the chord, which plays its A
    assert first.pitches.tolist() == [74, 74, 76, 78, 79, 78, 76, 74, 69]
    assert first.gaps.tolist() == pytest.approx([1, 0.75, 0.25, 2, 1 / 3, 1 / 3, 1 / 3, 2, 1])
    assert first.durations.tolist() == pytest.approx([1, 0.75, 0.25, 2, 1 / 3, 1 / 3, 1 / 3,
                                                      1, 1])
    assert set(first.velocities.tolist()) == {80}  # no dynamics: mezzo-forte
    assert second.gaps.tolist() == pytest.approx([0.5, 0.5, 0.5, 1, 0.5, 1.5, 1.5])
    assert first.sha256 == second.sha256 and len(first.sha256) == 64


def test_musicxml_chorale_is_its_soprano_with_ties_merged(m21, tmp_path, melody_cache):
    folder = tmp_path / "xml"
    folder.mkdir()
    (folder / "bwv66.6.mxl").symlink_to(corpus_file(m21, "bach/bwv66.6"))
    melody = load_corpus(folder).melodies[0]
    # the soprano's opening (pickup C#5 B4, then A4 B4 C#5 E5 | C#5 B4 A4 C#5 ...)
    assert melody.pitches[:8].tolist() == [73, 71, 69, 71, 73, 76, 73, 71]
    assert melody.gaps[:4].tolist() == [0.5, 0.5, 1.0, 1.0]
    # measures 8-9: F#4 half, F#4 quarter tied to a quarter = one half note
    assert 2.0 in melody.durations.tolist()
    assert len(melody) == 36 and int(melody.pitches.max()) == 76


def test_dynamics_set_the_velocity(m21, tmp_path, melody_cache):
    """A MusicXML score written by music21: pp, then ff; velocity follows the marks."""
    part = m21.stream.Part()
    part.append(m21.dynamics.Dynamic("pp"))
    part.append([m21.note.Note("C4", quarterLength=1), m21.note.Note("D4", quarterLength=0.5)])
    part.append(m21.dynamics.Dynamic("ff"))
    part.append([m21.note.Note("E4", quarterLength=0.5), m21.note.Note("F4", quarterLength=2)])
    folder = tmp_path / "dyn"
    folder.mkdir()
    m21.stream.Score([part]).write("musicxml", fp=str(folder / "dyn.musicxml"))
    melody = load_corpus(folder).melodies[0]
    assert melody.pitches.tolist() == [60, 62, 64, 65]
    assert melody.gaps.tolist() == [1.0, 0.5, 0.5, 2.0]
    soft, loud = melody.velocities[:2], melody.velocities[2:]
    assert soft.max() < 50 < 100 < loud.min()


def test_humdrum_chorale_reads_the_top_voice(m21, tmp_path, melody_cache):
    """Humdrum names no parts: auto takes the voice with the highest median pitch."""
    folder = tmp_path / "krn"
    folder.mkdir()
    path = corpus_file(m21, "bach/bwv366.krn")
    (folder / "bwv366.krn").symlink_to(path)
    melody = load_corpus(folder).melodies[0]
    parts = m21.converter.parse(path).parts
    voices = [[int(n.pitch.midi) for n in p.recurse().notes] for p in parts]
    assert len(voices) == 4
    top = max(voices, key=lambda v: float(np.median(v)))
    assert melody.pitches.tolist() == top  # no ties, chords or grace notes in this voice
    assert len(set(melody.gaps.tolist())) >= 2 and len(melody) >= 30


def test_midi_written_from_a_score_reads_like_the_score(m21, tmp_path, melody_cache):
    """The same melody through both readers: music21 writes the soprano to MIDI, mido
    reads it back; pitches, gaps and durations match the score's."""
    score = m21.corpus.parse("bach/bwv66.6")
    folder = tmp_path / "both"
    folder.mkdir()
    score.parts[0].write("midi", fp=str(folder / "soprano.mid"))
    (folder / "bwv66.6.mxl").symlink_to(corpus_file(m21, "bach/bwv66.6"))
    corpus = load_corpus(folder)
    by_name = {m.name: m for m in corpus.melodies}
    midi, xml = by_name["soprano.mid"], by_name["bwv66.6.mxl"]
    assert midi.pitches.tolist() == xml.pitches.tolist()
    np.testing.assert_allclose(midi.gaps, xml.gaps, atol=1e-3)
    np.testing.assert_allclose(midi.durations, xml.durations, atol=1e-2)


def test_corpus_selector_and_its_errors(m21, melody_cache):
    corpus = load_corpus("music21:bach:humdrum")
    assert {m.name for m in corpus.melodies} >= {"music21:bach/bwv366.krn"}
    assert all(m.name.endswith(".krn") for m in corpus.melodies)
    with pytest.raises(TrainingError, match=r"no files for 'nosuchcomposer'.*bach"):
        load_corpus("music21:nosuchcomposer")
    with pytest.raises(TrainingError, match="unknown format 'wav'"):
        load_corpus("music21:bach:wav")


def test_melodies_are_cached_by_content(m21, tmp_path, melody_cache, monkeypatch):
    from streamsonic.train import scores

    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "tunes.abc").write_text(ABC)
    fresh = load_corpus(folder)
    assert len(list(melody_cache.glob("*.npz"))) == 1

    def fail(*_: object) -> None:
        raise AssertionError("parsed again")

    monkeypatch.setattr(scores, "parse_score_file", fail)
    cached = load_corpus(folder)
    for a, b in zip(fresh.melodies, cached.melodies, strict=True):
        assert a.name == b.name and a.pitches.tolist() == b.pitches.tolist()
        assert a.gaps.tolist() == b.gaps.tolist()
    (folder / "tunes.abc").write_text(ABC.replace("e3 d3", "e3 c3"))  # changed: parse again
    with pytest.raises(AssertionError, match="parsed again"):
        load_corpus(folder)


def test_reading_a_collection_tells_its_progress_per_piece(m21, tmp_path, melody_cache):
    """Parsing a collection takes minutes (music21:airdsAirs: 6 files, 2 minutes) and
    printed nothing; now LoadProgress hears every piece (here every line is let through)."""
    import io

    from streamsonic.train.progress import LoadProgress

    folder = tmp_path / "abc"
    folder.mkdir()
    (folder / "tunes.abc").write_text(ABC)
    out = io.StringIO()
    progress = LoadProgress(stream=out, interval=0.0)
    load_corpus(folder, progress=progress)
    progress.done()
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["reading training data: 0/1 files, 1 pieces, 0:00 so far",
                         "reading training data: 0/1 files, 2 pieces, 0:00 so far"]
    assert lines[-1] == "reading training data: 1/1 files, 2 pieces in 0:00"
    quiet = io.StringIO()  # a quick read (cached now) with the default interval: no line
    progress = LoadProgress(stream=quiet)
    load_corpus(folder, progress=progress)
    progress.done()
    assert quiet.getvalue() == ""


def test_unreadable_score_is_skipped_by_name(m21, tmp_path, melody_cache):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "tunes.abc").write_text(ABC)
    (folder / "broken.mxl").write_bytes(b"not a zip")
    corpus = load_corpus(folder)
    assert len(corpus.melodies) == 2
    assert [name for name, _ in corpus.skipped] == ["broken.mxl"]
    assert "music21 cannot read it" in corpus.skipped[0][1]


def test_scores_without_music21_name_the_train_extra(tmp_path):
    """No music21: a score folder is one line naming the extra, exit 69 (EX_UNAVAILABLE);
    a MIDI folder still trains without it."""
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "tunes.abc").write_text(ABC)
    code = ("import sys; sys.modules['music21'] = None; from streamsonic.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    res = subprocess.run([sys.executable, "-c", code, "train", "temporal", str(folder), "-o",
                          str(tmp_path / "o.pt")], capture_output=True, text=True, timeout=120,
                         check=False)
    assert res.returncode == 69, res.stderr
    assert "install the 'train' extra: pip install 'streamsonic[train]'" in res.stderr
    assert not (tmp_path / "o.pt").exists()
    res = subprocess.run([sys.executable, "-c", code, "train", "temporal", "--corpus",
                          "music21:bach", "-o", str(tmp_path / "o.pt")], capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 69, res.stderr
    assert "music21 (for --corpus music21:bach) is not installed" in res.stderr


def test_cli_trains_on_a_corpus_selector(m21, tmp_path, melody_cache, capsys):
    """`train --corpus music21:NAME:FORMAT` without DIR: the three Bach Humdrum files."""
    out = tmp_path / "h.pt"
    status = cli_main(["train", "temporal", "--corpus", "music21:bach:humdrum", "-o", str(out),
                       "--epochs", "1", "--seq-len", "12", "--hidden1", "16", "--hidden2",
                       "8", "--threads", "1", "--device", "cpu", "--val-fraction", "0.34"])
    assert status == 0, capsys.readouterr().err
    report = capsys.readouterr().out
    assert "gap log-loss" in report and "repeat previous" in report
    meta = load_checkpoint(out, kind="temporal").meta
    assert meta["data"]["sources"] == ["music21:bach:humdrum"]
    assert meta["data"]["n_files"] == 3 and meta["versions"]["music21"] != "unknown"
    assert cli_main(["train", "temporal", "-o", str(out)]) == TrainingError.exit_status
    assert "no training data" in capsys.readouterr().err


def test_temporal_training_on_bundled_scores(m21, tmp_path, melody_cache):
    """A tiny run on six chorales and a tune collection: it trains, the checkpoint records
    the pieces, and gap/duration get top-1 and log-loss beside both baselines."""
    folder = tmp_path / "scores"
    folder.mkdir()
    for name in ("bwv66.6", "bwv1.6", "bwv10.7", "bwv101.7", "bwv102.7", "bwv103.6"):
        (folder / f"{name}.mxl").symlink_to(corpus_file(m21, f"bach/{name}"))
    (folder / "tunes.abc").write_text(ABC)
    out = tmp_path / "t.pt"
    result = train(tiny("temporal", folder, out, epochs=3, val_fraction=0.3))
    assert result.epochs_run == 3
    for metric in ("gap_accuracy", "gap_loss", "duration_accuracy", "duration_loss"):
        assert metric in result.best
        for base in ("repeat_previous", "most_frequent"):
            assert 0 < result.baselines[base][metric] < 10
    meta = load_checkpoint(out, kind="temporal").meta
    names = {f["name"] for f in meta["data"]["files"]}
    assert {"bwv66.6.mxl", "tunes.abc#1", "tunes.abc#2"} <= names
    assert meta["data"]["tracks"] == "auto"


# -- training -------------------------------------------------------------------------


def test_pitch_training_lowers_loss_and_round_trips(midi_dir, tmp_path):
    out = tmp_path / "p.pt"
    result = train(tiny("pitch", midi_dir, out, epochs=6))
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] * 0.8
    assert result.best["loss"] < result.history[0]["val_loss"]
    ckpt = load_checkpoint(out, kind="pitch")
    assert ckpt.classes == [60, 62, 64, 65, 67, 69, 71, 72]
    assert ckpt.seq_len == 12
    meta = ckpt.meta
    assert meta["training"]["best_epoch"] == result.best_epoch
    assert meta["metrics"]["val"]["accuracy"] == pytest.approx(result.best["accuracy"])
    assert set(meta["metrics"]["baselines"]) == {"repeat_previous", "most_frequent"}
    assert len(meta["data"]["files"]) == 8 and len(meta["data"]["files"][0]["sha256"]) == 64
    assert set(meta["versions"]) >= {"torch", "numpy", "mido", "streamsonic", "python"}
    # the trained weights drive the live stepper
    stepper = make_stepper(ckpt.pitch_network())
    logits, _ = stepper.step(np.array([0.5]), stepper.initial_state(1))
    assert logits.shape == (1, len(ckpt.classes))


def test_temporal_training_lowers_loss_and_drives_stepper(midi_dir, tmp_path):
    out = tmp_path / "t.pt"
    result = train(tiny("temporal", midi_dir, out, epochs=6))
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] * 0.8
    assert {"gap_accuracy", "duration_accuracy", "velocity_mae"} <= set(result.best)
    assert "gap_accuracy" in result.baselines["most_frequent"]
    stepper = TemporalStepper.from_checkpoint(load_checkpoint(out, kind="temporal"),
                                              torch.device("cpu"), tempo=120)
    state = stepper.initial_state(2)
    logits, timings, pending = stepper.propose(np.array([0.2, 0.8]), state)
    assert logits.shape == (2, stepper.n_classes) and len(timings) == 2
    for t in timings:
        assert t.delay in {b * 0.5 for b in stepper.timing_encoding.gap_grid}
        assert 1 <= t.velocity <= 127 and t.duration > 0
    state = stepper.commit(pending, np.array([0.25, 0.75]))
    assert state.h1.shape == (2, 24)


def test_resume_continues_from_saved_epoch_exactly(midi_dir, tmp_path):
    straight = train(tiny("pitch", midi_dir, tmp_path / "a.pt", epochs=4))
    first = train(tiny("pitch", midi_dir, tmp_path / "b.pt", epochs=2))
    assert first.epochs_run == 2 and resume_path(tmp_path / "b.pt").is_file()
    resumed = train(tiny("pitch", midi_dir, tmp_path / "b.pt", epochs=4, resume=True))
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    assert resumed.best_epoch == straight.best_epoch
    again = train(tiny("pitch", midi_dir, tmp_path / "b.pt", epochs=4, resume=True))
    assert again.stopped == "already-finished"


def test_ctrl_c_keeps_best_and_resume_picks_up(midi_dir, tmp_path):
    out = tmp_path / "c.pt"

    def stop(epoch: int) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    result = train(tiny("pitch", midi_dir, out, epochs=5), on_epoch=stop)
    assert result.stopped == "interrupted" and result.epochs_run == 2
    assert load_checkpoint(out).meta["training"]["stopped"] == "interrupted"
    resumed = train(tiny("pitch", midi_dir, out, epochs=3, resume=True))
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]


def script_val_loss(monkeypatch: pytest.MonkeyPatch, losses: list[float]) -> list[float]:
    """Make the validation loss of each following epoch ``losses[i]`` (the other metrics stay
    real), so a test decides which epochs improve. Returns the list of losses still unused."""
    left = list(losses)

    def scripted(*args: object, **kwargs: object) -> dict[str, float]:
        return {**EVALUATE(*args, **kwargs), "loss": left.pop(0)}  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "evaluate", scripted)
    return left


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_keeps_best_checkpoint_and_patience(midi_dir, tmp_path, monkeypatch):
    """A worse epoch after --resume leaves the best weights alone and counts towards patience
    from where the saved run stopped (1 bad epoch before, 2 after: early stop at epoch 5)."""
    out = tmp_path / "k.pt"
    script_val_loss(monkeypatch, [1.0, 0.5, 0.9])
    first = train(tiny("pitch", midi_dir, out, epochs=3, patience=3))
    assert first.best_epoch == 2 and first.stopped == "completed"
    best_weights = load_checkpoint(out).state_dict

    left = script_val_loss(monkeypatch, [0.8, 0.7, 0.6, 0.1, 0.1])
    second = train(tiny("pitch", midi_dir, out, epochs=4, patience=3, resume=True))
    assert [h["val_loss"] for h in second.history] == [1.0, 0.5, 0.9, 0.8]
    assert second.stopped == "completed" and second.best_epoch == 2
    assert second.best["loss"] == 0.5
    ckpt = load_checkpoint(out)
    assert same_weights(ckpt.state_dict, best_weights)
    assert ckpt.meta["training"]["best_epoch"] == 2
    assert ckpt.meta["training"]["epochs_run"] == 4
    assert ckpt.meta["metrics"]["val"]["loss"] == 0.5

    third = train(tiny("pitch", midi_dir, out, epochs=10, patience=3, resume=True))
    assert third.stopped == "early-stopped" and third.epochs_run == 5
    assert left == [0.6, 0.1, 0.1]  # epochs 6.. never ran
    assert third.best_epoch == 2 and third.best["loss"] == 0.5
    ckpt = load_checkpoint(out)
    assert same_weights(ckpt.state_dict, best_weights)
    assert ckpt.meta["training"]["stopped"] == "early-stopped"
    assert ckpt.meta["training"]["epochs_run"] == 5 and ckpt.meta["training"]["best_epoch"] == 2


def test_resume_after_improvement_saves_the_new_best(midi_dir, tmp_path, monkeypatch):
    out = tmp_path / "n.pt"
    script_val_loss(monkeypatch, [1.0, 0.5, 0.9])
    train(tiny("pitch", midi_dir, out, epochs=3, patience=3))
    old = load_checkpoint(out).state_dict
    script_val_loss(monkeypatch, [0.8, 0.4, 0.45])
    result = train(tiny("pitch", midi_dir, out, epochs=6, patience=3, resume=True))
    assert result.best_epoch == 5 and result.stopped == "completed"
    ckpt = load_checkpoint(out)
    assert ckpt.meta["training"]["best_epoch"] == 5 and ckpt.meta["metrics"]["val"]["loss"] == 0.4
    assert not same_weights(ckpt.state_dict, old)
    # the saved best is epoch 5's weights, which a run of 5 epochs from scratch reproduces
    script_val_loss(monkeypatch, [1.0, 0.5, 0.9, 0.8, 0.4])
    train(tiny("pitch", midi_dir, tmp_path / "five.pt", epochs=5, patience=3))
    assert same_weights(ckpt.state_dict, load_checkpoint(tmp_path / "five.pt").state_dict)


def test_resume_with_more_patience_continues_an_early_stopped_run(midi_dir, tmp_path,
                                                                  monkeypatch):
    out = tmp_path / "p.pt"
    script_val_loss(monkeypatch, [1.0, 0.5, 0.9, 0.8])
    first = train(tiny("pitch", midi_dir, out, epochs=10, patience=2))
    assert first.stopped == "early-stopped" and first.epochs_run == 4
    again = train(tiny("pitch", midi_dir, out, epochs=10, patience=2, resume=True))
    assert again.stopped == "already-finished" and again.epochs_run == 4
    left = script_val_loss(monkeypatch, [0.7, 0.3, 0.9])
    more = train(tiny("pitch", midi_dir, out, epochs=7, patience=4, resume=True))
    assert left == [] and more.stopped == "completed" and more.best_epoch == 6
    assert load_checkpoint(out).meta["training"]["best_epoch"] == 6


def test_interrupt_in_the_middle_of_an_epoch_repeats_it_on_resume(midi_dir, tmp_path,
                                                                  monkeypatch):
    """Ctrl-C during epoch 3 (its training already moved the weights): the checkpoint keeps
    epoch 2's best, and --resume reruns epoch 3 from the saved state exactly."""
    straight = train(tiny("pitch", midi_dir, tmp_path / "s.pt", epochs=4))
    out = tmp_path / "i.pt"
    calls = []

    def interrupting(*args: object, **kwargs: object) -> dict[str, float]:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return EVALUATE(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "evaluate", interrupting)
    stopped = train(tiny("pitch", midi_dir, out, epochs=4))
    assert stopped.stopped == "interrupted" and stopped.epochs_run == 2
    ckpt = load_checkpoint(out)
    assert ckpt.meta["training"]["stopped"] == "interrupted"
    assert ckpt.meta["training"]["best_epoch"] == stopped.best_epoch
    train(tiny("pitch", midi_dir, tmp_path / "two.pt", epochs=2))  # epoch 3 never happened
    assert same_weights(ckpt.state_dict, load_checkpoint(tmp_path / "two.pt").state_dict)
    monkeypatch.setattr(loop, "evaluate", EVALUATE)
    resumed = train(tiny("pitch", midi_dir, out, epochs=4, resume=True))
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    assert same_weights(load_checkpoint(out).state_dict,
                        load_checkpoint(tmp_path / "s.pt").state_dict)


def test_resume_refuses_other_options_and_missing_state(midi_dir, tmp_path):
    out = tmp_path / "r.pt"
    with pytest.raises(CheckpointError, match="no resume state"):
        train(tiny("pitch", midi_dir, out, resume=True))
    train(tiny("pitch", midi_dir, out, epochs=1))
    with pytest.raises(UsageError, match=r"seq_len=12 \(now 10\)"):  # 64, as README says
        train(tiny("pitch", midi_dir, out, epochs=2, seq_len=10, resume=True))


def test_a_loss_that_becomes_nan_stops_and_keeps_the_last_finite_epoch(midi_dir, tmp_path,
                                                                      monkeypatch):
    """Epochs 1 and 2 finite, epoch 3's validation loss NaN: TrainingDivergedError (exit 70)
    naming the cause and the fix; OUT.pt keeps the best epoch (2), the resume state the last
    finite one (2) with no NaN in it. Was: a NaN epoch counted as "no better", its state
    saved for --resume, exit 0."""
    from streamsonic.errors import TrainingDivergedError

    script_val_loss(monkeypatch, [2.0, 1.0, float("nan"), 0.5])
    out = tmp_path / "n.pt"
    with pytest.raises(TrainingDivergedError) as err:
        train(tiny("pitch", midi_dir, out, epochs=4))
    assert err.value.exit_status == 70
    assert str(err.value) == (
        "training diverged: the validation loss of epoch 3 became nan; the learning rate "
        "is too high: start again with a lower --lr and --overwrite (now 0.01; the default "
        f"is 0.003); {out} keeps the best epoch before it (2), n.pt.resume the last "
        "finished one (2)")
    ckpt = load_checkpoint(out)
    assert ckpt.meta["training"]["best_epoch"] == 2
    assert ckpt.meta["training"]["stopped"] == "diverged"
    state = torch.load(resume_path(out), weights_only=True)
    assert state["epoch"] == 2 and [h["epoch"] for h in state["history"]] == [1, 2]
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values())


def test_cli_a_diverging_run_is_one_line_and_saves_nothing(midi_dir, tmp_path, capsys):
    """`--lr 1e9` (one window a batch): the loss is no longer finite within the first
    epoch. Was: "no epoch
    finished, nothing was saved", exit 0, and OUT.pt.resume left with NaN weights."""
    out = tmp_path / "opt" / "p.pt"
    status = cli_main(["train", "pitch", str(midi_dir), "-o", str(out), *TINY_CLI,
                       "--lr", "1e9", "--batch-size", "1"])  # 52 steps in epoch 1
    captured = capsys.readouterr()
    assert status == 70, captured.err
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("streamsonic: error: training diverged: the training loss became ")
    assert ", batch " in last and "start again with a lower --lr (now 1e+09" in last
    assert last.endswith("no epoch finished, nothing was saved")
    assert captured.out == "" and "Traceback" not in captured.err
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_early_stopping(midi_dir, tmp_path):
    result = train(tiny("pitch", midi_dir, tmp_path / "e.pt", epochs=30, patience=1, lr=0.05))
    assert result.stopped == "early-stopped"
    assert result.epochs_run == result.best_epoch + 1


# -- command line -----------------------------------------------------------------------


def test_cli_train_then_info(midi_dir, tmp_path, capsys):
    out = tmp_path / "cli.pt"
    (midi_dir / "broken.mid").write_bytes(b"broken")
    status = cli_main(["train", "pitch", str(midi_dir), "-o", str(out), "--epochs", "2",
                       "--seq-len", "12", "--hidden1", "16", "--hidden2", "8", "--threads", "1",
                       "--device", "cpu", "--val-fraction", "0.25"])
    captured = capsys.readouterr()
    assert status == 0
    assert "streamsonic: WARNING: skipping broken.mid: not a readable MIDI file" in captured.err
    assert "epoch 2/2" in captured.err
    assert "most frequent" in captured.out and f"saved {out}" in captured.out
    assert cli_main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    for text in ("kind:        pitch", "60..72", "validation:", "torch", "8 files",
                 "skipped:     broken.mid"):
        assert text in info


def test_cli_info_on_foreign_file(tmp_path, capsys):
    path = tmp_path / "x.pt"
    path.write_text("hello")
    assert cli_main(["info", str(path)]) == CheckpointError.exit_status
    assert "is not a streamsonic checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "value"), [
    ("--epochs", "0"), ("--lr", "nan"), ("--val-fraction", "1.5"), ("--transpose", "13"),
    ("--weight-decay", "-1"),  # was a traceback from torch's AdamW (exit 1)
    ("--clip", "0"),  # was a silent run that zeroed every gradient and learnt nothing
    ("--clip", "-1"),
])
def test_cli_train_bad_option_is_a_usage_error(flag: str, value: str, midi_dir: Path,
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A value no run can train with is a bad command line (64, README's exit statuses),
    one line naming the flag, before any data is read; not bad input data (65)."""
    out = tmp_path / "o.pt"
    status = cli_main(["train", "pitch", str(midi_dir), "-o", str(out), flag, value])
    err = capsys.readouterr().err
    assert status == 64, err
    assert err.count("\n") == 1 and flag in err and "Traceback" not in err
    assert not out.exists()


def test_cli_train_bad_folder(tmp_path, capsys):
    status = cli_main(["train", "pitch", str(tmp_path / "none"), "-o", str(tmp_path / "o.pt")])
    assert status == NoInputError.exit_status == 66
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_in_a_real_process_saves_and_exits_130(midi_dir, tmp_path, sig, status):
    """Ctrl-C on the real command: exit 130, best checkpoint kept, resume hint printed;
    SIGTERM the same, exit 143 (it ended the process: no summary, the last epoch's saves
    possibly cut)."""
    out = tmp_path / "sig.pt"
    # A suite started in the background (`cmd &`) inherits SIGINT ignored, and so would the
    # child (Python then never raises KeyboardInterrupt). A handled signal is reset to the
    # default across exec: handle it here while the child starts, as a foreground shell would.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamsonic", "train", "pitch", str(midi_dir), "-o", str(out),
             "--epochs", "500", "--patience", "500", "--seq-len", "12", "--hidden1", "16",
             "--hidden2", "8", "--threads", "1", "--device", "cpu"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("epoch 2/500"):
            break
    proc.send_signal(sig)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == status
    assert "interrupted; continue with --resume" in stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("sig", ".sig"))) \
        == ["sig.npz", "sig.pt", "sig.pt.resume"]
    ckpt = load_checkpoint(out, kind="pitch")
    assert ckpt.meta["training"]["stopped"] == "interrupted"
    assert ckpt.meta["training"]["epochs_run"] >= 2


# -- where the files go: checked at start, written whole or not at all -----------------------

TINY_CLI = ["--epochs", "2", "--seq-len", "12", "--hidden1", "16", "--hidden2", "8",
            "--threads", "1", "--device", "cpu", "--val-fraction", "0.25"]


def limited_writes(size: int) -> None:
    """In a child process (preexec_fn): no file may grow past ``size`` bytes, and a write
    past it fails with EFBIG ("File too large") instead of killing the process, as a full
    disk fails a write, without root or a mount."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def listing(folder: Path) -> dict[str, bytes | None]:
    """Each file's name and bytes (None for anything else: a folder, a FIFO)."""
    return {p.name: p.read_bytes() if p.is_file() else None for p in folder.iterdir()}


@pytest.mark.parametrize("where", ["folder", "under a file", "npz is a folder", "fifo",
                                   "in /proc"])
def test_cli_train_unusable_output_fails_before_any_epoch(where: str, midi_dir: Path,
                                                          tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]):
    """-o that cannot be written is one line, exit 69 (an output found unusable at start,
    as for render), before any data is read; nothing is written. Was: a traceback (exit 1)
    after the first epoch (IsADirectoryError, or RuntimeError from torch), and a 1.2 MB
    OUT.tmp left beside a folder."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "afile").write_text("a file")
    out = {"folder": out_dir, "under a file": out_dir / "afile" / "x.pt",
           "npz is a folder": out_dir / "m.pt", "fifo": out_dir / "f.pt",
           "in /proc": Path("/proc/x.pt")}[where]
    if where == "npz is a folder":
        (out_dir / "m.npz").mkdir()
    if where == "fifo":  # not a regular file, such as /dev/null: never replaced by one
        os.mkfifo(out)
    before = listing(out_dir)
    status = cli_main(["train", "pitch", str(midi_dir), "-o", str(out), *TINY_CLI])
    err = capsys.readouterr().err
    assert status == 69, err
    assert err.count("\n") == 1 and "Traceback" not in err and "epoch" not in err, err
    assert f"cannot write {'weights file' if where == 'npz is a folder' else 'checkpoint'}" \
        in err
    assert {"folder": "is a folder; give -o a file name",
            "under a file": f"{out_dir / 'afile'} is a file, not a folder",
            "npz is a folder": "m.npz: it is a folder",
            "fifo": "it is not a regular file",
            # (was "folder /proc cannot be written: No such file or directory", of a folder
            # that is there)
            "in /proc": "cannot write checkpoint /proc/x.pt: folder /proc cannot be written: "
                        "it takes no new files (a virtual file system, such as /proc or "
                        "/sys); give -o a path in a writable folder"}[where] in err
    assert listing(out_dir) == before
    assert where != "fifo" or stat.S_ISFIFO(out.stat().st_mode)


@pytest.mark.parametrize("name", ["x.npz", "x", "x.pth", "x.pt.resume"])
def test_cli_train_output_must_be_a_pt_name(name: str, midi_dir: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """-o x.npz was the checkpoint and its own .npz at once: "saved x.npz", exit 0, and a
    torch file nothing could load under that name; -o x wrote x.npz beside x. Now any name
    but NAME.pt is a usage error, before any data is read, and nothing is written."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    status = cli_main(["train", "pitch", str(midi_dir), "-o", str(out_dir / name), *TINY_CLI])
    err = capsys.readouterr().err
    assert status == 64, err
    assert err.count("\n") == 1 and "give the checkpoint's name, NAME.pt" in err
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("there", ["p.pt", "p.npz", "p.pt.resume"])
def test_cli_train_refuses_to_replace_an_earlier_run(there: str, midi_dir: Path,
                                                      tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]):
    """An earlier run's checkpoint, .npz or resume state is never replaced without
    --overwrite (or continued without --resume): exit 73, one line, before any data is read
    (the data folder here does not even exist), the file as it was. Was: all three
    replaced silently, also by a worse model."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / there).write_bytes(b"an earlier run's")
    status = cli_main(["train", "pitch", str(tmp_path / "nodata"), "-o", str(out_dir / "p.pt"),
                       *TINY_CLI])
    err = capsys.readouterr().err
    assert status == 73, err
    assert err == (f"streamsonic: error: -o {out_dir / 'p.pt'}: {out_dir / there} already "
                   "exists (an earlier run's); pass --overwrite to replace it, --resume to "
                   "continue that run, or give -o another name\n")
    assert listing(out_dir) == {there: b"an earlier run's"}


def test_cli_train_overwrite_replaces_an_earlier_run(midi_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "p.pt"
    for name in ("p.pt", "p.npz", "p.pt.resume"):
        (tmp_path / name).write_bytes(b"old")
    status = cli_main(["train", "pitch", str(midi_dir), "-o", str(out), "--overwrite",
                       *TINY_CLI])
    assert status == 0, capsys.readouterr().err
    assert load_checkpoint(out).meta["training"]["epochs_run"] == 2
    assert torch.load(resume_path(out), weights_only=True)["epoch"] == 2
    from streamsonic.model.arrays import arrays_for

    assert arrays_for(out, kind="pitch")[0] is not None


def test_cli_train_says_pieces_and_reading_progress(midi_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch):
    """Reading the data says how it goes (every line let through here; by default one each
    5 s, so none for these files), and the counts are of pieces (a tune collection is one
    file of many). Was: nothing while music21 parsed for minutes, and "training ... on 944
    files" of 6 files."""
    monkeypatch.setattr(loop, "LOAD_PROGRESS_SECONDS", 0.0)
    status = cli_main(["train", "pitch", str(midi_dir), "-o", str(tmp_path / "p.pt"),
                       *TINY_CLI])
    err = capsys.readouterr().err
    assert status == 0, err
    assert "reading training data: 3/8 files, 3 pieces, " in err
    assert "reading training data: 8/8 files, 8 pieces in " in err
    assert "training pitch model on 6 pieces (" in err
    assert "validating on 2 pieces (" in err and "; 8 pieces from 8 files; " in err


@pytest.mark.parametrize(("code", "says"), [
    (errno.EACCES, f"permission denied (to user id {os.getuid()})"),
    (errno.EROFS, "it is on a read-only file system"),
])
def test_an_output_folder_that_refuses_files_says_why(code: int, says: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The reasons a test running as root cannot meet for real (a folder without write
    permission, a read-only file system): the probe's error, as the message words it."""
    from streamsonic.errors import OutputError
    from streamsonic.model import files

    def refuse(*_args: object, **_kwargs: object) -> tuple[int, str]:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    with pytest.raises(OutputError) as err:
        files.check_writable(tmp_path / "x.pt", "checkpoint")
    assert str(err.value) == (f"cannot write checkpoint {tmp_path / 'x.pt'}: folder {tmp_path} "
                              f"cannot be written: {says}; give -o a path in a writable folder")


def test_train_failed_save_removes_its_temporary_file_and_exits_74(midi_dir: Path,
                                                                   tmp_path: Path):
    """A checkpoint save that fails (here: files may not grow past 4 KiB, as on a full disk)
    is one line naming the file and the cause, exit 74; the earlier file at OUT is as it was
    and no temporary file remains. Was: a RuntimeError traceback (exit 1) and OUT.tmp left,
    filling the disk."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "x.pt"
    out.write_bytes(b"the previous checkpoint")
    res = subprocess.run([sys.executable, "-m", "streamsonic", "train", "pitch", str(midi_dir),
                          "-o", str(out), "--overwrite", *TINY_CLI], capture_output=True,
                         text=True, timeout=120, check=False,
                         preexec_fn=lambda: limited_writes(4096))
    assert res.returncode == 74, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert "Traceback" not in res.stderr
    assert last == (f"streamsonic: error: cannot write checkpoint {out}: File too large; "
                    f"{out} was left as it was")
    assert listing(out_dir) == {"x.pt": b"the previous checkpoint"}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("at", [(1,), (2,), (2, 3)], ids=["checkpoint", "resume", "twice"])
def test_ctrl_c_during_a_save_leaves_whole_files_and_no_temporary_file(
        at: tuple[int, ...], sig: signal.Signals, midi_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch):
    """A real SIGINT in the middle of a save (the run's saves: 1 the first best checkpoint,
    2 the resume state after it, 3 the checkpoint saved on stopping): the save completes,
    then the interrupt is raised; every file is whole (the .npz is the .pt's) and no
    temporary file remains. An epoch's checkpoint and resume state are saved together: an
    interrupt during the first comes after the second, so the resume state the report
    points to ("continue with --resume") exists (a QA pass at 36e50ff: it did not). A
    second Ctrl-C during the save on stopping ("twice") ends train() with
    KeyboardInterrupt (the CLI: exit 130) once that save is done. SIGTERM (the command
    raises on it as on Ctrl-C: stop_signals) is held the same way; it left a 10 MB
    ``.m.pt.*.tmp`` and no checkpoint. Was: OUT.pt.resume.tmp left ("resume"), OUT.pt.tmp
    left ("twice")."""
    from streamsonic.model.arrays import arrays_for

    real_save = torch.save
    calls: list[int] = []

    def save_then_interrupt(*args: Any, **kwargs: Any) -> None:
        real_save(*args, **kwargs)
        calls.append(1)
        if len(calls) in at:
            signal.raise_signal(sig)  # delivered now, mid-save

    monkeypatch.setattr(torch, "save", save_then_interrupt)
    # a suite started in the background inherits SIGINT ignored: handle it as a shell would
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    out = tmp_path / "out" / "c.pt"
    try:
        with stop_signals() as stopped:
            if len(at) == 2:
                with pytest.raises(KeyboardInterrupt):
                    train(tiny("pitch", midi_dir, out, epochs=3))
            else:
                result = train(tiny("pitch", midi_dir, out, epochs=3))
                assert result.stopped == "interrupted" and result.epochs_run == 1
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stopped.signum == (sig if sig != signal.SIGINT else 0)
    assert sorted(p.name for p in out.parent.iterdir()) == ["c.npz", "c.pt", "c.pt.resume"]
    ckpt = load_checkpoint(out)
    assert ckpt.meta["training"]["stopped"] == "interrupted"
    arrays, why = arrays_for(out, kind="pitch")
    assert arrays is not None, why
    assert torch.load(resume_path(out), weights_only=True)["epoch"] == 1
