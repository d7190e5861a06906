"""bench/nab.py on a small folder laid out as the NAB repository is (data/, labels/): the
labels' timestamps (with microseconds) find their samples, a spike inside its window is
caught, and the quiet part outside counts no false accents."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench import nab

REPO = Path(__file__).resolve().parents[1]


def _stamp(i: int) -> str:
    return f"2014-04-{1 + i // 288:02d} {(i % 288) // 12:02d}:{(i % 12) * 5:02d}:00"


def test_nab_bench_finds_the_labelled_spike(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    values = 50.0 + rng.normal(0.0, 1.0, 600)
    values[450] = 90.0
    (tmp_path / "data" / "kind").mkdir(parents=True)
    rows = ["timestamp,value"] + [f"{_stamp(i)},{v:.3f}" for i, v in enumerate(values)]
    (tmp_path / "data" / "kind" / "series.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "labels").mkdir()
    key = "kind/series.csv"
    windows = {key: [[_stamp(440) + ".000000", _stamp(460) + ".000000"]]}
    labels = {key: [_stamp(450) + ".000000"]}
    (tmp_path / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    (tmp_path / "labels" / "combined_labels.json").write_text(json.dumps(labels))
    (series,) = nab.load(tmp_path)
    assert (series.key, series.windows, series.labels) == (key, [(440, 460)], [450])
    done = subprocess.run([sys.executable, str(REPO / "bench" / "nab.py"), "--nab",
                           str(tmp_path), "--json"], capture_output=True, text=True,
                          check=True, cwd=REPO)
    result = json.loads(done.stdout)[key]
    assert result["windows"] == [1, 1]
    assert result["labels"] == [1, 1]
    assert result["samples"] == 600 - 200 - 21  # outside the window, after the first 200
    assert result["false"] <= 2
    assert result["rho"] > 0.8


def test_nab_bench_says_what_it_needs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "bench" / "nab.py"), "--nab",
                           str(tmp_path)], check=False, capture_output=True, text=True,
                          cwd=REPO)
    assert done.returncode == 2
    assert "github.com/numenta/NAB" in done.stderr
