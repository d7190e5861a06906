"""The live daemon keeps what start-up made out of the cyclic garbage collector's way, so a
full collection does not walk numba's and the model's objects (tens of ms) while notes
wait, and hands the GIL to its helper threads within 1 ms; the real daemon (run_daemon, as
``streamsonic run FILE`` calls it) on a real file."""

from __future__ import annotations

import gc
import logging
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import mido
import pytest

from streamsonic.config import load_config
from streamsonic.daemon import SWITCH_INTERVAL, run_daemon
from streamsonic.events import NoteEvent, Sample, Source
from streamsonic.sources.stdin import StdinSource


class Watching:
    """The real file source, noting the collector's frozen count (or what ``look`` gives)
    as each sample is read."""

    def __init__(self, inner: Source, seen: list[Any], look: Any = gc.get_freeze_count
                 ) -> None:
        self.inner, self.seen, self.look = inner, seen, look

    @property
    def stats(self) -> dict[str, int]:
        return self.inner.stats

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def __aenter__(self) -> Watching:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.inner.__aexit__(*exc)

    def __aiter__(self) -> AsyncIterator[Sample | NoteEvent]:
        return self._items()

    async def _items(self) -> AsyncIterator[Sample | NoteEvent]:
        async for item in self.inner:
            self.seen.append(self.look())
            yield item


def test_startup_objects_are_frozen_while_the_daemon_runs(tmp_path: Path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("".join(f"{v}\n" for v in range(1, 21)))
    song = tmp_path / "out.mid"
    # the whole file is read at once: a backlog above its length plays every sample (the
    # default 16 folds the last few into one note, as many as the reading outpaces playing)
    config = load_config(None, overrides={"model.passing_notes": 0, "clock.backlog": 64})
    seen: list[int] = []
    status = run_daemon(config, outputs=[f"file:{song}"], open_input=lambda c: Watching(
        StdinSource.open_file(c, str(data)), seen))
    assert status == 0
    assert len(seen) == 20
    # numba, numpy, the model and the config: many thousands of objects, frozen throughout
    assert min(seen) > 20_000, seen
    # and given back to the collector when the run ends (in process, nothing stays frozen)
    assert gc.get_freeze_count() == 0
    notes = [m for m in mido.MidiFile(song) if m.type == "note_on" and m.velocity > 0]
    assert len(notes) == 20


def test_the_stop_line_counts_samples_folded_beyond_the_backlog(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Fewer notes than samples is explained where an operator reads it: the samples folded
    into another's note (more than clock.backlog waited) are counted on the stop line."""
    data = tmp_path / "in.txt"
    data.write_text("".join(f"{v}\n" for v in range(1, 21)))
    config = load_config(None, overrides={"model.passing_notes": 0, "clock.backlog": 2})
    caplog.set_level(logging.INFO, logger="streamsonic.daemon")
    status = run_daemon(config, outputs=[f"file:{tmp_path / 'out.mid'}"],
                        open_input=lambda c: StdinSource.open_file(c, str(data)))
    assert status == 0
    stopped = next(r.getMessage() for r in caplog.records
                   if r.getMessage().startswith("stopped:"))
    found = re.search(r"stopped: 20 samples, (\d+) notes; streams .*\bfolded=(\d+)", stopped)
    assert found, stopped
    notes, folded = int(found[1]), int(found[2])
    assert folded > 0 and notes + folded == 20, stopped


def test_helper_threads_get_the_gil_within_a_millisecond_while_it_runs(
        tmp_path: Path) -> None:
    """paho's network threads and an audio callback want the GIL back after every system
    call; the running daemon hands it over within SWITCH_INTERVAL (Python's default, 5 ms,
    dropped MQTT notes under load: README, MQTT), and gives the old value back at the end."""
    data = tmp_path / "in.txt"
    data.write_text("".join(f"{v}\n" for v in range(1, 6)))
    before = sys.getswitchinterval()
    assert before != SWITCH_INTERVAL
    seen: list[float] = []
    status = run_daemon(load_config(None), outputs=[f"file:{tmp_path / 'out.mid'}"],
                        open_input=lambda c: Watching(StdinSource.open_file(c, str(data)),
                                                      seen, sys.getswitchinterval))
    assert status == 0
    assert seen == [SWITCH_INTERVAL] * 5
    assert sys.getswitchinterval() == before
