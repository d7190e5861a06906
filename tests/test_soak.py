"""A short run of the soak script (``bench/soak.py``): the real daemon on a real mosquitto
under mixed traffic and hostile payloads, a reload, churn and SIGTERM under traffic.

The figures in the README's reliability table come from the 30-minute default run; this
short one checks that the script and its checks work, and that the daemon passes them on a
small scale: no traceback, exit 0, no hanging note, every played note in the events output,
every bad payload counted by reason, RSS flat after settling.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_mqtt import require_mosquitto

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


def test_short_soak_passes_its_checks(tmp_path: Path) -> None:
    require_mosquitto()
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "soak.py"), "--seconds", "45", "--streams", "100",
         "--fill", "100", "--churn", "20", "--stats-interval", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=REPO, check=False)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert proc.returncode == 0, proc.stdout  # the table names each failed check
    assert result["failures"] == []
    assert result["exit_status"] == 0 and result["tracebacks"] == 0
    assert result["hanging"] == 0
    assert result["events_lines"] > 0  # (and at most a few scheduled notes cancelled)
    counts = result["daemon_counts"]
    # every kind of hostile payload was counted by its reason, none crashed anything
    for reason in ("invalid_utf8", "nan", "not_numeric", "bad_json", "too_large"):
        assert counts.get(f"skipped.{reason}", 0) > 0, (reason, counts)
    assert counts.get("evicted.idle", 0) > 0  # retired names were evicted
    assert result["rss_start_kib"] > 0 and result["rss_growth_pct"] < 2.0
