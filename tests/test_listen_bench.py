"""bench/listen.py on a user's own CSV file (``--series``): each numeric column is a series,
dates and short columns are not, and the whole measure runs through the live CLI on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import listen

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, rng: np.random.Generator) -> None:
    n = 200
    walk = np.cumsum(rng.normal(0.0, 1.0, n)) + 50.0
    wave = np.sin(np.arange(n) / 8.0)
    lines = ["date,walk,wave,label,short"]
    for i in range(n):
        short = "3" if i < 10 else ""
        lines.append(f"2020-01-{1 + i % 28:02d},{walk[i]:.4f},{wave[i]:.4f},x{i},{short}")
    lines[5] = lines[5].replace(f",{wave[4]:.4f},", ",NA,")  # a missing cell
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_file_series_reads_each_numeric_column(tmp_path: Path) -> None:
    csv_path = tmp_path / "plant.csv"
    _write(csv_path, np.random.default_rng(1))
    series = listen.file_series(csv_path)
    assert sorted(series) == ["plant:walk", "plant:wave"]  # not the dates, labels, short one
    assert len(series["plant:walk"]) == 200 and len(series["plant:wave"]) == 199
    (tmp_path / "empty.csv").write_text("date,label\n2020-01-01,a\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="no column"):
        listen.file_series(tmp_path / "empty.csv")


def test_listen_bench_measures_a_users_file(tmp_path: Path) -> None:
    csv_path = tmp_path / "plant.csv"
    _write(csv_path, np.random.default_rng(2))
    done = subprocess.run([sys.executable, str(REPO / "bench" / "listen.py"), "--skip-fast",
                           "--series", str(csv_path), "--only", "walk"],
                          capture_output=True, text=True, timeout=600, check=True, cwd=REPO)
    rows = [line for line in done.stdout.splitlines() if line.startswith("| plant:walk |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert float(cells[2]) >= 0.8  # a random walk's local contour
    assert "after: rho >= 0.8 on 1/1 series" in done.stdout
